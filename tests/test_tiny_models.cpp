// The tiny reference models (rwkv.cpp format, v4 .. v7, FP32/FP16/Q5_1) must reproduce the expected
// logits after feeding `"in` from a fresh state; RNN mode and sequence mode must agree.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/model.h"
#include "test_util.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

struct Diff {
  float max_abs = 0, rms = 0;
};

Diff diff(const std::vector<float>& a, const std::vector<float>& b) {
  Diff d;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float e = std::fabs(a[i] - b[i]);
    d.max_abs = std::max(d.max_abs, e);
    s += static_cast<double>(e) * e;
  }
  d.rms = static_cast<float>(std::sqrt(s / static_cast<double>(a.size())));
  return d;
}

std::vector<float> run(const std::shared_ptr<Model>& m, const std::vector<int32_t>& toks, size_t chunk, int threads = 1) {
  Session ctx(m, threads);
  State st;
  st.reset(m->config());
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ctx.eval(st, toks.data(), toks.size(), chunk, logits.data(), nullptr);
  return logits;
}

const std::vector<int32_t> kPrompt = {34, 105, 110};  // "in

struct Case {
  const char* version;  // file name part
  const char* format;
  const char* logits;   // expected-logits file part
  int arch;
  float max_abs;        // tolerance against the expected logits
};

// FP32 within 1e-3 per logit (issue #2). FP16 and Q5_1 carry the rounding of their weights. Measured
// max |diff| here: FP16 <= 0.0045, Q5_1 <= 0.37 (v5.2); rwkv.cpp accepts "a few tenths" of summed
// difference for FP16 and up to ~160 for 5-bit v5 files (shared/README.md), so 0.01 / 0.5 per logit
// are tight bounds that still leave room for float reordering.
const Case kCases[] = {
    {"4v0-660K", "FP32", "4v0-660K", 4, 1e-3f}, {"4v0-660K", "FP16", "4v0-660K", 4, 0.01f},
    {"4v0-660K", "Q5_1", "4v0-660K", 4, 0.5f}, {"5v1-730K", "FP32", "5v1-730K", 5, 1e-3f},
    {"5v1-730K", "FP16", "5v1-730K", 5, 0.01f}, {"5v1-730K", "Q5_1", "5v1-730K", 5, 0.5f},
    {"5v2-730K", "FP32", "5v2-730K", 5, 1e-3f}, {"5v2-730K", "FP16", "5v2-730K", 5, 0.01f},
    {"5v2-730K", "Q5_1", "5v2-730K", 5, 0.5f},  {"6v0-1m", "FP32", "6v0-1m", 6, 1e-3f},
    {"6v0-1m", "FP16", "6v0-1m", 6, 0.01f},     {"6v0-3m", "Q5_1", "6v0-3m", 6, 0.5f},
    {"7v0-834K", "FP32", "7v0-834K", 7, 1e-3f}, {"7v0-834K", "FP16", "7v0-834K", 7, 0.01f},
    {"7v0-834K", "Q5_1", "7v0-834K", 7, 0.5f},
};

class TinyModel : public ::testing::TestWithParam<Case> {};

TEST_P(TinyModel, MatchesExpectedLogits) {
  const Case& c = GetParam();
  const std::string model_path =
      test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + c.version + "-" + c.format + ".bin");
  const std::string ref_path = test::shared_file(std::string("reference/tiny-rwkv/expected-logits-") + c.logits + ".bin");
  if (model_path.empty() || ref_path.empty()) GTEST_SKIP() << "reference files not found";
  auto m = Model::load(model_path, {});
  EXPECT_EQ(m->config().arch_major, c.arch);
  EXPECT_EQ(m->config().n_vocab, 256);
  const std::vector<float> expected = test::read_f32_file(ref_path);
  ASSERT_EQ(expected.size(), 256u);

  const std::vector<float> rnn = run(m, kPrompt, 1);
  const Diff d = diff(rnn, expected);
  EXPECT_LE(d.max_abs, c.max_abs) << "rms " << d.rms;
  std::printf("  %s-%s: max |diff| %.3g, rms %.3g\n", c.version, c.format, d.max_abs, d.rms);
  RecordProperty("max_abs_diff", std::to_string(d.max_abs));

  // Sequence mode (one chunk of 3, and chunks of 2 + 1) and 2 threads give the same result.
  EXPECT_LE(diff(run(m, kPrompt, 3), rnn).max_abs, 1e-4f);
  EXPECT_LE(diff(run(m, kPrompt, 2), rnn).max_abs, 1e-4f);
  EXPECT_LE(diff(run(m, kPrompt, 1, 2), rnn).max_abs, 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(All, TinyModel, ::testing::ValuesIn(kCases), [](const auto& param_info) {
  std::string n = std::string(param_info.param.version) + "_" + param_info.param.format;
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

// Sequence mode on a longer input: 40 tokens in chunks of 16 equal 40 single steps, state included.
TEST(TinyModelSequence, LongChunksMatchRnn) {
  for (const char* v : {"4v0-660K", "5v1-730K", "5v2-730K", "6v0-1m", "7v0-834K"}) {
    const std::string path = test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + v + "-FP32.bin");
    if (path.empty()) GTEST_SKIP();
    auto m = Model::load(path, {});
    std::vector<int32_t> toks;
    const std::string text = "The quick brown fox jumps over the lazy dog.";
    for (char ch : text) toks.push_back(static_cast<unsigned char>(ch));
    Session ctx(m, 2);
    State a, b;
    a.reset(m->config());
    b.reset(m->config());
    std::vector<float> la(256), lb(256);
    ctx.eval(a, toks.data(), toks.size(), 1, la.data(), nullptr);
    ctx.eval(b, toks.data(), toks.size(), 16, lb.data(), nullptr);
    EXPECT_LE(diff(la, lb).max_abs, 1e-4f) << v;
    EXPECT_LE(diff(a.data, b.data).max_abs, 1e-4f) << v;
  }
}

// An FP16 file equals the FP32 file whose matrices are rounded to FP16 at load: a second
// implementation of the same numbers (rwkv.cpp's converter rounds to nearest even like ours).
TEST(TinyModelFp16, EqualsFp32RoundedAtLoad) {
  for (const char* v : {"5v2-730K", "7v0-834K"}) {
    const std::string p32 = test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + v + "-FP32.bin");
    const std::string p16 = test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + v + "-FP16.bin");
    if (p32.empty() || p16.empty()) GTEST_SKIP();
    Model::LoadOptions o;
    o.weight_dtype = WeightDType::kF16;
    auto a = Model::load(p32, o);
    auto b = Model::load(p16, {});
    EXPECT_LE(diff(run(a, kPrompt, 1), run(b, kPrompt, 1)).max_abs, 1e-4f) << v;
  }
}

}  // namespace
}  // namespace rwkvl
