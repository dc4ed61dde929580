#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/kernels.h"

namespace rwkvl::kern {

void get_row(const MatRef& w, int64_t r, float* out) {
  RWKVL_CHECK(r >= 0 && r < w.rows);
  const size_t n = static_cast<size_t>(w.cols);
  const size_t off = static_cast<size_t>(r) * n;
  switch (w.dtype) {
    case DType::kF32: std::memcpy(out, static_cast<const float*>(w.data) + off, n * sizeof(float)); break;
    case DType::kF16: f16_to_f32_row(static_cast<const uint16_t*>(w.data) + off, out, n); break;
    case DType::kBF16: bf16_to_f32_row(static_cast<const uint16_t*>(w.data) + off, out, n); break;
    case DType::kI8: {
      const int8_t* q = static_cast<const int8_t*>(w.data) + off;
      const float s = w.scale_at(r);
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * s;
      break;
    }
    case DType::kQ4:
      RWKVL_CHECK(n % 32 == 0);
      q4_to_f32_row(static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r) * (n / 32) * 20, out, n);
      break;
    default: RWKVL_CHECK(false && "unsupported matrix dtype");
  }
}

}  // namespace rwkvl::kern
