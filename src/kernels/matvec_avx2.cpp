// AVX2 + FMA + F16C kernels (x86-64). Compiled with -mavx2 -mfma -mf16c; only called after
// dispatch.cpp has checked those features at run time.
#include <immintrin.h>

#include <cstring>

#include "kernels/simd_impl.h"

namespace rwkvl::kern::detail {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kW = 8;
  // matvec: 8 x 32 bytes per iteration (as many bytes as AVX-512's 4 x 64); prefetchnta 4 KB ahead.
  static constexpr int kAcc = 8, kPrefetch = 4096, kPrefetchLocality = 0;
  // ffn_values: a token's sums over 8 vectors of columns held in registers (8 of the 16 ymm registers).
  static constexpr int kValueAcc = 8;
  // matmul tile 4 rows x 3 tokens: 12 accumulators + 4 weight vectors (+ the x vector) of the 16 ymm
  // registers; measured 20-60% faster than 2x4 or 2x6, slightly ahead of 3x4.
  static constexpr int kTileR = 4, kTileT = 3;
  // kQ4: 4 rows x 3 tokens as well (a decoded block is 4 vectors per row; the compiler spills some):
  // measured ~31 GMAC/s at n = 16 against ~24 for 2 rows and ~25 for 6.
  static constexpr int kQ4TileR = 4;
  // No outer-product GEMM (gemm_rows): 16 ymm registers leave too few accumulators for it.
  static constexpr int kGemmMR = 0, kGemmNV = 1, kGemmMinN = 0;

  static V zero() { return _mm256_setzero_ps(); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  static V loadx(const float* p) { return _mm256_loadu_ps(p); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static void storex(float* p, V v) { _mm256_storeu_ps(p, v); }

  template <DType D>
  static V loadw(const typename Elem<D>::T* p) {
    if constexpr (D == DType::kF32) {
      return _mm256_loadu_ps(p);
    } else if constexpr (D == DType::kF16) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else if constexpr (D == DType::kBF16) {
      // bf16 is the top half of a float32: widen to 32 bits and shift into place.
      const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    } else {
      static_assert(D == DType::kI8);
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    }
  }

  // kQ4 block -> 4 x 8 floats: bytes 0..7 and 8..15 of the nibbles zero-extended to 32-bit lanes
  // (vpmovzxbd straight from memory, inside the block), low nibbles by masking, high ones by a shift,
  // then int -> float and one fma with the block's d and m (rounded once). (AVX2's vpermps has only
  // 8 entries, so the AVX-512 table lookup would need two lookups and a blend per vector.)
  static void q4_decode(const uint8_t* blk, V* out) {
    int dm;
    std::memcpy(&dm, blk, 4);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));  // d, m, 0, 0
    const __m256 d = _mm256_broadcastss_ps(f);
    const __m256 m = _mm256_broadcastss_ps(_mm_movehdup_ps(f));
    const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 4)));
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 12)));
    const __m256i lo = _mm256_set1_epi32(15);
    out[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(a, lo)), d, m);  // columns 0..7
    out[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b, lo)), d, m);  // 8..15
    out[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(a, 4)), d, m);  // 16..23
    out[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)), d, m);  // 24..31
  }

  // kF16S24 block -> 2 x 8 kept values and their x values: each half (16 columns) permutes its two 8-float x
  // vectors by the positions' low 3 bits and blends by bit 3.
  static void s24_decode(const uint8_t* blk, const float* xb, V* w, V* xg) {
    uint32_t idx;
    std::memcpy(&idx, blk + 32, 4);
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
    const __m256i three = _mm256_set1_epi32(3), seven = _mm256_set1_epi32(7);
    for (int h = 0; h < 2; ++h) {
      const __m256i p = _mm256_add_epi32(
          _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(idx >> (16 * h))), sh), three), base);
      const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xb + 16 * h), p);
      const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xb + 16 * h + 8), p);
      xg[h] = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(p, seven)));
      w[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
    }
  }

  // Lane i of the result = ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)) of the i-th input: the same tree for
  // every lane, so a row's sum does not depend on which other rows it was reduced with.
  // Masked rows: the next popcount(bits) values to the lanes of the set bits (vpermps by rank, then the clear
  // lanes zeroed by a bit test).
  static V expand(uint32_t bits, V src) {
    const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(kMaskRanks.idx[bits]));
    const __m256 v = _mm256_permutevar8x32_ps(src, idx);
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sel = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
    return _mm256_and_ps(v, _mm256_castsi256_ps(sel));
  }

  static void half4(const uint16_t* h, float* out) {
    _mm_storeu_ps(out, _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h))));
  }
  static void hsum4(V a, V b, V c, V d, float* out) {
    const __m256 ab = _mm256_hadd_ps(a, b);    // a01 a23 b01 b23 | a45 a67 b45 b67
    const __m256 cd = _mm256_hadd_ps(c, d);
    const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0123 b0123 c0123 d0123 | a4567 ...
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
};

}  // namespace

const KernelSet kAvx2Kernels = {"avx2",
                                &matvec_rows_isa<Avx2>,
                                &matmul_rows_isa<Avx2>,
                                &ffn_neurons_isa<Avx2>,
                                &ffn_values_isa<Avx2>,
                                &bits_sums_isa<Avx2>,
                                &wkv5_isa<Avx2>};

}  // namespace rwkvl::kern::detail
