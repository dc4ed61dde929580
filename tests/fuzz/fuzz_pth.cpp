// libFuzzer target for the .pth reader (zip + restricted pickle VM); built by scripts/fuzz.sh
// (clang, -DRWKVL_FUZZ=ON). The core, rwkvl::fuzz::fuzz_pth_input(), is also compiled into
// tests/format/test_format_fuzz_pth_st.cpp (with RWKVL_FUZZ_NO_ENTRY defined) for a deterministic
// mutation test that needs no clang.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "format/format.h"

#ifndef RWKVL_FUZZ_HELPERS_DEFINED
#define RWKVL_FUZZ_HELPERS_DEFINED
namespace rwkvl::fuzz {

// A scratch path for the round-trip output, in RAM where possible (fuzzing writes thousands of files).
inline std::string scratch_path(const std::string& tag) {
  std::error_code ec;
  std::string dir = std::filesystem::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
                        ? std::string("/dev/shm")
                        : std::filesystem::temp_directory_path().string();
  return dir + "/rwkvl-fuzz-" + std::to_string(getpid()) + "-" + tag;
}

// The readers take a MappedFile: an in-memory one holding a copy of the input.
inline std::shared_ptr<MappedFile> map_bytes(const uint8_t* data, size_t size, const std::string& name) {
  return MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), name);
}

// Reads every byte of every tensor (so a sanitizer sees any out-of-bounds view) and checks that the
// byte counts agree with dtype and shape.
inline uint64_t touch_tensors(const RawCheckpoint& ck) {
  uint64_t sum = 0;
  for (const Tensor& t : ck.tensors) {
    if (dtype_bytes(t.dtype, static_cast<uint64_t>(t.numel())) != t.nbytes)
      throw std::logic_error("fuzz: tensor '" + t.name + "' byte count does not match its shape");
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    for (size_t i = 0; i < t.nbytes; ++i) sum += p[i];
  }
  return sum;
}

// Both checkpoints hold the same names, dtypes, shapes and bytes, in the same order.
inline void expect_same_tensors(const RawCheckpoint& a, const RawCheckpoint& b, const char* what) {
  bool same = a.tensors.size() == b.tensors.size();
  for (size_t i = 0; same && i < a.tensors.size(); ++i) {
    const Tensor &x = a.tensors[i], &y = b.tensors[i];
    same = x.name == y.name && x.dtype == y.dtype && x.shape == y.shape && x.nbytes == y.nbytes &&
           (x.nbytes == 0 || std::memcmp(x.data, y.data, x.nbytes) == 0);
  }
  if (!same) throw std::logic_error(std::string("fuzz: ") + what + " round trip changed the tensors");
}

}  // namespace rwkvl::fuzz
#endif  // RWKVL_FUZZ_HELPERS_DEFINED

namespace rwkvl::fuzz {

// Loads `data` as a .pth checkpoint. Throws rwkvl::Error if the reader rejects it; anything else
// thrown (std::logic_error from a failed consistency check) is a bug. An accepted file must survive
// write_pth -> read_pth unchanged.
inline void fuzz_pth_input(const uint8_t* data, size_t size) {
  RawCheckpoint ck = read_pth(map_bytes(data, size, "in.pth"));
  touch_tensors(ck);
  const std::string out = scratch_path("out.pth");
  try {
    write_pth(out, ck.tensors);
  } catch (const Error& e) {
    throw std::logic_error(std::string("fuzz: write_pth rejected what read_pth accepted: ") + e.what());
  }
  std::shared_ptr<MappedFile> back = MappedFile::open(out);
  std::remove(out.c_str());
  RawCheckpoint again = read_pth(back);
  expect_same_tensors(ck, again, "pth");
}

}  // namespace rwkvl::fuzz

#ifndef RWKVL_FUZZ_NO_ENTRY
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    rwkvl::fuzz::fuzz_pth_input(data, size);
  } catch (const rwkvl::Error&) {
    // rejected cleanly
  }
  return 0;
}
#endif
