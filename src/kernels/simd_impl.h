// ISA-independent bodies of the SIMD kernels, written once against a small "vector traits" type S
// that each ISA file supplies (matvec_avx2.cpp, matvec_avx512.cpp, matvec_neon.cpp):
//
//   using V;                           one vector of S::kW floats
//   static constexpr int kW;           lanes per vector
//   static constexpr int kAcc;         matvec accumulators per row (2, 4 or 8)
//   static constexpr int kPrefetch, kPrefetchLocality;  matvec software prefetch distance (bytes, 0 = off)
//                                      and __builtin_prefetch locality (0 = non-temporal)
//   static constexpr int kTileR, kTileT;  matmul register tile: rows x tokens
//   static constexpr int kGemmMR, kGemmNV, kGemmMinN;  outer-product GEMM (gemm_rows): MR rows x NV vectors of
//                                      tokens, used from kGemmMinN tokens; kGemmMR = 0: never
//   static constexpr int kValueAcc;    ffn_values: vectors of a token's columns summed in registers at once
//   V zero(); V add(V, V); V mul(V, V); V fma(V a, V b, V acc) = a*b + acc; V loadx(const float*);
//   V set1(float); void storex(float*, V);
//   template <DType D> V loadw(const Elem<D>::T* p);   kW weights converted to float
//   void hsum4(V a, V b, V c, V d, float* out4);       out4[i] = sum of the lanes of the i-th vector
//   void half4(const uint16_t* h, float* out4);         four IEEE halves -> float32 (exact)
//   void q4_decode(const uint8_t* blk, V* out);        one kQ4 block (20 bytes) -> 32 / kW vectors of
//                                      float weights d * q + m, columns in order (out[v]: columns v*kW..)
//   static constexpr int kQ4TileR;     matmul register tile height for kQ4 (a decoded block is 32/kW vectors)
//   void s24_decode(const uint8_t* blk, const float* xb, V* w, V* xg);  one kF16S24 block -> 16 / kW
//                                      vectors of its kept weights and of the x values at their columns
//   V expand(uint32_t bits, V v);      masked rows: lane j = bit j of bits ? v[rank of bit j among the set bits]
//                                      : 0 (bits < 2^kW)
//   void transpose(const float* src, int64_t lds, int ni, int nj, float* dst, int64_t ldd, int nstore);
//                                      (kGemmMR > 0 only) a kW x kW block: dst[j * ldd + i] = src[i * lds + j],
//                                      j < nj, i < nstore; src rows >= ni and columns >= nj read as zero
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

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

// Exact IEEE half -> float with integer operations only (for kI8 row scales stored as f16; called
// once per row, never per element). Templated on S for internal linkage (see the top of this file).
template <class S>
inline float half_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu;
  uint32_t mag;
  if (em >= 0x7c00u) {
    mag = 0x7f800000u | ((em & 0x3ffu) << 13);  // inf / NaN
  } else if (em < 0x400u) {
    const float sub = static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f;  // zero / subnormal, exact
    std::memcpy(&mag, &sub, 4);
  } else {
    mag = (em << 13) + (112u << 23);  // rebias the exponent 15 -> 127
  }
  const uint32_t u = mag | ((static_cast<uint32_t>(h) & 0x8000u) << 16);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The kI8 scale of row r as float32, whichever way it is stored.
template <class S>
inline float i8_row_scale(const MatRef& m, int64_t r) {
  if (m.scale_dtype == DType::kF16) return half_to_float<S>(static_cast<const uint16_t*>(m.row_scale)[r]);
  return static_cast<const float*>(m.row_scale)[r];
}

// The kI8 scales of rows r..r+3 as float32 (f16 scales converted by S::half4, exact like half_to_float).
template <class S>
inline void i8_row_scales4(const MatRef& m, int64_t r, float* out) {
  if (m.scale_dtype == DType::kF16) return S::half4(static_cast<const uint16_t*>(m.row_scale) + r, out);
  std::memcpy(out, static_cast<const float*>(m.row_scale) + r, 4 * sizeof(float));
}

// Folds A accumulators (a power of two) to one with the fixed pairwise tree every dot product uses.
template <class S, int A>
inline typename S::V fold_acc(typename S::V* acc) {
  static_assert(A == 1 || A == 2 || A == 4 || A == 8, "a power of two");
#pragma GCC unroll 8
  for (int step = A / 2; step >= 1; step /= 2) {
    for (int a = 0; a < step; ++a) acc[a] = S::add(acc[a], acc[a + step]);
  }
  return acc[0];
}

// kQ4 dot product of one row (cols / 32 blocks) with x, unreduced. Each block is decoded to float
// weights d * q + m (S::q4_decode: one rounding per weight) and multiplied into fp32 accumulators, so
// the accuracy is that of the float kernels (no factoring of m out of the sum, which would cancel
// catastrophically for groups whose values sit far from zero). max(kAcc, 32 / kW) accumulators, one
// or more whole blocks per iteration (at most 64 bytes, so one prefetch per iteration covers every
// cache line).
//
// Tried and dropped (AVX-512, Zen 5, weights in L2, a shared and busy VM): converting the d, m of
// 16-64 blocks at a time into a float array first, so that the decoder broadcasts them from memory
// (8 instructions per block in the loop instead of 13), was 20-50% slower overall (inlined, GCC
// forwards the stored vector through shuffles; out of line, the loads of the fresh array apparently
// stall, not investigated further); decoding the nibbles with a broadcast load and per-lane variable
// shifts (x permuted once to match) instead of vpmovzxbd, and int -> float conversion + fma instead
// of the vpermps table, were each 5-20% slower. The loop as it is decodes ~32 G weights/s per core
// with the weights in L2, as many as the int8 loop.
//
// pf_delta: the software prefetch (if S::kPrefetch > 0) reads the line at (address being read) +
// pf_delta; matvec passes S::kPrefetch (further along the same row), ffn_neurons the distance to the
// same offset of a later neuron. It only changes what is prefetched, never the arithmetic.
template <class S>
inline typename S::V dot_row_q4(const uint8_t* w, int64_t cols, const float* x, uintptr_t pf_delta) {
  using V = typename S::V;
  constexpr int W = S::kW, NV = static_cast<int>(kQ4BlockCols) / W;
  constexpr int A = S::kAcc > NV ? S::kAcc : NV;
  constexpr int BPI = A / NV;  // blocks per iteration
  static_assert(A == 2 || A == 4 || A == 8, "the fold below assumes a power of two");
  static_assert(BPI * kQ4BlockBytes <= 64, "one prefetch per iteration must cover every line");
  V acc[A];
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) acc[a] = S::zero();
  const int64_t nb = cols / kQ4BlockCols;
  int64_t b = 0;
  for (; b + BPI <= nb; b += BPI) {
    if constexpr (S::kPrefetch > 0) {
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(w + b * kQ4BlockBytes) + pf_delta;
      __builtin_prefetch(reinterpret_cast<const void*>(ahead), 0, S::kPrefetchLocality);
    }
#pragma GCC unroll 8
    for (int i = 0; i < BPI; ++i) {
      V wv[NV];
      S::q4_decode(w + (b + i) * kQ4BlockBytes, wv);
      const float* xb = x + (b + i) * kQ4BlockCols;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i * NV + v] = S::fma(wv[v], S::loadx(xb + v * W), acc[i * NV + v]);
    }
  }
  for (; b < nb; ++b) {
    V wv[NV];
    S::q4_decode(w + b * kQ4BlockBytes, wv);
    const float* xb = x + b * kQ4BlockCols;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = S::fma(wv[v], S::loadx(xb + v * W), acc[v]);
  }
  return fold_acc<S, A>(acc);
}

// Unreduced dot product of one weight row with x: kAcc independent accumulators (hiding FMA latency),
// folded with a fixed tree into one vector whose lanes still have to be summed.
//
// One row at a time, not several interleaved: measured on AVX-512 (Zen 5, weights streamed from
// DRAM), walking 2-8 rows side by side to share the x loads cost 30-50% of the bandwidth for 16-bit
// and 8-bit weights (the prefetchers follow one sequential stream much better than several
// interleaved ones a row apart) and gained at most ~10% for f32. x stays in L1, so re-loading it per
// row is free.
//
// Software prefetch S::kPrefetch bytes ahead (0: none): the converting loops (f16/bf16/i8) execute
// several instructions per loaded byte, which fills the out-of-order window and limits how many cache
// misses the core keeps in flight; prefetching 4 KB ahead took f16/bf16/i8 streaming from ~60% to
// ~85-95% of the read bandwidth and f32 from ~85% to ~90-95%, with no loss when the data is cached.
// Addresses are formed in integers: past the end of the matrix they point at nothing (prefetches
// never fault), but pointer arithmetic there would be undefined.
template <class S, DType D>
inline typename S::V dot_row_elem(const typename Elem<D>::T* w, int64_t cols, const float* x, uintptr_t pf_delta) {
  using V = typename S::V;
  using T = typename Elem<D>::T;
  constexpr int W = S::kW, A = S::kAcc;
  static_assert(A == 2 || A == 4 || A == 8, "the fold below assumes a power of two");
  V acc[A];
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) acc[a] = S::zero();
  int64_t c = 0;
  for (; c + A * W <= cols; c += A * W) {
    if constexpr (S::kPrefetch > 0) {
      constexpr int kBytes = A * W * static_cast<int>(sizeof(T));  // one prefetch per 64-byte line
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(w + c) + pf_delta;
#pragma GCC unroll 8
      for (int off = 0; off < kBytes; off += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<uintptr_t>(off)), 0, S::kPrefetchLocality);
    }
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) acc[a] = S::fma(S::template loadw<D>(w + c + a * W), S::loadx(x + c + a * W), acc[a]);
  }
  for (int a = 0; c + W <= cols; c += W, ++a) acc[a] = S::fma(S::template loadw<D>(w + c), S::loadx(x + c), acc[a]);
  if (c < cols) {
    float xb[W];
    T wb[W];
    pad_tail<S>(x + c, cols - c, xb);
    pad_tail<S>(w + c, cols - c, wb);
    acc[A - 1] = S::fma(S::template loadw<D>(wb), S::loadx(xb), acc[A - 1]);
  }
  return fold_acc<S, A>(acc);
}

// kF16S24 (2:4 sparse, f16): per block the 16 kept weights and the 16 x values at their columns (a
// permutation of the block's 32 x values), so half the multiply-adds and 9/16 of the f16 bytes. Block b
// goes to accumulator b % kAcc (whole blocks per accumulator, a fixed pattern: deterministic).
template <class S>
inline typename S::V dot_row_s24(const uint8_t* w, int64_t cols, const float* x, uintptr_t pf_delta) {
  using V = typename S::V;
  constexpr int A = S::kAcc, NV = 16 / S::kW;
  V acc[A];
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) acc[a] = S::zero();
  const int64_t nb = cols / kS24BlockCols;
  int64_t b = 0;
  for (; b + A <= nb; b += A) {
    if constexpr (S::kPrefetch > 0) {
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(w + b * kS24BlockBytes) + pf_delta;
#pragma GCC unroll 8
      for (int off = 0; off < A * kS24BlockBytes; off += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<uintptr_t>(off)), 0, S::kPrefetchLocality);
    }
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) {
      V wv[NV], xg[NV];
      S::s24_decode(w + (b + a) * kS24BlockBytes, x + (b + a) * kS24BlockCols, wv, xg);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[a] = S::fma(wv[v], xg[v], acc[a]);
    }
  }
  for (int a = 0; b < nb; ++b, ++a) {
    V wv[NV], xg[NV];
    S::s24_decode(w + b * kS24BlockBytes, x + b * kS24BlockCols, wv, xg);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[a] = S::fma(wv[v], xg[v], acc[a]);
  }
  return fold_acc<S, A>(acc);
}

// pf_delta: see dot_row_q4 (matvec: S::kPrefetch bytes further along the row).
template <class S, DType D>
inline typename S::V dot_row(const typename Elem<D>::T* w, int64_t cols, const float* x,
                             uintptr_t pf_delta = static_cast<uintptr_t>(S::kPrefetch)) {
  if constexpr (D == DType::kQ4) {
    return dot_row_q4<S>(w, cols, x, pf_delta);
  } else if constexpr (D == DType::kF16S24) {
    return dot_row_s24<S>(w, cols, x, pf_delta);
  } else {
    return dot_row_elem<S, D>(w, cols, x, pf_delta);
  }
}

template <class S, DType D>
void matvec_rows_t(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  using T = typename Elem<D>::T;
  using V = typename S::V;
  const T* base = static_cast<const T*>(m.data);
  const int64_t cols = m.cols, stride = row_stride<D>(cols);
  int64_t r = r0;
  // Rows are computed one after the other; only the final horizontal sums are batched 4 rows at a time.
  // INT8 row scales are applied to the finished sums.
  for (; r + 4 <= r1; r += 4) {
    V v[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) v[i] = dot_row<S, D>(base + (r + i) * stride, cols, x);
    reduce_rows<S, 4>(v, y + r);
    if constexpr (D == DType::kI8) {
      float sc[4];
      i8_row_scales4<S>(m, r, sc);
      for (int i = 0; i < 4; ++i) y[r + i] *= sc[i];
    }
  }
  for (; r < r1; ++r) {
    const V v = dot_row<S, D>(base + r * stride, cols, x);
    reduce_rows<S, 1>(&v, y + r);
    if constexpr (D == DType::kI8) y[r] *= i8_row_scale<S>(m, r);
  }
}

// ---- masked (unstructured sparse) rows: DType::kF16M / kI8M / kQ4M (core/dtype.h)
//
// A row is [cols/8 bytes of keep bits][kept value slots]. Every kW columns take the next popcount(bits) values:
// kW values are loaded from the current slot and converted as a dense row's would be, S::expand moves the first
// popcount(bits) of them to the lanes of the set bits (zeros elsewhere), and one fma with x follows: the loads and
// fmas of a dense row, with 1/8 + (kept/cols) x value bytes read from memory. kI8M's scale multiplies the finished
// sum, as for kI8; kQ4M's blocks are decoded to a float buffer first (their groups of 32 do not line up with the
// chunks). The last chunks of a row load from a zero-padded copy of its last values, so nothing past the row's
// slots is read; a mask with more set bits than slots (a corrupt file) gets zeros for the excess columns.
// Chunk j of a 32-column word goes to accumulator j % kAcc: a fixed pattern, bitwise independent of the thread split.
template <class S, DType VT>
inline typename S::V masked_load(const typename Elem<VT>::T* vals, int64_t k, int64_t kept) {
  using T = typename Elem<VT>::T;
  constexpr int W = S::kW;
  if (k + W <= kept) return S::template loadw<VT>(vals + k);
  T tb[W];
  pad_tail<S>(vals + k, std::max<int64_t>(0, kept - k), tb);
  return S::template loadw<VT>(tb);
}

// kQ4M: a row's kept values decoded to float (kept floats at wbuf).
template <class S>
inline void masked_decode_q4(const uint8_t* vals, int64_t kept, float* wbuf) {
  constexpr int W = S::kW, NV = static_cast<int>(kQ4BlockCols) / W;
  for (int64_t b = 0; b < kept / kQ4BlockCols; ++b) {
    typename S::V out[NV];
    S::q4_decode(vals + b * kQ4BlockBytes, out);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::storex(wbuf + b * kQ4BlockCols + v * W, out[v]);
  }
}

// Set bits of a row's mask (cols % 32 == 0).
inline int64_t mask_count(const uint8_t* mask, int64_t cols) {
  int64_t n = 0, c = 0;
  for (; c + 64 <= cols; c += 64) {
    uint64_t w;
    std::memcpy(&w, mask + c / 8, 8);
    n += __builtin_popcountll(w);
  }
  if (c < cols) {
    uint32_t w;
    std::memcpy(&w, mask + c / 8, 4);
    n += __builtin_popcount(w);
  }
  return n;
}

// Calls fn(chunk column, expanded weights) for every kW columns of a masked row whose values (of load type VT:
// kF16, kI8, or kF32 for decoded q4) start at vals. kClamp (a corrupt row: more set bits than slots) clamps the slot
// index at every chunk; otherwise it is a running sum (one add per chunk on the critical path, popcounts independent).
template <class S, DType VT, bool kClamp, class Fn>
inline void masked_chunks(const uint8_t* mask, int64_t cols, int64_t kept, const typename Elem<VT>::T* vals, Fn&& fn) {
  constexpr int W = S::kW, PER = 32 / W;
  static_assert(32 % W == 0, "chunks of kW columns tile a 32-bit mask word");
  int64_t k = 0;
  for (int64_t c = 0; c < cols; c += 32) {
    uint32_t word;
    std::memcpy(&word, mask + c / 8, 4);
#pragma GCC unroll 8
    for (int j = 0; j < PER; ++j) {
      const uint32_t bits = W == 32 ? word : (word >> (j * W)) & ((1u << W) - 1u);
      fn(c + j * W, S::expand(bits, masked_load<S, VT>(vals, k, kept)));
      if constexpr (kClamp) {
        k = std::min<int64_t>(k + __builtin_popcount(bits), kept);
      } else {
        k += __builtin_popcount(bits);
      }
    }
  }
}

template <class S, DType VT, bool kClamp>
inline typename S::V masked_dot_t(const uint8_t* mask, int64_t cols, int64_t kept, const typename Elem<VT>::T* vals,
                                  const float* x) {
  using V = typename S::V;
  constexpr int W = S::kW, A = S::kAcc, PER = 32 / W;
  V acc[A];
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) acc[a] = S::zero();
  int64_t k = 0, c = 0;
  // Chunk j of a word goes to accumulator j % kAcc (constant once the word's loop is unrolled, so the accumulators
  // stay in registers). While a whole word's loads stay inside the slots, no tail checks.
  if constexpr (!kClamp) {
    for (; c < cols && k + 32 + W <= kept; c += 32) {
      uint32_t word;
      std::memcpy(&word, mask + c / 8, 4);
#pragma GCC unroll 8
      for (int j = 0; j < PER; ++j) {
        const uint32_t bits = W == 32 ? word : (word >> (j * W)) & ((1u << W) - 1u);
        acc[j % A] = S::fma(S::expand(bits, S::template loadw<VT>(vals + k)), S::loadx(x + c + j * W), acc[j % A]);
        k += __builtin_popcount(bits);
      }
    }
  }
  for (; c < cols; c += 32) {
    uint32_t word;
    std::memcpy(&word, mask + c / 8, 4);
#pragma GCC unroll 8
    for (int j = 0; j < PER; ++j) {
      const uint32_t bits = W == 32 ? word : (word >> (j * W)) & ((1u << W) - 1u);
      acc[j % A] = S::fma(S::expand(bits, masked_load<S, VT>(vals, k, kept)), S::loadx(x + c + j * W), acc[j % A]);
      k = kClamp ? std::min<int64_t>(k + __builtin_popcount(bits), kept) : k + __builtin_popcount(bits);
    }
  }
  return fold_acc<S, A>(acc);
}

// Unreduced dot of a masked row with x. VD: the value dtype (kF16, kI8, kQ4); wbuf: kQ4's decoded values.
template <class S, DType VD>
inline typename S::V masked_dot(const uint8_t* row, int64_t cols, int64_t kept, const float* x, float* wbuf) {
  const bool ok = mask_count(row, cols) <= kept;
  const uint8_t* vals = row + cols / 8;
  if constexpr (VD == DType::kQ4) {
    masked_decode_q4<S>(vals, kept, wbuf);
    return ok ? masked_dot_t<S, DType::kF32, false>(row, cols, kept, wbuf, x)
              : masked_dot_t<S, DType::kF32, true>(row, cols, kept, wbuf, x);
  } else {
    using T = typename Elem<VD>::T;
    const T* v = reinterpret_cast<const T*>(vals);
    return ok ? masked_dot_t<S, VD, false>(row, cols, kept, v, x) : masked_dot_t<S, VD, true>(row, cols, kept, v, x);
  }
}

// A masked row as dense float32 (out: cols floats): the very weights masked_dot multiplies, zeros elsewhere.
template <class S, DType VD>
inline void masked_expand_row(const uint8_t* row, int64_t cols, int64_t kept, float* out, float* wbuf) {
  const bool ok = mask_count(row, cols) <= kept;
  const uint8_t* vals = row + cols / 8;
  auto store = [&](int64_t c, typename S::V w) { S::storex(out + c, w); };
  if constexpr (VD == DType::kQ4) {
    masked_decode_q4<S>(vals, kept, wbuf);
    if (ok) masked_chunks<S, DType::kF32, false>(row, cols, kept, wbuf, store);
    else masked_chunks<S, DType::kF32, true>(row, cols, kept, wbuf, store);
  } else {
    using T = typename Elem<VD>::T;
    const T* v = reinterpret_cast<const T*>(vals);
    if (ok) masked_chunks<S, VD, false>(row, cols, kept, v, store);
    else masked_chunks<S, VD, true>(row, cols, kept, v, store);
  }
}

// Bytes of one masked row (mask + value slots).
template <DType VD>
inline int64_t masked_stride(int64_t cols, int64_t kept) {
  return cols / 8 + (VD == DType::kQ4 ? kept / kQ4BlockCols * kQ4BlockBytes : kept * static_cast<int64_t>(sizeof(typename Elem<VD>::T)));
}

template <class S, DType VD>
void matvec_rows_masked(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  using V = typename S::V;
  const int64_t cols = m.cols, kept = m.kept, stride = masked_stride<VD>(cols, kept);
  const uint8_t* base = static_cast<const uint8_t*>(m.data);
  float* wbuf = masked_wbuf(kept);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = base + r * stride;
    if constexpr (S::kPrefetch > 0) {  // the next row, a line at a time (rows are short: a few KB)
      const uintptr_t next = reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(stride);
      for (int64_t off = 0; off < stride && r + 1 < r1; off += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(next + static_cast<uintptr_t>(off)), 0, S::kPrefetchLocality);
    }
    const V v = masked_dot<S, VD>(row, cols, kept, x, wbuf);
    reduce_rows<S, 1>(&v, y + r);
    if constexpr (VD == DType::kI8) y[r] *= i8_row_scale<S>(m, r);
  }
}

// ---- sequence mode (matmul)
//
// Register tile: out[r][t] = dot(W[r], X[t]) for R rows x T tokens. Each weight vector is loaded and
// converted once and used for T tokens, each x vector is used for R rows, and the R*T independent
// accumulator chains hide FMA latency. The R weight rows are streamed from memory by the first token
// tile and come from L1/L2 for the others.
//
// Tried and dropped (AVX-512, Zen 5, n = 16): blocking the columns so the X slice stays in L1 (the
// accumulators then go through memory between blocks) and software-prefetching the next row block
// were both no faster than this plain loop, which reaches ~40-85 GMAC/s per core with weights
// streamed from DRAM (~60-90 with them in L3; the FMA peak is ~110).
//
// kQ4: the R rows' blocks at a column block are decoded once (32 / kW vectors each) and used for the
// T tokens; the tile height is S::kQ4TileR (decoded blocks take more registers).
template <class S, DType D, int R, int T>
inline void tile_rt(const typename Elem<D>::T* w, int64_t cols, const float* X, float out[R][T]) {
  using V = typename S::V;
  constexpr int W = S::kW;
  V acc[T][R];  // token-major, so each token's R sums are reduced 4 at a time below
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[t][r] = S::zero();
  }
  if constexpr (D == DType::kQ4) {
    constexpr int NV = static_cast<int>(kQ4BlockCols) / W;
    const int64_t stride = row_stride<D>(cols);
    for (int64_t b = 0; b < cols / kQ4BlockCols; ++b) {  // cols is a multiple of 32: no tail
      V wv[R][NV];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) S::q4_decode(w + r * stride + b * kQ4BlockBytes, wv[r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const V xv = S::loadx(X + t * cols + b * kQ4BlockCols + v * W);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) acc[t][r] = S::fma(wv[r][v], xv, acc[t][r]);
        }
      }
    }
  } else {
    using E = typename Elem<D>::T;
    int64_t c = 0;
    for (; c + W <= cols; c += W) {
      V wv[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) wv[r] = S::template loadw<D>(w + r * cols + c);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const V xv = S::loadx(X + t * cols + c);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[t][r] = S::fma(wv[r], xv, acc[t][r]);
      }
    }
    if (c < cols) {  // the last, partial vector through zero-padded copies
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
        for (int r = 0; r < R; ++r) acc[t][r] = S::fma(wv[r], xv, acc[t][r]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    float sums[R];
    int r = 0;
    for (; r + 4 <= R; r += 4) reduce_rows<S, 4>(&acc[t][r], sums + r);
    for (; r < R; ++r) reduce_rows<S, 1>(&acc[t][r], sums + r);
    for (r = 0; r < R; ++r) out[r][t] = sums[r];
  }
}

// Rows [rb, rb + R) against all n tokens, T tokens at a time, results scattered into Y (n x rows).
// INT8 row scales (f32 or f16) are converted once per tile and applied to the finished sums.
template <class S, DType D, int R>
inline void tile_rows(const MatRef& m, const float* X, int64_t n, float* Y, int64_t rb) {
  using E = typename Elem<D>::T;
  constexpr int T = S::kTileT;
  const E* w = static_cast<const E*>(m.data) + rb * row_stride<D>(m.cols);
  const int64_t cols = m.cols, rows = m.rows;
  float sc[R];
  for (int r = 0; r < R; ++r) sc[r] = D == DType::kI8 ? i8_row_scale<S>(m, rb + r) : 1.0f;
  int64_t t = 0;
  for (; t + T <= n; t += T) {
    float out[R][T];
    tile_rt<S, D, R, T>(w, cols, X + t * cols, out);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < T; ++j) Y[(t + j) * rows + rb + r] = D == DType::kI8 ? out[r][j] * sc[r] : out[r][j];
  }
  for (; t < n; ++t) {
    float out[R][1];
    tile_rt<S, D, R, 1>(w, cols, X + t * cols, out);
    for (int r = 0; r < R; ++r) Y[t * rows + rb + r] = D == DType::kI8 ? out[r][0] * sc[r] : out[r][0];
  }
}

// kF16S24 in sequence mode: a few tokens go row by row through the matvec code (the row stays in L1); more
// tokens expand each tile of rows to dense float32 (zeros included) once and run the dense register tile over
// all tokens, so a prompt costs what the dense matrix costs instead of a gather per weight and token.
template <class S>
void matmul_rows_s24(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  const int64_t cols = m.cols, stride = row_stride<DType::kF16S24>(cols), rows = m.rows;
  const uint8_t* base = static_cast<const uint8_t*>(m.data);
  if (n < S::kTileT) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t t = 0; t < n; ++t) {
        const typename S::V v = dot_row_s24<S>(base + r * stride, cols, X + t * cols, 0);
        reduce_rows<S, 1>(&v, Y + t * rows + r);
      }
    return;
  }
  constexpr int R = S::kTileR, T = S::kTileT;
  float* const buf = expand_tile_buf(static_cast<int64_t>(R) * cols);
  // The dtype's own row decoder (core/dtype.h): the same exact f16 values the sparse dot multiplies.
  auto expand = [&](int64_t r, float* out) { s24_to_f32_row(base + r * stride, out, static_cast<size_t>(cols)); };
  int64_t r = r0;
  for (; r + R <= r1; r += R) {
    for (int i = 0; i < R; ++i) expand(r + i, buf + i * cols);
    int64_t t = 0;
    for (; t + T <= n; t += T) {
      float out[R][T];
      tile_rt<S, DType::kF32, R, T>(buf, cols, X + t * cols, out);
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < T; ++j) Y[(t + j) * rows + r + i] = out[i][j];
    }
    for (; t < n; ++t) {
      float out[R][1];
      tile_rt<S, DType::kF32, R, 1>(buf, cols, X + t * cols, out);
      for (int i = 0; i < R; ++i) Y[t * rows + r + i] = out[i][0];
    }
  }
  for (; r < r1; ++r) {
    expand(r, buf);
    for (int64_t t = 0; t < n; ++t) {
      float out[1][1];
      tile_rt<S, DType::kF32, 1, 1>(buf, cols, X + t * cols, out);
      Y[t * rows + r] = out[0][0];
    }
  }
}

// Sequence mode: each row's values are decoded once, then expanded to a dense float32 row once and run through the
// dense register tile over all tokens (as kF16S24 does for many tokens); with few tokens, the masked dot per token.
template <class S, DType VD>
void matmul_rows_masked(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  const int64_t cols = m.cols, kept = m.kept, stride = masked_stride<VD>(cols, kept), rows = m.rows;
  const uint8_t* base = static_cast<const uint8_t*>(m.data);
  float* wbuf = masked_wbuf(kept);
  if (n < S::kTileT) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = base + r * stride;
      const float sc = VD == DType::kI8 ? i8_row_scale<S>(m, r) : 1.0f;
      for (int64_t t = 0; t < n; ++t) {
        const typename S::V v = masked_dot<S, VD>(row, cols, kept, X + t * cols, wbuf);
        reduce_rows<S, 1>(&v, Y + t * rows + r);
        if constexpr (VD == DType::kI8) Y[t * rows + r] *= sc;
      }
    }
    return;
  }
  constexpr int R = S::kTileR, T = S::kTileT;
  float* const buf = expand_tile_buf(static_cast<int64_t>(R) * cols);
  float sc[R];
  auto expand = [&](int64_t r, float* out) { masked_expand_row<S, VD>(base + r * stride, cols, kept, out, wbuf); };
  int64_t r = r0;
  auto run = [&](auto rtag, int64_t rb) {
    constexpr int RR = decltype(rtag)::value;
    for (int i = 0; i < RR; ++i) {
      expand(rb + i, buf + i * cols);
      sc[i] = VD == DType::kI8 ? i8_row_scale<S>(m, rb + i) : 1.0f;
    }
    int64_t t = 0;
    for (; t + T <= n; t += T) {
      float out[RR][T];
      tile_rt<S, DType::kF32, RR, T>(buf, cols, X + t * cols, out);
      for (int i = 0; i < RR; ++i)
        for (int j = 0; j < T; ++j) Y[(t + j) * rows + rb + i] = out[i][j] * sc[i];
    }
    for (; t < n; ++t) {
      float out[RR][1];
      tile_rt<S, DType::kF32, RR, 1>(buf, cols, X + t * cols, out);
      for (int i = 0; i < RR; ++i) Y[t * rows + rb + i] = out[i][0] * sc[i];
    }
  };
  for (; r + R <= r1; r += R) run(std::integral_constant<int, R>{}, r);
  for (; r < r1; ++r) run(std::integral_constant<int, 1>{}, r);
}

// ---- sequence-mode GEMM with the tokens in the vector lanes (S::kGemmMR > 0: AVX-512)
//
// Y (n x rows) = X (n x cols) W^T as an outer product: the tokens are transposed once per call into XT (cols x
// n_pad, n_pad = n rounded up to S::kW, zero padded), and a tile of MR weight rows is converted once to float32
// (kQ4 decoded, kI8 as its integers, the row scale applied to the sums) into a row buffer. The micro-kernel keeps
// MR x NV vectors of sums (MR rows x NV * kW tokens) in registers and, per column k, broadcasts one weight of each
// row and loads NV vectors of XT[k]: MR * NV multiply-adds per MR + NV loads (12 x 2 on AVX-512: 24 fmas for 14
// loads), where the dot-product tile (tile_rt) needs 10 loads and a horizontal sum per row and token. No
// horizontal sums: each lane is one token's sum over k in column order, so the result is exact float32 sums in a
// fixed order (deterministic; a different order from matvec's, within the kernels' accuracy budget).
// The micro-kernel over KC columns (one k-block): acc (MR x NV*kW floats, in memory between k-blocks) +=
// rowbuf (MR rows of KC floats: a constant stride, so every broadcast is one base register plus a fixed
// displacement) times xt (KC rows of ldxt token values).
template <class S, int MR, int NV, int KC>
inline void gemm_micro(const float* rowbuf, int64_t kc, const float* xt, int64_t ldxt, float* acc_mem) {
  using V = typename S::V;
  constexpr int W = S::kW;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = S::loadx(acc_mem + (r * NV + v) * W);
  for (int64_t k = 0; k < kc; ++k) {
    V x[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) x[v] = S::loadx(xt + k * ldxt + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V w = S::set1(rowbuf[r * KC + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(w, x[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::storex(acc_mem + (r * NV + v) * W, acc[r][v]);
}

// Columns [c0, c0 + kc) of the row w (c0 and kc multiples of 32 for kQ4) converted to float32 into dst, as loadw /
// q4_decode convert them; dst receives kc rounded up to whole vectors of floats, zero past kc.
template <class S, DType D>
inline void row_segment_to_f32(const typename Elem<D>::T* w, int64_t c0, int64_t kc, float* dst) {
  using E = typename Elem<D>::T;
  constexpr int W = S::kW;
  if constexpr (D == DType::kQ4) {
    constexpr int NV = static_cast<int>(kQ4BlockCols) / W;
    for (int64_t b = c0 / kQ4BlockCols; b < (c0 + kc) / kQ4BlockCols; ++b) {
      typename S::V v[NV];
      S::q4_decode(w + b * kQ4BlockBytes, v);
      for (int j = 0; j < NV; ++j) S::storex(dst + b * kQ4BlockCols - c0 + j * W, v[j]);
    }
  } else {
    int64_t c = 0;
    for (; c + W <= kc; c += W) S::storex(dst + c, S::template loadw<D>(w + c0 + c));
    if (c < kc) {
      E wb[W];
      pad_tail<S>(w + c0 + c, kc - c, wb);
      S::storex(dst + c, S::template loadw<D>(wb));
    }
  }
}

// Columns [c0, c0 + kc) of rows [rb, rb + nr) of m (nr <= MR, kc <= KC, c0 and kc multiples of 32 except at the end
// of a row) converted to float32 into buf (MR rows of KC floats; rows past nr are zero).
template <class S, DType D, int MR, int KC>
inline void gemm_load_rows(const MatRef& m, int64_t rb, int64_t nr, int64_t c0, int64_t kc, float* buf) {
  using E = typename Elem<D>::T;
  static_assert(KC % S::kW == 0, "a row's last vector stays inside its KC floats");
  const int64_t stride = row_stride<D>(m.cols);
  const E* base = static_cast<const E*>(m.data);
  for (int64_t r = 0; r < MR; ++r) {
    float* dst = buf + r * KC;
    if (r >= nr) {
      for (int64_t c = 0; c < kc; ++c) dst[c] = 0.f;
      continue;
    }
    row_segment_to_f32<S, D>(base + (rb + r) * stride, c0, kc, dst);
  }
}

template <class S, DType D>
void gemm_rows(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  constexpr int W = S::kW, MR = S::kGemmMR, NV = S::kGemmNV, TB = NV * W, KC = 256;
  static_assert(NV == 1 || NV == 2, "the last token block is one vector wide");
  static_assert(MR <= W, "a tile's sums leave through one kW x kW transpose per vector of tokens");
  static_assert(KC % kQ4BlockCols == 0, "k-blocks hold whole q4 blocks");
  const int64_t cols = m.cols, rows = m.rows;
  const int64_t n_pad = (n + W - 1) / W * W, tiles = (r1 - r0 + MR - 1) / MR;
  // k-blocks outermost: a block of the transposed tokens (KC x n_pad floats) stays in cache while every tile of
  // rows passes over it; each tile's sums (MR x n_pad) live in `acc` between k-blocks.
  float* const xt = gemm_buf(0, KC * n_pad + tiles * MR * n_pad);
  float* const acc = xt + KC * n_pad;
  for (int64_t i = 0; i < tiles * MR * n_pad; ++i) acc[i] = 0.f;
  float* const buf = gemm_buf(1, MR * KC);
  for (int64_t c0 = 0; c0 < cols; c0 += KC) {
    const int64_t kc = std::min<int64_t>(KC, cols - c0);
    for (int64_t t = 0; t < n_pad; t += W)  // tokens t.. (columns c0..) into columns t.. of xt, padding zero
      for (int64_t k = 0; k < kc; k += W)
        S::transpose(X + t * cols + c0 + k, cols, static_cast<int>(std::min<int64_t>(W, n - t)),
                     static_cast<int>(std::min<int64_t>(W, kc - k)), xt + k * n_pad + t, n_pad, W);
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t rb = r0 + i * MR, nr = std::min<int64_t>(MR, r1 - rb);
      gemm_load_rows<S, D, MR, KC>(m, rb, nr, c0, kc, buf);
      float* const a = acc + i * MR * n_pad;
      int64_t t0 = 0;
      for (; t0 + TB <= n_pad; t0 += TB) gemm_micro<S, MR, NV, KC>(buf, kc, xt + t0, n_pad, a + MR * t0);
      if (t0 < n_pad) gemm_micro<S, MR, 1, KC>(buf, kc, xt + t0, n_pad, a + MR * t0);
    }
  }
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t rb = r0 + i * MR, nr = std::min<int64_t>(MR, r1 - rb);
    float sc[MR];
    for (int r = 0; r < MR; ++r) sc[r] = D == DType::kI8 && r < nr ? i8_row_scale<S>(m, rb + r) : 1.0f;
    for (int64_t t0 = 0; t0 < n_pad; t0 += TB) {
      const int64_t nv = std::min<int64_t>(TB, n_pad - t0);  // tokens in this block's sums: a is nr x nv
      float* a = acc + i * MR * n_pad + MR * t0;
      if constexpr (D == DType::kI8)
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t t = 0; t < nv; ++t) a[r * nv + t] *= sc[r];
      for (int64_t t = 0; t < nv && t0 + t < n; t += W)  // tokens t0 + t..: their nr outputs, contiguous in Y
        S::transpose(a + t, nv, static_cast<int>(nr), static_cast<int>(std::min<int64_t>(W, n - t0 - t)),
                     Y + (t0 + t) * rows + rb, rows, static_cast<int>(nr));
    }
  }
}

template <class S, DType D>
void matmul_rows_t(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  if constexpr (S::kGemmMR > 0 && (D == DType::kF32 || D == DType::kF16 || D == DType::kBF16 || D == DType::kI8 ||
                                   D == DType::kQ4)) {
    if (n >= S::kGemmMinN) return gemm_rows<S, D>(m, X, n, Y, r0, r1);
  }
  constexpr int R = D == DType::kQ4 ? S::kQ4TileR : S::kTileR;
  int64_t r = r0;
  for (; r + R <= r1; r += R) tile_rows<S, D, R>(m, X, n, Y, r);
  for (; r < r1; ++r) tile_rows<S, D, 1>(m, X, n, Y, r);
}

// The two exported entry points of an ISA: switch once on the dtype, then run fully typed code.
template <class S>
void matvec_rows_isa(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  switch (m.dtype) {
    case DType::kF32: return matvec_rows_t<S, DType::kF32>(m, x, y, r0, r1);
    case DType::kF16: return matvec_rows_t<S, DType::kF16>(m, x, y, r0, r1);
    case DType::kBF16: return matvec_rows_t<S, DType::kBF16>(m, x, y, r0, r1);
    case DType::kI8: return matvec_rows_t<S, DType::kI8>(m, x, y, r0, r1);
    case DType::kQ4: return matvec_rows_t<S, DType::kQ4>(m, x, y, r0, r1);
    case DType::kF16S24: return matvec_rows_t<S, DType::kF16S24>(m, x, y, r0, r1);
    case DType::kF16M: return matvec_rows_masked<S, DType::kF16>(m, x, y, r0, r1);
    case DType::kI8M: return matvec_rows_masked<S, DType::kI8>(m, x, y, r0, r1);
    case DType::kQ4M: return matvec_rows_masked<S, DType::kQ4>(m, x, y, r0, r1);
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
    case DType::kQ4: return matmul_rows_t<S, DType::kQ4>(m, X, n, Y, r0, r1);
    case DType::kF16S24: return matmul_rows_s24<S>(m, X, n, Y, r0, r1);
    case DType::kF16M: return matmul_rows_masked<S, DType::kF16>(m, X, n, Y, r0, r1);
    case DType::kI8M: return matmul_rows_masked<S, DType::kI8>(m, X, n, Y, r0, r1);
    case DType::kQ4M: return matmul_rows_masked<S, DType::kQ4>(m, X, n, Y, r0, r1);
    default: break;
  }
}

// ---- neuron-bundled sparse channel-mix (ffn_neurons, see kernels.h)
//
// Per neuron: kout = dot_row (the very code matvec_rows runs on a row, then the same reduce_rows<1>
// and kI8 scale, so the pre-activation is bitwise what matvec_rows gives), then y += relu(k)^2 *
// (second row), vectorised: y (C floats) stays in L1, each weight vector is converted once.
//
// Prefetch: neurons are scattered (file or cache), so the hardware prefetchers see one short
// sequential stream per neuron and stall at every jump. While neuron j is computed, the same byte
// offsets of neuron j + dist are prefetched (pf_delta = ptrs[j + dist] - ptrs[j]), one prefetch per
// line consumed, dist = ceil(S::kPrefetch / neuron bytes) neurons (>= 1), so the data arrives
// ~S::kPrefetch bytes of work ahead, as in matvec. The first dist neurons are prefetched up front.
// When neuron j's second row is skipped (skip_zero, k <= 0) the second row of neuron j + dist is
// still prefetched: the list normally holds neurons predicted active.

// y[0, cols) += a * row (for kI8 `a` already includes the row scale).
template <class S, DType D>
inline void axpy_row(const typename Elem<D>::T* w, int64_t cols, float a, float* y, uintptr_t pf_delta) {
  using V = typename S::V;
  using T = typename Elem<D>::T;
  constexpr int W = S::kW;
  const V av = S::set1(a);
  if constexpr (D == DType::kQ4) {
    constexpr int NV = static_cast<int>(kQ4BlockCols) / W;
    const int64_t nb = cols / kQ4BlockCols;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * kQ4BlockBytes;
      if constexpr (S::kPrefetch > 0) {
        // Every third block: prefetched addresses 60 < 64 bytes apart, so no line is skipped.
        if (b % 3 == 0)
          __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(blk) + pf_delta), 0,
                             S::kPrefetchLocality);
      }
      V wv[NV];
      S::q4_decode(blk, wv);
      float* yb = y + b * kQ4BlockCols;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) S::storex(yb + v * W, S::fma(wv[v], av, S::loadx(yb + v * W)));
    }
  } else {
    constexpr int U = 4;  // vectors per iteration
    int64_t c = 0;
    for (; c + U * W <= cols; c += U * W) {
      if constexpr (S::kPrefetch > 0) {
        constexpr int kBytes = U * W * static_cast<int>(sizeof(T));
        const uintptr_t ahead = reinterpret_cast<uintptr_t>(w + c) + pf_delta;
#pragma GCC unroll 8
        for (int off = 0; off < kBytes; off += 64)
          __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<uintptr_t>(off)), 0, S::kPrefetchLocality);
      }
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u)
        S::storex(y + c + u * W, S::fma(S::template loadw<D>(w + c + u * W), av, S::loadx(y + c + u * W)));
    }
    for (; c + W <= cols; c += W) S::storex(y + c, S::fma(S::template loadw<D>(w + c), av, S::loadx(y + c)));
    if (c < cols) {
      T wb[W];
      float yb[W];
      pad_tail<S>(w + c, cols - c, wb);
      pad_tail<S>(y + c, cols - c, yb);
      S::storex(yb, S::fma(S::template loadw<D>(wb), av, S::loadx(yb)));
      std::memcpy(y + c, yb, sizeof(float) * static_cast<size_t>(cols - c));
    }
  }
}

template <class S, DType D>
void ffn_neurons_t(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x, float* y,
                   float* kout, bool skip_zero) {
  using T = typename Elem<D>::T;
  using V = typename S::V;
  const int64_t cols = m.cols, stride = row_stride<D>(cols);
  const int64_t row_b = stride * static_cast<int64_t>(sizeof(T)), neuron_b = 2 * row_b;
  int64_t dist = 0;
  if constexpr (S::kPrefetch > 0) {
    dist = neuron_b > 0 ? std::max<int64_t>(1, (S::kPrefetch + neuron_b - 1) / neuron_b) : 1;
    for (int64_t j = 0; j < std::min(dist, n); ++j)
      for (int64_t off = 0; off < neuron_b; off += 64)
        __builtin_prefetch(static_cast<const char*>(ptrs[j]) + off, 0, S::kPrefetchLocality);
  }
  for (int64_t j = 0; j < n; ++j) {
    const T* w = static_cast<const T*>(ptrs[j]);
    uintptr_t delta = 0;  // past the end of the list: re-touch the lines being read (harmless)
    if constexpr (S::kPrefetch > 0) {
      if (j + dist < n) delta = reinterpret_cast<uintptr_t>(ptrs[j + dist]) - reinterpret_cast<uintptr_t>(w);
    }
    const V v = dot_row<S, D>(w, cols, x, delta);
    float k;
    reduce_rows<S, 1>(&v, &k);
    if constexpr (D == DType::kI8) k *= i8_row_scale<S>(m, 2 * static_cast<int64_t>(ids[j]));
    kout[j] = k;
    const float r = k > 0.0f ? k : 0.0f, a = r * r;
    if (a != 0.0f || !skip_zero) {
      float coef = a;
      if constexpr (D == DType::kI8) coef = a * i8_row_scale<S>(m, 2 * static_cast<int64_t>(ids[j]) + 1);
      axpy_row<S, D>(w + stride, cols, coef, y, delta);
    } else if constexpr (S::kPrefetch > 0) {
      if (j + dist < n) {
        const char* next = static_cast<const char*>(ptrs[j + dist]) + row_b;
        for (int64_t off = 0; off < row_b; off += 64) __builtin_prefetch(next + off, 0, S::kPrefetchLocality);
      }
    }
  }
}

// ffn_values for one dtype. Blocks of kValueRows neurons x kValueCols columns: the block's value rows that some token
// of [t0, t1) uses are converted to float once (32 KB on the stack, zero past the last column), then each token's
// columns are summed in registers over the neurons it uses, in list order, and stored once: per (token, neuron) pair
// kValueCols / kW fused multiply-adds from L1 instead of a conversion, a load and a store of y per vector. Each
// element is y = fma(w, a * scale, y) in list order, the operations of axpy_row (the token path's), so the result does
// not depend on the blocking.
// Kernel sets with S::nonzero_bits and S::compact (AVX-512: compare masks and compress stores) make a token's list of
// neurons with a != 0 from bit masks; the others test each neuron.
template <class S>
constexpr bool kValueBits = requires(const float* a, int32_t* l, float* c) {
  S::nonzero_bits(a, 1);
  S::compact(0u, a, a, l, c);
};

template <class S, int NA>
inline void ffn_values_slice(const float* R, const int32_t* list, const float* coef, int k, float* y) {
  using V = typename S::V;
  constexpr int W = S::kW;
  V acc[NA];
#pragma GCC unroll 16
  for (int v = 0; v < NA; ++v) acc[v] = S::loadx(y + v * W);
  for (int i = 0; i < k; ++i) {
    const float* r = R + static_cast<int64_t>(list[i]) * kValueCols;
    const V a = S::set1(coef[i]);
#pragma GCC unroll 16
    for (int v = 0; v < NA; ++v) acc[v] = S::fma(S::loadx(r + v * W), a, acc[v]);
  }
#pragma GCC unroll 16
  for (int v = 0; v < NA; ++v) S::storex(y + v * W, acc[v]);
}

template <class S, DType D>
void ffn_values_t(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A, int64_t lda,
                  int64_t t0, int64_t t1, float* Y, int64_t ldy) {
  using T = typename Elem<D>::T;
  constexpr int W = S::kW, NA = S::kValueAcc;
  static_assert(kValueCols % (NA * W) == 0 && kValueCols % kQ4BlockCols == 0, "whole slices and q4 blocks per tile");
  const int64_t cols = m.cols, stride = row_stride<D>(cols);
  alignas(64) float R[kValueRows * kValueCols];
  float scale[kValueRows], coef[kValueRows];
  int32_t list[kValueRows];
  for (int64_t j0 = 0; j0 < n; j0 += kValueRows) {
    const int nj = static_cast<int>(std::min<int64_t>(kValueRows, n - j0));
    bool used[kValueRows];
    if constexpr (kValueBits<S>) {  // a bit mask per token, OR-ed
      static_assert(kValueRows <= 32, "a block's neurons fit a 32-bit mask");
      uint32_t any = 0;
      for (int64_t t = t0; t < t1; ++t) any |= S::nonzero_bits(A + t * lda + j0, nj);
      for (int j = 0; j < nj; ++j) used[j] = (any >> j) & 1u;
    } else {
      for (int j = 0; j < nj; ++j) {
        used[j] = false;
        for (int64_t t = t0; t < t1 && !used[j]; ++t) used[j] = A[t * lda + j0 + j] != 0.0f;
      }
    }
    for (int j = 0; j < nj; ++j) {
      scale[j] = 1.0f;
      if constexpr (D == DType::kI8) {
        if (used[j]) scale[j] = i8_row_scale<S>(m, 2 * static_cast<int64_t>(ids[j0 + j]) + 1);
      }
    }
    for (int64_t c0 = 0; c0 < cols; c0 += kValueCols) {
      const int64_t cw = std::min<int64_t>(kValueCols, cols - c0);
      for (int j = 0; j < nj; ++j)  // convert the tile of the rows some token uses
        if (used[j]) row_segment_to_f32<S, D>(static_cast<const T*>(ptrs[j0 + j]) + stride, c0, cw, R + j * kValueCols);
      for (int64_t t = t0; t < t1; ++t) {
        int k = 0;
        if constexpr (kValueBits<S>) {
          k = S::compact(S::nonzero_bits(A + t * lda + j0, nj), A + t * lda + j0, scale, list, coef);
        } else {
          for (int j = 0; j < nj; ++j) {  // without a branch: about 1 neuron in 7 is used, unpredictably
            const float a = A[t * lda + j0 + j];
            list[k] = j;
            coef[k] = a * scale[j];
            k += a != 0.0f;
          }
        }
        if (k == 0) continue;
        float* y = Y + t * ldy + c0;
        int64_t c = 0;
        for (; c + NA * W <= cw; c += NA * W) ffn_values_slice<S, NA>(R + c, list, coef, k, y + c);
        for (; c + W <= cw; c += W) ffn_values_slice<S, 1>(R + c, list, coef, k, y + c);
        if (c < cw) {  // the last partial vector through a padded copy of y
          float yb[W];
          pad_tail<S>(y + c, cw - c, yb);
          ffn_values_slice<S, 1>(R + c, list, coef, k, yb);
          std::memcpy(y + c, yb, sizeof(float) * static_cast<size_t>(cw - c));
        }
      }
    }
  }
}

template <class S>
void ffn_values_isa(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A, int64_t lda,
                    int64_t t0, int64_t t1, float* Y, int64_t ldy) {
  switch (m.dtype) {
    case DType::kF32: return ffn_values_t<S, DType::kF32>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kF16: return ffn_values_t<S, DType::kF16>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kBF16: return ffn_values_t<S, DType::kBF16>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kI8: return ffn_values_t<S, DType::kI8>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kQ4: return ffn_values_t<S, DType::kQ4>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    default: break;
  }
}

template <class S>
void ffn_neurons_isa(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x,
                     float* y, float* kout, bool skip_zero) {
  switch (m.dtype) {
    case DType::kF32: return ffn_neurons_t<S, DType::kF32>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kF16: return ffn_neurons_t<S, DType::kF16>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kBF16: return ffn_neurons_t<S, DType::kBF16>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kI8: return ffn_neurons_t<S, DType::kI8>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kQ4: return ffn_neurons_t<S, DType::kQ4>(m, ptrs, ids, n, x, y, kout, skip_zero);
    default: break;
  }
}

// The 1-bit predictor for kBitsLanes inputs at once (kernels.h, bits_scores_chunk): per row, per byte of its bits,
// the lane tables of the byte's two 4-column groups (entry (byte & 15) of the low, (byte >> 4) of the high) are
// added, then added to accumulator (byte index % 4) as bits_scores_rows adds its 8-column entry lo[l] + hi[h]: the
// same float operations per lane, so every lane's sum is bitwise the single-input one. Lanes are the inputs, so a
// row's bytes are read once for all of them and each look-up is a whole vector.
template <class S>
void bits_sums_isa(const uint8_t* bits, int64_t nb, const float* table, float* raw, int64_t r0, int64_t r1) {
  using V = typename S::V;
  constexpr int W = S::kW, NV = static_cast<int>(kBitsLanes) / W;
  static_assert(kBitsLanes % W == 0, "whole vectors of lanes");
  constexpr int64_t L = kBitsLanes, E = 16 * kBitsLanes;
  // The table offsets of a row's nibbles, computed for up to kSpan bytes at once in a loop the compiler vectorises:
  // the lookup loop then costs one offset load per nibble instead of a byte load, a mask or shift and an address.
  constexpr int64_t kSpan = 256;
  uint32_t off[2 * kSpan];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = bits + r * nb;
    V a[4][NV];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) a[k][v] = S::zero();
    const auto add = [&](int k, int64_t at) {
      const float* lo = table + off[2 * at];
      const float* hi = table + off[2 * at + 1];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) a[k][v] = S::add(a[k][v], S::add(S::loadx(lo + v * W), S::loadx(hi + v * W)));
    };
    for (int64_t s0 = 0; s0 < nb; s0 += kSpan) {
      const int64_t n = std::min(kSpan, nb - s0);
      const uint8_t* q = p + s0;
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t g = static_cast<uint32_t>(2 * (s0 + i) * E);
        off[2 * i] = g + static_cast<uint32_t>(q[i] & 15) * static_cast<uint32_t>(L);
        off[2 * i + 1] = g + static_cast<uint32_t>(E) + static_cast<uint32_t>(q[i] >> 4) * static_cast<uint32_t>(L);
      }
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) add(k & 3, i + k);
      }
      for (; i < n; ++i) add(0, i);
    }
    float* out = raw + (r - r0) * L;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::storex(out + v * W, S::add(S::add(a[0][v], a[1][v]), S::add(a[2][v], a[3][v])));
  }
}

// ---- RWKV-5/6 linear attention (kern::wkv5_token): per head, the value columns j in blocks of up to
// kValueAcc / 2 vectors whose outputs and v values stay in registers over the N key rows i; each state row segment is
// loaded and stored once. Every (h, j) runs wkv5_token's documented operations in i order, so the bits equal the
// scalar set's.
template <class S, int NV>
inline void wkv5_block(const float* r, const float* k, const float* v, const float* w, const float* u, float* St,
                       float* out, int64_t N, int64_t j0) {
  using V = typename S::V;
  constexpr int W = S::kW;
  V vv[NV], o[NV];
  for (int b = 0; b < NV; ++b) {
    vv[b] = S::loadx(v + j0 + b * W);
    o[b] = S::zero();
  }
  for (int64_t i = 0; i < N; ++i) {
    const V ri = S::set1(r[i]), ki = S::set1(k[i]), wi = S::set1(w[i]), ui = S::set1(u[i]);
    float* si = St + i * N + j0;
    for (int b = 0; b < NV; ++b) {
      const V s = S::loadx(si + b * W), kv = S::mul(ki, vv[b]);
      o[b] = S::fma(ri, S::fma(ui, kv, s), o[b]);
      S::storex(si + b * W, S::fma(s, wi, kv));
    }
  }
  for (int b = 0; b < NV; ++b) S::storex(out + j0 + b * W, o[b]);
}

// Columns from j on in blocks of NV vectors, then NV / 2, ... 1; returns the first column not run.
template <class S, int NV>
inline int64_t wkv5_run(const float* r, const float* k, const float* v, const float* w, const float* u, float* St,
                        float* out, int64_t N, int64_t j) {
  for (; j + NV * S::kW <= N; j += NV * S::kW) wkv5_block<S, NV>(r, k, v, w, u, St, out, N, j);
  if constexpr (NV > 1) return wkv5_run<S, NV / 2>(r, k, v, w, u, St, out, N, j);
  else return j;
}

template <class S>
void wkv5_isa(const float* r, const float* k, const float* v, const float* w, const float* u, float* St, float* out,
              int64_t H, int64_t N) {
  constexpr int JB = S::kValueAcc / 2;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    float* Sh = St + o * N;
    // a head of 64 on AVX-512: one block of 4 vectors
    int64_t j = wkv5_run<S, JB>(r + o, k + o, v + o, w + o, u + o, Sh, out + o, N, 0);
    for (; j < N; ++j) {  // columns past the last whole vector: the same operations one float at a time
      float acc = 0.f;
      for (int64_t i = 0; i < N; ++i) {
        float& s = Sh[i * N + j];
        const float kv = k[o + i] * v[o + j];
        acc = std::fma(r[o + i], std::fma(u[o + i], kv, s), acc);
        s = std::fma(s, w[o + i], kv);
      }
      out[o + j] = acc;
    }
  }
}

}  // namespace rwkvl::kern::detail
