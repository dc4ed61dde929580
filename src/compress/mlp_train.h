// The activation predictor's MLP training (sparse_train.h): mini-batch Adam on the weighted logistic loss, with Eigen.
// Compiled once per instruction set, like linalg (linalg_impl.h): mlp_train.cpp for the build's baseline,
// mlp_train_avx2.cpp and mlp_train_avx512.cpp on x86-64; train_mlp() runs the one the CPU has (kern::active_isa()).
// The training's matrix products take most of a compress run's time (issue #19); with AVX2/AVX-512 they run 2-3x
// faster than with SSE2. The weights differ between instruction sets in the last bits; on one machine a run gives
// the same weights every time.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace rwkvl::compress {

struct MlpTrainJob {
  const float* x = nullptr;         // n x C inputs, row-major (the first n_train rows train)
  const uint8_t* active = nullptr;  // n x F targets: 1 where the neuron is active, else 0
  const float* inv_rms = nullptr;   // C per-channel input scales (the MLP sees x * inv_rms)
  int64_t C = 0, F = 0, hidden = 0, n_train = 0, batch = 0;
  int epochs = 0;
  float lr = 0, pos_weight = 1;  // Adam step; weight of the positive class in the loss
  // Puts the training tokens in each epoch's order (called at the start of every epoch).
  std::function<void(std::vector<int64_t>& order)> shuffle;
  std::function<void()> tick;  // after each epoch (may be empty)
};

// W1 (hidden x C) and W2 (F x hidden), row-major: their initial values in, the trained ones out. Returns the last
// epoch's mean loss per (token, neuron) pair, each mini-batch's before its update.
double train_mlp(const MlpTrainJob& job, float* W1, float* W2);

}  // namespace rwkvl::compress

// The per-instruction-set versions (mlp_train_impl.h defines one per file).
#define RWKVL_MLP_DECLARE(ns)                                              \
  namespace rwkvl::compress::ns {                                          \
  double train_mlp(const ::rwkvl::compress::MlpTrainJob& job, float* W1, float* W2); \
  }
