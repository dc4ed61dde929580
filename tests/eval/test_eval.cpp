// Evaluation as library calls (rwkvl_eval_text, rwkvl_eval_lambada; src/eval) and the log-probability helpers
// (src/core/logprob), checked against independent computations:
//  - perplexity and bits per byte of a text on a tiny byte-level model against the NLL computed here in long
//    double from the logits rwkvl_eval_all_logits gives for the whole text fed at once;
//  - LAMBADA on a hand-made jsonl against the split, tokens, NLL and greedy choices computed here from the same
//    logits (context + target fed from a fresh state), one worker and two;
//  - logprob against values worked out by hand;
//  - bad inputs and misuse return the documented statuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/logprob.h"
#include "rwkv_lite.h"
#include "test_util.h"

namespace {

using rwkvl::test::read_file;
using rwkvl::test::shared_file;
using rwkvl::test::temp_dir;
using rwkvl::test::write_file;

// Independent: -log softmax(z)[t] in long double, without the library's helper.
long double ref_nll(const float* z, size_t n, int32_t t) {
  long double mx = z[0];
  for (size_t i = 1; i < n; ++i) mx = std::max<long double>(mx, z[i]);
  long double s = 0;
  for (size_t i = 0; i < n; ++i) s += std::exp(static_cast<long double>(z[i]) - mx);
  return std::log(s) + mx - static_cast<long double>(z[t]);
}

int32_t ref_argmax(const float* z, size_t n) {
  int32_t b = 0;
  for (size_t i = 0; i < n; ++i)
    if (z[i] > z[b]) b = static_cast<int32_t>(i);
  return b;
}

struct Tiny {
  rwkvl_model* model = nullptr;
  rwkvl_tokenizer* tok = nullptr;
  size_t n_vocab = 0;
  ~Tiny() {
    rwkvl_tokenizer_free(tok);
    rwkvl_model_free(model);
  }
  bool load() {
    const std::string path = shared_file("reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin");
    if (path.empty()) return false;
    EXPECT_EQ(rwkvl_model_load(path.c_str(), nullptr, &model), RWKVL_OK) << rwkvl_last_error();
    EXPECT_EQ(rwkvl_tokenizer_for_model(model, path.c_str(), nullptr, &tok), RWKVL_OK) << rwkvl_last_error();
    rwkvl_model_info info{};
    EXPECT_EQ(rwkvl_model_get_info(model, &info), RWKVL_OK);
    n_vocab = static_cast<size_t>(info.n_vocab);
    return model && tok;
  }
  // Logits after every token of ids, fed at once from a fresh state.
  std::vector<float> all_logits(const std::vector<int32_t>& ids) const {
    rwkvl_context* ctx = nullptr;
    rwkvl_state* st = nullptr;
    EXPECT_EQ(rwkvl_context_new(model, 1, &ctx), RWKVL_OK);
    EXPECT_EQ(rwkvl_state_new(model, &st), RWKVL_OK);
    std::vector<float> out(ids.size() * n_vocab);
    EXPECT_EQ(rwkvl_eval_all_logits(ctx, st, ids.data(), ids.size(), 1, out.data()), RWKVL_OK) << rwkvl_last_error();
    rwkvl_state_free(st);
    rwkvl_context_free(ctx);
    return out;
  }
};

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

// ---------------------------------------------------------------- logprob

TEST(Logprob, HandComputedValues) {
  const float z[3] = {0.f, std::log(3.f), 0.f};  // softmax = 1/5, 3/5, 1/5
  EXPECT_NEAR(rwkvl::logprob::log_sum_exp(z, 3), std::log(5.0), 1e-7);
  EXPECT_NEAR(rwkvl::logprob::nll(z, 3, 0), std::log(5.0), 1e-7);
  EXPECT_NEAR(rwkvl::logprob::nll(z, 3, 1), std::log(5.0 / 3.0), 1e-7);
  float p[3], lp[3];
  rwkvl::logprob::softmax(z, 3, p);
  rwkvl::logprob::log_softmax(z, 3, lp);
  EXPECT_NEAR(p[1], 0.6, 1e-7);
  EXPECT_NEAR(lp[2], std::log(0.2), 1e-6);
  // Large logits do not overflow (shifted by the maximum).
  const float big[2] = {1000.f, 1000.f};
  EXPECT_NEAR(rwkvl::logprob::nll(big, 2, 1), std::log(2.0), 1e-9);
  // KL(p || q) for p = (1/2, 1/2), q = (1/5, 4/5): 1/2 ln(5/2) + 1/2 ln(5/8).
  const float pl[2] = {0.f, 0.f}, ql[2] = {0.f, std::log(4.f)};
  EXPECT_NEAR(rwkvl::logprob::kl_divergence(pl, ql, 2), 0.5 * std::log(2.5) + 0.5 * std::log(0.625), 1e-7);
  EXPECT_NEAR(rwkvl::logprob::kl_divergence(z, z, 3), 0.0, 1e-12);
  EXPECT_EQ(rwkvl::logprob::kl_term(0.0, -5.0), 0.0);
  const float ties[4] = {1.f, 3.f, 3.f, 2.f};
  EXPECT_EQ(rwkvl::logprob::argmax(ties, 4), 1);  // ties: the lowest index
}

// logprob::argmax (16 lanes, then the first occurrence) equals the one-compare-per-element loop on every size around
// the lane width and a World-sized vocabulary, with ties, NaNs (at 0, inside, everywhere), infinities and signed zeros.
TEST(LogProb, ArgmaxEqualsTheRunningBestLoop) {
  std::mt19937 rng(7);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  int checked = 0;
  for (size_t n : {size_t{1}, size_t{2}, size_t{15}, size_t{16}, size_t{17}, size_t{31}, size_t{33}, size_t{100},
                   size_t{65536}, size_t{65529}}) {
    for (int pattern = 0; pattern < 9; ++pattern) {
      std::uniform_int_distribution<int> small(-3, 3);  // few distinct values: many ties
      std::vector<float> z(n);
      for (float& v : z) v = static_cast<float>(small(rng));
      std::uniform_int_distribution<size_t> at(0, n - 1);
      switch (pattern) {
        case 1: z[0] = nan; break;
        case 2: for (int k = 0; k < 5; ++k) z[at(rng)] = nan; break;
        case 3: std::fill(z.begin(), z.end(), nan); break;
        case 4: std::fill(z.begin(), z.end(), -inf); break;
        case 5: z[at(rng)] = inf; z[at(rng)] = inf; break;
        case 6: for (float& v : z) v = (rng() & 1) ? 0.f : -0.f; break;
        case 7: std::fill(z.begin(), z.end(), -inf); z[n - 1] = nan; z[at(rng)] = -1.f; break;
        case 8: for (float& v : z) v = std::uniform_real_distribution<float>(-30.f, 30.f)(rng); break;
        default: break;
      }
      ASSERT_EQ(rwkvl::logprob::argmax(z.data(), n), ref_argmax(z.data(), n)) << "n " << n << " pattern " << pattern;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 90);
  EXPECT_EQ(rwkvl::logprob::argmax(nullptr, 0), 0);
}

// ---------------------------------------------------------------- perplexity and bits per byte

TEST(EvalText, MatchesNllFromAllLogits) {
  Tiny t;
  if (!t.load()) GTEST_SKIP() << "tiny model not found";
  std::string text;
  while (text.size() < 300) text += "The quick brown fox jumps over the lazy dog; caf\xC3\xA9 au lait. ";
  text.resize(300);
  const std::string path = temp_dir() + "/text.txt";
  write_file(path, text);
  const std::vector<int32_t> ids = bytes_of(text);
  const std::vector<float> logits = t.all_logits(ids);
  long double want = 0;
  for (size_t j = 0; j + 1 < ids.size(); ++j) want += ref_nll(logits.data() + j * t.n_vocab, t.n_vocab, ids[j + 1]);

  for (int threads : {1, 2}) {
    for (int64_t max_tokens : {int64_t{0}, int64_t{300}, int64_t{100000}}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", max_tokens " + std::to_string(max_tokens));
      rwkvl_context* ctx = nullptr;
      ASSERT_EQ(rwkvl_context_new(t.model, threads, &ctx), RWKVL_OK);
      rwkvl_text_tokens* tt = nullptr;
      ASSERT_EQ(rwkvl_text_tokens_open(t.tok, path.c_str(), max_tokens, &tt), RWKVL_OK) << rwkvl_last_error();
      EXPECT_EQ(rwkvl_text_tokens_streaming(tt), max_tokens == 300 ? 0 : 1);
      rwkvl_eval_params p = rwkvl_eval_default_params();
      struct Seen {
        uint64_t calls = 0, last = 0, total = 0;
      } seen;
      p.progress = [](void* u, const char* what, uint64_t done, uint64_t total, const char*) {
        auto* s = static_cast<Seen*>(u);
        EXPECT_STREQ(what, "perplexity");
        s->calls++;
        s->last = done;
        s->total = total;
      };
      p.progress_user = &seen;
      rwkvl_text_result r{};
      ASSERT_EQ(rwkvl_eval_text(ctx, tt, &p, &r), RWKVL_OK) << rwkvl_last_error();
      EXPECT_EQ(r.tokens, 300u);
      EXPECT_EQ(r.predicted, 299u);
      EXPECT_EQ(r.predicted_bytes, 299u);  // byte-level: one byte per token
      EXPECT_NEAR(r.total_nll, static_cast<double>(want), 1e-4 * static_cast<double>(want));
      EXPECT_DOUBLE_EQ(r.mean_nll, r.total_nll / 299.0);
      EXPECT_DOUBLE_EQ(r.ppl, std::exp(r.mean_nll));
      EXPECT_DOUBLE_EQ(r.bpb, r.total_nll / std::log(2.0) / 299.0);
      EXPECT_EQ(r.threads, threads);
      EXPECT_GE(seen.calls, 2u);  // the start and at least one block (300 tokens > one block of 64)
      if (max_tokens != 0) {
        EXPECT_EQ(seen.last, 300u);
      }
      // A handle is evaluated once.
      EXPECT_EQ(rwkvl_eval_text(ctx, tt, nullptr, &r), RWKVL_ERR_INVALID_ARGUMENT);
      rwkvl_text_tokens_free(tt);
      rwkvl_context_free(ctx);
    }
  }
  // max_tokens cuts the text.
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(t.model, 1, &ctx), RWKVL_OK);
  rwkvl_text_tokens* tt = nullptr;
  ASSERT_EQ(rwkvl_text_tokens_open(t.tok, path.c_str(), 50, &tt), RWKVL_OK);
  rwkvl_text_result r{};
  ASSERT_EQ(rwkvl_eval_text(ctx, tt, nullptr, &r), RWKVL_OK);
  long double want50 = 0;
  for (size_t j = 0; j + 1 < 50; ++j) want50 += ref_nll(logits.data() + j * t.n_vocab, t.n_vocab, ids[j + 1]);
  EXPECT_EQ(r.tokens, 50u);
  EXPECT_NEAR(r.total_nll, static_cast<double>(want50), 1e-4 * static_cast<double>(want50));
  rwkvl_text_tokens_free(tt);
  rwkvl_context_free(ctx);
}

TEST(EvalText, BadInputs) {
  Tiny t;
  if (!t.load()) GTEST_SKIP() << "tiny model not found";
  const std::string dir = temp_dir();
  write_file(dir + "/empty.txt", "");
  write_file(dir + "/one.txt", "x");
  rwkvl_text_tokens* tt = reinterpret_cast<rwkvl_text_tokens*>(&t);  // must be reset to NULL on failure
  EXPECT_EQ(rwkvl_text_tokens_open(t.tok, (dir + "/empty.txt").c_str(), 0, &tt), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(tt, nullptr);
  EXPECT_NE(std::string(rwkvl_last_error()).find("empty"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_text_tokens_open(t.tok, (dir + "/one.txt").c_str(), 0, &tt), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("(got 1)"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(rwkvl_text_tokens_open(t.tok, (dir + "/no-such.txt").c_str(), 0, &tt), RWKVL_ERR_IO);
  EXPECT_EQ(rwkvl_text_tokens_open(t.tok, (dir + "/one.txt").c_str(), -1, &tt), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_text_tokens_open(nullptr, (dir + "/one.txt").c_str(), 0, &tt), RWKVL_ERR_INVALID_ARGUMENT);
  rwkvl_text_result r{};
  EXPECT_EQ(rwkvl_eval_text(nullptr, nullptr, nullptr, &r), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_text_tokens_streaming(nullptr), 0);
}

// ---------------------------------------------------------------- LAMBADA

struct Passage {
  size_t line;
  std::string context, target;  // as lm-eval splits the text
};

TEST(EvalLambada, MatchesHandComputedScores) {
  Tiny t;
  if (!t.load()) GTEST_SKIP() << "tiny model not found";
  // Line 2 is blank (skipped); line 3's context ends in two spaces, which move to the target; line 5 has an
  // easy, repetitive last word (so at least one passage may be predicted correctly).
  const std::string jsonl = "{\"text\": \"the cat sat on the mat\"}\n"
                            "\n"
                            "{\"text\": \"hello there,  world\"}\n"
                            "{\"text\": \"a b c d e f\"}\n"
                            "{\"text\": \"aaaa aaaa aaaa aaaa aaaa aaaa aaaa aaaa\"}\n";
  const std::vector<Passage> want_split = {{1, "the cat sat on the", " mat"},
                                           {3, "hello there,", "  world"},
                                           {4, "a b c d e", " f"},
                                           {5, "aaaa aaaa aaaa aaaa aaaa aaaa aaaa", " aaaa"}};
  const std::string dir = temp_dir();
  const std::string path = dir + "/lambada.jsonl";
  write_file(path, jsonl);

  // Independent scores: feed context + target[:-1] at once, score the target bytes.
  long double total = 0;
  uint64_t correct = 0, target_tokens = 0;
  std::vector<long double> nll;
  std::vector<std::vector<int32_t>> greedy;
  for (const Passage& p : want_split) {
    const std::vector<int32_t> c = bytes_of(p.context), g = bytes_of(p.target);
    std::vector<int32_t> feed = c;
    feed.insert(feed.end(), g.begin(), g.end() - 1);
    const std::vector<float> L = t.all_logits(feed);
    long double s = 0;
    bool ok = true;
    std::vector<int32_t> gr;
    for (size_t j = 0; j < g.size(); ++j) {
      const float* row = L.data() + (c.size() - 1 + j) * t.n_vocab;
      s += ref_nll(row, t.n_vocab, g[j]);
      gr.push_back(ref_argmax(row, t.n_vocab));
      ok = ok && gr.back() == g[j];
    }
    nll.push_back(s);
    greedy.push_back(gr);
    total += s;
    correct += ok ? 1 : 0;
    target_tokens += g.size();
  }

  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    rwkvl_lambada* lam = nullptr;
    ASSERT_EQ(rwkvl_lambada_open(path.c_str(), 0, &lam), RWKVL_OK) << rwkvl_last_error();
    EXPECT_EQ(rwkvl_lambada_count(lam), 4u);
    rwkvl_context* ctx = nullptr;
    ASSERT_EQ(rwkvl_context_new(t.model, threads, &ctx), RWKVL_OK);
    rwkvl_lambada_result r{};
    EXPECT_EQ(rwkvl_eval_lambada(ctx, lam, nullptr, nullptr, &r), RWKVL_ERR_INVALID_ARGUMENT);  // not tokenized
    ASSERT_EQ(rwkvl_lambada_tokenize(lam, t.tok), RWKVL_OK) << rwkvl_last_error();
    EXPECT_EQ(rwkvl_lambada_tokenize(lam, t.tok), RWKVL_ERR_INVALID_ARGUMENT);  // once
    EXPECT_EQ(rwkvl_lambada_streaming(lam), 0);  // 4 passages are tokenized up front
    const std::string out_path = dir + "/details-" + std::to_string(threads) + ".jsonl";
    rwkvl_output* out = nullptr;
    ASSERT_EQ(rwkvl_output_open(out_path.c_str(), &out), RWKVL_OK);
    ASSERT_EQ(rwkvl_eval_lambada(ctx, lam, nullptr, out, &r), RWKVL_OK) << rwkvl_last_error();
    ASSERT_EQ(rwkvl_output_commit(out), RWKVL_OK);
    rwkvl_output_free(out);
    EXPECT_EQ(r.n, 4u);
    EXPECT_EQ(r.workers, threads);
    EXPECT_EQ(r.correct, correct);
    EXPECT_EQ(r.target_tokens, target_tokens);
    EXPECT_EQ(r.fallbacks, 0u);  // byte-level tokens always split at the context's end
    EXPECT_NEAR(r.total_nll, static_cast<double>(total), 1e-4 * static_cast<double>(total));
    EXPECT_DOUBLE_EQ(r.acc, static_cast<double>(correct) / 4.0);
    EXPECT_DOUBLE_EQ(r.ppl, std::exp(r.total_nll / 4.0));
    EXPECT_DOUBLE_EQ(r.token_ppl, std::exp(r.total_nll / static_cast<double>(target_tokens)));
    // Worker statistics: the contexts that ran the passages counted them (one per target token of the head).
    EXPECT_EQ(r.worker_head.tokens, threads > 1 ? target_tokens : 0u);
    // Per-passage details, in passage order.
    std::istringstream lines(read_file(out_path));
    std::string row;
    size_t i = 0;
    while (std::getline(lines, row)) {
      ASSERT_LT(i, want_split.size());
      const nlohmann::json j = nlohmann::json::parse(row);
      EXPECT_EQ(j["line"], want_split[i].line);
      EXPECT_EQ(j["context_tokens"], want_split[i].context.size());
      EXPECT_EQ(j["target"].get<std::vector<int32_t>>(), bytes_of(want_split[i].target));
      EXPECT_EQ(j["greedy"].get<std::vector<int32_t>>(), greedy[i]);
      EXPECT_NEAR(j["nll"].get<double>(), static_cast<double>(nll[i]), 1e-4 * static_cast<double>(nll[i]));
      EXPECT_EQ(j["fallback"], false);
      ++i;
    }
    EXPECT_EQ(i, want_split.size());
    EXPECT_EQ(rwkvl_eval_lambada(ctx, lam, nullptr, nullptr, &r), RWKVL_ERR_INVALID_ARGUMENT);  // once
    rwkvl_context_free(ctx);
    rwkvl_lambada_free(lam);
  }

  // max_passages: the first N.
  rwkvl_lambada* lam = nullptr;
  ASSERT_EQ(rwkvl_lambada_open(path.c_str(), 2, &lam), RWKVL_OK);
  ASSERT_EQ(rwkvl_lambada_tokenize(lam, t.tok), RWKVL_OK);
  rwkvl_context* ctx = nullptr;
  ASSERT_EQ(rwkvl_context_new(t.model, 1, &ctx), RWKVL_OK);
  rwkvl_lambada_result r{};
  ASSERT_EQ(rwkvl_eval_lambada(ctx, lam, nullptr, nullptr, &r), RWKVL_OK);
  EXPECT_EQ(r.n, 2u);
  EXPECT_NEAR(r.total_nll, static_cast<double>(nll[0] + nll[1]), 1e-4 * static_cast<double>(nll[0] + nll[1]));
  rwkvl_context_free(ctx);
  rwkvl_lambada_free(lam);
}

TEST(EvalLambada, BadFiles) {
  const std::string dir = temp_dir();
  auto open = [&](const std::string& name, const std::string& content, std::string* msg) {
    write_file(dir + "/" + name, content);
    rwkvl_lambada* lam = nullptr;
    const rwkvl_status st = rwkvl_lambada_open((dir + "/" + name).c_str(), 0, &lam);
    *msg = rwkvl_last_error();
    EXPECT_EQ(lam, nullptr);
    rwkvl_lambada_free(lam);
    return st;
  };
  std::string msg;
  EXPECT_EQ(open("bad.jsonl", "{\"text\": \"a b\"}\n{\"text\": \"unterminated}\n", &msg), RWKVL_ERR_FORMAT);
  EXPECT_NE(msg.find("line 2: not valid JSON"), std::string::npos) << msg;
  EXPECT_EQ(open("nospace.jsonl", "{\"text\": \"word\"}\n", &msg), RWKVL_ERR_FORMAT);
  EXPECT_NE(msg.find("line 1: the text has no space"), std::string::npos) << msg;
  EXPECT_EQ(open("empty.jsonl", "\n  \n", &msg), RWKVL_ERR_FORMAT);
  EXPECT_NE(msg.find("no passages"), std::string::npos) << msg;
  EXPECT_EQ(open("long.jsonl", std::string(20000, ' ') + "\n", &msg), RWKVL_ERR_FORMAT);
  EXPECT_NE(msg.find("line 1 is longer than"), std::string::npos) << msg;
  rwkvl_lambada* lam = nullptr;
  EXPECT_EQ(rwkvl_lambada_open((dir + "/no-such.jsonl").c_str(), 0, &lam), RWKVL_ERR_IO);
  EXPECT_EQ(rwkvl_lambada_open((dir + "/bad.jsonl").c_str(), -1, &lam), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_lambada_open(nullptr, 0, &lam), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_lambada_count(nullptr), 0u);
}

TEST(EvalParams, BlockAndReserve) {
  EXPECT_EQ(rwkvl_eval_block(0, 0), 64u);
  EXPECT_EQ(rwkvl_eval_block(100, 0), 100u);
  EXPECT_EQ(rwkvl_eval_block(1000, 0), 256u);
  EXPECT_EQ(rwkvl_eval_block(0, 1), 8u);
  EXPECT_EQ(rwkvl_eval_block(16, 1), 16u);
  // One block of logits plus 256 KiB of slack; a streamed text adds its stream's buffers.
  EXPECT_EQ(rwkvl_eval_reserve_bytes(256, 8, 0, 0), 8u * 256u * 4u + (256u << 10));
  EXPECT_EQ(rwkvl_eval_reserve_bytes(256, 8, 1, 0) - rwkvl_eval_reserve_bytes(256, 8, 0, 0),
            static_cast<uint64_t>(RWKVL_TEXT_STREAM_MAX_BYTES));
  EXPECT_GT(rwkvl_eval_reserve_bytes(256, 8, 0, 1), rwkvl_eval_reserve_bytes(256, 8, 0, 0));
}

}  // namespace
