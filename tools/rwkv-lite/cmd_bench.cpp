// rwkv-lite bench: prompt and generation speed, memory, and how close generation gets to the
// memory-bandwidth bound (every weight byte must be read once per generated token).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

// Seeded token ids (splitmix64): the same ids for a given seed on every machine.
class TokenSource {
 public:
  explicit TokenSource(uint64_t seed) : x_(seed) {}
  int32_t next(int32_t n_vocab) {
    uint64_t z = (x_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<int32_t>(z % static_cast<uint64_t>(n_vocab));
  }

 private:
  uint64_t x_;
};

int32_t argmax(const std::vector<float>& v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace

int cmd_bench(const Args& args) {
  const std::string model_path = require(args, "model");
  const bool json = args.on("json");
  const char* system = rwkvl_system_info();
  if (!json) {
    std::printf("system: %s\n", system);
    std::fflush(stdout);
  }

  const double t_load0 = now_seconds();
  const ModelPtr model = load_model(args);
  const double load_seconds = now_seconds() - t_load0;
  const rwkvl_model_info info = model_info(model.get());
  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  const StatePtr state = new_state(model.get());
  const int threads = rwkvl_context_threads(ctx.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const size_t n_prompt = static_cast<size_t>(args.integer("prompt-tokens"));
  const size_t n_gen = static_cast<size_t>(args.integer("gen-tokens"));

  TokenSource rng(static_cast<uint64_t>(args.integer("seed")));
  std::vector<int32_t> prompt(n_prompt);
  for (auto& t : prompt) t = rng.next(info.n_vocab);
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));

  // Warm-up: pages every weight in (mmap) and starts the thread pool; not timed.
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), std::min<size_t>(n_prompt, 8), chunk, logits.data()));
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), 1, 1, logits.data()));
  check(rwkvl_state_reset(state.get()));

  const double t0 = now_seconds();
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), n_prompt, chunk, logits.data()));
  const double t1 = now_seconds();
  int32_t token = argmax(logits);
  for (size_t i = 0; i < n_gen; ++i) {
    check(rwkvl_eval(ctx.get(), state.get(), &token, 1, 1, logits.data()));
    token = argmax(logits);
  }
  const double t2 = now_seconds();

  const double prompt_tps = static_cast<double>(n_prompt) / (t1 - t0);
  const double gen_tps = static_cast<double>(n_gen) / (t2 - t1);
  const uint64_t peak_rss = rwkvl_peak_rss_bytes();
  const double achieved = static_cast<double>(info.bytes_per_token) * gen_tps;
  // The bound is measured (after peak RSS is read: its buffer is large) with a buffer at least as
  // large as the weights one token reads, so both sit in the same level of the memory hierarchy. The
  // best of two runs is the bound: bandwidth on a shared machine varies, and a high bound errs on the
  // side of a lower percentage.
  const bool measure = !args.on("no-bandwidth");
  const uint64_t bw_buffer = std::max<uint64_t>(256ull << 20, info.bytes_per_token);
  double measured = 0.0;
  if (measure) {
    measured = std::max(rwkvl_measure_read_bandwidth(threads, bw_buffer, 0.5),
                        rwkvl_measure_read_bandwidth(threads, bw_buffer, 0.5));
    if (measured <= 0.0) throw Failure(std::string("measuring the memory bandwidth failed: ") + rwkvl_last_error());
  }
  const double pct = measure ? 100.0 * achieved / measured : 0.0;

  if (json) {
    nlohmann::json j = {{"system", system},
                        {"model", model_path},
                        {"arch", info.arch_name},
                        {"file_kind", info.file_kind},
                        {"weight_dtype", info.weight_dtype},
                        {"n_layer", info.n_layer},
                        {"n_embd", info.n_embd},
                        {"n_vocab", info.n_vocab},
                        {"n_params", info.n_params},
                        {"weight_bytes", info.weight_bytes},
                        {"threads", threads},
                        {"load_seconds", load_seconds},
                        {"prompt_tokens", n_prompt},
                        {"prompt_tok_per_s", prompt_tps},
                        {"gen_tokens", n_gen},
                        {"gen_tok_per_s", gen_tps},
                        {"gen_ms_per_tok", 1e3 / gen_tps},
                        {"peak_rss_bytes", peak_rss},
                        {"bytes_per_token", info.bytes_per_token},
                        {"achieved_gb_per_s", achieved / 1e9},
                        {"measured_gb_per_s", measure ? nlohmann::json(measured / 1e9) : nlohmann::json(nullptr)},
                        {"bandwidth_buffer_bytes", bw_buffer},
                        {"bandwidth_pct", measure ? nlohmann::json(pct) : nlohmann::json(nullptr)}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model: %s (%s %s, %d layers, embd %d, vocab %d, %s, %s of weights)\n", model_path.c_str(),
              info.file_kind, info.arch_name, info.n_layer, info.n_embd, info.n_vocab, info.weight_dtype,
              format_bytes(info.weight_bytes).c_str());
  std::printf("threads: %d, chunk: %s, load: %.2f s\n\n", threads,
              chunk ? std::to_string(chunk).c_str() : "library default", load_seconds);
  const std::string prompt_label = "prompt processing (" + std::to_string(n_prompt) + " tok)";
  const std::string gen_label = "generation (" + std::to_string(n_gen) + " tok)";
  std::printf("%-30s %12.1f tok/s  %9.3f ms/tok\n", prompt_label.c_str(), prompt_tps, 1e3 / prompt_tps);
  std::printf("%-30s %12.1f tok/s  %9.3f ms/tok\n", gen_label.c_str(), gen_tps, 1e3 / gen_tps);
  std::printf("%-30s %12s\n", "peak RSS", format_bytes(peak_rss).c_str());
  std::printf("%-30s %12s\n", "weights read per token", format_bytes(info.bytes_per_token).c_str());
  std::printf("%-30s %12.2f GB/s\n", "achieved (generation)", achieved / 1e9);
  if (measure) {
    std::printf("%-30s %12.2f GB/s  (%d thread%s, %s buffer, best of 2)\n", "measured read bandwidth",
                measured / 1e9, threads, threads == 1 ? "" : "s", format_bytes(bw_buffer).c_str());
    std::printf("%-30s %12.1f %%\n", "of the bandwidth bound", pct);
  }
  return 0;
}

}  // namespace rwkvl::cli
