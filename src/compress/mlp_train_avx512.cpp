// mlp_train_impl.h compiled for AVX-512 (CMake gives files named *_avx512.cpp its flags; x86-64 only), Eigen renamed
// so that its templates, instantiated here with these instructions, never share a name with the baseline's.
// GCC 12 reports false "(may be) used uninitialized" warnings inside its own AVX-512 intrinsics as Eigen uses them.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define Eigen Eigen_avx512
#define RWKVL_MLP_ISA isa_avx512
#include "compress/mlp_train_impl.h"
