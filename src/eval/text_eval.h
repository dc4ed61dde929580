// Perplexity and bits per byte of a text fed as one stream from a fresh state (the figures of `rwkv-lite eval
// --text` and `rwkv-lite perplexity`), and what every evaluation shares: the Scorer the model runs behind, the
// logits block, the memory the evaluation still allocates under a plan.
//
// src/eval never names the runtime's classes: the caller (the C API) adapts its context and state to a Scorer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/input_file.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::eval {

// One evaluating stream of the model: a context and its recurrent state. Not thread-safe (one per thread).
class Scorer {
 public:
  virtual ~Scorer() = default;
  // Back to the initial state.
  virtual void reset() = 0;
  // Feeds tokens[0..n) from the current state in chunks of at most `chunk` (0: the runtime's default).
  // logits_all: nullptr (no logits) or n * n_vocab floats, row j the logits after tokens[j].
  virtual void feed(const int32_t* tokens, size_t n, size_t chunk, float* logits_all) = 0;
};

// Progress of a long evaluation: `done` of `total` units ("tok", "B", "passages"); total 0 when unknown.
// Called from the thread that runs the evaluation only.
using ProgressFn = std::function<void(uint64_t done, uint64_t total, const char* unit)>;

struct EvalOptions {
  size_t n_vocab = 0;   // the model's vocabulary (row length of the logits)
  size_t chunk = 0;     // tokens per model chunk (0: the runtime's default)
  size_t block = 0;     // tokens whose logits are held at once (0: block_tokens(chunk, false))
  int threads = 1;      // text: threads for the NLL of a block (the figures do not depend on it)
  ProgressFn progress;  // may be empty
};

// Tokens whose logits are held at once: big enough for sequence mode, small enough for 65k vocabularies
// (chunk clamped to 64..256); under a memory budget just one chunk (chunk, or 8 for 0).
size_t block_tokens(size_t chunk, bool under_budget);

// Memory an evaluation still allocates after the context's memory plan (what to pass as its reserve): one block
// of logits and tokens, the text stream's buffers when the text is read while it runs, LAMBADA's line, strings
// and tokens when passages are read while they run, and slack for the C library.
uint64_t reserve_bytes(size_t n_vocab, size_t block, bool text_streamed, bool lambada_streamed);

// NLL of targets[j] under logits row j for j < len, spread over n_threads threads; summed in token order so
// the result does not depend on the thread count.
double block_nll(const float* logits, size_t len, size_t n_vocab, const int32_t* targets, int n_threads);

// Up to this many tokens (max_tokens) are read when a TextTokens is made, so the tokenizer can be freed before
// a memory plan; a longer or unlimited text is tokenized while it is evaluated, holding a bounded window.
constexpr int64_t kPreloadTokens = 1 << 16;

// The tokens of a text file (or standard input for "-"), at most max_tokens (0 = all): read in pieces, so only
// what those tokens need is read and memory stays bounded for any file size. Counts the UTF-8 bytes of every
// token after the first (the predicted ones), for bits per byte. Throws Error (kIo: the file cannot be read;
// kInvalidArgument: fewer than 2 tokens) when made.
class TextTokens {
 public:
  // The tokenizer must outlive the object while streaming() is true.
  TextTokens(const Tokenizer& tok, const std::string& path, int64_t max_tokens);
  // Whether tokens are still read from the file (the tokenizer must stay); false when they are all held.
  bool streaming() const { return stream_ != nullptr; }
  uint64_t known() const { return given_; }  // tokens known so far: all of them when !streaming()
  uint64_t limit() const { return limit_; }  // max_tokens, or UINT64_MAX for all
  uint64_t file_size() const { return file_size_; }  // 0 for standard input
  uint64_t bytes_read() const { return stream_ ? stream_->bytes_read() : 0; }  // while streaming()
  uint64_t predicted_bytes() const { return bytes_; }
  // Up to cap tokens into out (0 at the end).
  size_t read(int32_t* out, size_t cap);

 private:
  size_t pull(int32_t* out, size_t cap);

  const Tokenizer* tok_;
  uint64_t limit_, file_size_ = 0;
  std::unique_ptr<TokenStream> stream_;
  std::vector<int32_t> held_;
  size_t held_pos_ = 0;
  uint64_t given_ = 0, bytes_ = 0;
};

struct TextResult {
  uint64_t tokens = 0;     // tokens in the stream
  uint64_t predicted = 0;  // tokens 1 .. tokens-1
  uint64_t bytes = 0;      // UTF-8 bytes of the predicted tokens (their decoded bytes)
  double total_nll = 0;    // nats
  double seconds = 0;      // feeding + NLL (and tokenizing, when the text is streamed)

  double mean_nll() const;
  double ppl() const;
  double bpb() const;  // NaN when the predicted tokens have no bytes
  double tok_per_s() const;
};

// Feeds the tokens as one stream from a fresh state (blocks of sequence mode with every logit, the same as one
// token at a time) and sums the NLL of every token after the first under the logits before it. Holds one block
// of tokens and logits at a time. Reads `text` to its end. Errors: those of the scorer and of the text.
TextResult eval_text(Scorer& scorer, TextTokens& text, const EvalOptions& o);

}  // namespace rwkvl::eval
