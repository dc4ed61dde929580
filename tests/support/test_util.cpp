#include "test_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rwkvl::test {

std::string shared_dir() {
  if (const char* env = std::getenv("RWKVL_SHARED_DIR")) return env;
  return RWKVL_SHARED_DIR;
}

bool allow_no_shared() {
  const char* env = std::getenv("RWKVL_ALLOW_NO_SHARED");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

std::string shared_file(const std::string& rel) {
  std::string p = shared_dir() + "/" + rel;
  struct stat st {};
  if (stat(p.c_str(), &st) == 0) return p;
  if (!allow_no_shared()) {
    ADD_FAILURE() << "reference file missing: " << p << " (the shared folder is " << shared_dir()
                  << "; set RWKVL_ALLOW_NO_SHARED=1 to skip the tests that need it)";
  }
  return std::string();
}

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rwkvl-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};
}  // namespace

std::string temp_dir() {
  static TempDir dir;
  return dir.path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<float> read_f32_file(const std::string& path) {
  std::string s = read_file(path);
  std::vector<float> v(s.size() / 4);
  std::memcpy(v.data(), s.data(), v.size() * 4);
  return v;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string cli_path() { return RWKVL_CLI_PATH; }

std::string cli_command() {
  std::string emulator = RWKVL_CLI_EMULATOR;
  std::string cmd = emulator.empty() ? std::string() : emulator + " ";
  return cmd + "'" + cli_path() + "'";
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  if (output) *output = out;
  if (st == -1) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace rwkvl::test
