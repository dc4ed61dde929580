// Bounded-memory compression (issue #19): the memory plan (src/compress/plan.h) and the spool the pipeline writes
// through (pass_memory.h). The file written through the spool is byte for byte the file of the in-memory passes;
// the sparse FFN pass gives the same bytes whatever number of layers it trains side by side (what a budget
// changes); the plan grows with the calibration tokens, trains fewer layers side by side under a budget and
// refuses a budget nothing meets, naming the stage; the C API and the command line give the same plan.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "compress/pipeline.h"
#include "compress/plan.h"
#include "compress/sparse_ffn.h"
#include "core/error.h"
#include "core/file_writer.h"
#include "model/model.h"
#include "rwkv_lite.h"
#include "test_util.h"
#include "tiny_models.h"

namespace {

using rwkvl::Model;
using rwkvl::ModelConfig;
namespace cz = rwkvl::compress;

std::vector<int32_t> byte_calibration(size_t n) {
  const std::string valid = rwkvl::test::shared_file("data/wikitext2-valid.txt");
  if (valid.empty()) return {};
  return rwkvl::test::byte_tokens(rwkvl::test::read_file(valid), n);
}

cz::Recipe full_recipe() {
  cz::Recipe r;
  r.lowrank.method = cz::LowRankMethod::kAsvd;
  r.lowrank.rank_frac = 0.25;
  r.quant.type = cz::Quant::kInt8;
  r.quant.emb = r.quant.head = true;
  r.sparse_ffn.enabled = true;
  r.sparse_ffn.epochs = 3;
  r.cluster_head.enabled = true;
  r.cluster_head.k = 16;
  r.cluster_head.epochs = 3;
  r.n_threads = 2;
  return r;
}

// A model of a wider shape (plan only: nothing runs on it).
std::shared_ptr<Model> plan_model() {
  ModelConfig c;
  c.arch_major = 7;
  c.n_layer = 4;
  c.n_embd = 256;
  c.n_vocab = 4096;
  return rwkvl::synth_model(c, "f16", 3);
}

TEST(CompressSpool, TheFileEqualsTheInMemoryPasses) {
  for (const char* version : {"5v2-730K", "7v0-834K"}) {
    const std::shared_ptr<Model> m = rwkvl::test::load_tiny(version);
    const std::vector<int32_t> toks = byte_calibration(1500);
    if (!m || toks.empty()) GTEST_SKIP() << "tiny model or wikitext2-valid.txt missing";
    const cz::CalibrationData calib = cz::calibration_from_tokens(toks, "wikitext2-valid bytes");
    const std::string dir = rwkvl::test::temp_dir();
    const std::string spooled = dir + "/spooled-" + version + ".rwkvl", memory = dir + "/memory-" + version + ".rwkvl";
    cz::PipelineReport rep;
    cz::compress_to_file(m, full_recipe(), calib, spooled, nullptr, &rep);  // through the spool
    cz::compress_model(m, full_recipe(), calib, nullptr, nullptr)->save_native(memory, "keep");  // all in memory
    const std::string a = rwkvl::test::read_file(spooled), b = rwkvl::test::read_file(memory);
    ASSERT_GT(a.size(), 1000u);
    EXPECT_TRUE(a == b) << version << ": the spooled file differs from the in-memory one";
    EXPECT_TRUE(rep.plan.contains("peak_bytes")) << rep.to_json().dump();
    EXPECT_GT(rep.peak_rss_save, 0u);
  }
}

TEST(CompressSpool, SparseFfnGivesTheSameBytesForAnyNumberOfLayersSideBySide) {
  const std::shared_ptr<Model> m = rwkvl::test::load_tiny("6v0-1m");
  const std::vector<int32_t> toks = byte_calibration(2000);
  if (!m || toks.empty()) GTEST_SKIP() << "tiny model or wikitext2-valid.txt missing";
  std::string first;
  for (int group : {1, 2, 3}) {
    cz::SparseFfnOptions o;
    o.calib = toks;
    o.pred.epochs = 2;
    o.pred.n_threads = 2;
    o.n_threads = 2;
    o.group = group;
    const std::string path = rwkvl::test::temp_dir() + "/group" + std::to_string(group) + ".rwkvl";
    cz::sparse_ffn(m, o, nullptr)->save_native(path, "keep");
    const std::string bytes = rwkvl::test::read_file(path);
    if (first.empty()) first = bytes;
    EXPECT_TRUE(bytes == first) << "group " << group;
  }
}

TEST(CompressPlan, StagesGrowWithTheCalibrationAndABudgetTrainsFewerLayersSideBySide) {
  const std::shared_ptr<Model> m = plan_model();
  const cz::Recipe r = full_recipe();
  const cz::CompressPlan small = cz::plan_compress(*m, r, 2048, 0), big = cz::plan_compress(*m, r, 65536, 0);
  for (const cz::CompressPlan* p : {&small, &big}) {
    EXPECT_TRUE(p->lowrank_quant.runs && p->sparse_ffn.runs && p->cluster_head.runs && p->save.runs);
    double work = 0;
    uint64_t peak = 0;
    for (const cz::StagePlan* s : {&p->lowrank_quant, &p->sparse_ffn, &p->cluster_head, &p->save}) {
      EXPECT_GE(s->peak_bytes, p->base_bytes);
      work += s->work;
      peak = std::max(peak, s->peak_bytes);
    }
    EXPECT_NEAR(work, 1.0, 1e-9);
    EXPECT_EQ(p->peak_bytes, peak);
    EXPECT_EQ(p->sparse_parallel_layers, 2);
  }
  // 32x the tokens: the stream and the samples grow by about that much.
  EXPECT_GT(big.sparse_ffn.peak_bytes - big.base_bytes, 16 * (small.sparse_ffn.peak_bytes - small.base_bytes));
  EXPECT_GT(big.lowrank_quant.peak_bytes, small.lowrank_quant.peak_bytes);

  // A budget below two layers' samples but above one layer's: one layer at a time, and it fits.
  const uint64_t budget = big.sparse_ffn.peak_bytes - 1;
  if (big.peak_bytes > big.sparse_ffn.peak_bytes) GTEST_SKIP() << "the sparse stage is not the largest here";
  const cz::CompressPlan fit = cz::plan_compress(*m, r, 65536, budget);
  EXPECT_EQ(fit.sparse_parallel_layers, 1);
  EXPECT_LE(fit.peak_bytes, budget);
  EXPECT_EQ(fit.budget, budget);
}

TEST(CompressPlan, ABudgetNothingMeetsIsRefusedNamingTheStage) {
  const std::shared_ptr<Model> m = plan_model();
  try {
    cz::plan_compress(*m, full_recipe(), 65536, 64ull << 20);
    FAIL() << "expected a refusal";
  } catch (const rwkvl::Error& e) {
    EXPECT_EQ(e.code(), rwkvl::ErrorCode::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("stage"), std::string::npos) << msg;
    EXPECT_NE(msg.find("64 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--calib-tokens"), std::string::npos) << msg;
  }
  // The pipeline refuses it before any work: no output file appears.
  const std::string out = rwkvl::test::temp_dir() + "/refused.rwkvl";
  std::remove(out.c_str());
  cz::Recipe r = full_recipe();
  r.mem_budget = 64ull << 20;
  const cz::CalibrationData calib = cz::calibration_from_tokens(std::vector<int32_t>(65536, 1), "ones");
  EXPECT_THROW(cz::compress_to_file(m, r, calib, out, nullptr, nullptr), rwkvl::Error);
  EXPECT_FALSE(std::ifstream(out).good());
}

TEST(CompressPlan, TheCApiGivesThePlan) {
  const std::string path = rwkvl::test::tiny_model_path("5v2-730K");
  if (path.empty()) GTEST_SKIP() << "tiny model missing";
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  r.sparse_ffn = 1;
  r.n_threads = 2;
  rwkvl_compress_plan p{};
  ASSERT_EQ(rwkvl_compress_plan_get(m, &r, 4096, nullptr, &p), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(p.stage_peak_bytes[RWKVL_COMPRESS_STAGE_LOWRANK_QUANT], 0u);  // does not run
  EXPECT_GT(p.stage_peak_bytes[RWKVL_COMPRESS_STAGE_SPARSE_FFN], p.base_bytes);
  EXPECT_EQ(p.stage_peak_bytes[RWKVL_COMPRESS_STAGE_CLUSTER_HEAD], 0u);
  EXPECT_NEAR(p.stage_work[RWKVL_COMPRESS_STAGE_SPARSE_FFN], 1.0, 1e-9);
  rwkvl_compress_options o = rwkvl_compress_default_options();
  o.mem_budget = 1 << 20;
  EXPECT_EQ(rwkvl_compress_plan_get(m, &r, 4096, &o, &p), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("budget"), std::string::npos) << rwkvl_last_error();
  rwkvl_model_free(m);
}

// Resuming through the C API (the kills themselves: tests/cli/compress_resume.sh): without a journal the run starts
// from the beginning and writes what a plain run writes, and leaves no journal; a journal of another run is refused
// with a message naming what differs, and is left as it was.
TEST(CompressPlan, TheCApiResumes) {
  const std::string path = rwkvl::test::tiny_model_path("5v2-730K");
  if (path.empty()) GTEST_SKIP() << "tiny model missing";
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  r.quant = RWKVL_QUANT_INT8;
  const std::string dir = rwkvl::test::temp_dir();
  const std::string plain = dir + "/plain.rwkvl", resumed = dir + "/resumed.rwkvl";
  rwkvl_compress_options o = rwkvl_compress_default_options();
  ASSERT_EQ(rwkvl_compress_ex(m, &r, nullptr, plain.c_str(), &o, nullptr, nullptr, nullptr), RWKVL_OK) << rwkvl_last_error();
  o.resume = 1;
  ASSERT_EQ(rwkvl_compress_ex(m, &r, nullptr, resumed.c_str(), &o, nullptr, nullptr, nullptr), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(rwkvl::test::read_file(plain), rwkvl::test::read_file(resumed));
  struct stat st {};
  EXPECT_NE(stat((resumed + ".journal").c_str(), &st), 0) << "the journal is left after the run";

  ASSERT_EQ(mkdir((resumed + ".journal").c_str(), 0700), 0);
  const std::string other = R"({"version": 1, "key": {"build": "0.0.0-other"}, "entry": 1})";
  rwkvl::write_file_atomic(resumed + ".journal/journal.json", other.data(), other.size());
  EXPECT_EQ(rwkvl_compress_ex(m, &r, nullptr, resumed.c_str(), &o, nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("made with another build"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(rwkvl::test::read_file(resumed + ".journal/journal.json"), other);
  rwkvl_model_free(m);
}

}  // namespace
