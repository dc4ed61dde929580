/*
 * rwkv-lite C API, version 1 (C99/C11 and C++; include only this header).
 *
 * VERSIONING
 *   RWKVL_API_VERSION_MAJOR and RWKVL_API_VERSION_MINOR are the version of this header;
 *   rwkvl_api_version() is the version of the library that is linked, both as
 *   RWKVL_API_VERSION = MAJOR * 1000 + MINOR (1.0 -> 1000). The rule:
 *   - MAJOR changes when a program written for the old API may stop compiling or behave differently:
 *     a function removed or renamed, a signature changed, a field added to, removed from or moved in a
 *     struct the caller allocates (the *_params, *_info and *_stats structs), an enum value renumbered,
 *     or a documented behaviour changed (ownership, thread safety, the status a call returns).
 *   - MINOR changes when something is only added: new functions, new enum values (at the end), new
 *     settings in strings that were refused before. A program built against MAJOR.x runs with any
 *     library MAJOR.y, y >= x (check rwkvl_api_version() / 1000 == RWKVL_API_VERSION_MAJOR and
 *     rwkvl_api_version() % 1000 >= the minor you need).
 *   - RWKVL_VERSION_STRING is the release of the package (the CLI, file formats, speed); it changes
 *     independently. The file formats have their own versions (docs/FORMAT.md).
 *
 * HANDLES AND OWNERSHIP
 *   Every object is an opaque handle made by a *_new / *_load / *_open call into a pointer the caller
 *   passes, and owned by the caller until its *_free call; every *_free accepts NULL (a no-op), and no
 *   handle may be freed while another call is using it. Handles never keep caller memory: strings and
 *   arrays passed in are read (or written) during the call only. Strings the library returns
 *   (const char*) belong to it and must not be freed; each function says how long they live.
 *     rwkvl_model      read-only weights (a memory-mapped file, or memory for converted weights).
 *     rwkvl_session    (= rwkvl_context, the same handle under its 1.1 name) everything mutable for
 *                      evaluating one sequence at a time: thread pool, scratch, FFN and head runtimes,
 *                      memory plan, streamed weights, caches; built once from one rwkvl_session_params
 *                      (rwkvl_session_new). It keeps its own reference to the weights, so the model
 *                      handle may be freed before its sessions.
 *     rwkvl_state      the recurrent state (fixed size); small, copyable, savable to a file. It records
 *                      only the model's shape, not the model: it may be used with any context of a
 *                      model of that shape.
 *     rwkvl_tokenizer  text <-> token ids (independent of the model once made).
 *     rwkvl_sampler    picks tokens from logits (random generator + penalty counts).
 *     rwkvl_input, rwkvl_text_stream, rwkvl_output   files read / written piece by piece.
 *     rwkvl_text_tokens, rwkvl_lambada               inputs of an evaluation (perplexity, LAMBADA).
 *
 * THREAD SAFETY
 *   - A model is never modified after loading: any number of threads may use one model at once
 *     (rwkvl_context_new, rwkvl_state_new, rwkvl_model_get_info, rwkvl_model_save, ...), each with
 *     its own context. Exception: rwkvl_model_release_pages (and rwkvl_context_set_memory with a
 *     budget, which does the same) must not run while a context of the model is evaluating.
 *   - A tokenizer is read-only once made: rwkvl_tokenize, rwkvl_token_bytes and rwkvl_tokenizer_name may
 *     run from several threads at once on one tokenizer.
 *   - A context, a state, a sampler, an input, a text stream and an output are not thread-safe: use
 *     each from one thread at a time (it may move between threads between calls). rwkvl_eval uses a
 *     context and a state together: neither may be in use elsewhere during the call. One context per
 *     concurrently evaluating thread.
 *   - rwkvl_last_error and the report rwkvl_verify_model keeps are per thread (thread-local).
 *   - Functions without a handle (rwkvl_status_name, rwkvl_system_info, rwkvl_api_version, the
 *     measurement helpers, rwkvl_check_output_path, rwkvl_write_file, rwkvl_synth, rwkvl_verify_model)
 *     may be called from any thread. Process-wide: rwkvl_reset_peak_rss (the peak is the process's)
 *     and rwkvl_install_sigbus_guard (call once at start-up).
 *
 * ERRORS
 *   Every function that can fail returns rwkvl_status; on failure rwkvl_last_error() returns a message
 *   for the calling thread. The message belongs to the library and stays readable until the same
 *   thread's next call to a function that returns rwkvl_status (each such call clears it first, so
 *   after a success it is ""), rwkvl_sampler_sample or rwkvl_measure_read_bandwidth: copy it if you need
 *   it longer. Each function lists the statuses it returns; besides those, any function returning
 *   rwkvl_status may return RWKVL_ERR_OUT_OF_MEMORY (an allocation failed) and RWKVL_ERR_INTERNAL (a
 *   library bug or a system failure such as a thread that cannot start). Unless noted, a NULL handle or
 *   output pointer returns RWKVL_ERR_INVALID_ARGUMENT. Functions that make a handle say what *out holds
 *   after a failure. Broken internal invariants (library bugs) abort the process with file:line
 *   (RWKVL_CHECK); errors in the input are returned as statuses. Nothing in the library calls exit() or
 *   prints, except where a progress callback is given and rwkvl_install_sigbus_guard.
 *
 * BUFFERS ("cap/n_out protocol")
 *   Functions that fill a caller's array take its capacity `cap` and write the full length to *n_out
 *   even when it does not fit; then they return RWKVL_ERR_INVALID_ARGUMENT and the caller calls again
 *   with a buffer of *n_out elements (for the NUL-terminated reports of rwkvl_context_memory_plan and
 *   rwkvl_verify_model: *n_out + 1 bytes).
 */
#ifndef RWKV_LITE_H
#define RWKV_LITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RWKVL_VERSION_STRING "0.1.0"

/* The C API version of this header (see VERSIONING above). */
#define RWKVL_API_VERSION_MAJOR 1
#define RWKVL_API_VERSION_MINOR 12
#define RWKVL_API_VERSION (RWKVL_API_VERSION_MAJOR * 1000 + RWKVL_API_VERSION_MINOR)

/* The C API version of the linked library, RWKVL_API_VERSION as the library was built. Never fails. */
int rwkvl_api_version(void);

typedef enum rwkvl_status {
  RWKVL_OK = 0,
  RWKVL_ERR_INVALID_ARGUMENT = 1, /* an argument is out of range (token id, size, NULL handle, ...) */
  RWKVL_ERR_IO = 2,               /* open/read/write failed */
  RWKVL_ERR_FORMAT = 3,           /* the file is malformed, truncated or inconsistent */
  RWKVL_ERR_UNSUPPORTED = 4,      /* well-formed but not supported (version, dtype, architecture) */
  RWKVL_ERR_OUT_OF_MEMORY = 5,
  RWKVL_ERR_INTERNAL = 6
} rwkvl_status;

/* Message describing the last failure in the calling thread ("" if none); see ERRORS above for how long
   it stays. Never NULL; thread-local. */
const char* rwkvl_last_error(void);
/* A short English name of a status ("ok", "I/O error", ...; "unknown" for other values). The string is
   static. Never fails. */
const char* rwkvl_status_name(rwkvl_status s);
/* One line: version, build type, instruction set in use (e.g. "avx2"), compiler. Computed on the first
   call; the string is static (valid until the process ends). Never fails. */
const char* rwkvl_system_info(void);

typedef struct rwkvl_model rwkvl_model;
typedef struct rwkvl_context rwkvl_context;
typedef struct rwkvl_state rwkvl_state;
typedef struct rwkvl_tokenizer rwkvl_tokenizer;
typedef struct rwkvl_sampler rwkvl_sampler;

/* ---------------------------------------------------------------- models */

/* Element types of weight matrices (API 1.2). The string fields and arguments that take a dtype
   (rwkvl_model_params.weight_dtype, rwkvl_model_save, rwkvl_synth_params.dtype, the compress recipe's dtype
   and ffn_dtype) take rwkvl_dtype_name() of these; rwkvl_dtype_from_string parses them. Values never change. */
typedef enum rwkvl_dtype {
  RWKVL_DTYPE_KEEP = 0, /* "keep": an option value, each matrix as it is stored (not a tensor type) */
  RWKVL_DTYPE_F32 = 1,  /* "f32" */
  RWKVL_DTYPE_F16 = 2,  /* "f16" (IEEE half) */
  RWKVL_DTYPE_BF16 = 3, /* "bf16" */
  RWKVL_DTYPE_I8 = 4,   /* "i8" (also "int8"): int8 with one scale per row */
  RWKVL_DTYPE_Q4 = 5,   /* "q4" (also "int4"): int4 in blocks of 32 values with an f16 scale and offset
                           (named q4_g32 in files and reports) */
  RWKVL_DTYPE_Q5_1 = 6, /* "q5_1": rwkv.cpp's Q5_1 blocks, read from .bin files only (never converted to) */
  RWKVL_DTYPE_F16_2OF4 = 7, /* "f16_2of4" (1.6): 2:4 sparse f16, made by pruning (rwkvl_compress_with_prune) only */
  /* (1.9) unstructured sparse: a keep bit per column + the kept values, made by pruning (f16) and by quantising a
     pruned model (int8 / int4 kept values) only */
  RWKVL_DTYPE_F16_MASKED = 8, /* "f16_masked" */
  RWKVL_DTYPE_I8_MASKED = 9,  /* "i8_masked" */
  RWKVL_DTYPE_Q4_MASKED = 10  /* "q4_masked" */
} rwkvl_dtype;

typedef struct rwkvl_model_params {
  /* Weight dtype to hold matrices in after loading: "keep" (as stored; default), "f32", "f16", "bf16"
     or "i8" (per-row int8). Conversions happen at load time. NULL means "keep". */
  const char* weight_dtype;
  /* GroupNorm epsilon of att.ln_x; <= 0 means the file's / format's own value (default). */
  float ln_x_eps_override;
} rwkvl_model_params;

/* "keep", no epsilon override. Never fails. */
rwkvl_model_params rwkvl_model_default_params(void);

/* Loads any supported file (rwkv.cpp .bin, PyTorch .pth, safetensors, GGUF (1.5), native rwkv-lite), recognised
   by content. params may be NULL for defaults. The file is memory-mapped: it must not be truncated or
   rewritten in place while the model lives (rwkvl_eval then fails with RWKVL_ERR_IO or
   RWKVL_ERR_FORMAT; see rwkvl_install_sigbus_guard for the signal). On success *out is a new model the
   caller frees with rwkvl_model_free; on failure *out is NULL.
   Errors: INVALID_ARGUMENT (NULL path or out, unknown weight_dtype), IO (missing, unreadable or not a
   regular file), FORMAT (not a model file, malformed, truncated), UNSUPPORTED (format version, tensor
   dtype or architecture this build does not read). */
rwkvl_status rwkvl_model_load(const char* path, const rwkvl_model_params* params, rwkvl_model** out);
/* Frees the handle. NULL is a no-op. Contexts made from the model keep the weights alive until they
   are freed; states and tokenizers do not refer to the model. */
void rwkvl_model_free(rwkvl_model* model);
/* Drops the process's resident pages of a memory-mapped model file (they are read again when used), e.g.
   between runs under different memory budgets. No contexts may be evaluating meanwhile. A no-op for
   models that are not mapped from a file. Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_model_release_pages(const rwkvl_model* model);

typedef struct rwkvl_model_info {
  int arch_major;        /* 4, 5, 6 or 7 */
  int arch_minor;        /* 5.0/5.1/5.2 -> 0/1/2, else 0 */
  char arch_name[16];    /* "v4", "v5.1", "v5.2", "v6", "v7" */
  char file_kind[16];    /* "rwkv.cpp", "pth", "safetensors", "native", "gguf" */
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

/* Fills *info (the caller's struct; every field is written, the strings NUL-terminated).
   Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_model_get_info(const rwkvl_model* model, rwkvl_model_info* info);

/* One projection of one layer as the model holds it (API 1.2). `projection` is the bit number of its
   RWKVL_TARGET_* flag: 0 att.receptance, 1 att.key, 2 att.value, 3 att.output, 4 att.gate, 5 ffn.key,
   6 ffn.value, 7 ffn.receptance. */
typedef struct rwkvl_matrix_info {
  int present;        /* 0: the layer has no such matrix (att.gate of v4 and v5.0, ffn.receptance of v7, ffn.key
                         and ffn.value of neuron-bundled files); then every other field is 0 */
  int factored;       /* 1: stored as W ~ B A (+ diag(d)) (compress --lowrank) */
  int diag;           /* factored with a diagonal term */
  int64_t rows, cols; /* of W (outputs, inputs) */
  int64_t rank;       /* factored: the rank; else 0 */
  rwkvl_dtype dtype;  /* dense: the matrix's dtype; factored: that of A (never KEEP) */
  uint64_t bytes;     /* bytes of every stored part, row scales included */
} rwkvl_matrix_info;
/* Fills *out (the caller's struct, every field written). Read-only on the model: any thread. Errors:
   INVALID_ARGUMENT (NULL, layer outside [0, n_layer), projection outside [0, 8)). */
rwkvl_status rwkvl_model_get_matrix(const rwkvl_model* model, int layer, int projection, rwkvl_matrix_info* out);
/* The compression passes recorded in a native file (`rwkv-lite compress`, docs/FORMAT.md) as one JSON array,
   one object per pass in the order they ran ("[]" for other files and files no pass made), with the cap/n_out
   protocol of rwkvl_context_memory_plan (written NUL-terminated when cap > *n_out). Read-only on the model: any
   thread. Errors: INVALID_ARGUMENT (NULL model or n_out, NULL out with cap > 0, buffer too small). */
rwkvl_status rwkvl_model_passes_json(const rwkvl_model* model, char* out, size_t cap, size_t* n_out);

/* Writes the model to `path` in the native format with matrices stored as `dtype` ("keep", "f32",
   "f16", "bf16", "i8"; NULL = "keep"). The output appears atomically (no partial file on failure; see
   OUTPUT FILES below). Errors: INVALID_ARGUMENT (NULL model or path, unknown dtype), IO (path refused,
   write failed), UNSUPPORTED (a tensor that cannot be converted to dtype). */
rwkvl_status rwkvl_model_save(const rwkvl_model* model, const char* path, const char* dtype);
/* Writes an RWKV-6 or RWKV-7 model as GGUF in llama.cpp's layout (arch "rwkv6" / "rwkv7", its tensor names, fused
   token-shift mixes and transposed LoRAs, the tokenizer's vocabulary in tokenizer.ggml.*), atomically (see
   OUTPUT FILES) (API 1.5). dtype: the matrices' ggml type: KEEP (f32, f16, bf16 as they are, i8 as Q8_0, q4 as
   Q4_1: the same values), F32, F16, BF16, I8 (Q8_0) or Q4 (Q4_1); rows that are not whole 32-value blocks stay
   F16; vectors and LoRAs F32. Factored matrices are multiplied out. Errors: INVALID_ARGUMENT (NULL, another
   dtype, a tokenizer of another size), UNSUPPORTED (RWKV-4/5, a neuron-bundled channel-mix or a cluster head:
   llama.cpp runs neither; a vocabulary other than World or bytes), IO. GGUF files (rwkv6/rwkv7, tensor types
   F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) are read by rwkvl_model_load like every other
   format, and rwkvl_tokenizer_for_model takes their vocabulary. */
rwkvl_status rwkvl_model_save_gguf(const rwkvl_model* model, const rwkvl_tokenizer* tok, const char* path,
                                   rwkvl_dtype dtype);

/* Writes an RWKV-4 to RWKV-7 model as an rwkv.cpp file (format version 101, the tensors rwkv.cpp's own converter
   writes from the official checkpoint: names, shapes, transformed decays), atomically (see OUTPUT FILES) (API 1.11):
   the peer file of bench/peers/side_by_side.sh, which rwkv.cpp then quantises to Q8_0 / Q5_1 / Q4_0 itself.
   dtype: F32, F16 (every matrix f16, the embedding and head included, vectors and LoRAs f32, as rwkv.cpp's FP16
   files) or KEEP (F32 when every matrix is stored as f32, else F16). Factored matrices are multiplied out and
   int8 / int4 / pruned ones written with the values they hold. Errors: INVALID_ARGUMENT (NULL, another dtype),
   UNSUPPORTED (a neuron-bundled channel-mix or a cluster head: rwkv.cpp runs neither), IO. */
rwkvl_status rwkvl_model_save_rwkvcpp(const rwkvl_model* model, const char* path, rwkvl_dtype dtype);

/* Makes a model with random weights of the given shape (for benchmarks) and saves it natively.
   arch_major in {4,5,6,7} (5 means 5.2). n_ffn 0 -> the architecture's default (3.5*D for 5/6,
   4*D for 4/7). head_size 0 -> 64. dtype NULL -> "f32". Deterministic for a seed.
   Errors: INVALID_ARGUMENT (NULL, unknown architecture or dtype, implausible shape, head size not
   dividing the width), IO (path refused, write failed). */
typedef struct rwkvl_synth_params {
  int arch_major, n_layer, n_embd, n_vocab, n_ffn, head_size;
  const char* dtype; /* "f32", "f16", "bf16", "i8" */
  uint64_t seed;
} rwkvl_synth_params;
rwkvl_status rwkvl_synth(const rwkvl_synth_params* params, const char* path);
/* More synth settings (API 1.12). An extensible struct: take rwkvl_synth_default_extras() (it sets struct_size).
     de_rank   > 0 (arch_major 7 only): an RWKV-7a (DeepEmbed) model, every layer with a (n_vocab, de_rank^2) token
               table (merged, as a conversion stores it) and its gate; 1..256 (official files: 32). 0 = none. */
typedef struct rwkvl_synth_extras {
  size_t struct_size;
  int de_rank;
} rwkvl_synth_extras;
rwkvl_synth_extras rwkvl_synth_default_extras(void);
/* rwkvl_synth with the extras (NULL: none). Errors: those of rwkvl_synth; INVALID_ARGUMENT for a rank outside 0..256
   or a rank on another architecture. */
rwkvl_status rwkvl_synth_with(const rwkvl_synth_params* params, const rwkvl_synth_extras* extras, const char* path);

/* ---------------------------------------------------------------- contexts and evaluation */

/* A context for evaluating with `model`: n_threads worker threads (<= 0 -> number of online cores; at
   most 1024) and scratch buffers that grow with the chunk. On success *out is a new context the caller
   frees with rwkvl_context_free; on failure *out is NULL. Not thread-safe: one context per evaluating
   thread. Errors: INVALID_ARGUMENT (NULL, more than 1024 threads), INTERNAL (threads cannot start). */
rwkvl_status rwkvl_context_new(const rwkvl_model* model, int n_threads, rwkvl_context** out);
/* Stops the context's threads and frees it (and any cache or background reader it started). NULL is a
   no-op. No call on the context may be running. */
void rwkvl_context_free(rwkvl_context* ctx);
/* The context's number of worker threads (n_threads resolved); 0 for NULL. */
int rwkvl_context_threads(const rwkvl_context* ctx);

/* A fresh (initial) state for the model's shape; the caller frees it with rwkvl_state_free. A failure
   leaves *out unchanged. Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_state_new(const rwkvl_model* model, rwkvl_state** out);
/* NULL is a no-op. Invalidates the rwkvl_state_data pointer. */
void rwkvl_state_free(rwkvl_state* state);
/* Back to the initial state. Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_state_reset(rwkvl_state* state);
/* Copies src's values into dst; both must be of the same model shape. Errors: INVALID_ARGUMENT (NULL,
   states of models of different shapes). */
rwkvl_status rwkvl_state_copy(rwkvl_state* dst, const rwkvl_state* src);
/* The raw float32 values (rwkvl_model_info.state_floats of them; layout in src/model/model.h, State),
   readable and writable by the caller. The pointer belongs to the state and stays valid until
   rwkvl_state_free (reset, copy and load write into the same buffer). NULL for a NULL state. */
float* rwkvl_state_data(rwkvl_state* state);
/* Saves the state in a small self-describing file tied to the model's shape, with a checksum (written
   atomically, see OUTPUT FILES). Errors: INVALID_ARGUMENT (NULL), IO (path refused, write failed). */
rwkvl_status rwkvl_state_save(const rwkvl_state* state, const char* path);
/* Restores a state saved by rwkvl_state_save (version 2 files, and version 1 files of older builds). On
   failure the state is unchanged. Errors: INVALID_ARGUMENT (NULL; the file was saved for a model of
   another shape), IO (missing, unreadable or not a regular file), FORMAT (not a state file, truncated,
   checksum mismatch, a non-finite value), UNSUPPORTED (a state file version this build does not read). */
rwkvl_status rwkvl_state_load(rwkvl_state* state, const char* path);

/* Feeds n tokens, updating the state. logits: NULL (skip the head) or n_vocab floats receiving the
   logits after the last token. Tokens are processed in sequence mode (matrix x matrix products over
   chunks of up to `chunk` tokens); chunk == 1 is pure RNN mode; chunk == 0 uses the default (32);
   chunks above 1024 are cut to 1024, and under a memory budget to its max_chunk. Results equal RNN
   mode up to float rounding. n == 0 does nothing (logits untouched). ctx and state must not be used
   by another thread during the call; the state must be of the context's model shape.
   Errors: INVALID_ARGUMENT (NULL ctx or state, NULL tokens with n > 0, a state of another shape, a
   token id outside [0, n_vocab): these leave the state unchanged), IO (the model file was modified
   while in use; a streamed read failed), FORMAT (the activations became non-finite: the message names
   the layer; corrupt weights). After an IO or FORMAT failure the state is partly updated: reset it or
   load a saved one. */
rwkvl_status rwkvl_eval(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n, size_t chunk,
                        float* logits);
/* Like rwkvl_eval but writes the logits after every token: logits_all has n * n_vocab floats (NULL is
   RWKVL_ERR_INVALID_ARGUMENT). Same errors. */
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

rwkvl_ffn_params rwkvl_ffn_default_params(void); /* AUTO, no cache, no prefetch, no verify, seed 1. Never fails. */
/* Replaces the context's channel-mix settings (and its statistics). Fails (RWKVL_ERR_INVALID_ARGUMENT)
   when the model cannot honour the settings, e.g. PREDICT on a file without predictors, EXACT or a cache
   on a file without neuron bundles, or a cache below its minimum (the message names the minimum), or
   for NULL or an unknown mode; IO when the cache cannot open or read the model file. After a failure
   the context has the default settings. It rebuilds the session from its
   parameters (1.1: the order of the set_* calls does not matter; rwkvl_session_new takes all at once). */
rwkvl_status rwkvl_context_set_ffn(rwkvl_context* ctx, const rwkvl_ffn_params* params);
/* Fills *out (the caller's struct) with the counts since the settings or the last reset.
   Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_ffn_stats(rwkvl_context* ctx, rwkvl_ffn_stats* out);
/* Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_reset_ffn_stats(rwkvl_context* ctx);
/* Adds the counters of *b into *a (totals over several sessions, e.g. parallel workers): counts, bytes and
   seconds are summed, `verified` is or-ed, cache capacities summed, the mode taken from *b (1.2).
   Plain structs: no context is involved, any thread. Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_ffn_stats_add(rwkvl_ffn_stats* a, const rwkvl_ffn_stats* b);

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

rwkvl_head_params rwkvl_head_default_params(void); /* AUTO, 0.95, 3, 100, no compare. Never fails. */
/* Replaces the context's head settings (and its statistics). Errors: INVALID_ARGUMENT (NULL, unknown
   mode, CLUSTER on a file without a cluster head, p outside (0, 1], min_clusters < 1, max below min).
   It rebuilds the session from its
   parameters (1.1: the order of the set_* calls does not matter). */
rwkvl_status rwkvl_context_set_head(rwkvl_context* ctx, const rwkvl_head_params* params);
/* Fills *out (the caller's struct). Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_head_stats(rwkvl_context* ctx, rwkvl_head_stats* out);
/* The parallel regions (a fork and a join each) the context's threads have run since its session was last built
   (API 1.11): sampled around generation, the per-token synchronisation `bench` reports. A 1-thread context runs
   none. Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_parallel_regions(rwkvl_context* ctx, uint64_t* out);
/* Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_reset_head_stats(rwkvl_context* ctx);
/* Adds the counters of *b into *a (sums; the mode taken from *b) (1.2). Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_head_stats_add(rwkvl_head_stats* a, const rwkvl_head_stats* b);

/* ---------------------------------------------------------------- bytes touched per token (1.10) */

/* The weight bytes one generated token touched, part by part: rwkvl_model_info's sizes, corrected by what a run
   measured where the run reads only part of a tensor (the channel-mix's computed neurons and predictors, the
   cluster head's rows). `total` is what a memory-bandwidth bound should be computed from. */
typedef struct {
  double total;         /* the sum of the parts below */
  double other;         /* everything read whole every token: time-mix projections, norms, vectors, ... */
  double ffn;           /* channel-mix key + value bytes read (measured with `ffn` stats, else all of them) */
  double ffn_predictor; /* activation predictor bytes read (measured, else all of them) */
  double head;          /* head rows read (cluster mode: rows read per token x bytes of a row at the head's dtype) */
  double cluster_head;  /* the cluster head, cluster table and priors (cluster mode only) */
  double emb;           /* one embedding row (+ its scale) */
  double head_rows;     /* head rows read per token (n_vocab outside cluster mode) */
  double head_clusters; /* clusters chosen per token (cluster mode; else 0) */
} rwkvl_touched;

/* Fills *out for `model` given a run's statistics since a reset (either may be NULL, or count no token: then that
   part is taken whole, as a dense run reads it). With both NULL, total == rwkvl_model_info.bytes_per_token.
   Errors: INVALID_ARGUMENT (NULL model or out; cluster-mode head stats for a model without a cluster head). */
rwkvl_status rwkvl_touched_per_token(const rwkvl_model* model, const rwkvl_ffn_stats* ffn, const rwkvl_head_stats* head,
                                     rwkvl_touched* out);

/* ---------------------------------------------------------------- memory and storage */

typedef struct {
  uint64_t budget_bytes;  /* > 0: the process's peak resident memory must stay within this many bytes: the
                             context plans which weights stay resident and streams the rest from the file
                             (native files); fails below the minimum, naming it. 0 = no budget */
  int prefetch;           /* under a budget: a background reader loads the next streamed layer (default 1);
                             2 = plan for prefetch (two layer slots) but read synchronously (A/B timing) */
  int64_t emb_cache_rows; /* > 0: embedding rows are read on demand from the model file into an LRU cache
                             of this many rows (the table is never resident); 0: read in place (no budget)
                             or, under a budget, 4096 rows when the weights leave room, else down to 256 */
  double io_mb_per_s;     /* > 0: simulate storage of this bandwidth (MB/s) for every read from the file */
  double io_latency_us;   /* with io_mb_per_s: simulated latency per read */
  uint64_t reserve_bytes; /* under a budget: memory the caller will still allocate (logits buffers, states
                             beyond the one the plan counts: 4 * state_floats bytes each ...) */
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

rwkvl_memory_params rwkvl_memory_default_params(void); /* no budget, no cache, no throttle, prefetch 1. Never fails. */
/* Applies the memory settings to the context (replacing earlier ones). With a budget it measures the
   process's resident memory, drops the model's resident pages as rwkvl_model_release_pages does (so no
   context of the model may be evaluating meanwhile) and makes the plan; the plan takes the
   head and FFN settings into account whichever call came first, and under a budget the FFN cache is
   the plan's (a cache given with rwkvl_context_set_ffn is replaced). Fails with RWKVL_ERR_INVALID_ARGUMENT for NULL, a negative cache size,
   throttle, latency or max_chunk, prefetch outside 0..2, a budget below the minimum (the message names
   it), or a budget on a model that cannot be streamed (not a native file on disk, weights converted at
   load); IO or FORMAT when the model file cannot be read as planned. After a failure past the argument
   checks the context runs without a budget. */
rwkvl_status rwkvl_context_set_memory(rwkvl_context* ctx, const rwkvl_memory_params* params);
/* Fills *out (the caller's struct). Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_memory_stats(rwkvl_context* ctx, rwkvl_memory_stats* out);

/* RWKV-7a's DeepEmbed row cache (API 1.12; all zero for other models and when the tables are read in place). */
typedef struct {
  int64_t slots, pinned;  /* tokens the cache holds (every layer's row of each), of them pinned (never evicted) */
  uint64_t cache_bytes;   /* resident bytes of the cache */
  uint64_t table_bytes;   /* bytes of the tables in the file (never resident) */
  uint64_t row_bytes;     /* bytes of one token's rows, all layers */
  uint64_t lookups, hits; /* one lookup per token of each chunk; hits: its rows were cached */
  uint64_t rows_read, bytes_read; /* rows read from the file (or copied from memory) and their bytes */
  uint64_t rereads;               /* of them, rows read one layer at a time, uncached (a chunk with more distinct
                                     tokens than slots) */
} rwkvl_deep_embed_stats;
/* Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_deep_embed_stats(rwkvl_context* ctx, rwkvl_deep_embed_stats* out);
/* Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_reset_memory_stats(rwkvl_context* ctx);
/* Adds the counters of *b into *a (1.2): reads, bytes, seconds, lookups, hits and layer loads are summed;
   the planned, minimum and resident bytes, the planned stream bytes per token and the embedding cache's
   rows are the larger of the two (each session plans alone); cache bytes are summed.
   Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_memory_stats_add(rwkvl_memory_stats* a, const rwkvl_memory_stats* b);
/* The memory plan as text (json = 0: the table --print-plan shows; 1: a JSON object) into out (cap bytes):
   cap/n_out protocol, *n_out is the text's length without the NUL, and the text is written
   NUL-terminated only when cap > *n_out. Errors: INVALID_ARGUMENT (NULL, no budget set, buffer too
   small). */
rwkvl_status rwkvl_context_memory_plan(rwkvl_context* ctx, int json, char* out, size_t cap, size_t* n_out);

/* ---------------------------------------------------------------- sessions (API 1.1) */

/* A session is the context handle under its 1.1 name: every rwkvl_context_* and rwkvl_eval* call takes
   one. rwkvl_session_new builds it once from one parameter struct (no call order to respect); the
   rwkvl_context_set_ffn / _set_head / _set_memory calls of 1.0 remain and rebuild the session from its
   parameters with that part replaced (statistics restart). */
typedef struct rwkvl_context rwkvl_session;

typedef struct {
  int n_threads;              /* <= 0: the machine's hardware threads (at most 1024) */
  rwkvl_ffn_params ffn;       /* channel-mix mode, neuron cache (replaced by the plan's under a budget) */
  rwkvl_head_params head;     /* full or cluster head and its thresholds */
  rwkvl_memory_params memory; /* budget, prefetch, embedding cache, storage throttle and latency, chunk */
} rwkvl_session_params;

/* Hardware threads, and each part's defaults (rwkvl_ffn_default_params, rwkvl_head_default_params,
   rwkvl_memory_default_params). Never fails. */
rwkvl_session_params rwkvl_session_default_params(void);
/* Builds a session for the model: storage, head, memory plan (with a budget: measures the process's
   resident memory and drops the model's resident pages first, so no session of the model may be
   evaluating meanwhile), embedding cache, layer stream, FFN runtime. Success sets *out to a new session
   the caller frees with rwkvl_session_free (or rwkvl_context_free); on failure *out is NULL. Errors:
   INVALID_ARGUMENT (NULL; an unknown mode; values out of range; settings the model cannot honour, as
   listed for rwkvl_context_set_ffn, _set_head and _set_memory; a budget below the minimum, the message
   names it), IO or FORMAT (the model file cannot be read as planned). Not thread-safe for the model's
   pages as said; otherwise any thread may build sessions of one model at once. */
rwkvl_status rwkvl_session_new(const rwkvl_model* model, const rwkvl_session_params* params, rwkvl_session** out);
/* Frees the session. NULL is a no-op. */
void rwkvl_session_free(rwkvl_session* s);
/* Replaces the session's parameters by *params, rebuilding it once (statistics restart). On failure the
   session runs with the default parameters (keeping its thread count) and the error is returned.
   Errors: as rwkvl_session_new. */
rwkvl_status rwkvl_context_configure(rwkvl_session* s, const rwkvl_session_params* params);

/* Simulated storage (API 1.6): every read from the model file costs what it would on a device that serves up to
   queue_depth reads at once, each spending latency_us (access time, overlapped for reads in flight) and then
   moving its bytes over one shared channel at mb_per_s. mb_per_s 0 = no simulation (the file as it is). */
typedef struct rwkvl_storage_params {
  double mb_per_s;   /* sequential bandwidth, MB/s (10^6 bytes); 0 = none */
  double latency_us; /* access time per read, microseconds */
  int queue_depth;   /* reads served at once (>= 1) */
} rwkvl_storage_params;
/* The figures of a device class: "sd" (90 MB/s, 1 ms, 1), "emmc" (250 MB/s, 150 us, 2), "ufs" (1.5 GB/s,
   80 us, 8), "nvme" (3 GB/s, 60 us, 32), "page-cache" (none). INVALID_ARGUMENT for another name. */
rwkvl_status rwkvl_storage_preset(const char* name, rwkvl_storage_params* out);
/* rwkvl_context_configure with this storage instead of params->memory's io_mb_per_s / io_latency_us
   (storage NULL: as rwkvl_context_configure). Errors: those of rwkvl_context_configure; INVALID_ARGUMENT for a
   negative or non-finite bandwidth or latency, or a queue depth outside 1..4096. */
rwkvl_status rwkvl_context_configure_storage(rwkvl_session* s, const rwkvl_session_params* params,
                                             const rwkvl_storage_params* storage);
/* More session settings (API 1.7). An extensible struct: take rwkvl_session_default_extras() (it sets struct_size)
   and change what you need; the library reads only the first struct_size bytes.
     storage            NULL: params->memory's io_mb_per_s / io_latency_us; else this device (as
                        rwkvl_context_configure_storage).
     latency_target_ms  > 0, with a memory budget: the plan must predict at most this many ms per token (storage time
                        of its reads + compute_ms). For files with an int4 version of the head clusters (compress
                        --fidelities HIGH,int4) the planner reads the clusters that cost the least calibration loss
                        per byte saved at int4 until the prediction meets the target. INVALID_ARGUMENT when no plan
                        can: the message names the fastest plan's prediction. 0 = none.
     compute_ms         compute per token added to the predicted storage time (e.g. 1000 / the tok/s measured with
                        every weight resident); >= 0.
     head_fidelity      NULL or "auto" (the head's own dtype unless a latency target needs int4), "high" (every
                        cluster at the head's own dtype) or "int4" (every cluster at int4; needs the int4 version).
     baseline_bytes     (API 1.8) with a memory budget: the bytes the process holds before the plan (binary,
                        libraries, tokenizer), instead of its resident memory measured when planning; the same
                        figure gives the same plan from run to run (the measured one moves by ~0.1 MiB). 0 = measure.
                        A figure below the real one lets the peak exceed the budget.
     de_cache_rows      (API 1.12) RWKV-7a: tokens whose DeepEmbed rows (one per layer) a cache holds, the tables
                        staying in the file (read row by row, all layers of a token at once, before the token's first
                        layer; the file's hot tokens pinned). -1 (default): the plan's under a memory budget (64 grown
                        to 1024 with room left), else 512 when the tables are in a native file and hold 64 MiB or
                        more, else read in place; 0: read in place (no budget only); > 0: that many. */
typedef struct rwkvl_session_extras {
  size_t struct_size;
  const rwkvl_storage_params* storage;
  double latency_target_ms;
  double compute_ms;
  const char* head_fidelity;
  uint64_t baseline_bytes;
  int64_t de_cache_rows;
} rwkvl_session_extras;
rwkvl_session_extras rwkvl_session_default_extras(void);
/* rwkvl_context_configure with the extras (NULL: none). Errors: those of rwkvl_context_configure_storage;
   INVALID_ARGUMENT for a negative or non-finite target or compute time, a target or fidelity without a memory
   budget, an unknown head_fidelity, int4 on a file without an int4 version, a target no plan can meet. */
rwkvl_status rwkvl_context_configure_with(rwkvl_session* s, const rwkvl_session_params* params,
                                          const rwkvl_session_extras* extras);
/* Reads from the model file since the session was built (or its statistics reset): count, bytes, the time
   callers waited in them (stall, simulated waiting included), the time the simulated device was busy (at least
   one read in flight; 0 without simulation), and the storage in use. */
typedef struct rwkvl_io_stats {
  uint64_t reads, bytes;
  double stall_seconds, device_busy_seconds;
  rwkvl_storage_params storage;
} rwkvl_io_stats;
/* Fills *out (zeros when the session reads nothing from the file). Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_context_io_stats(rwkvl_session* s, rwkvl_io_stats* out);

/* ---------------------------------------------------------------- tokenizers */

/* Picks the tokenizer by vocabulary size: 256 -> bytes, 65536 -> RWKV World, 50277/50304 -> GPT-NeoX
   20B. `path` may be NULL (or ""): then the file is searched for in $RWKVL_TOKENIZER_DIR, beside the
   model file (model_path, may be NULL), in ./tokenizers, and in the install's share/rwkv-lite folder.
   A path for another vocabulary size picks the kind by name (".json": GPT-NeoX, else World). Success
   sets *out to a new tokenizer the caller frees with rwkvl_tokenizer_free; on failure *out is NULL.
   Errors: INVALID_ARGUMENT (NULL model or out; a path for a byte-level model; a tokenizer larger than
   the vocabulary), UNSUPPORTED (no built-in tokenizer for the vocabulary and no path; a tokenizer.json
   using features this build does not implement), IO (the file is not found: the message lists where it
   looked; unreadable), FORMAT (a malformed file; a World vocabulary that is not the complete
   rwkv_vocab_v20230424.txt). */
rwkvl_status rwkvl_tokenizer_for_model(const rwkvl_model* model, const char* model_path, const char* path,
                                       rwkvl_tokenizer** out);
/* kind: "byte" (path unused), "world" or "neox" (path required). On failure *out is NULL.
   Errors: INVALID_ARGUMENT (NULL kind or out, unknown kind, no path), IO, FORMAT, UNSUPPORTED (a
   tokenizer.json using features this build does not implement). */
rwkvl_status rwkvl_tokenizer_load(const char* kind, const char* path, rwkvl_tokenizer** out);
/* NULL is a no-op. No text stream of the tokenizer may remain open. */
void rwkvl_tokenizer_free(rwkvl_tokenizer* tok);
/* "byte", "world" or "neox"; the string belongs to the tokenizer (valid until rwkvl_tokenizer_free);
   "" for NULL. */
const char* rwkvl_tokenizer_name(const rwkvl_tokenizer* tok);
/* Encodes len bytes of text (need not be NUL-terminated; text may be NULL when len is 0). Writes up to
   cap ids to out and the full count to *n_out; if the count exceeds cap, returns
   RWKVL_ERR_INVALID_ARGUMENT (call again with a bigger buffer). Errors: INVALID_ARGUMENT (NULL tok or
   n_out, NULL text with len > 0, buffer too small). */
rwkvl_status rwkvl_tokenize(const rwkvl_tokenizer* tok, const char* text, size_t len, int32_t* out, size_t cap,
                            size_t* n_out);
/* Raw bytes of one token (may be a partial UTF-8 sequence; not NUL-terminated; World: id 0 and unused ids
   have none); same cap/n_out protocol. Errors: INVALID_ARGUMENT (NULL, id outside the vocabulary,
   buffer too small). */
rwkvl_status rwkvl_token_bytes(const rwkvl_tokenizer* tok, int32_t id, char* out, size_t cap, size_t* n_out);

/* ---------------------------------------------------------------- input files and text streams */

/* Every input is a regular file (or "-" for standard input where allow_stdin is set): FIFOs, devices and
   folders are refused with a message naming `what` (NULL: "file") and the path, and nothing blocks in
   open(). On success *out is a new input the caller frees with rwkvl_input_free (closing the file); on
   failure *out is NULL. Errors: INVALID_ARGUMENT (NULL path or out), IO (missing, unreadable, not a
   regular file). */
typedef struct rwkvl_input rwkvl_input;
rwkvl_status rwkvl_input_open(const char* path, const char* what, int allow_stdin, rwkvl_input** out);
void rwkvl_input_free(rwkvl_input* in); /* NULL is a no-op */
/* Up to cap bytes into out (fewer only at the end; *n_out 0 at the end). Errors: INVALID_ARGUMENT
   (NULL), IO (a read failed). */
rwkvl_status rwkvl_input_read(rwkvl_input* in, void* out, size_t cap, size_t* n_out);
/* Size at open time (0 for standard input and for NULL). */
uint64_t rwkvl_input_size(const rwkvl_input* in);

/* The tokens of a text file read 64 KiB at a time: memory stays below RWKVL_TEXT_STREAM_MAX_BYTES for any
   file size, and the tokens equal rwkvl_tokenize() of the whole text (the GPT-NeoX tokenizer cuts a 64 KiB
   run without white space at a character boundary; rwkvl_text_stream_forced_cuts counts those). path "-" is
   standard input; `what` names the file in messages (NULL: "text file"). The tokenizer must outlive the
   stream. On success *out is a new stream the caller frees with rwkvl_text_stream_free; on failure *out
   is NULL. Errors: INVALID_ARGUMENT (NULL), IO (as rwkvl_input_open). */
#define RWKVL_TEXT_STREAM_MAX_BYTES (384u << 10)
typedef struct rwkvl_text_stream rwkvl_text_stream;
rwkvl_status rwkvl_text_stream_open(const rwkvl_tokenizer* tok, const char* path, const char* what,
                                    rwkvl_text_stream** out);
void rwkvl_text_stream_free(rwkvl_text_stream* s); /* NULL is a no-op */
/* Up to cap tokens (fewer only at the end of the text; *n_out 0 once it is all read). Errors:
   INVALID_ARGUMENT (NULL), IO (a read failed). */
rwkvl_status rwkvl_text_stream_read(rwkvl_text_stream* s, int32_t* out, size_t cap, size_t* n_out);
/* Bytes of text read so far; 0 for NULL. */
uint64_t rwkvl_text_stream_bytes_read(const rwkvl_text_stream* s);
/* GPT-NeoX runs cut at a character boundary so far (see above); 0 for NULL. */
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
/* params NULL: the defaults. On success *out is a new sampler the caller frees with rwkvl_sampler_free; on
   failure *out is NULL. Errors: INVALID_ARGUMENT (NULL out; a non-finite temperature or penalty, top_p
   not a finite number > 0, penalty_decay outside [0, 1]). */
rwkvl_status rwkvl_sampler_new(const rwkvl_sampler_params* params, rwkvl_sampler** out);
void rwkvl_sampler_free(rwkvl_sampler* s); /* NULL is a no-op */
/* Picks a token from n_vocab logits (the array is modified: penalties, temperature). Deterministic
   for a given seed and call sequence. Returns a token id, or -1 on bad arguments (NULL sampler or
   logits, n_vocab 0 or above INT32_MAX; rwkvl_last_error() says which). */
int32_t rwkvl_sampler_sample(rwkvl_sampler* s, float* logits, size_t n_vocab);
/* Records a token (for the penalties). rwkvl_sampler_sample does NOT call this itself. A NULL sampler is
   ignored, and so is a failure to record (out of memory: the token then gets no penalty). */
void rwkvl_sampler_accept(rwkvl_sampler* s, int32_t token);

/* ---------------------------------------------------------------- measurement helpers */

/* Peak resident set size of this process in bytes (VmHWM), 0 if unknown. */
uint64_t rwkvl_peak_rss_bytes(void);
/* Current resident set size of this process in bytes (VmRSS), 0 if unknown. */
uint64_t rwkvl_current_rss_bytes(void);
/* Resets the peak (VmHWM) to the current RSS; 1 on success, 0 where the system cannot (Linux < 4.0).
   Process-wide. */
int rwkvl_reset_peak_rss(void);
/* Measures the sustained memory read bandwidth (bytes/s) with n_threads threads (<= 0: one per core)
   streaming over a buffer of buffer_bytes (0 -> 256 MiB) for about `seconds`. Returns 0 on failure
   (the buffer cannot be allocated, threads cannot start); rwkvl_last_error() then says why. */
double rwkvl_measure_read_bandwidth(int n_threads, uint64_t buffer_bytes, double seconds);

/* ---------------------------------------------------------------- output files */

/* OUTPUT FILES. Every file the library writes (models, states, and these calls) goes through one writer:
   the data appears at `path` complete or not at all (an anonymous temporary in the same folder, fsynced
   and renamed over `path`, the folder fsynced; nothing is left behind on failure, SIGINT or SIGTERM).
   `path` must be absent or a regular file: a folder, device, FIFO or socket is refused, and so is a
   symbolic link (the link is never replaced nor followed). Errors (RWKVL_ERR_IO) name `path`. */

/* The checks alone, for a caller to run before any work: `path` is absent or a regular file and its
   folder exists and is writable. Creates nothing. Errors: INVALID_ARGUMENT (NULL), IO (refused). */
rwkvl_status rwkvl_check_output_path(const char* path);
/* Writes size bytes from data to path atomically. Errors: INVALID_ARGUMENT (NULL path, NULL data with
   size > 0), IO. */
rwkvl_status rwkvl_write_file(const char* path, const void* data, size_t size);
/* The same writer, fed piece by piece (outputs that grow while a command runs, e.g. per-passage results):
   open checks `path` and creates the temporary; commit makes the file appear; free without commit
   discards it. On success *out is a new output the caller frees with rwkvl_output_free (after commit
   too); on failure *out is NULL. Errors: INVALID_ARGUMENT (NULL), IO. */
typedef struct rwkvl_output rwkvl_output;
rwkvl_status rwkvl_output_open(const char* path, rwkvl_output** out);
/* Appends size bytes. Errors: INVALID_ARGUMENT (NULL, or the output is already committed), IO. */
rwkvl_status rwkvl_output_write(rwkvl_output* o, const void* data, size_t size);
/* Makes the file appear at its path. Errors: INVALID_ARGUMENT (NULL, already committed), IO (then
   nothing appears; free the output). */
rwkvl_status rwkvl_output_commit(rwkvl_output* o);
void rwkvl_output_free(rwkvl_output* o); /* NULL is a no-op; discards an output not committed */

/* ---------------------------------------------------------------- evaluation (perplexity, bits per byte, LAMBADA) */

/* The figures of `rwkv-lite eval` and `rwkv-lite perplexity` as library calls (src/eval/):
   - rwkvl_eval_text: a text fed as one stream from a fresh state; the negative log-likelihood (NLL, nats,
     summed in double) of every token after the first under the logits before it; perplexity
     exp(total NLL / predicted tokens); bits per byte = total NLL / ln 2 / UTF-8 bytes of the predicted tokens.
   - rwkvl_eval_lambada: lm-eval's lambada_openai protocol: each passage {"text": ...} of a jsonl file is split
     before its last word (white space at the end of the context moves to the target), tokenized as lm-eval
     does (the target's tokens are tok(context + target) past tok(context), or tok(target) when that is not a
     prefix: a "fallback"), and scored from a fresh state: accuracy = share of passages whose every target token
     is the argmax of the logits before it; perplexity = exp(mean over passages of the target's NLL).
   Inputs are opened before the evaluation (rwkvl_text_tokens_open; rwkvl_lambada_open then
   rwkvl_lambada_tokenize), so that bad files fail before a model is loaded and a caller under a memory budget
   can free the tokenizer when nothing is read while evaluating (rwkvl_text_tokens_streaming and
   rwkvl_lambada_streaming are 0), then give the context's plan rwkvl_eval_reserve_bytes() as reserve_bytes
   and rwkvl_eval_block() as max_chunk. Memory stays bounded whatever the size of the files. */

/* Progress of a long evaluation: `done` of `total` `unit`s ("tok", "B" (bytes of the text file, when the
   number of tokens is unknown), "passages"; total 0 when unknown) of `what` ("perplexity", "lambada").
   Called from the thread that called the evaluation only, first with done 0. */
typedef void (*rwkvl_eval_progress_fn)(void* user, const char* what, uint64_t done, uint64_t total,
                                       const char* unit);

typedef struct rwkvl_eval_params {
  size_t chunk;                    /* tokens per model chunk, as rwkvl_eval's chunk (0: 32) */
  size_t block;                    /* tokens whose logits are held at once; 0: rwkvl_eval_block(chunk, the
                                      context has a memory budget) */
  rwkvl_eval_progress_fn progress; /* NULL: none */
  void* progress_user;             /* passed to progress */
} rwkvl_eval_params;

/* chunk 0, block 0, no progress. Never fails. */
rwkvl_eval_params rwkvl_eval_default_params(void);
/* Tokens whose logits the evaluation holds at once: chunk clamped to 64..256; under a memory budget
   (under_budget != 0) one chunk (chunk, or 8 for 0). Never fails. */
size_t rwkvl_eval_block(size_t chunk, int under_budget);
/* Bytes an evaluation still allocates besides the context (for rwkvl_memory_params.reserve_bytes): one block
   of n_vocab logits and its tokens, RWKVL_TEXT_STREAM_MAX_BYTES when the text is streamed, LAMBADA's line
   and token buffers when passages are streamed, and slack. Never fails. */
uint64_t rwkvl_eval_reserve_bytes(int n_vocab, size_t block, int text_streamed, int lambada_streamed);

/* The tokens of a text file to evaluate (path "-": standard input), at most max_tokens (0 = all; < 0 is
   INVALID_ARGUMENT). Up to 65536 tokens (max_tokens in 1..65536) are read and held now; a longer or unlimited
   text is tokenized while it is evaluated (rwkvl_text_tokens_streaming 1: then `tok` must outlive the handle).
   On success *out is a new handle the caller frees with rwkvl_text_tokens_free; on failure *out is NULL.
   Not thread-safe. Errors: INVALID_ARGUMENT (NULL; the text has fewer than 2 tokens (within max_tokens):
   the message says "empty" for an empty file), IO (missing, unreadable, not a regular file). */
typedef struct rwkvl_text_tokens rwkvl_text_tokens;
rwkvl_status rwkvl_text_tokens_open(const rwkvl_tokenizer* tok, const char* path, int64_t max_tokens,
                                    rwkvl_text_tokens** out);
/* 1 while tokens are still read from the file (the tokenizer is used), 0 when all are held; 0 for NULL. */
int rwkvl_text_tokens_streaming(const rwkvl_text_tokens* text);
void rwkvl_text_tokens_free(rwkvl_text_tokens* text); /* NULL is a no-op */

typedef struct rwkvl_text_result {
  uint64_t tokens;          /* tokens in the stream */
  uint64_t predicted;       /* tokens - 1: every token after the first */
  uint64_t predicted_bytes; /* UTF-8 bytes of the predicted tokens (their decoded bytes) */
  double total_nll;         /* nats, over the predicted tokens */
  double mean_nll;          /* total_nll / predicted */
  double ppl;               /* exp(mean_nll) */
  double bpb;               /* bits per byte: total_nll / ln 2 / predicted_bytes; NaN when that is 0 */
  double seconds;           /* feeding + NLL (and tokenizing, when the text is streamed) */
  double tok_per_s;         /* predicted / seconds (0 when seconds is 0) */
  int threads;              /* the context's threads (NLL of each block spread over them) */
} rwkvl_text_result;

/* Perplexity and bits per byte of the text (see above), fed through ctx from a fresh state of its own (blocks
   of sequence mode with every logit, the same as one token at a time up to float rounding); ctx's settings
   (FFN, head, memory budget) apply and its statistics count the work. Reads the text to its end: a handle is
   evaluated once (again: INVALID_ARGUMENT). params NULL: the defaults. *out (the caller's struct) is written
   only on success. ctx and text must not be used by another thread during the call. Errors:
   INVALID_ARGUMENT (NULL ctx, text or out; text already evaluated), IO and FORMAT as rwkvl_eval and from
   reading a streamed text. */
rwkvl_status rwkvl_eval_text(rwkvl_context* ctx, rwkvl_text_tokens* text, const rwkvl_eval_params* params,
                             rwkvl_text_result* out);

/* The passages of a LAMBADA jsonl file (path "-": standard input, read twice: use a file), all of them or the
   first max_passages (0 = all; < 0 is INVALID_ARGUMENT). Every line is checked now (a malformed one anywhere
   fails, naming the line), one line held at a time; no tokenizer is needed yet. On success *out is a new
   handle the caller frees with rwkvl_lambada_free; on failure *out is NULL. Not thread-safe.
   Errors: INVALID_ARGUMENT (NULL), IO (missing, unreadable), FORMAT ("line N: not valid JSON", not an object
   with a string "text", no space in the text, nothing before the last word, a line over 16 KiB, no
   passages). */
typedef struct rwkvl_lambada rwkvl_lambada;
rwkvl_status rwkvl_lambada_open(const char* path, int64_t max_passages, rwkvl_lambada** out);
/* Passages that will be evaluated; 0 for NULL. */
size_t rwkvl_lambada_count(const rwkvl_lambada* lambada);
/* Tokenizes the passages with tok: all of them now when there are at most 8192 (then tok may be freed),
   else one at a time while they are evaluated (rwkvl_lambada_streaming 1: tok must outlive the handle).
   Once per handle. Errors: INVALID_ARGUMENT (NULL, already tokenized), IO (the file changed or cannot be
   read), FORMAT (a passage whose context or target has no tokens). */
rwkvl_status rwkvl_lambada_tokenize(rwkvl_lambada* lambada, const rwkvl_tokenizer* tok);
/* 1 while passages are still read and tokenized from the file, else 0; 0 for NULL. */
int rwkvl_lambada_streaming(const rwkvl_lambada* lambada);
void rwkvl_lambada_free(rwkvl_lambada* lambada); /* NULL is a no-op */

typedef struct rwkvl_lambada_result {
  uint64_t n;             /* passages evaluated */
  uint64_t correct;       /* of those, every target token the argmax */
  uint64_t target_tokens; /* target tokens over all passages */
  uint64_t fallbacks;     /* passages whose target was tokenized apart (see above) */
  double total_nll;       /* nats, summed over the passages' targets */
  double acc;             /* correct / n */
  double ppl;             /* lm-eval's: exp(total_nll / n) */
  double token_ppl;       /* per target token: exp(total_nll / target_tokens) */
  double seconds;
  int workers;            /* contexts that ran the passages (1: ctx itself) */
  /* With workers > 1 the passages ran on worker contexts with ctx's settings and ctx is untouched: their
     statistics, summed as the CLI reports them (counters added, sizes and plan figures the largest);
     all zero when workers is 1 (ctx's own statistics count the work). */
  rwkvl_ffn_stats worker_ffn;
  rwkvl_head_stats worker_head;
  rwkvl_memory_stats worker_memory;
} rwkvl_lambada_result;

/* LAMBADA accuracy and perplexity of the tokenized passages (see above). Passages are independent: with
   ctx's n threads and no memory budget they are spread over min(n, passages) workers, each a new
   single-threaded context (n / workers threads) made with the settings last applied to ctx
   (rwkvl_context_set_ffn, _set_head, _set_memory), run on their own threads; under a budget, or with one
   thread, ctx does them all. Results are summed in passage order, so the figures do not depend on the split.
   details (may be NULL): an output (rwkvl_output_open) that receives one JSON object per passage and line,
   in passage order, as they finish: {"line": line in the file, "context_tokens": n, "target": [ids],
   "greedy": [argmax ids], "nll": nats, "correct": bool, "fallback": bool}; the caller commits it. The handle
   is evaluated once (again: INVALID_ARGUMENT). params NULL: the defaults. *out is written only on success.
   ctx, lambada and details must not be used by another thread during the call. Errors: INVALID_ARGUMENT
   (NULL ctx, lambada or out; not tokenized; already evaluated), IO and FORMAT as rwkvl_eval, from reading
   streamed passages and writing details, INTERNAL (a worker thread cannot start). */
rwkvl_status rwkvl_eval_lambada(rwkvl_context* ctx, rwkvl_lambada* lambada, const rwkvl_eval_params* params,
                                rwkvl_output* details, rwkvl_lambada_result* out);

/* ---------------------------------------------------------------- integrity */

/* Checks a whole model file: every tensor's FNV-1a checksum against the header (native files; other formats
   have none, reported as "none"), every float value finite (f32/f16/bf16 tensors, int8 scale tensors, the
   f16 scales of q4_g32 and q5_1 blocks), every header field in range (the model is bound as for loading).
   Writes the report as one JSON object (fields in docs/CLI.md, "verify") with the cap/n_out protocol of
   rwkvl_context_memory_plan (NUL-terminated when it fits); *ok (may be NULL) is 1 when nothing is wrong, else
   0. Returns RWKVL_OK whenever the check ran, whatever it found (a file that cannot be read at all is a
   finding in the report); fails only on bad arguments, a buffer too small (then *n_out is the report's length;
   calling again with the same path returns that report without reading the file again) or out of memory.
   The report kept for the next call is per thread. Errors: INVALID_ARGUMENT (NULL path or n_out, NULL out
   with cap > 0, buffer too small). */
rwkvl_status rwkvl_verify_model(const char* path, char* out, size_t cap, size_t* n_out, int* ok);

/* Makes a model file that is truncated or replaced while it is memory-mapped a clear error instead of a
   silent SIGBUS: a SIGBUS in a mapping of this library prints "<program>: error: model file '<path>' was
   truncated or replaced while in use" to stderr and ends the process with exit status 1 (_exit). Other
   SIGBUS go to the previous handler. Process-wide; call once at start-up (e.g. from main). `program` is
   copied (63 bytes at most); NULL: "rwkv-lite". */
void rwkvl_install_sigbus_guard(const char* program);

/* ---------------------------------------------------------------- compression (issue #14) */

/* COMPRESSION. rwkvl_compress runs the compression passes of `rwkv-lite compress` on a loaded model, in
   their fixed order: (1) low-rank factorisation W ~ B A (+ diag) of the target projections and
   quantisation / type conversion of the other matrices, (2) the neuron-bundled sparse channel-mix with
   activation predictors, (3) the cluster head; then it writes the native file. The same recipe and
   calibration give the same bytes as the command with the same flags (docs/CLI.md, "compress"). The model
   handle is only read: other threads may use it meanwhile. Strings in the recipe are read during the call
   only. The progress callback runs on the calling thread or a worker thread, never concurrently. The
   *_from_string helpers and rwkvl_compress_default_recipe may be called from any thread. */

typedef enum { RWKVL_LOWRANK_NONE = 0, RWKVL_LOWRANK_SVD = 1, RWKVL_LOWRANK_ASVD = 2 } rwkvl_lowrank_method;
typedef enum { RWKVL_QUANT_NONE = 0, RWKVL_QUANT_INT8 = 1, RWKVL_QUANT_INT4 = 2 } rwkvl_quant;
/* How the cluster head spreads an unchosen cluster's probability over its tokens: CALIB by each token's
   share of the cluster's mass on the calibration text, UNIFORM evenly (the paper). */
typedef enum { RWKVL_HEAD_PRIOR_CALIB = 0, RWKVL_HEAD_PRIOR_UNIFORM = 1 } rwkvl_head_prior;
/* The rows the vocabulary is clustered by: the head rows, or the embedding rows (the paper). */
typedef enum { RWKVL_CLUSTER_SOURCE_HEAD = 0, RWKVL_CLUSTER_SOURCE_EMB = 1 } rwkvl_cluster_source;

/* Low-rank targets, one bit per projection (canonical names in brackets). */
#define RWKVL_TARGET_ATT_RECEPTANCE (1u << 0) /* att.receptance */
#define RWKVL_TARGET_ATT_KEY (1u << 1)        /* att.key */
#define RWKVL_TARGET_ATT_VALUE (1u << 2)      /* att.value */
#define RWKVL_TARGET_ATT_OUTPUT (1u << 3)     /* att.output */
#define RWKVL_TARGET_ATT_GATE (1u << 4)       /* att.gate (gated v5.1+ and v6 models) */
#define RWKVL_TARGET_FFN_KEY (1u << 5)        /* ffn.key */
#define RWKVL_TARGET_FFN_VALUE (1u << 6)      /* ffn.value */
#define RWKVL_TARGET_FFN_RECEPTANCE (1u << 7) /* ffn.receptance (not v7) */
#define RWKVL_TARGETS_DEFAULT 0u           /* time-mix receptance, key, value (and gate where it exists) */
#define RWKVL_TARGETS_ALL 0xFFFFFFFFu      /* every projection the architecture has */

/* Parse the names the command line uses ("svd", "asvd", "none"/""; "int8", "int4", "none"/""; "calib",
   "uniform"; "head", "emb"; a comma-separated target list or "all"), for bindings. *out is unchanged on
   failure. Errors: INVALID_ARGUMENT (NULL, unknown name: the message lists the known ones). The rwkvl_*_name
   inverses and the other enums' parsers are under NAMES at the end of this header. */
rwkvl_status rwkvl_lowrank_method_from_string(const char* s, rwkvl_lowrank_method* out);
rwkvl_status rwkvl_quant_from_string(const char* s, rwkvl_quant* out);
rwkvl_status rwkvl_head_prior_from_string(const char* s, rwkvl_head_prior* out);
rwkvl_status rwkvl_cluster_source_from_string(const char* s, rwkvl_cluster_source* out);
rwkvl_status rwkvl_targets_from_string(const char* list, uint32_t* out);

typedef struct rwkvl_compress_recipe {
  /* (1) low-rank: with a method, exactly one of rank_frac (0 < F <= 1: rank = round(F min(rows, cols))),
     rank (>= 1) and budget_bytes (per-matrix ranks chosen so every weight fits in this many bytes). */
  rwkvl_lowrank_method lowrank;
  double rank_frac;
  int64_t rank;
  uint64_t budget_bytes;
  uint32_t targets;  /* RWKVL_TARGET_* bits, RWKVL_TARGETS_DEFAULT or RWKVL_TARGETS_ALL */
  int diag;          /* also fit a diagonal term on square matrices */
  int force;         /* keep factorisations that do not save bytes */
  double damp;       /* asvd: damping of the input second moment (default 1e-3) */
  /* (1) quantisation of every block projection and the factors, optionally the embedding and head */
  rwkvl_quant quant;
  int quant_emb, quant_head;
  const char* dtype; /* factors and matrices not quantised: NULL/"keep" (f32 factors for f32 models, else
                        f16), "f32", "f16", "bf16" */
  /* (2) sparse channel-mix (needs calibration) */
  int sparse_ffn;          /* 1: neuron-bundle the channel-mix */
  int ffn_predictors;      /* 1: train activation predictors (default); 0: bundle only */
  const char* ffn_dtype;   /* bundle dtype: NULL/"keep" (that of ffn.key), "f32", "f16", "bf16", "i8", "q4" */
  double recall;           /* recall the predictors must reach on new text (default 0.99) */
  int pred_hidden;         /* MLP predictor width (default 64) */
  int pred_epochs;         /* its training epochs (default 20) */
  double pred_lr;          /* its Adam step size (default 0.003) */
  double pred_holdout;     /* share of calibration tokens held out for the thresholds (default 0.2) */
  int pred_int8;           /* 1: MLP stored int8 with f16 row scales (default); 0: f16 */
  /* (3) cluster head (needs calibration) */
  int cluster_head;        /* K >= 2 k-means clusters; 0 = off */
  int cluster_cap;         /* most tokens per cluster (default 1024) */
  int pca_dims;            /* PCA components the k-means runs on (default 200) */
  int head_epochs;         /* distillation epochs (default 30) */
  double head_lr;          /* distillation step size (default 0.01) */
  rwkvl_head_prior head_prior;
  double prior_smoothing;  /* CALIB priors: A x the cluster's mean share added to each token (default 1e-3) */
  rwkvl_cluster_source cluster_source;
  uint64_t seed;           /* predictor training and k-means (default 1) */
  int n_threads;           /* <= 0: one per online core (the output does not depend on it) */
} rwkvl_compress_recipe;

/* Nothing to do (every pass off) with the command line's defaults for every setting. Never fails. */
rwkvl_compress_recipe rwkvl_compress_default_recipe(void);

/* Calibration: either tokens (n_tokens of them) or text (text_len bytes, tokenised with `tokenizer`, or
   with the model's tokenizer found as rwkvl_tokenizer_for_model does when NULL). max_tokens > 0 keeps the
   first max_tokens tokens. `name` (NULL: "") is recorded in the file with the text's FNV-1a 64 hash (of
   the token ids as little-endian int32 for tokens). */
typedef struct rwkvl_calibration {
  const int32_t* tokens;
  size_t n_tokens;
  const char* text;
  size_t text_len;
  const rwkvl_tokenizer* tokenizer;
  size_t max_tokens;
  const char* name;
} rwkvl_calibration;

/* stage: "compress" (layers), "sparse-ffn" (steps: per layer one for its activations and, with predictors,
   epochs + 1 for training), "clustering" (k-means iterations), "calibration" (tokens), "distillation"
   (epochs); each stage starts with done = 0. */
typedef void (*rwkvl_compress_progress_fn)(const char* stage, int64_t done, int64_t total, void* user);

typedef struct rwkvl_compress_details rwkvl_compress_details;
typedef struct rwkvl_compress_report {
  uint64_t weight_bytes_before, weight_bytes_after; /* bytes of all tensors */
  uint64_t out_file_bytes;                          /* size of the written file */
  uint64_t calib_tokens;
  int matrices_factored, matrices_skipped, matrices_dense; /* (1) low-rank: factored, not worth it, kept by the budget */
  int matrices_quantised, matrices_converted;              /* (1) further matrices quantised / converted */
  uint64_t budget_planned_bytes;                           /* (1) budget: the planner's estimate */
  double budget_error_sum;                                 /* (1) budget: summed predicted relative error */
  uint64_t ffn_bundle_bytes, ffn_predictor_bytes;          /* (2) */
  int cluster_k;                                           /* (3) clusters after the cap; 0 = no cluster head */
  double seconds_lowrank_quant, seconds_sparse_collect, seconds_sparse_train, seconds_cluster,
      seconds_cluster_calibration, seconds_cluster_distillation, seconds_save, seconds_total;
  rwkvl_compress_details* details; /* the whole report, for rwkvl_compress_report_json; owned by the library
                                      until rwkvl_compress_report_free */
} rwkvl_compress_report;

/* Compresses `model` with `recipe` (NULL: the default recipe, which fails with "nothing to do") and writes
   the native file at out_path atomically (see OUTPUT FILES; the path is checked before any work). calib
   may be NULL when no pass calibrates (svd without error figures, quantisation). progress may be NULL.
   report (may be NULL) is the caller's struct: on success every field is written and details must be
   released with rwkvl_compress_report_free; on failure it is zeroed. Errors: INVALID_ARGUMENT (NULL model
   or out_path, a recipe the model cannot take: the message names the setting, e.g. an unknown target, a
   rank out of range, already factored or quantised matrices, too little calibration text, a calibration
   token out of range), IO (path refused, write failed), FORMAT (non-finite activations during calibration). */
rwkvl_status rwkvl_compress(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                            const rwkvl_calibration* calib, const char* out_path, rwkvl_compress_progress_fn progress,
                            void* user, rwkvl_compress_report* report);
/* The whole report as one JSON object ("out", "out_file_bytes", "weight_bytes_before/after", "calib_tokens",
   "budget", "budget_planned_bytes", "budget_error_sum", "pass" and "matrices" of stage 1, "sparse_ffn",
   "cluster_head", "stages" (seconds)), with the cap/n_out protocol of rwkvl_context_memory_plan.
   Errors: INVALID_ARGUMENT (NULL, a report without details, buffer too small). */
rwkvl_status rwkvl_compress_report_json(const rwkvl_compress_report* report, char* out, size_t cap, size_t* n_out);
/* Frees the details and zeroes the struct. NULL is a no-op. */
void rwkvl_compress_report_free(rwkvl_compress_report* report);

/* BOUNDED MEMORY (API 1.3). A compression holds one layer's work at a time: finished tensors wait in an
   anonymous file next to out_path (the same file system; as large as the output) and the pages of the input
   that were read are dropped. rwkvl_compress_plan states, before any work, each stage's expected peak of
   resident memory; with a budget the run trains fewer predictor layers side by side to fit (the same bytes
   are written), and refuses a budget no setting meets.
   RESUMING (API 1.4). While it runs, a compression keeps a journal in the folder "<out_path>.journal" (the
   finished tensors and, after each finished layer, where the run stands); it is removed once out_path is
   written. After an interruption (a crash, SIGKILL, a power cut, a full disk) the same call with resume = 1
   continues from the last finished layer and writes the same bytes as a run that was never interrupted. */
typedef struct rwkvl_compress_options {
  uint64_t mem_budget; /* > 0: plan within this many bytes of resident memory; 0: no budget */
  int resume;          /* 1: continue the run the journal records (same model, recipe and calibration, else
                          INVALID_ARGUMENT; no journal: from the beginning); 0: start again (a journal there is
                          replaced). Before 1.4 only 0 was accepted. */
} rwkvl_compress_options;
/* No budget, no resume. Never fails. */
rwkvl_compress_options rwkvl_compress_default_options(void);

typedef enum {
  RWKVL_COMPRESS_STAGE_LOWRANK_QUANT = 0, /* (1) low-rank factorisation and quantisation */
  RWKVL_COMPRESS_STAGE_SPARSE_FFN = 1,    /* (2) sparse channel-mix and predictors */
  RWKVL_COMPRESS_STAGE_CLUSTER_HEAD = 2,  /* (3) cluster head */
  RWKVL_COMPRESS_STAGE_SAVE = 3,          /* writing the file */
  RWKVL_COMPRESS_STAGES = 4
} rwkvl_compress_stage;

typedef struct rwkvl_compress_plan {
  uint64_t peak_bytes;                              /* the largest stage's expected peak resident memory */
  uint64_t base_bytes;                              /* before the passes (code, tokenizer, calibration tokens) */
  uint64_t stage_peak_bytes[RWKVL_COMPRESS_STAGES]; /* each stage's expected peak, base included; 0: does not run */
  double stage_work[RWKVL_COMPRESS_STAGES];         /* each stage's share of the work (sums to 1), for progress */
  int sparse_parallel_layers;                       /* predictor layers collected and trained side by side */
} rwkvl_compress_plan;

/* The plan of rwkvl_compress_ex for this model, recipe (NULL: default), number of calibration tokens and
   options (NULL: defaults), into the caller's *out. Errors: INVALID_ARGUMENT (NULL model or out; a budget no
   setting meets: the message names the stage and both figures). */
rwkvl_status rwkvl_compress_plan_get(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                     uint64_t calib_tokens, const rwkvl_compress_options* options,
                                     rwkvl_compress_plan* out);
/* rwkvl_compress with options (NULL: defaults, which is rwkvl_compress). The report's JSON then also carries
   "plan" and "stages_peak_rss_bytes" (the measured peak at the end of each stage). Errors: those of
   rwkvl_compress; INVALID_ARGUMENT for a budget no setting meets (before any work), or for resume with a journal
   of another run; FORMAT for a damaged journal; IO when "<out_path>.journal" is not a journal folder. */
rwkvl_status rwkvl_compress_ex(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                               const rwkvl_calibration* calib, const char* out_path,
                               const rwkvl_compress_options* options, rwkvl_compress_progress_fn progress, void* user,
                               rwkvl_compress_report* report);

/* ---------------------------------------------------------------- pruning (API 1.6)
   Training-free pruning of the projections before the other passes: magnitude (the smallest |W| of each
   matrix), Wanda (the smallest |W| x ||x_j|| of each output row) or DSnoT (Wanda's mask, then prune-and-grow
   swaps per row that cut the row's expected reconstruction error, using the inputs' mean and variance),
   unstructured or N:M (at most N non-zeros in every M consecutive columns), calibrated layer by layer. 2:4
   matrices are stored packed (f16_2of4: 0.5625x the bytes of f16, their own SIMD kernels) unless
   store is DENSE; every other result keeps its dtype, with zeros. */
typedef enum rwkvl_prune_method {
  RWKVL_PRUNE_NONE = 0,
  RWKVL_PRUNE_MAGNITUDE = 1,
  RWKVL_PRUNE_WANDA = 2, /* needs calibration */
  RWKVL_PRUNE_DSNOT = 3  /* needs calibration */
} rwkvl_prune_method;
typedef enum rwkvl_prune_store {
  RWKVL_PRUNE_STORE_AUTO = 0,  /* 2:4 packed (f16_2of4), the rest masked (f16_masked) where that is smaller (1.9;
                                  before: dense) */
  RWKVL_PRUNE_STORE_DENSE = 1,  /* zeros in place, the matrix's dtype */
  RWKVL_PRUNE_STORE_PACKED = 2  /* 2:4 packed, the rest masked even where larger (1.9; before: 2:4 only) */
} rwkvl_prune_store;
typedef struct rwkvl_prune_recipe {
  rwkvl_prune_method method;
  double sparsity;        /* share of weights removed, in (0, 1); with a pattern 0 or exactly 1 - n/m */
  int pattern_n, pattern_m; /* N:M (1 <= n < m <= 64), or 0, 0: unstructured */
  uint32_t targets;       /* RWKVL_TARGET_* bits; 0 or RWKVL_TARGETS_ALL: every projection of the model */
  int dsnot_cycles;       /* DSnoT: swaps per row at most (default 50) */
  double dsnot_threshold; /* DSnoT: a row stops once |expected error| <= this (default 0) */
  double dsnot_var_power; /* DSnoT: growing candidates ranked by W E[x] / Var[x]^p (default 1) */
  int dsnot_same_sign;    /* DSnoT: stop a row when a swap would flip its error's sign (default 1, the paper) */
  rwkvl_prune_store store;
} rwkvl_prune_recipe;

/* No pruning, with the command line's defaults for every setting. Never fails. */
rwkvl_prune_recipe rwkvl_prune_default_recipe(void);
rwkvl_status rwkvl_prune_method_from_string(const char* s, rwkvl_prune_method* out); /* magnitude|wanda|dsnot|none */
rwkvl_status rwkvl_prune_store_from_string(const char* s, rwkvl_prune_store* out);   /* auto|dense|packed */
/* "2:4" -> 2, 4; "" or "unstructured" -> 0, 0; INVALID_ARGUMENT for n >= m, n < 1, m > 64 or other text. */
rwkvl_status rwkvl_prune_pattern_from_string(const char* s, int* n, int* m);

/* rwkvl_compress_ex with pruning first (prune may be NULL: none). The report's JSON has "prune": the pass
   record, per matrix {name, rows, cols, zeros, swaps, dtype, bytes_before, bytes_after, rel_error (the
   calibration output error ||WX - W'X||^2 / ||WX||^2)} and the totals. Errors: those of rwkvl_compress_ex, and
   INVALID_ARGUMENT for a sparsity outside (0, 1), a bad pattern, a pattern that contradicts the sparsity, wanda or
   dsnot without calibration, a target that is factored, quantised or already pruned (before any work, no output). */
rwkvl_status rwkvl_compress_with_prune(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                       const rwkvl_prune_recipe* prune, const rwkvl_calibration* calib,
                                       const char* out_path, const rwkvl_compress_options* options,
                                       rwkvl_compress_progress_fn progress, void* user, rwkvl_compress_report* report);

/* More settings of a compression (API 1.7). An extensible struct: take rwkvl_compress_default_extras() (it sets
   struct_size) and change what you need; the library reads only the first struct_size bytes, so a program built
   against this header works with later libraries whose struct has more fields.
     prune       pruning first, as rwkvl_compress_with_prune (NULL: none).
     fidelities  "HIGH,int4" (NULL or "": one fidelity): with a cluster head, every cluster's head rows are also
                 stored at int4 (tensor head.weight.q4), with each cluster's importance (the increase of the
                 calibration loss when it alone is read at int4) in the pass record; HIGH names the head's own
                 dtype after the other passes (int8 with quant_head and RWKVL_QUANT_INT8, else f16, bf16 or f32).
                 Under a memory budget the session's planner then chooses a fidelity per cluster
                 (rwkvl_session_params: latency_target_ms, fidelity).
     deep_embed  (API 1.12) RWKV-7a, before every other pass: merge each layer's s_emb_x ln0(emb) into its DeepEmbed
                 table (the reference code's merge at load, done once: no per-token product, the s_emb_x matrices
                 dropped) and, with calibration text, record the de_hot most frequent calibration tokens, whose rows
                 the runtime's DeepEmbed cache pins. The report's JSON has "deep_embed" (its pass record).
     de_hot      with deep_embed: hot tokens recorded at most (default 1024; 0 = none). */
typedef struct rwkvl_compress_extras {
  size_t struct_size;
  const rwkvl_prune_recipe* prune;
  const char* fidelities;
  int deep_embed;
  int64_t de_hot;
} rwkvl_compress_extras;
rwkvl_compress_extras rwkvl_compress_default_extras(void);
/* rwkvl_compress_with_prune with the extras (NULL: none). Errors: those of rwkvl_compress_with_prune, and
   INVALID_ARGUMENT for fidelities that are not "HIGH,int4", fidelities without a cluster head, a HIGH that
   is not the head's dtype, deep_embed on a model without DeepEmbed tables, a negative de_hot (before any work, no
   output). */
rwkvl_status rwkvl_compress_with(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                 const rwkvl_compress_extras* extras, const rwkvl_calibration* calib,
                                 const char* out_path, const rwkvl_compress_options* options,
                                 rwkvl_compress_progress_fn progress, void* user, rwkvl_compress_report* report);

/* FFN activation sparsity (`rwkv-lite stats`): feeds tokens[0..n) from the initial state in chunks of
   `chunk` (1..1024; 0 = 64) with n_threads threads (<= 0: one per core) and measures, per layer, the share of
   zero channel-mix neurons relu(Wk x)^2 per token. progress (may be NULL) gets stage "stats" (tokens).
   *out is the caller's struct; on success release it with rwkvl_ffn_sparsity_free, on failure it is
   zeroed. Errors: INVALID_ARGUMENT (NULL, n == 0, a token out of range, a neuron-bundled model: measure
   the model it was made from), FORMAT (non-finite activations). */
typedef struct rwkvl_ffn_sparsity_details rwkvl_ffn_sparsity_details;
typedef struct rwkvl_ffn_sparsity {
  uint64_t tokens;
  int n_layer, n_ffn;
  double zero_frac_mean; /* mean over layers of the mean share of zero neurons */
  double seconds;
  rwkvl_ffn_sparsity_details* details; /* owned by the library until rwkvl_ffn_sparsity_free */
} rwkvl_ffn_sparsity;
typedef struct rwkvl_ffn_sparsity_layer {
  int layer;
  double zero_frac_mean, zero_frac_p10, zero_frac_p50, zero_frac_p90, zero_frac_min, zero_frac_max;
  int64_t neurons_90, neurons_99; /* fewest neurons carrying 90 % / 99 % of all activations */
  int64_t never_active;
} rwkvl_ffn_sparsity_layer;
rwkvl_status rwkvl_ffn_sparsity_measure(const rwkvl_model* model, const int32_t* tokens, size_t n, size_t chunk,
                                        int n_threads, rwkvl_compress_progress_fn progress, void* user,
                                        rwkvl_ffn_sparsity* out);
/* One layer's figures. Errors: INVALID_ARGUMENT (NULL, no details, layer out of range). */
rwkvl_status rwkvl_ffn_sparsity_get_layer(const rwkvl_ffn_sparsity* s, int layer, rwkvl_ffn_sparsity_layer* out);
/* {"tokens", "n_ffn", "layers": [...], "zero_frac_mean", "seconds"} (the keys of `stats --json` less "model"),
   cap/n_out protocol as rwkvl_context_memory_plan. Errors: INVALID_ARGUMENT (NULL, no details, buffer too small). */
rwkvl_status rwkvl_ffn_sparsity_json(const rwkvl_ffn_sparsity* s, char* out, size_t cap, size_t* n_out);
/* Frees the details and zeroes the struct. NULL is a no-op. */
void rwkvl_ffn_sparsity_free(rwkvl_ffn_sparsity* s);

/* ---------------------------------------------------------------- generation, chat, prefix states (API 1.5) */

/* GENERATION. rwkvl_generate feeds a prompt and samples tokens one at a time, handing the output to a callback
   in pieces: a piece's text never ends inside a UTF-8 character (invalid bytes pass through as they come)
   and never shows any part of a stop sequence; it carries the tokens sampled since the previous piece (a
   token's text may come in a later piece than the token). Generation ends at max_tokens, at a stop sequence
   (its text and what follows are dropped), at the end-of-text token 0 (stop_at_eos; not part of the output),
   at the deadline, or when the callback returns non-zero.

   PREFIX STATES. RWKV's whole context is its state, so the state after any prefix of tokens can be kept and
   resumed: with a cache, rwkvl_generate takes the prompt from the initial state, resumes from the longest
   cached prefix shorter than the prompt and stores the state after prompt[0..p) for every p in checkpoints
   (e.g. the message ends of rwkvl_chat_tokenize) and every multiple of cache_every. A cache is bounded in
   bytes (least recently used entries go first) and may be shared by sessions of one model on any threads. */

typedef enum {
  RWKVL_FINISH_LENGTH = 0,    /* max_tokens reached */
  RWKVL_FINISH_STOP = 1,      /* a stop sequence appeared */
  RWKVL_FINISH_EOS = 2,       /* the end-of-text token was sampled */
  RWKVL_FINISH_CANCELLED = 3, /* the callback returned non-zero */
  RWKVL_FINISH_DEADLINE = 4   /* deadline_seconds passed */
} rwkvl_finish_reason;
/* "length", "stop", "eos", "cancelled", "deadline" ("unknown" outside the enum). Never fails. */
const char* rwkvl_finish_reason_name(rwkvl_finish_reason r);

typedef struct rwkvl_prefix_cache rwkvl_prefix_cache;
typedef struct {
  uint64_t lookups, hits, misses; /* a hit found some prefix */
  uint64_t hit_tokens;            /* prompt tokens not processed thanks to hits */
  uint64_t inserts, evictions, entries;
  uint64_t bytes, capacity;       /* bytes held (states, keys, bookkeeping) and the bound */
} rwkvl_prefix_cache_stats;
/* A cache of at most capacity_bytes. On failure *out is NULL. Errors: INVALID_ARGUMENT (NULL out). */
rwkvl_status rwkvl_prefix_cache_new(uint64_t capacity_bytes, rwkvl_prefix_cache** out);
void rwkvl_prefix_cache_free(rwkvl_prefix_cache* c); /* NULL is a no-op; no generation may be using it */
/* Errors: INVALID_ARGUMENT (NULL). */
rwkvl_status rwkvl_prefix_cache_get_stats(const rwkvl_prefix_cache* c, rwkvl_prefix_cache_stats* out);
rwkvl_status rwkvl_prefix_cache_clear(rwkvl_prefix_cache* c);

typedef struct {
  int64_t max_tokens;             /* tokens to sample at most (default 128; 0: only the prompt is fed) */
  rwkvl_sampler_params sampling;  /* rwkvl_sampler_default_params() */
  const char* const* stop;        /* n_stop NUL-terminated stop sequences (none empty), or NULL */
  size_t n_stop;
  int stop_at_eos;                /* token 0 ends the output (default 1; 0 for byte-level models) */
  int ban_eos;                    /* token 0 is never sampled (default 0; chat: 1) */
  int logprobs;                   /* pieces carry each token's log-probability (before penalties) */
  int top_logprobs;               /* and the N most probable tokens at each step, 0..20 */
  double deadline_seconds;        /* > 0: stop after this long */
  size_t chunk;                   /* prompt chunk as rwkvl_eval (0 = 32) */
  rwkvl_prefix_cache* cache;      /* NULL: the prompt continues `state` */
  const size_t* checkpoints;      /* with a cache: prefix lengths whose state is stored */
  size_t n_checkpoints;
  size_t cache_every;             /* with a cache: also every this many prompt tokens (0: none) */
  int feed_last;                  /* feed the last sampled token too (default 1): the state then covers the
                                     whole output, as a conversation continues */
} rwkvl_generate_params;

typedef struct {
  const char* text;     /* text_len bytes, not NUL-terminated (may be 0 bytes) */
  size_t text_len;
  const int32_t* tokens;
  size_t n_tokens;
  const float* logprobs;       /* n_tokens values when params.logprobs, else NULL */
  const int32_t* top_tokens;   /* n_tokens * n_top ids (token by token, most probable first), or NULL */
  const float* top_logprobs;   /* and their log-probabilities */
  int n_top;
} rwkvl_piece;
/* Called for every piece (the pointers are valid during the call). Non-zero stops the generation. */
typedef int (*rwkvl_piece_fn)(void* user, const rwkvl_piece* piece);

typedef struct {
  rwkvl_finish_reason finish;
  size_t prompt_tokens;   /* tokens of the prompt */
  size_t cached_tokens;   /* of those, resumed from the cache */
  int64_t generated;      /* tokens sampled (the end-of-text token included) */
  double prompt_seconds;  /* from the call to the prompt's logits */
  double first_token_seconds; /* from the call to the first sampled token */
  double generation_seconds;  /* from the prompt's logits to the end */
} rwkvl_generate_result;

/* max_tokens 128, the sampler's defaults, stop_at_eos 1, feed_last 1, everything else 0/NULL. Never fails. */
rwkvl_generate_params rwkvl_generate_default_params(void);
/* Generates from prompt[0..n) (n >= 1) with the session, updating `state` (see PREFIX STATES for a cache).
   fn may be NULL. *out (may be NULL) gets the counts and times. The tokenizer decodes the output; ids past
   its vocabulary are never sampled. Errors: INVALID_ARGUMENT (NULL session, state, tokenizer or prompt;
   n == 0; a token out of range; a state of another model shape; an empty stop sequence; sampler values as
   rwkvl_sampler_new; top_logprobs outside 0..20; a negative deadline or max_tokens), and the errors of
   rwkvl_eval (then the state is partly updated). */
rwkvl_status rwkvl_generate(rwkvl_session* s, rwkvl_state* state, const rwkvl_tokenizer* tok, const int32_t* prompt,
                            size_t n, const rwkvl_generate_params* params, rwkvl_piece_fn fn, void* user,
                            rwkvl_generate_result* out);

/* CHAT. The RWKV World chat format: "System: ...\n\n" (optional, first), "User: ...\n\n", "Assistant: ...\n\n",
   then "Assistant:" for the reply, which ends at "\n\n" (generate with the stop sequence "\n\n" and ban_eos).
   Each message's text is trimmed, "\r\n" becomes "\n" and any run of line breaks one "\n" (so "\n\n" only
   separates messages); each message is tokenized on its own, so a conversation's tokens extend those of
   every earlier part of it. */
typedef enum { RWKVL_ROLE_SYSTEM = 0, RWKVL_ROLE_USER = 1, RWKVL_ROLE_ASSISTANT = 2 } rwkvl_chat_role;
typedef struct {
  rwkvl_chat_role role;
  const char* content; /* NUL-terminated UTF-8 */
} rwkvl_chat_message;
/* "system", "user", "assistant"; parse with rwkvl_chat_role_from_string (NAMES rules below). */
rwkvl_status rwkvl_chat_role_from_string(const char* s, rwkvl_chat_role* out);
const char* rwkvl_chat_role_name(rwkvl_chat_role r);
/* The tokens of n messages (+ "Assistant:" when add_generation_prompt) into out (cap/n_out protocol as
   rwkvl_tokenize), and where each message ends into boundaries (n values; may be NULL). Errors:
   INVALID_ARGUMENT (NULL tok or n_out, NULL messages with n > 0, a NULL content, an unknown role, no
   messages and no generation prompt, buffer too small). */
rwkvl_status rwkvl_chat_tokenize(const rwkvl_tokenizer* tok, const rwkvl_chat_message* messages, size_t n,
                                 int add_generation_prompt, int32_t* out, size_t cap, size_t* n_out, size_t* boundaries);

/* ---------------------------------------------------------------- the HTTP server (API 1.5) */

/* SERVER. An OpenAI-compatible HTTP server (docs/SERVER.md): POST /v1/completions, /v1/chat/completions
   (streamed as server-sent events with "stream": true), GET /v1/models, /health (503 while the model loads),
   /metrics (Prometheus text), POST /tokenize, /detokenize. `parallel` sessions share one loaded model; a
   request waits for a free one, and gets 429 with Retry-After when `queue` requests already wait. Prompts
   resume from a shared prefix-state cache (message ends and every cache_every tokens are stored). It listens
   at once and loads the model on a thread of its own. */
typedef struct rwkvl_server rwkvl_server;
typedef struct {
  const char* model_path;           /* required */
  rwkvl_model_params model;
  const char* tokenizer_path;       /* NULL: found as rwkvl_tokenizer_for_model finds it */
  const char* model_alias;          /* the model's id in responses (NULL: the file name) */
  rwkvl_session_params session;     /* every slot's session; with a budget the whole server plans within it */
  const char* host;                 /* default "127.0.0.1" */
  int port;                         /* 0: any free port (rwkvl_server_port tells which) */
  int parallel;                     /* slots (default 1) */
  int queue;                        /* requests that may wait for a slot (default 64) */
  int http_threads;                 /* connection threads (0: the larger of 256 and parallel + queue + 8) */
  uint64_t state_cache_bytes;       /* prefix-state cache (default 64 MiB; 0: none) */
  size_t cache_every;               /* also cache every this many prompt tokens (default 512; 0: none) */
  uint64_t max_body_bytes;          /* larger requests get 413 (default 8 MiB) */
  int64_t max_tokens_cap;           /* max_tokens above this are cut to it (default 4096) */
  int64_t default_max_tokens;       /* when a request gives none (default 256) */
  size_t max_prompt_tokens;         /* longer prompts get 400 (default 32768) */
  double deadline_seconds;          /* per request, queueing included (default 300; 0: none) */
  double idle_timeout_seconds;      /* a connection silent this long is closed (default 5) */
  const char* api_key;              /* non-NULL, non-empty: every request but /health needs "Authorization: Bearer KEY" */
} rwkvl_server_params;
/* The defaults above (threads 0 = one per core). Never fails. */
rwkvl_server_params rwkvl_server_default_params(void);
/* Binds host:port, starts serving and starts loading the model. On success *out is a new server the caller
   frees with rwkvl_server_free; on failure *out is NULL. Errors: INVALID_ARGUMENT (NULL, values out of
   range), IO (the address cannot be bound). A model that fails to load is reported by
   rwkvl_server_wait_ready and /health. */
rwkvl_status rwkvl_server_start(const rwkvl_server_params* params, rwkvl_server** out);
/* The bound port (0 for NULL). */
int rwkvl_server_port(const rwkvl_server* s);
/* Waits until the model is loaded and the slots are built: OK, or the load's error (status and message). */
rwkvl_status rwkvl_server_wait_ready(rwkvl_server* s);
/* Stops accepting connections; queued requests get 503, running ones finish (at most their deadline) or,
   after grace_seconds, end with an error. Returns at once; any thread (not from a signal handler). */
void rwkvl_server_stop(rwkvl_server* s, double grace_seconds);
/* Waits until the server has stopped (after rwkvl_server_stop). */
void rwkvl_server_wait(rwkvl_server* s);
/* Stops (grace 0) if running, waits and frees. NULL is a no-op. */
void rwkvl_server_free(rwkvl_server* s);

/* ---------------------------------------------------------------- enums by name (API 1.2) */

/* NAMES. Every C enum of this header has one spelling per value, the one the command line uses:
     rwkvl_dtype           "keep", "f32", "f16", "bf16", "i8", "q4", "q5_1" (also "int8", "int4"; "" = keep)
     rwkvl_ffn_mode        "auto", "dense", "exact", "predict"
     rwkvl_head_mode       "auto", "full", "cluster"
     rwkvl_lowrank_method  "none", "svd", "asvd" ("" = none)
     rwkvl_quant           "none", "int8", "int4" ("" = none)
     rwkvl_head_prior      "calib", "uniform"
     rwkvl_cluster_source  "head", "emb"
   rwkvl_*_from_string parses a name (case-sensitive) into *out; *out is unchanged on failure. Errors:
   INVALID_ARGUMENT (NULL s or out; an unknown name: the message quotes it and lists the known ones).
   rwkvl_*_name returns the name of a value (a static string, valid until the process ends; "unknown" for a
   value outside the enum) and never fails; rwkvl_X_from_string(rwkvl_X_name(v)) gives back v for every value.
   All of them may be called from any thread, before any other call. */
rwkvl_status rwkvl_dtype_from_string(const char* s, rwkvl_dtype* out);
rwkvl_status rwkvl_ffn_mode_from_string(const char* s, rwkvl_ffn_mode* out);
rwkvl_status rwkvl_head_mode_from_string(const char* s, rwkvl_head_mode* out);
const char* rwkvl_dtype_name(rwkvl_dtype d);
const char* rwkvl_ffn_mode_name(rwkvl_ffn_mode m);
const char* rwkvl_head_mode_name(rwkvl_head_mode m);
const char* rwkvl_lowrank_method_name(rwkvl_lowrank_method m);
const char* rwkvl_quant_name(rwkvl_quant q);
const char* rwkvl_head_prior_name(rwkvl_head_prior p);
const char* rwkvl_cluster_source_name(rwkvl_cluster_source s);

#ifdef __cplusplus
}
#endif

#endif /* RWKV_LITE_H */
