// Maps the tensors of a source checkpoint onto the canonical layout documented in model.h.
// Two source conventions exist:
//   * official (PyTorch .pth as published by BlinkDL, and safetensors with the same names): raw
//     parameters, LoRA matrices stored (in, out), vectors shaped (1, 1, C);
//   * rwkv.cpp files: decays already transformed (v4: -exp; v5: exp(-exp); v5 time_first: exp),
//     LoRA matrices already (out, in), v7 mixes concatenated into att.x_rwkvag.
// Every tensor of the source must be consumed; anything left over is reported as unknown.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/error.h"
#include "model/model.h"

namespace rwkvl {

namespace {

class Mapper {
 public:
  Mapper(RawCheckpoint& raw) : kind_(raw.kind), file_(raw.file ? raw.file->path() : std::string("?")) {
    for (Tensor& t : raw.tensors) {
      if (!src_.emplace(t.name, t).second) RWKVL_FAIL(kFormat, "%s: tensor '%s' appears twice", file_.c_str(), t.name.c_str());
    }
  }
  bool official() const { return kind_ != FileKind::kRwkvCpp; }
  bool has(const std::string& n) const { return src_.count(n) != 0; }
  const Tensor& peek(const std::string& n) const {
    auto it = src_.find(n);
    if (it == src_.end()) RWKVL_FAIL(kFormat, "%s: missing tensor '%s'", file_.c_str(), n.c_str());
    return it->second;
  }
  const Tensor& take(const std::string& n) {
    const Tensor& t = peek(n);
    used_.insert(n);
    return t;
  }
  const std::string& file() const { return file_; }

  // A float vector of exactly `n` values (any float dtype, any shape with n elements).
  std::vector<float> vec(const std::string& n, int64_t numel) {
    const Tensor& t = take(n);
    if (t.numel() != numel)
      RWKVL_FAIL(kFormat, "%s: tensor '%s' has shape %s, expected %lld values", file_.c_str(), n.c_str(),
                 t.shape_str().c_str(), static_cast<long long>(numel));
    return to_f32(t);
  }
  // A vector of C values given per channel (C values) or per head (H values, repeated S times).
  std::vector<float> head_vec(const std::string& n, int64_t H, int64_t S) {
    const Tensor& t = take(n);
    std::vector<float> v = to_f32(t);
    if (t.numel() == H * S) return v;
    if (t.numel() == H) {
      std::vector<float> out(static_cast<size_t>(H * S));
      for (int64_t h = 0; h < H; ++h)
        for (int64_t s = 0; s < S; ++s) out[static_cast<size_t>(h * S + s)] = v[static_cast<size_t>(h)];
      return out;
    }
    RWKVL_FAIL(kFormat, "%s: tensor '%s' has shape %s, expected %lld or %lld values", file_.c_str(), n.c_str(),
               t.shape_str().c_str(), static_cast<long long>(H * S), static_cast<long long>(H));
  }

  // A matrix; `transpose` when the source stores (in, out). Result is (rows, cols) row-major.
  Tensor mat(const std::string& n, const std::string& out_name, int64_t rows, int64_t cols, bool transpose) {
    const Tensor& t = take(n);
    const int64_t sr = transpose ? cols : rows, sc = transpose ? rows : cols;
    if (t.shape.size() < 2 || t.rows() != sr || t.cols() != sc)
      RWKVL_FAIL(kFormat, "%s: tensor '%s' has shape %s, expected [%lld, %lld]", file_.c_str(), n.c_str(),
                 t.shape_str().c_str(), static_cast<long long>(sr), static_cast<long long>(sc));
    return matrix_copy(t, out_name, rows, cols, transpose);
  }

  Tensor matrix_copy(const Tensor& t, const std::string& out_name, int64_t rows, int64_t cols, bool transpose) {
    if (t.dtype == DType::kQ5_1 || (transpose && t.dtype != DType::kF32 && t.dtype != DType::kF16 &&
                                    t.dtype != DType::kBF16)) {
      std::vector<float> v = to_f32(t);
      Tensor o = Tensor::alloc(out_name, DType::kF32, {rows, cols});
      float* d = o.mutable_f32();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          d[r * cols + c] = transpose ? v[static_cast<size_t>(c * rows + r)] : v[static_cast<size_t>(r * cols + c)];
      return o;
    }
    // q4_g32 comes from GGUF files (their Q4_0 / Q4_1 blocks), held as they are.
    if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16 && t.dtype != DType::kQ4)
      RWKVL_FAIL(kUnsupported, "%s: tensor '%s' has dtype %s, not a supported matrix type", file_.c_str(),
                 t.name.c_str(), dtype_name(t.dtype));
    if (!transpose) {
      Tensor o = t;  // zero-copy view (keeps the mapping alive)
      o.name = out_name;
      o.shape = {rows, cols};
      return o;
    }
    const size_t es = dtype_info(t.dtype).block_bytes;
    Tensor o = Tensor::alloc(out_name, t.dtype, {rows, cols});
    auto* d = static_cast<uint8_t*>(o.mutable_data());
    const auto* s = static_cast<const uint8_t*>(t.data);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        std::memcpy(d + static_cast<size_t>(r * cols + c) * es, s + static_cast<size_t>(c * rows + r) * es, es);
    return o;
  }

  void check_all_used() const {
    for (const auto& [name, t] : src_)
      if (!used_.count(name))
        RWKVL_FAIL(kFormat, "%s: unknown tensor '%s' %s (not part of a recognised RWKV layout)", file_.c_str(),
                   name.c_str(), t.shape_str().c_str());
  }

  static std::vector<float> to_f32(const Tensor& t) {
    if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16 && t.dtype != DType::kQ5_1 &&
        t.dtype != DType::kQ4)
      RWKVL_FAIL(kUnsupported, "tensor '%s' has dtype %s, expected a float type", t.name.c_str(), dtype_name(t.dtype));
    return t.to_f32();
  }

 private:
  FileKind kind_;
  std::string file_;
  std::map<std::string, Tensor> src_;
  std::set<std::string> used_;
};

void put_vec(TensorMap& out, const std::string& name, const std::vector<float>& v) {
  out[name] = Tensor::from_f32(name, {static_cast<int64_t>(v.size())}, v.data());
}

}  // namespace

std::string ModelConfig::arch_name() const {
  char buf[16];
  if (arch_major == 5)
    std::snprintf(buf, sizeof buf, "v5.%d", arch_minor);
  else if (arch_major == 7 && de_rank > 0) std::snprintf(buf, sizeof buf, "v7a");
  else
    std::snprintf(buf, sizeof buf, "v%d", arch_major);
  return buf;
}

namespace {

// Shapes and architecture from the tensor names: width, vocabulary, layers, version, FFN width, heads.
ModelConfig detect_config(const Mapper& m) {
  ModelConfig cfg;
  const Tensor& emb = m.peek("emb.weight");
  if (emb.shape.size() != 2) RWKVL_FAIL(kFormat, "%s: emb.weight must be 2-D, got %s", m.file().c_str(), emb.shape_str().c_str());
  cfg.n_vocab = static_cast<int>(emb.shape[0]);
  cfg.n_embd = static_cast<int>(emb.shape[1]);
  const int64_t C = cfg.n_embd, V = cfg.n_vocab;
  if (C <= 0 || V <= 0 || C > (1 << 16) || V > (1 << 24))
    RWKVL_FAIL(kFormat, "%s: implausible emb.weight shape %s", m.file().c_str(), emb.shape_str().c_str());
  while (m.has("blocks." + std::to_string(cfg.n_layer) + ".ln1.weight")) ++cfg.n_layer;
  if (cfg.n_layer == 0) RWKVL_FAIL(kFormat, "%s: no layers found (blocks.0.ln1.weight missing)", m.file().c_str());

  const std::string b0 = "blocks.0.";
  if (m.has(b0 + "att.k_k") || m.has(b0 + "att.x_rwkvag") || m.has(b0 + "att.x_r")) {
    cfg.arch_major = 7;
  } else if (m.has(b0 + "att.time_maa_x")) {
    cfg.arch_major = 6;
  } else if (m.has(b0 + "att.ln_x.weight")) {
    cfg.arch_major = 5;
    cfg.arch_minor = m.has(b0 + "att.gate.weight") ? 2 : 1;  // rwkv.cpp's naming of the two v5 variants
  } else if (m.has(b0 + "att.time_first")) {
    cfg.arch_major = 4;
  } else {
    RWKVL_FAIL(kFormat, "%s: cannot recognise the RWKV version from the tensor names", m.file().c_str());
  }
  cfg.has_gate = cfg.arch_major >= 6 || (cfg.arch_major == 5 && cfg.arch_minor >= 2);
  const Tensor& fk = m.peek(b0 + "ffn.key.weight");
  cfg.n_ffn = static_cast<int>(fk.rows());

  // Heads: v5/v6 from time_decay / time_faaaa, v7 from r_k (H, S).
  if (cfg.arch_major == 5) {
    cfg.n_head = static_cast<int>(m.peek(b0 + "att.time_decay").rows());
  } else if (cfg.arch_major == 6) {
    cfg.n_head = static_cast<int>(m.peek(b0 + "att.time_faaaa").shape[0]);
  } else if (cfg.arch_major == 7) {
    cfg.n_head = static_cast<int>(m.peek(b0 + "att.r_k").shape.size() >= 2 ? m.peek(b0 + "att.r_k").shape[0] : 1);
  }
  if (cfg.arch_major >= 5) {
    if (cfg.n_head <= 0 || C % cfg.n_head != 0)
      RWKVL_FAIL(kFormat, "%s: head count %d does not divide width %lld", m.file().c_str(), cfg.n_head, static_cast<long long>(C));
    cfg.head_size = static_cast<int>(C / cfg.n_head);
  }
  // RWKV-7a (DeepEmbed): per-layer token tables ffn.s_emb (V, R*R), R from ffn.s1 (C, R) in the official layout.
  // RWKV-7b adds DeepEmbedAttention (qkv.*) and a KV cache: a different model, refused rather than half run.
  if (cfg.arch_major == 7 && m.has(b0 + "ffn.s_emb.weight")) {
    if (m.has(b0 + "qkv.qq.weight") || m.has(b0 + "qkv.k_emb.weight"))
      RWKVL_FAIL(kUnsupported, "%s: RWKV-7b (DeepEmbed attention, blocks.N.qkv.*) is not supported; RWKV-7 and 7a are",
                 m.file().c_str());
    const Tensor& s1 = m.peek(b0 + "ffn.s1");
    const int64_t R = s1.shape.size() == 2 ? (m.official() ? s1.cols() : s1.rows()) : 0;
    if (R <= 0 || R > 256)
      RWKVL_FAIL(kFormat, "%s: blocks.0.ffn.s1 has shape %s, expected [%lld, R] with R in [1, 256]", m.file().c_str(),
                 s1.shape_str().c_str(), static_cast<long long>(C));
    cfg.de_rank = static_cast<int>(R);
  }
  // GroupNorm eps: rwkv.cpp runs v5.x with 1e-5 (its files must reproduce its outputs); official code 64e-5.
  if (cfg.arch_major >= 5) cfg.ln_x_eps = (!m.official() && cfg.arch_major == 5) ? 1e-5f : 64e-5f;
  return cfg;
}

// The tensors of one layer `p` ("blocks.<l>."), moved from the source into the canonical map.
struct LayerMap {
  Mapper& m;
  TensorMap& T;
  const ModelConfig& cfg;
  const std::string p;
  const bool off;
  const int64_t C, F, H, S;

  LayerMap(Mapper& mapper, TensorMap& out, const ModelConfig& c, int l)
      : m(mapper), T(out), cfg(c), p("blocks." + std::to_string(l) + "."), off(mapper.official()), C(c.n_embd),
        F(c.n_ffn), H(c.n_head), S(c.head_size) {}

  void vec(const std::string& n) { put_vec(T, p + n, m.vec(p + n, C)); }
  void mat(const std::string& n, int64_t rows, int64_t cols, bool tr) { T[p + n] = m.mat(p + n, p + n, rows, cols, tr); }

  // The tensors every version has.
  void common() {
    for (const char* n : {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"}) vec(n);
    for (const char* n : {"att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight"})
      mat(n, C, C, false);
    mat("ffn.key.weight", F, C, false);
    mat("ffn.value.weight", C, F, false);
  }

  void v4() {
    for (const char* n : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r"})
      vec(n);
    std::vector<float> d = m.vec(p + "att.time_decay", C);
    if (off)
      for (float& x : d) x = -std::exp(x);
    put_vec(T, p + "att.time_decay", d);
    vec("att.time_first");
    mat("ffn.receptance.weight", C, C, false);
  }

  void v5() {
    for (const char* n : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r",
                          "att.ln_x.weight", "att.ln_x.bias"})
      vec(n);
    if (cfg.has_gate) {
      vec("att.time_mix_g");
      mat("att.gate.weight", C, C, false);
    }
    std::vector<float> d = m.head_vec(p + "att.time_decay", H, S);
    if (off)
      for (float& x : d) x = std::exp(-std::exp(x));
    put_vec(T, p + "att.time_decay", d);
    if (m.has(p + "att.time_faaaa")) {
      put_vec(T, p + "att.time_faaaa", m.head_vec(p + "att.time_faaaa", H, S));
    } else {
      std::vector<float> u = m.head_vec(p + "att.time_first", H, S);
      if (off)
        for (float& x : u) x = std::exp(x);
      put_vec(T, p + "att.time_faaaa", u);
    }
    mat("ffn.receptance.weight", C, C, false);
  }

  void v6() {
    for (const char* n : {"att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r",
                          "att.time_maa_g", "ffn.time_maa_k", "ffn.time_maa_r", "att.ln_x.weight", "att.ln_x.bias"})
      vec(n);
    put_vec(T, p + "att.time_decay", m.vec(p + "att.time_decay", C));
    put_vec(T, p + "att.time_faaaa", m.vec(p + "att.time_faaaa", C));
    mat("att.gate.weight", C, C, false);
    mat("ffn.receptance.weight", C, C, false);
    // time_maa_w1: official (C, 5*Lm), rwkv.cpp (5*Lm, C)
    const Tensor& w1 = m.peek(p + "att.time_maa_w1");
    const int64_t lm5 = off ? w1.cols() : w1.rows();
    if (lm5 % 5 != 0) RWKVL_FAIL(kFormat, "%s: %satt.time_maa_w1 has shape %s", m.file().c_str(), p.c_str(), w1.shape_str().c_str());
    mat("att.time_maa_w1", lm5, C, off);
    const int64_t Lm = lm5 / 5;
    // time_maa_w2: official (5, Lm, C), rwkv.cpp (5, C, Lm) -> canonical (5, C, Lm)
    const Tensor& w2 = m.take(p + "att.time_maa_w2");
    if (w2.shape.size() != 3 || w2.shape[0] != 5 || w2.shape[1] != (off ? Lm : C) || w2.shape[2] != (off ? C : Lm))
      RWKVL_FAIL(kFormat, "%s: %satt.time_maa_w2 has shape %s", m.file().c_str(), p.c_str(), w2.shape_str().c_str());
    {
      std::vector<float> v = Mapper::to_f32(w2);
      Tensor o = Tensor::alloc(p + "att.time_maa_w2", DType::kF32, {5, C, Lm});
      float* d = o.mutable_f32();
      for (int64_t b = 0; b < 5; ++b)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t j = 0; j < Lm; ++j)
            d[(b * C + c) * Lm + j] = off ? v[static_cast<size_t>((b * Lm + j) * C + c)] : v[static_cast<size_t>((b * C + c) * Lm + j)];
      T[o.name] = o;
    }
    const Tensor& d1 = m.peek(p + "att.time_decay_w1");
    const int64_t Ld = off ? d1.cols() : d1.rows();
    mat("att.time_decay_w1", Ld, C, off);
    mat("att.time_decay_w2", C, Ld, off);
  }

  void v7(int l) {
    if (m.has(p + "att.x_rwkvag")) {
      std::vector<float> v = m.vec(p + "att.x_rwkvag", 6 * C);
      const char* names[6] = {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g"};
      for (int b = 0; b < 6; ++b)
        put_vec(T, p + names[b], std::vector<float>(v.begin() + b * C, v.begin() + (b + 1) * C));
    } else {
      for (const char* n : {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g"}) vec(n);
    }
    for (const char* n : {"att.w0", "att.a0", "att.k_k", "att.k_a", "att.r_k", "ffn.x_k", "att.ln_x.weight",
                          "att.ln_x.bias"})
      vec(n);
    const bool has_v = l > 0 || m.has(p + "att.v0");
    if (has_v) vec("att.v0");
    for (const char* lo : {"w", "a", "v", "g"}) {
      if (std::string(lo) == "v" && !has_v) continue;
      const std::string n1 = std::string("att.") + lo + "1", n2 = std::string("att.") + lo + "2";
      const Tensor& t1 = m.peek(p + n1);
      const int64_t Lr = off ? t1.cols() : t1.rows();
      mat(n1, Lr, C, off);
      mat(n2, C, Lr, off);
    }
    if (cfg.de_rank > 0) v7a();
  }

  // DeepEmbed: the table and its merge matrix as stored; s1 (C, R) and s2 (R, F) officially (in, out).
  void v7a() {
    const int64_t R = cfg.de_rank, V = cfg.n_vocab;
    mat("ffn.s_emb.weight", V, R * R, false);
    if (m.has(p + "ffn.s_emb_x.weight")) mat("ffn.s_emb_x.weight", R * R, C, false);
    mat("ffn.s1", R, C, off);
    mat("ffn.s2", F, R, off);
    put_vec(T, p + "ffn.s0", m.vec(p + "ffn.s0", F));
  }
};

void map_layer(Mapper& m, TensorMap& T, const ModelConfig& cfg, int l) {
  LayerMap lm(m, T, cfg, l);
  lm.common();
  switch (cfg.arch_major) {
    case 4: lm.v4(); break;
    case 5: lm.v5(); break;
    case 6: lm.v6(); break;
    case 7: lm.v7(l); break;
    default: break;
  }
}

}  // namespace

Canonical canonicalize(RawCheckpoint raw) {
  Mapper m(raw);
  Canonical out;
  out.cfg = detect_config(m);
  const ModelConfig& cfg = out.cfg;
  TensorMap& T = out.tensors;
  const int64_t C = cfg.n_embd, V = cfg.n_vocab;

  T["emb.weight"] = m.mat("emb.weight", "emb.weight", V, C, false);
  put_vec(T, "blocks.0.ln0.weight", m.vec("blocks.0.ln0.weight", C));
  put_vec(T, "blocks.0.ln0.bias", m.vec("blocks.0.ln0.bias", C));
  put_vec(T, "ln_out.weight", m.vec("ln_out.weight", C));
  put_vec(T, "ln_out.bias", m.vec("ln_out.bias", C));
  T["head.weight"] = m.mat("head.weight", "head.weight", V, C, false);

  for (int l = 0; l < cfg.n_layer; ++l) map_layer(m, T, cfg, l);
  m.check_all_used();
  if (raw.kind == FileKind::kRwkvCpp) {
    const int hv = raw.meta.value("n_vocab", -1), he = raw.meta.value("n_embed", -1), hl = raw.meta.value("n_layer", -1);
    if (hv != cfg.n_vocab || he != cfg.n_embd || hl != cfg.n_layer)
      RWKVL_FAIL(kFormat, "%s: header says vocab %d, width %d, %d layers but the tensors have %d, %d, %d", m.file().c_str(), hv,
                 he, hl, cfg.n_vocab, cfg.n_embd, cfg.n_layer);
  }
  return out;
}

}  // namespace rwkvl
