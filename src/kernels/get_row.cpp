#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/kernels.h"

namespace rwkvl::kern {

void get_row(const MatRef& w, int64_t r, float* out) {
  RWKVL_CHECK(r >= 0 && r < w.rows);
  RWKVL_CHECK(dtype_is_matrix(w.dtype) && "unsupported matrix dtype");
  const DTypeTraits& tr = dtype_traits(w.dtype);
  RWKVL_CHECK(w.cols % tr.block_elems == 0);
  if (dtype_is_masked(w.dtype)) {
    const int64_t rb = masked_row_bytes(w.dtype, w.cols, w.kept);
    RWKVL_CHECK(rb >= 0);
    masked_row_to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + r * rb, w.cols, w.kept,
                      tr.scale == ScaleLayout::kRowTensor ? w.scale_at(r) : 1.0f, out);
    return;
  }
  const int64_t stride = dtype_row_bytes(w.dtype, w.cols);
  const float scale = tr.scale == ScaleLayout::kRowTensor ? w.scale_at(r) : 1.0f;
  tr.to_f32_row(static_cast<const uint8_t*>(w.data) + r * stride, out, static_cast<size_t>(w.cols), scale);
}

}  // namespace rwkvl::kern
