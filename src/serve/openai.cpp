#include "serve/openai.h"

#include <cmath>

namespace rwkvl::serve {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& msg, const std::string& param = "") {
  throw ApiError{400, msg, "invalid_request_error", param};
}

double number(const json& body, const char* key, double def, double lo, double hi) {
  if (!body.contains(key) || body[key].is_null()) return def;
  if (!body[key].is_number()) bad(std::string("'") + key + "' must be a number", key);
  const double v = body[key].get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    bad(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key);
  return v;
}

int64_t integer(const json& body, const char* key, int64_t def, int64_t lo, int64_t hi) {
  if (!body.contains(key) || body[key].is_null()) return def;
  if (!body[key].is_number_integer()) bad(std::string("'") + key + "' must be an integer", key);
  const int64_t v = body[key].get<int64_t>();
  if (v < lo || v > hi) bad(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key);
  return v;
}

bool boolean(const json& body, const char* key, bool def) {
  if (!body.contains(key) || body[key].is_null()) return def;
  if (!body[key].is_boolean()) bad(std::string("'") + key + "' must be true or false", key);
  return body[key].get<bool>();
}

// Sampling, stop sequences, max_tokens, stream: the fields both endpoints share. Defaults differ per endpoint.
void common_fields(const json& body, Job& job, const Limits& limits, const SamplerParams& defaults) {
  GenerateOptions& o = job.options;
  o.sampling = defaults;
  o.sampling.temperature = static_cast<float>(number(body, "temperature", defaults.temperature, 0, 100));
  o.sampling.top_p = static_cast<float>(number(body, "top_p", defaults.top_p, 1e-9, 1));
  o.sampling.top_k = static_cast<int>(integer(body, "top_k", defaults.top_k, 0, 1 << 30));
  o.sampling.presence_penalty = static_cast<float>(number(body, "presence_penalty", defaults.presence_penalty, -2e3, 2e3));
  o.sampling.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", defaults.frequency_penalty, -2e3, 2e3));
  o.sampling.penalty_decay = static_cast<float>(number(body, "penalty_decay", defaults.penalty_decay, 0, 1));
  o.sampling.seed = static_cast<uint64_t>(integer(body, "seed", 0, INT64_MIN, INT64_MAX));
  int64_t max_tokens = integer(body, "max_tokens", limits.default_max_tokens, 0, INT64_MAX);
  max_tokens = integer(body, "max_completion_tokens", max_tokens, 0, INT64_MAX);
  o.max_tokens = std::min(max_tokens, limits.max_tokens_cap);
  if (integer(body, "n", 1, 1, 1) != 1) bad("only n = 1 is supported", "n");
  job.stream = boolean(body, "stream", false);
  if (body.contains("stream_options") && body["stream_options"].is_object())
    job.include_usage = boolean(body["stream_options"], "include_usage", true);
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      o.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 16) {
      for (const json& e : s) {
        if (!e.is_string()) bad("'stop' must be a string or an array of strings", "stop");
        o.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("'stop' must be a string or an array of at most 16 strings", "stop");
    }
    for (const std::string& st : o.stop)
      if (st.empty()) bad("a stop sequence is empty", "stop");
  }
}

void check_prompt_length(const Job& job, const Limits& limits) {
  if (job.prompt.empty()) bad("the prompt is empty (at least one token is needed)", "prompt");
  if (job.prompt.size() > limits.max_prompt_tokens)
    bad("the prompt has " + std::to_string(job.prompt.size()) + " tokens, the server's limit is " +
            std::to_string(limits.max_prompt_tokens),
        "prompt");
}

std::string content_text(const json& c) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (c.is_array()) {  // [{"type": "text", "text": "..."}]
    std::string out;
    for (const json& part : c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        bad("message content parts must be {\"type\": \"text\", \"text\": ...}", "messages");
      out += part["text"].get<std::string>();
    }
    return out;
  }
  bad("message content must be a string or an array of text parts", "messages");
}

}  // namespace

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) bad("the request body is not valid JSON");
  if (!j.is_object()) bad("the request body must be a JSON object");
  return j;
}

Job parse_completion(const json& body, const Tokenizer& tok, int32_t vocab, const Limits& limits) {
  Job job;
  common_fields(body, job, limits, SamplerParams{});
  if (!body.contains("prompt")) bad("'prompt' is required", "prompt");
  const json& p = body["prompt"];
  if (p.is_string()) {
    job.prompt = tok.encode(p.get<std::string>());
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    job.prompt = tok.encode(p[0].get<std::string>());
  } else if (p.is_array() && (p.empty() || p[0].is_number_integer())) {
    for (const json& t : p) {
      if (!t.is_number_integer()) bad("'prompt' token arrays must hold integers", "prompt");
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id >= vocab) bad("prompt token " + std::to_string(id) + " is outside the vocabulary", "prompt");
      job.prompt.push_back(static_cast<int32_t>(id));
    }
  } else {
    bad("'prompt' must be a string, an array of one string, or an array of token ids", "prompt");
  }
  check_prompt_length(job, limits);
  if (boolean(body, "echo", false)) bad("'echo' is not supported", "echo");
  if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    job.logprobs = static_cast<int>(integer(body, "logprobs", 0, 0, 5));
    job.options.logprobs = true;
    job.options.top_logprobs = job.logprobs;
  }
  job.options.stop_at_eos = tok.name() != "byte";
  job.options.feed_last = false;
  // The state before the prompt's last token: a later request with the same prompt (or one extending it)
  // resumes there (the last token is always fed: its logits start the reply).
  if (job.prompt.size() > 1) job.checkpoints.push_back(job.prompt.size() - 1);
  return job;
}

Job parse_chat(const json& body, const Tokenizer& tok, const Limits& limits) {
  Job job;
  job.chat = true;
  // RWKV's chat sampling (ChatRWKV) where the request is silent.
  SamplerParams d;
  d.temperature = 1.0f;
  d.top_p = 0.3f;
  d.presence_penalty = 0.5f;
  d.frequency_penalty = 0.5f;
  d.penalty_decay = 0.996f;
  common_fields(body, job, limits, d);
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
    bad("'messages' must be a non-empty array", "messages");
  std::vector<ChatMessage> msgs;
  for (const json& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bad("each message needs a 'role'", "messages");
    const std::string role = m["role"].get<std::string>();
    ChatMessage cm;
    if (role == "system" || role == "developer") cm.role = ChatRole::kSystem;
    else if (role == "user") cm.role = ChatRole::kUser;
    else if (role == "assistant") cm.role = ChatRole::kAssistant;
    else bad("unknown message role '" + role + "' (system, user, assistant)", "messages");
    cm.content = content_text(m.contains("content") ? m["content"] : json());
    msgs.push_back(std::move(cm));
  }
  ChatTokens ct = chat_tokens(tok, msgs, true);
  job.prompt = std::move(ct.tokens);
  job.checkpoints = std::move(ct.boundaries);
  check_prompt_length(job, limits);
  job.options.stop.insert(job.options.stop.begin(), std::string(kChatStop));
  job.options.ban_eos = true;
  job.options.stop_at_eos = false;
  job.options.feed_last = false;
  return job;
}

const char* openai_finish_reason(FinishReason r) {
  return (r == FinishReason::kStop || r == FinishReason::kEos) ? "stop" : "length";
}

json timings_json(const GenerateResult& r) {
  const double prompt_n = static_cast<double>(r.prompt_tokens - r.cached_tokens);
  const double pred_n = static_cast<double>(r.generated);
  const double pms = r.prompt_seconds * 1e3, gms = r.generation_seconds * 1e3;
  return json{{"cache_n", r.cached_tokens},
              {"prompt_n", r.prompt_tokens - r.cached_tokens},
              {"prompt_ms", pms},
              {"prompt_per_token_ms", prompt_n > 0 ? pms / prompt_n : 0.0},
              {"prompt_per_second", pms > 0 ? prompt_n * 1e3 / pms : 0.0},
              {"predicted_n", r.generated},
              {"predicted_ms", gms},
              {"predicted_per_token_ms", pred_n > 0 ? gms / pred_n : 0.0},
              {"predicted_per_second", gms > 0 ? pred_n * 1e3 / gms : 0.0},
              {"first_token_ms", r.first_token_seconds * 1e3},
              {"deadline_exceeded", r.finish == FinishReason::kDeadline}};
}

json usage_json(const GenerateResult& r) {
  return json{{"prompt_tokens", r.prompt_tokens},
              {"completion_tokens", r.generated},
              {"total_tokens", r.prompt_tokens + static_cast<size_t>(r.generated)},
              {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}}}};
}

json logprobs_json(const Output& o, const Tokenizer& tok, size_t text_offset0) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t off = text_offset0;
  for (size_t i = 0; i < o.tokens.size(); ++i) {
    const std::string piece = tok.token_bytes(o.tokens[i]);
    tokens.push_back(piece);
    lps.push_back(i < o.logprobs.size() ? o.logprobs[i] : 0.0f);
    offsets.push_back(off);
    off += piece.size();
    json top = json::object();
    for (int k = 0; k < o.n_top; ++k) {
      const size_t at = i * static_cast<size_t>(o.n_top) + static_cast<size_t>(k);
      if (at < o.top.size()) top[tok.token_bytes(o.top[at].token)] = o.top[at].logprob;
    }
    tops.push_back(o.n_top > 0 ? top : json());
  }
  return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json completion_json(const std::string& id, int64_t created, const std::string& model, const Output& out,
                     const GenerateResult& r, const Job& job, const Tokenizer& tok) {
  json choice{{"text", out.text}, {"index", 0}, {"finish_reason", openai_finish_reason(r.finish)}};
  choice["logprobs"] = job.logprobs >= 0 ? logprobs_json(out, tok, 0) : json();
  return json{{"id", id},         {"object", "text_completion"}, {"created", created},
              {"model", model},   {"choices", json::array({choice})},
              {"usage", usage_json(r)}, {"timings", timings_json(r)}};
}

json chat_json(const std::string& id, int64_t created, const std::string& model, const std::string& text,
               const GenerateResult& r) {
  json choice{{"index", 0},
              {"message", {{"role", "assistant"}, {"content", text}}},
              {"logprobs", nullptr},
              {"finish_reason", openai_finish_reason(r.finish)}};
  return json{{"id", id},       {"object", "chat.completion"}, {"created", created},
              {"model", model}, {"choices", json::array({choice})},
              {"usage", usage_json(r)}, {"timings", timings_json(r)}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                      const char* finish) {
  json choice{{"text", text}, {"index", 0}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish ? json(finish) : json();
  return json{{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
              {"choices", json::array({choice})}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, const json& delta, const char* finish) {
  json choice{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish ? json(finish) : json();
  return json{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
              {"choices", json::array({choice})}};
}

json error_json(const ApiError& e) {
  json err{{"message", e.message}, {"type", e.type}, {"code", e.status}};
  err["param"] = e.param.empty() ? json() : json(e.param);
  return json{{"error", err}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace rwkvl::serve
