// Tokenizer base-class helpers, the byte-level tokenizer and the UTF-8 streamer.
#include "tokenizer/tokenizer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/input_file.h"

namespace rwkvl {

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

size_t Tokenizer::encode_prefix(std::string_view text, bool last, std::vector<int32_t>* out) const {
  if (!last) return 0;
  const std::vector<int32_t> ids = encode(text);
  out->insert(out->end(), ids.begin(), ids.end());
  return text.size();
}

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int32_t vocab_size() const override { return 256; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  size_t encode_prefix(std::string_view text, bool, std::vector<int32_t>* out) const override {
    for (char c : text) out->push_back(static_cast<unsigned char>(c));
    return text.size();
  }
  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= 256) RWKVL_FAIL(kInvalidArgument, "byte tokenizer: token id %d out of range [0, 256)", id);
    return std::string(1, static_cast<char>(id));
  }
};

// Length of the UTF-8 sequence a lead byte announces; 1 for ASCII and for bytes that cannot start a
// valid sequence (those are passed through on their own, they will never become complete).
size_t utf8_sequence_length(unsigned char b) {
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 1;
}

// Whether `b` may follow `lead` as the second byte; the tight ranges reject overlong forms and
// surrogates early, so such a prefix is released at once instead of waiting for bytes that cannot help.
bool valid_second_byte(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::byte_level() { return std::make_unique<ByteTokenizer>(); }

std::string Utf8Streamer::push(const std::string& bytes) {
  pending_ += bytes;
  const size_t n = pending_.size();
  size_t keep_from = n;
  // An unfinished sequence is at most 3 bytes long, so only the tail needs looking at.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const auto b = static_cast<unsigned char>(pending_[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: the lead is further left
    const size_t len = utf8_sequence_length(b);
    if (len > back) {
      bool possible = true;
      for (size_t j = i + 1; j < n; ++j) {
        const auto c = static_cast<unsigned char>(pending_[j]);
        if (j == i + 1 ? !valid_second_byte(b, c) : (c < 0x80 || c > 0xBF)) possible = false;
      }
      if (possible) keep_from = i;
    }
    break;
  }
  std::string out = pending_.substr(0, keep_from);
  pending_.erase(0, keep_from);
  return out;
}

std::string Utf8Streamer::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

namespace tokenizer_detail {

size_t utf8_valid_length(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  const size_t len = utf8_sequence_length(b0);
  if (len == 1 || i + len > s.size()) return 0;
  if (!valid_second_byte(b0, static_cast<unsigned char>(s[i + 1]))) return 0;
  for (size_t k = 2; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < 0x80 || b > 0xBF) return 0;
  }
  return len;
}

char32_t utf8_decode(std::string_view s, size_t i, size_t len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (len == 1) return b0;
  char32_t cp = b0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string read_tokenizer_file(const std::string& path) {
  // The real files are 1-2 MB; anything past 64 MiB is not a tokenizer (e.g. /dev/zero given by mistake).
  constexpr uint64_t kMaxTokenizerFileBytes = 64ull << 20;
  return InputFile::open(path, "tokenizer file").read_all(kMaxTokenizerFileBytes);
}

}  // namespace tokenizer_detail

}  // namespace rwkvl
