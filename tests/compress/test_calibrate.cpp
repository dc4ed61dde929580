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
#include "compress/sparse_ffn.h"
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
    // Trial passes of a few projections each, as low-rank factorisation collects them stage by stage: each chunk
    // stops after its last tap, and the taps still see what a whole pass gives them.
    std::vector<Taps> stage_trials;
    for (const std::vector<MatRole>& stage : {std::vector<MatRole>{MatRole::kAttR, MatRole::kAttK, MatRole::kAttV, MatRole::kAttG},
                                              {MatRole::kAttO},
                                              {MatRole::kFfnK, MatRole::kFfnR},
                                              {MatRole::kFfnV}}) {
      rwkvl::compress::TapSet st;
      for (MatRole r : stage) st.add(l, r);
      Taps& part = stage_trials.emplace_back();
      lw.collect(model, l, st, [&](int tl, MatRole r, const float* X, size_t T) {
        std::vector<float>& v = part[{tl, r}];
        v.insert(v.end(), X, X + T * static_cast<size_t>(rwkvl::layer_matrix(model->layer(tl), r).cols));
      });
      EXPECT_FALSE(part.empty()) << "layer " << l;
    }
    lw.advance(model, l, taps, [&](int tl, MatRole r, const float* X, size_t T) {
      std::vector<float>& v = layerwise[{tl, r}];
      v.insert(v.end(), X, X + T * static_cast<size_t>(rwkvl::layer_matrix(model->layer(tl), r).cols));
    });
    for (const auto& [key, v] : trial) EXPECT_EQ(v, layerwise.at(key)) << "trial pass, layer " << l;
    for (const Taps& part : stage_trials)
      for (const auto& [key, v] : part)
        EXPECT_EQ(v, layerwise.at(key)) << "stage trial pass, layer " << l << " role " << rwkvl::mat_role_name(key.second);
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

// The same on a model with a neuron-bundled channel-mix and activation predictors (what the cluster head pass
// calibrates after the sparse FFN pass): the runtime's predict mode must give the same stream layer by layer.
TEST(CalibrateSparse, LayerwiseStreamEqualsTheWholeModelPassInPredictMode) {
  const std::shared_ptr<rwkvl::Model> model = rwkvl::test::load_tiny("5v2-730K");
  if (!model) GTEST_SKIP() << "tiny model missing";
  rwkvl::compress::SparseFfnOptions o;
  o.calib = random_tokens(600, model->config().n_vocab, 3);
  o.pred.epochs = 2;
  o.pred.n_threads = 2;
  o.n_threads = 2;
  const std::shared_ptr<const rwkvl::Model> sparse = rwkvl::compress::sparse_ffn(model, o, nullptr);
  ASSERT_TRUE(sparse->has_ffn_predictor());
  const size_t C = static_cast<size_t>(sparse->config().n_embd), chunk = 64;
  const std::vector<int32_t> tokens = random_tokens(300, sparse->config().n_vocab, 9);
  std::vector<float> whole_out(tokens.size() * C);
  rwkvl::compress::Calibrator cal(sparse, rwkvl::compress::CalibrationOptions{2, 0});
  cal.run(tokens.data(), tokens.size(), chunk, [&](size_t off, size_t T, float* x) {
    std::memcpy(whole_out.data() + off * C, x, T * C * sizeof(float));
  });
  rwkvl::compress::LayerwiseCalibration lw(sparse, tokens, 2, chunk);
  for (int l = 0; l < sparse->config().n_layer; ++l) lw.advance(sparse, l);
  size_t differ = 0;
  for (size_t i = 0; i < whole_out.size(); ++i) differ += whole_out[i] != lw.stream()[i];
  EXPECT_EQ(differ, 0u) << "of " << whole_out.size() << " values";
}
