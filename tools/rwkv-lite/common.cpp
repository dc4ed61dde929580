#include "common.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sstream>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"

namespace rwkvl::cli {

void check(rwkvl_status st) {
  if (st == RWKVL_OK) return;
  const char* msg = rwkvl_last_error();
  throw Failure(msg && *msg ? msg : rwkvl_status_name(st));
}

void check(rwkvl_status st, const std::string& context) {
  if (st == RWKVL_OK) return;
  const char* msg = rwkvl_last_error();
  throw Failure(context + ": " + (msg && *msg ? msg : rwkvl_status_name(st)));
}

std::string require(const Args& args, const char* name) {
  if (!args.given(name)) {
    for (const auto& f : flag_table()) {
      if (std::strcmp(f.name, name) != 0) continue;
      std::string flag = f.short_name ? std::string("-") + f.short_name + "/--" + name : std::string("--") + name;
      args.fail("missing " + flag + " " + f.metavar);
    }
    args.fail(std::string("missing --") + name);
  }
  return args.str(name);
}

ModelPtr load_model(const Args& args) {
  const std::string path = require(args, "model");
  rwkvl_model_params params = rwkvl_model_default_params();
  if (args.accepts("weight-dtype")) params.weight_dtype = rwkvl_dtype_name(dtype_flag(args, "weight-dtype"));
  rwkvl_model* m = nullptr;
  check(rwkvl_model_load(path.c_str(), &params, &m));
  return ModelPtr(m);
}

rwkvl_dtype dtype_flag(const Args& args, const char* name) {
  rwkvl_dtype d = RWKVL_DTYPE_KEEP;
  check(rwkvl_dtype_from_string(args.str(name).c_str(), &d), std::string("--") + name);
  return d;
}

std::map<std::string, DtypeBytes> projection_bytes(const rwkvl_model* model, int n_layer) {
  std::map<std::string, DtypeBytes> by;
  for (int l = 0; l < n_layer; ++l)
    for (int p = 0; p < 8; ++p) {
      rwkvl_matrix_info m{};
      check(rwkvl_model_get_matrix(model, l, p, &m));
      if (!m.present) continue;
      DtypeBytes& d = by[std::string(rwkvl_dtype_name(m.dtype)) + (m.factored ? " (factored)" : "")];
      d.matrices += 1;
      d.weights += static_cast<uint64_t>(m.rows * m.cols);
      d.bytes += m.bytes;
    }
  return by;
}

std::string projection_line(const std::string& dtype, const DtypeBytes& d) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-20s %3d matrices, %s, %.2f bits per weight", dtype.c_str(), d.matrices,
                format_bytes(d.bytes).c_str(),
                d.weights ? 8.0 * static_cast<double>(d.bytes) / static_cast<double>(d.weights) : 0.0);
  return buf;
}

nlohmann::json projection_json(const std::map<std::string, DtypeBytes>& by) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, d] : by) j[name] = {{"matrices", d.matrices}, {"weights", d.weights}, {"bytes", d.bytes}};
  return j;
}

rwkvl_model_info model_info(const rwkvl_model* model) {
  rwkvl_model_info info{};
  check(rwkvl_model_get_info(model, &info));
  return info;
}

uint64_t parse_bytes(const Args& args, const char* flag, uint64_t percent_base) {
  const std::string b = args.str(flag);
  const uint64_t v = parse_bytes(b, percent_base);
  if (v == 0)
    args.fail(std::string("invalid --") + flag + " '" + b + "' (e.g. 40000000, 40M, 1.5G" +
              (percent_base ? ", 25%)" : ")"));
  return v;
}

uint64_t parse_bytes(const std::string& b, uint64_t percent_base) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(b.c_str(), &end);
  const std::string suffix = end ? end : "";
  if (suffix == "K" || suffix == "k") v *= 1024.0;
  else if (suffix == "M" || suffix == "m") v *= 1024.0 * 1024.0;
  else if (suffix == "G" || suffix == "g") v *= 1024.0 * 1024.0 * 1024.0;
  else if (suffix == "%" && percent_base > 0 && v > 0 && v <= 100) v = v / 100.0 * static_cast<double>(percent_base);
  else if (!suffix.empty()) v = -1;
  if (b.empty() || errno != 0 || !(v >= 1) || v > 1e15) return 0;
  return static_cast<uint64_t>(v);
}

rwkvl_ffn_params ffn_params(const Args& args, const rwkvl_model* model) {
  rwkvl_ffn_params p = rwkvl_ffn_default_params();
  if (!args.accepts("ffn-mode")) return p;
  check(rwkvl_ffn_mode_from_string(args.str("ffn-mode").c_str(), &p.mode), "--ffn-mode");
  if (args.given("ffn-cache")) p.cache_bytes = parse_bytes(args, "ffn-cache", model_info(model).ffn_weight_bytes);
  p.prefetch = args.on("ffn-prefetch") ? 1 : 0;
  p.verify = args.accepts("verify") && args.on("verify") ? 1 : 0;
  return p;
}

Settings settings(const Args& args, const rwkvl_model* model) {
  Settings s{ffn_params(args, model), rwkvl_head_default_params(), rwkvl_memory_default_params(), {0.0, 0.0, 1}, 0, 0, {}, 0};
  if (args.accepts("head-mode")) {
    check(rwkvl_head_mode_from_string(args.str("head-mode").c_str(), &s.head.mode), "--head-mode");
    s.head.p = args.number("head-p");
    s.head.min_clusters = static_cast<int>(args.integer("head-min"));
    s.head.max_clusters = static_cast<int>(args.integer("head-max"));
    if (s.head.max_clusters < s.head.min_clusters)
      args.fail("--head-max (" + std::to_string(s.head.max_clusters) + ") is below --head-min (" +
                std::to_string(s.head.min_clusters) + ")");
    s.head.compare = args.command() == "eval" && !args.on("no-head-compare") ? 1 : 0;
    if (s.head.mode != RWKVL_HEAD_FULL && !model_info(model).cluster_head) {
      if (s.head.mode == RWKVL_HEAD_CLUSTER)
        args.fail("--head-mode cluster needs a file with a cluster head (made by rwkv-lite compress --cluster-head K)");
      for (const char* f : {"head-p", "head-min", "head-max"})
        if (args.given(f)) args.fail(std::string("--") + f + " needs a file with a cluster head (rwkv-lite compress --cluster-head K)");
    }
  }
  if (args.accepts("emb-cache")) s.mem.emb_cache_rows = args.integer("emb-cache");
  if (args.accepts("de-cache")) s.de_cache_rows = args.integer("de-cache");
  if (args.accepts("mem-budget") && args.given("mem-budget"))
    s.mem.budget_bytes = parse_bytes(args, "mem-budget", model_info(model).n_params * 2);
  if (args.accepts("print-plan") && args.on("print-plan") && !s.mem.budget_bytes) args.fail("--print-plan needs --mem-budget BYTES");
  if (args.accepts("no-prefetch") && args.on("no-prefetch") && !s.mem.budget_bytes) args.fail("--no-prefetch needs --mem-budget BYTES");
  s.mem.prefetch = args.accepts("no-prefetch") && args.on("no-prefetch") ? 0 : 1;
  // Under a budget, chunks of 8 tokens unless --chunk says otherwise (the scratch grows with the chunk).
  if (args.accepts("chunk")) s.mem.max_chunk = static_cast<int>(args.integer("chunk"));
  if (s.mem.budget_bytes && s.mem.max_chunk == 0) s.mem.max_chunk = 8;
  // Room for the logits buffers of the commands that hold one vector (eval / bench raise it).
  s.mem.reserve_bytes = 2 * static_cast<uint64_t>(model_info(model).n_vocab) * 4;
  const bool preset = args.accepts("storage") && args.given("storage");
  if (preset) check(rwkvl_storage_preset(args.str("storage").c_str(), &s.storage), "--storage");
  if (args.accepts("io-throttle") && args.given("io-throttle")) s.storage.mb_per_s = args.number("io-throttle");
  const bool throttled = args.accepts("io-throttle") && args.given("io-throttle");
  for (const char* f : {"io-latency", "io-queue"})
    if (args.accepts(f) && args.given(f) && !throttled && !preset)
      args.fail(std::string("--") + f + " needs --io-throttle MB/s or --storage DEVICE");
  if (args.accepts("io-latency") && args.given("io-latency")) s.storage.latency_us = args.number("io-latency");
  if (args.accepts("io-queue") && args.given("io-queue")) s.storage.queue_depth = static_cast<int>(args.integer("io-queue"));
  s.mem.io_mb_per_s = s.storage.mb_per_s;
  s.mem.io_latency_us = s.storage.latency_us;
  for (const char* f : {"latency-target", "compute-ms", "fidelity", "mem-baseline"})
    if (args.accepts(f) && args.given(f) && !s.mem.budget_bytes) args.fail(std::string("--") + f + " needs --mem-budget BYTES");
  if (args.accepts("latency-target") && args.given("latency-target")) s.latency_target_ms = args.number("latency-target");
  if (args.accepts("compute-ms") && args.given("compute-ms")) s.compute_ms = args.number("compute-ms");
  if (args.accepts("fidelity") && args.given("fidelity")) s.head_fidelity = args.str("fidelity");
  if (args.accepts("mem-baseline") && args.given("mem-baseline")) s.baseline_bytes = parse_bytes(args, "mem-baseline");
  return s;
}

void apply(const Settings& s, rwkvl_context* ctx) {
  // The plan measures the process's resident memory as its baseline: give freed heap back first.
  if (s.mem.budget_bytes) release_free_memory();
  rwkvl_session_params p = rwkvl_session_default_params();
  p.n_threads = rwkvl_context_threads(ctx);
  p.ffn = s.ffn;
  p.head = s.head;
  p.memory = s.mem;
  rwkvl_session_extras x = rwkvl_session_default_extras();
  x.storage = &s.storage;
  x.latency_target_ms = s.latency_target_ms;
  x.compute_ms = s.compute_ms;
  x.head_fidelity = s.head_fidelity.empty() ? nullptr : s.head_fidelity.c_str();
  x.baseline_bytes = s.baseline_bytes;
  x.de_cache_rows = s.de_cache_rows;
  check(rwkvl_context_configure_with(ctx, &p, &x));
}

void apply_settings(const Args& args, const rwkvl_model* model, rwkvl_context* ctx) {
  apply(settings(args, model), ctx);
  print_plan(args, ctx);
}

namespace {

// The memory plan as text (json 0) or JSON text (1), grown to its length (the cap/n_out protocol).
rwkvl_status plan_text(rwkvl_context* ctx, int json, std::string& text) {
  size_t n = 0;
  text.assign(4096, '\0');
  rwkvl_status st = rwkvl_context_memory_plan(ctx, json, text.data(), text.size(), &n);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n + 1 > text.size()) {
    text.resize(n + 1);
    st = rwkvl_context_memory_plan(ctx, json, text.data(), text.size(), &n);
  }
  text.resize(st == RWKVL_OK ? n : 0);
  return st;
}

}  // namespace

void print_plan(const Args& args, rwkvl_context* ctx) {
  if (!args.accepts("print-plan") || !args.on("print-plan")) return;
  std::string text;
  check(plan_text(ctx, 0, text), "memory plan");
  std::fprintf(stderr, "%s", text.c_str());
}

nlohmann::json plan_json(rwkvl_context* ctx) {
  std::string text;
  if (plan_text(ctx, 1, text) != RWKVL_OK) return nullptr;  // no budget set
  return nlohmann::json::parse(text, nullptr, false);
}

rwkvl_head_stats head_stats(rwkvl_context* ctx) {
  rwkvl_head_stats s{};
  check(rwkvl_context_head_stats(ctx, &s));
  return s;
}

rwkvl_memory_stats memory_stats(rwkvl_context* ctx) {
  rwkvl_memory_stats s{};
  check(rwkvl_context_memory_stats(ctx, &s));
  return s;
}

nlohmann::json head_json(const rwkvl_head_stats& s) {
  const double tk = s.tokens ? static_cast<double>(s.tokens) : 1.0;
  nlohmann::json j = {{"head_mode", rwkvl_head_mode_name(s.mode)},
                      {"head_rows_frac", s.rows ? static_cast<double>(s.rows_read) / static_cast<double>(s.rows) : 0.0},
                      {"head_clusters_per_token", static_cast<double>(s.clusters) / tk},
                      {"head_seconds", s.seconds}};
  if (s.compared) {
    j["head_top1_agree"] = static_cast<double>(s.top1_agree) / static_cast<double>(s.compared);
    j["head_kl"] = s.kl_sum / static_cast<double>(s.compared);
    j["head_compared"] = s.compared;
  }
  return j;
}

rwkvl_deep_embed_stats deep_embed_stats(rwkvl_context* ctx) {
  rwkvl_deep_embed_stats s{};
  check(rwkvl_context_deep_embed_stats(ctx, &s));
  return s;
}

nlohmann::json deep_embed_json(const rwkvl_deep_embed_stats& s, double tokens) {
  nlohmann::json j = nlohmann::json::object();
  if (!s.slots) return j;
  const double tk = tokens > 0 ? tokens : 1.0;
  j["de_cache_tokens"] = s.slots;
  j["de_cache_pinned"] = s.pinned;
  j["de_cache_bytes"] = s.cache_bytes;
  j["de_table_bytes"] = s.table_bytes;
  j["de_row_bytes"] = s.row_bytes;
  j["de_lookups"] = s.lookups;
  j["de_hit_rate"] = s.lookups ? static_cast<double>(s.hits) / static_cast<double>(s.lookups) : 0.0;
  j["de_rows_read_per_token"] = static_cast<double>(s.rows_read) / tk;
  j["de_bytes_read_per_token"] = static_cast<double>(s.bytes_read) / tk;
  j["de_rereads"] = s.rereads;
  return j;
}

void print_deep_embed(const rwkvl_deep_embed_stats& s, double tokens) {
  if (!s.slots) return;
  const double tk = tokens > 0 ? tokens : 1.0;
  std::printf(
      "%-30s %12s  (%lld tokens, %lld pinned; tables %s in the file), hit rate %.4f, %.1f rows = %s read per token\n",
      "DeepEmbed cache", format_bytes(s.cache_bytes).c_str(), static_cast<long long>(s.slots),
      static_cast<long long>(s.pinned), format_bytes(s.table_bytes).c_str(),
      s.lookups ? static_cast<double>(s.hits) / static_cast<double>(s.lookups) : 0.0,
      static_cast<double>(s.rows_read) / tk,
      format_bytes(static_cast<uint64_t>(static_cast<double>(s.bytes_read) / tk)).c_str());
}

nlohmann::json memory_json(const rwkvl_memory_stats& s, const rwkvl_memory_params& p) {
  nlohmann::json j = nlohmann::json::object();
  if (s.emb_cache_rows) {
    j["emb_cache_rows"] = s.emb_cache_rows;
    j["emb_cache_bytes"] = s.emb_cache_bytes;
    j["emb_cache_hit_rate"] = s.emb_lookups ? static_cast<double>(s.emb_hits) / static_cast<double>(s.emb_lookups) : 0.0;
    j["emb_lookups"] = s.emb_lookups;
    j["emb_bytes_read_per_token"] = s.emb_lookups ? static_cast<double>(s.emb_bytes_read) / static_cast<double>(s.emb_lookups) : 0.0;
  }
  if (p.budget_bytes) {
    j["mem_budget"] = p.budget_bytes;
    j["mem_planned_bytes"] = s.planned_bytes;
    j["mem_minimum_bytes"] = s.minimum_bytes;
    j["mem_resident_weight_bytes"] = s.resident_weight_bytes;
    j["mem_planned_stream_bytes_per_token"] = s.planned_stream_bytes_per_token;
    j["mem_prefetch"] = p.prefetch != 0;
    j["layer_loads"] = s.layer_loads;
    j["layer_stream_bytes"] = s.layer_bytes;
    j["layer_prefetch_hits"] = s.layer_prefetch_hits;
    j["layer_wait_seconds"] = s.layer_wait_seconds;
    j["head_stream_bytes"] = s.head_stream_bytes;
  }
  if (p.io_mb_per_s > 0) {
    j["io_throttle_mb_s"] = p.io_mb_per_s;
    j["io_latency_us"] = p.io_latency_us;
  }
  if (s.io_reads) {
    j["io_reads"] = s.io_reads;
    j["io_bytes"] = s.io_bytes;
    j["io_seconds"] = s.io_seconds;
  }
  return j;
}

rwkvl_ffn_stats ffn_stats(rwkvl_context* ctx) {
  rwkvl_ffn_stats s{};
  check(rwkvl_context_ffn_stats(ctx, &s));
  return s;
}

nlohmann::json ffn_json(const rwkvl_ffn_stats& s, const rwkvl_model_info& info) {
  // Tokens that went through the channel-mix (every layer once per token).
  const double tk = s.evals && info.n_layer ? static_cast<double>(s.evals) / info.n_layer : 1.0;
  const double n = s.neurons ? static_cast<double>(s.neurons) : 1.0;
  nlohmann::json j = {{"ffn_mode", rwkvl_ffn_mode_name(s.mode)},
                      {"ffn_active_frac", static_cast<double>(s.computed) / n},
                      {"ffn_value_frac", static_cast<double>(s.value_rows) / n},
                      {"ffn_bytes_per_token", static_cast<double>(s.weight_bytes) / tk},
                      {"ffn_dense_bytes_per_token", static_cast<double>(info.ffn_weight_bytes)},
                      {"ffn_predictor_bytes_per_token", static_cast<double>(s.predictor_bytes) / tk},
                      {"ffn_predictor_time_share", s.seconds > 0 ? s.seconds_predictor / s.seconds : 0.0},
                      {"ffn_seconds", s.seconds}};
  if (s.verified && s.verify_active) j["ffn_recall"] = static_cast<double>(s.verify_hit) / static_cast<double>(s.verify_active);
  if (s.cache_capacity) {
    j["ffn_cache_bytes"] = s.cache_capacity;
    j["ffn_cache_pinned_bytes"] = s.cache_pinned_bytes;
    j["ffn_cache_hit_rate"] = s.cache_requests ? static_cast<double>(s.cache_hits) / static_cast<double>(s.cache_requests) : 0.0;
    j["ffn_storage_bytes_per_token"] = static_cast<double>(s.cache_bytes_read) / tk;
    j["ffn_cache_wait_seconds"] = s.cache_wait_seconds;
  }
  return j;
}

ContextPtr new_context(const rwkvl_model* model, int n_threads) {
  rwkvl_context* c = nullptr;
  check(rwkvl_context_new(model, n_threads, &c));
  return ContextPtr(c);
}

StatePtr new_state(const rwkvl_model* model) {
  rwkvl_state* s = nullptr;
  check(rwkvl_state_new(model, &s));
  return StatePtr(s);
}

TokenizerPtr model_tokenizer(const rwkvl_model* model, const std::string& model_path, const std::string& tok_path) {
  rwkvl_tokenizer* t = nullptr;
  check(rwkvl_tokenizer_for_model(model, model_path.c_str(), tok_path.empty() ? nullptr : tok_path.c_str(), &t));
  return TokenizerPtr(t);
}

std::vector<int32_t> tokenize(const rwkvl_tokenizer* tok, std::string_view text) {
  // Most texts need well under one token per 2 bytes; a longer result is counted and asked for again.
  std::vector<int32_t> ids(text.size() / 2 + 16);
  size_t n = 0;
  rwkvl_status st = rwkvl_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n > ids.size()) {
    ids.resize(n);
    st = rwkvl_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n);
  }
  check(st, "tokenizing");
  ids.resize(n);
  ids.shrink_to_fit();
  return ids;
}

std::string token_bytes(const rwkvl_tokenizer* tok, int32_t id) {
  std::string out(64, '\0');
  size_t n = 0;
  rwkvl_status st = rwkvl_token_bytes(tok, id, out.data(), out.size(), &n);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n > out.size()) {
    out.resize(n);
    st = rwkvl_token_bytes(tok, id, out.data(), out.size(), &n);
  }
  check(st, "decoding token " + std::to_string(id));
  out.resize(n);
  return out;
}

InputPtr open_input(const std::string& path, const char* what, bool allow_stdin) {
  rwkvl_input* in = nullptr;
  check(rwkvl_input_open(path.c_str(), what, allow_stdin ? 1 : 0, &in));
  return InputPtr(in);
}

std::string read_file(const std::string& path, const char* what, uint64_t max_bytes, bool allow_stdin) {
  const InputPtr in = open_input(path, what, allow_stdin);
  const uint64_t size = rwkvl_input_size(in.get());
  auto too_big = [&] {
    throw Failure(std::string(what) + " '" + path + "' is larger than the limit of " + format_bytes(max_bytes));
  };
  if (size > max_bytes) too_big();
  std::string out;
  out.reserve(static_cast<size_t>(size));  // one allocation of the file's size: texts are read before a memory plan
  char buf[1 << 16];
  for (;;) {
    size_t got = 0;
    check(rwkvl_input_read(in.get(), buf, sizeof buf, &got));
    if (got == 0) break;
    if (out.size() + got > max_bytes) too_big();
    out.append(buf, got);
  }
  return out;
}

TextStream::TextStream(const rwkvl_tokenizer* tok, const std::string& path, const char* what) {
  check(rwkvl_text_stream_open(tok, path.c_str(), what, &s_));
}

TextStream::~TextStream() { rwkvl_text_stream_free(s_); }

size_t TextStream::read(int32_t* out, size_t cap) {
  size_t n = 0;
  check(rwkvl_text_stream_read(s_, out, cap, &n));
  return n;
}

void write_file(const std::string& path, const void* data, size_t size, const char* what) {
  // The library's writer: complete or nothing, never through a symlink, device, FIFO or folder.
  check(rwkvl_write_file(path.c_str(), data, size), what);
}

std::string run_gnuplot(const std::string& script) {
  // The script goes in through a pipe filled before gnuplot starts (no deadlock, no SIGPIPE), the SVG
  // comes back on its standard output: gnuplot writes no file itself.
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) throw Failure(std::string("cannot run gnuplot: ") + std::strerror(errno));
  if (pipe2(out, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(in[0]);
    ::close(in[1]);
    throw Failure(std::string("cannot run gnuplot: ") + std::strerror(e));
  }
  auto close_all = [&] {
    for (int fd : {in[0], in[1], out[0], out[1]})
      if (fd >= 0) ::close(fd);
  };
  if (script.size() >= 65536) fcntl(in[1], F_SETPIPE_SZ, static_cast<int>(script.size() + 1));
  size_t done = 0;
  while (done < script.size()) {
    const ssize_t w = ::write(in[1], script.data() + done, script.size() - done);
    if (w <= 0 && errno == EINTR) continue;
    if (w <= 0) {
      close_all();
      throw Failure("cannot run gnuplot: the plot script does not fit in a pipe");
    }
    done += static_cast<size_t>(w);
  }
  ::close(in[1]);
  in[1] = -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  char arg0[] = "gnuplot";
  char* argv[] = {arg0, nullptr};
  pid_t pid = -1;
  const int se = posix_spawnp(&pid, "gnuplot", &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (se != 0) {
    close_all();
    return std::string();
  }
  ::close(in[0]);
  in[0] = -1;
  ::close(out[1]);
  out[1] = -1;
  std::string svg;
  char buf[1 << 15];
  for (;;) {
    const ssize_t r = ::read(out[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    svg.append(buf, static_cast<size_t>(r));
  }
  close_all();
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || svg.find("<svg") == std::string::npos) return std::string();
  return svg;
}

OutputFile::OutputFile(const std::string& path, const char* what) : path_(path), what_(what) {
  check(rwkvl_output_open(path.c_str(), &o_), what_);
}

OutputFile::~OutputFile() { rwkvl_output_free(o_); }

void OutputFile::write(std::string_view data) { check(rwkvl_output_write(o_, data.data(), data.size()), what_); }

void OutputFile::commit() { check(rwkvl_output_commit(o_), what_); }

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  // Find the last lead byte within the final 3 bytes; hold it (and what follows) if its sequence is not
  // complete yet.
  const size_t n = pending_.size();
  size_t hold = 0;
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (need > back) hold = back;
    break;
  }
  std::string out = pending_.substr(0, n - hold);
  pending_.erase(0, n - hold);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace rwkvl::cli
