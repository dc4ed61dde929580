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

int32_t argmax(const float* z, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (z[i] > z[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace rwkvl::logprob
