/*
 * Greedy text generation through the C API, in C11 with nothing but rwkv_lite.h.
 *
 *   generate MODEL PROMPT N [STATE_FILE [THREADS]]
 *
 * Loads MODEL (any supported file), finds its tokenizer, feeds PROMPT, then picks the most likely next
 * token N times and writes the generated text (raw token bytes, nothing else) to stdout: the same
 * bytes as `rwkv-lite generate -m MODEL -p PROMPT -n N --temp 0`. Then it checks the state files:
 * the state after the text is saved to STATE_FILE (default "generate-example.state" in the current
 * folder; removed at the end), restored into a new state, and the next token from the restored
 * state must equal the next token from the original one. Progress and the check go to stderr.
 * Exit status 0 on success, 1 on any error (with rwkvl_last_error()), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rwkv_lite.h"

/* Everything the program owns, freed in one place (every rwkvl_*_free accepts NULL). */
typedef struct {
  rwkvl_model* model;
  rwkvl_tokenizer* tok;
  rwkvl_context* ctx;
  rwkvl_sampler* sampler;
  rwkvl_state* state;
  rwkvl_state* restored;
  int32_t* prompt;
  float* logits;
  float* logits_restored;
  char* bytes;
  const char* state_written; /* the state file, once this run has written it (removed at the end) */
} resources;

static void release(resources* r) {
  free(r->bytes);
  free(r->logits_restored);
  free(r->logits);
  free(r->prompt);
  rwkvl_state_free(r->restored);
  rwkvl_state_free(r->state);
  rwkvl_sampler_free(r->sampler);
  rwkvl_context_free(r->ctx);
  rwkvl_tokenizer_free(r->tok);
  rwkvl_model_free(r->model);
}

/* Reports a failed call with the library's message; returns 0 so callers can write `return fail(...)`. */
static int fail(const char* what, rwkvl_status s) {
  fprintf(stderr, "generate: %s failed: %s: %s\n", what, rwkvl_status_name(s), rwkvl_last_error());
  return 0;
}

#define CHECK(call)                            \
  do {                                         \
    const rwkvl_status check_status_ = (call); \
    if (check_status_ != RWKVL_OK) {           \
      fail(#call, check_status_);              \
      return 0;                                \
    }                                          \
  } while (0)

/* The most likely next token (the sampler at temperature 0 is greedy; logits are modified). */
static int next_token(rwkvl_sampler* sampler, float* logits, size_t n_vocab, int32_t* token) {
  *token = rwkvl_sampler_sample(sampler, logits, n_vocab);
  if (*token < 0) {
    fprintf(stderr, "generate: rwkvl_sampler_sample failed: %s\n", rwkvl_last_error());
    return 0;
  }
  rwkvl_sampler_accept(sampler, *token);
  return 1;
}

/* Writes one token's bytes to stdout; r->bytes (cap_bytes long) grows when a token needs more. */
static int print_token(resources* r, size_t* cap_bytes, int32_t token) {
  size_t n = 0;
  rwkvl_status s = rwkvl_token_bytes(r->tok, token, r->bytes, *cap_bytes, &n);
  if (s == RWKVL_ERR_INVALID_ARGUMENT && n > *cap_bytes) { /* the cap/n_out protocol: ask again */
    char* bigger = realloc(r->bytes, n);
    if (!bigger) {
      fprintf(stderr, "generate: out of memory\n");
      return 0;
    }
    r->bytes = bigger;
    *cap_bytes = n;
    s = rwkvl_token_bytes(r->tok, token, r->bytes, *cap_bytes, &n);
  }
  if (s != RWKVL_OK) return fail("rwkvl_token_bytes", s);
  if (n > 0 && fwrite(r->bytes, 1, n, stdout) != n) {
    fprintf(stderr, "generate: cannot write to stdout\n");
    return 0;
  }
  return 1;
}

static int run(resources* r, const char* model_path, const char* prompt, long n_predict, const char* state_path,
               int n_threads) {
  /* A library of another major version may differ in any way: refuse it. */
  if (rwkvl_api_version() / 1000 != RWKVL_API_VERSION_MAJOR) {
    fprintf(stderr, "generate: built for C API %d.x, linked with %d.%d\n", RWKVL_API_VERSION_MAJOR,
            rwkvl_api_version() / 1000, rwkvl_api_version() % 1000);
    return 0;
  }

  CHECK(rwkvl_model_load(model_path, NULL, &r->model));
  rwkvl_model_info info;
  CHECK(rwkvl_model_get_info(r->model, &info));
  const size_t n_vocab = (size_t)info.n_vocab;
  /* NULL tokenizer path: picked by vocabulary size and searched for beside the model and in the usual places. */
  CHECK(rwkvl_tokenizer_for_model(r->model, model_path, NULL, &r->tok));
  fprintf(stderr, "generate: %s model (%s, %d layers, width %d), %s tokenizer, C API %d\n", info.arch_name,
          info.file_kind, info.n_layer, info.n_embd, rwkvl_tokenizer_name(r->tok), rwkvl_api_version());

  /* Tokenize with the cap/n_out protocol: a first guess, then exactly the size the library asked for. */
  const size_t len = strlen(prompt);
  size_t cap = len + 1, n_prompt = 0;
  r->prompt = malloc(cap * sizeof *r->prompt);
  if (!r->prompt) return fail("malloc", RWKVL_ERR_OUT_OF_MEMORY);
  rwkvl_status s = rwkvl_tokenize(r->tok, prompt, len, r->prompt, cap, &n_prompt);
  if (s == RWKVL_ERR_INVALID_ARGUMENT && n_prompt > cap) {
    int32_t* bigger = realloc(r->prompt, n_prompt * sizeof *r->prompt);
    if (!bigger) return fail("realloc", RWKVL_ERR_OUT_OF_MEMORY);
    r->prompt = bigger;
    cap = n_prompt;
    s = rwkvl_tokenize(r->tok, prompt, len, r->prompt, cap, &n_prompt);
  }
  if (s != RWKVL_OK) return fail("rwkvl_tokenize", s);
  if (n_prompt == 0) {
    fprintf(stderr, "generate: the prompt has no tokens\n");
    return 0;
  }

  CHECK(rwkvl_context_new(r->model, n_threads, &r->ctx));
  CHECK(rwkvl_state_new(r->model, &r->state));
  rwkvl_sampler_params sp = rwkvl_sampler_default_params();
  sp.temperature = 0.0f; /* greedy */
  CHECK(rwkvl_sampler_new(&sp, &r->sampler));
  r->logits = malloc(n_vocab * sizeof *r->logits);
  r->logits_restored = malloc(n_vocab * sizeof *r->logits_restored);
  size_t cap_bytes = 64;
  r->bytes = malloc(cap_bytes);
  if (!r->logits || !r->logits_restored || !r->bytes) return fail("malloc", RWKVL_ERR_OUT_OF_MEMORY);

  /* The prompt in sequence mode (chunk 0: the default), then one token at a time (RNN mode). */
  CHECK(rwkvl_eval(r->ctx, r->state, r->prompt, n_prompt, 0, r->logits));
  int32_t token = -1;
  for (long i = 0; i < n_predict; ++i) {
    if (!next_token(r->sampler, r->logits, n_vocab, &token)) return 0;
    if (!print_token(r, &cap_bytes, token)) return 0;
    if (i + 1 < n_predict) CHECK(rwkvl_eval(r->ctx, r->state, &token, 1, 1, r->logits));
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, "generate: cannot write to stdout\n");
    return 0;
  }

  /* State files: save the state after the whole text except its last token, restore it into a new
     state, feed that token to both and compare the next token (and the logits, which the same context
     computes the same way for equal states). */
  const int32_t last = n_predict > 0 ? token : r->prompt[n_prompt - 1];
  if (n_predict == 0) { /* the prompt's last token is already in the state: start again without it */
    CHECK(rwkvl_state_reset(r->state));
    if (n_prompt > 1) CHECK(rwkvl_eval(r->ctx, r->state, r->prompt, n_prompt - 1, 0, NULL));
  }
  CHECK(rwkvl_state_save(r->state, state_path));
  r->state_written = state_path;
  CHECK(rwkvl_state_new(r->model, &r->restored));
  CHECK(rwkvl_state_load(r->restored, state_path));
  CHECK(rwkvl_eval(r->ctx, r->state, &last, 1, 1, r->logits));
  CHECK(rwkvl_eval(r->ctx, r->restored, &last, 1, 1, r->logits_restored));
  const int same_logits = memcmp(r->logits, r->logits_restored, n_vocab * sizeof *r->logits) == 0;
  int32_t a = -1, b = -1;
  if (!next_token(r->sampler, r->logits, n_vocab, &a)) return 0;
  if (!next_token(r->sampler, r->logits_restored, n_vocab, &b)) return 0;
  if (a != b || !same_logits) {
    fprintf(stderr, "generate: the restored state differs: next token %d vs %d, logits %s\n", (int)a, (int)b,
            same_logits ? "equal" : "differ");
    return 0;
  }
  fprintf(stderr, "\ngenerate: %zu prompt tokens, %ld generated; state saved and restored: next token %d both times\n",
          n_prompt, n_predict, (int)a);
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: %s MODEL PROMPT N [STATE_FILE [THREADS]]\n", argv[0]);
    return 2;
  }
  char* end = NULL;
  const long n_predict = strtol(argv[3], &end, 10);
  if (*argv[3] == '\0' || *end != '\0' || n_predict < 0 || n_predict > 1000000) {
    fprintf(stderr, "generate: N must be a number of tokens in [0, 1000000], not '%s'\n", argv[3]);
    return 2;
  }
  const char* state_path = argc > 4 ? argv[4] : "generate-example.state";
  long n_threads = 0; /* 0: one per core, as rwkv-lite generate */
  if (argc > 5) {
    n_threads = strtol(argv[5], &end, 10);
    if (*argv[5] == '\0' || *end != '\0' || n_threads < 0 || n_threads > 1024) {
      fprintf(stderr, "generate: THREADS must be in [0, 1024], not '%s'\n", argv[5]);
      return 2;
    }
  }

  rwkvl_install_sigbus_guard("generate");
  resources r;
  memset(&r, 0, sizeof r);
  const int ok = run(&r, argv[1], argv[2], n_predict, state_path, (int)n_threads);
  if (r.state_written) remove(r.state_written);
  release(&r);
  return ok ? 0 : 1;
}
