#include "compress/compress.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "compress/calibrate.h"
#include "compress/checkpoint.h"
#include "compress/linalg.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/mapped_file.h"
#include "core/threadpool.h"
#include "runtime/session.h"

namespace rwkvl::compress {

namespace {

// The calibration stages of one layer: a stage's inputs depend only on earlier stages, so each
// stage is compressed before the next one's inputs are collected (sequential calibration).
int stage_of(const std::string& t) {
  if (t == "att.output") return 1;
  if (t == "ffn.key" || t == "ffn.receptance") return 2;
  if (t == "ffn.value") return 3;
  return 0;  // att.receptance / key / value / gate
}
constexpr int kStages = 4;

bool target_exists(const ModelConfig& c, const std::string& t) {
  if (t == "att.gate") return c.has_gate && c.arch_major <= 6;
  if (t == "ffn.receptance") return c.arch_major <= 6;
  return true;
}

// The role of a target name (one of target_names()).
MatRole role_of(const std::string& t) {
  for (MatRole r : kProjectionRoles)
    if (t == mat_role_name(r)) return r;
  RWKVL_FAIL(kInvalidArgument, "unknown target '%s'", t.c_str());
}

const Matrix& slot(const LayerWeights& L, const std::string& t) { return layer_matrix(L, role_of(t)); }

bool is_quantised(DType d) { return dtype_is_quantised(d); }

uint64_t tensor_bytes(const TensorMap& tm) {
  uint64_t n = 0;
  for (const auto& [name, t] : tm) n += t.nbytes;
  return n;
}

// Bytes a rows x cols matrix takes in `d` (+ its scale tensor for i8).
uint64_t stored_bytes(DType d, int64_t rows, int64_t cols, bool f16_scales) {
  const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
  const DTypeTraits& tr = dtype_traits(d);
  RWKVL_CHECK(tr.matrix);
  const uint64_t scales = tr.scale == ScaleLayout::kRowTensor ? static_cast<uint64_t>(rows) * (f16_scales ? 2 : 4) : 0;
  return n / tr.block_elems * tr.block_bytes + scales;
}

// v7a: the DeepEmbed token tables (and their merge matrices), which the quantisation pass converts with the
// projections: they are most of a 7a file's bytes, read a row per token (int8 / int4 rows with their scales).
bool is_deep_embed_table(const std::string& name) {
  return name.starts_with("blocks.") && (name.ends_with(".ffn.s_emb.weight") || name.ends_with(".ffn.s_emb_x.weight"));
}

// The block projections the quantisation pass converts: "<blocks.N.att|ffn>.<name>.weight" and the
// factors; not the small v6/v7 LoRA / mixing matrices, which stay as they are.
bool is_block_projection(const std::string& name) {
  if (!name.starts_with("blocks.")) return false;
  static const std::vector<std::string>& names = target_names();
  for (const std::string& t : names)
    for (const char* suf : {".weight", ".lr_a", ".lr_b"})
      if (name.ends_with("." + t + suf)) return true;
  return false;
}

std::string fmt_double(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

}  // namespace

const std::vector<std::string>& target_names() {
  static const std::vector<std::string> k = {"att.receptance", "att.key",   "att.value", "att.gate",
                                             "att.output",     "ffn.key",   "ffn.value", "ffn.receptance"};
  return k;
}

std::vector<std::string> default_targets(const ModelConfig& cfg) {
  std::vector<std::string> t = {"att.receptance", "att.key", "att.value"};
  if (target_exists(cfg, "att.gate")) t.push_back("att.gate");
  return t;
}

std::string fnv1a64_hex(const void* data, size_t n) { return hex64(fnv1a64(data, n)); }

namespace {

// A candidate of the --budget rank search: one target matrix and its error at each rank.
struct RankCandidate {
  std::string base;
  std::vector<double> tail;  // tail[r] = relative error at rank r
  int64_t rows, cols, mn, r = 0;
  DType fd, dd;
  bool dense = false;
};

// One compress::run: the options checked against the model, then the passes in their fixed order
// (low-rank factorisation layer by layer and stage by stage, then quantisation / conversion), then the
// pass record.
class Runner {
 public:
  Runner(const std::shared_ptr<const Model>& in, const Options& opts, Report& rep)
      : in_(in), opts_(opts), cfg_(in->config()), rep_(rep), cur_(in) {}

  std::shared_ptr<Model> run() {
    const auto t0 = std::chrono::steady_clock::now();
    rep_ = Report{};
    validate_options();
    validate_targets();
    tm_ = in_->tensors();
    rep_.bytes_before = tensor_bytes(tm_);
    qtype_ = opts_.quant == "int8" ? DType::kI8 : opts_.quant == "int4" ? DType::kQ4 : DType::kF32;
    check_sources();
    if (lowrank_) fixed_ranks();
    chunk_ = static_cast<size_t>(std::max(1, opts_.chunk));
    if (calibrate_) cal_ = std::make_unique<LayerwiseCalibration>(in_, opts_.calib, opts_.n_threads, chunk_);
    int first = 0;  // layers factored before (a resumed run)
    if (const ResumePoint* rp = resume_point())
      first = restore(*rp);
    else if (budgeted_)
      plan_budget();
    if (lowrank_) factor_layers(first);
    if (!opts_.quant.empty() || !opts_.dtype.empty()) quantise_rest();
    rep_.pass = pass_record();
    if (cur_ == in_) rebind();
    auto out = std::const_pointer_cast<Model>(cur_);
    append_pass(*out, *in_, rep_.pass);
    rep_.bytes_after = tensor_bytes(tm_);
    rep_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }

 private:
  void rebind() { cur_ = Model::from_canonical(tm_, cfg_, in_->source_kind(), Model::LoadOptions{}); }

  // Stored type of factors: the quantisation type, else --dtype, else f32 for f32 sources and f16
  // otherwise (bf16 factors would add needless rounding error); and of a matrix left dense.
  DType factor_type(DType src) const {
    return !opts_.quant.empty() ? qtype_ : !opts_.dtype.empty() ? plain_ : (src == DType::kF32 ? DType::kF32 : DType::kF16);
  }
  DType dense_type(DType src, int64_t cols) const {
    return !opts_.quant.empty() ? (qtype_ == DType::kQ4 && cols % 32 != 0 ? DType::kI8 : qtype_)
           : !opts_.dtype.empty() ? plain_ : src;
  }
  static uint64_t factored_bytes(DType fd, int64_t rows, int64_t cols, int64_t r, bool diag) {
    const DType fa = fd == DType::kQ4 && cols % 32 != 0 ? DType::kI8 : fd;
    const DType fb = fd == DType::kQ4 && r % 32 != 0 ? DType::kI8 : fd;
    return stored_bytes(fa, r, cols, true) + stored_bytes(fb, rows, r, true) + (diag ? 4 * static_cast<uint64_t>(rows) : 0);
  }
  bool quantises(const std::string& name) const {
    return is_block_projection(name) || is_deep_embed_table(name) || (opts_.quant_emb && name == "emb.weight") ||
           (opts_.quant_head && name == "head.weight");
  }

  // Drops the resident pages of an input tensor the pass has read (a view of the input file; nothing for
  // tensors in memory): the pass touches each input layer once, so resident memory holds the layer at hand,
  // not the whole input (issue #19).
  void release_input(const Tensor& t) const {
    if (in_->file() && t.data) in_->file()->release_range(t.data, t.nbytes);
  }
  void release_input_layer(int l) const {
    const std::string p = "blocks." + std::to_string(l) + ".";
    for (auto it = in_->tensors().lower_bound(p); it != in_->tensors().end() && it->first.rfind(p, 0) == 0; ++it)
      release_input(it->second);
  }

  // ---- validate the options against the model before any work
  void validate_options() {
    const Options& opts = opts_;
    if (in_->sparse_ffn())
      RWKVL_FAIL(kInvalidArgument, "this model's channel-mix is neuron-bundled (sparse FFN): compress the model it was made from");
    lowrank_ = !opts.lowrank.empty();
    if (lowrank_ && opts.lowrank != "svd" && opts.lowrank != "asvd")
      RWKVL_FAIL(kInvalidArgument, "unknown low-rank method '%s' (use svd or asvd)", opts.lowrank.c_str());
    if (!opts.quant.empty() && opts.quant != "int8" && opts.quant != "int4")
      RWKVL_FAIL(kInvalidArgument, "unknown quantisation '%s' (use int8 or int4)", opts.quant.c_str());
    if (!lowrank_ && opts.quant.empty() && !opts.quant_emb && !opts.quant_head && opts.dtype.empty())
      RWKVL_FAIL(kInvalidArgument, "nothing to do: give --lowrank, --quant (or --quant-emb/--quant-head) or --dtype");
    if ((opts.quant_emb || opts.quant_head) && opts.quant.empty())
      RWKVL_FAIL(kInvalidArgument, "--quant-emb / --quant-head need --quant int8|int4");
    budgeted_ = opts.budget > 0;
    if (budgeted_ && !lowrank_) RWKVL_FAIL(kInvalidArgument, "--budget needs --lowrank svd|asvd");
    if (budgeted_ && (opts.rank > 0 || opts.rank_frac > 0))
      RWKVL_FAIL(kInvalidArgument, "--budget chooses the ranks itself: drop --rank / --rank-frac");
    if (lowrank_ && !budgeted_) {
      if ((opts.rank > 0) == (opts.rank_frac > 0))
        RWKVL_FAIL(kInvalidArgument, "give exactly one of --rank R (R >= 1) and --rank-frac F (0 < F <= 1)");
      if (opts.rank_frac > 1.0 || opts.rank < 0) RWKVL_FAIL(kInvalidArgument, "--rank-frac must be in (0, 1]");
    } else if (!lowrank_ && (opts.rank > 0 || opts.rank_frac > 0 || opts.diag)) {
      RWKVL_FAIL(kInvalidArgument, "--rank, --rank-frac and --diag need --lowrank svd|asvd");
    }
    if (!opts.dtype.empty()) {
      plain_ = parse_weight_dtype(opts.dtype);
      if (is_quantised(plain_)) RWKVL_FAIL(kInvalidArgument, "--dtype takes f32, f16 or bf16 (use --quant for int8/int4)");
    }
  }

  void validate_targets() {
    targets_ = opts_.targets.empty() ? default_targets(cfg_) : opts_.targets;
    for (const std::string& t : targets_) {
      if (std::find(target_names().begin(), target_names().end(), t) == target_names().end()) {
        std::string all;
        for (const std::string& n : target_names()) all += (all.empty() ? "" : ", ") + n;
        RWKVL_FAIL(kInvalidArgument, "unknown target '%s' (targets: %s)", t.c_str(), all.c_str());
      }
      if (!target_exists(cfg_, t))
        RWKVL_FAIL(kInvalidArgument, "target '%s' does not exist in an %s model", t.c_str(), cfg_.arch_name().c_str());
    }
    std::sort(targets_.begin(), targets_.end());
    targets_.erase(std::unique(targets_.begin(), targets_.end()), targets_.end());
    const bool need_calib = lowrank_ && opts_.lowrank == "asvd";
    calibrate_ = lowrank_ && !opts_.calib.empty();
    if (need_calib && opts_.calib.size() < kMinCalibTokens)
      RWKVL_FAIL(kInvalidArgument, "asvd needs calibration text of at least %zu tokens, got %zu", kMinCalibTokens,
                 opts_.calib.size());
    for (int32_t tok : opts_.calib)
      if (tok < 0 || tok >= cfg_.n_vocab)
        RWKVL_FAIL(kInvalidArgument, "calibration token %d is out of range [0, %d)", tok, cfg_.n_vocab);
  }

  // Inputs that are already quantised (or factored) where this run would quantise (or factor) them.
  void check_sources() {
    if (!opts_.quant.empty()) {
      for (const auto& [name, t] : tm_) {
        if (quantises(name) && is_quantised(t.dtype))
          RWKVL_FAIL(kInvalidArgument, "'%s' is already quantised (%s): compress the unquantised model instead",
                     name.c_str(), dtype_name(t.dtype));
      }
    }
    if (!lowrank_) return;
    for (int l = 0; l < cfg_.n_layer; ++l)
      for (const std::string& t : targets_) {
        const std::string base = "blocks." + std::to_string(l) + "." + t;
        if (tm_.count(base + ".lr_a"))
          RWKVL_FAIL(kInvalidArgument, "'%s' is already factored: compress the unfactored model instead", base.c_str());
        if (is_quantised(tm_.at(base + ".weight").dtype))
          RWKVL_FAIL(kInvalidArgument,
                     "'%s.weight' is quantised (%s): factor the unquantised model (--quant applies to the factors)",
                     base.c_str(), dtype_name(tm_.at(base + ".weight").dtype));
      }
  }

  // The rank of every target from --rank / --rank-frac (--budget chooses them in plan_budget).
  void fixed_ranks() {
    if (budgeted_) return;
    for (int l = 0; l < cfg_.n_layer; ++l)
      for (const std::string& t : targets_) {
        const std::string base = "blocks." + std::to_string(l) + "." + t;
        const Matrix& m = slot(in_->layer(l), t);
        const int64_t mn = std::min(m.rows, m.cols);
        const int64_t r = opts_.rank > 0 ? opts_.rank : static_cast<int64_t>(std::llround(opts_.rank_frac * mn));
        plan_[base] = r;
        if (r < 1 || r > mn)
          RWKVL_FAIL(kInvalidArgument, "rank %lld is out of range for %s [%lld x %lld]: it must be in [1, %lld]",
                     static_cast<long long>(r), base.c_str(), static_cast<long long>(m.rows),
                     static_cast<long long>(m.cols), static_cast<long long>(mn));
      }
  }

  // ---- --budget: ranks for a byte budget. From each target's spectrum (of W, or of W L with calibration, so
  // that the discarded squared singular values are its output error), greedily give rank, in steps, to the
  // matrix whose relative output error falls most per byte, until the budget is spent; a matrix whose
  // factors would cost as much as its dense form is kept dense (error 0). Spectra come from the
  // uncompressed model; the factorisation itself then runs sequentially as usual.
  void plan_budget() {
    const std::map<std::string, linalg::Gram> grams = budget_grams();
    std::vector<RankCandidate> cands;
    for (int l = 0; l < cfg_.n_layer; ++l)
      for (const std::string& t : targets_) cands.push_back(candidate(l, t, grams));
    const uint64_t fixed = fixed_bytes();
    const int64_t step = opts_.quant == "int4" ? 32 : 8;
    uint64_t used = fixed;
    for (const RankCandidate& c : cands) used += bytes_of(c);
    if (used > opts_.budget)
      RWKVL_FAIL(kInvalidArgument,
                 "--budget %llu bytes is below the smallest model these options can make (%llu bytes: every target "
                 "at rank %lld, the rest %llu bytes)",
                 static_cast<unsigned long long>(opts_.budget), static_cast<unsigned long long>(used),
                 static_cast<long long>(step), static_cast<unsigned long long>(fixed));
    used = spend_budget(cands, used, step);
    double err_sum = 0.0;
    for (const RankCandidate& c : cands) {
      plan_[c.base] = c.dense ? 0 : c.r;
      err_sum += c.dense ? 0.0 : c.tail[static_cast<size_t>(c.r)];
    }
    rep_.budget_planned_bytes = used;
    rep_.budget_error_sum = err_sum;
  }

  uint64_t bytes_of(const RankCandidate& c) const {
    return c.dense ? stored_bytes(c.dd, c.rows, c.cols, true)
                   : factored_bytes(c.fd, c.rows, c.cols, c.r, opts_.diag && c.rows == c.cols);
  }

  // Input Gram matrix of every target on the uncompressed model (empty without calibration).
  std::map<std::string, linalg::Gram> budget_grams() {
    std::map<std::string, linalg::Gram> grams;
    if (!calibrate_) return grams;
    std::map<std::pair<int, MatRole>, linalg::Gram*> by_tap;
    TapSet taps;
    for (int l = 0; l < cfg_.n_layer; ++l)
      for (const std::string& t : targets_) {
        const Matrix& m = slot(in_->layer(l), t);
        const std::string base = "blocks." + std::to_string(l) + "." + t;
        by_tap[{l, role_of(t)}] = &grams.emplace(base, linalg::Gram(m.cols)).first->second;
        taps.add(l, role_of(t));
      }
    Calibrator calib(in_, CalibrationOptions{opts_.n_threads, 0});
    calib.set_taps(std::move(taps), [&by_tap](int l, MatRole r, const float* X, size_t T) {
      by_tap.at({l, r})->add(X, static_cast<int64_t>(T));
    });
    calib.run(opts_.calib.data(), opts_.calib.size(), chunk_);
    return grams;
  }

  // Bytes of everything that is not a target, as the output will store it.
  uint64_t fixed_bytes() const {
    uint64_t fixed = 0;
    for (const auto& [name, t] : tm_) {
      bool target = false;
      for (const std::string& tg : targets_)
        if (name.starts_with("blocks.") &&
            (name.ends_with("." + tg + ".weight") || name.ends_with("." + tg + ".weight.scale")))
          target = true;
      if (target) continue;
      const bool q = !opts_.quant.empty() && quantises(name);
      fixed += q ? stored_bytes(dense_type(t.dtype, t.cols()), t.rows(), t.cols(), true) : t.nbytes;
    }
    return fixed;
  }

  RankCandidate candidate(int l, const std::string& t, const std::map<std::string, linalg::Gram>& grams) const {
    const std::string base = "blocks." + std::to_string(l) + "." + t;
    const Tensor& w = tm_.at(base + ".weight");
    const std::vector<float> W = matrix_to_f32(w, nullptr);
    release_input(w);
    RankCandidate c;
    c.base = base;
    c.rows = w.rows();
    c.cols = w.cols();
    c.mn = std::min(c.rows, c.cols);
    c.fd = factor_type(w.dtype);
    c.dd = dense_type(w.dtype, c.cols);
    const linalg::LowRank f = calibrate_ ? linalg::asvd_truncate(W.data(), c.rows, c.cols, c.mn, grams.at(base), opts_.damp)
                                         : linalg::svd_truncate(W.data(), c.rows, c.cols, c.mn);
    // B = U sqrt(S): B's squared column norms are the singular values s_k; the error of rank r is
    // the sum of the discarded s_k^2 (of W, or of W L: then it is the output error).
    std::vector<double> s2(static_cast<size_t>(c.mn), 0.0);
    for (int64_t i = 0; i < c.rows; ++i)
      for (int64_t k = 0; k < c.mn; ++k) {
        const double b = f.b[static_cast<size_t>(i * c.mn + k)];
        s2[static_cast<size_t>(k)] += b * b;
      }
    double total = 0.0;
    for (double& v : s2) {
      v = v * v;  // s_k^2
      total += v;
    }
    c.tail.assign(static_cast<size_t>(c.mn) + 1, 0.0);
    for (int64_t r = c.mn - 1; r >= 0; --r)
      c.tail[static_cast<size_t>(r)] = c.tail[static_cast<size_t>(r) + 1] + (total > 0 ? s2[static_cast<size_t>(r)] / total : 0.0);
    const int64_t step = opts_.quant == "int4" ? 32 : 8;
    c.r = std::min(step, c.mn);
    return c;
  }

  // The greedy search; returns the bytes used.
  uint64_t spend_budget(std::vector<RankCandidate>& cands, uint64_t used, int64_t step) const {
    for (;;) {
      double best = 0.0;
      RankCandidate* pick = nullptr;
      RankCandidate next_best;
      for (RankCandidate& c : cands) {
        if (c.dense) continue;
        RankCandidate n = c;
        n.r = std::min(c.r + step, c.mn);
        const double err_now = c.tail[static_cast<size_t>(c.r)];
        if (n.r == c.r || bytes_of(n) >= stored_bytes(c.dd, c.rows, c.cols, true)) n.dense = true;
        const double gain = err_now - (n.dense ? 0.0 : n.tail[static_cast<size_t>(n.r)]);
        const int64_t db = static_cast<int64_t>(bytes_of(n)) - static_cast<int64_t>(bytes_of(c));
        if (used + static_cast<uint64_t>(std::max<int64_t>(db, 0)) > opts_.budget) continue;
        const double score = db > 0 ? gain / static_cast<double>(db) : gain * 1e30;
        if (gain > 0 && score > best) {
          best = score;
          pick = &c;
          next_best = n;
        }
      }
      if (!pick) return used;
      used = used - bytes_of(*pick) + bytes_of(next_best);
      *pick = next_best;
    }
  }

  // ---- a journal (checkpoint.h): after each layer, what the pass has made so far; a resumed run starts there
  const ResumePoint* resume_point() const {
    const Checkpoint* ck = opts_.mem.checkpoint;
    const ResumePoint* rp = ck ? ck->resume_point() : nullptr;
    return rp && rp->stage == Stage::kLowRankQuant && rp->unit > 0 ? rp : nullptr;
  }
  nlohmann::json state() const {
    nlohmann::json plan = nlohmann::json::object();
    for (const auto& [name, r] : plan_) plan[name] = r;
    return {{"report", report_json(rep_)}, {"plan", plan}};
  }
  int restore(const ResumePoint& rp) {
    if (!lowrank_ || rp.unit > cfg_.n_layer) RWKVL_FAIL(kFormat, "the journal does not match this low-rank pass");
    tm_ = rp.current;
    const Report saved = report_from_json(rp.state.at("report"));
    rep_.matrices = saved.matrices;
    rep_.budget_planned_bytes = saved.budget_planned_bytes;
    rep_.budget_error_sum = saved.budget_error_sum;
    plan_.clear();
    for (const auto& [name, r] : rp.state.at("plan").items()) plan_[name] = r.get<int64_t>();
    if (cal_ && rp.unit < cfg_.n_layer) {
      cal_->load(rp.calibration);
      if (cal_->next_layer() != rp.unit) RWKVL_FAIL(kFormat, "the journal's calibration snapshot is of another layer");
    }
    rebind();
    return rp.unit;
  }

  // ---- low-rank factorisation, layer by layer and stage by stage
  void factor_layers(int first) {
    for (int l = first; l < cfg_.n_layer; ++l) {
      for (int stage = 0; stage < kStages; ++stage) {
        std::vector<std::string> here;
        for (const std::string& t : targets_)
          if (stage_of(t) == stage) here.push_back(t);
        if (here.empty()) continue;
        factor_stage(l, here);
        rebind();
      }
      if (calibrate_ && l + 1 < cfg_.n_layer) cal_->advance(cur_, l);
      release_input_layer(l);
      if (opts_.mem.checkpoint)
        opts_.mem.checkpoint->save(l + 1, tm_, state(), calibrate_ && l + 1 < cfg_.n_layer ? cal_.get() : nullptr);
      if (opts_.mem.spool) opts_.mem.spool->release();
      if (opts_.progress) opts_.progress(l + 1, cfg_.n_layer);
    }
  }

  void factor_stage(int l, const std::vector<std::string>& here) {
    // Inputs of this stage's matrices, produced by the layers (and stages) compressed so far.
    std::map<std::string, linalg::Gram> grams;
    if (calibrate_) {
      std::map<MatRole, linalg::Gram*> by_role;
      TapSet taps;
      for (const std::string& t : here) {
        const Matrix& m = slot(cur_->layer(l), t);
        by_role[role_of(t)] = &grams.emplace(t, linalg::Gram(m.cols)).first->second;
        taps.add(l, role_of(t));
      }
      cal_->collect(cur_, l, taps, [&by_role](int, MatRole r, const float* X, size_t T) {
        by_role.at(r)->add(X, static_cast<int64_t>(T));
      });
    }
    // The stage's matrices are factored side by side (each on one thread, so the numbers are those of one after
    // another), then stored in order.
    std::vector<Factoring> fs(here.size());
    for (size_t i = 0; i < here.size(); ++i) fs[i].base = "blocks." + std::to_string(l) + "." + here[i];
    std::atomic<size_t> next{0};
    ThreadPool pool(static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(1, opts_.n_threads)), here.size()))));
    pool.run_on_all([&](int) {
      for (size_t i = next.fetch_add(1); i < fs.size(); i = next.fetch_add(1))
        factor_matrix(fs[i], calibrate_ ? &grams.at(here[i]) : nullptr);
    });
    for (Factoring& f : fs) store_factors(f);
  }

  // One matrix of a stage: its report and (unless --budget keeps it dense) its factors.
  struct Factoring {
    std::string base;
    MatrixReport mr;
    linalg::LowRank f;
    bool dense = false;
  };

  // Reads tm_ only (the matrices of a stage are factored side by side).
  void factor_matrix(Factoring& out, const linalg::Gram* g) const {
    const std::string& base = out.base;
    const Tensor& w = tm_.at(base + ".weight");
    auto sit = tm_.find(base + ".weight.scale");
    const std::vector<float> W = matrix_to_f32(w, sit == tm_.end() ? nullptr : &sit->second);
    release_input(w);
    const int64_t rows = w.rows(), cols = w.cols();
    const int64_t r = plan_.at(base);
    MatrixReport& mr = out.mr;
    mr.name = base;
    mr.rows = rows;
    mr.cols = cols;
    mr.rank = r;
    mr.bytes_before = w.nbytes + (sit == tm_.end() ? 0 : sit->second.nbytes);
    out.dense = r == 0;  // --budget kept it dense
    if (!out.dense) out.f = factorise(W, rows, cols, r, g, mr);
  }

  void store_factors(Factoring& in) {
    const std::string& base = in.base;
    MatrixReport& mr = in.mr;
    const linalg::LowRank& f = in.f;
    const Tensor w = tm_.at(base + ".weight");
    const int64_t rows = mr.rows, cols = mr.cols, r = mr.rank;
    auto keep = [&](const char* action) {
      mr.action = action;
      mr.dtype = dtype_name(w.dtype);
      mr.bytes_after = mr.bytes_before;
      rep_.matrices.push_back(mr);
    };
    if (in.dense) return keep("dense");
    const DType fd = factor_type(w.dtype);
    DType fa = fd, fb = fd;
    if (fa == DType::kQ4 && cols % 32 != 0) fa = DType::kI8;
    if (fb == DType::kQ4 && r % 32 != 0) fb = DType::kI8;
    const uint64_t dense_bytes = stored_bytes(dense_type(w.dtype, cols), rows, cols, !opts_.quant.empty());
    const uint64_t fact_bytes = factored_bytes(fd, rows, cols, r, !f.d.empty());
    if (fact_bytes >= dense_bytes && !opts_.force) {
      mr.rank = 0;
      return keep("skipped");
    }
    tm_.erase(base + ".weight");
    tm_.erase(base + ".weight.scale");
    auto put = [&](const std::string& name, const std::vector<float>& v, int64_t nr, int64_t nc, DType d) {
      auto [q, s] = quantize_matrix(name, v.data(), nr, nc, d, true);
      tm_[name] = opts_.mem.keep(q);
      if (s.data) tm_[s.name] = opts_.mem.keep(s);
      return q.nbytes + s.nbytes;
    };
    uint64_t after = put(base + ".lr_a", f.a, r, cols, fa);
    after += put(base + ".lr_b", f.b, rows, r, fb);
    if (!f.d.empty()) {
      Tensor d = Tensor::from_f32(base + ".lr_d", {rows}, f.d.data());
      after += d.nbytes;
      tm_[d.name] = d;
    }
    mr.action = "factored";
    mr.dtype = fa == fb ? dtype_name(fa) : std::string(dtype_name(fa)) + "/" + dtype_name(fb);
    mr.bytes_after = after;
    rep_.matrices.push_back(mr);
  }

  // SVD (and ASVD) factors of W at rank r, with the errors recorded in mr.
  linalg::LowRank factorise(const std::vector<float>& W, int64_t rows, int64_t cols, int64_t r, const linalg::Gram* g,
                            MatrixReport& mr) const {
    linalg::LowRank f = linalg::svd_truncate(W.data(), rows, cols, r);
    const bool square = rows == cols;
    if (opts_.diag && square) linalg::fit_diag(W.data(), f, g);
    double energy = 0.0;
    if (g) {
      energy = linalg::output_energy(W.data(), rows, cols, *g);
      mr.err_svd = energy > 0 ? linalg::output_error(W.data(), f, *g) / energy : 0.0;
    }
    if (opts_.lowrank == "asvd") {
      f = linalg::asvd_truncate(W.data(), rows, cols, r, *g, opts_.damp);
      if (opts_.diag && square) linalg::fit_diag(W.data(), f, g);
      mr.err_asvd = energy > 0 ? linalg::output_error(W.data(), f, *g) / energy : 0.0;
    }
    double wf = 0.0;
    for (float v : W) wf += static_cast<double>(v) * v;
    mr.err_frob = wf > 0 ? linalg::frobenius_error(W.data(), f) / wf : 0.0;
    return f;
  }

  // ---- quantisation / type conversion of everything else
  void quantise_rest() {
    std::vector<std::string> names;
    for (const auto& [name, t] : tm_) names.push_back(name);
    for (const std::string& name : names) {
      const Tensor t = tm_.at(name);
      if (t.shape.size() != 2 || name.ends_with(".scale") || name.ends_with(".lr_d")) continue;
      const bool proj = is_block_projection(name) || is_deep_embed_table(name);
      const bool emb = name == "emb.weight", head = name == "head.weight";
      DType want;
      bool f16_scales = true;
      if (!opts_.quant.empty() && (proj || (emb && opts_.quant_emb) || (head && opts_.quant_head))) {
        if (is_quantised(t.dtype)) continue;  // the factors quantised above
        want = qtype_;
        if (want == DType::kQ4 && t.cols() % 32 != 0) want = DType::kI8;
      } else if (!opts_.dtype.empty() && (proj || emb || head)) {
        if (is_quantised(t.dtype) || t.dtype == DType::kF16S24 || dtype_is_masked(t.dtype))
          continue;  // (2:4 packed / masked: pruned, stays so)
        want = plain_;
        f16_scales = false;
      } else {
        continue;
      }
      if (t.dtype == want) continue;
      auto sit = tm_.find(name + ".scale");
      // Pruned and stored sparse (f16_2of4, f16_masked): the kept values are quantised, masked (i8_masked,
      // q4_masked) where that is smaller than the dense quantised matrix. Otherwise a block of rows at a time
      // (the embedding and head as float32 would be the largest buffer of the pass).
      const bool sparse_in = t.dtype == DType::kF16S24 || dtype_is_masked(t.dtype);
      auto [q, s] = sparse_in && is_quantised(want)
                        ? [&] {
                            const std::vector<float> v = matrix_to_f32(t, nullptr);
                            return store_sparse_matrix(name, v.data(), t.rows(), t.cols(), want, f16_scales);
                          }()
                        : opts_.mem.convert(name, t, sit == tm_.end() ? nullptr : &sit->second, want, f16_scales);
      release_input(t);
      if (opts_.mem.spool) opts_.mem.spool->release();
      MatrixReport mr;
      mr.name = name;
      mr.action = is_quantised(want) ? "quantised" : "converted";
      mr.rows = t.rows();
      mr.cols = t.cols();
      mr.dtype = dtype_name(q.dtype);
      mr.bytes_before = t.nbytes + (sit == tm_.end() ? 0 : sit->second.nbytes);
      mr.bytes_after = q.nbytes + s.nbytes;
      tm_.erase(name + ".scale");
      tm_[name] = q;
      if (s.data) tm_[s.name] = s;
      rep_.matrices.push_back(mr);
    }
    rebind();
  }

  // ---- the pass record
  nlohmann::json pass_record() const {
    const Options& opts = opts_;
    nlohmann::json pass;
    pass["tool"] = "rwkv-lite compress";
    if (lowrank_) {
      pass["lowrank"] = {{"method", opts.lowrank}, {"targets", targets_}, {"diag", opts.diag}, {"force", opts.force}};
      if (budgeted_) {
        pass["lowrank"]["budget"] = opts.budget;
        pass["lowrank"]["budget_planned_bytes"] = rep_.budget_planned_bytes;
      } else if (opts.rank > 0) {
        pass["lowrank"]["rank"] = opts.rank;
      } else {
        pass["lowrank"]["rank_frac"] = opts.rank_frac;
      }
      if (opts.lowrank == "asvd") pass["lowrank"]["damp"] = opts.damp;
      nlohmann::json ranks = nlohmann::json::object();
      for (const MatrixReport& m : rep_.matrices)
        if (m.action == "factored" || m.action == "skipped" || m.action == "dense") {
          nlohmann::json e = {{"rank", m.rank}, {"action", m.action}};
          if (!std::isnan(m.err_svd)) e["err_svd"] = fmt_double(m.err_svd);
          if (!std::isnan(m.err_asvd)) e["err_asvd"] = fmt_double(m.err_asvd);
          ranks[m.name] = e;
        }
      pass["lowrank"]["matrices"] = ranks;
    }
    if (!opts.quant.empty())
      pass["quant"] = {{"type", opts.quant == "int8" ? "int8 per row, f16 scale" : "int4 groups of 32, f16 scale+offset"},
                       {"emb", opts.quant_emb}, {"head", opts.quant_head}};
    if (!opts.dtype.empty()) pass["dtype"] = opts.dtype;
    if (!opts.calib.empty() && lowrank_)
      pass["calibration"] = {{"file", opts.calib_name}, {"fnv1a64", opts.calib_hash}, {"tokens", opts.calib.size()}};
    return pass;
  }

  const std::shared_ptr<const Model>& in_;
  const Options& opts_;
  const ModelConfig& cfg_;
  Report& rep_;
  bool lowrank_ = false, budgeted_ = false, calibrate_ = false;
  DType plain_ = DType::kF32;  // the type of non-quantised output matrices when --dtype is given
  DType qtype_ = DType::kF32;
  std::vector<std::string> targets_;
  TensorMap tm_;
  std::map<std::string, int64_t> plan_;  // rank per factored matrix (0: keep it dense, chosen by --budget)
  std::shared_ptr<const Model> cur_;
  size_t chunk_ = 1;
  std::unique_ptr<LayerwiseCalibration> cal_;
};

}  // namespace

std::shared_ptr<Model> run(const std::shared_ptr<const Model>& in, const Options& opts, Report* report) {
  Report local;
  return Runner(in, opts, report ? *report : local).run();
}

void append_pass(Model& out, const Model& in, const nlohmann::json& pass) {
  nlohmann::json passes = in.passes();
  passes.push_back(pass);
  out.set_passes(passes);
}

std::shared_ptr<Model> model_with_pass(TensorMap tensors, const ModelConfig& cfg, const Model& in,
                                       const nlohmann::json& pass) {
  auto out = Model::from_canonical(std::move(tensors), cfg, in.source_kind(), Model::LoadOptions{});
  append_pass(*out, in, pass);
  return out;
}

}  // namespace rwkvl::compress
