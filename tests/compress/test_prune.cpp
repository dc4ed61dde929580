// Training-free pruning (issue #16, src/compress/prune.cpp): the three masks against hand-computed cases and
// direct definitions, DSnoT's prune-and-grow against its stated objective (each row's expected reconstruction
// error shrinks, the row keeps its count, only swaps of the right sign happen), the pass on synthetic models
// (exact sparsity, pass record, the 2:4 packed file runs as the dense matrix with zeros does), and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "compress/pipeline.h"
#include "compress/prune.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/model.h"
#include "runtime/session.h"
#include "compare.h"
#include "test_util.h"

namespace rwkvl {
namespace {

using compress::ColumnStats;
using compress::DsnotOptions;
using compress::NMPattern;
using compress::PruneMethod;

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Column statistics of T x cols inputs whose column j has mean mu[j] and spread sd[j].
ColumnStats stats_of(const std::vector<float>& X, int64_t cols) {
  ColumnStats s(cols);
  s.add(X.data(), X.size() / static_cast<size_t>(cols));
  return s;
}

TEST(Prune, MagnitudeKeepsTheLargestOfTheWholeMatrix) {
  // 2 x 4; 50 %: the four smallest |W| of the matrix go, whichever row they are in.
  const float W[8] = {0.1f, -5.0f, 0.2f, 4.0f,  //
                      3.0f, -0.3f, 2.0f, -1.0f};
  const auto keep = compress::prune_mask(W, 2, 4, PruneMethod::kMagnitude, 0.5, {}, nullptr, {});
  const std::vector<uint8_t> want = {0, 1, 0, 1, 1, 0, 1, 0};
  EXPECT_EQ(keep, want);
}

TEST(Prune, WandaRanksEachRowByWeightTimesInputNorm) {
  // Row 0 = {1, 1, 1, 1}: by |W| alone the order is a tie; the inputs' norms decide: column 2 has the largest
  // E[x^2], then 0, 3, 1. With 50 % per row the two columns of smallest |W| * sqrt(E[x^2]) go.
  const float W[8] = {1, 1, 1, 1,  //
                      8, 1, 1, 1};
  std::vector<float> X = {2, 0.5f, 3, 1,  //
                          -2, 0.5f, -3, 1};  // E[x^2] = 4, 0.25, 9, 1
  const ColumnStats st = stats_of(X, 4);
  EXPECT_DOUBLE_EQ(st.meansq(2), 9.0);
  EXPECT_DOUBLE_EQ(st.mean(0), 0.0);
  const auto keep = compress::prune_mask(W, 2, 4, PruneMethod::kWanda, 0.5, {}, &st, {});
  // row 0 scores 2, 0.5, 3, 1 -> keep columns 0 and 2; row 1 scores 16, 0.5, 3, 1 -> keep 0 and 2
  const std::vector<uint8_t> want = {1, 0, 1, 0, 1, 0, 1, 0};
  EXPECT_EQ(keep, want);
  // Magnitude keeps row 1's 8 and three of the ones (ties by index): different from Wanda.
  const auto mag = compress::prune_mask(W, 2, 4, PruneMethod::kMagnitude, 0.5, {}, nullptr, {});
  EXPECT_NE(mag, keep);
}

TEST(Prune, NMPatternKeepsNOfEveryM) {
  const int64_t rows = 9, cols = 64;
  const std::vector<float> W = randn(static_cast<size_t>(rows * cols), 3);
  const std::vector<float> X = randn(static_cast<size_t>(50 * cols), 4);
  const ColumnStats st = stats_of(X, cols);
  for (NMPattern p : {NMPattern{2, 4}, NMPattern{4, 8}, NMPattern{1, 4}}) {
    for (PruneMethod m : {PruneMethod::kMagnitude, PruneMethod::kWanda, PruneMethod::kDsnot}) {
      SCOPED_TRACE(p.str() + " " + compress::prune_method_name(m));
      int64_t swaps = 0;
      const auto keep = compress::prune_mask(W.data(), rows, cols, m, 0, p, &st, {}, &swaps);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < cols; b += p.m) {
          int kept = 0;
          for (int k = 0; k < p.m; ++k) kept += keep[static_cast<size_t>(r * cols + b + k)];
          ASSERT_EQ(kept, p.n) << "row " << r << " group " << b;
        }
      if (m != PruneMethod::kDsnot) {
        EXPECT_EQ(swaps, 0);
      }
    }
  }
  // 2:4 magnitude: the two largest |W| of every group, by definition.
  const auto keep = compress::prune_mask(W.data(), rows, cols, PruneMethod::kMagnitude, 0, {2, 4}, nullptr, {});
  for (size_t g = 0; g < W.size(); g += 4) {
    std::vector<int> idx = {0, 1, 2, 3};
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return std::fabs(W[g + a]) > std::fabs(W[g + b]); });
    EXPECT_TRUE(keep[g + idx[0]] && keep[g + idx[1]] && !keep[g + idx[2]] && !keep[g + idx[3]]) << g;
  }
}

// The expected reconstruction error of a row: sum over pruned weights of W_j E[x_j].
double row_error(const float* W, const uint8_t* keep, const ColumnStats& st, int64_t cols) {
  double e = 0;
  for (int64_t j = 0; j < cols; ++j)
    if (!keep[j]) e += static_cast<double>(W[j]) * st.mean(static_cast<size_t>(j));
  return e;
}

TEST(Prune, DsnotHandComputedSwap) {
  // One row of 4, 50 %. Inputs: columns 0..3 have means 1, 1, -1, 0.1 and E[x^2] 1.01, 4, 1.01, 1 (var 0.01,
  // 3, 0.01, 0.99). W = {1, 0.6, -0.4, 2}.
  // Wanda scores |W| sqrt(E[x^2]): 1.005, 1.2, 0.402, 2 -> prune columns 2 and 0.
  // Expected error: W0 m0 + W2 m2 = 1 + 0.4 = 1.4 > 0.
  // Grow: the pruned weight of largest W m / var: column 0 (1 / 0.01 = 100; column 2: 0.4 / 0.01 = 40).
  // Prune: the kept weight with W m < 0 and the smallest Wanda score: none (0.6 and 0.2 are positive) -> stop.
  // So no swap; with column 3's mean -0.1 instead (W3 m3 = -0.2 < 0), column 3 is pruned for column 0: error
  // 1.4 - 1 + (-0.2) = 0.2 keeps its sign, |0.2| < 1.4. Next cycle: grow column 2 (0.4), prune: no negative left.
  const float W[4] = {1.0f, 0.6f, -0.4f, 2.0f};
  auto make = [](double m3) {
    ColumnStats st(4);
    st.n = 1;
    const double mean[4] = {1, 1, -1, m3}, msq[4] = {1.01, 4, 1.01, 1};
    for (int j = 0; j < 4; ++j) {
      st.sum[static_cast<size_t>(j)] = mean[j];
      st.sumsq[static_cast<size_t>(j)] = msq[j];
    }
    return st;
  };
  const ColumnStats a = make(0.1), b = make(-0.1);
  int64_t swaps = -1;
  auto keep = compress::prune_mask(W, 1, 4, PruneMethod::kDsnot, 0.5, {}, &a, {}, &swaps);
  EXPECT_EQ(swaps, 0);
  EXPECT_EQ(keep, (std::vector<uint8_t>{0, 1, 0, 1}));
  keep = compress::prune_mask(W, 1, 4, PruneMethod::kDsnot, 0.5, {}, &b, {}, &swaps);
  EXPECT_EQ(swaps, 1);
  EXPECT_EQ(keep, (std::vector<uint8_t>{1, 1, 0, 0}));
  EXPECT_NEAR(row_error(W, keep.data(), b, 4), 0.2, 1e-7);  // W is float32 (0.4f)
  // Wanda alone leaves the error at 1.4.
  const auto wanda = compress::prune_mask(W, 1, 4, PruneMethod::kWanda, 0.5, {}, &b, {});
  EXPECT_NEAR(row_error(W, wanda.data(), b, 4), 1.4, 1e-7);
}

TEST(Prune, DsnotShrinksEveryRowsExpectedErrorAndKeepsItsCount) {
  const int64_t rows = 40, cols = 128;
  const std::vector<float> W = randn(static_cast<size_t>(rows * cols), 11);
  std::vector<float> X = randn(static_cast<size_t>(300 * cols), 12);
  for (size_t i = 0; i < X.size(); ++i) X[i] += 0.5f * static_cast<float>((i % static_cast<size_t>(cols)) % 5) - 1.0f;
  const ColumnStats st = stats_of(X, cols);
  const auto wanda = compress::prune_mask(W.data(), rows, cols, PruneMethod::kWanda, 0.6, {}, &st, {});
  int64_t swaps = 0;
  const auto ds = compress::prune_mask(W.data(), rows, cols, PruneMethod::kDsnot, 0.6, {}, &st, {}, &swaps);
  EXPECT_GT(swaps, rows);  // it did something
  double sum_w = 0, sum_d = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t o = static_cast<size_t>(r * cols);
    const int kw = std::accumulate(wanda.begin() + static_cast<std::ptrdiff_t>(o), wanda.begin() + static_cast<std::ptrdiff_t>(o + cols), 0);
    const int kd = std::accumulate(ds.begin() + static_cast<std::ptrdiff_t>(o), ds.begin() + static_cast<std::ptrdiff_t>(o + cols), 0);
    ASSERT_EQ(kw, kd) << "row " << r;
    ASSERT_EQ(kw, cols - static_cast<int64_t>(std::floor(0.6 * cols)));
    const double ew = row_error(W.data() + o, wanda.data() + o, st, cols);
    const double ed = row_error(W.data() + o, ds.data() + o, st, cols);
    ASSERT_LE(std::fabs(ed), std::fabs(ew) + 1e-9) << "row " << r;
    EXPECT_TRUE(ed == 0 || ew == 0 || (ed > 0) == (ew > 0)) << "row " << r << ": same sign as the paper asks";
    sum_w += std::fabs(ew);
    sum_d += std::fabs(ed);
  }
  EXPECT_LT(sum_d, 0.5 * sum_w);
  // No cycles: Wanda's mask.
  DsnotOptions none;
  none.max_cycles = 0;
  EXPECT_EQ(compress::prune_mask(W.data(), rows, cols, PruneMethod::kDsnot, 0.6, {}, &st, none), wanda);
}

TEST(Prune, PatternParsing) {
  EXPECT_EQ(compress::parse_nm_pattern("2:4").n, 2);
  EXPECT_EQ(compress::parse_nm_pattern("4:8").m, 8);
  EXPECT_FALSE(compress::parse_nm_pattern("").structured());
  for (const char* bad : {"4:4", "5:4", "0:4", "2:", ":4", "2-4", "2:4:8", "a:b", "1:65", "-1:4"})
    EXPECT_THROW(compress::parse_nm_pattern(bad), Error) << bad;
}

// ---------------------------------------------------------------------------------------------- the pass

ModelConfig cfg5() {
  ModelConfig c;
  c.arch_major = 5;
  c.arch_minor = 2;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_vocab = 256;
  return c;
}

std::vector<int32_t> tokens(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(g() % 256);
  return t;
}

std::vector<float> logits(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks) {
  SessionParams sp;
  sp.threads = 1;
  Session s(m, sp);
  State st;
  st.reset(m->config());
  std::vector<float> out(toks.size() * static_cast<size_t>(m->config().n_vocab));
  s.eval(st, toks.data(), toks.size(), 8, nullptr, out.data());
  return out;
}

compress::PruneOptions opts(PruneMethod m, double sparsity, NMPattern p = {}) {
  compress::PruneOptions o;
  o.method = m;
  o.sparsity = sparsity;
  o.pattern = p;
  if (m != PruneMethod::kMagnitude) o.calib = tokens(200, 5);
  o.calib_name = "random";
  o.n_threads = 2;
  o.chunk = 16;
  return o;
}

TEST(PrunePass, ExactSparsityRecordAndAlreadyPruned) {
  const auto m = synth_model(cfg5(), "f16", 1);
  for (PruneMethod meth : {PruneMethod::kMagnitude, PruneMethod::kWanda, PruneMethod::kDsnot}) {
    SCOPED_TRACE(compress::prune_method_name(meth));
    compress::PruneReport rep;
    const auto out = compress::prune(m, opts(meth, 0.5), &rep);
    ASSERT_EQ(rep.matrices.size(), 2u * compress::architecture_targets(m->config()).size());
    EXPECT_EQ(rep.zeros * 2, rep.weights);
    for (const auto& mr : rep.matrices) {
      const Tensor& t = out->tensors().at(mr.name + ".weight");
      EXPECT_EQ(t.dtype, DType::kF16M);  // unstructured 50 %: masked is smaller than dense
      const std::vector<float> v = t.to_f32();
      int64_t z = 0;
      for (float x : v) z += x == 0.0f;
      EXPECT_EQ(z, mr.zeros) << mr.name;
      if (meth != PruneMethod::kMagnitude) {
        EXPECT_EQ(z * 2, mr.rows * mr.cols) << mr.name;  // per row: exactly half
        EXPECT_GE(mr.rel_error, 0.0);
      }
    }
    ASSERT_FALSE(out->passes().empty());
    EXPECT_EQ(out->passes().back()["prune"]["method"], compress::prune_method_name(meth));
    // Once pruned, pruning again is refused, naming the matrix.
    try {
      compress::prune(out, opts(PruneMethod::kMagnitude, 0.3), nullptr);
      ADD_FAILURE() << "pruned twice";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("already pruned"), std::string::npos) << e.what();
    }
  }
}

TEST(PrunePass, PackedTwoFourRunsLikeTheDenseMatrixWithZeros) {
  const auto m = synth_model(cfg5(), "f16", 2);
  compress::PruneOptions packed = opts(PruneMethod::kWanda, 0, {2, 4}), dense = packed;
  dense.store = compress::PruneStore::kDense;
  compress::PruneReport rp, rd;
  const auto mp = compress::prune(m, packed, &rp);
  const auto md = compress::prune(m, dense, &rd);
  for (size_t i = 0; i < rp.matrices.size(); ++i) {
    const auto& a = rp.matrices[i];
    EXPECT_EQ(a.dtype, "f16_2of4");
    EXPECT_EQ(a.bytes_after * 64, a.bytes_before * 36) << a.name;  // 0.5625x the f16 bytes
    const std::vector<float> vp = mp->tensors().at(a.name + ".weight").to_f32();
    const std::vector<float> vd = md->tensors().at(a.name + ".weight").to_f32();
    ASSERT_EQ(vp, vd) << a.name;  // the same values
    EXPECT_TRUE(is_2of4(vd.data(), a.rows, a.cols));
  }
  const std::vector<int32_t> toks = tokens(40, 9);
  const std::vector<float> lp = logits(mp, toks), ld = logits(md, toks);
  EXPECT_LE(test::max_abs_diff(lp, ld), 1e-4f * std::max(1.0f, [&] { float a = 0; for (float v : ld) a = std::max(a, std::fabs(v)); return a; }()));
  // Saved and loaded: the same logits.
  const std::string path = test::temp_dir() + "/p24.rwkvl";
  mp->save_native(path);
  const auto back = Model::load(path, {});
  EXPECT_EQ(back->layer(0).ffn_k.ref.dtype, DType::kF16S24);
  EXPECT_EQ(test::max_abs_diff(logits(back, toks), lp), 0.0f);
}

// Unstructured pruning stored masked (a keep bit per column + the kept f16 values): the same values and logits as
// the dense matrices with their zeros, the bytes the layout says, the same after a save and load; masked only where
// smaller than dense unless --prune-store packed asks for it.
TEST(PrunePass, MaskedUnstructuredRunsLikeTheDenseMatrixWithZeros) {
  const auto m = synth_model(cfg5(), "f16", 4);
  compress::PruneOptions masked = opts(PruneMethod::kWanda, 0.5), dense = masked;
  dense.store = compress::PruneStore::kDense;
  compress::PruneReport rm, rd;
  const auto mm = compress::prune(m, masked, &rm);
  const auto md = compress::prune(m, dense, &rd);
  EXPECT_EQ(rm.pass["prune"]["store"], "f16_masked");
  EXPECT_EQ(rd.pass["prune"]["store"], "dense");
  for (size_t i = 0; i < rm.matrices.size(); ++i) {
    const auto& a = rm.matrices[i];
    EXPECT_EQ(a.dtype, "f16_masked");
    // Wanda keeps exactly half of every row: cols/8 mask bytes + cols/2 f16 values per row, 0.5625x the f16 bytes.
    EXPECT_EQ(a.bytes_after, static_cast<uint64_t>(a.rows * (a.cols / 8 + a.cols))) << a.name;
    const Tensor& t = mm->tensors().at(a.name + ".weight");
    EXPECT_EQ(t.dtype, DType::kF16M);
    EXPECT_EQ(t.masked_kept(), a.cols / 2);
    ASSERT_EQ(t.to_f32(), md->tensors().at(a.name + ".weight").to_f32()) << a.name;  // the same values
  }
  const std::vector<int32_t> toks = tokens(40, 9);
  const std::vector<float> lm = logits(mm, toks), ld = logits(md, toks);
  float big = 0;
  for (float v : ld) big = std::max(big, std::fabs(v));
  EXPECT_LE(test::max_abs_diff(lm, ld), 1e-4f * std::max(1.0f, big));
  const std::string path = test::temp_dir() + "/pm.rwkvl";
  mm->save_native(path);
  const auto back = Model::load(path, {});
  EXPECT_EQ(back->layer(0).ffn_k.ref.dtype, DType::kF16M);
  EXPECT_EQ(test::max_abs_diff(logits(back, toks), lm), 0.0f);

  // 5 %: a bit per column plus 95 % of the values is more than dense f16, so auto stays dense; packed insists.
  compress::PruneOptions low = opts(PruneMethod::kMagnitude, 0.05), forced = low;
  forced.store = compress::PruneStore::kPacked;
  compress::PruneReport rl, rf;
  compress::prune(m, low, &rl);
  compress::prune(m, forced, &rf);
  for (const auto& a : rl.matrices) EXPECT_EQ(a.dtype, "f16") << a.name;
  for (const auto& a : rf.matrices) {
    EXPECT_EQ(a.dtype, "f16_masked") << a.name;
    EXPECT_GT(a.bytes_after, a.bytes_before) << a.name;
  }
  EXPECT_EQ(rl.pass["prune"]["store"], "dense");
}

// int8 / int4 on the kept values (what `compress --quant` does to a pruned file, via store_sparse_matrix): the int8
// row scale of the kept values is that of the dense row with its zeros, so i8_masked equals dense int8 exactly.
TEST(PrunePass, QuantisedKeptValuesEqualDenseInt8) {
  const int64_t rows = 48, cols = 96;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::mt19937 g(3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (g() % 3 == 0) ? std::uniform_real_distribution<float>(-1, 1)(g) : 0.0f;
  const auto [mq, ms] = store_sparse_matrix("w", w.data(), rows, cols, DType::kI8, true);
  const auto [dq, ds] = quantize_matrix("w", w.data(), rows, cols, DType::kI8, true);
  ASSERT_EQ(mq.dtype, DType::kI8M);
  EXPECT_LT(mq.nbytes, dq.nbytes);
  EXPECT_EQ(matrix_to_f32(mq, &ms), matrix_to_f32(dq, &ds));
  const auto [q4, s4] = store_sparse_matrix("w", w.data(), rows, cols, DType::kQ4, true);
  ASSERT_EQ(q4.dtype, DType::kQ4M);
  EXPECT_EQ(q4.masked_kept() % 32, 0);
  const std::vector<float> back = q4.to_f32();
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] == 0.0f) ASSERT_EQ(back[i], 0.0f) << i;  // the pruned weights stay exactly zero
    else ASSERT_NEAR(back[i], w[i], 2.0 / 15) << i;    // int4 of the kept values: within a step of their group
  }
  // Dense rows (nothing pruned) stay dense: the mask would only add bytes.
  std::vector<float> full(static_cast<size_t>(rows * cols), 0.5f);
  EXPECT_EQ(store_sparse_matrix("w", full.data(), rows, cols, DType::kI8, true).first.dtype, DType::kI8);
}

TEST(PrunePass, BadOptionsAreRefusedBeforeAnyWork) {
  const auto m = synth_model(cfg5(), "f16", 3);
  auto expect_fail = [&](compress::PruneOptions o, const char* needle) {
    try {
      compress::validate_prune(*m, o);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_fail(opts(PruneMethod::kWanda, 0), "(0, 1)");
  expect_fail(opts(PruneMethod::kWanda, 1), "(0, 1)");
  expect_fail(opts(PruneMethod::kWanda, -0.5), "(0, 1)");
  expect_fail(opts(PruneMethod::kWanda, std::nan("")), "(0, 1)");
  expect_fail(opts(PruneMethod::kWanda, 0, {4, 4}), "below M");
  expect_fail(opts(PruneMethod::kWanda, 0.3, {2, 4}), "contradicts");
  compress::PruneOptions nocal = opts(PruneMethod::kDsnot, 0.5);
  nocal.calib.clear();
  expect_fail(nocal, "calibration");
  // int8 matrices: prune before quantising.
  const auto q = synth_model(cfg5(), "i8", 3);
  try {
    compress::validate_prune(*q, opts(PruneMethod::kMagnitude, 0.5));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("before quantising"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkvl
