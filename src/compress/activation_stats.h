// FFN activation sparsity (`rwkv-lite stats`, rwkvl_ffn_sparsity): the share of zero channel-mix neurons
// per layer and token over a text. The activations relu(Wk x)^2 are read where they enter ffn.value (a
// calibration tap), so the figures are exactly what a sparse FFN could skip.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/calibrate.h"
#include "model/model.h"

namespace rwkvl::compress {

struct FfnSparsityLayer {
  int layer = 0;
  double zero_frac_mean = 0;  // mean over tokens of the share of zero neurons
  double zero_frac_p10 = 0, zero_frac_p50 = 0, zero_frac_p90 = 0, zero_frac_min = 0, zero_frac_max = 0;
  int64_t neurons_90 = 0, neurons_99 = 0;  // fewest neurons carrying 90 % / 99 % of all activations
  int64_t never_active = 0;                // neurons never non-zero
};

struct FfnSparsityReport {
  size_t tokens = 0;
  int64_t n_ffn = 0;
  std::vector<FfnSparsityLayer> layers;
  double zero_frac_mean = 0;  // mean over layers
  double seconds = 0;
  // {"tokens", "n_ffn", "layers": [{"layer", "zero_frac_mean", "zero_frac_p10", ..., "never_active"}],
  //  "zero_frac_mean", "seconds"}
  nlohmann::json to_json() const;
};

// Feeds tokens[0..n) from the initial state in chunks of `chunk` (1..1024). Throws kInvalidArgument for a
// neuron-bundled model, no tokens, a token out of range or a bad chunk.
FfnSparsityReport ffn_sparsity(const std::shared_ptr<const Model>& model, const int32_t* tokens, size_t n,
                               size_t chunk, const CalibrationOptions& opts,
                               const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

}  // namespace rwkvl::compress
