// The calibration driver (src/compress/calibrate.h): the layer-by-layer stream gives the taps the same inputs,
// bit for bit, as a whole-model pass over the same chunks - on every architecture, including RWKV-7, whose later
// layers mix in layer 0's value of each token (v_first). The whole-model pass (Calibrator) is the reference: it is
// the runtime's own forward pass, checked against the expected logits elsewhere.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "compress/calibrate.h"
#include "model/model.h"
#include "tiny_models.h"

namespace {

using rwkvl::MatRole;
using Taps = std::map<std::pair<int, MatRole>, std::vector<float>>;

std::vector<int32_t> random_tokens(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& v : t) v = pick(rng);
  return t;
}

rwkvl::compress::TapSet every_layer_role() {
  rwkvl::compress::TapSet taps;
  for (MatRole r : rwkvl::kLayerRoles) taps.add(r);
  return taps;
}

class CalibrateTiny : public ::testing::TestWithParam<const char*> {};

TEST_P(CalibrateTiny, LayerwiseTapsAndStreamEqualTheWholeModelPass) {
  const std::shared_ptr<rwkvl::Model> model = rwkvl::test::load_tiny(GetParam());
  if (!model) GTEST_SKIP() << "tiny model missing";
  const rwkvl::ModelConfig& cfg = model->config();
  const size_t C = static_cast<size_t>(cfg.n_embd), chunk = 64;
  const std::vector<int32_t> tokens = random_tokens(300, cfg.n_vocab, 7);  // chunks of 64 and a last one of 44

  Taps whole, layerwise;
  std::vector<float> whole_out(tokens.size() * C);
  rwkvl::compress::Calibrator cal(model, rwkvl::compress::CalibrationOptions{2, 0});
  cal.set_taps(every_layer_role(), [&](int l, MatRole r, const float* X, size_t T) {
    std::vector<float>& v = whole[{l, r}];
    v.insert(v.end(), X, X + T * static_cast<size_t>(rwkvl::layer_matrix(model->layer(l), r).cols));
  });
  cal.run(tokens.data(), tokens.size(), chunk, [&](size_t off, size_t T, float* x) {
    std::memcpy(whole_out.data() + off * C, x, T * C * sizeof(float));
  });

  rwkvl::compress::LayerwiseCalibration lw(model, tokens, 2, chunk);
  const rwkvl::compress::TapSet taps = every_layer_role();
  for (int l = 0; l < cfg.n_layer; ++l) {
    EXPECT_EQ(lw.next_layer(), l);
    // a trial pass first (it must not move the stream), then the pass that advances
    Taps trial;
    lw.collect(model, l, taps, [&](int tl, MatRole r, const float* X, size_t T) {
      std::vector<float>& v = trial[{tl, r}];
      v.insert(v.end(), X, X + T * static_cast<size_t>(rwkvl::layer_matrix(model->layer(tl), r).cols));
    });
    lw.advance(model, l, taps, [&](int tl, MatRole r, const float* X, size_t T) {
      std::vector<float>& v = layerwise[{tl, r}];
      v.insert(v.end(), X, X + T * static_cast<size_t>(rwkvl::layer_matrix(model->layer(tl), r).cols));
    });
    for (const auto& [key, v] : trial) EXPECT_EQ(v, layerwise.at(key)) << "trial pass, layer " << l;
  }
  ASSERT_EQ(whole.size(), layerwise.size());
  ASSERT_FALSE(whole.empty());
  for (const auto& [key, v] : whole) {
    const auto it = layerwise.find(key);
    ASSERT_NE(it, layerwise.end()) << "layer " << key.first << " role " << rwkvl::mat_role_name(key.second);
    ASSERT_EQ(v.size(), it->second.size());
    EXPECT_EQ(0, std::memcmp(v.data(), it->second.data(), v.size() * sizeof(float)))
        << "layer " << key.first << " role " << rwkvl::mat_role_name(key.second) << " differs";
  }
  EXPECT_EQ(0, std::memcmp(whole_out.data(), lw.stream(), whole_out.size() * sizeof(float)))
      << "the stream leaving the last layer differs";
  EXPECT_GE(lw.bytes(), whole_out.size() * sizeof(float));
}

INSTANTIATE_TEST_SUITE_P(All, CalibrateTiny, ::testing::ValuesIn(rwkvl::test::kTinyVersions),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string s = i.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

}  // namespace
