#include "runtime/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>

#include "core/error.h"

namespace rwkvl {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Token ids above this are ignored by accept() (no vocabulary is that large; bounds the count table).
constexpr int32_t kMaxTrackedToken = 1 << 26;

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

const char* Sampler::validate(const SamplerParams& p) {
  if (!std::isfinite(p.temperature)) return "temperature must be a finite number";
  if (!(p.top_p > 0.0f) || std::isinf(p.top_p)) return "top_p must be in (0, 1] (>= 1 turns it off)";
  if (!std::isfinite(p.presence_penalty)) return "presence_penalty must be a finite number";
  if (!std::isfinite(p.frequency_penalty)) return "frequency_penalty must be a finite number";
  if (!(p.penalty_decay >= 0.0f && p.penalty_decay <= 1.0f)) return "penalty_decay must be in [0, 1]";
  return "";
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
  const char* err = validate(params);
  if (*err) RWKVL_FAIL(kInvalidArgument, "sampler: %s", err);
}

void Sampler::reset() {
  rng_ = Rng(params_.seed);
  counts_.clear();
  seen_.clear();
}

float Sampler::occurrence(int32_t token) const {
  if (token < 0 || static_cast<size_t>(token) >= counts_.size()) return 0.0f;
  return counts_[static_cast<size_t>(token)];
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= kMaxTrackedToken) return;
  if (params_.penalty_decay != 1.0f) {
    for (int32_t t : seen_) counts_[static_cast<size_t>(t)] *= params_.penalty_decay;
  }
  const size_t i = static_cast<size_t>(token);
  if (i >= counts_.size()) counts_.resize(std::max(i + 1, counts_.size() * 2), -1.0f);  // -1 = never seen
  if (counts_[i] < 0.0f) {
    counts_[i] = 0.0f;
    seen_.push_back(token);
  }
  counts_[i] += 1.0f;
}

void Sampler::apply_penalties(float* logits, size_t n) const {
  if (params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f) return;
  for (int32_t t : seen_) {
    const size_t i = static_cast<size_t>(t);
    if (i < n) logits[i] -= params_.presence_penalty + counts_[i] * params_.frequency_penalty;
  }
}

namespace {

// e^x for x <= 0 (0 below -87, where float would go denormal). A few plain float operations, written
// once as a template so the scalar and the 4-lane (GCC/Clang vector extension) versions perform exactly
// the same operations and give the same bits; no libm, so every platform agrees.
template <typename F, typename I>
inline F exp_nonpositive_impl(F x_in, F lo, F zero) {
  const auto small = x_in < lo;
  const F x = small ? lo : x_in;
  const F t = x * 1.44269504088896341f;
  const F n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer (|t| < 2^22)
  const F r0 = x - n * 0.693145751953125f;       // ln 2 split in two for an accurate reduction
  const F r = r0 - n * 1.428606765330187045e-06f;
  F p = r * (1.0f / 720.0f);
  p = p + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  F scale;
  if constexpr (std::is_same_v<F, float>) {
    scale = std::bit_cast<float>(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  } else {
    scale = reinterpret_cast<F>((__builtin_convertvector(n, I) + 127) << 23);
  }
  return small ? zero : p * scale;
}

inline float exp_nonpositive(float x) { return exp_nonpositive_impl<float, int32_t>(x, -87.0f, 0.0f); }

// out[i] = exp(in[i] - max) for all i.
void exp_shifted(const float* in, float max, float* out, size_t n) {
  size_t i = 0;
#if defined(__GNUC__)
  typedef float v4f __attribute__((vector_size(16)));
  typedef int32_t v4i __attribute__((vector_size(16)));
  const v4f lo = {-87.0f, -87.0f, -87.0f, -87.0f}, zero = {0.0f, 0.0f, 0.0f, 0.0f};
  const v4f m = {max, max, max, max};
  for (; i + 4 <= n; i += 4) {
    v4f x;
    std::memcpy(&x, in + i, sizeof x);
    const v4f y = exp_nonpositive_impl<v4f, v4i>(x - m, lo, zero);
    std::memcpy(out + i, &y, sizeof y);
  }
#endif
  for (; i < n; ++i) out[i] = exp_nonpositive(in[i] - max);
}

// Sum of v[0..n) in a fixed order (four interleaved partial sums): deterministic and fast.
double sum_fixed_order(const float* v, size_t n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  for (; i < n; ++i) s0 += v[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

int32_t Sampler::sample(float* logits, size_t n) {
  if (logits == nullptr || n == 0 || n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) return -1;
  apply_penalties(logits, n);

  // NaN never wins; it is treated as -inf from here on (the caller's array is documented as modified).
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const bool greedy = params_.temperature <= 0.0f;
  const float temp = greedy ? 1.0f : params_.temperature;
  size_t best = 0;
  float max_logit = kNegInf;
  for (size_t i = 0; i < n; ++i) {
    float v = logits[i];
    if (std::isnan(v)) v = kNegInf;
    else if (temp != 1.0f) v /= temp;
    logits[i] = v;
    if (v > max_logit || i == 0) {
      max_logit = v;
      best = i;
    }
  }
  // Greedy, or a degenerate distribution (everything -inf, or some +inf) where the argmax is the only
  // sensible answer.
  if (greedy || !std::isfinite(max_logit)) return static_cast<int32_t>(best);

  // Total order: higher logit first, then lower id. Every selection below is defined by it, so the kept
  // sets do not depend on how a library partitions.
  auto before = [logits](int32_t a, int32_t b) {
    const float la = logits[a], lb = logits[b];
    return la > lb || (la == lb && a < b);
  };

  probs_.resize(n);
  const bool use_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n;
  if (use_k) {
    // Top-k: the k-th best id is unique; a token is kept iff it ranks at or before it.
    // Top-k: the k-th largest value (selected on plain floats: fast), then every token above it and, of
    // those equal to it, the lowest ids until k are kept.
    const size_t k = static_cast<size_t>(params_.top_k);
    values_.assign(logits, logits + n);
    std::nth_element(values_.begin(), values_.begin() + static_cast<std::ptrdiff_t>(k - 1), values_.end(),
                     std::greater<float>());
    const float kth = values_[k - 1];
    size_t above = 0;
    for (size_t i = 0; i < n; ++i) above += logits[i] > kth;
    size_t ties_left = k - above;
    exp_shifted(logits, max_logit, probs_.data(), n);
    for (size_t i = 0; i < n; ++i) {
      if (logits[i] > kth) continue;
      if (logits[i] == kth && ties_left > 0) {
        --ties_left;
        continue;
      }
      probs_[i] = 0.0f;
    }
  } else {
    exp_shifted(logits, max_logit, probs_.data(), n);
  }

  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * block_sums(n);
    const int32_t cut = nucleus_cut(logits, n, target);
    if (cut >= 0) {
      for (size_t i = 0; i < n; ++i) {
        const int32_t t = static_cast<int32_t>(i);
        if (probs_[i] > 0.0f && t != cut && !before(t, cut)) probs_[i] = 0.0f;
      }
    }
  }

  // Draw: walk the ids in order over whatever kept a non-zero probability, skipping whole blocks.
  const double mass = block_sums(n);
  const double u = rng_.uniform() * mass;
  double acc = 0.0;
  size_t last_positive = best;
  for (size_t b = 0; b < blocks_.size(); ++b) {
    if (acc + blocks_[b] <= u) {
      acc += blocks_[b];
      continue;
    }
    const size_t end = std::min(n, (b + 1) * kBlock);
    for (size_t i = b * kBlock; i < end; ++i) {
      if (probs_[i] <= 0.0f) continue;
      acc += probs_[i];
      last_positive = i;
      if (u < acc) return static_cast<int32_t>(i);
    }
  }
  if (probs_[last_positive] <= 0.0f) {  // rounding at the very end: the last token that is kept
    for (size_t i = n; i-- > 0;) {
      if (probs_[i] > 0.0f) return static_cast<int32_t>(i);
    }
  }
  return static_cast<int32_t>(last_positive);
}

double Sampler::block_sums(size_t n) {
  blocks_.resize((n + kBlock - 1) / kBlock);
  double total = 0.0;
  for (size_t b = 0; b < blocks_.size(); ++b) {
    blocks_[b] = sum_fixed_order(probs_.data() + b * kBlock, std::min(kBlock, n - b * kBlock));
    total += blocks_[b];
  }
  return total;
}

// The nucleus boundary: the candidate (in `before` order) at which the cumulative probability first
// reaches `target`, found by a weighted quickselect (expected O(n), no full sort). Returns -1 if rounding
// kept the total just below the target (then everything stays).
int32_t Sampler::nucleus_cut(const float* logits, size_t n, double target) {
  auto before = [logits](int32_t a, int32_t b) {
    const float la = logits[a], lb = logits[b];
    return la > lb || (la == lb && a < b);
  };
  const float* w = probs_.data();
  idx_.clear();
  for (size_t i = 0; i < n; ++i) {
    if (w[i] > 0.0f) idx_.push_back(static_cast<int32_t>(i));
  }
  size_t lo = 0, hi = idx_.size();
  double acc = 0.0;  // mass of the candidates known to rank before idx_[lo, hi)
  int budget = 64;   // partition rounds before falling back to sorting (guards against bad pivots)
  while (hi - lo > 32 && budget-- > 0) {
    // Median of three as the pivot, then move everything ranked before it to the front.
    int32_t a = idx_[lo], b = idx_[lo + (hi - lo) / 2], c = idx_[hi - 1];
    if (before(b, a)) std::swap(a, b);
    if (before(c, b)) std::swap(b, c);
    if (before(b, a)) std::swap(a, b);
    const int32_t pivot = b;
    size_t mid = lo;
    double front_mass = 0.0;
    for (size_t j = lo; j < hi; ++j) {
      if (before(idx_[j], pivot)) {
        front_mass += w[idx_[j]];
        std::swap(idx_[mid++], idx_[j]);
      }
    }
    if (acc + front_mass >= target) {
      hi = mid;  // the boundary is inside the front part (never empty here, since acc < target)
      continue;
    }
    acc += front_mass;
    if (acc + w[pivot] >= target) return pivot;
    acc += w[pivot];
    // Drop the pivot: put it first in the back part and continue after it.
    for (size_t j = mid; j < hi; ++j) {
      if (idx_[j] == pivot) {
        std::swap(idx_[mid], idx_[j]);
        break;
      }
    }
    lo = mid + 1;
  }
  std::sort(idx_.begin() + static_cast<std::ptrdiff_t>(lo), idx_.begin() + static_cast<std::ptrdiff_t>(hi), before);
  for (size_t j = lo; j < hi; ++j) {
    acc += w[idx_[j]];
    if (acc >= target) return idx_[j];
  }
  return -1;
}

}  // namespace rwkvl
