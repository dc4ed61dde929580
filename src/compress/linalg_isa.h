// The functions of linalg_impl.h, declared for one instruction set's namespace (linalg.cpp dispatches to them).
#pragma once

#include <cstdint>
#include <vector>

#include "compress/linalg.h"

#define RWKVL_LINALG_DECLARE(ns)                                                                                  \
  namespace ns {                                                                                                  \
  void gram_add(double* g, int64_t n, const float* X, int64_t T);                                                 \
  LowRank svd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank);                                 \
  LowRank asvd_truncate(const float* W, int64_t rows, int64_t cols, int64_t rank, const Gram& g, double damp);    \
  void fit_diag(const float* W, LowRank& f, const Gram* g);                                                       \
  double output_error(const float* W, const LowRank& f, const Gram& g);                                           \
  double output_energy(const float* W, int64_t rows, int64_t cols, const Gram& g);                                \
  double frobenius_error(const float* W, const LowRank& f);                                                       \
  std::vector<float> reconstruct(const LowRank& f);                                                               \
  }
