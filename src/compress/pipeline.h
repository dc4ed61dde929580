// Compression as one library call: a typed recipe -> the passes in their fixed order -> a native file and a
// typed report (rwkvl_compress in the C API, `rwkv-lite compress` on the command line).
//
// The order never changes: (RWKV-7a) the DeepEmbed tables merged (deep_embed.h), (0) pruning (prune.h), (1) low-rank
// factorisation of the target projections and quantisation / type conversion of the rest (compress.h), (2) the
// neuron-bundled sparse channel-mix with its activation predictors (sparse_ffn.h), (3) the cluster head
// (cluster_head.h); then the file is written. Every pass that calibrates reads the same calibration tokens through the
// one calibration driver (calibrate.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/cluster_head.h"
#include "compress/compress.h"
#include "compress/deep_embed.h"
#include "compress/prune.h"
#include "compress/sparse_ffn.h"
#include "model/model.h"

namespace rwkvl {
class Tokenizer;
}

namespace rwkvl::compress {

enum class LowRankMethod : uint8_t { kNone, kSvd, kAsvd };
enum class Quant : uint8_t { kNone, kInt8, kInt4 };
enum class HeadPrior : uint8_t { kCalib, kUniform };
enum class ClusterSource : uint8_t { kHead, kEmbedding };

// Names as the command line and the pass records spell them ("" for kNone); parse_* return nullopt for
// anything else.
const char* lowrank_method_name(LowRankMethod m);
const char* quant_name(Quant q);
const char* head_prior_name(HeadPrior p);
const char* cluster_source_name(ClusterSource s);
std::optional<LowRankMethod> parse_lowrank_method(std::string_view s);  // "svd", "asvd" ("" / "none": kNone)
std::optional<Quant> parse_quant(std::string_view s);                   // "int8", "int4" ("" / "none": kNone)
std::optional<HeadPrior> parse_head_prior(std::string_view s);          // "calib", "uniform"
std::optional<ClusterSource> parse_cluster_source(std::string_view s);  // "head", "emb"
// "att.key,ffn.value" -> roles (kInvalidArgument naming an unknown target and listing the known ones).
std::vector<MatRole> parse_targets(std::string_view list);

// Every projection an architecture has, in kProjectionRoles order (`--targets all`): att.gate only for
// gated v5.1+/v6 models, ffn.receptance not for v7.
std::vector<MatRole> architecture_targets(const ModelConfig& cfg);

struct Recipe {
  PruneSpec prune;  // pruning (stage 0): method, sparsity or N:M pattern, targets, DSnoT settings, storage
  // RWKV-7a (first of all, deep_embed.h): merge s_emb_x into the DeepEmbed tables and, with calibration, record the
  // hot tokens
  struct DeepEmbed {
    bool enabled = false;
    int64_t hot = 1024;
  } deep_embed;

  struct LowRank {
    LowRankMethod method = LowRankMethod::kNone;
    double rank_frac = 0;        // rank = round(rank_frac * min(rows, cols)) ...
    int64_t rank = 0;            // ... or this fixed rank ...
    uint64_t budget = 0;         // ... or per-matrix ranks chosen so all weights fit in this many bytes
    std::vector<MatRole> targets;  // projections (kProjectionRoles); empty = default_targets()
    bool all_targets = false;      // every projection of the architecture (targets must then be empty)
    bool diag = false;             // also fit W ~ B A + diag(d) on square matrices
    bool force = false;            // keep factorisations that do not save bytes
    double damp = 1e-3;            // asvd regularisation
  } lowrank;
  struct Quantise {
    Quant type = Quant::kNone;  // every block projection (and the factors)
    bool emb = false, head = false;
  } quant;
  std::string dtype;  // factors and other matrices not quantised: "" = keep (f32 factors for f32 models, else
                      // f16), "f32", "f16" or "bf16"
  struct SparseFfn {
    bool enabled = false;
    bool predictors = true;  // false: bundle only (exact mode)
    std::string dtype;       // bundle dtype: "" = that of ffn.key, else f32/f16/bf16/i8/q4
    double recall = 0.99;    // recall of active neurons the predictors must reach on new text
    int hidden = 64, epochs = 20;
    double lr = 0.003, holdout = 0.2;
    bool pred_int8 = true;  // MLP predictor stored int8 (f16 row scales) instead of f16
    uint64_t seed = 1;
  } sparse_ffn;
  struct ClusterHead {
    bool enabled = false;
    int k = 200, cap = 1024, pca_dims = 200, epochs = 30;
    double lr = 0.01;
    HeadPrior prior = HeadPrior::kCalib;
    double prior_smoothing = 1e-3;
    ClusterSource source = ClusterSource::kHead;
    uint64_t seed = 1;
    // Fidelities (issue #16): kInt4 also stores every cluster's rows at int4 with the importance profile
    // (ClusterHeadOptions::int4_version); the runtime's planner then picks per cluster int4 or the head's own
    // dtype under a latency target. kNone: one fidelity.
    Quant low_fidelity = Quant::kNone;
    std::optional<DType> high_fidelity;  // the head's own dtype as the caller names it (checked by the pass)
  } cluster_head;
  int n_threads = 0;  // <= 0: one per online core
  // > 0: run within this many bytes of resident memory: the plan (plan.h) trains fewer predictor layers side by
  // side to fit, and a recipe whose planned peak exceeds it is refused before any work.
  uint64_t mem_budget = 0;
};

// The recall the predictors' thresholds are set for on held-out calibration tokens, for a recall target R on
// new text: R + (1 - R) / 4, a margin for text that differs from the calibration.
double heldout_recall(double recall_target);

// Calibration tokens and what the pass records name them by.
struct CalibrationData {
  std::vector<int32_t> tokens;
  std::string name;  // e.g. the file name
  std::string hash;  // FNV-1a 64 of the text (or of the token ids, little-endian int32), 16 hex digits
};
// Tokenises `text` (the first max_tokens tokens; 0 = all). Throws kInvalidArgument for an empty text.
CalibrationData calibration_from_text(const Tokenizer& tok, std::string_view text, size_t max_tokens,
                                      std::string name);
CalibrationData calibration_from_tokens(std::vector<int32_t> tokens, std::string name);

// Progress of a stage: "compress" (layers), "sparse-ffn" (steps: per layer one for its activations and, with
// predictors, epochs + 1 for training), "clustering" (k-means iterations), "calibration" (tokens),
// "distillation" (epochs). Each stage starts with done = 0.
using ProgressFn = std::function<void(const char* stage, int64_t done, int64_t total)>;

struct PipelineReport {
  DeepEmbedReport deep_embed;  // RWKV-7a, before stage 0
  bool ran_deep_embed = false;
  PruneReport prune;  // stage 0
  bool ran_prune = false;
  double seconds_prune = 0;
  Report lowrank_quant;       // stage 1 (matrices, pass record); empty when it did not run
  bool ran_lowrank_quant = false;
  SparseFfnReport sparse_ffn;  // stage 2
  bool ran_sparse_ffn = false;
  ClusterHeadReport cluster_head;  // stage 3
  bool ran_cluster_head = false;
  uint64_t weight_bytes_before = 0, weight_bytes_after = 0;  // all tensors
  uint64_t out_file_bytes = 0;
  std::string out_path;
  size_t calib_tokens = 0;
  uint64_t budget = 0;
  double seconds_lowrank_quant = 0, seconds_save = 0, seconds_total = 0;
  // The process's peak resident memory (VmHWM) when each stage ended (0: the stage did not run).
  uint64_t peak_rss_lowrank_quant = 0, peak_rss_sparse_ffn = 0, peak_rss_cluster_head = 0, peak_rss_save = 0;
  nlohmann::json plan;  // the memory plan the run was made with (plan.h: CompressPlan::to_json)
  // compress_to_file: the journal folder (checkpoint.h), whether a journal of another run was replaced, and where
  // a resumed run continued from ("" when it started from the beginning), e.g. "sparse_ffn, 4 layers done".
  std::string journal, resumed_from;
  bool journal_replaced = false;
  double seconds_journal = 0;  // spent writing the journal (included in the stages' seconds)
  // {"out", "out_file_bytes", "weight_bytes_before", "weight_bytes_after", "calib_tokens", "budget",
  //  "budget_planned_bytes", "budget_error_sum", "pass", "matrices": [...], "sparse_ffn" (its pass record +
  //  "bundle_bytes", "seconds_collect", "seconds_train"), "cluster_head" (its pass record), "stages": {seconds},
  //  "stages_peak_rss_bytes": {bytes}, "plan": the memory plan}
  nlohmann::json to_json() const;
};

// Checks the recipe against the model and the calibration before any work (throws kInvalidArgument with a
// message naming the setting); compress_model() runs it first.
void validate(const Model& in, const Recipe& r, const CalibrationData& calib);

// Runs the passes (see the top of this file) and returns the compressed model.
std::shared_ptr<Model> compress_model(const std::shared_ptr<const Model>& in, const Recipe& r,
                                      const CalibrationData& calib, const ProgressFn& progress,
                                      PipelineReport* report);
// compress_model() and then the native file at out_path (written atomically: all or nothing), keeping a journal
// in "<out_path>.journal" (checkpoint.h) while it runs; it is removed once the file is written. resume: continue
// the run a journal there records (the same input, recipe and calibration; Error(kInvalidArgument) otherwise) and
// write the same bytes as a run that was never interrupted; without a journal the run starts from the beginning.
void compress_to_file(const std::shared_ptr<const Model>& in, const Recipe& r, const CalibrationData& calib,
                      const std::string& out_path, const ProgressFn& progress, PipelineReport* report,
                      bool resume = false);

}  // namespace rwkvl::compress
