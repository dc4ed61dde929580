// The activation predictor's MLP training (sparse_train.h): mini-batch Adam on the weighted logistic loss, with Eigen.
// Compiled once per instruction set, like linalg (linalg_impl.h): mlp_train.cpp for the build's baseline,
// mlp_train_avx2.cpp and mlp_train_avx512.cpp on x86-64; train_mlp() runs the one the CPU has (kern::active_isa()).
// The training's matrix products take most of a compress run's time (issue #19); with AVX2/AVX-512 they run 2-3x
// faster than with SSE2. The weights differ between instruction sets in the last bits; on one machine a run gives
// the same weights every time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
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

// Memory aligned for the widest vectors (64 bytes): train_mlp's weights live there, so its vectorised loops treat
// every element the same way on every run (over memory of another alignment the first elements of a loop would
// take a scalar path, with another rounding of fused multiply-adds, depending on the address).
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U>
  Aligned64(const Aligned64<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const Aligned64<U>&) const noexcept { return true; }
};
using AlignedFloats = std::vector<float, Aligned64<float>>;

// W1 (hidden x C) and W2 (F x hidden), row-major and 64-byte aligned: their initial values in, the trained ones out.
// Returns the last epoch's mean loss per (token, neuron) pair, each mini-batch's before its update.
double train_mlp(const MlpTrainJob& job, float* W1, float* W2);

}  // namespace rwkvl::compress

// The per-instruction-set versions (mlp_train_impl.h defines one per file).
#define RWKVL_MLP_DECLARE(ns)                                              \
  namespace rwkvl::compress::ns {                                          \
  double train_mlp(const ::rwkvl::compress::MlpTrainJob& job, float* W1, float* W2); \
  }
