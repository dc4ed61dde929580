// rwkv-lite compress: low-rank factorisation (svd / asvd), quantisation, the sparse channel-mix and the
// cluster head, written as a native file that every other command runs. The work is one library call
// (rwkvl_compress); this command maps the flags to the recipe and prints the report.
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>  // mallopt
#endif

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string err_str(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v.get<double>());
  return b;
}

// A dtype flag as the recipe's string: "keep" is NULL (the names are static strings of the library).
const char* recipe_dtype(const Args& args, const char* name) {
  const rwkvl_dtype d = dtype_flag(args, name);
  return d == RWKVL_DTYPE_KEEP ? nullptr : rwkvl_dtype_name(d);
}

// One progress line over the whole run: each stage's progress weighted by its share of the work in the plan
// (rwkvl_compress_plan_get), the stage at hand and an ETA for the rest of the run. Only on a terminal.
struct RunBar {
  double work[RWKVL_COMPRESS_STAGES] = {};
  double start = now_seconds(), last_draw = 0;
  bool enabled = isatty(STDERR_FILENO) == 1, drawn = false;

  explicit RunBar(const rwkvl_compress_plan& plan) {
    for (int i = 0; i < RWKVL_COMPRESS_STAGES; ++i) work[i] = plan.stage_work[i];
  }
  ~RunBar() { finish(); }
  // The plan stage of a progress stage and where the sub-stage lies within it (cluster head: clustering,
  // calibration, distillation take about 10 %, 75 % and 15 % of it).
  static int stage_of(const std::string& s, double* lo, double* hi) {
    *lo = 0;
    *hi = 1;
    if (s == "compress" || s == "prune") return RWKVL_COMPRESS_STAGE_LOWRANK_QUANT;
    if (s == "sparse-ffn") return RWKVL_COMPRESS_STAGE_SPARSE_FFN;
    if (s == "clustering") *hi = 0.10;
    if (s == "calibration") *lo = 0.10, *hi = 0.85;
    if (s == "distillation") *lo = 0.85;
    return RWKVL_COMPRESS_STAGE_CLUSTER_HEAD;
  }
  static const char* unit(const std::string& s) {
    if (s == "compress" || s == "prune") return "layers";
    if (s == "sparse-ffn") return "steps";
    if (s == "clustering") return "iterations";
    if (s == "distillation") return "epochs";
    return "token-layers";  // calibration
  }
  static void on(const char* s, int64_t done, int64_t total, void* user) {
    kill_for_tests();
    static_cast<RunBar*>(user)->update(s, done, total);
  }
  // Tests of --resume (tests/cli/compress_resume.cmake): RWKVL_TEST_KILL_AT_PROGRESS=N kills the process with
  // SIGKILL at the N-th progress report, as a crash or the OOM killer would.
  static void kill_for_tests() {
    static const long kill_at = [] {
      const char* e = std::getenv("RWKVL_TEST_KILL_AT_PROGRESS");
      return e ? std::atol(e) : 0L;
    }();
    static long calls = 0;
    if (kill_at > 0 && ++calls == kill_at) raise(SIGKILL);
  }
  void update(const std::string& s, int64_t done, int64_t total) {
    if (!enabled) return;
    const double t = now_seconds();
    if (t - last_draw < 0.2 && done < total) return;
    last_draw = t;
    double lo = 0, hi = 1;
    const int st = stage_of(s, &lo, &hi);
    double frac = 0;
    for (int i = 0; i < st; ++i) frac += work[i];
    const double in_stage = total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
    frac += work[st] * (lo + (hi - lo) * in_stage);
    const double elapsed = t - start;
    char eta[32] = "?";
    if (frac > 0.005) std::snprintf(eta, sizeof eta, "%.0f s", elapsed * (1 - frac) / frac);
    constexpr int kWidth = 24;
    char bar[kWidth + 1];
    for (int i = 0; i < kWidth; ++i) bar[i] = i < static_cast<int>(frac * kWidth) ? '#' : '.';
    bar[kWidth] = '\0';
    std::fprintf(stderr, "\r\033[Kcompress [%s] %3.0f%%  %s %lld/%lld %s  %.0f s, ETA %s", bar, frac * 100, s.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total), unit(s), elapsed, eta);
    std::fflush(stderr);
    drawn = true;
  }
  void finish() {
    if (!drawn) return;
    drawn = false;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
};

// The calibration tokens the run will use (the library tokenises the text again: its hash names the text).
uint64_t count_tokens(const rwkvl_tokenizer* tok, const std::string& text, size_t max_tokens) {
  std::vector<int32_t> ids(text.size() + 1);
  size_t n = 0;
  check(rwkvl_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n));
  return max_tokens > 0 ? std::min<uint64_t>(n, max_tokens) : n;
}

void print_plan(const rwkvl_compress_plan& p, const rwkvl_compress_options& o, uint64_t n_calib) {
  static const char* const names[RWKVL_COMPRESS_STAGES] = {"low-rank/quantisation", "sparse FFN", "cluster head", "save"};
  std::fprintf(stderr, "compress memory plan (%llu calibration tokens%s%s):\n", static_cast<unsigned long long>(n_calib),
               o.mem_budget ? ", budget " : "", o.mem_budget ? format_bytes(o.mem_budget).c_str() : "");
  for (int i = 0; i < RWKVL_COMPRESS_STAGES; ++i)
    if (p.stage_peak_bytes[i])
      std::fprintf(stderr, "  %-22s peak %10s  work %4.0f%%\n", names[i], format_bytes(p.stage_peak_bytes[i]).c_str(),
                   100 * p.stage_work[i]);
  std::fprintf(stderr, "  %-22s peak %10s  (base %s; predictor layers side by side: %d)\n", "whole run",
               format_bytes(p.peak_bytes).c_str(), format_bytes(p.base_bytes).c_str(), p.sparse_parallel_layers);
}

// The flags as a recipe (calibration and targets apart).
rwkvl_compress_recipe recipe_of(const Args& args) {
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  check(rwkvl_lowrank_method_from_string(args.str("lowrank").c_str(), &r.lowrank));
  r.rank_frac = args.number("rank-frac");
  r.rank = args.integer("rank");
  r.diag = args.on("diag");
  if (args.given("budget")) r.budget_bytes = parse_bytes(args, "budget");
  r.force = args.on("force");
  r.damp = args.number("damp");
  check(rwkvl_quant_from_string(args.str("quant").c_str(), &r.quant));
  r.quant_emb = args.on("quant-emb");
  r.quant_head = args.on("quant-head");
  r.dtype = recipe_dtype(args, "dtype");
  r.n_threads = static_cast<int>(args.integer("threads"));
  r.seed = static_cast<uint64_t>(args.integer("seed"));
  r.sparse_ffn = args.on("sparse-ffn");
  r.ffn_predictors = !args.on("no-predictor");
  r.ffn_dtype = recipe_dtype(args, "ffn-dtype");
  r.recall = args.number("recall");
  r.pred_hidden = static_cast<int>(args.integer("hidden"));
  r.pred_epochs = static_cast<int>(args.integer("epochs"));
  r.pred_holdout = args.number("holdout");
  r.pred_lr = args.number("lr");
  r.pred_int8 = dtype_flag(args, "pred-dtype") == RWKVL_DTYPE_I8;
  r.cluster_head = args.given("cluster-head") ? static_cast<int>(args.integer("cluster-head")) : 0;
  r.cluster_cap = static_cast<int>(args.integer("cluster-cap"));
  r.pca_dims = static_cast<int>(args.integer("pca-dims"));
  r.head_epochs = static_cast<int>(args.integer("head-epochs"));
  r.head_lr = args.number("head-lr");
  check(rwkvl_head_prior_from_string(args.str("head-prior").c_str(), &r.head_prior));
  r.prior_smoothing = args.number("prior-smoothing");
  check(rwkvl_cluster_source_from_string(args.str("cluster-source").c_str(), &r.cluster_source));
  return r;
}

rwkvl_prune_recipe prune_of(const Args& args) {
  rwkvl_prune_recipe p = rwkvl_prune_default_recipe();
  const std::string m = args.str("prune");
  if (!m.empty()) check(rwkvl_prune_method_from_string(m.c_str(), &p.method));
  const bool on = p.method != RWKVL_PRUNE_NONE;
  for (const char* f : {"sparsity", "pattern", "prune-targets", "prune-store", "dsnot-cycles", "dsnot-threshold",
                        "dsnot-var-power", "dsnot-any-sign"})
    if (!on && args.given(f)) args.fail(std::string("--") + f + " needs --prune magnitude|wanda|dsnot");
  for (const char* f : {"dsnot-cycles", "dsnot-threshold", "dsnot-var-power", "dsnot-any-sign"})
    if (on && p.method != RWKVL_PRUNE_DSNOT && args.given(f)) args.fail(std::string("--") + f + " needs --prune dsnot");
  if (!on) return p;
  if (args.given("sparsity")) p.sparsity = args.number("sparsity");
  if (args.given("pattern")) check(rwkvl_prune_pattern_from_string(args.str("pattern").c_str(), &p.pattern_n, &p.pattern_m), "--pattern");
  if (!args.given("sparsity") && !args.given("pattern")) args.fail("--prune needs --sparsity S or --pattern N:M");
  if (args.given("prune-targets")) check(rwkvl_targets_from_string(args.str("prune-targets").c_str(), &p.targets), "--prune-targets");
  check(rwkvl_prune_store_from_string(args.str("prune-store").c_str(), &p.store));
  p.dsnot_cycles = static_cast<int>(args.integer("dsnot-cycles"));
  p.dsnot_threshold = args.number("dsnot-threshold");
  p.dsnot_var_power = args.number("dsnot-var-power");
  p.dsnot_same_sign = args.on("dsnot-any-sign") ? 0 : 1;
  return p;
}

void print_prune(const nlohmann::json& pr) {
  std::printf("%-28s %11s %8s %6s %-9s %10s %10s %9s\n", "pruned matrix", "shape", "zeros", "swaps", "dtype", "bytes",
              "-> bytes", "out err");
  for (const auto& m : pr["matrices"]) {
    const std::string shape = std::to_string(m["rows"].get<int64_t>()) + "x" + std::to_string(m["cols"].get<int64_t>());
    const double z = static_cast<double>(m["zeros"].get<int64_t>()) /
                     static_cast<double>(m["rows"].get<int64_t>() * m["cols"].get<int64_t>());
    std::printf("%-28s %11s %7.2f%% %6lld %-9s %10llu %10llu %9s\n", m["name"].get<std::string>().c_str(), shape.c_str(),
                100 * z, static_cast<long long>(m["swaps"].get<int64_t>()), m["dtype"].get<std::string>().c_str(),
                static_cast<unsigned long long>(m["bytes_before"].get<uint64_t>()),
                static_cast<unsigned long long>(m["bytes_after"].get<uint64_t>()), err_str(m["rel_error"]).c_str());
  }
  const auto& p = pr["pass"]["prune"];
  std::printf("pruned (%s, %s): %llu of %llu weights are zero (%.2f%%); those matrices %s -> %s; out err = "
              "||WX - W'X||^2/||WX||^2 on calibration inputs\n",
              p["method"].get<std::string>().c_str(), p["pattern"].get<std::string>().c_str(),
              static_cast<unsigned long long>(pr["zeros"].get<uint64_t>()),
              static_cast<unsigned long long>(pr["weights"].get<uint64_t>()),
              100.0 * static_cast<double>(pr["zeros"].get<uint64_t>()) / static_cast<double>(std::max<uint64_t>(1, pr["weights"].get<uint64_t>())),
              format_bytes(pr["bytes_before"].get<uint64_t>()).c_str(), format_bytes(pr["bytes_after"].get<uint64_t>()).c_str());
}

void print_lowrank(const nlohmann::json& mats, const rwkvl_compress_recipe& r, const rwkvl_compress_report& rep) {
  auto is_lowrank = [](const nlohmann::json& m) {
    const std::string a = m["action"];
    return a == "factored" || a == "skipped" || a == "dense";
  };
  bool any_lowrank = false;
  for (const auto& m : mats) any_lowrank |= is_lowrank(m);
  if (any_lowrank) {
    std::printf("%-28s %-9s %11s %5s %-8s %10s %10s %8s %8s %8s\n", "matrix", "action", "shape", "rank", "dtype",
                "bytes", "-> bytes", "err_svd", "err_asvd", "err_frob");
    int skipped = 0;
    for (const auto& m : mats) {
      if (!is_lowrank(m)) continue;
      skipped += m["action"] == "skipped";
      const std::string shape = std::to_string(m["rows"].get<int64_t>()) + "x" + std::to_string(m["cols"].get<int64_t>());
      std::printf("%-28s %-9s %11s %5lld %-8s %10llu %10llu %8s %8s %8s\n", m["name"].get<std::string>().c_str(),
                  m["action"].get<std::string>().c_str(), shape.c_str(), static_cast<long long>(m["rank"].get<int64_t>()),
                  m["dtype"].get<std::string>().c_str(), static_cast<unsigned long long>(m["bytes_before"].get<uint64_t>()),
                  static_cast<unsigned long long>(m["bytes_after"].get<uint64_t>()), err_str(m["err_svd"]).c_str(),
                  err_str(m["err_asvd"]).c_str(), err_str(m["err_frob"]).c_str());
    }
    if (skipped)
      std::printf("%d matrices skipped: factoring them at this rank would not save bytes (--force keeps them)\n",
                  skipped);
    if (r.budget_bytes)
      std::printf("budget %s: planned %s, summed predicted relative error %.4f over %zu matrices\n",
                  format_bytes(r.budget_bytes).c_str(), format_bytes(rep.budget_planned_bytes).c_str(),
                  rep.budget_error_sum, mats.size());
    std::printf("errors: relative calibration output error ||WX - W'X||^2/||WX||^2 (svd, asvd) and ||W - W'||_F^2/||W||_F^2\n");
  }
  uint64_t qb = 0, qa = 0;
  for (const auto& m : mats)
    if (m["action"] == "quantised" || m["action"] == "converted") {
      qb += m["bytes_before"].get<uint64_t>();
      qa += m["bytes_after"].get<uint64_t>();
    }
  if (const int quantised = rep.matrices_quantised + rep.matrices_converted)
    std::printf("%d further matrices quantised/converted: %s -> %s\n", quantised, format_bytes(qb).c_str(),
                format_bytes(qa).c_str());
}

void print_sparse(const nlohmann::json& s, const rwkvl_compress_recipe& r, const rwkvl_compress_report& rep) {
  const bool pr = r.ffn_predictors != 0;
  std::printf("sparse FFN: neuron-bundled %s, predictors %s (%.1f s collecting, %.1f s training)\n",
              format_bytes(rep.ffn_bundle_bytes).c_str(), pr ? format_bytes(rep.ffn_predictor_bytes).c_str() : "none",
              rep.seconds_sparse_collect, rep.seconds_sparse_train);
  if (!pr) return;
  std::printf("%5s %9s | %8s | %15s | %15s | %15s\n", "layer", "zero", "held-out", "mlp alone", "1-bit alone",
              "ensemble (OR)");
  std::printf("%5s %9s | %8s | %7s %7s | %7s %7s | %7s %7s\n", "", "(calib)", "active", "recall", "active", "recall",
              "active", "recall", "active");
  double ens = 0, zero = 0;
  for (const auto& l : s["layers"]) {
    const auto& h = l["holdout"];
    const double d[] = {l["zero_frac"], h["true_active_frac"], h["mlp"]["recall"], h["mlp"]["active_frac"],
                        h["bits"]["recall"], h["bits"]["active_frac"], h["ensemble"]["recall"], h["ensemble"]["active_frac"]};
    std::printf("%5d %9.4f | %8.4f | %7.4f %7.4f | %7.4f %7.4f | %7.4f %7.4f\n", l["layer"].get<int>(), d[0], d[1],
                d[2], d[3], d[4], d[5], d[6], d[7]);
    ens += d[7];
    zero += d[0];
  }
  const double nl = static_cast<double>(s["layers"].size());
  std::printf("mean: zero share %.4f; the ensemble computes %.4f of the neurons (skips %.4f) at recall >= %.4f on "
              "held-out calibration tokens (target %.3f on new text)\n",
              zero / nl, ens / nl, 1 - ens / nl, s["recall_holdout"].get<double>(), r.recall);
}

void print_cluster(const nlohmann::json& c, const rwkvl_compress_recipe& r, const rwkvl_compress_report& rep) {
  const auto& h = c["heldout"];
  std::printf("cluster head: %lld clusters (k-means %lld, largest %lld tokens before the cap of %d, %lld after; smallest "
              "%lld); held-out: KL %.4f (initial %.4f), top-1 cluster %.4f, %.4f of head rows read, argmax token covered "
              "%.4f, mass covered %.4f (%.1f s clustering, %.1f s calibration, %.1f s distillation)\n",
              static_cast<long long>(c["k_final"].get<int64_t>()), static_cast<long long>(c["k"].get<int64_t>()),
              static_cast<long long>(c["largest_cluster_before_cap"].get<int64_t>()), r.cluster_cap,
              static_cast<long long>(c["largest_cluster"].get<int64_t>()),
              static_cast<long long>(c["smallest_cluster"].get<int64_t>()), h["kl"].get<double>(),
              h["kl_init"].get<double>(), h["top1_cluster_agree"].get<double>(), h["rows_frac"].get<double>(),
              h["top1_token_covered"].get<double>(), h["mass_covered"].get<double>(), rep.seconds_cluster,
              rep.seconds_cluster_calibration, rep.seconds_cluster_distillation);
}

}  // namespace

int cmd_compress(const Args& args) {
#if defined(__GLIBC__)
  // One heap arena for every thread: the worker threads' arenas otherwise keep what the side-by-side SVDs freed
  // (0.1B shape, full recipe: peak 639 -> 599 MiB, same time; docs/results/compress-scale.md).
  mallopt(M_ARENA_MAX, 1);
#endif
  const std::string in_path = require(args, "model");
  const std::string out_path = require(args, "out");
  check(rwkvl_check_output_path(out_path.c_str()), "--out");  // before any work
  const double t0 = now_seconds();
  rwkvl_compress_recipe r = recipe_of(args);
  const rwkvl_prune_recipe pr = prune_of(args);
  const bool prunes = pr.method != RWKVL_PRUNE_NONE;

  const ModelPtr model = load_model(args);
  const std::string targets = args.str("targets");
  if (!targets.empty()) check(rwkvl_targets_from_string(targets.c_str(), &r.targets));

  const bool sparse = r.sparse_ffn != 0, chead = args.given("cluster-head");
  const std::string calib_path = args.str("calib");
  rwkvl_calibration calib{};
  std::string text;
  TokenizerPtr tok;
  const std::string calib_name =
      calib_path.substr(calib_path.find_last_of('/') == std::string::npos ? 0 : calib_path.find_last_of('/') + 1);
  if (!calib_path.empty()) {
    if (r.lowrank == RWKVL_LOWRANK_NONE && !sparse && !chead && !prunes && !args.on("deep-embed"))
      args.fail("--calib is used by --prune, --lowrank svd|asvd, --sparse-ffn, --cluster-head and --deep-embed only");
    text = read_file(calib_path, "calibration text");
    if (text.empty()) args.fail("calibration file '" + calib_path + "' is empty");
    tok = model_tokenizer(model.get(), in_path, args.str("tokenizer"));
    calib.text = text.data();
    calib.text_len = text.size();
    calib.tokenizer = tok.get();
    calib.max_tokens = args.integer("calib-tokens") > 0 ? static_cast<size_t>(args.integer("calib-tokens")) : 0;
    calib.name = calib_name.c_str();
  } else if (r.lowrank == RWKVL_LOWRANK_ASVD) {
    args.fail("--lowrank asvd needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  } else if (sparse) {
    args.fail("--sparse-ffn needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  } else if (chead) {
    args.fail("--cluster-head needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  } else if (pr.method == RWKVL_PRUNE_WANDA || pr.method == RWKVL_PRUNE_DSNOT) {
    args.fail(std::string("--prune ") + args.str("prune") + " needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  }
  for (const char* f : {"fidelities", "cluster-cap", "pca-dims", "head-epochs", "head-lr", "head-prior", "prior-smoothing", "cluster-source"})
    if (!chead && args.given(f)) args.fail(std::string("--") + f + " needs --cluster-head K");
  if (args.given("de-hot") && !args.on("deep-embed")) args.fail("--de-hot needs --deep-embed");
  for (const char* f : {"no-predictor", "recall", "hidden", "epochs", "holdout", "ffn-dtype", "lr", "pred-dtype"})
    if (!sparse && args.given(f)) args.fail(std::string("--") + f + " needs --sparse-ffn");

  rwkvl_compress_options copts = rwkvl_compress_default_options();
  if (args.given("mem-budget")) copts.mem_budget = parse_bytes(args, "mem-budget", model_info(model.get()).n_params * 2);
  const uint64_t n_calib = calib_path.empty() ? 0 : count_tokens(tok.get(), text, calib.max_tokens);
  rwkvl_compress_plan plan{};
  check(rwkvl_compress_plan_get(model.get(), &r, n_calib, &copts, &plan));  // refuses a budget it cannot meet
  if (args.on("print-plan")) print_plan(plan, copts, n_calib);
  copts.resume = args.on("resume") ? 1 : 0;
  rwkvl_compress_report rep{};
  {
    RunBar bar(plan);
    rwkvl_compress_extras extras = rwkvl_compress_default_extras();
    extras.prune = prunes ? &pr : nullptr;
    const std::string fid = args.str("fidelities");
    extras.fidelities = fid.empty() ? nullptr : fid.c_str();
    extras.deep_embed = args.on("deep-embed") ? 1 : 0;
    extras.de_hot = args.integer("de-hot");
    const rwkvl_status st = rwkvl_compress_with(model.get(), &r, &extras, calib_path.empty() ? nullptr : &calib,
                                                out_path.c_str(), &copts, &RunBar::on, &bar, &rep);
    bar.finish();
    struct stat js {};
    if (st != RWKVL_OK && st != RWKVL_ERR_INVALID_ARGUMENT && stat((out_path + ".journal/journal.json").c_str(), &js) == 0)
      std::fprintf(stderr, "the finished layers are kept in %s.journal: run the same command with --resume to continue\n",
                   out_path.c_str());
    check(st);
  }
  std::unique_ptr<rwkvl_compress_report, void (*)(rwkvl_compress_report*)> keep(&rep, rwkvl_compress_report_free);
  size_t n = 0;
  rwkvl_compress_report_json(&rep, nullptr, 0, &n);
  std::string js(n + 1, '\0');
  check(rwkvl_compress_report_json(&rep, js.data(), js.size(), &n));
  js.resize(n);
  nlohmann::json j = nlohmann::json::parse(js);

  if (j.contains("resumed_from"))
    std::fprintf(stderr, "resumed from the journal (%s)\n", j["resumed_from"].get<std::string>().c_str());
  else if (copts.resume)
    std::fprintf(stderr, "--resume: no journal of an earlier run was found; ran from the beginning\n");
  if (j.contains("journal_replaced"))
    std::fprintf(stderr, "the journal of an earlier run (%s.journal) was replaced (--resume continues one)\n",
                 out_path.c_str());
  const uint64_t in_file = file_size(in_path);
  if (args.on("json")) {
    // The library's report less the budget's error sum (never printed), plus the input file and the wall time
    // of the whole command.
    j.erase("budget_error_sum");
    j["in"] = in_path;
    j["in_file_bytes"] = in_file;
    j["seconds"] = now_seconds() - t0;
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  if (j.contains("deep_embed")) {
    const nlohmann::json& d = j["deep_embed"];
    std::printf(
        "DeepEmbed: s_emb_x merged into the tables of %d layers; %zu hot tokens recorded (%.1f %% of the "
        "calibration tokens)\n",
        d.value("merged_layers", 0), d.contains("hot_tokens") ? d["hot_tokens"].size() : size_t{0},
        100.0 * d.value("hot_share", 0.0));
  }
  if (prunes) print_prune(j["prune"]);
  print_lowrank(j["matrices"], r, rep);
  if (sparse) print_sparse(j["sparse_ffn"], r, rep);
  if (chead) print_cluster(j["cluster_head"], r, rep);
  std::printf("weights %s -> %s (%.2fx); file %s -> %s; %llu calibration tokens; %.1f s\n",
              format_bytes(rep.weight_bytes_before).c_str(), format_bytes(rep.weight_bytes_after).c_str(),
              rep.weight_bytes_after ? static_cast<double>(rep.weight_bytes_before) / static_cast<double>(rep.weight_bytes_after)
                                     : 0.0,
              format_bytes(in_file).c_str(), format_bytes(rep.out_file_bytes).c_str(),
              static_cast<unsigned long long>(rep.calib_tokens), now_seconds() - t0);
  std::fprintf(stderr, "wrote %s\n", out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
