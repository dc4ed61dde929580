// rwkv-lite compress: low-rank factorisation (svd / asvd) and quantisation of a model, written as a
// native file that every other command runs.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
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
#include "compress/compress.h"
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
  const double t0 = now_seconds();

  compress::Options o;
  o.lowrank = args.str("lowrank");
  o.rank_frac = args.number("rank-frac");
  o.rank = args.integer("rank");
  o.diag = args.on("diag");
  if (args.given("budget")) {
    const std::string b = args.str("budget");
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(b.c_str(), &end);
    std::string suffix = end ? end : "";
    if (suffix == "K" || suffix == "k") v *= 1024.0;
    else if (suffix == "M" || suffix == "m") v *= 1024.0 * 1024.0;
    else if (suffix == "G" || suffix == "g") v *= 1024.0 * 1024.0 * 1024.0;
    else if (!suffix.empty()) v = -1;
    if (b.empty() || errno != 0 || !(v >= 1) || v > 1e15) args.fail("invalid --budget '" + b + "' (e.g. 40000000, 40M, 1.5G)");
    o.budget = static_cast<uint64_t>(v);
  }
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
    if (o.lowrank.empty()) args.fail("--calib is used by --lowrank svd|asvd only");
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
  }

  Progress bar("compress", static_cast<uint64_t>(m->config().n_layer), "layers");
  o.progress = [&bar](int done, int) { bar.update(static_cast<uint64_t>(done)); };
  compress::Report rep;
  const std::shared_ptr<Model> out = compress::run(m, o, &rep);
  bar.finish();
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
  std::printf("weights %s -> %s (%.2fx); file %s -> %s; %zu calibration tokens; %.1f s\n",
              format_bytes(rep.bytes_before).c_str(), format_bytes(rep.bytes_after).c_str(),
              rep.bytes_after ? static_cast<double>(rep.bytes_before) / static_cast<double>(rep.bytes_after) : 0.0,
              format_bytes(in_file).c_str(), format_bytes(out_file).c_str(), o.calib.size(), now_seconds() - t0);
  std::fprintf(stderr, "wrote %s\n", out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
