// Shared plumbing of the C API implementation files: the thread-local last-error message and the
// try/catch wrapper that turns rwkvl::Error (and std::bad_alloc) into an rwkvl_status.
#pragma once

#include <cstring>
#include <exception>
#include <type_traits>
#include <memory>
#include <new>
#include <string>

#include "core/error.h"
#include "runtime/sampler.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"
#include "rwkv_lite.h"

// The context (= session) handle: the parameters and the library session built from them (defined here so
// every C API file can reach it). The rwkvl_context_set_* calls change one part of `params` and rebuild the
// session from all of it.
// A context is a session: its parameters are the session's (s->params()), never null after creation.
struct rwkvl_context {
  std::shared_ptr<const rwkvl::Model> m;
  std::unique_ptr<rwkvl::Session> s;
};

struct rwkvl_model {
  std::shared_ptr<rwkvl::Model> m;
};

// A state with the shape of the model it was made for.
struct rwkvl_state {
  rwkvl::State st;
  rwkvl::ModelConfig cfg;
};

// The tokenizer handle (the text streams of c_api_input.cpp read through it).
struct rwkvl_tokenizer {
  std::unique_ptr<rwkvl::Tokenizer> tok;
  std::string name;
};

namespace rwkvl::api {

// The value a caller stored in a C enum field, read without loading it as the enum type: C callers may store
// any int there, and in C++ loading a value outside the enum's range is undefined (UBSan stops on it).
template <class E>
long long enum_value(const E& e) {
  static_assert(std::is_enum_v<E>);
  std::underlying_type_t<E> v;
  std::memcpy(&v, &e, sizeof v);
  return static_cast<long long>(v);
}

// The library model behind a handle (for in-tree tools that run C++ passes on a loaded model).
std::shared_ptr<Model> model_of(const rwkvl_model* m);

// The C dtype of a weight-matrix dtype (kInternal for i32 / u8) (c_api_types.cpp).
rwkvl_dtype to_c_dtype(DType t);

// The C parameter structs as library options (kInvalidArgument naming `fn` for unknown modes and values
// out of range).
FfnOptions ffn_options(const rwkvl_ffn_params& p, const char* fn);
HeadOptions head_options(const rwkvl_head_params& p, const char* fn);
void memory_options(const rwkvl_memory_params& p, const char* fn, StorageOptions& so, MemoryOptions& mo);
SessionParams session_params(const rwkvl_session_params& p, const char* fn);
SamplerParams sampler_params(const rwkvl_sampler_params& p);
// Replaces the context's session by one built from `p` (the old one is freed first: a budget's plan measures
// the process without it). When that fails, the context gets a session built from `fallback` and the first
// error is thrown.
void rebuild(rwkvl_context* ctx, const SessionParams& p, const SessionParams& fallback);

void set_last_error(const std::string& msg);
void clear_last_error();
rwkvl_status to_status(ErrorCode c);

// Runs fn() and converts exceptions to a status (+ message). fn returns void.
template <typename Fn>
rwkvl_status guarded(Fn&& fn) {
  try {
    clear_last_error();
    fn();
    return RWKVL_OK;
  } catch (const Error& e) {
    set_last_error(e.what());
    return to_status(e.code());
  } catch (const std::bad_alloc&) {
    set_last_error("out of memory");
    return RWKVL_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(std::string("internal error: ") + e.what());
    return RWKVL_ERR_INTERNAL;
  }
}

}  // namespace rwkvl::api

#define RWKVL_API_REQUIRE(cond, ...)                                  \
  do {                                                                \
    if (!(cond)) RWKVL_FAIL(kInvalidArgument, __VA_ARGS__);           \
  } while (0)

namespace rwkvl::api {

// Copies the caller's extensible settings struct (its first struct_size bytes, API 1.7 *_extras) over the defaults in
// x; NULL keeps them. A struct_size below its first two members (the size and one pointer) is refused.
template <class T>
void read_extras(const T* in, T& x, const char* fn, const char* defaults_fn) {
  if (!in) return;
  RWKVL_API_REQUIRE(in->struct_size >= sizeof(size_t) + sizeof(void*), "%s: extras.struct_size %zu is too small (use %s())", fn,
                    in->struct_size, defaults_fn);
  std::memcpy(&x, in, in->struct_size < sizeof x ? in->struct_size : sizeof x);
}

}  // namespace rwkvl::api
