// AArch64 Advanced SIMD kernels. NEON (and the FP16 <-> FP32 conversion instructions) are part of
// the ARMv8-A base architecture, so this set needs no run-time check.
#include <arm_neon.h>

#include <cstring>

#include "kernels/simd_impl.h"

namespace rwkvl::kern::detail {
namespace {

struct Neon {
  using V = float32x4_t;
  static constexpr int kW = 4;
  // 4 rows x 4 tokens: 16 accumulators + 4 weight vectors + 1 x vector of the 32 v-registers.
  // No software prefetch: it could only be tuned on real ARM hardware (we test under qemu).
  static constexpr int kAcc = 4, kPrefetch = 0, kPrefetchLocality = 0;
  // ffn_values: a token's sums over 16 vectors of columns held in registers (16 of the 32 v-registers).
  static constexpr int kValueAcc = 16;
  static constexpr int kTileR = 4, kTileT = 4;
  // kQ4: a decoded block is 8 vectors per row: 2 rows x 4 tokens (8 accumulators + 16 weights).
  static constexpr int kQ4TileR = 2;
  static constexpr int kGemmMR = 0, kGemmNV = 1, kGemmMinN = 0;  // the dot-product tiles only (gemm_rows: AVX-512)

  static V zero() { return vdupq_n_f32(0.0f); }
  static V mul(V a, V b) { return vmulq_f32(a, b); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V fma(V a, V b, V acc) { return vfmaq_f32(acc, a, b); }
  static V loadx(const float* p) { return vld1q_f32(p); }
  static V set1(float a) { return vdupq_n_f32(a); }
  static void storex(float* p, V v) { vst1q_f32(p, v); }

  template <DType D>
  static V loadw(const typename Elem<D>::T* p) {
    if constexpr (D == DType::kF32) {
      return vld1q_f32(p);
    } else if constexpr (D == DType::kF16) {
      return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
    } else if constexpr (D == DType::kBF16) {
      return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));  // bf16 = top half of a float32
    } else {
      static_assert(D == DType::kI8);
      int32_t four;  // only 4 bytes may be read: the row can end right after them
      std::memcpy(&four, p, 4);
      const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(four)));
      return vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
    }
  }

  // kQ4 block -> 8 x 4 floats: nibbles split by mask and shift on 16 bytes, widened u8 -> u16 -> u32,
  // converted, and m + q * d in one fma (rounded once).
  static void q4_decode(const uint8_t* blk, V* out) {
    uint32_t dm;
    std::memcpy(&dm, blk, 4);
    const float32x4_t f = vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(dm)));  // d, m, d, m
    const float32x4_t d = vdupq_laneq_f32(f, 0), m = vdupq_laneq_f32(f, 1);
    const uint8x16_t qs = vld1q_u8(blk + 4);
    const uint8x16_t lo = vandq_u8(qs, vdupq_n_u8(15)), hi = vshrq_n_u8(qs, 4);
    const uint16x8_t h[4] = {vmovl_u8(vget_low_u8(lo)), vmovl_high_u8(lo), vmovl_u8(vget_low_u8(hi)),
                             vmovl_high_u8(hi)};  // columns 0..7, 8..15, 16..23, 24..31
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_low_u16(h[i]))), d);
      out[2 * i + 1] = vfmaq_f32(m, vcvtq_f32_u32(vmovl_high_u16(h[i])), d);
    }
  }

  // kF16S24 block -> 4 x 4 kept values (converted 4 at a time) and the x values at their columns, picked
  // one by one (no two-register table lookup of floats in Advanced SIMD that would be cheaper).
  static void s24_decode(const uint8_t* blk, const float* xb, V* w, V* xg) {
    uint32_t idx;
    std::memcpy(&idx, blk + 32, 4);
    float g[16];
    for (int k = 0; k < 16; ++k) g[k] = xb[s24_column(idx, k)];
    for (int i = 0; i < 4; ++i) {
      uint16_t h[4];
      std::memcpy(h, blk + 8 * i, 8);
      w[i] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
      xg[i] = vld1q_f32(g + 4 * i);
    }
  }

  // Lane i = (v0+v1)+(v2+v3) of the i-th input, the same tree for every lane.
  // Masked rows: the next popcount(bits) values to the lanes of the set bits (4 lanes: a scalar pick).
  static V expand(uint32_t bits, V v) {
    float src[4], t[4];
    vst1q_f32(src, v);
    int r = 0;
    for (int j = 0; j < 4; ++j) t[j] = (bits >> j) & 1u ? src[r++] : 0.0f;
    return vld1q_f32(t);
  }
  static void half4(const uint16_t* h, float* out) {
    vst1q_f32(out, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))));
  }
  static void hsum4(V a, V b, V c, V d, float* out) { vst1q_f32(out, vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d))); }
};

}  // namespace

const KernelSet kNeonKernels = {"neon",
                                &matvec_rows_isa<Neon>,
                                &matmul_rows_isa<Neon>,
                                &ffn_neurons_isa<Neon>,
                                &ffn_values_isa<Neon>,
                                &bits_sums_isa<Neon>,
                                &wkv5_isa<Neon>};

}  // namespace rwkvl::kern::detail
