// The OpenAI-compatible server (src/serve/) in process, through an HTTP client: responses against the library's
// greedy reference, server-sent events, the prefix-state cache, limits and errors, the queue, and stopping.
// The real-client checks (the openai npm package, a load test) are tests/cli/serve_clients.sh.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "runtime/session.h"
#include "serve/server.h"
#include "test_util.h"
#include "tiny_models.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl::serve {
namespace {

using nlohmann::json;

std::string greedy_text(const std::shared_ptr<const Model>& m, const std::string& prompt, int n) {
  Session s(m, 1);
  State st;
  st.reset(m->config());
  std::vector<float> logits(256);
  const std::vector<int32_t> toks = test::byte_tokens(prompt);
  s.eval(st, toks.data(), toks.size(), 0, logits.data(), nullptr);
  std::string out;
  for (int i = 0; i < n; ++i) {
    int32_t best = 0;
    for (int32_t v = 1; v < 256; ++v)
      if (logits[static_cast<size_t>(v)] > logits[static_cast<size_t>(best)]) best = v;
    out += static_cast<char>(best);
    s.eval(st, &best, 1, 1, logits.data(), nullptr);
  }
  return out;
}

Loader tiny_loader(std::shared_ptr<Model> m) {
  return [m] { return Loaded{m, Tokenizer::byte_level()}; };
}

ServerOptions options() {
  ServerOptions o;
  o.port = 0;
  o.model_alias = "tiny";
  o.session.threads = 1;
  return o;
}

json post(httplib::Client& c, const std::string& path, const json& body, int* status = nullptr) {
  auto r = c.Post(path, body.dump(), "application/json");
  EXPECT_TRUE(r) << "no response from " << path;
  if (!r) return json();
  if (status) *status = r->status;
  return json::parse(r->body, nullptr, false);
}

// The data: lines of an event stream.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

double metric(httplib::Client& c, const std::string& name) {
  auto r = c.Get("/metrics");
  if (!r) return -1;
  const std::string key = "\nrwkvl_" + name + " ";
  const size_t at = r->body.find(key);
  return at == std::string::npos ? -1 : std::stod(r->body.substr(at + key.size()));
}

TEST(Server, HealthSays503WhileLoadingThenServes) {
  auto m = test::load_tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  std::promise<void> go;
  std::shared_future<void> gate = go.get_future().share();
  Server srv(options(), [m, gate] {
    gate.wait();
    return Loaded{m, Tokenizer::byte_level()};
  });
  httplib::Client c("127.0.0.1", srv.port());
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503);
  int st = 0;
  post(c, "/v1/completions", {{"prompt", "x"}}, &st);
  EXPECT_EQ(st, 503);
  go.set_value();
  srv.wait_ready();
  h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  const json models = json::parse(c.Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
}

TEST(Server, CompletionsPlainAndStreamedGiveTheGreedyText) {
  auto m = test::load_tiny("5v2-730K");
  if (!m) GTEST_SKIP();
  Server srv(options(), tiny_loader(m));
  srv.wait_ready();
  httplib::Client c("127.0.0.1", srv.port());
  const std::string want = greedy_text(m, "The quick brown fox", 30);
  // Byte tokens: compare bytes whose UTF-8 is valid on both sides (JSON replaces invalid bytes).
  const json r = post(c, "/v1/completions", {{"prompt", "The quick brown fox"}, {"max_tokens", 30}, {"temperature", 0}});
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 19);
  EXPECT_EQ(r["usage"]["completion_tokens"], 30);
  EXPECT_EQ(r["choices"][0]["text"].get<std::string>(), json(want).get<std::string>());
  EXPECT_TRUE(r["timings"].contains("prompt_per_second"));

  auto s = c.Post("/v1/completions",
                  json{{"prompt", "The quick brown fox"}, {"max_tokens", 30}, {"temperature", 0}, {"stream", true}}.dump(),
                  "application/json");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<std::string> ev = sse_events(s->body);
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < ev.size(); ++i) text += json::parse(ev[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, r["choices"][0]["text"].get<std::string>());
  const json last = json::parse(ev[ev.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 30);
  // A stop sequence from the middle of the greedy text.
  const std::string stop = want.substr(10, 2);
  const json r2 = post(c, "/v1/completions", {{"prompt", "The quick brown fox"}, {"max_tokens", 30}, {"temperature", 0}, {"stop", stop}});
  EXPECT_EQ(r2["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r2["choices"][0]["text"].get<std::string>(), json(want.substr(0, want.find(stop))).get<std::string>());
}

TEST(Server, ChatResumesASharedSystemPromptFromTheStateCache) {
  auto m = test::load_tiny("7v0-834K");
  if (!m) GTEST_SKIP();
  ServerOptions o = options();
  o.cache_every = 0;
  Server srv(o, tiny_loader(m));
  srv.wait_ready();
  httplib::Client c("127.0.0.1", srv.port());
  const std::string system(300, 'a');
  auto chat = [&](const std::string& q) {
    return post(c, "/v1/chat/completions",
                {{"messages", {{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", q}}}},
                 {"temperature", 0}, {"presence_penalty", 0}, {"frequency_penalty", 0}, {"max_tokens", 20}});
  };
  const json a = chat("first?");
  EXPECT_EQ(a["object"], "chat.completion");
  EXPECT_EQ(a["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(a["timings"]["cache_n"], 0);
  const json b = chat("second!");
  const size_t system_tokens = std::string("System: ").size() + system.size() + 2;
  EXPECT_EQ(b["timings"]["cache_n"], system_tokens);
  EXPECT_EQ(b["usage"]["prompt_tokens_details"]["cached_tokens"], system_tokens);
  EXPECT_EQ(metric(c, "state_cache_hits_total"), 1);
  // The reply equals a plain completion of the rendered prompt cut at "\n\n" (leading blanks dropped).
  const json p = post(c, "/v1/completions",
                      {{"prompt", "System: " + system + "\n\nUser: second!\n\nAssistant:"}, {"max_tokens", 20},
                       {"temperature", 0}, {"stop", "\n\n"}});
  std::string want = p["choices"][0]["text"].get<std::string>();
  want.erase(0, want.find_first_not_of(" \t\n"));
  EXPECT_EQ(b["choices"][0]["message"]["content"].get<std::string>(), want);
}

TEST(Server, BadRequestsGetClearErrorsAndTheServerGoesOn) {
  auto m = test::load_tiny("4v0-660K");
  if (!m) GTEST_SKIP();
  ServerOptions o = options();
  o.max_body_bytes = 4096;
  o.max_prompt_tokens = 100;
  o.api_key = "sekrit";
  Server srv(o, tiny_loader(m));
  srv.wait_ready();
  httplib::Client c("127.0.0.1", srv.port());
  EXPECT_EQ(c.Get("/health")->status, 200);  // no key needed
  int st = 0;
  json e = post(c, "/v1/completions", {{"prompt", "x"}}, &st);
  EXPECT_EQ(st, 401);
  c.set_bearer_token_auth("sekrit");
  auto r = c.Post("/v1/completions", "{\"prompt\": ", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find("JSON"), std::string::npos);
  r = c.Post("/v1/completions", std::string(10000, ' '), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  e = post(c, "/v1/completions", {{"prompt", std::string(200, 'x')}}, &st);
  EXPECT_EQ(st, 400);
  EXPECT_EQ(e["error"]["param"], "prompt");
  e = post(c, "/v1/completions", {{"prompt", "x"}, {"temperature", "hot"}}, &st);
  EXPECT_EQ(st, 400);
  e = post(c, "/v1/completions", {{"prompt", {1, 2, 999}}}, &st);
  EXPECT_EQ(st, 400);
  e = post(c, "/v1/chat/completions", {{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, &st);
  EXPECT_EQ(st, 400);
  EXPECT_EQ(c.Get("/v1/nothing")->status, 404);
  const json t = post(c, "/tokenize", {{"content", "héllo"}}, &st);
  EXPECT_EQ(t["tokens"].size(), 6u);
  const json d = post(c, "/detokenize", {{"tokens", t["tokens"]}}, &st);
  EXPECT_EQ(d["content"], "héllo");
  e = post(c, "/v1/completions", {{"prompt", "ok"}, {"max_tokens", 3}}, &st);
  EXPECT_EQ(st, 200);
  EXPECT_GE(metric(c, "requests_errors_total"), 7);
}

TEST(Server, AFullQueueGets429AndStoppingEndsStreamsCleanly) {
  auto m = test::load_tiny("6v0-1m");
  if (!m) GTEST_SKIP();
  ServerOptions o = options();
  o.parallel = 1;
  o.queue = 0;
  o.max_tokens_cap = 1000000;
  Server srv(o, tiny_loader(m));
  srv.wait_ready();
  // A long stream holds the only slot.
  std::thread client([port = srv.port()] {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    auto r = c.Post("/v1/completions", json{{"prompt", "go"}, {"max_tokens", 1000000}, {"stream", true}}.dump(), "application/json");
    if (r) {
      // Ended by the stop below: the last event says why (no [DONE]).
      EXPECT_NE(r->body.find("shutting down"), std::string::npos);
    }
  });
  httplib::Client c("127.0.0.1", srv.port());
  for (int i = 0; i < 500 && metric(c, "slots_busy") < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(metric(c, "slots_busy"), 1);
  auto r = c.Post("/v1/completions", json{{"prompt", "x"}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  EXPECT_EQ(metric(c, "requests_rejected_total"), 1);
  srv.stop(0.2);
  srv.wait();
  client.join();
}

TEST(Server, AClientThatDisconnectsMidStreamFreesItsSlot) {
  auto m = test::load_tiny("6v0-1m");
  if (!m) GTEST_SKIP();
  ServerOptions o = options();
  o.parallel = 1;
  o.max_tokens_cap = 1000000;
  Server srv(o, tiny_loader(m));
  srv.wait_ready();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(srv.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string body = json{{"prompt", "go"}, {"max_tokens", 1000000}, {"stream", true}}.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  char buf[4096];
  ASSERT_GT(read(fd, buf, sizeof buf), 0);  // the stream started
  close(fd);
  // The only slot comes back: a new request is served.
  httplib::Client c("127.0.0.1", srv.port());
  c.set_read_timeout(30, 0);
  int st = 0;
  const json r = post(c, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}}, &st);
  EXPECT_EQ(st, 200);
  EXPECT_EQ(metric(c, "slots_busy"), 0);
}

}  // namespace
}  // namespace rwkvl::serve
