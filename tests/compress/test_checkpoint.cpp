// The compress journal (src/compress/checkpoint.h) in parts: reports kept in it round-trip bit for bit (NaN and
// infinities included); a journal entry brings back every tensor with its bytes (tensors of the input by name,
// tensors in memory copied to the spool, spooled ones by offset), its state and its reports, and the spool cut to
// what the entry recorded; a calibration snapshot continues with the same numbers as the run that saved it and a
// damaged one is refused. Killed runs resumed end to end: tests/cli/compress_resume.sh.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compress/calibrate.h"
#include "compress/checkpoint.h"
#include "core/error.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_models.h"

namespace {

namespace cz = rwkvl::compress;

std::string bytes_of(const rwkvl::Tensor& t) {
  return std::string(static_cast<const char*>(t.data), t.nbytes);
}

TEST(Checkpoint, DoublesRoundTripBitForBit) {
  const double vals[] = {0.1, -0.0, 1e-310, 3.141592653589793, std::numeric_limits<double>::max(),
                         std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity()};
  for (double v : vals) {
    const nlohmann::json j = nlohmann::json::parse(nlohmann::json{{"v", cz::exact(v)}}.dump());
    const double back = cz::exact_double(j.at("v"));
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(back));
    } else {
      EXPECT_EQ(std::memcmp(&v, &back, sizeof v), 0) << v;
    }
  }
  EXPECT_THROW(cz::exact_double(nlohmann::json("1.5")), rwkvl::Error);
}

TEST(Checkpoint, ReportsRoundTrip) {
  cz::Report r;
  cz::MatrixReport m;
  m.name = "blocks.0.att.key";
  m.action = "factored";
  m.rows = 64;
  m.cols = 48;
  m.rank = 12;
  m.dtype = "i8";
  m.bytes_before = 1000;
  m.bytes_after = 300;
  m.err_svd = 0.123456789012345;
  m.err_frob = 1.0 / 3.0;  // err_asvd stays NaN
  r.matrices = {m};
  r.budget_error_sum = 2.0 / 7.0;
  r.pass = {{"tool", "x"}};
  const cz::Report b = cz::report_from_json(nlohmann::json::parse(cz::report_json(r).dump()));
  ASSERT_EQ(b.matrices.size(), 1u);
  EXPECT_EQ(b.matrices[0].name, m.name);
  EXPECT_EQ(b.matrices[0].err_svd, m.err_svd);
  EXPECT_EQ(b.matrices[0].err_frob, m.err_frob);
  EXPECT_TRUE(std::isnan(b.matrices[0].err_asvd));
  EXPECT_EQ(b.budget_error_sum, r.budget_error_sum);
  EXPECT_EQ(b.pass, r.pass);

  cz::SparseFfnLayerReport l;
  l.layer = 3;
  l.zero_frac = 0.5625;
  l.pred.mlp_logit_thresh = 0.1f;
  l.pred.bits_thresh = std::numeric_limits<float>::infinity();
  l.pred.recall_ens = 0.99250001;
  const std::vector<cz::SparseFfnLayerReport> back =
      cz::sparse_layers_from_json(nlohmann::json::parse(cz::sparse_layers_json({l}).dump()));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].layer, 3);
  EXPECT_EQ(back[0].pred.mlp_logit_thresh, 0.1f);
  EXPECT_TRUE(std::isinf(back[0].pred.bits_thresh));
  EXPECT_EQ(back[0].pred.recall_ens, l.pred.recall_ens);
}

// A journal entry and what a new process reads back from it.
TEST(Checkpoint, AnEntryBringsBackTheTensorsStateAndReports) {
  const std::shared_ptr<rwkvl::Model> model = rwkvl::test::load_tiny("5v2-730K");
  if (!model) GTEST_SKIP() << "tiny model missing";
  const std::string out = rwkvl::test::temp_dir() + "/entry.rwkvl";
  const nlohmann::json key = {{"build", "test"}, {"recipe", {{"a", 1}}}};
  rwkvl::TensorMap tm = model->tensors();
  std::string spooled_bytes, heap_bytes;
  {
    cz::Checkpoint ck(out, key, model, /*resume=*/true);  // no journal yet: from the beginning
    EXPECT_EQ(ck.resume_point(), nullptr);
    ck.begin_stage(cz::Stage::kSparseFfn, *model);
    // A spooled tensor, a tensor in memory, and the input's tensors as they are.
    const float v[4] = {1.f, -2.f, 0.5f, 3.25f};
    const rwkvl::Tensor heap = rwkvl::Tensor::from_f32("blocks.0.extra.heap", {4}, v);
    tm["blocks.0.extra.heap"] = heap;
    tm["blocks.0.ffn.key.weight"] = ck.spool()->put(model->tensors().at("blocks.0.ffn.key.weight"));
    spooled_bytes = bytes_of(tm["blocks.0.ffn.key.weight"]);
    heap_bytes = bytes_of(heap);
    ck.set_reports({{"weight_bytes_before", 1}});
    ck.save(1, tm, {{"layers", 1}}, nullptr);
    // Bytes written after the last entry (an interrupted write) are cut when the journal is read.
    ck.spool()->put(model->tensors().at("blocks.1.ffn.key.weight"));
  }
  cz::Checkpoint again(out, key, model, /*resume=*/true);
  const cz::ResumePoint* rp = again.resume_point();
  ASSERT_NE(rp, nullptr);
  EXPECT_EQ(rp->stage, cz::Stage::kSparseFfn);
  EXPECT_EQ(rp->unit, 1);
  EXPECT_EQ(rp->state, (nlohmann::json{{"layers", 1}}));
  EXPECT_EQ(rp->reports, (nlohmann::json{{"weight_bytes_before", 1}}));
  ASSERT_EQ(rp->current.size(), tm.size());
  ASSERT_EQ(rp->base.size(), model->tensors().size());
  for (const auto& [name, t] : tm) {
    ASSERT_TRUE(rp->current.count(name)) << name;
    EXPECT_EQ(bytes_of(rp->current.at(name)), bytes_of(t)) << name;
    EXPECT_EQ(rp->current.at(name).shape, t.shape) << name;
  }
  EXPECT_EQ(bytes_of(rp->current.at("blocks.0.extra.heap")), heap_bytes);
  EXPECT_EQ(bytes_of(rp->current.at("blocks.0.ffn.key.weight")), spooled_bytes);
  EXPECT_EQ(rp->current.at("blocks.1.att.key.weight").data, model->tensors().at("blocks.1.att.key.weight").data)
      << "a tensor of the input is the input's";
  EXPECT_LT(again.spool()->bytes(), spooled_bytes.size() + 4096) << "the spool was not cut to the entry";

  // Another key: refused, naming the field; the journal stays.
  const nlohmann::json other = {{"build", "test"}, {"recipe", {{"a", 2}}}};
  try {
    cz::Checkpoint refused(out, other, model, true);
    ADD_FAILURE() << "a journal of another recipe was continued";
  } catch (const rwkvl::Error& e) {
    EXPECT_EQ(e.code(), rwkvl::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("another recipe"), std::string::npos) << e.what();
  }
  again.finish();
  struct stat st {};
  EXPECT_NE(stat((out + ".journal").c_str(), &st), 0) << "finish() leaves the folder";
}

TEST(Checkpoint, ACalibrationSnapshotContinuesWithTheSameNumbers) {
  for (const char* name : {"5v2-730K", "7v0-834K"}) {
    const std::shared_ptr<rwkvl::Model> model = rwkvl::test::load_tiny(name);
    if (!model) GTEST_SKIP() << "tiny model missing";
    std::mt19937 rng(5);
    std::vector<int32_t> tokens(200);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(model->config().n_vocab));
    const int L = model->config().n_layer;
    const size_t n = tokens.size() * static_cast<size_t>(model->config().n_embd);
    cz::LayerwiseCalibration whole(model, tokens, 2, 64);
    for (int l = 0; l < L; ++l) whole.advance(model, l);

    const std::string snap = rwkvl::test::temp_dir() + "/calib-" + name + ".bin";
    {
      cz::LayerwiseCalibration first(model, tokens, 2, 64);
      for (int l = 0; l < 2; ++l) first.advance(model, l);
      first.save(snap);
    }
    cz::LayerwiseCalibration resumed(model, tokens, 1, 64);
    resumed.load(snap);
    EXPECT_EQ(resumed.next_layer(), 2);
    for (int l = 2; l < L; ++l) resumed.advance(model, l);
    EXPECT_EQ(std::memcmp(resumed.stream(), whole.stream(), n * sizeof(float)), 0) << name;

    // One flipped byte is found; other sizes are refused.
    std::string bytes = rwkvl::test::read_file(snap);
    bytes[bytes.size() / 2] ^= 0x10;
    std::ofstream(snap, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    cz::LayerwiseCalibration damaged(model, tokens, 1, 64);
    EXPECT_THROW(damaged.load(snap), rwkvl::Error);
    cz::LayerwiseCalibration shorter(model, std::vector<int32_t>(tokens.begin(), tokens.begin() + 100), 1, 64);
    EXPECT_THROW(shorter.load(snap), rwkvl::Error);
  }
}

}  // namespace
