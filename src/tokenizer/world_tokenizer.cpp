// RWKV World tokenizer: a fixed vocabulary of byte strings (rwkv_vocab_v20230424.txt), encoded by
// greedy longest match. Each vocab line is `<id> <python str or bytes literal> <byte length>`.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {
namespace {

constexpr int32_t kWorldVocabSize = 65536;

// Where a vocab line came from, for error messages that point at the offending line.
struct LineRef {
  const std::string& path;
  size_t line;
};

[[noreturn]] void bad_line(const LineRef& at, const std::string& what) {
  RWKVL_FAIL(kFormat, "%s:%zu: %s", at.path.c_str(), at.line, what.c_str());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes a Python str or bytes literal (as written by repr()) into bytes; str literals become UTF-8.
// Implements the escapes of the Python language reference except \N{name}, which needs the Unicode name table
// and never appears in the vocab files.
std::string parse_python_literal(std::string_view lit, const LineRef& at) {
  size_t pos = 0;
  bool is_bytes = false;
  if (pos < lit.size() && (lit[pos] == 'b' || lit[pos] == 'B')) {
    is_bytes = true;
    ++pos;
  }
  if (pos >= lit.size() || (lit[pos] != '\'' && lit[pos] != '"')) {
    bad_line(at, "expected a Python str or bytes literal, got '" + std::string(lit) + "'");
  }
  const char quote = lit[pos++];
  if (lit.size() < pos + 1 || lit.back() != quote) bad_line(at, "unterminated literal '" + std::string(lit) + "'");
  const size_t end = lit.size() - 1;  // index of the closing quote
  std::string out;

  auto add_code_point = [&](uint32_t cp) {
    if (is_bytes) {
      if (cp > 0xFF) bad_line(at, "escape value out of range for a bytes literal");
      out += static_cast<char>(cp);
    } else {
      if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) bad_line(at, "escape is not a valid Unicode scalar value");
      tokenizer_detail::append_utf8(out, cp);
    }
  };
  auto read_hex = [&](size_t digits) -> uint32_t {
    if (pos + digits > end) bad_line(at, "truncated \\x/\\u/\\U escape");
    uint32_t v = 0;
    for (size_t k = 0; k < digits; ++k) {
      const int h = hex_value(lit[pos + k]);
      if (h < 0) bad_line(at, "bad hex digit in escape");
      v = v * 16 + static_cast<uint32_t>(h);
    }
    pos += digits;
    return v;
  };

  while (pos < end) {
    const char c = lit[pos];
    if (c == quote) bad_line(at, "unescaped quote inside literal");
    if (c != '\\') {
      if (is_bytes) {
        if (static_cast<unsigned char>(c) >= 0x80) bad_line(at, "non-ASCII character in bytes literal");
        out += c;
        ++pos;
      } else {
        const size_t len = tokenizer_detail::utf8_valid_length(lit, pos);
        if (len == 0 || pos + len > end) bad_line(at, "invalid UTF-8 in str literal");
        out.append(lit.substr(pos, len));
        pos += len;
      }
      continue;
    }
    if (pos + 1 >= end) bad_line(at, "dangling backslash at end of literal");
    const char e = lit[pos + 1];
    pos += 2;
    switch (e) {
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
        add_code_point(read_hex(2));
        break;
      case 'u':
      case 'U':
        if (is_bytes) {  // not an escape in bytes literals: Python keeps the backslash
          out += '\\';
          out += e;
        } else {
          add_code_point(read_hex(e == 'u' ? 4 : 8));
        }
        break;
      case 'N':
        if (is_bytes) {
          out += "\\N";
        } else {
          bad_line(at, "\\N{...} escapes are not supported");
        }
        break;
      default:
        if (e >= '0' && e <= '7') {
          uint32_t v = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && pos < end && lit[pos] >= '0' && lit[pos] <= '7'; ++k) v = v * 8 + (lit[pos++] - '0');
          add_code_point(v);
        } else {
          // Unknown escapes are kept verbatim, as Python does.
          out += '\\';
          pos -= 1;  // the character after the backslash is re-read as an ordinary character
        }
        break;
    }
  }
  return out;
}

bool parse_decimal(std::string_view s, uint64_t* v) {
  if (s.empty() || s.size() > 18) return false;
  uint64_t x = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + static_cast<uint64_t>(c - '0');
  }
  *v = x;
  return true;
}

// Memory: the vocabulary is one byte blob with an offset and a length per id, and the trie is three flat arrays
// (about 1.5 MiB in all for the World vocabulary, where a std::string per token and a node struct per trie node
// took several times that). Under a memory budget of a few tens of MiB the tokenizer's size matters.
class WorldTokenizer final : public Tokenizer {
 public:
  // Takes the vocab file's text and frees it once parsed, before the trie is built.
  WorldTokenizer(const std::string& path, std::string text) : start_(kWorldVocabSize, 0), len_(kWorldVocabSize, 0) {
    std::vector<uint32_t> line_of(kWorldVocabSize, 0);  // for error messages
    parse(path, text, &line_of);
    std::string().swap(text);
    std::vector<int32_t> order = sorted_ids(path, line_of);
    std::vector<uint32_t>().swap(line_of);
    build_trie(order);
    for (uint16_t l : len_) max_len_ = std::max<size_t>(max_len_, l);
  }

  // From each id's bytes (ids[0] and unused ids empty), e.g. a GGUF file's tokenizer.ggml.tokens; `source` names
  // it in messages.
  WorldTokenizer(const std::string& source, const std::vector<std::string>& ids)
      : start_(kWorldVocabSize, 0), len_(kWorldVocabSize, 0) {
    if (ids.size() > static_cast<size_t>(kWorldVocabSize))
      RWKVL_FAIL(kFormat, "%s: %zu World tokens (at most %d)", source.c_str(), ids.size(), kWorldVocabSize);
    std::vector<uint32_t> line_of(kWorldVocabSize, 0);  // "lines" are ids here
    size_t total = 0;
    for (const std::string& t : ids) total += t.size();
    if (total > std::numeric_limits<uint32_t>::max()) RWKVL_FAIL(kFormat, "%s: World vocabulary too large", source.c_str());
    blob_.reserve(total);
    for (size_t id = 1; id < ids.size(); ++id) {
      if (ids[id].empty()) continue;
      if (ids[id].size() > std::numeric_limits<uint16_t>::max()) RWKVL_FAIL(kFormat, "%s: token %zu is too long", source.c_str(), id);
      start_[id] = static_cast<uint32_t>(blob_.size());
      len_[id] = static_cast<uint16_t>(ids[id].size());
      line_of[id] = static_cast<uint32_t>(id);
      blob_ += ids[id];
    }
    build_trie(sorted_ids(source, line_of));
    for (uint16_t l : len_) max_len_ = std::max<size_t>(max_len_, l);
  }

  std::string name() const override { return "world"; }
  int32_t vocab_size() const override { return kWorldVocabSize; }

  std::string token_bytes(int32_t id) const override {
    if (id < 0 || id >= kWorldVocabSize) {
      RWKVL_FAIL(kInvalidArgument, "world tokenizer: token id %d out of range [0, %d)", id, kWorldVocabSize);
    }
    return std::string(bytes_of(id));  // id 0 (end of text) and unused ids decode to nothing
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    encode_from(text, text.size(), &ids);
    return ids;
  }

  // Greedy longest match reads at most max_len_ bytes from where a token starts, so every token that starts
  // max_len_ or more bytes before the end of the piece is final.
  size_t encode_prefix(std::string_view text, bool last, std::vector<int32_t>* out) const override {
    if (last) return encode_from(text, text.size(), out);
    if (text.size() < max_len_) return 0;
    return encode_from(text, text.size() - max_len_ + 1, out);
  }

 private:
  // Appends the tokens that start before `stop` (tokens may run past it); returns where the next one starts.
  size_t encode_from(std::string_view text, size_t stop, std::vector<int32_t>* out) const {
    std::vector<int32_t>& ids = *out;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t pos = 0;
    while (pos < stop) {
      size_t best_len = 0;
      int32_t best_id = -1;
      uint32_t node = root_child_[s[pos]];
      size_t i = pos;
      while (node != 0) {
        ++i;
        if (node_id_[node] >= 0) {
          best_len = i - pos;
          best_id = node_id_[node];
        }
        if (i == n) break;
        node = find_child(node, s[i]);
      }
      if (best_len == 0) {
        RWKVL_FAIL(kInvalidArgument, "world tokenizer: no token covers byte 0x%02x at offset %zu", s[pos], pos);
      }
      ids.push_back(best_id);
      pos += best_len;
    }
    return pos;
  }

  std::string_view bytes_of(int32_t id) const {
    return std::string_view(blob_).substr(start_[static_cast<size_t>(id)], len_[static_cast<size_t>(id)]);
  }

  // Trie in breadth-first order: the children of node k are the contiguous, byte-sorted nodes
  // [first_child_[k], first_child_[k + 1]) (breadth-first numbering makes them follow each other), so a step is
  // a binary search over at most 256 bytes of one array. Node 0 is the root; 0 as a child index means "none".
  uint32_t find_child(uint32_t node, unsigned char b) const {
    const unsigned char* first = edge_byte_.data() + first_child_[node];
    const unsigned char* last = edge_byte_.data() + first_child_[node + 1];
    const unsigned char* it = std::lower_bound(first, last, b);
    if (it == last || *it != b) return 0;
    return first_child_[node] + static_cast<uint32_t>(it - first);
  }

  void parse(const std::string& path, std::string_view text, std::vector<uint32_t>* line_of) {
    blob_.reserve(text.size() / 2);
    size_t line_no = 0;
    size_t start = 0;
    bool any = false;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      if (nl == std::string_view::npos) nl = text.size();
      std::string_view line = text.substr(start, nl - start);
      start = nl + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) continue;
      const LineRef at{path, line_no};

      const size_t first_space = line.find(' ');
      const size_t last_space = line.rfind(' ');
      if (first_space == std::string_view::npos || last_space <= first_space + 1) {
        bad_line(at, "expected '<id> <literal> <byte length>'");
      }
      uint64_t id = 0, byte_len = 0;
      if (!parse_decimal(line.substr(0, first_space), &id)) bad_line(at, "bad token id");
      if (id < 1 || id >= static_cast<uint64_t>(kWorldVocabSize)) {
        bad_line(at, "token id " + std::to_string(id) + " out of range [1, 65535]");
      }
      if (!parse_decimal(line.substr(last_space + 1), &byte_len)) bad_line(at, "bad byte length");
      const std::string bytes = parse_python_literal(line.substr(first_space + 1, last_space - first_space - 1), at);
      if (bytes.size() != byte_len) {
        bad_line(at, "byte length " + std::to_string(byte_len) + " does not match the literal's " +
                         std::to_string(bytes.size()) + " bytes");
      }
      if (bytes.empty()) bad_line(at, "empty token");
      if (bytes.size() > std::numeric_limits<uint16_t>::max()) bad_line(at, "token longer than 65535 bytes");
      if (len_[id] != 0) bad_line(at, "duplicate token id " + std::to_string(id));
      if (blob_.size() + bytes.size() > std::numeric_limits<uint32_t>::max()) bad_line(at, "vocab file too large");
      start_[id] = static_cast<uint32_t>(blob_.size());
      len_[id] = static_cast<uint16_t>(bytes.size());
      (*line_of)[id] = static_cast<uint32_t>(std::min<size_t>(line_no, std::numeric_limits<uint32_t>::max()));
      blob_ += bytes;
      any = true;
    }
    if (!any) RWKVL_FAIL(kFormat, "%s: vocab file has no tokens", path.c_str());
    blob_.shrink_to_fit();
  }

  // Token ids sorted by their bytes; fails on two tokens with the same bytes.
  std::vector<int32_t> sorted_ids(const std::string& path, const std::vector<uint32_t>& line_of) const {
    std::vector<int32_t> order;
    order.reserve(kWorldVocabSize);
    for (int32_t id = 1; id < kWorldVocabSize; ++id) {
      if (len_[static_cast<size_t>(id)] != 0) order.push_back(id);
    }
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes_of(a) < bytes_of(b); });
    for (size_t k = 1; k < order.size(); ++k) {
      if (bytes_of(order[k - 1]) == bytes_of(order[k])) {
        const int32_t a = order[k - 1], b = order[k];
        const bool a_first = line_of[static_cast<size_t>(a)] < line_of[static_cast<size_t>(b)];
        const int32_t first = a_first ? a : b, second = a_first ? b : a;
        bad_line(LineRef{path, line_of[static_cast<size_t>(second)]}, "same bytes as token id " + std::to_string(first));
      }
    }
    return order;
  }

  void build_trie(const std::vector<int32_t>& order) {
    auto byte_at = [&](int32_t id, size_t depth) {
      return static_cast<unsigned char>(blob_[start_[static_cast<size_t>(id)] + depth]);
    };

    // Nodes = distinct prefixes: 1 (root) + for each token in sorted order its bytes beyond the common prefix
    // with the token before it. Knowing the count, the arrays are allocated once at their final size.
    size_t n_nodes = 1;
    for (size_t k = 0; k < order.size(); ++k) {
      const std::string_view t = bytes_of(order[k]);
      size_t common = 0;
      if (k > 0) {
        const std::string_view prev = bytes_of(order[k - 1]);
        while (common < prev.size() && common < t.size() && prev[common] == t[common]) ++common;
      }
      n_nodes += t.size() - common;
    }
    if (n_nodes >= std::numeric_limits<uint32_t>::max()) RWKVL_FAIL(kFormat, "world tokenizer: vocabulary too large");
    node_id_.assign(n_nodes, -1);
    edge_byte_.assign(n_nodes, 0);
    first_child_.assign(n_nodes + 1, 0);

    // Breadth-first, one level at a time: each node of a level owns the sorted range of tokens that start with
    // its prefix (depth bytes long); its children get the next free numbers, so siblings are contiguous.
    struct Range {
      uint32_t lo, hi;
    };
    std::vector<Range> level{{0, static_cast<uint32_t>(order.size())}}, next;
    uint32_t node = 0, free_node = 1;
    for (uint32_t depth = 0; !level.empty(); ++depth) {
      next.clear();
      for (const Range& r : level) {
        uint32_t lo = r.lo;
        // In sorted order the token equal to the prefix itself comes first.
        if (lo < r.hi && len_[static_cast<size_t>(order[lo])] == depth) node_id_[node] = order[lo++];
        first_child_[node] = free_node;
        while (lo < r.hi) {
          const unsigned char b = byte_at(order[lo], depth);
          uint32_t hi = lo + 1;
          while (hi < r.hi && byte_at(order[hi], depth) == b) ++hi;
          edge_byte_[free_node++] = b;
          next.push_back({lo, hi});
          lo = hi;
        }
        ++node;
      }
      level.swap(next);
    }
    if (free_node != n_nodes || node != n_nodes) RWKVL_FAIL(kInternal, "world tokenizer: trie has %u nodes, counted %zu", free_node, n_nodes);
    first_child_[n_nodes] = free_node;
    root_child_.fill(0);
    for (uint32_t c = first_child_[0]; c < first_child_[1]; ++c) root_child_[edge_byte_[c]] = c;
  }

  std::string blob_;                      // every token's bytes, one after another
  std::vector<uint32_t> start_;           // by id: offset in blob_
  size_t max_len_ = 1;                    // the longest token in bytes (how far a match can look ahead)
  std::vector<uint16_t> len_;             // by id: byte length; 0 = no such token
  std::vector<uint32_t> first_child_;     // trie: node k's children are [first_child_[k], first_child_[k + 1])
  std::vector<int32_t> node_id_;          // trie: the token ending at each node, or -1
  std::vector<unsigned char> edge_byte_;  // trie: the byte on the edge into each node
  std::array<uint32_t, 256> root_child_{};
};

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::world_from_tokens(const std::vector<std::string>& id_bytes, const std::string& source) {
  return std::make_unique<WorldTokenizer>(source, id_bytes);
}

std::unique_ptr<Tokenizer> Tokenizer::world_from_file(const std::string& vocab_txt_path) {
  return std::make_unique<WorldTokenizer>(vocab_txt_path, tokenizer_detail::read_tokenizer_file(vocab_txt_path));
}

}  // namespace rwkvl
