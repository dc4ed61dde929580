// File readers and writers. Files are recognised by content (magic bytes / structure), never by
// extension. Readers return raw tensors exactly as stored (names, dtypes, shapes of the source
// format); src/model/ maps them onto the canonical model layout.
#pragma once

#include <memory>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace rwkvl {

enum class FileKind { kUnknown, kRwkvCpp, kPth, kSafetensors, kNative, kGguf };
const char* file_kind_name(FileKind k);

// Looks at the first bytes (and, where needed, the structure) of the file.
FileKind detect_file_kind(const MappedFile& f);

struct RawCheckpoint {
  FileKind kind = FileKind::kUnknown;
  std::vector<Tensor> tensors;  // in file order; data points into `file` where possible
  nlohmann::json meta = nlohmann::json::object();  // format-specific header fields
  std::shared_ptr<MappedFile> file;
};

// Each reader validates everything it reads (offsets, sizes, dtypes, counts) and throws
// rwkvl::Error with a message naming the file and the problem.
RawCheckpoint read_rwkvcpp(std::shared_ptr<MappedFile> f);
RawCheckpoint read_pth(std::shared_ptr<MappedFile> f);
RawCheckpoint read_safetensors(std::shared_ptr<MappedFile> f);
RawCheckpoint read_native(std::shared_ptr<MappedFile> f);
// GGUF (format/gguf.h): tensors under their GGUF names (dims reversed to PyTorch order; quantised types converted
// as gguf_tensor() says); meta: {"gguf_version", "kv": {key: value, ...}} with every metadata value except the
// token arrays, and "tokens": the tokenizer.ggml.tokens strings when present.
RawCheckpoint read_gguf(std::shared_ptr<MappedFile> f);
// Opens the file, detects its kind and dispatches.
RawCheckpoint read_checkpoint(const std::string& path);
RawCheckpoint read_checkpoint(std::shared_ptr<MappedFile> f);

// Writers (atomic: no partial output on failure).
// A PyTorch zip checkpoint that torch.load() reads: a plain dict name -> tensor, contiguous storages.
// Supported dtypes: kF32, kF16, kBF16.
void write_pth(const std::string& path, const std::vector<Tensor>& tensors);
// safetensors with optional string metadata. Supported dtypes: kF32, kF16, kBF16, kI8 (as I8), kI32, kU8.
void write_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata = {});
// rwkv.cpp format (version 101), FP32/FP16 tensors; used by tests and `convert --to rwkvcpp`.
void write_rwkvcpp(const std::string& path, const std::vector<Tensor>& tensors, int n_vocab, int n_embed,
                   int n_layer);
// The native rwkv-lite format, see docs/FORMAT.md. Every tensor entry carries an FNV-1a checksum; the
// reader verifies it for the tensors verify_on_load() names (small sparse-FFN predictor blocks).
bool verify_on_load(const std::string& tensor_name);
// `read` (when given) is called after each tensor's bytes have been read (for its checksum, then for the file),
// so a caller whose tensors are mapped views can drop their pages as the writer goes (compress, issue #19).
void write_native(const std::string& path, const std::vector<Tensor>& tensors, const nlohmann::json& meta,
                  const std::function<void(const Tensor&)>& read = nullptr);

}  // namespace rwkvl
