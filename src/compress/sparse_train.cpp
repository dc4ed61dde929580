// Activation predictors for the sparse channel-mix: MLP training (mlp_train.h: Eigen, single-threaded per layer, per
// instruction set), the 1-bit copy of Wk, and the held-out thresholds. See sparse_train.h for the definitions.
// Parallelism is across layers.
#include "compress/sparse_train.h"
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"
#include "compress/mlp_train.h"
#include "kernels/kernels.h"
#include "runtime/sampler.h"
#include "core/threadpool.h"

// The scores must be bit-identical between the reference functions and the training-side evaluation: no fused
// multiply-adds (GCC does not contract in ISO mode; clang would within a statement).
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

namespace rwkvl::compress {
namespace {


constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kMinTrain = 32, kMinHoldout = 8;

// ---- deterministic random numbers: the runtime's xoshiro256** (runtime/sampler.h)
float uniform01(Rng& r) { return static_cast<float>(r.next() >> 40) * 0x1.0p-24f; }  // [0, 1)
uint64_t below(Rng& r, uint64_t n) {                                                  // [0, n), n >= 1
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r.next()) * n) >> 64);
}

uint64_t layer_seed(uint64_t seed, int64_t layer) {
  uint64_t x = seed;
  const uint64_t a = splitmix64(x);
  uint64_t y = a ^ (0xd1b54a32d192ed03ull * static_cast<uint64_t>(layer + 1));
  return splitmix64(y);
}

int64_t holdout_count(int64_t n, double holdout) {
  return static_cast<int64_t>(std::llround(holdout * static_cast<double>(n)));
}

// ---- the two scorers, shared by the reference functions and the held-out evaluation

// z = W2 relu(W1 x) from transposed float weights w1t (C x h) and w2t (h x F). Each hidden unit is accumulated over c
// in order, each output over j in order (skipping units that are 0 after the relu).
void mlp_kernel(const float* w1t, const float* w2t, int64_t C, int64_t h, int64_t F, const float* x, float* hid,
                float* z) {
  std::fill(hid, hid + h, 0.0f);
  for (int64_t c = 0; c < C; ++c) {
    const float xc = x[c];
    const float* row = w1t + c * h;
    for (int64_t j = 0; j < h; ++j) hid[j] += row[j] * xc;
  }
  std::fill(z, z + F, 0.0f);
  for (int64_t j = 0; j < h; ++j) {
    const float hj = hid[j] > 0.0f ? hid[j] : 0.0f;
    if (hj == 0.0f) continue;
    const float* row = w2t + j * F;
    for (int64_t r = 0; r < F; ++r) z[r] += row[r] * hj;
  }
}

float sum_in_order(const float* x, int64_t C) {
  float s = 0.0f;
  for (int64_t c = 0; c < C; ++c) s += x[c];
  return s;
}

float combine(float lo, float step, float sumx, float sumbits) {
  const float a = lo * sumx;
  const float b = step * sumbits;
  return a + b;
}

// Byte tables: T[j][b] = sum of x[8j + bit] over the set bits of b in bit order (the same float additions as the
// direct loop of bits_score), then the scores with one lookup per byte.
void bits_kernel_tables(const uint8_t* bits, const float* lo, const float* step, int64_t C, int64_t F, const float* x,
                        float* table, float* s) {
  const int64_t CB = C / 8;
  for (int64_t j = 0; j < CB; ++j) {
    float* T = table + j * 256;
    const float* xj = x + 8 * j;
    T[0] = 0.0f;
    for (int b = 1; b < 256; ++b) {
      const int hb = 31 - __builtin_clz(static_cast<unsigned>(b));
      T[b] = T[b ^ (1 << hb)] + xj[hb];
    }
  }
  const float sumx = sum_in_order(x, C);
  for (int64_t r = 0; r < F; ++r) {
    const uint8_t* br = bits + r * CB;
    float tot = 0.0f;
    for (int64_t j = 0; j < CB; ++j) tot += table[j * 256 + br[j]];
    s[r] = combine(lo[r], step[r], sumx, tot);
  }
}

// ---- checks

void check_finite(const char* what, int64_t layer, const float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      RWKVL_FAIL(kInvalidArgument,
                 "train_predictors: layer %lld: %s has a non-finite value (%g) "
                 "at element %lld",
                 static_cast<long long>(layer), what, static_cast<double>(p[i]), static_cast<long long>(i));
}

void check_options(const PredictorOptions& o) {
  if (o.hidden < 1) RWKVL_FAIL(kInvalidArgument, "train_predictors: hidden = %d must be >= 1", o.hidden);
  if (o.epochs < 1) RWKVL_FAIL(kInvalidArgument, "train_predictors: epochs = %d must be >= 1", o.epochs);
  if (o.batch < 1) RWKVL_FAIL(kInvalidArgument, "train_predictors: batch = %d must be >= 1", o.batch);
  if (!(o.lr > 0) || !std::isfinite(o.lr))
    RWKVL_FAIL(kInvalidArgument, "train_predictors: lr = %g must be positive and finite", o.lr);
  if (!(o.holdout > 0 && o.holdout < 1))
    RWKVL_FAIL(kInvalidArgument, "train_predictors: holdout = %g must be in (0, 1)", o.holdout);
  if (!(o.recall > 0 && o.recall <= 1))
    RWKVL_FAIL(kInvalidArgument, "train_predictors: recall = %g must be in (0, 1]", o.recall);
  if (o.n_threads < 1) RWKVL_FAIL(kInvalidArgument, "train_predictors: n_threads = %d must be >= 1", o.n_threads);
}

void check_layer(const LayerSamples& L, int64_t li, const PredictorOptions& o) {
  const auto l = static_cast<long long>(li);
  if (L.n < 0 || L.C < 1 || L.F < 1)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: bad shape n = %lld, C = %lld, F "
               "= %lld (C, F >= 1)",
               l, static_cast<long long>(L.n), static_cast<long long>(L.C), static_cast<long long>(L.F));
  if (L.C % 8 != 0)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: C = %lld must be a multiple of 8 "
               "(1-bit rows)",
               l, static_cast<long long>(L.C));
  constexpr int64_t kMax = int64_t{1} << 40;
  if (L.C > kMax || L.F > kMax || L.n > kMax || (L.n > 0 && L.n > kMax / L.C) || (L.n > 0 && L.n > kMax / L.F) ||
      L.F > kMax / L.C || L.F * o.hidden > kMax || L.C * o.hidden > kMax)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: shape n = %lld, C = %lld, F = "
               "%lld is too large",
               l, static_cast<long long>(L.n), static_cast<long long>(L.C), static_cast<long long>(L.F));
  if (static_cast<int64_t>(L.x.size()) != L.n * L.C)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: x has %zu values, expected n x C "
               "= %lld x %lld",
               l, L.x.size(), static_cast<long long>(L.n), static_cast<long long>(L.C));
  if (static_cast<int64_t>(L.active.size()) != L.n * L.F)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: active has %zu values, expected "
               "n x F = %lld x %lld",
               l, L.active.size(), static_cast<long long>(L.n), static_cast<long long>(L.F));
  if (static_cast<int64_t>(L.wk.size()) != L.F * L.C)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: wk has %zu values, expected F x "
               "C = %lld x %lld",
               l, L.wk.size(), static_cast<long long>(L.F), static_cast<long long>(L.C));
  const int64_t n_hold = holdout_count(L.n, o.holdout), n_train = L.n - n_hold;
  if (n_train < kMinTrain || n_hold < kMinHoldout)
    RWKVL_FAIL(kInvalidArgument,
               "train_predictors: layer %lld: %lld tokens give %lld training "
               "and %lld held-out tokens (holdout %g); "
               "need at least %lld and %lld",
               l, static_cast<long long>(L.n), static_cast<long long>(n_train), static_cast<long long>(n_hold),
               o.holdout, static_cast<long long>(kMinTrain), static_cast<long long>(kMinHoldout));
  for (size_t i = 0; i < L.active.size(); ++i)
    if (L.active[i] > 1)
      RWKVL_FAIL(kInvalidArgument, "train_predictors: layer %lld: active[%zu] = %d, expected 0 or 1", l, i,
                 static_cast<int>(L.active[i]));
  check_finite("x", li, L.x.data(), L.n * L.C);
  check_finite("wk", li, L.wk.data(), L.F * L.C);
}

void check_predictor(const char* fn, const LayerPredictor& p, bool mlp) {
  if (p.C < 1 || p.F < 1 || (mlp && p.hidden < 1))
    RWKVL_FAIL(kInvalidArgument, "%s: bad predictor shape C = %lld, F = %lld, hidden = %lld", fn,
               static_cast<long long>(p.C), static_cast<long long>(p.F), static_cast<long long>(p.hidden));
  if (mlp) {
    if (static_cast<int64_t>(p.w1.size()) != p.hidden * p.C || static_cast<int64_t>(p.w2.size()) != p.F * p.hidden)
      RWKVL_FAIL(kInvalidArgument, "%s: w1 / w2 have %zu / %zu values, expected %lld / %lld", fn, p.w1.size(),
                 p.w2.size(), static_cast<long long>(p.hidden * p.C), static_cast<long long>(p.F * p.hidden));
  } else {
    if (p.C % 8 != 0)
      RWKVL_FAIL(kInvalidArgument, "%s: C = %lld must be a multiple of 8", fn, static_cast<long long>(p.C));
    if (static_cast<int64_t>(p.bits.size()) != p.F * (p.C / 8) || static_cast<int64_t>(p.lo.size()) != p.F ||
        static_cast<int64_t>(p.step.size()) != p.F)
      RWKVL_FAIL(kInvalidArgument,
                 "%s: bits / lo / step have %zu / %zu / %zu values, expected "
                 "%lld / %lld / %lld",
                 fn, p.bits.size(), p.lo.size(), p.step.size(), static_cast<long long>(p.F * (p.C / 8)),
                 static_cast<long long>(p.F), static_cast<long long>(p.F));
  }
}

// ---- thresholds

// Smallest k with k / P >= R (P > 0, 0 <= R <= 1).
int64_t needed(int64_t P, double R) {
  int64_t k = static_cast<int64_t>(std::ceil(R * static_cast<double>(P)));
  k = std::clamp<int64_t>(k, 0, P);
  while (k > 0 && static_cast<double>(k - 1) / static_cast<double>(P) >= R) --k;
  while (k < P && static_cast<double>(k) / static_cast<double>(P) < R) ++k;
  return k;
}

// A threshold t with next_lower <= t < keep (strict test v > t keeps `keep`, drops `next_lower`), half-way when
// representable; -inf when no score lies below.
float place_below(float keep, bool has_lower, float next_lower) {
  if (!has_lower) return -kInf;
  const float t = static_cast<float>(0.5 * (static_cast<double>(keep) + static_cast<double>(next_lower)));
  return (t < keep && t > next_lower) ? t : next_lower;
}

struct Thresholds {
  float tm_alone = kInf, tb_alone = kInf, tm = kInf, tb = kInf;
};

// The held-out (token, neuron) pairs by descending MLP logit z, ties in pair order (what a stable sort gives).
// Each entry packs the sort key of z (high 32 bits) and the bits of the 1-bit score s (low 32 bits); ys[j] is the
// truth of the same pair. 9 bytes per pair (the scores and an index array would take 21).
struct SortedPairs {
  std::vector<uint64_t> zs;
  std::vector<uint8_t> ys;
  int64_t size() const { return static_cast<int64_t>(zs.size()); }
  float z(int64_t j) const {
    uint32_t u = ~static_cast<uint32_t>(zs[static_cast<size_t>(j)] >> 32);  // undo key = ~u
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;                         // undo the order map
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  float s(int64_t j) const {
    const uint32_t u = static_cast<uint32_t>(zs[static_cast<size_t>(j)]);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// Takes z and s (freed on the way) and the truths y of the same pairs.
SortedPairs sort_pairs(std::vector<float> z, std::vector<float> s, const uint8_t* y) {
  const size_t N = z.size();
  if (N > static_cast<size_t>(std::numeric_limits<uint32_t>::max()))
    RWKVL_FAIL(kInvalidArgument, "train_predictors: %zu held-out pairs are too many (at most 2^32 - 1)", N);
  SortedPairs out;
  out.zs.resize(N);
  for (size_t i = 0; i < N; ++i) {
    uint32_t u;
    std::memcpy(&u, &z[i], 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending as unsigned
    out.zs[i] = (static_cast<uint64_t>(~u) << 32) | static_cast<uint64_t>(i);  // descending z, then pair order
  }
  z = {};
  std::sort(out.zs.begin(), out.zs.end());
  out.ys.resize(N);
  for (size_t j = 0; j < N; ++j) {
    const size_t i = static_cast<size_t>(out.zs[j] & 0xffffffffu);
    out.ys[j] = y[i];
    uint32_t sb;
    std::memcpy(&sb, &s[i], 4);
    out.zs[j] = (out.zs[j] & 0xffffffff00000000ull) | sb;
  }
  return out;
}

// z, s, y over all held-out pairs; P = number of active pairs (> 0).
Thresholds choose_thresholds(const SortedPairs& sp, int64_t P, double R) {
  const int64_t N = sp.size();
  const std::vector<uint8_t>& ys = sp.ys;
  const int64_t k = needed(P, R);

  std::vector<double> levels;
  for (int i = 0; i < 8; ++i) levels.push_back(0.5 + 0.05 * i);
  for (int i = 0; i < 9; ++i) levels.push_back(0.9 + 0.01 * i);
  for (int i = 0; i < 9; ++i) levels.push_back(0.99 + 0.001 * i);
  std::vector<double> grid{0.0};  // level 0 = the 1-bit predictor alone, level R = the MLP alone
  for (double L : levels)
    if (L < R - 1e-12) grid.push_back(L);
  grid.push_back(R);

  Thresholds out;
  int64_t best = std::numeric_limits<int64_t>::max();
  int64_t i = 0, cum = 0;  // cum = active pairs in [0, i)
  std::vector<float> buf;
  for (size_t g = 0; g < grid.size(); ++g) {
    const double L = grid[g];
    // MLP part: the prefix [0, e) of pairs with z > tm.
    int64_t e = 0, hits_m = 0;
    float tm = kInf;
    if (L > 0) {
      const int64_t kL = needed(P, L);
      while (cum < kL) cum += ys[i++];
      const float zk = sp.z(i - 1);
      hits_m = cum;
      e = i;
      while (e < N && sp.z(e) == zk) hits_m += ys[e++];
      tm = place_below(zk, e < N, e < N ? sp.z(e) : 0.0f);
    }
    // 1-bit part: the largest tb making the OR reach k hits, over the suffix [e, N).
    const int64_t need = k - hits_m;
    float tb = kInf;
    int64_t pred = e;
    if (need > 0) {
      buf.clear();
      for (int64_t j = e; j < N; ++j)
        if (ys[j]) buf.push_back(sp.s(j));
      std::nth_element(buf.begin(), buf.begin() + (need - 1), buf.end(), std::greater<float>());
      const float b = buf[need - 1];
      // Largest suffix score below b, and the suffix pairs at or above b (exactly those with s > tb).
      float nl = -kInf;
      int64_t below = 0, ge = 0;
      for (int64_t j = e; j < N; ++j) {
        const float v = sp.s(j);
        if (v < b) {
          nl = std::max(nl, v);
          ++below;
        } else {
          ++ge;
        }
      }
      tb = place_below(b, below > 0, nl);
      pred += ge;
    }
    if (g == 0 && L == 0) out.tb_alone = tb;
    if (g + 1 == grid.size()) out.tm_alone = tm;
    if (pred < best) {
      best = pred;
      out.tm = tm;
      out.tb = tb;
    }
  }
  return out;
}

// ---- one layer

// Per-channel 1 / RMS of the training inputs (1 where a channel is all zero).
std::vector<float> inverse_rms(const LayerSamples& S, int64_t n_train) {
  const int64_t C = S.C;
  std::vector<float> inv_rms(static_cast<size_t>(C), 1.0f);
  std::vector<double> ss(static_cast<size_t>(C), 0.0);
  for (int64_t t = 0; t < n_train; ++t)
    for (int64_t c = 0; c < C; ++c) ss[c] += static_cast<double>(S.x[t * C + c]) * S.x[t * C + c];
  for (int64_t c = 0; c < C; ++c) {
    const double r = std::sqrt(ss[c] / static_cast<double>(n_train));
    inv_rms[c] = r > 1e-20 ? static_cast<float>(1.0 / r) : 1.0f;
  }
  return inv_rms;
}

struct Mlp {
  int64_t h = 0, C = 0, F = 0;
  AlignedFloats W1, W2;  // h x C (on RMS-normalised inputs), F x h, row-major
};

// The MLP trained with Adam on the weighted logistic loss (mlp_train.h); out.train_loss is the last epoch's mean loss.
Mlp train_mlp(const LayerSamples& S, int64_t li, const PredictorOptions& o, const std::vector<float>& inv_rms,
              int64_t n_train, double pw, LayerPredictor& out, const std::function<void()>& tick) {
  const int64_t C = S.C, F = S.F, h = o.hidden;
  // Initialisation: W1 He-uniform, W2 Xavier-uniform; then each epoch's order from the same generator.
  Rng rng(layer_seed(o.seed, li));
  AlignedFloats W1(static_cast<size_t>(h * C)), W2(static_cast<size_t>(F * h));
  const float a1 = static_cast<float>(std::sqrt(6.0 / static_cast<double>(C)));
  const float a2 = static_cast<float>(std::sqrt(6.0 / static_cast<double>(h + F)));
  for (float& w : W1) w = (2.0f * uniform01(rng) - 1.0f) * a1;
  for (float& w : W2) w = (2.0f * uniform01(rng) - 1.0f) * a2;
  MlpTrainJob job;
  job.x = S.x.data();
  job.active = S.active.data();
  job.inv_rms = inv_rms.data();
  job.C = C;
  job.F = F;
  job.hidden = h;
  job.n_train = n_train;
  job.batch = o.batch;
  job.epochs = o.epochs;
  job.lr = static_cast<float>(o.lr);
  job.pos_weight = static_cast<float>(pw);
  job.shuffle = [&rng](std::vector<int64_t>& order) {
    for (size_t i = order.size(); i > 1;) {  // i = n - 1 down to 1
      --i;
      std::swap(order[i], order[below(rng, static_cast<uint64_t>(i + 1))]);
    }
  };
  job.tick = tick;
  out.train_loss = compress::train_mlp(job, W1.data(), W2.data());
  return Mlp{h, C, F, std::move(W1), std::move(W2)};
}

// The stored weights (f16, or int8 with f16 row scales) into out, and the weights the evaluation uses
// (as stored, transposed for the kernel) into w1t (C x h) and w2t (h x F).
void store_weights(const Mlp& mlp, const std::vector<float>& inv_rms, int64_t li, const PredictorOptions& o,
                   LayerPredictor& out, std::vector<float>& w1t, std::vector<float>& w2t) {
  const int64_t h = mlp.h, C = mlp.C, F = mlp.F;
  auto W1 = [&mlp](int64_t j, int64_t c) { return mlp.W1[static_cast<size_t>(j * mlp.C + c)]; };
  auto W2 = [&mlp](int64_t r, int64_t j) { return mlp.W2[static_cast<size_t>(r * mlp.h + j)]; };
  // Round to f16; the evaluation uses the rounded weights (transposed for the kernel).
  out.w1.resize(static_cast<size_t>(h * C));
  out.w2.resize(static_cast<size_t>(F * h));
  w1t.assign(static_cast<size_t>(C * h), 0.f);
  w2t.assign(static_cast<size_t>(h * F), 0.f);
  for (int64_t j = 0; j < h; ++j)
    for (int64_t c = 0; c < C; ++c) {
      const uint16_t b = f32_to_f16(W1(j, c) * inv_rms[c]);
      out.w1[j * C + c] = b;
      w1t[c * h + j] = f16_to_f32(b);
    }
  for (int64_t r = 0; r < F; ++r)
    for (int64_t j = 0; j < h; ++j) {
      const uint16_t b = f32_to_f16(W2(r, j));
      out.w2[r * h + j] = b;
      w2t[j * F + r] = f16_to_f32(b);
    }
  if (o.int8) {
    // Per-row int8 with f16 scales, from the float weights (as kern::quantize_rows_i8_f16 stores them).
    std::vector<float> w1f(static_cast<size_t>(h * C)), w2f(static_cast<size_t>(F * h));
    for (int64_t j = 0; j < h; ++j)
      for (int64_t c = 0; c < C; ++c) w1f[j * C + c] = W1(j, c) * inv_rms[c];
    for (int64_t r = 0; r < F; ++r)
      for (int64_t j = 0; j < h; ++j) w2f[r * h + j] = W2(r, j);
    for (float w : w1f)
      if (!std::isfinite(w) || std::fabs(w) > 60000.0f * 127)
        RWKVL_FAIL(kInvalidArgument, "train_predictors: layer %lld: MLP weight out of range for int8", static_cast<long long>(li));
    for (float w : w2f)
      if (!std::isfinite(w) || std::fabs(w) > 60000.0f * 127)
        RWKVL_FAIL(kInvalidArgument, "train_predictors: layer %lld: MLP weight out of range for int8", static_cast<long long>(li));
    out.q1.resize(w1f.size());
    out.s1.resize(static_cast<size_t>(h));
    out.q2.resize(w2f.size());
    out.s2.resize(static_cast<size_t>(F));
    kern::quantize_rows_i8_f16(w1f.data(), h, C, out.q1.data(), out.s1.data());
    kern::quantize_rows_i8_f16(w2f.data(), F, h, out.q2.data(), out.s2.data());
    for (int64_t j = 0; j < h; ++j)
      for (int64_t c = 0; c < C; ++c) w1t[c * h + j] = static_cast<float>(out.q1[j * C + c]) * f16_to_f32(out.s1[j]);
    for (int64_t r = 0; r < F; ++r)
      for (int64_t j = 0; j < h; ++j) w2t[j * F + r] = static_cast<float>(out.q2[r * h + j]) * f16_to_f32(out.s2[r]);
  }
  for (float w : w1t)
    if (!std::isfinite(w))
      RWKVL_FAIL(kInvalidArgument,
                 "train_predictors: layer %lld: MLP training diverged "
                 "(non-finite f16 weight); "
                 "try a smaller lr or rescale the inputs",
                 static_cast<long long>(li));
  for (float w : w2t)
    if (!std::isfinite(w))
      RWKVL_FAIL(kInvalidArgument,
                 "train_predictors: layer %lld: MLP training diverged "
                 "(non-finite f16 weight); "
                 "try a smaller lr or rescale the inputs",
                 static_cast<long long>(li));
}

// Held-out scores of both predictors, the thresholds for the recall target and the figures reported. The tokens
// are scored in parallel (each token's scores on their own, the loss summed in token order afterwards), so the
// figures do not depend on the thread count.
void evaluate_holdout(const LayerSamples& S, const PredictorOptions& o, const std::vector<float>& w1t,
                      const std::vector<float>& w2t, int64_t n_train, int64_t n_hold, double pw, LayerPredictor& out,
                      ThreadPool& pool) {
  const int64_t C = S.C, F = S.F, h = o.hidden;
  const int64_t N = n_hold * F;
  std::vector<float> z(static_cast<size_t>(N)), s(static_cast<size_t>(N));
  std::vector<double> token_loss(static_cast<size_t>(n_hold));
  std::vector<int64_t> token_active(static_cast<size_t>(n_hold));
  const uint8_t* y = S.active.data() + n_train * F;
  pool.parallel_for(n_hold, [&](int64_t b, int64_t e) {
    std::vector<float> hid(static_cast<size_t>(h)), table(static_cast<size_t>(C / 8 * 256));
    for (int64_t t = b; t < e; ++t) {
      const float* x = S.x.data() + (n_train + t) * C;
      float* zt = z.data() + t * F;
      mlp_kernel(w1t.data(), w2t.data(), C, h, F, x, hid.data(), zt);
      bits_kernel_tables(out.bits.data(), out.lo.data(), out.step.data(), C, F, x, table.data(), s.data() + t * F);
      const uint8_t* yt = y + t * F;
      double acc = 0.0;
      int64_t act = 0;
      for (int64_t r = 0; r < F; ++r) {
        const double zz = zt[r];
        const double sp = std::max(zz, 0.0) + std::log1p(std::exp(-std::fabs(zz)));  // softplus(z)
        acc += yt[r] ? pw * (sp - zz) : sp;
        act += yt[r];
      }
      token_loss[static_cast<size_t>(t)] = acc;
      token_active[static_cast<size_t>(t)] = act;
    }
  }, 16);
  double hl = 0.0;
  int64_t P = 0;
  for (int64_t t = 0; t < n_hold; ++t) {
    hl += token_loss[static_cast<size_t>(t)];
    P += token_active[static_cast<size_t>(t)];
  }
  out.holdout_loss = hl / static_cast<double>(N);
  out.true_active_frac = static_cast<double>(P) / static_cast<double>(N);

  if (P == 0) {  // nothing to find: predict nothing, recall trivially 1
    out.mlp_logit_thresh = out.bits_thresh = out.mlp_alone_logit_thresh = out.bits_alone_thresh = kInf;
    out.recall_mlp = out.recall_bits = out.recall_ens = 1.0;
    out.frac_mlp = out.frac_bits = out.frac_ens = 0.0;
    return;
  }
  const SortedPairs sp = sort_pairs(std::move(z), std::move(s), y);
  const Thresholds th = choose_thresholds(sp, P, o.recall);
  out.mlp_logit_thresh = th.tm;
  out.bits_thresh = th.tb;
  out.mlp_alone_logit_thresh = th.tm_alone;
  out.bits_alone_thresh = th.tb_alone;
  // Recount with the final thresholds (the figures reported; counts do not depend on the order of the pairs).
  int64_t pm = 0, hm = 0, pb = 0, hb = 0, pe = 0, he = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float zi = sp.z(i), si = sp.s(i);
    const bool yi = sp.ys[static_cast<size_t>(i)] != 0;
    const bool m = zi > th.tm_alone, b = si > th.tb_alone, e = zi > th.tm || si > th.tb;
    pm += m;
    pb += b;
    pe += e;
    hm += m && yi;
    hb += b && yi;
    he += e && yi;
  }
  const double Pd = static_cast<double>(P), Nd = static_cast<double>(N);
  out.recall_mlp = static_cast<double>(hm) / Pd;
  out.recall_bits = static_cast<double>(hb) / Pd;
  out.recall_ens = static_cast<double>(he) / Pd;
  out.frac_mlp = static_cast<double>(pm) / Nd;
  out.frac_bits = static_cast<double>(pb) / Nd;
  out.frac_ens = static_cast<double>(pe) / Nd;
  RWKVL_CHECK(out.recall_mlp >= o.recall && out.recall_bits >= o.recall && out.recall_ens >= o.recall);
  RWKVL_CHECK(pe <= pm && pe <= pb);
}

// One layer's predictor weights (the 1-bit copy, the MLP); w1t / w2t receive the float weights the held-out
// evaluation scores with.
LayerPredictor train_layer(const LayerSamples& S, int64_t li, const PredictorOptions& o,
                           const std::function<void()>& tick, std::vector<float>& w1t, std::vector<float>& w2t) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t C = S.C, F = S.F, h = o.hidden, n = S.n;
  const int64_t n_hold = holdout_count(n, o.holdout), n_train = n - n_hold;
  LayerPredictor out;
  out.C = C;
  out.F = F;
  out.hidden = h;
  out.n_train = n_train;
  out.n_holdout = n_hold;
  build_bits(S.wk.data(), F, C, &out.bits, &out.lo, &out.step);

  // Positive-class weight over the training split.
  int64_t pos = 0;
  for (int64_t i = 0; i < n_train * F; ++i) pos += S.active[i];
  const int64_t neg = n_train * F - pos;
  const double pw = std::clamp(pos > 0 ? static_cast<double>(neg) / static_cast<double>(pos) : 100.0, 1.0, 100.0);
  out.pos_weight = pw;

  // Inputs are trained on per-channel RMS-normalised (a few channels of the residual stream are orders
  // of magnitude larger than the rest, which Adam alone handles badly); the scale is folded into W1
  // afterwards (W1[j][c] / rms[c]), so the stored predictor takes the raw input. No mean shift: the
  // MLP has no biases to absorb it.
  const std::vector<float> inv_rms = inverse_rms(S, n_train);
  const Mlp mlp = train_mlp(S, li, o, inv_rms, n_train, pw, out, tick);
  store_weights(mlp, inv_rms, li, o, out, w1t, w2t);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace

void build_bits(const float* wk, int64_t F, int64_t C, std::vector<uint8_t>* bits, std::vector<float>* lo,
                std::vector<float>* step) {
  if (!wk || !bits || !lo || !step) RWKVL_FAIL(kInvalidArgument, "build_bits: null argument");
  if (F < 1 || C < 1 || C % 8 != 0)
    RWKVL_FAIL(kInvalidArgument,
               "build_bits: shape %lld x %lld: both must be positive and C a "
               "multiple of 8",
               static_cast<long long>(F), static_cast<long long>(C));
  for (int64_t i = 0; i < F * C; ++i)
    if (!std::isfinite(wk[i]))
      RWKVL_FAIL(kInvalidArgument, "build_bits: non-finite value (%g) at element %lld", static_cast<double>(wk[i]),
                 static_cast<long long>(i));
  const int64_t CB = C / 8;
  bits->assign(static_cast<size_t>(F * CB), 0);
  lo->assign(static_cast<size_t>(F), 0.0f);
  step->assign(static_cast<size_t>(F), 0.0f);
  for (int64_t r = 0; r < F; ++r) {
    const float* w = wk + r * C;
    uint8_t* br = bits->data() + r * CB;
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += w[c];
    const double mu = sum / static_cast<double>(C);
    double sh = 0.0, sl = 0.0;
    int64_t nh = 0;
    for (int64_t c = 0; c < C; ++c)
      if (static_cast<double>(w[c]) > mu) {
        br[c / 8] = static_cast<uint8_t>(br[c / 8] | (1u << (c % 8)));
        sh += w[c];
        ++nh;
      } else {
        sl += w[c];
      }
    double hi = mu, lw = mu;
    if (nh > 0 && nh < C) {
      hi = sh / static_cast<double>(nh);
      lw = sl / static_cast<double>(C - nh);
    }
    double e2 = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double a = (br[c / 8] >> (c % 8)) & 1 ? hi : lw;
      const double d = static_cast<double>(w[c]) - a;
      e2 += d * d;
    }
    double e = std::sqrt(e2);
    if (!(e > 0)) e = 1.0;
    (*lo)[r] = static_cast<float>(lw / e);
    (*step)[r] = static_cast<float>((hi - lw) / e);
  }
}

void mlp_logits(const LayerPredictor& p, const float* x, float* z) {
  check_predictor("mlp_logits", p, true);
  if (!x || !z) RWKVL_FAIL(kInvalidArgument, "mlp_logits: null argument");
  const int64_t C = p.C, h = p.hidden, F = p.F;
  std::vector<float> w1t(static_cast<size_t>(C * h)), w2t(static_cast<size_t>(h * F)), hid(static_cast<size_t>(h));
  const bool i8 = !p.q1.empty();
  for (int64_t j = 0; j < h; ++j)
    for (int64_t c = 0; c < C; ++c)
      w1t[c * h + j] = i8 ? static_cast<float>(p.q1[j * C + c]) * f16_to_f32(p.s1[j]) : f16_to_f32(p.w1[j * C + c]);
  for (int64_t r = 0; r < F; ++r)
    for (int64_t j = 0; j < h; ++j)
      w2t[j * F + r] = i8 ? static_cast<float>(p.q2[r * h + j]) * f16_to_f32(p.s2[r]) : f16_to_f32(p.w2[r * h + j]);
  mlp_kernel(w1t.data(), w2t.data(), C, h, F, x, hid.data(), z);
}

void bits_score(const LayerPredictor& p, const float* x, float* s) {
  check_predictor("bits_score", p, false);
  if (!x || !s) RWKVL_FAIL(kInvalidArgument, "bits_score: null argument");
  const int64_t C = p.C, CB = C / 8;
  const float sumx = sum_in_order(x, C);
  for (int64_t r = 0; r < p.F; ++r) {
    const uint8_t* br = p.bits.data() + r * CB;
    float tot = 0.0f;
    for (int64_t j = 0; j < CB; ++j) {
      float part = 0.0f;
      for (int b = 0; b < 8; ++b)
        if ((br[j] >> b) & 1) part += x[8 * j + b];
      tot += part;
    }
    s[r] = combine(p.lo[r], p.step[r], sumx, tot);
  }
}

std::vector<LayerPredictor> train_predictors(const std::vector<LayerSamples>& layers, const PredictorOptions& opt) {
  check_options(opt);
  const int64_t nl = static_cast<int64_t>(layers.size());
  for (int64_t i = 0; i < nl; ++i) check_layer(layers[static_cast<size_t>(i)], opt.first_layer + i, opt);
  std::vector<LayerPredictor> out(static_cast<size_t>(nl));
  if (nl == 0) return out;

  std::mutex mu;
  int64_t done = 0;
  const int64_t total = nl * (opt.epochs + 1);
  const std::function<void()> tick = [&] {
    std::lock_guard<std::mutex> lock(mu);
    ++done;
    if (opt.progress) opt.progress(done, total);
  };
  // Training: layers are claimed one at a time (each trained on one thread), so the results do not depend on the
  // thread count; after a failure no new layer is started (the pool rethrows the first exception).
  std::vector<std::vector<float>> w1t(static_cast<size_t>(nl)), w2t(static_cast<size_t>(nl));
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  ThreadPool pool(std::max(1, opt.n_threads));
  pool.run_on_all([&](int) {
    for (int64_t i = next.fetch_add(1); i < nl && !failed.load(); i = next.fetch_add(1)) {
      try {
        const size_t k = static_cast<size_t>(i);
        out[k] = train_layer(layers[k], opt.first_layer + i, opt, tick, w1t[k], w2t[k]);
      } catch (...) {
        failed.store(true);
        throw;
      }
    }
  });
  // Held-out evaluation one layer at a time, its tokens over the threads: its scores and their order are the
  // largest buffers of the pass (13 bytes per held-out token and neuron), so only one layer's exist at a time.
  for (int64_t i = 0; i < nl; ++i) {
    const size_t k = static_cast<size_t>(i);
    const auto t0 = std::chrono::steady_clock::now();
    const LayerSamples& S = layers[k];
    const int64_t n_hold = holdout_count(S.n, opt.holdout);
    evaluate_holdout(S, opt, w1t[k], w2t[k], S.n - n_hold, n_hold, out[k].pos_weight, out[k], pool);
    w1t[k] = {};
    w2t[k] = {};
    tick();
    out[k].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return out;
}

}  // namespace rwkvl::compress
