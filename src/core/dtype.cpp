#include "core/dtype.h"

#include <cstddef>
#include <limits>

#include "core/error.h"

namespace rwkvl {

// The block layouts are part of the native file format (docs/FORMAT.md) and of rwkv.cpp's: never change them.
static_assert(sizeof(BlockQ4) == 20 && offsetof(BlockQ4, d) == 0 && offsetof(BlockQ4, m) == 2 &&
              offsetof(BlockQ4, qs) == 4);
static_assert(sizeof(BlockQ5_1) == 24 && offsetof(BlockQ5_1, d) == 0 && offsetof(BlockQ5_1, m) == 2 &&
              offsetof(BlockQ5_1, qh) == 4 && offsetof(BlockQ5_1, qs) == 8);
static_assert(sizeof(BlockS24) == 36 && offsetof(BlockS24, idx) == 32);
static_assert(sizeof(float) == 4 && sizeof(uint16_t) == 2 && sizeof(int8_t) == 1 && sizeof(int32_t) == 4);

namespace {

// ---- the row conversions the table points at (to_f32_row / from_f32_rows signatures)
void f32_row(const void* src, float* dst, size_t n, float) { std::memcpy(dst, src, n * sizeof(float)); }
void f16_row(const void* src, float* dst, size_t n, float) {
  f16_to_f32_row(static_cast<const uint16_t*>(src), dst, n);
}
void bf16_row(const void* src, float* dst, size_t n, float) {
  bf16_to_f32_row(static_cast<const uint16_t*>(src), dst, n);
}
void i8_row(const void* src, float* dst, size_t n, float s) {
  const int8_t* q = static_cast<const int8_t*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(q[i]) * s;
}
void q5_1_row(const void* src, float* dst, size_t n, float) { q5_1_to_f32_row(src, dst, n); }
void q4_row(const void* src, float* dst, size_t n, float) { q4_to_f32_row(src, dst, n); }
void s24_row(const void* src, float* dst, size_t n, float) { s24_to_f32_row(src, dst, n); }

void f32_rows(const float* src, int64_t rows, int64_t cols, void* out, void*, bool) {
  std::memcpy(out, src, static_cast<size_t>(rows * cols) * sizeof(float));
}
void f16_rows(const float* src, int64_t rows, int64_t cols, void* out, void*, bool) {
  auto* d = static_cast<uint16_t*>(out);
  const size_t n = static_cast<size_t>(rows * cols);
  for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
}
void bf16_rows(const float* src, int64_t rows, int64_t cols, void* out, void*, bool) {
  auto* d = static_cast<uint16_t*>(out);
  const size_t n = static_cast<size_t>(rows * cols);
  for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
}
void i8_rows(const float* src, int64_t rows, int64_t cols, void* out, void* scales, bool f16_scales) {
  if (f16_scales)
    quantize_rows_i8_f16(src, rows, cols, static_cast<int8_t*>(out), static_cast<uint16_t*>(scales));
  else
    quantize_rows_i8(src, rows, cols, static_cast<int8_t*>(out), static_cast<float*>(scales));
}
void q4_rows(const float* src, int64_t rows, int64_t cols, void* out, void*, bool) {
  quantize_rows_q4(src, rows, cols, out);
}
void s24_rows(const float* src, int64_t rows, int64_t cols, void* out, void*, bool) {
  pack_rows_s24(src, rows, cols, out);
}

using SL = ScaleLayout;
// Indexed by the DType value.
constexpr DTypeTraits kTraits[] = {
    {DType::kF32, "f32", "f32", nullptr, 1, 4, true, SL::kNone, f32_row, f32_rows},
    {DType::kF16, "f16", "f16", nullptr, 1, 2, true, SL::kNone, f16_row, f16_rows},
    {DType::kBF16, "bf16", "bf16", nullptr, 1, 2, true, SL::kNone, bf16_row, bf16_rows},
    {DType::kI8, "i8", "i8", "int8", 1, 1, true, SL::kRowTensor, i8_row, i8_rows},
    {DType::kQ5_1, "q5_1", nullptr, nullptr, 32, sizeof(BlockQ5_1), false, SL::kInBlock, q5_1_row, nullptr},
    {DType::kI32, "i32", nullptr, nullptr, 1, 4, false, SL::kNone, nullptr, nullptr},
    {DType::kU8, "u8", nullptr, nullptr, 1, 1, false, SL::kNone, nullptr, nullptr},
    {DType::kQ4, "q4_g32", "q4", "int4", 32, sizeof(BlockQ4), true, SL::kInBlock, q4_row, q4_rows},
    {DType::kF16S24, "f16_2of4", nullptr, nullptr, 32, sizeof(BlockS24), true, SL::kNone, s24_row, s24_rows},
};
constexpr uint32_t kNumTypes = sizeof(kTraits) / sizeof(kTraits[0]);

constexpr bool table_in_order() {
  for (uint32_t i = 0; i < kNumTypes; ++i)
    if (static_cast<uint32_t>(kTraits[i].type) != i) return false;
  return true;
}
static_assert(table_in_order(), "kTraits must be indexed by the DType value");
static_assert(kNumTypes == static_cast<uint32_t>(DType::kF16S24) + 1);

}  // namespace

bool dtype_valid(uint32_t raw) { return raw < kNumTypes; }
const DTypeTraits& dtype_traits(DType t) {
  RWKVL_CHECK(dtype_valid(static_cast<uint32_t>(t)));
  return kTraits[static_cast<uint32_t>(t)];
}
const char* dtype_name(DType t) { return dtype_valid(static_cast<uint32_t>(t)) ? kTraits[static_cast<uint32_t>(t)].name : "?"; }
bool dtype_is_matrix(DType t) { return dtype_valid(static_cast<uint32_t>(t)) && kTraits[static_cast<uint32_t>(t)].matrix; }
bool dtype_is_quantised(DType t) { return dtype_is_matrix(t) && dtype_traits(t).scale != ScaleLayout::kNone; }

int64_t dtype_row_bytes(DType t, int64_t cols) {
  const DTypeTraits& tr = dtype_traits(t);
  return cols / static_cast<int64_t>(tr.block_elems) * static_cast<int64_t>(tr.block_bytes);
}

bool dtype_from_option(const std::string& s, DType* out) {
  for (const DTypeTraits& tr : kTraits) {
    if (!tr.matrix) continue;
    if ((tr.option_name && s == tr.option_name) || (tr.option_alias && s == tr.option_alias)) {
      *out = tr.type;
      return true;
    }
  }
  return false;
}

size_t dtype_bytes(DType t, uint64_t n) {
  const DTypeTraits& info = dtype_traits(t);
  if (n % info.block_elems != 0) return std::numeric_limits<size_t>::max();
  uint64_t blocks = n / info.block_elems;
  if (blocks > std::numeric_limits<uint64_t>::max() / info.block_bytes) return std::numeric_limits<size_t>::max();
  return static_cast<size_t>(blocks * info.block_bytes);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      u = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absu < 0x38800000u) {  // subnormal or zero in f16
    if (absu < 0x33000000u) return sign;  // rounds to zero
    const uint32_t e = absu >> 23;
    const uint32_t m = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // f16 subnormal = m * 2^(e-150) / 2^-24, shift in [14, 24]
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    uint32_t res = m >> shift;
    if (rem > half || (rem == half && (res & 1u))) ++res;  // round to nearest even
    return static_cast<uint16_t>(sign | res);
  }
  uint32_t res = ((absu >> 13) - (112u << 10));
  const uint32_t rem = absu & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (res & 1u))) ++res;
  return static_cast<uint16_t>(sign | res);
}

void f16_to_f32_row(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
void bf16_to_f32_row(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void q5_1_to_f32_row(const void* src, float* dst, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (size_t b = 0; b < n / 32; ++b, p += sizeof(BlockQ5_1)) {
    uint16_t dh, mh;
    uint32_t qh;
    std::memcpy(&dh, p, 2);
    std::memcpy(&mh, p + 2, 2);
    std::memcpy(&qh, p + 4, 4);
    const float d = f16_to_f32(dh), m = f16_to_f32(mh);
    const uint8_t* qs = p + 8;
    float* out = dst + b * 32;
    for (int j = 0; j < 16; ++j) {
      const uint32_t lo = (qs[j] & 0x0fu) | (((qh >> j) & 1u) << 4);
      const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
      out[j] = static_cast<float>(lo) * d + m;
      out[j + 16] = static_cast<float>(hi) * d + m;
    }
  }
}

void q4_to_f32_row(const void* src, float* dst, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (size_t b = 0; b < n / 32; ++b, p += sizeof(BlockQ4)) {
    uint16_t dh, mh;
    std::memcpy(&dh, p, 2);
    std::memcpy(&mh, p + 2, 2);
    const float d = f16_to_f32(dh), m = f16_to_f32(mh);
    const uint8_t* qs = p + 4;
    float* out = dst + b * 32;
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>(qs[j] & 0x0fu) * d + m;
      out[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

void s24_to_f32_row(const void* src, float* dst, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (size_t b = 0; b < n / 32; ++b, p += sizeof(BlockS24)) {
    BlockS24 blk;
    std::memcpy(&blk, p, sizeof blk);
    float* out = dst + b * 32;
    for (int j = 0; j < 32; ++j) out[j] = 0.0f;
    for (int k = 0; k < 16; ++k) out[s24_column(blk.idx, k)] += f16_to_f32(blk.v[k]);
  }
}

}  // namespace rwkvl
