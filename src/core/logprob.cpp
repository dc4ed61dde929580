#include "core/logprob.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rwkvl::logprob {

double log_sum_exp(const float* z, size_t n) {
  if (n == 0) return -std::numeric_limits<double>::infinity();
  float mx = z[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, z[i]);
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(z[i]) - mx);
  return std::log(s) + mx;
}

double nll(const float* z, size_t n, int32_t target) {
  return log_sum_exp(z, n) - static_cast<double>(z[static_cast<size_t>(target)]);
}

void log_softmax(const float* z, size_t n, float* out) {
  const double l = log_sum_exp(z, n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(z[i]) - l);
}

void softmax(const float* z, size_t n, float* out) {
  const double l = log_sum_exp(z, n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(std::exp(static_cast<double>(z[i]) - l));
}

double kl_divergence(const float* p_logits, const float* q_logits, size_t n) {
  const double lp = log_sum_exp(p_logits, n), lq = log_sum_exp(q_logits, n);
  double kl = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double a = static_cast<double>(p_logits[i]) - lp, b = static_cast<double>(q_logits[i]) - lq;
    kl += std::exp(a) * (a - b);
  }
  return kl;
}

// The maximum by 16 independent lanes (a loop without a dependency from one element to the next, which the compiler
// vectorises; the running-best form compares one element at a time), then its first occurrence. The result is the
// running-best loop's, NaNs included: a NaN is never greater, so NaNs after index 0 are skipped (the lanes start at
// -inf and keep only values greater than theirs), and a NaN at index 0 is never beaten (answered first).
int32_t argmax(const float* z, size_t n) {
  if (n == 0 || std::isnan(z[0])) return 0;
  constexpr size_t L = 16;
  float m[L];
  std::fill(m, m + L, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + L <= n; i += L)
    for (size_t l = 0; l < L; ++l) m[l] = z[i + l] > m[l] ? z[i + l] : m[l];
  float best = *std::max_element(m, m + L);
  for (; i < n; ++i) best = z[i] > best ? z[i] : best;
  // z[0] is not NaN, so best >= z[0] and some element equals it (-0 == +0: the first zero, as the running loop).
  for (i = 0; i < n; ++i)
    if (z[i] == best) break;
  return static_cast<int32_t>(i);
}

}  // namespace rwkvl::logprob
