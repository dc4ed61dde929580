// rwkvl_{ffn,head,memory}_stats_add: totals over sessions, checked field by field on hand-made structs;
// rwkvl_touched_per_token: a tiny model's parts against its info, hand-made statistics, and a real run.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rwkv_lite.h"
#include "test_util.h"

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

std::string tiny_v5() { return rwkvl::test::shared_file("reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin"); }

TEST(CApiStats, TouchedWithoutStatisticsIsEveryWeightOfAToken) {
  const std::string path = tiny_v5();
  if (path.empty()) GTEST_SKIP() << "no ../shared";
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK);
  rwkvl_model_info info{};
  ASSERT_EQ(rwkvl_model_get_info(m, &info), RWKVL_OK);
  rwkvl_touched t{};
  ASSERT_EQ(rwkvl_touched_per_token(m, nullptr, nullptr, &t), RWKVL_OK);
  EXPECT_DOUBLE_EQ(t.total, static_cast<double>(info.bytes_per_token));
  // f32: the embedding row is n_embd floats, the head n_vocab x n_embd floats, the FFN key (F x C) + value (C x F)
  EXPECT_DOUBLE_EQ(t.emb, 4.0 * info.n_embd);
  EXPECT_DOUBLE_EQ(t.head, 4.0 * info.n_embd * info.n_vocab);
  EXPECT_DOUBLE_EQ(t.ffn, 8.0 * info.n_embd * info.n_ffn * info.n_layer);
  EXPECT_DOUBLE_EQ(t.head_rows, info.n_vocab);
  EXPECT_EQ(t.cluster_head, 0.0);
  EXPECT_GT(t.other, 0.0);

  // A run that read a quarter of the FFN bytes: the FFN part is what was read, per token; the rest unchanged.
  rwkvl_ffn_stats fs{};
  fs.evals = 4 * static_cast<uint64_t>(info.n_layer);  // 4 tokens
  fs.weight_bytes = info.ffn_weight_bytes;             // 1/4 per token
  fs.predictor_bytes = 400;
  rwkvl_touched u{};
  ASSERT_EQ(rwkvl_touched_per_token(m, &fs, nullptr, &u), RWKVL_OK);
  EXPECT_DOUBLE_EQ(u.ffn, static_cast<double>(info.ffn_weight_bytes) / 4);
  EXPECT_DOUBLE_EQ(u.ffn_predictor, 100.0);
  EXPECT_DOUBLE_EQ(u.total, t.total - t.ffn + u.ffn + 100.0);

  // Cluster-mode head statistics on a model without a cluster head are refused.
  rwkvl_head_stats hs{};
  hs.tokens = 2, hs.rows_read = 10, hs.clusters = 4, hs.mode = RWKVL_HEAD_CLUSTER;
  EXPECT_EQ(rwkvl_touched_per_token(m, nullptr, &hs, &u), RWKVL_ERR_INVALID_ARGUMENT);
  hs.mode = RWKVL_HEAD_FULL;  // full mode: the whole head, whatever the counts
  ASSERT_EQ(rwkvl_touched_per_token(m, nullptr, &hs, &u), RWKVL_OK);
  EXPECT_DOUBLE_EQ(u.head, t.head);
  EXPECT_EQ(rwkvl_touched_per_token(nullptr, nullptr, nullptr, &u), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_touched_per_token(m, nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);

  // A dense run reads every neuron: its measured FFN bytes per token equal the model's.
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(m, 1, &ctx), RWKVL_OK);
  rwkvl_state* st = nullptr;
  ASSERT_EQ(rwkvl_state_new(m, &st), RWKVL_OK);
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));
  ASSERT_EQ(rwkvl_context_reset_ffn_stats(ctx), RWKVL_OK);
  for (int32_t tok : {65, 66, 67}) ASSERT_EQ(rwkvl_eval(ctx, st, &tok, 1, 1, logits.data()), RWKVL_OK);
  ASSERT_EQ(rwkvl_context_ffn_stats(ctx, &fs), RWKVL_OK);
  EXPECT_EQ(fs.evals, 3u * static_cast<uint64_t>(info.n_layer));
  EXPECT_EQ(fs.weight_bytes, 3u * info.ffn_weight_bytes);
  ASSERT_EQ(rwkvl_touched_per_token(m, &fs, nullptr, &u), RWKVL_OK);
  EXPECT_DOUBLE_EQ(u.ffn, t.ffn);
  EXPECT_DOUBLE_EQ(u.total, t.total);
  rwkvl_state_free(st);
  rwkvl_context_free(ctx);
  rwkvl_model_free(m);
}

// One generated token runs 4 parallel regions per layer (r k v [g] together, the output, the FFN key with the
// receptance, the FFN value) and one for the head; a 1-thread context runs none.
TEST(CApiStats, ParallelRegionsPerToken) {
  for (int arch : {4, 5}) {
    SCOPED_TRACE(arch);
    const std::string path = rwkvl::test::temp_dir() + "/regions-v" + std::to_string(arch) + ".rwkvl";
    rwkvl_synth_params p{};
    p.arch_major = arch, p.n_layer = 3, p.n_embd = 256, p.n_vocab = 1024, p.dtype = "f32", p.seed = 1;
    ASSERT_EQ(rwkvl_synth(&p, path.c_str()), RWKVL_OK);
    rwkvl_model* m = nullptr;
    ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK);
    for (int threads : {1, 2}) {
      rwkvl_context* ctx = nullptr;
      ASSERT_EQ(rwkvl_context_new(m, threads, &ctx), RWKVL_OK);
      rwkvl_state* st = nullptr;
      ASSERT_EQ(rwkvl_state_new(m, &st), RWKVL_OK);
      std::vector<float> logits(1024);
      int32_t tok = 7;
      ASSERT_EQ(rwkvl_eval(ctx, st, &tok, 1, 1, logits.data()), RWKVL_OK);
      uint64_t r0 = 0, r1 = 0;
      ASSERT_EQ(rwkvl_context_parallel_regions(ctx, &r0), RWKVL_OK);
      for (int32_t t : {8, 9}) ASSERT_EQ(rwkvl_eval(ctx, st, &t, 1, 1, logits.data()), RWKVL_OK);
      ASSERT_EQ(rwkvl_context_parallel_regions(ctx, &r1), RWKVL_OK);
      EXPECT_EQ(r1 - r0, threads == 1 ? 0u : 2u * (4u * 3u + 1u)) << threads << " threads";
      rwkvl_state_free(st);
      rwkvl_context_free(ctx);
    }
    EXPECT_EQ(rwkvl_context_parallel_regions(nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
    rwkvl_model_free(m);
  }
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
