// Linear algebra for low-rank compression of weight matrices (activation-aware SVD as in SVD-LLM,
// arXiv 2403.07378). Matrices are row-major float at the interface; everything is computed in double
// with Eigen (kept inside linalg.cpp: this header does not include it).
//
// Errors: bad arguments (rank out of range, size mismatches, non-finite values) and a Gram matrix
// that stays indefinite after damping throw rwkvl::Error (kInvalidArgument).
#pragma once

#include <cstdint>
#include <vector>

namespace rwkvl::linalg {

// W ~ B·A (+ diag(d)): A is rank x cols, B is rows x rank (both row-major), d has rows values
// (empty: no diagonal term; non-empty only for square W).
struct LowRank {
  int64_t rows = 0, cols = 0, rank = 0;
  std::vector<float> a, b, d;
  // Defined in linalg.cpp (the baseline), not inline: linalg_impl.h is also compiled with AVX2 / AVX-512 flags, and an
  // inline destructor emitted there could be the copy the linker keeps for every file (scripts/check_isa_objects.sh).
  LowRank() = default;
  LowRank(const LowRank&) = default;
  LowRank(LowRank&&) noexcept = default;
  LowRank& operator=(const LowRank&) = default;
  LowRank& operator=(LowRank&&) noexcept = default;
  ~LowRank();
};

// Second moment G = sum_t x_t x_t^T of a matrix's inputs (n x n, n = the matrix's cols), accumulated
// in double.
class Gram {
 public:
  explicit Gram(int64_t n);
  // X: T rows of n floats (row-major T x n). A symmetric rank-T update (blocked GEMM); T = 0 is a no-op.
  void add(const float* X, int64_t T);
  int64_t n() const { return n_; }
  int64_t count() const { return count_; }  // rows added so far
  const double* data() const { return g_.data(); }  // n x n, full symmetric, row-major
  // Adds another Gram of the same size (e.g. accumulated on another thread or file).
  void merge(const Gram& other);

 private:
  int64_t n_ = 0, count_ = 0;
  std::vector<double> g_;
};

// Plain truncated SVD W = U S V^T (W rows x cols), keeping the `rank` largest singular values,
// rank in [1, min(rows, cols)]: B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T.
LowRank svd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank);

// Activation-aware truncated SVD: minimises ||(W - B A) X|| for inputs with second moment G
// (g.n() == cols). G_d = G + damp * mean(diag G) * I, Cholesky G_d = L L^T, SVD W L = U S V^T,
// B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T L^{-1}. If G_d is not positive definite the damping is
// retried at 10x (starting from 1e-6 when damp = 0) a few times before throwing.
LowRank asvd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank, const Gram& g, double damp);

// Closed-form diagonal term on the residual R = W - B A (square W only; replaces f.d):
// without g, d_i = R_ii (least squares in Frobenius norm); with g, d_i = (R G)_ii / G_ii, the
// minimiser of trace((R - D) G (R - D)^T) (R_ii where G_ii = 0: input i is always zero).
void fit_diag(const float* W, LowRank& f, const Gram* g);

// Output error trace((W - W') G (W - W')^T) with W' = B A + diag(d) (W is f.rows x f.cols).
double output_error(const float* W, const LowRank& f, const Gram& g);
// Output energy trace(W G W^T).
double output_energy(const float* W, int64_t rows, int64_t cols, const Gram& g);
// Frobenius error ||W - W'||_F^2.
double frobenius_error(const float* W, const LowRank& f);
// B·A + diag(d) as a dense row-major rows x cols matrix.
std::vector<float> reconstruct(const LowRank& f);

}  // namespace rwkvl::linalg
