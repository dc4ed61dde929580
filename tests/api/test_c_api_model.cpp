// rwkvl_model_get_matrix and rwkvl_model_passes_json (C API 1.2, what `rwkv-lite info` reads): shapes, dtypes
// and bytes of the tiny models' projections against their known shapes (rows x cols x element size), which
// projections each architecture has, a low-rank compressed file's ranks (round(F min(rows, cols))) and the pass
// it records, the cap/n_out protocol and the errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "rwkv_lite.h"
#include "test_util.h"

namespace {

std::string tiny(const char* v) { return rwkvl::test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + v + ".bin"); }

struct Loaded {
  rwkvl_model* m = nullptr;
  rwkvl_model_info info{};
  explicit Loaded(const std::string& path) {
    if (rwkvl_model_load(path.c_str(), nullptr, &m) == RWKVL_OK) rwkvl_model_get_info(m, &info);
  }
  ~Loaded() { rwkvl_model_free(m); }
};

enum { kAttR = 0, kAttK, kAttV, kAttO, kAttG, kFfnK, kFfnV, kFfnR };

rwkvl_matrix_info get(const rwkvl_model* m, int layer, int p) {
  rwkvl_matrix_info r{};
  EXPECT_EQ(rwkvl_model_get_matrix(m, layer, p, &r), RWKVL_OK) << rwkvl_last_error();
  return r;
}

std::string passes(const rwkvl_model* m) {
  size_t n = 0;
  EXPECT_EQ(rwkvl_model_passes_json(m, nullptr, 0, &n), RWKVL_ERR_INVALID_ARGUMENT);  // the length only
  std::string text(n + 1, 'x');
  EXPECT_EQ(rwkvl_model_passes_json(m, text.data(), text.size(), &n), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(text[n], '\0');
  text.resize(n);
  return text;
}

// Dense projections of an rwkv.cpp file: W is (outputs, inputs) with C = n_embd, F = n_ffn.
void check_dense(const std::string& path, rwkvl_dtype dtype, uint64_t elem_bytes, bool gate, bool ffn_r) {
  SCOPED_TRACE(path);
  const Loaded l(path);
  ASSERT_NE(l.m, nullptr) << rwkvl_last_error();
  const int64_t C = l.info.n_embd, F = l.info.n_ffn;
  struct Want {
    int p;
    bool present;
    int64_t rows, cols;
  } want[] = {{kAttR, true, C, C}, {kAttK, true, C, C}, {kAttV, true, C, C}, {kAttO, true, C, C},
              {kAttG, gate, C, C}, {kFfnK, true, F, C}, {kFfnV, true, C, F}, {kFfnR, ffn_r, C, C}};
  for (int layer : {0, l.info.n_layer - 1})
    for (const Want& w : want) {
      const rwkvl_matrix_info r = get(l.m, layer, w.p);
      EXPECT_EQ(r.present, w.present ? 1 : 0) << "projection " << w.p;
      if (!w.present) {
        EXPECT_EQ(r.rows, 0);
        EXPECT_EQ(r.bytes, 0u);
        continue;
      }
      EXPECT_EQ(r.factored, 0);
      EXPECT_EQ(r.rank, 0);
      EXPECT_EQ(r.rows, w.rows) << "projection " << w.p;
      EXPECT_EQ(r.cols, w.cols) << "projection " << w.p;
      EXPECT_EQ(r.dtype, dtype) << "projection " << w.p;
      EXPECT_EQ(r.bytes, static_cast<uint64_t>(w.rows * w.cols) * elem_bytes) << "projection " << w.p;
    }
  EXPECT_EQ(passes(l.m), "[]");  // not a native file
}

TEST(CApiModel, TinyModelProjections) {
  if (tiny("5v2-730K-FP32").empty()) GTEST_SKIP() << "no ../shared";
  check_dense(tiny("5v2-730K-FP32"), RWKVL_DTYPE_F32, 4, true, true);
  check_dense(tiny("5v2-730K-FP16"), RWKVL_DTYPE_F16, 2, true, true);
  check_dense(tiny("4v0-660K-FP32"), RWKVL_DTYPE_F32, 4, false, true);  // v4: no gate
  check_dense(tiny("7v0-834K-FP32"), RWKVL_DTYPE_F32, 4, false, false); // v7: LoRA gate, no ffn.receptance
}

TEST(CApiModel, Errors) {
  const std::string path = tiny("5v2-730K-FP32");
  if (path.empty()) GTEST_SKIP() << "no ../shared";
  const Loaded l(path);
  ASSERT_NE(l.m, nullptr);
  rwkvl_matrix_info r{};
  r.rows = 77;
  EXPECT_EQ(rwkvl_model_get_matrix(nullptr, 0, 0, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_get_matrix(l.m, 0, 0, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_get_matrix(l.m, -1, 0, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_get_matrix(l.m, l.info.n_layer, 0, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("layer"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_model_get_matrix(l.m, 0, 8, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_get_matrix(l.m, 0, -1, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(r.rows, 77) << "*out written on failure";
  size_t n = 0;
  char buf[1];
  EXPECT_EQ(rwkvl_model_passes_json(nullptr, buf, 1, &n), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_passes_json(l.m, buf, 1, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_passes_json(l.m, nullptr, 5, &n), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_passes_json(l.m, buf, 1, &n), RWKVL_ERR_INVALID_ARGUMENT);  // "[]" needs 3 bytes
  EXPECT_EQ(n, 2u);
}

// A file made by rwkvl_compress (svd, rank 1/4 of the time-mix receptance, key, value): those are factored at
// round(0.25 C), the rest dense, and the pass names the ranks.
TEST(CApiModel, FactoredFileAndItsPass) {
  const std::string path = tiny("5v2-730K-FP32");
  if (path.empty()) GTEST_SKIP() << "no ../shared";
  const Loaded in(path);
  ASSERT_NE(in.m, nullptr);
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  r.lowrank = RWKVL_LOWRANK_SVD;
  r.rank_frac = 0.25;
  r.force = 1;
  const std::string out = rwkvl::test::temp_dir() + "/c_api_model_svd.rwkvl";
  ASSERT_EQ(rwkvl_compress(in.m, &r, nullptr, out.c_str(), nullptr, nullptr, nullptr), RWKVL_OK) << rwkvl_last_error();
  const Loaded l(out);
  std::remove(out.c_str());
  ASSERT_NE(l.m, nullptr) << rwkvl_last_error();
  const int64_t C = l.info.n_embd, rank = std::llround(0.25 * static_cast<double>(C));
  int factored = 0;
  for (int layer = 0; layer < l.info.n_layer; ++layer)
    for (int p = 0; p < 8; ++p) {
      const rwkvl_matrix_info m = get(l.m, layer, p);
      const bool target = p == kAttR || p == kAttK || p == kAttV || p == kAttG;  // the default targets
      factored += m.factored;
      EXPECT_EQ(m.factored, target ? 1 : 0) << layer << " " << p;
      EXPECT_EQ(m.rank, target ? rank : 0) << layer << " " << p;
      EXPECT_EQ(m.diag, 0);
      if (target) {
        EXPECT_EQ(m.rows, C);
        EXPECT_EQ(m.cols, C);
        EXPECT_EQ(m.dtype, RWKVL_DTYPE_F32);  // f32 factors for an f32 model
        EXPECT_EQ(m.bytes, static_cast<uint64_t>(2 * rank * C * 4));  // A (rank x C) + B (C x rank)
      }
    }
  EXPECT_EQ(factored, 4 * l.info.n_layer);
  const nlohmann::json j = nlohmann::json::parse(passes(l.m));
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 1u) << j.dump();
  ASSERT_TRUE(j[0].contains("lowrank")) << j.dump().substr(0, 300);
  EXPECT_EQ(j[0]["lowrank"]["matrices"]["blocks.0.att.key"]["rank"].get<int64_t>(), rank);
}

}  // namespace
