// rwkv-lite bench -o md|csv|json: llama-bench's table. Each test (pp<N>: N prompt tokens in sequence mode from a
// fresh state; tg<N>: N tokens generated one at a time with logits) runs -r times after one warm-up run; t/s is
// the mean ± the sample standard deviation over the runs, as llama-bench prints it. Next to it: the bytes of
// weights one generated token touched (rwkvl_touched_per_token: the cluster head's rows and the FFN's neurons as
// read) and the share of the measured memory-bandwidth bound.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

struct Row {
  std::string test;
  int n_prompt = 0, n_gen = 0;
  std::vector<double> ts;  // tokens/s of each run
  double mean() const {
    double s = 0;
    for (double v : ts) s += v;
    return ts.empty() ? 0.0 : s / static_cast<double>(ts.size());
  }
  double sd() const {
    if (ts.size() < 2) return 0.0;
    const double m = mean();
    double s = 0;
    for (double v : ts) s += (v - m) * (v - m);
    return std::sqrt(s / static_cast<double>(ts.size() - 1));
  }
};

// "1.60 B", "38.52 M" (llama-bench's params column).
std::string params_text(uint64_t n) {
  char b[32];
  if (n >= 1000000000ull) std::snprintf(b, sizeof b, "%.2f B", static_cast<double>(n) / 1e9);
  else std::snprintf(b, sizeof b, "%.2f M", static_cast<double>(n) / 1e6);
  return b;
}

// llama-bench's model column: "<arch> <size class> <type>", e.g. "rwkv5.2 0.2B F16".
std::string model_text(const rwkvl_model_info& info) {
  std::string type = info.weight_dtype;
  for (char& c : type) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  char b[96];
  std::snprintf(b, sizeof b, "rwkv%s %.1fB %s", info.arch_name + 1, static_cast<double>(info.n_params) / 1e9, type.c_str());
  return b;
}

std::string size_text(uint64_t bytes) {
  char b[32];
  if (bytes >= (1ull << 30)) std::snprintf(b, sizeof b, "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  else std::snprintf(b, sizeof b, "%.2f MiB", static_cast<double>(bytes) / (1ull << 20));
  return b;
}

double run_once(rwkvl_context* ctx, rwkvl_state* st, const Row& row, size_t chunk, const std::vector<int32_t>& ids,
                std::vector<float>& logits) {
  check(rwkvl_state_reset(st));
  const double t0 = now_seconds();
  if (row.n_prompt > 0) {
    check(rwkvl_eval(ctx, st, ids.data(), static_cast<size_t>(row.n_prompt), chunk, logits.data()));
    return static_cast<double>(row.n_prompt) / (now_seconds() - t0);
  }
  for (int i = 0; i < row.n_gen; ++i) check(rwkvl_eval(ctx, st, &ids[static_cast<size_t>(i) % ids.size()], 1, 1, logits.data()));
  return static_cast<double>(row.n_gen) / (now_seconds() - t0);
}

}  // namespace

int bench_table(const Args& args) {
  const std::string format = args.str("output");
  const std::string model_path = require(args, "model");
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  apply_settings(args, model.get(), ctx.get());
  const StatePtr st = new_state(model.get());
  const int threads = rwkvl_context_threads(ctx.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const int reps = static_cast<int>(args.integer("repetitions"));
  const int n_prompt = args.given("prompt-tokens") ? static_cast<int>(args.integer("prompt-tokens")) : 512;
  const int n_gen = args.given("gen-tokens") ? static_cast<int>(args.integer("gen-tokens")) : 128;
  TokenSource rng(static_cast<uint64_t>(args.integer("seed")));
  std::vector<int32_t> ids(static_cast<size_t>(std::max(n_prompt, n_gen)));
  for (auto& t : ids) t = rng.next(info.n_vocab);
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));

  std::vector<Row> rows = {{"pp" + std::to_string(n_prompt), n_prompt, 0, {}}, {"tg" + std::to_string(n_gen), 0, n_gen, {}}};
  double touched = static_cast<double>(info.bytes_per_token);  // bytes a generated token touched (measured below)
  for (Row& r : rows) {
    run_once(ctx.get(), st.get(), r, chunk, ids, logits);  // warm-up (pages the weights in, starts the threads)
    check(rwkvl_context_reset_ffn_stats(ctx.get()));
    check(rwkvl_context_reset_head_stats(ctx.get()));
    for (int i = 0; i < reps; ++i) r.ts.push_back(run_once(ctx.get(), st.get(), r, chunk, ids, logits));
    if (r.n_gen > 0) {  // the cluster head's rows and the FFN's neurons as the generation runs read them
      rwkvl_ffn_stats fs{};
      rwkvl_head_stats hs{};
      check(rwkvl_context_ffn_stats(ctx.get(), &fs));
      check(rwkvl_context_head_stats(ctx.get(), &hs));
      rwkvl_touched tb{};
      check(rwkvl_touched_per_token(model.get(), &fs, &hs, &tb));
      touched = tb.total;
    }
  }
  const uint64_t bw_buffer = std::max<uint64_t>(256ull << 20, static_cast<uint64_t>(touched));
  const double bound = args.on("no-bandwidth") ? 0.0
                                               : std::max(rwkvl_measure_read_bandwidth(threads, bw_buffer, 0.5),
                                                          rwkvl_measure_read_bandwidth(threads, bw_buffer, 0.5));
  const std::string backend = std::string("CPU");
  const std::string model_name = model_text(info);
  auto bw_pct = [&](const Row& r) { return r.n_gen > 0 && bound > 0 ? 100.0 * r.mean() * touched / bound : -1.0; };

  if (format == "json") {
    nlohmann::json a = nlohmann::json::array();
    for (const Row& r : rows) {
      nlohmann::json j = {{"model_filename", model_path}, {"model_type", model_name}, {"model_size", info.weight_bytes},
                          {"model_n_params", info.n_params}, {"backends", backend}, {"n_threads", threads},
                          {"n_prompt", r.n_prompt}, {"n_gen", r.n_gen}, {"test", r.test}, {"avg_ts", r.mean()},
                          {"stddev_ts", r.sd()}, {"samples_ts", r.ts}, {"bytes_per_token", static_cast<uint64_t>(touched)},
                          {"cpu_info", rwkvl_system_info()}};
      j["bandwidth_pct"] = bw_pct(r) >= 0 ? nlohmann::json(bw_pct(r)) : nlohmann::json(nullptr);
      a.push_back(j);
    }
    std::printf("%s\n", a.dump(2).c_str());
  } else if (format == "csv") {
    std::printf("model_filename,model_type,model_size,model_n_params,backends,n_threads,test,n_prompt,n_gen,avg_ts,stddev_ts,"
                "bytes_per_token,bandwidth_pct\n");
    for (const Row& r : rows)
      std::printf("\"%s\",\"%s\",%llu,%llu,%s,%d,%s,%d,%d,%.6f,%.6f,%llu,%s\n", model_path.c_str(), model_name.c_str(),
                  static_cast<unsigned long long>(info.weight_bytes), static_cast<unsigned long long>(info.n_params),
                  backend.c_str(), threads, r.test.c_str(), r.n_prompt, r.n_gen, r.mean(), r.sd(),
                  static_cast<unsigned long long>(touched),
                  bw_pct(r) >= 0 ? std::to_string(bw_pct(r)).c_str() : "");
  } else {
    std::printf("| model | size | params | backend | threads | test | t/s | bytes/token | bandwidth %% |\n");
    std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (const Row& r : rows) {
      char pct[32] = "-";
      if (bw_pct(r) >= 0) std::snprintf(pct, sizeof pct, "%.1f", bw_pct(r));
      std::printf("| %s | %s | %s | %s | %d | %s | %.2f ± %.2f | %s | %s |\n", model_name.c_str(),
                  size_text(info.weight_bytes).c_str(), params_text(info.n_params).c_str(), backend.c_str(), threads,
                  r.test.c_str(), r.mean(), r.sd(), r.n_gen > 0 ? format_bytes(static_cast<uint64_t>(touched)).c_str() : "-", pct);
    }
    std::printf("\n%s, %d runs per test after one warm-up\n", rwkvl_system_info(), reps);
  }
  return 0;
}

}  // namespace rwkvl::cli
