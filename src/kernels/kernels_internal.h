// Internal interface between the run-time dispatcher (dispatch.cpp) and the per-ISA kernel files.
// Each ISA file is compiled with its own target flags and exports one KernelSet; only dispatch.cpp
// (baseline flags) decides which set may run on this CPU.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

namespace rwkvl::kern::detail {

using MatvecRowsFn = void (*)(const MatRef& w, const float* x, float* y, int64_t row_begin, int64_t row_end);
using MatmulRowsFn = void (*)(const MatRef& w, const float* X, int64_t n, float* Y, int64_t row_begin,
                              int64_t row_end);
using FfnNeuronsFn = void (*)(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n,
                              const float* x, float* y, float* kout, bool skip_zero);

using FfnValuesFn = void (*)(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n,
                             const float* A, int64_t lda, int64_t t0, int64_t t1, float* Y, int64_t ldy);

// The 1-bit predictor's raw sums for kBitsLanes inputs at once (bits_scores_chunk): raw[(r - r0) kBitsLanes + l] =
// ((a0 + a1) + (a2 + a3)) of input l, each a_k summed as bits_scores_rows sums it, from the lane tables of
// bits_prepare_chunk. nb = bytes per row.
using BitsSumsFn = void (*)(const uint8_t* bits, int64_t nb, const float* table, float* raw, int64_t r0, int64_t r1);

using Wkv5Fn = void (*)(const float* r, const float* k, const float* v, const float* w, const float* u, float* S,
                        float* out, int64_t H, int64_t N);

struct KernelSet {
  const char* name;
  MatvecRowsFn matvec_rows;
  MatmulRowsFn matmul_rows;
  FfnNeuronsFn ffn_neurons;
  FfnValuesFn ffn_values;
  BitsSumsFn bits_sums;
  Wkv5Fn wkv5;
};

// The active set's bits_sums (dispatch.cpp), for bits.cpp.
void bits_sums(const uint8_t* bits, int64_t nb, const float* table, float* raw, int64_t r0, int64_t r1);

extern const KernelSet kScalarKernels;  // matvec_scalar.cpp, every architecture
#if defined(RWKVL_ARCH_x86_64)
extern const KernelSet kAvx2Kernels;    // matvec_avx2.cpp: AVX2 + FMA + F16C
extern const KernelSet kAvx512Kernels;  // matvec_avx512.cpp: AVX-512 F/BW/VL/DQ
#endif
#if defined(RWKVL_ARCH_aarch64)
extern const KernelSet kNeonKernels;    // matvec_neon.cpp: Advanced SIMD + FP16 conversions
#endif

// Element type stored for each weight dtype.
template <DType D>
struct Elem;
template <>
struct Elem<DType::kF32> { using T = float; };
template <>
struct Elem<DType::kF16> { using T = uint16_t; };
template <>
struct Elem<DType::kBF16> { using T = uint16_t; };
template <>
struct Elem<DType::kI8> { using T = int8_t; };
template <>
struct Elem<DType::kQ4> { using T = uint8_t; };  // raw bytes of 20-byte blocks
template <>
struct Elem<DType::kF16S24> { using T = uint8_t; };  // raw bytes of 36-byte blocks

// kQ4 block layout (see core/dtype.h): f16 d, f16 m, 16 bytes of nibbles; 32 weights per block.
constexpr int64_t kQ4BlockCols = 32, kQ4BlockBytes = static_cast<int64_t>(sizeof(BlockQ4));
static_assert(kQ4BlockBytes == 20);
// ffn_values tiles (simd_impl.h): value rows of kValueRows neurons x kValueCols columns converted to float at once.
constexpr int kValueRows = 32;
constexpr int64_t kValueCols = 256;
// kF16S24 block layout (see core/dtype.h): 16 f16 values, then a u32 of 2-bit column positions; 32 columns.
constexpr int64_t kS24BlockCols = 32, kS24BlockBytes = static_cast<int64_t>(sizeof(BlockS24));
static_assert(kS24BlockBytes == 36);

// Masked rows (S::expand): for each byte of keep bits, lane j takes the value of rank (set bits below j); lanes of
// clear bits take rank 0 and are zeroed by the caller. Data only (no code), so one copy per ISA file is harmless.
struct MaskRankTable {
  alignas(32) int32_t idx[256][8];
};
constexpr MaskRankTable make_mask_rank_table() {
  MaskRankTable t{};
  for (int m = 0; m < 256; ++m) {
    int r = 0;
    for (int j = 0; j < 8; ++j) t.idx[m][j] = (m >> j) & 1 ? r++ : 0;
  }
  return t;
}
constexpr MaskRankTable kMaskRanks = make_mask_rank_table();

// The decoded values of one masked row: a thread's own buffer of at least kept + 64 floats (a matrix may have up to
// 2^20 columns, too many for the stack). Defined once, in baseline code (dispatch.cpp): the per-ISA files only call it.
float* masked_wbuf(int64_t kept);
// A tile of rows expanded to float32 for the sequence-mode kernels of sparse dtypes: a thread's own buffer of at
// least `floats` floats (distinct from masked_wbuf), defined in dispatch.cpp like it.
float* expand_tile_buf(int64_t floats);
// The sequence-mode GEMM (gemm_rows in simd_impl.h): a thread's buffer for the tokens transposed (which = 0) and one
// for a tile of weight rows converted to float32 (which = 1), at least `floats` floats each, 64-byte aligned.
float* gemm_buf(int which, int64_t floats);

// Row stride of a matrix in units of Elem<D>::T (bytes for kQ4). Internal linkage, like everything
// compiled into the per-ISA files (an out-of-line copy built with -mavx512f must never be shared).
namespace {
template <DType D>
constexpr int64_t row_stride(int64_t cols) {
  return D == DType::kQ4 ? cols / kQ4BlockCols * kQ4BlockBytes
         : D == DType::kF16S24 ? cols / kS24BlockCols * kS24BlockBytes
                               : cols;
}
}  // namespace

}  // namespace rwkvl::kern::detail
