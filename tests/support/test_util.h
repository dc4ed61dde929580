// Shared helpers for the tests (tests/support/): where reference data lives, temp files, reading float32
// blobs, running the CLI. compare.h holds the named tolerances, tiny_models.h the reference-model helpers.
#pragma once

#include <string>
#include <vector>

namespace rwkvl::test {

// Folder with the reference models and data (../shared beside the checkout, or $RWKVL_SHARED_DIR).
std::string shared_dir();
// True when RWKVL_ALLOW_NO_SHARED=1: missing reference data then skips tests instead of failing them.
bool allow_no_shared();
// shared_dir() + "/" + rel, or "" if that file does not exist. A missing file is a test failure (a
// non-fatal one, naming the file; the caller then returns, usually through GTEST_SKIP(), which cannot
// clear it) unless allow_no_shared(): reference data that silently disappears must not turn the checks
// that need it into skips.
std::string shared_file(const std::string& rel);
// A fresh, empty temporary directory for this test process (removed at exit).
std::string temp_dir();
std::vector<float> read_f32_file(const std::string& path);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);
// Path of the built rwkv-lite command-line tool.
std::string cli_path();
// Shell words that run the tool: its path, preceded by the emulator when the build is cross-compiled
// (CMAKE_CROSSCOMPILING_EMULATOR, e.g. qemu-aarch64 for the aarch64 stage).
std::string cli_command();
// Runs a shell command, captures stdout+stderr, returns the exit status (-1 if it could not run).
int run_command(const std::string& cmd, std::string* output);

}  // namespace rwkvl::test
