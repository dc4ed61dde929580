// Element types of stored tensors and the one table of their facts (DTypeTraits): name, block size and bytes,
// whether the kernels take it as a weight matrix, where its scales live, and its row conversions to and from
// float32. Code that needs a fact about a dtype looks it up here instead of switching on the type.
#pragma once

#include <cstddef>
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
  // 2:4 structured sparsity, f16 values, in blocks of 32 columns (BlockS24): in every group of 4 columns at
  // most 2 values are non-zero; the block keeps 16 values and their 2-bit positions. 9 bits per weight.
  kF16S24 = 8,
  // Unstructured sparsity ("masked"): every row is [cols/8 bytes of keep bits][kept value slots], the kept
  // values in column order stored as f16, i8 (one row scale in "<name>.scale", as kI8) or q4_g32 blocks
  // (groups of 32 consecutive kept values). `kept` (the value slots per row, the same for every row; slots past a
  // row's own count hold zeros) is not in the dtype: it follows from the tensor's byte size
  // (masked_kept_from_bytes). Bit c % 8 (LSB first) of mask byte c / 8 is column c. cols % 32 == 0;
  // q4: kept % 32 == 0. See docs/FORMAT.md and docs/PRUNING.md.
  kF16M = 9,
  kI8M = 10,
  kQ4M = 11,
};

// ---- block layouts (bytes on disk and in memory; fixed by the static_asserts in dtype.cpp)
struct BlockQ4 {  // DType::kQ4, 32 values
  uint16_t d;      // f16 scale
  uint16_t m;      // f16 offset (the group minimum)
  uint8_t qs[16];  // value j < 16 in the low nibble of qs[j], value j >= 16 in the high nibble of qs[j - 16]
};
struct BlockQ5_1 {  // DType::kQ5_1, 32 values
  uint16_t d;       // f16 scale
  uint16_t m;       // f16 offset
  uint8_t qh[4];    // bit j (little-endian u32): fifth bit of value j
  uint8_t qs[16];   // low 4 bits as in BlockQ4
};

struct BlockS24 {  // DType::kF16S24, 32 columns
  uint16_t v[16];   // f16 values; v[2g] and v[2g+1] belong to the group of columns 4g..4g+3
  uint32_t idx;     // bits 2k..2k+1: the column of v[k] within its group (0..3)
};
// The column (0..31) within its block of kept value k (0..15) of a kF16S24 block.
inline int s24_column(uint32_t idx, int k) { return 4 * (k >> 1) + static_cast<int>((idx >> (2 * k)) & 3u); }

// ---- masked (unstructured sparse) layouts: DType::kF16M, kI8M, kQ4M
bool dtype_is_masked(DType t);
// The dtype of the kept values of a masked dtype (kF16, kI8, kQ4), and the masked dtype whose values are v
// (kF16/kI8/kQ4; false for others).
DType masked_value_dtype(DType masked);
bool masked_dtype_for(DType value, DType* out);
// Bytes of one row: cols / 8 + bytes of `kept` values; -1 when kept is invalid for the dtype (q4: kept % 32).
int64_t masked_row_bytes(DType masked, int64_t cols, int64_t kept);
// The value slots per row of a rows x cols masked tensor of nbytes bytes; false when nbytes fits no kept in [0, cols]
// (rounded up to 32 for q4) or cols % 32 != 0.
bool masked_kept_from_bytes(DType masked, int64_t rows, int64_t cols, uint64_t nbytes, int64_t* kept);
// The slots a masked dtype needs for rows with at most max_count kept values (q4: rounded up to a multiple of 32).
int64_t masked_kept_for(DType masked, int64_t max_count);
// Row r of a masked matrix to float32 (cols values, zeros where the mask is clear). A row whose mask has more set
// bits than `kept` (a corrupt file) reads only its kept slots: the excess columns get zeros, nothing outside the row
// is read. row_scale: kI8M only.
void masked_row_to_f32(DType masked, const uint8_t* row, int64_t cols, int64_t kept, float row_scale, float* out);
// Packs rows x cols float32 values (the zeros are the pruned weights) into a masked tensor of `kept` slots per row
// (kept >= every row's non-zero count, see masked_kept_for) at `out` (rows * masked_row_bytes bytes); kI8M writes
// one scale per row (f16 when f16_scales) to `scales`. Non-finite values throw kInvalidArgument.
void pack_rows_masked(DType masked, const float* src, int64_t rows, int64_t cols, int64_t kept, void* out, void* scales,
                      bool f16_scales);

// Where the scales of a dtype live.
enum class ScaleLayout : uint8_t {
  kNone,       // values are stored as they are (f32, f16, bf16, i32, u8)
  kRowTensor,  // one scale per row in a separate tensor "<name>.scale", f32 or f16 (i8)
  kInBlock,    // an f16 scale and offset in every block (q4_g32, q5_1)
};

struct DTypeTraits {
  DType type;
  const char* name;         // as in files and messages ("q4_g32")
  const char* option_name;  // the spelling a weight-dtype option takes ("q4"), nullptr if it cannot be asked for
  const char* option_alias; // a second accepted spelling ("int4"), or nullptr
  uint32_t block_elems;     // values per block (1 for plain types)
  uint32_t block_bytes;     // bytes per block
  bool matrix;              // a weight-matrix dtype: the kernels multiply by it and quantize_rows writes it
  ScaleLayout scale;
  // Converts n values (a multiple of block_elems) of one row to float32; a kRowTensor type multiplies them by
  // row_scale, the others ignore it. nullptr: no conversion (i32, u8).
  void (*to_f32_row)(const void* src, float* dst, size_t n, float row_scale);
  // Quantises rows x cols float32 values to rows * row_bytes(cols) bytes at `out`; a kRowTensor type also
  // writes one scale per row to `scales` (uint16_t f16 when f16_scales, else float). Throws kInvalidArgument
  // on values it cannot store (non-finite, out of range, cols not a multiple of block_elems).
  // nullptr for the types that are not matrix dtypes.
  void (*from_f32_rows)(const float* src, int64_t rows, int64_t cols, void* out, void* scales, bool f16_scales);
};
using DTypeInfo = DTypeTraits;

const DTypeTraits& dtype_traits(DType t);  // t must be valid (dtype_valid)
inline const DTypeInfo& dtype_info(DType t) { return dtype_traits(t); }
bool dtype_valid(uint32_t raw);
// Bytes taken by n elements (n must be a multiple of the block size, else returns SIZE_MAX).
size_t dtype_bytes(DType t, uint64_t n);
const char* dtype_name(DType t);
// A valid weight-matrix dtype (f32, f16, bf16, i8, q4_g32).
bool dtype_is_matrix(DType t);
// A matrix dtype that stores scales (i8, q4_g32): "quantised".
bool dtype_is_quantised(DType t);
// Bytes of one row of `cols` values (cols / block_elems whole blocks).
int64_t dtype_row_bytes(DType t, int64_t cols);
// The matrix dtype whose option_name or option_alias is `s`; false if none.
bool dtype_from_option(const std::string& s, DType* out);

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
void s24_to_f32_row(const void* src, float* dst, size_t n);   // n multiple of 32 (kF16S24 blocks)

// ---- quantisers (core/quantize.cpp; kern::quantize_rows_* forward to them)
// int8 per row: scale[r] = max|W[r][:]| / 127, q = round(W / scale).
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale);
// The same with the scale stored as IEEE half: the scale is rounded to f16 first and q = round(W / f16(scale)).
void quantize_rows_i8_f16(const float* src, int64_t rows, int64_t cols, int8_t* q, uint16_t* scale);
// kQ4 (q4_g32): per group of 32 m = min, d = (max - min) / 15, both rounded to f16, q = round((x - m) / d).
void quantize_rows_q4(const float* src, int64_t rows, int64_t cols, void* out);
// kF16S24: in every group of 4 the 2 values of largest magnitude are kept (the first on ties), as f16; a
// matrix already pruned 2:4 is stored exactly (up to f16 rounding). cols % 32 != 0 or non-finite values throw.
void pack_rows_s24(const float* src, int64_t rows, int64_t cols, void* out);
// True when every group of 4 consecutive values of each row has at most 2 non-zeros (cols % 4 == 0).
bool is_2of4(const float* src, int64_t rows, int64_t cols);

}  // namespace rwkvl
