// Comparing float outputs in tests, and the tolerances the tests check against, each named once here
// with the figure it was measured at (Release, x86-64 with AVX2/AVX-512, unless said otherwise). A
// tolerance is set a few times above its measurement: loose enough for float reordering across ISAs,
// threads and chunk sizes, tight enough that a real error (a wrong epsilon, a dropped term, a bad
// rounding) fails. Change a figure here only with a new measurement in the comment.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace rwkvl::test {

// ------------------------------------------------------------------------------ tolerances (max |diff|)

// Tiny rwkv.cpp FP32 models (../shared/reference/tiny-rwkv) against their expected logits (rwkv.cpp, full
// precision), `"in` from a fresh state. Measured: v4 9.5e-7, v5.1 1.9e-6, v5.2 2.2e-6, v6 1.9e-6,
// v7 4.8e-7; through the CLI's `logits` (its default chunk and threads, tests/cli/logits_tiny.sh) at most
// 4.0e-6 (v6).
inline constexpr float kTinyFp32LogitTol = 1e-5f;
// The FP16 files against the same expected logits (the weights' rounding): measured v4 1.6e-3,
// v5.1 4.5e-3, v5.2 2.5e-3, v6 2.9e-6, v7 4.8e-7.
inline constexpr float kTinyFp16LogitTol = 0.01f;
// The Q5_1 files: measured v4 0.096, v5.1 0.28, v5.2 0.37, v6 (3M) 0.076, v7 4.2e-3. rwkv.cpp accepts
// "a few tenths" of summed difference for FP16 and up to ~160 for 5-bit v5 files (shared/README.md).
inline constexpr float kTinyQ5LogitTol = 0.5f;
// An FP32 file rounded to FP16 at load against the FP16 file of the same model: the same weights bit for
// bit, except the v6/v7 LoRAs, which loading keeps in f32 (the FP16 file holds them rounded). Measured:
// v5.2 0 (no LoRAs); v7 0 on x86-64, 4.8e-7 on aarch64 (qemu).
inline constexpr float kFp16AtLoadLogitTol = 1e-5f;

// The trained RWKV-5.2 reference model (.pth, bf16 weights) against its float64 PyTorch expected logits
// (65,536 of them, "The capital of France is"): measured 1.43e-6 for chunks of 1 and of 5 (rwkv.cpp with
// the official GroupNorm eps: 1.4e-6, shared/README.md).
inline constexpr float kReferenceModelLogitTol = 1e-5f;

// Sequence mode (chunks of tokens through matrix x matrix products) against RNN mode on the tiny models
// (a different summation order). Logits after 3 bytes (chunks of 3, of 2 + 1) and 44 bytes (chunks of
// 16), every version and format: measured <= 3.8e-6 (v6). The state after 44 bytes holds larger values
// (WKV sums): measured <= 1.1e-5 (v6), 6.7e-6 (v5.1).
inline constexpr float kSeqVsRnnLogitTol = 2e-5f;
inline constexpr float kSeqVsRnnStateTol = 1e-4f;

// ------------------------------------------------------------------------------ comparisons

// Largest |a[i] - b[i]|. A NaN anywhere, or different sizes, give +infinity, so that no tolerance passes
// (std::max(d, NaN) would silently keep d).
inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<float>::infinity();
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float e = std::fabs(a[i] - b[i]);
    if (!(e <= d)) d = std::isnan(e) ? std::numeric_limits<float>::infinity() : e;
  }
  return d;
}

// Root mean square of a - b (for reports next to the maximum); infinity as above.
inline float rms_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return std::numeric_limits<float>::infinity();
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = static_cast<double>(a[i]) - b[i];
    s += e * e;
  }
  const double r = std::sqrt(s / static_cast<double>(a.size()));
  return std::isnan(r) ? std::numeric_limits<float>::infinity() : static_cast<float>(r);
}

}  // namespace rwkvl::test
