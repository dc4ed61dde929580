// Totals of the run-time statistics over several sessions (rwkvl_*_stats_add).
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

}  // extern "C"
