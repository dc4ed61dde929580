// Compression passes over a loaded model: low-rank factorisation of projection matrices (plain SVD
// or activation-aware SVD with sequential calibration, optional diagonal term) and weight
// quantisation (int8 per row, int4 in groups of 32). The result is a new Model over the same
// canonical layout (factored matrices as "<base>.lr_a/.lr_b[/.lr_d]", see model.h and
// docs/FORMAT.md), with the pass recorded in Model::passes().
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/pass_memory.h"
#include "model/model.h"

namespace rwkvl::compress {

struct Options {
  std::string lowrank;     // "" (none), "svd" or "asvd"
  double rank_frac = 0.0;  // rank = round(rank_frac * min(rows, cols)) ...
  int64_t rank = 0;        // ... or this fixed rank (exactly one of the two when lowrank is set)
  std::vector<std::string> targets;  // short names (see target_names()); empty = default_targets()
  bool diag = false;                 // also fit W ~ B A + diag(d) on square matrices
  bool force = false;                // keep factorisations that do not save bytes (e.g. full rank)
  uint64_t budget = 0;               // > 0: choose per-matrix ranks so all weights fit in this many bytes
  double damp = 1e-3;                // asvd: G + damp * mean(diag G) * I before the Cholesky factor
  std::string quant;                 // "" (none), "int8" or "int4": every block projection
  bool quant_emb = false, quant_head = false;
  std::string dtype;  // non-quantised factors and matrices: "" = factors f32 for f32 sources, else f16;
                      // f32 / f16 / bf16 = this type for factors and every other block matrix
  std::vector<int32_t> calib;  // calibration tokens (asvd needs them; svd reports output errors with them)
  std::string calib_name, calib_hash;  // recorded in the pass
  int n_threads = 1;
  int chunk = 128;  // tokens per calibration forward chunk
  // Progress: called with (layer index done so far, number of layers).
  std::function<void(int, int)> progress;
  // Finished tensors to the spool (and its pages dropped after each layer and matrix); may be empty.
  PassMemory mem;
};

// What happened to one matrix.
struct MatrixReport {
  std::string name;    // e.g. "blocks.3.att.key"
  std::string action;  // "factored", "skipped" (factoring would not save bytes), "dense" (kept by
                       // --budget), "quantised", "converted"
  int64_t rows = 0, cols = 0, rank = 0;
  std::string dtype;   // stored dtype of the result
  uint64_t bytes_before = 0, bytes_after = 0;
  // Relative calibration output error ||W X - W' X||^2 / ||W X||^2 (NaN without calibration); for
  // asvd both the asvd result and what plain svd would have given on the same inputs.
  double err_svd = std::numeric_limits<double>::quiet_NaN();
  double err_asvd = std::numeric_limits<double>::quiet_NaN();
  double err_frob = std::numeric_limits<double>::quiet_NaN();  // ||W - W'||_F^2 / ||W||_F^2
};

struct Report {
  std::vector<MatrixReport> matrices;
  uint64_t bytes_before = 0, bytes_after = 0;  // all tensors of the model
  nlohmann::json pass;                         // what is appended to Model::passes()
  uint64_t budget_planned_bytes = 0;           // --budget: the planner's byte estimate
  double budget_error_sum = 0.0;               // --budget: sum of predicted relative errors
  double seconds = 0.0;
};

// All target names, and the default set for a configuration (the time-mix receptance, key, value
// and gate projections; v4/v7: receptance, key, value).
const std::vector<std::string>& target_names();
std::vector<std::string> default_targets(const ModelConfig& cfg);

// Runs the passes the options ask for. Throws rwkvl::Error on bad options, on a model that already
// carries what a pass would make (factored targets, quantised matrices), or a too short calibration.
std::shared_ptr<Model> run(const std::shared_ptr<const Model>& in, const Options& opts, Report* report);

// Sets out's pass records to those of `in` followed by `pass` (every compress pass ends with this).
void append_pass(Model& out, const Model& in, const nlohmann::json& pass);
// A pass's result: the model bound from its tensors, carrying in's pass records plus `pass`.
std::shared_ptr<Model> model_with_pass(TensorMap tensors, const ModelConfig& cfg, const Model& in,
                                       const nlohmann::json& pass);

// Fewest calibration tokens asvd accepts.
constexpr size_t kMinCalibTokens = 64;

// FNV-1a 64-bit hash of bytes, as 16 hex digits (identifies the calibration text in the pass record).
std::string fnv1a64_hex(const void* data, size_t n);

}  // namespace rwkvl::compress
