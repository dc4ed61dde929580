// Generation as a library call (src/runtime/generation.h), the prefix-state cache (prefix_cache.h) and the chat
// format (chat_template.h), checked against independent references: a greedy argmax loop over Session::eval,
// log-softmax computed here in double, the reference text cut at its first stop sequence by hand, and outputs
// without the cache.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "runtime/chat_template.h"
#include "runtime/generation.h"
#include "runtime/prefix_cache.h"
#include "runtime/session.h"
#include "test_util.h"
#include "tiny_models.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {
namespace {

// The reference: feed the prompt, then argmax and feed one token at a time (ties to the lowest id).
std::vector<int32_t> greedy_reference(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& prompt, int n,
                                      State* final_state = nullptr) {
  Session s(m, 1);
  State st;
  st.reset(m->config());
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  s.eval(st, prompt.data(), prompt.size(), 0, logits.data(), nullptr);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t best = 0;
    for (size_t v = 1; v < logits.size(); ++v)
      if (logits[v] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(v);
    out.push_back(best);
    s.eval(st, &best, 1, 1, logits.data(), nullptr);
  }
  if (final_state) *final_state = st;
  return out;
}

GenerateOptions greedy(int64_t n) {
  GenerateOptions o;
  o.max_tokens = n;
  o.sampling.temperature = 0;
  o.stop_at_eos = false;
  return o;
}

struct Collected {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<std::string> pieces;
  std::vector<float> logprobs;
  std::vector<TokenLogprob> top;
};

PieceFn collect(Collected& c) {
  return [&c](const GeneratedPiece& p) {
    c.text += p.text;
    c.pieces.push_back(p.text);
    c.tokens.insert(c.tokens.end(), p.tokens.begin(), p.tokens.end());
    c.logprobs.insert(c.logprobs.end(), p.logprobs.begin(), p.logprobs.end());
    c.top.insert(c.top.end(), p.top.begin(), p.top.end());
    return true;
  };
}

std::string bytes_of(const std::vector<int32_t>& toks) {
  std::string s;
  for (int32_t t : toks) s += static_cast<char>(t);
  return s;
}

TEST(Generate, GreedyEqualsAnArgmaxLoopAndTheStateCoversTheOutput) {
  const auto m = test::load_tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  const std::vector<int32_t> prompt = test::byte_tokens("The quick brown fox");
  State want_state;
  const std::vector<int32_t> want = greedy_reference(m, prompt, 40, &want_state);

  Session s(m, 2);
  State st;
  st.reset(m->config());
  Collected c;
  const GenerateResult r = generate(s, st, *tok, prompt.data(), prompt.size(), greedy(40), nullptr, collect(c));
  EXPECT_EQ(r.finish, FinishReason::kLength);
  EXPECT_EQ(r.generated, 40);
  EXPECT_EQ(r.prompt_tokens, prompt.size());
  EXPECT_EQ(r.cached_tokens, 0u);
  EXPECT_EQ(c.tokens, want);
  EXPECT_EQ(c.text, bytes_of(want));  // byte tokens: every piece is its bytes (invalid UTF-8 passes through)
  ASSERT_EQ(st.data.size(), want_state.data.size());
  for (size_t i = 0; i < st.data.size(); ++i) ASSERT_NEAR(st.data[i], want_state.data[i], 1e-5f) << i;
}

TEST(Generate, AStopSequenceEndsTheOutputAndNoPartOfItIsShown) {
  const auto m = test::load_tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  const std::vector<int32_t> prompt = test::byte_tokens("The quick brown fox");
  const std::string ref = bytes_of(greedy_reference(m, prompt, 60));
  // A stop sequence of 3 bytes taken from the middle of the reference (it spans 3 tokens), and one that never
  // occurs but whose first byte does (held back, then released).
  const std::string stop = ref.substr(20, 3);
  const std::string never = std::string(1, ref[5]) + "\x01\x02";
  const size_t cut = ref.find(stop);
  ASSERT_NE(cut, std::string::npos);

  Session s(m, 1);
  State st;
  st.reset(m->config());
  GenerateOptions o = greedy(60);
  o.stop = {never, stop};
  Collected c;
  const GenerateResult r = generate(s, st, *tok, prompt.data(), prompt.size(), o, nullptr, collect(c));
  EXPECT_EQ(r.finish, FinishReason::kStop);
  EXPECT_EQ(c.text, ref.substr(0, cut));
  EXPECT_EQ(r.generated, static_cast<int64_t>(cut + stop.size()));  // the tokens up to the one completing the stop
  for (const std::string& p : c.pieces) EXPECT_EQ(p.find(stop), std::string::npos);
}

// True when s ends inside a UTF-8 character (a lead byte whose continuation bytes are missing).
bool ends_mid_character(const std::string& s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation: look further back
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back;
  }
  return false;
}

TEST(Generate, PiecesNeverEndInsideAUtf8Character) {
  const std::string model = test::shared_file("reference/models/rwkv5-world-l8-d256/model.pth");
  const std::string vocab = test::shared_file("reference/tokenizers/rwkv_vocab_v20230424.txt");
  if (model.empty() || vocab.empty()) GTEST_SKIP();
  const std::shared_ptr<const Model> m = Model::load(model, {});
  const auto tok = Tokenizer::world_from_file(vocab);
  const std::vector<int32_t> prompt = tok->encode("中文的句子：我们今天");
  Session s(m, 2);
  State st;
  st.reset(m->config());
  GenerateOptions o;
  o.max_tokens = 120;
  o.sampling.seed = 5;
  o.sampling.temperature = 1.0f;
  Collected c;
  generate(s, st, *tok, prompt.data(), prompt.size(), o, nullptr, collect(c));
  size_t multibyte = 0;
  for (unsigned char ch : c.text) multibyte += (ch & 0xC0) == 0xC0;
  EXPECT_GT(multibyte, 5u) << "the model should continue in Chinese: " << c.text;
  for (size_t i = 0; i + 1 < c.pieces.size(); ++i) EXPECT_FALSE(ends_mid_character(c.pieces[i])) << "piece " << i;
  // The pieces are the decoded tokens, in order.
  std::string bytes;
  for (int32_t t : c.tokens) bytes += tok->token_bytes(t);
  EXPECT_EQ(c.text, bytes);
}

TEST(Generate, LogprobsAreTheModelsLogSoftmaxBeforePenalties) {
  const auto m = test::load_tiny("6v0-1m");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  const std::vector<int32_t> prompt = test::byte_tokens("Hello");
  Session s(m, 1);
  State st;
  st.reset(m->config());
  GenerateOptions o = greedy(6);
  o.logprobs = true;
  o.top_logprobs = 3;
  o.sampling.presence_penalty = 2.0f;  // changes the choice, not the reported figures
  Collected c;
  generate(s, st, *tok, prompt.data(), prompt.size(), o, nullptr, collect(c));
  ASSERT_EQ(c.logprobs.size(), 6u);
  ASSERT_EQ(c.top.size(), 18u);
  // Replay with the chosen tokens and compute log-softmax in double here.
  State ref;
  ref.reset(m->config());
  std::vector<float> logits(256);
  s.eval(ref, prompt.data(), prompt.size(), 0, logits.data(), nullptr);
  for (size_t i = 0; i < 6; ++i) {
    double mx = -1e300, sum = 0;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    for (float v : logits) sum += std::exp(v - mx);
    const double lse = mx + std::log(sum);
    EXPECT_NEAR(c.logprobs[i], logits[static_cast<size_t>(c.tokens[i])] - lse, 1e-4) << i;
    for (int k = 0; k < 3; ++k) {
      const TokenLogprob& t = c.top[i * 3 + static_cast<size_t>(k)];
      EXPECT_NEAR(t.logprob, logits[static_cast<size_t>(t.token)] - lse, 1e-4);
      if (k > 0) {
        EXPECT_GE(c.top[i * 3 + static_cast<size_t>(k) - 1].logprob, t.logprob);
      }
    }
    int32_t best = 0;
    for (int32_t v = 1; v < 256; ++v)
      if (logits[static_cast<size_t>(v)] > logits[static_cast<size_t>(best)]) best = v;
    EXPECT_EQ(c.top[i * 3].token, best);
    s.eval(ref, &c.tokens[i], 1, 1, logits.data(), nullptr);
  }
}

TEST(Generate, ResumingFromACachedPrefixGivesTheSameOutput) {
  const auto m = test::load_tiny("7v0-834K");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  const std::vector<int32_t> a = test::byte_tokens("A long shared system prompt. ");
  std::vector<int32_t> p1 = a, p2 = a;
  for (int32_t t : test::byte_tokens("First question?")) p1.push_back(t);
  for (int32_t t : test::byte_tokens("Second one!")) p2.push_back(t);

  PrefixCache cache(16 << 20);
  Session s(m, 1);
  State st;
  GenerateOptions o = greedy(24);
  o.checkpoints = {a.size()};
  o.cache_every = 8;
  Collected c1, c2, plain;
  const GenerateResult r1 = generate(s, st, *tok, p1.data(), p1.size(), o, &cache, collect(c1));
  EXPECT_EQ(r1.cached_tokens, 0u);
  const GenerateResult r2 = generate(s, st, *tok, p2.data(), p2.size(), o, &cache, collect(c2));
  EXPECT_EQ(r2.cached_tokens, a.size());  // the message end, longer than any multiple of 8 it shares
  State fresh;
  fresh.reset(m->config());
  generate(s, fresh, *tok, p2.data(), p2.size(), greedy(24), nullptr, collect(plain));
  EXPECT_EQ(c2.tokens, plain.tokens);
  EXPECT_EQ(c2.tokens, greedy_reference(m, p2, 24));
  // The same prompt again resumes from its longest cached prefix below its length: a multiple of 8.
  const GenerateResult r3 = generate(s, st, *tok, p2.data(), p2.size(), o, &cache, nullptr);
  EXPECT_EQ(r3.cached_tokens, (p2.size() - 1) / 8 * 8);
  const PrefixCacheStats cs = cache.stats();
  EXPECT_EQ(cs.hits, 2u);
  EXPECT_EQ(cs.misses, 1u);
}

TEST(PrefixCache, LongestPrefixWinsAndTheLeastRecentlyUsedGoesFirst) {
  const std::vector<float> state(1000, 1.0f);
  const uint64_t one = PrefixCache::entry_bytes(4, state.size());
  PrefixCache cache(3 * one + one / 2);  // three entries of 4 tokens fit, not four
  const std::vector<int32_t> t = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> s1 = state, s2 = state, s3 = state, out;
  s1[0] = 1, s2[0] = 2, s3[0] = 3;
  cache.insert(t.data(), 2, s1);
  cache.insert(t.data(), 4, s2);
  EXPECT_EQ(cache.lookup(t.data(), 8, 8, out), 4u);
  EXPECT_EQ(out[0], 2.0f);
  EXPECT_EQ(cache.lookup(t.data(), 8, 3, out), 2u);  // max_len bounds the prefix
  EXPECT_EQ(out[0], 1.0f);
  const std::vector<int32_t> other = {1, 2, 9, 9};
  EXPECT_EQ(cache.lookup(other.data(), 4, 4, out), 2u);  // shares 2 tokens only
  EXPECT_EQ(cache.lookup(other.data() + 1, 3, 3, out), 0u);
  // Fill past the capacity: the least recently used entry (4 tokens: the 2-token entry was used last) goes.
  const std::vector<int32_t> u = {7, 7, 7, 7}, w = {8, 8, 8, 8};
  cache.insert(u.data(), 4, s3);
  cache.insert(w.data(), 4, s3);
  const PrefixCacheStats st = cache.stats();
  EXPECT_LE(st.bytes, st.capacity);
  EXPECT_EQ(st.evictions, 1u);
  EXPECT_EQ(cache.lookup(t.data(), 8, 8, out), 2u);
  EXPECT_EQ(cache.lookup(u.data(), 4, 4, out), 4u);
  // An entry larger than the whole cache is not stored.
  const std::vector<float> huge(4u << 20);
  cache.insert(t.data(), 8, huge);
  EXPECT_EQ(cache.stats().inserts, st.inserts);
}

TEST(Generate, DeadlineAndCancelStopIt) {
  const auto m = test::load_tiny("4v0-660K");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  const std::vector<int32_t> prompt = test::byte_tokens("abc");
  Session s(m, 1);
  State st;
  st.reset(m->config());
  GenerateOptions o = greedy(1000000);
  o.deadline_seconds = 0.05;
  const GenerateResult r = generate(s, st, *tok, prompt.data(), prompt.size(), o, nullptr, nullptr);
  EXPECT_EQ(r.finish, FinishReason::kDeadline);
  EXPECT_LT(r.generated, 1000000);
  std::atomic<bool> cancel{false};
  o.deadline_seconds = 0;
  o.cancel = &cancel;
  int pieces = 0;
  const GenerateResult r2 = generate(s, st, *tok, prompt.data(), prompt.size(), o, nullptr, [&](const GeneratedPiece&) {
    if (++pieces == 10) cancel = true;
    return true;
  });
  EXPECT_EQ(r2.finish, FinishReason::kCancelled);
  EXPECT_EQ(r2.generated, 10);
  // The callback stopping it counts as cancelled too.
  const GenerateResult r3 =
      generate(s, st, *tok, prompt.data(), prompt.size(), greedy(50), nullptr, [](const GeneratedPiece&) { return false; });
  EXPECT_EQ(r3.finish, FinishReason::kCancelled);
  EXPECT_EQ(r3.generated, 1);
}

TEST(Generate, BadOptionsAreRefused) {
  const auto m = test::load_tiny("4v0-660K");
  if (!m) GTEST_SKIP();
  const auto tok = Tokenizer::byte_level();
  Session s(m, 1);
  State st;
  st.reset(m->config());
  const std::vector<int32_t> prompt = {1, 2};
  GenerateOptions o = greedy(4);
  EXPECT_THROW(generate(s, st, *tok, prompt.data(), 0, o, nullptr, nullptr), Error);
  o.stop = {""};
  EXPECT_THROW(generate(s, st, *tok, prompt.data(), 2, o, nullptr, nullptr), Error);
  o.stop.clear();
  o.top_logprobs = 21;
  EXPECT_THROW(generate(s, st, *tok, prompt.data(), 2, o, nullptr, nullptr), Error);
  o.top_logprobs = 0;
  o.sampling.top_p = 0;
  EXPECT_THROW(generate(s, st, *tok, prompt.data(), 2, o, nullptr, nullptr), Error);
  const std::vector<int32_t> bad = {1, 300};
  EXPECT_THROW(generate(s, st, *tok, bad.data(), 2, greedy(1), nullptr, nullptr), Error);
}

TEST(ChatTemplate, MessagesAreNormalisedAndTokenizedOnTheirOwn) {
  EXPECT_EQ(chat_normalize("  hello \r\n\r\n\n world \n"), "hello \n world");
  EXPECT_EQ(chat_normalize("a\n\n\nb\rc"), "a\nb\nc");
  EXPECT_EQ(chat_message_text({ChatRole::kSystem, " Be brief. "}), "System: Be brief.\n\n");
  EXPECT_EQ(chat_message_text({ChatRole::kAssistant, ""}), "Assistant:\n\n");
  const std::string vocab = test::shared_file("reference/tokenizers/rwkv_vocab_v20230424.txt");
  if (vocab.empty()) GTEST_SKIP();
  const auto tok = Tokenizer::world_from_file(vocab);
  const std::vector<ChatMessage> msgs = {{ChatRole::kSystem, "You are helpful."},
                                         {ChatRole::kUser, "Hi!\n\nHow are you?"},
                                         {ChatRole::kAssistant, "Fine."},
                                         {ChatRole::kUser, "Good."}};
  const ChatTokens all = chat_tokens(*tok, msgs, true);
  ASSERT_EQ(all.boundaries.size(), 4u);
  EXPECT_EQ(tok->decode(all.tokens),
            "System: You are helpful.\n\nUser: Hi!\nHow are you?\n\nAssistant: Fine.\n\nUser: Good.\n\nAssistant:");
  // Every earlier part of the conversation is a token prefix, ending at its boundary.
  for (size_t k = 1; k <= msgs.size(); ++k) {
    const ChatTokens part = chat_tokens(*tok, std::vector<ChatMessage>(msgs.begin(), msgs.begin() + static_cast<long>(k)), false);
    ASSERT_EQ(part.tokens.size(), all.boundaries[k - 1]);
    EXPECT_TRUE(std::equal(part.tokens.begin(), part.tokens.end(), all.tokens.begin())) << k;
  }
  EXPECT_THROW(chat_tokens(*tok, {}, false), Error);
}

}  // namespace
}  // namespace rwkvl
