// Low-rank factorisation of weight matrices with Eigen (BDCSVD, HouseholderQR, LLT), in double: the Gram matrix and
// the choice of the instruction set. The math itself is in linalg_impl.h, compiled here for the build's baseline and
// in linalg_avx2.cpp / linalg_avx512.cpp for the wider instruction sets (x86-64); each call runs the one the CPU has
// (kern::active_isa(), which kern::force_isa() restricts in tests).
#define RWKVL_LINALG_ISA isa_generic
#include "compress/linalg_impl.h"

#include <cstring>

#include "kernels/kernels.h"

namespace rwkvl::linalg {

#if defined(RWKVL_WIDE_EIGEN)
RWKVL_LINALG_DECLARE(isa_avx2)
RWKVL_LINALG_DECLARE(isa_avx512)

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa isa() {
  const char* a = kern::active_isa();
  return std::strcmp(a, "avx512") == 0 ? Isa::kAvx512 : std::strcmp(a, "avx2") == 0 ? Isa::kAvx2 : Isa::kGeneric;
}

}  // namespace

#define RWKVL_LINALG_CALL(fn, ...)                                   \
  switch (isa()) {                                                   \
    case Isa::kAvx512: return isa_avx512::fn(__VA_ARGS__);           \
    case Isa::kAvx2: return isa_avx2::fn(__VA_ARGS__);               \
    case Isa::kGeneric: break;                                       \
  }                                                                  \
  return isa_generic::fn(__VA_ARGS__)
#else
#define RWKVL_LINALG_CALL(fn, ...) return isa_generic::fn(__VA_ARGS__)
#endif

LowRank::~LowRank() = default;

// ---- Gram

Gram::Gram(int64_t n) : n_(n) {
  if (n < 1 || n > (int64_t{1} << 20))
    RWKVL_FAIL(kInvalidArgument, "Gram: dimension %lld out of range [1, 2^20]", static_cast<long long>(n));
  g_.assign(static_cast<size_t>(n * n), 0.0);
}

void Gram::add(const float* X, int64_t T) {
  if (T < 0) RWKVL_FAIL(kInvalidArgument, "Gram::add: negative row count %lld", static_cast<long long>(T));
  if (T == 0) return;
  if (!X) RWKVL_FAIL(kInvalidArgument, "Gram::add: X is null");
  if (T > std::numeric_limits<int64_t>::max() / n_)
    RWKVL_FAIL(kInvalidArgument, "Gram::add: %lld rows is too many", static_cast<long long>(T));
  for (int64_t i = 0; i < T * n_; ++i)  // before touching G, so a throw leaves it unchanged
    if (!std::isfinite(X[i]))
      RWKVL_FAIL(kInvalidArgument, "Gram::add: X has a non-finite value (%g) at element %lld", static_cast<double>(X[i]),
                 static_cast<long long>(i));
  [&] { RWKVL_LINALG_CALL(gram_add, g_.data(), n_, X, T); }();
  count_ += T;
}

void Gram::merge(const Gram& other) {
  if (other.n_ != n_)
    RWKVL_FAIL(kInvalidArgument, "Gram::merge: sizes differ (%lld vs %lld)", static_cast<long long>(n_),
               static_cast<long long>(other.n_));
  const double* o = other.g_.data();  // same object allowed: elementwise
  for (size_t i = 0; i < g_.size(); ++i) g_[i] += o[i];
  count_ += other.count_;
}

// ---- factorisations

LowRank svd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank) {
  RWKVL_LINALG_CALL(svd_truncate, W, rows, cols, rank);
}

LowRank asvd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank, const Gram& g, double damp) {
  RWKVL_LINALG_CALL(asvd_truncate, W, rows, cols, rank, g, damp);
}

void fit_diag(const float* W, LowRank& f, const Gram* g) { RWKVL_LINALG_CALL(fit_diag, W, f, g); }

double output_error(const float* W, const LowRank& f, const Gram& g) { RWKVL_LINALG_CALL(output_error, W, f, g); }

double output_energy(const float* W, int64_t rows, int64_t cols, const Gram& g) {
  RWKVL_LINALG_CALL(output_energy, W, rows, cols, g);
}

double frobenius_error(const float* W, const LowRank& f) { RWKVL_LINALG_CALL(frobenius_error, W, f); }

std::vector<float> reconstruct(const LowRank& f) { RWKVL_LINALG_CALL(reconstruct, f); }

}  // namespace rwkvl::linalg
