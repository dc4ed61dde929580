// mlp_train_impl.h for the build's baseline, and the choice of the instruction set (see mlp_train.h).
#define RWKVL_MLP_ISA isa_generic
#include "compress/mlp_train_impl.h"

#include <cstring>

#include "kernels/kernels.h"

#if defined(RWKVL_WIDE_EIGEN)
RWKVL_MLP_DECLARE(isa_avx2)
RWKVL_MLP_DECLARE(isa_avx512)
#endif

namespace rwkvl::compress {

double train_mlp(const MlpTrainJob& job, float* W1, float* W2) {
#if defined(RWKVL_WIDE_EIGEN)
  const char* isa = kern::active_isa();
  if (std::strcmp(isa, "avx512") == 0) return isa_avx512::train_mlp(job, W1, W2);
  if (std::strcmp(isa, "avx2") == 0) return isa_avx2::train_mlp(job, W1, W2);
#endif
  return isa_generic::train_mlp(job, W1, W2);
}

}  // namespace rwkvl::compress
