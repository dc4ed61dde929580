// The weight quantisers (declared in core/dtype.h and reached through DTypeTraits::from_f32_rows): int8 per row
// with an f32 or f16 scale, and q4_g32 blocks. Scalar code: the files they write must not depend on the ISA.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace rwkvl {

namespace {

// max |row[c]|, failing on a non-finite value (the row cannot be quantised).
float row_absmax_i8(const float* row, int64_t cols, int64_t r) {
  float amax = 0.0f;
  for (int64_t c = 0; c < cols; ++c) {
    if (!std::isfinite(row[c]))
      RWKVL_FAIL(kInvalidArgument, "cannot quantise to int8: row %lld has a non-finite value at column %lld",
                 static_cast<long long>(r), static_cast<long long>(c));
    amax = std::max(amax, std::fabs(row[c]));
  }
  return amax;
}

// q = round(row / s) clamped to +-127; s == 0 (an all-zero row, or values so tiny the scale
// underflows) stores zeros. The clamp catches v/s rounding just past 127.
void quantize_row_i8(const float* row, int64_t cols, float s, int8_t* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const float v = s > 0.0f ? std::round(row[c] / s) : 0.0f;
    out[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
  }
}

}  // namespace

void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    const float s = row_absmax_i8(row, cols, r) / 127.0f;
    scale[r] = s;
    quantize_row_i8(row, cols, s, q + r * cols);
  }
}

void quantize_rows_i8_f16(const float* src, int64_t rows, int64_t cols, int8_t* q, uint16_t* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    const float amax = row_absmax_i8(row, cols, r);
    // The scale is rounded to f16 first and q computed from the rounded value, so q * f16(scale) is
    // the best int8 approximation for the scale actually stored.
    uint16_t h = f32_to_f16(amax / 127.0f);
    if (h >= 0x7c00u)
      RWKVL_FAIL(kInvalidArgument, "cannot quantise to int8 with an f16 scale: row %lld has |w| = %g (> 127 * 65504)",
                 static_cast<long long>(r), static_cast<double>(amax));
    // Normal halves round by at most 2^-11, so amax / s <= 127.07 and the clamp costs nothing.
    // For tiny rows (subnormal scales, or 0 for amax / 127 < 2^-25) round the scale up instead, so
    // that no value is clamped by more than half a step.
    if (f16_to_f32(h) * 127.5f < amax) ++h;
    scale[r] = h;
    quantize_row_i8(row, cols, f16_to_f32(h), q + r * cols);
  }
}

void quantize_rows_q4(const float* src, int64_t rows, int64_t cols, void* out) {
  if (cols % 32 != 0)
    RWKVL_FAIL(kInvalidArgument, "cannot quantise to q4_g32: %lld columns is not a multiple of 32",
               static_cast<long long>(cols));
  uint8_t* blk = static_cast<uint8_t*>(out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 32; ++g, blk += sizeof(BlockQ4)) {
      const float* x = src + r * cols + g * 32;
      float lo = x[0], hi = x[0];
      for (int j = 0; j < 32; ++j) {
        if (!std::isfinite(x[j]))
          RWKVL_FAIL(kInvalidArgument, "cannot quantise to q4_g32: row %lld has a non-finite value at column %lld",
                     static_cast<long long>(r), static_cast<long long>(g * 32 + j));
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
      }
      // d and m are rounded to f16 before q is computed, so dequantisation d * q + m uses exactly
      // the stored values; q = round((x - m) / d) clamped to 0..15 absorbs their rounding.
      const uint16_t mh = f32_to_f16(lo), dh = f32_to_f16((hi - lo) / 15.0f);
      if ((mh & 0x7fffu) >= 0x7c00u || (dh & 0x7fffu) >= 0x7c00u)
        RWKVL_FAIL(kInvalidArgument, "cannot quantise to q4_g32: row %lld has values beyond the f16 range (%g .. %g)",
                   static_cast<long long>(r), static_cast<double>(lo), static_cast<double>(hi));
      const float m = f16_to_f32(mh), d = f16_to_f32(dh);
      uint8_t q[32];
      for (int j = 0; j < 32; ++j) {
        const float v = d > 0.0f ? std::round((x[j] - m) / d) : 0.0f;  // d == 0: a constant group
        q[j] = static_cast<uint8_t>(std::clamp(v, 0.0f, 15.0f));
      }
      std::memcpy(blk, &dh, 2);
      std::memcpy(blk + 2, &mh, 2);
      for (int j = 0; j < 16; ++j) blk[4 + j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
    }
  }
}

void pack_rows_s24(const float* src, int64_t rows, int64_t cols, void* out) {
  if (cols % 32 != 0)
    RWKVL_FAIL(kInvalidArgument, "2:4 storage needs a multiple of 32 columns (this matrix has %lld)", static_cast<long long>(cols));
  auto* o = static_cast<uint8_t*>(out);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    for (int64_t b = 0; b < cols / 32; ++b, o += sizeof(BlockS24)) {
      BlockS24 blk{};
      for (int g = 0; g < 8; ++g) {
        const float* v = row + b * 32 + 4 * g;
        for (int j = 0; j < 4; ++j)
          if (!std::isfinite(v[j]) || std::fabs(v[j]) > 65504.0f)
            RWKVL_FAIL(kInvalidArgument, "cannot store row %lld column %lld (%g) as f16 (2:4)", static_cast<long long>(r),
                       static_cast<long long>(b * 32 + 4 * g + j), static_cast<double>(v[j]));
        // The two largest magnitudes (the first of equals), kept in column order.
        int p0 = 0;
        for (int j = 1; j < 4; ++j)
          if (std::fabs(v[j]) > std::fabs(v[p0])) p0 = j;
        int p1 = p0 == 0 ? 1 : 0;
        for (int j = 0; j < 4; ++j)
          if (j != p0 && std::fabs(v[j]) > std::fabs(v[p1])) p1 = j;
        if (p1 < p0) std::swap(p0, p1);
        blk.v[2 * g] = f32_to_f16(v[p0]);
        blk.v[2 * g + 1] = f32_to_f16(v[p1]);
        blk.idx |= static_cast<uint32_t>(p0) << (4 * g) | static_cast<uint32_t>(p1) << (4 * g + 2);
      }
      std::memcpy(o, &blk, sizeof blk);
    }
  }
}

bool is_2of4(const float* src, int64_t rows, int64_t cols) {
  if (cols % 4 != 0) return false;
  for (int64_t i = 0; i < rows * cols; i += 4)
    if ((src[i] != 0.0f) + (src[i + 1] != 0.0f) + (src[i + 2] != 0.0f) + (src[i + 3] != 0.0f) > 2) return false;
  return true;
}

}  // namespace rwkvl
