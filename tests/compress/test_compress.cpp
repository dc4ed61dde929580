// Compressed models: factored matrices (W ~ B A + diag(d)) run through the same forward pass,
// survive the native format, and `compress::run` (svd / asvd / int8 / int4) keeps its promises:
// full-rank svd is exact, asvd never loses to svd on the calibration output error, quantisation
// stays within its error budget, and bad requests are refused before any work.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "compress/compress.h"
#include "core/error.h"
#include "core/logprob.h"
#include "compare.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_models.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

const auto& kTiny = test::kTinyVersions;
std::shared_ptr<Model> tiny(const char* v) { return test::load_tiny(v); }
using test::max_abs_diff;

const std::string& calib_text() {
  static const std::string text = [] {
    const std::string p = test::shared_file("data/wikitext2-valid.txt");
    return p.empty() ? std::string() : test::read_file(p);
  }();
  return text;
}

// Logits after feeding a fixed byte prompt (RNN and sequence mode must agree for every model).
std::vector<float> logits_of(const std::shared_ptr<const Model>& m, size_t chunk = 1) {
  return test::logits_after(m, test::byte_tokens("The quick brown fox jumps over the lazy dog", 64), chunk, 2);
}

// Mean NLL of a byte text under a model (a small perplexity for quantisation checks).
double mean_nll(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks) {
  Session ctx(m, 2);
  State st;
  st.reset(m->config());
  const size_t V = static_cast<size_t>(m->config().n_vocab);
  std::vector<float> all(toks.size() * V);
  ctx.eval(st, toks.data(), toks.size(), 64, nullptr, all.data());
  double s = 0;
  for (size_t i = 0; i + 1 < toks.size(); ++i) s += logprob::nll(all.data() + i * V, V, toks[i + 1]);
  return s / static_cast<double>(toks.size() - 1);
}

// Factors built by hand (A = I, B = W - diag(d), d = diag(W) / 2): the runtime must compute
// exactly B (A x) + d x = W x, in RNN and sequence mode, and after a native save / load.
TEST(Factored, HandBuiltFactorsReproduceTheDenseModel) {
  for (const char* v : kTiny) {
    auto m = tiny(v);
    if (!m) GTEST_SKIP() << "tiny models not found";
    const std::vector<float> ref = logits_of(m);
    TensorMap tm = m->tensors();
    for (const char* t : {"att.key", "att.output", "ffn.value"}) {
      const std::string base = std::string("blocks.1.") + t;
      const Tensor w = tm.at(base + ".weight");
      const int64_t rows = w.rows(), cols = w.cols();
      std::vector<float> W = w.to_f32(), A(static_cast<size_t>(cols * cols), 0.f), d;
      for (int64_t i = 0; i < cols; ++i) A[static_cast<size_t>(i * cols + i)] = 1.f;
      if (rows == cols) {
        d.resize(static_cast<size_t>(rows));
        for (int64_t i = 0; i < rows; ++i) {
          d[static_cast<size_t>(i)] = W[static_cast<size_t>(i * cols + i)] / 2;
          W[static_cast<size_t>(i * cols + i)] -= d[static_cast<size_t>(i)];
        }
      }
      tm.erase(base + ".weight");
      tm[base + ".lr_a"] = Tensor::from_f32(base + ".lr_a", {cols, cols}, A.data());
      tm[base + ".lr_b"] = Tensor::from_f32(base + ".lr_b", {rows, cols}, W.data());
      if (!d.empty()) tm[base + ".lr_d"] = Tensor::from_f32(base + ".lr_d", {rows}, d.data());
    }
    auto f = Model::from_canonical(tm, m->config(), m->source_kind(), {});
    EXPECT_TRUE(f->layer(1).att_k.factored());
    EXPECT_NE(f->layer(1).att_k.d, nullptr);
    EXPECT_LE(max_abs_diff(logits_of(f), ref), 1e-4f) << v;
    EXPECT_LE(max_abs_diff(logits_of(f, 16), ref), 1e-4f) << v;
    const std::string path = test::temp_dir() + "/hand-" + v + ".rwkvl";
    f->save_native(path, "keep");
    auto g = Model::load(path, {});
    EXPECT_TRUE(g->layer(1).ffn_v.factored());
    EXPECT_EQ(max_abs_diff(logits_of(g), logits_of(f)), 0.f) << v;
  }
}

TEST(Factored, InconsistentFactorsAreRejected) {
  auto m = tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  const int64_t C = m->config().n_embd;
  TensorMap base = m->tensors();
  base.erase("blocks.0.att.key.weight");
  std::vector<float> z(static_cast<size_t>(C * C), 0.f);
  {  // lr_a without lr_b
    TensorMap tm = base;
    tm["blocks.0.att.key.lr_a"] = Tensor::from_f32("blocks.0.att.key.lr_a", {8, C}, z.data());
    EXPECT_THROW(Model::from_canonical(tm, m->config(), m->source_kind(), {}), Error);
  }
  {  // wrong inner dimension
    TensorMap tm = base;
    tm["blocks.0.att.key.lr_a"] = Tensor::from_f32("blocks.0.att.key.lr_a", {8, C}, z.data());
    tm["blocks.0.att.key.lr_b"] = Tensor::from_f32("blocks.0.att.key.lr_b", {C, 9}, z.data());
    EXPECT_THROW(Model::from_canonical(tm, m->config(), m->source_kind(), {}), Error);
  }
  {  // diagonal of the wrong length
    TensorMap tm = base;
    tm["blocks.0.att.key.lr_a"] = Tensor::from_f32("blocks.0.att.key.lr_a", {8, C}, z.data());
    tm["blocks.0.att.key.lr_b"] = Tensor::from_f32("blocks.0.att.key.lr_b", {C, 8}, z.data());
    tm["blocks.0.att.key.lr_d"] = Tensor::from_f32("blocks.0.att.key.lr_d", {C - 1}, z.data());
    EXPECT_THROW(Model::from_canonical(tm, m->config(), m->source_kind(), {}), Error);
  }
}

// Full-rank plain SVD of every projection is the identity transformation (to float rounding).
TEST(Compress, FullRankSvdIsExact) {
  for (const char* v : kTiny) {
    auto m = tiny(v);
    if (!m) GTEST_SKIP();
    compress::Options o;
    o.lowrank = "svd";
    o.rank_frac = 1.0;
    o.force = true;
    o.dtype = "f32";
    o.targets = {"att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"};
    compress::Report rep;
    auto c = compress::run(m, o, &rep);
    int factored = 0;
    for (const auto& r : rep.matrices) factored += r.action == "factored";
    EXPECT_EQ(factored, 6 * m->config().n_layer) << v;
    EXPECT_LE(max_abs_diff(logits_of(c), logits_of(m)), 1e-3f) << v;
  }
}

// Without --force, a factorisation that saves no bytes is skipped and reported, and the matrix stays.
TEST(Compress, UnprofitableRankIsSkipped) {
  auto m = tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  compress::Options o;
  o.lowrank = "svd";
  o.rank_frac = 0.75;  // 2 * 0.75 * C^2 > C^2
  compress::Report rep;
  auto c = compress::run(m, o, &rep);
  ASSERT_FALSE(rep.matrices.empty());
  for (const auto& r : rep.matrices) EXPECT_EQ(r.action, "skipped") << r.name;
  EXPECT_FALSE(c->layer(0).att_k.factored());
  EXPECT_EQ(max_abs_diff(logits_of(c), logits_of(m)), 0.f);
}

// asvd minimises the calibration output error, so it is never worse than svd on any matrix, and at
// a lower rank the error grows.
TEST(Compress, AsvdBeatsSvdOnEveryMatrix) {
  if (calib_text().empty()) GTEST_SKIP() << "calibration text not found";
  for (const char* v : {"5v2-730K", "6v0-1m", "7v0-834K"}) {
    auto m = tiny(v);
    if (!m) GTEST_SKIP();
    compress::Options o;
    o.lowrank = "asvd";
    o.rank_frac = 0.25;
    o.targets = {"att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"};
    o.calib = test::byte_tokens(calib_text(), 2048);
    o.n_threads = 2;
    compress::Report rep;
    auto c = compress::run(m, o, &rep);
    int n = 0;
    for (const auto& r : rep.matrices) {
      if (r.action != "factored") continue;
      ++n;
      ASSERT_FALSE(std::isnan(r.err_svd));
      EXPECT_LE(r.err_asvd, r.err_svd * (1 + 1e-6) + 1e-12) << v << " " << r.name;
      EXPECT_GT(r.err_asvd, 0.0) << r.name;
    }
    EXPECT_GT(n, 0);
    // The pass is recorded with its calibration.
    ASSERT_EQ(c->passes().size(), 1u);
    EXPECT_EQ(c->passes()[0]["lowrank"]["method"], "asvd");
    EXPECT_EQ(c->passes()[0]["calibration"]["tokens"], 2048);
  }
}

// int8 (f16 per-row scales) and int4 (groups of 32) keep the model close; int4 costs more.
TEST(Compress, QuantisationStaysClose) {
  if (calib_text().empty()) GTEST_SKIP();
  auto m = tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  const std::vector<int32_t> text = test::byte_tokens(calib_text().substr(20000), 2048);
  const double base = mean_nll(m, text);
  compress::Options o;
  o.quant = "int8";
  auto q8 = compress::run(m, o, nullptr);
  o.quant = "int4";
  auto q4 = compress::run(m, o, nullptr);
  const double n8 = mean_nll(q8, text), n4 = mean_nll(q4, text);
  std::printf("  mean NLL fp32 %.4f int8 %.4f int4 %.4f\n", base, n8, n4);
  EXPECT_LE(std::exp(n8) / std::exp(base), 1.01);
  EXPECT_LE(std::exp(n4) / std::exp(base), 1.10);
  EXPECT_EQ(q8->layer(0).att_k.ref.dtype, DType::kI8);
  EXPECT_EQ(q8->layer(0).att_k.ref.scale_dtype, DType::kF16);
  EXPECT_LT(q4->weight_bytes(), q8->weight_bytes());
  // Embedding and head stay unless asked for.
  EXPECT_EQ(q8->emb().ref.dtype, DType::kF32);
}

// --budget: the weights fit the budget, ranks differ between matrices, and a budget below the
// smallest possible model is refused with the minimum stated.
TEST(Compress, BudgetIsMet) {
  if (calib_text().empty()) GTEST_SKIP();
  auto m = tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  compress::Options o;
  o.lowrank = "asvd";
  o.targets = {"att.receptance", "att.key", "att.value", "att.gate", "att.output", "ffn.key", "ffn.value"};
  o.calib = test::byte_tokens(calib_text(), 2048);
  // Budget: the model with every target at a quarter of its bytes.
  uint64_t target_bytes = 0;
  for (const auto& [name, t] : m->tensors())
    for (const auto& tg : o.targets)
      if (name.find("." + tg + ".weight") != std::string::npos) target_bytes += t.nbytes;
  o.budget = m->weight_bytes() - target_bytes + target_bytes / 4;
  compress::Report rep;
  auto c = compress::run(m, o, &rep);
  EXPECT_LE(c->weight_bytes(), o.budget);
  EXPECT_GE(c->weight_bytes(), o.budget - target_bytes / 8);  // the budget is used, not wasted
  int64_t rmin = 1 << 30, rmax = 0;
  for (const auto& r : rep.matrices)
    if (r.action == "factored") {
      rmin = std::min(rmin, r.rank);
      rmax = std::max(rmax, r.rank);
    }
  EXPECT_LT(rmin, rmax) << "the planner should spend bytes unevenly";
  o.budget = m->weight_bytes() - target_bytes;  // not even rank 8 everywhere fits
  try {
    compress::run(m, o, nullptr);
    ADD_FAILURE() << "a too small budget was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("smallest model"), std::string::npos) << e.what();
  }
}

TEST(Compress, BadRequestsAreRefused) {
  auto m = tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  auto expect_fail = [&](compress::Options o, const char* what) {
    try {
      compress::run(m, o, nullptr);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      std::printf("  %s: %s\n", what, e.what());
    }
  };
  compress::Options o;
  o.lowrank = "svd";
  o.rank_frac = 0.25;
  compress::Options bad = o;
  bad.targets = {"att.kee"};
  expect_fail(bad, "unknown target");
  bad = o;
  bad.rank_frac = 0;
  bad.rank = 0;
  expect_fail(bad, "no rank");
  bad = o;
  bad.rank_frac = 0;
  bad.rank = m->config().n_embd + 1;
  expect_fail(bad, "rank above min");
  bad = o;
  bad.lowrank = "asvd";
  bad.calib = {1, 2, 3};
  expect_fail(bad, "short calibration");
  bad = o;
  bad.lowrank = "pca";
  expect_fail(bad, "unknown method");
  bad = compress::Options{};
  expect_fail(bad, "nothing to do");
  // Already factored / already quantised.
  o.force = true;
  auto f = compress::run(m, o, nullptr);
  try {
    compress::run(f, o, nullptr);
    ADD_FAILURE() << "factoring a factored model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already factored"), std::string::npos) << e.what();
  }
  compress::Options q;
  q.quant = "int8";
  auto q8 = compress::run(m, q, nullptr);
  EXPECT_THROW(compress::run(q8, q, nullptr), Error);
}

}  // namespace
}  // namespace rwkvl
