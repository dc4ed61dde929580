// Log-probabilities of logit vectors, in one place: log-sum-exp, log-softmax, softmax, negative log-likelihood,
// KL divergence and argmax. Pure math on float logits, numerically stable (shifted by the maximum), with the
// exponentials summed in double. Every evaluation figure (perplexity, bits per byte, LAMBADA, head agreement,
// cluster-head distillation) is computed with these, so the figures agree between the places that report them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace rwkvl::logprob {

// log(sum_i exp(z[i])): the maximum is taken in float, exp(z[i] - max) summed in double. -inf for n == 0.
double log_sum_exp(const float* z, size_t n);

// -log softmax(z)[target] in nats (target in [0, n); unchecked).
double nll(const float* z, size_t n, int32_t target);

// out[i] = z[i] - log_sum_exp(z) (rounded to float). out may be z.
void log_softmax(const float* z, size_t n, float* out);

// out[i] = exp(z[i] - log_sum_exp(z)) (rounded to float). out may be z.
void softmax(const float* z, size_t n, float* out);

// One term of KL(p || q) = sum_i p_i (log p_i - log q_i): p (log p - log q), 0 where p <= 0.
inline double kl_term(double p, double log_q) { return p > 0 ? p * (std::log(p) - log_q) : 0.0; }

// KL(softmax(p_logits) || softmax(q_logits)) in nats, >= 0 up to rounding (not clamped).
double kl_divergence(const float* p_logits, const float* q_logits, size_t n);

// Index of the largest value; ties go to the lowest index (as the greedy sampler). 0 for n == 0. NaNs are never
// greater than anything: they are skipped, and a NaN at index 0 gives 0.
int32_t argmax(const float* z, size_t n);

}  // namespace rwkvl::logprob
