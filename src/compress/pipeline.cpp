#include "compress/pipeline.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/file_writer.h"
#include "compress/checkpoint.h"
#include "compress/plan.h"
#include "core/spool.h"
#include "core/hash.h"
#include "core/mapped_file.h"
#include "core/version.h"
#include "runtime/sysinfo.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::compress {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

bool is_projection(MatRole r) {
  return std::find(std::begin(kProjectionRoles), std::end(kProjectionRoles), r) != std::end(kProjectionRoles);
}

std::string known_targets() {
  std::string all;
  for (const std::string& n : target_names()) all += (all.empty() ? "" : ", ") + n;
  return all;
}

nlohmann::json nan_null(double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); }

// The pass options of stage 1 (compress::run), from the recipe.
Options lowrank_quant_options(const Model& in, const Recipe& r, const CalibrationData& calib, int n_threads) {
  Options o;
  o.lowrank = lowrank_method_name(r.lowrank.method);
  o.rank_frac = r.lowrank.rank_frac;
  o.rank = r.lowrank.rank;
  o.budget = r.lowrank.budget;
  o.diag = r.lowrank.diag;
  o.force = r.lowrank.force;
  o.damp = r.lowrank.damp;
  const std::vector<MatRole> targets = r.lowrank.all_targets ? architecture_targets(in.config()) : r.lowrank.targets;
  for (MatRole t : targets) o.targets.push_back(mat_role_name(t));
  o.quant = quant_name(r.quant.type);
  o.quant_emb = r.quant.emb;
  o.quant_head = r.quant.head;
  o.dtype = r.dtype;
  o.calib = calib.tokens;
  o.calib_name = calib.name;
  o.calib_hash = calib.hash;
  o.n_threads = n_threads;
  return o;
}

SparseFfnOptions sparse_options(const Recipe& r, const CalibrationData& calib, int n_threads) {
  const Recipe::SparseFfn& s = r.sparse_ffn;
  SparseFfnOptions so;
  so.calib = calib.tokens;
  so.calib_name = calib.name;
  so.calib_hash = calib.hash;
  so.predictors = s.predictors;
  so.dtype = s.dtype;
  so.n_threads = n_threads;
  so.recall_target = s.recall;
  so.pred.recall = heldout_recall(s.recall);
  so.pred.hidden = s.hidden;
  so.pred.epochs = s.epochs;
  so.pred.holdout = s.holdout;
  so.pred.lr = s.lr;
  so.pred.int8 = s.pred_int8;
  so.pred.seed = s.seed;
  so.pred.n_threads = n_threads;
  return so;
}

ClusterHeadOptions cluster_options(const Recipe& r, const CalibrationData& calib, int n_threads) {
  const Recipe::ClusterHead& c = r.cluster_head;
  ClusterHeadOptions co;
  co.k = c.k;
  co.cap = c.cap;
  co.pca_dims = c.pca_dims;
  co.epochs = c.epochs;
  co.lr = c.lr;
  co.uniform_prior = c.prior == HeadPrior::kUniform;
  co.prior_smoothing = c.prior_smoothing;
  co.from_embedding = c.source == ClusterSource::kEmbedding;
  co.seed = c.seed;
  co.int4_version = c.low_fidelity == Quant::kInt4;
  co.high_dtype = c.high_fidelity;
  co.calib = calib.tokens;
  co.calib_name = calib.name;
  co.calib_hash = calib.hash;
  co.n_threads = n_threads;
  return co;
}

// Stage 1 runs when it has something to do, or when no other stage runs (it then reports "nothing to do").
// Whether compress::run has something of its own to do (low-rank, quantisation, a dtype).
bool lowrank_quant_work(const Recipe& r) {
  return r.lowrank.method != LowRankMethod::kNone || r.quant.type != Quant::kNone || r.quant.emb || r.quant.head ||
         !r.dtype.empty();
}
bool runs_lowrank_quant(const Recipe& r) {
  return lowrank_quant_work(r) || (!r.sparse_ffn.enabled && !r.cluster_head.enabled &&
                                   r.prune.method == PruneMethod::kNone && !r.deep_embed.enabled);
}

PruneOptions prune_options(const Recipe& r, const CalibrationData& calib, int n_threads) {
  PruneOptions o;
  static_cast<PruneSpec&>(o) = r.prune;
  if (o.method != PruneMethod::kNone) {
    o.calib = calib.tokens;
    o.calib_name = calib.name;
    o.calib_hash = calib.hash;
  }
  o.n_threads = n_threads;
  return o;
}

}  // namespace

// ------------------------------------------------------------------------------------------ names

const char* lowrank_method_name(LowRankMethod m) {
  switch (m) {
    case LowRankMethod::kSvd: return "svd";
    case LowRankMethod::kAsvd: return "asvd";
    case LowRankMethod::kNone: break;
  }
  return "";
}

const char* quant_name(Quant q) {
  switch (q) {
    case Quant::kInt8: return "int8";
    case Quant::kInt4: return "int4";
    case Quant::kNone: break;
  }
  return "";
}

const char* head_prior_name(HeadPrior p) { return p == HeadPrior::kUniform ? "uniform" : "calib"; }
const char* cluster_source_name(ClusterSource s) { return s == ClusterSource::kEmbedding ? "emb" : "head"; }

std::optional<LowRankMethod> parse_lowrank_method(std::string_view s) {
  if (s.empty() || s == "none") return LowRankMethod::kNone;
  if (s == "svd") return LowRankMethod::kSvd;
  if (s == "asvd") return LowRankMethod::kAsvd;
  return std::nullopt;
}

std::optional<Quant> parse_quant(std::string_view s) {
  if (s.empty() || s == "none") return Quant::kNone;
  if (s == "int8") return Quant::kInt8;
  if (s == "int4") return Quant::kInt4;
  return std::nullopt;
}

std::optional<HeadPrior> parse_head_prior(std::string_view s) {
  if (s == "calib") return HeadPrior::kCalib;
  if (s == "uniform") return HeadPrior::kUniform;
  return std::nullopt;
}

std::optional<ClusterSource> parse_cluster_source(std::string_view s) {
  if (s == "head") return ClusterSource::kHead;
  if (s == "emb") return ClusterSource::kEmbedding;
  return std::nullopt;
}

std::vector<MatRole> parse_targets(std::string_view list) {
  std::vector<MatRole> out;
  size_t b = 0;
  while (b <= list.size()) {
    size_t e = list.find(',', b);
    if (e == std::string_view::npos) e = list.size();
    const std::string item(list.substr(b, e - b));
    b = e + 1;
    if (item.empty()) continue;
    MatRole found = MatRole::kNone;
    for (MatRole r : kProjectionRoles)
      if (item == mat_role_name(r)) found = r;
    if (found == MatRole::kNone)
      RWKVL_FAIL(kInvalidArgument, "unknown target '%s' (targets: %s)", item.c_str(), known_targets().c_str());
    out.push_back(found);
  }
  return out;
}

std::vector<MatRole> architecture_targets(const ModelConfig& cfg) {
  std::vector<MatRole> out;
  for (MatRole r : kProjectionRoles) {
    if (r == MatRole::kAttG && !(cfg.has_gate && cfg.arch_major <= 6)) continue;
    if (r == MatRole::kFfnR && cfg.arch_major > 6) continue;
    out.push_back(r);
  }
  return out;
}

double heldout_recall(double recall_target) { return std::min(1.0, recall_target + (1.0 - recall_target) / 4); }

// ------------------------------------------------------------------------------------------ calibration

CalibrationData calibration_from_text(const Tokenizer& tok, std::string_view text, size_t max_tokens,
                                      std::string name) {
  if (text.empty()) RWKVL_FAIL(kInvalidArgument, "the calibration text is empty");
  CalibrationData c;
  c.tokens = tok.encode(text);
  if (max_tokens > 0 && c.tokens.size() > max_tokens) c.tokens.resize(max_tokens);
  c.name = std::move(name);
  c.hash = fnv1a64_hex(text.data(), text.size());
  return c;
}

CalibrationData calibration_from_tokens(std::vector<int32_t> tokens, std::string name) {
  CalibrationData c;
  std::vector<uint8_t> le(tokens.size() * 4);
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int k = 0; k < 4; ++k) le[i * 4 + static_cast<size_t>(k)] = static_cast<uint8_t>(static_cast<uint32_t>(tokens[i]) >> (8 * k));
  c.hash = fnv1a64_hex(le.data(), le.size());
  c.tokens = std::move(tokens);
  c.name = std::move(name);
  return c;
}

// ------------------------------------------------------------------------------------------ validation

void validate(const Model& in, const Recipe& r, const CalibrationData& calib) {
  const Recipe::LowRank& lr = r.lowrank;
  const bool lowrank = lr.method != LowRankMethod::kNone;
  if (static_cast<int>(lr.method) > static_cast<int>(LowRankMethod::kAsvd) ||
      static_cast<int>(r.quant.type) > static_cast<int>(Quant::kInt4) ||
      static_cast<int>(r.cluster_head.prior) > static_cast<int>(HeadPrior::kUniform) ||
      static_cast<int>(r.cluster_head.source) > static_cast<int>(ClusterSource::kEmbedding))
    RWKVL_FAIL(kInvalidArgument, "unknown low-rank method, quantisation, head prior or cluster source value");
  if (r.deep_embed.enabled && in.config().de_rank <= 0)
    RWKVL_FAIL(kInvalidArgument, "--deep-embed needs an RWKV-7a model (DeepEmbed tables); this one is %s",
               in.config().arch_name().c_str());
  if (r.deep_embed.hot < 0) RWKVL_FAIL(kInvalidArgument, "--de-hot must be >= 0");
  // (when stage 1 runs, it names these itself)
  if (!lowrank && !runs_lowrank_quant(r) && (lr.rank > 0 || lr.rank_frac > 0 || lr.budget > 0 || lr.diag))
    RWKVL_FAIL(kInvalidArgument, "--rank, --rank-frac, --budget and --diag need --lowrank svd|asvd");
  if (lr.all_targets && !lr.targets.empty())
    RWKVL_FAIL(kInvalidArgument, "give either the target list or 'all targets', not both");
  for (MatRole t : lr.targets)
    if (!is_projection(t))
      RWKVL_FAIL(kInvalidArgument, "unknown target '%s' (targets: %s)", mat_role_name(t), known_targets().c_str());
  if (!(lr.rank_frac >= 0) || lr.rank < 0 || !(lr.damp >= 0))
    RWKVL_FAIL(kInvalidArgument, "the rank, rank fraction and damping must be >= 0");
  const bool prunes = r.prune.method != PruneMethod::kNone;
  if (!calib.tokens.empty() && !lowrank && !r.sparse_ffn.enabled && !r.cluster_head.enabled && !prunes &&
      !r.deep_embed.enabled)
    RWKVL_FAIL(kInvalidArgument,
               "calibration text is used by pruning, low-rank (svd, asvd), the sparse FFN, the cluster "
               "head and the DeepEmbed pass only");
  if (prunes) {
    validate_prune(in, prune_options(r, calib, 1));
    const std::vector<MatRole> pt = r.prune.targets.empty() ? architecture_targets(in.config()) : r.prune.targets;
    if (lowrank) {
      std::vector<MatRole> lt = lr.all_targets ? architecture_targets(in.config()) : lr.targets;
      if (lt.empty())  // the low-rank pass's own default
        for (const std::string& name : default_targets(in.config())) lt.push_back(parse_targets(name).at(0));
      for (MatRole t : pt)
        if (std::find(lt.begin(), lt.end(), t) != lt.end())
          RWKVL_FAIL(kInvalidArgument, "'%s' is both pruned and factored: give the two passes different --targets",
                     mat_role_name(t));
    }
  } else if (r.prune.sparsity != 0 || r.prune.pattern.structured()) {
    RWKVL_FAIL(kInvalidArgument, "--sparsity and --pattern need --prune magnitude|wanda|dsnot");
  }
  const Recipe::SparseFfn& s = r.sparse_ffn;
  if (s.enabled && (!(s.recall > 0 && s.recall <= 1) || s.hidden < 1 || s.epochs < 1 || !(s.lr > 0) ||
                    !(s.holdout > 0 && s.holdout < 1)))
    RWKVL_FAIL(kInvalidArgument,
               "bad sparse FFN settings (recall %g must lie in (0, 1], hidden %d and epochs %d >= 1, lr %g > 0, "
               "holdout %g in (0, 1))",
               s.recall, s.hidden, s.epochs, s.lr, s.holdout);
  if (r.cluster_head.low_fidelity != Quant::kNone) {
    if (r.cluster_head.low_fidelity != Quant::kInt4)
      RWKVL_FAIL(kInvalidArgument, "the only lower fidelity is int4 (--fidelities HIGH,int4)");
    if (!r.cluster_head.enabled)
      RWKVL_FAIL(kInvalidArgument, "--fidelities needs --cluster-head K: the head clusters are the shards stored at several fidelities");
    if (r.quant.head && r.quant.type == Quant::kInt4)
      RWKVL_FAIL(kInvalidArgument, "--fidelities ...,int4 needs a head stored above int4 (the head is quantised to int4 already)");
    // the head's dtype after stage 1 (a --dtype change is checked by the pass itself)
    const std::optional<DType> head = r.quant.head && r.quant.type == Quant::kInt8 ? std::optional<DType>(DType::kI8)
                                      : r.dtype.empty() && !in.head().factored() ? std::optional<DType>(in.head().ref.dtype)
                                                                                 : std::nullopt;
    if (r.cluster_head.high_fidelity && head && *head != *r.cluster_head.high_fidelity)
      RWKVL_FAIL(kInvalidArgument, "--fidelities names %s first, but the head will be stored as %s%s",
                 dtype_name(*r.cluster_head.high_fidelity), dtype_name(*head),
                 *r.cluster_head.high_fidelity == DType::kI8 ? " (add --quant int8 --quant-head)" : "");
  }
  if (r.n_threads > 4096) RWKVL_FAIL(kInvalidArgument, "at most 4096 threads, got %d", r.n_threads);
  // the passes check the model itself (factored, quantised, bundled, widths) before any work
}

// ------------------------------------------------------------------------------------------ the run

namespace {

// ---- what a journal keeps of the pipeline's report, and the key of a run (checkpoint.h)

nlohmann::json reports_json(const PipelineReport& rep) {
  nlohmann::json j = {{"weight_bytes_before", rep.weight_bytes_before}, {"weight_bytes_after", rep.weight_bytes_after}};
  if (rep.ran_lowrank_quant)
    j["lowrank_quant"] = {{"report", report_json(rep.lowrank_quant)},
                          {"seconds", exact(rep.seconds_lowrank_quant)},
                          {"peak_rss", rep.peak_rss_lowrank_quant}};
  if (rep.ran_sparse_ffn)
    j["sparse_ffn"] = {{"report", sparse_report_json(rep.sparse_ffn)}, {"peak_rss", rep.peak_rss_sparse_ffn}};
  if (rep.ran_cluster_head)
    j["cluster_head"] = {{"report", cluster_report_json(rep.cluster_head)}, {"peak_rss", rep.peak_rss_cluster_head}};
  return j;
}

void restore_reports(const nlohmann::json& j, PipelineReport& rep) {
  try {
    if (j.is_null()) return;
    rep.weight_bytes_before = j.at("weight_bytes_before").get<uint64_t>();
    rep.weight_bytes_after = j.at("weight_bytes_after").get<uint64_t>();
    if (j.contains("lowrank_quant")) {
      const nlohmann::json& e = j.at("lowrank_quant");
      rep.lowrank_quant = report_from_json(e.at("report"));
      rep.seconds_lowrank_quant = exact_double(e.at("seconds"));
      rep.peak_rss_lowrank_quant = e.at("peak_rss").get<uint64_t>();
      rep.ran_lowrank_quant = true;
    }
    if (j.contains("sparse_ffn")) {
      rep.sparse_ffn = sparse_report_from_json(j.at("sparse_ffn").at("report"));
      rep.peak_rss_sparse_ffn = j.at("sparse_ffn").at("peak_rss").get<uint64_t>();
      rep.ran_sparse_ffn = true;
    }
    if (j.contains("cluster_head")) {
      rep.cluster_head = cluster_report_from_json(j.at("cluster_head").at("report"));
      rep.peak_rss_cluster_head = j.at("cluster_head").at("peak_rss").get<uint64_t>();
      rep.ran_cluster_head = true;
    }
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kFormat, "the journal's reports are damaged: %s", e.what());
  }
}

// Every setting of the recipe that decides the output's bytes (not the threads or the memory budget: the passes
// write the same bytes with any).
nlohmann::json recipe_json(const Recipe& r) {
  nlohmann::json targets = nlohmann::json::array();
  for (MatRole t : r.lowrank.targets) targets.push_back(mat_role_name(t));
  const Recipe::SparseFfn& s = r.sparse_ffn;
  const Recipe::ClusterHead& c = r.cluster_head;
  nlohmann::json ptargets = nlohmann::json::array();
  for (MatRole t : r.prune.targets) ptargets.push_back(mat_role_name(t));
  const PruneSpec& p = r.prune;
  nlohmann::json j = {{"prune",
                       {{"method", prune_method_name(p.method)},
                        {"sparsity", exact(p.sparsity)},
                        {"pattern", p.pattern.str()},
                        {"targets", ptargets},
                        {"store", prune_store_name(p.store)},
                        {"cycles", p.dsnot.max_cycles},
                        {"threshold", exact(p.dsnot.threshold)},
                        {"var_power", exact(p.dsnot.var_power)},
                        {"same_sign", p.dsnot.same_sign}}},
                      {"lowrank",
                       {{"method", lowrank_method_name(r.lowrank.method)},
                        {"rank_frac", exact(r.lowrank.rank_frac)},
                        {"rank", r.lowrank.rank},
                        {"budget", r.lowrank.budget},
                        {"targets", targets},
                        {"all_targets", r.lowrank.all_targets},
                        {"diag", r.lowrank.diag},
                        {"force", r.lowrank.force},
                        {"damp", exact(r.lowrank.damp)}}},
                      {"quant", {{"type", quant_name(r.quant.type)}, {"emb", r.quant.emb}, {"head", r.quant.head}}},
                      {"dtype", r.dtype},
                      {"sparse_ffn",
                       {{"enabled", s.enabled},
                        {"predictors", s.predictors},
                        {"dtype", s.dtype},
                        {"recall", exact(s.recall)},
                        {"hidden", s.hidden},
                        {"epochs", s.epochs},
                        {"lr", exact(s.lr)},
                        {"holdout", exact(s.holdout)},
                        {"pred_int8", s.pred_int8},
                        {"seed", s.seed}}},
                      {"cluster_head",
                       {{"enabled", c.enabled},
                        {"k", c.k},
                        {"cap", c.cap},
                        {"pca_dims", c.pca_dims},
                        {"epochs", c.epochs},
                        {"lr", exact(c.lr)},
                        {"prior", head_prior_name(c.prior)},
                        {"prior_smoothing", exact(c.prior_smoothing)},
                        {"source", cluster_source_name(c.source)},
                        {"seed", c.seed},
                        {"low_fidelity", quant_name(c.low_fidelity)},
                        {"high_fidelity", c.high_fidelity ? dtype_name(*c.high_fidelity) : ""}}}};
  if (r.deep_embed.enabled) j["deep_embed"] = {{"hot", r.deep_embed.hot}};  // (absent otherwise: older keys stay)
  return j;
}

// The input model, recognised by its content: the file's length and 64 samples of 64 KiB spread over it (the
// header among them), and the names, types and shapes of its tensors; a model in memory by all its bytes.
nlohmann::json input_identity(const Model& in) {
  uint64_t h = fnv1a64("rwkvl", 5);
  for (const auto& [name, t] : in.tensors()) {
    h = fnv1a64(name.data(), name.size(), h);
    const uint32_t d = static_cast<uint32_t>(t.dtype);
    h = fnv1a64(&d, sizeof d, h);
    h = fnv1a64(t.shape.data(), t.shape.size() * sizeof(int64_t), h);
    if (!in.file() && t.data) h = fnv1a64(t.data, t.nbytes, h);
  }
  nlohmann::json j = {{"tensors_fnv1a64", hex64(h)}};
  if (const MappedFile* f = in.file().get()) {
    constexpr size_t kSample = size_t{64} << 10;
    uint64_t fh = fnv1a64("file", 4);
    for (int i = 0; i < 64; ++i) {
      const size_t off = f->size() <= kSample ? 0 : static_cast<size_t>((f->size() - kSample) / 63 * static_cast<uint64_t>(i));
      const size_t n = std::min(kSample, f->size() - off);
      fh = fnv1a64(f->data() + off, n, fh);
      f->release_range(f->data() + off, n);
      if (f->size() <= kSample) break;
    }
    j["file_bytes"] = f->size();
    j["file_samples_fnv1a64"] = hex64(fh);
  }
  return j;
}

nlohmann::json run_key(const Model& in, const Recipe& r, const CalibrationData& calib) {
  std::vector<uint8_t> le(calib.tokens.size() * 4);
  for (size_t i = 0; i < calib.tokens.size(); ++i)
    for (int k = 0; k < 4; ++k) le[i * 4 + static_cast<size_t>(k)] = static_cast<uint8_t>(static_cast<uint32_t>(calib.tokens[i]) >> (8 * k));
  return {{"build", kVersionString},
          {"input", input_identity(in)},
          {"recipe", recipe_json(r)},
          {"calibration", {{"tokens", calib.tokens.size()}, {"tokens_fnv1a64", hex64(fnv1a64(le.data(), le.size()))}}}};
}

// The model a journal entry's stage starts from.
std::shared_ptr<Model> rebuild(const ResumePoint& rp, const Model& in) {
  auto m = Model::from_canonical(rp.base, in.config(), in.source_kind(), Model::LoadOptions{});
  m->set_passes(rp.base_passes);
  return m;
}

// The passes in their order; finished tensors go to `spool` when given (see pass_memory.h). With a journal, each
// finished unit is recorded and a run it says was interrupted continues from there.
std::shared_ptr<Model> run_passes(const std::shared_ptr<const Model>& in, const Recipe& r, const CalibrationData& calib,
                                  const ProgressFn& progress, PipelineReport& rep, Spool* spool, Checkpoint* ck) {
  const auto t0 = std::chrono::steady_clock::now();
  rep = PipelineReport{};
  validate(*in, r, calib);
  const CompressPlan plan = plan_compress(*in, r, calib.tokens.size(), r.mem_budget);  // refuses a budget it cannot meet
  rep.plan = plan.to_json();
  PassMemory mem;
  mem.input = in->file().get();
  mem.spool = spool;
  mem.checkpoint = ck;
  const int n_threads = r.n_threads > 0 ? r.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto tell = [&progress](const char* stage, int64_t done, int64_t total) {
    if (progress) progress(stage, done, total);
  };
  rep.calib_tokens = calib.tokens.size();
  rep.budget = r.lowrank.budget;

  const ResumePoint* rp = ck ? ck->resume_point() : nullptr;
  const Stage from = rp ? rp->stage : Stage::kLowRankQuant;
  // A stage starts (an entry with the model it starts from) unless the journal resumes it in the middle.
  auto begin = [&](Stage s, const Model& base) {
    if (!ck || (rp && rp->stage == s && rp->unit > 0)) return;
    ck->set_reports(reports_json(rep));
    ck->begin_stage(s, base);
  };
  std::shared_ptr<Model> out = std::const_pointer_cast<Model>(in);
  rep.weight_bytes_before = rep.weight_bytes_after = in->weight_bytes();
  if (rp) {
    restore_reports(rp->reports, rep);
    if (from != Stage::kLowRankQuant) out = rebuild(*rp, *in);
    rep.resumed_from = std::string(stage_name(from)) + (rp->unit > 0 ? ", " + std::to_string(rp->unit) + " layers done" : "");
  }
  // The DeepEmbed merge and pruning come first and are part of stage 1 for the journal: a resumed stage 1 does them
  // again (the same bytes).
  std::shared_ptr<const Model> stage1_in = in;
  if (r.deep_embed.enabled && from == Stage::kLowRankQuant) {
    DeepEmbedOptions d;
    d.calib = calib.tokens;
    d.calib_name = calib.name;
    d.calib_hash = calib.hash;
    d.hot = r.deep_embed.hot;
    d.n_threads = n_threads;
    d.progress = [&tell](int done, int total) { tell("deep-embed", done, total); };
    out = deep_embed(in, d, &rep.deep_embed);
    stage1_in = out;
    rep.ran_deep_embed = true;
    rep.weight_bytes_after = out->weight_bytes();
  }
  if (r.prune.method != PruneMethod::kNone && from == Stage::kLowRankQuant) {
    const auto t = std::chrono::steady_clock::now();
    PruneOptions po = prune_options(r, calib, n_threads);
    tell("prune", 0, in->config().n_layer);
    po.progress = [&tell](int done, int total) { tell("prune", done, total); };
    out = prune(stage1_in, po, &rep.prune);
    stage1_in = out;
    rep.ran_prune = true;
    rep.weight_bytes_after = out->weight_bytes();
    rep.seconds_prune = seconds_since(t);
  }
  if (runs_lowrank_quant(r) && from == Stage::kLowRankQuant) {
    begin(Stage::kLowRankQuant, *in);
    const auto t = std::chrono::steady_clock::now();
    Options o = lowrank_quant_options(*stage1_in, r, calib, n_threads);
    const int64_t layers = in->config().n_layer;
    tell("compress", 0, layers);
    o.progress = [&tell](int done, int total) { tell("compress", done, total); };
    o.mem = mem;
    out = run(stage1_in, o, &rep.lowrank_quant);
    rep.ran_lowrank_quant = true;
    rep.weight_bytes_before = rep.ran_prune || rep.ran_deep_embed ? in->weight_bytes() : rep.lowrank_quant.bytes_before;
    rep.weight_bytes_after = rep.lowrank_quant.bytes_after;
    rep.seconds_lowrank_quant = seconds_since(t);
    rep.peak_rss_lowrank_quant = peak_rss_bytes();
    mem.release();  // what the pass left resident of the input and the spool, and its freed heap
  }
  if (r.sparse_ffn.enabled && from <= Stage::kSparseFfn) {
    begin(Stage::kSparseFfn, *out);
    SparseFfnOptions so = sparse_options(r, calib, n_threads);
    so.progress = [&tell](int64_t done, int64_t total) { tell("sparse-ffn", done, total); };
    so.mem = mem;
    so.group = plan.sparse_parallel_layers;
    out = sparse_ffn(out, so, &rep.sparse_ffn);
    rep.ran_sparse_ffn = true;
    rep.weight_bytes_after = out->weight_bytes();
    rep.peak_rss_sparse_ffn = peak_rss_bytes();
  }
  if (r.cluster_head.enabled && from <= Stage::kClusterHead) {
    begin(Stage::kClusterHead, *out);
    ClusterHeadOptions co = cluster_options(r, calib, n_threads);
    co.progress = [&tell](const char* stage, int64_t done, int64_t total) { tell(stage, done, total); };
    co.mem = mem;
    out = cluster_head(out, co, &rep.cluster_head);
    rep.ran_cluster_head = true;
    rep.weight_bytes_after = out->weight_bytes();
    rep.peak_rss_cluster_head = peak_rss_bytes();
  }
  begin(Stage::kSave, *out);
  rep.seconds_total = seconds_since(t0);
  return out;
}

}  // namespace

std::shared_ptr<Model> compress_model(const std::shared_ptr<const Model>& in, const Recipe& r,
                                      const CalibrationData& calib, const ProgressFn& progress,
                                      PipelineReport* report) {
  PipelineReport local;
  return run_passes(in, r, calib, progress, report ? *report : local, nullptr, nullptr);
}

void compress_to_file(const std::shared_ptr<const Model>& in, const Recipe& r, const CalibrationData& calib,
                      const std::string& out_path, const ProgressFn& progress, PipelineReport* report, bool resume) {
  const auto t0 = std::chrono::steady_clock::now();
  PipelineReport local;
  PipelineReport& rep = report ? *report : local;
  check_output_path(out_path);  // before the work, not after it
  validate(*in, r, calib);      // (and the plan) before the journal is made
  (void)plan_compress(*in, r, calib.tokens.size(), r.mem_budget);
  // Finished tensors wait on storage next to the output (the same file system), not in memory: in the journal's
  // spool, which with the journal's entries lets an interrupted run resume.
  Checkpoint ck(out_path, run_key(*in, r, calib), in, resume);
  std::shared_ptr<Model> out;
  try {
    out = run_passes(in, r, calib, progress, rep, ck.spool(), &ck);
  } catch (...) {
    if (!ck.has_progress()) ck.finish();  // a run that failed before any finished layer leaves nothing behind
    throw;
  }
  rep.journal = ck.dir();
  rep.journal_replaced = ck.replaced_earlier();
  const auto t_save = std::chrono::steady_clock::now();
  uint64_t unreleased = 0;
  Spool* spool = ck.spool();
  out->save_native(out_path, [&](const Tensor& t) {
    unreleased += t.nbytes;
    if (unreleased < (uint64_t{16} << 20)) return;
    spool->release();
    unreleased = 0;
  });
  ck.finish();
  rep.seconds_journal = ck.seconds();
  rep.seconds_save = seconds_since(t_save);
  rep.peak_rss_save = peak_rss_bytes();
  rep.out_path = out_path;
  rep.out_file_bytes = file_size(out_path);
  rep.seconds_total = seconds_since(t0);
}

// ------------------------------------------------------------------------------------------ the report

nlohmann::json PipelineReport::to_json() const {
  const Report& lq = lowrank_quant;
  nlohmann::json mats = nlohmann::json::array();
  for (const MatrixReport& m : lq.matrices) {
    nlohmann::json j = {{"name", m.name},         {"action", m.action},
                        {"rows", m.rows},         {"cols", m.cols},
                        {"rank", m.rank},         {"dtype", m.dtype},
                        {"bytes_before", m.bytes_before}, {"bytes_after", m.bytes_after}};
    j["err_svd"] = nan_null(m.err_svd);
    j["err_asvd"] = nan_null(m.err_asvd);
    j["err_frob"] = nan_null(m.err_frob);
    mats.push_back(j);
  }
  nlohmann::json j = {{"out", out_path},
                      {"out_file_bytes", out_file_bytes},
                      {"weight_bytes_before", weight_bytes_before},
                      {"weight_bytes_after", weight_bytes_after},
                      {"calib_tokens", calib_tokens},
                      {"budget", budget},
                      {"budget_planned_bytes", lq.budget_planned_bytes},
                      {"budget_error_sum", lq.budget_error_sum},
                      {"pass", lq.pass},
                      {"matrices", mats}};
  if (ran_prune) {
    nlohmann::json pm = nlohmann::json::array();
    for (const PruneMatrixReport& m : prune.matrices)
      pm.push_back({{"name", m.name}, {"rows", m.rows}, {"cols", m.cols}, {"zeros", m.zeros}, {"swaps", m.swaps},
                    {"dtype", m.dtype}, {"bytes_before", m.bytes_before}, {"bytes_after", m.bytes_after},
                    {"rel_error", nan_null(m.rel_error)}});
    j["prune"] = {{"pass", prune.pass}, {"matrices", pm}, {"weights", prune.weights}, {"zeros", prune.zeros},
                  {"bytes_before", prune.bytes_before}, {"bytes_after", prune.bytes_after}};
  }
  nlohmann::json stages = {{"prune", seconds_prune}, {"lowrank_quant", seconds_lowrank_quant}, {"save", seconds_save}, {"total", seconds_total}};
  if (ran_deep_embed) {
    j["deep_embed"] = deep_embed.pass["deep_embed"];
    stages["deep_embed"] = deep_embed.seconds;
  }
  if (!journal.empty()) stages["journal"] = seconds_journal;
  if (ran_cluster_head) {
    j["cluster_head"] = cluster_head.pass["cluster_head"];
    stages["cluster_clustering"] = cluster_head.seconds_cluster;
    stages["cluster_calibration"] = cluster_head.seconds_calib;
    stages["cluster_distillation"] = cluster_head.seconds_train;
  }
  if (ran_sparse_ffn) {
    j["sparse_ffn"] = sparse_ffn.pass["sparse_ffn"];
    j["sparse_ffn"]["bundle_bytes"] = sparse_ffn.bundle_bytes;
    j["sparse_ffn"]["seconds_collect"] = sparse_ffn.seconds_collect;
    j["sparse_ffn"]["seconds_train"] = sparse_ffn.seconds_train;
    stages["sparse_collect"] = sparse_ffn.seconds_collect;
    stages["sparse_train"] = sparse_ffn.seconds_train;
  }
  j["stages"] = stages;
  nlohmann::json peaks = nlohmann::json::object();
  for (const auto& [name, v] : {std::pair<const char*, uint64_t>{"lowrank_quant", peak_rss_lowrank_quant},
                                {"sparse_ffn", peak_rss_sparse_ffn},
                                {"cluster_head", peak_rss_cluster_head},
                                {"save", peak_rss_save}})
    if (v > 0) peaks[name] = v;
  j["stages_peak_rss_bytes"] = peaks;
  if (!plan.is_null()) j["plan"] = plan;
  if (!resumed_from.empty()) j["resumed_from"] = resumed_from;
  if (journal_replaced) j["journal_replaced"] = true;
  return j;
}

}  // namespace rwkvl::compress
