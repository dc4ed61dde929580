// LAMBADA as lm-eval's lambada_openai task scores it: each passage of a jsonl file ({"text": ...} a line) is
// split before its last word; the context is fed from a fresh state and the target's tokens are scored (NLL,
// and whether each is the greedy choice). Accuracy = share of passages whose every target token is the argmax;
// perplexity = exp(mean over passages of the target's NLL).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/input_file.h"
#include "eval/text_eval.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::eval {

constexpr size_t kLambadaMaxLine = 16 << 10;  // longest line of a LAMBADA file, bytes
// Passages are tokenized up front when there are at most this many (then the tokenizer can be freed before a
// memory plan: it is larger than the tokens of the whole LAMBADA test set), else one at a time as they run.
constexpr size_t kPreloadPassages = 8192;

// Bytes of trailing white space as Python's str.rstrip() removes it (ASCII and Unicode white space).
size_t trailing_space_bytes(std::string_view s);

struct LambadaDoc {
  size_t line = 0;      // 1-based line of the jsonl file
  std::string context;  // the text up to the last space (trailing white space moved to the target)
  std::string target;   // " " + the last word
};

// One line of the file: false for a blank line; Error(kFormat) naming the file and line when it is not a
// passage. Split as lm-eval's lambada_openai task does.
bool parse_lambada_line(const std::string& path, size_t line, std::string_view row, LambadaDoc* d);

struct PassageResult {
  size_t line = 0;
  std::vector<int32_t> context, target, greedy;
  bool fallback = false;  // tok(context + target) did not start with tok(context): target = tok(target)
  double nll = 0;         // summed over the target tokens, nats
  bool correct = false;   // every target token is the argmax
};

// lm-eval's split into tokens: whole = tok(context + target), context_enc = tok(context), target tokens =
// whole[len(context_enc):]; when whole does not start with context_enc, tok(target) instead.
void tokenize_passage(const Tokenizer& tok, const LambadaDoc& d, PassageResult* p);

// The passages of a LAMBADA file. Made from the path alone: every line is checked (so a malformed one anywhere
// is reported before any work), one line held at a time; then tokenize() gives the tokenizer.
class Passages {
 public:
  // All passages, or the first max_passages (0 = all). Errors: kIo (cannot read), kFormat (a bad line; no
  // passages).
  Passages(const std::string& path, int64_t max_passages);
  ~Passages();
  size_t size() const { return n_; }
  // Tokenizes all passages now when there are at most kPreloadPassages (the tokenizer may then be freed), else
  // keeps the tokenizer to tokenize them as they are taken (it must outlive this object). Once only.
  void tokenize(const Tokenizer& tok);
  bool tokenized() const { return tokenized_; }
  bool streaming() const;  // whether the file is still read (and the tokenizer used) while evaluating
  // The next passage (tokenized) and its index; false when all are taken. Not thread-safe.
  bool next(PassageResult* p, size_t* index);

 private:
  class Reader;
  void take(PassageResult* p);
  std::string path_;
  const Tokenizer* tok_ = nullptr;
  std::unique_ptr<Reader> reader_;
  std::vector<PassageResult> held_;
  size_t n_ = 0, next_ = 0;
  bool tokenized_ = false;
};

// One passage from a fresh state: the context without its last token is fed without logits; its last token and
// the target's tokens but the last are fed with every logit (row j predicts target[j]), at most `block` at a
// time. Fills p->nll, p->greedy, p->correct.
void eval_passage(Scorer& scorer, size_t n_vocab, size_t chunk, size_t block, std::vector<float>* logits,
                  PassageResult* p);

struct LambadaResult {
  uint64_t n = 0, correct = 0, target_tokens = 0, fallbacks = 0;
  double total_nll = 0, seconds = 0;

  double acc() const;
  double ppl() const;        // lm-eval's lambada perplexity: exp(mean over passages of the target's NLL)
  double token_ppl() const;  // per target token: exp(total NLL / number of target tokens)
};

// Workers for the passages: one per thread up to the number of passages, one under a memory budget (its plan
// does all of them); each gets threads_each = max(1, n_threads / workers) threads.
size_t lambada_workers(int n_threads, size_t n_passages, bool under_budget);

// Called once per passage, in passage order (from whichever worker finished it; one call at a time).
using PassageFn = std::function<void(const PassageResult&)>;

// Evaluates every passage, spread over the scorers (one thread each; scorers[0] runs on the calling thread,
// which alone calls o.progress). Passages are independent: each worker takes the next one from `passages` and
// the results are summed in passage order, so the figures do not depend on the split. The first error of any
// worker stops the others and is rethrown. o.threads is unused.
LambadaResult eval_lambada(const std::vector<Scorer*>& scorers, Passages& passages, const EvalOptions& o,
                           const PassageFn& on_passage);

// One line of --lambada-out: {"line", "context_tokens", "target", "greedy", "nll", "correct", "fallback"}.
nlohmann::json passage_json(const PassageResult& p);

}  // namespace rwkvl::eval
