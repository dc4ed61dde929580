// Training-free pruning of projection matrices (issue #16): magnitude, Wanda (|W| x ||X|| per output row,
// Sun et al. 2023) and DSnoT (Dynamic Sparse No Training, Zhang et al. 2023: prune-and-grow cycles on top of a
// Wanda mask that cut each output's expected reconstruction error), unstructured or N:M, calibrated layer by
// layer through the one calibration driver (each layer sees the inputs the already pruned layers give it).
//
// Storage (unless --prune-store dense): 2:4 patterns are stored packed as f16_2of4 (core/dtype.h: 16 kept f16
// values + 2-bit positions per 32 columns, 0.5625x the bytes of f16, run by their own SIMD kernels); every other
// pattern, unstructured included, as f16_masked (a bit per column + the kept f16 values, rows padded to the
// fullest row's count) where that is smaller than the dense matrix. `compress --quant` later stores the kept
// values of either as int8 / int4 (i8_masked, q4_masked).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"

namespace rwkvl::compress {

enum class PruneMethod : uint8_t { kNone, kMagnitude, kWanda, kDsnot };
// auto: 2:4 packed, everything else masked where smaller; packed: masked even when larger; dense: zeros in place.
enum class PruneStore : uint8_t { kAuto, kDense, kPacked };

const char* prune_method_name(PruneMethod m);                      // "", "magnitude", "wanda", "dsnot"
std::optional<PruneMethod> parse_prune_method(std::string_view s);  // "none"/"" -> kNone
const char* prune_store_name(PruneStore s);                         // "auto", "dense", "packed"
std::optional<PruneStore> parse_prune_store(std::string_view s);

// N:M: at most n non-zeros in every group of m consecutive columns of a row (m == 0: unstructured).
struct NMPattern {
  int n = 0, m = 0;
  bool structured() const { return m > 0; }
  std::string str() const { return structured() ? std::to_string(n) + ":" + std::to_string(m) : "unstructured"; }
};
// "2:4" -> {2, 4}; "" / "unstructured" -> {0, 0}; Error(kInvalidArgument) for anything else, for n >= m or
// n < 1, or m > 64.
NMPattern parse_nm_pattern(std::string_view s);

struct DsnotOptions {
  int max_cycles = 50;      // prune-and-grow swaps per output row at most
  double threshold = 0.0;   // a row stops once |expected error| <= threshold (output units)
  double var_power = 1.0;   // growing candidates ranked by W x mean(x) / var(x)^var_power
  bool same_sign = true;    // stop a row when a swap would flip the sign of its error (the paper; false: its code's default)
};

// Per input column statistics of a projection's calibration inputs.
struct ColumnStats {
  std::vector<double> sum, sumsq;
  uint64_t n = 0;
  explicit ColumnStats(int64_t cols = 0) : sum(static_cast<size_t>(cols), 0.0), sumsq(static_cast<size_t>(cols), 0.0) {}
  void add(const float* X, size_t T);  // T rows of cols floats
  double mean(size_t j) const { return n ? sum[j] / static_cast<double>(n) : 0.0; }
  double meansq(size_t j) const { return n ? sumsq[j] / static_cast<double>(n) : 0.0; }
  double var(size_t j) const;
};

// The mask of one rows x cols matrix (1 = kept). Unstructured: magnitude keeps the largest |W| of the whole
// matrix, Wanda and DSnoT the largest |W| sqrt(E[x^2]) of each row, so every row (magnitude: the matrix) loses
// floor(sparsity * cols) weights (rows * cols); N:M keeps the n largest of each group (sparsity is then 1 - n/m).
// stats: required for wanda and dsnot. swaps (optional): DSnoT's prune-and-grow swaps made.
std::vector<uint8_t> prune_mask(const float* W, int64_t rows, int64_t cols, PruneMethod method, double sparsity,
                                NMPattern pattern, const ColumnStats* stats, const DsnotOptions& dsnot,
                                int64_t* swaps = nullptr);

// What to prune and how (the recipe's part: compress::Recipe::prune).
struct PruneSpec {
  PruneMethod method = PruneMethod::kNone;
  double sparsity = 0;    // in (0, 1); with a pattern, 0 or exactly 1 - n/m
  NMPattern pattern;      // {0, 0}: unstructured
  std::vector<MatRole> targets;  // projections; empty: every projection of the architecture
  DsnotOptions dsnot;
  PruneStore store = PruneStore::kAuto;
};

// The pass's options: the spec and the run's calibration, threads and progress.
struct PruneOptions : PruneSpec {
  std::vector<int32_t> calib;          // calibration tokens (wanda, dsnot)
  std::string calib_name, calib_hash;  // recorded in the pass
  int n_threads = 1;
  int chunk = 128;
  std::function<void(int, int)> progress;  // (layers done, layers)
};

struct PruneMatrixReport {
  std::string name;  // "blocks.3.att.key"
  int64_t rows = 0, cols = 0, zeros = 0, swaps = 0;
  std::string dtype;
  uint64_t bytes_before = 0, bytes_after = 0;
  // ||W X - W' X||^2 / ||W X||^2 over (at most 512 of) the calibration inputs; NaN for magnitude without
  // calibration.
  double rel_error = 0;
};

struct PruneReport {
  std::vector<PruneMatrixReport> matrices;
  uint64_t weights = 0, zeros = 0, bytes_before = 0, bytes_after = 0;  // of the pruned matrices
  double seconds = 0;
  nlohmann::json pass;
};

// Checks the options against the model (Error(kInvalidArgument) naming the problem): method, sparsity in (0, 1),
// the pattern, targets that exist, dense f32/f16/bf16 sources (not factored, quantised, bundled or already
// pruned by an earlier prune pass), calibration for wanda/dsnot, column counts the pattern / packing need.
void validate_prune(const Model& in, const PruneOptions& o);

std::shared_ptr<Model> prune(const std::shared_ptr<const Model>& in, const PruneOptions& o, PruneReport* report);

}  // namespace rwkvl::compress
