// The memory planner (issue #6): given a budget for the whole process, decide before the first token
// which weights stay resident and which are streamed from the model file per token, and size the
// buffers. Always resident: the state, the context's scratch, norms and other small tensors, the
// cluster head and its table. The embedding table is never resident (an LRU cache of rows). Then, in
// order of bytes used per token per resident byte: every layer's projections (all read each token), the
// neuron-bundled FFNs (only predicted neurons are read: otherwise through the neuron cache), the head
// (with a cluster head only the chosen clusters' rows are read; when it does not fit whole, its clusters
// that save the most storage time per resident byte, by their measured usage, are kept). The plan predicts
// the reads, bytes and storage time per token under the storage model. What is not resident is read with
// pread into own buffers (runtime/layer_stream.h, HeadRuntime::set_stream), so the file's pages are
// never mapped and resident memory stays what the plan says.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "runtime/storage.h"

namespace rwkvl {

struct MemoryRequest {
  uint64_t budget = 0;       // bytes for the whole process (peak RSS)
  bool prefetch = true;      // two layer slots and a background reader (else one slot, read on demand)
  int64_t emb_rows = -1;     // embedding cache rows; -1 = 4096 (or the vocabulary, if smaller)
  int64_t de_rows = -1;      // v7a: DeepEmbed cache token slots; -1 = 64, grown to 1024 with room left
  uint64_t baseline = 0;     // bytes resident already (the process's RSS when planning), small tensors excluded
  uint64_t reserve = 0;      // the caller's buffers still to come (logits, token lists)
  size_t chunk = 32;         // most tokens per forward chunk
  bool cluster_head = false; // the head runs in cluster mode
  bool head_compare = false; // ... and beside it the full head, for agreement figures (one more vocabulary row)
  double head_rows_frac = 1; // expected share of head rows read per token (cluster mode)
  uint64_t margin = 0;       // slack for allocator and thread stacks; 0 = 128 KiB + 64 KiB per thread + 1% of the rest
  int threads = 1;           // the session's threads (each has a stack and may get an allocator arena)
  // Cluster mode: per cluster, the share of tokens whose selection includes it (measured on calibration text when
  // the file was made: the cluster head pass's "usage"); empty = unknown (every cluster head_rows_frac). When the
  // whole head does not fit, the most used clusters stay resident (the rest streamed).
  std::vector<double> cluster_usage;
  // Per cluster, the share of tokens whose selection includes it and the next one ("usage_next"): streamed neighbours
  // chosen together are one read. Empty = unknown (no merges predicted).
  std::vector<double> cluster_usage_next;
  // The neuron-bundled FFN's share of neurons read per token (the predictor's), for pricing its cache.
  double ffn_active_frac = 0.4;
  StorageOptions storage;    // the device reads come from: the plan predicts the time they take per token
  // Fidelities (files made with compress --fidelities HIGH,int4; cluster mode): per cluster the increase of the
  // calibration loss (nats per token) when it alone is read at int4 (the pass record's fidelities.loss_low);
  // empty = no int4 version.
  std::vector<double> cluster_loss_low;
  enum class Fidelity { kAuto, kHigh, kLow };
  // kAuto: the head's own dtype, except that under a latency target the planner moves the clusters that cost the
  // least loss per byte saved to int4 until the predicted time per token meets it; kHigh / kLow: every cluster at
  // one fidelity (the single-fidelity plans the elastic one is compared with). Fidelities apply to a streamed head:
  // a head that fits the budget whole is read at its own dtype.
  Fidelity fidelity = Fidelity::kAuto;
  double latency_target = 0;   // seconds per token the plan must predict at most (storage + compute); 0 = none
  double compute_seconds = 0;  // compute per token (e.g. measured with every weight resident), added to storage time
};

struct MemoryPlan {
  uint64_t budget = 0, baseline = 0, reserve = 0, margin = 0;
  uint64_t scratch = 0, state = 0, small = 0;  // always resident
  uint64_t emb_cache = 0;                      // the embedding cache (rows + index)
  int64_t emb_rows = 0;
  uint64_t de_cache = 0;                       // v7a: the DeepEmbed row cache (slots + index); tables never resident
  int64_t de_rows = 0;                         // ... its token slots (every layer's row of a token)
  uint64_t de_tables = 0;                      // ... the tables' bytes in the file
  uint64_t stream_buffer = 0;                  // layer slots (0 if every layer is resident)
  uint64_t head_buffer = 0;                    // head stream buffer (0 if the head is resident)
  uint64_t ffn_cache = 0;                      // neuron cache for streamed FFN bundles (0 = resident)
  std::vector<bool> layer_streamed;
  std::vector<uint64_t> layer_bytes, layer_ffn_bytes;  // per layer: projections (stream slot size), bundled FFN
  bool head_streamed = false, ffn_streamed = false;
  std::vector<uint8_t> head_resident_clusters;  // head streamed, cluster mode: clusters kept resident (empty = none)
  int64_t head_clusters_resident = 0, head_clusters = 0;
  double head_resident_usage = 0;              // share of the expected head rows read per token that are resident
  uint64_t resident_layers = 0, resident_head = 0, resident_ffn = 0;
  uint64_t streamed_per_token = 0;             // bytes read from the file per token (estimate)
  double reads_per_token = 0;                  // reads from the file per token (estimate)
  StorageOptions storage;
  double io_seconds_per_token = 0;             // predicted device time of those reads (storage_seconds), 0 unthrottled
  double compute_seconds = 0;                  // the request's compute per token
  double latency_target = 0;                   // the request's target (0 = none)
  std::vector<uint8_t> head_low_clusters;      // clusters read at int4 (empty = none)
  int64_t head_clusters_low = 0;
  double predicted_loss = 0;                   // sum of the int4 clusters' profiled loss increases, nats per token
  double seconds_per_token() const { return io_seconds_per_token + compute_seconds; }
  uint64_t total = 0;                          // planned peak
  uint64_t minimum = 0;                        // the smallest budget that works (everything streamed)
  bool prefetch = true;
  std::string describe() const;                // the table --print-plan shows
  nlohmann::json to_json() const;
};

// Plans for `m`. Throws kInvalidArgument when the budget is below the minimum (the message gives the
// minimum and what it is made of) or the model is not a native file on disk and would need streaming.
MemoryPlan plan_memory(const Model& m, const MemoryRequest& r);

// Reads one byte of every page of the model's small tensors (everything a plan keeps resident whatever the
// budget), so that a baseline measured afterwards already holds them; returns their bytes.
uint64_t touch_small_tensors(const Model& m);
// Drops the process's mapped pages of the big parts (fault-around maps neighbours of the small tensors'
// pages too), so RSS measured next holds what was really used. Native files only; no-op otherwise.
void release_big_parts(const Model& m);

// v7a: bytes of the DeepEmbed token tables of all layers (0 for other models), and of one token's rows of all
// layers as a DeepEmbedCache slot holds them (each row 64-byte aligned).
uint64_t deep_embed_table_bytes(const Model& m);
uint64_t deep_embed_slot_bytes(const Model& m);

// Bytes of a session's scratch for chunks of `chunk` tokens (forward-pass buffers, head and FFN scratch);
// head_compare: the cluster head also runs the full head beside it.
uint64_t session_scratch_bytes(const Model& m, size_t chunk, bool head_compare = true);

}  // namespace rwkvl
