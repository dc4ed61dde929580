#include "serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "runtime/generation.h"
#include "runtime/prefix_cache.h"
#include "runtime/sysinfo.h"
#include "serve/openai.h"

namespace rwkvl::serve {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Slot {
  std::unique_ptr<Session> session;
  State state;
};

struct Metrics {
  std::atomic<uint64_t> requests{0}, errors{0}, rejected{0}, completions{0}, chats{0}, cancelled{0};
  std::atomic<uint64_t> prompt_tokens{0}, cached_tokens{0}, generated_tokens{0};
  std::atomic<uint64_t> prompt_us{0}, generation_us{0};
};

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
  send_json(res, e.status, error_json(e));
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Loader loader;
  httplib::Server http;
  int port = 0;
  std::thread listen_thread, load_thread, grace_thread;
  Clock::time_point started = Clock::now();
  int64_t created = static_cast<int64_t>(std::time(nullptr));

  std::mutex mu;
  std::condition_variable cv;
  enum class Phase { kLoading, kReady, kFailed } phase = Phase::kLoading;
  std::exception_ptr load_error;
  std::string load_message;
  Loaded loaded;
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Slot*> free_slots;
  int waiting = 0;
  std::deque<uint64_t> line;  // tickets of the requests waiting for a slot, oldest first
  uint64_t next_ticket = 0;
  std::unique_ptr<PrefixCache> cache;
  std::atomic<bool> stopping{false}, cancel_all{false}, listening_done{false};
  Metrics m;
  std::atomic<uint64_t> next_id{1};

  void load();
  void routes();
  bool pre_route(const httplib::Request& req, httplib::Response& res);
  Slot* acquire(Clock::time_point arrived);
  void release(Slot* s);
  void handle_generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void run_plain(const Job& job, Slot* slot, Clock::time_point arrived, httplib::Response& res);
  void run_stream(Job job, Slot* slot, Clock::time_point arrived, httplib::Response& res);
  GenerateOptions options_for(const Job& job, Clock::time_point arrived);
  void account(const GenerateResult& r, bool chat);
  std::string metrics_text();
  std::string new_id(const char* prefix) { return prefix + std::to_string(next_id++); }
};

// ---------------------------------------------------------------- loading and slots

void Server::Impl::load() {
  try {
    Loaded l = loader();
    SessionParams sp = opt.session;
    const ModelConfig& cfg = l.model->config();
    if (sp.memory.budget > 0) {
      // The cache, each slot's state and logits buffers, and the connections' buffers come out of the budget.
      const uint64_t per_slot = State::floats_for(cfg) * sizeof(float) * 2 + static_cast<uint64_t>(cfg.n_vocab) * 16;
      sp.memory.reserve += opt.state_cache_bytes + per_slot * static_cast<uint64_t>(opt.parallel) + (6ull << 20);
    }
    std::vector<std::unique_ptr<Slot>> built;
    for (int i = 0; i < opt.parallel; ++i) {
      auto s = std::make_unique<Slot>();
      s->session = std::make_unique<Session>(l.model, sp);
      s->state.reset(cfg);
      built.push_back(std::move(s));
    }
    std::lock_guard<std::mutex> lock(mu);
    loaded = std::move(l);
    slots = std::move(built);
    for (auto& s : slots) free_slots.push_back(s.get());
    if (opt.state_cache_bytes > 0) cache = std::make_unique<PrefixCache>(opt.state_cache_bytes);
    phase = Phase::kReady;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu);
    load_error = std::current_exception();
    load_message = e.what();
    phase = Phase::kFailed;
  }
  cv.notify_all();
}

Slot* Server::Impl::acquire(Clock::time_point arrived) {
  std::unique_lock<std::mutex> lock(mu);
  if (free_slots.empty() && waiting >= opt.queue) {
    ++m.rejected;
    throw ApiError{429, "the server is busy: " + std::to_string(waiting) + " requests wait for a slot", "rate_limit_error"};
  }
  // First come, first served: a freed slot goes to the oldest waiting request.
  const uint64_t ticket = next_ticket++;
  line.push_back(ticket);
  ++waiting;
  const auto until = opt.deadline_seconds > 0
                         ? arrived + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.deadline_seconds))
                         : Clock::time_point::max();
  const bool got = cv.wait_until(lock, until, [&] { return stopping.load() || (!free_slots.empty() && line.front() == ticket); });
  --waiting;
  line.erase(std::find(line.begin(), line.end(), ticket));
  cv.notify_all();  // the next in line may take another free slot
  if (stopping) throw ApiError{503, "the server is shutting down", "server_error"};
  if (!got) throw ApiError{503, "no slot became free before the request's deadline", "server_error"};
  Slot* s = free_slots.back();
  free_slots.pop_back();
  return s;
}

void Server::Impl::release(Slot* s) {
  {
    std::lock_guard<std::mutex> lock(mu);
    free_slots.push_back(s);
  }
  cv.notify_all();
}

// ---------------------------------------------------------------- generation requests

GenerateOptions Server::Impl::options_for(const Job& job, Clock::time_point arrived) {
  GenerateOptions o = job.options;
  if (opt.deadline_seconds > 0) {
    o.deadline_seconds = opt.deadline_seconds - seconds_since(arrived);
    if (o.deadline_seconds <= 0) throw ApiError{503, "the request's deadline passed while it waited", "server_error"};
  }
  o.cancel = &cancel_all;
  o.checkpoints = job.checkpoints;
  o.cache_every = opt.cache_every;
  return o;
}

void Server::Impl::account(const GenerateResult& r, bool chat) {
  (chat ? m.chats : m.completions)++;
  m.prompt_tokens += r.prompt_tokens;
  m.cached_tokens += r.cached_tokens;
  m.generated_tokens += static_cast<uint64_t>(r.generated);
  m.prompt_us += static_cast<uint64_t>(r.prompt_seconds * 1e6);
  m.generation_us += static_cast<uint64_t>(r.generation_seconds * 1e6);
  if (r.finish == FinishReason::kCancelled) ++m.cancelled;
}

// The reply of a chat follows "Assistant:": its leading blanks are not part of the message.
struct LeadingBlanks {
  bool at_start = true;
  std::string strip(std::string text) {
    if (!at_start) return text;
    const size_t k = text.find_first_not_of(" \t\n");
    if (k == std::string::npos) return {};
    at_start = false;
    return text.substr(k);
  }
};

void Server::Impl::run_plain(const Job& job, Slot* slot, Clock::time_point arrived, httplib::Response& res) {
  struct Release {
    Impl* self;
    Slot* s;
    ~Release() { self->release(s); }
  } guard{this, slot};
  const GenerateOptions o = options_for(job, arrived);
  Output out;
  LeadingBlanks blanks;
  const Tokenizer& tok = *loaded.tokenizer;
  const GenerateResult r = generate(*slot->session, slot->state, tok, job.prompt.data(), job.prompt.size(), o, cache.get(),
                                    [&](const GeneratedPiece& p) {
                                      out.text += job.chat ? blanks.strip(p.text) : p.text;
                                      out.tokens.insert(out.tokens.end(), p.tokens.begin(), p.tokens.end());
                                      out.logprobs.insert(out.logprobs.end(), p.logprobs.begin(), p.logprobs.end());
                                      out.top.insert(out.top.end(), p.top.begin(), p.top.end());
                                      return true;
                                    });
  out.n_top = job.logprobs > 0 ? job.logprobs : 0;
  account(r, job.chat);
  if (r.finish == FinishReason::kCancelled) throw ApiError{503, "the server is shutting down", "server_error"};
  const std::string& model = opt.model_alias;
  send_json(res, 200,
            job.chat ? chat_json(new_id("chatcmpl-"), created, model, out.text, r)
                     : completion_json(new_id("cmpl-"), created, model, out, r, job, tok));
}

void Server::Impl::run_stream(Job job, Slot* slot, Clock::time_point arrived, httplib::Response& res) {
  // Checked before any byte is sent: a deadline that already passed is an error status, not a broken stream.
  GenerateOptions o;
  try {
    o = options_for(job, arrived);
  } catch (...) {
    release(slot);
    throw;
  }
  const std::string id = new_id(job.chat ? "chatcmpl-" : "cmpl-");
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto provider = [this, job = std::move(job), o, slot, id](size_t, httplib::DataSink& sink) {
    const std::string& model = opt.model_alias;
    auto send = [&](const json& j) {
      const std::string line = "data: " + dump(j) + "\n\n";
      return sink.write(line.data(), line.size());
    };
    bool ok = true;
    if (job.chat) ok = send(chat_chunk(id, created, model, json{{"role", "assistant"}, {"content", ""}}, nullptr));
    LeadingBlanks blanks;
    size_t text_offset = 0;
    GenerateResult r;
    try {
      r = generate(*slot->session, slot->state, *loaded.tokenizer, job.prompt.data(), job.prompt.size(), o, cache.get(),
                   [&](const GeneratedPiece& p) {
                     const std::string text = job.chat ? blanks.strip(p.text) : p.text;
                     if (job.chat) {
                       if (!text.empty()) ok = ok && send(chat_chunk(id, created, model, json{{"content", text}}, nullptr));
                       return ok;
                     }
                     json chunk = completion_chunk(id, created, model, text, nullptr);
                     if (job.logprobs >= 0) {
                       const Output piece{text, p.tokens, p.logprobs, p.top, job.logprobs};
                       chunk["choices"][0]["logprobs"] = logprobs_json(piece, *loaded.tokenizer, text_offset);
                     }
                     text_offset += text.size();
                     if (!text.empty() || !p.tokens.empty()) ok = ok && send(chunk);
                     return ok;
                   });
    } catch (const std::exception& e) {
      ++m.errors;
      send(error_json(ApiError{500, e.what(), "server_error"}));
      sink.done();
      return true;
    }
    account(r, job.chat);
    if (ok && r.finish == FinishReason::kCancelled) {
      send(error_json(ApiError{503, "the server is shutting down", "server_error"}));
    } else if (ok) {
      const char* fin = openai_finish_reason(r.finish);
      json last = job.chat ? chat_chunk(id, created, model, json::object(), fin) : completion_chunk(id, created, model, "", fin);
      if (job.include_usage) last["usage"] = usage_json(r);
      last["timings"] = timings_json(r);
      send(last);
      const std::string done = "data: [DONE]\n\n";
      sink.write(done.data(), done.size());
    }
    sink.done();
    return true;
  };
  res.set_chunked_content_provider("text/event-stream", std::move(provider), [this, slot](bool) { release(slot); });
}

void Server::Impl::handle_generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const Clock::time_point arrived = Clock::now();
  const json body = parse_body(req.body);
  Limits lim{opt.max_tokens_cap, opt.default_max_tokens, opt.max_prompt_tokens};
  Job job = chat ? parse_chat(body, *loaded.tokenizer, lim)
                 : parse_completion(body, *loaded.tokenizer, loaded.model->config().n_vocab, lim);
  Slot* slot = acquire(arrived);
  if (job.stream) run_stream(std::move(job), slot, arrived, res);
  else run_plain(job, slot, arrived, res);
}

// ---------------------------------------------------------------- metrics

std::string Server::Impl::metrics_text() {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    char line[512];
    std::snprintf(line, sizeof line, "# HELP rwkvl_%s %s\n# TYPE rwkvl_%s %s\nrwkvl_%s %.17g\n", name, help, name, type, name, v);
    out += line;
  };
  const double gen_s = static_cast<double>(m.generation_us.load()) * 1e-6;
  const double prompt_s = static_cast<double>(m.prompt_us.load()) * 1e-6;
  metric("requests_total", "counter", "HTTP requests received", static_cast<double>(m.requests.load()));
  metric("requests_errors_total", "counter", "requests answered with an error status", static_cast<double>(m.errors.load()));
  metric("requests_rejected_total", "counter", "requests refused with 429 (queue full)", static_cast<double>(m.rejected.load()));
  metric("completions_total", "counter", "completion requests served", static_cast<double>(m.completions.load()));
  metric("chat_completions_total", "counter", "chat completion requests served", static_cast<double>(m.chats.load()));
  metric("prompt_tokens_total", "counter", "prompt tokens of served requests", static_cast<double>(m.prompt_tokens.load()));
  metric("prompt_tokens_cached_total", "counter", "prompt tokens resumed from the state cache", static_cast<double>(m.cached_tokens.load()));
  metric("tokens_generated_total", "counter", "tokens generated", static_cast<double>(m.generated_tokens.load()));
  metric("prompt_seconds_total", "counter", "seconds spent on prompts", prompt_s);
  metric("generation_seconds_total", "counter", "seconds spent generating", gen_s);
  metric("tokens_per_second", "gauge", "generated tokens per second of generation, all requests",
         gen_s > 0 ? static_cast<double>(m.generated_tokens.load()) / gen_s : 0.0);
  int queued = 0, busy = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    queued = waiting;
    busy = static_cast<int>(slots.size() - free_slots.size());
  }
  metric("queue_length", "gauge", "requests waiting for a slot", queued);
  metric("slots", "gauge", "slots (parallel sessions)", opt.parallel);
  metric("slots_busy", "gauge", "slots generating", busy);
  const PrefixCacheStats cs = cache ? cache->stats() : PrefixCacheStats{};
  metric("state_cache_hits_total", "counter", "prompts resumed from a cached prefix state", static_cast<double>(cs.hits));
  metric("state_cache_misses_total", "counter", "prompts with no cached prefix", static_cast<double>(cs.misses));
  metric("state_cache_entries", "gauge", "cached prefix states", static_cast<double>(cs.entries));
  metric("state_cache_bytes", "gauge", "bytes of cached prefix states", static_cast<double>(cs.bytes));
  metric("state_cache_capacity_bytes", "gauge", "bound of the prefix-state cache", static_cast<double>(cs.capacity));
  metric("state_cache_evictions_total", "counter", "prefix states evicted", static_cast<double>(cs.evictions));
  metric("rss_bytes", "gauge", "resident memory of the process", static_cast<double>(current_rss_bytes()));
  metric("peak_rss_bytes", "gauge", "peak resident memory of the process", static_cast<double>(peak_rss_bytes()));
  metric("uptime_seconds", "gauge", "seconds since the server started", seconds_since(started));
  return out;
}

// ---------------------------------------------------------------- routes

bool Server::Impl::pre_route(const httplib::Request& req, httplib::Response& res) {
  ++m.requests;
  if (req.path == "/health") return false;
  if (!opt.api_key.empty()) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth != "Bearer " + opt.api_key) {
      send_error(res, ApiError{401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error"});
      return true;
    }
  }
  if (req.path == "/metrics" || req.path == "/v1/models") return false;
  std::lock_guard<std::mutex> lock(mu);
  if (phase == Phase::kLoading) {
    send_error(res, ApiError{503, "the model is loading", "server_error"});
    return true;
  }
  if (phase == Phase::kFailed) {
    send_error(res, ApiError{500, "the model failed to load: " + load_message, "server_error"});
    return true;
  }
  return false;
}

void Server::Impl::routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    return pre_route(req, res) ? httplib::Server::HandlerResponse::Handled : httplib::Server::HandlerResponse::Unhandled;
  });
  auto guarded = [this](auto fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const ApiError& e) {
        ++m.errors;
        send_error(res, e);
      } catch (const Error& e) {
        ++m.errors;
        send_error(res, ApiError{e.code() == ErrorCode::kInvalidArgument ? 400 : 500, e.what(),
                                 e.code() == ErrorCode::kInvalidArgument ? "invalid_request_error" : "server_error"});
      } catch (const std::exception& e) {
        ++m.errors;
        send_error(res, ApiError{500, std::string("internal error: ") + e.what(), "server_error"});
      }
    };
  };
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    if (phase == Phase::kReady) send_json(res, 200, json{{"status", "ok"}});
    else if (phase == Phase::kLoading) send_json(res, 503, json{{"status", "loading"}});
    else send_json(res, 500, json{{"status", "error"}, {"message", load_message}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model{{"id", opt.model_alias}, {"object", "model"}, {"created", created}, {"owned_by", "rwkv-lite"}};
    send_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
  });
  for (const char* path : {"/v1/completions", "/completions"})
    http.Post(path, guarded([this](const httplib::Request& req, httplib::Response& res) { handle_generate(req, res, false); }));
  for (const char* path : {"/v1/chat/completions", "/chat/completions"})
    http.Post(path, guarded([this](const httplib::Request& req, httplib::Response& res) { handle_generate(req, res, true); }));
  http.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req.body);
    if (!body.contains("content") || !body["content"].is_string()) throw ApiError{400, "'content' must be a string", "invalid_request_error", "content"};
    send_json(res, 200, json{{"tokens", loaded.tokenizer->encode(body["content"].get<std::string>())}});
  }));
  http.Post("/detokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req.body);
    if (!body.contains("tokens") || !body["tokens"].is_array()) throw ApiError{400, "'tokens' must be an array of ids", "invalid_request_error", "tokens"};
    std::string text;
    for (const json& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= loaded.tokenizer->vocab_size())
        throw ApiError{400, "'tokens' must hold ids of the vocabulary", "invalid_request_error", "tokens"};
      text += loaded.tokenizer->token_bytes(static_cast<int32_t>(t.get<int64_t>()));
    }
    send_json(res, 200, json{{"content", text}});
  }));
  http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    ++m.errors;
    const int st = res.status;
    const std::string msg = st == 413   ? "the request body is larger than the server's limit"
                            : st == 404 ? "no such endpoint"
                                        : "request failed";
    send_json(res, st, error_json(ApiError{st, msg, "invalid_request_error"}));
  });
}

// ---------------------------------------------------------------- the server

Server::Server(const ServerOptions& options, Loader loader) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.opt = options;
  s.loader = std::move(loader);
  const ServerOptions& o = s.opt;
  if (o.parallel < 1 || o.parallel > 256) RWKVL_FAIL(kInvalidArgument, "parallel must be in [1, 256], not %d", o.parallel);
  if (o.queue < 0 || o.queue > 100000) RWKVL_FAIL(kInvalidArgument, "queue must be in [0, 100000], not %d", o.queue);
  if (o.port < 0 || o.port > 65535) RWKVL_FAIL(kInvalidArgument, "port must be in [0, 65535], not %d", o.port);
  if (o.http_threads < 0 || o.http_threads > 4096) RWKVL_FAIL(kInvalidArgument, "http_threads must be in [0, 4096]");
  if (o.max_tokens_cap < 1 || o.default_max_tokens < 0 || o.max_prompt_tokens < 1 || o.max_body_bytes < 1024)
    RWKVL_FAIL(kInvalidArgument, "limits out of range (max_tokens_cap >= 1, max_prompt_tokens >= 1, max_body_bytes >= 1024)");
  if (!(o.deadline_seconds >= 0) || !(o.idle_timeout_seconds > 0))
    RWKVL_FAIL(kInvalidArgument, "the deadline must be >= 0 and the idle timeout > 0 seconds");
  // Connection threads: cpp-httplib gives every open connection a thread while it waits for a request (up to
  // the idle timeout), so idle clients must not take all of them: 256 at least.
  const int threads = o.http_threads > 0 ? o.http_threads : std::max(256, o.parallel + o.queue + 8);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.http.set_payload_max_length(o.max_body_bytes);
  // Streamed pieces are small writes: without TCP_NODELAY each waits for the peer's delayed ACK (40 ms).
  s.http.set_tcp_nodelay(true);
  const auto idle = std::chrono::duration<double>(o.idle_timeout_seconds);
  s.http.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(idle));
  s.http.set_keep_alive_timeout(static_cast<time_t>(std::max(1.0, o.idle_timeout_seconds)));
  s.http.set_keep_alive_max_count(1000);  // cpp-httplib's default closes a connection after 5 requests
  s.http.set_write_timeout(std::chrono::seconds(30));
  s.routes();
  if (o.port == 0) s.port = s.http.bind_to_any_port(o.host);
  else s.port = s.http.bind_to_port(o.host, o.port) ? o.port : -1;
  if (s.port <= 0) RWKVL_FAIL(kIo, "cannot listen on %s:%d (address in use, or not an address of this machine)", o.host.c_str(), o.port);
  s.listen_thread = std::thread([&s] {
    s.http.listen_after_bind();
    s.listening_done = true;
  });
  s.load_thread = std::thread([&s] { s.load(); });
}

Server::~Server() {
  stop(0);
  wait();
}

int Server::port() const { return impl_->port; }

void Server::wait_ready() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->phase != Impl::Phase::kLoading; });
  if (impl_->load_error) std::rethrow_exception(impl_->load_error);
}

void Server::stop(double grace_seconds) {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  s.cv.notify_all();
  s.http.stop();
  s.grace_thread = std::thread([&s, grace_seconds] {
    const Clock::time_point until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::max(0.0, grace_seconds)));
    while (!s.listening_done && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s.cancel_all = true;
  });
}

void Server::wait() {
  Impl& s = *impl_;
  if (s.listen_thread.joinable()) s.listen_thread.join();
  if (s.grace_thread.joinable()) s.grace_thread.join();
  if (s.load_thread.joinable()) s.load_thread.join();
}

}  // namespace rwkvl::serve
