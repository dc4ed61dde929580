#include "compress/prune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <atomic>
#include <map>
#include <memory>
#include <numeric>

#include "compress/calibrate.h"
#include "compress/compress.h"
#include "compress/pipeline.h"
#include "core/error.h"
#include "core/threadpool.h"

namespace rwkvl::compress {

const char* prune_method_name(PruneMethod m) {
  switch (m) {
    case PruneMethod::kMagnitude: return "magnitude";
    case PruneMethod::kWanda: return "wanda";
    case PruneMethod::kDsnot: return "dsnot";
    default: return "";
  }
}
std::optional<PruneMethod> parse_prune_method(std::string_view s) {
  if (s.empty() || s == "none") return PruneMethod::kNone;
  if (s == "magnitude") return PruneMethod::kMagnitude;
  if (s == "wanda") return PruneMethod::kWanda;
  if (s == "dsnot") return PruneMethod::kDsnot;
  return std::nullopt;
}
const char* prune_store_name(PruneStore s) {
  return s == PruneStore::kDense ? "dense" : s == PruneStore::kPacked ? "packed" : "auto";
}
std::optional<PruneStore> parse_prune_store(std::string_view s) {
  if (s == "auto") return PruneStore::kAuto;
  if (s == "dense") return PruneStore::kDense;
  if (s == "packed") return PruneStore::kPacked;
  return std::nullopt;
}

NMPattern parse_nm_pattern(std::string_view s) {
  if (s.empty() || s == "unstructured") return {};
  const size_t colon = s.find(':');
  auto num = [&](std::string_view t) {
    if (t.empty() || t.size() > 3 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
      RWKVL_FAIL(kInvalidArgument, "bad N:M pattern '%.*s' (e.g. 2:4 or 4:8)", static_cast<int>(s.size()), s.data());
    return std::stoi(std::string(t));
  };
  if (colon == std::string_view::npos)
    RWKVL_FAIL(kInvalidArgument, "bad N:M pattern '%.*s' (e.g. 2:4 or 4:8)", static_cast<int>(s.size()), s.data());
  NMPattern p{num(s.substr(0, colon)), num(s.substr(colon + 1))};
  if (p.n < 1 || p.n >= p.m || p.m > 64)
    RWKVL_FAIL(kInvalidArgument, "N:M pattern %d:%d: N must be at least 1 and below M (M at most 64)", p.n, p.m);
  return p;
}

void ColumnStats::add(const float* X, size_t T) {
  const size_t cols = sum.size();
  for (size_t t = 0; t < T; ++t) {
    const float* x = X + t * cols;
    for (size_t j = 0; j < cols; ++j) {
      sum[j] += x[j];
      sumsq[j] += static_cast<double>(x[j]) * x[j];
    }
  }
  n += T;
}
double ColumnStats::var(size_t j) const {
  const double m = mean(j);
  return std::max(0.0, meansq(j) - m * m);
}

namespace {

// The indices [0, n) ordered by key ascending, ties by index (a stable, deterministic order).
std::vector<int32_t> order_by(const double* key, int64_t n) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [key](int32_t a, int32_t b) { return key[a] < key[b]; });
  return idx;
}

// DSnoT on one row whose initial mask is `keep` (cols entries): dm[j] = W[j] E[x_j] is weight j's share of the
// expected output, err = sum of dm over the pruned weights is the row's expected reconstruction error. Each cycle
// grows the pruned weight that moves err most towards 0 (ranked by dm / var^p) and prunes a kept weight of the
// opposite contribution with the smallest Wanda score, so the row keeps its number of weights.
// by_wanda (unstructured): the row's columns by Wanda score ascending, as the initial mask ordered them.
int64_t dsnot_row(const float* W, const ColumnStats& st, const double* wanda, const std::vector<int32_t>* by_wanda,
                  const DsnotOptions& o, uint8_t* keep, int64_t cols, int m_group) {
  std::vector<double> dm(static_cast<size_t>(cols)), grow_key;
  double err = 0;
  for (int64_t j = 0; j < cols; ++j) {
    dm[static_cast<size_t>(j)] = static_cast<double>(W[j]) * st.mean(static_cast<size_t>(j));
    if (!keep[j]) err += dm[static_cast<size_t>(j)];
  }
  // Growing candidates: the pruned weights, ascending by dm / var^p (the most negative first).
  std::vector<int32_t> grow;
  for (int64_t j = 0; j < cols; ++j)
    if (!keep[j]) grow.push_back(static_cast<int32_t>(j));
  auto gkey = [&](int32_t j) {
    const double v = std::max(st.var(static_cast<size_t>(j)), 1e-12);
    return dm[static_cast<size_t>(j)] / std::pow(v, o.var_power);
  };
  std::stable_sort(grow.begin(), grow.end(), [&](int32_t a, int32_t b) { return gkey(a) < gkey(b); });
  // Pruning candidates (unstructured): kept weights by Wanda score ascending, split by the sign of dm.
  std::vector<int32_t> neg, pos;
  if (m_group == 0) {
    RWKVL_CHECK(by_wanda && static_cast<int64_t>(by_wanda->size()) == cols);
    for (int32_t j : *by_wanda)
      if (keep[j]) (dm[static_cast<size_t>(j)] < 0 ? neg : pos).push_back(j);
  }
  std::vector<uint8_t> initial(keep, keep + cols);
  const double sign0 = err > 0 ? 1.0 : -1.0;
  size_t lo = 0, hi = grow.size(), ni = 0, pi = 0;
  int64_t swaps = 0;
  for (int c = 0; c < o.max_cycles && lo < hi; ++c) {
    if (!(std::fabs(err) > o.threshold)) break;
    int32_t g, p = -1;
    if (err > 0) {
      g = grow[--hi];
      if (!(dm[static_cast<size_t>(g)] > 0)) break;  // no pruned weight would lower the error
    } else {
      g = grow[lo++];
      if (!(dm[static_cast<size_t>(g)] < 0)) break;
    }
    if (m_group == 0) {
      if (err > 0) {
        if (ni < neg.size()) p = neg[ni++];
      } else if (pi < pos.size()) {
        p = pos[pi++];
      }
    } else {  // N:M: within g's group, the kept weight of the initial mask with the smallest Wanda score
      const int64_t b = g / m_group * m_group;
      double best = std::numeric_limits<double>::infinity();
      for (int64_t j = b; j < b + m_group; ++j)
        if (keep[j] && initial[static_cast<size_t>(j)] && wanda[j] < best) {
          best = wanda[j];
          p = static_cast<int32_t>(j);
        }
    }
    if (p < 0) break;
    const double after = err + dm[static_cast<size_t>(p)] - dm[static_cast<size_t>(g)];
    if (o.same_sign && (after > 0 ? 1.0 : -1.0) != sign0) break;
    keep[g] = 1;
    keep[p] = 0;
    err = after;
    ++swaps;
  }
  return swaps;
}

}  // namespace

std::vector<uint8_t> prune_mask(const float* W, int64_t rows, int64_t cols, PruneMethod method, double sparsity,
                                NMPattern pattern, const ColumnStats* stats, const DsnotOptions& dsnot,
                                int64_t* swaps) {
  RWKVL_CHECK(method != PruneMethod::kNone);
  RWKVL_CHECK(method == PruneMethod::kMagnitude || (stats && static_cast<int64_t>(stats->sum.size()) == cols));
  RWKVL_CHECK(!pattern.structured() || cols % pattern.m == 0);
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<uint8_t> keep(n, 1);
  if (swaps) *swaps = 0;
  std::vector<double> norm(static_cast<size_t>(cols), 1.0);
  if (method != PruneMethod::kMagnitude)
    for (int64_t j = 0; j < cols; ++j) norm[static_cast<size_t>(j)] = std::sqrt(stats->meansq(static_cast<size_t>(j)));
  auto score = [&](int64_t r, int64_t j) { return std::fabs(static_cast<double>(W[r * cols + j])) * norm[static_cast<size_t>(j)]; };

  if (pattern.structured()) {
    std::vector<double> key(static_cast<size_t>(pattern.m));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < cols; b += pattern.m) {
        for (int k = 0; k < pattern.m; ++k) key[static_cast<size_t>(k)] = score(r, b + k);
        const std::vector<int32_t> by = order_by(key.data(), pattern.m);
        for (int k = 0; k < pattern.m - pattern.n; ++k) keep[static_cast<size_t>(r * cols + b + by[static_cast<size_t>(k)])] = 0;
      }
  } else if (method == PruneMethod::kMagnitude) {  // one threshold for the whole matrix
    std::vector<double> key(n);
    for (size_t i = 0; i < n; ++i) key[i] = std::fabs(static_cast<double>(W[i]));
    const std::vector<int32_t> by = order_by(key.data(), static_cast<int64_t>(n));
    const size_t k = static_cast<size_t>(std::floor(sparsity * static_cast<double>(n)));
    for (size_t i = 0; i < k; ++i) keep[static_cast<size_t>(by[i])] = 0;
  } else {  // Wanda / DSnoT's start: per output row (DSnoT's swaps follow on the row, in the same Wanda order)
    std::vector<double> key(static_cast<size_t>(cols));
    const size_t k = static_cast<size_t>(std::floor(sparsity * static_cast<double>(cols)));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) key[static_cast<size_t>(j)] = score(r, j);
      const std::vector<int32_t> by = order_by(key.data(), cols);
      for (size_t i = 0; i < k; ++i) keep[static_cast<size_t>(r * cols + by[i])] = 0;
      if (method == PruneMethod::kDsnot) {
        const int64_t s = dsnot_row(W + r * cols, *stats, key.data(), &by, dsnot, keep.data() + r * cols, cols, 0);
        if (swaps) *swaps += s;
      }
    }
  }
  if (method == PruneMethod::kDsnot && pattern.structured()) {
    std::vector<double> key(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) key[static_cast<size_t>(j)] = score(r, j);
      const int64_t s = dsnot_row(W + r * cols, *stats, key.data(), nullptr, dsnot, keep.data() + r * cols, cols, pattern.m);
      if (swaps) *swaps += s;
    }
  }
  return keep;
}

// ------------------------------------------------------------------------------------------ the pass

namespace {

std::string base_name(int l, MatRole r) { return "blocks." + std::to_string(l) + "." + mat_role_name(r); }

bool pruned_before(const Model& in, const std::string& base) {
  for (const auto& p : in.passes())
    if (p.is_object() && p.contains("prune") && p["prune"].contains("matrices"))
      for (const auto& m : p["prune"]["matrices"])
        if (m.is_string() && m.get<std::string>() == base) return true;
  return false;
}

std::vector<MatRole> resolve_targets(const Model& in, const PruneOptions& o) {
  return o.targets.empty() ? architecture_targets(in.config()) : o.targets;
}

bool two_four(const PruneOptions& o) { return o.pattern.n == 2 && o.pattern.m == 4; }
// 2:4 stored as f16_2of4 (auto or packed).
bool packs(const PruneOptions& o) { return two_four(o) && o.store != PruneStore::kDense; }
// Any other pattern: the masked layout (f16 values) when it is smaller than dense (auto) or always (packed).
bool masks(const PruneOptions& o) { return !two_four(o) && o.store != PruneStore::kDense; }

}  // namespace

void validate_prune(const Model& in, const PruneOptions& o) {
  if (o.method == PruneMethod::kNone) RWKVL_FAIL(kInvalidArgument, "no pruning method (use magnitude, wanda or dsnot)");
  if (static_cast<int>(o.method) > static_cast<int>(PruneMethod::kDsnot) ||
      static_cast<int>(o.store) > static_cast<int>(PruneStore::kPacked))
    RWKVL_FAIL(kInvalidArgument, "unknown pruning method or storage value");
  if (o.pattern.structured()) {
    if (o.pattern.n < 1 || o.pattern.n >= o.pattern.m || o.pattern.m > 64)
      RWKVL_FAIL(kInvalidArgument, "N:M pattern %d:%d: N must be at least 1 and below M (M at most 64)", o.pattern.n, o.pattern.m);
    const double implied = 1.0 - static_cast<double>(o.pattern.n) / o.pattern.m;
    if (o.sparsity != 0 && std::fabs(o.sparsity - implied) > 1e-9)
      RWKVL_FAIL(kInvalidArgument, "--sparsity %g contradicts the pattern %d:%d (which prunes %g)", o.sparsity,
                 o.pattern.n, o.pattern.m, implied);
  } else if (!(o.sparsity > 0 && o.sparsity < 1)) {
    RWKVL_FAIL(kInvalidArgument, "the sparsity must lie in (0, 1), got %g", o.sparsity);
  }
  if (o.method != PruneMethod::kMagnitude && o.calib.size() < kMinCalibTokens)
    RWKVL_FAIL(kInvalidArgument, "%s needs calibration text (at least %zu tokens, got %zu)", prune_method_name(o.method),
               kMinCalibTokens, o.calib.size());
  if (o.dsnot.max_cycles < 0 || !(o.dsnot.threshold >= 0) || !std::isfinite(o.dsnot.var_power))
    RWKVL_FAIL(kInvalidArgument, "DSnoT: cycles and threshold must be >= 0 and the variance power finite");
  if (in.sparse_ffn())
    RWKVL_FAIL(kInvalidArgument, "this model's channel-mix is neuron-bundled (sparse FFN): prune the model it was made from");
  const std::vector<MatRole> targets = resolve_targets(in, o);
  for (MatRole r : targets) {
    if (std::find(std::begin(kProjectionRoles), std::end(kProjectionRoles), r) == std::end(kProjectionRoles))
      RWKVL_FAIL(kInvalidArgument, "'%s' is not a projection that can be pruned", mat_role_name(r));
    for (int l = 0; l < in.config().n_layer; ++l) {
      const Matrix& m = layer_matrix(in.layer(l), r);
      const std::string base = base_name(l, r);
      if (m.empty()) RWKVL_FAIL(kInvalidArgument, "this model has no %s (target '%s')", base.c_str(), mat_role_name(r));
      if (m.factored()) RWKVL_FAIL(kInvalidArgument, "%s is factored (low-rank): prune the model it was made from", base.c_str());
      if (m.ref.dtype == DType::kF16S24 || dtype_is_masked(m.ref.dtype) || pruned_before(in, base))
        RWKVL_FAIL(kInvalidArgument, "%s is already pruned: prune the model it was made from", base.c_str());
      if (m.ref.dtype != DType::kF32 && m.ref.dtype != DType::kF16 && m.ref.dtype != DType::kBF16)
        RWKVL_FAIL(kInvalidArgument, "%s is %s: prune before quantising (f32, f16 or bf16 matrices)", base.c_str(),
                   dtype_name(m.ref.dtype));
      if (o.pattern.structured() && m.cols % o.pattern.m != 0)
        RWKVL_FAIL(kInvalidArgument, "%s has %lld columns, not a multiple of %d (pattern %s)", base.c_str(),
                   static_cast<long long>(m.cols), o.pattern.m, o.pattern.str().c_str());
      if ((packs(o) || o.store == PruneStore::kPacked) && m.cols % 32 != 0)
        RWKVL_FAIL(kInvalidArgument, "%s has %lld columns: packed storage (%s) needs a multiple of 32 (use --prune-store dense)",
                   base.c_str(), static_cast<long long>(m.cols), packs(o) ? "f16_2of4" : "f16_masked");
    }
  }
}

namespace {

class Pruner {
 public:
  Pruner(const std::shared_ptr<const Model>& in, const PruneOptions& o, PruneReport& rep)
      : in_(in), o_(o), rep_(rep), cfg_(in->config()), cur_(in) {}

  std::shared_ptr<Model> run() {
    const auto t0 = std::chrono::steady_clock::now();
    rep_ = PruneReport{};
    validate_prune(*in_, o_);
    targets_ = resolve_targets(*in_, o_);
    tm_ = in_->tensors();
    const bool calibrate = !o_.calib.empty();
    if (calibrate)
      cal_ = std::make_unique<LayerwiseCalibration>(in_, o_.calib, std::max(1, o_.n_threads),
                                                    static_cast<size_t>(std::max(1, o_.chunk)));
    for (int l = 0; l < cfg_.n_layer; ++l) {
      prune_layer(l);
      rebind();
      if (cal_ && l + 1 < cfg_.n_layer) cal_->advance(cur_, l);
      if (o_.progress) o_.progress(l + 1, cfg_.n_layer);
    }
    rep_.pass = pass_record();
    auto out = model_with_pass(tm_, cfg_, *in_, rep_.pass);
    rep_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }

 private:
  void rebind() { cur_ = Model::from_canonical(tm_, cfg_, in_->source_kind(), Model::LoadOptions{}); }

  void prune_layer(int l) {
    std::map<MatRole, ColumnStats> stats;
    std::map<MatRole, std::vector<float>> sample;  // the first kSample inputs, for the reported error
    constexpr size_t kSample = 512;
    if (cal_) {
      TapSet taps;
      for (MatRole r : targets_) {
        stats.emplace(r, ColumnStats(layer_matrix(cur_->layer(l), r).cols));
        taps.add(l, r);
      }
      cal_->collect(cur_, l, taps, [&](int, MatRole r, const float* X, size_t T) {
        ColumnStats& s = stats.at(r);
        std::vector<float>& smp = sample[r];
        const size_t cols = s.sum.size(), have = smp.size() / cols, take = std::min(T, kSample - std::min(kSample, have));
        smp.insert(smp.end(), X, X + take * cols);
        s.add(X, T);
      });
    }
    // The layer's matrices side by side (each on one thread: the same numbers as one after another).
    std::vector<PruneMatrixReport> reps(targets_.size());
    std::vector<std::pair<Tensor, Tensor>> outs(targets_.size());
    std::atomic<size_t> next{0};
    ThreadPool pool(static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(1, o_.n_threads)), targets_.size()))));
    pool.run_on_all([&](int) {
      for (size_t i = next.fetch_add(1); i < targets_.size(); i = next.fetch_add(1)) {
        const MatRole r = targets_[i];
        auto st = stats.find(r);
        auto sm = sample.find(r);
        outs[i] = prune_matrix(l, r, st == stats.end() ? nullptr : &st->second, sm == sample.end() ? nullptr : &sm->second,
                               reps[i]);
      }
    });
    for (size_t i = 0; i < targets_.size(); ++i) {
      tm_[outs[i].first.name] = outs[i].first;
      rep_.matrices.push_back(reps[i]);
      rep_.weights += static_cast<uint64_t>(reps[i].rows * reps[i].cols);
      rep_.zeros += static_cast<uint64_t>(reps[i].zeros);
      rep_.bytes_before += reps[i].bytes_before;
      rep_.bytes_after += reps[i].bytes_after;
    }
  }

  std::pair<Tensor, Tensor> prune_matrix(int l, MatRole r, const ColumnStats* st, const std::vector<float>* smp,
                                         PruneMatrixReport& mr) const {
    const std::string name = base_name(l, r) + ".weight";
    const Tensor& t = tm_.at(name);
    std::vector<float> W = matrix_to_f32(t, nullptr);
    const int64_t rows = t.rows(), cols = t.cols();
    mr.name = base_name(l, r);
    mr.rows = rows;
    mr.cols = cols;
    mr.bytes_before = t.nbytes;
    const std::vector<uint8_t> keep =
        prune_mask(W.data(), rows, cols, o_.method, o_.sparsity, o_.pattern, st, o_.dsnot, &mr.swaps);
    std::vector<float> P(W);
    for (size_t i = 0; i < P.size(); ++i)
      if (!keep[i]) P[i] = 0.0f;
    for (float v : P) mr.zeros += v == 0.0f;
    mr.rel_error = smp && !smp->empty() ? relative_error(W, P, rows, cols, *smp) : std::numeric_limits<double>::quiet_NaN();
    auto q = packs(o_)   ? quantize_matrix(name, P.data(), rows, cols, DType::kF16S24, false)
             : masks(o_) ? store_sparse_matrix(name, P.data(), rows, cols, DType::kF16, false, o_.store == PruneStore::kPacked)
                         : quantize_matrix(name, P.data(), rows, cols, t.dtype, false);
    if (!packs(o_) && !dtype_is_masked(q.first.dtype) && q.first.dtype != t.dtype)  // masked did not pay: the source dtype
      q = quantize_matrix(name, P.data(), rows, cols, t.dtype, false);
    mr.dtype = dtype_name(q.first.dtype);
    mr.bytes_after = q.first.nbytes;
    return q;
  }

  static double relative_error(const std::vector<float>& W, const std::vector<float>& P, int64_t rows, int64_t cols,
                               const std::vector<float>& X) {
    const size_t T = X.size() / static_cast<size_t>(cols);
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (size_t t = 0; t < T; ++t) {
        double a = 0, b = 0;
        const float* x = X.data() + t * static_cast<size_t>(cols);
        for (int64_t c = 0; c < cols; ++c) {
          a += static_cast<double>(W[static_cast<size_t>(r * cols + c)]) * x[c];
          b += static_cast<double>(P[static_cast<size_t>(r * cols + c)]) * x[c];
        }
        num += (a - b) * (a - b);
        den += a * a;
      }
    return den > 0 ? num / den : 0.0;
  }

  // What the pass wrote: "f16_2of4", "f16_masked" (each matrix masked where that was smaller), or "dense".
  std::string store_name() const {
    if (packs(o_)) return "f16_2of4";
    for (const PruneMatrixReport& m : rep_.matrices)
      if (m.dtype == dtype_name(DType::kF16M)) return "f16_masked";
    return "dense";
  }

  nlohmann::json pass_record() const {
    nlohmann::json names = nlohmann::json::array(), targets = nlohmann::json::array();
    for (const PruneMatrixReport& m : rep_.matrices) names.push_back(m.name);
    for (MatRole r : targets_) targets.push_back(mat_role_name(r));
    nlohmann::json p = {{"method", prune_method_name(o_.method)},
                        {"sparsity", o_.pattern.structured() ? 1.0 - static_cast<double>(o_.pattern.n) / o_.pattern.m : o_.sparsity},
                        {"pattern", o_.pattern.str()},
                        {"store", store_name()},
                        {"targets", targets},
                        {"matrices", names},
                        {"zeros", rep_.zeros},
                        {"weights", rep_.weights}};
    if (o_.method == PruneMethod::kDsnot)
      p["dsnot"] = {{"max_cycles", o_.dsnot.max_cycles}, {"threshold", o_.dsnot.threshold},
                    {"var_power", o_.dsnot.var_power}, {"same_sign", o_.dsnot.same_sign}};
    if (!o_.calib.empty())
      p["calibration"] = {{"file", o_.calib_name}, {"fnv1a64", o_.calib_hash}, {"tokens", o_.calib.size()}};
    return {{"tool", "rwkv-lite compress"}, {"prune", p}};
  }

  std::shared_ptr<const Model> in_;
  const PruneOptions& o_;
  PruneReport& rep_;
  ModelConfig cfg_;
  std::shared_ptr<const Model> cur_;
  TensorMap tm_;
  std::vector<MatRole> targets_;
  std::unique_ptr<LayerwiseCalibration> cal_;
};

}  // namespace

std::shared_ptr<Model> prune(const std::shared_ptr<const Model>& in, const PruneOptions& o, PruneReport* report) {
  PruneReport local;
  return Pruner(in, o, report ? *report : local).run();
}

}  // namespace rwkvl::compress
