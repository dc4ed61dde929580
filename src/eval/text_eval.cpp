#include "eval/text_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

#include "core/error.h"
#include "core/logprob.h"

namespace rwkvl::eval {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

size_t block_tokens(size_t chunk, bool under_budget) {
  if (under_budget) return chunk ? chunk : 8;
  return std::clamp<size_t>(chunk, 64, 256);
}

// LAMBADA lines are at most kLambadaMaxLine bytes (lambada.h); the figure is repeated here to keep this file
// free of the LAMBADA reader.
uint64_t reserve_bytes(size_t n_vocab, size_t block, bool text_streamed, bool lambada_streamed) {
  constexpr uint64_t kLambadaMaxLine = 16 << 10;
  uint64_t r = static_cast<uint64_t>(block) * static_cast<uint64_t>(n_vocab) * 4 + (256u << 10);
  if (text_streamed) r += TokenStream::kMaxHeldBytes;
  if (lambada_streamed) r += (64u << 10) + 4 * kLambadaMaxLine + 3 * kLambadaMaxLine * sizeof(int32_t);
  return r;
}

double block_nll(const float* logits, size_t len, size_t n_vocab, const int32_t* targets, int n_threads) {
  std::vector<double> per_token(len);
  auto work = [&](size_t t, size_t n_workers) {
    for (size_t j = t; j < len; j += n_workers) per_token[j] = logprob::nll(logits + j * n_vocab, n_vocab, targets[j]);
  };
  const size_t n_workers = std::min<size_t>(static_cast<size_t>(std::max(1, n_threads)), std::max<size_t>(1, len));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_workers; ++t) threads.emplace_back(work, t, n_workers);
  work(0, n_workers);
  for (auto& th : threads) th.join();
  double sum = 0.0;
  for (double v : per_token) sum += v;
  return sum;
}

// ---------------------------------------------------------------- TextTokens

TextTokens::TextTokens(const Tokenizer& tok, const std::string& path, int64_t max_tokens)
    : tok_(&tok), limit_(max_tokens > 0 ? static_cast<uint64_t>(max_tokens) : UINT64_MAX) {
  InputFile file = InputFile::open(path, "text file", true);
  file_size_ = file.size();
  stream_ = std::make_unique<TokenStream>(tok, std::move(file));
  // Read the first tokens now, so a text too short to evaluate fails before the model runs.
  const bool preload = max_tokens > 0 && max_tokens <= kPreloadTokens;
  held_.resize(static_cast<size_t>(std::min<uint64_t>(limit_, preload ? limit_ : 2)));
  held_.resize(pull(held_.data(), held_.size()));
  if (held_.size() < 2) {
    if (stream_->bytes_read() == 0)
      RWKVL_FAIL(kInvalidArgument, "text file '%s' is empty: perplexity needs at least 2 tokens", path.c_str());
    RWKVL_FAIL(kInvalidArgument, "perplexity needs at least 2 tokens of text (got %zu)", held_.size());
  }
  if (preload) {  // all of it is held
    stream_.reset();
    tok_ = nullptr;
  }
}

size_t TextTokens::read(int32_t* out, size_t cap) {
  size_t n = std::min(cap, held_.size() - held_pos_);
  std::copy_n(held_.data() + held_pos_, n, out);
  held_pos_ += n;
  if (held_pos_ == held_.size() && !held_.empty()) {
    std::vector<int32_t>().swap(held_);
    held_pos_ = 0;
  }
  if (n < cap && stream_) n += pull(out + n, cap - n);
  return n;
}

size_t TextTokens::pull(int32_t* out, size_t cap) {
  const size_t want = static_cast<size_t>(std::min<uint64_t>(cap, limit_ - given_));
  const size_t n = want ? stream_->read(out, want) : 0;
  for (size_t i = 0; i < n; ++i) {
    if (given_ + i > 0) bytes_ += tok_->token_bytes(out[i]).size();
  }
  given_ += n;
  return n;
}

// ---------------------------------------------------------------- the stream

double TextResult::mean_nll() const { return total_nll / static_cast<double>(predicted); }
double TextResult::ppl() const { return std::exp(mean_nll()); }
double TextResult::bpb() const {
  return bytes ? total_nll / std::log(2.0) / static_cast<double>(bytes) : std::numeric_limits<double>::quiet_NaN();
}
double TextResult::tok_per_s() const { return seconds > 0 ? static_cast<double>(predicted) / seconds : 0.0; }

TextResult eval_text(Scorer& scorer, TextTokens& text, const EvalOptions& o) {
  RWKVL_CHECK(o.n_vocab > 0);
  TextResult r;
  const size_t block = o.block ? o.block : block_tokens(o.chunk, false);
  scorer.reset();
  std::vector<float> logits(block * o.n_vocab);
  std::vector<int32_t> win(block + 1);
  // Progress counts tokens when their number is known, else bytes of the file.
  const bool by_tokens = !text.streaming() || text.limit() != UINT64_MAX;
  const uint64_t total = by_tokens ? (text.streaming() ? text.limit() : text.known()) : text.file_size();
  const char* unit = by_tokens ? "tok" : "B";
  if (o.progress) o.progress(0, total, unit);
  const double t0 = now_seconds();
  size_t have = text.read(win.data(), block + 1);  // win[0..have): the next token to feed first
  r.tokens = have;
  while (have >= 2) {
    const size_t len = have - 1;  // feed win[0..len), predict win[1..len]
    scorer.feed(win.data(), len, o.chunk, logits.data());
    r.total_nll += block_nll(logits.data(), len, o.n_vocab, win.data() + 1, o.threads);
    r.predicted += len;
    win[0] = win[len];  // the last token is fed with the next block
    const size_t got = text.read(win.data() + 1, block);
    r.tokens += got;
    have = 1 + got;
    if (o.progress) o.progress(by_tokens ? r.tokens : text.bytes_read(), total, unit);
  }
  r.seconds = now_seconds() - t0;
  r.bytes = text.predicted_bytes();
  return r;
}

}  // namespace rwkvl::eval
