// Pieces the subcommands share: owning handles for the C API, error reporting, file reading,
// tokenization, a UTF-8-safe output stream and small formatting helpers. Public API only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "rwkv_lite.h"

namespace rwkvl::cli {

class Args;

// A failure at run time (library call, file I/O) -> "rwkv-lite: error: <message>", exit code 1.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Failure with rwkvl_last_error() (or the status name) unless st is RWKVL_OK.
void check(rwkvl_status st);
void check(rwkvl_status st, const std::string& context);  // "<context>: <message>"

struct Deleter {
  void operator()(rwkvl_model* p) const { rwkvl_model_free(p); }
  void operator()(rwkvl_context* p) const { rwkvl_context_free(p); }
  void operator()(rwkvl_state* p) const { rwkvl_state_free(p); }
  void operator()(rwkvl_tokenizer* p) const { rwkvl_tokenizer_free(p); }
  void operator()(rwkvl_sampler* p) const { rwkvl_sampler_free(p); }
};
using ModelPtr = std::unique_ptr<rwkvl_model, Deleter>;
using ContextPtr = std::unique_ptr<rwkvl_context, Deleter>;
using StatePtr = std::unique_ptr<rwkvl_state, Deleter>;
using TokenizerPtr = std::unique_ptr<rwkvl_tokenizer, Deleter>;
using SamplerPtr = std::unique_ptr<rwkvl_sampler, Deleter>;

// The value of a required option, or a UsageError naming it.
std::string require(const Args& args, const char* name);

// A dtype flag (--dtype, --weight-dtype, --ffn-dtype, --pred-dtype) through rwkvl_dtype_from_string.
rwkvl_dtype dtype_flag(const Args& args, const char* name);
// Loads --model (with --weight-dtype where the subcommand has it).
ModelPtr load_model(const Args& args);
rwkvl_model_info model_info(const rwkvl_model* model);
// The projections' storage by dtype (factored ones under their A factor's dtype, "(factored)" appended): matrices,
// weights of W, bytes stored (row scales included); as a line ("i8_masked  96 matrices, 520 KiB, 6.19 bits per
// weight") and as JSON ({dtype: {matrices, weights, bytes}}). What `info` and `eval` report.
struct DtypeBytes {
  int matrices = 0;
  uint64_t weights = 0, bytes = 0;
};
std::map<std::string, DtypeBytes> projection_bytes(const rwkvl_model* model, int n_layer);
std::string projection_line(const std::string& dtype, const DtypeBytes& d);
nlohmann::json projection_json(const std::map<std::string, DtypeBytes>& by);
ContextPtr new_context(const rwkvl_model* model, int n_threads);
StatePtr new_state(const rwkvl_model* model);
// A byte count: digits with an optional K, M, G suffix (KiB, MiB, GiB), or "N%" of percent_base when
// that is non-zero. UsageError naming the flag on anything else.
uint64_t parse_bytes(const Args& args, const char* flag, uint64_t percent_base = 0);
// The same for one string; 0 when it is not a valid size.
uint64_t parse_bytes(const std::string& text, uint64_t percent_base = 0);
// The channel-mix settings the command line asks for (--ffn-mode, --ffn-cache, --ffn-prefetch, --verify).
rwkvl_ffn_params ffn_params(const Args& args, const rwkvl_model* model);
// Every run-time setting of a context the command line asks for: channel-mix, output head (--head-mode,
// --head-p/--head-min/--head-max; eval also compares a cluster head with the full head) and memory
// (--emb-cache, --io-throttle, --io-latency).
struct Settings {
  rwkvl_ffn_params ffn;
  rwkvl_head_params head;
  rwkvl_memory_params mem;
  rwkvl_storage_params storage{0.0, 0.0, 1};  // --storage / --io-throttle / --io-latency / --io-queue
  double latency_target_ms = 0, compute_ms = 0;  // --latency-target / --compute-ms
  std::string head_fidelity;                      // --fidelity
  uint64_t baseline_bytes = 0;                    // --mem-baseline
  int64_t de_cache_rows = -1;                     // --de-cache
};
Settings settings(const Args& args, const rwkvl_model* model);
// --print-plan: the context's memory plan to stderr (after apply()).
void print_plan(const Args& args, rwkvl_context* ctx);
// The context's memory plan as JSON (rwkvl_context_memory_plan), or null without a budget.
nlohmann::json plan_json(rwkvl_context* ctx);
// Applies them to a context (Failure with the library's message, e.g. a cache below its minimum).
void apply(const Settings& s, rwkvl_context* ctx);
void apply_settings(const Args& args, const rwkvl_model* model, rwkvl_context* ctx);
rwkvl_head_stats head_stats(rwkvl_context* ctx);
rwkvl_memory_stats memory_stats(rwkvl_context* ctx);
// Report keys: head_mode, head_rows_frac, head_clusters_per_token [, head_top1_agree, head_kl]; and
// emb_cache_rows, emb_cache_hit_rate, emb_bytes_read_per_token, io_* when a cache or throttle is on.
nlohmann::json head_json(const rwkvl_head_stats& s);
nlohmann::json memory_json(const rwkvl_memory_stats& s, const rwkvl_memory_params& p);
// RWKV-7a's DeepEmbed row cache: its statistics, as JSON fields (none without a cache) and as one line to stdout
// (nothing without a cache); tokens: the tokens run since the statistics were reset (for bytes per token).
rwkvl_deep_embed_stats deep_embed_stats(rwkvl_context* ctx);
nlohmann::json deep_embed_json(const rwkvl_deep_embed_stats& s, double tokens);
void print_deep_embed(const rwkvl_deep_embed_stats& s, double tokens);
rwkvl_ffn_stats ffn_stats(rwkvl_context* ctx);
// The report keys of the sparse channel-mix (eval --json, bench --json): ffn_mode, ffn_active_frac,
// ffn_bytes_per_token, ffn_predictor_bytes_per_token, ffn_recall (when verified), cache figures.
nlohmann::json ffn_json(const rwkvl_ffn_stats& s, const rwkvl_model_info& info);
// The tokenizer that matches the model's vocabulary (--tokenizer overrides the file).
TokenizerPtr model_tokenizer(const rwkvl_model* model, const std::string& model_path, const std::string& tok_path);

std::vector<int32_t> tokenize(const rwkvl_tokenizer* tok, std::string_view text);
std::string token_bytes(const rwkvl_tokenizer* tok, int32_t id);

struct InputDeleter {
  void operator()(rwkvl_input* p) const { rwkvl_input_free(p); }
};
using InputPtr = std::unique_ptr<rwkvl_input, InputDeleter>;
// A regular file (or "-" for standard input when allow_stdin); Failure naming `what` and the path otherwise.
InputPtr open_input(const std::string& path, const char* what, bool allow_stdin = false);
// Whole file, at most max_bytes (Failure "<what> '<path>' is larger than the limit of ..." beyond). The default
// limit is for texts a workstation command holds whole (calibration text, stats, tokenize); run commands stream.
constexpr uint64_t kMaxWholeFileBytes = 256ull << 20;
std::string read_file(const std::string& path, const char* what, uint64_t max_bytes = kMaxWholeFileBytes,
                      bool allow_stdin = false);

// Tokens of a text file read in pieces (rwkvl_text_stream): bounded memory for any file size.
class TextStream {
 public:
  TextStream(const rwkvl_tokenizer* tok, const std::string& path, const char* what);
  ~TextStream();
  TextStream(const TextStream&) = delete;
  TextStream& operator=(const TextStream&) = delete;
  size_t read(int32_t* out, size_t cap);  // 0 at the end
  uint64_t bytes_read() const { return rwkvl_text_stream_bytes_read(s_); }
  uint64_t forced_cuts() const { return rwkvl_text_stream_forced_cuts(s_); }

 private:
  rwkvl_text_stream* s_ = nullptr;
};
void write_file(const std::string& path, const void* data, size_t size, const char* what);
// Runs gnuplot with `script` on its standard input (an SVG terminal without "set output") and returns the
// SVG it prints, "" when gnuplot is missing or fails. Write the result with write_file().
std::string run_gnuplot(const std::string& script);

// An output written piece by piece (rwkvl_output): the path is checked and the temporary created at once (an
// unusable path fails before any work), the file appears complete at commit(), and nothing is left without it.
class OutputFile {
 public:
  OutputFile(const std::string& path, const char* what);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  void write(std::string_view data);
  void commit();
  rwkvl_output* handle() { return o_; }  // for library calls that write into it (rwkvl_eval_lambada)

 private:
  rwkvl_output* o_ = nullptr;
  std::string path_, what_;
};

// Holds back an incomplete UTF-8 sequence at the end of what was pushed, so a character split across
// tokens is printed whole. Invalid bytes are passed through unchanged.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();

 private:
  std::string pending_;
};

// Seeded token ids (splitmix64) for benchmarks: the same ids for a given seed on every machine.
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

double now_seconds();  // steady clock
// Returns freed heap pages to the system (glibc malloc_trim), so RSS drops before a memory plan.
void release_free_memory();
std::string format_bytes(uint64_t bytes);  // "1.23 GiB"

}  // namespace rwkvl::cli
