// rwkv.cpp's side of bench/peers/side_by_side.sh: times, scores and quantizes through rwkv.cpp's public C API
// (rwkv.h), the way `rwkv-lite bench` and `rwkv-lite perplexity` do for rwkv-lite. Prints one JSON object.
//
//   rwkvcpp_peer bench MODEL THREADS GEN PROMPT CHUNK SEED
//       generation: GEN tokens, one rwkv_eval each with logits, state carried (after 8 warm-up tokens);
//       prompt: PROMPT tokens through rwkv_eval_sequence_in_chunks (CHUNK tokens per graph; one warm-up chunk
//       builds the graph first). Token ids are seeded pseudo-random ids below the vocabulary size.
//   rwkvcpp_peer ppl MODEL TOKENS_FILE MAX THREADS
//       perplexity over the first MAX ids of a comma-separated id file (`rwkv-lite tokenize` prints one):
//       exp(mean NLL of every token after the first), one rwkv_eval per token from a fresh state.
//   rwkvcpp_peer quantize IN OUT FORMAT      rwkv_quantize_model_file (FORMAT: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
//   rwkvcpp_peer logits MODEL TOKENS         logits after the comma-separated ids TOKENS (one rwkv_eval each)
//
// Build: cc -O2 rwkvcpp_peer.c -I RWKVCPP_SRC -L RWKVCPP_BUILD -lrwkv -lm (build-rwkvcpp.sh does this).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "rwkv.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double peak_rss_mib(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_maxrss / 1024.0;  // Linux: KiB
}

static long arg_long(const char* s, const char* what, long lo, long hi) {
  char* end = NULL;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) {
    fprintf(stderr, "rwkvcpp_peer: %s must be an integer in [%ld, %ld], got '%s'\n", what, lo, hi, s);
    exit(2);
  }
  return v;
}

static struct rwkv_context* load(const char* path, long threads) {
  struct rwkv_context* ctx = rwkv_init_from_file(path, (uint32_t)threads, 0);
  if (!ctx) {
    fprintf(stderr, "rwkvcpp_peer: rwkv.cpp could not load %s\n", path);
    exit(1);
  }
  return ctx;
}

static void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "rwkvcpp_peer: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

static void eval_or_die(struct rwkv_context* ctx, uint32_t tok, float* st, float* lg) {
  if (!rwkv_eval(ctx, tok, st, st, lg)) {
    fprintf(stderr, "rwkvcpp_peer: rwkv_eval failed (error flags %d)\n", (int)rwkv_get_last_error(ctx));
    exit(1);
  }
}

static int cmd_bench(int argc, char** argv) {
  if (argc != 8) return -1;
  const long threads = arg_long(argv[3], "THREADS", 1, 1024), gen = arg_long(argv[4], "GEN", 1, 1 << 20);
  const long prompt = arg_long(argv[5], "PROMPT", 1, 1 << 20), chunk = arg_long(argv[6], "CHUNK", 1, 1 << 16);
  uint64_t x = (uint64_t)arg_long(argv[7], "SEED", 0, 0x7fffffffL);
  struct rwkv_context* ctx = load(argv[2], threads);
  const size_t nv = rwkv_get_n_vocab(ctx);
  float* st = xmalloc(rwkv_get_state_len(ctx) * sizeof(float));
  float* lg = xmalloc(rwkv_get_logits_len(ctx) * sizeof(float));
  const long n = prompt > gen + 8 ? prompt : gen + 8;
  uint32_t* toks = xmalloc(sizeof(uint32_t) * (size_t)n);
  for (long i = 0; i < n; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    toks[i] = (uint32_t)((x >> 33) % nv);
  }
  rwkv_init_state(ctx, st);
  for (int i = 0; i < 8; i++) eval_or_die(ctx, toks[i], st, lg);
  double t0 = now();
  for (long i = 0; i < gen; i++) eval_or_die(ctx, toks[8 + i], st, lg);
  const double tg = now() - t0;
  const long warm = chunk < prompt ? chunk : prompt;
  rwkv_init_state(ctx, st);
  if (!rwkv_eval_sequence_in_chunks(ctx, toks, (size_t)warm, (size_t)chunk, NULL, st, lg)) return 1;
  rwkv_init_state(ctx, st);
  t0 = now();
  if (!rwkv_eval_sequence_in_chunks(ctx, toks, (size_t)prompt, (size_t)chunk, NULL, st, lg)) return 1;
  const double tp = now() - t0;
  printf("{\"gen_tok_per_s\": %.3f, \"prompt_tok_per_s\": %.3f, \"gen_tokens\": %ld, \"prompt_tokens\": %ld, "
         "\"chunk\": %ld, \"threads\": %ld, \"peak_rss_mib\": %.2f, \"system\": \"%s\"}\n",
         (double)gen / tg, (double)prompt / tp, gen, prompt, chunk, threads, peak_rss_mib(),
         rwkv_get_system_info_string());
  rwkv_free(ctx);
  return 0;
}

// Reads up to `max` comma/space/newline-separated ids; exits on anything else.
static uint32_t* read_ids(const char* path, long max, long* count) {
  FILE* f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "rwkvcpp_peer: cannot open %s\n", path);
    exit(1);
  }
  uint32_t* t = xmalloc(sizeof(uint32_t) * (size_t)max);
  long n = 0;
  unsigned long v;
  while (n < max && fscanf(f, "%lu", &v) == 1) {
    if (v > 0xffffffffUL) break;
    t[n++] = (uint32_t)v;
    int c = fgetc(f);
    while (c == ' ' || c == '\n' || c == '\r') c = fgetc(f);
    if (c == EOF) break;
    if (c != ',') {
      fprintf(stderr, "rwkvcpp_peer: %s: unexpected character '%c' after id %ld\n", path, c, n);
      exit(1);
    }
  }
  fclose(f);
  *count = n;
  return t;
}

static int cmd_ppl(int argc, char** argv) {
  if (argc != 6) return -1;
  const long max = arg_long(argv[4], "MAX", 2, 1L << 26), threads = arg_long(argv[5], "THREADS", 1, 1024);
  long n = 0;
  uint32_t* t = read_ids(argv[3], max, &n);
  if (n < 2) {
    fprintf(stderr, "rwkvcpp_peer: %s holds fewer than 2 ids\n", argv[3]);
    return 1;
  }
  struct rwkv_context* ctx = load(argv[2], threads);
  const size_t nl = rwkv_get_logits_len(ctx), nv = rwkv_get_n_vocab(ctx);
  float* st = xmalloc(rwkv_get_state_len(ctx) * sizeof(float));
  float* lg = xmalloc(nl * sizeof(float));
  rwkv_init_state(ctx, st);
  double nll = 0;
  for (long i = 0; i + 1 < n; i++) {
    if (t[i] >= nv || t[i + 1] >= nv) {
      fprintf(stderr, "rwkvcpp_peer: id %u at %ld is outside the vocabulary (%zu)\n", t[i] >= nv ? t[i] : t[i + 1], i, nv);
      return 1;
    }
    eval_or_die(ctx, t[i], st, lg);
    double m = -INFINITY, s = 0;
    for (size_t j = 0; j < nl; j++) m = lg[j] > m ? lg[j] : m;
    for (size_t j = 0; j < nl; j++) s += exp(lg[j] - m);
    nll += (m + log(s)) - lg[t[i + 1]];
  }
  printf("{\"ppl\": %.4f, \"tokens\": %ld}\n", exp(nll / (double)(n - 1)), n - 1);
  rwkv_free(ctx);
  return 0;
}

static int cmd_quantize(int argc, char** argv) {
  if (argc != 5) return -1;
  if (!rwkv_quantize_model_file(argv[2], argv[3], argv[4])) {
    fprintf(stderr, "rwkvcpp_peer: rwkv_quantize_model_file(%s -> %s, %s) failed\n", argv[2], argv[3], argv[4]);
    return 1;
  }
  printf("{\"quantized\": \"%s\", \"format\": \"%s\"}\n", argv[3], argv[4]);
  return 0;
}

static int cmd_logits(int argc, char** argv) {
  if (argc != 4) return -1;
  struct rwkv_context* ctx = load(argv[2], 1);
  const size_t nl = rwkv_get_logits_len(ctx), nv = rwkv_get_n_vocab(ctx);
  float* st = xmalloc(rwkv_get_state_len(ctx) * sizeof(float));
  float* lg = xmalloc(nl * sizeof(float));
  rwkv_init_state(ctx, st);
  char* s = argv[3];
  while (*s) {
    char* end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || v >= nv || (*end && *end != ',')) {
      fprintf(stderr, "rwkvcpp_peer: bad token list at '%s'\n", s);
      return 2;
    }
    eval_or_die(ctx, (uint32_t)v, st, lg);
    s = *end == ',' ? end + 1 : end;
  }
  printf("{\"logits\": [");
  for (size_t j = 0; j < nl; j++) printf("%s%.9g", j ? ", " : "", lg[j]);
  printf("]}\n");
  rwkv_free(ctx);
  return 0;
}

int main(int argc, char** argv) {
  int rc = -1;
  if (argc >= 2 && !strcmp(argv[1], "bench")) rc = cmd_bench(argc, argv);
  else if (argc >= 2 && !strcmp(argv[1], "ppl")) rc = cmd_ppl(argc, argv);
  else if (argc >= 2 && !strcmp(argv[1], "quantize")) rc = cmd_quantize(argc, argv);
  else if (argc >= 2 && !strcmp(argv[1], "logits")) rc = cmd_logits(argc, argv);
  if (rc == -1) {
    fprintf(stderr,
            "usage: rwkvcpp_peer bench MODEL THREADS GEN PROMPT CHUNK SEED\n"
            "       rwkvcpp_peer ppl MODEL TOKENS_FILE MAX THREADS\n"
            "       rwkvcpp_peer quantize IN OUT Q4_0|Q4_1|Q5_0|Q5_1|Q8_0\n"
            "       rwkvcpp_peer logits MODEL ID,ID,...\n");
    return 2;
  }
  return rc;
}
