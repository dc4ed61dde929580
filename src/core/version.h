// The package release, for the library's own messages (system_info). The public header repeats it as
// RWKVL_VERSION_STRING for callers; src/api/c_api_version.cpp checks at compile time that the two agree.
#pragma once

namespace rwkvl {
inline constexpr const char kVersionString[] = "0.1.0";
}
