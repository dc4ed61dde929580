// Sampler: greedy, top-k, top-p, penalties, determinism and argument checks (through the C API, plus
// the C++ class where a test needs its internals).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "rwkv_lite.h"
#include "runtime/sampler.h"

namespace {

struct SamplerDeleter {
  void operator()(rwkvl_sampler* s) const { rwkvl_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<rwkvl_sampler, SamplerDeleter>;

SamplerPtr make_sampler(const rwkvl_sampler_params& p) {
  rwkvl_sampler* s = nullptr;
  EXPECT_EQ(rwkvl_sampler_new(&p, &s), RWKVL_OK) << rwkvl_last_error();
  return SamplerPtr(s);
}

// Deterministic pseudo-random logits in [-scale, scale] (own generator: independent of the sampler's).
std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 5.0f) {
  rwkvl::Rng rng(seed ^ 0xabcdef);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>((rng.uniform() * 2.0 - 1.0) * scale);
  return v;
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

int32_t sample_copy(rwkvl_sampler* s, std::vector<float> logits) {
  return rwkvl_sampler_sample(s, logits.data(), logits.size());
}

TEST(Sampler, DefaultParams) {
  const rwkvl_sampler_params p = rwkvl_sampler_default_params();
  EXPECT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.top_k, 0);
  EXPECT_EQ(p.top_p, 1.0f);
  EXPECT_EQ(p.presence_penalty, 0.0f);
  EXPECT_EQ(p.frequency_penalty, 0.0f);
  EXPECT_EQ(p.penalty_decay, 1.0f);
  EXPECT_EQ(p.seed, 0u);
}

TEST(Sampler, GreedyPicksArgmax) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  for (float temp : {0.0f, -1.0f}) {
    p.temperature = temp;
    auto s = make_sampler(p);
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const auto logits = random_logits(1000 + seed * 37, seed);
      EXPECT_EQ(sample_copy(s.get(), logits), argmax(logits));
    }
  }
}

TEST(Sampler, GreedyTiesGoToLowestId) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.temperature = 0.0f;
  auto s = make_sampler(p);
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 3.0f};
  EXPECT_EQ(sample_copy(s.get(), logits), 1);
  // NaN never wins.
  logits = {std::numeric_limits<float>::quiet_NaN(), -1.0f, -2.0f};
  EXPECT_EQ(sample_copy(s.get(), logits), 1);
}

TEST(Sampler, TopK1IsGreedyForAnyTemperature) {
  for (float temp : {0.05f, 0.7f, 1.0f, 3.0f, 100.0f}) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.temperature = temp;
    p.top_k = 1;
    p.seed = 7;
    auto s = make_sampler(p);
    for (uint64_t seed = 0; seed < 50; ++seed) {
      const auto logits = random_logits(513, seed);
      ASSERT_EQ(sample_copy(s.get(), logits), argmax(logits)) << "temp " << temp;
    }
  }
}

TEST(Sampler, TinyTopPIsGreedy) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.temperature = 2.0f;
  p.top_p = 1e-6f;
  auto s = make_sampler(p);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const auto logits = random_logits(65536, seed, 3.0f);
    ASSERT_EQ(sample_copy(s.get(), logits), argmax(logits));
  }
}

// Samples `draws` times and returns the empirical frequency of every id.
std::vector<double> frequencies(rwkvl_sampler* s, const std::vector<float>& logits, int draws) {
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    const int32_t t = sample_copy(s, logits);
    EXPECT_GE(t, 0);
    if (t >= 0) f[static_cast<size_t>(t)] += 1.0;
  }
  for (auto& x : f) x /= draws;
  return f;
}

// Each frequency within 5 standard deviations of the expected probability; impossible ids never drawn.
void expect_frequencies(const std::vector<double>& got, const std::vector<double>& want, int draws) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == 0.0) {
      EXPECT_EQ(got[i], 0.0) << "id " << i << " is outside the kept set but was drawn";
    } else {
      const double sd = std::sqrt(want[i] * (1.0 - want[i]) / draws);
      EXPECT_NEAR(got[i], want[i], 5.0 * sd + 1e-9) << "id " << i;
    }
  }
}

// A hand-made distribution over 10 ids, most probable ones deliberately not in id order.
//   id:    0     1     2     3     4     5     6     7     8     9
//   p:   0.06  0.25  0.01  0.40  0.02  0.15  0.04  0.03  0.02  0.02
const std::vector<double> kProbs = {0.06, 0.25, 0.01, 0.40, 0.02, 0.15, 0.04, 0.03, 0.02, 0.02};

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l(p.size());
  for (size_t i = 0; i < p.size(); ++i) l[i] = static_cast<float>(std::log(p[i]) + 1.5);  // shift: softmax-invariant
  return l;
}

std::vector<double> renormalised(const std::vector<int>& keep) {
  std::vector<double> want(kProbs.size(), 0.0);
  double total = 0.0;
  for (int i : keep) total += kProbs[static_cast<size_t>(i)];
  for (int i : keep) want[static_cast<size_t>(i)] = kProbs[static_cast<size_t>(i)] / total;
  return want;
}

TEST(Sampler, TopPKeepsExactlyTheNucleus) {
  constexpr int kDraws = 20000;
  // Sorted: 0.40 (3), 0.25 (1), 0.15 (5), 0.06 (0), 0.04 (6), ... cumulative 0.40 0.65 0.80 0.86 0.90.
  struct Case {
    float top_p;
    std::vector<int> keep;
  };
  const std::vector<Case> cases = {
      {0.30f, {3}}, {0.50f, {3, 1}}, {0.75f, {3, 1, 5}}, {0.83f, {3, 1, 5, 0}}, {1.0f, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}};
  for (const auto& c : cases) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.top_p = c.top_p;
    p.seed = 12345;
    auto s = make_sampler(p);
    SCOPED_TRACE(testing::Message() << "top_p " << c.top_p);
    expect_frequencies(frequencies(s.get(), log_probs(kProbs), kDraws), renormalised(c.keep), kDraws);
  }
}

// On large random distributions, every draw lies inside the nucleus computed by a full sort, and the
// nucleus' least probable member is reachable (a boundary that is off by one would miss or add it).
TEST(Sampler, TopPMatchesFullSortReference) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const size_t n = 3000 * seed;
    const auto logits = random_logits(n, seed, 4.0f);
    const float top_p = 0.2f * static_cast<float>(seed);
    std::vector<int32_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<int32_t>(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    std::vector<double> p(n);
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += p[i] = std::exp(static_cast<double>(logits[i]) - logits[order[0]]);
    std::vector<char> in_nucleus(n, 0);
    double cum = 0.0;
    size_t kept = 0;
    for (int32_t t : order) {
      in_nucleus[static_cast<size_t>(t)] = 1;
      ++kept;
      cum += p[static_cast<size_t>(t)];
      if (cum >= top_p * total) break;
    }
    rwkvl_sampler_params sp = rwkvl_sampler_default_params();
    sp.top_p = top_p;
    sp.seed = seed;
    auto s = make_sampler(sp);
    size_t outside = 0;
    for (int i = 0; i < 2000; ++i) {
      const int32_t t = sample_copy(s.get(), logits);
      ASSERT_GE(t, 0);
      if (!in_nucleus[static_cast<size_t>(t)]) ++outside;
    }
    EXPECT_EQ(outside, 0u) << "seed " << seed << ", nucleus of " << kept << " tokens";
  }
}

TEST(Sampler, TopKKeepsTheKBest) {
  constexpr int kDraws = 20000;
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.top_k = 3;
  p.seed = 99;
  auto s = make_sampler(p);
  expect_frequencies(frequencies(s.get(), log_probs(kProbs), kDraws), renormalised({3, 1, 5}), kDraws);
}

TEST(Sampler, TopKThenTopP) {
  constexpr int kDraws = 20000;
  // top-k 4 keeps {3,1,5,0} (mass 0.86); top-p 0.7 of that: 0.40/0.86=0.465, +0.25/0.86 -> 0.756 >= 0.7.
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.top_k = 4;
  p.top_p = 0.7f;
  p.seed = 5;
  auto s = make_sampler(p);
  expect_frequencies(frequencies(s.get(), log_probs(kProbs), kDraws), renormalised({3, 1}), kDraws);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  constexpr int kDraws = 20000;
  // With temperature T the distribution is p^(1/T), renormalised.
  for (float temp : {0.5f, 2.0f}) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.temperature = temp;
    p.seed = 77;
    auto s = make_sampler(p);
    std::vector<double> want(kProbs.size());
    double total = 0.0;
    for (size_t i = 0; i < kProbs.size(); ++i) total += want[i] = std::pow(kProbs[i], 1.0 / temp);
    for (auto& w : want) w /= total;
    SCOPED_TRACE(testing::Message() << "temperature " << temp);
    expect_frequencies(frequencies(s.get(), log_probs(kProbs), kDraws), want, kDraws);
  }
}

TEST(Sampler, SeedDeterminism) {
  auto run = [](uint64_t seed, float top_p, int top_k) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.seed = seed;
    p.top_p = top_p;
    p.top_k = top_k;
    p.presence_penalty = 0.3f;
    p.frequency_penalty = 0.2f;
    p.penalty_decay = 0.99f;
    auto s = make_sampler(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 300; ++i) {
      auto logits = random_logits(4096, static_cast<uint64_t>(i), 2.0f);
      const int32_t t = rwkvl_sampler_sample(s.get(), logits.data(), logits.size());
      rwkvl_sampler_accept(s.get(), t);
      out.push_back(t);
    }
    return out;
  };
  for (float top_p : {1.0f, 0.9f}) {
    for (int top_k : {0, 40}) {
      const auto a = run(42, top_p, top_k), b = run(42, top_p, top_k), c = run(43, top_p, top_k);
      EXPECT_EQ(a, b);
      EXPECT_NE(a, c);
    }
  }
}

TEST(Sampler, ResetRestartsTheSequence) {
  rwkvl::SamplerParams p;
  p.seed = 3;
  p.presence_penalty = 1.0f;
  rwkvl::Sampler s(p);
  std::vector<int32_t> first, second;
  for (int i = 0; i < 50; ++i) {
    auto logits = random_logits(100, static_cast<uint64_t>(i));
    first.push_back(s.sample(logits.data(), logits.size()));
    s.accept(first.back());
  }
  s.reset();
  for (int i = 0; i < 50; ++i) {
    auto logits = random_logits(100, static_cast<uint64_t>(i));
    second.push_back(s.sample(logits.data(), logits.size()));
    s.accept(second.back());
  }
  EXPECT_EQ(first, second);
}

TEST(Sampler, PenaltiesChangeLogitsByHandComputedAmounts) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.presence_penalty = 0.2f;
  p.frequency_penalty = 0.1f;
  p.penalty_decay = 0.5f;
  auto s = make_sampler(p);
  // accept 3: {3: 1}; accept 3: decay -> 0.5, +1 -> {3: 1.5}; accept 5: decay -> {3: 0.75}, {5: 1}.
  rwkvl_sampler_accept(s.get(), 3);
  rwkvl_sampler_accept(s.get(), 3);
  rwkvl_sampler_accept(s.get(), 5);
  rwkvl_sampler_accept(s.get(), 77);  // beyond this vocabulary: ignored when sampling
  rwkvl_sampler_accept(s.get(), -4);  // negative: ignored
  const std::vector<float> orig = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f};
  // decay applied once more by the accept(77) (and not by the ignored -4): 3 -> 0.375, 5 -> 0.5.
  std::vector<float> want = orig;
  want[3] -= 0.2f + 0.375f * 0.1f;
  want[5] -= 0.2f + 0.5f * 0.1f;
  std::vector<float> logits = orig;
  ASSERT_GE(rwkvl_sampler_sample(s.get(), logits.data(), logits.size()), 0);
  for (size_t i = 0; i < orig.size(); ++i) EXPECT_NEAR(logits[i], want[i], 1e-6f) << "id " << i;
}

TEST(Sampler, PenaltiesThenTemperature) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.presence_penalty = 1.0f;
  p.frequency_penalty = 0.5f;
  p.temperature = 2.0f;
  auto s = make_sampler(p);
  rwkvl_sampler_accept(s.get(), 1);
  rwkvl_sampler_accept(s.get(), 1);  // no decay: count 2
  std::vector<float> logits = {4.0f, 4.0f, 4.0f};
  ASSERT_GE(rwkvl_sampler_sample(s.get(), logits.data(), logits.size()), 0);
  EXPECT_NEAR(logits[0], 2.0f, 1e-6f);
  EXPECT_NEAR(logits[1], (4.0f - 1.0f - 2.0f * 0.5f) / 2.0f, 1e-6f);
  EXPECT_NEAR(logits[2], 2.0f, 1e-6f);
}

TEST(Sampler, PresencePenaltyAvoidsRepeatsUnderGreedy) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.temperature = 0.0f;
  p.presence_penalty = 10.0f;
  auto s = make_sampler(p);
  const std::vector<float> logits = {0.0f, 5.0f, 4.0f, 3.0f};
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    got.push_back(sample_copy(s.get(), logits));
    rwkvl_sampler_accept(s.get(), got.back());
  }
  EXPECT_EQ(got, (std::vector<int32_t>{1, 2, 3, 0}));
}

TEST(Sampler, BadArguments) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  auto s = make_sampler(p);
  std::vector<float> logits = {1.0f, 2.0f};
  EXPECT_EQ(rwkvl_sampler_sample(nullptr, logits.data(), logits.size()), -1);
  EXPECT_EQ(rwkvl_sampler_sample(s.get(), nullptr, 2), -1);
  EXPECT_EQ(rwkvl_sampler_sample(s.get(), logits.data(), 0), -1);
  EXPECT_STRNE(rwkvl_last_error(), "");
  rwkvl_sampler_accept(nullptr, 3);  // no-op, no crash
  rwkvl_sampler_free(nullptr);

  rwkvl_sampler* out = reinterpret_cast<rwkvl_sampler*>(0x1);
  EXPECT_EQ(rwkvl_sampler_new(&p, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  auto bad = [&](auto mutate) {
    rwkvl_sampler_params q = rwkvl_sampler_default_params();
    mutate(q);
    out = reinterpret_cast<rwkvl_sampler*>(0x1);
    const rwkvl_status st = rwkvl_sampler_new(&q, &out);
    if (st != RWKVL_OK) {
      EXPECT_EQ(out, nullptr);
    }
    return st;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(bad([](auto& q) { q.top_p = 0.0f; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([](auto& q) { q.top_p = -0.5f; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([&](auto& q) { q.top_p = nan; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([&](auto& q) { q.temperature = nan; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([](auto& q) { q.penalty_decay = 1.5f; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([](auto& q) { q.penalty_decay = -0.1f; }), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bad([](auto& q) { q.presence_penalty = std::numeric_limits<float>::infinity(); }),
            RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("presence"), std::string::npos) << rwkvl_last_error();
  // top_p above 1 simply means "off"; NULL params mean the defaults.
  EXPECT_EQ(bad([](auto& q) { q.top_p = 1.5f; }), RWKVL_OK);
  rwkvl_sampler_free(out);
  out = nullptr;
  EXPECT_EQ(rwkvl_sampler_new(nullptr, &out), RWKVL_OK);
  rwkvl_sampler_free(out);
}

// top-k 1 and a tiny top-p are greedy whatever the temperature: 600 random logit vectors of random
// sizes and spreads, each checked against a plain argmax (ties cannot matter: the values are random).
TEST(Sampler, TopK1AndTinyTopPEqualArgmaxOnManyVectors) {
  rwkvl::Rng shape(2024);
  for (float temp : {0.3f, 1.0f, 5.0f}) {
    for (int mode = 0; mode < 2; ++mode) {
      rwkvl_sampler_params p = rwkvl_sampler_default_params();
      p.temperature = temp;
      p.seed = 11;
      if (mode == 0) p.top_k = 1;
      else p.top_p = 1e-7f;
      auto s = make_sampler(p);
      for (int i = 0; i < 100; ++i) {
        const size_t n = 2 + static_cast<size_t>(shape.uniform() * 5000);
        const float scale = static_cast<float>(0.01 + shape.uniform() * 20.0);
        const auto logits = random_logits(n, shape.next(), scale);
        ASSERT_EQ(sample_copy(s.get(), logits), argmax(logits))
            << (mode == 0 ? "top_k 1" : "top_p 1e-7") << ", temperature " << temp << ", n " << n << ", scale " << scale;
      }
    }
  }
}

// Entropy (nats) of softmax(logits / temp), in double.
double softmax_entropy(const std::vector<float>& logits, double temp) {
  const double mx = *std::max_element(logits.begin(), logits.end()) / temp;
  double z = 0, ez = 0;
  for (float l : logits) {
    const double a = l / temp - mx, e = std::exp(a);
    z += e;
    ez += e * a;
  }
  return std::log(z) - ez / z;
}

// Plug-in entropy (nats) of an empirical distribution.
double empirical_entropy(const std::vector<double>& freq) {
  double h = 0;
  for (double f : freq)
    if (f > 0) h -= f * std::log(f);
  return h;
}

// Higher temperature, higher entropy: 40,000 draws (fixed seed) from 100 random logits at each of five
// temperatures; the empirical entropy rises strictly and sits within 0.03 nats of softmax(l / T)'s (the
// plug-in estimate's bias is about (100 - 1) / (2 * 40,000) = 0.001 nats, its noise smaller still).
TEST(Sampler, HigherTemperatureGivesHigherEmpiricalEntropy) {
  constexpr int kDraws = 40000;
  const auto logits = random_logits(100, 8, 3.0f);
  double prev = -1;
  for (float temp : {0.25f, 0.5f, 1.0f, 2.0f, 4.0f}) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.temperature = temp;
    p.seed = 1234;
    auto s = make_sampler(p);
    const double h = empirical_entropy(frequencies(s.get(), logits, kDraws));
    const double want = softmax_entropy(logits, temp);
    std::printf("  temperature %.2f: empirical entropy %.4f nats, softmax %.4f\n", temp, h, want);
    EXPECT_NEAR(h, want, 0.03) << "temperature " << temp;
    EXPECT_GT(h, prev + 0.05) << "temperature " << temp;
    prev = h;
  }
}

// Presence and frequency penalties lower the probability of a token already seen, by exactly the
// softmax of the penalised logit: the empirical frequency of the repeated token over 20,000 draws is
// within 5 standard deviations of that probability and well below its unpenalised probability.
TEST(Sampler, PenaltiesLowerTheRepeatedTokensProbability) {
  constexpr int kDraws = 20000;
  const std::vector<float> logits = {0.5f, 1.0f, 0.2f, 1.5f, 0.0f, 0.8f};
  constexpr int kRepeated = 3, kSeen = 3;  // token 3 accepted three times
  struct Case {
    float presence, frequency;
  };
  const auto prob = [&](float penalty) {
    double z = 0;
    for (size_t i = 0; i < logits.size(); ++i) z += std::exp(logits[i] - (i == kRepeated ? penalty : 0.0f));
    return std::exp(logits[kRepeated] - penalty) / z;
  };
  const double plain = prob(0.0f);
  for (const Case c : {Case{0.0f, 0.0f}, Case{1.0f, 0.0f}, Case{0.0f, 0.5f}, Case{0.4f, 0.3f}}) {
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.presence_penalty = c.presence;
    p.frequency_penalty = c.frequency;
    p.seed = 31;
    auto s = make_sampler(p);
    for (int i = 0; i < kSeen; ++i) rwkvl_sampler_accept(s.get(), kRepeated);
    const double want = prob(c.presence + kSeen * c.frequency);
    const double got = frequencies(s.get(), logits, kDraws)[kRepeated];
    std::printf("  presence %.1f frequency %.1f: token %d drawn %.4f (softmax %.4f, unpenalised %.4f)\n", c.presence,
                c.frequency, kRepeated, got, want, plain);
    EXPECT_NEAR(got, want, 5.0 * std::sqrt(want * (1 - want) / kDraws));
    if (c.presence + c.frequency > 0) {
      EXPECT_LT(got, plain - 0.05);
    }
  }
}

// The same seed gives the same draws (temperature, top-k and top-p in play, no penalties), another
// seed other draws, through both the C API and the C++ class.
TEST(Sampler, SameSeedSameDraws) {
  const auto draws = [](uint64_t seed, bool cxx) {
    rwkvl::SamplerParams cp;
    cp.temperature = 1.3f;
    cp.top_k = 200;
    cp.top_p = 0.95f;
    cp.seed = seed;
    rwkvl_sampler_params p = rwkvl_sampler_default_params();
    p.temperature = cp.temperature;
    p.top_k = cp.top_k;
    p.top_p = cp.top_p;
    p.seed = seed;
    rwkvl::Sampler direct(cp);
    auto s = make_sampler(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 500; ++i) {
      auto logits = random_logits(1000, static_cast<uint64_t>(i), 2.0f);
      out.push_back(cxx ? direct.sample(logits.data(), logits.size()) : sample_copy(s.get(), logits));
    }
    return out;
  };
  EXPECT_EQ(draws(5, false), draws(5, false));
  EXPECT_EQ(draws(5, false), draws(5, true));
  EXPECT_NE(draws(5, false), draws(6, false));
}

TEST(Sampler, DegenerateLogits) {
  rwkvl_sampler_params p = rwkvl_sampler_default_params();
  p.top_p = 0.9f;
  auto s = make_sampler(p);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sample_copy(s.get(), {-inf, -inf, -inf}), 0);
  EXPECT_EQ(sample_copy(s.get(), {1.0f, inf, 2.0f, inf}), 1);
  EXPECT_EQ(sample_copy(s.get(), {std::numeric_limits<float>::quiet_NaN(), -inf, 0.0f}), 2);
  EXPECT_EQ(sample_copy(s.get(), {3.0f}), 0);
}

TEST(Sampler, WorldSizedVocabulary) {
  // Every restriction combination on 65,536 logits draws valid tokens. The time per draw is printed
  // for information only: speed claims belong in benchmarks.
  const auto logits = random_logits(65536, 1, 8.0f);
  for (int top_k : {0, 50}) {
    for (float top_p : {1.0f, 0.9f}) {
      rwkvl_sampler_params p = rwkvl_sampler_default_params();
      p.top_k = top_k;
      p.top_p = top_p;
      auto s = make_sampler(p);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 200; ++i) ASSERT_GE(sample_copy(s.get(), logits), 0);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("top_k %2d top_p %.1f: %.3f ms per draw\n", top_k, top_p, dt * 1e3 / 200);
    }
  }
}

}  // namespace

// ---- measurement helpers (rwkvl_peak_rss_bytes, rwkvl_measure_read_bandwidth, rwkvl_system_info)

namespace {

TEST(Measure, ResidentMemory) {
  const uint64_t current = rwkvl_current_rss_bytes();
  ASSERT_GT(current, 0u);
  EXPECT_GE(rwkvl_peak_rss_bytes(), current);  // read after: the peak can only have grown
  // Touching 64 MiB raises both by about that much.
  std::vector<char> big(64u << 20);
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i);
  volatile char sink = big[big.size() / 2];
  (void)sink;
  const uint64_t after = rwkvl_current_rss_bytes();
  EXPECT_GE(after, current + (60u << 20));
  EXPECT_GE(rwkvl_peak_rss_bytes(), after);  // read in this order: the peak can only have grown since
}

TEST(Measure, ReadBandwidthIsPlausible) {
  for (int threads : {1, 2}) {
    const double bw = rwkvl_measure_read_bandwidth(threads, 32u << 20, 0.2);
    // Anything from a slow VM (1 GB/s) to a wide server (2 TB/s).
    EXPECT_GT(bw, 1e9) << threads << " threads";
    EXPECT_LT(bw, 2e12) << threads << " threads";
  }
  EXPECT_GT(rwkvl_measure_read_bandwidth(0, 1, 0.01), 0.0);  // tiny buffer and auto threads still work
}

TEST(Measure, SystemInfo) {
  const std::string info = rwkvl_system_info();
  EXPECT_NE(info.find(RWKVL_VERSION_STRING), std::string::npos) << info;
  EXPECT_NE(info.find("isa "), std::string::npos) << info;
  EXPECT_NE(info.find("core"), std::string::npos) << info;
  EXPECT_EQ(info.find('\n'), std::string::npos) << "one line";
  EXPECT_EQ(rwkvl_system_info(), rwkvl_system_info());  // stable pointer
}

}  // namespace
