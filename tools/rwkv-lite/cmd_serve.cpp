// rwkv-lite serve: the OpenAI-compatible HTTP server (rwkvl_server_*, docs/SERVER.md) until SIGINT or SIGTERM.
// Compiled twice (CMakeLists.txt): in `rwkv-lite-server` it serves; in `rwkv-lite` (RWKVL_SERVE_EXEC) it runs
// rwkv-lite-server from the same folder with the same arguments, so the device tool does not load the HTTP
// library and what it brings (OpenSSL, zlib, brotli) in every command.
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

#if !RWKVL_SERVE_EXEC
namespace {

// The session settings that need no loaded model (sizes in bytes, not shares of the model).
rwkvl_session_params serve_session(const Args& args) {
  rwkvl_session_params p = rwkvl_session_default_params();
  p.n_threads = static_cast<int>(args.integer("threads"));
  check(rwkvl_ffn_mode_from_string(args.str("ffn-mode").c_str(), &p.ffn.mode), "--ffn-mode");
  if (args.given("ffn-cache")) p.ffn.cache_bytes = parse_bytes(args, "ffn-cache");
  p.ffn.prefetch = args.on("ffn-prefetch") ? 1 : 0;
  check(rwkvl_head_mode_from_string(args.str("head-mode").c_str(), &p.head.mode), "--head-mode");
  p.head.p = args.number("head-p");
  p.head.min_clusters = static_cast<int>(args.integer("head-min"));
  p.head.max_clusters = static_cast<int>(args.integer("head-max"));
  p.memory.emb_cache_rows = args.integer("emb-cache");
  if (args.given("mem-budget")) p.memory.budget_bytes = parse_bytes(args, "mem-budget");
  p.memory.prefetch = args.on("no-prefetch") ? 0 : 1;
  p.memory.max_chunk = static_cast<int>(args.integer("chunk"));
  if (p.memory.budget_bytes && p.memory.max_chunk == 0) p.memory.max_chunk = 8;
  if (args.given("io-throttle")) p.memory.io_mb_per_s = args.number("io-throttle");
  if (args.given("io-latency")) p.memory.io_latency_us = args.number("io-latency");
  return p;
}

}  // namespace

#endif

#if RWKVL_SERVE_EXEC
int cmd_serve(const Args& args) {
  (void)args;
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = ".";
  if (n > 0) {
    self[n] = '\0';
    dir = self;
    dir.resize(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/'));
  }
  const std::string server = dir + "/rwkv-lite-server";
  std::vector<char*> argv = {const_cast<char*>(server.c_str())};
  for (int i = 1; i < g_argc; ++i) argv.push_back(g_argv[i]);
  argv.push_back(nullptr);
  execv(server.c_str(), argv.data());
  throw Failure("rwkv-lite serve runs " + server + ", which cannot be started (" + std::strerror(errno) +
                "): build or install the rwkv-lite-server target beside rwkv-lite");
}
#else
int cmd_serve(const Args& args) {
  rwkvl_server_params p = rwkvl_server_default_params();
  const std::string model_path = require(args, "model");
  const std::string host = args.str("host"), tok = args.str("tokenizer"), alias = args.str("alias"),
                    key = args.str("api-key");
  const std::string dtype = args.str("weight-dtype");
  p.model_path = model_path.c_str();
  p.model.weight_dtype = dtype.c_str();
  p.tokenizer_path = tok.empty() ? nullptr : tok.c_str();
  p.model_alias = alias.empty() ? nullptr : alias.c_str();
  p.api_key = key.empty() ? nullptr : key.c_str();
  p.host = host.c_str();
  p.port = static_cast<int>(args.integer("port"));
  p.session = serve_session(args);
  p.parallel = static_cast<int>(args.integer("parallel"));
  p.queue = static_cast<int>(args.integer("queue"));
  p.state_cache_bytes = parse_bytes(args, "state-cache");
  p.cache_every = static_cast<size_t>(args.integer("cache-every"));
  p.max_body_bytes = parse_bytes(args, "max-body");
  p.max_tokens_cap = args.integer("max-tokens");
  p.max_prompt_tokens = static_cast<size_t>(args.integer("max-prompt"));
  p.deadline_seconds = args.number("deadline");
  p.idle_timeout_seconds = args.number("idle-timeout");

  // Requests run on many connection threads; glibc would give each its own malloc arena (up to 8 per core), and
  // freed memory held in them grows the resident set under load (measured: 83 -> 95 MiB over 30 s of 32 streaming
  // clients; with two arenas 69 -> 73 MiB).
  mallopt(M_ARENA_MAX, 2);
  // SIGINT / SIGTERM are taken by sigwait below: blocked before any thread starts, so no thread is interrupted.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  rwkvl_server* srv = nullptr;
  check(rwkvl_server_start(&p, &srv));
  std::fprintf(stderr, "rwkv-lite serve: listening on http://%s:%d (loading %s)\n", host.c_str(), rwkvl_server_port(srv),
               model_path.c_str());
  if (rwkvl_server_wait_ready(srv) != RWKVL_OK) {
    const std::string why = rwkvl_last_error();
    rwkvl_server_free(srv);
    throw Failure("cannot serve: " + why);
  }
  std::fprintf(stderr, "rwkv-lite serve: ready (%lld slot(s); peak RSS %s)\n", static_cast<long long>(p.parallel),
               format_bytes(rwkvl_peak_rss_bytes()).c_str());
  int sig = 0;
  sigwait(&sigs, &sig);
  const double grace = args.number("grace");
  std::fprintf(stderr, "rwkv-lite serve: %s: stopping (running requests get up to %.0f s)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM", grace);
  rwkvl_server_stop(srv, grace);
  rwkvl_server_wait(srv);
  rwkvl_server_free(srv);
  std::fprintf(stderr, "rwkv-lite serve: stopped (peak RSS %s)\n", format_bytes(rwkvl_peak_rss_bytes()).c_str());
  return 0;
}
#endif

}  // namespace rwkvl::cli
