#include "runtime/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "runtime/prefix_cache.h"

namespace rwkvl {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Prompt tokens fed per eval call (the deadline and cancel flag are checked in between).
constexpr size_t kPromptBlock = 256;

void check_options(const GenerateOptions& o, const Tokenizer& tok, const Session& s, const int32_t* prompt, size_t n) {
  if (n == 0 || !prompt) RWKVL_FAIL(kInvalidArgument, "the prompt is empty (generation needs at least one token)");
  if (o.max_tokens < 0) RWKVL_FAIL(kInvalidArgument, "max_tokens must be >= 0");
  if (o.top_logprobs < 0 || o.top_logprobs > 20) RWKVL_FAIL(kInvalidArgument, "top_logprobs must be in [0, 20]");
  if (!std::isfinite(o.deadline_seconds) || o.deadline_seconds < 0)
    RWKVL_FAIL(kInvalidArgument, "the deadline must be a finite number of seconds >= 0");
  for (const std::string& st : o.stop)
    if (st.empty()) RWKVL_FAIL(kInvalidArgument, "a stop sequence is empty");
  if (const char* why = Sampler::validate(o.sampling); why[0]) RWKVL_FAIL(kInvalidArgument, "%s", why);
  if (tok.vocab_size() > s.model().config().n_vocab)
    RWKVL_FAIL(kInvalidArgument, "the tokenizer (%d tokens) is larger than the model's vocabulary (%d)", tok.vocab_size(),
               s.model().config().n_vocab);
}

// Length of the longest suffix of `text` that is a proper prefix of some stop sequence (held back: the next
// token may complete it).
size_t stop_overlap(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& st : stops)
    for (size_t k = std::min(st.size() - 1, text.size()); k > keep; --k)
      if (text.compare(text.size() - k, k, st, 0, k) == 0) {
        keep = k;
        break;
      }
  return keep;
}

// The positions in (start, n] where the prompt's state goes into the cache, increasing.
std::vector<size_t> cache_points(const GenerateOptions& o, size_t start, size_t n) {
  std::vector<size_t> pts;
  for (size_t p : o.checkpoints)
    if (p > start && p <= n) pts.push_back(p);
  if (o.cache_every > 0)
    for (size_t p = (start / o.cache_every + 1) * o.cache_every; p <= n; p += o.cache_every) pts.push_back(p);
  std::sort(pts.begin(), pts.end());
  pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  return pts;
}

class Generator {
 public:
  Generator(Session& s, State& st, const Tokenizer& tok, const GenerateOptions& o, const PieceFn& fn)
      : s_(s), st_(st), tok_(tok), o_(o), fn_(fn), sampler_(o.sampling),
        n_vocab_(static_cast<size_t>(s.model().config().n_vocab)), logits_(n_vocab_), t0_(now()) {}

  GenerateResult run(const int32_t* prompt, size_t n, PrefixCache* cache);

 private:
  // Why to stop now (deadline, cancel flag), or kLength for "go on".
  bool interrupted(FinishReason& why) const {
    if (o_.cancel && o_.cancel->load(std::memory_order_relaxed)) return why = FinishReason::kCancelled, true;
    if (o_.deadline_seconds > 0 && now() - t0_ > o_.deadline_seconds) return why = FinishReason::kDeadline, true;
    return false;
  }
  bool feed_prompt(const int32_t* prompt, size_t n, PrefixCache* cache, FinishReason& why);
  void record_logprobs(int32_t token);
  bool emit(std::string text);  // false: the caller stopped
  bool take_text(int32_t token, bool& stopped);

  Session& s_;
  State& st_;
  const Tokenizer& tok_;
  const GenerateOptions& o_;
  const PieceFn& fn_;
  Sampler sampler_;
  size_t n_vocab_;
  std::vector<float> logits_, logp_;
  double t0_;
  GenerateResult r_;
  Utf8Streamer utf8_;
  std::string held_;     // decoded text not handed out yet (may start a stop sequence)
  GeneratedPiece piece_; // tokens since the last piece
};

bool Generator::feed_prompt(const int32_t* prompt, size_t n, PrefixCache* cache, FinishReason& why) {
  size_t start = 0;
  if (cache) {
    // The last prompt token is always fed: its logits start the reply.
    start = cache->lookup(prompt, n, n - 1, st_.data);
    if (start == 0) st_.reset(s_.model().config());
  }
  r_.cached_tokens = start;
  std::vector<size_t> pts = cache ? cache_points(o_, start, n) : std::vector<size_t>{};
  size_t next_pt = 0;
  for (size_t done = start; done < n;) {
    if (interrupted(why)) return false;
    size_t end = std::min(n, done + kPromptBlock);
    if (next_pt < pts.size() && pts[next_pt] < end) end = pts[next_pt];
    s_.eval(st_, prompt + done, end - done, o_.chunk, end == n ? logits_.data() : nullptr, nullptr);
    done = end;
    if (next_pt < pts.size() && pts[next_pt] == done) {
      cache->insert(prompt, done, st_.data);
      ++next_pt;
    }
  }
  return true;
}

void Generator::record_logprobs(int32_t token) {
  logp_.resize(n_vocab_);
  log_softmax(logits_.data(), n_vocab_, logp_.data());
  piece_.logprobs.push_back(logp_[static_cast<size_t>(token)]);
  if (o_.top_logprobs > 0) {
    std::vector<int32_t> idx(n_vocab_);
    for (size_t i = 0; i < n_vocab_; ++i) idx[i] = static_cast<int32_t>(i);
    const size_t k = std::min(static_cast<size_t>(o_.top_logprobs), n_vocab_);
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(), [&](int32_t a, int32_t b) {
      return logp_[static_cast<size_t>(a)] > logp_[static_cast<size_t>(b)] ||
             (logp_[static_cast<size_t>(a)] == logp_[static_cast<size_t>(b)] && a < b);
    });
    for (size_t i = 0; i < k; ++i) piece_.top.push_back({idx[i], logp_[static_cast<size_t>(idx[i])]});
  }
}

bool Generator::emit(std::string text) {
  if (text.empty() && piece_.tokens.empty()) return true;
  piece_.text = std::move(text);
  const bool go_on = !fn_ || fn_(piece_);
  piece_ = GeneratedPiece{};
  return go_on;
}

// Adds the token's text; hands out what can no longer be part of a stop sequence. Sets `stopped` when a stop
// sequence appeared (the text before it is handed out). Returns false when the caller stopped.
bool Generator::take_text(int32_t token, bool& stopped) {
  held_ += utf8_.push(tok_.token_bytes(token));
  size_t at = std::string::npos;
  for (const std::string& st : o_.stop) at = std::min(at, held_.find(st));
  if (at != std::string::npos) {
    stopped = true;
    held_.resize(at);
    return emit(std::move(held_));
  }
  const size_t keep = stop_overlap(held_, o_.stop);
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  if (out.empty()) return true;  // the tokens wait for their text
  return emit(std::move(out));
}

GenerateResult Generator::run(const int32_t* prompt, size_t n, PrefixCache* cache) {
  r_.prompt_tokens = n;
  FinishReason why = FinishReason::kLength;
  if (!feed_prompt(prompt, n, cache, why)) {
    r_.finish = why;
    r_.prompt_seconds = now() - t0_;
    return r_;
  }
  const double t1 = now();
  r_.prompt_seconds = t1 - t0_;
  bool fed_all = true;
  int32_t last = -1;
  bool stopped = false;
  for (int64_t i = 0; i < o_.max_tokens; ++i) {
    if (i > 0) {
      if (interrupted(why)) break;
      s_.eval(st_, &last, 1, 1, logits_.data(), nullptr);
    }
    const int32_t eos = 0;
    // Ids past the tokenizer's vocabulary (a padded head) have no text: never sampled.
    for (size_t v = static_cast<size_t>(tok_.vocab_size()); v < n_vocab_; ++v)
      logits_[v] = -std::numeric_limits<float>::infinity();
    if (o_.logprobs) logp_.assign(logits_.begin(), logits_.end());  // kept raw: penalties change logits_
    if (o_.ban_eos) logits_[eos] = -std::numeric_limits<float>::infinity();
    const int32_t token = sampler_.sample(logits_.data(), n_vocab_);
    sampler_.accept(token);
    if (i == 0) r_.first_token_seconds = now() - t0_;
    ++r_.generated;
    last = token;
    fed_all = false;
    if (o_.stop_at_eos && token == eos) {
      why = FinishReason::kEos;
      break;
    }
    piece_.tokens.push_back(token);
    if (o_.logprobs) {
      logits_.swap(logp_);  // the raw logits back for log-softmax
      record_logprobs(token);
    }
    if (!take_text(token, stopped)) {
      why = FinishReason::kCancelled;
      break;
    }
    if (stopped) {
      why = FinishReason::kStop;
      break;
    }
  }
  if (!stopped) {
    held_ += utf8_.flush();
    emit(std::move(held_));
  }
  if (o_.feed_last && !fed_all && last >= 0) s_.eval(st_, &last, 1, 1, nullptr, nullptr);
  r_.finish = why;
  r_.generation_seconds = now() - t1;
  return r_;
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
  }
  return "length";
}

void log_softmax(const float* logits, size_t n, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(logits[i] - lse);
}

GenerateResult generate(Session& session, State& state, const Tokenizer& tok, const int32_t* prompt, size_t n,
                        const GenerateOptions& options, PrefixCache* cache, const PieceFn& on_piece) {
  check_options(options, tok, session, prompt, n);
  Generator g(session, state, tok, options, on_piece);
  return g.run(prompt, n, cache);
}

}  // namespace rwkvl
