// Run-time selection of the kernel set and the multi-threaded entry points. Compiled with baseline
// flags: nothing here may execute an instruction the CPU might lack.
#include <algorithm>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"

namespace rwkvl::kern {

namespace {
using detail::KernelSet;

#if defined(RWKVL_ARCH_x86_64)
// F16C is CPUID.1:ECX bit 29. Asked directly: clang's __builtin_cpu_supports does not know "f16c".
bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & (1u << 29)) != 0;
}
#endif

bool cpu_can(const KernelSet* k) {
  if (k == &detail::kScalarKernels) return true;
#if defined(RWKVL_ARCH_x86_64)
  __builtin_cpu_init();  // may run before libgcc's own constructor if called from a static initialiser
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  if (k == &detail::kAvx2Kernels) return avx2;
  // libgcc also checks (via XGETBV) that the OS saves the AVX-512 register state.
  if (k == &detail::kAvx512Kernels)
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
#if defined(RWKVL_ARCH_aarch64)
  if (k == &detail::kNeonKernels) return true;  // Advanced SIMD is mandatory in ARMv8-A
#endif
  return false;
}

// Every set compiled into this build, best first.
const KernelSet* const kAllSets[] = {
#if defined(RWKVL_ARCH_x86_64)
    &detail::kAvx512Kernels,
    &detail::kAvx2Kernels,
#endif
#if defined(RWKVL_ARCH_aarch64)
    &detail::kNeonKernels,
#endif
    &detail::kScalarKernels,
};

const KernelSet* best_set() {
  for (const KernelSet* k : kAllSets)
    if (cpu_can(k)) return k;
  return &detail::kScalarKernels;
}

// nullptr if the name is unknown to this build or the CPU cannot run it.
const KernelSet* find_set(const char* name) {
  for (const KernelSet* k : kAllSets)
    if (std::strcmp(k->name, name) == 0) return cpu_can(k) ? k : nullptr;
  return nullptr;
}

// The start-up choice: RWKVL_ISA if set and usable (a debugging / benchmarking aid), else the best.
// An unusable value falls back silently (the library never prints); active_isa() tells what runs.
const KernelSet* default_set() {
  static const KernelSet* const chosen = [] {
    const char* env = std::getenv("RWKVL_ISA");
    if (env && *env && std::strcmp(env, "auto") != 0) {
      if (const KernelSet* k = find_set(env)) return k;
    }
    return best_set();
  }();
  return chosen;
}

std::atomic<const KernelSet*> g_forced{nullptr};

const KernelSet& current() {
  const KernelSet* k = g_forced.load(std::memory_order_acquire);
  return k ? *k : *default_set();
}

void check_mat(const MatRef& w) {
  RWKVL_CHECK(dtype_is_matrix(w.dtype));
  RWKVL_CHECK(w.rows >= 0 && w.cols >= 0);
  RWKVL_CHECK(w.data != nullptr || w.rows == 0 || w.cols == 0);
  const DTypeTraits& tr = dtype_traits(w.dtype);
  const bool row_scales = tr.scale == ScaleLayout::kRowTensor;
  RWKVL_CHECK(!row_scales || w.row_scale != nullptr || w.rows == 0);
  RWKVL_CHECK(!row_scales || w.scale_dtype == DType::kF32 || w.scale_dtype == DType::kF16);
  RWKVL_CHECK(w.cols % tr.block_elems == 0 && "whole blocks per row (kQ4: cols % 32 == 0)");
  RWKVL_CHECK(!dtype_is_masked(w.dtype) || masked_row_bytes(w.dtype, w.cols, w.kept) >= 0);
}

// Below this much work a parallel region costs more than it saves: waking a spinning worker and
// joining it is ~1-2 us, in which one core streams a few tens of KB or does ~50k multiply-adds.
constexpr int64_t kMinParallelBytes = 64 * 1024;
constexpr int64_t kMinParallelMacs = 64 * 1024;
// Thread chunks start on multiples of this many rows: a multiple of every register tile height, and
// 16 rows of even a 64-column int8 matrix is a full cache line, so threads never share a line of W.
constexpr int64_t kRowGrain = 16;

int64_t weight_bytes(const MatRef& w) {
  return mat_bytes(w);
}

}  // namespace

void matvec_rows(const MatRef& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  check_mat(w);
  RWKVL_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.rows);
  current().matvec_rows(w, x, y, row_begin, row_end);
}

void matmul_rows(const MatRef& w, const float* X, int64_t n, float* Y, int64_t row_begin, int64_t row_end) {
  check_mat(w);
  RWKVL_CHECK(n >= 0 && 0 <= row_begin && row_begin <= row_end && row_end <= w.rows);
  current().matmul_rows(w, X, n, Y, row_begin, row_end);
}

int64_t row_bytes(DType d, int64_t cols) {
  RWKVL_CHECK(dtype_is_matrix(d) && "row_bytes: not a matrix dtype");
  RWKVL_CHECK(!dtype_is_masked(d) && "row_bytes: a masked row's bytes depend on its slots (mat_row_bytes)");
  return dtype_row_bytes(d, cols);
}

int64_t mat_row_bytes(const MatRef& w) {
  RWKVL_CHECK(dtype_is_matrix(w.dtype));
  return dtype_is_masked(w.dtype) ? masked_row_bytes(w.dtype, w.cols, w.kept) : dtype_row_bytes(w.dtype, w.cols);
}

void ffn_neurons(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n, const float* x,
                 float* y, float* kout, bool skip_zero) {
  MatRef m = layout;
  m.rows = 0;  // unused; check_mat must not demand data / row_scale for it
  m.data = nullptr;
  check_mat(m);
  RWKVL_CHECK(m.dtype != DType::kI8 || layout.row_scale != nullptr);
  RWKVL_CHECK(m.dtype != DType::kF16S24 && !dtype_is_masked(m.dtype) && "neuron bundles are never sparse-packed");
  RWKVL_CHECK(n >= 0);
  if (n == 0) return;
  current().ffn_neurons(layout, ptrs, ids, n, x, y, kout, skip_zero);
}

void ffn_values(const MatRef& layout, const void* const* ptrs, const int32_t* ids, int64_t n, const float* A, int64_t lda,
                int64_t t0, int64_t t1, float* Y, int64_t ldy) {
  MatRef m = layout;
  m.rows = 0;
  m.data = nullptr;
  check_mat(m);
  RWKVL_CHECK(m.dtype != DType::kI8 || layout.row_scale != nullptr);
  RWKVL_CHECK(m.dtype != DType::kF16S24 && !dtype_is_masked(m.dtype) && "neuron bundles are never sparse-packed");
  RWKVL_CHECK(n >= 0 && t0 >= 0 && t1 >= t0 && lda >= n && ldy >= m.cols);
  if (n == 0 || t1 == t0) return;
  current().ffn_values(layout, ptrs, ids, n, A, lda, t0, t1, Y, ldy);
}

void wkv5_token(const float* r, const float* k, const float* v, const float* w, const float* u, float* S, float* out,
                int64_t H, int64_t N) {
  RWKVL_CHECK(H >= 0 && N >= 0);
  if (H == 0 || N == 0) return;
  current().wkv5(r, k, v, w, u, S, out, H, N);
}

void detail::bits_sums(const uint8_t* bits, int64_t nb, const float* table, float* raw, int64_t r0, int64_t r1) {
  current().bits_sums(bits, nb, table, raw, r0, r1);
}

void matvec(const MatRef& w, const float* x, float* y, ThreadPool* pool) {
  check_mat(w);
  const KernelSet& k = current();
  if (!pool || pool->size() == 1 || weight_bytes(w) < kMinParallelBytes) {
    k.matvec_rows(w, x, y, 0, w.rows);
    return;
  }
  // One small capture (a pointer) keeps std::function from allocating on every call.
  struct Args {
    const KernelSet* k;
    const MatRef* w;
    const float* x;
    float* y;
  } a{&k, &w, x, y};
  pool->parallel_for(
      w.rows, [p = &a](int64_t b, int64_t e) { p->k->matvec_rows(*p->w, p->x, p->y, b, e); }, kRowGrain);
}

void matvec_multi(const MatRef* const* w, const float* const* x, float* const* y, int count, ThreadPool* pool) {
  matmul_multi(w, x, 1, y, count, pool);
}

// One token: matvec_rows, parallel from kMinParallelBytes of weights (as matvec); more: matmul_rows, from
// kMinParallelMacs multiply-adds (as matmul).
void matmul_multi(const MatRef* const* w, const float* const* X, int64_t n, float* const* Y, int count,
                  ThreadPool* pool) {
  constexpr int kMax = 8;
  RWKVL_CHECK(count >= 0 && count <= kMax && "matmul_multi / matvec_multi: at most 8 matrices");
  RWKVL_CHECK(n >= 0);
  int64_t off[kMax + 1] = {0}, work = 0;
  for (int i = 0; i < count; ++i) {
    check_mat(*w[i]);
    off[i + 1] = off[i] + w[i]->rows;
    work += n == 1 ? weight_bytes(*w[i]) : w[i]->rows * w[i]->cols * n;
  }
  if (n == 0) return;
  struct Args {
    const KernelSet* k;
    const MatRef* const* w;
    const float* const* X;
    float* const* Y;
    const int64_t* off;
    int64_t n;
    int count;
    void rows(int i, int64_t b, int64_t e) const {
      if (n == 1) k->matvec_rows(*w[i], X[i], Y[i], b, e);
      else k->matmul_rows(*w[i], X[i], n, Y[i], b, e);
    }
  } a{&current(), w, X, Y, off, n, count};
  if (!pool || pool->size() == 1 || work < (n == 1 ? kMinParallelBytes : kMinParallelMacs)) {
    for (int i = 0; i < count; ++i) a.rows(i, 0, w[i]->rows);
    return;
  }
  pool->parallel_for(
      off[count],
      [p = &a](int64_t b, int64_t e) {
        for (int i = 0; i < p->count; ++i) {
          const int64_t lo = std::max(b, p->off[i]), hi = std::min(e, p->off[i + 1]);
          if (lo < hi) p->rows(i, lo - p->off[i], hi - p->off[i]);
        }
      },
      kRowGrain);
}

void matmul(const MatRef& w, const float* X, int64_t n, float* Y, ThreadPool* pool) {
  check_mat(w);
  RWKVL_CHECK(n >= 0);
  if (n == 1) return matvec(w, X, Y, pool);  // same layout; the matvec kernel is the faster one for 1 token
  const KernelSet& k = current();
  if (!pool || pool->size() == 1 || w.rows * w.cols * n < kMinParallelMacs) {
    k.matmul_rows(w, X, n, Y, 0, w.rows);
    return;
  }
  struct Args {
    const KernelSet* k;
    const MatRef* w;
    const float* X;
    int64_t n;
    float* Y;
  } a{&k, &w, X, n, Y};
  pool->parallel_for(
      w.rows, [p = &a](int64_t b, int64_t e) { p->k->matmul_rows(*p->w, p->X, p->n, p->Y, b, e); }, kRowGrain);
}

// The quantisers live with the dtype table (core/dtype.h); these names stay for the kernels' callers.
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  rwkvl::quantize_rows_i8(src, rows, cols, q, scale);
}
void quantize_rows_i8_f16(const float* src, int64_t rows, int64_t cols, int8_t* q, uint16_t* scale) {
  rwkvl::quantize_rows_i8_f16(src, rows, cols, q, scale);
}
void quantize_rows_q4(const float* src, int64_t rows, int64_t cols, void* out) {
  rwkvl::quantize_rows_q4(src, rows, cols, out);
}

const char* active_isa() { return current().name; }

bool force_isa(const char* name) {
  if (name == nullptr || std::strcmp(name, "auto") == 0) {
    g_forced.store(nullptr, std::memory_order_release);
    return true;
  }
  const KernelSet* k = find_set(name);
  if (!k) return false;
  g_forced.store(k, std::memory_order_release);
  return true;
}

float* detail::expand_tile_buf(int64_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(floats)) buf.resize(static_cast<size_t>(floats));
  return buf.data();
}

float* detail::gemm_buf(int which, int64_t floats) {
  struct Buf {
    float* p = nullptr;
    int64_t n = 0;
    ~Buf() { ::operator delete[](p, std::align_val_t{64}); }
  };
  thread_local Buf bufs[2];
  Buf& b = bufs[which & 1];
  if (b.n < floats) {
    ::operator delete[](b.p, std::align_val_t{64});
    b.p = nullptr, b.n = 0;
    b.p = static_cast<float*>(::operator new[](static_cast<size_t>(floats) * sizeof(float), std::align_val_t{64}));
    b.n = floats;
  }
  return b.p;
}

float* detail::masked_wbuf(int64_t kept) {
  thread_local std::vector<float> buf;
  if (buf.size() < static_cast<size_t>(kept) + 64) buf.resize(static_cast<size_t>(kept) + 64);
  return buf.data();
}

}  // namespace rwkvl::kern
