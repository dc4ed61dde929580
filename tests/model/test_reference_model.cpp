// The trained RWKV-5.2 World reference model (official .pth naming, bf16) reproduces its expected
// logits (computed in float64 by PyTorch from the same weights) within test::kReferenceModelLogitTol
// (1e-5; measured 1.4e-6, see tests/support/compare.h).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "compare.h"
#include "model/model.h"
#include "test_util.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

const char* kDir = "reference/models/rwkv5-world-l8-d256/";

std::vector<int32_t> read_tokens(const std::string& path) {
  std::stringstream ss(test::read_file(path));
  std::vector<int32_t> t;
  std::string item;
  while (std::getline(ss, item, ',')) t.push_back(std::stoi(item));
  return t;
}

TEST(ReferenceModel, PthMatchesExpectedLogits) {
  const std::string model = test::shared_file(std::string(kDir) + "model.pth");
  const std::string ref = test::shared_file(std::string(kDir) + "expected-logits.bin");
  const std::string toks = test::shared_file(std::string(kDir) + "expected-logits.tokens");
  if (model.empty() || ref.empty() || toks.empty()) GTEST_SKIP() << "reference model not found";
  auto m = Model::load(model, {});
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.arch_major, 5);
  EXPECT_EQ(c.arch_minor, 2);
  EXPECT_EQ(c.n_layer, 8);
  EXPECT_EQ(c.n_embd, 256);
  EXPECT_EQ(c.n_vocab, 65536);
  EXPECT_EQ(c.n_head, 4);
  EXPECT_EQ(c.n_ffn, 896);
  EXPECT_FLOAT_EQ(c.ln_x_eps, 64e-5f);  // official GroupNorm eps for .pth sources
  EXPECT_NEAR(static_cast<double>(m->n_params()), 40.4e6, 0.05e6);

  const std::vector<int32_t> tokens = read_tokens(toks);
  ASSERT_EQ(tokens.size(), 5u);
  const std::vector<float> expected = test::read_f32_file(ref);
  ASSERT_EQ(expected.size(), 65536u);
  for (size_t chunk : {size_t{1}, size_t{5}}) {
    Session ctx(m, 2);
    State st;
    st.reset(c);
    std::vector<float> logits(65536);
    ctx.eval(st, tokens.data(), tokens.size(), chunk, logits.data(), nullptr);
    const float md = test::max_abs_diff(logits, expected);
    std::printf("  chunk %zu: max |diff| %.3g\n", chunk, md);
    EXPECT_LE(md, test::kReferenceModelLogitTol) << "chunk " << chunk;
  }
}

}  // namespace
}  // namespace rwkvl
