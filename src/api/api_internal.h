// Shared plumbing of the C API implementation files: the thread-local last-error message and the
// try/catch wrapper that turns rwkvl::Error (and std::bad_alloc) into an rwkvl_status.
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "rwkv_lite.h"

namespace rwkvl {
class Model;
class Context;
}

// The context handle (defined here so every C API file can reach the library context).
struct rwkvl_context {
  std::unique_ptr<rwkvl::Context> ctx;
  int n_threads = 1;
  // The model and the settings last applied (has_*: set successfully), so rwkvl_eval_lambada can make worker
  // contexts like this one.
  std::shared_ptr<rwkvl::Model> model;
  rwkvl_ffn_params ffn_params{};
  rwkvl_head_params head_params{};
  rwkvl_memory_params memory_params{};
  bool has_ffn = false, has_head = false, has_memory = false;
};

// The tokenizer handle (the text streams of c_api_input.cpp read through it).
struct rwkvl_tokenizer {
  std::unique_ptr<rwkvl::Tokenizer> tok;
  std::string name;
};

namespace rwkvl::api {

// The library model behind a handle (for in-tree tools that run C++ passes on a loaded model).
std::shared_ptr<Model> model_of(const rwkvl_model* m);

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
