// Kernels: every ISA path this machine can run, for every weight dtype, against a double-precision
// product of the exactly dequantised weights (independent of the kernels' own conversion code: it
// uses core/dtype.h) and against the scalar path; plus matmul == n matvecs, thread-count
// independence, row ranges, exhaustive FP16/BF16/INT8 conversion and quantize_rows_i8.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
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
  int64_t rows = 0, cols = 0;
  std::vector<float> orig;  // the float32 values before storage conversion
  std::vector<uint8_t> bytes;
  std::vector<float> scale;
  std::vector<double> deq;

  MatRef ref() const {
    MatRef m;
    m.dtype = dtype;
    m.rows = rows;
    m.cols = cols;
    m.data = bytes.empty() ? nullptr : bytes.data();
    m.row_scale = dtype == DType::kI8 ? scale.data() : nullptr;
    return m;
  }
};

TestMat make_mat(DType dt, int64_t rows, int64_t cols, uint64_t seed) {
  TestMat m;
  m.dtype = dt;
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
      quantize_rows_i8(m.orig.data(), rows, cols, q, m.scale.data());
      for (size_t i = 0; i < n; ++i) m.deq[i] = static_cast<double>(q[i]) * m.scale[i / static_cast<size_t>(cols)];
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
      for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 16, 17}) {
        if (s.rows * s.cols > 1000000 && n > 5 && n != 16) continue;  // keep the big shapes quick
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
      const int64_t n = 6;
      const std::vector<float> X = make_vec(n * s.cols, ++seed);
      std::vector<float> y1(static_cast<size_t>(s.rows)), Y1(static_cast<size_t>(n * s.rows));
      matvec(m.ref(), X.data(), y1.data(), nullptr);
      matmul(m.ref(), X.data(), n, Y1.data(), nullptr);
      for (int threads : {1, 2, 3, 4}) {
        ThreadPool pool(threads);
        std::vector<float> y(y1.size(), NAN), Y(Y1.size(), NAN);
        matvec(m.ref(), X.data(), y.data(), &pool);
        matmul(m.ref(), X.data(), n, Y.data(), &pool);
        ASSERT_EQ(0, std::memcmp(y.data(), y1.data(), y.size() * 4)) << threads << " threads (matvec)";
        ASSERT_EQ(0, std::memcmp(Y.data(), Y1.data(), Y.size() * 4)) << threads << " threads (matmul)";
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
    std::vector<float> full(rows), fullm(static_cast<size_t>(n * rows));
    matvec_rows(m.ref(), X.data(), full.data(), 0, rows);
    matmul_rows(m.ref(), X.data(), n, fullm.data(), 0, rows);
    for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 0}, {0, 1}, {1, 6}, {3, 64}, {13, 67}, {66, 67}, {5, 9}}) {
      std::vector<float> y(rows, NAN), Y(static_cast<size_t>(n * rows), NAN);
      matvec_rows(m.ref(), X.data(), y.data(), b, e);
      matmul_rows(m.ref(), X.data(), n, Y.data(), b, e);
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

}  // namespace
}  // namespace rwkvl::kern
