// A named, typed, shaped view of tensor bytes plus whatever keeps those bytes alive (a heap buffer
// or a memory-mapped file). One representation flows through everything: readers produce Tensors,
// compression passes transform them, writers store them, the model binds them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace rwkvl {

struct Tensor {
  std::string name;
  DType dtype = DType::kF32;
  // PyTorch order, outermost first. A weight matrix is {rows = out_features, cols = in_features},
  // stored row-major, so y = W x reads one contiguous row per output.
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  std::shared_ptr<const void> owner;  // keeps `data` valid (buffer or mapping)

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const;  // product of all but the first dimension
  std::string shape_str() const;

  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }

  // Owning tensors made on the heap.
  static Tensor alloc(std::string name, DType dtype, std::vector<int64_t> shape);
  // A masked (unstructured sparse) matrix: rows x cols with `kept` value slots per row (core/dtype.h).
  static Tensor alloc_masked(std::string name, DType masked, int64_t rows, int64_t cols, int64_t kept);
  // Value slots per row of a masked tensor (from its byte size); -1 for other dtypes or an inconsistent size.
  int64_t masked_kept() const;
  static Tensor from_f32(std::string name, std::vector<int64_t> shape, const float* src);
  float* mutable_f32();  // only for tensors made by alloc()/from_f32 with dtype kF32
  void* mutable_data();  // only for tensors made by alloc()

  // Fully converted float32 copy of the values (any dtype except kI8 / kI8M, which need their scales).
  std::vector<float> to_f32() const;
};

// Ordered by name so iteration (and therefore writing) is deterministic.
using TensorMap = std::map<std::string, Tensor>;

// Product of dims with overflow and sanity checks; throws kFormat on negative or overflowing shapes.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);

}  // namespace rwkvl
