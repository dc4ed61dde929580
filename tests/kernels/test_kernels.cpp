// Kernels: every ISA path this machine can run, for every weight dtype, against a double-precision
// product of the exactly dequantised weights (independent of the kernels' own conversion code: it
// uses core/dtype.h) and against the scalar path; plus matmul == n matvecs, thread-count
// independence, row ranges, exhaustive FP16/BF16/INT8 conversion and quantize_rows_i8. The two
// compressed representations (q4_g32 blocks, int8 with f16 row scales) have their own tests below
// (their column counts are multiples of 32), with quantize_rows_q4 / quantize_rows_i8_f16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"

namespace rwkvl::kern {
namespace {

// ---- error budgets (relative to sum_c |W[r][c] * x[c]|, the natural scale of rounding errors)
// FP32 accumulation of up to a few thousand products, blocked over 4-16 lanes and several
// accumulators: the worst case is ~ (cols / lanes) * 2^-24 ~ 1e-5 for cols = 3072, the typical
// (random rounding) case far smaller: observed <= 5e-8 on every path. 2e-6 keeps a 40x margin over
// that, while a real bug (a dropped or doubled column, a wrong conversion) shows up as 1e-4 or more.
constexpr double kAccumBudget = 2e-6;
// Two different float paths may each be off by the budget, so they may differ by twice it.
constexpr double kPathBudget = 2 * kAccumBudget;
// Storing float32 weights as ... changes the product by at most (per element relative error) * sum|w x|:
constexpr double kF16StorageBudget = 1.0 / 2048;  // 2^-11: half precision has 10 stored mantissa bits
constexpr double kBF16StorageBudget = 1.0 / 256;  // 2^-8: bfloat16 has 7 stored mantissa bits
// INT8 rounds each weight by at most scale/2 = absmax/254, an absolute error: bounded by
// (absmax/254) * sum|x| per row (checked separately below).

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  float uniform(float lo = -1.0f, float hi = 1.0f) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
};

// A weight matrix in one dtype plus its exact dequantised values (double) for the reference.
struct TestMat {
  DType dtype = DType::kF32;
  bool f16_scale = false;  // kI8 only: row scales stored as IEEE half
  int64_t rows = 0, cols = 0;
  std::vector<float> orig;  // the float32 values before storage conversion
  std::vector<uint8_t> bytes;
  std::vector<float> scale;
  std::vector<uint16_t> scale16;
  std::vector<double> deq;
  int64_t kept = 0;  // masked dtypes: value slots per row

  MatRef ref() const {
    MatRef m;
    m.kept = kept;
    m.dtype = dtype;
    m.rows = rows;
    m.cols = cols;
    m.data = bytes.empty() ? nullptr : bytes.data();
    if (dtype == DType::kI8 || dtype == DType::kI8M) {
      m.row_scale = f16_scale ? static_cast<const void*>(scale16.data()) : scale.data();
      m.scale_dtype = f16_scale ? DType::kF16 : DType::kF32;
    }
    return m;
  }
};

// Exact value of element j of a kQ4 block (from core/dtype.h's description, not the kernels' code).
double q4_value(const uint8_t* blk, int j) {
  uint16_t dh, mh;
  std::memcpy(&dh, blk, 2);
  std::memcpy(&mh, blk + 2, 2);
  const int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
  return static_cast<double>(f16_to_f32(dh)) * q + static_cast<double>(f16_to_f32(mh));
}

TestMat make_mat(DType dt, int64_t rows, int64_t cols, uint64_t seed, bool f16_scale = false) {
  TestMat m;
  m.dtype = dt;
  m.f16_scale = f16_scale;
  m.rows = rows;
  m.cols = cols;
  const size_t n = static_cast<size_t>(rows * cols);
  Rng rng(seed);
  m.orig.resize(n);
  // Rows of different magnitudes, so scale handling is exercised (INT8) and errors are relative.
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, static_cast<int>(r % 7) - 3);
    for (int64_t c = 0; c < cols; ++c) m.orig[static_cast<size_t>(r * cols + c)] = mag * rng.uniform();
  }
  m.deq.resize(n);
  switch (dt) {
    case DType::kF32:
      m.bytes.resize(n * 4);
      std::memcpy(m.bytes.data(), m.orig.data(), n * 4);
      for (size_t i = 0; i < n; ++i) m.deq[i] = m.orig[i];
      break;
    case DType::kF16:
    case DType::kBF16: {
      m.bytes.resize(n * 2);
      auto* h = reinterpret_cast<uint16_t*>(m.bytes.data());
      for (size_t i = 0; i < n; ++i) {
        h[i] = dt == DType::kF16 ? f32_to_f16(m.orig[i]) : f32_to_bf16(m.orig[i]);
        m.deq[i] = dt == DType::kF16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
      }
      break;
    }
    case DType::kI8: {
      m.bytes.resize(n);
      m.scale.resize(static_cast<size_t>(rows));
      auto* q = reinterpret_cast<int8_t*>(m.bytes.data());
      if (f16_scale) {
        m.scale16.resize(static_cast<size_t>(rows));
        quantize_rows_i8_f16(m.orig.data(), rows, cols, q, m.scale16.data());
        for (int64_t r = 0; r < rows; ++r) m.scale[static_cast<size_t>(r)] = f16_to_f32(m.scale16[static_cast<size_t>(r)]);
      } else {
        quantize_rows_i8(m.orig.data(), rows, cols, q, m.scale.data());
      }
      for (size_t i = 0; i < n; ++i) m.deq[i] = static_cast<double>(q[i]) * m.scale[i / static_cast<size_t>(cols)];
      break;
    }
    case DType::kQ4: {
      m.bytes.resize(n / 32 * 20);
      quantize_rows_q4(m.orig.data(), rows, cols, m.bytes.data());
      for (size_t i = 0; i < n; ++i) m.deq[i] = q4_value(m.bytes.data() + i / 32 * 20, static_cast<int>(i % 32));
      break;
    }
    case DType::kF16S24: {  // decoded from the layout core/dtype.h describes, not the kernels' code
      m.bytes.resize(n / 32 * 36);
      pack_rows_s24(m.orig.data(), rows, cols, m.bytes.data());
      for (size_t blk = 0; blk < n / 32; ++blk) {
        const uint8_t* p = m.bytes.data() + blk * 36;
        uint32_t idx;
        std::memcpy(&idx, p + 32, 4);
        for (int j = 0; j < 32; ++j) m.deq[blk * 32 + static_cast<size_t>(j)] = 0.0;
        for (int k = 0; k < 16; ++k) {
          uint16_t h;
          std::memcpy(&h, p + 2 * k, 2);
          const int col = (k / 2) * 4 + static_cast<int>((idx >> (2 * k)) & 3u);
          m.deq[blk * 32 + static_cast<size_t>(col)] += f16_to_f32(h);
        }
      }
      break;
    }
    case DType::kF16M:
    case DType::kI8M:
    case DType::kQ4M: {
      // Pruned rows: a different share of zeros per row (row 0 keeps everything, row 1 nothing when rows > 2), so
      // rows use fewer slots than `kept` and the fullest row sets it.
      int64_t most = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const double keep = rows > 2 && r == 1 ? 0.0 : r == 0 ? 1.0 : 0.2 + 0.6 * static_cast<double>(r % 5) / 4;
        int64_t nz = 0;
        for (int64_t c = 0; c < cols; ++c) {
          float& v = m.orig[static_cast<size_t>(r * cols + c)];
          if (std::uniform_real_distribution<double>(0, 1)(rng.gen) >= keep) v = 0.0f;
          nz += v != 0.0f;
        }
        most = std::max(most, nz);
      }
      m.kept = masked_kept_for(dt, most);
      const int64_t rb = masked_row_bytes(dt, cols, m.kept);
      m.bytes.resize(static_cast<size_t>(rows * rb));
      m.scale.assign(static_cast<size_t>(rows), 1.0f);
      m.scale16.resize(static_cast<size_t>(rows));
      pack_rows_masked(dt, m.orig.data(), rows, cols, m.kept, m.bytes.data(), m.scale16.data(), true);
      m.f16_scale = true;
      // Decoded from the layout core/dtype.h describes (keep bits LSB first, then the kept values in column order).
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = m.bytes.data() + r * rb;
        const uint8_t* vals = row + cols / 8;
        const double sc = dt == DType::kI8M ? f16_to_f32(m.scale16[static_cast<size_t>(r)]) : 1.0;
        if (dt == DType::kI8M) m.scale[static_cast<size_t>(r)] = static_cast<float>(sc);
        int64_t k = 0;
        for (int64_t c = 0; c < cols; ++c) {
          double v = 0.0;
          if ((row[c / 8] >> (c % 8)) & 1) {
            if (dt == DType::kF16M) {
              uint16_t h;
              std::memcpy(&h, vals + 2 * k, 2);
              v = f16_to_f32(h);
            } else if (dt == DType::kI8M) {
              v = static_cast<int8_t>(vals[k]) * sc;
            } else {
              v = q4_value(vals + k / 32 * 20, static_cast<int>(k % 32));
            }
            ++k;
          }
          m.deq[static_cast<size_t>(r * cols + c)] = v;
        }
        EXPECT_LE(k, m.kept);
      }
      break;
    }
    default: break;
  }
  return m;
}

std::vector<float> make_vec(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = rng.uniform();
  return v;
}

// y_ref[r] = sum deq[r][c] * x[c] in double; bound[r] = sum |deq[r][c] * x[c]|.
void reference(const TestMat& m, const float* x, std::vector<double>* y, std::vector<double>* bound) {
  y->assign(static_cast<size_t>(m.rows), 0.0);
  bound->assign(static_cast<size_t>(m.rows), 0.0);
  for (int64_t r = 0; r < m.rows; ++r) {
    double s = 0, a = 0;
    for (int64_t c = 0; c < m.cols; ++c) {
      const double p = m.deq[static_cast<size_t>(r * m.cols + c)] * x[c];
      s += p;
      a += std::fabs(p);
    }
    (*y)[static_cast<size_t>(r)] = s;
    (*bound)[static_cast<size_t>(r)] = a;
  }
}

const DType kDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI8};

struct Shape {
  int64_t rows, cols;
};
// Realistic model shapes plus odd sizes that hit every tail: cols not a multiple of 4/8/16/32, rows
// not a multiple of the 4-row groups or register tiles.
const Shape kShapes[] = {{1, 1},   {7, 13},  {64, 64},   {256, 64},  {65, 257},   {768, 3072}, {3072, 768},
                         {1, 1000}, {17, 1},  {3, 8},    {9, 16},    {4, 17},     {12, 33},    {33, 31},
                         {5, 100},  {2, 65},  {11, 129}, {100, 15},  {6, 47},     {13, 255}};

std::string shape_str(const Shape& s) { return std::to_string(s.rows) + "x" + std::to_string(s.cols); }

// ---- parameterised over the ISA paths; the ones this CPU/build lacks are skipped.
class KernelIsa : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!force_isa(GetParam())) GTEST_SKIP() << GetParam() << " is not available on this machine/build";
    ASSERT_STREQ(active_isa(), GetParam());
  }
  void TearDown() override { force_isa(nullptr); }

  // Runs fn under the scalar path, then switches back to this test's ISA.
  template <class F>
  void as_scalar(F fn) {
    ASSERT_TRUE(force_isa("scalar"));
    fn();
    ASSERT_TRUE(force_isa(GetParam()));
  }
};

TEST_P(KernelIsa, MatvecMatchesDoubleReferenceAndScalar) {
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    for (DType dt : kDTypes) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(s));
      const TestMat m = make_mat(dt, s.rows, s.cols, ++seed);
      const std::vector<float> x = make_vec(s.cols, ++seed);
      std::vector<double> yref, bound;
      reference(m, x.data(), &yref, &bound);
      std::vector<float> y(static_cast<size_t>(s.rows), NAN), ys(static_cast<size_t>(s.rows), NAN);
      matvec(m.ref(), x.data(), y.data(), nullptr);
      as_scalar([&] { matvec(m.ref(), x.data(), ys.data(), nullptr); });
      for (int64_t r = 0; r < s.rows; ++r) {
        const size_t i = static_cast<size_t>(r);
        ASSERT_LE(std::fabs(y[i] - yref[i]), kAccumBudget * bound[i]) << "row " << r << " vs double";
        ASSERT_LE(std::fabs(double{y[i]} - ys[i]), kPathBudget * bound[i]) << "row " << r << " vs scalar";
      }
    }
  }
}

// The storage formats themselves: the product with converted weights stays within the format's
// precision of the product with the original float32 weights (catches e.g. f16/bf16 mix-ups that a
// self-consistent reference could miss, and checks quantize_rows_i8 end to end).
TEST_P(KernelIsa, StorageErrorWithinFormatPrecision) {
  const int64_t rows = 96, cols = 700;
  const std::vector<float> x = make_vec(cols, 99);
  for (DType dt : kDTypes) {
    SCOPED_TRACE(dtype_name(dt));
    const TestMat m = make_mat(dt, rows, cols, 7);
    std::vector<float> y(rows);
    matvec(m.ref(), x.data(), y.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, abs_wx = 0, abs_x = 0, amax = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double w = m.orig[static_cast<size_t>(r * cols + c)];
        exact += w * x[static_cast<size_t>(c)];
        abs_wx += std::fabs(w * x[static_cast<size_t>(c)]);
        abs_x += std::fabs(x[static_cast<size_t>(c)]);
        amax = std::max(amax, std::fabs(w));
      }
      double budget = kAccumBudget * abs_wx;
      if (dt == DType::kF16) budget += kF16StorageBudget * abs_wx;
      if (dt == DType::kBF16) budget += kBF16StorageBudget * abs_wx;
      if (dt == DType::kI8) budget += amax / 254.0 * abs_x * (1 + 1e-6);
      ASSERT_LE(std::fabs(y[static_cast<size_t>(r)] - exact), budget) << "row " << r;
    }
  }
}

TEST_P(KernelIsa, MatmulEqualsMatvecs) {
  const Shape shapes[] = {{7, 13}, {64, 64}, {65, 257}, {768, 3072}, {3072, 768}, {13, 255}, {2, 65}};
  uint64_t seed = 1000;
  for (const Shape& s : shapes) {
    for (DType dt : kDTypes) {
      const TestMat m = make_mat(dt, s.rows, s.cols, ++seed);
      // 32+ tokens: AVX-512's outer-product GEMM (gemm_rows), with a padded last token vector at 33 and 47
      for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 16, 17, 32, 33, 47}) {
        if (s.rows * s.cols > 1000000 && n > 5 && n != 16 && n != 33) continue;  // keep the big shapes quick
        SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(s) << " n=" << n);
        const std::vector<float> X = make_vec(n * s.cols, ++seed);
        std::vector<float> Y(static_cast<size_t>(n * s.rows) + 1, NAN);
        Y.back() = 12345.0f;  // sentinel: nothing may be written past n * rows
        matmul(m.ref(), X.data(), n, Y.data(), nullptr);
        EXPECT_EQ(Y.back(), 12345.0f);
        std::vector<float> y(static_cast<size_t>(s.rows));
        std::vector<double> yref, bound;
        for (int64_t t = 0; t < n; ++t) {
          const float* xt = X.data() + t * s.cols;
          matvec(m.ref(), xt, y.data(), nullptr);
          reference(m, xt, &yref, &bound);
          for (int64_t r = 0; r < s.rows; ++r) {
            const size_t i = static_cast<size_t>(r);
            const float v = Y[static_cast<size_t>(t * s.rows + r)];
            ASSERT_LE(std::fabs(double{v} - y[i]), kPathBudget * bound[i]) << "t=" << t << " r=" << r;
            ASSERT_LE(std::fabs(v - yref[i]), kAccumBudget * bound[i]) << "t=" << t << " r=" << r;
            if (std::string(GetParam()) == "scalar") {
              ASSERT_EQ(v, y[i]);  // documented: the scalar matmul is bitwise n matvecs
            }
          }
        }
      }
    }
  }
}

// Every output is computed by the same operations whatever the thread split: results are bitwise
// identical for any pool size (and thus reproducible across machines with the same ISA).
TEST_P(KernelIsa, ThreadedEqualsSingleThreaded) {
  const Shape shapes[] = {{768, 3072}, {1000, 100}, {3072, 768}, {333, 257}};
  uint64_t seed = 5000;
  for (const Shape& s : shapes) {
    for (DType dt : kDTypes) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " " << shape_str(s));
      const TestMat m = make_mat(dt, s.rows, s.cols, ++seed);
      const int64_t n = 6, n2 = 40;  // n2: the GEMM path of AVX-512
      const std::vector<float> X = make_vec(n2 * s.cols, ++seed);
      std::vector<float> y1(static_cast<size_t>(s.rows)), Y1(static_cast<size_t>(n * s.rows)),
          Y2(static_cast<size_t>(n2 * s.rows));
      matvec(m.ref(), X.data(), y1.data(), nullptr);
      matmul(m.ref(), X.data(), n, Y1.data(), nullptr);
      matmul(m.ref(), X.data(), n2, Y2.data(), nullptr);
      for (int threads : {1, 2, 3, 4}) {
        ThreadPool pool(threads);
        std::vector<float> y(y1.size(), NAN), Y(Y1.size(), NAN), Yb(Y2.size(), NAN);
        matvec(m.ref(), X.data(), y.data(), &pool);
        matmul(m.ref(), X.data(), n, Y.data(), &pool);
        matmul(m.ref(), X.data(), n2, Yb.data(), &pool);
        ASSERT_EQ(0, std::memcmp(y.data(), y1.data(), y.size() * 4)) << threads << " threads (matvec)";
        ASSERT_EQ(0, std::memcmp(Y.data(), Y1.data(), Y.size() * 4)) << threads << " threads (matmul)";
        ASSERT_EQ(0, std::memcmp(Yb.data(), Y2.data(), Yb.size() * 4)) << threads << " threads (matmul, 40 tokens)";
      }
    }
  }
}

// matvec_multi: every matrix's output bitwise equal to its own matvec (the rows are computed by the same kernel
// whatever region holds them), for mixed dtypes and shapes whose row counts do not line up with the thread
// split, on 1-4 threads and without a pool; the pool counts one region per call that it hands out.
TEST_P(KernelIsa, MatvecMultiEqualsSeparateMatvecs) {
  const Shape shapes[] = {{768, 256}, {100, 64}, {333, 256}, {3072, 256}};
  const DType types[] = {DType::kF16, DType::kI8, DType::kF32, DType::kQ4};
  uint64_t seed = 7000;
  std::vector<TestMat> mats;
  std::vector<std::vector<float>> xs, want;
  for (int i = 0; i < 4; ++i) {
    mats.push_back(make_mat(types[i], shapes[i].rows, shapes[i].cols, ++seed));
    xs.push_back(make_vec(shapes[i].cols, ++seed));
    want.emplace_back(static_cast<size_t>(shapes[i].rows));
    matvec(mats.back().ref(), xs.back().data(), want.back().data(), nullptr);
  }
  const MatRef refs[4] = {mats[0].ref(), mats[1].ref(), mats[2].ref(), mats[3].ref()};
  const MatRef* w[4] = {&refs[0], &refs[1], &refs[2], &refs[3]};
  const float* x[4] = {xs[0].data(), xs[1].data(), xs[2].data(), xs[3].data()};
  for (int count : {1, 2, 4}) {
    for (int threads : {0, 1, 2, 3, 4}) {
      SCOPED_TRACE(testing::Message() << count << " matrices, " << threads << " threads");
      std::unique_ptr<ThreadPool> pool = threads ? std::make_unique<ThreadPool>(threads) : nullptr;
      std::vector<std::vector<float>> got;
      float* y[4];
      for (int i = 0; i < count; ++i) {
        got.emplace_back(want[static_cast<size_t>(i)].size(), NAN);
        y[i] = got.back().data();
      }
      matvec_multi(w, x, y, count, pool.get());
      for (int i = 0; i < count; ++i) {
        const size_t u = static_cast<size_t>(i);
        ASSERT_EQ(0, std::memcmp(got[u].data(), want[u].data(), want[u].size() * 4)) << "matrix " << i;
      }
      if (pool) {
        EXPECT_EQ(pool->regions(), threads > 1 ? 1u : 0u);
      }
    }
  }
  matvec_multi(w, x, nullptr, 0, nullptr);  // nothing to do
}

// matmul_multi: every matrix's n outputs bitwise equal to its own matmul (3 tokens: the dot-product tiles; 40: the
// AVX-512 GEMM), mixed dtypes and row counts off the thread split, on 1-3 threads and without a pool.
TEST_P(KernelIsa, MatmulMultiEqualsSeparateMatmuls) {
  const Shape shapes[] = {{768, 256}, {100, 64}, {333, 256}};
  const DType types[] = {DType::kF16, DType::kI8, DType::kQ4};
  uint64_t seed = 7100;
  for (int64_t n : {3, 40}) {
    std::vector<TestMat> mats;
    std::vector<std::vector<float>> xs, want;
    for (int i = 0; i < 3; ++i) {
      mats.push_back(make_mat(types[i], shapes[i].rows, shapes[i].cols, ++seed));
      xs.push_back(make_vec(n * shapes[i].cols, ++seed));
      want.emplace_back(static_cast<size_t>(n * shapes[i].rows));
      matmul(mats.back().ref(), xs.back().data(), n, want.back().data(), nullptr);
    }
    const MatRef refs[3] = {mats[0].ref(), mats[1].ref(), mats[2].ref()};
    const MatRef* w[3] = {&refs[0], &refs[1], &refs[2]};
    const float* x[3] = {xs[0].data(), xs[1].data(), xs[2].data()};
    for (int threads : {0, 1, 2, 3}) {
      SCOPED_TRACE(testing::Message() << "n=" << n << ", " << threads << " threads");
      std::unique_ptr<ThreadPool> pool = threads ? std::make_unique<ThreadPool>(threads) : nullptr;
      std::vector<std::vector<float>> got;
      float* y[3];
      for (int i = 0; i < 3; ++i) {
        got.emplace_back(want[static_cast<size_t>(i)].size(), NAN);
        y[i] = got.back().data();
      }
      matmul_multi(w, x, n, y, 3, pool.get());
      for (int i = 0; i < 3; ++i) {
        const size_t u = static_cast<size_t>(i);
        ASSERT_EQ(0, std::memcmp(got[u].data(), want[u].data(), want[u].size() * 4)) << "matrix " << i;
      }
      if (pool) {
        EXPECT_EQ(pool->regions(), threads > 1 ? 1u : 0u);
      }
    }
  }
}

// matvec_rows / matmul_rows on ranges of w's rows (w.rows == 67): same bits as the full product,
// nothing written outside the range.
void check_row_ranges(const MatRef& w, const std::vector<float>& X, int64_t n) {
  const int64_t rows = w.rows;
  ASSERT_EQ(rows, 67);
  std::vector<float> full(rows), fullm(static_cast<size_t>(n * rows));
  matvec_rows(w, X.data(), full.data(), 0, rows);
  matmul_rows(w, X.data(), n, fullm.data(), 0, rows);
  for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 0}, {0, 1}, {1, 6}, {3, 64}, {13, 67}, {66, 67}, {5, 9}}) {
    std::vector<float> y(rows, NAN), Y(static_cast<size_t>(n * rows), NAN);
    matvec_rows(w, X.data(), y.data(), b, e);
    matmul_rows(w, X.data(), n, Y.data(), b, e);
    for (int64_t r = 0; r < rows; ++r) {
      const bool in = r >= b && r < e;
      const size_t i = static_cast<size_t>(r);
      if (in) {
        ASSERT_EQ(y[i], full[i]) << "[" << b << "," << e << ") row " << r;
      } else {
        ASSERT_TRUE(std::isnan(y[i])) << "wrote outside [" << b << "," << e << ") at row " << r;
      }
      for (int64_t t = 0; t < n; ++t) {
        const size_t j = static_cast<size_t>(t * rows + r);
        if (in) {
          ASSERT_EQ(Y[j], fullm[j]);
        } else {
          ASSERT_TRUE(std::isnan(Y[j]));
        }
      }
    }
  }
}

// matvec_rows / matmul_rows on arbitrary ranges: same bits as the full product, nothing written
// outside the range.
TEST_P(KernelIsa, RowRangesMatchFullProduct) {
  const int64_t rows = 67, cols = 45, n = 5;
  for (DType dt : kDTypes) {
    SCOPED_TRACE(dtype_name(dt));
    const TestMat m = make_mat(dt, rows, cols, 77);
    const std::vector<float> X = make_vec(n * cols, 78);
    check_row_ranges(m.ref(), X, n);
  }
}

// All 65536 half / bfloat16 bit patterns through the kernel, once through the tail path (cols = 1)
// and once through the full-vector path (cols = 64, one-hot x), compared with dtype.cpp's converter.
void check_all_16bit_patterns(DType dt) {
  auto conv = [dt](uint16_t h) { return dt == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h); };
  std::vector<uint16_t> w(65536);
  for (uint32_t i = 0; i < 65536; ++i) w[i] = static_cast<uint16_t>(i);
  MatRef m;
  m.dtype = dt;
  m.rows = 65536;
  m.cols = 1;
  m.data = w.data();
  const float one = 1.0f;
  std::vector<float> y(65536);
  matvec(m, &one, y.data(), nullptr);
  for (uint32_t i = 0; i < 65536; ++i) {
    const float want = conv(static_cast<uint16_t>(i));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(y[i])) << std::hex << i;
    } else {
      ASSERT_EQ(y[i], want) << "pattern 0x" << std::hex << i;
    }
  }
  // Vector path: 1024 rows x 64 cols. Non-finite patterns are replaced by zero because inf * 0 in the
  // other columns would turn the row into NaN.
  for (uint32_t i = 0; i < 65536; ++i)
    if (!std::isfinite(conv(w[i]))) w[i] = 0;
  m.rows = 1024;
  m.cols = 64;
  std::vector<float> x(64, 0.0f);
  y.assign(1024, 0.0f);
  for (int j = 0; j < 64; ++j) {
    x.assign(64, 0.0f);
    x[static_cast<size_t>(j)] = 1.0f;
    matvec(m, x.data(), y.data(), nullptr);
    for (int r = 0; r < 1024; ++r) {
      const uint16_t h = w[static_cast<size_t>(r * 64 + j)];
      ASSERT_EQ(y[static_cast<size_t>(r)], conv(h)) << "pattern 0x" << std::hex << h;
    }
  }
}

TEST_P(KernelIsa, ExhaustiveF16Conversion) { check_all_16bit_patterns(DType::kF16); }
TEST_P(KernelIsa, ExhaustiveBF16Conversion) { check_all_16bit_patterns(DType::kBF16); }

TEST_P(KernelIsa, AllInt8Values) {
  // 256 rows x 40 cols: row r holds the value (r - 128) in column r % 40; x is one-hot per column
  // pass so each output is exactly q * scale. -128 is not produced by quantize_rows_i8 but must work.
  const int64_t rows = 256, cols = 40;
  std::vector<int8_t> q(static_cast<size_t>(rows * cols), 0);
  std::vector<float> scale(rows);
  for (int64_t r = 0; r < rows; ++r) {
    q[static_cast<size_t>(r * cols + r % cols)] = static_cast<int8_t>(r - 128);
    scale[static_cast<size_t>(r)] = 0.5f + 0.25f * static_cast<float>(r % 3);
  }
  MatRef m{DType::kI8, rows, cols, q.data(), scale.data()};
  std::vector<float> x(cols, 1.0f), y(rows);
  matvec(m, x.data(), y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r)
    ASSERT_EQ(y[static_cast<size_t>(r)], static_cast<float>(r - 128) * scale[static_cast<size_t>(r)]) << r;
}

TEST_P(KernelIsa, EmptyShapes) {
  const float x[4] = {1, 2, 3, 4};
  float y[4] = {NAN, NAN, NAN, NAN};
  for (DType dt : kDTypes) {
    const float scale[4] = {1, 1, 1, 1};
    MatRef m{dt, 4, 0, nullptr, scale};  // no columns: every output is the empty sum 0
    matvec(m, x, y, nullptr);
    for (float v : y) EXPECT_EQ(v, 0.0f);
    MatRef none{dt, 0, 4, nullptr, nullptr};
    matvec(none, x, y, nullptr);
    matmul(none, x, 1, y, nullptr);
  }
  const std::vector<float> w(12, 1.0f);
  MatRef m{DType::kF32, 3, 4, w.data(), nullptr};
  float Y[1] = {7.0f};
  matmul(m, x, 0, Y, nullptr);  // n == 0: nothing to do, nothing written
  EXPECT_EQ(Y[0], 7.0f);
}

// ---- compressed representations: q4_g32 blocks and int8 with f16 row scales (cols % 32 == 0)

struct Kind {
  DType dtype;
  bool f16_scale;
  const char* name;
};
const Kind kCompressed[] = {{DType::kQ4, false, "q4"},           {DType::kI8, true, "i8-f16scale"},
                            {DType::kF16S24, false, "f16_2of4"}, {DType::kF16M, false, "f16_masked"},
                            {DType::kI8M, true, "i8_masked"},    {DType::kQ4M, false, "q4_masked"}};
// Odd row counts (not multiples of the 4-row groups, register tiles or 16-row thread chunks), one to
// many blocks per row, and the model shapes.
const Shape kBlockShapes[] = {{1, 32},  {7, 64},   {13, 96},  {17, 32},  {5, 160},   {65, 256},
                              {33, 768}, {99, 352}, {3, 1024}, {333, 96}, {768, 3072}, {3072, 768}};

TEST_P(KernelIsa, CompressedMatvecMatchesReferenceScalarAndThreads) {
  uint64_t seed = 20000;
  ThreadPool pool1(1), pool2(2);
  for (const Shape& s : kBlockShapes) {
    for (const Kind& k : kCompressed) {
      SCOPED_TRACE(testing::Message() << k.name << " " << shape_str(s));
      const TestMat m = make_mat(k.dtype, s.rows, s.cols, ++seed, k.f16_scale);
      const std::vector<float> x = make_vec(s.cols, ++seed);
      std::vector<double> yref, bound;
      reference(m, x.data(), &yref, &bound);
      const size_t nr = static_cast<size_t>(s.rows);
      std::vector<float> y(nr, NAN), ys(nr, NAN), y1(nr, NAN), y2(nr, NAN);
      matvec(m.ref(), x.data(), y.data(), nullptr);
      matvec(m.ref(), x.data(), y1.data(), &pool1);
      matvec(m.ref(), x.data(), y2.data(), &pool2);
      as_scalar([&] { matvec(m.ref(), x.data(), ys.data(), nullptr); });
      for (size_t i = 0; i < nr; ++i) {
        ASSERT_LE(std::fabs(y[i] - yref[i]), kAccumBudget * bound[i]) << "row " << i << " vs double";
        ASSERT_LE(std::fabs(double{y[i]} - ys[i]), kPathBudget * bound[i]) << "row " << i << " vs scalar";
      }
      ASSERT_EQ(0, std::memcmp(y.data(), y1.data(), nr * 4)) << "1-thread pool";
      ASSERT_EQ(0, std::memcmp(y.data(), y2.data(), nr * 4)) << "2-thread pool";
    }
  }
}

TEST_P(KernelIsa, CompressedMatmulMatchesReferenceAndMatvecs) {
  const Shape shapes[] = {{7, 64}, {13, 96}, {65, 256}, {99, 352}, {333, 96}, {768, 3072}, {3072, 768}};
  uint64_t seed = 30000;
  ThreadPool pool1(1), pool2(2);
  for (const Shape& s : shapes) {
    for (const Kind& k : kCompressed) {
      const TestMat m = make_mat(k.dtype, s.rows, s.cols, ++seed, k.f16_scale);
      for (int64_t n : {1, 3, 17, 35}) {  // 35: AVX-512's GEMM path (q4 decoded, int8 scales on the sums)
        if (n == 35 && s.rows * s.cols > 1000000 && s.rows != 3072) continue;
        SCOPED_TRACE(testing::Message() << k.name << " " << shape_str(s) << " n=" << n);
        const std::vector<float> X = make_vec(n * s.cols, ++seed);
        const size_t ny = static_cast<size_t>(n * s.rows);
        std::vector<float> Y(ny + 1, NAN), Y1(ny, NAN), Y2(ny, NAN);
        Y.back() = 12345.0f;  // sentinel: nothing may be written past n * rows
        matmul(m.ref(), X.data(), n, Y.data(), nullptr);
        EXPECT_EQ(Y.back(), 12345.0f);
        matmul(m.ref(), X.data(), n, Y1.data(), &pool1);
        matmul(m.ref(), X.data(), n, Y2.data(), &pool2);
        ASSERT_EQ(0, std::memcmp(Y.data(), Y1.data(), ny * 4)) << "1-thread pool";
        ASSERT_EQ(0, std::memcmp(Y.data(), Y2.data(), ny * 4)) << "2-thread pool";
        std::vector<float> y(static_cast<size_t>(s.rows));
        std::vector<double> yref, bound;
        for (int64_t t = 0; t < n; ++t) {
          const float* xt = X.data() + t * s.cols;
          matvec(m.ref(), xt, y.data(), nullptr);
          reference(m, xt, &yref, &bound);
          for (int64_t r = 0; r < s.rows; ++r) {
            const size_t i = static_cast<size_t>(r);
            const float v = Y[static_cast<size_t>(t * s.rows + r)];
            ASSERT_LE(std::fabs(v - yref[i]), kAccumBudget * bound[i]) << "t=" << t << " r=" << r;
            ASSERT_LE(std::fabs(double{v} - y[i]), kPathBudget * bound[i]) << "t=" << t << " r=" << r;
            if (std::string(GetParam()) == "scalar") {
              ASSERT_EQ(v, y[i]);  // the scalar matmul is bitwise n matvecs
            }
          }
        }
      }
    }
  }
}

TEST_P(KernelIsa, CompressedRowRangesMatchFullProduct) {
  const int64_t rows = 67, cols = 96, n = 5;
  for (const Kind& k : kCompressed) {
    SCOPED_TRACE(k.name);
    const TestMat m = make_mat(k.dtype, rows, cols, 177, k.f16_scale);
    const std::vector<float> X = make_vec(n * cols, 178);
    check_row_ranges(m.ref(), X, n);
  }
}

// Every nibble value at every position of a block, through the matvec and matmul decoders: row r,
// column j holds q = (j + r) % 16 with a per-row d and m; a one-hot x picks one column at a time,
// so each output must be d * q + m (to one rounding: the kernels may fuse the multiply-add).
TEST_P(KernelIsa, Q4AllNibblesAllPositions) {
  const int64_t rows = 19, cols = 64;
  std::vector<uint8_t> blocks(static_cast<size_t>(rows * cols / 32 * 20));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 32; ++g) {
      uint8_t* blk = blocks.data() + (r * (cols / 32) + g) * 20;
      const uint16_t dh = f32_to_f16(0.25f + 0.125f * static_cast<float>(r % 5) + static_cast<float>(g));
      const uint16_t mh = f32_to_f16(-1.5f + 0.375f * static_cast<float>(r % 7));
      std::memcpy(blk, &dh, 2);
      std::memcpy(blk + 2, &mh, 2);
      for (int j = 0; j < 16; ++j) {
        const int lo = static_cast<int>((g * 32 + j + r) % 16), hi = static_cast<int>((g * 32 + j + 16 + r) % 16);
        blk[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
  MatRef m;
  m.dtype = DType::kQ4;
  m.rows = rows;
  m.cols = cols;
  m.data = blocks.data();
  const int64_t n = 3;  // matmul: token t is one-hot at column (j + t) % cols
  std::vector<float> x(cols), X(static_cast<size_t>(n * cols)), y(rows), Y(static_cast<size_t>(n * rows));
  for (int64_t j = 0; j < cols; ++j) {
    std::fill(x.begin(), x.end(), 0.0f);
    x[static_cast<size_t>(j)] = 1.0f;
    std::fill(X.begin(), X.end(), 0.0f);
    for (int64_t t = 0; t < n; ++t) X[static_cast<size_t>(t * cols + (j + t) % cols)] = 1.0f;
    matvec(m, x.data(), y.data(), nullptr);
    matmul(m, X.data(), n, Y.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row_off = r * (cols / 32) * 20;
      const double want = q4_value(blocks.data() + row_off + j / 32 * 20, static_cast<int>(j % 32));
      ASSERT_NEAR(y[static_cast<size_t>(r)], want, 1e-6 * std::fabs(want)) << "r=" << r << " j=" << j;
      for (int64_t t = 0; t < n; ++t) {
        const int64_t c = (j + t) % cols;
        const double w = q4_value(blocks.data() + row_off + c / 32 * 20, static_cast<int>(c % 32));
        ASSERT_NEAR(Y[static_cast<size_t>(t * rows + r)], w, 1e-6 * std::fabs(w)) << "r=" << r << " c=" << c;
      }
    }
  }
}

// Groups whose values sit far from the group minimum next to one outlier: a kernel that factors
// sum (d q + m) x into d * sum q x + m * sum x cancels catastrophically here (error ~ m * sum|x|
// * 2^-24, far above the budget relative to sum |w x|); decoding each weight first does not.
TEST_P(KernelIsa, Q4AccuracyWithOutlierGroups) {
  const int64_t rows = 40, cols = 256;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  Rng rng(4242);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      // One large negative outlier per group (column 0 of the group); the rest small and positive.
      w[static_cast<size_t>(r * cols + c)] = c % 32 == 0 ? -64.0f : rng.uniform(0.0f, 0.02f);
    }
  }
  TestMat m;
  m.dtype = DType::kQ4;
  m.rows = rows;
  m.cols = cols;
  m.orig = w;
  m.bytes.resize(static_cast<size_t>(rows * cols / 32 * 20));
  quantize_rows_q4(w.data(), rows, cols, m.bytes.data());
  m.deq.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) m.deq[i] = q4_value(m.bytes.data() + i / 32 * 20, static_cast<int>(i % 32));
  std::vector<float> x = make_vec(cols, 4243);
  for (int64_t c = 0; c < cols; c += 32) x[static_cast<size_t>(c)] = 0.0f;  // the outliers contribute nothing
  std::vector<double> yref, bound;
  reference(m, x.data(), &yref, &bound);
  std::vector<float> y(rows), Y(static_cast<size_t>(3 * rows));
  std::vector<float> X(static_cast<size_t>(3 * cols));
  for (int t = 0; t < 3; ++t) std::copy(x.begin(), x.end(), X.begin() + t * cols);
  matvec(m.ref(), x.data(), y.data(), nullptr);
  matmul(m.ref(), X.data(), 3, Y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t i = static_cast<size_t>(r);
    ASSERT_LE(std::fabs(y[i] - yref[i]), kAccumBudget * bound[i]) << "matvec row " << r;
    for (int t = 0; t < 3; ++t)
      ASSERT_LE(std::fabs(Y[static_cast<size_t>(t * rows + r)] - yref[i]), kAccumBudget * bound[i]) << "matmul " << r;
  }
}

// get_row (embedding look-ups) decodes to exactly the stored values.
TEST_P(KernelIsa, CompressedGetRow) {
  for (const Kind& k : kCompressed) {
    SCOPED_TRACE(k.name);
    const TestMat m = make_mat(k.dtype, 9, 96, 555, k.f16_scale);
    std::vector<float> row(96);
    for (int64_t r = 0; r < 9; ++r) {
      get_row(m.ref(), r, row.data());
      for (int64_t c = 0; c < 96; ++c) {
        const double want = m.deq[static_cast<size_t>(r * 96 + c)];
        ASSERT_NEAR(row[static_cast<size_t>(c)], want, 1e-6 * std::fabs(want) + 1e-30) << r << "," << c;
      }
    }
  }
}

// Int8 with f16 scales: all 256 int8 values (like AllInt8Values) with scales that are exact halves,
// including a subnormal one, through matvec and matmul.
TEST_P(KernelIsa, AllInt8ValuesF16Scales) {
  const int64_t rows = 256, cols = 40;
  std::vector<int8_t> q(static_cast<size_t>(rows * cols), 0);
  std::vector<uint16_t> scale(rows);
  const uint16_t halves[] = {f32_to_f16(0.5f), f32_to_f16(0.75f), f32_to_f16(1.0f / 1024), 0x0003 /* 3 * 2^-24 */};
  for (int64_t r = 0; r < rows; ++r) {
    q[static_cast<size_t>(r * cols + r % cols)] = static_cast<int8_t>(r - 128);
    scale[static_cast<size_t>(r)] = halves[r % 4];
  }
  MatRef m{DType::kI8, rows, cols, q.data(), scale.data(), DType::kF16};
  std::vector<float> x(cols, 1.0f), y(rows), Y(static_cast<size_t>(2 * rows));
  std::vector<float> X(static_cast<size_t>(2 * cols), 1.0f);
  matvec(m, x.data(), y.data(), nullptr);
  matmul(m, X.data(), 2, Y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    const float want = static_cast<float>(r - 128) * f16_to_f32(scale[static_cast<size_t>(r)]);
    ASSERT_EQ(y[static_cast<size_t>(r)], want) << r;
    ASSERT_EQ(Y[static_cast<size_t>(r)], want) << r;
    ASSERT_EQ(Y[static_cast<size_t>(rows + r)], want) << r;
  }
}

// ---- neuron-bundled sparse channel-mix (ffn_neurons)

struct FfnKind {
  DType dtype;
  bool f16_scale;
  const char* name;
};
const FfnKind kFfnKinds[] = {{DType::kF32, false, "f32"}, {DType::kF16, false, "f16"},
                             {DType::kBF16, false, "bf16"}, {DType::kI8, false, "i8"},
                             {DType::kI8, true, "i8-f16scale"}, {DType::kQ4, false, "q4"}};

// F neurons bundled as a 2F x C matrix (row 2i: Wk row i, row 2i+1: Wv column i), each neuron copied
// into its own heap buffer, allocated in shuffled order and placed at a small element-aligned offset
// that is not a multiple of 64 bytes, so the kernel sees scattered, unaligned neurons.
struct Bundled {
  TestMat m;  // the dense bundled matrix (and its exact dequantised values)
  int64_t row_b = 0;
  std::vector<std::vector<uint8_t>> store;  // per neuron
  std::vector<const void*> neuron;          // neuron i -> its bytes
  std::vector<float> scale;                 // kI8: per bundled row, f32 (copy: tests may poison it)
  std::vector<uint16_t> scale16;

  MatRef layout() const {
    MatRef l;
    l.dtype = m.dtype;
    l.cols = m.cols;
    if (m.dtype == DType::kI8) {
      l.row_scale = m.f16_scale ? static_cast<const void*>(scale16.data()) : scale.data();
      l.scale_dtype = m.f16_scale ? DType::kF16 : DType::kF32;
    }
    return l;
  }
  // The second row of neuron i: bytes that decode to NaN (kI8: a NaN scale instead).
  void poison_second_row(int64_t i) {
    uint8_t* p = const_cast<uint8_t*>(static_cast<const uint8_t*>(neuron[static_cast<size_t>(i)])) + row_b;
    if (m.dtype == DType::kI8) {
      if (m.f16_scale) {
        scale16[static_cast<size_t>(2 * i + 1)] = 0x7e00;
      } else {
        scale[static_cast<size_t>(2 * i + 1)] = std::numeric_limits<float>::quiet_NaN();
      }
    } else {
      std::memset(p, 0xff, static_cast<size_t>(row_b));  // f32/f16/bf16 all-ones = NaN; q4: d = m = NaN
    }
  }
};

Bundled make_bundled(const FfnKind& k, int64_t F, int64_t C, uint64_t seed) {
  Bundled b;
  b.m = make_mat(k.dtype, 2 * F, C, seed, k.f16_scale);
  b.row_b = row_bytes(k.dtype, C);
  b.scale = b.m.scale;
  b.scale16 = b.m.scale16;
  std::vector<int64_t> order(static_cast<size_t>(F));
  for (int64_t i = 0; i < F; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 gen(seed + 1);
  std::shuffle(order.begin(), order.end(), gen);
  b.store.resize(static_cast<size_t>(F));
  b.neuron.resize(static_cast<size_t>(F));
  const size_t elem = k.dtype == DType::kF32 ? 4 : (k.dtype == DType::kF16 || k.dtype == DType::kBF16) ? 2 : 1;
  for (int64_t i : order) {
    const size_t off = elem * static_cast<size_t>(1 + i % 5);
    auto& buf = b.store[static_cast<size_t>(i)];
    buf.resize(off + 2 * static_cast<size_t>(b.row_b));
    std::memcpy(buf.data() + off, b.m.bytes.data() + 2 * i * b.row_b, 2 * static_cast<size_t>(b.row_b));
    b.neuron[static_cast<size_t>(i)] = buf.data() + off;
  }
  return b;
}

// Checks one ffn_neurons call on neurons ids (n = ids.size()) against the double reference built
// from the kernel's own kout (so the relu threshold cannot flip between the two) and checks kout
// against the exact pre-activation. skipped[j]: neuron j's second row must not contribute.
void check_ffn(const Bundled& b, const std::vector<int32_t>& ids, const std::vector<float>& x, bool skip_zero,
               bool expect_nan_from_poison, const std::vector<bool>& poisoned) {
  const int64_t C = b.m.cols, n = static_cast<int64_t>(ids.size());
  std::vector<const void*> ptrs;
  for (int32_t id : ids) ptrs.push_back(b.neuron[static_cast<size_t>(id)]);
  const std::vector<float> y0 = make_vec(C, 4242 + static_cast<uint64_t>(C));
  std::vector<float> y = y0, kout(static_cast<size_t>(n) + 1, NAN);
  kout.back() = 777.0f;  // sentinel
  ffn_neurons(b.layout(), ptrs.data(), ids.data(), n, x.data(), y.data(), kout.data(), skip_zero);
  ASSERT_EQ(kout.back(), 777.0f);
  std::vector<double> yref(y0.begin(), y0.end()), ybound(static_cast<size_t>(C));
  std::vector<bool> nan_col(static_cast<size_t>(C), false);
  for (int64_t c = 0; c < C; ++c) ybound[static_cast<size_t>(c)] = std::fabs(y0[static_cast<size_t>(c)]);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t id = ids[static_cast<size_t>(j)];
    double k = 0, kb = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double p = b.m.deq[static_cast<size_t>(2 * id * C + c)] * x[static_cast<size_t>(c)];
      k += p;
      kb += std::fabs(p);
    }
    const float kk = kout[static_cast<size_t>(j)];
    ASSERT_LE(std::fabs(kk - k), kAccumBudget * kb) << "kout of neuron " << id;
    const double r = kk > 0 ? kk : 0.0, a = r * r;
    if (a == 0 && skip_zero) continue;
    if (poisoned[static_cast<size_t>(id)]) {
      ASSERT_TRUE(expect_nan_from_poison) << "a poisoned row was meant to be skipped";
      for (int64_t c = 0; c < C; ++c) nan_col[static_cast<size_t>(c)] = true;
      continue;
    }
    for (int64_t c = 0; c < C; ++c) {
      const double w = b.m.deq[static_cast<size_t>((2 * id + 1) * C + c)];
      yref[static_cast<size_t>(c)] += a * w;
      ybound[static_cast<size_t>(c)] += std::fabs(a * w);
    }
  }
  // Sequential float accumulation over n neurons (+ rounding of a and of the kI8 coefficient).
  const double rel = static_cast<double>(n + 8) * std::ldexp(1.0, -23);
  for (int64_t c = 0; c < C; ++c) {
    const size_t i = static_cast<size_t>(c);
    if (nan_col[i]) {
      ASSERT_TRUE(std::isnan(y[i])) << "column " << c << ": the poisoned row was not read";
    } else {
      ASSERT_TRUE(std::isfinite(y[i])) << "column " << c;
      ASSERT_LE(std::fabs(y[i] - yref[i]), rel * ybound[i] + 1e-30) << "column " << c;
    }
  }
}

TEST_P(KernelIsa, FfnNeuronsMatchDoubleReference) {
  const int64_t F = 40;
  uint64_t seed = 70000;
  for (const FfnKind& k : kFfnKinds) {
    for (int64_t C : {32, 40, 64, 96, 13, 256, 768}) {
      if (k.dtype == DType::kQ4 && C % 32 != 0) continue;
      SCOPED_TRACE(testing::Message() << k.name << " C=" << C);
      Bundled b = make_bundled(k, F, C, ++seed);
      const std::vector<float> x = make_vec(C, ++seed);
      std::mt19937_64 gen(++seed);
      std::vector<int32_t> all(static_cast<size_t>(F));
      for (int32_t i = 0; i < F; ++i) all[static_cast<size_t>(i)] = i;
      const std::vector<bool> none(static_cast<size_t>(F), false);
      for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{25}, F}) {
        std::shuffle(all.begin(), all.end(), gen);
        const std::vector<int32_t> ids(all.begin(), all.begin() + n);
        for (bool skip : {false, true}) {
          SCOPED_TRACE(testing::Message() << "n=" << n << " skip_zero=" << skip);
          check_ffn(b, ids, x, skip, false, none);
        }
      }
      // A neuron may appear twice (the kernel does not care), and n = 0 touches nothing.
      check_ffn(b, {3, 5, 3}, x, true, false, none);
      float y[1] = {5.0f}, kout[1] = {6.0f};
      ffn_neurons(b.layout(), nullptr, nullptr, 0, x.data(), y, kout, true);
      EXPECT_EQ(y[0], 5.0f);
      EXPECT_EQ(kout[0], 6.0f);
    }
  }
}

// ffn_values (sequence mode's value half): rows [t0, t1) of Y gain sum_j A[t][j] (value row of ids[j]); rows outside
// the range, the padding columns of Y and A's padding stay untouched; a neuron whose A entries are zero for every
// token never reads its value row (poisoned with NaN here).
TEST_P(KernelIsa, FfnValuesMatchDoubleReference) {
  const int64_t F = 80, T = 6;
  uint64_t seed = 90000;
  for (const FfnKind& k : kFfnKinds) {
    for (const auto& [C, n] : std::vector<std::pair<int64_t, int64_t>>{
             {32, 29}, {40, 29}, {64, 70}, {13, 29}, {256, 29}, {768, 70}, {300, 33}}) {
      if (k.dtype == DType::kQ4 && C % 32 != 0) continue;
      SCOPED_TRACE(testing::Message() << k.name << " C=" << C << " n=" << n);
      Bundled b = make_bundled(k, F, C, ++seed);
      std::mt19937_64 gen(++seed);
      std::vector<int32_t> ids(static_cast<size_t>(F));
      for (int32_t i = 0; i < F; ++i) ids[static_cast<size_t>(i)] = i;
      std::shuffle(ids.begin(), ids.end(), gen);
      const int64_t lda = n + 3, ldy = C + 2, t0 = 1, t1 = 5;
      std::uniform_real_distribution<float> U(0.f, 2.f);
      std::vector<float> A(static_cast<size_t>(T * lda), 0.f);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < lda; ++j)
          A[static_cast<size_t>(t * lda + j)] = j >= n ? NAN : (gen() % 3 == 0 ? 0.f : U(gen));  // padding: NaN
      // neurons 0, 7 and 20 of the list are zero for every token: their value rows are poisoned
      for (int64_t j : {0, 7, 20}) {
        for (int64_t t = 0; t < T; ++t) A[static_cast<size_t>(t * lda + j)] = 0.f;
        b.poison_second_row(ids[static_cast<size_t>(j)]);
      }
      std::vector<const void*> ptrs;
      for (int64_t j = 0; j < n; ++j) ptrs.push_back(b.neuron[static_cast<size_t>(ids[static_cast<size_t>(j)])]);
      const std::vector<float> y0 = make_vec(T * ldy, ++seed);
      std::vector<float> Y = y0;
      ffn_values(b.layout(), ptrs.data(), ids.data(), n, A.data(), lda, t0, t1, Y.data(), ldy);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < ldy; ++c) {
          const size_t i = static_cast<size_t>(t * ldy + c);
          if (t < t0 || t >= t1 || c >= C) {
            ASSERT_EQ(Y[i], y0[i]) << "t=" << t << " c=" << c << " must not change";
            continue;
          }
          double ref = y0[i], bound = std::fabs(y0[i]);
          for (int64_t j = 0; j < n; ++j) {
            const double a = A[static_cast<size_t>(t * lda + j)];
            if (a == 0) continue;
            const double w = b.m.deq[static_cast<size_t>((2 * ids[static_cast<size_t>(j)] + 1) * C + c)];
            ref += a * w;
            bound += std::fabs(a * w);
          }
          ASSERT_TRUE(std::isfinite(Y[i])) << "t=" << t << " c=" << c << ": a zero neuron's row was read";
          ASSERT_LE(std::fabs(Y[i] - ref), static_cast<double>(n + 8) * std::ldexp(1.0, -23) * bound + 1e-30)
              << "t=" << t << " c=" << c;
        }
      }
      // Each element is summed in list order whatever the kernel's blocking: the list cut in two calls at
      // every 7th place (a cut inside and across the kernel's 32-neuron blocks) gives the same bits.
      for (int64_t cut = 1; cut < n; cut += 7) {
        std::vector<float> Y2 = y0;
        ffn_values(b.layout(), ptrs.data(), ids.data(), cut, A.data(), lda, t0, t1, Y2.data(), ldy);
        ffn_values(b.layout(), ptrs.data() + cut, ids.data() + cut, n - cut, A.data() + cut, lda, t0, t1, Y2.data(),
                   ldy);
        ASSERT_EQ(0, std::memcmp(Y2.data(), Y.data(), sizeof(float) * Y.size())) << "cut at " << cut;
      }
      // n = 0 or an empty token range touch nothing
      std::vector<float> Z = y0;
      ffn_values(b.layout(), ptrs.data(), ids.data(), 0, A.data(), lda, t0, t1, Z.data(), ldy);
      ffn_values(b.layout(), ptrs.data(), ids.data(), n, A.data(), lda, 3, 3, Z.data(), ldy);
      EXPECT_EQ(Z, y0);
    }
  }
}

// skip_zero: a neuron whose pre-activation is <= 0 must not read its second row (here NaN data, or
// a NaN row scale for kI8); without skip_zero it is read (0 * NaN = NaN reaches y).
TEST_P(KernelIsa, FfnNeuronsSkipZeroDoesNotReadWv) {
  const int64_t F = 48;
  uint64_t seed = 80000;
  for (const FfnKind& k : kFfnKinds) {
    for (int64_t C : {64, 40, 768}) {
      if (k.dtype == DType::kQ4 && C % 32 != 0) continue;
      SCOPED_TRACE(testing::Message() << k.name << " C=" << C);
      Bundled b = make_bundled(k, F, C, ++seed);
      const std::vector<float> x = make_vec(C, ++seed);
      std::vector<double> kref, kbound;
      reference(b.m, x.data(), &kref, &kbound);
      std::vector<bool> poisoned(static_cast<size_t>(F), false);
      int n_poisoned = 0;
      for (int64_t i = 0; i < F; ++i) {
        if (kref[static_cast<size_t>(2 * i)] < -1e-3 * kbound[static_cast<size_t>(2 * i)]) {  // clearly negative
          b.poison_second_row(i);
          poisoned[static_cast<size_t>(i)] = true;
          ++n_poisoned;
        }
      }
      ASSERT_GT(n_poisoned, 3);
      std::vector<int32_t> ids(static_cast<size_t>(F));
      for (int32_t i = 0; i < F; ++i) ids[static_cast<size_t>(i)] = i;
      std::shuffle(ids.begin(), ids.end(), std::mt19937_64(seed));
      check_ffn(b, ids, x, true, false, poisoned);
      check_ffn(b, ids, x, false, true, poisoned);
    }
  }
}

// kout is bitwise the value matvec_rows computes for the same (Wk) row on the same ISA, so a dense
// model and its bundled copy agree on every pre-activation.
TEST_P(KernelIsa, FfnNeuronsKoutBitwiseEqualsMatvec) {
  const int64_t F = 37;
  uint64_t seed = 90000;
  for (const FfnKind& k : kFfnKinds) {
    for (int64_t C : {32, 40, 64, 96, 13, 256, 768, 3072}) {
      if (k.dtype == DType::kQ4 && C % 32 != 0) continue;
      SCOPED_TRACE(testing::Message() << k.name << " C=" << C);
      const Bundled b = make_bundled(k, F, C, ++seed);
      const std::vector<float> x = make_vec(C, ++seed);
      std::vector<float> dense(static_cast<size_t>(2 * F), NAN);
      matvec_rows(b.m.ref(), x.data(), dense.data(), 0, 2 * F);
      std::vector<int32_t> ids(static_cast<size_t>(F));
      for (int32_t i = 0; i < F; ++i) ids[static_cast<size_t>(i)] = i;
      std::shuffle(ids.begin(), ids.end(), std::mt19937_64(seed));
      std::vector<const void*> ptrs;
      for (int32_t id : ids) ptrs.push_back(b.neuron[static_cast<size_t>(id)]);
      std::vector<float> y(static_cast<size_t>(C), 0.0f), kout(static_cast<size_t>(F));
      ffn_neurons(b.layout(), ptrs.data(), ids.data(), F, x.data(), y.data(), kout.data(), true);
      for (int64_t j = 0; j < F; ++j) {
        const float want = dense[static_cast<size_t>(2 * ids[static_cast<size_t>(j)])];
        ASSERT_EQ(0, std::memcmp(&kout[static_cast<size_t>(j)], &want, 4))
            << "neuron " << ids[static_cast<size_t>(j)] << ": " << kout[static_cast<size_t>(j)] << " vs " << want;
      }
    }
  }
}

// wkv5_token against a float64 recurrence over 3 tokens (the documented math, no rounding), and bitwise against the
// scalar set (the documented fma sequence is the same on every ISA); heads of 64 (a whole register block), 8 and 13
// (a partial vector and scalar columns), 40 and 96 (a block and then single vectors), 2 heads; the state is updated
// and outputs beyond H N untouched.
TEST_P(KernelIsa, Wkv5MatchesDoubleReferenceAndScalar) {
  uint64_t seed = 95000;
  for (const int64_t N : {64, 8, 13, 40, 96, 160}) {
    const int64_t H = 2, C = H * N;
    SCOPED_TRACE(testing::Message() << "N=" << N);
    std::mt19937_64 gen(++seed);
    std::uniform_real_distribution<float> U(-1.f, 1.f), D(0.5f, 1.f);
    std::vector<float> u(static_cast<size_t>(C)), S0(static_cast<size_t>(C * N));
    for (float& e : u) e = U(gen);
    for (float& e : S0) e = U(gen);
    std::vector<float> S = S0, Ss = S0;
    std::vector<double> Sd(S0.begin(), S0.end());
    for (int t = 0; t < 3; ++t) {
      std::vector<float> r(static_cast<size_t>(C)), k(r), v(r), w(r);
      for (int64_t i = 0; i < C; ++i) {
        r[static_cast<size_t>(i)] = U(gen);
        k[static_cast<size_t>(i)] = U(gen);
        v[static_cast<size_t>(i)] = U(gen);
        w[static_cast<size_t>(i)] = D(gen);
      }
      std::vector<float> out(static_cast<size_t>(C) + 1, NAN), outs(static_cast<size_t>(C), NAN);
      out.back() = 12345.0f;
      wkv5_token(r.data(), k.data(), v.data(), w.data(), u.data(), S.data(), out.data(), H, N);
      EXPECT_EQ(out.back(), 12345.0f);
      as_scalar([&] { wkv5_token(r.data(), k.data(), v.data(), w.data(), u.data(), Ss.data(), outs.data(), H, N); });
      ASSERT_EQ(0, std::memcmp(out.data(), outs.data(), sizeof(float) * static_cast<size_t>(C))) << "token " << t;
      ASSERT_EQ(0, std::memcmp(S.data(), Ss.data(), sizeof(float) * S.size())) << "token " << t;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < N; ++j) {
          double ref = 0, bound = 0;
          for (int64_t i = 0; i < N; ++i) {
            const size_t a = static_cast<size_t>(h * N + i), b = static_cast<size_t>(h * N + j);
            double& s = Sd[static_cast<size_t>((h * N + i) * N + j)];
            const double kv = static_cast<double>(k[a]) * v[b];
            ref += r[a] * (u[a] * kv + s);
            bound += std::fabs(r[a]) * (std::fabs(u[a] * kv) + std::fabs(s));
            s = s * w[a] + kv;
          }
          // float32 storage of the state compounds over the tokens: 4 roundings per step and token, plus the sum's
          ASSERT_LE(std::fabs(out[static_cast<size_t>(h * N + j)] - ref), (N + 16.0 * (t + 1)) * 0x1p-23 * bound)
              << "h=" << h << " j=" << j << " token " << t;
        }
    }
    for (size_t i = 0; i < S.size(); ++i)
      ASSERT_LE(std::fabs(S[i] - Sd[i]), 64 * 0x1p-23 * (std::fabs(Sd[i]) + 2)) << "state " << i;
  }
}

const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
INSTANTIATE_TEST_SUITE_P(Isa, KernelIsa, testing::ValuesIn(kIsas),
                         [](const testing::TestParamInfo<const char*>& p) { return std::string(p.param); });

// ---- not ISA-specific

TEST(Kernels, ForceIsa) {
  const std::string def = active_isa();
  EXPECT_FALSE(force_isa("sse9"));
  EXPECT_EQ(def, active_isa());  // a failed force changes nothing
  EXPECT_TRUE(force_isa("scalar"));
  EXPECT_STREQ(active_isa(), "scalar");
  EXPECT_TRUE(force_isa(nullptr));
  EXPECT_EQ(def, active_isa());
#if defined(__aarch64__)
  EXPECT_TRUE(force_isa("neon"));
  EXPECT_FALSE(force_isa("avx2"));
#elif defined(__x86_64__)
  EXPECT_FALSE(force_isa("neon"));
#endif
  force_isa(nullptr);
  std::printf("active ISA: %s\n", active_isa());
}

// pack_rows_s24 keeps, in every group of 4, the two values of largest magnitude (in column order, the first of
// equal ones) and stores a matrix that is already 2:4 exactly (f16 values).
TEST(Kernels, PackRowsS24HandComputed) {
  const float row[32] = {0.5f, -2.0f, 1.0f, 0.25f,  0, 0, 0, 3.0f,  1, 1, 1, 1,  0, 0, 0, 0,
                         -1, 0, 0, 2,  0.5f, 0, -0.5f, 0,  4, 0, 0, 0,  0, 0, 0.75f, -0.75f};
  BlockS24 blk;
  pack_rows_s24(row, 1, 32, &blk);
  const int expect_cols[16] = {1, 2, 4, 7, 8, 9, 12, 13, 16, 19, 20, 22, 24, 25, 30, 31};
  const float expect_vals[16] = {-2, 1, 0, 3, 1, 1, 0, 0, -1, 2, 0.5f, -0.5f, 4, 0, 0.75f, -0.75f};
  for (int k = 0; k < 16; ++k) {
    EXPECT_EQ((k / 2) * 4 + static_cast<int>((blk.idx >> (2 * k)) & 3u), expect_cols[k]) << k;
    EXPECT_EQ(f16_to_f32(blk.v[k]), expect_vals[k]) << k;
  }
  float back[32];
  s24_to_f32_row(&blk, back, 32);
  int nz = 0;
  for (int j = 0; j < 32; ++j) nz += back[j] != 0.0f;
  EXPECT_EQ(nz, 12);
  EXPECT_EQ(back[1], -2.0f);
  EXPECT_EQ(back[0], 0.0f);  // pruned: 0.5 is the third largest of its group
  EXPECT_TRUE(is_2of4(back, 1, 32));
  EXPECT_FALSE(is_2of4(row, 1, 32));
  EXPECT_EQ(row_bytes(DType::kF16S24, 768), 24 * 36);
  const float bad[32] = {NAN};
  EXPECT_THROW(pack_rows_s24(bad, 1, 32, &blk), Error);
  EXPECT_THROW(pack_rows_s24(row, 1, 16, &blk), Error);
}

// The masked layout by hand: one 64-column row with 3 kept values in 4 slots; pack, decode, and a corrupt mask
// (more set bits than slots) that must read nothing outside its row.
TEST(Kernels, MaskedLayoutByHand) {
  float row[64] = {};
  row[0] = 1.5f;
  row[33] = -2.0f;
  row[63] = 0.25f;
  EXPECT_EQ(masked_row_bytes(DType::kF16M, 64, 4), 8 + 8);
  EXPECT_EQ(masked_row_bytes(DType::kI8M, 64, 4), 8 + 4);
  EXPECT_EQ(masked_row_bytes(DType::kQ4M, 64, 32), 8 + 20);
  EXPECT_EQ(masked_row_bytes(DType::kQ4M, 64, 4), -1);  // q4 slots come in groups of 32
  EXPECT_EQ(masked_kept_for(DType::kQ4M, 3), 32);
  EXPECT_EQ(masked_kept_for(DType::kF16M, 3), 3);
  uint8_t buf[16];
  pack_rows_masked(DType::kF16M, row, 1, 64, 4, buf, nullptr, false);
  const uint8_t want_mask[8] = {0x01, 0, 0, 0, 0x02, 0, 0, 0x80};
  EXPECT_EQ(0, std::memcmp(buf, want_mask, 8));
  uint16_t v[4];
  std::memcpy(v, buf + 8, 8);
  EXPECT_EQ(f16_to_f32(v[0]), 1.5f);
  EXPECT_EQ(f16_to_f32(v[1]), -2.0f);
  EXPECT_EQ(f16_to_f32(v[2]), 0.25f);
  EXPECT_EQ(v[3], 0);  // the unused slot
  int64_t kept = -1;
  EXPECT_TRUE(masked_kept_from_bytes(DType::kF16M, 1, 64, 16, &kept));
  EXPECT_EQ(kept, 4);
  EXPECT_FALSE(masked_kept_from_bytes(DType::kF16M, 1, 64, 7, &kept));   // smaller than the mask
  EXPECT_FALSE(masked_kept_from_bytes(DType::kF16M, 1, 64, 17, &kept));  // half a value
  EXPECT_FALSE(masked_kept_from_bytes(DType::kF16M, 1, 64, 8 + 2 * 65, &kept));  // more slots than columns
  EXPECT_FALSE(masked_kept_from_bytes(DType::kF16M, 2, 64, 31, &kept));  // rows of unequal size
  float x[64];
  for (int c = 0; c < 64; ++c) x[c] = static_cast<float>(c + 1);
  const MatRef m{DType::kF16M, 1, 64, buf, nullptr, DType::kF32, 4};
  float y = 0;
  matvec(m, x, &y, nullptr);
  EXPECT_EQ(y, 1.5f * 1 - 2.0f * 34 + 0.25f * 64);
  // A corrupt mask: every bit set, 4 slots. The first 4 set columns take the 4 slots, the rest read zeros; the
  // kernels stop at the row's end (ASan checks the buffer is not overrun).
  std::vector<uint8_t> bad(16);
  std::memset(bad.data(), 0xff, 8);
  const uint16_t ones[4] = {f32_to_f16(1.0f), f32_to_f16(1.0f), f32_to_f16(1.0f), f32_to_f16(1.0f)};
  std::memcpy(bad.data() + 8, ones, 8);
  const MatRef mb{DType::kF16M, 1, 64, bad.data(), nullptr, DType::kF32, 4};
  for (const char* isa : {"scalar", "avx2", "avx512", "neon"}) {
    if (!force_isa(isa)) continue;
    SCOPED_TRACE(isa);
    float yb = -1;
    matvec(mb, x, &yb, nullptr);
    EXPECT_EQ(yb, 1.0f + 2 + 3 + 4);
    float Y[8];
    std::vector<float> X8(8 * 64);
    for (int t = 0; t < 8; ++t) std::memcpy(X8.data() + t * 64, x, sizeof x);
    matmul(mb, X8.data(), 8, Y, nullptr);
    for (int t = 0; t < 8; ++t) EXPECT_EQ(Y[t], 10.0f);
    float dense[64];
    get_row(mb, 0, dense);
    EXPECT_EQ(dense[3], 1.0f);
    EXPECT_EQ(dense[4], 0.0f);
  }
  force_isa(nullptr);
  EXPECT_THROW(pack_rows_masked(DType::kF16M, row, 1, 64, 2, buf, nullptr, false), Error);  // 3 non-zeros, 2 slots
}

TEST(Kernels, RowBytes) {
  EXPECT_EQ(row_bytes(DType::kF32, 768), 3072);
  EXPECT_EQ(row_bytes(DType::kF16, 768), 1536);
  EXPECT_EQ(row_bytes(DType::kBF16, 40), 80);
  EXPECT_EQ(row_bytes(DType::kI8, 40), 40);
  EXPECT_EQ(row_bytes(DType::kQ4, 768), 480);
}

// bits_prepare / bits_scores_rows against direct double sums, on row ranges.
TEST(Kernels, BitsScoresMatchDirectSums) {
  uint64_t seed = 60000;
  for (int64_t cols : {8, 16, 64, 72, 256, 768}) {
    const int64_t rows = 45;
    SCOPED_TRACE(testing::Message() << "cols=" << cols);
    Rng rng(++seed);
    std::vector<uint8_t> bits(static_cast<size_t>(rows * cols / 8));
    for (auto& v : bits) v = static_cast<uint8_t>(rng.gen());
    for (int64_t c = 0; c < cols / 8; ++c) bits[static_cast<size_t>(c)] = 0;     // row 0: no bit set
    for (int64_t c = 0; c < cols / 8; ++c) bits[static_cast<size_t>(cols / 8 + c)] = 0xff;  // row 1: all set
    const std::vector<float> x = make_vec(cols, ++seed), lo = make_vec(rows, ++seed), step = make_vec(rows, ++seed);
    std::vector<float> table(bits_table_floats(cols) + 1, NAN);
    table.back() = 321.0f;  // sentinel
    bits_prepare(x.data(), cols, table.data());
    ASSERT_EQ(table.back(), 321.0f);
    double sum = 0, abs_sum = 0;
    for (float v : x) {
      sum += v;
      abs_sum += std::fabs(v);
    }
    for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {0, 0}, {3, 4}, {1, 2}, {5, 44}, {44, 45}}) {
      std::vector<float> score(static_cast<size_t>(rows), NAN);
      bits_scores_rows(bits.data(), lo.data(), step.data(), cols, table.data(), score.data(), r0, r1);
      for (int64_t r = 0; r < rows; ++r) {
        const size_t i = static_cast<size_t>(r);
        if (r < r0 || r >= r1) {
          ASSERT_TRUE(std::isnan(score[i])) << "wrote outside [" << r0 << "," << r1 << ") at row " << r;
          continue;
        }
        double part = 0;
        for (int64_t c = 0; c < cols; ++c)
          if (bits[static_cast<size_t>(r * (cols / 8) + c / 8)] >> (c % 8) & 1) part += x[static_cast<size_t>(c)];
        if (r == 0) {
          ASSERT_EQ(part, 0.0);
        }
        const double want = static_cast<double>(lo[i]) * sum + static_cast<double>(step[i]) * part;
        const double tol = 4e-6 * (std::fabs(lo[i]) + std::fabs(step[i])) * abs_sum + 1e-30;
        ASSERT_LE(std::fabs(score[i] - want), tol) << "row " << r;
      }
    }
  }
}

// bits_prepare_chunk / bits_scores_chunk: every input's scores bitwise equal to bits_prepare + bits_scores_rows of
// that input alone, on every ISA, for 1..16 inputs, byte counts with and without a tail of < 8, and row ranges.
TEST_P(KernelIsa, BitsChunkEqualsSingleInput) {
  uint64_t seed = 61000;
  for (int64_t cols : {8, 24, 64, 72, 256, 768}) {
    const int64_t rows = 131, nb = cols / 8;
    Rng rng(++seed);
    std::vector<uint8_t> bits(static_cast<size_t>(rows * nb));
    for (auto& v : bits) v = static_cast<uint8_t>(rng.gen());
    const std::vector<float> lo = make_vec(rows, ++seed), step = make_vec(rows, ++seed);
    for (int64_t n : {1, 5, 16}) {
      SCOPED_TRACE(testing::Message() << "cols=" << cols << " n=" << n);
      const int64_t ldx = cols + 3;
      const std::vector<float> X = make_vec(n * ldx, ++seed);
      std::vector<float> ct(bits_chunk_table_floats(cols) + 1, NAN);
      ct.back() = 321.0f;  // sentinel
      bits_prepare_chunk(X.data(), ldx, n, cols, ct.data());
      ASSERT_EQ(ct.back(), 321.0f);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {3, 4}, {5, 70}, {130, 131}}) {
        const int64_t ld = rows + 2;
        std::vector<float> got(static_cast<size_t>(16 * ld), NAN);
        bits_scores_chunk(bits.data(), lo.data(), step.data(), cols, ct.data(), n, got.data(), ld, r0, r1);
        std::vector<float> table(bits_table_floats(cols)), want(static_cast<size_t>(rows), NAN);
        for (int64_t l = 0; l < 16; ++l) {
          if (l < n) {
            bits_prepare(X.data() + l * ldx, cols, table.data());
            bits_scores_rows(bits.data(), lo.data(), step.data(), cols, table.data(), want.data(), r0, r1);
          }
          for (int64_t r = 0; r < ld; ++r) {
            const float g = got[static_cast<size_t>(l * ld + r)];
            if (l >= n || r < r0 || r >= r1) {
              ASSERT_TRUE(std::isnan(g)) << "wrote input " << l << " row " << r;
            } else {
              ASSERT_EQ(0, std::memcmp(&g, &want[static_cast<size_t>(r)], 4)) << "input " << l << " row " << r;
            }
          }
        }
      }
    }
  }
}

TEST(Kernels, QuantizeRowsI8HandComputed) {
  const float src[] = {
      127.0f, -63.4f, 0.49f, -0.51f, 10.0f, 0.0f,   // absmax 127 -> scale exactly 1
      0.0f,   0.0f,   0.0f,  0.0f,   0.0f,  0.0f,   // all zero -> scale 0, q 0
      -4.0f,  1.0f,   3.0f,  -1.0f,  0.0f,  4.0f,   // absmax 4 (negative and positive)
  };
  int8_t q[18];
  float scale[3];
  quantize_rows_i8(src, 3, 6, q, scale);
  EXPECT_EQ(scale[0], 1.0f);
  EXPECT_EQ(scale[1], 0.0f);
  EXPECT_EQ(scale[2], 4.0f / 127.0f);
  const int8_t want[] = {127, -63, 0, -1, 10, 0,  //
                         0,   0,   0, 0,  0,  0,  //
                         -127, 32, 95, -32, 0, 127};  // 1*127/4 = 31.75, 3*127/4 = 95.25
  for (int i = 0; i < 18; ++i) EXPECT_EQ(q[i], want[i]) << "element " << i;
}

TEST(Kernels, QuantizeRowsI8RoundTripError) {
  const int64_t rows = 50, cols = 333;
  const std::vector<float> src = make_vec(rows * cols, 3);
  std::vector<int8_t> q(src.size());
  std::vector<float> scale(rows);
  quantize_rows_i8(src.data(), rows, cols, q.data(), scale.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(src[static_cast<size_t>(r * cols + c)]));
    EXPECT_FLOAT_EQ(scale[static_cast<size_t>(r)], amax / 127.0f);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const float s = scale[static_cast<size_t>(r)];
      ASSERT_GE(q[i], -127);
      ASSERT_LE(std::fabs(q[i] * s - src[i]), s * 0.5f * 1.0001f);
    }
  }
}

TEST(Kernels, QuantizeRejectsNonFinite) {
  const float bad[] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  const float inf[] = {std::numeric_limits<float>::infinity(), 1.0f};
  int8_t q[2];
  float s;
  EXPECT_THROW(quantize_rows_i8(bad, 1, 2, q, &s), Error);
  EXPECT_THROW(quantize_rows_i8(inf, 1, 2, q, &s), Error);
}

// ---- quantize_rows_q4 / quantize_rows_i8_f16 / q4 conversions

// Bound on |x - dequantised x| for a q4 group: half a step, plus what rounding m and d to f16 can
// add at the clamped ends (|min - m| and 15 |d - (max - min) / 15|, each at most 2^-11 relative or
// 2^-25 absolute for f16 subnormals), plus float rounding.
double q4_error_bound(const float* g, const uint8_t* blk) {
  float lo = g[0], hi = g[0];
  for (int j = 0; j < 32; ++j) {
    lo = std::min(lo, g[j]);
    hi = std::max(hi, g[j]);
  }
  uint16_t dh;
  std::memcpy(&dh, blk, 2);
  const double d = f16_to_f32(dh);
  const double f16_round = std::ldexp(1.0, -11) * (std::fabs(lo) + (static_cast<double>(hi) - lo)) + 2 * std::ldexp(1.0, -25);
  return d / 2 + f16_round + 1e-6 * (std::fabs(lo) + std::fabs(hi));
}

TEST(Kernels, QuantizeRowsQ4HandComputed) {
  // One group 0, 1, ..., 15, 15, 14, ..., 0: min 0, max 15 -> d = 1, m = 0 exactly, q = x.
  // A second group with every value 2.5: d = 0, m = 2.5, q = 0.
  float src[64];
  for (int j = 0; j < 16; ++j) {
    src[j] = static_cast<float>(j);
    src[16 + j] = static_cast<float>(15 - j);
  }
  for (int j = 32; j < 64; ++j) src[j] = 2.5f;
  uint8_t blk[40];
  quantize_rows_q4(src, 1, 64, blk);
  uint16_t d0, m0, d1, m1;
  std::memcpy(&d0, blk, 2);
  std::memcpy(&m0, blk + 2, 2);
  std::memcpy(&d1, blk + 20, 2);
  std::memcpy(&m1, blk + 22, 2);
  EXPECT_EQ(f16_to_f32(d0), 1.0f);
  EXPECT_EQ(f16_to_f32(m0), 0.0f);
  EXPECT_EQ(f16_to_f32(d1), 0.0f);
  EXPECT_EQ(f16_to_f32(m1), 2.5f);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(blk[4 + j], j | ((15 - j) << 4)) << j;
  for (int j = 0; j < 16; ++j) EXPECT_EQ(blk[24 + j], 0) << j;
  float back[64];
  q4_to_f32_row(blk, back, 64);
  for (int j = 0; j < 64; ++j) EXPECT_EQ(back[j], src[j]) << j;
}

TEST(Kernels, QuantizeRowsQ4RoundTripError) {
  const int64_t rows = 37, cols = 320;
  std::vector<float> src = make_vec(rows * cols, 31);
  // Rows of very different magnitudes and offsets, some groups constant, some tiny (f16 subnormal d).
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, static_cast<int>(r % 9) * 3 - 16);
    const float off = (r % 3 == 0) ? 0.0f : mag * static_cast<float>(r % 5 - 2);
    for (int64_t c = 0; c < cols; ++c) {
      float& v = src[static_cast<size_t>(r * cols + c)];
      v = (r % 11 == 5 && c < 64) ? 0.75f : v * mag + off;
    }
  }
  std::vector<uint8_t> blocks(static_cast<size_t>(rows * cols / 32 * 20));
  quantize_rows_q4(src.data(), rows, cols, blocks.data());
  std::vector<float> back(src.size());
  q4_to_f32_row(blocks.data(), back.data(), back.size());
  for (size_t g = 0; g < src.size() / 32; ++g) {
    const double bound = q4_error_bound(src.data() + g * 32, blocks.data() + g * 20);
    for (size_t j = 0; j < 32; ++j) {
      const size_t i = g * 32 + j;
      ASSERT_LE(std::fabs(static_cast<double>(back[i]) - src[i]), bound) << "group " << g << " element " << j;
      ASSERT_NEAR(back[i], q4_value(blocks.data() + g * 20, static_cast<int>(j)), 1e-6 * std::fabs(back[i]));
    }
  }
  // Tensor::to_f32 decodes a kQ4 tensor the same way.
  Tensor t = Tensor::alloc("w", DType::kQ4, {rows, cols});
  ASSERT_EQ(t.nbytes, blocks.size());
  std::memcpy(t.mutable_data(), blocks.data(), blocks.size());
  const std::vector<float> tf = t.to_f32();
  ASSERT_EQ(0, std::memcmp(tf.data(), back.data(), back.size() * 4));
}

TEST(Kernels, QuantizeRowsQ4Errors) {
  std::vector<float> src(48, 1.0f);
  std::vector<uint8_t> out(64);
  EXPECT_THROW(quantize_rows_q4(src.data(), 1, 48, out.data()), Error);  // 48 % 32 != 0
  try {
    quantize_rows_q4(src.data(), 1, 48, out.data());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  std::vector<float> bad(32, 1.0f);
  bad[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(quantize_rows_q4(bad.data(), 1, 32, out.data()), Error);
  bad[7] = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(quantize_rows_q4(bad.data(), 1, 32, out.data()), Error);
  bad[7] = 1e6f;  // beyond the f16 range of m / d
  EXPECT_THROW(quantize_rows_q4(bad.data(), 1, 32, out.data()), Error);
  quantize_rows_q4(src.data(), 0, 32, out.data());  // no rows: nothing to do
}

// A kQ4 matrix whose rows are not whole blocks is a caller bug (an internal invariant, like every
// other malformed MatRef): the kernels abort with the failed check instead of reading past rows.
TEST(KernelsDeathTest, Q4MatrixNeedsWholeBlocks) {
  std::vector<uint8_t> blocks(40);
  MatRef m;
  m.dtype = DType::kQ4;
  m.rows = 1;
  m.cols = 48;  // not a multiple of 32
  m.data = blocks.data();
  std::vector<float> x(48, 1.0f), y(1);
  EXPECT_DEATH(matvec(m, x.data(), y.data(), nullptr), "cols % 32");
  EXPECT_DEATH(matmul_rows(m, x.data(), 1, y.data(), 0, 1), "cols % 32");
}

TEST(Kernels, QuantizeRowsI8F16RoundTripError) {
  const int64_t rows = 60, cols = 333;
  std::vector<float> src = make_vec(rows * cols, 5);
  for (int64_t r = 0; r < rows; ++r) {
    // Magnitudes from 2^-30 (scales far below the f16 normal range) to 2^10.
    const float mag = std::ldexp(1.0f, static_cast<int>(r % 11) * 4 - 30);
    for (int64_t c = 0; c < cols; ++c) src[static_cast<size_t>(r * cols + c)] *= r == 7 ? 0.0f : mag;
  }
  std::vector<int8_t> q(src.size());
  std::vector<uint16_t> scale(rows);
  quantize_rows_i8_f16(src.data(), rows, cols, q.data(), scale.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(src[static_cast<size_t>(r * cols + c)]));
    const float s = f16_to_f32(scale[static_cast<size_t>(r)]);
    if (amax == 0) {
      EXPECT_EQ(s, 0.0f);
    } else if (amax / 127 >= std::ldexp(1.0f, -14)) {  // normal half: the nearest one to amax / 127
      EXPECT_EQ(scale[static_cast<size_t>(r)], f32_to_f16(amax / 127.0f)) << r;
    }
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      ASSERT_GE(q[i], -127);
      // Half a step of the stored scale; values are never clamped by more than that.
      ASSERT_LE(std::fabs(q[i] * s - src[i]), s * 0.5f * 1.0001f) << "row " << r << " col " << c;
    }
  }
  const float bad[] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  const float huge[] = {1e8f, 1.0f};  // scale 1e8 / 127 > 65504
  int8_t q2[2];
  uint16_t s2;
  EXPECT_THROW(quantize_rows_i8_f16(bad, 1, 2, q2, &s2), Error);
  EXPECT_THROW(quantize_rows_i8_f16(huge, 1, 2, q2, &s2), Error);
}


}  // namespace
}  // namespace rwkvl::kern
