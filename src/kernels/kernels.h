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
  DType dtype = DType::kF32;  // kF32, kF16, kBF16 or kI8
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;       // rows * cols elements, row stride = cols elements
  const float* row_scale = nullptr;  // kI8 only: W[r][c] = data[r][c] * row_scale[r]
};

// y[r] = sum_c W[r][c] * x[c] for r in [0, rows). pool may be null (single thread).
void matvec(const MatRef& w, const float* x, float* y, ThreadPool* pool);

// Y[t][r] = sum_c W[r][c] * X[t][c] for t in [0, n): X is n x cols, Y is n x rows, both row-major.
// Reads each weight row once for the whole block of n inputs (the point of sequence mode).
void matmul(const MatRef& w, const float* X, int64_t n, float* Y, ThreadPool* pool);

// Single-threaded building blocks on a row range (used by the above and by sparse/streamed code).
void matvec_rows(const MatRef& w, const float* x, float* y, int64_t row_begin, int64_t row_end);
void matmul_rows(const MatRef& w, const float* X, int64_t n, float* Y, int64_t row_begin, int64_t row_end);

// Quantises a float32 matrix to int8 per row: scale[r] = max|W[r][:]| / 127, q = round(W / scale).
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale);

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
