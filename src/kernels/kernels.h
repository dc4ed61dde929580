// Matrix x vector and matrix x matrix products for every weight dtype, with AVX2 / AVX-512 / NEON
// paths chosen at run time and a scalar reference. Activations are always float32; weights are
// converted on the fly (FP16/BF16 -> FP32, INT8 * per-row scale) and accumulated in FP32.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace rwkvl {
class ThreadPool;

namespace kern {

// A row-major weight matrix W (rows = outputs, cols = inputs).
struct MatRef {
  DType dtype = DType::kF32;  // kF32, kF16, kBF16, kI8 or kQ4 (cols a multiple of 32)
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;  // rows * cols elements (kQ4: rows * cols/32 blocks), rows contiguous
  // kI8 only: W[r][c] = data[r][c] * scale[r], scale stored as float32 (scale_dtype kF32) or IEEE
  // half (kF16, what `rwkv-lite compress` writes: half the bytes, same accuracy at int8 precision).
  const void* row_scale = nullptr;
  DType scale_dtype = DType::kF32;
  // Masked dtypes (kF16M, kI8M, kQ4M) only: value slots per row (core/dtype.h; Tensor::masked_kept()). kI8M
  // takes its row scales as kI8 does.
  int64_t kept = 0;
  float scale_at(int64_t r) const {
    return scale_dtype == DType::kF16 ? f16_to_f32(static_cast<const uint16_t*>(row_scale)[r])
                                      : static_cast<const float*>(row_scale)[r];
  }
};

// y[r] = sum_c W[r][c] * x[c] for r in [0, rows). pool may be null (single thread).
void matvec(const MatRef& w, const float* x, float* y, ThreadPool* pool);

// y_i = W_i x_i for i in [0, count): the same results as `count` matvec calls, in one parallel region (the
// matrices' rows concatenated and split over the pool's threads as one range), so one fork/join instead of
// `count`: a token's projections that share no data (r, k, v, g of a time-mix) cost one region.
void matvec_multi(const MatRef* const* w, const float* const* x, float* const* y, int count, ThreadPool* pool);
// Y_i = X_i W_i^T (n tokens each) for i in [0, count <= 8): the same bits as `count` matmul calls (a row's results do
// not depend on how the rows are split), in one parallel region over the concatenated rows; matvec_multi is n == 1.
void matmul_multi(const MatRef* const* w, const float* const* X, int64_t n, float* const* Y, int count,
                  ThreadPool* pool);

// Y[t][r] = sum_c W[r][c] * X[t][c] for t in [0, n): X is n x cols, Y is n x rows, both row-major.
// Reads each weight row once for the whole block of n inputs (the point of sequence mode).
void matmul(const MatRef& w, const float* X, int64_t n, float* Y, ThreadPool* pool);

// Single-threaded building blocks on a row range (used by the above and by sparse/streamed code).
void matvec_rows(const MatRef& w, const float* x, float* y, int64_t row_begin, int64_t row_end);
void matmul_rows(const MatRef& w, const float* X, int64_t n, float* Y, int64_t row_begin, int64_t row_end);

// Quantises a float32 matrix to int8 per row: scale[r] = max|W[r][:]| / 127, q = round(W / scale).
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale);
// The same with the scale stored as IEEE half (MatRef::scale_dtype kF16): the scale is rounded to f16
// first and q = round(W / f16_to_f32(scale)) computed from the rounded value, so W ~ q * scale exactly
// as the kernels evaluate it. Non-finite values, or |W| beyond 127 * 65504, throw kInvalidArgument.
void quantize_rows_i8_f16(const float* src, int64_t rows, int64_t cols, int8_t* q, uint16_t* scale);
// Quantises a float32 matrix to kQ4 (q4_g32): per group of 32 along a row m = min, d = (max - min) / 15,
// both rounded to f16, then q = round((x - m) / d) clamped to 0..15 (see core/dtype.h for the 20-byte
// block). out receives rows * cols / 32 blocks. cols % 32 != 0, non-finite values or values beyond the
// f16 range throw kInvalidArgument.
void quantize_rows_q4(const float* src, int64_t rows, int64_t cols, void* out);
// As above with the scale rounded to IEEE half before quantising (W ~ q * f16_to_f32(scale)).
void quantize_rows_i8_f16(const float* src, int64_t rows, int64_t cols, int8_t* q, uint16_t* scale);
// int4 groups of 32 (DType::kQ4 blocks); cols % 32 == 0.
void quantize_rows_q4(const float* src, int64_t rows, int64_t cols, void* out);

// Bytes of one row of a `cols`-column matrix of dtype d (kQ4: cols / 32 * 20 bytes). A bundled FFN
// neuron (see ffn_neurons) is 2 such rows, contiguous. Not for masked dtypes (their rows depend on the
// matrix's value slots): mat_row_bytes.
int64_t row_bytes(DType d, int64_t cols);
// Bytes of one row of w, every dtype (masked: mask + value slots); mat_bytes: all rows.
int64_t mat_row_bytes(const MatRef& w);
inline int64_t mat_bytes(const MatRef& w) { return w.rows * mat_row_bytes(w); }

// Neuron-bundled channel-mix (sparse FFN). A bundled matrix has 2F rows x C cols: row 2i is row i
// of Wk (F x C) and row 2i+1 is column i of Wv (C x F), i.e. row i of Wv^T. `layout` gives dtype,
// cols (= C) and, for kI8, row_scale / scale_dtype indexed by bundled row (2*id, 2*id+1);
// layout.data and layout.rows are not used. ptrs[j] points at the 2 * row_bytes(dtype, C)
// contiguous bytes of neuron ids[j] (no alignment needed; ids are only used for the kI8 scales).
// For j in [0, n):
//   kout[j] = dot(row 2*id, x)   (the raw pre-activation, bitwise what matvec_rows computes for
//                                 that row on the same ISA)
//   a = max(kout[j], 0)^2;  if (a != 0 || !skip_zero) y[c] += a * row(2*id+1)[c]  for c in [0, C)
// y (C floats) is accumulated into, not cleared; with skip_zero the Wv row of a neuron with a == 0
// is never read. Single-threaded (callers split the list across threads, each with its own y).
// The next neurons' bytes are software-prefetched while the current one is computed.
void ffn_neurons(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x,
                 float* y, float* kout, bool skip_zero);

// The value half of a neuron-bundled channel-mix over a chunk of tokens (sequence mode): for each neuron j in
// [0, n) (bytes at ptrs[j] as for ffn_neurons; its value row is the second row, kI8 scale at bundled row
// 2 ids[j] + 1) and each token t in [t0, t1) with a = A[t lda + j] != 0:  Y[t ldy + c] += a * valuerow[c] for c in
// [0, cols). A value row no token of the range uses is never read; the rows of 32 neurons are converted to float
// once per call, then each token's outputs are summed over the neurons it uses in registers (SIMD sets).
// Single-threaded (callers split the tokens across threads).
void ffn_values(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A, int64_t lda,
                int64_t t0, int64_t t1, float* Y, int64_t ldy);

// RWKV-5/6 linear attention for one token over heads [0, H) of N channels; S is the H x N x N state (head h, key
// row i, value column j at S[(h N + i) N + j]), r, k, v, w (decay factors), u (bonus) and out hold H N floats:
//   out[hN + j] = sum_i r_i (u_i k_i v_j + S_ij),   then   S_ij = S_ij w_i + k_i v_j
// computed for each (h, j) as kv = k_i * v_j; acc = fma(r_i, fma(u_i, kv, S_ij), acc) for i = 0, 1, ... in order;
// S_ij = fma(S_ij, w_i, kv): the same operations on every ISA, so the same bits (SIMD sets keep a block of columns'
// sums in registers over the rows). Single-threaded (callers split the heads across threads).
void wkv5_token(const float* r, const float* k, const float* v, const float* w, const float* u, float* S, float* out,
                int64_t H, int64_t N);

// 1-bit approximation of W x (activation predictor). bits: rows x (cols / 8) bytes, row-major; bit
// (c % 8) (LSB first) of byte c / 8 of a row is set when W[r][c] is at W's upper level:
//   score[r] = lo[r] * sum(x) + step[r] * sum_{c : bit(r, c) set} x[c].   cols % 8 == 0.
// bits_prepare builds a per-x lookup table (bits_table_floats(cols) floats, including sum(x)) once;
// bits_scores_rows then scores rows [r0, r1) from it (thread-safe: the table is only read).
size_t bits_table_floats(int64_t cols);
void bits_prepare(const float* x, int64_t cols, float* table);
void bits_scores_rows(const uint8_t* bits, const float* lo, const float* step, int64_t cols, const float* table,
                      float* score, int64_t r0, int64_t r1);
// Sequence mode: the scores of up to kBitsLanes inputs at once, each bitwise equal to bits_prepare +
// bits_scores_rows of that input alone (the same adds in the same order, the inputs in the vector lanes).
// bits_prepare_chunk builds the lane tables of n <= kBitsLanes inputs (rows of X, ldx floats apart;
// bits_chunk_table_floats(cols) floats: per 4 columns the 16 subset sums of each input, then the inputs' sums);
// bits_scores_chunk writes score[l ld_score + r] for input l < n and rows [r0, r1) (thread-safe: the table is
// only read).
constexpr int64_t kBitsLanes = 16;
size_t bits_chunk_table_floats(int64_t cols);
void bits_prepare_chunk(const float* X, int64_t ldx, int64_t n, int64_t cols, float* table);
void bits_scores_chunk(const uint8_t* bits, const float* lo, const float* step, int64_t cols, const float* table,
                       int64_t n, float* score, int64_t ld_score, int64_t r0, int64_t r1);

// The instruction set in use: "avx512", "avx2", "neon" or "scalar".
const char* active_isa();
// Test hook: restrict dispatch to "scalar", "avx2", "avx512" or "neon" (returns false if the CPU or
// build cannot do it); nullptr restores automatic choice.
bool force_isa(const char* name);

}  // namespace kern
}  // namespace rwkvl

namespace rwkvl::kern {
// Converts row r of w to float32 (out has w.cols values). Used for embedding look-ups.
void get_row(const MatRef& w, int64_t r, float* out);
}  // namespace rwkvl::kern
