// The body of the low-rank linear algebra (linalg.h), compiled once per instruction set: linalg.cpp (the build's
// baseline), linalg_avx2.cpp and linalg_avx512.cpp (x86-64), each with RWKVL_LINALG_ISA naming its namespace and,
// for the wider ones, Eigen renamed (Eigen_avx2, Eigen_avx512) so that the templates each instantiates with its own
// instruction set never meet another file's under one name. linalg.cpp calls the one the CPU runs (kern::active_isa):
// Eigen's matrix products and SVD run 2-3x faster with AVX2/AVX-512 than with the baseline's SSE2 (issue #19). The
// results differ between instruction sets in the last bits (fused multiply-adds, other blockings), as the runtime's
// kernels do; on one machine they are the same on every run and with any thread count.
//
// Included by those files only (no include guard by design).
#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "compress/linalg.h"
#include "compress/linalg_isa.h"
#include "core/error.h"

#ifndef RWKVL_LINALG_ISA
#error "define RWKVL_LINALG_ISA (the namespace of this instruction set) before including linalg_impl.h"
#endif

namespace rwkvl::linalg {
RWKVL_LINALG_DECLARE(RWKVL_LINALG_ISA)
}  // namespace rwkvl::linalg

namespace rwkvl::linalg::RWKVL_LINALG_ISA {
namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapF = Eigen::Map<const RowMatF>;
using MapFMut = Eigen::Map<RowMatF>;

// Rows processed at a time where a full double copy of a matrix is not needed.
constexpr int64_t kRowBlock = 256;

void check_shape(const char* fn, int64_t rows, int64_t cols) {
  if (rows < 1 || cols < 1)
    RWKVL_FAIL(kInvalidArgument, "%s: matrix shape %lld x %lld must be positive", fn, static_cast<long long>(rows),
               static_cast<long long>(cols));
  // Elements must fit in an Index and their byte size (as double) in an int64.
  if (rows > std::numeric_limits<int64_t>::max() / 8 / cols)
    RWKVL_FAIL(kInvalidArgument, "%s: matrix shape %lld x %lld is too large", fn, static_cast<long long>(rows),
               static_cast<long long>(cols));
}

void check_finite(const char* fn, const char* what, const float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      RWKVL_FAIL(kInvalidArgument, "%s: %s has a non-finite value (%g) at element %lld", fn, what,
                 static_cast<double>(p[i]), static_cast<long long>(i));
}

// Reads all of W: called after the cheap checks of shapes, rank and Gram size.
void check_matrix(const char* fn, const float* W, int64_t rows, int64_t cols) {
  check_shape(fn, rows, cols);
  if (!W) RWKVL_FAIL(kInvalidArgument, "%s: W is null", fn);
  check_finite(fn, "W", W, rows * cols);
}

void check_rank(const char* fn, int64_t rank, int64_t rows, int64_t cols) {
  const int64_t mx = std::min(rows, cols);
  if (rank < 1 || rank > mx)
    RWKVL_FAIL(kInvalidArgument, "%s: rank %lld out of range [1, %lld] for a %lld x %lld matrix", fn,
               static_cast<long long>(rank), static_cast<long long>(mx), static_cast<long long>(rows),
               static_cast<long long>(cols));
}

// A factorisation must be self-consistent before it is used (rank 0 = diagonal only is allowed).
void check_lowrank(const char* fn, const LowRank& f) {
  check_shape(fn, f.rows, f.cols);
  const auto r = static_cast<long long>(f.rank), m = static_cast<long long>(f.rows),
             n = static_cast<long long>(f.cols);
  if (f.rank < 0 || f.rank > std::min(f.rows, f.cols))
    RWKVL_FAIL(kInvalidArgument, "%s: factor rank %lld out of range [0, %lld]", fn, r, std::min(m, n));
  if (static_cast<int64_t>(f.a.size()) != f.rank * f.cols)
    RWKVL_FAIL(kInvalidArgument, "%s: A has %zu values, expected rank x cols = %lld x %lld", fn, f.a.size(), r, n);
  if (static_cast<int64_t>(f.b.size()) != f.rows * f.rank)
    RWKVL_FAIL(kInvalidArgument, "%s: B has %zu values, expected rows x rank = %lld x %lld", fn, f.b.size(), m, r);
  if (!f.d.empty()) {
    if (f.rows != f.cols)
      RWKVL_FAIL(kInvalidArgument, "%s: a diagonal term needs a square matrix, not %lld x %lld", fn, m, n);
    if (static_cast<int64_t>(f.d.size()) != f.rows)
      RWKVL_FAIL(kInvalidArgument, "%s: d has %zu values, expected %lld", fn, f.d.size(), m);
  }
  check_finite(fn, "A", f.a.data(), static_cast<int64_t>(f.a.size()));
  check_finite(fn, "B", f.b.data(), static_cast<int64_t>(f.b.size()));
  check_finite(fn, "d", f.d.data(), static_cast<int64_t>(f.d.size()));
}

void check_gram(const char* fn, const Gram& g, int64_t cols) {
  if (g.n() != cols)
    RWKVL_FAIL(kInvalidArgument, "%s: Gram matrix is %lld x %lld but the matrix has %lld columns", fn,
               static_cast<long long>(g.n()), static_cast<long long>(g.n()), static_cast<long long>(cols));
  if (g.count() < 1) RWKVL_FAIL(kInvalidArgument, "%s: Gram matrix has no inputs added", fn);
}

Eigen::Map<const MatrixXd> gram_map(const Gram& g) { return {g.data(), g.n(), g.n()}; }

MatrixXd to_double(const float* W, int64_t rows, int64_t cols) { return MapF(W, rows, cols).cast<double>(); }

// Rows [r0, r0 + nr) of W - (B A + diag(d)), in double.
MatrixXd residual_block(const float* W, const LowRank& f, int64_t r0, int64_t nr) {
  MatrixXd e = MapF(W + r0 * f.cols, nr, f.cols).cast<double>();
  if (f.rank > 0) {
    const MatrixXd b = MapF(f.b.data() + r0 * f.rank, nr, f.rank).cast<double>();
    const MatrixXd a = MapF(f.a.data(), f.rank, f.cols).cast<double>();
    e.noalias() -= b * a;
  }
  if (!f.d.empty())
    for (int64_t i = 0; i < nr; ++i) e(i, r0 + i) -= f.d[r0 + i];
  return e;
}

// sum over row blocks of trace(E G E^T) for E = rows of (W - W'), or of W when f is null.
template <typename BlockFn>
double weighted_sq(int64_t rows, const Gram& g, BlockFn block) {
  const auto G = gram_map(g);
  double s = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t nr = std::min(kRowBlock, rows - r0);
    const MatrixXd e = block(r0, nr);
    const MatrixXd eg = e * G;
    s += eg.cwiseProduct(e).sum();
  }
  return std::max(s, 0.0);  // trace of E G E^T is >= 0 for PSD G; clamp rounding below zero
}

struct Svd {
  MatrixXd u;  // m x r
  VectorXd s;  // r, descending
  MatrixXd v;  // n x r
};

Svd bdcsvd_square_ish(const MatrixXd& m, int64_t r) {
  Eigen::BDCSVD<MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  if (svd.info() != Eigen::Success) RWKVL_FAIL(kInternal, "SVD of a %lld x %lld matrix did not converge",
                                                static_cast<long long>(m.rows()), static_cast<long long>(m.cols()));
  return {svd.matrixU().leftCols(r), svd.singularValues().head(r), svd.matrixV().leftCols(r)};
}

// Truncated thin SVD of m keeping r values. Far-from-square matrices are first reduced by a QR
// decomposition (M = Q R, SVD of the small triangular R, U = Q U_R) as LAPACK's gesdd does above
// an aspect ratio of 11/6: Eigen's bidiagonalisation of a tall matrix is much slower than QR.
Svd thin_svd(const MatrixXd& m, int64_t r) {
  const Index rows = m.rows(), cols = m.cols();
  if (rows * 6 > cols * 11) {
    Eigen::HouseholderQR<MatrixXd> qr(m);
    const MatrixXd R = qr.matrixQR().topRows(cols).triangularView<Eigen::Upper>();
    Svd small = bdcsvd_square_ish(R, r);
    MatrixXd u = MatrixXd::Zero(rows, r);
    u.topRows(cols) = small.u;
    u.applyOnTheLeft(qr.householderQ());
    return {std::move(u), std::move(small.s), std::move(small.v)};
  }
  if (cols * 6 > rows * 11) {
    Svd t = thin_svd(m.transpose(), r);
    return {std::move(t.v), std::move(t.s), std::move(t.u)};
  }
  return bdcsvd_square_ish(m, r);
}

// B = U_r sqrt(S_r) into f.b; returns sqrt(S_r).
VectorXd set_b(const Svd& svd, LowRank& f) {
  const VectorXd sq = svd.s.cwiseMax(0.0).cwiseSqrt();
  f.b.resize(static_cast<size_t>(f.rows * f.rank));
  MapFMut(f.b.data(), f.rows, f.rank) = (svd.u * sq.asDiagonal()).cast<float>();
  return sq;
}

}  // namespace

// X (T x n floats, row-major) added into the lower triangle of G (n x n doubles, column-major = row-major for a
// symmetric matrix), then the lower triangle mirrored into the upper one. The caller checks the arguments.
void gram_add(double* g, int64_t n, const float* X, int64_t T) {
  Eigen::Map<MatrixXd> G(g, n, n);
  MatrixXd xd(n, std::min(T, kRowBlock));
  for (int64_t t0 = 0; t0 < T; t0 += kRowBlock) {
    const int64_t nt = std::min(kRowBlock, T - t0);
    // Row-major T x n floats read as column-major n x T: column t is x_t.
    xd.leftCols(nt) = Eigen::Map<const Eigen::MatrixXf>(X + t0 * n, n, nt).cast<double>();
    G.selfadjointView<Eigen::Lower>().rankUpdate(xd.leftCols(nt));  // lower triangle += X^T X
  }
  // Mirror the lower triangle into the upper one (full symmetric storage), in tiles that stay in
  // cache: a plain column loop reads a row of G with stride n (4x slower at n = 3072).
  constexpr Index kTile = 64;
  for (Index j0 = 0; j0 < n; j0 += kTile) {
    const Index j1 = std::min<Index>(j0 + kTile, n);
    for (Index i0 = 0; i0 <= j0; i0 += kTile)
      for (Index j = j0; j < j1; ++j) {
        const Index i1 = std::min(i0 + kTile, j);
        for (Index i = i0; i < i1; ++i) G(i, j) = G(j, i);
      }
  }
}

// ---- factorisations

LowRank svd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank) {
  check_shape("svd_truncate", rows, cols);
  check_rank("svd_truncate", rank, rows, cols);
  check_matrix("svd_truncate", W, rows, cols);
  const Svd svd = thin_svd(to_double(W, rows, cols), rank);
  LowRank f;
  f.rows = rows;
  f.cols = cols;
  f.rank = rank;
  const VectorXd sq = set_b(svd, f);
  f.a.resize(static_cast<size_t>(rank * cols));
  MapFMut(f.a.data(), rank, cols) = (sq.asDiagonal() * svd.v.transpose()).cast<float>();
  return f;
}

LowRank asvd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank, const Gram& g, double damp) {
  check_shape("asvd_truncate", rows, cols);
  check_rank("asvd_truncate", rank, rows, cols);
  check_gram("asvd_truncate", g, cols);
  check_matrix("asvd_truncate", W, rows, cols);
  if (!std::isfinite(damp) || damp < 0)
    RWKVL_FAIL(kInvalidArgument, "asvd_truncate: damping %g must be finite and >= 0", damp);
  const auto G = gram_map(g);
  const double mean_diag = G.diagonal().mean();
  if (!std::isfinite(mean_diag) || !G.allFinite())
    RWKVL_FAIL(kInvalidArgument, "asvd_truncate: Gram matrix has non-finite values");
  if (!(mean_diag > 0)) RWKVL_FAIL(kInvalidArgument, "asvd_truncate: Gram matrix is zero (all inputs are zero)");

  // G_d = G + damp * mean(diag G) * I = L L^T; on failure retry with 10x the damping.
  constexpr int kRetries = 4;
  Eigen::LLT<MatrixXd> llt;
  double cur = damp;
  for (int attempt = 0;; ++attempt) {
    MatrixXd gd = G;
    gd.diagonal().array() += cur * mean_diag;
    llt.compute(gd);
    if (llt.info() == Eigen::Success) break;
    if (attempt == kRetries)
      RWKVL_FAIL(kInvalidArgument,
                 "asvd_truncate: Gram matrix (%lld x %lld, %lld inputs) is not positive definite even with "
                 "damping %g (asked for %g)",
                 static_cast<long long>(cols), static_cast<long long>(cols), static_cast<long long>(g.count()), cur,
                 damp);
    cur = cur > 0 ? cur * 10 : 1e-6;
  }

  // SVD of W L (L lower triangular).
  MatrixXd wl = to_double(W, rows, cols) * llt.matrixL();
  const Svd svd = thin_svd(wl, rank);
  wl.resize(0, 0);

  LowRank f;
  f.rows = rows;
  f.cols = cols;
  f.rank = rank;
  const VectorXd sq = set_b(svd, f);
  // A = sqrt(S_r) V_r^T L^{-1}  <=>  L^T A^T = V_r sqrt(S_r)  (triangular solve).
  MatrixXd at = svd.v * sq.asDiagonal();
  llt.matrixU().solveInPlace(at);
  f.a.resize(static_cast<size_t>(rank * cols));
  MapFMut(f.a.data(), rank, cols) = at.transpose().cast<float>();
  return f;
}

void fit_diag(const float* W, LowRank& f, const Gram* g) {
  check_lowrank("fit_diag", f);
  if (f.rows != f.cols)
    RWKVL_FAIL(kInvalidArgument, "fit_diag: a diagonal term needs a square matrix, not %lld x %lld",
               static_cast<long long>(f.rows), static_cast<long long>(f.cols));
  if (g) check_gram("fit_diag", *g, f.cols);
  check_matrix("fit_diag", W, f.rows, f.cols);
  const int64_t n = f.rows;
  std::vector<float> d(static_cast<size_t>(n));
  LowRank low = f;  // residual of the low-rank part only: the old diagonal is replaced
  low.d.clear();
  const double* gdata = g ? g->data() : nullptr;
  for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
    const int64_t nr = std::min(kRowBlock, n - r0);
    const MatrixXd R = residual_block(W, low, r0, nr);
    for (int64_t i = 0; i < nr; ++i) {
      const int64_t ii = r0 + i;
      double di = R(i, ii);
      if (gdata) {
        const Eigen::Map<const VectorXd> gcol(gdata + ii * n, n);  // column ii of the symmetric G
        const double gii = gcol(ii);
        if (gii > 0) di = R.row(i).dot(gcol) / gii;  // (R G)_ii / G_ii
      }
      d[static_cast<size_t>(ii)] = static_cast<float>(di);
    }
  }
  f.d = std::move(d);
}

double output_error(const float* W, const LowRank& f, const Gram& g) {
  check_lowrank("output_error", f);
  check_gram("output_error", g, f.cols);
  check_matrix("output_error", W, f.rows, f.cols);
  return weighted_sq(f.rows, g, [&](int64_t r0, int64_t nr) { return residual_block(W, f, r0, nr); });
}

double output_energy(const float* W, int64_t rows, int64_t cols, const Gram& g) {
  check_shape("output_energy", rows, cols);
  check_gram("output_energy", g, cols);
  check_matrix("output_energy", W, rows, cols);
  return weighted_sq(rows, g, [&](int64_t r0, int64_t nr) { return to_double(W + r0 * cols, nr, cols); });
}

double frobenius_error(const float* W, const LowRank& f) {
  check_lowrank("frobenius_error", f);
  check_matrix("frobenius_error", W, f.rows, f.cols);
  double s = 0.0;
  for (int64_t r0 = 0; r0 < f.rows; r0 += kRowBlock) {
    const int64_t nr = std::min(kRowBlock, f.rows - r0);
    s += residual_block(W, f, r0, nr).squaredNorm();
  }
  return s;
}

std::vector<float> reconstruct(const LowRank& f) {
  check_lowrank("reconstruct", f);
  std::vector<float> out(static_cast<size_t>(f.rows * f.cols));
  MatrixXd m = MatrixXd::Zero(f.rows, f.cols);
  if (f.rank > 0) {
    const MatrixXd b = MapF(f.b.data(), f.rows, f.rank).cast<double>();
    const MatrixXd a = MapF(f.a.data(), f.rank, f.cols).cast<double>();
    m.noalias() = b * a;
  }
  for (size_t i = 0; i < f.d.size(); ++i) m(static_cast<Index>(i), static_cast<Index>(i)) += f.d[i];
  MapFMut(out.data(), f.rows, f.cols) = m.cast<float>();
  return out;
}

}  // namespace rwkvl::linalg::RWKVL_LINALG_ISA
