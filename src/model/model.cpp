#include "model/model.h"
#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace rwkvl {

namespace {

bool is_matrix_dtype(DType d) { return dtype_is_matrix(d); }

// WeightDType <-> its matrix dtype (whose DTypeTraits::option_name is the string); kKeep has none.
constexpr std::pair<WeightDType, DType> kWeightDTypes[] = {{WeightDType::kF32, DType::kF32},
                                                           {WeightDType::kF16, DType::kF16},
                                                           {WeightDType::kBF16, DType::kBF16},
                                                           {WeightDType::kI8, DType::kI8},
                                                           {WeightDType::kQ4, DType::kQ4}};

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
  if (dtype_is_masked(src.dtype)) {
    m.kept = src.masked_kept();
    if (m.kept < 0) RWKVL_FAIL(kFormat, "%s: %zu bytes are no %s layout of %s", src.name.c_str(), src.nbytes, dtype_name(src.dtype), src.shape_str().c_str());
  }
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
               tr.name, static_cast<long long>(cols), tr.block_elems);
  Tensor scale;
  if (tr.scale == ScaleLayout::kRowTensor)
    scale = Tensor::alloc(name + ".scale", f16_scales ? DType::kF16 : DType::kF32, {rows});
  tr.from_f32_rows(v, rows, cols, out.mutable_data(), scale.data ? scale.mutable_data() : nullptr, f16_scales);
  return {out, scale};
}

std::pair<Tensor, Tensor> store_sparse_matrix(const std::string& name, const float* v, int64_t rows, int64_t cols,
                                              DType value, bool f16_scales, bool force_masked) {
  DType md;
  const bool can = masked_dtype_for(value, &md) && cols % 32 == 0 && rows > 0;
  int64_t most = 0;
  bool f16_range = true;
  for (int64_t r = 0; r < rows && can; ++r) {
    int64_t nz = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float x = v[r * cols + c];
      nz += x != 0.0f;
      f16_range = f16_range && std::fabs(x) <= 65504.0f;
    }
    most = std::max(most, nz);
  }
  const int64_t kept = can ? masked_kept_for(md, most) : 0;
  const bool masked = can && (value != DType::kF16 || f16_range) &&
                      (force_masked || masked_row_bytes(md, cols, kept) < dtype_row_bytes(value, cols));
  if (!masked) return quantize_matrix(name, v, rows, cols, value, f16_scales);
  Tensor out = Tensor::alloc_masked(name, md, rows, cols, kept);
  Tensor scale;
  if (dtype_traits(md).scale == ScaleLayout::kRowTensor)
    scale = Tensor::alloc(name + ".scale", f16_scales ? DType::kF16 : DType::kF32, {rows});
  pack_rows_masked(md, v, rows, cols, kept, out.mutable_data(), scale.data ? scale.mutable_data() : nullptr, f16_scales);
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
                        ".v1", ".v2", ".g1", ".g2", "ffn.s1", "ffn.s2"})
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
      cfg.de_rank = j.contains("de_rank") ? int_field("de_rank", 1, 256) : 0;
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
  std::vector<std::string> vocab;
  if (kind == FileKind::kGguf) {
    vocab = gguf_world_vocab(raw);
    raw = gguf_to_official(std::move(raw));
  }
  Canonical c = canonicalize(std::move(raw));
  auto m = from_canonical(std::move(c.tensors), c.cfg, kind, opts);
  if (has_file) m->path_ = path;
  m->vocab_ = std::move(vocab);
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

namespace {

// Binds canonical tensors to typed fields, checking dtype and shape, and records every name it bound (so
// that an unknown tensor can be refused).
class Binder {
 public:
  explicit Binder(const TensorMap& tensors) : tm(tensors) {}
  const TensorMap& tm;
  std::vector<std::string> bound;

  const float* vec(const std::string& n, int64_t len) {
    auto it = tm.find(n);
    if (it == tm.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    const Tensor& t = it->second;
    if (t.dtype != DType::kF32 || t.numel() != len)
      RWKVL_FAIL(kFormat, "tensor '%s' must be f32 with %lld values, got %s %s", n.c_str(), static_cast<long long>(len),
                 dtype_name(t.dtype), t.shape_str().c_str());
    bound.push_back(n);
    return t.as<float>();
  }
  const float* opt_vec(const std::string& n, int64_t len) {
    return tm.count(n) ? vec(n, len) : nullptr;
  }
  Matrix mat_at(const Tensor& t, const std::string& n, int64_t rows, int64_t cols, size_t byte_offset) {
    Matrix mx;
    mx.t = t;
    mx.rows = rows;
    mx.cols = cols;
    mx.ref.dtype = t.dtype;
    mx.ref.rows = rows;
    mx.ref.cols = cols;
    mx.ref.data = static_cast<const uint8_t*>(t.data) + byte_offset;
    if (dtype_is_masked(t.dtype)) {
      mx.ref.kept = t.masked_kept();
      if (mx.ref.kept < 0 || byte_offset != 0)
        RWKVL_FAIL(kFormat, "%s matrix '%s': %zu bytes are no layout of %s", dtype_name(t.dtype), n.c_str(), t.nbytes,
                   t.shape_str().c_str());
    }
    if (dtype_traits(t.dtype).scale == ScaleLayout::kRowTensor) {
      auto it = tm.find(n + ".scale");
      if (it == tm.end()) RWKVL_FAIL(kFormat, "%s matrix '%s' has no '%s.scale'", dtype_name(t.dtype), n.c_str(), n.c_str());
      const Tensor& sc = it->second;
      if ((sc.dtype != DType::kF32 && sc.dtype != DType::kF16) || sc.numel() != t.rows())
        RWKVL_FAIL(kFormat, "'%s.scale' must be f32 or f16 with %lld values", n.c_str(), static_cast<long long>(t.rows()));
      mx.scale = sc;
      mx.ref.scale_dtype = sc.dtype;
      RWKVL_CHECK(byte_offset == 0);  // only f32 tensors are bound in slices (v6 time_maa_w2)
      mx.ref.row_scale = sc.data;
      bound.push_back(n + ".scale");
    } else if (cols % dtype_traits(t.dtype).block_elems != 0) {
      RWKVL_FAIL(kFormat, "%s matrix '%s' needs a multiple of %u columns, has %lld", dtype_name(t.dtype), n.c_str(),
                 dtype_traits(t.dtype).block_elems, static_cast<long long>(cols));
    }
    return mx;
  }
  Matrix mat(const std::string& n, int64_t rows, int64_t cols) {
    auto it = tm.find(n);
    if (it == tm.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    const Tensor& t = it->second;
    if (!is_matrix_dtype(t.dtype) || t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
      RWKVL_FAIL(kFormat, "tensor '%s' must be a [%lld, %lld] matrix, got %s %s", n.c_str(), static_cast<long long>(rows),
                 static_cast<long long>(cols), dtype_name(t.dtype), t.shape_str().c_str());
    bound.push_back(n);
    return mat_at(t, n, rows, cols, 0);
  }
  // A projection: "<base>.weight" dense, or "<base>.lr_a" (rank, cols) + "<base>.lr_b" (rows, rank)
  // [+ "<base>.lr_d" (rows) for square matrices] factored.
  Matrix proj(const std::string& base, int64_t rows, int64_t cols) {
    if (tm.count(base + ".weight") || !tm.count(base + ".lr_a")) return mat(base + ".weight", rows, cols);
    const std::string na = base + ".lr_a", nb = base + ".lr_b", nd = base + ".lr_d";
    const Tensor& ta = tm.at(na);
    if (!tm.count(nb)) RWKVL_FAIL(kFormat, "factored matrix '%s' has '%s' but no '%s'", base.c_str(), na.c_str(), nb.c_str());
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
    if (tm.count(nd)) {
      if (rows != cols) RWKVL_FAIL(kFormat, "'%s': a diagonal term needs a square matrix", nd.c_str());
      mx.d = vec(nd, rows);
      mx.td = tm.at(nd);
    }
    return mx;
  }
  int64_t lora_rank(const std::string& n) {
    auto it = tm.find(n);
    if (it == tm.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    return it->second.rows();
  }
};

// Binds a neuron-bundled channel-mix and its predictor (see SparseFfn in model.h), checking every
// shape and the values the runtime relies on (a permutation, finite thresholds and scales).
void bind_sparse_ffn(Binder& bd, LayerWeights& L, const std::string& p, int64_t F, int64_t C) {
  const TensorMap& tensors_ = bd.tm;
  std::vector<std::string>& bound = bd.bound;
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols) { return bd.mat(n, rows, cols); };
  auto vec = [&](const std::string& n, int64_t len) { return bd.vec(n, len); };
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
void bind_cluster_head(Binder& bd, const ModelConfig& cfg, ClusterHead& H) {
  const TensorMap& tensors_ = bd.tm;
  std::vector<std::string>& bound = bd.bound;
  const int64_t V = cfg.n_vocab, C = cfg.n_embd;
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
  // The int4 version of the grouped head rows (compress --fidelities HIGH,int4), optional.
  auto lo = tensors_.find("head.weight.q4");
  if (lo != tensors_.end()) {
    const Tensor& t = lo->second;
    if (t.dtype != DType::kQ4 || t.shape != std::vector<int64_t>{V, C} || C % 32 != 0)
      RWKVL_FAIL(kFormat, "'head.weight.q4' must be q4_g32 [%lld, %lld] (the int4 version of the grouped head rows), got %s %s",
                 static_cast<long long>(V), static_cast<long long>(C), dtype_name(t.dtype), t.shape_str().c_str());
    bound.push_back("head.weight.q4");
    H.tlow = t;
    H.low.dtype = DType::kQ4;
    H.low.rows = V;
    H.low.cols = C;
    H.low.data = t.data;
  }
  H.k = k;
}

// v4 / v5: time-mix and channel-mix interpolation vectors, decay and bonus.
void bind_mix_v4v5(Binder& bd, const ModelConfig& c, const std::string& p, LayerWeights& L) {
  auto vec = [&](const std::string& n, int64_t len) { return bd.vec(n, len); };
  const int64_t C = c.n_embd;
  L.mix_k = vec(p + "att.time_mix_k", C);
  L.mix_v = vec(p + "att.time_mix_v", C);
  L.mix_r = vec(p + "att.time_mix_r", C);
  if (c.has_gate) L.mix_g = vec(p + "att.time_mix_g", C);
  L.ffn_mix_k = vec(p + "ffn.time_mix_k", C);
  L.ffn_mix_r = vec(p + "ffn.time_mix_r", C);
  L.time_decay = vec(p + "att.time_decay", C);
  L.time_first = c.arch_major == 4 ? vec(p + "att.time_first", C) : vec(p + "att.time_faaaa", C);
}

// v6: data-dependent token shift (maa) and decay LoRAs.
void bind_v6(Binder& bd, const ModelConfig& c, const std::string& p, LayerWeights& L) {
  auto vec = [&](const std::string& n, int64_t len) { return bd.vec(n, len); };
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols) { return bd.mat(n, rows, cols); };
  auto lora_rank = [&](const std::string& n) { return bd.lora_rank(n); };
  const int64_t C = c.n_embd;
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
    auto it = bd.tm.find(n);
    if (it == bd.tm.end()) RWKVL_FAIL(kFormat, "missing tensor '%s'", n.c_str());
    const Tensor& t = it->second;
    if (t.dtype != DType::kF32 || t.shape != std::vector<int64_t>{5, C, Lm})
      RWKVL_FAIL(kFormat, "tensor '%s' must be f32 [5, %lld, %lld], got %s %s", n.c_str(), static_cast<long long>(C),
                 static_cast<long long>(Lm), dtype_name(t.dtype), t.shape_str().c_str());
    bd.bound.push_back(n);
    for (int b = 0; b < 5; ++b)
      L.maa_w2[b] = bd.mat_at(t, n, C, Lm, static_cast<size_t>(b) * static_cast<size_t>(C * Lm) * 4);
  }
  const int64_t Ld = lora_rank(p + "att.time_decay_w1");
  L.decay_w1 = mat(p + "att.time_decay_w1", Ld, C);
  L.decay_w2 = mat(p + "att.time_decay_w2", C, Ld);
}

// v7: token-shift mixes, decay/in-context-learning-rate/value/gate LoRAs.
void bind_v7(Binder& bd, const ModelConfig& c, const std::string& p, int l, LayerWeights& L) {
  auto vec = [&](const std::string& n, int64_t len) { return bd.vec(n, len); };
  auto opt_vec = [&](const std::string& n, int64_t len) { return bd.opt_vec(n, len); };
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols) { return bd.mat(n, rows, cols); };
  auto lora_rank = [&](const std::string& n) { return bd.lora_rank(n); };
  const int64_t C = c.n_embd;
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
    if (std::string(n) == "v" && l == 0 && !bd.tm.count(n1)) continue;
    const int64_t r = lora_rank(n1);
    *m1 = mat(n1, r, C);
    *m2 = mat(n2, C, r);
  }
  L.v0 = opt_vec(p + "att.v0", C);
  if (l > 0 && (!L.v0 || L.v1.empty())) RWKVL_FAIL(kFormat, "layer %d lacks att.v0/v1/v2", l);
  if (c.de_rank > 0) {  // v7a DeepEmbed
    const int64_t R = c.de_rank, F = c.n_ffn;  // a missing tensor: mat / vec name it
    L.de_emb = mat(p + "ffn.s_emb.weight", c.n_vocab, R * R);
    if (bd.tm.count(p + "ffn.s_emb_x.weight")) L.de_emb_x = mat(p + "ffn.s_emb_x.weight", R * R, C);
    L.de_s1 = mat(p + "ffn.s1", R, C);
    L.de_s2 = mat(p + "ffn.s2", F, R);
    L.de_s0 = vec(p + "ffn.s0", F);
  }
}

// One layer: norms, projections (dense or factored), the channel-mix (plain or neuron-bundled), then the
// parts of its architecture.
void bind_layer(Binder& bd, const ModelConfig& c, int l, LayerWeights& L) {
  const int64_t C = c.n_embd, F = c.n_ffn;
  auto vec = [&](const std::string& n, int64_t len) { return bd.vec(n, len); };
  auto proj = [&](const std::string& base, int64_t rows, int64_t cols) { return bd.proj(base, rows, cols); };
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
  if (bd.tm.count(p + "ffn.bundle.weight")) {
    bind_sparse_ffn(bd, L, p, F, C);
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
    case 5: bind_mix_v4v5(bd, c, p, L); break;
    case 6: bind_v6(bd, c, p, L); break;
    case 7: bind_v7(bd, c, p, l, L); break;
    default: break;
  }
}

}  // namespace

void Model::bind() {
  const ModelConfig& c = cfg_;
  const int64_t C = c.n_embd, F = c.n_ffn, V = c.n_vocab;
  if (c.arch_major < 4 || c.arch_major > 7) RWKVL_FAIL(kUnsupported, "unsupported RWKV version %d", c.arch_major);
  if (c.de_rank != 0 && (c.arch_major != 7 || c.de_rank < 0 || c.de_rank > 256))
    RWKVL_FAIL(kFormat, "DeepEmbed rank %d on an RWKV-%d model (7a only, rank 1-256)", c.de_rank, c.arch_major);
  if (c.n_layer <= 0 || C <= 0 || F <= 0 || V <= 0 || c.n_layer > 4096)
    RWKVL_FAIL(kFormat, "implausible model shape: %d layers, width %lld, ffn %lld, vocab %lld", c.n_layer,
               static_cast<long long>(C), static_cast<long long>(F), static_cast<long long>(V));
  if (c.arch_major >= 5 && (c.n_head <= 0 || c.head_size <= 0 || static_cast<int64_t>(c.n_head) * c.head_size != C))
    RWKVL_FAIL(kFormat, "inconsistent heads: %d x %d != width %lld", c.n_head, c.head_size, static_cast<long long>(C));
  if (!(std::isfinite(c.ln_eps) && c.ln_eps > 0 && c.ln_eps <= 1))
    RWKVL_FAIL(kFormat, "LayerNorm epsilon %g is not a number in (0, 1]", static_cast<double>(c.ln_eps));
  if (c.arch_major >= 5 && !(std::isfinite(c.ln_x_eps) && c.ln_x_eps > 0 && c.ln_x_eps <= 1))
    RWKVL_FAIL(kFormat, "GroupNorm (ln_x) epsilon %g is not a number in (0, 1]", static_cast<double>(c.ln_x_eps));

  Binder bd(tensors_);
  emb_ = bd.mat("emb.weight", V, C);
  head_ = bd.mat("head.weight", V, C);
  bind_cluster_head(bd, c, chead_);
  ln0_w_ = bd.vec("blocks.0.ln0.weight", C);
  ln0_b_ = bd.vec("blocks.0.ln0.bias", C);
  ln_out_w_ = bd.vec("ln_out.weight", C);
  ln_out_b_ = bd.vec("ln_out.bias", C);
  layers_.assign(static_cast<size_t>(c.n_layer), LayerWeights{});
  for (int l = 0; l < c.n_layer; ++l) bind_layer(bd, c, l, layers_[static_cast<size_t>(l)]);
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
  std::sort(bd.bound.begin(), bd.bound.end());
  for (const auto& [name, t] : tensors_)
    if (!std::binary_search(bd.bound.begin(), bd.bound.end(), name))
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
  // Scales and the int4 version of the head (the same parameters at another fidelity) are not parameters.
  for (const auto& [name, t] : tensors_)
    if (!(name.size() > 6 && name.compare(name.size() - 6, 6, ".scale") == 0) && name != "head.weight.q4")
      n += static_cast<uint64_t>(t.numel());
  return n;
}

uint64_t Model::weight_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.nbytes;
  return n;
}

uint64_t Model::bytes_per_token() const {
  // Everything except the embedding table (and v7a's DeepEmbed tables) is read once per token; of those, one row.
  const Tensor& e = emb_.t;
  uint64_t n = weight_bytes() - emb_.bytes() - chead_.tlow.nbytes;  // the int4 head version is an alternative
  n += e.nbytes / static_cast<uint64_t>(e.rows()) + (emb_.scale.nbytes ? 4 : 0);
  for (const LayerWeights& L : layers_)  // v7a: of each DeepEmbed table, one row (+ its scale)
    if (L.deep_embed()) {
      const kern::MatRef& r = L.de_emb.ref;
      n -= L.de_emb.bytes();
      n += static_cast<uint64_t>(kern::mat_row_bytes(r)) + L.de_emb.scale.nbytes / static_cast<uint64_t>(r.rows);
    }
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

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j = {{"arch_major", c.arch_major}, {"arch_minor", c.arch_minor}, {"arch", c.arch_name()},
                      {"n_layer", c.n_layer},       {"n_embd", c.n_embd},         {"n_vocab", c.n_vocab},
                      {"n_head", c.n_head},         {"head_size", c.head_size},   {"n_ffn", c.n_ffn},
                      {"ln_eps", c.ln_eps},         {"ln_x_eps", c.ln_x_eps},     {"has_gate", c.has_gate}};
  if (c.de_rank > 0) j["de_rank"] = c.de_rank;  // only in DeepEmbed files
  return j;
}

void Model::save_native(const std::string& path, WeightDType dtype) const {
  if (dtype == WeightDType::kKeep) return write_tensors(path, tensors_, nullptr);
  LoadOptions o;
  o.weight_dtype = dtype;
  const std::shared_ptr<Model> conv = from_canonical(tensors_, cfg_, source_, o);
  write_tensors(path, conv->tensors_, nullptr);
}

void Model::save_native(const std::string& path, const std::function<void(const Tensor&)>& read) const {
  write_tensors(path, tensors_, read);
}

void Model::write_tensors(const std::string& path, const TensorMap& tm,
                          const std::function<void(const Tensor&)>& read) const {
  std::vector<Tensor> list;
  for (const auto& [name, t] : tm) list.push_back(t);
  nlohmann::json meta = config_to_json(cfg_);
  meta["source_format"] = file_kind_name(source_);
  meta["passes"] = passes_;
  write_native(path, list, meta, read);
}

}  // namespace rwkvl
