/*
 * compress_and_eval: the whole compression recipe of the paper through the C API alone (C11, rwkv_lite.h).
 *
 *   compress_and_eval MODEL CALIB_TEXT TEST_TEXT LAMBADA_JSONL OUT [CALIB_TOKENS [MAX_TOKENS [LAMBADA_MAX [THREADS]]]]
 *
 * 1. compresses MODEL with activation-aware low-rank factors (asvd, rank 1/4 of the time-mix projections),
 *    int8 quantisation, the sparse channel-mix with activation predictors and a 200-cluster head, calibrated on
 *    the first CALIB_TOKENS tokens (default 16384) of CALIB_TEXT, and writes OUT: the same bytes as
 *      rwkv-lite compress -m MODEL -o OUT --lowrank asvd --rank-frac 0.25 --quant int8 --sparse-ffn \
 *        --cluster-head 200 --calib CALIB_TEXT [--calib-tokens CALIB_TOKENS]
 * 2. loads OUT and evaluates perplexity and bits per byte on the first MAX_TOKENS tokens of TEST_TEXT (0 = all,
 *    the default) and LAMBADA accuracy and perplexity on the first LAMBADA_MAX passages (0 = all), with THREADS
 *    threads (0 = one per core): the figures of
 *      rwkv-lite eval -m OUT --text TEST_TEXT --lambada LAMBADA_JSONL [--max-tokens N] [--lambada-max N] [-t N]
 * Prints the figures as "name value" lines on stdout (doubles with 17 significant digits); progress on stderr.
 * Exit status 0 on success, 1 with the library's message on stderr on failure, 2 on bad arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rwkv_lite.h"

/* Reports a failed call with the library's message; returns 0 so callers can write `if (!ok(...)) goto done`. */
static int ok(rwkvl_status st, const char* what) {
  if (st == RWKVL_OK) return 1;
  fprintf(stderr, "compress_and_eval: %s: %s\n", what, *rwkvl_last_error() ? rwkvl_last_error() : rwkvl_status_name(st));
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The whole file in a malloc'd buffer (*len bytes); NULL (with a message) on failure. */
static char* read_all(const char* path, size_t* len) {
  FILE* f = fopen(path, "rb");
  char* buf = NULL;
  size_t cap = 0, n = 0, got;
  int failed = 0;
  if (!f) {
    fprintf(stderr, "compress_and_eval: cannot open '%s'\n", path);
    return NULL;
  }
  do {
    if (n == cap) {
      char* grown;
      cap = cap ? cap * 2 : (size_t)1 << 16;
      grown = (char*)realloc(buf, cap);
      if (!grown) {
        failed = 1;
        break;
      }
      buf = grown;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  } while (got > 0);
  if (failed || ferror(f)) {
    fprintf(stderr, "compress_and_eval: cannot read '%s'\n", path);
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* The file name without its folders: what `rwkv-lite compress` records as the calibration's name. */
static const char* base_name(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* One line per compression stage as it starts; `user` holds the last stage's name (64 bytes). */
static void on_stage(const char* stage, int64_t done, int64_t total, void* user) {
  char* last = (char*)user;
  (void)done;
  if (strncmp(last, stage, 63) == 0) return;
  strncpy(last, stage, 63);
  last[63] = '\0';
  fprintf(stderr, "compress_and_eval: %s (%lld steps)\n", stage, (long long)total);
}

/* Step 1: the recipe, the calibration text, rwkvl_compress. */
static int compress(const char* model_path, const char* calib_path, const char* out_path, size_t calib_tokens,
                    int threads) {
  rwkvl_model* model = NULL;
  rwkvl_tokenizer* tok = NULL;
  char* text = NULL;
  size_t text_len = 0;
  rwkvl_compress_recipe recipe = rwkvl_compress_default_recipe();
  rwkvl_calibration calib;
  rwkvl_compress_report report;
  char stage[64] = "";
  int good = 0;
  memset(&calib, 0, sizeof calib);
  memset(&report, 0, sizeof report);

  recipe.lowrank = RWKVL_LOWRANK_ASVD; /* activation-aware SVD */
  recipe.rank_frac = 0.25;             /* rank = 1/4 of min(rows, cols), default targets */
  recipe.quant = RWKVL_QUANT_INT8;     /* every block projection and the factors */
  recipe.sparse_ffn = 1;               /* neuron-bundled channel-mix + activation predictors */
  recipe.cluster_head = 200;           /* the paper's K */
  recipe.n_threads = threads;          /* the output does not depend on it */

  if (!ok(rwkvl_check_output_path(out_path), out_path)) return 0;
  if (!ok(rwkvl_model_load(model_path, NULL, &model), "loading the model")) goto done;
  if (!(text = read_all(calib_path, &text_len))) goto done;
  if (!ok(rwkvl_tokenizer_for_model(model, model_path, NULL, &tok), "the model's tokenizer")) goto done;
  calib.text = text;
  calib.text_len = text_len;
  calib.tokenizer = tok;
  calib.max_tokens = calib_tokens;
  calib.name = base_name(calib_path);
  if (!ok(rwkvl_compress(model, &recipe, &calib, out_path, on_stage, stage, &report), "compressing")) goto done;
  printf("weight_bytes_before %llu\nweight_bytes_after %llu\nfile_bytes %llu\ncalib_tokens %llu\n",
         (unsigned long long)report.weight_bytes_before, (unsigned long long)report.weight_bytes_after,
         (unsigned long long)report.out_file_bytes, (unsigned long long)report.calib_tokens);
  printf("matrices_factored %d\nffn_predictor_bytes %llu\ncluster_k %d\ncompress_seconds %.2f\n",
         report.matrices_factored, (unsigned long long)report.ffn_predictor_bytes, report.cluster_k,
         report.seconds_total);
  fflush(stdout);
  good = 1;
done:
  rwkvl_compress_report_free(&report);
  rwkvl_tokenizer_free(tok);
  free(text);
  rwkvl_model_free(model);
  return good;
}

/* Step 2: perplexity and LAMBADA of the written file, with the settings `rwkv-lite eval` uses by default. */
static int evaluate(const char* path, const char* text_path, const char* lambada_path, int64_t max_tokens,
                    int64_t lambada_max, int threads) {
  rwkvl_model* model = NULL;
  rwkvl_tokenizer* tok = NULL;
  rwkvl_text_tokens* text = NULL;
  rwkvl_lambada* lambada = NULL;
  rwkvl_session* session = NULL;
  rwkvl_session_params sp = rwkvl_session_default_params();
  rwkvl_text_result t;
  rwkvl_lambada_result l;
  int good = 0;
  sp.n_threads = threads; /* FFN and head AUTO: the file's predictors and cluster head are used */

  /* Inputs first, so that a bad file fails before the model is loaded. */
  if (!ok(rwkvl_lambada_open(lambada_path, lambada_max, &lambada), lambada_path)) goto done;
  if (!ok(rwkvl_model_load(path, NULL, &model), "loading the compressed model")) goto done;
  if (!ok(rwkvl_tokenizer_for_model(model, path, NULL, &tok), "the model's tokenizer")) goto done;
  if (!ok(rwkvl_text_tokens_open(tok, text_path, max_tokens, &text), text_path)) goto done;
  if (!ok(rwkvl_lambada_tokenize(lambada, tok), "tokenizing LAMBADA")) goto done;
  if (!ok(rwkvl_session_new(model, &sp, &session), "the session")) goto done;
  if (!ok(rwkvl_eval_text(session, text, NULL, &t), "perplexity")) goto done;
  printf("ppl %.17g\nbpb %.17g\ntokens %llu\npredicted %llu\nppl_seconds %.2f\n", t.ppl, t.bpb,
         (unsigned long long)t.tokens, (unsigned long long)t.predicted, t.seconds);
  if (!ok(rwkvl_eval_lambada(session, lambada, NULL, NULL, &l), "LAMBADA")) goto done;
  printf("lambada_acc %.17g\nlambada_ppl %.17g\nlambada_n %llu\nlambada_correct %llu\nlambada_seconds %.2f\n", l.acc,
         l.ppl, (unsigned long long)l.n, (unsigned long long)l.correct, l.seconds);
  good = 1;
done:
  rwkvl_session_free(session);
  rwkvl_text_tokens_free(text);
  rwkvl_lambada_free(lambada);
  rwkvl_tokenizer_free(tok);
  rwkvl_model_free(model);
  return good;
}

/* A non-negative integer argument, or -1. */
static long long count_arg(const char* s) {
  char* end = NULL;
  const long long v = strtoll(s, &end, 10);
  return *s && *end == '\0' && v >= 0 ? v : -1;
}

int main(int argc, char** argv) {
  long long opt[4] = {16384, 0, 0, 0}; /* CALIB_TOKENS, MAX_TOKENS, LAMBADA_MAX, THREADS */
  double t0;
  int i;
  if (argc < 6 || argc > 10) {
    fprintf(stderr,
            "usage: %s MODEL CALIB_TEXT TEST_TEXT LAMBADA_JSONL OUT [CALIB_TOKENS [MAX_TOKENS [LAMBADA_MAX "
            "[THREADS]]]]\n",
            argv[0]);
    return 2;
  }
  for (i = 6; i < argc; ++i) {
    opt[i - 6] = count_arg(argv[i]);
    if (opt[i - 6] < 0 || (i - 6 == 3 && opt[3] > 1024)) {
      fprintf(stderr, "compress_and_eval: bad count '%s'\n", argv[i]);
      return 2;
    }
  }
  if (rwkvl_api_version() / 1000 != RWKVL_API_VERSION_MAJOR || rwkvl_api_version() % 1000 < 2) {
    fprintf(stderr, "compress_and_eval: needs C API %d.2 or later, linked with %d.%d\n", RWKVL_API_VERSION_MAJOR,
            rwkvl_api_version() / 1000, rwkvl_api_version() % 1000);
    return 1;
  }
  rwkvl_install_sigbus_guard("compress_and_eval");
  t0 = now_seconds();
  if (!compress(argv[1], argv[2], argv[5], (size_t)opt[0], (int)opt[3])) return 1;
  if (!evaluate(argv[5], argv[3], argv[4], (int64_t)opt[1], (int64_t)opt[2], (int)opt[3])) return 1;
  printf("total_seconds %.2f\n", now_seconds() - t0);
  return 0;
}
