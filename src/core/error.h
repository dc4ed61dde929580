// Two tiers of errors (see docs/ARCHITECTURE.md):
//  * RWKVL_CHECK: a broken internal invariant -> prints file:line:expression and aborts, in every build.
//  * rwkvl::Error: bad input (I/O, format, user arguments) -> thrown inside the C++ core, caught at the
//    C API boundary and turned into an error code + message. The library never calls exit().
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace rwkvl {

enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // caller passed something out of range (token id, thread count, ...)
  kIo = 2,               // open/read/write/mmap failed
  kFormat = 3,           // file content is malformed, truncated or inconsistent
  kUnsupported = 4,      // well-formed but not supported (version, dtype, architecture)
  kOutOfMemory = 5,      // allocation refused or too large
  kInternal = 6,
};

const char* error_code_name(ErrorCode c);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] void throw_error(ErrorCode code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

[[noreturn]] void check_failed(const char* file, int line, const char* expr);

}  // namespace rwkvl

#define RWKVL_CHECK(cond)                                              \
  do {                                                                 \
    if (!(cond)) ::rwkvl::check_failed(__FILE__, __LINE__, #cond);     \
  } while (0)

#define RWKVL_FAIL(code, ...) ::rwkvl::throw_error(::rwkvl::ErrorCode::code, __VA_ARGS__)
