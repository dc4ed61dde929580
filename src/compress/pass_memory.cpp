#include "compress/pass_memory.h"

#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim
#endif

#include "core/error.h"
#include "kernels/kernels.h"
#include "model/model.h"

namespace rwkvl::compress {

namespace {

constexpr size_t kBlockFloats = size_t{4} << 20;  // 16 MiB of float32 rows at a time

// Rows [r0, r0 + n) of a matrix tensor (and of its scale) as a tensor view.
Tensor row_view(const Tensor& t, int64_t r0, int64_t n) {
  const size_t rb = static_cast<size_t>(kern::row_bytes(t.dtype, t.cols()));
  Tensor v = t;
  v.shape = {n, t.cols()};
  v.data = static_cast<const uint8_t*>(t.data) + static_cast<size_t>(r0) * rb;
  v.nbytes = static_cast<size_t>(n) * rb;
  return v;
}

Tensor scale_view(const Tensor& s, int64_t r0, int64_t n) {
  const size_t es = dtype_info(s.dtype).block_bytes;
  Tensor v = s;
  v.shape = {n};
  v.data = static_cast<const uint8_t*>(s.data) + static_cast<size_t>(r0) * es;
  v.nbytes = static_cast<size_t>(n) * es;
  return v;
}

}  // namespace

Tensor PassMemory::keep(const Tensor& t) const {
  if (!spool || t.nbytes < kSpoolMin) return t;
  return spool->put(t);
}

void PassMemory::release() const {
  if (input) input->release_pages();
  if (spool) spool->release();
#if defined(__GLIBC__)
  // Hands freed heap back to the system: buffers freed by worker threads stay in their arenas otherwise (measured
  // on the 0.1B shape: 639 MiB peak without, after the side-by-side SVDs of stage 1).
  malloc_trim(0);
#endif
}

std::pair<Tensor, Tensor> PassMemory::convert(const std::string& name, const Tensor& src, const Tensor* src_scale,
                                              DType want, bool f16_scales) const {
  const int64_t rows = src.rows(), cols = src.cols();
  const size_t out_rb = static_cast<size_t>(kern::row_bytes(want, cols));
  if (!spool || static_cast<size_t>(rows) * out_rb < kSpoolMin || rows < 2 || cols % dtype_traits(want).block_elems != 0) {
    const std::vector<float> v = matrix_to_f32(src, src_scale);
    auto [q, s] = quantize_matrix(name, v.data(), rows, cols, want, f16_scales);
    return {keep(q), s};
  }
  const int64_t block = std::max<int64_t>(1, static_cast<int64_t>(kBlockFloats / static_cast<size_t>(std::max<int64_t>(cols, 1))));
  std::vector<uint8_t> scales;
  DType scale_dtype = DType::kF32;
  spool->begin();
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    const Tensor part = row_view(src, r0, n);
    Tensor part_scale;
    if (src_scale) part_scale = scale_view(*src_scale, r0, n);
    const std::vector<float> v = matrix_to_f32(part, src_scale ? &part_scale : nullptr);
    auto [q, s] = quantize_matrix(name, v.data(), n, cols, want, f16_scales);
    spool->append(q.data, q.nbytes);
    if (s.data) {
      scale_dtype = s.dtype;
      scales.insert(scales.end(), static_cast<const uint8_t*>(s.data), static_cast<const uint8_t*>(s.data) + s.nbytes);
    }
    if (input) input->release_range(part.data, part.nbytes);
  }
  Tensor q = spool->end(name, want, {rows, cols});
  Tensor s;
  if (!scales.empty()) {
    s = Tensor::alloc(name + ".scale", scale_dtype, {rows});
    RWKVL_CHECK(s.nbytes == scales.size());
    std::memcpy(s.mutable_data(), scales.data(), scales.size());
    s = keep(s);
  }
  return {q, s};
}

}  // namespace rwkvl::compress
