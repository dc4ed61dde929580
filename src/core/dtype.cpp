#include "core/dtype.h"

#include <cstddef>
#include <limits>

namespace rwkvl {

namespace {
constexpr DTypeInfo kInfo[] = {
    {"f32", 1, 4}, {"f16", 1, 2}, {"bf16", 1, 2}, {"i8", 1, 1}, {"q5_1", 32, 24}, {"i32", 1, 4}, {"u8", 1, 1}, {"q4_g32", 32, 20},
};
constexpr uint32_t kNumTypes = sizeof(kInfo) / sizeof(kInfo[0]);
}  // namespace

bool dtype_valid(uint32_t raw) { return raw < kNumTypes; }
const DTypeInfo& dtype_info(DType t) { return kInfo[static_cast<uint32_t>(t)]; }
const char* dtype_name(DType t) { return dtype_valid(static_cast<uint32_t>(t)) ? kInfo[static_cast<uint32_t>(t)].name : "?"; }

size_t dtype_bytes(DType t, uint64_t n) {
  const DTypeInfo& info = dtype_info(t);
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
  for (size_t b = 0; b < n / 32; ++b, p += 24) {
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
  for (size_t b = 0; b < n / 32; ++b, p += 20) {
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

}  // namespace rwkvl
