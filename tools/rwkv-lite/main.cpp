// rwkv-lite: command-line front end. A thin client of the public C API (rwkv_lite.h); flags live in
// args.cpp, subcommands in cmd_*.cpp.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "rwkv_lite.h"

namespace rwkvl::cli {
int g_argc = 0;
char** g_argv = nullptr;
}  // namespace rwkvl::cli

namespace {

int run(int argc, char** argv) {
  using namespace rwkvl::cli;
  if (argc < 2) {
    std::string names;
    for (const auto& c : command_table()) names += (names.empty() ? "" : ", ") + std::string(c.name);
    throw UsageError("missing command: one of " + names + " (see 'rwkv-lite --help')");
  }
  const std::string first = argv[1];
  if (first == "-h" || first == "--help" || first == "help") {
    print_global_help(stdout);
    return 0;
  }
  if (first == "--version" || first == "version") {
    std::printf("rwkv-lite %s\n%s\n", RWKVL_VERSION_STRING, rwkvl_system_info());
    return 0;
  }
  const CommandSpec* command = find_command(first);
  if (!command) {
    throw UsageError("unknown command '" + first + "' (see 'rwkv-lite --help')");
  }
  const Args args = Args::parse(*command, argc, argv, 2);
  if (args.on("help")) {
    print_command_help(stdout, *command);
    return 0;
  }
  return command->run(args);
}

}  // namespace

int main(int argc, char** argv) {
  // A model file truncated or replaced while mapped: a clear error and exit 1 instead of a silent SIGBUS.
  rwkvl_install_sigbus_guard("rwkv-lite");
  rwkvl::cli::g_argc = argc;
  rwkvl::cli::g_argv = argv;
  try {
    return run(argc, argv);
  } catch (const rwkvl::cli::UsageError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "rwkv-lite: error: %s\n", e.what());
    return 2;
  } catch (const rwkvl::cli::Failure& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "rwkv-lite: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "rwkv-lite: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rwkv-lite: error: %s\n", e.what());
    return 1;
  }
}
