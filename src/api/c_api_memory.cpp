// C API: the output head (full / cluster) and memory settings (embedding cache, simulated storage).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>

#include "api/api_internal.h"
#include "core/threadpool.h"
#include "model/model.h"
#include "runtime/deep_embed_cache.h"
#include "runtime/emb_cache.h"
#include "runtime/head_runtime.h"
#include "runtime/layer_stream.h"
#include "runtime/planner.h"
#include "runtime/storage.h"
#include "rwkv_lite.h"

using rwkvl::api::guarded;

rwkvl_head_params rwkvl_head_default_params(void) {
  rwkvl_head_params p{};
  const rwkvl::HeadOptions d;
  p.mode = RWKVL_HEAD_AUTO;
  p.p = d.p;
  p.min_clusters = d.min_clusters;
  p.max_clusters = d.max_clusters;
  p.compare = 0;
  return p;
}

namespace rwkvl::api {

HeadOptions head_options(const rwkvl_head_params& params, const char* fn) {
  HeadOptions o;
  switch (enum_value(params.mode)) {
    case RWKVL_HEAD_AUTO: o.mode = HeadMode::kAuto; break;
    case RWKVL_HEAD_FULL: o.mode = HeadMode::kFull; break;
    case RWKVL_HEAD_CLUSTER: o.mode = HeadMode::kCluster; break;
    default: RWKVL_FAIL(kInvalidArgument, "%s: unknown mode %lld", fn, enum_value(params.mode));
  }
  o.p = params.p;
  o.min_clusters = params.min_clusters;
  o.max_clusters = params.max_clusters;
  o.compare = params.compare != 0;
  return o;
}

void memory_options(const rwkvl_memory_params& params, const char* fn, StorageOptions& so, MemoryOptions& mo) {
  (void)fn;
  RWKVL_API_REQUIRE(params.emb_cache_rows >= 0, "embedding cache of %lld rows: the size must be >= 0",
                    static_cast<long long>(params.emb_cache_rows));
  RWKVL_API_REQUIRE(std::isfinite(params.io_mb_per_s) && params.io_mb_per_s >= 0,
                    "storage throttle of %g MB/s: it must be >= 0 (0 = none)", params.io_mb_per_s);
  RWKVL_API_REQUIRE(std::isfinite(params.io_latency_us) && params.io_latency_us >= 0,
                    "storage latency of %g us: it must be >= 0", params.io_latency_us);
  so = StorageOptions{};
  so.mb_per_s = params.io_mb_per_s;
  so.latency_us = params.io_latency_us;
  RWKVL_API_REQUIRE(params.max_chunk >= 0, "max_chunk must be >= 0");
  mo = MemoryOptions{};
  mo.budget = params.budget_bytes;
  RWKVL_API_REQUIRE(params.prefetch >= 0 && params.prefetch <= 2, "prefetch must be 0, 1 or 2");
  mo.prefetch = params.prefetch != 0;
  mo.reader = params.prefetch == 1;
  mo.emb_rows = params.emb_cache_rows > 0 ? params.emb_cache_rows : (params.budget_bytes ? -1 : 0);
  mo.reserve = params.reserve_bytes;
  mo.chunk = params.max_chunk > 0 ? static_cast<size_t>(params.max_chunk) : 32;
}

}  // namespace rwkvl::api

rwkvl_status rwkvl_context_set_head(rwkvl_context* ctx, const rwkvl_head_params* params) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && params, "rwkvl_context_set_head: NULL argument");
    rwkvl::SessionParams p = ctx->s->params(), fallback = ctx->s->params();
    p.head = rwkvl::api::head_options(*params, "rwkvl_context_set_head");
    fallback.head = rwkvl::HeadOptions{};
    rwkvl::api::rebuild(ctx, p, fallback);
  });
}

rwkvl_status rwkvl_context_parallel_regions(rwkvl_context* ctx, uint64_t* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_parallel_regions: NULL argument");
    rwkvl::ThreadPool* pool = ctx->s->pool();
    *out = pool ? pool->regions() : 0;
  });
}

rwkvl_status rwkvl_context_head_stats(rwkvl_context* ctx, rwkvl_head_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_head_stats: NULL argument");
    const rwkvl::HeadRuntime& h = ctx->s->head();
    const rwkvl::HeadStats& s = h.stats();
    *out = rwkvl_head_stats{};
    out->tokens = s.tokens;
    out->rows = s.rows;
    out->rows_read = s.rows_read;
    out->clusters = s.clusters;
    out->compared = s.compared;
    out->top1_agree = s.top1_agree;
    out->kl_sum = s.kl_sum;
    out->seconds = s.seconds;
    out->mode = h.mode() == rwkvl::HeadMode::kCluster ? RWKVL_HEAD_CLUSTER : RWKVL_HEAD_FULL;
  });
}

rwkvl_status rwkvl_context_reset_head_stats(rwkvl_context* ctx) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx, "rwkvl_context_reset_head_stats: NULL argument");
    ctx->s->head().reset_stats();
  });
}

rwkvl_memory_params rwkvl_memory_default_params(void) {
  rwkvl_memory_params p{};
  p.prefetch = 1;
  return p;
}

rwkvl_status rwkvl_context_set_memory(rwkvl_context* ctx, const rwkvl_memory_params* params) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && params, "rwkvl_context_set_memory: NULL argument");
    rwkvl::SessionParams p = ctx->s->params(), fallback = ctx->s->params();
    rwkvl::api::memory_options(*params, "rwkvl_context_set_memory", p.storage, p.memory);
    fallback.storage = p.storage;
    fallback.memory = rwkvl::MemoryOptions{};
    rwkvl::api::rebuild(ctx, p, fallback);
  });
}

rwkvl_status rwkvl_storage_preset(const char* name, rwkvl_storage_params* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(name && out, "rwkvl_storage_preset: NULL argument");
    const rwkvl::StoragePreset* p = rwkvl::storage_preset(name);
    RWKVL_API_REQUIRE(p, "unknown storage '%s' (use %s)", name, rwkvl::storage_preset_names().c_str());
    *out = rwkvl_storage_params{p->options.mb_per_s, p->options.latency_us, p->options.queue};
  });
}

rwkvl_status rwkvl_context_configure_storage(rwkvl_context* ctx, const rwkvl_session_params* params,
                                             const rwkvl_storage_params* storage) {
  rwkvl_session_extras x = rwkvl_session_default_extras();
  x.storage = storage;
  return rwkvl_context_configure_with(ctx, params, &x);
}

rwkvl_session_extras rwkvl_session_default_extras(void) {
  rwkvl_session_extras x{};
  x.struct_size = sizeof(rwkvl_session_extras);
  x.de_cache_rows = -1;
  return x;
}

rwkvl_status rwkvl_context_configure_with(rwkvl_context* ctx, const rwkvl_session_params* params,
                                          const rwkvl_session_extras* extras) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && params, "rwkvl_context_configure: NULL argument");
    rwkvl_session_extras x = rwkvl_session_default_extras();
    rwkvl::api::read_extras(extras, x, "rwkvl_context_configure_with", "rwkvl_session_default_extras");
    rwkvl::SessionParams sp = rwkvl::api::session_params(*params, "rwkvl_context_configure");
    if (const rwkvl_storage_params* storage = x.storage) {
      RWKVL_API_REQUIRE(std::isfinite(storage->mb_per_s) && storage->mb_per_s >= 0 && std::isfinite(storage->latency_us) &&
                            storage->latency_us >= 0,
                        "storage of %g MB/s and %g us per read: both must be finite and >= 0", storage->mb_per_s,
                        storage->latency_us);
      RWKVL_API_REQUIRE(storage->queue_depth >= 1 && storage->queue_depth <= 4096,
                        "storage queue depth %d: it must be 1..4096", storage->queue_depth);
      sp.storage.mb_per_s = storage->mb_per_s;
      sp.storage.latency_us = storage->latency_us;
      sp.storage.queue = storage->queue_depth;
    }
    RWKVL_API_REQUIRE(std::isfinite(x.latency_target_ms) && x.latency_target_ms >= 0 && x.latency_target_ms < 1e9,
                      "latency target %g ms: it must be a finite number >= 0", x.latency_target_ms);
    RWKVL_API_REQUIRE(std::isfinite(x.compute_ms) && x.compute_ms >= 0 && x.compute_ms < 1e9,
                      "compute time %g ms per token: it must be a finite number >= 0", x.compute_ms);
    using F = rwkvl::MemoryRequest::Fidelity;
    const std::string fid = x.head_fidelity ? x.head_fidelity : "";
    RWKVL_API_REQUIRE(fid.empty() || fid == "auto" || fid == "high" || fid == "int4",
                      "unknown head fidelity '%s' (use auto, high or int4)", fid.c_str());
    sp.memory.fidelity = fid == "high" ? F::kHigh : fid == "int4" ? F::kLow : F::kAuto;
    sp.memory.latency_target = x.latency_target_ms * 1e-3;
    sp.memory.compute_seconds = x.compute_ms * 1e-3;
    RWKVL_API_REQUIRE(sp.memory.budget > 0 || (sp.memory.latency_target == 0 && sp.memory.fidelity == F::kAuto),
                      "a latency target and a head fidelity are plans under a memory budget: give a budget (--mem-budget) too");
    RWKVL_API_REQUIRE(x.baseline_bytes == 0 || sp.memory.budget > 0,
                      "a baseline is the start of a plan under a memory budget: give a budget (--mem-budget) too");
    RWKVL_API_REQUIRE(x.baseline_bytes < sp.memory.budget || x.baseline_bytes == 0,
                      "baseline of %llu bytes: it must be below the memory budget of %llu bytes",
                      static_cast<unsigned long long>(x.baseline_bytes), static_cast<unsigned long long>(sp.memory.budget));
    if (x.baseline_bytes) sp.memory.baseline = x.baseline_bytes;
    RWKVL_API_REQUIRE(x.de_cache_rows >= -1, "DeepEmbed cache of %lld tokens: give -1 (default), 0 or a count",
                      static_cast<long long>(x.de_cache_rows));
    RWKVL_API_REQUIRE(
        x.de_cache_rows != 0 || sp.memory.budget == 0,
        "a DeepEmbed cache of 0 reads the tables in place, which a memory budget does not allow: give a count "
        "or -1 (the plan's)");
    sp.memory.de_rows = x.de_cache_rows;
    rwkvl::SessionParams fallback;
    fallback.threads = sp.threads;
    rwkvl::api::rebuild(ctx, sp, fallback);
  });
}

rwkvl_status rwkvl_context_io_stats(rwkvl_context* ctx, rwkvl_io_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_io_stats: NULL argument");
    *out = rwkvl_io_stats{};
    const rwkvl::StorageOptions& o = ctx->s->params().storage;
    out->storage = rwkvl_storage_params{o.mb_per_s, o.latency_us, o.queue};
    if (const auto& st = ctx->s->storage()) {
      const rwkvl::StorageStats s = st->stats();
      out->reads = s.reads;
      out->bytes = s.bytes;
      out->stall_seconds = s.seconds;
      out->device_busy_seconds = s.busy_seconds;
    }
  });
}

rwkvl_status rwkvl_context_memory_stats(rwkvl_context* ctx, rwkvl_memory_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_memory_stats: NULL argument");
    *out = rwkvl_memory_stats{};
    if (const rwkvl::EmbCache* e = ctx->s->emb_cache()) {
      out->emb_lookups = e->stats().lookups;
      out->emb_hits = e->stats().hits;
      out->emb_bytes_read = e->stats().bytes_read;
      out->emb_cache_rows = e->capacity();
      out->emb_cache_bytes = e->bytes();
    }
    if (const auto& st = ctx->s->storage()) {
      const rwkvl::StorageStats s = st->stats();
      out->io_reads = s.reads;
      out->io_bytes = s.bytes;
      out->io_seconds = s.seconds;
    }
    if (const rwkvl::MemoryPlan* p = ctx->s->plan()) {
      out->planned_bytes = p->total;
      out->minimum_bytes = p->minimum;
      out->resident_weight_bytes = p->small + p->resident_layers + p->resident_head + p->resident_ffn;
      out->planned_stream_bytes_per_token = p->streamed_per_token;
    }
    if (const rwkvl::LayerStream* ls = ctx->s->layer_stream()) {
      const rwkvl::LayerStreamStats s = ls->stats();
      out->layer_loads = s.loads;
      out->layer_bytes = s.bytes;
      out->layer_prefetch_hits = s.prefetch_hits;
      out->layer_wait_seconds = s.wait_seconds;
    }
    out->head_stream_bytes = ctx->s->head().stream_bytes_read();
  });
}

rwkvl_status rwkvl_context_deep_embed_stats(rwkvl_context* ctx, rwkvl_deep_embed_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_deep_embed_stats: NULL argument");
    *out = rwkvl_deep_embed_stats{};
    const rwkvl::DeepEmbedCache* c = ctx->s->deep_embed_cache();
    if (!c) return;
    out->slots = c->capacity();
    out->pinned = c->pinned();
    out->cache_bytes = c->bytes();
    out->table_bytes = rwkvl::deep_embed_table_bytes(ctx->s->model());
    out->row_bytes = c->slot_bytes();
    const rwkvl::DeepEmbedCacheStats& s = c->stats();
    out->lookups = s.lookups;
    out->hits = s.hits;
    out->rows_read = s.rows_read;
    out->bytes_read = s.bytes_read;
    out->rereads = s.rereads;
  });
}

rwkvl_status rwkvl_context_memory_plan(rwkvl_context* ctx, int json, char* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && n_out && (out || cap == 0), "rwkvl_context_memory_plan: NULL argument");
    const rwkvl::MemoryPlan* p = ctx->s->plan();
    RWKVL_API_REQUIRE(p, "rwkvl_context_memory_plan: the context has no memory budget");
    const std::string text = json ? p->to_json().dump() : p->describe();
    *n_out = text.size();
    RWKVL_API_REQUIRE(text.size() < cap, "rwkvl_context_memory_plan: %zu bytes needed, buffer has %zu", text.size() + 1, cap);
    std::memcpy(out, text.c_str(), text.size() + 1);
  });
}

rwkvl_status rwkvl_context_reset_memory_stats(rwkvl_context* ctx) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx, "rwkvl_context_reset_memory_stats: NULL argument");
    ctx->s->reset_memory_stats();
  });
}
