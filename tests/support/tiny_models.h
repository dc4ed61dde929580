// The tiny rwkv.cpp reference models of ../shared/reference/tiny-rwkv (byte vocabulary, v4 .. v7) and
// running a model over a few tokens: the builders several tests share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rwkvl {
class Model;
}

namespace rwkvl::test {

// The versions with FP32 and FP16 files and expected logits (file name parts: tiny-rwkv-<v>-FP32.bin).
inline const char* const kTinyVersions[] = {"4v0-660K", "5v1-730K", "5v2-730K", "6v0-1m", "7v0-834K"};
// The prompt of the expected logits: the bytes `"in`.
inline const std::vector<int32_t> kTinyPrompt = {34, 105, 110};

// shared_file() of tiny-rwkv-<version>-<format>.bin ("" and a test failure when missing, see shared_file).
std::string tiny_model_path(const std::string& version, const std::string& format = "FP32");
// shared_file() of expected-logits-<version>.bin.
std::string tiny_expected_path(const std::string& version);
// The tiny model loaded with default options, or nullptr when its file is missing.
std::shared_ptr<Model> load_tiny(const std::string& version, const std::string& format = "FP32");

// The last token's logits after feeding toks to a fresh state (chunk tokens at a time, `threads` threads).
std::vector<float> logits_after(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks, size_t chunk = 1,
                                int threads = 1);
// The bytes of s as tokens (at most n of them).
std::vector<int32_t> byte_tokens(const std::string& s, size_t n = SIZE_MAX);

}  // namespace rwkvl::test
