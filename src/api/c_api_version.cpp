// C API: the version of the API this library implements (include/rwkv_lite.h, "VERSIONING").
#include <string_view>

#include "core/version.h"
#include "rwkv_lite.h"

static_assert(RWKVL_API_VERSION_MINOR >= 0 && RWKVL_API_VERSION_MINOR < 1000, "the minor version is the last 3 digits");
static_assert(std::string_view(RWKVL_VERSION_STRING) == std::string_view(rwkvl::kVersionString),
              "include/rwkv_lite.h and src/core/version.h name the same release");
static_assert(RWKVL_API_VERSION == RWKVL_API_VERSION_MAJOR * 1000 + RWKVL_API_VERSION_MINOR, "version encoding");

extern "C" int rwkvl_api_version(void) { return RWKVL_API_VERSION; }
