// Random models of any supported shape, for benchmarks and tests (`rwkv-lite synth`). Values are
// drawn so that activations stay in a realistic range (no NaN/inf through many layers).
#include <cmath>

#include "core/error.h"
#include "model/model.h"

namespace rwkvl {

namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 0x1234567ull) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }

 private:
  uint64_t s_;
};

// Random tensors into T: vectors of n values in [lo, hi), matrices uniform in +-gain sqrt(3 / cols) (unit-variance
// outputs for gain 1).
struct Gen {
  TensorMap& T;
  Rng& rng;
  void vec(const std::string& n, int64_t len, float lo, float hi) {
    Tensor t = Tensor::alloc(n, DType::kF32, {len});
    float* d = t.mutable_f32();
    for (int64_t i = 0; i < len; ++i) d[i] = rng.uniform(lo, hi);
    T[n] = t;
  }
  void mat(const std::string& n, int64_t rows, int64_t cols, float gain) {
    Tensor t = Tensor::alloc(n, DType::kF32, {rows, cols});
    float* d = t.mutable_f32();
    const float a = gain * std::sqrt(3.0f / static_cast<float>(cols));
    for (int64_t i = 0; i < rows * cols; ++i) d[i] = rng.uniform(-a, a);
    T[n] = t;
  }
};

// v7a: a layer's merged DeepEmbed table (what a conversion stores) and its gate, about 1 +- 0.5.
void synth_deep_embed(Gen& g, const std::string& p, int64_t R, int64_t C, int64_t F, int64_t V) {
  g.mat(p + "ffn.s_emb.weight", V, R * R, 1.f);
  g.mat(p + "ffn.s1", R, C, 1.f);
  g.mat(p + "ffn.s2", F, R, 0.5f);
  g.vec(p + "ffn.s0", F, 0.5f, 1.5f);
}

}  // namespace

std::shared_ptr<Model> synth_model(ModelConfig cfg, const std::string& dtype, uint64_t seed) {
  if (cfg.arch_major < 4 || cfg.arch_major > 7) RWKVL_FAIL(kInvalidArgument, "synth: --arch must be 4, 5, 6, 7 or 7a");
  if (cfg.de_rank != 0 && (cfg.arch_major != 7 || cfg.de_rank < 1 || cfg.de_rank > 256))
    RWKVL_FAIL(kInvalidArgument, "synth: DeepEmbed tables (rank %d) need --arch 7a and a rank in [1, 256]",
               cfg.de_rank);
  if (cfg.n_layer < 1 || cfg.n_layer > 256 || cfg.n_embd < 8 || cfg.n_embd > 16384 || cfg.n_vocab < 2 ||
      cfg.n_vocab > (1 << 20))
    RWKVL_FAIL(kInvalidArgument, "synth: implausible shape (layers %d, width %d, vocab %d)", cfg.n_layer, cfg.n_embd,
               cfg.n_vocab);
  const int64_t C = cfg.n_embd;
  if (cfg.n_ffn <= 0) cfg.n_ffn = (cfg.arch_major == 5 || cfg.arch_major == 6) ? static_cast<int>(C * 7 / 2 / 32 * 32) : static_cast<int>(4 * C);
  if (cfg.arch_major >= 5) {
    if (cfg.head_size <= 0) cfg.head_size = std::min<int>(64, cfg.n_embd);
    if (C % cfg.head_size) RWKVL_FAIL(kInvalidArgument, "synth: head size %d does not divide width %d", cfg.head_size, cfg.n_embd);
    cfg.n_head = static_cast<int>(C / cfg.head_size);
    cfg.ln_x_eps = 64e-5f;
    cfg.has_gate = true;
    if (cfg.arch_major == 5) cfg.arch_minor = 2;
  } else {
    cfg.n_head = 0;
    cfg.head_size = 0;
  }
  const int64_t F = cfg.n_ffn, V = cfg.n_vocab;
  Rng rng(seed);
  TensorMap T;
  Gen gen{T, rng};
  auto vec = [&](const std::string& n, float lo, float hi) { gen.vec(n, C, lo, hi); };
  auto mat = [&](const std::string& n, int64_t rows, int64_t cols, float gain) { gen.mat(n, rows, cols, gain); };
  mat("emb.weight", V, C, 1.f);
  mat("head.weight", V, C, 1.f);
  vec("blocks.0.ln0.weight", 0.9f, 1.1f);
  vec("blocks.0.ln0.bias", -0.05f, 0.05f);
  vec("ln_out.weight", 0.9f, 1.1f);
  vec("ln_out.bias", -0.05f, 0.05f);
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    for (const char* n : {"ln1.weight", "ln2.weight"}) vec(p + n, 0.9f, 1.1f);
    for (const char* n : {"ln1.bias", "ln2.bias"}) vec(p + n, -0.05f, 0.05f);
    for (const char* n : {"att.key.weight", "att.value.weight", "att.receptance.weight"}) mat(p + n, C, C, 1.f);
    mat(p + "att.output.weight", C, C, 0.3f);
    mat(p + "ffn.key.weight", F, C, 1.f);
    mat(p + "ffn.value.weight", C, F, 0.3f);
    if (cfg.arch_major <= 6) mat(p + "ffn.receptance.weight", C, C, 1.f);
    if (cfg.arch_major >= 5) {
      vec(p + "att.ln_x.weight", 0.9f, 1.1f);
      vec(p + "att.ln_x.bias", -0.05f, 0.05f);
    }
    switch (cfg.arch_major) {
      case 4:
      case 5:
        for (const char* n : {"att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "ffn.time_mix_k", "ffn.time_mix_r"})
          vec(p + n, 0.2f, 0.9f);
        if (cfg.arch_major == 4) {
          vec(p + "att.time_decay", -3.f, -0.05f);  // canonical v4 decay = -exp(raw)
          vec(p + "att.time_first", -1.f, 1.f);
        } else {
          vec(p + "att.time_mix_g", 0.2f, 0.9f);
          mat(p + "att.gate.weight", C, C, 1.f);
          vec(p + "att.time_decay", 0.5f, 0.999f);  // canonical v5 decay = exp(-exp(raw))
          vec(p + "att.time_faaaa", -0.5f, 0.5f);
        }
        break;
      case 6: {
        for (const char* n : {"att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r",
                              "att.time_maa_g", "ffn.time_maa_k", "ffn.time_maa_r"})
          vec(p + n, 0.2f, 0.9f);
        vec(p + "att.time_decay", -4.f, 0.f);
        vec(p + "att.time_faaaa", -0.5f, 0.5f);
        mat(p + "att.gate.weight", C, C, 1.f);
        const int64_t Lm = 32, Ld = 64;
        mat(p + "att.time_maa_w1", 5 * Lm, C, 0.1f);
        Tensor w2 = Tensor::alloc(p + "att.time_maa_w2", DType::kF32, {5, C, Lm});
        for (int64_t i = 0; i < 5 * C * Lm; ++i) w2.mutable_f32()[i] = rng.uniform(-0.01f, 0.01f);
        T[w2.name] = w2;
        mat(p + "att.time_decay_w1", Ld, C, 0.1f);
        mat(p + "att.time_decay_w2", C, Ld, 0.1f);
        break;
      }
      case 7: {
        for (const char* n : {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "ffn.x_k"})
          vec(p + n, 0.2f, 0.9f);
        vec(p + "att.w0", -2.f, 0.5f);
        vec(p + "att.a0", -0.5f, 0.5f);
        vec(p + "att.k_k", 0.5f, 1.f);
        vec(p + "att.k_a", 0.5f, 1.f);
        vec(p + "att.r_k", -0.2f, 0.2f);
        // LoRA widths as in the official 0.1B model: decay 64, a 64, v 32, gate 128
        const int64_t Lw = 64, La = 64, Lv = 32, Lg = 128;
        mat(p + "att.w1", Lw, C, 0.3f);
        mat(p + "att.w2", C, Lw, 0.3f);
        mat(p + "att.a1", La, C, 0.3f);
        mat(p + "att.a2", C, La, 0.3f);
        mat(p + "att.g1", Lg, C, 0.3f);
        mat(p + "att.g2", C, Lg, 0.3f);
        if (l > 0) {
          vec(p + "att.v0", -0.5f, 0.5f);
          mat(p + "att.v1", Lv, C, 0.3f);
          mat(p + "att.v2", C, Lv, 0.3f);
        }
        if (cfg.de_rank > 0) synth_deep_embed(gen, p, cfg.de_rank, C, F, V);
        break;
      }
      default: break;
    }
  }
  Model::LoadOptions o;
  o.weight_dtype = parse_weight_dtype_option(dtype);
  return Model::from_canonical(std::move(T), cfg, FileKind::kNative, o);
}

}  // namespace rwkvl
