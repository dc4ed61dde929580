// RWKV-7a's DeepEmbed tables at conversion time (issue #18). Official checkpoints store per layer a token table
// s_emb (V, R*R) and a merge matrix s_emb_x (R*R, C) whose product with ln0(emb[token]) the reference code adds to
// the table once, when it loads the model. Run as stored, every token would multiply s_emb_x (R*R x C values: 1.5 MB
// a layer at 0.1B in bf16, ~18 MB a token) in every layer; this pass does the merge once, writing each merged table
// in the table's dtype and dropping s_emb_x, so a token reads one table row per layer and nothing else. With
// calibration text it also records the most frequent calibration tokens ("hot_tokens", most frequent first), whose
// rows the runtime's DeepEmbed cache pins (runtime/deep_embed_cache.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace rwkvl::compress {

struct DeepEmbedOptions {
  std::vector<int32_t> calib;  // calibration tokens (may be empty: no hot tokens)
  std::string calib_name, calib_hash;
  int64_t hot = 1024;                                 // hot tokens recorded at most
  int n_threads = 0;                                  // <= 0: one per online core
  std::function<void(int done, int total)> progress;  // per layer
};

struct DeepEmbedReport {
  int layers_merged = 0;   // layers whose s_emb_x was merged (0: the tables were merged already)
  int64_t hot_tokens = 0;  // tokens recorded
  double hot_share = 0;    // share of the calibration tokens that are one of them
  double seconds = 0;
  nlohmann::json pass;  // the pass record
};

// Throws kInvalidArgument for a model without DeepEmbed tables and for a table that is quantised while its layer
// still has s_emb_x (merge before quantising: compress runs this pass first).
std::shared_ptr<Model> deep_embed(const std::shared_ptr<const Model>& in, const DeepEmbedOptions& o,
                                  DeepEmbedReport* report);

}  // namespace rwkvl::compress
