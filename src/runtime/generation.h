// Text generation as a library call (chat, the server, the C API's rwkvl_generate): feeds a prompt - resuming
// from the longest cached prefix and caching the state at given positions when a PrefixCache is given - then
// samples tokens one at a time and hands out text pieces that never split a UTF-8 character nor show any part
// of a stop sequence, until max_tokens, a stop sequence, the end-of-text token, a deadline or the caller stops.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {

class PrefixCache;

enum class FinishReason { kLength, kStop, kEos, kCancelled, kDeadline };
const char* finish_reason_name(FinishReason r);  // "length", "stop", "eos", "cancelled", "deadline"

struct GenerateOptions {
  int64_t max_tokens = 128;        // tokens to sample at most (0: only the prompt is processed)
  SamplerParams sampling;
  std::vector<std::string> stop;   // text that ends the output (not included in it); none may be empty
  bool stop_at_eos = true;         // token 0 (World / GPT-NeoX end of text) ends the output (not included)
  bool ban_eos = false;            // token 0 is never sampled (chat)
  bool logprobs = false;           // log-probability of each sampled token under the model (before penalties)
  int top_logprobs = 0;            // and of the N most probable tokens at each step (0..20)
  double deadline_seconds = 0;     // > 0: stop after this long (checked between prompt blocks and tokens)
  const std::atomic<bool>* cancel = nullptr;  // set by another thread to stop (checked like the deadline)
  size_t chunk = 0;                // prompt chunk (Session::eval)
  // With a cache: the state after prompt[0..p) is stored for every p in `checkpoints` and every multiple of
  // cache_every (0: none) up to the prompt's length.
  std::vector<size_t> checkpoints;
  size_t cache_every = 0;
  bool feed_last = true;           // feed the last sampled token too, so the state covers the whole output
};

struct TokenLogprob {
  int32_t token;
  float logprob;
};

// One piece of output: its text (complete UTF-8 characters, or invalid bytes as they come) and the tokens
// sampled since the previous piece (the text of a token can appear in a later piece than the token).
struct GeneratedPiece {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;    // one per token (options.logprobs)
  std::vector<TokenLogprob> top;  // top_logprobs per token, token by token
};
// Returns false to stop (FinishReason::kCancelled).
using PieceFn = std::function<bool(const GeneratedPiece&)>;

struct GenerateResult {
  FinishReason finish = FinishReason::kLength;
  size_t prompt_tokens = 0;     // tokens of the prompt
  size_t cached_tokens = 0;     // of those, resumed from the cache (not processed)
  int64_t generated = 0;        // tokens sampled (the end-of-text token included)
  double prompt_seconds = 0;    // from the call to the prompt's logits (cache lookup included)
  double first_token_seconds = 0;  // from the call to the first sampled token
  double generation_seconds = 0;   // from the prompt's logits to the end
};

// Feeds prompt[0..n) (n >= 1) into `state` and generates. Without a cache the prompt continues `state`; with
// one the prompt is taken from the initial state (`state` is replaced by the longest cached prefix shorter than
// the prompt, or reset). Throws kInvalidArgument (empty prompt, empty stop sequence, out-of-range options or
// tokens) and whatever Session::eval throws.
GenerateResult generate(Session& session, State& state, const Tokenizer& tok, const int32_t* prompt, size_t n,
                        const GenerateOptions& options, PrefixCache* cache, const PieceFn& on_piece);

// log-softmax of logits[0..n) into out (double sums).
void log_softmax(const float* logits, size_t n, float* out);

}  // namespace rwkvl
