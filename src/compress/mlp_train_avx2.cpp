// mlp_train_impl.h compiled for AVX2 + FMA (CMake gives files named *_avx2.cpp its flags; x86-64 only), Eigen renamed
// so that its templates, instantiated here with these instructions, never share a name with the baseline's.
#define Eigen Eigen_avx2
#define RWKVL_MLP_ISA isa_avx2
#include "compress/mlp_train_impl.h"
