// GPT-NeoX 20B tokenizer: a Hugging Face tokenizer.json with byte-level BPE. Encoding follows the file's
// sections in the order the Hugging Face pipeline applies them:
//   1. added tokens that are not normalized (<|endoftext|>, <|padding|>) are cut out of the raw text;
//   2. the rest is normalized (NFC);
//   3. normalized added tokens (the runs of 2..24 spaces) are cut out of the normalized text;
//   4. the ByteLevel pre-tokenizer splits the rest with the GPT-2 regex and maps bytes to printable chars;
//   5. each piece is BPE-merged by merge rank.
// Decoding maps each token's chars back to bytes (ByteLevel decoder).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {
namespace {

using nlohmann::json;
using tokenizer_detail::append_utf8;

// The split pattern of GPT-2's encoder.py, which the ByteLevel pre-tokenizer uses:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as the Unicode White_Space property, which is what Hugging Face's regex engine (and
// Python's `regex`) use; PCRE2's \s also counts U+180E, which stopped being white space in Unicode 6.3.
std::string gpt2_split_pattern() {
  const std::string ws = R"(\t\n\x0B\f\r\x20\x85\xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" + ws + R"(\p{L}\p{N}]+|[)" + ws + "]+(?![^" + ws + "])|[" +
         ws + "]+";
}

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the other 68 bytes are moved to U+0100.. in
// byte order, so that every byte has a visible char and BPE tokens are ordinary strings.
std::array<char32_t, 256> byte_to_char_table() {
  std::array<char32_t, 256> table{};
  char32_t next_free = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next_free++;
  }
  return table;
}

// Far above any real vocabulary; keeps a corrupt id from sizing the id table to gigabytes.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

struct AddedToken {
  std::string content;
  int32_t id;
};

// Leftmost-longest search for a small set of literal strings (Hugging Face uses Aho-Corasick with the same
// match semantics; with ~25 patterns a first-byte filter plus direct comparison is plenty).
class LiteralMatcher {
 public:
  void add(std::string content, int32_t id) {
    if (content.empty()) return;
    first_byte_[static_cast<unsigned char>(content[0])] = true;
    tokens_.push_back({std::move(content), id});
    // Longest first, so the first hit at a position is the longest one.
    std::stable_sort(tokens_.begin(), tokens_.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  }
  bool empty() const { return tokens_.empty(); }
  std::vector<std::string> contents() const {
    std::vector<std::string> c;
    for (const AddedToken& t : tokens_) c.push_back(t.content);
    return c;
  }

  // Finds the leftmost match at or after `from`; returns false if there is none.
  bool find(std::string_view text, size_t from, size_t* pos, const AddedToken** tok) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
      const std::string_view rest = text.substr(i);
      for (const AddedToken& t : tokens_) {
        if (rest.size() >= t.content.size() && rest.compare(0, t.content.size(), t.content) == 0) {
          *pos = i;
          *tok = &t;
          return true;
        }
      }
    }
    return false;
  }

 private:
  std::vector<AddedToken> tokens_;
  std::array<bool, 256> first_byte_{};
};

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct Pcre2MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

class NeoxTokenizer final : public Tokenizer {
 public:
  NeoxTokenizer(const std::string& path, const std::string& text) {
    json doc;
    try {
      doc = json::parse(text);
    } catch (const json::exception& e) {
      RWKVL_FAIL(kFormat, "%s: invalid JSON: %s", path.c_str(), e.what());
    }
    try {
      load(path, doc);
    } catch (const json::exception& e) {
      // Wrong types or missing keys inside an otherwise valid JSON document.
      RWKVL_FAIL(kFormat, "%s: unexpected tokenizer.json structure: %s", path.c_str(), e.what());
    }
    compile_regex();
    streamable_ = added_tokens_split_cleanly();
  }

  std::string name() const override { return "neox"; }
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_bytes_.size()); }

  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) {
      RWKVL_FAIL(kInvalidArgument, "neox tokenizer: token id %d out of range [0, %d)", id, vocab_size());
    }
    return id_to_bytes_[static_cast<size_t>(id)];
  }

  // A piece ends where white space follows a character that is not white space: no pattern of the split regex
  // matches across such a point (only runs of white space contain it, and they start there), NFC never
  // composes or reorders across an ASCII white-space character, and no added token spans it (checked at load).
  size_t encode_prefix(std::string_view text, bool last, std::vector<int32_t>* out) const override {
    size_t cut = text.size();
    if (!last) {
      cut = streamable_ ? last_piece_boundary(text) : 0;
      if (cut == 0) return 0;
    }
    const std::vector<int32_t> ids = encode(text.substr(0, cut));
    out->insert(out->end(), ids.begin(), ids.end());
    return cut;
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 4 + 1);
    std::unique_ptr<pcre2_match_data, Pcre2MatchDataDeleter> md(
        pcre2_match_data_create_from_pattern(regex_.get(), nullptr));
    if (!md) RWKVL_FAIL(kOutOfMemory, "neox tokenizer: cannot allocate regex match data");
    BpeScratch scratch;
    split_on(raw_added_, text, ids, [&](std::string_view segment) {
      std::string normalized = nfc_ ? tokenizer_detail::nfc_normalize(segment) : std::string(segment);
      replace_unencodable_bytes(normalized);
      split_on(normalized_added_, normalized, ids,
               [&](std::string_view piece) { pre_tokenize_and_merge(piece, md.get(), scratch, ids); });
    });
    return ids;
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  // Reused buffers of the merge loop, so each word does not allocate anew.
  struct BpeScratch {
    std::vector<int32_t> syms;
    std::vector<int32_t> prev, next;
  };

  static bool ascii_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

  // Whether the character that ends at text[end - 1] is white space (invalid UTF-8 is not).
  static bool white_space_before(std::string_view text, size_t end) {
    const auto c = static_cast<unsigned char>(text[end - 1]);
    if (c < 0x80) return ascii_space(static_cast<char>(c));
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    const size_t len = tokenizer_detail::utf8_valid_length(text, start);
    if (len != end - start) return false;
    return tokenizer_detail::is_white_space(tokenizer_detail::utf8_decode(text, start, len));
  }

  // The last point in text where an ASCII white-space character follows one that is not white space; 0 if none.
  static size_t last_piece_boundary(std::string_view text) {
    for (size_t i = text.size(); i-- > 1;) {
      if (ascii_space(text[i]) && !white_space_before(text, i)) return i;
    }
    return 0;
  }

  // Whether an added token contains white space after a character that is not (it could span a boundary).
  bool added_tokens_split_cleanly() const {
    for (const LiteralMatcher* m : {&raw_added_, &normalized_added_}) {
      for (const std::string& c : m->contents()) {
        for (size_t i = 1; i < c.size(); ++i) {
          if (ascii_space(c[i]) && !white_space_before(c, i)) return false;
          const size_t len = tokenizer_detail::utf8_valid_length(c, i);
          if (len > 1 && tokenizer_detail::is_white_space(tokenizer_detail::utf8_decode(c, i, len)) &&
              !white_space_before(c, i)) {
            return false;
          }
        }
      }
    }
    return true;
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  // Calls `inner` on the text between matches and appends the ids of the matches themselves.
  template <typename Inner>
  static void split_on(const LiteralMatcher& m, std::string_view text, std::vector<int32_t>& ids, Inner&& inner) {
    size_t at = 0;
    size_t pos = 0;
    const AddedToken* tok = nullptr;
    while (!m.empty() && m.find(text, at, &pos, &tok)) {
      if (pos > at) inner(text.substr(at, pos - at));
      ids.push_back(tok->id);
      at = pos + tok->content.size();
    }
    if (at < text.size()) inner(text.substr(at));
  }

  void load(const std::string& path, const json& doc) {
    const json& model = doc.at("model");
    if (model.value("type", std::string()) != "BPE") {
      RWKVL_FAIL(kUnsupported, "%s: only BPE models are supported", path.c_str());
    }
    load_options(path, doc, model);
    // Vocabulary and added tokens together define the id space.
    std::unordered_map<std::string, int32_t> vocab;
    std::vector<AddedToken> added;
    const int32_t max_id = load_vocab(path, doc, model, vocab, added);
    if (max_id < 0) RWKVL_FAIL(kFormat, "%s: empty vocabulary", path.c_str());
    load_bytes(path, vocab, added, max_id);
    load_merges(path, model, vocab);
  }

  // BPE options, normalizer, pre-tokenizer and decoder: only what GPT-NeoX's tokenizer.json uses.
  void load_options(const std::string& path, const json& doc, const json& model) {
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty()) {
        RWKVL_FAIL(kUnsupported, "%s: BPE option '%s' is not supported", path.c_str(), key);
      }
    }
    if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0) {
      RWKVL_FAIL(kUnsupported, "%s: BPE dropout is not supported", path.c_str());
    }

    const json& normalizer = doc.value("normalizer", json());
    if (normalizer.is_null()) {
      nfc_ = false;
    } else if (normalizer.value("type", std::string()) == "NFC") {
      nfc_ = true;
    } else {
      RWKVL_FAIL(kUnsupported, "%s: normalizer '%s' is not supported", path.c_str(), normalizer.dump().c_str());
    }

    const json& pre = doc.value("pre_tokenizer", json());
    if (pre.is_null() || pre.value("type", std::string()) != "ByteLevel") {
      RWKVL_FAIL(kUnsupported, "%s: only the ByteLevel pre-tokenizer is supported", path.c_str());
    }
    add_prefix_space_ = pre.value("add_prefix_space", false);
    use_regex_ = pre.value("use_regex", true);
    const json& dec = doc.value("decoder", json());
    if (!dec.is_null() && dec.value("type", std::string()) != "ByteLevel") {
      RWKVL_FAIL(kUnsupported, "%s: only the ByteLevel decoder is supported", path.c_str());
    }
  }

  // Fills vocab and added (normalized and raw added tokens are also registered); returns the largest id.
  int32_t load_vocab(const std::string& path, const json& doc, const json& model,
                     std::unordered_map<std::string, int32_t>& vocab, std::vector<AddedToken>& added) {
    int32_t max_id = -1;
    for (const auto& [tok, id_json] : model.at("vocab").items()) {
      const auto id = id_json.get<int64_t>();
      if (id < 0 || id >= kMaxTokenId) {
        RWKVL_FAIL(kFormat, "%s: token id %lld out of range", path.c_str(), static_cast<long long>(id));
      }
      vocab.emplace(tok, static_cast<int32_t>(id));
      max_id = std::max(max_id, static_cast<int32_t>(id));
    }
    if (doc.contains("added_tokens") && !doc["added_tokens"].is_null()) {
      for (const json& t : doc["added_tokens"]) {
        const auto id = t.at("id").get<int64_t>();
        if (id < 0 || id >= kMaxTokenId) {
          RWKVL_FAIL(kFormat, "%s: added token id %lld out of range", path.c_str(), static_cast<long long>(id));
        }
        for (const char* key : {"single_word", "lstrip", "rstrip"}) {
          if (t.value(key, false)) {
            RWKVL_FAIL(kUnsupported, "%s: added token option '%s' is not supported", path.c_str(), key);
          }
        }
        AddedToken tok{t.at("content").get<std::string>(), static_cast<int32_t>(id)};
        if (t.value("normalized", !t.value("special", false))) {
          normalized_added_.add(tok.content, tok.id);
        } else {
          raw_added_.add(tok.content, tok.id);
        }
        max_id = std::max(max_id, tok.id);
        added.push_back(std::move(tok));
      }
    }
    return max_id;
  }

  void load_bytes(const std::string& path, const std::unordered_map<std::string, int32_t>& vocab,
                  const std::vector<AddedToken>& added, int32_t max_id) {
    // Token strings -> bytes, with the ByteLevel decoder's rule: a token whose chars are not all in the byte
    // alphabet (an added token such as "  ") is taken as its own UTF-8 bytes.
    const std::array<char32_t, 256> byte_to_char = byte_to_char_table();
    std::unordered_map<char32_t, unsigned char> char_to_byte;
    for (int b = 0; b < 256; ++b) char_to_byte[byte_to_char[static_cast<size_t>(b)]] = static_cast<unsigned char>(b);
    auto to_bytes = [&](const std::string& tok) {
      std::string out;
      for (size_t i = 0; i < tok.size();) {
        const size_t len = tokenizer_detail::utf8_valid_length(tok, i);
        if (len == 0) return tok;
        const auto it = char_to_byte.find(tokenizer_detail::utf8_decode(tok, i, len));
        if (it == char_to_byte.end()) return tok;
        out += static_cast<char>(it->second);
        i += len;
      }
      return out;
    };
    id_to_bytes_.assign(static_cast<size_t>(max_id) + 1, std::string());
    for (const auto& [tok, id] : vocab) id_to_bytes_[static_cast<size_t>(id)] = to_bytes(tok);
    for (const AddedToken& t : added) id_to_bytes_[static_cast<size_t>(t.id)] = to_bytes(t.content);

    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, byte_to_char[static_cast<size_t>(b)]);
      const auto it = vocab.find(ch);
      byte_token_[static_cast<size_t>(b)] = it == vocab.end() ? -1 : it->second;
    }
    const std::string replacement = "\xef\xbf\xbd";
    for (char c : replacement) {
      if (byte_token_[static_cast<unsigned char>(c)] < 0) {
        RWKVL_FAIL(kFormat, "%s: vocabulary lacks the byte tokens of U+FFFD", path.c_str());
      }
    }
  }

  void load_merges(const std::string& path, const json& model, const std::unordered_map<std::string, int32_t>& vocab) {
    const json& merges = model.at("merges");
    merges_.reserve(merges.size() * 2);
    int32_t rank = 0;
    for (const json& m : merges) {
      std::string left, right;
      if (m.is_string()) {  // "left right"
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) {
          RWKVL_FAIL(kFormat, "%s: merge %d '%s' has no space", path.c_str(), rank, s.c_str());
        }
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      } else {  // newer files: ["left", "right"]
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      }
      const auto l = vocab.find(left), r = vocab.find(right), lr = vocab.find(left + right);
      if (l == vocab.end() || r == vocab.end() || lr == vocab.end()) {
        RWKVL_FAIL(kFormat, "%s: merge %d ('%s' '%s') uses a token that is not in the vocabulary", path.c_str(), rank,
                   left.c_str(), right.c_str());
      }
      // Only the first (lowest-rank) occurrence of a pair counts.
      merges_.emplace(pair_key(l->second, r->second), Merge{rank, lr->second});
      ++rank;
    }
  }

  void compile_regex() {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // MATCH_INVALID_UTF lets arbitrary bytes through: invalid sequences match nothing and end up as their own
    // pieces, which byte-level BPE encodes like any other bytes.
    const std::string pattern = gpt2_split_pattern();
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      RWKVL_FAIL(kInternal, "neox tokenizer: cannot compile split regex: %s", reinterpret_cast<char*>(msg));
    }
    regex_.reset(code);
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is used if JIT is unavailable
  }

  void pre_tokenize_and_merge(std::string_view segment, pcre2_match_data* md, BpeScratch& scratch,
                              std::vector<int32_t>& ids) const {
    std::string prefixed;
    if (add_prefix_space_ && !segment.empty() && segment[0] != ' ') {
      prefixed.reserve(segment.size() + 1);
      prefixed.push_back(' ');
      prefixed.append(segment);
      segment = prefixed;
    }
    if (!use_regex_) {
      bpe(segment, scratch, ids);
      return;
    }
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(segment.data());
    size_t at = 0;
    while (at < segment.size()) {
      const int rc = pcre2_match(regex_.get(), subject, segment.size(), at, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        RWKVL_FAIL(kInternal, "neox tokenizer: regex match failed: %s", reinterpret_cast<char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      // Text the pattern skipped (only invalid UTF-8 can be) is kept as a piece of its own.
      if (ov[0] > at) bpe(segment.substr(at, ov[0] - at), scratch, ids);
      RWKVL_CHECK(ov[1] > ov[0]);  // the pattern cannot match the empty string
      bpe(segment.substr(ov[0], ov[1] - ov[0]), scratch, ids);
      at = ov[1];
    }
    if (at < segment.size()) bpe(segment.substr(at), scratch, ids);
  }

  // The 20B vocabulary has no token for the bytes that never occur in valid UTF-8 (C0, C1, F5..FF); Hugging Face
  // never sees them because its input is a valid string. Such bytes are encoded as U+FFFD, which is what a caller
  // decoding its bytes with errors='replace' would have passed; other invalid bytes keep their byte tokens.
  void replace_unencodable_bytes(std::string& text) const {
    if (std::none_of(text.begin(), text.end(),
                     [&](char c) { return byte_token_[static_cast<unsigned char>(c)] < 0; })) {
      return;
    }
    std::string out;
    out.reserve(text.size() + 8);
    for (char c : text) {
      if (byte_token_[static_cast<unsigned char>(c)] < 0) {
        out += "\xef\xbf\xbd";
      } else {
        out += c;
      }
    }
    text.swap(out);
  }

  const Merge* find_merge(int32_t a, int32_t b) const {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // Merges the byte tokens of one piece, always the pair of lowest rank first (leftmost among equals).
  void bpe(std::string_view piece, BpeScratch& s, std::vector<int32_t>& ids) const {
    std::vector<int32_t>& syms = s.syms;
    syms.clear();
    for (char c : piece) syms.push_back(byte_token_[static_cast<unsigned char>(c)]);
    if (syms.size() > kShortWord) {
      bpe_long(s);
    } else {
      // Short words (nearly all of them): rescanning all pairs is cheaper than maintaining a heap.
      while (syms.size() > 1) {
        int32_t best_rank = INT32_MAX, best_id = -1;
        size_t best_i = 0;
        for (size_t i = 0; i + 1 < syms.size(); ++i) {
          const Merge* m = find_merge(syms[i], syms[i + 1]);
          if (m && m->rank < best_rank) {
            best_rank = m->rank;
            best_id = m->merged_id;
            best_i = i;
          }
        }
        if (best_id < 0) break;
        syms[best_i] = best_id;
        syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
      }
    }
    ids.insert(ids.end(), syms.begin(), syms.end());
  }

  // The same merge order for long pieces in O(n log n): a doubly linked list of symbols and a min-heap of
  // candidate pairs keyed by (rank, position); entries made stale by an earlier merge are skipped when popped.
  void bpe_long(BpeScratch& s) const {
    std::vector<int32_t>& syms = s.syms;
    const auto n = static_cast<int32_t>(syms.size());
    s.prev.resize(static_cast<size_t>(n));
    s.next.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      s.prev[static_cast<size_t>(i)] = i - 1;
      s.next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
    }
    struct Candidate {
      int32_t rank, pos, left, right;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push_pair = [&](int32_t pos) {
      if (pos < 0) return;
      const int32_t nx = s.next[static_cast<size_t>(pos)];
      if (nx < 0) return;
      const int32_t a = syms[static_cast<size_t>(pos)], b = syms[static_cast<size_t>(nx)];
      if (const Merge* m = find_merge(a, b)) heap.push({m->rank, pos, a, b});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const int32_t nx = s.next[static_cast<size_t>(c.pos)];
      // Dead symbols have id -1; a changed left or right symbol means the entry is stale.
      if (syms[static_cast<size_t>(c.pos)] != c.left || nx < 0 || syms[static_cast<size_t>(nx)] != c.right) continue;
      syms[static_cast<size_t>(c.pos)] = find_merge(c.left, c.right)->merged_id;
      syms[static_cast<size_t>(nx)] = -1;
      const int32_t after = s.next[static_cast<size_t>(nx)];
      s.next[static_cast<size_t>(c.pos)] = after;
      if (after >= 0) s.prev[static_cast<size_t>(after)] = c.pos;
      push_pair(s.prev[static_cast<size_t>(c.pos)]);
      push_pair(c.pos);
    }
    size_t w = 0;
    for (int32_t i = 0; i >= 0 && i < n; i = s.next[static_cast<size_t>(i)]) syms[w++] = syms[static_cast<size_t>(i)];
    syms.resize(w);
  }

  static constexpr size_t kShortWord = 32;

  bool nfc_ = true;
  bool add_prefix_space_ = false;
  bool use_regex_ = true;
  bool streamable_ = true;  // encode_prefix may cut at piece boundaries (see added_tokens_split_cleanly)
  LiteralMatcher raw_added_;         // matched in the text before normalization
  LiteralMatcher normalized_added_;  // matched in the normalized text
  std::vector<std::string> id_to_bytes_;
  std::array<int32_t, 256> byte_token_{};
  std::unordered_map<uint64_t, Merge> merges_;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> regex_;
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::neox_from_file(const std::string& tokenizer_json_path) {
  const std::string text = tokenizer_detail::read_tokenizer_file(tokenizer_json_path);
  return std::make_unique<NeoxTokenizer>(tokenizer_json_path, text);
}

}  // namespace rwkvl
