#include "api/api_internal.h"

namespace rwkvl::api {

namespace {
thread_local std::string g_last_error;
}

void set_last_error(const std::string& msg) { g_last_error = msg; }
void clear_last_error() { g_last_error.clear(); }

rwkvl_status to_status(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk: return RWKVL_OK;
    case ErrorCode::kInvalidArgument: return RWKVL_ERR_INVALID_ARGUMENT;
    case ErrorCode::kIo: return RWKVL_ERR_IO;
    case ErrorCode::kFormat: return RWKVL_ERR_FORMAT;
    case ErrorCode::kUnsupported: return RWKVL_ERR_UNSUPPORTED;
    case ErrorCode::kOutOfMemory: return RWKVL_ERR_OUT_OF_MEMORY;
    case ErrorCode::kInternal: return RWKVL_ERR_INTERNAL;
  }
  return RWKVL_ERR_INTERNAL;
}

const char* last_error_cstr() { return g_last_error.c_str(); }

}  // namespace rwkvl::api

extern "C" {

const char* rwkvl_last_error(void) { return rwkvl::api::last_error_cstr(); }

const char* rwkvl_status_name(rwkvl_status s) {
  switch (s) {
    case RWKVL_OK: return "ok";
    case RWKVL_ERR_INVALID_ARGUMENT: return "invalid argument";
    case RWKVL_ERR_IO: return "I/O error";
    case RWKVL_ERR_FORMAT: return "bad file format";
    case RWKVL_ERR_UNSUPPORTED: return "unsupported";
    case RWKVL_ERR_OUT_OF_MEMORY: return "out of memory";
    case RWKVL_ERR_INTERNAL: return "internal error";
  }
  return "unknown";
}

}  // extern "C"
