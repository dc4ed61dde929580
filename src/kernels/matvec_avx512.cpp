// AVX-512 (F/BW/VL/DQ) kernels (x86-64). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq;
// only called after dispatch.cpp has checked those features (and OS support for the state) at run time.
// GCC 12's AVX-512 headers build many intrinsics on _mm512_undefined_*(), whose self-initialisation
// trips -Wuninitialized once inlined (GCC bug 105593, fixed in GCC 13); the code is correct.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>

#include "kernels/simd_impl.h"

namespace rwkvl::kern::detail {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kW = 16;
  // matvec: 4 x 64 bytes per iteration; prefetchnta 4 KB ahead measured best (see dot_row in simd_impl.h).
  static constexpr int kAcc = 4, kPrefetch = 4096, kPrefetchLocality = 0;
  // ffn_values: a token's sums over 16 vectors of columns held in registers (16 of the 32 zmm registers).
  static constexpr int kValueAcc = 16;
  // matmul tile 6 rows x 4 tokens: 24 accumulators + 6 weight vectors + 1 x vector of the 32 zmm
  // registers; measured ~10-20% faster than 4x4 or 4x5 (fewer loads per FMA), on par with 8x3.
  static constexpr int kTileR = 6, kTileT = 4;
  // kQ4: 6 rows x 4 tokens as well (a decoded block is 2 vectors per row; the compiler spills some):
  // measured ~70 GMAC/s at n = 16 (L2-resident weights) against ~68 for 4 rows, ~61 for 8, ~35 for 2.
  static constexpr int kQ4TileR = 6;
  // Sequence mode from 32 tokens: the outer-product GEMM (gemm_rows in simd_impl.h), 12 rows x 2 vectors of 16
  // tokens = 24 accumulators + 2 token vectors + 1 broadcast weight of the 32 zmm registers; a standalone copy of
  // the micro-kernel ran at 84-91 % of this machine's FMA peak (456 GFLOP/s on 2 cores) with the rows already in
  // float32. Whole calls, best of 40, 2 threads, against the dot-product tile: n = 32 and 64 +5-30 % (f16
  // 3072x768 n = 64: 340-354 against 267 GFLOP/s, 75-78 % of the peak), n = 16 and 24 -5-25 % (one vector of
  // tokens, or a third of the lanes padding), hence the threshold.
  static constexpr int kGemmMR = 12, kGemmNV = 2, kGemmMinN = 32;

  static V zero() { return _mm512_setzero_ps(); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static V loadx(const float* p) { return _mm512_loadu_ps(p); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static void storex(float* p, V v) { _mm512_storeu_ps(p, v); }

  // ffn_values: bit j set where a[j] != 0 (NaN included, as the comparison in C++), j < n <= 32; no read past n.
  static uint32_t nonzero_bits(const float* a, int n) {
    const __mmask16 m0 = static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
    const __mmask16 m1 = static_cast<__mmask16>(n >= 32 ? 0xFFFFu : n > 16 ? (1u << (n - 16)) - 1u : 0u);
    const __m512 z = _mm512_setzero_ps();
    const uint32_t lo = _mm512_mask_cmp_ps_mask(m0, _mm512_maskz_loadu_ps(m0, a), z, _CMP_NEQ_UQ);
    const uint32_t hi = m1 ? _mm512_mask_cmp_ps_mask(m1, _mm512_maskz_loadu_ps(m1, a + 16), z, _CMP_NEQ_UQ) : 0u;
    return lo | hi << 16;
  }
  // ffn_values: for the set bits j of `bits` (j < 32) in order, list = j and coef = a[j] * scale[j] (one rounding, as
  // the scalar product); returns their count. Reads a and scale only where bits are set.
  static int compact(uint32_t bits, const float* a, const float* scale, int32_t* list, float* coef) {
    int k = 0;
    for (int h = 0; h < 2; ++h) {
      const __mmask16 m = static_cast<__mmask16>(bits >> (16 * h));
      if (!m) continue;
      const __m512 c = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + 16 * h), _mm512_maskz_loadu_ps(m, scale + 16 * h));
      const __m512i j = _mm512_add_epi32(_mm512_set1_epi32(16 * h),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
      _mm512_mask_compressstoreu_ps(coef + k, m, c);
      _mm512_mask_compressstoreu_epi32(list + k, m, j);
      k += __builtin_popcount(m);
    }
    return k;
  }

  template <DType D>
  static V loadw(const typename Elem<D>::T* p) {
    if constexpr (D == DType::kF32) {
      return _mm512_loadu_ps(p);
    } else if constexpr (D == DType::kF16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    } else if constexpr (D == DType::kBF16) {
      const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
    } else {
      static_assert(D == DType::kI8);
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
  }

  // kQ4 block -> 2 x 16 floats through a 16-entry table: the block's 16 possible values d * q + m
  // (one fma, rounded once) in one register, looked up with vpermps, which reads only the low 4 bits
  // of each index, so the low nibbles need no masking. The 16 nibble bytes are zero-extended to
  // dwords straight from memory (bytes 4..19 of the block: nothing past the block is read).
  static void q4_decode(const uint8_t* blk, V* out) {
    int dm;
    std::memcpy(&dm, blk, 4);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(dm));  // d, m, 0, 0
    const __m512 d = _mm512_broadcastss_ps(f);
    const __m512 m = _mm512_broadcastss_ps(_mm_movehdup_ps(f));
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 table = _mm512_fmadd_ps(iota, d, m);
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4)));
    out[0] = _mm512_permutexvar_ps(q, table);                         // columns 0..15: qs & 15
    out[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);  // columns 16..31: qs >> 4
  }

  // kF16S24 block: the 16 f16 values in one vector; the x values at their columns picked from the block's
  // 32 x values by one two-source permute, whose indices 4 * (k / 2) + position_k come from the u32 of
  // positions by a per-lane shift (2k bits) and one mask-and-or.
  static void s24_decode(const uint8_t* blk, const float* xb, V* w, V* xg) {
    uint32_t idx;
    std::memcpy(&idx, blk + 32, 4);
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    // (shifted & 3) | base in one vpternlogd (imm 0xEA = (A & B) | C; base has its low 2 bits clear).
    const __m512i perm = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(idx)), sh),
                                                   _mm512_set1_epi32(3), base, 0xEA);
    w[0] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    xg[0] = _mm512_permutex2var_ps(_mm512_loadu_ps(xb), perm, _mm512_loadu_ps(xb + 16));
  }

  // Masked rows: the first popcount(bits) values spread to the lanes of the set bits: one vpermps by the ranks of
  // the two bytes of bits (table), the clear lanes zeroed by the mask. vexpandps does the same in one instruction
  // but measured 1.8x slower per call on Zen 5 (1.76 vs 0.98 ns throughput; 3x slower than a dense chunk).
  static V expand(uint32_t bits, V v) {
    const uint32_t lo = bits & 255u, hi = bits >> 8;
    const __m256i il = _mm256_load_si256(reinterpret_cast<const __m256i*>(kMaskRanks.idx[lo]));
    const __m256i ih = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(kMaskRanks.idx[hi])),
                                        _mm256_set1_epi32(__builtin_popcount(lo)));
    const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(il), ih, 1);
    return _mm512_maskz_permutexvar_ps(static_cast<__mmask16>(bits), idx, v);
  }

  // GEMM packing (gemm_rows): dst[j * ldd + i] = src[i * lds + j] for j < nj, lanes i < nstore of each dst row;
  // source rows i >= ni and columns j >= nj read as zero (masked loads: nothing past them is touched). A 16 x 16
  // block in registers: 64 shuffles (pairs of rows interleaved, then 2-, 4- and 8-lane groups) instead of 256
  // strided scalar stores.
  static void transpose(const float* src, int64_t lds, int ni, int nj, float* dst, int64_t ldd, int nstore) {
    const __mmask16 lm = static_cast<__mmask16>((1u << nj) - 1), sm = static_cast<__mmask16>((1u << nstore) - 1);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; ++i) r[i] = i < ni ? _mm512_maskz_loadu_ps(lm, src + i * lds) : _mm512_setzero_ps();
    for (int p = 0; p < 16; p += 2) {  // per 128-bit lane L: rows p, p+1 at columns 4L, 4L+1 / 4L+2, 4L+3
      t[p] = _mm512_unpacklo_ps(r[p], r[p + 1]);
      t[p + 1] = _mm512_unpackhi_ps(r[p], r[p + 1]);
    }
    for (int q = 0; q < 16; q += 4) {  // r[q + c] lane L: rows q..q+3 at column 4L + c
      r[q] = _mm512_shuffle_ps(t[q], t[q + 2], 0x44);
      r[q + 1] = _mm512_shuffle_ps(t[q], t[q + 2], 0xEE);
      r[q + 2] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0x44);
      r[q + 3] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {  // column 4L + c: lane L of r[c], r[4 + c], r[8 + c], r[12 + c]
      const __m512 w0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), w1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
      const __m512 w2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
      const __m512 w3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
      t[c] = _mm512_shuffle_f32x4(w0, w2, 0x88);
      t[4 + c] = _mm512_shuffle_f32x4(w0, w2, 0xDD);
      t[8 + c] = _mm512_shuffle_f32x4(w1, w3, 0x88);
      t[12 + c] = _mm512_shuffle_f32x4(w1, w3, 0xDD);
    }
    for (int j = 0; j < nj; ++j) _mm512_mask_storeu_ps(dst + j * ldd, sm, t[j]);
  }

  // Fold 16 lanes to 8 (lane i + lane i+8), then the AVX2 tree; identical for every lane.
  static __m256 fold(V v) { return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)); }
  static void half4(const uint16_t* h, float* out) {
    _mm_storeu_ps(out, _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h))));
  }
  static void hsum4(V a, V b, V c, V d, float* out) {
    const __m256 ab = _mm256_hadd_ps(fold(a), fold(b));
    const __m256 cd = _mm256_hadd_ps(fold(c), fold(d));
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
};

}  // namespace

const KernelSet kAvx512Kernels = {"avx512",
                                  &matvec_rows_isa<Avx512>,
                                  &matmul_rows_isa<Avx512>,
                                  &ffn_neurons_isa<Avx512>,
                                  &ffn_values_isa<Avx512>,
                                  &bits_sums_isa<Avx512>,
                                  &wkv5_isa<Avx512>};

}  // namespace rwkvl::kern::detail
