#include "core/dtype.h"

#include <cstddef>
#include <cmath>
#include <limits>
#include <vector>

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
    // Masked: a row's bytes depend on the tensor's value slots (masked_row_bytes), so block_bytes is 0 and the
    // row conversions go through masked_row_to_f32 / pack_rows_masked, which take them.
    {DType::kF16M, "f16_masked", nullptr, nullptr, 32, 0, true, SL::kNone, nullptr, nullptr},
    {DType::kI8M, "i8_masked", nullptr, nullptr, 32, 0, true, SL::kRowTensor, nullptr, nullptr},
    {DType::kQ4M, "q4_masked", nullptr, nullptr, 32, 0, true, SL::kInBlock, nullptr, nullptr},
};
constexpr uint32_t kNumTypes = sizeof(kTraits) / sizeof(kTraits[0]);

constexpr bool table_in_order() {
  for (uint32_t i = 0; i < kNumTypes; ++i)
    if (static_cast<uint32_t>(kTraits[i].type) != i) return false;
  return true;
}
static_assert(table_in_order(), "kTraits must be indexed by the DType value");
static_assert(kNumTypes == static_cast<uint32_t>(DType::kQ4M) + 1);

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
  RWKVL_CHECK(!dtype_is_masked(t) && "a masked row's bytes depend on its value slots: masked_row_bytes");
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
  if (info.block_bytes == 0) return std::numeric_limits<size_t>::max();  // masked: see masked_kept_from_bytes
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

// ---- masked layouts

bool dtype_is_masked(DType t) { return t == DType::kF16M || t == DType::kI8M || t == DType::kQ4M; }

DType masked_value_dtype(DType masked) {
  switch (masked) {
    case DType::kF16M: return DType::kF16;
    case DType::kI8M: return DType::kI8;
    case DType::kQ4M: return DType::kQ4;
    default: RWKVL_CHECK(false && "not a masked dtype");
  }
  return DType::kF16;
}

bool masked_dtype_for(DType value, DType* out) {
  switch (value) {
    case DType::kF16: *out = DType::kF16M; return true;
    case DType::kI8: *out = DType::kI8M; return true;
    case DType::kQ4: *out = DType::kQ4M; return true;
    default: return false;
  }
}

int64_t masked_row_bytes(DType masked, int64_t cols, int64_t kept) {
  const DType v = masked_value_dtype(masked);
  if (cols < 0 || cols % 32 != 0 || kept < 0 || kept > cols || kept % dtype_traits(v).block_elems != 0) return -1;
  return cols / 8 + dtype_row_bytes(v, kept);
}

int64_t masked_kept_for(DType masked, int64_t max_count) {
  const int64_t be = dtype_traits(masked_value_dtype(masked)).block_elems;
  return (max_count + be - 1) / be * be;
}

bool masked_kept_from_bytes(DType masked, int64_t rows, int64_t cols, uint64_t nbytes, int64_t* kept) {
  if (!dtype_is_masked(masked) || rows <= 0 || cols <= 0 || cols % 32 != 0) return false;
  if (nbytes % static_cast<uint64_t>(rows) != 0) return false;
  const uint64_t row = nbytes / static_cast<uint64_t>(rows), mask = static_cast<uint64_t>(cols) / 8;
  if (row < mask) return false;
  const DTypeTraits& v = dtype_traits(masked_value_dtype(masked));
  const uint64_t vb = row - mask;
  if (vb % v.block_bytes != 0) return false;
  const uint64_t k = vb / v.block_bytes * v.block_elems;
  if (k > static_cast<uint64_t>(masked_kept_for(masked, cols))) return false;
  *kept = static_cast<int64_t>(k);
  return true;
}

void masked_row_to_f32(DType masked, const uint8_t* row, int64_t cols, int64_t kept, float row_scale, float* out) {
  const DType vd = masked_value_dtype(masked);
  const uint8_t* mask = row;
  const uint8_t* vals = row + cols / 8;
  // The kept values in order, decoded once (q4: whole blocks).
  float buf[32];
  int64_t k = 0;
  for (int64_t c = 0; c < cols; ++c) {
    float v = 0.0f;
    if (((mask[c >> 3] >> (c & 7)) & 1u) && k < kept) {
      switch (vd) {
        case DType::kF16: {
          uint16_t h;
          std::memcpy(&h, vals + 2 * k, 2);
          v = f16_to_f32(h);
          break;
        }
        case DType::kI8: v = static_cast<float>(static_cast<int8_t>(vals[k])) * row_scale; break;
        default:  // kQ4
          if (k % 32 == 0) q4_to_f32_row(vals + k / 32 * sizeof(BlockQ4), buf, 32);
          v = buf[k % 32];
          break;
      }
      ++k;
    }
    out[c] = v;
  }
}

void pack_rows_masked(DType masked, const float* src, int64_t rows, int64_t cols, int64_t kept, void* out, void* scales,
                      bool f16_scales) {
  const DType vd = masked_value_dtype(masked);
  const int64_t rb = masked_row_bytes(masked, cols, kept);
  if (rb < 0)
    RWKVL_FAIL(kInvalidArgument, "cannot store a %lld-column matrix as %s with %lld value slots per row",
               static_cast<long long>(cols), dtype_name(masked), static_cast<long long>(kept));
  // The kept values of every row, packed to the left of a rows x kept matrix (zeros after a row's own count),
  // go through the value dtype's own quantiser; the masks go in front of each row.
  std::vector<float> packed(static_cast<size_t>(rows * kept), 0.0f);
  std::vector<uint8_t> masks(static_cast<size_t>(rows * cols / 8), 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t k = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = src[r * cols + c];
      if (!std::isfinite(v))
        RWKVL_FAIL(kInvalidArgument, "cannot store row %lld column %lld (%g) as %s", static_cast<long long>(r),
                   static_cast<long long>(c), static_cast<double>(v), dtype_name(masked));
      if (v == 0.0f) continue;
      if (k == kept)
        RWKVL_FAIL(kInvalidArgument, "row %lld has more than %lld non-zeros: %s cannot hold it", static_cast<long long>(r),
                   static_cast<long long>(kept), dtype_name(masked));
      masks[static_cast<size_t>(r * cols / 8 + c / 8)] |= static_cast<uint8_t>(1u << (c & 7));
      packed[static_cast<size_t>(r * kept + k++)] = v;
    }
  }
  const int64_t vrb = rb - cols / 8;
  std::vector<uint8_t> vals(static_cast<size_t>(rows * vrb));
  if (kept > 0) dtype_traits(vd).from_f32_rows(packed.data(), rows, kept, vals.data(), scales, f16_scales);
  else if (vd == DType::kI8) {
    for (int64_t r = 0; r < rows; ++r) {
      if (f16_scales) static_cast<uint16_t*>(scales)[r] = 0;
      else static_cast<float*>(scales)[r] = 0.0f;
    }
  }
  auto* o = static_cast<uint8_t*>(out);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(o + r * rb, masks.data() + r * cols / 8, static_cast<size_t>(cols / 8));
    if (vrb) std::memcpy(o + r * rb + cols / 8, vals.data() + r * vrb, static_cast<size_t>(vrb));
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
