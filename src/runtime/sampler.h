// Token sampler: repetition penalties, temperature, top-k, top-p (nucleus) and a seeded PRNG.
//
// Order of operations in sample():
//   1. penalties: logit[t] -= presence + count[t] * frequency for every token t seen so far
//      (count[t] decays by penalty_decay on every accept(), as ChatRWKV's alpha_presence / alpha_frequency);
//   2. temperature <= 0: return argmax (ties -> lowest id); top-k / top-p do not matter then;
//   3. logit /= temperature;
//   4. top-k: keep the k best tokens; top-p: of those, keep the smallest set of most probable tokens
//      whose cumulative probability (renormalised over what top-k kept) reaches top_p (at least one);
//   5. draw one token from the softmax over the kept tokens with a xoshiro256** generator, walking the
//      ids in increasing order.
// "Best" is the total order (logit descending, id ascending). Neither top-k nor top-p sorts the
// vocabulary: a histogram over (max - logit) finds the boundary and only the bucket that holds it is
// sorted. exp() and every sum use fixed operation orders (no libm, no library-specific partitioning), so a
// seed gives the same tokens on every platform and standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rwkvl {

struct SamplerParams {
  float temperature = 1.0f;       // <= 0: greedy
  int top_k = 0;                  // <= 0: off
  float top_p = 1.0f;             // in (0, 1]; >= 1: off
  float presence_penalty = 0.0f;  // subtracted once from every token seen so far
  float frequency_penalty = 0.0f; // subtracted per (decayed) occurrence
  float penalty_decay = 1.0f;     // in [0, 1]; counts are multiplied by it on each accept()
  uint64_t seed = 0;
};

// One step of splitmix64: advances x and returns the next 64-bit value (seeding, cheap streams).
uint64_t splitmix64(uint64_t& x);

// xoshiro256** seeded through splitmix64: small, fast, and the same sequence everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1) with 53 random bits

 private:
  uint64_t s_[4];
};

class Sampler {
 public:
  // Throws rwkvl::Error(kInvalidArgument) on out-of-range parameters (see validate()).
  explicit Sampler(const SamplerParams& params);

  // Returns "" if the parameters are usable, else a message naming the bad field.
  static const char* validate(const SamplerParams& params);

  // Picks a token from n logits (modified in place: penalties, then temperature). n must be in [1, 2^31).
  int32_t sample(float* logits, size_t n);
  // Records a token for the penalties: decays every count, then count[token] += 1. Ids < 0 are ignored.
  void accept(int32_t token);
  // Applies only step 1 (used by sample(); exposed for tests and callers that sample elsewhere).
  void apply_penalties(float* logits, size_t n) const;
  // Forgets the penalty history and restarts the PRNG from the seed.
  void reset();

  const SamplerParams& params() const { return params_; }
  float occurrence(int32_t token) const;

 private:
  void restrict_candidates(const float* logits, size_t n, float max_logit);
  double block_sums(size_t n);  // fills blocks_ from probs_, returns the total

  static constexpr size_t kBlock = 256;
  static constexpr uint32_t kBuckets = 4096;

  SamplerParams params_;
  Rng rng_;
  std::vector<float> counts_;  // indexed by token id, grown on demand
  std::vector<int32_t> seen_;  // ids with counts_ entries (in first-seen order)
  std::vector<int32_t> idx_;   // scratch: candidate ids
  std::vector<float> probs_;   // scratch: unnormalised probabilities by id (0 = not kept)
  std::vector<uint16_t> bucket_;        // scratch: bucket of each id (see restrict_candidates)
  std::vector<uint32_t> bucket_count_;  // scratch: ids per bucket
  std::vector<double> bucket_mass_;     // scratch: probability mass per bucket
  std::vector<double> blocks_; // scratch: sums of probs_ over blocks of kBlock ids
};

}  // namespace rwkvl
