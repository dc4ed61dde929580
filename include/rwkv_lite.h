/*
 * rwkv-lite C API.
 *
 * Three kinds of handles:
 *   rwkvl_model    read-only weights; may be shared by any number of threads and contexts.
 *   rwkvl_context  a thread pool plus scratch buffers for evaluating one sequence at a time;
 *                  use one context per concurrently evaluating thread.
 *   rwkvl_state    the recurrent state (fixed size); small, copyable, savable to a file.
 *
 * Every function that can fail returns rwkvl_status; on failure rwkvl_last_error() returns a
 * message for the calling thread (valid until that thread's next failing call). Nothing in the
 * library calls exit() or prints, except where a progress callback is given.
 * Unless noted, a NULL handle argument returns RWKVL_ERR_INVALID_ARGUMENT.
 */
#ifndef RWKV_LITE_H
#define RWKV_LITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RWKVL_VERSION_STRING "0.1.0"

typedef enum rwkvl_status {
  RWKVL_OK = 0,
  RWKVL_ERR_INVALID_ARGUMENT = 1, /* an argument is out of range (token id, size, NULL handle, ...) */
  RWKVL_ERR_IO = 2,               /* open/read/write failed */
  RWKVL_ERR_FORMAT = 3,           /* the file is malformed, truncated or inconsistent */
  RWKVL_ERR_UNSUPPORTED = 4,      /* well-formed but not supported (version, dtype, architecture) */
  RWKVL_ERR_OUT_OF_MEMORY = 5,
  RWKVL_ERR_INTERNAL = 6
} rwkvl_status;

/* Message describing the last failure in the calling thread ("" if none). */
const char* rwkvl_last_error(void);
const char* rwkvl_status_name(rwkvl_status s);
/* One line: version, build type, instruction set in use (e.g. "avx2"), compiler. */
const char* rwkvl_system_info(void);

typedef struct rwkvl_model rwkvl_model;
typedef struct rwkvl_context rwkvl_context;
typedef struct rwkvl_state rwkvl_state;
typedef struct rwkvl_tokenizer rwkvl_tokenizer;
typedef struct rwkvl_sampler rwkvl_sampler;

/* ---------------------------------------------------------------- models */

typedef struct rwkvl_model_params {
  /* Weight dtype to hold matrices in after loading: "keep" (as stored; default), "f32", "f16", "bf16"
     or "i8" (per-row int8). Conversions happen at load time. */
  const char* weight_dtype;
  /* GroupNorm epsilon of att.ln_x; <= 0 means the file's / format's own value (default). */
  float ln_x_eps_override;
} rwkvl_model_params;

rwkvl_model_params rwkvl_model_default_params(void);

/* Loads any supported file (rwkv.cpp .bin, PyTorch .pth, safetensors, native rwkv-lite), recognised by
   content. params may be NULL for defaults. */
rwkvl_status rwkvl_model_load(const char* path, const rwkvl_model_params* params, rwkvl_model** out);
void rwkvl_model_free(rwkvl_model* model); /* NULL is a no-op */
/* Drops the process's resident pages of a memory-mapped model file (they are read again when used), e.g.
   between runs under different memory budgets. No contexts may be evaluating meanwhile. */
rwkvl_status rwkvl_model_release_pages(const rwkvl_model* model);

typedef struct rwkvl_model_info {
  int arch_major;        /* 4, 5, 6 or 7 */
  int arch_minor;        /* 5.0/5.1/5.2 -> 0/1/2, else 0 */
  char arch_name[16];    /* "v4", "v5.1", "v5.2", "v6", "v7" */
  char file_kind[16];    /* "rwkv.cpp", "pth", "safetensors", "native" */
  char weight_dtype[16]; /* dtype of most matrices: "f32", "f16", "bf16", "i8", "mixed" */
  int n_layer, n_embd, n_vocab, n_head, head_size, n_ffn;
  float ln_x_eps;             /* 0 for v4 (no ln_x) */
  uint64_t n_params;          /* parameter count */
  uint64_t weight_bytes;      /* bytes of all weights as held in memory */
  uint64_t bytes_per_token;   /* bytes of weights read to generate one token (all matrices, one
                                 embedding row, small vectors, head) */
  uint64_t state_floats;      /* size of the recurrent state in float32 values */
  int sparse_ffn;             /* 1: channel-mix neuron-bundled (compress --sparse-ffn) */
  int ffn_predictor;          /* 1: with activation predictors */
  uint64_t ffn_weight_bytes;  /* bytes of the channel-mix key + value weights (bundled or not) */
  uint64_t ffn_predictor_bytes; /* bytes of the activation predictors */
  int cluster_head;             /* number of head clusters (compress --cluster-head); 0 = plain head */
  int cluster_largest;          /* tokens in the largest cluster */
  uint64_t head_bytes;          /* bytes of head.weight (+ row scales) */
  uint64_t cluster_head_bytes;  /* bytes of the cluster head, cluster table and priors */
  uint64_t emb_bytes;           /* bytes of emb.weight (+ row scales) */
} rwkvl_model_info;

rwkvl_status rwkvl_model_get_info(const rwkvl_model* model, rwkvl_model_info* info);

/* Writes the model to `path` in the native format with matrices stored as `dtype` ("keep", "f32",
   "f16", "bf16", "i8"). The output appears atomically (no partial file on failure). */
rwkvl_status rwkvl_model_save(const rwkvl_model* model, const char* path, const char* dtype);

/* Makes a model with random weights of the given shape (for benchmarks) and saves it natively.
   arch_major in {4,5,6,7} (5 means 5.2). n_ffn 0 -> the architecture's default (3.5*D for 5/6,
   4*D for 4/7). head_size 0 -> 64. */
typedef struct rwkvl_synth_params {
  int arch_major, n_layer, n_embd, n_vocab, n_ffn, head_size;
  const char* dtype; /* "f32", "f16", "bf16", "i8" */
  uint64_t seed;
} rwkvl_synth_params;
rwkvl_status rwkvl_synth(const rwkvl_synth_params* params, const char* path);

/* ---------------------------------------------------------------- contexts and evaluation */

/* n_threads <= 0 -> number of online cores. */
rwkvl_status rwkvl_context_new(const rwkvl_model* model, int n_threads, rwkvl_context** out);
void rwkvl_context_free(rwkvl_context* ctx);
int rwkvl_context_threads(const rwkvl_context* ctx);

rwkvl_status rwkvl_state_new(const rwkvl_model* model, rwkvl_state** out); /* a fresh (initial) state */
void rwkvl_state_free(rwkvl_state* state);
rwkvl_status rwkvl_state_reset(rwkvl_state* state); /* back to the initial state */
rwkvl_status rwkvl_state_copy(rwkvl_state* dst, const rwkvl_state* src); /* same model shape */
/* The raw float32 values (rwkvl_model_info.state_floats of them). */
float* rwkvl_state_data(rwkvl_state* state);
/* Saves / restores the state in a small self-describing file tied to the model's shape. */
rwkvl_status rwkvl_state_save(const rwkvl_state* state, const char* path);
rwkvl_status rwkvl_state_load(rwkvl_state* state, const char* path);

/* Feeds n tokens, updating the state. logits: NULL (skip the head) or n_vocab floats receiving the
   logits after the last token. Tokens are processed in sequence mode (matrix x matrix products over
   chunks of up to `chunk` tokens); chunk == 1 is pure RNN mode; chunk == 0 uses the default (32).
   Results equal RNN mode up to float rounding. A token id outside [0, n_vocab) fails with
   RWKVL_ERR_INVALID_ARGUMENT and leaves the state unchanged. */
rwkvl_status rwkvl_eval(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n, size_t chunk,
                        float* logits);
/* Like rwkvl_eval but writes the logits after every token: logits_all has n * n_vocab floats. */
rwkvl_status rwkvl_eval_all_logits(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n,
                                   size_t chunk, float* logits_all);

/* ---------------------------------------------------------------- sparse channel-mix (FFN) */

/* How a context evaluates the channel-mix (see docs/CLI.md, --ffn-mode):
   DENSE   every neuron (any model);  EXACT  every key row, value rows of non-zero neurons only;
   PREDICT only the neurons the activation predictor picks (files made by compress --sparse-ffn);
   AUTO    PREDICT for files with predictors, DENSE otherwise. */
typedef enum { RWKVL_FFN_AUTO = 0, RWKVL_FFN_DENSE = 1, RWKVL_FFN_EXACT = 2, RWKVL_FFN_PREDICT = 3 } rwkvl_ffn_mode;

typedef struct {
  rwkvl_ffn_mode mode;
  uint64_t cache_bytes; /* > 0: stream neuron-bundled FFN weights from the file through a cache this big */
  int prefetch;         /* with a cache: background reads of the next layer's predicted neurons (default 0) */
  int verify;           /* PREDICT: also compute every key row to measure the recall (slower) */
  double random_frac;   /* > 0: replace the predicted set by this share of random neurons (benchmarks) */
  uint64_t seed;        /* for random_frac */
} rwkvl_ffn_params;

typedef struct {
  uint64_t evals;           /* (token, layer) channel-mix evaluations */
  uint64_t neurons;         /* neurons over those */
  uint64_t computed;        /* neurons whose key row was read */
  uint64_t value_rows;      /* value rows read */
  uint64_t weight_bytes;    /* key + value bytes read */
  uint64_t predictor_bytes; /* predictor bytes read */
  uint64_t verify_active;   /* truly active neurons seen (DENSE/EXACT always, PREDICT with verify) */
  uint64_t verify_hit;      /* of those, computed */
  int verified;
  double seconds, seconds_predictor;
  /* neuron cache (cache_bytes > 0), else zero */
  uint64_t cache_requests, cache_hits, cache_misses, cache_bytes_read, cache_capacity, cache_pinned_bytes;
  double cache_wait_seconds;
  rwkvl_ffn_mode mode; /* resolved (never AUTO) */
} rwkvl_ffn_stats;

rwkvl_ffn_params rwkvl_ffn_default_params(void); /* AUTO, no cache, no prefetch, no verify, seed 1 */
/* Fails (RWKVL_ERR_INVALID_ARGUMENT) when the model cannot honour the settings, e.g. PREDICT on a file
   without predictors or a cache below its minimum (the message names the minimum). */
rwkvl_status rwkvl_context_set_ffn(rwkvl_context* ctx, const rwkvl_ffn_params* params);
rwkvl_status rwkvl_context_ffn_stats(rwkvl_context* ctx, rwkvl_ffn_stats* out);
rwkvl_status rwkvl_context_reset_ffn_stats(rwkvl_context* ctx);

/* ---------------------------------------------------------------- output head */

/* FULL every head row; CLUSTER the hierarchical head of files made by compress --cluster-head (scores
   clusters, exact logits for the most probable ones, pseudo-logits for the rest; see docs/CLI.md);
   AUTO CLUSTER for files with a cluster head, FULL otherwise. */
typedef enum { RWKVL_HEAD_AUTO = 0, RWKVL_HEAD_FULL = 1, RWKVL_HEAD_CLUSTER = 2 } rwkvl_head_mode;

typedef struct {
  rwkvl_head_mode mode;
  double p;          /* clusters are taken until their cumulative probability reaches p (default 0.95) */
  int min_clusters;  /* at least this many (default 3) */
  int max_clusters;  /* at most this many (default 100) */
  int compare;       /* CLUSTER: also compute the full head, for top-1 agreement and KL (slower) */
} rwkvl_head_params;

typedef struct {
  uint64_t tokens;     /* logit vectors produced */
  uint64_t rows;       /* head rows they could have read (n_vocab each) */
  uint64_t rows_read;  /* head rows read */
  uint64_t clusters;   /* clusters chosen */
  uint64_t compared;   /* tokens compared with the full head */
  uint64_t top1_agree; /* of those, same argmax */
  double kl_sum;       /* sum of KL(full || cluster head) over compared tokens, nats */
  double seconds;
  rwkvl_head_mode mode; /* resolved (never AUTO) */
} rwkvl_head_stats;

rwkvl_head_params rwkvl_head_default_params(void); /* AUTO, 0.95, 3, 100, no compare */
rwkvl_status rwkvl_context_set_head(rwkvl_context* ctx, const rwkvl_head_params* params);
rwkvl_status rwkvl_context_head_stats(rwkvl_context* ctx, rwkvl_head_stats* out);
rwkvl_status rwkvl_context_reset_head_stats(rwkvl_context* ctx);

/* ---------------------------------------------------------------- memory and storage */

typedef struct {
  uint64_t budget_bytes;  /* > 0: the process's peak resident memory must stay within this many bytes: the
                             context plans which weights stay resident and streams the rest from the file
                             (native files); fails below the minimum, naming it. 0 = no budget */
  int prefetch;           /* under a budget: a background reader loads the next streamed layer (default 1);
                             2 = plan for prefetch (two layer slots) but read synchronously (A/B timing) */
  int64_t emb_cache_rows; /* > 0: embedding rows are read on demand from the model file into an LRU cache
                             of this many rows (the table is never resident); 0: read in place (no budget)
                             or 4096 rows (under a budget) */
  double io_mb_per_s;     /* > 0: simulate storage of this bandwidth (MB/s) for every read from the file */
  double io_latency_us;   /* with io_mb_per_s: simulated latency per read */
  uint64_t reserve_bytes; /* under a budget: memory the caller will still allocate (logits buffers ...) */
  int max_chunk;          /* under a budget: most tokens per eval chunk the caller will use (0 = 32) */
} rwkvl_memory_params;

typedef struct {
  uint64_t emb_lookups, emb_hits, emb_bytes_read; /* embedding cache (zero without one) */
  int64_t emb_cache_rows;
  uint64_t emb_cache_bytes;                       /* resident bytes of the embedding cache */
  uint64_t io_reads, io_bytes;                    /* reads from the model file (all users) */
  double io_seconds;                              /* time spent in them, simulated waiting included */
  uint64_t planned_bytes, minimum_bytes;          /* under a budget: the plan's peak and the smallest budget */
  uint64_t resident_weight_bytes;                 /* under a budget: weight bytes the plan keeps resident */
  uint64_t planned_stream_bytes_per_token;        /* under a budget: the plan's estimate of bytes read per token */
  uint64_t layer_loads, layer_bytes;              /* streamed layer loads and their bytes */
  uint64_t layer_prefetch_hits;                   /* loads the background reader had started or finished */
  double layer_wait_seconds;                      /* time the forward pass waited for streamed layers */
  uint64_t head_stream_bytes;                     /* head rows read from the file */
} rwkvl_memory_stats;

rwkvl_memory_params rwkvl_memory_default_params(void); /* no cache, no throttle */
/* Fails with RWKVL_ERR_INVALID_ARGUMENT for a negative cache size or throttle. */
rwkvl_status rwkvl_context_set_memory(rwkvl_context* ctx, const rwkvl_memory_params* params);
rwkvl_status rwkvl_context_memory_stats(rwkvl_context* ctx, rwkvl_memory_stats* out);
rwkvl_status rwkvl_context_reset_memory_stats(rwkvl_context* ctx);
/* The memory plan as text (json = 0: the table --print-plan shows; 1: a JSON object); same cap/n_out
   protocol as rwkvl_tokenize (NUL-terminated when it fits). Fails when no budget is set. */
rwkvl_status rwkvl_context_memory_plan(rwkvl_context* ctx, int json, char* out, size_t cap, size_t* n_out);

/* ---------------------------------------------------------------- tokenizers */

/* Picks the tokenizer by vocabulary size: 256 -> bytes, 65536 -> RWKV World, 50277/50304 -> GPT-NeoX
   20B. `path` may be NULL: then the file is searched for in $RWKVL_TOKENIZER_DIR, beside the model
   file, in ./tokenizers, and in the install's share/rwkv-lite folder. */
rwkvl_status rwkvl_tokenizer_for_model(const rwkvl_model* model, const char* model_path, const char* path,
                                       rwkvl_tokenizer** out);
/* kind: "byte", "world" or "neox". */
rwkvl_status rwkvl_tokenizer_load(const char* kind, const char* path, rwkvl_tokenizer** out);
void rwkvl_tokenizer_free(rwkvl_tokenizer* tok);
const char* rwkvl_tokenizer_name(const rwkvl_tokenizer* tok);
/* Encodes len bytes of text. Writes up to cap ids to out and the full count to *n_out; if the count
   exceeds cap, returns RWKVL_ERR_INVALID_ARGUMENT (call again with a bigger buffer). */
rwkvl_status rwkvl_tokenize(const rwkvl_tokenizer* tok, const char* text, size_t len, int32_t* out, size_t cap,
                            size_t* n_out);
/* Raw bytes of one token (may be a partial UTF-8 sequence); same cap/n_out protocol. */
rwkvl_status rwkvl_token_bytes(const rwkvl_tokenizer* tok, int32_t id, char* out, size_t cap, size_t* n_out);

/* ---------------------------------------------------------------- input files and text streams */

/* Every input is a regular file (or "-" for standard input where allow_stdin is set): FIFOs, devices and
   folders are refused with a message naming `what` and the path, and nothing blocks in open(). */
typedef struct rwkvl_input rwkvl_input;
rwkvl_status rwkvl_input_open(const char* path, const char* what, int allow_stdin, rwkvl_input** out);
void rwkvl_input_free(rwkvl_input* in);
/* Up to cap bytes into out (fewer only at the end; *n_out 0 at the end). */
rwkvl_status rwkvl_input_read(rwkvl_input* in, void* out, size_t cap, size_t* n_out);
/* Size at open time (0 for standard input). */
uint64_t rwkvl_input_size(const rwkvl_input* in);

/* The tokens of a text file read 64 KiB at a time: memory stays below RWKVL_TEXT_STREAM_MAX_BYTES for any
   file size, and the tokens equal rwkvl_tokenize() of the whole text (the GPT-NeoX tokenizer cuts a 64 KiB
   run without white space at a character boundary; rwkvl_text_stream_forced_cuts counts those). path "-" is
   standard input. The tokenizer must outlive the stream. */
#define RWKVL_TEXT_STREAM_MAX_BYTES (384u << 10)
typedef struct rwkvl_text_stream rwkvl_text_stream;
rwkvl_status rwkvl_text_stream_open(const rwkvl_tokenizer* tok, const char* path, const char* what,
                                    rwkvl_text_stream** out);
void rwkvl_text_stream_free(rwkvl_text_stream* s);
/* Up to cap tokens (fewer only at the end of the text; *n_out 0 once it is all read). */
rwkvl_status rwkvl_text_stream_read(rwkvl_text_stream* s, int32_t* out, size_t cap, size_t* n_out);
uint64_t rwkvl_text_stream_bytes_read(const rwkvl_text_stream* s);
uint64_t rwkvl_text_stream_forced_cuts(const rwkvl_text_stream* s);

/* ---------------------------------------------------------------- sampling */

typedef struct rwkvl_sampler_params {
  float temperature;       /* <= 0: greedy (argmax) */
  int top_k;               /* <= 0: off */
  float top_p;             /* >= 1: off */
  float presence_penalty;  /* subtracted once from the logit of every token seen so far */
  float frequency_penalty; /* subtracted per occurrence */
  float penalty_decay;     /* occurrence counts are multiplied by this after each token (1 = no decay) */
  uint64_t seed;
} rwkvl_sampler_params;

rwkvl_sampler_params rwkvl_sampler_default_params(void); /* temp 1, top_k 0, top_p 1, penalties 0, decay 1, seed 0 */
rwkvl_status rwkvl_sampler_new(const rwkvl_sampler_params* params, rwkvl_sampler** out);
void rwkvl_sampler_free(rwkvl_sampler* s);
/* Picks a token from n_vocab logits (the array is modified: penalties, temperature). Deterministic
   for a given seed and call sequence. Returns a token id, or -1 on bad arguments. */
int32_t rwkvl_sampler_sample(rwkvl_sampler* s, float* logits, size_t n_vocab);
/* Records a token (for the penalties). rwkvl_sampler_sample does NOT call this itself. */
void rwkvl_sampler_accept(rwkvl_sampler* s, int32_t token);

/* ---------------------------------------------------------------- measurement helpers */

/* Peak resident set size of this process in bytes (VmHWM), 0 if unknown. */
uint64_t rwkvl_peak_rss_bytes(void);
uint64_t rwkvl_current_rss_bytes(void);
/* Resets the peak (VmHWM) to the current RSS; 1 on success, 0 where the system cannot (Linux < 4.0). */
int rwkvl_reset_peak_rss(void);
/* Measures the sustained memory read bandwidth (bytes/s) with n_threads threads streaming over a
   buffer of buffer_bytes (0 -> 256 MiB) for about `seconds`. */
double rwkvl_measure_read_bandwidth(int n_threads, uint64_t buffer_bytes, double seconds);

/* ---------------------------------------------------------------- output files */

/* Every file the library writes (models, states, and these calls) goes through one writer: the data
   appears at `path` complete or not at all (an anonymous temporary in the same folder, fsynced and
   renamed over `path`, the folder fsynced; nothing is left behind on failure, SIGINT or SIGTERM).
   `path` must be absent or a regular file: a folder, device, FIFO or socket is refused, and so is a
   symbolic link (the link is never replaced nor followed). Errors (RWKVL_ERR_IO) name `path`. */

/* The checks alone, for a caller to run before any work: `path` is absent or a regular file and its
   folder exists and is writable. Creates nothing. */
rwkvl_status rwkvl_check_output_path(const char* path);
/* Writes size bytes from data to path atomically. */
rwkvl_status rwkvl_write_file(const char* path, const void* data, size_t size);
/* The same writer, fed piece by piece (outputs that grow while a command runs, e.g. per-passage results):
   open checks `path` and creates the temporary; commit makes the file appear; free without commit
   discards it. */
typedef struct rwkvl_output rwkvl_output;
rwkvl_status rwkvl_output_open(const char* path, rwkvl_output** out);
rwkvl_status rwkvl_output_write(rwkvl_output* o, const void* data, size_t size);
rwkvl_status rwkvl_output_commit(rwkvl_output* o);
void rwkvl_output_free(rwkvl_output* o);

/* ---------------------------------------------------------------- integrity */

/* Checks a whole model file: every tensor's FNV-1a checksum against the header (native files; other formats
   have none, reported as "none"), every float value finite (f32/f16/bf16 tensors, int8 scale tensors, the
   f16 scales of q4_g32 and q5_1 blocks), every header field in range (the model is bound as for loading).
   Writes the report as one JSON object (fields in docs/CLI.md, "verify") with the cap/n_out protocol of
   rwkvl_context_memory_plan (NUL-terminated when it fits); *ok (may be NULL) is 1 when nothing is wrong, else
   0. Returns RWKVL_OK whenever the check ran, whatever it found (a file that cannot be read at all is a
   finding in the report); fails only on bad arguments, a buffer too small (then *n_out is the report's length;
   calling again with the same path returns that report without reading the file again) or out of memory. */
rwkvl_status rwkvl_verify_model(const char* path, char* out, size_t cap, size_t* n_out, int* ok);

/* Makes a model file that is truncated or replaced while it is memory-mapped a clear error instead of a
   silent SIGBUS: a SIGBUS in a mapping of this library prints "<program>: error: model file '<path>' was
   truncated or replaced while in use" to stderr and ends the process with exit status 1 (_exit). Other
   SIGBUS go to the previous handler. Process-wide; call once at start-up (e.g. from main). */
void rwkvl_install_sigbus_guard(const char* program);

#ifdef __cplusplus
}
#endif

#endif /* RWKV_LITE_H */
