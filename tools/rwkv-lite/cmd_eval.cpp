// rwkv-lite eval, perplexity and logits: feeding text from a fresh state and reading the logits.
//
// eval = perplexity + bits per byte over one text stream, LAMBADA (lm-eval's lambada_openai protocol),
// model size, resident weights, peak RSS and speed: the figures every compression step is judged by. The
// figures are computed by the library (rwkvl_eval_text, rwkvl_eval_lambada); this file maps flags to those
// calls, plans memory around them and prints.
#include <bit>
#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace rwkvl::cli {

namespace {

std::vector<int32_t> parse_token_list(const Args& args, const std::string& list) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < INT32_MIN || v > INT32_MAX) {
      args.fail("invalid token id '" + item + "' in --tokens (expected comma-separated integers)");
    }
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

struct EvalDeleter {
  void operator()(rwkvl_text_tokens* p) const { rwkvl_text_tokens_free(p); }
  void operator()(rwkvl_lambada* p) const { rwkvl_lambada_free(p); }
};
using TextPtr = std::unique_ptr<rwkvl_text_tokens, EvalDeleter>;
using LambadaPtr = std::unique_ptr<rwkvl_lambada, EvalDeleter>;

TextPtr open_text(const rwkvl_tokenizer* tok, const std::string& path, int64_t max_tokens) {
  rwkvl_text_tokens* t = nullptr;
  check(rwkvl_text_tokens_open(tok, path.c_str(), max_tokens, &t));
  return TextPtr(t);
}

LambadaPtr open_lambada(const std::string& path, int64_t max_passages) {
  rwkvl_lambada* l = nullptr;
  check(rwkvl_lambada_open(path.c_str(), max_passages, &l));
  return LambadaPtr(l);
}

// The progress bar of an evaluation, drawn as the library reports (only when stderr is a terminal).
class EvalProgress {
 public:
  rwkvl_eval_params params(size_t chunk, size_t block) {
    rwkvl_eval_params p = rwkvl_eval_default_params();
    p.chunk = chunk;
    p.block = block;
    p.progress = &EvalProgress::report;
    p.progress_user = this;
    return p;
  }
  void finish() {
    if (bar_) bar_->finish();
    bar_.reset();
  }

 private:
  static void report(void* user, const char* what, uint64_t done, uint64_t total, const char* unit) {
    auto* self = static_cast<EvalProgress*>(user);
    if (!self->bar_) self->bar_.emplace(what, total, unit);
    self->bar_->update(done);
  }
  std::optional<Progress> bar_;
};

rwkvl_text_result eval_text(rwkvl_context* ctx, rwkvl_text_tokens* text, size_t chunk, size_t block) {
  EvalProgress progress;
  const rwkvl_eval_params p = progress.params(chunk, block);
  rwkvl_text_result r{};
  check(rwkvl_eval_text(ctx, text, &p, &r));
  progress.finish();
  return r;
}

rwkvl_lambada_result eval_lambada(rwkvl_context* ctx, rwkvl_lambada* lambada, size_t chunk, size_t block,
                                  OutputFile* details) {
  EvalProgress progress;
  const rwkvl_eval_params p = progress.params(chunk, block);
  rwkvl_lambada_result r{};
  check(rwkvl_eval_lambada(ctx, lambada, &p, details ? details->handle() : nullptr, &r));
  progress.finish();
  return r;
}

// Under a memory budget the tokenizer (several MiB for the World vocabulary) goes once it is no longer needed,
// and freed heap pages go back to the system, so the plan can use that room.
void release_tokenizer(const Args& args, TokenizerPtr& tok) {
  if (!args.given("mem-budget")) return;
  tok.reset();
  release_free_memory();
}

// A field of rwkvl_system_info ("... | isa avx512 | ..." -> "avx512"), "" if absent.
std::string system_field(const std::string& key) {
  const std::string info = rwkvl_system_info();
  size_t pos = 0;
  while (pos <= info.size()) {
    size_t bar = info.find(" | ", pos);
    if (bar == std::string::npos) bar = info.size();
    const std::string part = info.substr(pos, bar - pos);
    if (part.compare(0, key.size() + 1, key + " ") == 0) return part.substr(key.size() + 1);
    pos = bar + 3;
  }
  return "";
}

}  // namespace

int cmd_perplexity(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string text_path = require(args, "file");
  { const InputPtr check_text = open_input(text_path, "text file", true); }  // a bad path fails before the model loads
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  const TextPtr text = open_text(tok.get(), text_path, args.integer("max-tokens"));
  const std::string tok_name = rwkvl_tokenizer_name(tok.get());
  const bool streamed = rwkvl_text_tokens_streaming(text.get()) != 0;
  if (!streamed) release_tokenizer(args, tok);

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const size_t block = rwkvl_eval_block(chunk, set.mem.budget_bytes != 0);
  set.mem.reserve_bytes = rwkvl_eval_reserve_bytes(info.n_vocab, block, streamed, 0);
  if (set.mem.budget_bytes) set.mem.max_chunk = static_cast<int>(block);
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const int n_threads = rwkvl_context_threads(ctx.get());
  const rwkvl_text_result r = eval_text(ctx.get(), text.get(), chunk, block);
  const rwkvl_deep_embed_stats des = deep_embed_stats(ctx.get());
  if (args.on("json")) {
    nlohmann::json j = {{"ppl", r.ppl},
                        {"bpb", r.bpb},
                        {"tokens", r.tokens},
                        {"predicted", r.predicted},
                        {"mean_nll", r.mean_nll},
                        {"tok_per_s", r.tok_per_s},
                        {"seconds", r.seconds},
                        {"threads", n_threads},
                        {"tokenizer", tok_name}};
    const nlohmann::json d = deep_embed_json(des, static_cast<double>(r.tokens));
    for (auto it = d.begin(); it != d.end(); ++it) j[it.key()] = it.value();
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("perplexity %.4f (mean NLL %.5f nats over %zu predicted tokens)\n", r.ppl, r.mean_nll,
                static_cast<size_t>(r.predicted));
    std::printf("tokens %zu, %.2f s, %.1f tok/s, %d thread%s, tokenizer %s\n", static_cast<size_t>(r.tokens), r.seconds,
                r.tok_per_s, n_threads, n_threads == 1 ? "" : "s", tok_name.c_str());
    print_deep_embed(des, static_cast<double>(r.tokens));
  }
  return 0;
}

int cmd_eval(const Args& args) {
  const double t_start = now_seconds();
  const std::string model_path = require(args, "model");
  if (!args.given("text") && !args.given("lambada")) {
    args.fail("missing --text FILE (and/or --lambada FILE): nothing to evaluate");
  }
  if (args.given("lambada-out") && !args.given("lambada")) args.fail("--lambada-out needs --lambada FILE");
  // Inputs are checked before the model is loaded, so bad files fail fast; they are read while they are
  // evaluated, so memory stays bounded whatever their size.
  if (args.given("text")) { const InputPtr check_text = open_input(args.str("text"), "text file", true); }
  const std::string lambada_path = args.given("lambada") ? args.str("lambada") : "";
  LambadaPtr passages;  // every line checked now
  if (!lambada_path.empty()) passages = open_lambada(lambada_path, args.integer("lambada-max"));
  // --lambada-out: one JSON object per passage and line, written as the passages finish (in their order) to a
  // temporary that appears at the path complete once all are done.
  std::optional<OutputFile> details;
  if (args.given("lambada-out")) details.emplace(args.str("lambada-out"), "LAMBADA details file");

  std::error_code ec;
  const uintmax_t file_bytes = std::filesystem::file_size(model_path, ec);
  const double t_load0 = now_seconds();
  const ModelPtr model = load_model(args);
  const double load_seconds = now_seconds() - t_load0;
  const rwkvl_model_info info = model_info(model.get());
  const std::map<std::string, DtypeBytes> proj = projection_bytes(model.get(), info.n_layer);
  TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  TextPtr text;
  if (args.given("text")) text = open_text(tok.get(), args.str("text"), args.integer("max-tokens"));
  if (passages) check(rwkvl_lambada_tokenize(passages.get(), tok.get()));
  const std::string tok_name = rwkvl_tokenizer_name(tok.get());
  const bool text_streamed = rwkvl_text_tokens_streaming(text.get()) != 0;
  const bool lambada_streamed = rwkvl_lambada_streaming(passages.get()) != 0;
  if (!text_streamed && !lambada_streamed) release_tokenizer(args, tok);

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  const size_t block = rwkvl_eval_block(chunk, set.mem.budget_bytes != 0);
  set.mem.reserve_bytes = rwkvl_eval_reserve_bytes(info.n_vocab, block, text_streamed, lambada_streamed);
  if (set.mem.budget_bytes) set.mem.max_chunk = static_cast<int>(block);
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const int n_threads = rwkvl_context_threads(ctx.get());
  std::optional<rwkvl_text_result> ppl;
  if (text) ppl = eval_text(ctx.get(), text.get(), chunk, block);
  text.reset();
  std::optional<rwkvl_lambada_result> lambada;
  if (passages) {
    lambada = eval_lambada(ctx.get(), passages.get(), chunk, block, details ? &*details : nullptr);
    passages.reset();
    if (details) details->commit();
  }
  const uint64_t peak_rss = rwkvl_peak_rss_bytes();
  const double seconds = now_seconds() - t_start;
  rwkvl_ffn_stats fs = ffn_stats(ctx.get());
  rwkvl_head_stats hs = head_stats(ctx.get());
  rwkvl_memory_stats ms = memory_stats(ctx.get());
  const rwkvl_deep_embed_stats des = deep_embed_stats(ctx.get());  // (of ctx: the LAMBADA workers' are not added)
  // The device's busy time is what the plan predicts (reads issued together overlap; the callers' waits add up).
  rwkvl_io_stats io{};
  check(rwkvl_context_io_stats(ctx.get(), &io));
  const double io_busy = set.mem.io_mb_per_s > 0 ? io.device_busy_seconds : io.stall_seconds;
  if (lambada) {
    // The worker contexts' counters (all zero when ctx ran the passages itself).
    check(rwkvl_ffn_stats_add(&fs, &lambada->worker_ffn));
    check(rwkvl_head_stats_add(&hs, &lambada->worker_head));
    check(rwkvl_memory_stats_add(&ms, &lambada->worker_memory));
  }
  const uint64_t ffn_tokens = info.n_layer ? fs.evals / static_cast<uint64_t>(info.n_layer) : 0;

  const std::string isa = system_field("isa");
  using nlohmann::json;
  auto opt = [](bool have, auto v) { return have ? json(v) : json(nullptr); };
  const bool P = ppl.has_value(), L = lambada.has_value();
  const nlohmann::json plan = plan_json(ctx.get());
  if (args.on("json")) {
    json j = {{"model", model_path},
              {"file_kind", info.file_kind},
              {"arch", info.arch_name},
              {"weight_dtype", info.weight_dtype},
              {"n_params", info.n_params},
              {"file_bytes", ec ? json(nullptr) : json(static_cast<uint64_t>(file_bytes))},
              {"weight_bytes", info.weight_bytes},
              {"projection_storage", projection_json(proj)},
              {"peak_rss_bytes", peak_rss},
              {"threads", n_threads},
              {"isa", isa},
              {"tokenizer", tok_name},
              {"ppl", opt(P, P ? ppl->ppl : 0.0)},
              {"bpb", opt(P, P ? ppl->bpb : 0.0)},
              {"mean_nll", opt(P, P ? ppl->mean_nll : 0.0)},
              {"tokens", opt(P, P ? ppl->tokens : 0)},
              {"predicted", opt(P, P ? ppl->predicted : 0)},
              {"predicted_bytes", opt(P, P ? ppl->predicted_bytes : 0)},
              {"tok_per_s", opt(P, P ? ppl->tok_per_s : 0.0)},
              {"ppl_seconds", opt(P, P ? ppl->seconds : 0.0)},
              {"lambada_acc", opt(L, L ? lambada->acc : 0.0)},
              {"lambada_ppl", opt(L, L ? lambada->ppl : 0.0)},
              {"lambada_token_ppl", opt(L, L ? lambada->token_ppl : 0.0)},
              {"lambada_n", opt(L, L ? lambada->n : 0)},
              {"lambada_correct", opt(L, L ? lambada->correct : 0)},
              {"lambada_target_tokens", opt(L, L ? lambada->target_tokens : 0)},
              {"lambada_fallbacks", opt(L, L ? lambada->fallbacks : 0)},
              {"lambada_seconds", opt(L, L ? lambada->seconds : 0.0)},
              {"load_seconds", load_seconds},
              {"seconds", seconds}};
    if (info.sparse_ffn || fs.cache_capacity || args.on("verify")) {
      const json f = ffn_json(fs, info);
      for (auto it = f.begin(); it != f.end(); ++it) j[it.key()] = it.value();
    }
    for (const json& part :
         {head_json(hs), memory_json(ms, set.mem), deep_embed_json(des, static_cast<double>(hs.tokens))})
      for (auto it = part.begin(); it != part.end(); ++it) j[it.key()] = it.value();
    if (plan.is_object())
      j["plan_prediction"] = {{"reads_per_token", plan.value("reads_per_token", 0.0)},
                              {"bytes_per_token", plan.value("streamed_bytes_per_token", 0.0)},
                              {"io_ms_per_token", plan.value("io_ms_per_token", 0.0)},
                              {"measured_io_ms_per_token", hs.tokens ? 1e3 * io_busy / static_cast<double>(hs.tokens) : 0.0},
                              {"head_clusters_resident", plan.value("head_clusters_resident", 0)},
                              {"head_clusters_low", plan.value("head_clusters_low", 0)},
                              {"predicted_loss_nats", plan.value("predicted_loss_nats", 0.0)},
                              {"ms_per_token", plan.value("predicted_ms_per_token", 0.0)},
                              {"latency_target_ms", plan.value("latency_target_ms", 0.0)}};
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("%-15s %s\n", "model", model_path.c_str());
  std::printf("%-15s %s %s, %s, %d layers, embd %d, vocab %d, tokenizer %s\n", "", info.file_kind, info.arch_name,
              info.weight_dtype, info.n_layer, info.n_embd, info.n_vocab, tok_name.c_str());
  if (!ec) {
    std::printf("%-15s %s (%ju bytes)\n", "file size", format_bytes(file_bytes).c_str(), file_bytes);
  }
  std::printf("%-15s %s (%llu bytes)\n", "weights held", format_bytes(info.weight_bytes).c_str(),
              static_cast<unsigned long long>(info.weight_bytes));
  for (const auto& [name, d] : proj) std::printf("%-15s %s\n", "projections", projection_line(name, d).c_str());
  std::printf("%-15s %s\n", "peak RSS", format_bytes(peak_rss).c_str());
  std::printf("%-15s %d, isa %s, load %.2f s\n", "threads", n_threads, isa.c_str(), load_seconds);
  if (P) {
    std::printf("%-15s %-12.4f %zu tokens (%zu predicted), mean NLL %.5f nats\n", "perplexity", ppl->ppl,
                static_cast<size_t>(ppl->tokens), static_cast<size_t>(ppl->predicted), ppl->mean_nll);
    std::printf("%-15s %-12.5f over %zu UTF-8 bytes of the predicted tokens\n", "bits per byte", ppl->bpb,
                static_cast<size_t>(ppl->predicted_bytes));
    std::printf("%-15s %-12.1f tok/s, %.2f s\n", "speed", ppl->tok_per_s, ppl->seconds);
  }
  if (L) {
    std::printf("%-15s %-12.4f %zu / %zu passages\n", "lambada acc", lambada->acc,
                static_cast<size_t>(lambada->correct), static_cast<size_t>(lambada->n));
    std::printf("%-15s %-12.4f per passage (per target token %.4f; %zu target tokens, %zu split apart)\n",
                "lambada ppl", lambada->ppl, lambada->token_ppl, static_cast<size_t>(lambada->target_tokens),
                static_cast<size_t>(lambada->fallbacks));
    std::printf("%-15s %.2f s (%.1f passages/s)\n", "lambada time", lambada->seconds,
                lambada->seconds > 0 ? static_cast<double>(lambada->n) / lambada->seconds : 0.0);
  }
  if (info.sparse_ffn || fs.cache_capacity) {
    const double n = fs.neurons ? static_cast<double>(fs.neurons) : 1.0, tk = ffn_tokens ? static_cast<double>(ffn_tokens) : 1.0;
    std::printf("%-15s %s: %.4f of the neurons computed (value rows %.4f); %s/token of FFN weights (dense %s), "
                "predictor %s/token\n",
                "ffn", rwkvl_ffn_mode_name(fs.mode), static_cast<double>(fs.computed) / n, static_cast<double>(fs.value_rows) / n,
                format_bytes(static_cast<uint64_t>(static_cast<double>(fs.weight_bytes) / tk)).c_str(),
                format_bytes(info.ffn_weight_bytes).c_str(),
                format_bytes(static_cast<uint64_t>(static_cast<double>(fs.predictor_bytes) / tk)).c_str());
    if (fs.verified && fs.verify_active)
      std::printf("%-15s %.5f of the truly active neurons computed\n", "ffn recall",
                  static_cast<double>(fs.verify_hit) / static_cast<double>(fs.verify_active));
    if (fs.cache_capacity)
      std::printf("%-15s %s (pinned %s), hit rate %.4f, %s/token read from the file\n", "ffn cache",
                  format_bytes(fs.cache_capacity).c_str(), format_bytes(fs.cache_pinned_bytes).c_str(),
                  fs.cache_requests ? static_cast<double>(fs.cache_hits) / static_cast<double>(fs.cache_requests) : 0.0,
                  format_bytes(static_cast<uint64_t>(static_cast<double>(fs.cache_bytes_read) / tk)).c_str());
  }
  {
    const double tk = hs.tokens ? static_cast<double>(hs.tokens) : 1.0;
    std::printf("%-15s %s: %.4f of the head rows read per token", "head", rwkvl_head_mode_name(hs.mode),
                hs.rows ? static_cast<double>(hs.rows_read) / static_cast<double>(hs.rows) : 0.0);
    if (hs.mode == RWKVL_HEAD_CLUSTER)
      std::printf(" (%.1f of %d clusters, largest %d tokens)", static_cast<double>(hs.clusters) / tk, info.cluster_head,
                  info.cluster_largest);
    std::printf("\n");
    if (hs.compared)
      std::printf("%-15s top-1 agreement %.4f, mean KL %.5f nats over %llu tokens\n", "head vs full",
                  static_cast<double>(hs.top1_agree) / static_cast<double>(hs.compared), hs.kl_sum / static_cast<double>(hs.compared),
                  static_cast<unsigned long long>(hs.compared));
  }
  if (des.slots) print_deep_embed(des, static_cast<double>(hs.tokens));
  if (ms.emb_cache_rows)
    std::printf("%-15s %lld rows (%s), hit rate %.4f over %llu lookups, %s read from the file\n", "emb cache",
                static_cast<long long>(ms.emb_cache_rows), format_bytes(ms.emb_cache_bytes).c_str(),
                ms.emb_lookups ? static_cast<double>(ms.emb_hits) / static_cast<double>(ms.emb_lookups) : 0.0,
                static_cast<unsigned long long>(ms.emb_lookups), format_bytes(ms.emb_bytes_read).c_str());
  if (set.mem.budget_bytes)
    std::printf("%-15s %s: planned peak %s (minimum %s), weights resident %s, %s/token streamed (plan); "
                "%llu layer loads, %.2f s waited for them, %s of head rows streamed\n",
                "mem budget", format_bytes(set.mem.budget_bytes).c_str(), format_bytes(ms.planned_bytes).c_str(),
                format_bytes(ms.minimum_bytes).c_str(), format_bytes(ms.resident_weight_bytes).c_str(),
                format_bytes(ms.planned_stream_bytes_per_token).c_str(), static_cast<unsigned long long>(ms.layer_loads),
                ms.layer_wait_seconds, format_bytes(ms.head_stream_bytes).c_str());
  if (plan.is_object() && hs.tokens) {
    const double tk = static_cast<double>(hs.tokens);
    std::printf("%-15s predicted %.1f reads, %s, %.2f ms of storage time per token; measured %.1f reads, %s, %.2f ms "
                "(device busy)\n",
                "plan vs run", plan.value("reads_per_token", 0.0),
                format_bytes(plan.value("streamed_bytes_per_token", uint64_t{0})).c_str(), plan.value("io_ms_per_token", 0.0),
                static_cast<double>(ms.io_reads) / tk, format_bytes(static_cast<uint64_t>(static_cast<double>(ms.io_bytes) / tk)).c_str(),
                1e3 * io_busy / tk);
    if (plan.value("latency_target_ms", 0.0) > 0 || plan.value("compute_ms_per_token", 0.0) > 0)
      std::printf("%-15s predicted %.2f ms per token (storage + compute %.2f)%s; measured %.2f ms\n", "time/token",
                  plan.value("predicted_ms_per_token", 0.0), plan.value("compute_ms_per_token", 0.0),
                  plan.value("latency_target_ms", 0.0) > 0 ? (", target " + std::to_string(plan.value("latency_target_ms", 0.0)).substr(0, 6) + " ms").c_str() : "",
                  ppl && ppl->tok_per_s > 0 ? 1e3 / ppl->tok_per_s : 0.0);
  }
  if (set.mem.io_mb_per_s > 0)
    std::printf("%-15s %.0f MB/s, %.0f us per read: %llu reads, %s, %.2f s\n", "storage", set.mem.io_mb_per_s,
                set.mem.io_latency_us, static_cast<unsigned long long>(ms.io_reads), format_bytes(ms.io_bytes).c_str(), ms.io_seconds);
  std::printf("%-15s %.2f s\n", "total time", seconds);
  return 0;
}

int cmd_logits(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string out_path = require(args, "out");
  check(rwkvl_check_output_path(out_path.c_str()), "--out");  // before loading the model
  if (args.given("tokens") == args.given("text")) args.fail("give exactly one of --tokens IDS or --text TEXT");
  std::vector<int32_t> ids;
  if (args.given("tokens")) ids = parse_token_list(args, args.str("tokens"));

  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  if (args.given("text")) {
    const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
    ids = tokenize(tok.get(), args.str("text"));
  }
  if (ids.empty()) args.fail("no tokens to feed");

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  apply_settings(args, model.get(), ctx.get());
  const StatePtr state = new_state(model.get());
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));
  check(rwkvl_eval(ctx.get(), state.get(), ids.data(), ids.size(), static_cast<size_t>(args.integer("chunk")),
                   logits.data()));
  if constexpr (std::endian::native == std::endian::big) {
    for (float& f : logits) f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
  }
  write_file(out_path, logits.data(), logits.size() * sizeof(float), "--out");
  std::fprintf(stderr, "wrote %zu logits after %zu tokens to %s\n", logits.size(), ids.size(), out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
