// The body of mlp_train.h, compiled once per instruction set (see there and linalg_impl.h): the including file defines
// RWKVL_MLP_ISA (and, for the wider instruction sets, renames Eigen). No include guard by design. Eigen stays
// single-threaded (deterministic; the parallelism is across layers).
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "compress/mlp_train.h"
#include "core/error.h"

#ifndef RWKVL_MLP_ISA
#error "define RWKVL_MLP_ISA (the namespace of this instruction set) before including mlp_train_impl.h"
#endif

RWKVL_MLP_DECLARE(RWKVL_MLP_ISA)

namespace rwkvl::compress::RWKVL_MLP_ISA {

namespace {
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

double train_mlp(const MlpTrainJob& job, float* w1, float* w2) {
  const int64_t C = job.C, F = job.F, h = job.hidden, n_train = job.n_train;
  const float pwf = job.pos_weight;
  RWKVL_CHECK(reinterpret_cast<uintptr_t>(w1) % 64 == 0 && reinterpret_cast<uintptr_t>(w2) % 64 == 0);
  Eigen::Map<RowMatF, Eigen::Aligned64> W1(w1, h, C), W2(w2, F, h);  // (see AlignedFloats)
  RowMatF M1 = RowMatF::Zero(h, C), V1 = RowMatF::Zero(h, C), M2 = RowMatF::Zero(F, h), V2 = RowMatF::Zero(F, h);
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = job.lr;
  double b1t = 1.0, b2t = 1.0;

  std::vector<int64_t> order(static_cast<size_t>(n_train));
  std::iota(order.begin(), order.end(), int64_t{0});
  RowMatF Xb, Y, H, Z, G, dH, gW1, gW2;
  double loss_sum = 0.0;
  int64_t loss_pairs = 0;
  for (int ep = 0; ep < job.epochs; ++ep) {
    job.shuffle(order);
    const bool last = ep + 1 == job.epochs;
    for (int64_t start = 0; start < n_train; start += job.batch) {
      const int64_t nb = std::min<int64_t>(job.batch, n_train - start);
      Xb.resize(nb, C);
      Y.resize(nb, F);
      for (int64_t r = 0; r < nb; ++r) {
        const int64_t t = order[static_cast<size_t>(start + r)];
        const float* xs = job.x + t * C;
        float* xd = Xb.data() + r * C;
        for (int64_t c = 0; c < C; ++c) xd[c] = xs[c] * job.inv_rms[c];
        const uint8_t* a = job.active + t * F;
        float* yr = Y.data() + r * F;
        for (int64_t c = 0; c < F; ++c) yr[c] = a[c];
      }
      H.noalias() = Xb * W1.transpose();
      H = H.cwiseMax(0.0f);
      Z.noalias() = H * W2.transpose();
      if (last) {
        // loss = softplus(z) (1 + (pw-1) y) - pw y z (= pw softplus(-z) if y, softplus(z) if not)
        auto za = Z.array();
        auto ya = Y.array();
        const RowMatF lm =
            ((za.max(0.0f) + (-za.abs()).exp().log1p()) * (1.0f + (pwf - 1.0f) * ya) - pwf * ya * za).matrix();
        for (int64_t r = 0; r < nb; ++r) {
          double acc = 0.0;
          const float* lr_ = lm.data() + r * F;
          for (int64_t c = 0; c < F; ++c) acc += lr_[c];
          loss_sum += acc;
        }
        loss_pairs += nb * F;
      }
      // dL/dz of the mean loss: (sigmoid(z) (1 + (pw-1) y) - pw y) / (nb F)
      const float scale = 1.0f / static_cast<float>(nb * F);
      G = (((1.0f + (-Z.array()).exp()).inverse() * (1.0f + (pwf - 1.0f) * Y.array()) - pwf * Y.array()) * scale)
              .matrix();
      gW2.noalias() = G.transpose() * H;
      dH.noalias() = G * W2;
      dH.array() = (H.array() > 0.0f).select(dH.array(), 0.0f);
      gW1.noalias() = dH.transpose() * Xb;
      // Adam
      b1t *= b1;
      b2t *= b2;
      const float c1 = static_cast<float>(1.0 / (1.0 - b1t)), c2 = static_cast<float>(1.0 / (1.0 - b2t));
      M1 = b1 * M1 + (1.0f - b1) * gW1;
      V1.array() = b2 * V1.array() + (1.0f - b2) * gW1.array().square();
      W1.array() -= lr * (M1.array() * c1) / ((V1.array() * c2).sqrt() + eps);
      M2 = b1 * M2 + (1.0f - b1) * gW2;
      V2.array() = b2 * V2.array() + (1.0f - b2) * gW2.array().square();
      W2.array() -= lr * (M2.array() * c1) / ((V2.array() * c2).sqrt() + eps);
    }
    if (job.tick) job.tick();
  }
  return loss_pairs > 0 ? loss_sum / static_cast<double>(loss_pairs) : 0.0;
}

}  // namespace rwkvl::compress::RWKVL_MLP_ISA
