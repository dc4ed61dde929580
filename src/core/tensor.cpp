#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace rwkvl {

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) RWKVL_FAIL(kFormat, "%s: negative dimension %lld", what.c_str(), static_cast<long long>(d));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / 16 / d)
      RWKVL_FAIL(kFormat, "%s: shape too large", what.c_str());
    n *= d;
  }
  return n;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::cols() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Tensor Tensor::alloc(std::string name, DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  const int64_t n = checked_numel(t.shape, t.name);
  t.nbytes = dtype_bytes(dtype, static_cast<uint64_t>(n));
  if (t.nbytes == std::numeric_limits<size_t>::max())
    RWKVL_FAIL(kFormat, "%s: %lld elements do not fill whole %s blocks", t.name.c_str(), static_cast<long long>(n),
               dtype_name(dtype));
  // 64-byte aligned so SIMD kernels and the native writer see the same alignment as a mapped file.
  const size_t sz = (t.nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, sz ? sz : 64);
  if (!p) RWKVL_FAIL(kOutOfMemory, "cannot allocate %zu bytes for %s", t.nbytes, t.name.c_str());
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  t.data = p;
  t.owner = owner;
  return t;
}

Tensor Tensor::alloc_masked(std::string name, DType masked, int64_t rows, int64_t cols, int64_t kept) {
  RWKVL_CHECK(dtype_is_masked(masked));
  const int64_t rb = masked_row_bytes(masked, cols, kept);
  if (rb < 0 || rows < 0)
    RWKVL_FAIL(kInvalidArgument, "%s: no %s layout for [%lld, %lld] with %lld value slots", name.c_str(), dtype_name(masked),
               static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(kept));
  Tensor t;
  t.name = std::move(name);
  t.dtype = masked;
  t.shape = {rows, cols};
  checked_numel(t.shape, t.name);
  t.nbytes = static_cast<size_t>(rows * rb);
  const size_t sz = (t.nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, sz ? sz : 64);
  if (!p) RWKVL_FAIL(kOutOfMemory, "cannot allocate %zu bytes for %s", t.nbytes, t.name.c_str());
  std::memset(p, 0, sz ? sz : 64);
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data = p;
  return t;
}

int64_t Tensor::masked_kept() const {
  int64_t k = -1;
  if (!dtype_is_masked(dtype) || shape.size() != 2 || !masked_kept_from_bytes(dtype, shape[0], shape[1], nbytes, &k)) return -1;
  return k;
}

Tensor Tensor::from_f32(std::string name, std::vector<int64_t> shape, const float* src) {
  Tensor t = alloc(std::move(name), DType::kF32, std::move(shape));
  std::memcpy(t.mutable_f32(), src, t.nbytes);
  return t;
}

float* Tensor::mutable_f32() {
  RWKVL_CHECK(dtype == DType::kF32);
  return static_cast<float*>(mutable_data());
}

void* Tensor::mutable_data() { return const_cast<void*>(data); }

std::vector<float> Tensor::to_f32() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  // i8 needs its separate scale tensor (see matrix_to_f32); i32 / u8 have no conversion.
  const DTypeTraits* tr = dtype_valid(static_cast<uint32_t>(dtype)) ? &dtype_traits(dtype) : nullptr;
  if (tr && dtype_is_masked(dtype) && tr->scale != ScaleLayout::kRowTensor) {
    const int64_t kept = masked_kept(), rows = this->rows(), cols = this->cols();
    if (kept < 0) RWKVL_FAIL(kFormat, "%s: %zu bytes are no %s layout of %s", name.c_str(), nbytes, dtype_name(dtype), shape_str().c_str());
    const int64_t rb = masked_row_bytes(dtype, cols, kept);
    for (int64_t r = 0; r < rows; ++r)
      masked_row_to_f32(dtype, static_cast<const uint8_t*>(data) + r * rb, cols, kept, 1.0f, out.data() + r * cols);
    return out;
  }
  if (!tr || !tr->to_f32_row || tr->scale == ScaleLayout::kRowTensor)
    RWKVL_FAIL(kUnsupported, "%s: cannot convert %s to f32 here", name.c_str(), dtype_name(dtype));
  tr->to_f32_row(data, out.data(), static_cast<size_t>(n), 1.0f);
  return out;
}

}  // namespace rwkvl
