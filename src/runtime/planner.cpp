#include "runtime/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/kernels.h"
#include "model/forward.h"
#include "runtime/deep_embed_cache.h"
#include "runtime/ffn_runtime.h"
#include "runtime/layer_stream.h"
#include "runtime/neuron_cache.h"

namespace rwkvl {

namespace {

std::string mib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(b) / (1024.0 * 1024.0));
  return buf;
}

uint64_t matrix_data_bytes(const kern::MatRef& r) { return static_cast<uint64_t>(kern::mat_bytes(r)); }

}  // namespace

namespace {

// Data of the big parts (streamable projections, bundles, embedding and head matrices): [begin, end).
std::vector<std::pair<const uint8_t*, const uint8_t*>> big_parts(const Model& m) {
  std::vector<std::pair<const uint8_t*, const uint8_t*>> v;
  auto add = [&](const kern::MatRef& r) {
    const auto* p = static_cast<const uint8_t*>(r.data);
    if (p) v.emplace_back(p, p + matrix_data_bytes(r));
  };
  for (int l = 0; l < m.config().n_layer; ++l) {
    for_each_stream_part(m.layer(l), add);
    if (m.layer(l).sffn.present()) add(m.layer(l).sffn.layout);
    if (m.layer(l).deep_embed()) add(m.layer(l).de_emb.ref);  // v7a token tables: read a row per token
  }
  add(m.emb().ref);
  add(m.head().ref);
  if (m.cluster_head().has_low()) add(m.cluster_head().low);
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

uint64_t deep_embed_table_bytes(const Model& m) {
  uint64_t n = 0;
  for (int l = 0; l < m.config().n_layer; ++l)
    if (m.layer(l).deep_embed()) n += matrix_data_bytes(m.layer(l).de_emb.ref);
  return n;
}

uint64_t deep_embed_slot_bytes(const Model& m) {
  uint64_t n = 0;
  for (int l = 0; l < m.config().n_layer; ++l)
    if (m.layer(l).deep_embed())
      n += (static_cast<uint64_t>(kern::mat_row_bytes(m.layer(l).de_emb.ref)) + 63) / 64 * 64;
  return n;
}

uint64_t touch_small_tensors(const Model& m) {
  const auto big = big_parts(m);
  uint64_t bytes = 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : m.tensors()) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    if (!p || t.nbytes == 0) continue;
    bool is_big = false;
    for (const auto& [b, e] : big) is_big = is_big || (p < e && p + t.nbytes > b);
    if (is_big) continue;
    for (size_t i = 0; i < t.nbytes; i += 4096) sink = static_cast<uint8_t>(sink + p[i]);
    sink = static_cast<uint8_t>(sink + p[t.nbytes - 1]);
    bytes += t.nbytes;
  }
  (void)sink;
  return bytes;
}

void release_big_parts(const Model& m) {
  const auto& f = m.file();
  if (!f) return;
  for (const auto& [b, e] : big_parts(m))
    if (b >= f->data() && e <= f->data() + f->size()) f->release_range(b, static_cast<size_t>(e - b));
}

uint64_t session_scratch_bytes(const Model& m, size_t chunk, bool head_compare) {
  const ModelConfig& c = m.config();
  const uint64_t T = std::max<size_t>(1, chunk);
  // the forward pass's named buffers and the residual stream of a chunk
  uint64_t bufs = Scratch::bytes_for(m, T) + T * static_cast<uint64_t>(c.n_embd) * 4;
  // the low-rank factors' intermediate (ops::project_many holds every factored matrix of a group at once; bounded
  // by the sum of a layer's ranks)
  uint64_t ranks = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    uint64_t sum = 0;
    for_each_layer_matrix(m.layer(l), [&](const Matrix& w) {
      if (w.factored()) sum += static_cast<uint64_t>(w.a.rows);
    });
    ranks = std::max(ranks, sum);
  }
  bufs += T * ranks * 4;
  // Vocabulary-sized rows of the head runtime: with a cluster table, logits in grouped order and exact logits
  // (plus the full head's when comparing), per token its prior (f32) and cluster (int32 at most) and the chosen
  // rows' exps (f64); without one, the streamed head's row pieces (at most one row).
  const uint64_t vocab_rows = m.cluster_head().present() ? (head_compare ? 7 : 6) : 1;
  const uint64_t head = vocab_rows * static_cast<uint64_t>(c.n_vocab) * 4 + 3 * static_cast<uint64_t>(m.cluster_head().k) * 8;
  uint64_t ffn = 8 * static_cast<uint64_t>(c.n_ffn) * 4 * 2;
  if (m.layer(0).sffn.present()) {  // sequence mode's union of a chunk's neurons (FfnRuntime::forward_chunk_fused)
    const SparseFfn& S = m.layer(0).sffn;
    const uint64_t F = static_cast<uint64_t>(c.n_ffn), C = static_cast<uint64_t>(c.n_embd);
    const uint64_t B = static_cast<uint64_t>(ffn_chunk_block_rows(S));
    // per token: the mask, the mask in union order and the MLP predictor's scores (floats) and hidden layer; the
    // union's mask and ids; the gathered key rows, keys, row pointers and per thread the neurons used (a byte each,
    // counted for up to 64 threads)
    ffn += T * F * 12 + T * static_cast<uint64_t>(S.hidden) * 4 + F * 8 + ffn_chunk_block_bytes(S) + T * B * 4 + B * 8 +
           B * 64 + T * C * 4 + C * 4;
    // the 1-bit predictor's scores of kBitsLanes tokens at once and their lane tables (FfnRuntime::chunk_select)
    ffn +=
        (static_cast<uint64_t>(kern::kBitsLanes) * F * 4 + kern::bits_chunk_table_floats(static_cast<int64_t>(C)) * 4) *
        kFfnBitsGroups;
  }
  return bufs + head + ffn + 256 * 1024;
}

namespace {

// The sizes a residency choice is priced with, and the pricing.
struct PlanSizes {
  const MemoryRequest& r;
  int L = 0;
  std::vector<uint64_t> layer_bytes, ffn_bytes;  // per layer: stream slot size, FFN bundle bytes
  std::vector<int> layer_parts;                  // per layer: reads of a streamed layer
  uint64_t head_bytes = 0, emb_bytes = 0, head_buf = 0, ffn_min = 0, emb_row = 0;
  uint64_t de_slot = 0;  // v7a: one token's DeepEmbed rows, all layers (0: no tables)
  int de_layers = 0;
  uint64_t neuron_bytes = 0, n_neurons = 0;      // sparse FFN: bytes of one bundled neuron, neurons of all layers
  std::vector<uint64_t> layer_neurons;           // sparse FFN: neurons per layer
  bool sparse = false;
  // cluster mode: per cluster its bytes when resident (rows + f32 row scales), its usage, most used first
  std::vector<uint64_t> cluster_bytes;
  std::vector<double> usage, usage_next;
  std::vector<uint64_t> cluster_bytes_low;  // ... at int4 (empty: no int4 version)
  std::vector<double> loss_low;             // per cluster: loss increase at int4 (nats per token)
  uint64_t cluster_b(const MemoryPlan& q, size_t j) const {
    return !q.head_low_clusters.empty() && q.head_low_clusters[j] ? cluster_bytes_low[j] : cluster_bytes[j];
  }

  explicit PlanSizes(const MemoryRequest& req) : r(req) {}

  // Fills in the totals of q for its choice of layer_streamed / head_streamed / ffn_streamed.
  void total_of(MemoryPlan& q) const {
    uint64_t slot = 0;
    q.resident_layers = 0;
    for (int l = 0; l < L; ++l) {
      if (q.layer_streamed[static_cast<size_t>(l)]) slot = std::max(slot, layer_bytes[static_cast<size_t>(l)]);
      else q.resident_layers += layer_bytes[static_cast<size_t>(l)];
    }
    q.stream_buffer = slot * (slot ? (r.prefetch ? 2 : 1) : 0);
    q.head_buffer = q.head_streamed ? head_buf : 0;
    q.resident_head = q.head_streamed ? 0 : head_bytes;
    const bool partial = q.head_streamed && !q.head_resident_clusters.empty();
    if (partial)
      for (size_t j = 0; j < cluster_bytes.size(); ++j)
        if (q.head_resident_clusters[j]) q.resident_head += cluster_b(q, j);
    q.resident_ffn = q.ffn_streamed ? 0 : ffn_all();
    q.ffn_cache = q.ffn_streamed ? std::max(ffn_min, q.ffn_cache) : 0;  // the minimum, or what the plan gave it
    const uint64_t sum = q.baseline + q.reserve + q.scratch + q.state + q.small + q.emb_cache + q.de_cache +
                         q.stream_buffer + q.head_buffer + q.ffn_cache + q.resident_layers + q.resident_head +
                         q.resident_ffn;
    q.margin = r.margin ? r.margin : (128u << 10) + (64u << 10) * static_cast<uint64_t>(std::max(1, r.threads)) + sum / 100;
    q.total = sum + q.margin;
    // reads and bytes from the file per token (expected), and the device time they take
    double s = 0, reads = 0;
    for (int l = 0; l < L; ++l)
      if (q.layer_streamed[static_cast<size_t>(l)]) {
        s += static_cast<double>(layer_bytes[static_cast<size_t>(l)]);
        reads += layer_parts[static_cast<size_t>(l)];
      }
    q.head_resident_usage = 0;
    double head_reads = 0;
    const double reads_before_head = reads;
    if (q.head_streamed) {
      const double buf = static_cast<double>(std::max<uint64_t>(1, head_buf));
      if (!cluster_bytes.empty()) {
        double all = 0, kept = 0;
        for (size_t j = 0; j < cluster_bytes.size(); ++j) {
          const double b = static_cast<double>(cluster_b(q, j)), u = usage[j];
          all += u * b;
          if (partial && q.head_resident_clusters[j]) {
            kept += u * b;
            continue;
          }
          s += u * b;
          reads += u * std::ceil(b / buf);
          // chosen together with the next cluster, also streamed at the same fidelity: one read for both
          if (j + 1 < cluster_bytes.size() && !usage_next.empty() && !(partial && q.head_resident_clusters[j + 1]) &&
              (q.head_low_clusters.empty() || q.head_low_clusters[j] == q.head_low_clusters[j + 1]) &&
              b + static_cast<double>(cluster_b(q, j + 1)) <= buf)
            reads -= usage_next[j];
        }
        q.head_resident_usage = all > 0 ? kept / all : 0;
      } else {
        s += static_cast<double>(head_bytes);
        reads += std::ceil(static_cast<double>(head_bytes) / buf);
      }
      head_reads = reads - reads_before_head;
    }
    if (q.ffn_streamed && n_neurons) {  // misses of the neuron cache: the share of the bundles it cannot hold
      const double all = static_cast<double>(ffn_all());
      const double miss = all > 0 ? std::max(0.0, 1.0 - static_cast<double>(q.ffn_cache) / all) : 0.0;
      const size_t gap = NeuronCache::gap_neurons_for(&r.storage, neuron_bytes);
      for (uint64_t nl : layer_neurons) {
        double rd = 0, by = 0;
        NeuronCache::expected_miss_reads(r.ffn_active_frac * static_cast<double>(nl) * miss, static_cast<double>(nl), gap,
                                         neuron_bytes, &rd, &by);
        s += by;
        reads += rd;
      }
    }
    if (q.emb_rows < static_cast<int64_t>(emb_bytes / std::max<uint64_t>(1, emb_row))) {  // embedding cache misses
      s += 0.5 * static_cast<double>(emb_row);
      reads += 0.5;
    }
    if (de_slot) {  // DeepEmbed cache misses (about half of the tokens of running text): every layer's row, L reads
      s += 0.5 * static_cast<double>(de_slot);
      reads += 0.5 * de_layers;
    }
    q.streamed_per_token = static_cast<uint64_t>(s);
    q.reads_per_token = reads;
    q.storage = r.storage;
    // A token's head reads are issued together, one per thread: their access times overlap up to the queue.
    const double par = static_cast<double>(std::max(1, std::min(r.threads, r.storage.queue)));
    const double head_serial = head_reads > 1 ? std::max(1.0, head_reads / par) : head_reads;
    q.io_seconds_per_token = r.storage.mb_per_s > 0 ? storage_seconds(r.storage, reads - head_reads + head_serial, s, 1) : 0.0;
    q.compute_seconds = r.compute_seconds;
    q.latency_target = r.latency_target;
    q.head_clusters_low = 0;
    q.predicted_loss = 0;
    if (q.head_streamed && !q.head_low_clusters.empty())
      for (size_t j = 0; j < q.head_low_clusters.size(); ++j)
        if (q.head_low_clusters[j]) {
          ++q.head_clusters_low;
          q.predicted_loss += loss_low[j];
        }
  }
  // Storage time saved per token per resident byte (the ranking of what stays resident). Unthrottled reads are
  // priced as a page-cache pread: about 2 us per call and 2 GB/s.
  StorageOptions device() const {
    if (r.storage.mb_per_s > 0) return r.storage;
    StorageOptions o;
    o.mb_per_s = 2000;
    o.latency_us = 2;
    return o;
  }
  double cluster_seconds_per_byte(const MemoryPlan& q, size_t j) const {
    const double b = static_cast<double>(std::max<uint64_t>(1, cluster_b(q, j)));
    return usage[j] * storage_seconds(device(), std::ceil(b / static_cast<double>(std::max<uint64_t>(1, head_buf))), b) / b;
  }
  // The neuron cache's last bytes: a neuron (read with probability active_frac) saves its share of a read, which
  // spans the gaps up to one access time.
  double ffn_seconds_per_byte() const {
    const double b = static_cast<double>(std::max<uint64_t>(1, neuron_bytes));
    const StorageOptions o = device();
    double reads = 0, bytes = 0;
    const double n = layer_neurons.empty() ? 1.0 : static_cast<double>(layer_neurons[0]);
    NeuronCache::expected_miss_reads(r.ffn_active_frac * n * 0.5, n, NeuronCache::gap_neurons_for(&o, neuron_bytes), neuron_bytes,
                                     &reads, &bytes);
    const double per_neuron = r.ffn_active_frac * n * 0.5 > 0 ? storage_seconds(o, reads, bytes) / (r.ffn_active_frac * n * 0.5) : 0.0;
    return r.ffn_active_frac * per_neuron / b;
  }
  uint64_t ffn_all() const {
    uint64_t s = 0;
    for (uint64_t b : ffn_bytes) s += b;
    return s;
  }
};

// Big parts and what is left: "small" = every tensor byte not in a streamable part (into p.small).
PlanSizes measure(const Model& m, const MemoryRequest& r, MemoryPlan& p) {
  const ModelConfig& c = m.config();
  PlanSizes z(r);
  z.L = c.n_layer;
  const int L = z.L;
  z.layer_bytes.assign(static_cast<size_t>(L), 0);
  z.ffn_bytes.assign(static_cast<size_t>(L), 0);
  uint64_t big = 0;
  z.layer_parts.assign(static_cast<size_t>(L), 0);
  for (int l = 0; l < L; ++l) {
    uint64_t raw = 0;
    for_each_stream_part(m.layer(l), [&](const kern::MatRef& ref) {
      raw += matrix_data_bytes(ref);
      ++z.layer_parts[static_cast<size_t>(l)];
    });
    z.layer_bytes[static_cast<size_t>(l)] = layer_stream_bytes(m, l);
    const SparseFfn& S = m.layer(l).sffn;
    if (S.present()) z.ffn_bytes[static_cast<size_t>(l)] = S.t.nbytes;
    big += raw + z.ffn_bytes[static_cast<size_t>(l)];
  }
  z.head_bytes = matrix_data_bytes(m.head().ref);
  z.emb_bytes = matrix_data_bytes(m.emb().ref);
  p.de_tables = deep_embed_table_bytes(m);
  z.de_slot = deep_embed_slot_bytes(m);
  z.de_layers = m.config().de_rank > 0 ? m.config().n_layer : 0;
  big += z.head_bytes + z.emb_bytes + p.de_tables;
  const ClusterHead& CH = m.cluster_head();
  if (CH.has_low()) big += matrix_data_bytes(CH.low);
  p.small = m.weight_bytes() > big ? m.weight_bytes() - big : 0;

  z.sparse = m.sparse_ffn();
  const size_t nb = z.sparse ? m.layer(0).sffn.neuron_bytes : 0;
  if (z.sparse) {
    std::vector<NeuronCache::Layer> layers;
    for (int l = 0; l < L; ++l) {
      NeuronCache::Layer nl;
      nl.n_neurons = m.layer(l).sffn.n;
      layers.push_back(nl);
    }
    z.ffn_min = NeuronCache::min_capacity_bytes(nb, layers);
  }
  const ClusterHead& H = m.cluster_head();
  const uint64_t head_row = static_cast<uint64_t>(kern::row_bytes(m.head().ref.dtype, c.n_embd));
  z.head_buf = std::min<uint64_t>(z.head_bytes, std::max<uint64_t>(256 * 1024, static_cast<uint64_t>(H.largest) * head_row) + 4 * 1024);
  z.emb_row = static_cast<uint64_t>(kern::row_bytes(m.emb().ref.dtype, c.n_embd));
  if (z.sparse) {
    z.neuron_bytes = nb;
    for (int l = 0; l < L; ++l) {
      z.n_neurons += static_cast<uint64_t>(m.layer(l).sffn.n);
      z.layer_neurons.push_back(static_cast<uint64_t>(m.layer(l).sffn.n));
    }
  }
  if (r.cluster_head && H.present()) {
    const size_t K = static_cast<size_t>(H.k);
    const bool known = r.cluster_usage.size() == K;
    const uint64_t scale = m.head().ref.dtype == DType::kI8 ? 4 : 0;
    for (size_t j = 0; j < K; ++j) {
      z.cluster_bytes.push_back(static_cast<uint64_t>(H.size(static_cast<int64_t>(j))) * (head_row + scale));
      z.usage.push_back(known ? std::clamp(r.cluster_usage[j], 0.0, 1.0) : r.head_rows_frac);
    }
    if (r.cluster_usage_next.size() == K && known)
      for (size_t j = 0; j < K; ++j) z.usage_next.push_back(std::clamp(r.cluster_usage_next[j], 0.0, std::min(z.usage[j], j + 1 < K ? z.usage[j + 1] : 0.0)));
    if (H.has_low()) {
      const uint64_t low_row = static_cast<uint64_t>(kern::row_bytes(DType::kQ4, c.n_embd));
      const bool profiled = r.cluster_loss_low.size() == K;
      for (size_t j = 0; j < K; ++j) {
        z.cluster_bytes_low.push_back(static_cast<uint64_t>(H.size(static_cast<int64_t>(j))) * low_row);
        // unprofiled: a cluster's loss counted as its usage (every use costs alike)
        z.loss_low.push_back(profiled ? r.cluster_loss_low[j] : z.usage[j]);
      }
    }
  }
  return z;
}

[[noreturn]] void fail_below_minimum(const MemoryRequest& r, const MemoryPlan& p, bool sparse) {
  RWKVL_FAIL(
      kInvalidArgument,
      "memory budget %s is below the minimum of %s for this model (%s already resident in the process, state "
      "and scratch %s, small tensors %s, embedding cache of %lld rows %s%s%s, one layer's preload buffer%s %s, head "
      "buffer %s%s%s, margin %s): give --mem-budget %llu or more",
      mib(r.budget).c_str(), mib(p.minimum).c_str(), mib(p.baseline + p.reserve).c_str(),
      mib(p.state + p.scratch).c_str(), mib(p.small).c_str(), static_cast<long long>(p.emb_rows),
      mib(p.emb_cache).c_str(), p.de_cache ? ", DeepEmbed cache " : "", p.de_cache ? mib(p.de_cache).c_str() : "",
      r.prefetch ? " x 2 (prefetch)" : "", mib(p.stream_buffer).c_str(), mib(p.head_buffer).c_str(),
      sparse ? ", FFN neuron cache " : "", sparse ? mib(p.ffn_cache).c_str() : "", mib(p.margin).c_str(),
      static_cast<unsigned long long>(p.minimum));
}

// Streamed head, cluster mode: makes clusters used at least min_usage resident, most used first, while they fit.
void add_clusters(const PlanSizes& z, const MemoryRequest& r, MemoryPlan& p, double min_seconds_per_byte) {
  if (!p.head_streamed || z.cluster_bytes.empty()) return;
  MemoryPlan q = p;
  if (q.head_resident_clusters.empty()) q.head_resident_clusters.assign(z.cluster_bytes.size(), 0);
  std::vector<int32_t> order(z.cluster_bytes.size());
  std::vector<double> value(order.size());
  for (size_t j = 0; j < order.size(); ++j) value[j] = z.cluster_seconds_per_byte(p, j);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return value[static_cast<size_t>(a)] > value[static_cast<size_t>(b)]; });
  for (int32_t j : order) {
    const size_t i = static_cast<size_t>(j);
    if (q.head_resident_clusters[i] || z.usage[i] <= 0 || value[i] < min_seconds_per_byte) continue;
    q.head_resident_clusters[i] = 1;
    z.total_of(q);
    if (q.total <= r.budget) p = q;
    else q.head_resident_clusters[i] = 0;
  }
  p.head_clusters_resident = 0;
  for (uint8_t b : p.head_resident_clusters) p.head_clusters_resident += b;
  if (p.head_clusters_resident == 0) p.head_resident_clusters.clear();
  z.total_of(p);
}

// From the minimum plan p, makes parts resident while the budget allows: greedy, most bytes used per token per
// resident byte first (layers, FFN bundles, head); spare room goes to the neuron cache of streamed FFN bundles.
// ffn_whole: the neuron-bundled FFN is made resident whole (if it fits) before any head cluster; else it stays
// streamed behind its neuron cache and the head clusters come first (make_resident tries both).
void make_resident_order(const PlanSizes& z, const MemoryRequest& r, MemoryPlan& p, bool ffn_whole) {
  MemoryPlan q = p;
  // Every layer at once first: the last streamed layer also frees the preload slots, which one layer at a time
  // never sees when a layer is about as big as the slots.
  q.layer_streamed.assign(static_cast<size_t>(z.L), false);
  z.total_of(q);
  if (q.total <= r.budget) p = q;
  else q = p;
  for (int l = 0; l < z.L; ++l) {
    q.layer_streamed[static_cast<size_t>(l)] = false;
    z.total_of(q);
    if (q.total <= r.budget) p = q;
    else q = p;
  }
  if (z.sparse && ffn_whole) {
    q.ffn_streamed = false;
    z.total_of(q);
    if (q.total <= r.budget) p = q;
    else q = p;
  }
  q.head_streamed = false;
  z.total_of(q);
  if (q.total <= r.budget) p = q;
  else q = p;
  // A head that does not fit whole: its most used clusters that save more storage time per resident byte than the
  // neuron cache of a streamed FFN would (one read per neuron: per byte, misses cost far more access time than a
  // cluster's one long read), then the neuron cache, then the other clusters while room is left.
  add_clusters(z, r, p, p.ffn_streamed ? z.ffn_seconds_per_byte() : 0.0);
  if (p.ffn_streamed && p.total < r.budget) {
    const uint64_t all = z.ffn_all();
    const uint64_t extra = std::min(r.budget - p.total, all > z.ffn_min ? all - z.ffn_min : 0);
    p.ffn_cache += extra;
    z.total_of(p);
    if (p.total > r.budget) {  // the margin grew with the cache: give that back
      p.ffn_cache -= std::min(p.ffn_cache - z.ffn_min, p.total - r.budget);
      z.total_of(p);
    }
  }
  add_clusters(z, r, p, 0.0);
}

// The better of the two orders (the one predicting less storage time per token; ties: the FFN whole). A bundled
// FFN reads ~40 % of its neurons per token while the hottest head clusters are read by ~90 % of tokens, so under a
// tight budget the clusters can be worth more per byte than the FFN made resident whole.
void make_resident(const PlanSizes& z, const MemoryRequest& r, MemoryPlan& p) {
  MemoryPlan a = p;
  make_resident_order(z, r, a, true);
  if (z.sparse && a.head_streamed && !z.cluster_bytes.empty()) {
    MemoryPlan b = p;
    make_resident_order(z, r, b, false);
    const double ta = storage_seconds(z.device(), a.reads_per_token, static_cast<double>(a.streamed_per_token));
    const double tb = storage_seconds(z.device(), b.reads_per_token, static_cast<double>(b.streamed_per_token));
    if (tb < ta) {
      p = std::move(b);
      return;
    }
  }
  p = std::move(a);
}

// The default embedding cache grown from its minimum with the room the weights left (up to 4,096 rows).
void grow_emb_cache(const PlanSizes& z, const MemoryRequest& r, MemoryPlan& p, uint64_t emb_row, int64_t n_vocab) {
  const uint64_t V = static_cast<uint64_t>(n_vocab);
  const int64_t most = std::min<int64_t>(4096, n_vocab);
  const uint64_t room = r.budget - p.total;
  const int64_t more = static_cast<int64_t>(static_cast<double>(room) * 0.98 / static_cast<double>(emb_row + 12));
  MemoryPlan q = p;
  q.emb_rows = std::min(most, p.emb_rows + std::max<int64_t>(0, more));
  for (; q.emb_rows > p.emb_rows; q.emb_rows -= std::max<int64_t>(1, (q.emb_rows - p.emb_rows) / 8)) {
    q.emb_cache = static_cast<uint64_t>(q.emb_rows) * (emb_row + 12) + V * 4;
    z.total_of(q);
    if (q.total <= r.budget) {
      p = q;
      break;
    }
  }
}

// v7a: the default DeepEmbed cache grown from its minimum with the room left (up to 1,024 tokens: each slot holds a
// token's row of every layer, so it saves L reads).
void grow_de_cache(const PlanSizes& z, const MemoryRequest& r, MemoryPlan& p, int64_t n_vocab) {
  const int64_t most = std::min<int64_t>(1024, n_vocab);
  const uint64_t room = r.budget - p.total;
  const int64_t more = static_cast<int64_t>(static_cast<double>(room) * 0.98 / static_cast<double>(z.de_slot + 13));
  MemoryPlan q = p;
  q.de_rows = std::min(most, p.de_rows + std::max<int64_t>(0, more));
  for (; q.de_rows > p.de_rows; q.de_rows -= std::max<int64_t>(1, (q.de_rows - p.de_rows) / 8)) {
    q.de_cache = DeepEmbedCache::bytes_for(q.de_rows, z.de_slot, n_vocab);
    z.total_of(q);
    if (q.total <= r.budget) {
      p = q;
      break;
    }
  }
}

}  // namespace

MemoryPlan plan_memory(const Model& m, const MemoryRequest& r) {
  const ModelConfig& c = m.config();
  const int L = c.n_layer;
  MemoryPlan p;
  p.budget = r.budget;
  p.baseline = r.baseline;
  p.reserve = r.reserve;
  p.prefetch = r.prefetch;
  p.scratch = session_scratch_bytes(m, r.chunk, r.head_compare);
  p.state = static_cast<uint64_t>(State::floats_for(c)) * 4;  // the caller's state (more states: its reserve)
  const uint64_t V = static_cast<uint64_t>(c.n_vocab);
  // The embedding cache: the caller's rows, or (default) 256 rows in the minimum plan, grown to 4,096 with the room
  // the weights leave (a row saves one small read now and then: worth less per byte than any weight part).
  const bool emb_auto = r.emb_rows < 0;
  p.emb_rows = emb_auto ? std::min<int64_t>(256, c.n_vocab) : std::min<int64_t>(r.emb_rows, c.n_vocab);
  if (p.emb_rows < 1) p.emb_rows = 1;
  const uint64_t emb_row = static_cast<uint64_t>(kern::row_bytes(m.emb().ref.dtype, c.n_embd));
  p.emb_cache = static_cast<uint64_t>(p.emb_rows) * (emb_row + 12) + V * 4;
  const PlanSizes z = measure(m, r, p);
  // v7a: the DeepEmbed tables stay in the file; the cache: the caller's slots, or (default) 64 grown to 1,024.
  const bool de_auto = r.de_rows < 0;
  if (z.de_slot) {
    p.de_rows = std::max<int64_t>(1, std::min<int64_t>(de_auto ? 64 : r.de_rows, c.n_vocab));
    p.de_cache = DeepEmbedCache::bytes_for(p.de_rows, z.de_slot, c.n_vocab);
  }
  const auto& f = m.file();
  const bool can_stream = f && f->on_disk();

  // Minimum: everything streamable streamed.
  p.layer_streamed.assign(static_cast<size_t>(L), true);
  p.head_streamed = true;
  p.ffn_streamed = z.sparse;
  z.total_of(p);
  p.minimum = p.total;
  if (r.budget < p.minimum) fail_below_minimum(r, p, z.sparse);
  p.head_clusters = static_cast<int64_t>(z.cluster_bytes.size());
  p.layer_bytes = z.layer_bytes;
  p.layer_ffn_bytes = z.ffn_bytes;
  const MemoryPlan minimum = p;
  // The plan for a choice of int4 clusters (empty = none): residency greedy, then the embedding cache.
  auto build = [&](const std::vector<uint8_t>& low) {
    MemoryPlan q = minimum;
    q.head_low_clusters = low;
    z.total_of(q);
    make_resident(z, r, q);
    if (!q.head_streamed) q.head_low_clusters.clear();
    if (emb_auto && q.total < r.budget) grow_emb_cache(z, r, q, emb_row, c.n_vocab);
    if (z.de_slot && de_auto && q.total < r.budget) grow_de_cache(z, r, q, c.n_vocab);
    return q;
  };
  const bool low_ok = !z.cluster_bytes_low.empty();
  const size_t K = z.cluster_bytes.size();
  if (r.fidelity == MemoryRequest::Fidelity::kLow && !low_ok)
    RWKVL_FAIL(kInvalidArgument, "fidelity int4 needs a file with an int4 version of its head clusters (compress --fidelities HIGH,int4) run in cluster mode");
  p = build(r.fidelity == MemoryRequest::Fidelity::kLow ? std::vector<uint8_t>(K, 1) : std::vector<uint8_t>{});
  if (r.latency_target > 0 && p.seconds_per_token() > r.latency_target) {
    MemoryPlan fastest = p;
    if (low_ok && r.fidelity == MemoryRequest::Fidelity::kAuto && p.head_streamed) {
      // Elastic: clusters move to int4 in order of loss per byte of a token's reads saved (least first); the
      // fewest moves whose plan meets the target (bisection: more int4 clusters never predict more time).
      std::vector<int32_t> order(K);
      std::iota(order.begin(), order.end(), 0);
      auto key = [&](size_t j) {
        const double saved = z.usage[j] * static_cast<double>(z.cluster_bytes[j] - std::min(z.cluster_bytes[j], z.cluster_bytes_low[j]));
        return saved > 0 ? std::max(0.0, z.loss_low[j]) / saved : std::numeric_limits<double>::infinity();
      };
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return key(static_cast<size_t>(a)) < key(static_cast<size_t>(b)); });
      auto first = [&](size_t n) {
        std::vector<uint8_t> low(K, 0);
        for (size_t i = 0; i < n; ++i) low[static_cast<size_t>(order[i])] = 1;
        return low;
      };
      fastest = build(first(K));
      if (fastest.seconds_per_token() <= r.latency_target) {
        size_t lo = 0, hi = K;  // plan(lo) misses the target, plan(hi) meets it
        MemoryPlan best = fastest;
        while (hi - lo > 1) {
          const size_t mid = (lo + hi) / 2;
          MemoryPlan q = build(first(mid));
          if (q.seconds_per_token() <= r.latency_target) {
            hi = mid;
            best = std::move(q);
          } else {
            lo = mid;
          }
        }
        p = std::move(best);
      }
    }
    if (p.seconds_per_token() > r.latency_target)
      RWKVL_FAIL(kInvalidArgument,
                 "latency target %.3f ms per token cannot be met under the memory budget %s on this storage: the fastest "
                 "plan predicts %.3f ms (storage %.3f + compute %.3f%s); give a larger target, a larger --mem-budget or "
                 "faster storage",
                 1e3 * r.latency_target, mib(r.budget).c_str(), 1e3 * fastest.seconds_per_token(), 1e3 * fastest.io_seconds_per_token,
                 1e3 * fastest.compute_seconds,
                 low_ok && fastest.head_clusters_low ? ", every head cluster at int4" : "");
  }
  const bool streams = p.head_streamed || p.ffn_streamed || z.de_slot ||
                       std::find(p.layer_streamed.begin(), p.layer_streamed.end(), true) != p.layer_streamed.end();
  if (streams && !can_stream) {
    MemoryPlan all = p;
    all.layer_streamed.assign(static_cast<size_t>(L), false);
    all.head_streamed = false;
    all.ffn_streamed = false;
    z.total_of(all);
    RWKVL_FAIL(kInvalidArgument,
               "memory budget %s needs weights streamed from the file (everything resident needs %s), which works for "
               "native rwkv-lite files only: convert the model first (rwkv-lite convert -m IN -o OUT.rwkvl)",
               mib(r.budget).c_str(), mib(all.total).c_str());
  }
  return p;
}

std::string MemoryPlan::describe() const {
  std::string s;
  char line[256];
  auto row = [&](const char* what, uint64_t b, const std::string& note) {
    std::snprintf(line, sizeof line, "  %-26s %12s  %s\n", what, mib(b).c_str(), note.c_str());
    s += line;
  };
  std::snprintf(line, sizeof line, "memory plan: budget %s, planned peak %s, minimum %s\n", mib(budget).c_str(),
                mib(total).c_str(), mib(minimum).c_str());
  s += line;
  row("process (at planning)", baseline, "binary, libraries, tokenizer, model metadata");
  row("caller buffers", reserve, "logits and token lists of the command");
  row("state + scratch", state + scratch, "recurrent state, per-chunk activations, head/FFN scratch");
  row("small tensors", small, "norms, mixes, LoRAs, scales, cluster head and table");
  std::string note = std::to_string(emb_rows);
  note += " rows, LRU, read on demand (table never resident)";
  row("embedding cache", emb_cache, note);
  if (de_rows) {
    char n[160];
    std::snprintf(n, sizeof n,
                  "%lld tokens' rows of every layer, LRU + pinned (tables: %s in the file, never resident)",
                  static_cast<long long>(de_rows), mib(de_tables).c_str());
    row("DeepEmbed cache", de_cache, n);
  }
  int streamed = 0;
  std::string which;
  for (size_t l = 0; l < layer_streamed.size(); ++l)
    if (layer_streamed[l]) {
      ++streamed;
      if (!which.empty()) which += ',';
      which += std::to_string(l);
    }
  note = std::to_string(layer_streamed.size() - static_cast<size_t>(streamed));
  note += " of ";
  note += std::to_string(layer_streamed.size());
  note += " layers' projections mapped in place";
  row("resident layers", resident_layers, note);
  if (streamed) {
    note = std::to_string(streamed);
    note += " layers streamed (";
    note += which;
    note += prefetch ? "), 2 slots, reader one layer ahead" : "), 1 slot, read on demand";
  } else {
    note = "no layer streamed";
  }
  row("layer preload buffer", stream_buffer, note);
  if (resident_ffn || ffn_cache)
    row(ffn_streamed ? "FFN neuron cache" : "resident FFN bundles", ffn_streamed ? ffn_cache : resident_ffn,
        ffn_streamed ? "bundled neurons read on demand, hottest pinned" : "neuron-bundled FFN mapped in place");
  if (head_streamed && head_clusters_resident) {
    char n[160];
    std::snprintf(n, sizeof n, "%lld of %lld clusters, the most used: %.0f %% of the head rows read per token",
                  static_cast<long long>(head_clusters_resident), static_cast<long long>(head_clusters), 100.0 * head_resident_usage);
    row("resident head clusters", resident_head, n);
  }
  // Per layer and per head fidelity: where each part lives.
  for (size_t l = 0; l < layer_streamed.size() && l < layer_bytes.size(); ++l) {
    std::snprintf(line, sizeof line, "    layer %-3zu projections %9s %-9s", l, mib(layer_bytes[l]).c_str(),
                  layer_streamed[l] ? "streamed" : "resident");
    s += line;
    if (l < layer_ffn_bytes.size() && layer_ffn_bytes[l]) {
      std::snprintf(line, sizeof line, "  bundled FFN %9s %s", mib(layer_ffn_bytes[l]).c_str(),
                    ffn_streamed ? "streamed (neuron cache)" : "resident");
      s += line;
    }
    s += "\n";
  }
  if (head_streamed && head_clusters > 0) {
    int64_t n[2][2] = {{0, 0}, {0, 0}};  // [int4][resident]
    for (int64_t j = 0; j < head_clusters; ++j) {
      const bool lo = !head_low_clusters.empty() && head_low_clusters[static_cast<size_t>(j)];
      const bool res = !head_resident_clusters.empty() && head_resident_clusters[static_cast<size_t>(j)];
      ++n[lo][res];
    }
    std::snprintf(line, sizeof line,
                  "    head clusters: %lld high fidelity resident, %lld high streamed, %lld int4 resident, %lld int4 streamed\n",
                  static_cast<long long>(n[0][1]), static_cast<long long>(n[0][0]), static_cast<long long>(n[1][1]),
                  static_cast<long long>(n[1][0]));
    s += line;
  }
  if (head_streamed && head_clusters_low) {
    char n[200];
    std::snprintf(n, sizeof n, "%lld of %lld clusters read at int4 (profiled loss +%.4f nats/token, perplexity x%.3f)",
                  static_cast<long long>(head_clusters_low), static_cast<long long>(head_clusters), predicted_loss, std::exp(predicted_loss));
    s += "  ";
    s += n;
    s += "\n";
  }
  row(head_streamed ? "head stream buffer" : "resident head", head_streamed ? head_buffer : resident_head,
      head_streamed ? "head rows read per token from the file" : "head mapped in place");
  row("margin", margin, "allocator slack, thread stacks");
  std::snprintf(line, sizeof line, "  read from the file per token: ~%s in ~%.0f reads", mib(streamed_per_token).c_str(), reads_per_token);
  s += line;
  if (storage.mb_per_s > 0) {
    std::snprintf(line, sizeof line, ", predicted %.2f ms of storage time (%.0f MB/s, %.0f us per read)", 1e3 * io_seconds_per_token,
                  storage.mb_per_s, storage.latency_us);
    s += line;
  }
  s += "\n";
  if (latency_target > 0 || compute_seconds > 0) {
    std::snprintf(line, sizeof line, "  predicted time per token: %.2f ms (storage %.2f + compute %.2f)", 1e3 * seconds_per_token(),
                  1e3 * io_seconds_per_token, 1e3 * compute_seconds);
    s += line;
    if (latency_target > 0) {
      std::snprintf(line, sizeof line, ", target %.2f ms", 1e3 * latency_target);
      s += line;
    }
    s += "\n";
  }
  return s;
}

nlohmann::json MemoryPlan::to_json() const {
  nlohmann::json streamed = nlohmann::json::array();
  for (size_t l = 0; l < layer_streamed.size(); ++l)
    if (layer_streamed[l]) streamed.push_back(l);
  return {{"budget", budget},
          {"planned_peak", total},
          {"minimum", minimum},
          {"baseline", baseline},
          {"reserve", reserve},
          {"margin", margin},
          {"scratch", scratch},
          {"state", state},
          {"small", small},
          {"emb_cache", emb_cache},
          {"emb_rows", emb_rows},
          {"stream_buffer", stream_buffer},
          {"de_cache", de_cache},
          {"de_rows", de_rows},
          {"de_tables", de_tables},
          {"head_buffer", head_buffer},
          {"ffn_cache", ffn_cache},
          {"resident_layers", resident_layers},
          {"resident_head", resident_head},
          {"resident_ffn", resident_ffn},
          {"streamed_layers", streamed},
          {"head_streamed", head_streamed},
          {"ffn_streamed", ffn_streamed},
          {"prefetch", prefetch},
          {"streamed_bytes_per_token", streamed_per_token},
          {"reads_per_token", reads_per_token},
          {"io_ms_per_token", 1e3 * io_seconds_per_token},
          {"head_clusters_resident", head_clusters_resident},
          {"head_resident_usage", head_resident_usage},
          {"head_clusters_low", head_clusters_low},
          {"head_cluster_int4", head_low_clusters},
          {"head_cluster_resident", head_resident_clusters},
          {"predicted_loss_nats", predicted_loss},
          {"compute_ms_per_token", 1e3 * compute_seconds},
          {"latency_target_ms", 1e3 * latency_target},
          {"predicted_ms_per_token", 1e3 * seconds_per_token()}};
}

}  // namespace rwkvl
