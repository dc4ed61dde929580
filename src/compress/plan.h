// What a compression run will need before it starts (issue #19): each stage's expected peak of resident memory and
// its share of the work, from the model's shapes, the recipe and the number of calibration tokens, the way the
// runtime planner states a session's memory before it runs. `compress --print-plan` prints it; under a memory
// budget the run trains fewer predictor layers side by side to fit, and a budget no setting meets is refused
// before any work, naming the stage.
//
// The model counts what the passes hold (the calibration stream, one layer's samples, the held-out scores, the
// float copies of the matrix at hand, the head's PCA projection, ...): finished tensors go to the spool and pages
// of the input are dropped (pass_memory.h), so neither the input nor the output model is counted. Measured peaks
// are reported next to it (PipelineReport::peak_rss_*); bench/compress_scale.sh prints both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "compress/pipeline.h"

namespace rwkvl::compress {

struct StagePlan {
  bool runs = false;
  uint64_t peak_bytes = 0;  // expected peak of resident memory during the stage
  double work = 0;          // share of the whole run's work (the runs' shares sum to 1)
};

struct CompressPlan {
  StagePlan lowrank_quant, sparse_ffn, cluster_head, save;
  uint64_t base_bytes = 0;          // before the passes: code, tokenizer, calibration tokens, the session's scratch
  uint64_t peak_bytes = 0;          // the largest stage
  int sparse_parallel_layers = 1;   // layers whose activations are collected and trained side by side
  uint64_t budget = 0;              // the budget planned for (0: none)
  // {"base_bytes", "peak_bytes", "budget", "sparse_parallel_layers", "stages": {name: {"peak_bytes", "work"}}}
  nlohmann::json to_json() const;
};

// Throws kInvalidArgument when mem_budget > 0 and even one layer at a time does not fit ("compress needs about
// X MiB in stage S (...), more than the budget of Y MiB"). n_threads <= 0: one per online core.
CompressPlan plan_compress(const Model& in, const Recipe& r, size_t calib_tokens, uint64_t mem_budget);

}  // namespace rwkvl::compress
