// Totals of the run-time statistics over several sessions (rwkvl_*_stats_add), and the bytes a token touched
// (rwkvl_touched_per_token).
#include <algorithm>

#include "api/api_internal.h"

namespace {

void add_ffn(rwkvl_ffn_stats* a, const rwkvl_ffn_stats& s) {
  a->evals += s.evals;
  a->neurons += s.neurons;
  a->computed += s.computed;
  a->value_rows += s.value_rows;
  a->weight_bytes += s.weight_bytes;
  a->predictor_bytes += s.predictor_bytes;
  a->verify_active += s.verify_active;
  a->verify_hit += s.verify_hit;
  a->verified = a->verified || s.verified;
  a->seconds += s.seconds;
  a->seconds_predictor += s.seconds_predictor;
  a->cache_requests += s.cache_requests;
  a->cache_hits += s.cache_hits;
  a->cache_misses += s.cache_misses;
  a->cache_bytes_read += s.cache_bytes_read;
  a->cache_capacity += s.cache_capacity;
  a->cache_pinned_bytes += s.cache_pinned_bytes;
  a->cache_wait_seconds += s.cache_wait_seconds;
  a->mode = s.mode;
}

void add_head(rwkvl_head_stats* a, const rwkvl_head_stats& s) {
  a->tokens += s.tokens;
  a->rows += s.rows;
  a->rows_read += s.rows_read;
  a->clusters += s.clusters;
  a->compared += s.compared;
  a->top1_agree += s.top1_agree;
  a->kl_sum += s.kl_sum;
  a->seconds += s.seconds;
  a->mode = s.mode;
}

void add_memory(rwkvl_memory_stats* a, const rwkvl_memory_stats& s) {
  a->emb_lookups += s.emb_lookups;
  a->emb_hits += s.emb_hits;
  a->emb_bytes_read += s.emb_bytes_read;
  a->emb_cache_rows = std::max(a->emb_cache_rows, s.emb_cache_rows);
  a->emb_cache_bytes += s.emb_cache_bytes;
  a->io_reads += s.io_reads;
  a->io_bytes += s.io_bytes;
  a->io_seconds += s.io_seconds;
  a->planned_bytes = std::max(a->planned_bytes, s.planned_bytes);
  a->minimum_bytes = std::max(a->minimum_bytes, s.minimum_bytes);
  a->resident_weight_bytes = std::max(a->resident_weight_bytes, s.resident_weight_bytes);
  a->planned_stream_bytes_per_token = std::max(a->planned_stream_bytes_per_token, s.planned_stream_bytes_per_token);
  a->layer_loads += s.layer_loads;
  a->layer_bytes += s.layer_bytes;
  a->layer_prefetch_hits += s.layer_prefetch_hits;
  a->layer_wait_seconds += s.layer_wait_seconds;
  a->head_stream_bytes += s.head_stream_bytes;
}

}  // namespace

extern "C" {

rwkvl_status rwkvl_ffn_stats_add(rwkvl_ffn_stats* a, const rwkvl_ffn_stats* b) {
  return rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(a && b, "rwkvl_ffn_stats_add: NULL argument");
    add_ffn(a, *b);
  });
}

rwkvl_status rwkvl_head_stats_add(rwkvl_head_stats* a, const rwkvl_head_stats* b) {
  return rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(a && b, "rwkvl_head_stats_add: NULL argument");
    add_head(a, *b);
  });
}

rwkvl_status rwkvl_memory_stats_add(rwkvl_memory_stats* a, const rwkvl_memory_stats* b) {
  return rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(a && b, "rwkvl_memory_stats_add: NULL argument");
    add_memory(a, *b);
  });
}

rwkvl_status rwkvl_touched_per_token(const rwkvl_model* model, const rwkvl_ffn_stats* ffn, const rwkvl_head_stats* head,
                                     rwkvl_touched* out) {
  return rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(model && out, "rwkvl_touched_per_token: NULL argument");
    rwkvl_model_info info{};
    if (rwkvl_model_get_info(model, &info) != RWKVL_OK) RWKVL_FAIL(kInternal, "rwkvl_touched_per_token: no model info");
    const bool cluster = head && head->tokens > 0 && head->mode == RWKVL_HEAD_CLUSTER;
    RWKVL_API_REQUIRE(!cluster || info.cluster_head > 0,
                      "rwkvl_touched_per_token: cluster-mode head statistics for a model without a cluster head");
    const double vocab = static_cast<double>(std::max(1, info.n_vocab));
    rwkvl_touched t{};
    t.emb = static_cast<double>(info.emb_bytes) / vocab;
    // bytes_per_token holds one embedding row and every other tensor whole; the rest is what no statistic corrects
    t.other = static_cast<double>(info.bytes_per_token) - t.emb - static_cast<double>(info.ffn_weight_bytes) -
              static_cast<double>(info.ffn_predictor_bytes) - static_cast<double>(info.head_bytes) -
              static_cast<double>(info.cluster_head_bytes);
    t.other = std::max(0.0, t.other);
    t.ffn = static_cast<double>(info.ffn_weight_bytes);
    t.ffn_predictor = static_cast<double>(info.ffn_predictor_bytes);
    if (ffn && ffn->evals > 0 && info.n_layer > 0) {
      const double tokens = static_cast<double>(ffn->evals) / info.n_layer;
      t.ffn = static_cast<double>(ffn->weight_bytes) / tokens;
      t.ffn_predictor = static_cast<double>(ffn->predictor_bytes) / tokens;
    }
    t.head = static_cast<double>(info.head_bytes);
    t.head_rows = vocab;
    if (cluster) {
      const double tokens = static_cast<double>(head->tokens);
      t.head_rows = static_cast<double>(head->rows_read) / tokens;
      t.head = t.head_rows * static_cast<double>(info.head_bytes) / vocab;
      t.cluster_head = static_cast<double>(info.cluster_head_bytes);
      t.head_clusters = static_cast<double>(head->clusters) / tokens;
    }
    t.total = t.other + t.ffn + t.ffn_predictor + t.head + t.cluster_head + t.emb;
    *out = t;
  });
}

}  // extern "C"
