// rwkv-lite bench: prompt and generation speed, memory, and how close generation gets to the
// memory-bandwidth bound (every weight byte must be read once per generated token).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

// The first index of the largest value: the maximum by 16 independent lanes (a loop the compiler vectorises; the
// one-compare-per-element form ran ~0.05 ms per 65,536 logits, a tenth of a compressed model's token), then its
// first occurrence. NaN logits never reach here (rwkvl_eval refuses them).
int32_t argmax(const std::vector<float>& v) {
  constexpr size_t L = 16;
  float m[L];
  std::fill(m, m + L, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + L <= v.size(); i += L)
    for (size_t l = 0; l < L; ++l) m[l] = v[i + l] > m[l] ? v[i + l] : m[l];
  float best = *std::max_element(m, m + L);
  for (; i < v.size(); ++i) best = std::max(best, v[i]);
  return static_cast<int32_t>(std::find(v.begin(), v.end(), best) - v.begin());
}

// RWKV-7a with the DeepEmbed tables on storage: generation with the tables behind the row cache against the tables
// read in place (resident, in the page cache), in alternating rounds from the same state and token, so the two see
// the same tokens. Restores the cache afterwards.
struct DeepEmbedCompare {
  std::vector<double> cached, resident;  // tok/s per round
};
DeepEmbedCompare deep_embed_compare(const Args& args, const rwkvl_model* model, rwkvl_context* ctx,
                                    const std::vector<int32_t>& prompt, size_t n_gen, std::vector<float>& logits) {
  DeepEmbedCompare r;
  const int rounds = static_cast<int>(args.integer("de-rounds"));
  const StatePtr st = new_state(model);
  Settings s = settings(args, model);
  const int64_t cached_rows = s.de_cache_rows;
  for (int i = 0; i < 2 * rounds; ++i) {
    const bool resident = (i % 2) == 1;
    s.de_cache_rows = resident ? 0 : cached_rows;
    apply(s, ctx);
    check(rwkvl_state_reset(st.get()));
    check(rwkvl_eval(ctx, st.get(), prompt.data(), std::min<size_t>(prompt.size(), 16), 0, logits.data()));
    int32_t token = argmax(logits);
    const double t0 = now_seconds();
    for (size_t k = 0; k < n_gen; ++k) {
      check(rwkvl_eval(ctx, st.get(), &token, 1, 1, logits.data()));
      token = argmax(logits);
    }
    (resident ? r.resident : r.cached).push_back(static_cast<double>(n_gen) / (now_seconds() - t0));
  }
  s.de_cache_rows = cached_rows;
  apply(s, ctx);
  return r;
}

std::string range_text(std::vector<double> v) {
  if (v.empty()) return "-";
  std::sort(v.begin(), v.end());
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.1f-%.1f (median %.1f)", v.front(), v.back(), v[v.size() / 2]);
  return buf;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int cmd_bench(const Args& args) {
  if (args.given("budgets")) return bench_budgets(args);
  if (args.given("output")) {
    if (args.on("json")) args.fail("give -o json or --json, not both");
    return bench_table(args);
  }
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
  apply_settings(args, model.get(), ctx.get());
  const StatePtr state = new_state(model.get());
  const int threads = rwkvl_context_threads(ctx.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const size_t n_prompt = static_cast<size_t>(args.integer("prompt-tokens"));
  const size_t n_gen = static_cast<size_t>(args.integer("gen-tokens"));

  TokenSource rng(static_cast<uint64_t>(args.integer("seed")));
  std::vector<int32_t> prompt(n_prompt);
  for (auto& t : prompt) t = rng.next(info.n_vocab);
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));

  // Warm-up: pages every weight in (mmap), starts the thread pool and grows the scratch to one chunk of the prompt
  // (rwkvl_eval's default chunk: 32); one-time costs of a context, not timed.
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), std::min<size_t>(n_prompt, chunk ? chunk : 32), chunk,
                   logits.data()));
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), 1, 1, logits.data()));
  check(rwkvl_state_reset(state.get()));

  const double t0 = now_seconds();
  check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), n_prompt, chunk, logits.data()));
  const double t1 = now_seconds();
  check(rwkvl_context_reset_ffn_stats(ctx.get()));  // the FFN and head figures below are those of generation
  check(rwkvl_context_reset_head_stats(ctx.get()));
  check(rwkvl_context_reset_memory_stats(ctx.get()));
  rwkvl_io_stats io0{};
  check(rwkvl_context_io_stats(ctx.get(), &io0));
  uint64_t regions0 = 0, regions1 = 0;
  check(rwkvl_context_parallel_regions(ctx.get(), &regions0));
  int32_t token = argmax(logits);
  for (size_t i = 0; i < n_gen; ++i) {
    check(rwkvl_eval(ctx.get(), state.get(), &token, 1, 1, logits.data()));
    token = argmax(logits);
  }
  const double t2 = now_seconds();
  check(rwkvl_context_parallel_regions(ctx.get(), &regions1));
  const double regions_per_tok = n_gen ? static_cast<double>(regions1 - regions0) / static_cast<double>(n_gen) : 0.0;

  const rwkvl_ffn_stats fs = ffn_stats(ctx.get());
  const rwkvl_deep_embed_stats des = deep_embed_stats(ctx.get());  // since the reset below: prompt and generation
  rwkvl_head_stats hs{};
  check(rwkvl_context_head_stats(ctx.get(), &hs));
  // The bytes generation touched per token, part by part (the cluster head's rows and the FFN's neurons as read).
  rwkvl_touched tb{};
  check(rwkvl_touched_per_token(model.get(), &fs, &hs, &tb));
  const nlohmann::json plan = plan_json(ctx.get());
  rwkvl_io_stats io1{};
  check(rwkvl_context_io_stats(ctx.get(), &io1));
  // Reads from the model file per generated token: count, bytes, the simulated device's busy time, the time the
  // forward pass stalled waiting for them, and the rest of the token's time (compute).
  const double ng = n_gen ? static_cast<double>(n_gen) : 1.0;
  const double io_reads = static_cast<double>(io1.reads - io0.reads) / ng, io_bytes = static_cast<double>(io1.bytes - io0.bytes) / ng;
  const double io_busy_ms = 1e3 * (io1.device_busy_seconds - io0.device_busy_seconds) / ng;
  const double io_stall_ms = 1e3 * (io1.stall_seconds - io0.stall_seconds) / ng;
  const double prompt_tps = static_cast<double>(n_prompt) / (t1 - t0);
  const double gen_tps = static_cast<double>(n_gen) / (t2 - t1);
  const uint64_t peak_rss = rwkvl_peak_rss_bytes();
  const double achieved = tb.total * gen_tps;
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
  const bool show_ffn = info.sparse_ffn || fs.cache_capacity || args.on("verify") || args.given("ffn-random");
  // Bytes touched per generated token with the channel-mix as it actually ran.
  const double gen_evals_per_tok = info.n_layer ? static_cast<double>(fs.evals) / info.n_layer : 0.0;
  const double ffn_bpt = gen_evals_per_tok > 0 ? static_cast<double>(fs.weight_bytes) / gen_evals_per_tok : 0.0;
  const double pred_bpt = gen_evals_per_tok > 0 ? static_cast<double>(fs.predictor_bytes) / gen_evals_per_tok : 0.0;

  const double n_gen_d = n_gen ? static_cast<double>(n_gen) : 1.0;
  DeepEmbedCompare dec;
  // (not under a budget: the tables in place would not fit it)
  if (des.slots && !plan.is_object() && args.integer("de-rounds") > 0)
    dec = deep_embed_compare(args, model.get(), ctx.get(), prompt, n_gen, logits);

  // Side by side: the dense channel-mix against forced random active sets (the predictor still runs).
  struct Compare {
    std::string config;
    double frac = 0, ffn_ms = 0, tok_s = 0, active = 0, bytes = 0, pred_share = 0;
  };
  std::vector<Compare> cmp;
  if (args.given("ffn-random")) {
    if (!info.sparse_ffn) args.fail("--ffn-random needs a neuron-bundled model (rwkv-lite compress --sparse-ffn)");
    std::vector<double> fracs = {0.0};
    std::string list = args.str("ffn-random");
    for (size_t a = 0; a <= list.size();) {
      const size_t b = std::min(list.find(',', a), list.size());
      const std::string item = list.substr(a, b - a);
      char* end = nullptr;
      const double v = std::strtod(item.c_str(), &end);
      if (item.empty() || *end || !(v > 0 && v <= 1)) args.fail("invalid --ffn-random '" + list + "' (shares in (0, 1], e.g. 0.1,0.5)");
      fracs.push_back(v);
      a = b + 1;
    }
    for (double f : fracs) {
      rwkvl_ffn_params p = ffn_params(args, model.get());
      p.mode = f > 0 ? RWKVL_FFN_PREDICT : RWKVL_FFN_DENSE;
      p.random_frac = f;
      p.verify = 0;
      check(rwkvl_context_set_ffn(ctx.get(), &p));
      check(rwkvl_state_reset(state.get()));
      int32_t tk = prompt[0];
      for (int w = 0; w < 2; ++w) check(rwkvl_eval(ctx.get(), state.get(), &tk, 1, 1, logits.data()));
      check(rwkvl_context_reset_ffn_stats(ctx.get()));
      const double a0 = now_seconds();
      for (size_t i = 0; i < n_gen; ++i) {
        tk = prompt[i % prompt.size()];
        check(rwkvl_eval(ctx.get(), state.get(), &tk, 1, 1, logits.data()));
      }
      const double a1 = now_seconds();
      const rwkvl_ffn_stats c = ffn_stats(ctx.get());
      const double toks = info.n_layer ? static_cast<double>(c.evals) / info.n_layer : 1.0;
      Compare r;
      r.config = f > 0 ? "random " + std::to_string(static_cast<int>(std::lround(f * 100))) + "%" : "dense";
      r.frac = f;
      r.ffn_ms = 1e3 * c.seconds / toks;
      r.tok_s = static_cast<double>(n_gen) / (a1 - a0);
      r.active = c.neurons ? static_cast<double>(c.computed) / static_cast<double>(c.neurons) : 0.0;
      r.bytes = static_cast<double>(c.weight_bytes + c.predictor_bytes) / toks;
      r.pred_share = c.seconds > 0 ? c.seconds_predictor / c.seconds : 0.0;
      cmp.push_back(r);
    }
  }

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
                        {"bytes_touched_per_token", tb.total},
                        {"touched", {{"other", tb.other}, {"ffn", tb.ffn}, {"ffn_predictor", tb.ffn_predictor},
                                     {"head", tb.head}, {"cluster_head", tb.cluster_head}, {"emb", tb.emb}}},
                        {"head_rows_per_token", tb.head_rows},
                        {"head_clusters_per_token", tb.head_clusters},
                        {"parallel_regions_per_token", regions_per_tok},
                        {"achieved_gb_per_s", achieved / 1e9},
                        {"measured_gb_per_s", measure ? nlohmann::json(measured / 1e9) : nlohmann::json(nullptr)},
                        {"bandwidth_buffer_bytes", bw_buffer},
                        {"bandwidth_pct", measure ? nlohmann::json(pct) : nlohmann::json(nullptr)},
                        {"io_reads_per_token", io_reads},
                        {"io_bytes_per_token", io_bytes},
                        {"io_device_busy_ms_per_token", io_busy_ms},
                        {"io_stall_ms_per_token", io_stall_ms},
                        {"compute_ms_per_token", std::max(0.0, 1e3 / gen_tps - io_stall_ms)}};
    if (io1.storage.mb_per_s > 0)
      j["storage"] = {{"mb_per_s", io1.storage.mb_per_s}, {"latency_us", io1.storage.latency_us},
                      {"queue_depth", io1.storage.queue_depth}};
    if (plan.is_object())
      j["plan_prediction"] = {{"reads_per_token", plan.value("reads_per_token", 0.0)},
                              {"bytes_per_token", plan.value("streamed_bytes_per_token", 0.0)},
                              {"io_ms_per_token", plan.value("io_ms_per_token", 0.0)}};
    {
      const nlohmann::json d = deep_embed_json(des, n_gen_d);
      for (auto it = d.begin(); it != d.end(); ++it) j[it.key()] = it.value();
    }
    if (!dec.cached.empty())
      j["de_compare"] = {
          {"cached_gen_tok_per_s", dec.cached},
          {"resident_gen_tok_per_s", dec.resident},
          {"speed_ratio_median", median(dec.resident) > 0 ? median(dec.cached) / median(dec.resident) : 0.0}};
    if (show_ffn) {
      const nlohmann::json f = ffn_json(fs, info);
      for (auto it = f.begin(); it != f.end(); ++it) j[it.key()] = it.value();
    }
    if (!cmp.empty()) {
      nlohmann::json a = nlohmann::json::array();
      for (const Compare& c : cmp)
        a.push_back({{"config", c.config},
                     {"random_frac", c.frac},
                     {"ffn_ms_per_token", c.ffn_ms},
                     {"ffn_speedup_vs_dense", c.ffn_ms > 0 ? cmp[0].ffn_ms / c.ffn_ms : 0.0},
                     {"gen_tok_per_s", c.tok_s},
                     {"ffn_active_frac", c.active},
                     {"ffn_bytes_per_token", c.bytes},
                     {"ffn_predictor_time_share", c.pred_share}});
      j["ffn_compare"] = a;
    }
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
  std::printf("%-30s %12s\n", "all weights (one token)", format_bytes(info.bytes_per_token).c_str());
  std::printf("%-30s %12s  (blocks %s, FFN %s + predictors %s, head %s + cluster head %s, embedding row %s)\n",
              "weights touched per token", format_bytes(static_cast<uint64_t>(tb.total)).c_str(),
              format_bytes(static_cast<uint64_t>(tb.other)).c_str(), format_bytes(static_cast<uint64_t>(tb.ffn)).c_str(),
              format_bytes(static_cast<uint64_t>(tb.ffn_predictor)).c_str(), format_bytes(static_cast<uint64_t>(tb.head)).c_str(),
              format_bytes(static_cast<uint64_t>(tb.cluster_head)).c_str(), format_bytes(static_cast<uint64_t>(tb.emb)).c_str());
  if (tb.head_clusters > 0)
    std::printf("%-30s %12.1f rows of %d, %.2f clusters\n", "head per token", tb.head_rows, info.n_vocab, tb.head_clusters);
  if (threads > 1) std::printf("%-30s %12.1f  (a fork and a join each)\n", "parallel regions per token", regions_per_tok);
  if (io1.reads > io0.reads || io1.storage.mb_per_s > 0) {
    if (io1.storage.mb_per_s > 0)
      std::printf("%-30s %12s  (%.0f MB/s, %.0f us per read, %d in flight)\n", "simulated storage", "",
                  io1.storage.mb_per_s, io1.storage.latency_us, io1.storage.queue_depth);
    std::printf("%-30s %12.1f reads, %s\n", "from the file per token", io_reads,
                format_bytes(static_cast<uint64_t>(io_bytes)).c_str());
    std::printf("%-30s %12.3f ms device busy, %.3f ms stalled, %.3f ms compute\n", "per token", io_busy_ms, io_stall_ms,
                std::max(0.0, 1e3 / gen_tps - io_stall_ms));
    if (plan.is_object())
      std::printf("%-30s %12.1f reads, %s, %.3f ms device time\n", "predicted by the plan", plan.value("reads_per_token", 0.0),
                  format_bytes(plan.value("streamed_bytes_per_token", uint64_t{0})).c_str(), plan.value("io_ms_per_token", 0.0));
  }
  print_deep_embed(des, n_gen_d);
  if (!dec.cached.empty())
    std::printf(
        "%-30s %12s  tables on storage %s tok/s, resident %s tok/s (%zu alternating rounds): %.3f of the speed\n",
        "DeepEmbed tables", "", range_text(dec.cached).c_str(), range_text(dec.resident).c_str(), dec.cached.size(),
        median(dec.resident) > 0 ? median(dec.cached) / median(dec.resident) : 0.0);
  std::printf("%-30s %12.2f GB/s\n", "achieved (generation)", achieved / 1e9);
  if (measure) {
    std::printf("%-30s %12.2f GB/s  (%d thread%s, %s buffer, best of 2)\n", "measured read bandwidth",
                measured / 1e9, threads, threads == 1 ? "" : "s", format_bytes(bw_buffer).c_str());
    std::printf("%-30s %12.1f %%  (of the bytes touched)\n", "of the bandwidth bound", pct);
  }
  if (show_ffn) {
    const double n = fs.neurons ? static_cast<double>(fs.neurons) : 1.0;
    std::printf("\nchannel-mix (generation): mode %s, %.4f of the neurons computed, value rows %.4f\n",
                rwkvl_ffn_mode_name(fs.mode), static_cast<double>(fs.computed) / n, static_cast<double>(fs.value_rows) / n);
    std::printf("%-30s %12s  (dense %s)\n", "FFN weights read per token", format_bytes(static_cast<uint64_t>(ffn_bpt)).c_str(),
                format_bytes(info.ffn_weight_bytes).c_str());
    std::printf("%-30s %12s\n", "predictor read per token", format_bytes(static_cast<uint64_t>(pred_bpt)).c_str());
    std::printf("%-30s %12.1f %%\n", "predictor share of FFN time", fs.seconds > 0 ? 100.0 * fs.seconds_predictor / fs.seconds : 0.0);
    if (fs.verified && fs.verify_active)
      std::printf("%-30s %12.4f\n", "recall (verified)", static_cast<double>(fs.verify_hit) / static_cast<double>(fs.verify_active));
    if (fs.cache_capacity) {
      std::printf("%-30s %12s  (pinned %s)\n", "neuron cache", format_bytes(fs.cache_capacity).c_str(),
                  format_bytes(fs.cache_pinned_bytes).c_str());
      std::printf("%-30s %12.4f\n", "cache hit rate",
                  fs.cache_requests ? static_cast<double>(fs.cache_hits) / static_cast<double>(fs.cache_requests) : 0.0);
      std::printf("%-30s %12s\n", "read from storage per token",
                  format_bytes(static_cast<uint64_t>(gen_evals_per_tok > 0 ? static_cast<double>(fs.cache_bytes_read) / gen_evals_per_tok : 0.0)).c_str());
    }
  }
  if (!cmp.empty()) {
    std::printf("\n%-12s %14s %9s %12s %10s %14s %11s\n", "FFN", "ffn ms/token", "speedup", "gen tok/s", "active",
                "FFN bytes/tok", "pred. share");
    for (const Compare& c : cmp)
      std::printf("%-12s %14.4f %8.2fx %12.1f %10.4f %14s %10.1f%%\n", c.config.c_str(), c.ffn_ms,
                  c.ffn_ms > 0 ? cmp[0].ffn_ms / c.ffn_ms : 0.0, c.tok_s, c.active,
                  format_bytes(static_cast<uint64_t>(c.bytes)).c_str(), 100.0 * c.pred_share);
  }
  return 0;
}

}  // namespace rwkvl::cli
