// rwkvl_compress and rwkvl_ffn_sparsity_measure (the compression section of the C API) against the command
// line and against the written file: the library call writes the bytes `rwkv-lite compress` writes for the
// same flags, its report agrees with the file, bad recipes fail with a message and leave no file; the
// calibration driver's taps (by layer and role) see every token once, also for a model streamed under a
// memory budget.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/calibrate.h"
#include "rwkv_lite.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

struct ModelHandle {
  rwkvl_model* m = nullptr;
  explicit ModelHandle(const std::string& path) { EXPECT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error(); }
  ~ModelHandle() { rwkvl_model_free(m); }
};

std::string report_json(const rwkvl_compress_report& r) {
  size_t n = 0;
  EXPECT_EQ(rwkvl_compress_report_json(&r, nullptr, 0, &n), RWKVL_ERR_INVALID_ARGUMENT);  // asks for the size
  std::string s(n + 1, '\0');
  EXPECT_EQ(rwkvl_compress_report_json(&r, s.data(), s.size(), &n), RWKVL_OK);
  s.resize(n);
  return s;
}

// Runs the command line with the arguments (each one quoted).
int run_cli(const std::vector<std::string>& args) {
  std::string cmd = rwkvl::test::cli_command();
  for (const std::string& a : args) {
    cmd += " '";
    cmd += a;
    cmd += "'";
  }
  cmd += " >/dev/null 2>&1";
  return std::system(cmd.c_str());
}

// Stages in the order the callback saw them (a new entry when the stage changes).
void record_stage(const char* stage, int64_t done, int64_t total, void* user) {
  auto* seen = static_cast<std::vector<std::string>*>(user);
  EXPECT_GE(done, 0);
  EXPECT_LE(done, total);
  if (seen->empty() || seen->back() != stage) seen->push_back(stage);
}

class CompressApi : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = rwkvl::test::shared_file("reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin");
    const std::string valid = rwkvl::test::shared_file("data/wikitext2-valid.txt");
    if (model_.empty() || valid.empty()) GTEST_SKIP() << "tiny model or wikitext2-valid.txt not found";
    dir_ = rwkvl::test::temp_dir() + "/compress_api";
    fs::create_directories(dir_);
    text_ = rwkvl::test::read_file(valid).substr(0, 20000);
    calib_path_ = dir_ + "/calib.txt";
    ASSERT_EQ(rwkvl_write_file(calib_path_.c_str(), text_.data(), text_.size()), RWKVL_OK);
  }
  rwkvl_calibration text_calibration(size_t max_tokens) const {
    rwkvl_calibration c{};
    c.text = text_.data();
    c.text_len = text_.size();
    c.max_tokens = max_tokens;
    c.name = "calib.txt";  // what the command records: the file's name
    return c;
  }
  std::string model_, dir_, text_, calib_path_;
};

TEST_F(CompressApi, SameBytesAsTheCommandAndReportMatchesFile) {
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  r.lowrank = RWKVL_LOWRANK_ASVD;
  r.rank_frac = 0.25;
  r.quant = RWKVL_QUANT_INT8;
  r.sparse_ffn = 1;
  r.pred_epochs = 3;
  r.cluster_head = 16;
  r.head_epochs = 3;
  r.n_threads = 2;
  const std::string cli_out = dir_ + "/cli.rwkvl", api_out = dir_ + "/api.rwkvl";
  ASSERT_EQ(run_cli({"compress", "-m", model_, "-o", cli_out, "--lowrank", "asvd", "--rank-frac", "0.25", "--quant",
                     "int8", "--sparse-ffn", "--epochs", "3", "--cluster-head", "16", "--head-epochs", "3", "--threads",
                     "2", "--calib", calib_path_, "--calib-tokens", "2048"}),
            0);
  ModelHandle m(model_);
  const rwkvl_calibration c = text_calibration(2048);
  std::vector<std::string> stages;
  rwkvl_compress_report rep{};
  ASSERT_EQ(rwkvl_compress(m.m, &r, &c, api_out.c_str(), record_stage, &stages, &rep), RWKVL_OK) << rwkvl_last_error();
  const std::string a = rwkvl::test::read_file(cli_out), b = rwkvl::test::read_file(api_out);
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the library call and the command wrote different files (" << a.size() << " / " << b.size()
                      << " bytes)";
  EXPECT_EQ(stages, (std::vector<std::string>{"compress", "sparse-ffn", "clustering", "calibration",
                                              "distillation"}));

  // The report against the file, read back through the API.
  EXPECT_EQ(rep.out_file_bytes, b.size());
  EXPECT_EQ(rep.calib_tokens, 2048u);
  ModelHandle out(api_out);
  rwkvl_model_info info{}, in_info{};
  ASSERT_EQ(rwkvl_model_get_info(out.m, &info), RWKVL_OK);
  ASSERT_EQ(rwkvl_model_get_info(m.m, &in_info), RWKVL_OK);
  EXPECT_EQ(rep.weight_bytes_before, in_info.weight_bytes);
  EXPECT_EQ(rep.weight_bytes_after, info.weight_bytes);
  EXPECT_LT(rep.weight_bytes_after, rep.weight_bytes_before);
  EXPECT_EQ(info.sparse_ffn, 1);
  EXPECT_EQ(info.ffn_predictor, 1);
  EXPECT_EQ(rep.ffn_predictor_bytes, info.ffn_predictor_bytes);
  EXPECT_EQ(info.cluster_head, rep.cluster_k);
  EXPECT_GE(rep.cluster_k, 16);
  // v5.2 default targets: receptance, key, value, gate in each of the 12 layers, all factored or skipped.
  EXPECT_EQ(rep.matrices_factored + rep.matrices_skipped, 4 * in_info.n_layer);
  EXPECT_GT(rep.matrices_factored, 0);

  const nlohmann::json j = nlohmann::json::parse(report_json(rep));
  EXPECT_EQ(j["out"], api_out);
  EXPECT_EQ(j["out_file_bytes"].get<uint64_t>(), b.size());
  int factored = 0, quantised = 0;
  for (const auto& mr : j["matrices"]) {
    factored += mr["action"] == "factored";
    quantised += mr["action"] == "quantised";
    if (mr["action"] == "factored") {
      EXPECT_LE(mr["err_asvd"].get<double>(), mr["err_svd"].get<double>() * (1 + 1e-6) + 1e-12);
    }
  }
  EXPECT_EQ(factored, rep.matrices_factored);
  EXPECT_EQ(quantised, rep.matrices_quantised);
  EXPECT_EQ(j["pass"]["lowrank"]["method"], "asvd");
  EXPECT_EQ(j["pass"]["calibration"]["file"], "calib.txt");
  EXPECT_EQ(j["sparse_ffn"]["layers"].size(), static_cast<size_t>(in_info.n_layer));
  EXPECT_EQ(j["sparse_ffn"]["recall_holdout"].get<double>(), 0.99 + 0.01 / 4);
  EXPECT_EQ(j["cluster_head"]["k_final"].get<int>(), rep.cluster_k);
  EXPECT_GT(rep.seconds_total, 0.0);
  rwkvl_compress_report_free(&rep);
  EXPECT_EQ(rep.details, nullptr);
  size_t n = 0;
  EXPECT_EQ(rwkvl_compress_report_json(&rep, nullptr, 0, &n), RWKVL_ERR_INVALID_ARGUMENT);  // freed
}

TEST_F(CompressApi, TokensCalibrateLikeTheirText) {
  ModelHandle m(model_);
  rwkvl_tokenizer* tok = nullptr;
  ASSERT_EQ(rwkvl_tokenizer_load("byte", nullptr, &tok), RWKVL_OK);
  std::vector<int32_t> ids(text_.size());
  size_t n = 0;
  ASSERT_EQ(rwkvl_tokenize(tok, text_.data(), text_.size(), ids.data(), ids.size(), &n), RWKVL_OK);
  rwkvl_tokenizer_free(tok);
  ids.resize(1024);
  rwkvl_compress_recipe r = rwkvl_compress_default_recipe();
  r.lowrank = RWKVL_LOWRANK_SVD;
  r.rank = 8;
  r.targets = RWKVL_TARGETS_ALL;
  r.n_threads = 1;
  rwkvl_calibration by_text = text_calibration(1024), by_tokens{};
  by_tokens.tokens = ids.data();
  by_tokens.n_tokens = ids.size();
  rwkvl_compress_report a{}, b{};
  ASSERT_EQ(rwkvl_compress(m.m, &r, &by_text, (dir_ + "/t.rwkvl").c_str(), nullptr, nullptr, &a), RWKVL_OK);
  ASSERT_EQ(rwkvl_compress(m.m, &r, &by_tokens, (dir_ + "/i.rwkvl").c_str(), nullptr, nullptr, &b), RWKVL_OK);
  const nlohmann::json ja = nlohmann::json::parse(report_json(a)), jb = nlohmann::json::parse(report_json(b));
  // v5.2 has all eight projections: 8 x 12 matrices with calibration error figures, the same for both.
  ASSERT_EQ(ja["matrices"].size(), 96u);
  EXPECT_EQ(ja["matrices"], jb["matrices"]);
  EXPECT_TRUE(ja["matrices"][0]["err_svd"].is_number());
  EXPECT_EQ(ja["pass"]["calibration"]["tokens"], 1024);
  EXPECT_NE(ja["pass"]["calibration"]["fnv1a64"], jb["pass"]["calibration"]["fnv1a64"]);  // text vs token ids
  rwkvl_compress_report_free(&a);
  rwkvl_compress_report_free(&b);
}

TEST_F(CompressApi, BadRecipesFailClearlyAndWriteNothing) {
  ModelHandle m(model_);
  const std::string out = dir_ + "/bad.rwkvl";
  auto fails = [&](const rwkvl_compress_recipe& r, const rwkvl_calibration* c, const std::string& want,
                   rwkvl_status st = RWKVL_ERR_INVALID_ARGUMENT) {
    fs::remove(out);
    rwkvl_compress_report rep{};
    rep.calib_tokens = 77;
    EXPECT_EQ(rwkvl_compress(m.m, &r, c, out.c_str(), nullptr, nullptr, &rep), st) << want;
    EXPECT_NE(std::string(rwkvl_last_error()).find(want), std::string::npos) << rwkvl_last_error();
    EXPECT_FALSE(fs::exists(out)) << want;
    EXPECT_EQ(rep.calib_tokens, 0u);  // zeroed
    EXPECT_EQ(rep.details, nullptr);
  };
  const rwkvl_compress_recipe d = rwkvl_compress_default_recipe();
  const rwkvl_calibration c = text_calibration(2048);
  fails(d, nullptr, "nothing to do");
  rwkvl_compress_recipe r = d;
  r.lowrank = static_cast<rwkvl_lowrank_method>(7);
  fails(r, nullptr, "unknown low-rank method");
  r = d;
  r.quant = static_cast<rwkvl_quant>(-1);
  fails(r, nullptr, "unknown quantisation");
  r = d;
  r.lowrank = RWKVL_LOWRANK_ASVD;
  r.rank_frac = 0.25;
  fails(r, nullptr, "at least 64 tokens");
  r.rank_frac = 1.5;
  fails(r, &c, "rank-frac");
  r.rank_frac = 0.25;
  r.targets = 1u << 20;
  fails(r, &c, "unknown target bits");
  r = d;
  r.quant = RWKVL_QUANT_INT8;
  fails(r, &c, "calibration text is used by");
  r = d;
  r.sparse_ffn = 1;
  r.rank_frac = 0.5;
  fails(r, &c, "--rank-frac");
  r = d;
  r.cluster_head = 1;
  fails(r, &c, "must lie in [2,");
  r = d;
  r.sparse_ffn = 1;
  r.recall = 0;
  fails(r, &c, "recall");
  rwkvl_calibration both = c;
  const int32_t ids[] = {1, 2, 3};
  both.tokens = ids;
  both.n_tokens = 3;
  r = d;
  r.sparse_ffn = 1;
  fails(r, &both, "not both");
  std::vector<int32_t> far(100, 300);  // the vocabulary has 256 tokens
  rwkvl_calibration bad_ids{};
  bad_ids.tokens = far.data();
  bad_ids.n_tokens = far.size();
  fails(r, &bad_ids, "out of range");
  r = d;
  r.quant = RWKVL_QUANT_INT8;
  EXPECT_EQ(rwkvl_compress(m.m, &r, nullptr, dir_.c_str(), nullptr, nullptr, nullptr), RWKVL_ERR_IO);  // a folder
  EXPECT_EQ(rwkvl_compress(nullptr, &r, nullptr, out.c_str(), nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_compress(m.m, &r, nullptr, nullptr, nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);

  // The v7 model has no gate: naming it is an error, "all" leaves it out.
  const std::string v7 = rwkvl::test::shared_file("reference/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin");
  if (!v7.empty()) {
    ModelHandle m7(v7);
    r = d;
    r.lowrank = RWKVL_LOWRANK_SVD;
    r.rank = 4;
    r.targets = RWKVL_TARGET_ATT_GATE;
    fs::remove(out);
    EXPECT_EQ(rwkvl_compress(m7.m, &r, nullptr, out.c_str(), nullptr, nullptr, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(rwkvl_last_error()).find("does not exist"), std::string::npos) << rwkvl_last_error();
    r.targets = RWKVL_TARGETS_ALL;
    rwkvl_compress_report rep{};
    ASSERT_EQ(rwkvl_compress(m7.m, &r, nullptr, out.c_str(), nullptr, nullptr, &rep), RWKVL_OK) << rwkvl_last_error();
    const nlohmann::json j = nlohmann::json::parse(report_json(rep));
    EXPECT_EQ(j["pass"]["lowrank"]["targets"],
              (nlohmann::json{"att.key", "att.output", "att.receptance", "att.value", "ffn.key", "ffn.value"}));
    rwkvl_compress_report_free(&rep);
  }
}

TEST(CompressApiNames, FromStringHelpers) {
  rwkvl_lowrank_method lm = RWKVL_LOWRANK_NONE;
  EXPECT_EQ(rwkvl_lowrank_method_from_string("asvd", &lm), RWKVL_OK);
  EXPECT_EQ(lm, RWKVL_LOWRANK_ASVD);
  EXPECT_EQ(rwkvl_lowrank_method_from_string("pca", &lm), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("svd, asvd or none"), std::string::npos);
  EXPECT_EQ(lm, RWKVL_LOWRANK_ASVD);  // unchanged
  rwkvl_quant q = RWKVL_QUANT_NONE;
  EXPECT_EQ(rwkvl_quant_from_string("int4", &q), RWKVL_OK);
  EXPECT_EQ(q, RWKVL_QUANT_INT4);
  EXPECT_EQ(rwkvl_quant_from_string("", &q), RWKVL_OK);
  EXPECT_EQ(q, RWKVL_QUANT_NONE);
  EXPECT_EQ(rwkvl_quant_from_string("int3", &q), RWKVL_ERR_INVALID_ARGUMENT);
  rwkvl_head_prior p = RWKVL_HEAD_PRIOR_CALIB;
  EXPECT_EQ(rwkvl_head_prior_from_string("uniform", &p), RWKVL_OK);
  EXPECT_EQ(p, RWKVL_HEAD_PRIOR_UNIFORM);
  rwkvl_cluster_source s = RWKVL_CLUSTER_SOURCE_HEAD;
  EXPECT_EQ(rwkvl_cluster_source_from_string("emb", &s), RWKVL_OK);
  EXPECT_EQ(s, RWKVL_CLUSTER_SOURCE_EMB);
  EXPECT_EQ(rwkvl_head_prior_from_string(nullptr, &p), RWKVL_ERR_INVALID_ARGUMENT);
  uint32_t t = 0;
  EXPECT_EQ(rwkvl_targets_from_string("att.key,ffn.value", &t), RWKVL_OK);
  EXPECT_EQ(t, RWKVL_TARGET_ATT_KEY | RWKVL_TARGET_FFN_VALUE);
  EXPECT_EQ(rwkvl_targets_from_string("all", &t), RWKVL_OK);
  EXPECT_EQ(t, RWKVL_TARGETS_ALL);
  EXPECT_EQ(rwkvl_targets_from_string("att.kee", &t), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("unknown target 'att.kee'"), std::string::npos);
}

TEST_F(CompressApi, FfnSparsityEqualsTheCommand) {
  const std::string json_out = dir_ + "/stats.json";
  ASSERT_EQ(run_cli({"stats", "-m", model_, "--text", calib_path_, "--max-tokens", "1500", "--chunk", "50", "--threads",
                     "2", "--out", json_out}),
            0);
  nlohmann::json cli = nlohmann::json::parse(rwkvl::test::read_file(json_out));
  ModelHandle m(model_);
  std::vector<int32_t> ids(text_.begin(), text_.begin() + 1500);  // byte-level vocabulary
  for (int32_t& t : ids) t = static_cast<uint8_t>(t);
  rwkvl_ffn_sparsity sp{};
  ASSERT_EQ(rwkvl_ffn_sparsity_measure(m.m, ids.data(), ids.size(), 50, 1, nullptr, nullptr, &sp), RWKVL_OK)
      << rwkvl_last_error();
  size_t n = 0;
  EXPECT_EQ(rwkvl_ffn_sparsity_json(&sp, nullptr, 0, &n), RWKVL_ERR_INVALID_ARGUMENT);
  std::string s(n + 1, '\0');
  ASSERT_EQ(rwkvl_ffn_sparsity_json(&sp, s.data(), s.size(), &n), RWKVL_OK);
  s.resize(n);
  nlohmann::json api = nlohmann::json::parse(s);
  cli.erase("model");
  cli.erase("seconds");
  api.erase("seconds");
  EXPECT_EQ(api, cli);  // one thread here, two there: the figures do not depend on it
  EXPECT_EQ(sp.tokens, 1500u);
  EXPECT_EQ(sp.n_layer, 12);
  double mean = 0;
  for (int l = 0; l < sp.n_layer; ++l) {
    rwkvl_ffn_sparsity_layer L{};
    ASSERT_EQ(rwkvl_ffn_sparsity_get_layer(&sp, l, &L), RWKVL_OK);
    EXPECT_EQ(L.layer, l);
    EXPECT_LE(L.zero_frac_p10, L.zero_frac_p50);
    EXPECT_LE(L.zero_frac_p50, L.zero_frac_p90);
    EXPECT_LE(L.neurons_90, L.neurons_99);
    EXPECT_LE(L.neurons_99 + L.never_active, sp.n_ffn);
    mean += L.zero_frac_mean / sp.n_layer;
  }
  EXPECT_NEAR(mean, sp.zero_frac_mean, 1e-12);
  rwkvl_ffn_sparsity_layer L{};
  EXPECT_EQ(rwkvl_ffn_sparsity_get_layer(&sp, 12, &L), RWKVL_ERR_INVALID_ARGUMENT);
  rwkvl_ffn_sparsity_free(&sp);
  EXPECT_EQ(rwkvl_ffn_sparsity_measure(m.m, ids.data(), 0, 50, 1, nullptr, nullptr, &sp), RWKVL_ERR_INVALID_ARGUMENT);
  ids[7] = 999;
  EXPECT_EQ(rwkvl_ffn_sparsity_measure(m.m, ids.data(), ids.size(), 50, 1, nullptr, nullptr, &sp), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("out of range"), std::string::npos);
}

// The calibration driver: taps by (layer, role) see every token of every tapped layer exactly once, and the
// same inputs when the layers are streamed as copies under a memory budget.
TEST_F(CompressApi, CalibratorTapsByRoleAlsoWhenStreamed) {
  // A native file (only those can be streamed).
  const std::string native = dir_ + "/tiny.rwkvl";
  {
    ModelHandle m(model_);
    ASSERT_EQ(rwkvl_model_save(m.m, native.c_str(), "keep"), RWKVL_OK);
  }
  std::vector<int32_t> ids(text_.begin(), text_.begin() + 300);
  for (int32_t& t : ids) t = static_cast<uint8_t>(t);
  using Key = std::pair<int, rwkvl::MatRole>;
  auto collect = [&](uint64_t budget) {
    const auto model = rwkvl::Model::load(native, rwkvl::Model::LoadOptions{});
    rwkvl::compress::Calibrator cal(model, rwkvl::compress::CalibrationOptions{1, budget});
    std::map<Key, std::vector<float>> seen;
    rwkvl::compress::TapSet taps;
    taps.add(rwkvl::MatRole::kFfnV).add(3, rwkvl::MatRole::kAttK);
    cal.set_taps(taps, [&](int l, rwkvl::MatRole r, const float* X, size_t T) {
      const size_t cols = static_cast<size_t>(r == rwkvl::MatRole::kFfnV ? model->config().n_ffn : model->config().n_embd);
      auto& v = seen[{l, r}];
      v.insert(v.end(), X, X + T * cols);
    });
    size_t chunks = 0, tokens = 0;
    cal.run(ids.data(), ids.size(), 64, [&](size_t off, size_t T, float*) {
      EXPECT_EQ(off, tokens);
      tokens += T;
      ++chunks;
    });
    EXPECT_EQ(chunks, 5u);
    EXPECT_EQ(tokens, ids.size());
    if (budget > 0) {
      EXPECT_GT(cal.streamed_layer_loads(), 0u) << "no layer was streamed under the budget";
    }
    return seen;
  };
  const auto plain = collect(0);
  ASSERT_EQ(plain.size(), 13u);  // ffn.value of the 12 layers + att.key of layer 3
  EXPECT_EQ(plain.at({3, rwkvl::MatRole::kAttK}).size(), ids.size() * 64);
  EXPECT_EQ(plain.at({11, rwkvl::MatRole::kFfnV}).size(), ids.size() * 256);
  EXPECT_EQ(plain.count({2, rwkvl::MatRole::kAttK}), 0u);
  // A budget 512 KiB above the smallest the planner accepts (its refusal names it): most of the 12 layers
  // (2.4 MiB) are then streamed as copies, not the model's own matrices; the taps still fire, with the same
  // inputs.
#if defined(__SANITIZE_ADDRESS__)
  // ASan keeps freed memory in quarantine, so this process's resident memory (which the minimum counts) grows
  // with every attempt faster than a budget just above the minimum allows; the Release run checks this part.
  GTEST_SKIP() << "budget near the minimum: not under AddressSanitizer (checked in Release)";
#endif
  // The minimum counts this process's resident memory, which moves between calls: a refusal gives the new
  // minimum, tried again (a few times at most).
  uint64_t budget = 1;
  std::remove_cvref_t<decltype(plain)> streamed;
  bool ran = false;
  for (int attempt = 0; attempt < 4 && !ran; ++attempt) {
    try {
      streamed = collect(budget);
      ran = budget > 1;
    } catch (const std::exception& e) {
      const std::string msg = e.what(), key = "give --mem-budget ";
      const size_t at = msg.find(key);
      ASSERT_NE(at, std::string::npos) << msg;
      budget = std::stoull(msg.substr(at + key.size())) + (512u << 10);
    }
  }
  ASSERT_TRUE(ran) << "no budget near the minimum was accepted";
  EXPECT_EQ(streamed, plain);
}

}  // namespace
