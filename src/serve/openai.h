// The OpenAI request and response shapes of the server (src/serve/server.cpp): parsing a completion or chat
// request into a generation job, and the JSON of responses, stream chunks, errors and timings. No HTTP here.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/generation.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::serve {

// A request the server refuses: HTTP status and an OpenAI error object.
struct ApiError {
  ApiError(int status_, std::string message_, std::string type_ = "invalid_request_error", std::string param_ = "")
      : status(status_), message(std::move(message_)), type(std::move(type_)), param(std::move(param_)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;
};

struct Limits {
  int64_t max_tokens_cap = 4096;
  int64_t default_max_tokens = 256;
  size_t max_prompt_tokens = 32768;
};

// One generation request, parsed.
struct Job {
  bool chat = false;
  bool stream = false;
  bool include_usage = true;  // stream: a last chunk with usage (stream_options.include_usage; default on)
  std::vector<int32_t> prompt;
  std::vector<size_t> checkpoints;  // message ends (chat)
  GenerateOptions options;
  int logprobs = -1;  // completions: -1 none, else N alternatives
};

// Parse a body (throws ApiError). `vocab` is the model's vocabulary size (token arrays are checked).
Job parse_completion(const nlohmann::json& body, const Tokenizer& tok, int32_t vocab, const Limits& limits);
Job parse_chat(const nlohmann::json& body, const Tokenizer& tok, const Limits& limits);
nlohmann::json parse_body(const std::string& body);  // ApiError 400 for malformed JSON or a non-object

// The finish_reason of a response ("stop" for a stop sequence or end of text, "length" otherwise).
const char* openai_finish_reason(FinishReason r);

// llama.cpp-style timings.
nlohmann::json timings_json(const GenerateResult& r);
nlohmann::json usage_json(const GenerateResult& r);

// The accumulated output of a request (text, and for logprobs the tokens and their figures).
struct Output {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<TokenLogprob> top;
  int n_top = 0;
};
nlohmann::json logprobs_json(const Output& o, const Tokenizer& tok, size_t text_offset0);

nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model, const Output& out,
                               const GenerateResult& r, const Job& job, const Tokenizer& tok);
nlohmann::json chat_json(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                         const GenerateResult& r);
// Stream chunks. finish: nullptr for a middle chunk.
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                                const char* finish);
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model, const nlohmann::json& delta,
                          const char* finish);
nlohmann::json error_json(const ApiError& e);
// JSON text with invalid UTF-8 replaced by U+FFFD (token pieces may split characters).
std::string dump(const nlohmann::json& j);

}  // namespace rwkvl::serve
