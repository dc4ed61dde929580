// The OpenAI-compatible HTTP server (cpp-httplib): one loaded model shared by `parallel` slots (a session and a
// state each), a bounded wait queue (429 with Retry-After beyond it), a shared prefix-state cache, Prometheus
// metrics, limits on bodies, tokens and time, an optional API key, and a clean stop. docs/SERVER.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "model/model.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::serve {

// What the loader hands the server (on the server's loading thread).
struct Loaded {
  std::shared_ptr<const Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};
using Loader = std::function<Loaded()>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;          // 0: any free port
  std::string model_alias;  // the model's id in responses
  SessionParams session;    // each slot's (memory.budget: the whole server's)
  int parallel = 1;
  int queue = 64;
  int http_threads = 0;     // 0: parallel + queue + 8
  uint64_t state_cache_bytes = 64ull << 20;
  size_t cache_every = 512;
  uint64_t max_body_bytes = 8ull << 20;
  int64_t max_tokens_cap = 4096;
  int64_t default_max_tokens = 256;
  size_t max_prompt_tokens = 32768;
  double deadline_seconds = 300;
  double idle_timeout_seconds = 5;
  std::string api_key;
};

class Server {
 public:
  // Validates the options (kInvalidArgument), binds (kIo), starts serving and loading.
  Server(const ServerOptions& options, Loader loader);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;
  // Blocks until the model is loaded; rethrows the load's error.
  void wait_ready();
  // Stops accepting; queued requests get 503; running ones are cancelled after grace_seconds.
  void stop(double grace_seconds);
  // Blocks until stopped (after stop()).
  void wait();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace rwkvl::serve
