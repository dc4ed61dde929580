#include "eval/lambada.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/logprob.h"

namespace rwkvl::eval {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr char kWhat[] = "LAMBADA file";

// Lines of a file (or standard input for "-") read 64 KiB at a time; a line longer than kLambadaMaxLine is an
// error (kFormat).
class LineReader {
 public:
  explicit LineReader(const std::string& path)
      : in_(InputFile::open(path, kWhat, true)), path_(path), buf_(1 << 16, '\0') {}
  // The next line without its '\n'; false at the end of the file.
  bool next(std::string* line) {
    line->clear();
    for (;;) {
      if (pos_ == end_) {
        if (eof_) {
          if (line->empty()) return false;
          ++line_no_;
          return true;
        }
        const size_t got = in_.read(buf_.data(), buf_.size());
        pos_ = 0;
        end_ = got;
        eof_ = got == 0;
        continue;
      }
      const char* start = buf_.data() + pos_;
      const void* nl = std::memchr(start, '\n', end_ - pos_);
      const size_t take = nl ? static_cast<size_t>(static_cast<const char*>(nl) - start) : end_ - pos_;
      if (line->size() + take > kLambadaMaxLine)
        RWKVL_FAIL(kFormat, "%s '%s' line %zu is longer than %.2f KiB", kWhat, path_.c_str(), line_no_ + 1,
                   static_cast<double>(kLambadaMaxLine) / 1024.0);
      line->append(start, take);
      pos_ += take;
      if (nl) {
        ++pos_;
        ++line_no_;
        return true;
      }
    }
  }
  size_t line_no() const { return line_no_; }  // 1-based number of the line last returned

 private:
  InputFile in_;
  std::string path_;
  std::string buf_;
  size_t pos_ = 0, end_ = 0, line_no_ = 0;
  bool eof_ = false;
};

}  // namespace

// The passages of the file, one at a time.
class Passages::Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), lines_(path) {}
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

bool parse_lambada_line(const std::string& path, size_t line, std::string_view row, LambadaDoc* d) {
  auto bad = [&](const std::string& what) {
    return Error(ErrorCode::kFormat, std::string(kWhat) + " '" + path + "' line " + std::to_string(line) + ": " + what);
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

void tokenize_passage(const Tokenizer& tok, const LambadaDoc& d, PassageResult* p) {
  p->line = d.line;
  p->context = tok.encode(d.context);
  const std::vector<int32_t> whole = tok.encode(d.context + d.target);
  const size_t c = p->context.size();
  if (whole.size() > c && std::equal(p->context.begin(), p->context.end(), whole.begin())) {
    p->target.assign(whole.begin() + static_cast<std::ptrdiff_t>(c), whole.end());
  } else {
    p->fallback = true;
    p->target = tok.encode(d.target);
  }
  if (p->context.empty() || p->target.empty())
    RWKVL_FAIL(kFormat, "LAMBADA line %zu: the context or the target has no tokens", d.line);
}

// ---------------------------------------------------------------- Passages

Passages::Passages(const std::string& path, int64_t max_passages) : path_(path) {
  LineReader lines(path);
  std::string row;
  LambadaDoc d;
  size_t n = 0;
  while (lines.next(&row)) n += parse_lambada_line(path, lines.line_no(), row, &d) ? 1 : 0;
  if (n == 0) RWKVL_FAIL(kFormat, "%s '%s' has no passages", kWhat, path.c_str());
  n_ = max_passages > 0 ? std::min(n, static_cast<size_t>(max_passages)) : n;
}

Passages::~Passages() = default;

bool Passages::streaming() const { return reader_ != nullptr; }

void Passages::tokenize(const Tokenizer& tok) {
  RWKVL_CHECK(!tokenized_);
  tokenized_ = true;
  tok_ = &tok;
  reader_ = std::make_unique<Reader>(path_);
  if (n_ > kPreloadPassages) return;
  held_.resize(n_);
  for (PassageResult& p : held_) take(&p);
  reader_.reset();
  tok_ = nullptr;
}

bool Passages::next(PassageResult* p, size_t* index) {
  RWKVL_CHECK(tokenized_);
  if (next_ >= n_) return false;
  if (reader_) take(p);
  else *p = std::move(held_[next_]);
  *index = next_++;
  if (next_ == n_) std::vector<PassageResult>().swap(held_);
  return true;
}

void Passages::take(PassageResult* p) {
  LambadaDoc d;
  if (!reader_->next(&d)) RWKVL_FAIL(kIo, "LAMBADA file changed while it was read");
  tokenize_passage(*tok_, d, p);
}

// ---------------------------------------------------------------- evaluation

void eval_passage(Scorer& scorer, size_t n_vocab, size_t chunk, size_t block, std::vector<float>* logits,
                  PassageResult* p) {
  scorer.reset();
  const size_t c = p->context.size(), k = p->target.size();
  if (c > 1) scorer.feed(p->context.data(), c - 1, chunk, nullptr);
  std::vector<int32_t> feed(k);
  feed[0] = p->context.back();
  std::copy(p->target.begin(), p->target.end() - 1, feed.begin() + 1);
  logits->resize(std::min(k, block) * n_vocab);
  p->nll = 0;
  p->correct = true;
  p->greedy.clear();
  for (size_t off = 0; off < k; off += block) {
    const size_t len = std::min(block, k - off);
    scorer.feed(feed.data() + off, len, chunk, logits->data());
    for (size_t j = 0; j < len; ++j) {
      const float* row = logits->data() + j * n_vocab;
      p->nll += logprob::nll(row, n_vocab, p->target[off + j]);
      p->greedy.push_back(logprob::argmax(row, n_vocab));
      p->correct = p->correct && p->greedy.back() == p->target[off + j];
    }
  }
}

double LambadaResult::acc() const { return static_cast<double>(correct) / static_cast<double>(n); }
double LambadaResult::ppl() const { return std::exp(total_nll / static_cast<double>(n)); }
double LambadaResult::token_ppl() const { return std::exp(total_nll / static_cast<double>(target_tokens)); }

// On the reference model (2 cores) one single-threaded worker per core is 1.55x faster than one two-threaded
// context, whose per-layer hand-offs cost more than short passages gain.
size_t lambada_workers(int n_threads, size_t n_passages, bool under_budget) {
  if (under_budget) return 1;
  return std::max<size_t>(1, std::min(static_cast<size_t>(std::max(1, n_threads)), n_passages));
}

LambadaResult eval_lambada(const std::vector<Scorer*>& scorers, Passages& passages, const EvalOptions& o,
                           const PassageFn& on_passage) {
  RWKVL_CHECK(!scorers.empty() && o.n_vocab > 0 && passages.tokenized());
  const size_t n_workers = scorers.size(), n_vocab = o.n_vocab;
  const size_t block = o.block ? o.block : block_tokens(o.chunk, false);
  LambadaResult r;
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
      if (on_passage) on_passage(q);
    }
  };
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::exception_ptr error;
  const uint64_t total = passages.size();
  if (o.progress) o.progress(0, total, "passages");
  auto work = [&](size_t w) {
    try {
      Scorer& scorer = *scorers[w];
      std::vector<float> logits;
      while (!stop.load(std::memory_order_relaxed)) {
        size_t i = 0;
        PassageResult p;
        {
          const std::lock_guard<std::mutex> lock(read_mutex);
          if (!passages.next(&p, &i)) break;
        }
        eval_passage(scorer, n_vocab, o.chunk, block, &logits, &p);
        record(i, std::move(p));
        if (w == 0 && o.progress) o.progress(i + 1, total, "passages");  // the calling thread only
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
  if (error) std::rethrow_exception(error);
  r.n = done;
  return r;
}

nlohmann::json passage_json(const PassageResult& q) {
  return {{"line", q.line},         {"context_tokens", q.context.size()}, {"target", q.target}, {"greedy", q.greedy},
          {"nll", q.nll},           {"correct", q.correct},               {"fallback", q.fallback}};
}

}  // namespace rwkvl::eval
