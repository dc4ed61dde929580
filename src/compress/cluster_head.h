// The hierarchical ("cluster") head pass (issue #6, RWKV-Lite section on the head): clusters the
// vocabulary by its head rows (PCA, then seeded k-means; clusters above a size cap are split), distils a
// small cluster head on calibration text (its softmax matches the full head's probability mass per
// cluster: KL loss, Adam), learns each token's share of its cluster's mass, and stores the head rows
// grouped by cluster (ClusterHead in model/model.h, docs/FORMAT.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/pass_memory.h"
#include "core/mapped_file.h"
#include "model/model.h"

namespace rwkvl::compress {

struct ClusterHeadOptions {
  int k = 200;             // k-means clusters before the cap
  int cap = 1024;          // most tokens per cluster (larger clusters are split)
  int pca_dims = 200;      // PCA components the k-means runs on (capped at the model width)
  bool from_embedding = false;  // cluster the embedding rows (the paper) instead of the head rows
  int kmeans_iters = 30;   // Lloyd iterations at most (stops when no assignment changes)
  uint64_t seed = 1;
  std::vector<int32_t> calib;  // calibration tokens
  std::string calib_name, calib_hash;
  int epochs = 30;        // distillation epochs
  double lr = 1e-2;       // Adam step size
  double holdout = 0.1;   // share of calibration positions (the last ones) held out for the report
  bool uniform_prior = false;  // pseudo-logits spread uniformly over a cluster (the paper) instead of by calibration mass
  double prior_smoothing = 1e-3;  // calib priors: each token's share gets this x its cluster's mean share added
  bool lse_init = true;        // start from the log-sum-exp approximation (mean head row, log n_j); false: zeros
  // Fidelities (issue #16): also store every cluster's head rows at int4 ("head.weight.q4", q4_g32 in grouped order,
  // quantised from the head as it is, e.g. int8) and profile each cluster's importance: the increase of the
  // calibration loss when that cluster alone is read at int4 (ClusterHeadReport::cluster_loss_int4).
  bool int4_version = false;
  std::optional<DType> high_dtype;   // the caller's name for the head's own dtype: must be it (clear error otherwise)
  int64_t profile_positions = 4096;  // calibration positions the profile uses at most (evenly spaced)
  int n_threads = 1;
  int chunk = 128;
  // The pipeline's input file and spool (see SparseFfnOptions::mem): the new tensors go to the spool; resident
  // pages are dropped after the head rows are read, after each layer of the calibration pass and after the
  // calibration. May be empty.
  PassMemory mem;
  // Progress: (stage, done, total) for stages "clustering" (k-means iterations), "calibration" (tokens),
  // "distillation" (epochs).
  std::function<void(const char* stage, int64_t done, int64_t total)> progress;
};

struct ClusterHeadReport {
  int64_t k_initial = 0, k_final = 0;
  int64_t largest_before_cap = 0, largest = 0, smallest = 0;
  // Held-out calibration positions, the runtime's selection rule at the defaults (p 0.95, 3..100 clusters):
  double heldout_kl_init = 0, heldout_kl = 0;  // KL(full-head cluster mass || cluster head), before / after training
  int best_epoch = 0;                          // the epoch whose weights were kept (0 = the initialisation)
  double heldout_top1_cluster = 0;             // the most probable cluster agrees
  double heldout_rows_frac = 0;                // share of head rows read
  double heldout_token_covered = 0;            // the full head's argmax token lies in a chosen cluster
  double heldout_mass_covered = 0;             // full-head probability mass of the chosen clusters
  // Per cluster (final order): the share of all calibration positions whose selection (the rule above) includes
  // it. Stored in the pass record ("usage"): the memory planner keeps the most used clusters' rows resident.
  std::vector<double> cluster_usage;
  // Per cluster (file order, which puts clusters chosen together next to each other): the share of calibration
  // positions whose selection includes it and the next cluster (the last: 0). Stored ("usage_next"): the planner
  // predicts how many of a token's reads of adjacent streamed clusters merge into one.
  std::vector<double> cluster_usage_next;
  // int4_version: per cluster, the mean increase of the next-token loss (nats per calibration position, the
  // runtime's cluster-mode logits at the default selection) when that cluster's rows alone are read at int4;
  // the increase with every cluster at int4 at once (measured, not summed), and the positions profiled.
  std::vector<double> cluster_loss_int4;
  double loss_int4_all = 0;
  int64_t profile_positions = 0;
  double seconds_profile = 0;
  double seconds_cluster = 0, seconds_calib = 0, seconds_train = 0;
  nlohmann::json pass;
};

// The whole pass: the model with the grouped head and the cluster tensors. Throws kInvalidArgument for a
// model that already has a cluster head, bad options, a factored head, or too little calibration text.
std::shared_ptr<Model> cluster_head(const std::shared_ptr<const Model>& in, const ClusterHeadOptions& o,
                                    ClusterHeadReport* rep);

// Building blocks (tested on their own).
// PCA projection of n rows of width d onto `dims` components: n x dims, row-major (rows centred first).
std::vector<float> pca_project(const float* rows, int64_t n, int64_t d, int dims);
// The same with the rows fetched a block at a time (fetch(first, count, out) writes count x d floats), so the
// rows never need to be in memory at once; the same result as pca_project over the whole matrix.
using RowFetch = std::function<void(int64_t first, int64_t count, float* out)>;
std::vector<float> pca_project(const RowFetch& fetch, int64_t n, int64_t d, int dims);
// k-means: a cluster per point (0..k-1, none empty), deterministic for a seed, independent of n_threads.
std::vector<int32_t> kmeans(const float* pts, int64_t n, int64_t d, int k, int iters, uint64_t seed, int n_threads,
                            const std::function<void(int)>& on_iteration = nullptr);
// Splits every cluster above `cap` (sub-k-means, recursively; points that k-means cannot separate are cut
// into equal runs along their first coordinate) and renumbers clusters 0..K'-1 in order of their smallest
// point index.
std::vector<int32_t> cap_clusters(const float* pts, int64_t n, int64_t d, std::vector<int32_t> assign, int cap,
                                  uint64_t seed, int n_threads);

}  // namespace rwkvl::compress
