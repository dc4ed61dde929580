// ISA-independent bodies of the SIMD kernels, written once against a small "vector traits" type S
// that each ISA file supplies (matvec_avx2.cpp, matvec_avx512.cpp, matvec_neon.cpp):
//
//   using V;                           one vector of S::kW floats
//   static constexpr int kW;           lanes per vector
//   static constexpr int kTileR, kTileT;  matmul register tile: rows x tokens
//   V zero(); V add(V, V); V fma(V a, V b, V acc) = a*b + acc; V loadx(const float*);
//   template <DType D> V loadw(const Elem<D>::T* p);   kW weights converted to float
//   void hsum4(V a, V b, V c, V d, float* out4);       out4[i] = sum of the lanes of the i-th vector
//
// Every S is a distinct type defined in an anonymous namespace of its own translation unit, so every
// template instantiated from here has internal linkage: code built with -mavx512f can never be picked
// by the linker to stand in for the AVX2 or baseline copy (the classic ODR trap of per-file flags).
// For the same reason this header holds nothing that does not depend on S.
//
// Determinism: each output (row, token) is computed by the same sequence of operations whatever the
// row grouping, token grouping, tile size or thread split: the same accumulator pattern over the
// columns, the same tail handling and the same per-lane reduction tree in hsum4. So results are
// bitwise independent of the thread count and of how callers cut row ranges.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/kernels_internal.h"

namespace rwkvl::kern::detail {

// Copies the last (cols - c) < kW elements of a row into a zero-padded vector-sized buffer, so the
// tail runs through the same vector code (zeros add nothing) instead of a scalar loop whose
// rounding would differ from the vector path.
template <class S, class T>
inline void pad_tail(const T* src, int64_t count, T* dst) {
  std::memset(static_cast<void*>(dst), 0, sizeof(T) * S::kW);
  std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), sizeof(T) * static_cast<size_t>(count));
}

// Reduces R accumulators (R <= 4) to R floats with the fixed hsum4 tree.
template <class S, int R>
inline void reduce_rows(const typename S::V* acc, float* out) {
  static_assert(R >= 1 && R <= 4, "reduce_rows handles up to 4 vectors");
  float tmp[4];
  S::hsum4(acc[0], acc[R > 1 ? 1 : 0], acc[R > 2 ? 2 : 0], acc[R > 3 ? 3 : 0], tmp);
  for (int i = 0; i < R; ++i) out[i] = tmp[i];
}

// out[r] = dot(W[r], x) for R consecutive rows starting at w (row stride = cols). Two accumulators per
// row (even / odd vector) hide FMA latency; the x vectors are loaded once and shared by all R rows.
template <class S, DType D, int R>
inline void dot_rows(const typename Elem<D>::T* w, int64_t cols, const float* x, float* out) {
  using V = typename S::V;
  using T = typename Elem<D>::T;
  constexpr int W = S::kW;
  V acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = S::zero();
  int64_t c = 0;
  for (; c + 2 * W <= cols; c += 2 * W) {
    const V x0 = S::loadx(x + c), x1 = S::loadx(x + c + W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r] = S::fma(S::template loadw<D>(w + r * cols + c), x0, acc0[r]);
      acc1[r] = S::fma(S::template loadw<D>(w + r * cols + c + W), x1, acc1[r]);
    }
  }
  if (c + W <= cols) {
    const V x0 = S::loadx(x + c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc0[r] = S::fma(S::template loadw<D>(w + r * cols + c), x0, acc0[r]);
    c += W;
  }
  if (c < cols) {
    float xb[W];
    T wb[W];
    pad_tail<S>(x + c, cols - c, xb);
    const V x0 = S::loadx(xb);
    for (int r = 0; r < R; ++r) {
      pad_tail<S>(w + r * cols + c, cols - c, wb);
      acc1[r] = S::fma(S::template loadw<D>(wb), x0, acc1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = S::add(acc0[r], acc1[r]);
  reduce_rows<S, R>(acc0, out);
}

template <class S, DType D>
void matvec_rows_t(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  using T = typename Elem<D>::T;
  const T* base = static_cast<const T*>(m.data);
  const int64_t cols = m.cols;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) dot_rows<S, D, 4>(base + r * cols, cols, x, y + r);
  for (; r < r1; ++r) dot_rows<S, D, 1>(base + r * cols, cols, x, y + r);
  if constexpr (D == DType::kI8) {
    for (r = r0; r < r1; ++r) y[r] *= m.row_scale[r];
  }
}

// Register tile of the sequence-mode product: out[r][t] = dot(W[r], X[t]) for R rows x T tokens.
// Each weight vector is loaded and converted once and used for T tokens; each x vector is used for R
// rows. One accumulator per (row, token) pair: the R*T independent chains already hide FMA latency.
template <class S, DType D, int R, int T>
inline void tile_rt(const typename Elem<D>::T* w, int64_t cols, const float* X, float out[R][T]) {
  using V = typename S::V;
  using E = typename Elem<D>::T;
  constexpr int W = S::kW;
  V acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = S::zero();
  }
  int64_t c = 0;
  for (; c + W <= cols; c += W) {
    V wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = S::template loadw<D>(w + r * cols + c);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const V xv = S::loadx(X + t * cols + c);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = S::fma(wv[r], xv, acc[r][t]);
    }
  }
  if (c < cols) {
    V wv[R];
    E wb[W];
    float xb[W];
    for (int r = 0; r < R; ++r) {
      pad_tail<S>(w + r * cols + c, cols - c, wb);
      wv[r] = S::template loadw<D>(wb);
    }
    for (int t = 0; t < T; ++t) {
      pad_tail<S>(X + t * cols + c, cols - c, xb);
      const V xv = S::loadx(xb);
      for (int r = 0; r < R; ++r) acc[r][t] = S::fma(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    int t = 0;
    for (; t + 4 <= T; t += 4) reduce_rows<S, 4>(&acc[r][t], &out[r][t]);
    for (; t < T; ++t) reduce_rows<S, 1>(&acc[r][t], &out[r][t]);
  }
}

// Rows [rb, rb + R) against all n tokens, T tokens at a time, results scattered into Y (n x rows).
template <class S, DType D, int R>
inline void tile_rows(const MatRef& m, const float* X, int64_t n, float* Y, int64_t rb) {
  using E = typename Elem<D>::T;
  constexpr int T = S::kTileT;
  const E* w = static_cast<const E*>(m.data) + rb * m.cols;
  const int64_t cols = m.cols, rows = m.rows;
  int64_t t = 0;
  for (; t + T <= n; t += T) {
    float out[R][T];
    tile_rt<S, D, R, T>(w, cols, X + t * cols, out);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < T; ++j) Y[(t + j) * rows + rb + r] = out[r][j];
  }
  for (; t < n; ++t) {
    float out[R][1];
    tile_rt<S, D, R, 1>(w, cols, X + t * cols, out);
    for (int r = 0; r < R; ++r) Y[t * rows + rb + r] = out[r][0];
  }
}

template <class S, DType D>
void matmul_rows_t(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  constexpr int R = S::kTileR;
  int64_t r = r0;
  for (; r + R <= r1; r += R) tile_rows<S, D, R>(m, X, n, Y, r);
  for (; r < r1; ++r) tile_rows<S, D, 1>(m, X, n, Y, r);
  if constexpr (D == DType::kI8) {
    for (int64_t t = 0; t < n; ++t)
      for (r = r0; r < r1; ++r) Y[t * m.rows + r] *= m.row_scale[r];
  }
}

// The two exported entry points of an ISA: switch once on the dtype, then run fully typed code.
template <class S>
void matvec_rows_isa(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  switch (m.dtype) {
    case DType::kF32: return matvec_rows_t<S, DType::kF32>(m, x, y, r0, r1);
    case DType::kF16: return matvec_rows_t<S, DType::kF16>(m, x, y, r0, r1);
    case DType::kBF16: return matvec_rows_t<S, DType::kBF16>(m, x, y, r0, r1);
    case DType::kI8: return matvec_rows_t<S, DType::kI8>(m, x, y, r0, r1);
    default: break;  // dispatch.cpp validates the dtype before calling
  }
}

template <class S>
void matmul_rows_isa(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  switch (m.dtype) {
    case DType::kF32: return matmul_rows_t<S, DType::kF32>(m, X, n, Y, r0, r1);
    case DType::kF16: return matmul_rows_t<S, DType::kF16>(m, X, n, Y, r0, r1);
    case DType::kBF16: return matmul_rows_t<S, DType::kBF16>(m, X, n, Y, r0, r1);
    case DType::kI8: return matmul_rows_t<S, DType::kI8>(m, X, n, Y, r0, r1);
    default: break;
  }
}

}  // namespace rwkvl::kern::detail
