// Portable kernels: the reference every SIMD path is tested against, and the fallback on CPUs
// without AVX2. Compiled with baseline flags only. Written so that the compiler's SLP vectoriser can
// still use SSE2 / NEON for the fixed 8-wide accumulator pattern (no -ffast-math needed: we never
// ask it to reassociate).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/kernels_internal.h"

namespace rwkvl::kern::detail {
namespace {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Branch-free IEEE half -> float (exact), written with integer masks instead of selects so the
// compiler vectorises row_to_f32 with plain SSE2 / NEON (dtype.cpp's f16_to_f32 normalises
// subnormals in a loop and runs ~10x slower). Subnormals go through an exact int -> float conversion
// rather than a multiply of a denormal, so the result is right under FTZ/DAZ too.
inline uint32_t half_to_float_bits(uint32_t h) {
  const uint32_t em = h & 0x7fffu;                                  // exponent and mantissa
  const uint32_t normal = (em << 13) + (112u << 23);                // rebias the exponent 15 -> 127
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);     // exponent 31: inf / NaN
  const uint32_t sub = float_bits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);  // exponent 0
  const uint32_t is_sub = 0u - static_cast<uint32_t>(em < 0x400u);     // all ones or zero
  const uint32_t is_special = 0u - static_cast<uint32_t>(em >= 0x7c00u);
  const uint32_t mag = (sub & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
  return mag | ((h & 0x8000u) << 16);
}

inline float bf16_bits_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline float half_to_float(uint16_t h) { return bits_to_float(half_to_float_bits(h)); }

template <DType D>
void row_to_f32(const typename Elem<D>::T* src, int64_t n, float* dst) {
  if constexpr (D == DType::kQ4) {  // n / 32 blocks of {f16 d, f16 m, 16 bytes of nibbles}
    for (int64_t b = 0; b < n / kQ4BlockCols; ++b, src += kQ4BlockBytes, dst += kQ4BlockCols) {
      uint16_t dh, mh;
      uint8_t qs[16];  // a local copy: dst (float) may not alias it, so the loops below vectorise
      std::memcpy(&dh, src, 2);
      std::memcpy(&mh, src + 2, 2);
      std::memcpy(qs, src + 4, 16);
      const float d = half_to_float(dh), m = half_to_float(mh);
      for (int j = 0; j < 16; ++j) dst[j] = static_cast<float>(qs[j] & 15) * d + m;
      for (int j = 0; j < 16; ++j) dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (D == DType::kF16) {
      dst[i] = bits_to_float(half_to_float_bits(src[i]));
    } else if constexpr (D == DType::kBF16) {
      dst[i] = bf16_bits_to_float(src[i]);
    } else {
      dst[i] = static_cast<float>(src[i]);
    }
  }
}

// 8 independent partial sums (the compiler maps them onto two SSE / NEON registers), combined with
// a fixed tree, so the result is deterministic and does not depend on the build's vector width.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (int k = 0; i < n; ++i, ++k) acc[k] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// kF16S24: the 16 kept values of a block times the x values at their columns, 8 partial sums as in dot().
float dot_s24(const uint8_t* w, int64_t cols, const float* x) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t b = 0; b < cols / kS24BlockCols; ++b, w += kS24BlockBytes, x += kS24BlockCols) {
    uint16_t v[16];
    uint32_t idx;
    std::memcpy(v, w, 32);
    std::memcpy(&idx, w + 32, 4);
    for (int k = 0; k < 16; ++k) acc[k & 7] += half_to_float(v[k]) * x[s24_column(idx, k)];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void matmul_rows_s24(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  const int64_t cols = m.cols, stride = row_stride<DType::kF16S24>(cols);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* w = static_cast<const uint8_t*>(m.data) + r * stride;
    for (int64_t t = 0; t < n; ++t) Y[t * m.rows + r] = dot_s24(w, cols, X + t * cols);
  }
}

// Masked rows: expanded to dense float32 once (core/dtype.h's decoder, zeros where the mask is clear), then dot()
// per token; the kI8M scale multiplies the finished sum, as for kI8.
void matmul_rows_masked(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  const int64_t cols = m.cols, stride = masked_row_bytes(m.dtype, cols, m.kept);
  std::vector<float> buf(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    masked_row_to_f32(m.dtype, static_cast<const uint8_t*>(m.data) + r * stride, cols, m.kept, 1.0f, buf.data());
    float scale = 1.0f;
    if (m.dtype == DType::kI8M)
      scale = m.scale_dtype == DType::kF16 ? half_to_float(static_cast<const uint16_t*>(m.row_scale)[r])
                                           : static_cast<const float*>(m.row_scale)[r];
    for (int64_t t = 0; t < n; ++t) {
      const float s = dot(buf.data(), X + t * cols, cols);
      Y[t * m.rows + r] = m.dtype == DType::kI8M ? s * scale : s;
    }
  }
}

// Both entry points convert one weight row to float32 (once) and take dot products with it, so the
// scalar matmul gives exactly the same bits as n scalar matvecs.
template <DType D>
void matmul_rows_t(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  using T = typename Elem<D>::T;
  const int64_t cols = m.cols;
  std::vector<float> buf(D == DType::kF32 ? 0 : static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const T* src = static_cast<const T*>(m.data) + r * row_stride<D>(cols);
    const float* row;
    if constexpr (D == DType::kF32) {
      row = src;
    } else {
      row_to_f32<D>(src, cols, buf.data());
      row = buf.data();
    }
    float scale = 1.0f;
    if constexpr (D == DType::kI8) {
      scale = m.scale_dtype == DType::kF16 ? half_to_float(static_cast<const uint16_t*>(m.row_scale)[r])
                                           : static_cast<const float*>(m.row_scale)[r];
    }
    for (int64_t t = 0; t < n; ++t) {
      const float s = dot(row, X + t * cols, cols);
      Y[t * m.rows + r] = D == DType::kI8 ? s * scale : s;
    }
  }
}

void matvec_rows_scalar(const MatRef& m, const float* x, float* y, int64_t r0, int64_t r1) {
  // y has the layout of Y for n == 1 (Y[0 * rows + r]).
  switch (m.dtype) {
    case DType::kF32: return matmul_rows_t<DType::kF32>(m, x, 1, y, r0, r1);
    case DType::kF16: return matmul_rows_t<DType::kF16>(m, x, 1, y, r0, r1);
    case DType::kBF16: return matmul_rows_t<DType::kBF16>(m, x, 1, y, r0, r1);
    case DType::kI8: return matmul_rows_t<DType::kI8>(m, x, 1, y, r0, r1);
    case DType::kQ4: return matmul_rows_t<DType::kQ4>(m, x, 1, y, r0, r1);
    case DType::kF16S24: return matmul_rows_s24(m, x, 1, y, r0, r1);
    case DType::kF16M:
    case DType::kI8M:
    case DType::kQ4M: return matmul_rows_masked(m, x, 1, y, r0, r1);
    default: break;
  }
}

void matmul_rows_scalar(const MatRef& m, const float* X, int64_t n, float* Y, int64_t r0, int64_t r1) {
  switch (m.dtype) {
    case DType::kF32: return matmul_rows_t<DType::kF32>(m, X, n, Y, r0, r1);
    case DType::kF16: return matmul_rows_t<DType::kF16>(m, X, n, Y, r0, r1);
    case DType::kBF16: return matmul_rows_t<DType::kBF16>(m, X, n, Y, r0, r1);
    case DType::kI8: return matmul_rows_t<DType::kI8>(m, X, n, Y, r0, r1);
    case DType::kQ4: return matmul_rows_t<DType::kQ4>(m, X, n, Y, r0, r1);
    case DType::kF16S24: return matmul_rows_s24(m, X, n, Y, r0, r1);
    case DType::kF16M:
    case DType::kI8M:
    case DType::kQ4M: return matmul_rows_masked(m, X, n, Y, r0, r1);
    default: break;
  }
}

// Neuron-bundled channel-mix: the first row goes through exactly matvec's code (row_to_f32 + dot,
// then the kI8 scale), so kout is bitwise the scalar matvec_rows value of that row.
template <DType D>
void ffn_neurons_t(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x, float* y,
                   float* kout, bool skip_zero) {
  using T = typename Elem<D>::T;
  const int64_t cols = m.cols, stride = row_stride<D>(cols);
  std::vector<float> buf(D == DType::kF32 ? 0 : static_cast<size_t>(cols));
  auto scale_of = [&m](int64_t r) {
    return m.scale_dtype == DType::kF16 ? half_to_float(static_cast<const uint16_t*>(m.row_scale)[r])
                                        : static_cast<const float*>(m.row_scale)[r];
  };
  auto as_f32 = [&](const T* src) -> const float* {
    if constexpr (D == DType::kF32) {
      return src;
    } else {
      row_to_f32<D>(src, cols, buf.data());
      return buf.data();
    }
  };
  for (int64_t j = 0; j < n; ++j) {
    const T* w = static_cast<const T*>(ptrs[j]);
    const int64_t id = ids[j];
    float k = dot(as_f32(w), x, cols);
    if constexpr (D == DType::kI8) k *= scale_of(2 * id);
    kout[j] = k;
    const float r = k > 0.0f ? k : 0.0f, a = r * r;
    if (a == 0.0f && skip_zero) continue;
    float coef = a;
    if constexpr (D == DType::kI8) coef = a * scale_of(2 * id + 1);
    const float* v = as_f32(w + stride);
    for (int64_t c = 0; c < cols; ++c) y[c] += coef * v[c];
  }
}

void ffn_neurons_scalar(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x,
                        float* y, float* kout, bool skip_zero) {
  switch (m.dtype) {
    case DType::kF32: return ffn_neurons_t<DType::kF32>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kF16: return ffn_neurons_t<DType::kF16>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kBF16: return ffn_neurons_t<DType::kBF16>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kI8: return ffn_neurons_t<DType::kI8>(m, ptrs, ids, n, x, y, kout, skip_zero);
    case DType::kQ4: return ffn_neurons_t<DType::kQ4>(m, ptrs, ids, n, x, y, kout, skip_zero);
    default: break;
  }
}

template <DType D>
void ffn_values_t(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A, int64_t lda,
                  int64_t t0, int64_t t1, float* Y, int64_t ldy) {
  using T = typename Elem<D>::T;
  const int64_t cols = m.cols, stride = row_stride<D>(cols);
  std::vector<float> buf(static_cast<size_t>(cols));
  for (int64_t j = 0; j < n; ++j) {
    const T* w = static_cast<const T*>(ptrs[j]) + stride;
    float scale = 1.0f;
    if constexpr (D == DType::kI8)
      scale = m.scale_dtype == DType::kF16 ? half_to_float(static_cast<const uint16_t*>(m.row_scale)[2 * ids[j] + 1])
                                           : static_cast<const float*>(m.row_scale)[2 * ids[j] + 1];
    bool converted = false;
    for (int64_t t = t0; t < t1; ++t) {
      const float a = A[t * lda + j];
      if (a == 0.0f) continue;
      if (!converted) {  // read only when some token uses it
        if constexpr (D == DType::kF32) std::memcpy(buf.data(), w, sizeof(float) * static_cast<size_t>(cols));
        else row_to_f32<D>(w, cols, buf.data());
        converted = true;
      }
      const float coef = a * scale;
      float* y = Y + t * ldy;
      for (int64_t c = 0; c < cols; ++c) y[c] += coef * buf[static_cast<size_t>(c)];
    }
  }
}

void ffn_values_scalar(const MatRef& m, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A,
                       int64_t lda, int64_t t0, int64_t t1, float* Y, int64_t ldy) {
  switch (m.dtype) {
    case DType::kF32: return ffn_values_t<DType::kF32>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kF16: return ffn_values_t<DType::kF16>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kBF16: return ffn_values_t<DType::kBF16>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kI8: return ffn_values_t<DType::kI8>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    case DType::kQ4: return ffn_values_t<DType::kQ4>(m, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
    default: break;
  }
}

// bits_sums_isa (simd_impl.h) one lane at a time: the same adds in the same order per lane.
void bits_sums_scalar(const uint8_t* bits, int64_t nb, const float* table, float* raw, int64_t r0, int64_t r1) {
  constexpr int64_t L = kBitsLanes, E = 16 * kBitsLanes;  // floats per 4-column group: 16 entries x L lanes
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = bits + r * nb;
    float a[4][L] = {};
    int64_t i = 0;
    const auto add = [&](int k, int64_t byte_at) {
      const uint8_t b = p[byte_at];
      const float* lo = table + (2 * byte_at) * E + (b & 15) * L;
      const float* hi = table + (2 * byte_at + 1) * E + (b >> 4) * L;
      for (int64_t l = 0; l < L; ++l) a[k][l] += lo[l] + hi[l];
    };
    for (; i + 8 <= nb; i += 8)
      for (int k = 0; k < 8; ++k) add(k & 3, i + k);
    for (; i < nb; ++i) add(0, i);
    float* out = raw + (r - r0) * L;
    for (int64_t l = 0; l < L; ++l) out[l] = (a[0][l] + a[1][l]) + (a[2][l] + a[3][l]);
  }
}

// wkv5_token's documented operations, one float at a time.
void wkv5_scalar(const float* r, const float* k, const float* v, const float* w, const float* u, float* St, float* out,
                 int64_t H, int64_t N) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    float* Sh = St + o * N;
    for (int64_t j = 0; j < N; ++j) out[o + j] = 0.f;
    for (int64_t i = 0; i < N; ++i) {
      const float ri = r[o + i], ki = k[o + i], wi = w[o + i], ui = u[o + i];
      float* si = Sh + i * N;
      for (int64_t j = 0; j < N; ++j) {
        const float kv = ki * v[o + j];
        out[o + j] = std::fma(ri, std::fma(ui, kv, si[j]), out[o + j]);
        si[j] = std::fma(si[j], wi, kv);
      }
    }
  }
}

}  // namespace

const KernelSet kScalarKernels = {"scalar",           &matvec_rows_scalar, &matmul_rows_scalar, &ffn_neurons_scalar,
                                  &ffn_values_scalar, &bits_sums_scalar,   &wkv5_scalar};

}  // namespace rwkvl::kern::detail
