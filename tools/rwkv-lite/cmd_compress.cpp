// rwkv-lite compress: low-rank factorisation (svd / asvd) and quantisation of a model, written as a
// native file that every other command runs.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/api_internal.h"
#include "args.h"
#include "commands.h"
#include "common.h"
#include "compress/cluster_head.h"
#include "compress/compress.h"
#include "compress/sparse_ffn.h"
#include "progress.h"

namespace rwkvl::cli {

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

std::string err_str(double v) {
  if (std::isnan(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v);
  return b;
}

}  // namespace

int cmd_compress(const Args& args) {
  const std::string in_path = require(args, "model");
  const std::string out_path = require(args, "out");
  check(rwkvl_check_output_path(out_path.c_str()), "--out");  // before any work
  const double t0 = now_seconds();

  compress::Options o;
  o.lowrank = args.str("lowrank");
  o.rank_frac = args.number("rank-frac");
  o.rank = args.integer("rank");
  o.diag = args.on("diag");
  if (args.given("budget")) o.budget = parse_bytes(args, "budget");
  o.force = args.on("force");
  o.damp = args.number("damp");
  o.quant = args.str("quant");
  o.quant_emb = args.on("quant-emb");
  o.quant_head = args.on("quant-head");
  o.dtype = args.str("dtype") == "keep" ? "" : args.str("dtype");
  int n_threads = static_cast<int>(args.integer("threads"));
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.n_threads = n_threads;

  const ModelPtr model = load_model(args);
  const std::shared_ptr<Model> m = api::model_of(model.get());
  const std::string targets = args.str("targets");
  if (targets == "all") {
    for (const std::string& t : compress::target_names()) {
      if (t == "att.gate" && !(m->config().has_gate && m->config().arch_major <= 6)) continue;
      if (t == "ffn.receptance" && m->config().arch_major > 6) continue;
      o.targets.push_back(t);
    }
  } else if (!targets.empty()) {
    o.targets = split_list(targets);
  }

  const std::string calib_path = args.str("calib");
  if (!calib_path.empty()) {
    if (o.lowrank.empty() && !args.on("sparse-ffn") && !args.given("cluster-head"))
      args.fail("--calib is used by --lowrank svd|asvd, --sparse-ffn and --cluster-head only");
    const std::string text = read_file(calib_path, "calibration text");
    if (text.empty()) args.fail("calibration file '" + calib_path + "' is empty");
    const TokenizerPtr tok = model_tokenizer(model.get(), in_path, args.str("tokenizer"));
    std::vector<int32_t> ids = tokenize(tok.get(), text);
    const int64_t want = args.integer("calib-tokens");
    if (want > 0 && ids.size() > static_cast<size_t>(want)) ids.resize(static_cast<size_t>(want));
    o.calib = std::move(ids);
    o.calib_name = calib_path.substr(calib_path.find_last_of('/') == std::string::npos ? 0 : calib_path.find_last_of('/') + 1);
    o.calib_hash = compress::fnv1a64_hex(text.data(), text.size());
  } else if (o.lowrank == "asvd") {
    args.fail("--lowrank asvd needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  } else if (args.on("sparse-ffn")) {
    args.fail("--sparse-ffn needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  } else if (args.given("cluster-head")) {
    args.fail("--cluster-head needs calibration text: --calib FILE (e.g. wikitext2-valid.txt)");
  }
  const bool chead = args.given("cluster-head");
  for (const char* f : {"cluster-cap", "pca-dims", "head-epochs", "head-lr", "head-prior", "prior-smoothing", "cluster-source"})
    if (!chead && args.given(f)) args.fail(std::string("--") + f + " needs --cluster-head K");
  const bool sparse = args.on("sparse-ffn");
  for (const char* f : {"no-predictor", "recall", "hidden", "epochs", "holdout", "ffn-dtype", "lr", "pred-dtype"})
    if (!sparse && args.given(f)) args.fail(std::string("--") + f + " needs --sparse-ffn");
  const bool other_passes = !o.lowrank.empty() || !o.quant.empty() || o.quant_emb || o.quant_head || !o.dtype.empty();

  compress::Report rep;
  std::shared_ptr<Model> out = m;
  if (other_passes || (!sparse && !chead)) {
    Progress bar("compress", static_cast<uint64_t>(m->config().n_layer), "layers");
    o.progress = [&bar](int done, int) { bar.update(static_cast<uint64_t>(done)); };
    out = compress::run(m, o, &rep);
    bar.finish();
  } else {
    rep.bytes_before = rep.bytes_after = m->weight_bytes();
  }
  compress::SparseFfnReport srep;
  if (sparse) {
    compress::SparseFfnOptions so;
    so.calib = o.calib;
    so.calib_name = o.calib_name;
    so.calib_hash = o.calib_hash;
    so.predictors = !args.on("no-predictor");
    so.dtype = args.str("ffn-dtype") == "keep" ? "" : args.str("ffn-dtype");
    so.n_threads = n_threads;
    so.recall_target = args.number("recall");
    so.pred.recall = std::min(1.0, so.recall_target + (1.0 - so.recall_target) / 4);
    so.pred.hidden = static_cast<int>(args.integer("hidden"));
    so.pred.epochs = static_cast<int>(args.integer("epochs"));
    so.pred.holdout = args.number("holdout");
    so.pred.lr = args.number("lr");
    so.pred.int8 = args.str("pred-dtype") == "i8";
    so.pred.seed = static_cast<uint64_t>(args.integer("seed"));
    so.pred.n_threads = n_threads;
    Progress collect("activations", static_cast<uint64_t>(o.calib.size()), "tokens");
    so.collect_progress = [&collect](int64_t done, int64_t) { collect.update(static_cast<uint64_t>(done)); };
    std::unique_ptr<Progress> train;
    so.pred.progress = [&train, &collect](int64_t done, int64_t total) {
      collect.finish();
      if (!train) train = std::make_unique<Progress>("predictors", static_cast<uint64_t>(total), "layer-epochs");
      train->update(static_cast<uint64_t>(done));
    };
    out = compress::sparse_ffn(out, so, &srep);
    collect.finish();
    if (train) train->finish();
    rep.bytes_after = out->weight_bytes();
  }
  compress::ClusterHeadReport crep;
  if (chead) {
    compress::ClusterHeadOptions co;
    co.k = static_cast<int>(args.integer("cluster-head"));
    co.cap = static_cast<int>(args.integer("cluster-cap"));
    co.pca_dims = static_cast<int>(args.integer("pca-dims"));
    co.epochs = static_cast<int>(args.integer("head-epochs"));
    co.lr = args.number("head-lr");
    co.uniform_prior = args.str("head-prior") == "uniform";
    co.prior_smoothing = args.number("prior-smoothing");
    co.from_embedding = args.str("cluster-source") == "emb";
    co.seed = static_cast<uint64_t>(args.integer("seed"));
    co.calib = o.calib;
    co.calib_name = o.calib_name;
    co.calib_hash = o.calib_hash;
    co.n_threads = n_threads;
    std::unique_ptr<Progress> bar;
    std::string stage;
    co.progress = [&](const char* s, int64_t done, int64_t total) {
      if (stage != s) {
        if (bar) bar->finish();
        stage = s;
        bar = std::make_unique<Progress>(s, static_cast<uint64_t>(total),
                                         stage == "calibration" ? "tokens" : stage == "clustering" ? "iterations" : "epochs");
      }
      bar->update(static_cast<uint64_t>(done));
    };
    out = compress::cluster_head(out, co, &crep);
    if (bar) bar->finish();
    rep.bytes_after = out->weight_bytes();
  }
  out->save_native(out_path, "keep");

  const uint64_t in_file = file_size(in_path), out_file = file_size(out_path);
  if (args.on("json")) {
    nlohmann::json mats = nlohmann::json::array();
    for (const auto& r : rep.matrices) {
      nlohmann::json j = {{"name", r.name},   {"action", r.action},         {"rows", r.rows},
                          {"cols", r.cols},   {"rank", r.rank},             {"dtype", r.dtype},
                          {"bytes_before", r.bytes_before}, {"bytes_after", r.bytes_after}};
      j["err_svd"] = std::isnan(r.err_svd) ? nlohmann::json() : nlohmann::json(r.err_svd);
      j["err_asvd"] = std::isnan(r.err_asvd) ? nlohmann::json() : nlohmann::json(r.err_asvd);
      j["err_frob"] = std::isnan(r.err_frob) ? nlohmann::json() : nlohmann::json(r.err_frob);
      mats.push_back(j);
    }
    nlohmann::json j = {{"in", in_path},
                        {"out", out_path},
                        {"in_file_bytes", in_file},
                        {"out_file_bytes", out_file},
                        {"weight_bytes_before", rep.bytes_before},
                        {"weight_bytes_after", rep.bytes_after},
                        {"calib_tokens", o.calib.size()},
                        {"budget", o.budget},
                        {"budget_planned_bytes", rep.budget_planned_bytes},
                        {"seconds", now_seconds() - t0},
                        {"pass", rep.pass},
                        {"matrices", mats}};
    if (chead) j["cluster_head"] = crep.pass["cluster_head"];
    if (sparse) {
      j["sparse_ffn"] = srep.pass["sparse_ffn"];
      j["sparse_ffn"]["bundle_bytes"] = srep.bundle_bytes;
      j["sparse_ffn"]["seconds_collect"] = srep.seconds_collect;
      j["sparse_ffn"]["seconds_train"] = srep.seconds_train;
    }
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  bool any_lowrank = false;
  for (const auto& r : rep.matrices) any_lowrank |= r.action == "factored" || r.action == "skipped" || r.action == "dense";
  if (any_lowrank) {
    std::printf("%-28s %-9s %11s %5s %-8s %10s %10s %8s %8s %8s\n", "matrix", "action", "shape", "rank", "dtype",
                "bytes", "-> bytes", "err_svd", "err_asvd", "err_frob");
    int skipped = 0;
    for (const auto& r : rep.matrices) {
      if (r.action != "factored" && r.action != "skipped" && r.action != "dense") continue;
      skipped += r.action == "skipped";
      const std::string shape = std::to_string(r.rows) + "x" + std::to_string(r.cols);
      std::printf("%-28s %-9s %11s %5lld %-8s %10llu %10llu %8s %8s %8s\n", r.name.c_str(), r.action.c_str(),
                  shape.c_str(), static_cast<long long>(r.rank), r.dtype.c_str(),
                  static_cast<unsigned long long>(r.bytes_before), static_cast<unsigned long long>(r.bytes_after),
                  err_str(r.err_svd).c_str(), err_str(r.err_asvd).c_str(), err_str(r.err_frob).c_str());
    }
    if (skipped)
      std::printf("%d matrices skipped: factoring them at this rank would not save bytes (--force keeps them)\n",
                  skipped);
    if (o.budget)
      std::printf("budget %s: planned %s, summed predicted relative error %.4f over %zu matrices\n",
                  format_bytes(o.budget).c_str(), format_bytes(rep.budget_planned_bytes).c_str(), rep.budget_error_sum,
                  rep.matrices.size());
    std::printf("errors: relative calibration output error ||WX - W'X||^2/||WX||^2 (svd, asvd) and ||W - W'||_F^2/||W||_F^2\n");
  }
  int quantised = 0;
  uint64_t qb = 0, qa = 0;
  for (const auto& r : rep.matrices)
    if (r.action == "quantised" || r.action == "converted") {
      ++quantised;
      qb += r.bytes_before;
      qa += r.bytes_after;
    }
  if (quantised)
    std::printf("%d further matrices quantised/converted: %s -> %s\n", quantised, format_bytes(qb).c_str(),
                format_bytes(qa).c_str());
  if (sparse) {
    const bool pr = !args.on("no-predictor");
    std::printf("sparse FFN: neuron-bundled %s, predictors %s (%.1f s collecting, %.1f s training)\n",
                format_bytes(srep.bundle_bytes).c_str(), pr ? format_bytes(srep.predictor_bytes).c_str() : "none",
                srep.seconds_collect, srep.seconds_train);
    if (pr) {
      std::printf("%5s %9s | %8s | %15s | %15s | %15s\n", "layer", "zero", "held-out", "mlp alone", "1-bit alone",
                  "ensemble (OR)");
      std::printf("%5s %9s | %8s | %7s %7s | %7s %7s | %7s %7s\n", "", "(calib)", "active", "recall", "active",
                  "recall", "active", "recall", "active");
      double ens = 0, zero = 0;
      for (const auto& l : srep.layers) {
        const auto& p = l.pred;
        std::printf("%5d %9.4f | %8.4f | %7.4f %7.4f | %7.4f %7.4f | %7.4f %7.4f\n", l.layer, l.zero_frac,
                    p.true_active_frac, p.recall_mlp, p.frac_mlp, p.recall_bits, p.frac_bits, p.recall_ens, p.frac_ens);
        ens += p.frac_ens;
        zero += l.zero_frac;
      }
      const double nl = static_cast<double>(srep.layers.size());
      std::printf("mean: zero share %.4f; the ensemble computes %.4f of the neurons (skips %.4f) at recall >= %.4f on "
                  "held-out calibration tokens (target %.3f on new text)\n",
                  zero / nl, ens / nl, 1 - ens / nl, std::min(1.0, args.number("recall") + (1.0 - args.number("recall")) / 4),
                  args.number("recall"));
    }
  }
  if (chead)
    std::printf("cluster head: %lld clusters (k-means %lld, largest %lld tokens before the cap of %d, %lld after; smallest "
                "%lld); held-out: KL %.4f (initial %.4f), top-1 cluster %.4f, %.4f of head rows read, argmax token covered "
                "%.4f, mass covered %.4f (%.1f s clustering, %.1f s calibration, %.1f s distillation)\n",
                static_cast<long long>(crep.k_final), static_cast<long long>(crep.k_initial),
                static_cast<long long>(crep.largest_before_cap), static_cast<int>(args.integer("cluster-cap")),
                static_cast<long long>(crep.largest), static_cast<long long>(crep.smallest), crep.heldout_kl,
                crep.heldout_kl_init, crep.heldout_top1_cluster, crep.heldout_rows_frac, crep.heldout_token_covered,
                crep.heldout_mass_covered, crep.seconds_cluster, crep.seconds_calib, crep.seconds_train);
  std::printf("weights %s -> %s (%.2fx); file %s -> %s; %zu calibration tokens; %.1f s\n",
              format_bytes(rep.bytes_before).c_str(), format_bytes(rep.bytes_after).c_str(),
              rep.bytes_after ? static_cast<double>(rep.bytes_before) / static_cast<double>(rep.bytes_after) : 0.0,
              format_bytes(in_file).c_str(), format_bytes(out_file).c_str(), o.calib.size(), now_seconds() - t0);
  std::fprintf(stderr, "wrote %s\n", out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
