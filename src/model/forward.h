// The forward pass's view of whoever runs it. The model layer owns the math of each architecture
// (rwkv4.cpp ... rwkv7.cpp) and reads only immutable weights; everything mutable of one stream (threads,
// scratch, streamed layer copies, the sparse channel-mix runtime, calibration taps) belongs to the runner,
// rwkvl::Session (src/runtime/session.h), which implements ForwardEnv. That keeps src/model free of
// src/runtime: the dependency points down through this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"

namespace rwkvl {

class ThreadPool;

// Named per-chunk activations of the forward pass: each buffer holds T x width floats, width being the
// widest matrix dimension of the layers (n_embd, n_ffn, LoRA widths). A buffer's meaning is local to one
// step of a block; `v_first` (v7) carries a value across the layers of one chunk.
class Scratch {
 public:
  static constexpr int kBuffers = 21;
  // Floats per token of one buffer for model m.
  static size_t width_for(const Model& m);
  // Bytes reserve(m, T) allocates (the planner counts them).
  static uint64_t bytes_for(const Model& m, size_t T);
  // Makes room for chunks of T tokens; zero-filled when it grows (the buffers move then).
  void reserve(const Model& m, size_t T);
  size_t capacity() const { return cap_; }
  // Rank-sized intermediate of factored matrices (grown on demand).
  float* lowrank(size_t n) {
    if (lowrank_.size() < n) lowrank_.resize(n);
    return lowrank_.data();
  }

  float *xn = nullptr, *prev = nullptr;                                  // normalised input, token-shifted input
  float *xk = nullptr, *xv = nullptr, *xr = nullptr, *xg = nullptr;      // mixed inputs of the projections
  float *r = nullptr, *k = nullptr, *v = nullptr, *g = nullptr;          // projections
  float *o = nullptr, *y = nullptr;                                       // block output, wkv output
  float *lora = nullptr, *tmp = nullptr, *mix = nullptr;                  // LoRA hidden, slices, v6 maa / v7 xa
  float *xw = nullptr, *w = nullptr, *sx = nullptr, *a = nullptr;         // decay input, decay, shift delta, v7 a
  float *v_first = nullptr, *kk = nullptr;                               // v7

 private:
  std::vector<float> data_, lowrank_;
  size_t cap_ = 0;
};

// A calibration tap: called by every projection with its input X (T x m.cols) before it runs. The matrix
// is identified by (m.layer, m.role) - never by its address, since streamed layers are copies.
using Observer = std::function<void(const Matrix& m, const float* X, size_t T)>;

// A projection the FFN runtime computes alongside its key matrix (the channel-mix's receptance, Y = M X for the
// same T tokens): for one token of a plain channel-mix both share one parallel region. m == nullptr: none.
struct SideProjection {
  const Matrix* m = nullptr;
  const float* X = nullptr;
  float* Y = nullptr;
};

class ForwardEnv {
 public:
  virtual ~ForwardEnv() = default;
  virtual const Model& model() const = 0;
  virtual ThreadPool* pool() = 0;
  virtual Scratch& scratch() = 0;
  // The weights of layer l: the model's own, or a streamed copy (valid until the next call).
  virtual const LayerWeights& layer(int l) = 0;
  // out (T x C) = Wv relu(Wk xk)^2 for layer L: dense or neuron-sparse (runtime/ffn_runtime.h).
  // Also computes `side` (exactly once, whichever path runs).
  // `gate` (T x F, v7a; null = none) multiplies relu(Wk xk)^2 before Wv.
  virtual void ffn_key_value(const LayerWeights& L, const float* xk, float* out, size_t T, const SideProjection& side,
                             const float* gate) = 0;
  // v7a: rows (T x R*R) = layer L's DeepEmbed rows of the chunk's tokens: the table's row, plus s_emb_x times the
  // token's ln0(emb) when the merge is not stored.
  virtual void deep_embed_rows(const LayerWeights& L, const int32_t* tokens, size_t T, float* rows) = 0;
  // The calibration tap (empty = none).
  virtual const Observer& observer() const = 0;
};

// Runs layers [l_begin, l_end) over x (T x C, embedded and ln0-normalised) with the state, one layer at a
// time, checking the residual stream after each (kNumeric error naming the layer). The scratch must have
// room for T tokens. `tokens` (the chunk's T ids) are needed by v7a models (their per-layer token tables).
void forward_layers(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end,
                    const int32_t* tokens = nullptr);
// Checks of the forward pass: a non-finite value names where it appeared and the file.
bool all_finite(const float* p, size_t n);
[[noreturn]] void fail_nonfinite(const Model& m, const std::string& where);
// True when the mapped model file was modified in place since it was loaded (one stat(2)).
bool model_file_changed(const Model& m);

// Per-architecture forward passes over a chunk of T tokens (layers [l_begin, l_end)).
void forward_layers_v4(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end);
void forward_layers_v5(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end);
void forward_layers_v6(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end);
void forward_layers_v7(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end, const int32_t* tokens);

}  // namespace rwkvl
