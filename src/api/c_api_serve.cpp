// C API: rwkvl_server_* (a thin shell over serve/server.h). The server loads the model on its own thread
// through the same calls as rwkvl_model_load and rwkvl_tokenizer_for_model.
#include <string>

#include "api/api_internal.h"

#if RWKVL_HAVE_SERVER
#include "serve/server.h"

struct rwkvl_server {
  std::unique_ptr<rwkvl::serve::Server> impl;
};

using rwkvl::api::guarded;

namespace {

rwkvl::ErrorCode code_of(rwkvl_status st) {
  switch (st) {
    case RWKVL_ERR_INVALID_ARGUMENT: return rwkvl::ErrorCode::kInvalidArgument;
    case RWKVL_ERR_IO: return rwkvl::ErrorCode::kIo;
    case RWKVL_ERR_FORMAT: return rwkvl::ErrorCode::kFormat;
    case RWKVL_ERR_UNSUPPORTED: return rwkvl::ErrorCode::kUnsupported;
    case RWKVL_ERR_OUT_OF_MEMORY: return rwkvl::ErrorCode::kOutOfMemory;
    default: return rwkvl::ErrorCode::kInternal;
  }
}

void check(rwkvl_status st) {
  if (st != RWKVL_OK) throw rwkvl::Error(code_of(st), rwkvl_last_error());
}

std::string file_name(const std::string& path) {
  const size_t k = path.find_last_of('/');
  return k == std::string::npos ? path : path.substr(k + 1);
}

}  // namespace

extern "C" {

rwkvl_server_params rwkvl_server_default_params(void) {
  const rwkvl::serve::ServerOptions d;
  rwkvl_server_params p{};
  p.model = rwkvl_model_default_params();
  p.session = rwkvl_session_default_params();
  p.host = nullptr;
  p.port = d.port;
  p.parallel = d.parallel;
  p.queue = d.queue;
  p.http_threads = d.http_threads;
  p.state_cache_bytes = d.state_cache_bytes;
  p.cache_every = d.cache_every;
  p.max_body_bytes = d.max_body_bytes;
  p.max_tokens_cap = d.max_tokens_cap;
  p.default_max_tokens = d.default_max_tokens;
  p.max_prompt_tokens = d.max_prompt_tokens;
  p.deadline_seconds = d.deadline_seconds;
  p.idle_timeout_seconds = d.idle_timeout_seconds;
  return p;
}

rwkvl_status rwkvl_server_start(const rwkvl_server_params* params, rwkvl_server** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(params && out && params->model_path, "rwkvl_server_start: NULL argument (params, out, model_path)");
    *out = nullptr;
    rwkvl::serve::ServerOptions o;
    o.host = params->host && *params->host ? params->host : "127.0.0.1";
    o.port = params->port;
    o.model_alias = params->model_alias && *params->model_alias ? params->model_alias : file_name(params->model_path);
    o.session = rwkvl::api::session_params(params->session, "rwkvl_server_start");
    o.parallel = params->parallel;
    o.queue = params->queue;
    o.http_threads = params->http_threads;
    o.state_cache_bytes = params->state_cache_bytes;
    o.cache_every = params->cache_every;
    o.max_body_bytes = params->max_body_bytes;
    o.max_tokens_cap = params->max_tokens_cap;
    o.default_max_tokens = params->default_max_tokens;
    o.max_prompt_tokens = params->max_prompt_tokens;
    o.deadline_seconds = params->deadline_seconds;
    o.idle_timeout_seconds = params->idle_timeout_seconds;
    if (params->api_key) o.api_key = params->api_key;
    const std::string path = params->model_path;
    const std::string tok_path = params->tokenizer_path ? params->tokenizer_path : "";
    const rwkvl_model_params mp = params->model;
    auto loader = [path, tok_path, mp]() {
      rwkvl_model* m = nullptr;
      check(rwkvl_model_load(path.c_str(), &mp, &m));
      std::unique_ptr<rwkvl_model> model(m);
      rwkvl_tokenizer* t = nullptr;
      check(rwkvl_tokenizer_for_model(m, path.c_str(), tok_path.empty() ? nullptr : tok_path.c_str(), &t));
      std::unique_ptr<rwkvl_tokenizer> tok(t);
      return rwkvl::serve::Loaded{model->m, std::move(tok->tok)};
    };
    auto h = std::make_unique<rwkvl_server>();
    h->impl = std::make_unique<rwkvl::serve::Server>(o, loader);
    *out = h.release();
  });
}

int rwkvl_server_port(const rwkvl_server* s) { return s ? s->impl->port() : 0; }

rwkvl_status rwkvl_server_wait_ready(rwkvl_server* s) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s, "rwkvl_server_wait_ready: NULL argument");
    s->impl->wait_ready();
  });
}

void rwkvl_server_stop(rwkvl_server* s, double grace_seconds) {
  if (s) s->impl->stop(grace_seconds);
}

void rwkvl_server_wait(rwkvl_server* s) {
  if (s) s->impl->wait();
}

void rwkvl_server_free(rwkvl_server* s) { delete s; }

}  // extern "C"

#else  // built without cpp-httplib

struct rwkvl_server {};

extern "C" {

rwkvl_server_params rwkvl_server_default_params(void) {
  rwkvl_server_params p{};
  p.model = rwkvl_model_default_params();
  p.session = rwkvl_session_default_params();
  return p;
}
rwkvl_status rwkvl_server_start(const rwkvl_server_params*, rwkvl_server** out) {
  if (out) *out = nullptr;
  rwkvl::api::set_last_error("this build has no HTTP server (cpp-httplib was not found when it was configured)");
  return RWKVL_ERR_UNSUPPORTED;
}
int rwkvl_server_port(const rwkvl_server*) { return 0; }
rwkvl_status rwkvl_server_wait_ready(rwkvl_server*) { return RWKVL_ERR_UNSUPPORTED; }
void rwkvl_server_stop(rwkvl_server*, double) {}
void rwkvl_server_wait(rwkvl_server*) {}
void rwkvl_server_free(rwkvl_server* s) { delete s; }

}  // extern "C"

#endif
