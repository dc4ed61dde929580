// GGUF (version 2 and 3), the container llama.cpp and ggml use: a header, typed key/value metadata, tensor
// records (name, dimensions innermost first, ggml type, offset) and the aligned data. This file reads and writes
// the container and converts ggml tensor types; which tensors make an RWKV model, and under which names, is
// src/model/gguf_model.cpp's business.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace rwkvl {

// GGUF metadata value types (the file's codes).
enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
  kU64 = 10, kI64 = 11, kF64 = 12,
};

// ggml tensor types this project reads (the file's codes).
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14,
  kBF16 = 30,
};
// "F32", "Q4_K", ...; nullptr for a code this project does not read.
const char* ggml_type_name(uint32_t type);
// Values per block and bytes per block of a type read here; false for other codes.
bool ggml_block(uint32_t type, uint32_t* block_elems, uint32_t* block_bytes);
// Dequantises n values (a multiple of the block size) of a row stored as `type` into float32.
void ggml_to_f32(uint32_t type, const void* src, float* dst, size_t n);

struct GgufKV {
  std::string key;
  GgufType type;
  GgufType elem = GgufType::kU8;  // arrays: the element type
  nlohmann::json value;           // numbers, bool, string (raw bytes), or an array of them
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // dimensions, innermost first (ne[0] = values per row)
  uint32_t type = 0;
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
};

struct GgufFile {
  uint32_t version = 3;
  std::vector<GgufKV> kv;
  std::vector<GgufTensorInfo> tensors;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // start of the data section in the file
  const GgufKV* find(const std::string& key) const;
};

// True when the file starts with the GGUF magic.
bool is_gguf(const MappedFile& f);
// Parses and validates the header, metadata and tensor records of a mapped file (every count, length, type,
// shape and offset checked against the file; kFormat / kUnsupported naming the file and the problem).
GgufFile parse_gguf(const MappedFile& f);
// The tensor's values as a Tensor (PyTorch order, outermost first): F32, F16 and BF16 as stored (a view of the
// mapping); Q4_0 and Q4_1 as this project's q4_g32 blocks (the same values); the other quantised types
// dequantised to f16 (conversion at load).
Tensor gguf_tensor(const GgufFile& g, const std::shared_ptr<MappedFile>& f, const GgufTensorInfo& t);

// A tensor to write: name, ggml type, dims innermost first and its bytes (row-major, ne[0] fastest).
struct GgufOutTensor {
  std::string name;
  uint32_t type;
  std::vector<uint64_t> ne;
  std::vector<uint8_t> bytes;
};
// Writes a GGUF v3 file atomically (general.alignment 32).
void write_gguf(const std::string& path, const std::vector<GgufKV>& kv, const std::vector<GgufOutTensor>& tensors);

// Quantises rows of float32 values to a ggml type this project writes (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
std::vector<uint8_t> ggml_from_f32(uint32_t type, const float* src, int64_t rows, int64_t cols);

}  // namespace rwkvl
