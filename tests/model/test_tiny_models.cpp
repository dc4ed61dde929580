// The tiny reference models (rwkv.cpp format, v4 .. v7, FP32/FP16/Q5_1) must reproduce the expected
// logits after feeding `"in` from a fresh state; RNN mode and sequence mode must agree. The tolerances
// and what they were measured at are in tests/support/compare.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "compare.h"
#include "core/dtype.h"
#include "model/model.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tiny_models.h"

namespace rwkvl {
namespace {

using test::kTinyPrompt;
using test::logits_after;
using test::max_abs_diff;

struct Case {
  const char* version;  // file name part
  const char* format;
  const char* logits;  // expected-logits file part
  int arch;
  float max_abs;  // tolerance against the expected logits
};

constexpr float kF32 = test::kTinyFp32LogitTol, kF16 = test::kTinyFp16LogitTol, kQ5 = test::kTinyQ5LogitTol;
const Case kCases[] = {
    {"4v0-660K", "FP32", "4v0-660K", 4, kF32}, {"4v0-660K", "FP16", "4v0-660K", 4, kF16},
    {"4v0-660K", "Q5_1", "4v0-660K", 4, kQ5},  {"5v1-730K", "FP32", "5v1-730K", 5, kF32},
    {"5v1-730K", "FP16", "5v1-730K", 5, kF16}, {"5v1-730K", "Q5_1", "5v1-730K", 5, kQ5},
    {"5v2-730K", "FP32", "5v2-730K", 5, kF32}, {"5v2-730K", "FP16", "5v2-730K", 5, kF16},
    {"5v2-730K", "Q5_1", "5v2-730K", 5, kQ5},  {"6v0-1m", "FP32", "6v0-1m", 6, kF32},
    {"6v0-1m", "FP16", "6v0-1m", 6, kF16},     {"6v0-3m", "Q5_1", "6v0-3m", 6, kQ5},
    {"7v0-834K", "FP32", "7v0-834K", 7, kF32}, {"7v0-834K", "FP16", "7v0-834K", 7, kF16},
    {"7v0-834K", "Q5_1", "7v0-834K", 7, kQ5},
};

class TinyModel : public ::testing::TestWithParam<Case> {};

TEST_P(TinyModel, MatchesExpectedLogits) {
  const Case& c = GetParam();
  const std::string model_path = test::tiny_model_path(c.version, c.format);
  const std::string ref_path = test::tiny_expected_path(c.logits);
  if (model_path.empty() || ref_path.empty()) GTEST_SKIP() << "reference files not found";
  auto m = Model::load(model_path, {});
  EXPECT_EQ(m->config().arch_major, c.arch);
  EXPECT_EQ(m->config().n_vocab, 256);
  const std::vector<float> expected = test::read_f32_file(ref_path);
  ASSERT_EQ(expected.size(), 256u);

  const std::vector<float> rnn = logits_after(m, kTinyPrompt, 1);
  const float d = max_abs_diff(rnn, expected);
  EXPECT_LE(d, c.max_abs) << "rms " << test::rms_diff(rnn, expected);
  std::printf("  %s-%s: max |diff| %.3g, rms %.3g\n", c.version, c.format, d, test::rms_diff(rnn, expected));
  RecordProperty("max_abs_diff", std::to_string(d));

  // Sequence mode (one chunk of 3, and chunks of 2 + 1) and 2 threads give the same result.
  const float seq3 = max_abs_diff(logits_after(m, kTinyPrompt, 3), rnn);
  const float seq2 = max_abs_diff(logits_after(m, kTinyPrompt, 2), rnn);
  const float thr2 = max_abs_diff(logits_after(m, kTinyPrompt, 1, 2), rnn);
  std::printf("    sequence vs RNN: chunk 3 %.3g, chunk 2 %.3g, 2 threads %.3g\n", seq3, seq2, thr2);
  EXPECT_LE(seq3, test::kSeqVsRnnLogitTol);
  EXPECT_LE(seq2, test::kSeqVsRnnLogitTol);
  EXPECT_LE(thr2, test::kSeqVsRnnLogitTol);
}

INSTANTIATE_TEST_SUITE_P(All, TinyModel, ::testing::ValuesIn(kCases), [](const auto& param_info) {
  std::string n = std::string(param_info.param.version) + "_" + param_info.param.format;
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

// Sequence mode on a longer input: 40 tokens in chunks of 16 equal 40 single steps, state included.
TEST(TinyModelSequence, LongChunksMatchRnn) {
  for (const char* v : test::kTinyVersions) {
    auto m = test::load_tiny(v);
    if (!m) GTEST_SKIP();
    const std::vector<int32_t> toks = test::byte_tokens("The quick brown fox jumps over the lazy dog.");
    Session ctx(m, 2);
    State a, b;
    a.reset(m->config());
    b.reset(m->config());
    std::vector<float> la(256), lb(256);
    ctx.eval(a, toks.data(), toks.size(), 1, la.data(), nullptr);
    ctx.eval(b, toks.data(), toks.size(), 16, lb.data(), nullptr);
    std::printf("  %s: 44 bytes, chunks of 16 vs RNN: logits %.3g, state %.3g\n", v, max_abs_diff(la, lb),
                max_abs_diff(a.data, b.data));
    EXPECT_LE(max_abs_diff(la, lb), test::kSeqVsRnnLogitTol) << v;
    EXPECT_LE(max_abs_diff(a.data, b.data), test::kSeqVsRnnStateTol) << v;
  }
}

// An FP16 file equals the FP32 file whose matrices are rounded to FP16 at load: a second
// implementation of the same numbers (rwkv.cpp's converter rounds to nearest even like ours). The
// tensors first: identical bytes, except the small LoRAs, which loading keeps in f32 (their f16
// rounding must equal the file's values); then the logits, bit for bit where every tensor is identical.
TEST(TinyModelFp16, EqualsFp32RoundedAtLoad) {
  for (const char* v : {"5v2-730K", "7v0-834K"}) {
    const std::string p32 = test::tiny_model_path(v, "FP32");
    const std::string p16 = test::tiny_model_path(v, "FP16");
    if (p32.empty() || p16.empty()) GTEST_SKIP();
    Model::LoadOptions o;
    o.weight_dtype = WeightDType::kF16;
    auto a = Model::load(p32, o);
    auto b = Model::load(p16, {});
    ASSERT_EQ(a->tensors().size(), b->tensors().size()) << v;
    int kept_f32 = 0;
    for (const auto& [name, ta] : a->tensors()) {
      const auto it = b->tensors().find(name);
      ASSERT_NE(it, b->tensors().end()) << v << " " << name;
      const Tensor& tb = it->second;
      ASSERT_EQ(ta.shape, tb.shape) << v << " " << name;
      if (ta.dtype == DType::kF32 && tb.dtype == DType::kF16) {  // a LoRA kept exact at load
        ++kept_f32;
        const float* fa = ta.as<float>();
        const uint16_t* hb = tb.as<uint16_t>();
        for (int64_t i = 0; i < ta.numel(); ++i) ASSERT_EQ(f32_to_f16(fa[i]), hb[i]) << v << " " << name << " " << i;
        continue;
      }
      ASSERT_EQ(ta.dtype, tb.dtype) << v << " " << name;
      EXPECT_TRUE(ta.nbytes == tb.nbytes && std::memcmp(ta.data, tb.data, ta.nbytes) == 0) << v << " " << name;
    }
    const float d = max_abs_diff(logits_after(a, kTinyPrompt, 1), logits_after(b, kTinyPrompt, 1));
    std::printf("  %s: FP32 rounded at load vs FP16 file: %.3g (%d LoRAs kept f32)\n", v, d, kept_f32);
    if (kept_f32 == 0) EXPECT_EQ(d, 0.f) << v;  // the same f16 weights run the same code: bit for bit
    else EXPECT_LE(d, test::kFp16AtLoadLogitTol) << v;
  }
}

}  // namespace
}  // namespace rwkvl
