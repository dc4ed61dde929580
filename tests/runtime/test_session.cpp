// The session (src/runtime/session.h, rwkvl_session in the C API): built once from one parameter struct,
// the same outputs whichever way its settings arrive, every budget giving the same logits.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "rwkv_lite.h"
#include "test_util.h"

namespace {

struct Handles {
  rwkvl_model* model = nullptr;
  ~Handles() { rwkvl_model_free(model); }
};

// A random v5.2 model written natively (so it can be streamed), loaded through the C API.
rwkvl_model* load_synth(const std::string& name) {
  rwkvl_synth_params sp{};
  sp.arch_major = 5;
  sp.n_layer = 6;
  sp.n_embd = 512;  // layers of 5.5 MiB: a budget a few MiB above the minimum streams them
  sp.n_vocab = 512;
  sp.dtype = "f16";
  sp.seed = 7;
  const std::string path = rwkvl::test::temp_dir() + "/" + name;
  EXPECT_EQ(rwkvl_synth(&sp, path.c_str()), RWKVL_OK) << rwkvl_last_error();
  rwkvl_model* m = nullptr;
  const rwkvl_model_params mp = rwkvl_model_default_params();
  EXPECT_EQ(rwkvl_model_load(path.c_str(), &mp, &m), RWKVL_OK) << rwkvl_last_error();
  return m;
}

std::vector<float> all_logits(rwkvl_session* s, const rwkvl_model* m, const std::vector<int32_t>& toks, size_t chunk) {
  rwkvl_state* st = nullptr;
  EXPECT_EQ(rwkvl_state_new(m, &st), RWKVL_OK);
  std::vector<float> out(toks.size() * 512);
  EXPECT_EQ(rwkvl_eval_all_logits(s, st, toks.data(), toks.size(), chunk, out.data()), RWKVL_OK) << rwkvl_last_error();
  rwkvl_state_free(st);
  return out;
}

std::vector<int32_t> tokens() {
  std::vector<int32_t> t;
  for (int i = 0; i < 24; ++i) t.push_back((i * 37 + 11) % 512);
  return t;
}

TEST(Session, DefaultsEqualAPlainContext) {
  Handles h;
  h.model = load_synth("session_plain.rwkvl");
  ASSERT_TRUE(h.model);
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(h.model, 2, &ctx), RWKVL_OK);
  rwkvl_session_params p = rwkvl_session_default_params();
  p.n_threads = 2;
  rwkvl_session* s = nullptr;
  ASSERT_EQ(rwkvl_session_new(h.model, &p, &s), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_context_threads(s), 2);
  const auto a = all_logits(ctx, h.model, tokens(), 8), b = all_logits(s, h.model, tokens(), 8);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  rwkvl_context_free(ctx);
  rwkvl_session_free(s);
}

// Under a budget every layer is streamed; the settings given at once, or by the 1.0 setters in either
// order, make the same plan and the same logits as no budget at all.
TEST(Session, BuiltOnceOrBySettersInAnyOrderGivesTheSamePlanAndLogits) {
  Handles h;
  h.model = load_synth("session_budget.rwkvl");
  ASSERT_TRUE(h.model);
  rwkvl_session_params plain = rwkvl_session_default_params();
  plain.n_threads = 1;
  rwkvl_session* ref = nullptr;
  ASSERT_EQ(rwkvl_session_new(h.model, &plain, &ref), RWKVL_OK);
  const auto want = all_logits(ref, h.model, tokens(), 4);
  rwkvl_session_free(ref);

  rwkvl_session_params p = plain;
  p.memory.budget_bytes = 1;  // probe: the error names the minimum; take a budget with every layer streamed
  rwkvl_session* s = nullptr;
  ASSERT_NE(rwkvl_session_new(h.model, &p, &s), RWKVL_OK);
  EXPECT_EQ(s, nullptr);
  EXPECT_NE(std::string(rwkvl_last_error()).find("minimum"), std::string::npos) << rwkvl_last_error();
  p.memory.budget_bytes = uint64_t{1} << 40;
  p.memory.max_chunk = 4;
  p.head.mode = RWKVL_HEAD_FULL;
  ASSERT_EQ(rwkvl_session_new(h.model, &p, &s), RWKVL_OK) << rwkvl_last_error();
  rwkvl_memory_stats ms{};
  ASSERT_EQ(rwkvl_context_memory_stats(s, &ms), RWKVL_OK);
  ASSERT_GT(ms.minimum_bytes, 0u);
  rwkvl_session_free(s);
  // The smallest budget streams every layer; the baseline is this process's RSS, so leave some room.
  p.memory.budget_bytes = ms.minimum_bytes + (uint64_t{3} << 20);
  std::string plans[3];
  // The minimum counts this process's resident memory, which moves a little between calls: a refusal names
  // the new minimum ("give --mem-budget N or more"), which is retried with the same room (a few times at most).
  auto retry_budget = [&](rwkvl_status st) {
    if (st == RWKVL_OK) return false;
    const std::string msg = rwkvl_last_error(), key = "give --mem-budget ";
    const size_t at = msg.find(key);
    EXPECT_NE(at, std::string::npos) << msg;
    if (at == std::string::npos) return false;
    p.memory.budget_bytes = std::stoull(msg.substr(at + key.size())) + (uint64_t{3} << 20);
    return true;
  };
  for (int way = 0; way < 3; ++way) {
    rwkvl_session* x = nullptr;
    for (int attempt = 0; attempt < 4; ++attempt) {
      rwkvl_session_free(x);
      x = nullptr;
      rwkvl_status st = RWKVL_OK;
      if (way == 0) {
        st = rwkvl_session_new(h.model, &p, &x);
      } else {
        EXPECT_EQ(rwkvl_context_new(h.model, 1, &x), RWKVL_OK);
        if (way == 1) {  // head first, as 1.0 documented
          EXPECT_EQ(rwkvl_context_set_head(x, &p.head), RWKVL_OK);
          st = rwkvl_context_set_memory(x, &p.memory);
        } else {  // memory first: the session makes the order irrelevant
          st = rwkvl_context_set_memory(x, &p.memory);
          if (st == RWKVL_OK) st = rwkvl_context_set_head(x, &p.head);
        }
      }
      if (!retry_budget(st)) break;
    }
    ASSERT_NE(x, nullptr);
    const auto got = all_logits(x, h.model, tokens(), 4);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << "way " << way;
    char buf[8192];
    size_t n = 0;
    ASSERT_EQ(rwkvl_context_memory_plan(x, 1, buf, sizeof buf, &n), RWKVL_OK) << rwkvl_last_error();
    plans[way] = buf;
    rwkvl_memory_stats st{};
    ASSERT_EQ(rwkvl_context_memory_stats(x, &st), RWKVL_OK);
    EXPECT_GT(st.layer_loads, 0u) << "way " << way << ": nothing was streamed";
    rwkvl_session_free(x);
  }
  EXPECT_NE(plans[0].find("\"budget\""), std::string::npos) << plans[0];
}

TEST(Session, ConfigureFailureLeavesDefaults) {
  Handles h;
  h.model = load_synth("session_configure.rwkvl");
  ASSERT_TRUE(h.model);
  rwkvl_session_params p = rwkvl_session_default_params();
  p.n_threads = 1;
  rwkvl_session* s = nullptr;
  ASSERT_EQ(rwkvl_session_new(h.model, &p, &s), RWKVL_OK);
  rwkvl_session_params bad = p;
  bad.ffn.mode = RWKVL_FFN_PREDICT;  // the synthetic model has no neuron bundles
  EXPECT_EQ(rwkvl_context_configure(s, &bad), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("neuron-bundled"), std::string::npos) << rwkvl_last_error();
  bad = p;
  bad.head.p = 1.5;  // outside (0, 1]
  EXPECT_EQ(rwkvl_context_configure(s, &bad), RWKVL_ERR_INVALID_ARGUMENT);
  // still usable, with the defaults
  rwkvl_ffn_stats fs{};
  ASSERT_EQ(rwkvl_context_ffn_stats(s, &fs), RWKVL_OK);
  EXPECT_EQ(fs.mode, RWKVL_FFN_DENSE);
  EXPECT_EQ(all_logits(s, h.model, tokens(), 4).size(), tokens().size() * 512);
  EXPECT_EQ(rwkvl_session_new(nullptr, &p, &s), RWKVL_ERR_INVALID_ARGUMENT);
  rwkvl_session_free(s);
}

}  // namespace
