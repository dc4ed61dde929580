#include "common.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "args.h"

namespace rwkvl::cli {

void check(rwkvl_status st) {
  if (st == RWKVL_OK) return;
  const char* msg = rwkvl_last_error();
  throw Failure(msg && *msg ? msg : rwkvl_status_name(st));
}

void check(rwkvl_status st, const std::string& context) {
  if (st == RWKVL_OK) return;
  const char* msg = rwkvl_last_error();
  throw Failure(context + ": " + (msg && *msg ? msg : rwkvl_status_name(st)));
}

std::string require(const Args& args, const char* name) {
  if (!args.given(name)) {
    for (const auto& f : flag_table()) {
      if (std::strcmp(f.name, name) != 0) continue;
      std::string flag = f.short_name ? std::string("-") + f.short_name + "/--" + name : std::string("--") + name;
      args.fail("missing " + flag + " " + f.metavar);
    }
    args.fail(std::string("missing --") + name);
  }
  return args.str(name);
}

ModelPtr load_model(const Args& args) {
  const std::string path = require(args, "model");
  rwkvl_model_params params = rwkvl_model_default_params();
  std::string dtype;
  if (args.accepts("weight-dtype")) {
    dtype = args.str("weight-dtype");
    params.weight_dtype = dtype.c_str();
  }
  rwkvl_model* m = nullptr;
  check(rwkvl_model_load(path.c_str(), &params, &m));
  return ModelPtr(m);
}

rwkvl_model_info model_info(const rwkvl_model* model) {
  rwkvl_model_info info{};
  check(rwkvl_model_get_info(model, &info));
  return info;
}

ContextPtr new_context(const rwkvl_model* model, int n_threads) {
  rwkvl_context* c = nullptr;
  check(rwkvl_context_new(model, n_threads, &c));
  return ContextPtr(c);
}

StatePtr new_state(const rwkvl_model* model) {
  rwkvl_state* s = nullptr;
  check(rwkvl_state_new(model, &s));
  return StatePtr(s);
}

TokenizerPtr model_tokenizer(const rwkvl_model* model, const std::string& model_path, const std::string& tok_path) {
  rwkvl_tokenizer* t = nullptr;
  check(rwkvl_tokenizer_for_model(model, model_path.c_str(), tok_path.empty() ? nullptr : tok_path.c_str(), &t));
  return TokenizerPtr(t);
}

std::vector<int32_t> tokenize(const rwkvl_tokenizer* tok, std::string_view text) {
  std::vector<int32_t> ids(text.size() + 16);
  size_t n = 0;
  rwkvl_status st = rwkvl_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n > ids.size()) {
    ids.resize(n);
    st = rwkvl_tokenize(tok, text.data(), text.size(), ids.data(), ids.size(), &n);
  }
  check(st, "tokenizing");
  ids.resize(n);
  return ids;
}

std::string token_bytes(const rwkvl_tokenizer* tok, int32_t id) {
  std::string out(64, '\0');
  size_t n = 0;
  rwkvl_status st = rwkvl_token_bytes(tok, id, out.data(), out.size(), &n);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n > out.size()) {
    out.resize(n);
    st = rwkvl_token_bytes(tok, id, out.data(), out.size(), &n);
  }
  check(st, "decoding token " + std::to_string(id));
  out.resize(n);
  return out;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure(std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Failure(std::string("cannot read ") + what + " '" + path + "'");
  return ss.str();
}

void write_file(const std::string& path, const void* data, size_t size, const char* what) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Failure(std::string("cannot write ") + what + " '" + path + "': " + std::strerror(errno));
  const bool ok = std::fwrite(data, 1, size, f) == size;
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    throw Failure(std::string("cannot write ") + what + " '" + path + "': " + std::strerror(ok ? errno : err));
  }
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  // Find the last lead byte within the final 3 bytes; hold it (and what follows) if its sequence is not
  // complete yet.
  const size_t n = pending_.size();
  size_t hold = 0;
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
    const size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (need > back) hold = back;
    break;
  }
  std::string out = pending_.substr(0, n - hold);
  pending_.erase(0, n - hold);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace rwkvl::cli
