// Activation predictors for the sparse channel-mix (compress/sparse_train.h): the MLP learns a known rule, the 1-bit
// copy is exact on a hand-made matrix and captures a two-level rule, the thresholds reach the target recall on the
// held-out split with the public scorers (bit-identical to the training side), the ensemble is never worse than the
// better single predictor, training is deterministic for any thread count, and bad inputs are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compress/sparse_train.h"
#include "core/dtype.h"
#include "core/error.h"

namespace rwkvl {
namespace {

using compress::LayerPredictor;
using compress::LayerSamples;
using compress::PredictorOptions;

constexpr float kInf = std::numeric_limits<float>::infinity();

// x = m + N(0, 1) (m = 0 unless mean_norm > 0); W Gaussian, optionally two-level rows plus noise; W_r . m = bias_r
// shifts neuron r (bias 0 = the bias-free rule W x > 0). wk = W + wk_noise N(0, 1).
struct Gen {
  int64_t n = 4000, C = 32, F = 64;
  uint64_t seed = 1;
  bool two_level = false;
  double wk_noise = 0.0;
  double mean_norm = 0.0;   // |m|
  double bias_sigma = 0.0;  // bias_r = -bias_sigma * |W_r| (shifts the active rate below 1/2)
  int64_t latent = 0;       // > 0: x = m + A u + 0.3 N(0, 1), u in R^latent (anisotropic inputs)
};

LayerSamples make_layer(const Gen& g) {
  std::mt19937_64 rng(g.seed);
  std::normal_distribution<float> N01(0.0f, 1.0f);
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);
  LayerSamples L;
  L.n = g.n;
  L.C = g.C;
  L.F = g.F;
  std::vector<float> W(static_cast<size_t>(g.F * g.C));
  for (int64_t r = 0; r < g.F; ++r) {
    const float lo = U(rng) - 1.0f, hi = U(rng) + 1.0f;
    for (int64_t c = 0; c < g.C; ++c) {
      float& w = W[r * g.C + c];
      w = g.two_level ? ((rng() & 1) ? hi : lo) + 0.05f * N01(rng) : N01(rng);
    }
  }
  std::vector<float> m(static_cast<size_t>(g.C), 0.0f);
  if (g.mean_norm > 0) {
    double nm = 0;
    for (auto& v : m) {
      v = N01(rng);
      nm += double(v) * v;
    }
    for (auto& v : m) v = static_cast<float>(v * g.mean_norm / std::sqrt(nm));
    // Make W_r . m = -bias_sigma |W_r| (projection onto m).
    for (int64_t r = 0; r < g.F; ++r) {
      float* w = W.data() + r * g.C;
      double wm = 0, mm = 0, ww = 0;
      for (int64_t c = 0; c < g.C; ++c) {
        wm += double(w[c]) * m[c];
        mm += double(m[c]) * m[c];
        ww += double(w[c]) * w[c];
      }
      const double target = -g.bias_sigma * std::sqrt(ww);
      for (int64_t c = 0; c < g.C; ++c) w[c] = static_cast<float>(w[c] + (target - wm) / mm * m[c]);
    }
  }
  L.x.resize(static_cast<size_t>(g.n * g.C));
  if (g.latent > 0) {
    std::vector<float> A(static_cast<size_t>(g.C * g.latent)), u(static_cast<size_t>(g.latent));
    const float sa = 1.0f / std::sqrt(static_cast<float>(g.latent));
    for (auto& a : A) a = sa * N01(rng);
    for (int64_t t = 0; t < g.n; ++t) {
      for (auto& v : u) v = N01(rng);
      for (int64_t c = 0; c < g.C; ++c) {
        float acc = 0;
        for (int64_t q = 0; q < g.latent; ++q) acc += A[c * g.latent + q] * u[q];
        L.x[t * g.C + c] = m[c] + acc + 0.3f * N01(rng);
      }
    }
  } else {
    for (int64_t t = 0; t < g.n; ++t)
      for (int64_t c = 0; c < g.C; ++c) L.x[t * g.C + c] = m[c] + N01(rng);
  }
  L.active.resize(static_cast<size_t>(g.n * g.F));
  std::vector<float> WT(static_cast<size_t>(g.C * g.F)), acc(static_cast<size_t>(g.F));
  for (int64_t r = 0; r < g.F; ++r)
    for (int64_t c = 0; c < g.C; ++c) WT[c * g.F + r] = W[r * g.C + c];
  for (int64_t t = 0; t < g.n; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t c = 0; c < g.C; ++c) {
      const float xc = L.x[t * g.C + c];
      const float* wt = WT.data() + c * g.F;
      for (int64_t r = 0; r < g.F; ++r) acc[r] += wt[r] * xc;
    }
    for (int64_t r = 0; r < g.F; ++r) L.active[t * g.F + r] = acc[r] > 0;
  }
  L.wk = W;
  if (g.wk_noise > 0)
    for (auto& w : L.wk) w += static_cast<float>(g.wk_noise) * N01(rng);
  return L;
}

struct Counts {
  double recall_mlp, frac_mlp, recall_bits, frac_bits, recall_ens, frac_ens;
};

// Recomputes the held-out figures with the public scorers (mlp_logits, bits_score).
Counts recount(const LayerSamples& L, const LayerPredictor& p) {
  const int64_t n_train = L.n - p.n_holdout;
  std::vector<float> z(static_cast<size_t>(L.F)), s(static_cast<size_t>(L.F));
  int64_t P = 0, pm = 0, hm = 0, pb = 0, hb = 0, pe = 0, he = 0, N = 0;
  for (int64_t t = n_train; t < L.n; ++t) {
    compress::mlp_logits(p, L.x.data() + t * L.C, z.data());
    compress::bits_score(p, L.x.data() + t * L.C, s.data());
    for (int64_t r = 0; r < L.F; ++r) {
      const bool y = L.active[t * L.F + r];
      const bool m = z[r] > p.mlp_alone_logit_thresh, b = s[r] > p.bits_alone_thresh,
                 e = z[r] > p.mlp_logit_thresh || s[r] > p.bits_thresh;
      P += y;
      ++N;
      pm += m;
      hm += m && y;
      pb += b;
      hb += b && y;
      pe += e;
      he += e && y;
    }
  }
  const double Pd = P ? double(P) : 1.0;
  return {hm / Pd, pm / double(N), hb / Pd, pb / double(N), he / Pd, pe / double(N)};
}

void print(const char* what, const LayerPredictor& p) {
  std::printf(
      "  %s: true %.3f | mlp recall %.4f frac %.3f (z > %.3g) | bits "
      "recall %.4f frac %.3f (s > %.3g) | ens recall "
      "%.4f frac %.3f (z > %.3g or s > %.3g) | loss train %.4f "
      "held-out %.4f | pw %.2f | %.2f s\n",
      what, p.true_active_frac, p.recall_mlp, p.frac_mlp, p.mlp_alone_logit_thresh, p.recall_bits, p.frac_bits,
      p.bits_alone_thresh, p.recall_ens, p.frac_ens, p.mlp_logit_thresh, p.bits_thresh, p.train_loss, p.holdout_loss,
      p.pos_weight, p.seconds);
}

void expect_consistent(const LayerSamples& L, const LayerPredictor& p, double R) {
  EXPECT_GE(p.recall_mlp, R);
  EXPECT_GE(p.recall_bits, R);
  EXPECT_GE(p.recall_ens, R);
  EXPECT_LE(p.frac_ens, std::min(p.frac_mlp, p.frac_bits) + 1e-12);
  // The public scorers give exactly the figures the thresholds were chosen on.
  const Counts c = recount(L, p);
  EXPECT_EQ(c.recall_mlp, p.recall_mlp);
  EXPECT_EQ(c.frac_mlp, p.frac_mlp);
  EXPECT_EQ(c.recall_bits, p.recall_bits);
  EXPECT_EQ(c.frac_bits, p.frac_bits);
  EXPECT_EQ(c.recall_ens, p.recall_ens);
  EXPECT_EQ(c.frac_ens, p.frac_ens);
}

TEST(SparseTrain, BuildBitsHandMade) {
  // Row 0: mean 6, set where > 6 (c = 0, 3, 5, 7 -> 0xA9), hi 10, lo mean{0, 4, 0, 4} = 2, residuals
  //        +-2 on the clear entries -> e = 4: lo' = 0.5, step' = 2.
  // Row 1: mean 0, only c = 3 set (0x08), hi 7, lo -1, residual 0 -> e = 1: lo' = -1, step' = 8.
  // Row 2: constant: no bit set, hi = lo = 3, e = 0 -> 1: lo' = 3, step' = 0.
  const float W[3 * 8] = {10, 0,  4,  10, 0,  10, 4,  10,  //
                          -1, -1, -1, 7,  -1, -1, -1, -1,  //
                          3,  3,  3,  3,  3,  3,  3,  3};
  std::vector<uint8_t> bits;
  std::vector<float> lo, step;
  compress::build_bits(W, 3, 8, &bits, &lo, &step);
  ASSERT_EQ(bits.size(), 3u);
  EXPECT_EQ(bits[0], 0xA9);
  EXPECT_EQ(bits[1], 0x08);
  EXPECT_EQ(bits[2], 0x00);
  EXPECT_EQ(lo, (std::vector<float>{0.5f, -1.0f, 3.0f}));
  EXPECT_EQ(step, (std::vector<float>{2.0f, 8.0f, 0.0f}));

  // Scores: x = 1..8, sum 36; row 0 set bits x = 1 + 4 + 6 + 8 = 19 -> 0.5 * 36 + 2 * 19 = 56; row 1: -36 + 8 * 4 = -4;
  // row 2: 3 * 36 = 108.
  LayerPredictor p;
  p.C = 8;
  p.F = 3;
  p.bits = bits;
  p.lo = lo;
  p.step = step;
  const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float s[3];
  compress::bits_score(p, x, s);
  EXPECT_EQ(s[0], 56.0f);
  EXPECT_EQ(s[1], -4.0f);
  EXPECT_EQ(s[2], 108.0f);

  // Two bytes per row: bit c % 8 of byte c / 8.
  std::vector<float> W2(16, 0.0f);
  W2[9] = 5;  // only c = 9 above the mean -> byte 1 bit 1
  compress::build_bits(W2.data(), 1, 16, &bits, &lo, &step);
  EXPECT_EQ(bits, (std::vector<uint8_t>{0x00, 0x02}));
}

TEST(SparseTrain, LearnsKnownRule) {
  // Bias-free rule active = (W x > 0), true rate ~0.5: the MLP alone must reach the recall while predicting far fewer
  // than all pairs. wk = W + strong noise so the 1-bit copy is a weak predictor.
  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    Gen g;
    g.seed = seed;
    g.C = seed >= 5 ? 64 : 32;
    g.F = seed % 2 == 0 ? 128 : 64;
    g.wk_noise = 1.0;
    const LayerSamples L = make_layer(g);
    PredictorOptions o;
    o.seed = seed;
    o.epochs = 40;  // 3200 training tokens: 13 steps per epoch
    o.lr = 1e-2;
    o.hidden = g.C == 64 ? 128 : 64;  // relu(a) - relu(-a) pairs represent a linear rule with 2C units
    const auto res = compress::train_predictors({L}, o);
    ASSERT_EQ(res.size(), 1u);
    const LayerPredictor& p = res[0];
    char what[64];
    std::snprintf(what, sizeof what, "seed %d C %d F %d", int(seed), int(g.C), int(g.F));
    print(what, p);
    EXPECT_NEAR(p.true_active_frac, 0.5, 0.05);
    EXPECT_LT(p.frac_mlp, g.C == 64 ? 0.75 : 0.65);
    EXPECT_LT(p.holdout_loss, 0.3);
    expect_consistent(L, p, o.recall);
    EXPECT_EQ(p.w1.size(), size_t(o.hidden * g.C));
    EXPECT_EQ(p.w2.size(), size_t(g.F * o.hidden));
    EXPECT_EQ(p.n_holdout, 800);
  }
}

TEST(SparseTrain, Int8PredictorKeepsTheRuleAndItsFigures) {
  // The same known rule with the MLP stored as int8 (per-row f16 scales): the weights are the f16
  // ones within half a quantisation step, and the held-out figures (recomputed through mlp_logits on
  // the int8 weights) still reach the recall with far fewer than all pairs.
  Gen g;
  g.seed = 3;
  g.C = 32;
  g.F = 64;
  g.wk_noise = 1.0;
  const LayerSamples L = make_layer(g);
  PredictorOptions o;
  o.seed = 3;
  o.epochs = 40;
  o.lr = 1e-2;
  o.hidden = 64;
  o.int8 = true;
  const LayerPredictor p = compress::train_predictors({L}, o)[0];
  print("int8 MLP", p);
  ASSERT_EQ(p.q1.size(), p.w1.size());
  ASSERT_EQ(p.q2.size(), p.w2.size());
  ASSERT_EQ(p.s1.size(), size_t(o.hidden));
  ASSERT_EQ(p.s2.size(), size_t(g.F));
  for (int64_t r = 0; r < o.hidden; ++r) {
    const float sc = f16_to_f32(p.s1[size_t(r)]);
    for (int64_t c = 0; c < g.C; ++c) {
      const float w = f16_to_f32(p.w1[size_t(r * g.C + c)]);
      EXPECT_NEAR(p.q1[size_t(r * g.C + c)] * sc, w, 0.5f * sc + 1e-3f * std::fabs(w)) << r << " " << c;
    }
  }
  EXPECT_LT(p.frac_mlp, 0.65);
  expect_consistent(L, p, o.recall);
}

TEST(SparseTrain, BitsCaptureTwoLevelRule) {
  // Rows taking two values (plus small noise): the 1-bit copy of the true W is nearly exact.
  for (uint64_t seed : {4, 5}) {
    Gen g;
    g.seed = seed;
    g.two_level = true;
    const LayerSamples L = make_layer(g);
    PredictorOptions o;
    o.seed = seed;
    o.epochs = 2;  // the MLP is not the point here
    const auto res = compress::train_predictors({L}, o);
    const LayerPredictor& p = res[0];
    print("two-level W", p);
    EXPECT_LT(p.frac_bits, p.true_active_frac + 0.1);
    expect_consistent(L, p, o.recall);
  }
  // Gaussian W: the 1-bit copy alone still reaches the recall well below all pairs.
  Gen g;
  g.seed = 6;
  const LayerSamples L = make_layer(g);
  PredictorOptions o;
  o.epochs = 2;
  const auto res = compress::train_predictors({L}, o);
  print("gaussian W", res[0]);
  EXPECT_LT(res[0].frac_bits, 0.85);
  expect_consistent(L, res[0], o.recall);
}

TEST(SparseTrain, EnsembleAndRecallTargets) {
  // A sparser, biased layer (x with a mean direction; ~20% active), several targets.
  Gen g;
  g.seed = 7;
  g.C = 64;
  g.F = 128;
  g.mean_norm = 4.0;
  g.bias_sigma = 0.85;
  g.wk_noise = 0.3;
  const LayerSamples L = make_layer(g);
  for (double R : {0.9, 0.99, 1.0}) {
    PredictorOptions o;
    o.recall = R;
    o.epochs = 40;
    o.lr = 1e-2;
    const auto res = compress::train_predictors({L}, o);
    char what[32];
    std::snprintf(what, sizeof what, "biased R=%g", R);
    print(what, res[0]);
    EXPECT_LT(res[0].true_active_frac, 0.25);
    expect_consistent(L, res[0], R);
    if (R < 1) {
      EXPECT_LT(res[0].frac_ens, R < 0.95 ? 0.3 : 0.4);
    }
  }
  // An undertrained MLP (defaults: 10 epochs at lr 1e-3, 130 steps) and a noisy 1-bit copy are both mediocre; their OR
  // with both thresholds finite beats either alone.
  PredictorOptions o;
  const auto res = compress::train_predictors({L}, o);
  print("weak MLP", res[0]);
  expect_consistent(L, res[0], o.recall);
  EXPECT_LT(res[0].frac_ens, std::min(res[0].frac_mlp, res[0].frac_bits));
  EXPECT_LT(res[0].mlp_logit_thresh, kInf);
  EXPECT_LT(res[0].bits_thresh, kInf);
}

TEST(SparseTrain, Deterministic) {
  std::vector<LayerSamples> layers;
  for (uint64_t s = 0; s < 3; ++s) {
    Gen g;
    g.n = 600;
    g.C = 16;
    g.F = 32;
    g.seed = 100 + s;
    layers.push_back(make_layer(g));
  }
  PredictorOptions o;
  o.epochs = 3;
  o.batch = 64;
  int64_t calls = 0, last = 0, total = 0;
  bool monotone = true;
  o.progress = [&](int64_t done, int64_t tot) {
    ++calls;
    monotone = monotone && done == last + 1;
    last = done;
    total = tot;
  };
  const auto a = compress::train_predictors(layers, o);
  EXPECT_EQ(calls, 3 * (3 + 1));
  EXPECT_TRUE(monotone);
  EXPECT_EQ(last, total);
  o.n_threads = 2;
  const auto b = compress::train_predictors(layers, o);
  o.n_threads = 3;
  const auto c = compress::train_predictors(layers, o);
  for (const auto* other : {&b, &c})
    for (size_t i = 0; i < a.size(); ++i) {
      const auto &x = a[i], &y = (*other)[i];
      EXPECT_EQ(x.w1, y.w1);
      EXPECT_EQ(x.w2, y.w2);
      EXPECT_EQ(x.bits, y.bits);
      EXPECT_EQ(x.lo, y.lo);
      EXPECT_EQ(x.step, y.step);
      EXPECT_EQ(x.mlp_logit_thresh, y.mlp_logit_thresh);
      EXPECT_EQ(x.bits_thresh, y.bits_thresh);
      EXPECT_EQ(x.mlp_alone_logit_thresh, y.mlp_alone_logit_thresh);
      EXPECT_EQ(x.bits_alone_thresh, y.bits_alone_thresh);
      EXPECT_EQ(x.train_loss, y.train_loss);
      EXPECT_EQ(x.holdout_loss, y.holdout_loss);
      EXPECT_EQ(x.frac_ens, y.frac_ens);
    }
  // Layers get different streams; another seed gives other weights (the 1-bit copy does not change).
  EXPECT_NE(a[0].w1, a[1].w1);
  o.seed = 2;
  const auto d = compress::train_predictors(layers, o);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NE(a[i].w1, d[i].w1);
    EXPECT_NE(a[i].w2, d[i].w2);
    EXPECT_EQ(a[i].bits, d[i].bits);
  }
}

TEST(SparseTrain, NoActivePairs) {
  Gen g;
  g.n = 200;
  LayerSamples L = make_layer(g);
  std::fill(L.active.begin(), L.active.end(), uint8_t{0});
  PredictorOptions o;
  o.epochs = 1;
  const auto res = compress::train_predictors({L}, o);
  const LayerPredictor& p = res[0];
  EXPECT_EQ(p.true_active_frac, 0.0);
  EXPECT_EQ(p.recall_ens, 1.0);
  EXPECT_EQ(p.frac_ens, 0.0);
  EXPECT_EQ(p.frac_mlp, 0.0);
  EXPECT_EQ(p.frac_bits, 0.0);
  EXPECT_EQ(p.mlp_logit_thresh, kInf);
  EXPECT_EQ(p.bits_thresh, kInf);
  EXPECT_EQ(p.mlp_alone_logit_thresh, kInf);
  EXPECT_EQ(p.bits_alone_thresh, kInf);
  EXPECT_EQ(p.pos_weight, 100.0);
}

TEST(SparseTrain, BadInputsThrow) {
  Gen g;
  g.n = 100;
  g.C = 16;
  g.F = 8;
  const LayerSamples good = make_layer(g);
  PredictorOptions o;
  o.epochs = 1;
  EXPECT_NO_THROW(compress::train_predictors({good}, o));
  auto expect_bad = [&](const LayerSamples& L, const PredictorOptions& opt) {
    try {
      compress::train_predictors({good, L}, opt);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      std::printf("  refused: %s\n", e.what());
    }
  };
  {  // C % 8 != 0
    Gen h = g;
    h.C = 12;
    expect_bad(make_layer(h), o);
  }
  {  // too few tokens: 39 -> 31 train / 8 held-out; and 40 tokens with holdout 0.1 -> 4 held-out
    Gen h = g;
    h.n = 39;
    expect_bad(make_layer(h), o);
    h.n = 40;
    PredictorOptions p = o;
    p.holdout = 0.1;
    expect_bad(make_layer(h), p);
    h.n = 40;
    EXPECT_NO_THROW(compress::train_predictors({make_layer(h)}, o));
  }
  for (double r : {0.0, -0.5, 1.5, std::nan("")}) {
    PredictorOptions p = o;
    p.recall = r;
    expect_bad(good, p);
  }
  for (double hd : {0.0, 1.0, -0.1}) {
    PredictorOptions p = o;
    p.holdout = hd;
    expect_bad(good, p);
  }
  {
    PredictorOptions p = o;
    p.hidden = 0;
    expect_bad(good, p);
    p = o;
    p.epochs = 0;
    expect_bad(good, p);
    p = o;
    p.batch = 0;
    expect_bad(good, p);
    p = o;
    p.lr = 0;
    expect_bad(good, p);
    p = o;
    p.n_threads = 0;
    expect_bad(good, p);
  }
  {  // mismatched sizes, bad labels, non-finite values
    LayerSamples L = good;
    L.x.pop_back();
    expect_bad(L, o);
    L = good;
    L.active.push_back(0);
    expect_bad(L, o);
    L = good;
    L.wk.resize(L.wk.size() - 16);
    expect_bad(L, o);
    L = good;
    L.F = 0;
    expect_bad(L, o);
    L = good;
    L.active[5] = 2;
    expect_bad(L, o);
    L = good;
    L.x[7] = std::nanf("");
    expect_bad(L, o);
    L = good;
    L.wk[3] = kInf;
    expect_bad(L, o);
  }
  // Building blocks.
  std::vector<uint8_t> bits;
  std::vector<float> lo, step;
  std::vector<float> W(12 * 2, 1.0f);
  EXPECT_THROW(compress::build_bits(W.data(), 2, 12, &bits, &lo, &step), Error);
  EXPECT_THROW(compress::build_bits(W.data(), 0, 8, &bits, &lo, &step), Error);
  LayerPredictor p;
  p.C = 16;
  p.F = 8;
  p.hidden = 4;
  p.w1.resize(4 * 16);
  p.w2.resize(8 * 4 - 1);
  std::vector<float> x(16), z(8);
  EXPECT_THROW(compress::mlp_logits(p, x.data(), z.data()), Error);
  p.bits.resize(8 * 2);
  p.lo.resize(8);
  p.step.resize(7);
  EXPECT_THROW(compress::bits_score(p, x.data(), z.data()), Error);
}

// The real size of the first use (C = 256, F = 896, ~16k tokens, 8 layers, 2 threads). Takes tens of seconds, so it
// runs only with RWKVL_SPARSE_BENCH=1. RWKVL_SPARSE_LAYERS (default 8), RWKVL_SPARSE_N / _C / _F (default 16000 / 256 /
// 896), RWKVL_SPARSE_LATENT (0 = isotropic x, else x in a noisy subspace of that dimension), RWKVL_SPARSE_EPOCHS and
// RWKVL_SPARSE_LR change the problem and the training.
TEST(SparseTrain, TimingRealSize) {
  const char* env = std::getenv("RWKVL_SPARSE_BENCH");
  if (!env || std::string(env) != "1") GTEST_SKIP() << "set RWKVL_SPARSE_BENCH=1";
  auto env_or = [](const char* name, double def) {
    const char* v = std::getenv(name);
    return v ? std::atof(v) : def;
  };
  const int n_layers = static_cast<int>(env_or("RWKVL_SPARSE_LAYERS", 8));
  std::vector<LayerSamples> layers;
  for (int i = 0; i < std::min(n_layers, 2); ++i) {  // two distinct layers, repeated (data generation is slow)
    Gen g;
    g.n = static_cast<int64_t>(env_or("RWKVL_SPARSE_N", 16000));
    g.C = static_cast<int64_t>(env_or("RWKVL_SPARSE_C", 256));
    g.F = static_cast<int64_t>(env_or("RWKVL_SPARSE_F", 896));
    g.seed = 1000 + i;
    g.mean_norm = 8.0;
    g.bias_sigma = 0.85;
    g.wk_noise = 0.0;
    g.latent = static_cast<int64_t>(env_or("RWKVL_SPARSE_LATENT", 0));
    layers.push_back(make_layer(g));
  }
  while (static_cast<int>(layers.size()) < n_layers) layers.push_back(layers[layers.size() - 2]);
  PredictorOptions o;
  o.n_threads = 2;
  o.epochs = static_cast<int>(env_or("RWKVL_SPARSE_EPOCHS", o.epochs));
  o.lr = env_or("RWKVL_SPARSE_LR", o.lr);
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = compress::train_predictors(layers, o);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "  %d layers C %lld F %lld n %lld (latent %lld, epochs %d, lr "
      "%g), 2 threads: %.1f s\n",
      n_layers, static_cast<long long>(layers[0].C), static_cast<long long>(layers[0].F),
      static_cast<long long>(layers[0].n), static_cast<long long>(env_or("RWKVL_SPARSE_LATENT", 0)), o.epochs, o.lr,
      sec);
  for (const auto& p : res) {
    print("layer", p);
    EXPECT_GE(p.recall_ens, o.recall);
  }
}

}  // namespace
}  // namespace rwkvl
