// Element types of stored tensors: one table row per type (name, bytes per block, block size).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace rwkvl {

// Values are part of the native file format (docs/FORMAT.md): never renumber.
enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kI8 = 3,    // int8 with one float32 scale per row (row-major matrix); scales live in a separate tensor
  kQ5_1 = 4,  // ggml/rwkv.cpp Q5_1 blocks (32 values: f16 d, f16 m, u32 high bits, 16 bytes of nibbles)
  kI32 = 5,
  kU8 = 6,
  // int4 in groups of 32 along a row: 20-byte blocks {f16 scale d, f16 offset m, 16 bytes of nibbles};
  // element j of a block is d * q_j + m with q_j = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4 (0..15).
  kQ4 = 7,
};

struct DTypeInfo {
  const char* name;
  uint32_t block_elems;  // elements per block
  uint32_t block_bytes;  // bytes per block
};

const DTypeInfo& dtype_info(DType t);
bool dtype_valid(uint32_t raw);
// Bytes taken by n elements (n must be a multiple of the block size, else returns SIZE_MAX).
size_t dtype_bytes(DType t, uint64_t n);
const char* dtype_name(DType t);

// ---- scalar conversions (exact, round-to-nearest-even where narrowing)
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Row conversion helpers (scalar; the kernels have SIMD versions where it matters).
void f16_to_f32_row(const uint16_t* src, float* dst, size_t n);
void bf16_to_f32_row(const uint16_t* src, float* dst, size_t n);
void q5_1_to_f32_row(const void* src, float* dst, size_t n);  // n multiple of 32
void q4_to_f32_row(const void* src, float* dst, size_t n);    // n multiple of 32 (kQ4 blocks)

}  // namespace rwkvl
