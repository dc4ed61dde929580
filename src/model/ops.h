// Small vector operations shared by the per-version forward passes. Rows are contiguous float32.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>

#include "core/error.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "model/model.h"

namespace rwkvl::ops {

inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
inline float silu(float x) { return x / (1.f + std::exp(-x)); }

// y = (x - mean) / sqrt(var + eps) * w + b over n values (population variance, two-pass).
inline void layer_norm(const float* x, float* y, const float* w, const float* b, size_t n, float eps) {
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  double var = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  var /= static_cast<double>(n);
  const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
  const float m = static_cast<float>(mean);
  for (size_t i = 0; i < n; ++i) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

inline void layer_norm_rows(const float* x, float* y, const float* w, const float* b, size_t T, size_t n,
                            float eps) {
  for (size_t t = 0; t < T; ++t) layer_norm(x + t * n, y + t * n, w, b, n, eps);
}

// GroupNorm with n_head groups of head_size over each of T rows, then * w + b.
inline void group_norm_rows(float* x, const float* w, const float* b, size_t T, size_t n_head, size_t head_size,
                            float eps) {
  const size_t C = n_head * head_size;
  for (size_t t = 0; t < T; ++t) {
    for (size_t h = 0; h < n_head; ++h) {
      float* p = x + t * C + h * head_size;
      double mean = 0;
      for (size_t i = 0; i < head_size; ++i) mean += p[i];
      mean /= static_cast<double>(head_size);
      double var = 0;
      for (size_t i = 0; i < head_size; ++i) {
        const double d = p[i] - mean;
        var += d * d;
      }
      var /= static_cast<double>(head_size);
      const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
      const float m = static_cast<float>(mean);
      for (size_t i = 0; i < head_size; ++i) p[i] = (p[i] - m) * inv * w[h * head_size + i] + b[h * head_size + i];
    }
  }
}

// Token shift: prev row t = x row t-1, prev row 0 = carry; then carry = last row of x.
inline void token_shift(const float* x, float* prev, float* carry, size_t T, size_t n) {
  std::memcpy(prev, carry, n * sizeof(float));
  if (T > 1) std::memcpy(prev + n, x, (T - 1) * n * sizeof(float));
  std::memcpy(carry, x + (T - 1) * n, n * sizeof(float));
}

// out = x * mix + prev * (1 - mix), row by row (v4/v5 time_mix).
inline void lerp_mix(const float* x, const float* prev, const float* mix, float* out, size_t T, size_t n) {
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < n; ++i) {
      const float a = x[t * n + i], p = prev[t * n + i];
      out[t * n + i] = a * mix[i] + (p - p * mix[i]);
    }
}

// out = x + (prev - x) * mix  (v6/v7 style with sx = prev - x precomputed as `sx`).
inline void add_mix(const float* x, const float* sx, const float* mix, float* out, size_t T, size_t n) {
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < n; ++i) out[t * n + i] = x[t * n + i] + sx[t * n + i] * mix[i];
}

// x = relu(x)^2 in place: the channel-mix activation of every RWKV version.
inline void square_relu(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float a = x[i] > 0.f ? x[i] : 0.f;
    x[i] = a * a;
  }
}

// Y_i = M_i X_i for `count` (<= 8) projections of the same T tokens that share no data, in one parallel region
// (kern::matmul_multi; one token: matvec_multi) for the plain matrices and the first factors of the factored ones,
// then one for the factored ones' second factors: 2 fork/joins instead of up to 2 per matrix. The same bits as a
// project() per matrix (the kernels' results do not depend on the row split).
inline void project_many(ForwardEnv& env, const Matrix* const* m, const float* const* X, float* const* Y, int count,
                         size_t T) {
  RWKVL_CHECK(count >= 0 && count <= 8);
  const int64_t n = static_cast<int64_t>(T);
  const kern::MatRef* refs[8];
  float* out[8];
  size_t mid_floats = 0;
  for (int i = 0; i < count; ++i) {
    if (env.observer()) env.observer()(*m[i], X[i], T);
    if (m[i]->factored()) mid_floats += T * static_cast<size_t>(m[i]->a.rows);
  }
  float* mid = mid_floats ? env.scratch().lowrank(mid_floats) : nullptr;
  int nb = 0;
  const kern::MatRef* brefs[8];
  const float* bin[8];
  float* bout[8];
  for (int i = 0; i < count; ++i) {
    if (!m[i]->factored()) {
      refs[i] = &m[i]->ref;
      out[i] = Y[i];
      continue;
    }
    refs[i] = &m[i]->a;
    out[i] = mid;
    brefs[nb] = &m[i]->b;
    bin[nb] = mid;
    bout[nb++] = Y[i];
    mid += T * static_cast<size_t>(m[i]->a.rows);
  }
  kern::matmul_multi(refs, X, n, out, count, env.pool());
  if (nb) kern::matmul_multi(brefs, bin, n, bout, nb, env.pool());
  for (int i = 0; i < count; ++i) {
    if (!m[i]->factored() || !m[i]->d) continue;
    const size_t C = static_cast<size_t>(m[i]->cols);
    for (size_t t = 0; t < T; ++t)
      for (size_t j = 0; j < C; ++j) Y[i][t * C + j] += m[i]->d[j] * X[i][t * C + j];
  }
}

// Y (T x rows) = X (T x cols) W^T for a dense or factored matrix (matvec for a single token; a
// factored one is two thin products through a rank-sized intermediate, plus its diagonal term).
inline void project(ForwardEnv& env, const Matrix& m, const float* X, float* Y, size_t T) {
  const Matrix* mp = &m;
  project_many(env, &mp, &X, &Y, 1, T);
}

// out (T x C) = Wv relu(Wk xk)^2: the key/value part of every version's channel-mix, dense or
// neuron-sparse as the runner's FFN runtime says (runtime/ffn_runtime.h).
// `side`: a projection of the same tokens computed with the key matrix (ForwardEnv::ffn_key_value).
inline void ffn_key_value(ForwardEnv& env, const LayerWeights& L, const float* xk, float* out, size_t T,
                          const SideProjection& side = {}, const float* gate = nullptr) {
  env.ffn_key_value(L, xk, out, T, side, gate);
}

}  // namespace rwkvl::ops
