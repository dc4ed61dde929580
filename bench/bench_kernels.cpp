// Kernel benchmarks: matvec (token generation, memory-bandwidth bound) and matmul (sequence mode)
// for every weight representation (f32, f16, bf16, i8 with f32 or f16 row scales, q4_g32), scalar vs
// SIMD, 1 thread vs all cores, reported as GB/s of weights streamed and as % of the machine's
// measured read bandwidth; and a dense vs low-rank-factored matvec comparison (y = W x vs B (A x)).
//
// Weights are "cold": each benchmark cycles through enough copies of the matrix (>= 512 MB) that
// every call reads them from DRAM, as in real generation where the whole model is streamed once per
// token. (A single small matrix would otherwise sit in L2/L3 and measure the cache instead.)
//
//   bench_kernels                          everything (~4 minutes)
//   bench_kernels --benchmark_filter=f32   a subset; the summary tables are printed at the end
//   bench_kernels --benchmark_filter=factored   only the factored vs dense table
//   bench_kernels --benchmark_filter=ffn        only the sparse channel-mix table (ffn_neurons, bits_*)
//   bench_kernels --benchmark_filter=sparse24   only the sparse table: 2:4-pruned (f16_2of4) and 50 % unstructured
//                                              (f16_masked, i8_masked) vs dense f16 / int8 matvec
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"

namespace {

using rwkvl::DType;
using rwkvl::ThreadPool;
namespace kern = rwkvl::kern;

constexpr size_t kColdBytes = size_t{512} << 20;  // rotate over at least this much weight data
constexpr size_t kBwBytes = size_t{512} << 20;    // the bandwidth probe's buffer

int g_max_threads = 1;
std::map<int, double> g_bw_gbs;  // measured read bandwidth (GB/s, the better probe) per thread count
std::vector<std::string> g_isas;  // available ISAs, best first, "scalar" last

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- memory bandwidth: every thread sums its contiguous share of a 512 MB buffer, best of 7 passes.
// 64-bit integer adds in 4 independent 16-byte vector chains, far faster than DRAM, so the loop
// measures the memory system, not the core. Measured twice,
// without and with a software prefetch (prefetchnta) 4 KB ahead: on some machines (Zen 5 here) the
// hardware prefetchers alone leave a third of the bandwidth unused, and the kernels do prefetch, so
// the bound they are compared against is the better of the two.
struct Bandwidth {
  double plain = 0, prefetch = 0;
  double best() const { return std::max(plain, prefetch); }
};

// 16-byte vectors through GCC's generic vector extension (SSE2 on x86-64, NEON on aarch64): one load
// per 16 bytes, so even one core issues loads far faster than DRAM delivers them.
typedef uint64_t U64x2 __attribute__((vector_size(16)));

template <bool kPrefetch>
uint64_t sum_range(const uint64_t* p, int64_t b, int64_t e) {
  U64x2 s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0;
  int64_t i = b;
  for (; i + 8 <= e; i += 8) {  // one 64-byte line per iteration
    if (kPrefetch) __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p + i) + 4096), 0, 0);
    U64x2 v[4];
    std::memcpy(v, p + i, sizeof v);
    s0 += v[0];
    s1 += v[1];
    s2 += v[2];
    s3 += v[3];
  }
  const U64x2 t = (s0 + s1) + (s2 + s3);
  uint64_t r = t[0] + t[1];
  for (; i < e; ++i) r += p[i];
  return r;
}

Bandwidth measure_read_bandwidth(int threads) {
  const size_t n = kBwBytes / 8;
  std::unique_ptr<uint64_t, decltype(&std::free)> buf(static_cast<uint64_t*>(std::aligned_alloc(4096, kBwBytes)),
                                                      &std::free);
  uint64_t* p = buf.get();
  ThreadPool pool(threads);
  // First touch from the threads that will read (matters on NUMA machines).
  pool.parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
  }, 4096);
  std::atomic<uint64_t> sink{0};
  Bandwidth bw;
  for (int pass = 0; pass < 14; ++pass) {
    const bool pf = pass % 2 == 1;
    const double t0 = now_s();
    pool.parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      sink.fetch_add(pf ? sum_range<true>(p, b, e) : sum_range<false>(p, b, e), std::memory_order_relaxed);
    }, 4096);
    const double gbs = static_cast<double>(kBwBytes) / (now_s() - t0) / 1e9;
    double& best = pf ? bw.prefetch : bw.plain;
    best = std::max(best, gbs);
  }
  benchmark::DoNotOptimize(sink.load());
  return bw;
}

// ---- weight representations benchmarked: the dtypes, plus int8 with f16 row scales (what
// `rwkv-lite compress` writes) and q4_g32 blocks. GB/s count the bytes of the weight data proper
// (q4: 20-byte blocks including their d and m; i8: the int8 values, not the rows * 2-4 scale bytes).
struct Kind {
  const char* name;
  DType dtype;
  bool f16_scale;
};
const Kind kKinds[] = {{"f32", DType::kF32, false}, {"f16", DType::kF16, false}, {"bf16", DType::kBF16, false},
                       {"i8", DType::kI8, false},   {"i8f16", DType::kI8, true},  {"q4", DType::kQ4, false},
                       {"f16_2of4", DType::kF16S24, false}, {"f16_masked", DType::kF16M, false},
                       {"i8_masked", DType::kI8M, true}};
constexpr int kNumKinds = sizeof(kKinds) / sizeof(kKinds[0]) - 3;  // the dense kinds (the main tables)
constexpr int kF16Kind = 1, kI8F16Kind = 4, kS24Kind = kNumKinds;  // the sparse table
constexpr int kF16MKind = kNumKinds + 1, kI8MKind = kNumKinds + 2;
// Masked kinds: 50 % unstructured, every row keeps exactly half of its columns (as Wanda / DSnoT at 50 %).
int64_t masked_kept(int64_t cols) { return cols / 2; }
size_t kind_bytes(const Kind& k, int64_t rows, int64_t cols) {
  if (rwkvl::dtype_is_masked(k.dtype)) return static_cast<size_t>(rows * rwkvl::masked_row_bytes(k.dtype, cols, masked_kept(cols)));
  return rwkvl::dtype_bytes(k.dtype, static_cast<uint64_t>(rows * cols));
}

uint32_t lcg(uint32_t& s) { return s = s * 1664525u + 1013904223u; }
float rnd(uint32_t& s) { return static_cast<float>(lcg(s) >> 8) * (2.0f / 16777216.0f) - 1.0f; }

// One matrix's bytes in the representation of kind k, values uniform in [-1, 1).
void fill_weights(const Kind& k, int64_t rows, int64_t cols, uint32_t seed, uint8_t* d) {
  uint32_t s = seed;
  if (rwkvl::dtype_is_masked(k.dtype)) {  // half of every row's columns zeroed at random, packed 64 rows at a time
    std::vector<float> tmp;
    std::vector<uint16_t> sc(64);
    std::vector<int32_t> idx(static_cast<size_t>(cols));
    const size_t row_bytes = static_cast<size_t>(rwkvl::masked_row_bytes(k.dtype, cols, masked_kept(cols)));
    for (int64_t r = 0; r < rows; r += 64) {
      const int64_t nr = std::min<int64_t>(64, rows - r);
      tmp.resize(static_cast<size_t>(nr * cols));
      for (int64_t i = 0; i < nr; ++i) {
        for (int64_t c = 0; c < cols; ++c) tmp[static_cast<size_t>(i * cols + c)] = rnd(s);
        std::iota(idx.begin(), idx.end(), 0);
        for (int64_t c = cols - 1; c > 0; --c) std::swap(idx[static_cast<size_t>(c)], idx[lcg(s) % static_cast<uint32_t>(c + 1)]);
        for (int64_t c = 0; c < cols - masked_kept(cols); ++c) tmp[static_cast<size_t>(i * cols + idx[static_cast<size_t>(c)])] = 0.0f;
      }
      rwkvl::pack_rows_masked(k.dtype, tmp.data(), nr, cols, masked_kept(cols), d + static_cast<size_t>(r) * row_bytes,
                              sc.data(), true);
    }
    return;
  }
  if (k.dtype == DType::kF16S24) {  // 2:4-pruned (the two largest of every 4), packed 64 rows at a time
    std::vector<float> tmp;
    const size_t row_bytes = static_cast<size_t>(cols / 32 * 36);
    for (int64_t r = 0; r < rows; r += 64) {
      const int64_t nr = std::min<int64_t>(64, rows - r);
      tmp.resize(static_cast<size_t>(nr * cols));
      for (auto& v : tmp) v = rnd(s);
      rwkvl::pack_rows_s24(tmp.data(), nr, cols, d + static_cast<size_t>(r) * row_bytes);
    }
    return;
  }
  if (k.dtype == DType::kQ4) {  // quantise 64 rows at a time
    std::vector<float> tmp;
    for (int64_t r = 0; r < rows; r += 64) {
      const int64_t nr = std::min<int64_t>(64, rows - r);
      tmp.resize(static_cast<size_t>(nr * cols));
      for (auto& v : tmp) v = rnd(s);
      kern::quantize_rows_q4(tmp.data(), nr, cols, d + static_cast<size_t>(r * cols / 32 * 20));
    }
    return;
  }
  const size_t n = static_cast<size_t>(rows * cols);
  for (size_t i = 0; i < n; ++i) {
    const float v = rnd(s);
    switch (k.dtype) {
      case DType::kF32: std::memcpy(d + 4 * i, &v, 4); break;
      case DType::kF16: {
        const uint16_t h = rwkvl::f32_to_f16(v);
        std::memcpy(d + 2 * i, &h, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t h = rwkvl::f32_to_bf16(v);
        std::memcpy(d + 2 * i, &h, 2);
        break;
      }
      default: d[i] = static_cast<uint8_t>(static_cast<int8_t>(v * 127.0f)); break;
    }
  }
}

// Copies of a group of matrices ("parts": one for a dense matrix, A and B for a factored pair),
// rotated between calls so that every call reads its weights from DRAM. Every part of every copy
// starts on a 64-byte boundary, as tensors do in memory and in the native file format.
struct ColdSet {
  const Kind* kind = nullptr;
  struct Part {
    int64_t rows, cols;
    size_t bytes, offset;  // offset inside a copy
    std::vector<float> scale;
    std::vector<uint16_t> scale16;
  };
  std::vector<Part> parts;
  size_t bytes = 0;   // one copy, all parts (weights only)
  size_t stride = 0;  // distance between copies
  int copies = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> data{nullptr, &std::free};

  kern::MatRef ref(int copy, size_t part = 0) const {
    const Part& p = parts[part];
    kern::MatRef m;
    m.dtype = kind->dtype;
    m.rows = p.rows;
    m.cols = p.cols;
    m.data = data.get() + static_cast<size_t>(copy) * stride + p.offset;
    if (rwkvl::dtype_is_masked(kind->dtype)) m.kept = masked_kept(p.cols);
    if (kind->dtype == DType::kI8 || kind->dtype == DType::kI8M) {
      m.row_scale = kind->f16_scale ? static_cast<const void*>(p.scale16.data()) : p.scale.data();
      m.scale_dtype = kind->f16_scale ? DType::kF16 : DType::kF32;
    }
    return m;
  }
};

std::unique_ptr<ColdSet> make_cold(const Kind& k, const std::vector<std::pair<int64_t, int64_t>>& shapes,
                                   size_t min_total) {
  auto m = std::make_unique<ColdSet>();
  m->kind = &k;
  size_t off = 0;
  for (auto [rows, cols] : shapes) {
    ColdSet::Part p;
    p.rows = rows;
    p.cols = cols;
    p.bytes = kind_bytes(k, rows, cols);
    p.offset = off;
    off += (p.bytes + 63) / 64 * 64;
    m->bytes += p.bytes;
    p.scale.assign(static_cast<size_t>(rows), 1.0f / 127.0f);
    p.scale16.assign(static_cast<size_t>(rows), rwkvl::f32_to_f16(1.0f / 127.0f));
    m->parts.push_back(std::move(p));
  }
  m->stride = off;
  m->copies = static_cast<int>(std::max<size_t>(1, (min_total + m->stride - 1) / m->stride));
  m->data.reset(static_cast<uint8_t*>(std::aligned_alloc(64, m->stride * static_cast<size_t>(m->copies))));
  uint8_t* d = m->data.get();
  uint32_t seed = 12345;
  for (const auto& p : m->parts) fill_weights(k, p.rows, p.cols, seed++, d + p.offset);
  for (int c = 1; c < m->copies; ++c) std::memcpy(d + static_cast<size_t>(c) * m->stride, d, m->stride);
  return m;
}

const ColdSet& get_mat(int kind, int64_t rows, int64_t cols) {
  static std::unique_ptr<ColdSet> cached;  // one at a time: the largest are 512 MB
  if (cached && cached->kind == &kKinds[kind] && cached->parts[0].rows == rows && cached->parts[0].cols == cols)
    return *cached;
  cached.reset();
  cached = make_cold(kKinds[kind], {{rows, cols}}, kColdBytes);
  return *cached;
}

// ---- results collected for the summary table
struct Result {
  double gbs = 0, us = 0;
};
std::map<std::string, Result> g_results;  // key: benchmark name

struct Shape {
  int64_t rows, cols;
};
// The three shapes of the brief: a 768-wide head (65536 vocab), and an FFN's up and down projections.
const Shape kShapes[] = {{65536, 768}, {3072, 768}, {768, 3072}};
const Shape kMatmulShapes[] = {{3072, 768}, {768, 3072}};
const int64_t kTokens[] = {1, 4, 16, 64};

std::string shape_name(const Shape& s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }
std::string mv_name(int d, const Shape& s, const std::string& isa, int t) {
  return std::string("matvec/") + kKinds[d].name + "/" + shape_name(s) + "/" + isa + "/t" + std::to_string(t);
}
std::string mm_name(int d, const Shape& s, int64_t n, const std::string& isa, int t) {
  return std::string("matmul/") + kKinds[d].name + "/" + shape_name(s) + "/n" + std::to_string(n) + "/" + isa + "/t" +
         std::to_string(t);
}

void BM_matvec(benchmark::State& state, int kind, Shape s, std::string isa, int threads, std::string name) {
  if (!kern::force_isa(isa.c_str())) {
    state.SkipWithError("ISA not available");
    return;
  }
  const ColdSet& m = get_mat(kind, s.rows, s.cols);
  ThreadPool pool(threads);
  std::vector<float> x(static_cast<size_t>(s.cols)), y(static_cast<size_t>(s.rows));
  uint32_t seed = 7;
  for (auto& v : x) v = rnd(seed);
  int copy = 0;
  const double t0 = now_s();
  for (auto _ : state) {
    kern::matvec(m.ref(copy), x.data(), y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    if (++copy == m.copies) copy = 0;
  }
  const double dt_s = now_s() - t0;
  kern::force_isa(nullptr);
  const double iters = static_cast<double>(state.iterations());
  const double gbs = static_cast<double>(m.bytes) * iters / dt_s / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["%bw"] = 100.0 * gbs / g_bw_gbs[threads];
  Result& best = g_results[name];  // with --benchmark_repetitions keep the best run: noise only slows down
  if (gbs > best.gbs) best = {gbs, dt_s / iters * 1e6};
}

void BM_matmul(benchmark::State& state, int kind, Shape s, int64_t n, std::string isa, int threads,
               std::string name) {
  if (!kern::force_isa(isa.c_str())) {
    state.SkipWithError("ISA not available");
    return;
  }
  const ColdSet& m = get_mat(kind, s.rows, s.cols);
  ThreadPool pool(threads);
  std::vector<float> X(static_cast<size_t>(n * s.cols)), Y(static_cast<size_t>(n * s.rows));
  uint32_t seed = 9;
  for (auto& v : X) v = rnd(seed);
  int copy = 0;
  const double t0 = now_s();
  for (auto _ : state) {
    kern::matmul(m.ref(copy), X.data(), n, Y.data(), &pool);
    benchmark::DoNotOptimize(Y.data());
    if (++copy == m.copies) copy = 0;
  }
  const double dt_s = now_s() - t0;
  kern::force_isa(nullptr);
  const double iters = static_cast<double>(state.iterations());
  const double us = dt_s / iters * 1e6;
  state.counters["us/token"] = us / static_cast<double>(n);
  state.counters["GFLOP/s"] = 2.0 * static_cast<double>(s.rows * s.cols * n) * iters / dt_s / 1e9;
  Result& best = g_results[name];
  if (best.us == 0 || us < best.us) best = {static_cast<double>(m.bytes) * iters / dt_s / 1e9, us};
}

// ---- factored vs dense: y = W x (W out x in) against y = B (A x) with A rank x in and B out x rank,
// both through kern::matvec on a 2-thread pool (what a low-rank-compressed layer costs per token).
// Each variant rotates over >= kColdBytes of copies of its matrices (A and B of one copy side by
// side), so the small factors are read from DRAM too, not from L2/L3. The variants of one dtype and
// shape are timed in interleaved rounds (best round each), so that the drifting bandwidth of a shared
// machine affects them alike.
constexpr int kFactoredThreads = 2;
const int kFactoredKinds[] = {0, 1, 3, 5};  // f32, f16, i8, q4
const Shape kFactoredShapes[] = {{768, 768}, {3072, 768}, {768, 3072}};
const int kRankDivs[] = {4, 8};  // rank = min(out, in) / div
constexpr int kFactoredRounds = 7;
constexpr double kFactoredRoundSeconds = 0.04;

std::string fac_name(int d, const Shape& s, int64_t rank) {
  return std::string("factored/") + kKinds[d].name + "/" + shape_name(s) + "/" +
         (rank == 0 ? std::string("dense") : "r" + std::to_string(rank));
}

void BM_factored(benchmark::State& state, int kind, Shape s) {
  std::vector<int64_t> ranks = {0};
  for (int div : kRankDivs) ranks.push_back(std::min(s.rows, s.cols) / div);
  std::vector<std::unique_ptr<ColdSet>> sets;
  for (int64_t rank : ranks) {
    if (rank == 0) {
      sets.push_back(make_cold(kKinds[kind], {{s.rows, s.cols}}, kColdBytes));
    } else {
      sets.push_back(make_cold(kKinds[kind], {{rank, s.cols}, {s.rows, rank}}, kColdBytes));
    }
  }
  ThreadPool pool(kFactoredThreads);
  std::vector<float> x(static_cast<size_t>(s.cols)), mid(static_cast<size_t>(std::max(s.rows, s.cols))),
      y(static_cast<size_t>(s.rows));
  uint32_t seed = 7;
  for (auto& v : x) v = rnd(seed);
  std::vector<double> best_us(ranks.size(), 1e30);
  std::vector<int> copy(ranks.size(), 0);
  for (auto _ : state) {  // one iteration (see the registration): the timing is done here
    for (int round = 0; round < kFactoredRounds; ++round) {
      for (size_t v = 0; v < ranks.size(); ++v) {
        const ColdSet& m = *sets[v];
        int64_t calls = 0;
        const double t0 = now_s();
        double t = t0;
        do {
          for (int i = 0; i < 16; ++i, ++calls) {
            if (ranks[v] == 0) {
              kern::matvec(m.ref(copy[v]), x.data(), y.data(), &pool);
            } else {
              kern::matvec(m.ref(copy[v], 0), x.data(), mid.data(), &pool);
              kern::matvec(m.ref(copy[v], 1), mid.data(), y.data(), &pool);
            }
            benchmark::DoNotOptimize(y.data());
            if (++copy[v] == m.copies) copy[v] = 0;
          }
          t = now_s();
        } while (t - t0 < kFactoredRoundSeconds);
        best_us[v] = std::min(best_us[v], (t - t0) / static_cast<double>(calls) * 1e6);
      }
    }
  }
  for (size_t v = 0; v < ranks.size(); ++v) {
    const double gbs = static_cast<double>(sets[v]->bytes) / (best_us[v] * 1e-6) / 1e9;
    g_results[fac_name(kind, s, ranks[v])] = {gbs, best_us[v]};
    state.counters[ranks[v] == 0 ? std::string("dense_us") : "r" + std::to_string(ranks[v]) + "_us"] = best_us[v];
  }
}

// ---- sparse channel-mix (issue #5) at the 0.1B shape, C = 768, F = 3072, cold weights:
//   dense:   k = Wk x (F x C), relu^2, y = Wv k (C x F): two kern::matvec on a 1- or 2-thread pool
//   neurons: kern::ffn_neurons over a bundled 2F x C matrix (row 2i = Wk row i, row 2i+1 = Wv column i)
//            on all F neurons, and on random 50 % / 10 % subsets (ids ascending, as a predictor scan
//            yields them), skip_zero = false; 2 threads split the list in halves, each with its own
//            y (summed afterwards, included in the time)
//   bits:    bits_prepare + bits_scores_rows over F rows x C columns (the predictor's 1-bit W_k)
// Every variant rotates over >= kColdBytes of copies ("layers"), timed in interleaved rounds, best
// round each (as the factored table). GB/s count the weight bytes a call reads (i8: scales excluded).
constexpr int64_t kFfnC = 768, kFfnF = 3072;
const int kFfnKinds[] = {0, 1, 4};  // f32, f16, i8 with f16 scales
struct FfnVariant {
  const char* name;
  int threads;
  double frac;  // neurons: fraction of F; 0 = dense matvecs; -1 = bits
};
const FfnVariant kFfnVariants[] = {{"dense", 1, 0},    {"dense", 2, 0},    {"neurons100", 1, 1.0}, {"neurons100", 2, 1.0},
                                   {"neurons50", 1, 0.5}, {"neurons50", 2, 0.5}, {"neurons10", 1, 0.1}, {"neurons10", 2, 0.1},
                                   {"bits", 1, -1},    {"bits", 2, -1}};
constexpr int kNumFfnVariants = sizeof(kFfnVariants) / sizeof(kFfnVariants[0]);
constexpr int kFfnRounds = 7;
constexpr double kFfnRoundSeconds = 0.05;

std::string ffn_name(int d, int v) {
  return std::string("ffn/") + kKinds[d].name + "/" + kFfnVariants[v].name + "/t" + std::to_string(kFfnVariants[v].threads);
}

void BM_ffn(benchmark::State& state, int kind) {
  const int64_t C = kFfnC, F = kFfnF;
  const Kind& k = kKinds[kind];
  auto dense = make_cold(k, {{F, C}, {C, F}}, kColdBytes);
  auto bundled = make_cold(k, {{2 * F, C}}, kColdBytes);
  // The predictor's bits (F x C/8 bytes, 288 KB) rotated over copies as well.
  const int64_t bits_bytes = F * C / 8;
  const int bits_copies = static_cast<int>(kColdBytes / static_cast<size_t>(bits_bytes));
  std::vector<uint8_t> bits(static_cast<size_t>(bits_bytes) * static_cast<size_t>(bits_copies));
  uint32_t seed = 3;
  for (auto& b : bits) b = static_cast<uint8_t>(lcg(seed) >> 24);
  std::vector<float> lo(static_cast<size_t>(F), -0.01f), step(static_cast<size_t>(F), 0.02f);
  std::vector<float> table(kern::bits_table_floats(C)), score(static_cast<size_t>(F));

  const int64_t row_b = kern::row_bytes(k.dtype, C);
  std::vector<float> x(static_cast<size_t>(C)), kk(static_cast<size_t>(F)), kout(static_cast<size_t>(F));
  std::vector<float> ys[2] = {std::vector<float>(static_cast<size_t>(C)), std::vector<float>(static_cast<size_t>(C))};
  for (auto& v : x) v = rnd(seed);
  // id lists per fraction, ascending; pointer arrays per copy are rebuilt from the id list.
  std::mt19937 gen(11);
  std::map<double, std::vector<int32_t>> id_lists;
  for (const FfnVariant& v : kFfnVariants) {
    if (v.frac <= 0 || id_lists.count(v.frac)) continue;
    std::vector<int32_t> all(static_cast<size_t>(F));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), gen);
    all.resize(static_cast<size_t>(static_cast<double>(F) * v.frac));
    std::sort(all.begin(), all.end());
    id_lists[v.frac] = all;
  }
  std::vector<const void*> ptrs(static_cast<size_t>(F));
  ThreadPool pool1(1), pool2(2);
  std::vector<double> best_us(kNumFfnVariants, 1e30), bytes(kNumFfnVariants, 0);
  std::vector<int> copy(kNumFfnVariants, 0);

  auto run_neurons = [&](const std::vector<int32_t>& ids, int cp, int threads) {
    const uint8_t* base = static_cast<const uint8_t*>(bundled->ref(cp).data);
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t j = 0; j < n; ++j) ptrs[static_cast<size_t>(j)] = base + 2 * ids[static_cast<size_t>(j)] * row_b;
    kern::MatRef layout = bundled->ref(cp);
    for (auto& y : ys) std::fill(y.begin(), y.end(), 0.0f);
    if (threads == 1) {
      kern::ffn_neurons(layout, ptrs.data(), ids.data(), n, x.data(), ys[0].data(), kout.data(), false);
    } else {
      const int64_t half = n / 2;
      pool2.parallel_for(2, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t j0 = t == 0 ? 0 : half, j1 = t == 0 ? half : n;
          kern::ffn_neurons(layout, ptrs.data() + j0, ids.data() + j0, j1 - j0, x.data(), ys[t].data(), kout.data() + j0,
                            false);
        }
      });
      for (int64_t c = 0; c < C; ++c) ys[0][static_cast<size_t>(c)] += ys[1][static_cast<size_t>(c)];
    }
    benchmark::DoNotOptimize(ys[0].data());
  };

  for (auto _ : state) {
    for (int round = 0; round < kFfnRounds; ++round) {
      for (int v = 0; v < kNumFfnVariants; ++v) {
        const FfnVariant& fv = kFfnVariants[v];
        ThreadPool* pool = fv.threads == 1 ? &pool1 : &pool2;
        int64_t calls = 0;
        const double t0 = now_s();
        double t = t0;
        do {
          for (int i = 0; i < 8; ++i, ++calls) {
            if (fv.frac == 0) {
              kern::matvec(dense->ref(copy[v], 0), x.data(), kk.data(), pool);
              for (auto& e : kk) e = e > 0 ? e * e : 0.0f;
              kern::matvec(dense->ref(copy[v], 1), kk.data(), ys[0].data(), pool);
              benchmark::DoNotOptimize(ys[0].data());
              bytes[v] = static_cast<double>(dense->bytes);
              if (++copy[v] == dense->copies) copy[v] = 0;
            } else if (fv.frac < 0) {
              kern::bits_prepare(x.data(), C, table.data());
              const uint8_t* b = bits.data() + static_cast<size_t>(copy[v]) * static_cast<size_t>(bits_bytes);
              if (fv.threads == 1) {
                kern::bits_scores_rows(b, lo.data(), step.data(), C, table.data(), score.data(), 0, F);
              } else {
                pool2.parallel_for(F, [&](int64_t rb, int64_t re) {
                  kern::bits_scores_rows(b, lo.data(), step.data(), C, table.data(), score.data(), rb, re);
                }, 64);
              }
              benchmark::DoNotOptimize(score.data());
              bytes[v] = static_cast<double>(bits_bytes);
              if (++copy[v] == bits_copies) copy[v] = 0;
            } else {
              const std::vector<int32_t>& ids = id_lists[fv.frac];
              run_neurons(ids, copy[v], fv.threads);
              bytes[v] = static_cast<double>(ids.size()) * 2.0 * static_cast<double>(row_b);
              if (++copy[v] == bundled->copies) copy[v] = 0;
            }
          }
          t = now_s();
        } while (t - t0 < kFfnRoundSeconds);
        best_us[v] = std::min(best_us[v], (t - t0) / static_cast<double>(calls) * 1e6);
      }
    }
  }
  for (int v = 0; v < kNumFfnVariants; ++v) {
    g_results[ffn_name(kind, v)] = {bytes[v] / (best_us[v] * 1e-6) / 1e9, best_us[v]};
    state.counters[std::string(kFfnVariants[v].name) + "_t" + std::to_string(kFfnVariants[v].threads) + "_us"] = best_us[v];
  }
}

// The cost of one parallel region with trivial work: what every kernel call pays on top of its work.
void BM_parallel_for_overhead(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.parallel_for(64, [&](int64_t b, int64_t e) { sink.fetch_add(e - b, std::memory_order_relaxed); });
  }
  benchmark::DoNotOptimize(sink.load());
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      const size_t p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "unknown";
}

// ---- 2:4 (f16_2of4) against dense f16: the FFN shapes of the reference model (D = 256) and of the 0.1B shape.
const Shape kS24Shapes[] = {{896, 256}, {256, 896}, {3072, 768}, {768, 3072}};
std::string s24_name(int d, const Shape& s, int t) {
  return std::string("sparse24/") + kKinds[d].name + "/" + shape_name(s) + "/t" + std::to_string(t);
}

void print_s24(const std::vector<int>& threads) {
  std::printf("\n==== sparse vs dense matvec (%s, cold weights): us per call; speedup over the dense matrix of the same "
              "value type ====\n", g_isas[0].c_str());
  std::printf("%-10s %3s %9s %9s %7s %9s %7s | %9s %9s %7s\n", "shape", "thr", "f16 us", "2:4 us", "speedup", "masked us",
              "speedup", "i8 us", "i8m us", "speedup");
  auto us = [&](int d, const Shape& s, int t) {
    const auto it = g_results.find(s24_name(d, s, t));
    return it == g_results.end() ? 0.0 : it->second.us;
  };
  for (const Shape& s : kS24Shapes)
    for (int t : threads) {
      const double f = us(kF16Kind, s, t), p = us(kS24Kind, s, t), m = us(kF16MKind, s, t), i = us(kI8F16Kind, s, t),
                   im = us(kI8MKind, s, t);
      if (f == 0 || p == 0) continue;
      std::printf("%-10s %3d %9.2f %9.2f %6.2fx %9.2f %6.2fx | %9.2f %9.2f %6.2fx\n", shape_name(s).c_str(), t, f, p, f / p, m,
                  m > 0 ? f / m : 0.0, i, im, im > 0 ? i / im : 0.0);
    }
  std::printf("(bytes of the matrix against dense: 2:4 36/64 = 0.5625x f16; 50 %% masked f16 (1 + 8) / 16 = 0.5625x; "
              "50 %% masked int8 (1 + 4) / 8 = 0.625x int8, row scales aside)\n");
}

void print_summary() {
  std::printf("\n==== matvec: GB/s of weights streamed (%% of measured read bandwidth), cold weights ====\n");
  for (int t : {1, g_max_threads}) {
    std::printf("-- %d thread(s), bandwidth %.1f GB/s\n", t, g_bw_gbs[t]);
    std::printf("%-5s %-11s", "dtype", "shape");
    for (const auto& isa : g_isas) std::printf(" %18s", isa.c_str());
    std::printf("  best/scalar\n");
    for (int d = 0; d < kNumKinds; ++d) {
      for (const Shape& s : kShapes) {
        std::printf("%-5s %-11s", kKinds[d].name, shape_name(s).c_str());
        double best = 0, scalar = 0;
        for (const auto& isa : g_isas) {
          auto it = g_results.find(mv_name(d, s, isa, t));
          if (it == g_results.end()) {
            std::printf(" %18s", "-");
            continue;
          }
          std::printf(" %7.1f GB/s (%3.0f%%)", it->second.gbs, 100 * it->second.gbs / g_bw_gbs[t]);
          best = std::max(best, it->second.gbs);
          if (isa == "scalar") scalar = it->second.gbs;
        }
        if (scalar > 0) std::printf("  %5.2fx", best / scalar);
        std::printf("\n");
      }
    }
    if (t == g_max_threads) break;
  }
  std::printf("\n==== matmul (%s, %d threads): time per token vs one matvec per token ====\n", g_isas[0].c_str(),
              g_max_threads);
  std::printf("%-5s %-10s %4s %12s %12s %8s\n", "dtype", "shape", "n", "us/token", "matvec us", "speedup");
  for (int d = 0; d < kNumKinds; ++d) {
    for (const Shape& s : kMatmulShapes) {
      auto mv = g_results.find(mv_name(d, s, g_isas[0], g_max_threads));
      for (int64_t n : kTokens) {
        auto mm = g_results.find(mm_name(d, s, n, g_isas[0], g_max_threads));
        if (mm == g_results.end()) continue;
        const double per_tok = mm->second.us / static_cast<double>(n);
        if (mv != g_results.end()) {
          std::printf("%-5s %-10s %4lld %12.2f %12.2f %7.2fx\n", kKinds[d].name, shape_name(s).c_str(),
                      static_cast<long long>(n), per_tok, mv->second.us, mv->second.us / per_tok);
        } else {
          std::printf("%-5s %-10s %4lld %12.2f %12s\n", kKinds[d].name, shape_name(s).c_str(),
                      static_cast<long long>(n), per_tok, "-");
        }
      }
    }
  }
  std::printf("\n==== factored vs dense matvec (%s, %d-thread pool, cold weights): y = W x  vs  y = B (A x) ====\n",
              g_isas[0].c_str(), kFactoredThreads);
  std::printf("(A: rank x in, B: out x rank, rank = min(out, in) / 4 and / 8; every variant rotates over >= %zu MiB\n"
              " of copies of its matrices, larger than this machine's caches, so all weights come from DRAM; the\n"
              " three variants of a row are timed in %d interleaved rounds of %.0f ms, best round each)\n",
              kColdBytes >> 20, kFactoredRounds, kFactoredRoundSeconds * 1e3);
  std::printf("%-5s %-9s | %9s %9s %6s | %5s %9s %9s %6s %6s | %5s %9s %9s %6s %6s\n", "dtype", "out x in", "dense us",
              "bytes", "GB/s", "rank", "us", "bytes", "GB/s", "speed", "rank", "us", "bytes", "GB/s", "speed");
  auto kb = [](double b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0fK", b / 1024);
    return std::string(buf);
  };
  for (const Shape& s : kFactoredShapes) {
    for (int d : kFactoredKinds) {
      auto dense = g_results.find(fac_name(d, s, 0));
      if (dense == g_results.end()) continue;
      const double dense_bytes = dense->second.gbs * dense->second.us * 1e3;
      std::printf("%-5s %-9s | %9.2f %9s %6.1f", kKinds[d].name, shape_name(s).c_str(), dense->second.us,
                  kb(dense_bytes).c_str(), dense->second.gbs);
      for (int div : kRankDivs) {
        const int64_t rank = std::min(s.rows, s.cols) / div;
        auto f = g_results.find(fac_name(d, s, rank));
        if (f == g_results.end()) continue;
        std::printf(" | %5lld %9.2f %9s %6.1f %5.2fx", static_cast<long long>(rank), f->second.us,
                    kb(f->second.gbs * f->second.us * 1e3).c_str(), f->second.gbs, dense->second.us / f->second.us);
      }
      std::printf("\n");
    }
  }
  std::printf("(speed = dense time / factored time; ideal = dense bytes / factored bytes: 2.0x at rank/4 and 4.0x at\n"
              " rank/8 for square 768x768, 3.2x and 6.4x for 3072x768)\n");
  std::printf("\n==== sparse channel-mix (%s, C=%lld F=%lld, cold weights): ms per layer (GB/s of weights read) ====\n",
              g_isas[0].c_str(), static_cast<long long>(kFfnC), static_cast<long long>(kFfnF));
  std::printf("(dense: matvec Wk + relu^2 + matvec Wv; neuronsP: ffn_neurons on P %% of the F bundled neurons, ids\n"
              " ascending, skip_zero=false; bits: bits_prepare + bits_scores_rows over F rows; speed = dense / variant\n"
              " at the same thread count)\n");
  std::printf("%-5s %3s", "dtype", "thr");
  for (int v = 0; v < kNumFfnVariants; v += 2) std::printf(" | %-25s", kFfnVariants[v].name);
  std::printf("\n");
  for (int d : kFfnKinds) {
    for (int t = 1; t <= 2; ++t) {
      auto dense = g_results.find(ffn_name(d, t - 1));
      if (dense == g_results.end()) continue;
      std::printf("%-5s %3d", kKinds[d].name, t);
      for (int v = t - 1; v < kNumFfnVariants; v += 2) {
        auto r = g_results.find(ffn_name(d, v));
        if (r == g_results.end()) {
          std::printf(" | %-25s", "-");
          continue;
        }
        char cell[64];
        if (v < 2) {
          std::snprintf(cell, sizeof cell, "%.3f ms (%5.1f GB/s)", r->second.us * 1e-3, r->second.gbs);
        } else {
          std::snprintf(cell, sizeof cell, "%.3f ms (%5.1f) %5.2fx", r->second.us * 1e-3, r->second.gbs,
                        dense->second.us / r->second.us);
        }
        std::printf(" | %-25s", cell);
      }
      std::printf("\n");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  g_max_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const char* isa : {"avx512", "avx2", "neon", "scalar"})
    if (kern::force_isa(isa)) g_isas.push_back(isa);
  kern::force_isa(nullptr);

  std::map<int, Bandwidth> bw;
  for (int t : {1, g_max_threads}) {
    bw[t] = measure_read_bandwidth(t);
    g_bw_gbs[t] = bw[t].best();
  }
  std::printf("rwkv-lite kernels: cpu=\"%s\" isa=%s available=[", cpu_model().c_str(), kern::active_isa());
  for (size_t i = 0; i < g_isas.size(); ++i) std::printf("%s%s", i ? " " : "", g_isas[i].c_str());
  std::printf("] threads=1,%d\n", g_max_threads);
  for (int t : {1, g_max_threads}) {
    std::printf("memory read bandwidth, %d thread(s), 512 MB streaming sum: %.1f GB/s plain, %.1f GB/s with prefetch"
                " -> bound %.1f GB/s\n", t, bw[t].plain, bw[t].prefetch, g_bw_gbs[t]);
    if (t == g_max_threads) break;
  }
  std::fflush(stdout);

  // Rows are grouped by matrix so each cold matrix set is built once.
  std::vector<int> threads = {1};
  if (g_max_threads > 1) threads.push_back(g_max_threads);
  for (int d = 0; d < kNumKinds; ++d) {
    for (const Shape& s : kShapes) {
      for (int t : threads) {
        for (const auto& isa : g_isas) {
          const std::string name = mv_name(d, s, isa, t);
          benchmark::RegisterBenchmark(name.c_str(), BM_matvec, d, s, isa, t, name)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
      for (const Shape& ms : kMatmulShapes) {
        if (ms.rows != s.rows || ms.cols != s.cols) continue;
        for (int64_t n : kTokens) {
          const std::string name = mm_name(d, s, n, g_isas[0], g_max_threads);
          benchmark::RegisterBenchmark(name.c_str(), BM_matmul, d, s, n, g_isas[0], g_max_threads, name)
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  for (const Shape& s : kFactoredShapes) {
    for (int d : kFactoredKinds) {
      const std::string name = std::string("factored/") + kKinds[d].name + "/" + shape_name(s);
      benchmark::RegisterBenchmark(name.c_str(), BM_factored, d, s)->Iterations(1)->Unit(benchmark::kMillisecond);
    }
  }
  for (int d : kFfnKinds) {
    const std::string name = std::string("ffn/") + kKinds[d].name;
    benchmark::RegisterBenchmark(name.c_str(), BM_ffn, d)->Iterations(1)->Unit(benchmark::kMillisecond);
  }
  for (const Shape& s : kS24Shapes)
    for (int d : {kF16Kind, kS24Kind, kF16MKind, kI8F16Kind, kI8MKind})
      for (int t : threads) {
        const std::string name = s24_name(d, s, t);
        benchmark::RegisterBenchmark(name.c_str(), BM_matvec, d, s, g_isas[0], t, name)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
  benchmark::RegisterBenchmark("parallel_for_overhead", BM_parallel_for_overhead)
      ->Arg(1)
      ->Arg(g_max_threads)
      ->UseRealTime();

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Bandwidth drifts on shared machines: measure again and let the summary use the better bound.
  for (int t : {1, g_max_threads}) {
    const Bandwidth again = measure_read_bandwidth(t);
    std::printf("memory read bandwidth re-measured, %d thread(s): %.1f GB/s plain, %.1f GB/s with prefetch\n", t,
                again.plain, again.prefetch);
    g_bw_gbs[t] = std::max(g_bw_gbs[t], again.best());
    if (t == g_max_threads) break;
  }
  print_summary();
  print_s24(threads);
  return 0;
}
