#include "runtime/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/error.h"

namespace rwkvl {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

namespace {

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

  probs_.resize(n);
  exp_shifted(logits, max_logit, probs_.data(), n);
  const bool use_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n;
  if (use_k || params_.top_p < 1.0f) restrict_candidates(logits, n, max_logit);

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

// Top-k and top-p without sorting the vocabulary. Tokens go into kBuckets buckets by (max - logit), which
// is monotone in probability, so whole buckets are kept or dropped by counting (top-k) or summing (top-p)
// from the top; only the one bucket where the boundary falls is ordered exactly, by (logit descending, id
// ascending). Zeroes probs_ for the tokens that are not kept.
void Sampler::restrict_candidates(const float* logits, size_t n, float max_logit) {
  auto before = [logits](int32_t a, int32_t b) {
    const float la = logits[a], lb = logits[b];
    return la > lb || (la == lb && a < b);
  };
  constexpr float kRange = 88.0f;  // beyond this below the max, probabilities underflow to 0 anyway
  constexpr float kScale = static_cast<float>(kBuckets) / kRange;
  bucket_.resize(n);
  bucket_count_.assign(kBuckets, 0);
  bucket_mass_.assign(kBuckets, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const float d = max_logit - logits[i];
    const uint32_t b = d < kRange ? std::min(static_cast<uint32_t>(d * kScale), kBuckets - 1) : kBuckets - 1;
    bucket_[i] = static_cast<uint16_t>(b);
    bucket_count_[b] += 1;
    bucket_mass_[b] += probs_[i];
  }

  // Ids of bucket b that are still kept, ordered best first.
  auto gather = [&](uint32_t b) {
    idx_.clear();
    for (size_t i = 0; i < n; ++i) {
      if (bucket_[i] == b && probs_[i] > 0.0f) idx_.push_back(static_cast<int32_t>(i));
    }
    std::sort(idx_.begin(), idx_.end(), before);
  };
  uint32_t last = kBuckets - 1;  // buckets after `last` are dropped entirely
  auto drop_after = [&](uint32_t b, size_t keep_in_b) {
    for (size_t j = keep_in_b; j < idx_.size(); ++j) probs_[static_cast<size_t>(idx_[j])] = 0.0f;
    idx_.resize(std::min(idx_.size(), keep_in_b));
    for (size_t i = 0; i < n; ++i) {
      if (bucket_[i] > b) probs_[i] = 0.0f;
    }
    last = b;
  };

  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    const size_t k = static_cast<size_t>(params_.top_k);
    size_t cum = 0;
    uint32_t b = 0;
    while (b < kBuckets - 1 && cum + bucket_count_[b] < k) cum += bucket_count_[b++];
    // Tokens with probability 0 may count towards k but are never drawn: gather() leaves them out.
    gather(b);
    drop_after(b, k - cum);
    double m = 0.0;
    for (int32_t t : idx_) m += probs_[static_cast<size_t>(t)];
    bucket_mass_[b] = m;
  }

  if (params_.top_p < 1.0f) {
    double total = 0.0;
    for (uint32_t b = 0; b <= last; ++b) total += bucket_mass_[b];
    const double target = static_cast<double>(params_.top_p) * total;
    double cum = 0.0;
    uint32_t b = 0;
    while (b < last && cum + bucket_mass_[b] < target) cum += bucket_mass_[b++];
    gather(b);
    size_t keep = idx_.size();
    for (size_t j = 0; j < idx_.size(); ++j) {
      cum += probs_[static_cast<size_t>(idx_[j])];
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
    drop_after(b, keep);
  }
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

}  // namespace rwkvl
