// Tokenizers: byte-level (256), RWKV World (greedy longest match over rwkv_vocab_v20230424.txt,
// 65,536 tokens) and GPT-NeoX 20B BPE (20B_tokenizer.json, 50,277 tokens).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rwkvl {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;  // "byte", "world", "neox"
  virtual int32_t vocab_size() const = 0;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Streaming: appends to *out the tokens of the longest prefix of `text` whose tokens no following text can
  // change, and returns that prefix's length in bytes (0: more text is needed). With last = true `text` is
  // the end of the input and all of it is encoded. Encoding a text piece by piece this way (the unconsumed
  // rest carried to the front of the next piece) gives exactly encode() of the whole text.
  virtual size_t encode_prefix(std::string_view text, bool last, std::vector<int32_t>* out) const;
  // The raw bytes of one token (may be a partial UTF-8 sequence). Throws kInvalidArgument if out of range.
  virtual std::string token_bytes(int32_t id) const = 0;
  std::string decode(const std::vector<int32_t>& ids) const;

  static std::unique_ptr<Tokenizer> byte_level();
  // Throw rwkvl::Error(kIo / kFormat) with the path in the message when the file is missing or bad.
  static std::unique_ptr<Tokenizer> world_from_file(const std::string& vocab_txt_path);
  static std::unique_ptr<Tokenizer> neox_from_file(const std::string& tokenizer_json_path);
  // The World tokenizer from each id's bytes (id 0 and unused ids empty; at most 65,536 ids), e.g. the vocabulary
  // a GGUF file carries. Throws kFormat naming `source` for two tokens with the same bytes.
  static std::unique_ptr<Tokenizer> world_from_tokens(const std::vector<std::string>& id_bytes, const std::string& source);
};

// Streams decoded bytes and only emits complete UTF-8 sequences (keeps a partial tail buffered),
// so a token that ends inside a multi-byte character does not print garbage.
class Utf8Streamer {
 public:
  std::string push(const std::string& bytes);  // returns what can be printed now
  std::string flush();                         // whatever is left (possibly invalid bytes)

 private:
  std::string pending_;
};

// Pieces shared by the tokenizer sources; exposed so the tests can exercise them directly.
namespace tokenizer_detail {
// Unicode NFC normalization of UTF-8 text. Invalid UTF-8 bytes pass through unchanged and block composition.
std::string nfc_normalize(std::string_view utf8);
// Length of the valid UTF-8 sequence that starts at s[i] (1..4), or 0 if none starts there.
size_t utf8_valid_length(std::string_view s, size_t i);
// Decodes the valid sequence of `len` bytes at s[i] (as measured by utf8_valid_length).
char32_t utf8_decode(std::string_view s, size_t i, size_t len);
void append_utf8(std::string& out, char32_t cp);
// The Unicode White_Space property (what the tokenizers' \s means).
bool is_white_space(char32_t cp);
// Whole file contents; throws kIo "cannot read tokenizer file '<path>': <reason>".
std::string read_tokenizer_file(const std::string& path);
}  // namespace tokenizer_detail

}  // namespace rwkvl
