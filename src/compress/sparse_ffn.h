// The sparse channel-mix pass (issue #5): collects FFN activations on calibration text, orders the
// neurons hot-first, trains the activation predictors (sparse_train.h) and stores each layer's Wk and
// Wv neuron-bundled ("blocks.N.ffn.bundle.weight", see SparseFfn in model/model.h and
// docs/FORMAT.md), with the predictors and the neuron order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/pass_memory.h"
#include "compress/sparse_train.h"
#include "core/mapped_file.h"
#include "model/model.h"

namespace rwkvl::compress {

struct SparseFfnOptions {
  std::vector<int32_t> calib;          // calibration tokens
  std::string calib_name, calib_hash;  // recorded in the pass
  PredictorOptions pred;               // hidden, epochs, recall (on the held-out split), holdout, seed, threads
  double recall_target = 0;            // informative: the recall asked for on new text (0 = pred.recall)
  bool predictors = true;              // false: bundle only (exact mode), no training
  std::string dtype;                   // bundle dtype: "" = that of ffn.key.weight, else f32/f16/bf16/i8/q4
  int n_threads = 1;
  int chunk = 128;
  // Layers whose activations are collected and whose predictors are trained side by side (memory: one layer's
  // samples each); 0: pred.n_threads. The output does not depend on it.
  int group = 0;
  // The pipeline's input file and spool: the new tensors go to the spool, and the resident pages of both are
  // dropped after each layer group (the pass reads them through `in`), so resident memory holds the layers at
  // hand. May be empty.
  PassMemory mem;
  // Progress over the whole pass: (steps done, total). A layer is one step for its activations plus, with
  // predictors, epochs + 1 for its training (pred.progress is not called: this replaces it).
  std::function<void(int64_t, int64_t)> progress;
};

struct SparseFfnLayerReport {
  int layer = 0;
  double zero_frac = 0;  // calibration share of zero neurons (all tokens)
  LayerPredictor pred;   // held-out figures (weights cleared)
};

struct SparseFfnReport {
  std::vector<SparseFfnLayerReport> layers;
  uint64_t predictor_bytes = 0, bundle_bytes = 0;
  double seconds_collect = 0, seconds_train = 0;
  nlohmann::json pass;
};

std::shared_ptr<Model> sparse_ffn(const std::shared_ptr<const Model>& in, const SparseFfnOptions& opt,
                                  SparseFfnReport* report);

// Neuron bundling of one layer: rows 2j / 2j+1 of the result are row perm[j] of wk (F x C) and column
// perm[j] of wv (C x F), stored as `dtype` (int8 with f16 row scales when f16_scales). Returns the
// bundle and its scale tensor (empty unless int8).
std::pair<Tensor, Tensor> bundle_ffn(const std::string& name, const float* wk, const float* wv, int64_t F, int64_t C,
                                     const std::vector<int32_t>& perm, DType dtype, bool f16_scales);
// The inverse for float dtypes: Wk (F x C) and Wv (C x F) as float32 in the original neuron order.
void unbundle_ffn(const SparseFfn& s, std::vector<float>* wk, std::vector<float>* wv);

}  // namespace rwkvl::compress
