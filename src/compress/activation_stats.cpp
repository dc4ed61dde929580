#include "compress/activation_stats.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "core/error.h"

namespace rwkvl::compress {

namespace {

double percentile(std::vector<float> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double f = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

// Fewest neurons whose activation counts add up to `share` of all activations.
int64_t neurons_covering(std::vector<uint64_t> counts, double share) {
  std::sort(counts.begin(), counts.end(), std::greater<>());
  const uint64_t total = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
  if (total == 0) return 0;
  uint64_t run = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    run += counts[i];
    if (static_cast<double>(run) >= share * static_cast<double>(total)) return static_cast<int64_t>(i + 1);
  }
  return static_cast<int64_t>(counts.size());
}

}  // namespace

nlohmann::json FfnSparsityReport::to_json() const {
  nlohmann::json ls = nlohmann::json::array();
  for (const FfnSparsityLayer& L : layers)
    ls.push_back({{"layer", L.layer},
                  {"zero_frac_mean", L.zero_frac_mean},
                  {"zero_frac_p10", L.zero_frac_p10},
                  {"zero_frac_p50", L.zero_frac_p50},
                  {"zero_frac_p90", L.zero_frac_p90},
                  {"zero_frac_min", L.zero_frac_min},
                  {"zero_frac_max", L.zero_frac_max},
                  {"neurons_90", L.neurons_90},
                  {"neurons_99", L.neurons_99},
                  {"never_active", L.never_active}});
  return {{"tokens", tokens}, {"n_ffn", n_ffn}, {"layers", ls}, {"zero_frac_mean", zero_frac_mean}, {"seconds", seconds}};
}

FfnSparsityReport ffn_sparsity(const std::shared_ptr<const Model>& model, const int32_t* tokens, size_t n,
                               size_t chunk, const CalibrationOptions& opts,
                               const std::function<void(int64_t, int64_t)>& progress) {
  if (model->sparse_ffn())
    RWKVL_FAIL(kInvalidArgument,
               "stats measures the dense channel-mix: run it on the model the neuron-bundled file was made from "
               "(`eval --ffn-mode exact --verify` reports the active share of a bundled file)");
  if (n == 0 || tokens == nullptr) RWKVL_FAIL(kInvalidArgument, "the text has no tokens");
  if (chunk < 1 || chunk > 1024) RWKVL_FAIL(kInvalidArgument, "chunk must lie in [1, 1024], got %zu", chunk);
  const ModelConfig& cfg = model->config();
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "token id %d at position %zu is out of range [0, %d)", tokens[i], i, cfg.n_vocab);
  const size_t F = static_cast<size_t>(cfg.n_ffn);
  struct LayerCounts {
    std::vector<float> zero_frac;  // per token
    std::vector<uint64_t> active;  // per neuron: tokens where it is non-zero
  };
  std::vector<LayerCounts> st(static_cast<size_t>(cfg.n_layer));
  for (auto& s : st) s.active.assign(F, 0);

  Calibrator calib(model, opts);
  calib.set_taps(TapSet().add(MatRole::kFfnV), [&](int l, MatRole, const float* X, size_t T) {
    LayerCounts& s = st[static_cast<size_t>(l)];
    for (size_t t = 0; t < T; ++t) {
      const float* row = X + t * F;
      size_t zeros = 0;
      for (size_t i = 0; i < F; ++i) {
        if (row[i] == 0.f) ++zeros;
        else ++s.active[i];
      }
      s.zero_frac.push_back(static_cast<float>(zeros) / static_cast<float>(F));
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  calib.run(tokens, n, chunk, [&](size_t done, size_t T, float*) {
    if (progress) progress(static_cast<int64_t>(done + T), static_cast<int64_t>(n));
  });

  FfnSparsityReport rep;
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep.tokens = n;
  rep.n_ffn = cfg.n_ffn;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerCounts& s = st[static_cast<size_t>(l)];
    FfnSparsityLayer L;
    L.layer = l;
    L.zero_frac_mean =
        std::accumulate(s.zero_frac.begin(), s.zero_frac.end(), 0.0) / static_cast<double>(s.zero_frac.size());
    rep.zero_frac_mean += L.zero_frac_mean / cfg.n_layer;
    L.zero_frac_p10 = percentile(s.zero_frac, 0.10);
    L.zero_frac_p50 = percentile(s.zero_frac, 0.50);
    L.zero_frac_p90 = percentile(s.zero_frac, 0.90);
    L.zero_frac_min = percentile(s.zero_frac, 0.0);
    L.zero_frac_max = percentile(s.zero_frac, 1.0);
    L.neurons_90 = neurons_covering(s.active, 0.90);
    L.neurons_99 = neurons_covering(s.active, 0.99);
    L.never_active = std::count(s.active.begin(), s.active.end(), uint64_t{0});
    rep.layers.push_back(L);
  }
  return rep;
}

}  // namespace rwkvl::compress
