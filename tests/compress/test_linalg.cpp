// Low-rank factorisation (src/compress/linalg.h) against independent references built here: matrices
// with known singular values from random orthogonal factors, Eckart-Young errors, and for the
// activation-aware SVD the singular values of W L computed with Eigen's JacobiSVD in this file.
#include "compress/linalg.h"

#include <gtest/gtest.h>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/kernels.h"

namespace {

using rwkvl::linalg::Gram;
using rwkvl::linalg::LowRank;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

MatrixXd gaussian(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::normal_distribution<double> nd;
  MatrixXd m(rows, cols);
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) m(i, j) = nd(rng);
  return m;
}

// n x k matrix with orthonormal columns: Q of the QR decomposition of a Gaussian matrix.
MatrixXd random_orthonormal(int64_t n, int64_t k, std::mt19937_64& rng) {
  Eigen::HouseholderQR<MatrixXd> qr(gaussian(n, k, rng));
  return qr.householderQ() * MatrixXd::Identity(n, k);
}

// Row-major float copy of a double matrix.
std::vector<float> to_float(const MatrixXd& m) {
  std::vector<float> v(static_cast<size_t>(m.size()));
  Eigen::Map<RowMatF>(v.data(), m.rows(), m.cols()) = m.cast<float>();
  return v;
}

MatrixXd to_double(const std::vector<float>& v, int64_t rows, int64_t cols) {
  return Eigen::Map<const RowMatF>(v.data(), rows, cols).cast<double>();
}

MatrixXd product(const LowRank& f) {
  return to_double(f.b, f.rows, f.rank) * to_double(f.a, f.rank, f.cols);
}

double max_abs(const MatrixXd& m) { return m.cwiseAbs().maxCoeff(); }

// A matrix W = U diag(s) V^T with known, distinct, decaying singular values.
struct Known {
  MatrixXd u, v;
  VectorXd s;
  MatrixXd w() const { return u * s.asDiagonal() * v.transpose(); }
};

Known make_known(int64_t rows, int64_t cols, std::mt19937_64& rng) {
  const int64_t k = std::min(rows, cols);
  Known kn;
  kn.u = random_orthonormal(rows, k, rng);
  kn.v = random_orthonormal(cols, k, rng);
  kn.s.resize(k);
  for (int64_t i = 0; i < k; ++i) kn.s(i) = 3.0 * std::exp(-3.0 * static_cast<double>(i) / static_cast<double>(k)) + 0.05;
  return kn;
}

// Inputs with a correlated, anisotropic second moment: X = Z M (T x n), M mixing with decaying scales.
std::vector<float> correlated_inputs(int64_t T, int64_t n, std::mt19937_64& rng) {
  MatrixXd mix = gaussian(n, n, rng) / std::sqrt(static_cast<double>(n));
  for (int64_t i = 0; i < n; ++i) mix.row(i) *= 0.2 + 2.0 * std::exp(-4.0 * static_cast<double>(i) / n);
  mix += MatrixXd::Identity(n, n) * 0.3;
  return to_float(gaussian(T, n, rng) * mix);
}

// Independent second moment of float rows, in double (naive triple loop).
MatrixXd naive_gram(const std::vector<float>& x, int64_t T, int64_t n) {
  MatrixXd g = MatrixXd::Zero(n, n);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        g(i, j) += static_cast<double>(x[t * n + i]) * static_cast<double>(x[t * n + j]);
  return g;
}

MatrixXd gram_matrix(const Gram& g) { return Eigen::Map<const MatrixXd>(g.data(), g.n(), g.n()); }

template <typename F>
void expect_invalid(F&& f) {
  try {
    f();
    ADD_FAILURE() << "expected rwkvl::Error";
  } catch (const rwkvl::Error& e) {
    EXPECT_EQ(e.code(), rwkvl::ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()), "");
  }
}

// ---- plain truncated SVD

struct Shape {
  int64_t rows, cols;
};
// Square, mildly rectangular (direct BDCSVD) and far-from-square (QR first) in both orientations;
// 300 rows also cross the 256-row blocks of the error functions.
const Shape kShapes[] = {{64, 64}, {48, 36}, {50, 80}, {300, 120}, {40, 100}};

TEST(Linalg, SvdTruncateMatchesKnownFactors) {
  std::mt19937_64 rng(1);
  for (const Shape sh : kShapes) {
    SCOPED_TRACE(testing::Message() << sh.rows << " x " << sh.cols);
    const Known kn = make_known(sh.rows, sh.cols, rng);
    const std::vector<float> w = to_float(kn.w());
    const int64_t k = kn.s.size();
    for (int64_t r : {int64_t{1}, int64_t{5}, k / 2, k - 1}) {
      SCOPED_TRACE(testing::Message() << "rank " << r);
      const LowRank f = rwkvl::linalg::svd_truncate(w.data(), sh.rows, sh.cols, r);
      ASSERT_EQ(f.rows, sh.rows);
      ASSERT_EQ(f.cols, sh.cols);
      ASSERT_EQ(f.rank, r);
      ASSERT_EQ(f.a.size(), static_cast<size_t>(r * sh.cols));
      ASSERT_EQ(f.b.size(), static_cast<size_t>(sh.rows * r));
      EXPECT_TRUE(f.d.empty());
      // B·A == U_r diag(s_r) V_r^T
      const MatrixXd ref = kn.u.leftCols(r) * kn.s.head(r).asDiagonal() * kn.v.leftCols(r).transpose();
      EXPECT_LE(max_abs(product(f) - ref), 1e-5 * max_abs(ref));
      // Eckart-Young: the squared Frobenius error is the discarded energy.
      const double discarded = kn.s.tail(k - r).squaredNorm();
      EXPECT_NEAR(rwkvl::linalg::frobenius_error(w.data(), f), discarded, 1e-5 * discarded);
      // B and A each carry sqrt(s): column norms of B and row norms of A.
      const MatrixXd b = to_double(f.b, f.rows, f.rank), a = to_double(f.a, f.rank, f.cols);
      for (int64_t i = 0; i < r; ++i) {
        EXPECT_NEAR(b.col(i).norm(), std::sqrt(kn.s(i)), 1e-5 * std::sqrt(kn.s(i)));
        EXPECT_NEAR(a.row(i).norm(), std::sqrt(kn.s(i)), 1e-5 * std::sqrt(kn.s(i)));
      }
    }
  }
}

TEST(Linalg, SvdFullRankReconstructs) {
  std::mt19937_64 rng(2);
  for (const Shape sh : kShapes) {
    SCOPED_TRACE(testing::Message() << sh.rows << " x " << sh.cols);
    const Known kn = make_known(sh.rows, sh.cols, rng);
    const std::vector<float> w = to_float(kn.w());
    const LowRank f = rwkvl::linalg::svd_truncate(w.data(), sh.rows, sh.cols, std::min(sh.rows, sh.cols));
    const std::vector<float> rec = rwkvl::linalg::reconstruct(f);
    ASSERT_EQ(rec.size(), w.size());
    const MatrixXd wd = to_double(w, sh.rows, sh.cols);
    EXPECT_LE(max_abs(to_double(rec, sh.rows, sh.cols) - wd), 1e-5 * max_abs(wd));
    EXPECT_LE(rwkvl::linalg::frobenius_error(w.data(), f), 1e-10 * wd.squaredNorm());
  }
}

TEST(Linalg, ReconstructAddsDiagonal) {
  LowRank f;
  f.rows = f.cols = 2;
  f.rank = 1;
  f.b = {1, 2};       // 2 x 1
  f.a = {3, 4};       // 1 x 2
  f.d = {10, 20};
  EXPECT_EQ(rwkvl::linalg::reconstruct(f), (std::vector<float>{13, 4, 6, 28}));
}

// ---- Gram

TEST(Linalg, GramMatchesNaiveLoop) {
  std::mt19937_64 rng(3);
  for (const auto& [T, n] : {std::pair<int64_t, int64_t>{37, 5}, {600, 7}, {1, 1}, {40, 130}}) {
    SCOPED_TRACE(testing::Message() << "T=" << T << " n=" << n);
    const std::vector<float> x = to_float(gaussian(T, n, rng));
    Gram g(n);
    EXPECT_EQ(g.n(), n);
    EXPECT_EQ(g.count(), 0);
    g.add(x.data(), T);
    EXPECT_EQ(g.count(), T);
    const MatrixXd ref = naive_gram(x, T, n);
    const double scale = ref.diagonal().maxCoeff();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_NEAR(g.data()[i * n + j], ref(i, j), 1e-12 * scale) << i << "," << j;
        EXPECT_EQ(g.data()[i * n + j], g.data()[j * n + i]);  // full symmetric storage
      }
    g.add(x.data(), 0);  // no-op
    EXPECT_EQ(g.count(), T);
  }
}

TEST(Linalg, GramMergeEqualsOneAccumulation) {
  std::mt19937_64 rng(4);
  const int64_t n = 6, T = 50, split = 19;
  const std::vector<float> x = to_float(gaussian(T, n, rng));
  Gram all(n), g1(n), g2(n);
  all.add(x.data(), T);
  g1.add(x.data(), split);
  g2.add(x.data() + split * n, T - split);
  g1.merge(g2);
  EXPECT_EQ(g1.count(), T);
  EXPECT_LE(max_abs(gram_matrix(g1) - gram_matrix(all)), 1e-12 * gram_matrix(all).diagonal().maxCoeff());
  Gram other(n + 1);
  expect_invalid([&] { g1.merge(other); });
}

TEST(Linalg, GramRejectsBadInput) {
  expect_invalid([] { Gram g(0); });
  Gram g(3);
  std::vector<float> x = {1, 2, 3, 4, std::numeric_limits<float>::quiet_NaN(), 6};
  expect_invalid([&] { g.add(x.data(), 2); });
  EXPECT_EQ(g.count(), 0);  // unchanged by a rejected add
  EXPECT_EQ(gram_matrix(g).squaredNorm(), 0.0);
  expect_invalid([&] { g.add(x.data(), -1); });
  expect_invalid([&] { g.add(nullptr, 2); });
}

// ---- activation-aware SVD

TEST(Linalg, AsvdWithScaledIdentityEqualsSvd) {
  std::mt19937_64 rng(5);
  for (const Shape sh : kShapes) {
    SCOPED_TRACE(testing::Message() << sh.rows << " x " << sh.cols);
    const Known kn = make_known(sh.rows, sh.cols, rng);
    const std::vector<float> w = to_float(kn.w());
    // G = c I from the rows sqrt(c) e_i.
    std::vector<float> x(static_cast<size_t>(sh.cols * sh.cols), 0.0f);
    for (int64_t i = 0; i < sh.cols; ++i) x[i * sh.cols + i] = 1.5f;
    Gram g(sh.cols);
    g.add(x.data(), sh.cols);
    for (double damp : {0.0, 0.01}) {
      for (int64_t r : {int64_t{1}, int64_t{7}, std::min(sh.rows, sh.cols) - 2}) {
        SCOPED_TRACE(testing::Message() << "rank " << r << " damp " << damp);
        const MatrixXd svd = product(rwkvl::linalg::svd_truncate(w.data(), sh.rows, sh.cols, r));
        const MatrixXd asvd = product(rwkvl::linalg::asvd_truncate(w.data(), sh.rows, sh.cols, r, g, damp));
        EXPECT_LE(max_abs(asvd - svd), 1e-5 * max_abs(svd));
      }
    }
  }
}

TEST(Linalg, AsvdOutputErrorIsOptimalForCorrelatedInputs) {
  std::mt19937_64 rng(6);
  for (const Shape sh : {Shape{48, 40}, Shape{100, 40}, Shape{40, 90}}) {
    SCOPED_TRACE(testing::Message() << sh.rows << " x " << sh.cols);
    const int64_t n = sh.cols, T = 4 * n;
    const std::vector<float> w = to_float(gaussian(sh.rows, sh.cols, rng));
    const std::vector<float> x = correlated_inputs(T, n, rng);
    Gram g(n);
    g.add(x.data(), T);

    // Reference: singular values of W L with G = L L^T (no damping), computed independently.
    const MatrixXd gref = naive_gram(x, T, n);
    Eigen::LLT<MatrixXd> llt(gref);
    ASSERT_EQ(llt.info(), Eigen::Success);
    const MatrixXd wl = to_double(w, sh.rows, sh.cols) * MatrixXd(llt.matrixL());
    const VectorXd sigma = Eigen::JacobiSVD<MatrixXd>(wl).singularValues();
    const double energy = rwkvl::linalg::output_energy(w.data(), sh.rows, sh.cols, g);
    EXPECT_NEAR(energy, sigma.squaredNorm(), 1e-9 * energy);  // trace(W G W^T) = ||W L||_F^2
    EXPECT_NEAR(energy, (to_double(w, sh.rows, sh.cols) * gref * to_double(w, sh.rows, sh.cols).transpose()).trace(),
                1e-9 * energy);

    const int64_t k = std::min(sh.rows, sh.cols);
    double prev = std::numeric_limits<double>::infinity();
    for (int64_t r = 1; r <= k; ++r) {
      SCOPED_TRACE(testing::Message() << "rank " << r);
      const LowRank fa = rwkvl::linalg::asvd_truncate(w.data(), sh.rows, sh.cols, r, g, 0.0);
      const LowRank fs = rwkvl::linalg::svd_truncate(w.data(), sh.rows, sh.cols, r);
      const double ea = rwkvl::linalg::output_error(w.data(), fa, g);
      const double es = rwkvl::linalg::output_error(w.data(), fs, g);
      const double expect = sigma.tail(k - r).squaredNorm();
      EXPECT_NEAR(ea, expect, 1e-5 * expect + 1e-9 * energy);
      EXPECT_LE(ea, es * (1 + 1e-6) + 1e-9 * energy);
      EXPECT_LE(ea, prev * (1 + 1e-6) + 1e-9 * energy);  // decreases with rank
      prev = ea;
    }
  }
}

TEST(Linalg, AsvdHandlesRankDeficientInputs) {
  // Fewer inputs than columns: G is singular; damping (or the retry from damp = 0) makes it PD.
  std::mt19937_64 rng(7);
  const int64_t rows = 30, cols = 24, T = 10;
  const std::vector<float> w = to_float(gaussian(rows, cols, rng));
  const std::vector<float> x = to_float(gaussian(T, cols, rng));
  Gram g(cols);
  g.add(x.data(), T);
  for (double damp : {0.0, 1e-3}) {
    const LowRank f = rwkvl::linalg::asvd_truncate(w.data(), rows, cols, 8, g, damp);
    for (float v : f.a) ASSERT_TRUE(std::isfinite(v));
    for (float v : f.b) ASSERT_TRUE(std::isfinite(v));
    // The inputs span only T dimensions: rank T reproduces the outputs almost exactly.
    const LowRank ft = rwkvl::linalg::asvd_truncate(w.data(), rows, cols, T, g, damp);
    EXPECT_LE(rwkvl::linalg::output_error(w.data(), ft, g),
              1e-3 * rwkvl::linalg::output_energy(w.data(), rows, cols, g));
  }
}

// ---- diagonal term

TEST(Linalg, FitDiagRecoversExactDiagonal) {
  std::mt19937_64 rng(8);
  const int64_t n = 40, r = 6;
  LowRank f;
  f.rows = f.cols = n;
  f.rank = r;
  f.b = to_float(gaussian(n, r, rng));
  f.a = to_float(gaussian(r, n, rng));
  const VectorXd d0 = gaussian(n, 1, rng).col(0);
  const MatrixXd wd = product(f) + MatrixXd(d0.asDiagonal());
  const std::vector<float> w = to_float(wd);
  const double tol = 1e-5 * max_abs(wd);

  rwkvl::linalg::fit_diag(w.data(), f, nullptr);
  ASSERT_EQ(f.d.size(), static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(f.d[i], d0(i), tol) << i;
  EXPECT_LE(rwkvl::linalg::frobenius_error(w.data(), f), 1e-10 * wd.squaredNorm());

  Gram g(n);
  const std::vector<float> x = correlated_inputs(3 * n, n, rng);
  g.add(x.data(), 3 * n);
  f.d.assign(n, 100.0f);  // replaced, not added to
  rwkvl::linalg::fit_diag(w.data(), f, &g);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(f.d[i], d0(i), 10 * tol) << i;
}

TEST(Linalg, FitDiagLowersErrorAndIsOptimal) {
  std::mt19937_64 rng(9);
  const int64_t n = 36, T = 3 * n;
  // A weight-like matrix: near-identity diagonal plus a random part (as in residual projections).
  const MatrixXd wd = MatrixXd::Identity(n, n) * 2.0 + gaussian(n, n, rng) * 0.3;
  const std::vector<float> w = to_float(wd);
  const std::vector<float> x = correlated_inputs(T, n, rng);
  Gram g(n);
  g.add(x.data(), T);
  for (int64_t r : {2, 8, 20}) {
    SCOPED_TRACE(testing::Message() << "rank " << r);
    LowRank f = rwkvl::linalg::asvd_truncate(w.data(), n, n, r, g, 0.0);
    const double e0 = rwkvl::linalg::output_error(w.data(), f, g);
    rwkvl::linalg::fit_diag(w.data(), f, &g);
    const double e1 = rwkvl::linalg::output_error(w.data(), f, g);
    EXPECT_LE(e1, e0);
    // Closed form is the minimiser: moving any d_i either way does not lower the output error.
    for (int64_t i : {0, 7, 35}) {
      for (float h : {-1e-2f, 1e-2f}) {
        LowRank p = f;
        p.d[i] += h;
        EXPECT_GE(rwkvl::linalg::output_error(w.data(), p, g), e1 * (1 - 1e-9)) << i << " " << h;
      }
    }
    // Frobenius variant.
    LowRank fs = rwkvl::linalg::svd_truncate(w.data(), n, n, r);
    const double f0 = rwkvl::linalg::frobenius_error(w.data(), fs);
    rwkvl::linalg::fit_diag(w.data(), fs, nullptr);
    EXPECT_LE(rwkvl::linalg::frobenius_error(w.data(), fs), f0);
  }
}

// ---- argument validation

TEST(Linalg, RejectsBadArguments) {
  std::mt19937_64 rng(10);
  const int64_t rows = 12, cols = 8;
  std::vector<float> w = to_float(gaussian(rows, cols, rng));
  Gram g(cols);
  const std::vector<float> x = to_float(gaussian(20, cols, rng));
  g.add(x.data(), 20);
  using namespace rwkvl::linalg;

  expect_invalid([&] { svd_truncate(w.data(), rows, cols, 0); });
  expect_invalid([&] { svd_truncate(w.data(), rows, cols, -3); });
  expect_invalid([&] { svd_truncate(w.data(), rows, cols, cols + 1); });
  expect_invalid([&] { svd_truncate(w.data(), 0, cols, 1); });
  expect_invalid([&] { svd_truncate(nullptr, rows, cols, 1); });
  expect_invalid([&] { asvd_truncate(w.data(), rows, cols, 0, g, 0.01); });
  expect_invalid([&] { asvd_truncate(w.data(), rows, cols, cols + 1, g, 0.01); });
  expect_invalid([&] { asvd_truncate(w.data(), cols, rows, 2, g, 0.01); });  // Gram size != cols
  expect_invalid([&] { asvd_truncate(w.data(), rows, cols, 2, g, -1.0); });
  expect_invalid([&] { asvd_truncate(w.data(), rows, cols, 2, g, std::nan("")); });
  expect_invalid([&] { asvd_truncate(w.data(), rows, cols, 2, Gram(cols), 0.01); });  // no inputs
  {
    Gram zero(cols);
    const std::vector<float> zx(static_cast<size_t>(4 * cols), 0.0f);
    zero.add(zx.data(), 4);
    expect_invalid([&] { asvd_truncate(w.data(), rows, cols, 2, zero, 0.01); });  // G = 0: never PD
  }
  {
    const std::vector<float> wide = to_float(gaussian(rows, cols + 1, rng));
    expect_invalid([&] { output_energy(wide.data(), rows, cols + 1, g); });  // Gram size != cols
  }

  // Non-finite values anywhere in W.
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> wb = w;
    wb[rows * cols - 1] = bad;
    expect_invalid([&] { svd_truncate(wb.data(), rows, cols, 2); });
    expect_invalid([&] { asvd_truncate(wb.data(), rows, cols, 2, g, 0.01); });
    expect_invalid([&] { output_energy(wb.data(), rows, cols, g); });
  }

  // fit_diag only for square matrices.
  LowRank f = svd_truncate(w.data(), rows, cols, 3);
  expect_invalid([&] { fit_diag(w.data(), f, nullptr); });
  // Inconsistent factorisations.
  LowRank bad = f;
  bad.a.pop_back();
  expect_invalid([&] { reconstruct(bad); });
  expect_invalid([&] { frobenius_error(w.data(), bad); });
  bad = f;
  bad.d.assign(rows, 1.0f);  // diagonal on a non-square matrix
  expect_invalid([&] { reconstruct(bad); });
  bad = f;
  bad.b[0] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid([&] { output_error(w.data(), bad, g); });
  std::vector<float> sq = to_float(gaussian(cols, cols, rng));
  LowRank fsq = svd_truncate(sq.data(), cols, cols, 2);
  fsq.d.assign(cols - 1, 0.0f);  // wrong length
  expect_invalid([&] { reconstruct(fsq); });
}


// linalg_impl.h is compiled for the baseline, AVX2 and AVX-512 and each call runs the one the CPU has: every one this
// machine can run gives the same factors and errors to rounding (they differ in fused multiply-adds and blocking), and
// the same bits on every call (the compress output is the same run after run).
TEST(Linalg, EveryInstructionSetAgreesAndRepeatsItself) {
  std::mt19937_64 rng(11);
  const int64_t rows = 64, cols = 64, rank = 16;  // square: with the diagonal term
  const std::vector<float> W = to_float(gaussian(rows, cols, rng));
  const std::vector<float> X = to_float(gaussian(300, cols, rng));
  struct Result {
    std::vector<float> rec, rec_again;
    double err = 0, energy = 0;
    std::vector<double> gram;
  };
  std::vector<std::pair<std::string, Result>> results;
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    if (!rwkvl::kern::force_isa(isa)) continue;
    Gram g(cols);
    g.add(X.data(), 300);
    Result r;
    r.gram.assign(g.data(), g.data() + cols * cols);
    LowRank f = rwkvl::linalg::asvd_truncate(W.data(), rows, cols, rank, g, 1e-3);
    rwkvl::linalg::fit_diag(W.data(), f, &g);
    r.rec = rwkvl::linalg::reconstruct(f);
    r.err = rwkvl::linalg::output_error(W.data(), f, g);
    r.energy = rwkvl::linalg::output_energy(W.data(), rows, cols, g);
    LowRank again = rwkvl::linalg::asvd_truncate(W.data(), rows, cols, rank, g, 1e-3);
    rwkvl::linalg::fit_diag(W.data(), again, &g);
    r.rec_again = rwkvl::linalg::reconstruct(again);
    results.emplace_back(isa, std::move(r));
  }
  rwkvl::kern::force_isa(nullptr);
  ASSERT_FALSE(results.empty());
  const Result& base = results.front().second;
  for (const auto& [isa, r] : results) {
    EXPECT_EQ(r.rec, r.rec_again) << isa << ": two calls differ";
    double d = 0, m = 0;
    for (size_t i = 0; i < r.rec.size(); ++i) {
      d = std::max(d, static_cast<double>(std::fabs(r.rec[i] - base.rec[i])));
      m = std::max(m, static_cast<double>(std::fabs(base.rec[i])));
    }
    EXPECT_LE(d, 1e-5 * m) << isa << " vs " << results.front().first;
    EXPECT_NEAR(r.err, base.err, 1e-9 * base.energy) << isa;
    EXPECT_NEAR(r.energy, base.energy, 1e-12 * base.energy) << isa;
    for (size_t i = 0; i < r.gram.size(); ++i) ASSERT_NEAR(r.gram[i], base.gram[i], 1e-12 * base.gram[0]) << isa;
  }
}

}  // namespace
