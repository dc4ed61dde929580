// The predictor MLP's training (src/compress/mlp_train.h), compiled for the baseline, AVX2 and AVX-512: every
// instruction set this machine runs trains the same weights to rounding, each gives the same bits on every run, and
// the loss falls on a task a small MLP can learn (the figures of the trained predictors are in test_sparse_train.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "compress/mlp_train.h"
#include "kernels/kernels.h"

namespace {

using rwkvl::compress::AlignedFloats;

struct Task {
  std::vector<float> x, inv_rms;
  std::vector<uint8_t> active;
  int64_t C = 32, F = 48, n = 400;
};

// Neuron f is active when a fixed random direction of x is positive: learnable by a ReLU MLP.
Task make_task() {
  Task t;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  t.x.resize(static_cast<size_t>(t.n * t.C));
  for (float& v : t.x) v = nd(rng);
  std::vector<float> dir(static_cast<size_t>(t.F * t.C));
  for (float& v : dir) v = nd(rng);
  t.active.resize(static_cast<size_t>(t.n * t.F));
  for (int64_t i = 0; i < t.n; ++i)
    for (int64_t f = 0; f < t.F; ++f) {
      float s = 0;
      for (int64_t c = 0; c < t.C; ++c) s += dir[f * t.C + c] * t.x[i * t.C + c];
      t.active[i * t.F + f] = s > 0.5f;
    }
  t.inv_rms.assign(static_cast<size_t>(t.C), 1.0f);
  return t;
}

struct Trained {
  AlignedFloats w1, w2;
  double loss = 0;
};

Trained train(const Task& t, int epochs) {
  const int64_t h = 16;
  Trained r;
  r.w1.resize(static_cast<size_t>(h * t.C));
  r.w2.resize(static_cast<size_t>(t.F * h));
  std::mt19937 init(5);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (float& v : r.w1) v = u(init);
  for (float& v : r.w2) v = u(init);
  rwkvl::compress::MlpTrainJob job;
  job.x = t.x.data();
  job.active = t.active.data();
  job.inv_rms = t.inv_rms.data();
  job.C = t.C;
  job.F = t.F;
  job.hidden = h;
  job.n_train = t.n;
  job.batch = 64;
  job.epochs = epochs;
  job.lr = 0.01f;
  job.pos_weight = 2.0f;
  std::mt19937 shuffle_rng(9);
  job.shuffle = [&shuffle_rng](std::vector<int64_t>& order) { std::shuffle(order.begin(), order.end(), shuffle_rng); };
  r.loss = rwkvl::compress::train_mlp(job, r.w1.data(), r.w2.data());
  return r;
}

TEST(MlpTrain, EveryInstructionSetAgreesRepeatsItselfAndLearns) {
  const Task t = make_task();
  std::vector<std::pair<std::string, Trained>> runs;
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    if (!rwkvl::kern::force_isa(isa)) continue;
    Trained a = train(t, 30), b = train(t, 30);
    EXPECT_EQ(a.w1, b.w1) << isa << ": two runs differ";
    EXPECT_EQ(a.w2, b.w2) << isa;
    EXPECT_EQ(a.loss, b.loss) << isa;
    const Trained short_run = train(t, 1);
    EXPECT_LT(a.loss, 0.7 * short_run.loss) << isa << ": the loss did not fall";
    runs.emplace_back(isa, std::move(a));
  }
  rwkvl::kern::force_isa(nullptr);
  ASSERT_FALSE(runs.empty());
  const Trained& base = runs.front().second;
  for (const auto& [isa, r] : runs) {
    double d = 0;
    for (size_t i = 0; i < r.w1.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(r.w1[i] - base.w1[i])));
    for (size_t i = 0; i < r.w2.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(r.w2[i] - base.w2[i])));
    EXPECT_LE(d, 2e-3) << isa << " vs " << runs.front().first << " (weights of order 0.3)";
    EXPECT_NEAR(r.loss, base.loss, 1e-3 * base.loss) << isa;
  }
}

}  // namespace
