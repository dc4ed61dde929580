// rwkv-lite eval, perplexity and logits: feeding text from a fresh state and reading the logits.
//
// eval = perplexity + bits per byte over one text stream, LAMBADA (lm-eval's lambada_openai protocol),
// model size, resident weights, peak RSS and speed: the figures every compression step is judged by.
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace rwkvl::cli {

namespace {

// -log softmax(logits)[target], in double.
double nll(const float* logits, size_t n, int32_t target) {
  float mx = logits[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return std::log(sum) + mx - static_cast<double>(logits[target]);
}

// NLL of targets[j] under logits row j for j < len, spread over n_threads threads; summed in token order
// so the result does not depend on the thread count.
double block_nll(const float* logits, size_t len, size_t n_vocab, const int32_t* targets, int n_threads) {
  std::vector<double> per_token(len);
  auto work = [&](size_t t, size_t n_workers) {
    for (size_t j = t; j < len; j += n_workers) per_token[j] = nll(logits + j * n_vocab, n_vocab, targets[j]);
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

std::vector<int32_t> parse_token_list(const Args& args, const std::string& list) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < INT32_MIN || v > INT32_MAX) {
      args.fail("invalid token id '" + item + "' in --tokens (expected comma-separated integers)");
    }
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

// ---------------------------------------------------------------- perplexity over one stream

// Up to this many tokens (--max-tokens) are read before the model runs, so the tokenizer can be freed before a
// memory plan; a longer or unlimited text is tokenized while it is evaluated, holding a bounded window.
constexpr int64_t kPreloadTokens = 1 << 16;

// The tokens of the text file (or standard input for "-"), at most max_tokens (0 = all): read in pieces, so only
// what those tokens need is read and memory stays bounded for any file size. Counts the UTF-8 bytes of every
// token after the first (the predicted ones), for bits per byte.
class TextTokens {
 public:
  TextTokens(const rwkvl_tokenizer* tok, const std::string& path, int64_t max_tokens)
      : tok_(tok), path_(path), limit_(max_tokens > 0 ? static_cast<uint64_t>(max_tokens) : UINT64_MAX) {
    stream_ = std::make_unique<TextStream>(tok, path, "text file");
    // Read the first tokens now, so a text too short to evaluate fails before the model runs.
    held_.resize(static_cast<size_t>(std::min<uint64_t>(limit_, max_tokens > 0 && max_tokens <= kPreloadTokens ? limit_ : 2)));
    held_.resize(pull(held_.data(), held_.size()));
    if (held_.size() < 2) {
      if (stream_->bytes_read() == 0) throw Failure("text file '" + path + "' is empty: perplexity needs at least 2 tokens");
      throw Failure("perplexity needs at least 2 tokens of text (got " + std::to_string(held_.size()) + ")");
    }
    if (max_tokens > 0 && max_tokens <= kPreloadTokens) stream_.reset();  // all of it is held
  }
  // Whether tokens are still read from the file (the tokenizer must stay); false when they are all held.
  bool streaming() const { return stream_ != nullptr; }
  // Tokens known so far: all of them when !streaming().
  uint64_t known() const { return given_; }
  uint64_t limit() const { return limit_; }
  uint64_t file_size() const {  // 0 for standard input
    std::error_code ec;
    const uintmax_t n = path_ == "-" ? 0 : std::filesystem::file_size(path_, ec);
    return ec ? 0 : static_cast<uint64_t>(n);
  }
  uint64_t bytes_read() const { return stream_ ? stream_->bytes_read() : 0; }  // while streaming()
  uint64_t predicted_bytes() const { return bytes_; }

  // Up to cap tokens into out (0 at the end).
  size_t read(int32_t* out, size_t cap) {
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

 private:
  size_t pull(int32_t* out, size_t cap) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(cap, limit_ - given_));
    const size_t n = want ? stream_->read(out, want) : 0;
    for (size_t i = 0; i < n; ++i) {
      if (given_ + i > 0) bytes_ += token_bytes(tok_, out[i]).size();
    }
    given_ += n;
    return n;
  }

  const rwkvl_tokenizer* tok_;
  std::string path_;
  uint64_t limit_;
  std::unique_ptr<TextStream> stream_;
  std::vector<int32_t> held_;
  size_t held_pos_ = 0;
  uint64_t given_ = 0, bytes_ = 0;
};

struct StreamResult {
  size_t tokens = 0;     // tokens in the stream
  size_t predicted = 0;  // tokens 1 .. tokens-1
  uint64_t bytes = 0;    // UTF-8 bytes of the predicted tokens (their decoded bytes)
  double total_nll = 0;  // nats
  double seconds = 0;    // feeding + NLL (and tokenizing, when the text is streamed)

  double mean_nll() const { return total_nll / static_cast<double>(predicted); }
  double ppl() const { return std::exp(mean_nll()); }
  double bpb() const {
    return bytes ? total_nll / std::log(2.0) / static_cast<double>(bytes) : std::numeric_limits<double>::quiet_NaN();
  }
  double tok_per_s() const { return seconds > 0 ? static_cast<double>(predicted) / seconds : 0.0; }
};

// Feeds the tokens as one stream from a fresh state (blocks of sequence mode with every logit, the same as one
// token at a time) and sums the NLL of every token after the first under the logits before it. Holds one block
// of tokens and logits at a time.
StreamResult stream_nll(rwkvl_context* ctx, const rwkvl_model* model, const rwkvl_model_info& info, TextTokens* text,
                        size_t chunk, size_t block) {
  StreamResult r;
  const StatePtr state = new_state(model);
  const size_t n_vocab = static_cast<size_t>(info.n_vocab);
  const int n_threads = rwkvl_context_threads(ctx);
  std::vector<float> logits(block * n_vocab);
  std::vector<int32_t> win(block + 1);
  // The bar counts tokens when their number is known, else bytes of the file.
  const bool by_tokens = !text->streaming() || text->limit() != UINT64_MAX;
  Progress progress("perplexity", by_tokens ? (text->streaming() ? text->limit() : text->known()) : text->file_size(),
                    by_tokens ? "tok" : "B");
  const double t0 = now_seconds();
  size_t have = text->read(win.data(), block + 1);  // win[0..have): the next token to feed first
  r.tokens = have;
  while (have >= 2) {
    const size_t len = have - 1;  // feed win[0..len), predict win[1..len]
    check(rwkvl_eval_all_logits(ctx, state.get(), win.data(), len, chunk, logits.data()));
    r.total_nll += block_nll(logits.data(), len, n_vocab, win.data() + 1, n_threads);
    r.predicted += len;
    win[0] = win[len];  // the last token is fed with the next block
    const size_t got = text->read(win.data() + 1, block);
    r.tokens += got;
    have = 1 + got;
    progress.update(by_tokens ? r.tokens : text->bytes_read());
  }
  r.seconds = now_seconds() - t0;
  r.bytes = text->predicted_bytes();
  progress.finish();
  return r;
}

// Under a memory budget the tokenizer (several MiB for the World vocabulary) goes once it is no longer needed,
// and freed heap pages go back to the system, so the plan can use that room.
void release_tokenizer(const Args& args, TokenizerPtr& tok) {
  if (!args.given("mem-budget")) return;
  tok.reset();
  release_free_memory();
}

// Tokens whose logits are held at once: big enough for sequence mode, small enough for 65k vocabularies;
// under a memory budget just one chunk.
size_t logits_block(const Settings& s, size_t chunk) {
  if (s.mem.budget_bytes) return chunk ? chunk : 8;
  return std::clamp<size_t>(chunk, 64, 256);
}

// Memory the command still allocates after planning: one block of logits and tokens (perplexity, and LAMBADA
// targets, which are fed a block at a time), the text stream's buffers when the text is read while it runs,
// LAMBADA's line, strings and tokens (lines are at most kLambadaMaxLine bytes), and slack for the C library.
constexpr size_t kLambadaMaxLine = 16 << 10;
uint64_t reserve_for(const rwkvl_model_info& info, size_t block, bool text_streamed, bool lambada) {
  uint64_t r = static_cast<uint64_t>(block) * static_cast<uint64_t>(info.n_vocab) * 4 + (256u << 10);
  if (text_streamed) r += RWKVL_TEXT_STREAM_MAX_BYTES;
  if (lambada) r += (64u << 10) + 4 * kLambadaMaxLine + 3 * kLambadaMaxLine * sizeof(int32_t);
  return r;
}

// ---------------------------------------------------------------- LAMBADA (lm-eval lambada_openai)

// Bytes of trailing whitespace as Python's str.rstrip() removes it (ASCII and Unicode white space).
size_t trailing_space_bytes(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    uint32_t cp = 0;
    const auto* b = reinterpret_cast<const unsigned char*>(s.data()) + start;
    const size_t n = end - start;
    if (n == 1 && b[0] < 0x80) cp = b[0];
    else if (n == 2 && (b[0] & 0xE0) == 0xC0) cp = (b[0] & 0x1Fu) << 6 | (b[1] & 0x3Fu);
    else if (n == 3 && (b[0] & 0xF0) == 0xE0) cp = (b[0] & 0x0Fu) << 12 | (b[1] & 0x3Fu) << 6 | (b[2] & 0x3Fu);
    else break;  // not white space (or not valid UTF-8)
    const bool space = (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
                       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
                       cp == 0x202F || cp == 0x205F || cp == 0x3000;
    if (!space) break;
    end = start;
  }
  return s.size() - end;
}

struct LambadaDoc {
  size_t line = 0;      // 1-based line of the jsonl file
  std::string context;  // the text up to the last space (trailing white space moved to the target)
  std::string target;   // " " + the last word
};

// One line of the jsonl file: false for a blank line; Failure naming the line when it is not a passage. Split as
// lm-eval's lambada_openai task does.
bool parse_lambada_line(const std::string& path, size_t line, std::string_view row, LambadaDoc* d) {
  auto bad = [&](const std::string& what) {
    return Failure("LAMBADA file '" + path + "' line " + std::to_string(line) + ": " + what);
  };
  if (row.find_first_not_of(" \t\r") == std::string_view::npos) return false;  // blank line
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(row);
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) throw bad("expected an object with a string \"text\"");
  const std::string text = j["text"].get<std::string>();
  // lm-eval: context = ' '.join(text.split(' ')[:-1]), target = ' ' + text.split(' ')[-1]; then (its
  // _encode_pair) white space at the end of the context moves to the start of the target.
  const size_t sp = text.rfind(' ');
  if (sp == std::string::npos) throw bad("the text has no space, so no last word to predict");
  d->line = line;
  d->context = text.substr(0, sp);
  d->target = text.substr(sp);
  const size_t ws = trailing_space_bytes(d->context);
  d->target.insert(0, d->context, d->context.size() - ws, ws);
  d->context.resize(d->context.size() - ws);
  if (d->context.empty()) throw bad("nothing before the last word");
  return true;
}

// Checks every line of the file (so a malformed one anywhere is reported before any work), holding one line at a
// time; returns the number of passages to evaluate: all, or the first max_docs (0 = all).
size_t count_lambada(const std::string& path, int64_t max_docs) {
  LineReader lines(path, "LAMBADA file", kLambadaMaxLine);
  std::string row;
  LambadaDoc d;
  size_t n = 0;
  while (lines.next(&row)) n += parse_lambada_line(path, lines.line_no(), row, &d) ? 1 : 0;
  if (n == 0) throw Failure("LAMBADA file '" + path + "' has no passages");
  return max_docs > 0 ? std::min(n, static_cast<size_t>(max_docs)) : n;
}

// The passages of the file, one at a time.
class LambadaReader {
 public:
  explicit LambadaReader(const std::string& path) : path_(path), lines_(path, "LAMBADA file", kLambadaMaxLine) {}
  bool next(LambadaDoc* d) {
    std::string row;
    while (lines_.next(&row)) {
      if (parse_lambada_line(path_, lines_.line_no(), row, d)) return true;
    }
    return false;
  }

 private:
  std::string path_;
  LineReader lines_;
};

struct PassageResult {
  size_t line = 0;
  std::vector<int32_t> context, target, greedy;
  bool fallback = false;  // tok(context + target) did not start with tok(context): target = tok(target)
  double nll = 0;         // summed over the target tokens, nats
  bool correct = false;   // every target token is the argmax
};

struct LambadaResult {
  uint64_t n = 0, correct = 0, target_tokens = 0, fallbacks = 0;
  double total_nll = 0, seconds = 0;
  rwkvl_ffn_stats ffn{};  // channel-mix counters of the worker contexts (not the main one)
  rwkvl_head_stats head{};
  rwkvl_memory_stats mem{};

  double acc() const { return static_cast<double>(correct) / static_cast<double>(n); }
  // lm-eval's lambada perplexity: exp(-mean over passages of the target's log-likelihood).
  double ppl() const { return std::exp(total_nll / static_cast<double>(n)); }
  // Per target token: exp(total NLL / number of target tokens).
  double token_ppl() const { return std::exp(total_nll / static_cast<double>(target_tokens)); }
};

// lm-eval's split into tokens: whole = tok(context + target), context_enc = tok(context), target tokens =
// whole[len(context_enc):]; when whole does not start with context_enc, tok(target) instead.
void tokenize_passage(const rwkvl_tokenizer* tok, const LambadaDoc& d, PassageResult* p) {
  p->line = d.line;
  p->context = tokenize(tok, d.context);
  const std::vector<int32_t> whole = tokenize(tok, d.context + d.target);
  const size_t c = p->context.size();
  if (whole.size() > c && std::equal(p->context.begin(), p->context.end(), whole.begin())) {
    p->target.assign(whole.begin() + static_cast<std::ptrdiff_t>(c), whole.end());
  } else {
    p->fallback = true;
    p->target = tokenize(tok, d.target);
  }
  if (p->context.empty() || p->target.empty()) {
    throw Failure("LAMBADA line " + std::to_string(d.line) + ": the context or the target has no tokens");
  }
}

int32_t argmax(const float* v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (v[i] > v[best]) best = i;  // ties: the lowest id, as the greedy sampler
  }
  return static_cast<int32_t>(best);
}

// One passage from a fresh state: the context without its last token is fed without logits; its last token and
// the target's tokens but the last are fed with every logit (row j predicts target[j]), at most `block` at a time.
void eval_passage(rwkvl_context* ctx, rwkvl_state* state, size_t n_vocab, size_t chunk, size_t block,
                  std::vector<float>* logits, PassageResult* p) {
  check(rwkvl_state_reset(state));
  const size_t c = p->context.size(), k = p->target.size();
  if (c > 1) check(rwkvl_eval(ctx, state, p->context.data(), c - 1, chunk, nullptr));
  std::vector<int32_t> feed(k);
  feed[0] = p->context.back();
  std::copy(p->target.begin(), p->target.end() - 1, feed.begin() + 1);
  logits->resize(std::min(k, block) * n_vocab);
  p->nll = 0;
  p->correct = true;
  p->greedy.clear();
  for (size_t off = 0; off < k; off += block) {
    const size_t len = std::min(block, k - off);
    check(rwkvl_eval_all_logits(ctx, state, feed.data() + off, len, chunk, logits->data()));
    for (size_t j = 0; j < len; ++j) {
      const float* row = logits->data() + j * n_vocab;
      p->nll += nll(row, n_vocab, p->target[off + j]);
      p->greedy.push_back(argmax(row, n_vocab));
      p->correct = p->correct && p->greedy.back() == p->target[off + j];
    }
  }
}

// Passages are independent, so they are spread over n_threads workers, each with its own single-threaded
// context and state. On the reference model (2 cores) this is 1.55x faster than one two-threaded context,
// whose per-layer hand-offs cost more than short passages gain. Passages are read from the file as the workers
// take them and their results summed in passage order, so memory is bounded and the results do not depend on
// the split.
// The passages to evaluate: tokenized up front when there are at most kPreloadPassages of them (then the tokenizer
// can be freed before a memory plan: it is larger than the tokens of the whole LAMBADA test set), else read and
// tokenized one at a time as the workers take them.
constexpr size_t kPreloadPassages = 8192;

class PassageSource {
 public:
  PassageSource(const rwkvl_tokenizer* tok, const std::string& path, size_t n_docs) : tok_(tok), reader_(path), n_(n_docs) {
    if (n_docs > kPreloadPassages) return;
    held_.resize(n_docs);
    for (PassageResult& p : held_) take(&p);
    reader_.reset();
    tok_ = nullptr;
  }
  bool streaming() const { return reader_.has_value(); }
  size_t size() const { return n_; }
  // The next passage and its index; false when all are taken. Not thread-safe: the caller locks.
  bool next(PassageResult* p, size_t* index) {
    if (next_ >= n_) return false;
    if (reader_) take(p);
    else *p = std::move(held_[next_]);
    *index = next_++;
    return true;
  }

 private:
  void take(PassageResult* p) {
    LambadaDoc d;
    if (!reader_->next(&d)) throw Failure("LAMBADA file changed while it was read");
    tokenize_passage(tok_, d, p);
  }
  const rwkvl_tokenizer* tok_;
  std::optional<LambadaReader> reader_;
  std::vector<PassageResult> held_;
  size_t n_, next_ = 0;
};

LambadaResult run_lambada(const rwkvl_model* model, rwkvl_context* main_ctx, PassageSource* source,
                          const rwkvl_model_info& info, size_t chunk, size_t block, int n_threads,
                          const Settings& settings, OutputFile* details) {
  const size_t n_docs = source->size();
  LambadaResult r;
  const size_t n_vocab = static_cast<size_t>(info.n_vocab);
  // Under a memory budget one context (its plan, its buffers) does all the passages.
  const size_t n_workers =
      settings.mem.budget_bytes ? 1 : std::min(static_cast<size_t>(std::max(1, n_threads)), n_docs);
  const int threads_each = std::max(1, n_threads / static_cast<int>(n_workers));
  std::vector<ContextPtr> contexts;
  for (size_t w = 0; w < n_workers; ++w) {
    if (n_workers == 1) break;
    contexts.push_back(new_context(model, threads_each));
    apply(settings, contexts.back().get());
  }

  std::mutex read_mutex, done_mutex;
  size_t done = 0;
  std::map<size_t, PassageResult> finished;  // results waiting for an earlier passage
  auto record = [&](size_t i, PassageResult&& p) {
    const std::lock_guard<std::mutex> lock(done_mutex);
    finished.emplace(i, std::move(p));
    for (auto it = finished.begin(); it != finished.end() && it->first == done; it = finished.erase(it), ++done) {
      const PassageResult& q = it->second;
      r.total_nll += q.nll;
      r.correct += q.correct ? 1 : 0;
      r.target_tokens += q.target.size();
      r.fallbacks += q.fallback ? 1 : 0;
      if (details) {
        const nlohmann::json j = {{"line", q.line},       {"context_tokens", q.context.size()},
                                  {"target", q.target},   {"greedy", q.greedy},
                                  {"nll", q.nll},         {"correct", q.correct},
                                  {"fallback", q.fallback}};
        details->write(j.dump() + '\n');
      }
    }
  };
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::exception_ptr error;
  Progress progress("lambada", n_docs, "passages");
  auto work = [&](size_t w) {
    try {
      rwkvl_context* ctx = n_workers == 1 ? main_ctx : contexts[w].get();
      const StatePtr state = new_state(model);
      std::vector<float> logits;
      while (!stop.load(std::memory_order_relaxed)) {
        size_t i = 0;
        PassageResult p;
        {
          const std::lock_guard<std::mutex> lock(read_mutex);
          if (!source->next(&p, &i)) break;
        }
        eval_passage(ctx, state.get(), n_vocab, chunk, block, &logits, &p);
        record(i, std::move(p));
        if (w == 0) progress.update(i + 1);  // the progress bar is drawn by the calling thread only
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      stop = true;
    }
  };
  const double t0 = now_seconds();
  std::vector<std::thread> threads;
  for (size_t w = 1; w < n_workers; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& th : threads) th.join();
  r.seconds = now_seconds() - t0;
  progress.finish();
  if (error) std::rethrow_exception(error);
  r.n = done;

  for (const ContextPtr& c : contexts) {
    add_ffn_stats(&r.ffn, ffn_stats(c.get()));
    add_head_stats(&r.head, head_stats(c.get()));
    add_memory_stats(&r.mem, memory_stats(c.get()));
  }
  return r;
}

// An output file checked before the work it records starts (so an unwritable path fails fast).
// A field of rwkvl_system_info ("... | isa avx512 | ..." -> "avx512"), "" if absent.
std::string system_field(const std::string& key) {
  const std::string info = rwkvl_system_info();
  size_t pos = 0;
  while (pos <= info.size()) {
    size_t bar = info.find(" | ", pos);
    if (bar == std::string::npos) bar = info.size();
    const std::string part = info.substr(pos, bar - pos);
    if (part.compare(0, key.size() + 1, key + " ") == 0) return part.substr(key.size() + 1);
    pos = bar + 3;
  }
  return "";
}

}  // namespace

int cmd_perplexity(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string text_path = require(args, "file");
  { const InputPtr check_text = open_input(text_path, "text file", true); }  // a bad path fails before the model loads
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  TextTokens text(tok.get(), text_path, args.integer("max-tokens"));
  const std::string tok_name = rwkvl_tokenizer_name(tok.get());
  if (!text.streaming()) release_tokenizer(args, tok);

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const size_t block = logits_block(set, chunk);
  set.mem.reserve_bytes = reserve_for(info, block, text.streaming(), false);
  if (set.mem.budget_bytes) set.mem.max_chunk = static_cast<int>(block);
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const int n_threads = rwkvl_context_threads(ctx.get());
  const StreamResult r = stream_nll(ctx.get(), model.get(), info, &text, chunk, block);
  if (args.on("json")) {
    nlohmann::json j = {{"ppl", r.ppl()},
                        {"bpb", r.bpb()},
                        {"tokens", r.tokens},
                        {"predicted", r.predicted},
                        {"mean_nll", r.mean_nll()},
                        {"tok_per_s", r.tok_per_s()},
                        {"seconds", r.seconds},
                        {"threads", n_threads},
                        {"tokenizer", tok_name}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("perplexity %.4f (mean NLL %.5f nats over %zu predicted tokens)\n", r.ppl(), r.mean_nll(),
                r.predicted);
    std::printf("tokens %zu, %.2f s, %.1f tok/s, %d thread%s, tokenizer %s\n", r.tokens, r.seconds, r.tok_per_s(),
                n_threads, n_threads == 1 ? "" : "s", tok_name.c_str());
  }
  return 0;
}

int cmd_eval(const Args& args) {
  const double t_start = now_seconds();
  const std::string model_path = require(args, "model");
  if (!args.given("text") && !args.given("lambada")) {
    args.fail("missing --text FILE (and/or --lambada FILE): nothing to evaluate");
  }
  if (args.given("lambada-out") && !args.given("lambada")) args.fail("--lambada-out needs --lambada FILE");
  // Inputs are checked before the model is loaded, so bad files fail fast; they are read while they are
  // evaluated, so memory stays bounded whatever their size.
  if (args.given("text")) { const InputPtr check_text = open_input(args.str("text"), "text file", true); }
  size_t n_docs = 0;
  const std::string lambada_path = args.given("lambada") ? args.str("lambada") : "";
  if (!lambada_path.empty()) n_docs = count_lambada(lambada_path, args.integer("lambada-max"));
  // --lambada-out: one JSON object per passage and line, written as the passages finish (in their order) to a
  // temporary that appears at the path complete once all are done.
  std::optional<OutputFile> details;
  if (args.given("lambada-out")) details.emplace(args.str("lambada-out"), "LAMBADA details file");

  std::error_code ec;
  const uintmax_t file_bytes = std::filesystem::file_size(model_path, ec);
  const double t_load0 = now_seconds();
  const ModelPtr model = load_model(args);
  const double load_seconds = now_seconds() - t_load0;
  const rwkvl_model_info info = model_info(model.get());
  TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  std::optional<TextTokens> text;
  if (args.given("text")) text.emplace(tok.get(), args.str("text"), args.integer("max-tokens"));
  std::optional<PassageSource> passages;
  if (n_docs) passages.emplace(tok.get(), lambada_path, n_docs);
  const std::string tok_name = rwkvl_tokenizer_name(tok.get());
  const bool text_streamed = text && text->streaming(), lambada_streamed = passages && passages->streaming();
  if (!text_streamed && !lambada_streamed) release_tokenizer(args, tok);

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  const size_t block = logits_block(set, chunk);
  set.mem.reserve_bytes = reserve_for(info, block, text_streamed, lambada_streamed);
  if (set.mem.budget_bytes) set.mem.max_chunk = static_cast<int>(block);
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const int n_threads = rwkvl_context_threads(ctx.get());
  std::optional<StreamResult> ppl;
  if (text) ppl = stream_nll(ctx.get(), model.get(), info, &*text, chunk, block);
  text.reset();
  std::optional<LambadaResult> lambada;
  if (n_docs) {
    lambada = run_lambada(model.get(), ctx.get(), &*passages, info, chunk, block, n_threads, set,
                          details ? &*details : nullptr);
    passages.reset();
    if (details) details->commit();
  }
  const uint64_t peak_rss = rwkvl_peak_rss_bytes();
  const double seconds = now_seconds() - t_start;
  rwkvl_ffn_stats fs = ffn_stats(ctx.get());
  rwkvl_head_stats hs = head_stats(ctx.get());
  rwkvl_memory_stats ms = memory_stats(ctx.get());
  if (lambada) {
    add_ffn_stats(&fs, lambada->ffn);
    add_head_stats(&hs, lambada->head);
    add_memory_stats(&ms, lambada->mem);
  }
  const uint64_t ffn_tokens = info.n_layer ? fs.evals / static_cast<uint64_t>(info.n_layer) : 0;

  const std::string isa = system_field("isa");
  using nlohmann::json;
  auto opt = [](bool have, auto v) { return have ? json(v) : json(nullptr); };
  const bool P = ppl.has_value(), L = lambada.has_value();
  if (args.on("json")) {
    json j = {{"model", model_path},
              {"file_kind", info.file_kind},
              {"arch", info.arch_name},
              {"weight_dtype", info.weight_dtype},
              {"n_params", info.n_params},
              {"file_bytes", ec ? json(nullptr) : json(static_cast<uint64_t>(file_bytes))},
              {"weight_bytes", info.weight_bytes},
              {"peak_rss_bytes", peak_rss},
              {"threads", n_threads},
              {"isa", isa},
              {"tokenizer", tok_name},
              {"ppl", opt(P, P ? ppl->ppl() : 0.0)},
              {"bpb", opt(P, P ? ppl->bpb() : 0.0)},
              {"mean_nll", opt(P, P ? ppl->mean_nll() : 0.0)},
              {"tokens", opt(P, P ? ppl->tokens : 0)},
              {"predicted", opt(P, P ? ppl->predicted : 0)},
              {"predicted_bytes", opt(P, P ? ppl->bytes : 0)},
              {"tok_per_s", opt(P, P ? ppl->tok_per_s() : 0.0)},
              {"ppl_seconds", opt(P, P ? ppl->seconds : 0.0)},
              {"lambada_acc", opt(L, L ? lambada->acc() : 0.0)},
              {"lambada_ppl", opt(L, L ? lambada->ppl() : 0.0)},
              {"lambada_token_ppl", opt(L, L ? lambada->token_ppl() : 0.0)},
              {"lambada_n", opt(L, L ? lambada->n : 0)},
              {"lambada_correct", opt(L, L ? lambada->correct : 0)},
              {"lambada_target_tokens", opt(L, L ? lambada->target_tokens : 0)},
              {"lambada_fallbacks", opt(L, L ? lambada->fallbacks : 0)},
              {"lambada_seconds", opt(L, L ? lambada->seconds : 0.0)},
              {"load_seconds", load_seconds},
              {"seconds", seconds}};
    if (info.sparse_ffn || fs.cache_capacity || args.on("verify")) {
      const json f = ffn_json(fs, info);
      for (auto it = f.begin(); it != f.end(); ++it) j[it.key()] = it.value();
    }
    for (const json& part : {head_json(hs), memory_json(ms, set.mem)})
      for (auto it = part.begin(); it != part.end(); ++it) j[it.key()] = it.value();
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("%-15s %s\n", "model", model_path.c_str());
  std::printf("%-15s %s %s, %s, %d layers, embd %d, vocab %d, tokenizer %s\n", "", info.file_kind, info.arch_name,
              info.weight_dtype, info.n_layer, info.n_embd, info.n_vocab, tok_name.c_str());
  if (!ec) {
    std::printf("%-15s %s (%ju bytes)\n", "file size", format_bytes(file_bytes).c_str(), file_bytes);
  }
  std::printf("%-15s %s (%llu bytes)\n", "weights held", format_bytes(info.weight_bytes).c_str(),
              static_cast<unsigned long long>(info.weight_bytes));
  std::printf("%-15s %s\n", "peak RSS", format_bytes(peak_rss).c_str());
  std::printf("%-15s %d, isa %s, load %.2f s\n", "threads", n_threads, isa.c_str(), load_seconds);
  if (P) {
    std::printf("%-15s %-12.4f %zu tokens (%zu predicted), mean NLL %.5f nats\n", "perplexity", ppl->ppl(),
                ppl->tokens, ppl->predicted, ppl->mean_nll());
    std::printf("%-15s %-12.5f over %zu UTF-8 bytes of the predicted tokens\n", "bits per byte", ppl->bpb(),
                static_cast<size_t>(ppl->bytes));
    std::printf("%-15s %-12.1f tok/s, %.2f s\n", "speed", ppl->tok_per_s(), ppl->seconds);
  }
  if (L) {
    std::printf("%-15s %-12.4f %zu / %zu passages\n", "lambada acc", lambada->acc(),
                static_cast<size_t>(lambada->correct), static_cast<size_t>(lambada->n));
    std::printf("%-15s %-12.4f per passage (per target token %.4f; %zu target tokens, %zu split apart)\n",
                "lambada ppl", lambada->ppl(), lambada->token_ppl(), static_cast<size_t>(lambada->target_tokens),
                static_cast<size_t>(lambada->fallbacks));
    std::printf("%-15s %.2f s (%.1f passages/s)\n", "lambada time", lambada->seconds,
                lambada->seconds > 0 ? static_cast<double>(lambada->n) / lambada->seconds : 0.0);
  }
  if (info.sparse_ffn || fs.cache_capacity) {
    const double n = fs.neurons ? static_cast<double>(fs.neurons) : 1.0, tk = ffn_tokens ? static_cast<double>(ffn_tokens) : 1.0;
    std::printf("%-15s %s: %.4f of the neurons computed (value rows %.4f); %s/token of FFN weights (dense %s), "
                "predictor %s/token\n",
                "ffn", ffn_mode_str(fs.mode), static_cast<double>(fs.computed) / n, static_cast<double>(fs.value_rows) / n,
                format_bytes(static_cast<uint64_t>(static_cast<double>(fs.weight_bytes) / tk)).c_str(),
                format_bytes(info.ffn_weight_bytes).c_str(),
                format_bytes(static_cast<uint64_t>(static_cast<double>(fs.predictor_bytes) / tk)).c_str());
    if (fs.verified && fs.verify_active)
      std::printf("%-15s %.5f of the truly active neurons computed\n", "ffn recall",
                  static_cast<double>(fs.verify_hit) / static_cast<double>(fs.verify_active));
    if (fs.cache_capacity)
      std::printf("%-15s %s (pinned %s), hit rate %.4f, %s/token read from the file\n", "ffn cache",
                  format_bytes(fs.cache_capacity).c_str(), format_bytes(fs.cache_pinned_bytes).c_str(),
                  fs.cache_requests ? static_cast<double>(fs.cache_hits) / static_cast<double>(fs.cache_requests) : 0.0,
                  format_bytes(static_cast<uint64_t>(static_cast<double>(fs.cache_bytes_read) / tk)).c_str());
  }
  {
    const double tk = hs.tokens ? static_cast<double>(hs.tokens) : 1.0;
    std::printf("%-15s %s: %.4f of the head rows read per token", "head", hs.mode == RWKVL_HEAD_CLUSTER ? "cluster" : "full",
                hs.rows ? static_cast<double>(hs.rows_read) / static_cast<double>(hs.rows) : 0.0);
    if (hs.mode == RWKVL_HEAD_CLUSTER)
      std::printf(" (%.1f of %d clusters, largest %d tokens)", static_cast<double>(hs.clusters) / tk, info.cluster_head,
                  info.cluster_largest);
    std::printf("\n");
    if (hs.compared)
      std::printf("%-15s top-1 agreement %.4f, mean KL %.5f nats over %llu tokens\n", "head vs full",
                  static_cast<double>(hs.top1_agree) / static_cast<double>(hs.compared), hs.kl_sum / static_cast<double>(hs.compared),
                  static_cast<unsigned long long>(hs.compared));
  }
  if (ms.emb_cache_rows)
    std::printf("%-15s %lld rows (%s), hit rate %.4f over %llu lookups, %s read from the file\n", "emb cache",
                static_cast<long long>(ms.emb_cache_rows), format_bytes(ms.emb_cache_bytes).c_str(),
                ms.emb_lookups ? static_cast<double>(ms.emb_hits) / static_cast<double>(ms.emb_lookups) : 0.0,
                static_cast<unsigned long long>(ms.emb_lookups), format_bytes(ms.emb_bytes_read).c_str());
  if (set.mem.budget_bytes)
    std::printf("%-15s %s: planned peak %s (minimum %s), weights resident %s, %s/token streamed (plan); "
                "%llu layer loads, %.2f s waited for them, %s of head rows streamed\n",
                "mem budget", format_bytes(set.mem.budget_bytes).c_str(), format_bytes(ms.planned_bytes).c_str(),
                format_bytes(ms.minimum_bytes).c_str(), format_bytes(ms.resident_weight_bytes).c_str(),
                format_bytes(ms.planned_stream_bytes_per_token).c_str(), static_cast<unsigned long long>(ms.layer_loads),
                ms.layer_wait_seconds, format_bytes(ms.head_stream_bytes).c_str());
  if (set.mem.io_mb_per_s > 0)
    std::printf("%-15s %.0f MB/s, %.0f us per read: %llu reads, %s, %.2f s\n", "storage", set.mem.io_mb_per_s,
                set.mem.io_latency_us, static_cast<unsigned long long>(ms.io_reads), format_bytes(ms.io_bytes).c_str(), ms.io_seconds);
  std::printf("%-15s %.2f s\n", "total time", seconds);
  return 0;
}

int cmd_logits(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string out_path = require(args, "out");
  check(rwkvl_check_output_path(out_path.c_str()), "--out");  // before loading the model
  if (args.given("tokens") == args.given("text")) args.fail("give exactly one of --tokens IDS or --text TEXT");
  std::vector<int32_t> ids;
  if (args.given("tokens")) ids = parse_token_list(args, args.str("tokens"));

  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  if (args.given("text")) {
    const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
    ids = tokenize(tok.get(), args.str("text"));
  }
  if (ids.empty()) args.fail("no tokens to feed");

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  apply_settings(args, model.get(), ctx.get());
  const StatePtr state = new_state(model.get());
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));
  check(rwkvl_eval(ctx.get(), state.get(), ids.data(), ids.size(), static_cast<size_t>(args.integer("chunk")),
                   logits.data()));
  if constexpr (std::endian::native == std::endian::big) {
    for (float& f : logits) f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
  }
  write_file(out_path, logits.data(), logits.size() * sizeof(float), "--out");
  std::fprintf(stderr, "wrote %zu logits after %zu tokens to %s\n", logits.size(), ids.size(), out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
