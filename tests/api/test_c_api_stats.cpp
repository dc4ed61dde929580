// rwkvl_{ffn,head,memory}_stats_add: totals over sessions, checked field by field on hand-made structs.
#include <gtest/gtest.h>

#include <string>

#include "rwkv_lite.h"

namespace {

TEST(CApiStats, FfnCountersAddAndModeComesFromTheSecond) {
  rwkvl_ffn_stats a{}, b{};
  a.evals = 3, a.neurons = 30, a.computed = 10, a.value_rows = 9, a.weight_bytes = 100, a.predictor_bytes = 7;
  a.verify_active = 5, a.verify_hit = 4, a.verified = 0, a.seconds = 0.5, a.seconds_predictor = 0.25;
  a.cache_requests = 2, a.cache_hits = 1, a.cache_misses = 1, a.cache_bytes_read = 64, a.cache_capacity = 1000;
  a.cache_pinned_bytes = 10, a.cache_wait_seconds = 0.125, a.mode = RWKVL_FFN_DENSE;
  b = a;
  b.evals = 1, b.verified = 1, b.cache_capacity = 24, b.mode = RWKVL_FFN_PREDICT;
  ASSERT_EQ(rwkvl_ffn_stats_add(&a, &b), RWKVL_OK);
  EXPECT_EQ(a.evals, 4u);
  EXPECT_EQ(a.neurons, 60u);
  EXPECT_EQ(a.computed, 20u);
  EXPECT_EQ(a.value_rows, 18u);
  EXPECT_EQ(a.weight_bytes, 200u);
  EXPECT_EQ(a.predictor_bytes, 14u);
  EXPECT_EQ(a.verify_active, 10u);
  EXPECT_EQ(a.verify_hit, 8u);
  EXPECT_EQ(a.verified, 1);
  EXPECT_DOUBLE_EQ(a.seconds, 1.0);
  EXPECT_DOUBLE_EQ(a.seconds_predictor, 0.5);
  EXPECT_EQ(a.cache_requests, 4u);
  EXPECT_EQ(a.cache_hits, 2u);
  EXPECT_EQ(a.cache_misses, 2u);
  EXPECT_EQ(a.cache_bytes_read, 128u);
  EXPECT_EQ(a.cache_capacity, 1024u);
  EXPECT_EQ(a.cache_pinned_bytes, 20u);
  EXPECT_DOUBLE_EQ(a.cache_wait_seconds, 0.25);
  EXPECT_EQ(a.mode, RWKVL_FFN_PREDICT);
}

TEST(CApiStats, HeadCountersAdd) {
  rwkvl_head_stats a{}, b{};
  a.tokens = 2, a.rows = 200, a.rows_read = 30, a.clusters = 5, a.compared = 2, a.top1_agree = 1, a.kl_sum = 0.5;
  a.seconds = 1.5, a.mode = RWKVL_HEAD_FULL;
  b.tokens = 1, b.rows = 100, b.rows_read = 100, b.clusters = 0, b.compared = 1, b.top1_agree = 1, b.kl_sum = 0.25;
  b.seconds = 0.5, b.mode = RWKVL_HEAD_CLUSTER;
  ASSERT_EQ(rwkvl_head_stats_add(&a, &b), RWKVL_OK);
  EXPECT_EQ(a.tokens, 3u);
  EXPECT_EQ(a.rows, 300u);
  EXPECT_EQ(a.rows_read, 130u);
  EXPECT_EQ(a.clusters, 5u);
  EXPECT_EQ(a.compared, 3u);
  EXPECT_EQ(a.top1_agree, 2u);
  EXPECT_DOUBLE_EQ(a.kl_sum, 0.75);
  EXPECT_DOUBLE_EQ(a.seconds, 2.0);
  EXPECT_EQ(a.mode, RWKVL_HEAD_CLUSTER);
}

TEST(CApiStats, MemorySumsCountsAndKeepsTheLargerPlan) {
  rwkvl_memory_stats a{}, b{};
  a.emb_lookups = 10, a.emb_hits = 8, a.emb_bytes_read = 512, a.emb_cache_rows = 64, a.emb_cache_bytes = 4096;
  a.io_reads = 3, a.io_bytes = 300, a.io_seconds = 0.5, a.planned_bytes = 1000, a.minimum_bytes = 900;
  a.resident_weight_bytes = 700, a.planned_stream_bytes_per_token = 50, a.layer_loads = 4, a.layer_bytes = 400;
  a.layer_prefetch_hits = 2, a.layer_wait_seconds = 0.25, a.head_stream_bytes = 80;
  b = a;
  b.emb_cache_rows = 32, b.planned_bytes = 2000, b.minimum_bytes = 100, b.resident_weight_bytes = 800;
  b.planned_stream_bytes_per_token = 10;
  ASSERT_EQ(rwkvl_memory_stats_add(&a, &b), RWKVL_OK);
  EXPECT_EQ(a.emb_lookups, 20u);
  EXPECT_EQ(a.emb_hits, 16u);
  EXPECT_EQ(a.emb_bytes_read, 1024u);
  EXPECT_EQ(a.emb_cache_rows, 64);
  EXPECT_EQ(a.emb_cache_bytes, 8192u);
  EXPECT_EQ(a.io_reads, 6u);
  EXPECT_EQ(a.io_bytes, 600u);
  EXPECT_DOUBLE_EQ(a.io_seconds, 1.0);
  EXPECT_EQ(a.planned_bytes, 2000u);
  EXPECT_EQ(a.minimum_bytes, 900u);
  EXPECT_EQ(a.resident_weight_bytes, 800u);
  EXPECT_EQ(a.planned_stream_bytes_per_token, 50u);
  EXPECT_EQ(a.layer_loads, 8u);
  EXPECT_EQ(a.layer_bytes, 800u);
  EXPECT_EQ(a.layer_prefetch_hits, 4u);
  EXPECT_DOUBLE_EQ(a.layer_wait_seconds, 0.5);
  EXPECT_EQ(a.head_stream_bytes, 160u);
}

TEST(CApiStats, NullArgumentsAreRefused) {
  rwkvl_ffn_stats f{};
  rwkvl_head_stats h{};
  rwkvl_memory_stats m{};
  EXPECT_EQ(rwkvl_ffn_stats_add(nullptr, &f), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_ffn_stats_add(&f, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_head_stats_add(&h, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_memory_stats_add(nullptr, &m), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("rwkvl_memory_stats_add"), std::string::npos);
}

}  // namespace
