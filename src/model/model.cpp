#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/sigbus_guard.h"
#include "core/threadpool.h"
#include "model/ops.h"
#include "model/head.h"
#include "model/sparse_ffn.h"
#include "runtime/emb_cache.h"
#include "runtime/layer_stream.h"
#include "runtime/planner.h"
#include "runtime/storage.h"
#include "runtime/sysinfo.h"

namespace rwkvl {

namespace {

bool is_matrix_dtype(DType d) { return dtype_is_matrix(d); }

// WeightDType <-> its matrix dtype (whose DTypeTraits::option_name is the string); kKeep has none.
constexpr std::pair<WeightDType, DType> kWeightDTypes[] = {{WeightDType::kF32, DType::kF32},
                                                           {WeightDType::kF16, DType::kF16},
                                                           {WeightDType::kBF16, DType::kBF16},
                                                           {WeightDType::kI8, DType::kI8},
                                                           {WeightDType::kQ4, DType::kQ4}};

// True when no value is NaN or +-inf: a branch-free test of the exponent bits that compiles to vector code
// (n_embd values per token and layer: negligible next to the layer's matrix products).
bool all_finite(const float* p, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// True when the file the model's weights are mapped from was modified in place since it was mapped (the weights
// under the mapping may have changed): one stat(2).
bool model_file_changed(const Model& m) {
  for (const void* p : {m.file() ? static_cast<const void*>(m.file()->data()) : nullptr, m.emb().t.data})
    if (p && sigbus_guard::changed(p)) return true;
  return false;
}

// Non-finite activations mean corrupt weights (or state), or a model file changed under the mapping:
// stop with an error naming where they appeared instead of printing garbage.
[[noreturn]] void fail_nonfinite(const Model& m, const std::string& where) {
  const std::string& path = m.path();
  if (model_file_changed(m))
    RWKVL_FAIL(kFormat, "non-finite values %s: the model file '%s' was changed while in use", where.c_str(), path.c_str());
  RWKVL_FAIL(kFormat, "non-finite values %s (the weights are corrupt? run 'rwkv-lite verify -m %s')", where.c_str(),
             path.empty() ? "FILE" : path.c_str());
}

}  // namespace

DType weight_dtype_to_dtype(WeightDType w) {
  for (const auto& [wd, d] : kWeightDTypes)
    if (wd == w) return d;
  RWKVL_CHECK(false && "weight_dtype_to_dtype: kKeep has no dtype");
  return DType::kF32;
}

const char* weight_dtype_option_name(WeightDType w) {
  return w == WeightDType::kKeep ? "keep" : dtype_traits(weight_dtype_to_dtype(w)).option_name;
}

bool weight_dtype_from_string(const std::string& s, WeightDType* out) {
  if (s.empty() || s == "keep") {
    *out = WeightDType::kKeep;
    return true;
  }
  DType d;
  if (!dtype_from_option(s, &d)) return false;
  for (const auto& [wd, dt] : kWeightDTypes)
    if (dt == d) *out = wd;
  return true;
}

WeightDType parse_weight_dtype_option(const std::string& s) {
  WeightDType w;
  if (!weight_dtype_from_string(s, &w))
    RWKVL_FAIL(kInvalidArgument, "unknown weight dtype '%s' (use keep, f32, f16, bf16, i8 or q4)", s.c_str());
  return w;
}

DType parse_weight_dtype(const std::string& dtype) {
  DType d;
  if (!dtype_from_option(dtype, &d))
    RWKVL_FAIL(kInvalidArgument, "unknown weight dtype '%s' (use keep, f32, f16, bf16, i8 or q4)", dtype.c_str());
  return d;
}

std::vector<float> matrix_to_f32(const Tensor& src, const Tensor* src_scale) {
  const DTypeTraits& tr = dtype_traits(src.dtype);
  if (tr.scale != ScaleLayout::kRowTensor) return src.to_f32();
  RWKVL_CHECK(src_scale != nullptr);
  const int64_t rows = src.rows(), cols = src.cols();
  std::vector<float> v(static_cast<size_t>(rows * cols));
  kern::MatRef m;
  m.dtype = src.dtype;
  m.rows = rows;
  m.cols = cols;
  m.data = src.data;
  m.row_scale = src_scale->data;
  m.scale_dtype = src_scale->dtype;
  for (int64_t r = 0; r < rows; ++r) kern::get_row(m, r, v.data() + r * cols);
  return v;
}

std::pair<Tensor, Tensor> quantize_matrix(const std::string& name, const float* v, int64_t rows, int64_t cols,
                                          DType want, bool f16_scales) {
  const DTypeTraits& tr = dtype_traits(want);
  RWKVL_CHECK(tr.matrix && tr.from_f32_rows);
  Tensor out = Tensor::alloc(name, want, {rows, cols});
  if (cols % tr.block_elems != 0)
    RWKVL_FAIL(kInvalidArgument, "cannot store '%s' as %s: its %lld columns are not a multiple of %u", name.c_str(),
               tr.option_name, static_cast<long long>(cols), tr.block_elems);
  Tensor scale;
  if (tr.scale == ScaleLayout::kRowTensor)
    scale = Tensor::alloc(name + ".scale", f16_scales ? DType::kF16 : DType::kF32, {rows});
  tr.from_f32_rows(v, rows, cols, out.mutable_data(), scale.data ? scale.mutable_data() : nullptr, f16_scales);
  return {out, scale};
}

namespace {

// Converts a matrix tensor to `want`; returns {matrix, scale-or-empty}. A block dtype (q4) needs whole blocks per
// row; other matrices fall back to i8.
std::pair<Tensor, Tensor> convert_matrix(const Tensor& src, const Tensor* src_scale, DType want) {
  if (src.cols() % dtype_traits(want).block_elems != 0) want = DType::kI8;
  if (src.dtype == want) return {src, src_scale ? *src_scale : Tensor()};
  const std::vector<float> v = matrix_to_f32(src, src_scale);
  return quantize_matrix(src.name, v.data(), src.rows(), src.cols(), want, false);
}

bool is_small_lora(const std::string& name) {
  // v6/v7 LoRA and mixing matrices are tiny; they stay in the dtype they came in unless converted to f32.
  for (const char* s : {"time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2", ".w1", ".w2", ".a1", ".a2",
                        ".v1", ".v2", ".g1", ".g2"})
    if (name.find(s) != std::string::npos) return true;
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------------------ loading

std::shared_ptr<Model> Model::load(const std::string& path, const LoadOptions& opts) {
  return from_raw(read_checkpoint(path), opts);
}

std::shared_ptr<Model> Model::from_raw(RawCheckpoint raw, const LoadOptions& opts) {
  const std::string path = raw.file ? raw.file->path() : std::string("?");
  if (raw.kind == FileKind::kNative) {
    ModelConfig cfg;
    const nlohmann::json& j = raw.meta;
    // Every field is checked for its JSON type and range before it is converted: a float where an integer
    // belongs (2.5, 1e308) or an out-of-range number is an error, never an undefined cast.
    auto int_field = [&](const char* k, int64_t lo, int64_t hi) -> int {
      const nlohmann::json& v = j.at(k);
      bool ok = v.is_number_integer();
      if (ok && v.is_number_unsigned()) ok = v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo;
      else if (ok) ok = v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
      if (!ok)
        RWKVL_FAIL(kFormat, "%s: model field '%s' must be an integer in [%lld, %lld], got %s", path.c_str(), k,
                   static_cast<long long>(lo), static_cast<long long>(hi), v.dump().substr(0, 40).c_str());
      return static_cast<int>(v.get<int64_t>());
    };
    auto eps_field = [&](const char* k, bool required, float def, bool zero_ok) -> float {
      if (!required && !j.contains(k)) return def;
      const nlohmann::json& v = j.at(k);
      const double d = v.is_number() ? v.get<double>() : std::nan("");
      if (!(std::isfinite(d) && ((d > 0 && d <= 1) || (zero_ok && d == 0))))
        RWKVL_FAIL(kFormat, "%s: model field '%s' must be a number in (0, 1], got %s", path.c_str(), k,
                   v.dump().substr(0, 40).c_str());
      return static_cast<float>(d);
    };
    try {
      cfg.arch_major = int_field("arch_major", 4, 7);
      cfg.arch_minor = int_field("arch_minor", 0, 2);
      cfg.n_layer = int_field("n_layer", 1, 4096);
      cfg.n_embd = int_field("n_embd", 1, 1 << 20);
      cfg.n_vocab = int_field("n_vocab", 1, 1 << 30);
      cfg.n_head = int_field("n_head", 0, 1 << 20);
      cfg.head_size = int_field("head_size", 0, 1 << 20);
      cfg.n_ffn = int_field("n_ffn", 1, 1 << 28);
      cfg.ln_eps = eps_field("ln_eps", false, 1e-5f, false);
      cfg.ln_x_eps = eps_field("ln_x_eps", true, 0.f, cfg.arch_major == 4);
      cfg.has_gate = j.at("has_gate").get<bool>();
    } catch (const nlohmann::json::exception& e) {
      RWKVL_FAIL(kFormat, "%s: bad model metadata: %s", path.c_str(), e.what());
    }
    nlohmann::json passes = raw.meta.contains("passes") ? raw.meta["passes"] : nlohmann::json::array();
    if (!passes.is_array()) RWKVL_FAIL(kFormat, "%s: 'passes' must be an array", path.c_str());
    TensorMap tm;
    for (Tensor& t : raw.tensors) {
      if (!tm.emplace(t.name, t).second) RWKVL_FAIL(kFormat, "%s: tensor '%s' appears twice", path.c_str(), t.name.c_str());
    }
    try {
      auto m = from_canonical(std::move(tm), cfg, FileKind::kNative, opts);
      m->passes_ = std::move(passes);
      m->file_ = raw.file;
      m->path_ = raw.file ? path : std::string();
      return m;
    } catch (const Error& e) {
      throw Error(e.code(), path + ": " + e.what());
    }
  }
  const FileKind kind = raw.kind;
  const bool has_file = raw.file != nullptr;
  Canonical c = canonicalize(std::move(raw));
  auto m = from_canonical(std::move(c.tensors), c.cfg, kind, opts);
  if (has_file) m->path_ = path;
  return m;
}

std::shared_ptr<Model> Model::from_canonical(TensorMap tensors, const ModelConfig& cfg, FileKind source,
                                             const LoadOptions& opts) {
  auto m = std::shared_ptr<Model>(new Model());
  m->cfg_ = cfg;
  if (opts.ln_x_eps_override > 0 && cfg.arch_major >= 5) m->cfg_.ln_x_eps = opts.ln_x_eps_override;
  m->source_ = source;
  if (opts.weight_dtype != WeightDType::kKeep) {
    TensorMap conv;
    for (auto& [name, t] : tensors) {
      if (name.size() > 6 && name.compare(name.size() - 6, 6, ".scale") == 0) continue;
      if (t.shape.size() >= 2 && is_matrix_dtype(t.dtype) && name.find(".ffn.pred.") == std::string::npos) {
        auto it = tensors.find(name + ".scale");
        const Tensor* sc = it == tensors.end() ? nullptr : &it->second;
        // keep the tiny LoRAs exact
        const DType want = is_small_lora(name) ? DType::kF32 : weight_dtype_to_dtype(opts.weight_dtype);
        auto [q, s] = convert_matrix(t, sc, want);
        conv[name] = q;
        if (s.data) conv[s.name] = s;
      } else {
        conv[name] = t;  // vectors, and the activation predictors (kept as trained, with their scales)
        auto it = tensors.find(name + ".scale");
        if (it != tensors.end()) conv[it->first] = it->second;
      }
    }
    tensors = std::move(conv);
  }
  m->tensors_ = std::move(tensors);
  m->bind();
  return m;
}

// Binds a neuron-bundled channel-mix and its predictor (see SparseFfn in model.h), checking every
// shape and the values the runtime relies on (a permutation, finite thresholds and scales).
template <class MatFn, class VecFn>
void Model::bind_sparse_ffn(LayerWeights& L, const std::string& p, int64_t F, int64_t C, MatFn& mat, VecFn& vec,
                            std::vector<std::string>& bound) {
  SparseFfn& S = L.sffn;
  const Matrix b = mat(p + "ffn.bundle.weight", 2 * F, C);
  S.layout = b.ref;
  S.t = b.t;
  S.scale = b.scale;
  S.n = F;
  S.neuron_bytes = static_cast<size_t>(2 * kern::row_bytes(b.ref.dtype, C));
  auto find = [&](const std::string& n, DType dt, std::vector<int64_t> shape) -> const Tensor& {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) RWKVL_FAIL(kFormat, "neuron-bundled layer lacks '%s'", n.c_str());
    const Tensor& t = it->second;
    if (t.dtype != dt || t.shape != shape) {
      Tensor want;
      want.shape = shape;
      RWKVL_FAIL(kFormat, "tensor '%s' must be %s %s, got %s %s", n.c_str(), dtype_name(dt), want.shape_str().c_str(),
                 dtype_name(t.dtype), t.shape_str().c_str());
    }
    bound.push_back(n);
    return t;
  };
  const Tensor& perm = find(p + "ffn.perm", DType::kI32, {F});
  S.perm = perm.as<int32_t>();
  std::vector<uint8_t> seen(static_cast<size_t>(F), 0);
  for (int64_t j = 0; j < F; ++j) {
    const int32_t o = S.perm[j];
    if (o < 0 || o >= F || seen[static_cast<size_t>(o)]++)
      RWKVL_FAIL(kFormat, "'%sffn.perm' is not a permutation of 0..%lld (entry %lld = %d)", p.c_str(),
                 static_cast<long long>(F - 1), static_cast<long long>(j), o);
  }
  S.freq = vec(p + "ffn.freq", F);
  for (int64_t j = 0; j < F; ++j)
    if (!(S.freq[j] >= 0.f && S.freq[j] <= 1.f))
      RWKVL_FAIL(kFormat, "'%sffn.freq' holds %g at %lld (frequencies lie in [0, 1])", p.c_str(), static_cast<double>(S.freq[j]),
                 static_cast<long long>(j));
  if (!tensors_.count(p + "ffn.pred.w1")) return;
  auto it = tensors_.find(p + "ffn.pred.w1");
  const int64_t h = it->second.shape.size() == 2 ? it->second.shape[0] : 0;
  if (h <= 0 || h > 65536) RWKVL_FAIL(kFormat, "'%sffn.pred.w1' has an implausible shape %s", p.c_str(), it->second.shape_str().c_str());
  const Matrix w1 = mat(p + "ffn.pred.w1", h, C), w2 = mat(p + "ffn.pred.w2", F, h);
  for (const Matrix* m : {&w1, &w2})
    if (m->ref.dtype != DType::kF16 && m->ref.dtype != DType::kF32 && m->ref.dtype != DType::kI8)
      RWKVL_FAIL(kFormat, "predictor matrices of '%s' must be f16, f32 or i8", p.c_str());
  S.hidden = h;
  S.w1 = w1.ref;
  S.tw1 = w1.t;
  S.sw1 = w1.scale;
  S.w2 = w2.ref;
  S.tw2 = w2.t;
  S.sw2 = w2.scale;
  if (C % 8 != 0) RWKVL_FAIL(kFormat, "'%sffn.pred.bits' needs a width divisible by 8, not %lld", p.c_str(), static_cast<long long>(C));
  S.tbits = find(p + "ffn.pred.bits", DType::kU8, {F, C / 8});
  S.bits = S.tbits.as<uint8_t>();
  S.lo = vec(p + "ffn.pred.lo", F);
  S.step = vec(p + "ffn.pred.step", F);
  S.tlo = tensors_.at(p + "ffn.pred.lo");
  S.tstep = tensors_.at(p + "ffn.pred.step");
  for (int64_t j = 0; j < F; ++j)
    if (!std::isfinite(S.lo[j]) || !std::isfinite(S.step[j]))
      RWKVL_FAIL(kFormat, "'%sffn.pred.lo/step' holds a non-finite value at %lld", p.c_str(), static_cast<long long>(j));
  const float* th = vec(p + "ffn.pred.thresh", 2);
  S.tthresh = tensors_.at(p + "ffn.pred.thresh");
  if (std::isnan(th[0]) || std::isnan(th[1]))
    RWKVL_FAIL(kFormat, "'%sffn.pred.thresh' must hold two thresholds that are numbers or +-inf", p.c_str());
  S.mlp_thresh = th[0];
  S.bits_thresh = th[1];
}

// Binds a clustered head (see ClusterHead in model.h), checking that the clusters cover the vocabulary
// exactly once and that every value the runtime relies on is finite.
void Model::bind_cluster_head(std::vector<std::string>& bound) {
  const int64_t V = cfg_.n_vocab, C = cfg_.n_embd;
  const bool any = tensors_.count("head.perm") || tensors_.count("head.cluster.offsets") ||
                   tensors_.count("head.cluster.weight") || tensors_.count("head.cluster.bias") ||
                   tensors_.count("head.cluster.prior");
  if (!any) return;
  auto find = [&](const char* n, DType dt) -> const Tensor& {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) RWKVL_FAIL(kFormat, "clustered head lacks '%s'", n);
    if (it->second.dtype != dt)
      RWKVL_FAIL(kFormat, "tensor '%s' must be %s, got %s", n, dtype_name(dt), dtype_name(it->second.dtype));
    bound.push_back(n);
    return it->second;
  };
  ClusterHead& H = chead_;
  H.tperm = find("head.perm", DType::kI32);
  H.toffsets = find("head.cluster.offsets", DType::kI32);
  H.tw = find("head.cluster.weight", DType::kF32);
  H.tbias = find("head.cluster.bias", DType::kF32);
  H.tprior = find("head.cluster.prior", DType::kF32);
  if (H.tperm.shape != std::vector<int64_t>{V})
    RWKVL_FAIL(kFormat, "'head.perm' must hold %lld token ids (the vocabulary), has shape %s", static_cast<long long>(V),
               H.tperm.shape_str().c_str());
  const int64_t k = H.toffsets.shape.size() == 1 ? H.toffsets.shape[0] - 1 : 0;
  if (k < 1 || k > V)
    RWKVL_FAIL(kFormat, "'head.cluster.offsets' has an implausible shape %s", H.toffsets.shape_str().c_str());
  if (H.tw.shape != std::vector<int64_t>{k, C} || H.tbias.shape != std::vector<int64_t>{k} ||
      H.tprior.shape != std::vector<int64_t>{V})
    RWKVL_FAIL(kFormat, "clustered head of %lld clusters needs head.cluster.weight [%lld, %lld], .bias [%lld], .prior [%lld]; got %s, %s, %s",
               static_cast<long long>(k), static_cast<long long>(k), static_cast<long long>(C), static_cast<long long>(k),
               static_cast<long long>(V), H.tw.shape_str().c_str(), H.tbias.shape_str().c_str(), H.tprior.shape_str().c_str());
  H.perm = H.tperm.as<int32_t>();
  H.offsets = H.toffsets.as<int32_t>();
  std::vector<uint8_t> seen(static_cast<size_t>(V), 0);
  for (int64_t i = 0; i < V; ++i) {
    const int32_t t = H.perm[i];
    if (t < 0 || t >= V)
      RWKVL_FAIL(kFormat, "'head.perm' entry %lld is token %d, outside the vocabulary [0, %lld)", static_cast<long long>(i), t,
                 static_cast<long long>(V));
    if (seen[static_cast<size_t>(t)]++)
      RWKVL_FAIL(kFormat, "the cluster table does not cover the vocabulary exactly once: token %d appears twice in 'head.perm'", t);
  }
  if (H.offsets[0] != 0 || H.offsets[k] != V)
    RWKVL_FAIL(kFormat, "the cluster table does not cover the vocabulary exactly once: 'head.cluster.offsets' runs from %d to %d, not 0 to %lld",
               H.offsets[0], H.offsets[k], static_cast<long long>(V));
  H.largest = 0;
  for (int64_t j = 0; j < k; ++j) {
    if (H.offsets[j + 1] <= H.offsets[j])
      RWKVL_FAIL(kFormat, "'head.cluster.offsets' must increase strictly (cluster %lld is empty or negative: %d..%d)",
                 static_cast<long long>(j), H.offsets[j], H.offsets[j + 1]);
    H.largest = std::max<int64_t>(H.largest, H.offsets[j + 1] - H.offsets[j]);
  }
  H.w.dtype = DType::kF32;
  H.w.rows = k;
  H.w.cols = C;
  H.w.data = H.tw.data;
  H.bias = H.tbias.as<float>();
  H.prior = H.tprior.as<float>();
  const float* w = H.tw.as<float>();
  for (int64_t i = 0; i < k * C; ++i)
    if (!std::isfinite(w[i])) RWKVL_FAIL(kFormat, "'head.cluster.weight' holds a non-finite value at %lld", static_cast<long long>(i));
  for (int64_t j = 0; j < k; ++j) {
    if (!std::isfinite(H.bias[j])) RWKVL_FAIL(kFormat, "'head.cluster.bias' holds a non-finite value at %lld", static_cast<long long>(j));
    double mx = -1e300, sum = 0;
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i) {
      if (!std::isfinite(H.prior[i])) RWKVL_FAIL(kFormat, "'head.cluster.prior' holds a non-finite value at %d", i);
      mx = std::max(mx, static_cast<double>(H.prior[i]));
    }
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i) sum += std::exp(static_cast<double>(H.prior[i]) - mx);
    if (std::fabs(mx + std::log(sum)) > 1e-3)
      RWKVL_FAIL(kFormat, "'head.cluster.prior' of cluster %lld is not normalised (log of its total mass is %g, not 0)",
                 static_cast<long long>(j), mx + std::log(sum));
  }
  H.k = k;
}

void Model::bind() {
  const ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, F = c.n_ffn, V = c.n_vocab;
  if (c.arch_major < 4 || c.arch_major > 7) RWKVL_FAIL(kUnsupported, "unsupported RWKV version %d", c.arch_major);
  if (c.n_layer <= 0 || C <= 0 || F <= 0 || V <= 0 || c.n_layer > 4096)
    RWKVL_FAIL(kFormat, "implausible model shape: %d layers, width %lld, ffn %lld, vocab %lld", c.n_layer,
               static_cast<long long>(C), static_cast<long long>(F), static_cast<long long>(V));
  if (c.arch_major >= 5 && (c.n_head <= 0 || c.head_size <= 0 || static_cast<int64_t>(c.n_head) * c.head_size != C))
    RWKVL_FAIL(kFormat, "inconsistent heads: %d x %d != width %lld", c.n_head, c.head_size, static_cast<long long>(C));
  if (!(std::isfinite(c.ln_eps) && c.ln_eps > 0 && c.ln_eps <= 1))
    RWKVL_FAIL(kFormat, "LayerNorm epsilon %g is not a number in (0, 1]", static_cast<double>(c.ln_eps));
  if (c.arch_major >= 5 && !(std::isfinite(c.ln_x_eps) && c.ln_x_eps > 0 && c.ln_x_eps <= 1))
    RWKVL_FAIL(kFormat, "GroupNorm (ln_x) epsilon %g is not a number in (0, 1]", static_cast<double>(c.ln_x_eps));

  std::vector<std::string> bound;
  auto vec = [&](const std::string& n, int64_t len) -> const float* {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    const Tensor& t = it->second;
    if (t.dtype != DType::kF32 || t.numel() != len)
      RWKVL_FAIL(kFormat, "tensor '%s' must be f32 with %lld values, got %s %s", n.c_str(), static_cast<long long>(len),
                 dtype_name(t.dtype), t.shape_str().c_str());
    bound.push_back(n);
    return t.as<float>();
  };
  auto opt_vec = [&](const std::string& n, int64_t len) -> const float* {
    return tensors_.count(n) ? vec(n, len) : nullptr;
  };
  auto mat_at = [&](const Tensor& t, const std::string& n, int64_t rows, int64_t cols, size_t byte_offset) {
    Matrix mx;
    mx.t = t;
    mx.rows = rows;
    mx.cols = cols;
    mx.ref.dtype = t.dtype;
    mx.ref.rows = rows;
    mx.ref.cols = cols;
    mx.ref.data = static_cast<const uint8_t*>(t.data) + byte_offset;
    if (t.dtype == DType::kI8) {
      auto it = tensors_.find(n + ".scale");
      if (it == tensors_.end()) RWKVL_FAIL(kFormat, "int8 matrix '%s' has no '%s.scale'", n.c_str(), n.c_str());
      const Tensor& sc = it->second;
      if ((sc.dtype != DType::kF32 && sc.dtype != DType::kF16) || sc.numel() != t.rows())
        RWKVL_FAIL(kFormat, "'%s.scale' must be f32 or f16 with %lld values", n.c_str(), static_cast<long long>(t.rows()));
      mx.scale = sc;
      mx.ref.scale_dtype = sc.dtype;
      RWKVL_CHECK(byte_offset == 0);  // only f32 tensors are bound in slices (v6 time_maa_w2)
      mx.ref.row_scale = sc.data;
      bound.push_back(n + ".scale");
    } else if (t.dtype == DType::kQ4 && cols % 32 != 0) {
      RWKVL_FAIL(kFormat, "q4 matrix '%s' needs a multiple of 32 columns, has %lld", n.c_str(), static_cast<long long>(cols));
    }
    return mx;
  };
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols) -> Matrix {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    const Tensor& t = it->second;
    if (!is_matrix_dtype(t.dtype) || t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
      RWKVL_FAIL(kFormat, "tensor '%s' must be a [%lld, %lld] matrix, got %s %s", n.c_str(), static_cast<long long>(rows),
                 static_cast<long long>(cols), dtype_name(t.dtype), t.shape_str().c_str());
    bound.push_back(n);
    return mat_at(t, n, rows, cols, 0);
  };
  // A projection: "<base>.weight" dense, or "<base>.lr_a" (rank, cols) + "<base>.lr_b" (rows, rank)
  // [+ "<base>.lr_d" (rows) for square matrices] factored.
  auto proj = [&](const std::string& base, int64_t rows, int64_t cols) -> Matrix {
    if (tensors_.count(base + ".weight") || !tensors_.count(base + ".lr_a")) return mat(base + ".weight", rows, cols);
    const std::string na = base + ".lr_a", nb = base + ".lr_b", nd = base + ".lr_d";
    const Tensor& ta = tensors_.at(na);
    if (!tensors_.count(nb)) RWKVL_FAIL(kFormat, "factored matrix '%s' has '%s' but no '%s'", base.c_str(), na.c_str(), nb.c_str());
    const int64_t r = ta.shape.size() == 2 ? ta.shape[0] : 0;
    if (r <= 0 || r > std::max(rows, cols))
      RWKVL_FAIL(kFormat, "tensor '%s' has an implausible rank: %s for a [%lld, %lld] matrix", na.c_str(),
                 ta.shape_str().c_str(), static_cast<long long>(rows), static_cast<long long>(cols));
    const Matrix A = mat(na, r, cols), B = mat(nb, rows, r);
    Matrix mx;
    mx.rows = rows;
    mx.cols = cols;
    mx.a = A.ref;
    mx.ta = A.t;
    mx.sa = A.scale;
    mx.b = B.ref;
    mx.tb = B.t;
    mx.sb = B.scale;
    if (tensors_.count(nd)) {
      if (rows != cols) RWKVL_FAIL(kFormat, "'%s': a diagonal term needs a square matrix", nd.c_str());
      mx.d = vec(nd, rows);
      mx.td = tensors_.at(nd);
    }
    return mx;
  };
  auto lora_rank = [&](const std::string& n) -> int64_t {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    return it->second.rows();
  };

  emb_ = mat("emb.weight", V, C);
  head_ = mat("head.weight", V, C);
  bind_cluster_head(bound);
  ln0_w_ = vec("blocks.0.ln0.weight", C);
  ln0_b_ = vec("blocks.0.ln0.bias", C);
  ln_out_w_ = vec("ln_out.weight", C);
  ln_out_b_ = vec("ln_out.bias", C);
  layers_.assign(static_cast<size_t>(c.n_layer), LayerWeights{});
  for (int l = 0; l < c.n_layer; ++l) {
    LayerWeights& L = layers_[static_cast<size_t>(l)];
    const std::string p = "blocks." + std::to_string(l) + ".";
    L.ln1_w = vec(p + "ln1.weight", C);
    L.ln1_b = vec(p + "ln1.bias", C);
    L.ln2_w = vec(p + "ln2.weight", C);
    L.ln2_b = vec(p + "ln2.bias", C);
    L.att_r = proj(p + "att.receptance", C, C);
    L.att_k = proj(p + "att.key", C, C);
    L.att_v = proj(p + "att.value", C, C);
    L.att_o = proj(p + "att.output", C, C);
    L.index = l;
    if (tensors_.count(p + "ffn.bundle.weight")) {
      bind_sparse_ffn(L, p, F, C, mat, vec, bound);
    } else {
      L.ffn_k = proj(p + "ffn.key", F, C);
      L.ffn_v = proj(p + "ffn.value", C, F);
    }
    if (c.arch_major <= 6) L.ffn_r = proj(p + "ffn.receptance", C, C);
    if (c.arch_major >= 5) {
      L.ln_x_w = vec(p + "att.ln_x.weight", C);
      L.ln_x_b = vec(p + "att.ln_x.bias", C);
    }
    if (c.has_gate && c.arch_major <= 6) L.att_g = proj(p + "att.gate", C, C);
    switch (c.arch_major) {
      case 4:
      case 5:
        L.mix_k = vec(p + "att.time_mix_k", C);
        L.mix_v = vec(p + "att.time_mix_v", C);
        L.mix_r = vec(p + "att.time_mix_r", C);
        if (c.has_gate) L.mix_g = vec(p + "att.time_mix_g", C);
        L.ffn_mix_k = vec(p + "ffn.time_mix_k", C);
        L.ffn_mix_r = vec(p + "ffn.time_mix_r", C);
        L.time_decay = vec(p + "att.time_decay", C);
        L.time_first = c.arch_major == 4 ? vec(p + "att.time_first", C) : vec(p + "att.time_faaaa", C);
        break;
      case 6: {
        L.maa_x = vec(p + "att.time_maa_x", C);
        L.maa_w = vec(p + "att.time_maa_w", C);
        L.maa_k = vec(p + "att.time_maa_k", C);
        L.maa_v = vec(p + "att.time_maa_v", C);
        L.maa_r = vec(p + "att.time_maa_r", C);
        L.maa_g = vec(p + "att.time_maa_g", C);
        L.ffn_mix_k = vec(p + "ffn.time_maa_k", C);
        L.ffn_mix_r = vec(p + "ffn.time_maa_r", C);
        L.time_decay = vec(p + "att.time_decay", C);
        L.time_first = vec(p + "att.time_faaaa", C);
        const int64_t lm5 = lora_rank(p + "att.time_maa_w1");
        if (lm5 % 5 != 0) RWKVL_FAIL(kFormat, "%satt.time_maa_w1 rows %lld not a multiple of 5", p.c_str(), static_cast<long long>(lm5));
        const int64_t Lm = lm5 / 5;
        L.maa_w1 = mat(p + "att.time_maa_w1", lm5, C);
        {
          const std::string n = p + "att.time_maa_w2";
          auto it = tensors_.find(n);
          if (it == tensors_.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
          const Tensor& t = it->second;
          if (t.dtype != DType::kF32 || t.shape != std::vector<int64_t>{5, C, Lm})
            RWKVL_FAIL(kFormat, "tensor '%s' must be f32 [5, %lld, %lld], got %s %s", n.c_str(), static_cast<long long>(C),
                       static_cast<long long>(Lm), dtype_name(t.dtype), t.shape_str().c_str());
          bound.push_back(n);
          for (int b = 0; b < 5; ++b)
            L.maa_w2[b] = mat_at(t, n, C, Lm, static_cast<size_t>(b) * static_cast<size_t>(C * Lm) * 4);
        }
        const int64_t Ld = lora_rank(p + "att.time_decay_w1");
        L.decay_w1 = mat(p + "att.time_decay_w1", Ld, C);
        L.decay_w2 = mat(p + "att.time_decay_w2", C, Ld);
        break;
      }
      case 7: {
        L.x_r = vec(p + "att.x_r", C);
        L.x_w = vec(p + "att.x_w", C);
        L.x_k = vec(p + "att.x_k", C);
        L.x_v = vec(p + "att.x_v", C);
        L.x_a = vec(p + "att.x_a", C);
        L.x_g = vec(p + "att.x_g", C);
        L.w0 = vec(p + "att.w0", C);
        L.a0 = vec(p + "att.a0", C);
        L.k_k = vec(p + "att.k_k", C);
        L.k_a = vec(p + "att.k_a", C);
        L.r_k = vec(p + "att.r_k", C);
        L.ffn_mix_k = vec(p + "ffn.x_k", C);
        for (auto [m1, m2, n] : {std::tuple{&L.w1, &L.w2, "w"}, std::tuple{&L.a1, &L.a2, "a"},
                                 std::tuple{&L.v1, &L.v2, "v"}, std::tuple{&L.g1, &L.g2, "g"}}) {
          const std::string n1 = p + "att." + n + "1", n2 = p + "att." + n + "2";
          if (std::string(n) == "v" && l == 0 && !tensors_.count(n1)) continue;
          const int64_t r = lora_rank(n1);
          *m1 = mat(n1, r, C);
          *m2 = mat(n2, C, r);
        }
        L.v0 = opt_vec(p + "att.v0", C);
        if (l > 0 && (!L.v0 || L.v1.empty())) RWKVL_FAIL(kFormat, "layer %d lacks att.v0/v1/v2", l);
        break;
      }
      default: break;
    }
  }
  emb_.role = MatRole::kEmb;
  head_.role = MatRole::kHead;
  for (LayerWeights& L : layers_)
    for (MatRole r : kLayerRoles) {
      Matrix& m = layer_matrix(L, r);
      m.layer = L.index;
      m.role = r;
    }
  for (int l = 1; l < c.n_layer; ++l)
    if (layers_[static_cast<size_t>(l)].sffn.present() != layers_[0].sffn.present() ||
        layers_[static_cast<size_t>(l)].sffn.has_predictor() != layers_[0].sffn.has_predictor())
      RWKVL_FAIL(kFormat, "layer %d: either every layer's channel-mix is neuron-bundled (with or without predictors) or none", l);
  // Every tensor must have been bound: an unknown tensor means a layout we do not understand.
  std::sort(bound.begin(), bound.end());
  for (const auto& [name, t] : tensors_)
    if (!std::binary_search(bound.begin(), bound.end(), name))
      RWKVL_FAIL(kFormat, "unknown tensor '%s' %s", name.c_str(), t.shape_str().c_str());
}

// ------------------------------------------------------------------------------------------ roles

const char* mat_role_name(MatRole r) {
  switch (r) {
    case MatRole::kNone: return "none";
    case MatRole::kAttR: return "att.receptance";
    case MatRole::kAttK: return "att.key";
    case MatRole::kAttV: return "att.value";
    case MatRole::kAttO: return "att.output";
    case MatRole::kAttG: return "att.gate";
    case MatRole::kMaaW1: return "att.time_maa_w1";
    case MatRole::kMaaW2_0: return "att.time_maa_w2[0]";
    case MatRole::kMaaW2_1: return "att.time_maa_w2[1]";
    case MatRole::kMaaW2_2: return "att.time_maa_w2[2]";
    case MatRole::kMaaW2_3: return "att.time_maa_w2[3]";
    case MatRole::kMaaW2_4: return "att.time_maa_w2[4]";
    case MatRole::kDecayW1: return "att.time_decay_w1";
    case MatRole::kDecayW2: return "att.time_decay_w2";
    case MatRole::kW1: return "att.w1";
    case MatRole::kW2: return "att.w2";
    case MatRole::kA1: return "att.a1";
    case MatRole::kA2: return "att.a2";
    case MatRole::kV1: return "att.v1";
    case MatRole::kV2: return "att.v2";
    case MatRole::kG1: return "att.g1";
    case MatRole::kG2: return "att.g2";
    case MatRole::kFfnK: return "ffn.key";
    case MatRole::kFfnV: return "ffn.value";
    case MatRole::kFfnR: return "ffn.receptance";
    case MatRole::kEmb: return "emb";
    case MatRole::kHead: return "head";
    case MatRole::kCount: break;
  }
  return "?";
}

Matrix& layer_matrix(LayerWeights& L, MatRole role) {
  switch (role) {
    case MatRole::kAttR: return L.att_r;
    case MatRole::kAttK: return L.att_k;
    case MatRole::kAttV: return L.att_v;
    case MatRole::kAttO: return L.att_o;
    case MatRole::kAttG: return L.att_g;
    case MatRole::kMaaW1: return L.maa_w1;
    case MatRole::kMaaW2_0:
    case MatRole::kMaaW2_1:
    case MatRole::kMaaW2_2:
    case MatRole::kMaaW2_3:
    case MatRole::kMaaW2_4:
      return L.maa_w2[static_cast<int>(role) - static_cast<int>(MatRole::kMaaW2_0)];
    case MatRole::kDecayW1: return L.decay_w1;
    case MatRole::kDecayW2: return L.decay_w2;
    case MatRole::kW1: return L.w1;
    case MatRole::kW2: return L.w2;
    case MatRole::kA1: return L.a1;
    case MatRole::kA2: return L.a2;
    case MatRole::kV1: return L.v1;
    case MatRole::kV2: return L.v2;
    case MatRole::kG1: return L.g1;
    case MatRole::kG2: return L.g2;
    case MatRole::kFfnK: return L.ffn_k;
    case MatRole::kFfnV: return L.ffn_v;
    case MatRole::kFfnR: return L.ffn_r;
    default: break;
  }
  RWKVL_FAIL(kInvalidArgument, "'%s' is not a matrix of a layer", mat_role_name(role));
}

const Matrix& layer_matrix(const LayerWeights& L, MatRole role) {
  return layer_matrix(const_cast<LayerWeights&>(L), role);
}

// ------------------------------------------------------------------------------------------ info

uint64_t Model::n_params() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_)
    if (!(name.size() > 6 && name.compare(name.size() - 6, 6, ".scale") == 0)) n += static_cast<uint64_t>(t.numel());
  return n;
}

uint64_t Model::weight_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.nbytes;
  return n;
}

uint64_t Model::bytes_per_token() const {
  // Everything except the embedding table is read once per token; of the embedding, one row.
  const Tensor& e = emb_.t;
  uint64_t n = weight_bytes() - emb_.bytes();
  n += e.nbytes / static_cast<uint64_t>(e.rows()) + (emb_.scale.nbytes ? 4 : 0);
  return n;
}

std::string Model::weight_dtype_name() const {
  std::string d;
  for (const auto& [name, t] : tensors_) {
    if (t.shape.size() < 2 || is_small_lora(name)) continue;  // LoRAs stay f32 whatever the main dtype
    if (d.empty()) d = dtype_name(t.dtype);
    else if (d != dtype_name(t.dtype)) return "mixed";
  }
  return d;
}

size_t Model::state_floats() const { return State::floats_for(cfg_); }

// ------------------------------------------------------------------------------------------ state

size_t State::layer_floats(const ModelConfig& cfg) {
  const size_t C = static_cast<size_t>(cfg.n_embd);
  if (cfg.arch_major == 4) return 5 * C;
  return 2 * C + static_cast<size_t>(cfg.n_head) * cfg.head_size * cfg.head_size;
}

size_t State::floats_for(const ModelConfig& cfg) { return layer_floats(cfg) * static_cast<size_t>(cfg.n_layer); }

void State::reset(const ModelConfig& cfg) {
  data.assign(floats_for(cfg), 0.f);
  if (cfg.arch_major == 4) {
    const size_t C = static_cast<size_t>(cfg.n_embd);
    for (int l = 0; l < cfg.n_layer; ++l) {
      float* pp = layer(cfg, l) + 4 * C;
      for (size_t i = 0; i < C; ++i) pp[i] = -1e30f;
    }
  }
}

// ------------------------------------------------------------------------------------------ context

namespace {
constexpr int kNumBufs = 22;
}

Context::Context(std::shared_ptr<const Model> model, int n_threads)
    : model_(std::move(model)), pool_(std::make_unique<ThreadPool>(std::max(1, n_threads))) {
  bufs_.resize(kNumBufs);
}

Context::~Context() = default;

void Context::set_ffn_options(const FfnOptions& o) {
  FfnOptions with = o;  // copied first: `o` may be the current runtime's own options
  with.storage = storage_set_ ? storage_ : nullptr;
  ffn_.reset();  // a cache's file handle and thread go before the new one starts
  ffn_ = std::make_unique<FfnRuntime>(*model_, pool_.get(), with);
}

FfnRuntime& Context::ffn() {
  if (!ffn_) ffn_ = std::make_unique<FfnRuntime>(*model_, pool_.get(), FfnOptions{});
  return *ffn_;
}

void Context::set_head_options(const HeadOptions& o) {
  head_ = std::make_unique<HeadRuntime>(*model_, pool_.get(), o);
}

HeadRuntime& Context::head() {
  if (!head_) head_ = std::make_unique<HeadRuntime>(*model_, pool_.get(), HeadOptions{});
  return *head_;
}

void Context::set_storage(const StorageOptions& o) {
  const auto& f = model_->file();
  storage_ = f && f->on_disk() ? std::make_shared<Storage>(f->path(), o) : nullptr;
  storage_set_ = true;
  if (ffn_ && ffn_->cache()) {  // the neuron cache reads through the new device
    const FfnOptions keep = ffn_->options();
    set_ffn_options(keep);
  }
}

const std::shared_ptr<Storage>& Context::storage() {
  if (!storage_set_) set_storage(StorageOptions{});
  return storage_;
}

void Context::set_emb_cache(int64_t rows) {
  emb_cache_.reset();
  if (rows <= 0) return;
  const kern::MatRef& e = model_->emb().ref;
  const auto& f = model_->file();
  const auto* p = static_cast<const uint8_t*>(e.data);
  const bool in_file = f && p >= f->data() && p < f->data() + f->size();
  const std::shared_ptr<Storage>& st = in_file ? storage() : nullptr;
  emb_cache_ = std::make_unique<EmbCache>(e, st, st ? static_cast<uint64_t>(p - f->data()) : 0, rows);
}

void Context::reset_stream_stats() {
  if (stream_) stream_->reset_stats();
}

const LayerWeights& Context::layer(int l) { return stream_ ? stream_->acquire(l) : model_->layer(l); }

void Context::set_memory(const MemoryOptions& o) {
  stream_.reset();
  plan_.reset();
  head().set_stream(nullptr, 0);
  if (o.budget == 0) {
    set_emb_cache(o.emb_rows > 0 ? o.emb_rows : 0);
    return;
  }
  set_emb_cache(0);
  MemoryRequest r;
  r.budget = o.budget;
  r.prefetch = o.prefetch;
  r.emb_rows = o.emb_rows;
  r.reserve = o.reserve;
  r.chunk = o.chunk;
  r.cluster_head = head().mode() == HeadMode::kCluster;
  r.head_compare = head().options().compare;
  r.head_rows_frac = 0.25;
  for (const auto& pass : model_->passes())
    if (pass.is_object() && pass.contains("cluster_head") && pass["cluster_head"].contains("heldout") &&
        pass["cluster_head"]["heldout"].contains("rows_frac") && pass["cluster_head"]["heldout"]["rows_frac"].is_number())
      r.head_rows_frac = pass["cluster_head"]["heldout"]["rows_frac"].get<double>();
  if (ffn_ && ffn_->cache()) {  // a cache the user asked for is replaced by the plan's
    FfnOptions fo = ffn_->options();
    fo.cache_bytes = 0;
    set_ffn_options(fo);
  }
  if (o.baseline) {
    r.baseline = o.baseline;
  } else {
    // The small tensors are resident under every plan: touch them first, so the measured RSS holds them
    // and the plan does not count them twice.
    const uint64_t small = touch_small_tensors(*model_);
    release_big_parts(*model_);
    const uint64_t rss = current_rss_bytes();
    r.baseline = rss > small ? rss - small : 0;
  }
  auto plan = std::make_unique<MemoryPlan>(plan_memory(*model_, r));
  set_emb_cache(plan->emb_rows);
  bool any = false;
  for (bool b : plan->layer_streamed) any = any || b;
  if (any)
    stream_ = std::make_unique<LayerStream>(*model_, storage(), plan->layer_streamed, plan->prefetch ? 2 : 1,
                                            plan->prefetch && o.reader);
  if (plan->head_streamed) head().set_stream(storage(), plan->head_buffer);
  if (plan->ffn_streamed) {
    FfnOptions fo = ffn().options();
    fo.cache_bytes = plan->ffn_cache;
    set_ffn_options(fo);
  }
  plan_ = std::move(plan);
  plan_chunk_ = std::max<size_t>(1, o.chunk);
}

void Context::ensure_capacity(size_t T) {
  if (T <= cap_) return;
  size_t width = static_cast<size_t>(std::max(model_->config().n_embd, model_->config().n_ffn));
  for (const auto& [name, t] : model_->tensors())
    if (t.shape.size() >= 2 && name != "emb.weight" && name != "head.weight")
      width = std::max(width, static_cast<size_t>(t.shape.size() == 3 ? t.shape[1] : t.rows()));
  for (auto& b : bufs_) b.assign(T * width, 0.f);
  cap_ = T;
}

void Context::eval(State& state, const int32_t* tokens, size_t n, size_t chunk, float* logits_last,
                   float* logits_all) {
  const ModelConfig& cfg = model_->config();
  if (state.data.size() != State::floats_for(cfg))
    RWKVL_FAIL(kInvalidArgument, "state has %zu values, the model needs %zu", state.data.size(), State::floats_for(cfg));
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "token id %d at position %zu is out of range [0, %d)", tokens[i], i, cfg.n_vocab);
  // A model file overwritten in place (cp onto it, a conversion to the same path without rename) changes the
  // weights under the mapping: refuse to run on them (one stat(2) per call).
  if (model_file_changed(*model_))
    RWKVL_FAIL(kIo, "model file '%s' was modified while in use (its weights changed under the running process)",
               model_->path().c_str());
  if (chunk == 0) chunk = 32;
  // The scratch grows with the chunk (about 22 activation rows per token), and past a few hundred tokens a longer
  // chunk is no faster: a caller's huge chunk is cut to kMaxChunk instead of allocating gigabytes.
  if (chunk > kMaxChunk) chunk = kMaxChunk;
  if (plan_ && chunk > plan_chunk_) chunk = plan_chunk_;  // the plan's scratch is sized for this many tokens
  for (size_t done = 0; done < n; done += chunk) {
    const size_t T = std::min(chunk, n - done);
    const bool last = done + T == n;
    eval_chunk(state, tokens + done, T, last ? logits_last : nullptr,
               logits_all ? logits_all + done * static_cast<size_t>(cfg.n_vocab) : nullptr);
  }
}

void Context::embed(const int32_t* tokens, size_t T, float* x) {
  const ModelConfig& cfg = model_->config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const Matrix& emb = model_->emb();
  for (size_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %d)", tokens[t], cfg.n_vocab);
    if (emb_cache_) emb_cache_->get(tokens[t], x + t * C);
    else kern::get_row(emb.ref, tokens[t], x + t * C);
    ops::layer_norm(x + t * C, x + t * C, model_->ln0_w(), model_->ln0_b(), C, cfg.ln_eps);
    if (!all_finite(x + t * C, C))
      fail_nonfinite(*model_, "in the embedding of token " + std::to_string(tokens[t]) + " (emb.weight, blocks.0.ln0)");
  }
}

void Context::forward_layers(State& state, float* x, size_t T, int l_begin, int l_end) {
  const ModelConfig& cfg = model_->config();
  RWKVL_CHECK(0 <= l_begin && l_begin <= l_end && l_end <= cfg.n_layer);
  RWKVL_CHECK(state.data.size() == State::floats_for(cfg));
  ensure_capacity(T);
  // One layer at a time, so the residual stream is checked after each (scratch buffers that carry values
  // across layers, such as v7's v_first, persist between the calls).
  const size_t C = static_cast<size_t>(cfg.n_embd);
  for (int l = l_begin; l < l_end; ++l) {
    switch (cfg.arch_major) {
      case 4: forward_layers_v4(*this, state, x, T, l, l + 1); break;
      case 5: forward_layers_v5(*this, state, x, T, l, l + 1); break;
      case 6: forward_layers_v6(*this, state, x, T, l, l + 1); break;
      case 7: forward_layers_v7(*this, state, x, T, l, l + 1); break;
      default: RWKVL_FAIL(kUnsupported, "unsupported RWKV version %d", cfg.arch_major);
    }
    if (!all_finite(x, T * C))
      fail_nonfinite(*model_, "after layer " + std::to_string(l) + " of " + std::to_string(cfg.n_layer) + " (blocks." +
                                  std::to_string(l) + ".*)");
  }
}

void Context::eval_chunk(State& state, const int32_t* tokens, size_t T, float* logits_last, float* logits_all) {
  ensure_capacity(T);
  const ModelConfig& cfg = model_->config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  x_.resize(T * C);
  float* x = x_.data();
  embed(tokens, T, x);
  forward_layers(state, x, T, 0, cfg.n_layer);
  if (logits_all) {
    float* xn = buf(0);
    ops::layer_norm_rows(x, xn, model_->ln_out_w(), model_->ln_out_b(), T, C, cfg.ln_eps);
    head().logits(xn, T, logits_all);
    if (!all_finite(logits_all, T * static_cast<size_t>(cfg.n_vocab)))
      fail_nonfinite(*model_, "in the logits (ln_out, head)");
    if (logits_last) std::memcpy(logits_last, logits_all + (T - 1) * cfg.n_vocab, sizeof(float) * cfg.n_vocab);
  } else if (logits_last) {
    float* xn = buf(0);
    ops::layer_norm(x + (T - 1) * C, xn, model_->ln_out_w(), model_->ln_out_b(), C, cfg.ln_eps);
    head().logits(xn, 1, logits_last);
    if (!all_finite(logits_last, static_cast<size_t>(cfg.n_vocab))) fail_nonfinite(*model_, "in the logits (ln_out, head)");
  }
}

}  // namespace rwkvl

namespace rwkvl {

nlohmann::json config_to_json(const ModelConfig& c) {
  return {{"arch_major", c.arch_major}, {"arch_minor", c.arch_minor}, {"arch", c.arch_name()},
          {"n_layer", c.n_layer},       {"n_embd", c.n_embd},         {"n_vocab", c.n_vocab},
          {"n_head", c.n_head},         {"head_size", c.head_size},   {"n_ffn", c.n_ffn},
          {"ln_eps", c.ln_eps},         {"ln_x_eps", c.ln_x_eps},     {"has_gate", c.has_gate}};
}

void Model::save_native(const std::string& path, WeightDType dtype) const {
  std::shared_ptr<Model> conv;
  const TensorMap* tm = &tensors_;
  if (dtype != WeightDType::kKeep) {
    LoadOptions o;
    o.weight_dtype = dtype;
    conv = from_canonical(tensors_, cfg_, source_, o);
    tm = &conv->tensors_;
  }
  std::vector<Tensor> list;
  for (const auto& [name, t] : *tm) list.push_back(t);
  nlohmann::json meta = config_to_json(cfg_);
  meta["source_format"] = file_kind_name(source_);
  meta["passes"] = passes_;
  write_native(path, list, meta);
}

}  // namespace rwkvl
