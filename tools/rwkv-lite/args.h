// Command-line flags of rwkv-lite: one table declares every flag (name, type, default, range, help and the
// subcommands that take it); the parser, the defaults and --help all come from it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace rwkvl::cli {

// Bad command line -> exit code 2. The message is one line and already names the subcommand's --help.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class FlagKind { kSwitch, kInt, kFloat, kString, kChoice };

struct FlagSpec {
  const char* name;        // long name without the dashes: "temp" -> --temp
  const char* short_name;  // "t" -> -t, or nullptr
  FlagKind kind;
  const char* commands;    // space-separated subcommands that accept it; "*" = all
  const char* def;         // default value as text; nullptr = none (unset unless given)
  const char* metavar;     // placeholder in --help: "N", "FILE"
  const char* help;
  double lo = 0, hi = 0;   // kInt / kFloat: allowed range [lo, hi] (or (lo, hi] with lo_open)
  bool lo_open = false;
  const char* choices = nullptr;  // kChoice: "keep|f32|f16"
};

class Args;
using CommandFn = int (*)(const Args&);

struct CommandSpec {
  const char* name;
  const char* synopsis;  // after "rwkv-lite NAME "
  const char* summary;   // one line for the global --help
  const char* details;   // a paragraph for the command's --help (may be "")
  const char* example;
  CommandFn run;
};

const std::vector<FlagSpec>& flag_table();
const std::vector<CommandSpec>& command_table();
const CommandSpec* find_command(const std::string& name);

class Args {
 public:
  // Parses argv[first, argc) for `command`; throws UsageError. Values are checked against the table
  // (numbers, ranges, choices) here, so commands can use them directly.
  static Args parse(const CommandSpec& command, int argc, char** argv, int first);

  const std::string& command() const { return command_; }
  bool accepts(const char* name) const;            // declared for this subcommand
  bool given(const char* name) const;              // on the command line
  bool on(const char* name) const;                 // a switch
  std::string str(const char* name) const;         // value or default ("" if neither)
  int64_t integer(const char* name) const;         // value or default
  double number(const char* name) const;           // value or default
  // Throws UsageError "<what> (see 'rwkv-lite CMD --help')".
  [[noreturn]] void fail(const std::string& what) const;

 private:
  const FlagSpec& spec(const char* name) const;
  std::string command_;
  std::map<std::string, std::string> values_;
};

void print_global_help(std::FILE* out);
void print_command_help(std::FILE* out, const CommandSpec& command);

}  // namespace rwkvl::cli
