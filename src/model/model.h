// The model: configuration, weights bound to canonical tensors, recurrent state, and the forward
// pass entry point. The math of each architecture version lives in its own file (rwkv4.cpp ...
// rwkv7.cpp); file formats live in src/format/; this header is what ties them together.
//
// Canonical tensor layout (what the native format stores and every forward pass reads), per layer
// prefix "blocks.N.". Matrices are row-major (out_features, in_features) in any matrix dtype (f32,
// f16, bf16, i8 + "<name>.scale"); everything else is a float32 vector. C = n_embd, F = n_ffn,
// H x S = heads x head size (H*S = C), L* = LoRA widths.
//   emb.weight (V, C)   blocks.0.ln0.{weight,bias} (C)   ln_out.{weight,bias} (C)   head.weight (V, C)
//   ln1/ln2.{weight,bias} (C)
//   v4:  att.time_mix_{k,v,r} (C)  att.time_decay (C) = -exp(raw)  att.time_first (C)
//        att.{key,value,receptance,output}.weight (C, C)
//   v5:  att.time_mix_{k,v,r[,g]} (C)  att.time_decay (C) = exp(-exp(raw)), per-head values repeated
//        att.time_faaaa (C) = u (v5.0 files: exp(time_first))   att.ln_x.{weight,bias} (C)
//        att.{key,value,receptance,output[,gate]}.weight (C, C)
//   v6:  att.time_maa_{x,w,k,v,r,g} (C)  att.time_maa_w1 (5*Lm, C)  att.time_maa_w2 (5, C, Lm)
//        att.time_decay (C) raw  att.time_decay_w1 (Ld, C)  att.time_decay_w2 (C, Ld)
//        att.time_faaaa (C)  att.ln_x  att.{key,value,receptance,output,gate}.weight (C, C)
//        ffn.time_maa_{k,r} (C)
//   v7:  att.x_{r,w,k,v,a,g} (C)  att.{w0,a0,v0,k_k,k_a,r_k} (C)  att.{w1,a1,v1,g1} (L, C)
//        att.{w2,a2,v2,g2} (C, L)  att.ln_x  att.{key,value,receptance,output}.weight (C, C)
//        ffn.x_k (C)   (layer 0 has no v0/v1/v2)
//   ffn (all): ffn.time_mix_{k,r} (C) [v4/v5]  ffn.key.weight (F, C)  ffn.value.weight (C, F)
//        ffn.receptance.weight (C, C) [not v7]
//   v7a (DeepEmbed, de_rank R > 0, every layer): ffn.s_emb.weight (V, R*R) a token-indexed table
//        [ffn.s_emb_x.weight (R*R, C): when present, row t is s_emb[t] + s_emb_x ln0(emb[t]); absent = merged in]
//        ffn.s1 (R, C)  ffn.s2 (F, R)  ffn.s0 (F)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "format/format.h"
#include "kernels/kernels.h"

namespace rwkvl {

struct ModelConfig {
  int arch_major = 0;  // 4, 5, 6, 7
  int arch_minor = 0;  // v5: 0, 1 (per-head decay; 1 has a gate), 2 (per-channel decay, gate)
  int n_layer = 0, n_embd = 0, n_vocab = 0, n_head = 0, head_size = 0, n_ffn = 0;
  float ln_eps = 1e-5f;   // LayerNorm ln0/ln1/ln2/ln_out
  float ln_x_eps = 0.f;   // GroupNorm att.ln_x (0 for v4)
  bool has_gate = false;  // v5.1+/v6/v7
  int de_rank = 0;        // v7a (DeepEmbed): R of the per-layer R x R token tables; 0 = none
  std::string arch_name() const;
};

// What a weight matrix is for. A matrix's identity is (layer, role): calibration taps, streaming, compression
// targets and `info` all use it (never the matrix's address: streamed layers are copies).
enum class MatRole : uint8_t {
  kNone,
  kAttR, kAttK, kAttV, kAttO, kAttG,                // time-mix projections
  kMaaW1, kMaaW2_0, kMaaW2_1, kMaaW2_2, kMaaW2_3, kMaaW2_4, kDecayW1, kDecayW2,  // v6 LoRAs
  kW1, kW2, kA1, kA2, kV1, kV2, kG1, kG2,           // v7 LoRAs
  kFfnK, kFfnV, kFfnR,                              // channel-mix projections
  kEmb, kHead,                                      // model-level (layer -1)
  kCount
};
// The canonical tensor name of a role (after "blocks.N."; "emb.weight"/"head.weight" base for kEmb/kHead),
// e.g. "att.receptance"; v6's five time_maa_w2 slices are "att.time_maa_w2[i]".
const char* mat_role_name(MatRole r);
// Every per-layer role, in a fixed order (the order streaming and compression walk a layer).
inline constexpr MatRole kLayerRoles[] = {
    MatRole::kAttR,    MatRole::kAttK,    MatRole::kAttV,    MatRole::kAttO,     MatRole::kAttG,     MatRole::kMaaW1,
    MatRole::kMaaW2_0, MatRole::kMaaW2_1, MatRole::kMaaW2_2, MatRole::kMaaW2_3,  MatRole::kMaaW2_4,  MatRole::kDecayW1,
    MatRole::kDecayW2, MatRole::kW1,      MatRole::kW2,      MatRole::kA1,       MatRole::kA2,       MatRole::kV1,
    MatRole::kV2,      MatRole::kG1,      MatRole::kG2,      MatRole::kFfnK,     MatRole::kFfnV,     MatRole::kFfnR};
// The projections (C x C, F x C, C x F) that low-rank compression targets, in the order of kLayerRoles.
inline constexpr MatRole kProjectionRoles[] = {MatRole::kAttR, MatRole::kAttK, MatRole::kAttV, MatRole::kAttO,
                                               MatRole::kAttG, MatRole::kFfnK, MatRole::kFfnV, MatRole::kFfnR};

// One weight matrix W (rows = outputs, cols = inputs), stored either dense (`ref`) or factored as
// W ~ B·A (+ diag(d)) with A rank x cols and B rows x rank (`a`, `b`; `d` optional, square W only).
// Every stored part may be f32 / f16 / bf16 / i8 (+ per-row scale) / q4.
struct Matrix {
  kern::MatRef ref;  // dense form; empty when factored
  Tensor t, scale;   // keep-alive of the dense form
  kern::MatRef a, b;  // factored form
  Tensor ta, sa, tb, sb, td;
  const float* d = nullptr;
  int64_t rows = 0, cols = 0;
  int32_t layer = -1;              // identity, set when bound: (layer, role); layer -1 for emb/head
  MatRole role = MatRole::kNone;
  bool factored() const { return a.data != nullptr; }
  int64_t rank() const { return factored() ? a.rows : 0; }
  bool empty() const { return ref.data == nullptr && a.data == nullptr; }
  size_t bytes() const { return t.nbytes + scale.nbytes + ta.nbytes + sa.nbytes + tb.nbytes + sb.nbytes + td.nbytes; }
};

// A neuron-bundled channel-mix (files made by `rwkv-lite compress --sparse-ffn`, docs/FORMAT.md):
// "blocks.N.ffn.bundle.weight" is a (2F, C) matrix whose rows 2j and 2j+1 are row perm[j] of Wk and
// column perm[j] of Wv, so one neuron is one contiguous read of `neuron_bytes`; neurons are ordered by
// activation frequency on the calibration text (hot first). The optional predictor says which neurons
// will be active for an input x (the key input) before any of their weights are read:
//   MLP:   z = W2 relu(W1 x)            active if z > mlp_thresh (a logit; +inf = never)
//   1-bit: s = lo * sum(x) + step * sum_{bits set} x     active if s > bits_thresh (+inf = never)
// and the ensemble predicts the OR of the two.
struct SparseFfn {
  kern::MatRef layout;  // the bundle: dtype, rows = 2F, cols = C, data, row_scale (kI8)
  Tensor t, scale;
  int64_t n = 0;          // neurons (F)
  size_t neuron_bytes = 0;
  const int32_t* perm = nullptr;  // bundled neuron j = original neuron perm[j]
  const float* freq = nullptr;    // calibration activation frequency per bundled neuron (descending)
  int64_t hidden = 0;             // MLP width; 0 = no predictor
  kern::MatRef w1, w2;            // (hidden, C), (F, hidden): f16, f32 or i8 (+ row scales)
  Tensor tw1, tw2, sw1, sw2, tbits, tlo, tstep, tthresh;  // sw*: int8 row scales (i8 predictors)
  const uint8_t* bits = nullptr;  // F x C/8, bit c%8 (LSB first) of byte c/8
  const float *lo = nullptr, *step = nullptr;
  float mlp_thresh = 0.f, bits_thresh = 0.f;
  bool present() const { return n > 0; }
  bool has_predictor() const { return hidden > 0; }
  size_t predictor_bytes() const {
    return tw1.nbytes + tw2.nbytes + sw1.nbytes + sw2.nbytes + tbits.nbytes + tlo.nbytes + tstep.nbytes + tthresh.nbytes;
  }
  const uint8_t* neuron(int64_t j) const { return static_cast<const uint8_t*>(layout.data) + static_cast<size_t>(j) * neuron_bytes; }
};

// A clustered ("hierarchical") head (files made by `rwkv-lite compress --cluster-head K`,
// docs/FORMAT.md): "head.weight" rows are grouped by cluster (grouped row i holds token perm[i]), so a
// cluster is one contiguous range of rows [offsets[j], offsets[j+1]). A small cluster head scores the
// clusters: p = softmax(W x + bias) over the k clusters (x = the ln_out output); the runtime computes
// exact logits for the most probable clusters and gives every token of the others a pseudo-logit from
// its cluster's probability and `prior` (log of the token's share of its cluster's mass, grouped order).
struct ClusterHead {
  int64_t k = 0;                     // clusters; 0 = not clustered
  const int32_t* perm = nullptr;     // V: grouped row i = token perm[i]
  const int32_t* offsets = nullptr;  // k + 1: 0 = offsets[0] < ... < offsets[k] = V
  kern::MatRef w;                    // (k, C) f32
  const float* bias = nullptr;       // k
  const float* prior = nullptr;      // V, grouped order; logsumexp over each cluster = 0
  int64_t largest = 0;               // rows of the largest cluster
  // Optional (compress --fidelities HIGH,int4): the grouped head rows again at int4 (V, C) q4_g32, "head.weight.q4";
  // the runtime reads a cluster's rows from here when its plan chose the low fidelity for it.
  kern::MatRef low;
  Tensor tperm, toffsets, tw, tbias, tprior, tlow;
  bool present() const { return k > 0; }
  bool has_low() const { return low.data != nullptr; }
  size_t bytes() const { return tperm.nbytes + toffsets.nbytes + tw.nbytes + tbias.nbytes + tprior.nbytes; }
  int64_t size(int64_t j) const { return offsets[j + 1] - offsets[j]; }
};

struct LayerWeights {
  int index = 0;
  const float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;
  // time mix (v4/v5), token-shift mixes (v6 maa_*, v7 x_*)
  const float *mix_k = nullptr, *mix_v = nullptr, *mix_r = nullptr, *mix_g = nullptr;
  const float *maa_x = nullptr, *maa_w = nullptr, *maa_k = nullptr, *maa_v = nullptr, *maa_r = nullptr,
              *maa_g = nullptr;
  const float *x_r = nullptr, *x_w = nullptr, *x_k = nullptr, *x_v = nullptr, *x_a = nullptr, *x_g = nullptr;
  const float *time_decay = nullptr, *time_first = nullptr;  // see the canonical layout above
  const float *ln_x_w = nullptr, *ln_x_b = nullptr;
  const float *w0 = nullptr, *a0 = nullptr, *v0 = nullptr, *k_k = nullptr, *k_a = nullptr, *r_k = nullptr;
  Matrix att_r, att_k, att_v, att_o, att_g;
  Matrix maa_w1, maa_w2[5], decay_w1, decay_w2;   // v6
  Matrix w1, w2, a1, a2, v1, v2, g1, g2;          // v7
  // channel mix
  const float *ffn_mix_k = nullptr, *ffn_mix_r = nullptr;
  Matrix ffn_k, ffn_v, ffn_r;  // ffn_k / ffn_v empty when the layer is bundled (sffn)
  SparseFfn sffn;
  // v7a DeepEmbed: relu(k)^2 is multiplied by gate = s2 (M^T (s1 x)) + s0 before Wv, x the ln2 output and M the
  // R x R matrix (row-major) of the token's row of de_emb (+ de_emb_x ln0(emb[token]) when de_emb_x is stored).
  Matrix de_emb, de_emb_x, de_s1, de_s2;  // (V, R*R), (R*R, C) or empty, (R, C), (F, R)
  const float* de_s0 = nullptr;           // (F)
  bool deep_embed() const { return de_s0 != nullptr; }
};

// The matrix of `role` in a layer (kEmb/kHead/kNone: error). Unbound roles give an empty Matrix.
Matrix& layer_matrix(LayerWeights& L, MatRole role);
const Matrix& layer_matrix(const LayerWeights& L, MatRole role);
// Calls fn(Matrix&) for each non-empty matrix of the layer, in kLayerRoles order.
template <class L, class Fn>
void for_each_layer_matrix(L& layer, Fn&& fn) {
  for (MatRole r : kLayerRoles) {
    auto& m = layer_matrix(layer, r);
    if (!m.empty()) fn(m);
  }
}

// The dtype matrices are held in after loading (LoadOptions) or stored as (save_native): kKeep leaves each as
// it is; the others convert every weight matrix (the tiny v6/v7 LoRAs to f32; q4 falls back to i8 where the
// columns are not a multiple of 32). The values equal the C API's rwkvl_dtype.
enum class WeightDType : uint8_t { kKeep = 0, kF32 = 1, kF16 = 2, kBF16 = 3, kI8 = 4, kQ4 = 5 };
// The one parser of weight-dtype strings: "keep" (or ""), "f32", "f16", "bf16", "i8" / "int8", "q4" / "int4".
// false for anything else.
bool weight_dtype_from_string(const std::string& s, WeightDType* out);
// The same, throwing kInvalidArgument "unknown weight dtype '<s>' (use keep, f32, f16, bf16, i8 or q4)".
WeightDType parse_weight_dtype_option(const std::string& s);
// "keep", "f32", "f16", "bf16", "i8", "q4".
const char* weight_dtype_option_name(WeightDType w);
// The matrix dtype it converts to (not for kKeep).
DType weight_dtype_to_dtype(WeightDType w);

class Model {
 public:
  struct LoadOptions {
    WeightDType weight_dtype = WeightDType::kKeep;
    float ln_x_eps_override = 0.f;
  };
  // Reads any supported file and binds it. Throws rwkvl::Error.
  static std::shared_ptr<Model> load(const std::string& path, const LoadOptions& opts);
  static std::shared_ptr<Model> from_raw(RawCheckpoint raw, const LoadOptions& opts);
  // Builds from canonical tensors (as produced by canonicalize() or read from a native file).
  static std::shared_ptr<Model> from_canonical(TensorMap tensors, const ModelConfig& cfg, FileKind source,
                                               const LoadOptions& opts);

  const ModelConfig& config() const { return cfg_; }
  const TensorMap& tensors() const { return tensors_; }
  FileKind source_kind() const { return source_; }
  const LayerWeights& layer(int i) const { return layers_[static_cast<size_t>(i)]; }
  const Matrix& emb() const { return emb_; }
  const Matrix& head() const { return head_; }  // rows in grouped order when cluster_head().present()
  const ClusterHead& cluster_head() const { return chead_; }
  const float* ln0_w() const { return ln0_w_; }
  const float* ln0_b() const { return ln0_b_; }
  const float* ln_out_w() const { return ln_out_w_; }
  const float* ln_out_b() const { return ln_out_b_; }

  uint64_t n_params() const;
  uint64_t weight_bytes() const;
  uint64_t bytes_per_token() const;
  std::string weight_dtype_name() const;
  size_t state_floats() const;

  // Writes the native format with matrices converted to `dtype` (keep|f32|f16|bf16|i8).
  void save_native(const std::string& path, WeightDType dtype = WeightDType::kKeep) const;
  // The same (kKeep) calling read(t) after each tensor's bytes were read (see write_native).
  void save_native(const std::string& path, const std::function<void(const Tensor&)>& read) const;
  // The same with the dtype as a string (parse_weight_dtype_option), for the callers not yet typed.
  void save_native(const std::string& path, const std::string& dtype) const {
    save_native(path, parse_weight_dtype_option(dtype));
  }
  // The compression passes that made this model (native files; empty array otherwise).
  const nlohmann::json& passes() const { return passes_; }
  // True when every layer's channel-mix is neuron-bundled (and whether predictors are present).
  bool sparse_ffn() const { return !layers_.empty() && layers_[0].sffn.present(); }
  bool has_ffn_predictor() const { return sparse_ffn() && layers_[0].sffn.has_predictor(); }
  // The file the tensors are mapped from (native files; null otherwise), for streaming weights.
  const std::shared_ptr<MappedFile>& file() const { return file_; }
  // The path the model was loaded from ("" for models built in memory), for error messages.
  const std::string& path() const { return path_; }
  // The vocabulary the file carries (GGUF's tokenizer.ggml.tokens, World): each id's bytes; empty when none.
  const std::vector<std::string>& embedded_vocab() const { return vocab_; }
  void set_passes(nlohmann::json p) { passes_ = std::move(p); }

 private:
  void bind();
  void write_tensors(const std::string& path, const TensorMap& tm, const std::function<void(const Tensor&)>& read) const;
  ModelConfig cfg_;
  TensorMap tensors_;
  FileKind source_ = FileKind::kUnknown;
  nlohmann::json passes_ = nlohmann::json::array();
  std::shared_ptr<MappedFile> file_;
  std::vector<std::string> vocab_;
  std::string path_;
  std::vector<LayerWeights> layers_;
  Matrix emb_, head_;
  ClusterHead chead_;
  const float *ln0_w_ = nullptr, *ln0_b_ = nullptr, *ln_out_w_ = nullptr, *ln_out_b_ = nullptr;
};

// Maps a raw checkpoint (any source format) to canonical tensors + config. Unknown tensor names and
// wrong shapes are errors.
struct Canonical {
  TensorMap tensors;
  ModelConfig cfg;
};
Canonical canonicalize(RawCheckpoint raw);
nlohmann::json config_to_json(const ModelConfig& c);
// Matrix dtype by name: f32, f16, bf16, i8 (int8), q4 (int4). Throws on anything else.
DType parse_weight_dtype(const std::string& dtype);
// A matrix tensor (any matrix dtype; `scale` for i8) as float32, row-major.
std::vector<float> matrix_to_f32(const Tensor& t, const Tensor* scale);
// Stores rows x cols floats as `want` under `name`; i8 gets "<name>.scale" (f16 if f16_scales).
// q4 requires cols % 32 == 0. Returns {matrix, scale-or-empty}.
std::pair<Tensor, Tensor> quantize_matrix(const std::string& name, const float* v, int64_t rows, int64_t cols,
                                          DType want, bool f16_scales);
// Stores a pruned rows x cols matrix (its zeros are the pruned weights) with values of dtype `value` (f16, i8 or
// q4): in the masked layout (core/dtype.h: keep bits + kept values) when that takes fewer bytes than the dense
// `value` matrix (or always, with force_masked), else dense. {matrix, scale-or-empty}. Values beyond the f16 range
// keep an f16 request dense (f32 values are copied exactly only by the dense path).
std::pair<Tensor, Tensor> store_sparse_matrix(const std::string& name, const float* v, int64_t rows, int64_t cols,
                                              DType value, bool f16_scales, bool force_masked = false);
// The model's tensors with every matrix dense: factored ones multiplied out (B A + diag d), int8 ones (with their
// row scales) as float32, the rest as they are. Fails (UNSUPPORTED) on a neuron-bundled channel-mix or a cluster
// head, naming `files` ("GGUF files") and the `runtime` that cannot run them ("llama.cpp").
TensorMap dense_tensors(const Model& m, const char* files, const char* runtime);
// The tensors of an rwkv.cpp file (names, shapes and transformed decays as rwkv.cpp's own converter writes them,
// python/convert_pytorch_to_ggml.py at rwkv.cpp 4358e70): matrices as f16 when `f16` (rwkv.cpp's FP16 files:
// every matrix, the embedding and head included), else f32; vectors, decays and LoRAs f32. Factored and int8
// matrices are multiplied out / dequantised (dense_tensors). RWKV-4 to RWKV-7.
std::vector<Tensor> export_rwkvcpp(const Model& m, bool f16);
// Tensors in the official PyTorch layout (raw parameters, LoRA as (in, out), vectors (1, 1, C)).
std::vector<Tensor> export_official(const Model& m);
// Random weights of the given shape (benchmarks, tests). cfg needs arch_major, n_layer, n_embd,
// n_vocab; n_ffn/head_size 0 take defaults.
std::shared_ptr<Model> synth_model(ModelConfig cfg, const std::string& dtype, uint64_t seed);

// Recurrent state, one float block per layer (layout as in rwkv.cpp, so values are comparable):
//   v4:  ffn_x (C), att_x (C), aa (C), bb (C), pp (C)    (pp starts at -1e30)
//   v5+: ffn_x (C), att_x (C), wkv (H * S * S)
struct State {
  std::vector<float> data;
  void reset(const ModelConfig& cfg);
  static size_t floats_for(const ModelConfig& cfg);
  static size_t layer_floats(const ModelConfig& cfg);
  float* layer(const ModelConfig& cfg, int i) { return data.data() + layer_floats(cfg) * static_cast<size_t>(i); }
};

}  // namespace rwkvl
