// The public C API: lifecycle, error codes + messages, eval equivalences, state save/restore.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "rwkv_lite.h"
#include "test_util.h"

namespace {

std::string tiny(const char* v) { return rwkvl::test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + v + ".bin"); }

TEST(CApi, ApiVersion) {
  // The header and the library agree, and the single number encodes major.minor.
  EXPECT_EQ(rwkvl_api_version(), RWKVL_API_VERSION);
  EXPECT_EQ(RWKVL_API_VERSION_MAJOR, 1);
  EXPECT_EQ(rwkvl_api_version() / 1000, RWKVL_API_VERSION_MAJOR);
  EXPECT_EQ(rwkvl_api_version() % 1000, RWKVL_API_VERSION_MINOR);
}

TEST(CApi, ErrorsHaveCodesAndMessages) {
  rwkvl_model* m = reinterpret_cast<rwkvl_model*>(0x1);
  EXPECT_EQ(rwkvl_model_load("/nonexistent/model.bin", nullptr, &m), RWKVL_ERR_IO);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(rwkvl_last_error()).find("/nonexistent/model.bin"), std::string::npos);
  EXPECT_EQ(rwkvl_model_load(nullptr, nullptr, &m), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_context_new(nullptr, 1, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(rwkvl_status_name(RWKVL_ERR_FORMAT), "bad file format");
  rwkvl_model_free(nullptr);  // no-op
  const std::string empty = rwkvl::test::temp_dir() + "/empty.bin";
  rwkvl::test::write_file(empty, "");
  EXPECT_EQ(rwkvl_model_load(empty.c_str(), nullptr, &m), RWKVL_ERR_FORMAT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("not a model file"), std::string::npos);
}

TEST(CApi, EvalStateAndTokenizer) {
  const std::string path = tiny("5v2-730K-FP32");
  if (path.empty()) GTEST_SKIP();
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model_info info;
  ASSERT_EQ(rwkvl_model_get_info(m, &info), RWKVL_OK);
  EXPECT_STREQ(info.arch_name, "v5.2");
  EXPECT_STREQ(info.file_kind, "rwkv.cpp");
  EXPECT_EQ(info.n_vocab, 256);
  EXPECT_EQ(info.n_layer, 12);
  EXPECT_EQ(info.state_floats, 12u * (2 * 64 + 8 * 8 * 8));
  EXPECT_GT(info.bytes_per_token, 0u);
  EXPECT_LT(info.bytes_per_token, info.weight_bytes);

  rwkvl_tokenizer* tok = nullptr;
  ASSERT_EQ(rwkvl_tokenizer_for_model(m, path.c_str(), nullptr, &tok), RWKVL_OK) << rwkvl_last_error();
  EXPECT_STREQ(rwkvl_tokenizer_name(tok), "byte");
  int32_t ids[64];
  size_t n = 0;
  ASSERT_EQ(rwkvl_tokenize(tok, "Hello world", 11, ids, 64, &n), RWKVL_OK);
  ASSERT_EQ(n, 11u);
  EXPECT_EQ(ids[0], 'H');
  EXPECT_EQ(rwkvl_tokenize(tok, "Hello world", 11, ids, 4, &n), RWKVL_ERR_INVALID_ARGUMENT);

  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(m, 2, &ctx), RWKVL_OK);
  EXPECT_EQ(rwkvl_context_threads(ctx), 2);
  rwkvl_state *s1 = nullptr, *s2 = nullptr;
  ASSERT_EQ(rwkvl_state_new(m, &s1), RWKVL_OK);
  ASSERT_EQ(rwkvl_state_new(m, &s2), RWKVL_OK);

  // Save after "Hello", continue with " world"; restoring the file and continuing gives the same logits.
  std::vector<float> a(256), b(256), all(11 * 256);
  ASSERT_EQ(rwkvl_eval(ctx, s1, ids, 5, 0, nullptr), RWKVL_OK);
  const std::string sp = rwkvl::test::temp_dir() + "/hello.state";
  ASSERT_EQ(rwkvl_state_save(s1, sp.c_str()), RWKVL_OK);
  ASSERT_EQ(rwkvl_eval(ctx, s1, ids + 5, 6, 0, a.data()), RWKVL_OK);
  ASSERT_EQ(rwkvl_state_load(s2, sp.c_str()), RWKVL_OK) << rwkvl_last_error();
  ASSERT_EQ(rwkvl_eval(ctx, s2, ids + 5, 6, 0, b.data()), RWKVL_OK);
  EXPECT_EQ(a, b);

  // All-logits mode: the last row equals the last-token logits; RNN mode agrees.
  ASSERT_EQ(rwkvl_state_reset(s2), RWKVL_OK);
  ASSERT_EQ(rwkvl_eval_all_logits(ctx, s2, ids, 11, 4, all.data()), RWKVL_OK);
  float d = 0;
  for (int i = 0; i < 256; ++i) d = std::max(d, std::fabs(all[10 * 256 + i] - a[i]));
  EXPECT_LE(d, 1e-4f);

  // A bad token fails and leaves the state as it was.
  ASSERT_EQ(rwkvl_state_copy(s2, s1), RWKVL_OK);
  const int32_t bad[2] = {1, 256};
  EXPECT_EQ(rwkvl_eval(ctx, s1, bad, 2, 0, a.data()), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("out of range"), std::string::npos);
  EXPECT_EQ(std::memcmp(rwkvl_state_data(s1), rwkvl_state_data(s2), info.state_floats * 4), 0);

  // A state file of another model shape is refused.
  const std::string other = tiny("7v0-834K-FP32");
  if (!other.empty()) {
    rwkvl_model* m7 = nullptr;
    ASSERT_EQ(rwkvl_model_load(other.c_str(), nullptr, &m7), RWKVL_OK);
    rwkvl_state* s7 = nullptr;
    ASSERT_EQ(rwkvl_state_new(m7, &s7), RWKVL_OK);
    EXPECT_EQ(rwkvl_state_load(s7, sp.c_str()), RWKVL_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(rwkvl_last_error()).find("different model"), std::string::npos);
    rwkvl_state_free(s7);
    rwkvl_model_free(m7);
  }
  rwkvl_state_free(s1);
  rwkvl_state_free(s2);
  rwkvl_context_free(ctx);
  rwkvl_tokenizer_free(tok);
  rwkvl_model_free(m);
}

TEST(CApi, SynthSaveAndReload) {
  const std::string p = rwkvl::test::temp_dir() + "/synth.rwkvl";
  rwkvl_synth_params sp{6, 2, 64, 300, 0, 32, "f16", 3};
  ASSERT_EQ(rwkvl_synth(&sp, p.c_str()), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(p.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model_info info;
  ASSERT_EQ(rwkvl_model_get_info(m, &info), RWKVL_OK);
  EXPECT_STREQ(info.file_kind, "native");
  EXPECT_STREQ(info.weight_dtype, "f16");
  EXPECT_EQ(info.n_head, 2);
  EXPECT_EQ(info.n_vocab, 300);
  // A failed save (directory does not exist) leaves nothing behind.
  EXPECT_EQ(rwkvl_model_save(m, "/nonexistent-dir/x.rwkvl", "f32"), RWKVL_ERR_IO);
  rwkvl_model_free(m);
  rwkvl_synth_params bad{3, 2, 64, 300, 0, 32, "f16", 3};
  EXPECT_EQ(rwkvl_synth(&bad, p.c_str()), RWKVL_ERR_INVALID_ARGUMENT);
}

// RWKV-7a through the C API (1.12): synth with a DeepEmbed rank, the tables behind a cache of the extras' size (the
// same logits as in place), its statistics; a rank on another architecture and a cache of 0 under a budget refused.
TEST(CApi, DeepEmbedSynthCacheAndStats) {
  const std::string p = rwkvl::test::temp_dir() + "/synth7a.rwkvl";
  rwkvl_synth_params sp{7, 2, 64, 300, 0, 32, "bf16", 5};
  rwkvl_synth_extras sx = rwkvl_synth_default_extras();
  sx.de_rank = 4;
  ASSERT_EQ(rwkvl_synth_with(&sp, &sx, p.c_str()), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(p.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model_info info;
  ASSERT_EQ(rwkvl_model_get_info(m, &info), RWKVL_OK);
  EXPECT_STREQ(info.arch_name, "v7a");
  const int32_t toks[] = {3, 4, 3, 299, 4, 0, 3};
  auto logits = [&](int64_t rows, rwkvl_deep_embed_stats* st) {
    rwkvl_context* ctx = nullptr;
    EXPECT_EQ(rwkvl_context_new(m, 1, &ctx), RWKVL_OK);
    rwkvl_session_params params = rwkvl_session_default_params();
    rwkvl_session_extras x = rwkvl_session_default_extras();
    EXPECT_EQ(x.de_cache_rows, -1);
    x.de_cache_rows = rows;
    EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_OK) << rwkvl_last_error();
    rwkvl_state* s = nullptr;
    EXPECT_EQ(rwkvl_state_new(m, &s), RWKVL_OK);
    std::vector<float> out(300);
    EXPECT_EQ(rwkvl_eval(ctx, s, toks, 7, 1, out.data()), RWKVL_OK) << rwkvl_last_error();
    EXPECT_EQ(rwkvl_context_deep_embed_stats(ctx, st), RWKVL_OK);
    rwkvl_state_free(s);
    rwkvl_context_free(ctx);
    return out;
  };
  rwkvl_deep_embed_stats in_place{}, cached{};
  const std::vector<float> a = logits(0, &in_place), b = logits(2, &cached);
  EXPECT_EQ(a, b);
  EXPECT_EQ(in_place.slots, 0);
  EXPECT_EQ(cached.slots, 2);
  EXPECT_EQ(cached.lookups, 7u);
  EXPECT_EQ(cached.hits, 1u);  // 3 4 3 (hit) 299 (evicts 4) 4 (evicts 3) 0 (evicts 299) 3 (evicts 4)
  EXPECT_EQ(cached.rows_read, 6u * 2);
  EXPECT_EQ(cached.bytes_read, 6u * 2 * 16 * 2);  // R*R = 16 bf16 values a row
  EXPECT_EQ(cached.table_bytes, 2u * 300 * 16 * 2);
  // budget with a cache of 0 (tables in place) is refused
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(m, 1, &ctx), RWKVL_OK);
  rwkvl_session_params params = rwkvl_session_default_params();
  params.memory.budget_bytes = 512ull << 20;
  rwkvl_session_extras x = rwkvl_session_default_extras();
  x.de_cache_rows = 0;
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("does not allow"), std::string::npos) << rwkvl_last_error();
  rwkvl_context_free(ctx);
  rwkvl_model_free(m);
  sp.arch_major = 6;
  EXPECT_EQ(rwkvl_synth_with(&sp, &sx, p.c_str()), RWKVL_ERR_INVALID_ARGUMENT);
  sp.arch_major = 7;
  sx.de_rank = 300;
  EXPECT_EQ(rwkvl_synth_with(&sp, &sx, p.c_str()), RWKVL_ERR_INVALID_ARGUMENT);
}

}  // namespace

namespace {

// The channel-mix settings through the C API, on a model with plain FFN matrices: dense is the only
// mode it can run (exact/predict need a neuron-bundled file), and its counters add up to what one
// token through every layer reads.
TEST(CApi, FfnSettingsAndStatsOnADenseModel) {
  const std::string path = tiny("5v2-730K-FP32");
  if (path.empty()) GTEST_SKIP();
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model_info info;
  ASSERT_EQ(rwkvl_model_get_info(m, &info), RWKVL_OK);
  EXPECT_EQ(info.sparse_ffn, 0);
  EXPECT_EQ(info.ffn_predictor, 0);
  // key (F x C) + value (C x F), f32
  EXPECT_EQ(info.ffn_weight_bytes, static_cast<uint64_t>(info.n_layer) * 2 * info.n_ffn * info.n_embd * 4);
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(m, 1, &ctx), RWKVL_OK);
  rwkvl_ffn_params p = rwkvl_ffn_default_params();
  EXPECT_EQ(p.mode, RWKVL_FFN_AUTO);
  EXPECT_EQ(p.cache_bytes, 0u);
  p.mode = RWKVL_FFN_EXACT;
  EXPECT_EQ(rwkvl_context_set_ffn(ctx, &p), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("neuron-bundled"), std::string::npos) << rwkvl_last_error();
  p.mode = RWKVL_FFN_PREDICT;
  EXPECT_EQ(rwkvl_context_set_ffn(ctx, &p), RWKVL_ERR_INVALID_ARGUMENT);
  p.mode = RWKVL_FFN_DENSE;
  p.cache_bytes = 1 << 20;
  EXPECT_EQ(rwkvl_context_set_ffn(ctx, &p), RWKVL_ERR_INVALID_ARGUMENT);  // a cache streams bundled files only
  p.cache_bytes = 0;
  ASSERT_EQ(rwkvl_context_set_ffn(ctx, &p), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_context_set_ffn(ctx, nullptr), RWKVL_ERR_INVALID_ARGUMENT);

  rwkvl_state* st = nullptr;
  ASSERT_EQ(rwkvl_state_new(m, &st), RWKVL_OK);
  const int32_t toks[3] = {72, 105, 33};
  ASSERT_EQ(rwkvl_eval(ctx, st, toks, 3, 1, nullptr), RWKVL_OK);
  rwkvl_ffn_stats s;
  ASSERT_EQ(rwkvl_context_ffn_stats(ctx, &s), RWKVL_OK);
  EXPECT_EQ(s.mode, RWKVL_FFN_DENSE);
  EXPECT_EQ(s.evals, 3u * info.n_layer);
  EXPECT_EQ(s.neurons, 3u * info.n_layer * info.n_ffn);
  EXPECT_EQ(s.computed, s.neurons);
  EXPECT_EQ(s.weight_bytes, 3u * info.ffn_weight_bytes);
  EXPECT_EQ(s.predictor_bytes, 0u);
  EXPECT_EQ(s.verified, 1);
  EXPECT_EQ(s.verify_hit, s.verify_active);
  EXPECT_GT(s.verify_active, 0u);
  EXPECT_LT(s.verify_active, s.neurons);  // squared ReLU: some neurons are zero
  ASSERT_EQ(rwkvl_context_reset_ffn_stats(ctx), RWKVL_OK);
  ASSERT_EQ(rwkvl_context_ffn_stats(ctx, &s), RWKVL_OK);
  EXPECT_EQ(s.evals, 0u);
  rwkvl_state_free(st);
  rwkvl_context_free(ctx);
  rwkvl_model_free(m);
}

}  // namespace

namespace {

// Simulated storage through the C API (1.6): presets, a session configured with one, and the reads it counts
// (an embedding cache reads every new token's row from the file: one read of one row each).
TEST(CApi, StoragePresetsAndIoStats) {
  rwkvl_storage_params sp{};
  ASSERT_EQ(rwkvl_storage_preset("emmc", &sp), RWKVL_OK);
  EXPECT_EQ(sp.mb_per_s, 250.0);
  EXPECT_EQ(sp.latency_us, 150.0);
  EXPECT_EQ(sp.queue_depth, 2);
  EXPECT_EQ(rwkvl_storage_preset("floppy", &sp), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("page-cache"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_storage_preset(nullptr, &sp), RWKVL_ERR_INVALID_ARGUMENT);

  const std::string p = rwkvl::test::temp_dir() + "/storage.rwkvl";
  rwkvl_synth_params syn{5, 2, 64, 300, 0, 32, "f16", 3};
  ASSERT_EQ(rwkvl_synth(&syn, p.c_str()), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(p.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(m, 1, &ctx), RWKVL_OK);
  rwkvl_session_params params = rwkvl_session_default_params();
  params.n_threads = 1;
  params.memory.emb_cache_rows = 16;
  rwkvl_storage_params fast{2000.0, 20.0, 4};
  ASSERT_EQ(rwkvl_context_configure_storage(ctx, &params, &fast), RWKVL_OK) << rwkvl_last_error();
  rwkvl_state* st = nullptr;
  ASSERT_EQ(rwkvl_state_new(m, &st), RWKVL_OK);
  const int32_t toks[4] = {5, 6, 5, 7};
  ASSERT_EQ(rwkvl_eval(ctx, st, toks, 4, 1, nullptr), RWKVL_OK) << rwkvl_last_error();
  rwkvl_io_stats io{};
  ASSERT_EQ(rwkvl_context_io_stats(ctx, &io), RWKVL_OK);
  EXPECT_EQ(io.reads, 3u);             // rows 5, 6, 7 (5 again is a hit)
  EXPECT_EQ(io.bytes, 3u * 64u * 2u);  // f16 rows of 64
  EXPECT_EQ(io.storage.queue_depth, 4);
  EXPECT_EQ(io.storage.mb_per_s, 2000.0);
  EXPECT_GT(io.device_busy_seconds, 3 * 20e-6 * 0.99);
  EXPECT_GE(io.stall_seconds, io.device_busy_seconds * 0.99);
  rwkvl_storage_params bad{100.0, 10.0, 0};
  EXPECT_EQ(rwkvl_context_configure_storage(ctx, &params, &bad), RWKVL_ERR_INVALID_ARGUMENT);
  bad = {-1.0, 10.0, 1};
  EXPECT_EQ(rwkvl_context_configure_storage(ctx, &params, &bad), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_context_io_stats(ctx, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  // The extensible settings (API 1.7): the storage through them, then what they refuse.
  rwkvl_session_extras x = rwkvl_session_default_extras();
  EXPECT_EQ(x.struct_size, sizeof(rwkvl_session_extras));
  x.storage = &fast;
  ASSERT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_OK) << rwkvl_last_error();
  ASSERT_EQ(rwkvl_context_io_stats(ctx, &io), RWKVL_OK);
  EXPECT_EQ(io.storage.queue_depth, 4);
  x.latency_target_ms = 5;  // without a budget
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("budget"), std::string::npos) << rwkvl_last_error();
  x.latency_target_ms = -1;
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);
  x.latency_target_ms = 0;
  x.head_fidelity = "int2";
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("auto, high or int4"), std::string::npos) << rwkvl_last_error();
  x.head_fidelity = nullptr;
  // A baseline (API 1.8) replaces the measured one: the plan starts from it, the same on every run; it needs a
  // budget and must be below it.
  x.baseline_bytes = 3u << 20;
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);  // no budget
  EXPECT_NE(std::string(rwkvl_last_error()).find("budget"), std::string::npos) << rwkvl_last_error();
  rwkvl_session_params budgeted = params;
  budgeted.memory.budget_bytes = 64u << 20;
  ASSERT_EQ(rwkvl_context_configure_with(ctx, &budgeted, &x), RWKVL_OK) << rwkvl_last_error();
  std::string plan(1 << 16, '\0');
  size_t plan_len = 0;
  ASSERT_EQ(rwkvl_context_memory_plan(ctx, 1, plan.data(), plan.size(), &plan_len), RWKVL_OK) << rwkvl_last_error();
  plan.resize(plan_len);
  EXPECT_EQ(nlohmann::json::parse(plan).at("baseline").get<uint64_t>(), 3u << 20) << plan;
  x.baseline_bytes = 64u << 20;  // not below the budget
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &budgeted, &x), RWKVL_ERR_INVALID_ARGUMENT);
  x.baseline_bytes = 0;
  x.struct_size = 4;
  EXPECT_EQ(rwkvl_context_configure_with(ctx, &params, &x), RWKVL_ERR_INVALID_ARGUMENT);
  // Compression extras: fidelities that are not "HIGH,int4" are refused before any work, leaving no file.
  rwkvl_compress_extras cx = rwkvl_compress_default_extras();
  EXPECT_EQ(cx.struct_size, sizeof(rwkvl_compress_extras));
  rwkvl_compress_recipe rec = rwkvl_compress_default_recipe();
  rec.quant = RWKVL_QUANT_INT8;
  const std::string out = rwkvl::test::temp_dir() + "/fidelities_bad.rwkvl";
  for (const char* f : {"int8", "int8,int2", "int3,int4", "int8,int4,int4"}) {
    cx.fidelities = f;
    EXPECT_EQ(rwkvl_compress_with(m, &rec, &cx, nullptr, out.c_str(), nullptr, nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT) << f;
    EXPECT_FALSE(std::ifstream(out).good()) << f;
  }
  cx.fidelities = "int8,int4";  // without a cluster head
  EXPECT_EQ(rwkvl_compress_with(m, &rec, &cx, nullptr, out.c_str(), nullptr, nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("cluster-head"), std::string::npos) << rwkvl_last_error();
  rwkvl_state_free(st);
  rwkvl_context_free(ctx);
  rwkvl_model_free(m);
}

}  // namespace
