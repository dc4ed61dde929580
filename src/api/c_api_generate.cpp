// C API: rwkvl_generate, the prefix-state cache and the chat format (a thin shell over runtime/generation.h,
// runtime/prefix_cache.h and runtime/chat_template.h).
#include <string>
#include <vector>

#include "api/api_internal.h"
#include "runtime/chat_template.h"
#include "runtime/generation.h"
#include "runtime/prefix_cache.h"

struct rwkvl_prefix_cache {
  rwkvl::PrefixCache impl;
};

using rwkvl::api::guarded;

namespace {

rwkvl::GenerateOptions generate_options(const rwkvl_generate_params& p) {
  rwkvl::GenerateOptions o;
  o.max_tokens = p.max_tokens;
  o.sampling = rwkvl::api::sampler_params(p.sampling);
  RWKVL_API_REQUIRE(p.n_stop == 0 || p.stop, "rwkvl_generate: stop is NULL with n_stop %zu", p.n_stop);
  for (size_t i = 0; i < p.n_stop; ++i) {
    RWKVL_API_REQUIRE(p.stop[i], "rwkvl_generate: stop sequence %zu is NULL", i);
    o.stop.emplace_back(p.stop[i]);
  }
  o.stop_at_eos = p.stop_at_eos != 0;
  o.ban_eos = p.ban_eos != 0;
  o.logprobs = p.logprobs != 0 || p.top_logprobs != 0;
  o.top_logprobs = p.top_logprobs;
  o.deadline_seconds = p.deadline_seconds;
  o.chunk = p.chunk;
  RWKVL_API_REQUIRE(p.n_checkpoints == 0 || p.checkpoints, "rwkvl_generate: checkpoints is NULL with n_checkpoints %zu",
                    p.n_checkpoints);
  o.checkpoints.assign(p.checkpoints, p.checkpoints + p.n_checkpoints);
  o.cache_every = p.cache_every;
  o.feed_last = p.feed_last != 0;
  return o;
}

rwkvl_finish_reason to_c(rwkvl::FinishReason r) {
  switch (r) {
    case rwkvl::FinishReason::kLength: return RWKVL_FINISH_LENGTH;
    case rwkvl::FinishReason::kStop: return RWKVL_FINISH_STOP;
    case rwkvl::FinishReason::kEos: return RWKVL_FINISH_EOS;
    case rwkvl::FinishReason::kCancelled: return RWKVL_FINISH_CANCELLED;
    case rwkvl::FinishReason::kDeadline: return RWKVL_FINISH_DEADLINE;
  }
  return RWKVL_FINISH_LENGTH;
}

rwkvl::ChatRole role_of(const rwkvl_chat_role& r) {
  switch (rwkvl::api::enum_value(r)) {
    case RWKVL_ROLE_SYSTEM: return rwkvl::ChatRole::kSystem;
    case RWKVL_ROLE_USER: return rwkvl::ChatRole::kUser;
    case RWKVL_ROLE_ASSISTANT: return rwkvl::ChatRole::kAssistant;
    default: RWKVL_FAIL(kInvalidArgument, "unknown chat role %lld", rwkvl::api::enum_value(r));
  }
}

}  // namespace

extern "C" {

const char* rwkvl_finish_reason_name(rwkvl_finish_reason r) {
  switch (rwkvl::api::enum_value(r)) {
    case RWKVL_FINISH_LENGTH: return "length";
    case RWKVL_FINISH_STOP: return "stop";
    case RWKVL_FINISH_EOS: return "eos";
    case RWKVL_FINISH_CANCELLED: return "cancelled";
    case RWKVL_FINISH_DEADLINE: return "deadline";
    default: return "unknown";
  }
}

rwkvl_status rwkvl_prefix_cache_new(uint64_t capacity_bytes, rwkvl_prefix_cache** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(out, "rwkvl_prefix_cache_new: out must not be NULL");
    *out = nullptr;
    *out = new rwkvl_prefix_cache{rwkvl::PrefixCache(capacity_bytes)};
  });
}

void rwkvl_prefix_cache_free(rwkvl_prefix_cache* c) { delete c; }

rwkvl_status rwkvl_prefix_cache_get_stats(const rwkvl_prefix_cache* c, rwkvl_prefix_cache_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(c && out, "rwkvl_prefix_cache_get_stats: NULL argument");
    const rwkvl::PrefixCacheStats s = c->impl.stats();
    *out = rwkvl_prefix_cache_stats{s.lookups, s.hits,    s.misses, s.hit_tokens, s.inserts,
                                    s.evictions, s.entries, s.bytes,  s.capacity};
  });
}

rwkvl_status rwkvl_prefix_cache_clear(rwkvl_prefix_cache* c) {
  return guarded([&] {
    RWKVL_API_REQUIRE(c, "rwkvl_prefix_cache_clear: NULL argument");
    c->impl.clear();
  });
}

rwkvl_generate_params rwkvl_generate_default_params(void) {
  rwkvl_generate_params p{};
  p.max_tokens = 128;
  p.sampling = rwkvl_sampler_default_params();
  p.stop_at_eos = 1;
  p.feed_last = 1;
  return p;
}

rwkvl_status rwkvl_generate(rwkvl_session* s, rwkvl_state* state, const rwkvl_tokenizer* tok, const int32_t* prompt,
                            size_t n, const rwkvl_generate_params* params, rwkvl_piece_fn fn, void* user,
                            rwkvl_generate_result* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && state && tok && params, "rwkvl_generate: NULL argument");
    RWKVL_API_REQUIRE(prompt && n > 0, "rwkvl_generate: the prompt is empty (generation needs at least one token)");
    const rwkvl::GenerateOptions o = generate_options(*params);
    rwkvl::PieceFn on_piece;
    if (fn) {
      on_piece = [&](const rwkvl::GeneratedPiece& p) {
        rwkvl_piece c{};
        c.text = p.text.data();
        c.text_len = p.text.size();
        c.tokens = p.tokens.data();
        c.n_tokens = p.tokens.size();
        std::vector<int32_t> top_ids;
        std::vector<float> top_lp;
        if (o.logprobs) {
          c.logprobs = p.logprobs.data();
          for (const rwkvl::TokenLogprob& t : p.top) {
            top_ids.push_back(t.token);
            top_lp.push_back(t.logprob);
          }
          if (o.top_logprobs > 0) {
            c.top_tokens = top_ids.data();
            c.top_logprobs = top_lp.data();
            c.n_top = static_cast<int>(p.tokens.empty() ? 0 : p.top.size() / p.tokens.size());
          }
        }
        return fn(user, &c) == 0;
      };
    }
    const rwkvl::GenerateResult r =
        rwkvl::generate(*s->s, state->st, *tok->tok, prompt, n, o, params->cache ? &params->cache->impl : nullptr, on_piece);
    if (out)
      *out = rwkvl_generate_result{to_c(r.finish),        r.prompt_tokens,      r.cached_tokens,       r.generated,
                                   r.prompt_seconds,      r.first_token_seconds, r.generation_seconds};
  });
}

rwkvl_status rwkvl_chat_role_from_string(const char* s, rwkvl_chat_role* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && out, "rwkvl_chat_role_from_string: NULL argument");
    const std::string v = s;
    if (v == "system") *out = RWKVL_ROLE_SYSTEM;
    else if (v == "user") *out = RWKVL_ROLE_USER;
    else if (v == "assistant") *out = RWKVL_ROLE_ASSISTANT;
    else RWKVL_FAIL(kInvalidArgument, "unknown chat role '%s' (system, user or assistant)", s);
  });
}

const char* rwkvl_chat_role_name(rwkvl_chat_role r) {
  switch (rwkvl::api::enum_value(r)) {
    case RWKVL_ROLE_SYSTEM: return "system";
    case RWKVL_ROLE_USER: return "user";
    case RWKVL_ROLE_ASSISTANT: return "assistant";
    default: return "unknown";
  }
}

rwkvl_status rwkvl_chat_tokenize(const rwkvl_tokenizer* tok, const rwkvl_chat_message* messages, size_t n,
                                 int add_generation_prompt, int32_t* out, size_t cap, size_t* n_out, size_t* boundaries) {
  return guarded([&] {
    RWKVL_API_REQUIRE(tok && n_out && (messages || n == 0), "rwkvl_chat_tokenize: NULL argument");
    std::vector<rwkvl::ChatMessage> msgs;
    for (size_t i = 0; i < n; ++i) {
      RWKVL_API_REQUIRE(messages[i].content, "rwkvl_chat_tokenize: message %zu has no content (NULL)", i);
      msgs.push_back({role_of(messages[i].role), messages[i].content});
    }
    const rwkvl::ChatTokens t = rwkvl::chat_tokens(*tok->tok, msgs, add_generation_prompt != 0);
    *n_out = t.tokens.size();
    RWKVL_API_REQUIRE(t.tokens.size() <= cap && (out || t.tokens.empty()),
                      "rwkvl_chat_tokenize: the buffer holds %zu tokens, the conversation has %zu", cap, t.tokens.size());
    std::copy(t.tokens.begin(), t.tokens.end(), out);
    if (boundaries) std::copy(t.boundaries.begin(), t.boundaries.end(), boundaries);
  });
}

}  // extern "C"
