// Unicode NFC normalization (UAX #15), needed because the GPT-NeoX tokenizer.json declares an NFC normalizer.
// The library links no ICU, so the three tables it needs (canonical combining classes, full canonical
// decompositions, primary composites) and the ranges of code points that may change under NFC are generated
// from Python's unicodedata by scripts/gen_unicode_nfc.py into unicode_nfc_tables.inc (ctest
// unicode_nfc_tables checks that the committed file is what the script writes).
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace rwkvl {
namespace {

struct CccRange {
  char32_t first, last;
  uint8_t ccc;
};
struct CpRange {
  char32_t first, last;
};
struct Decomposition {
  char32_t cp;
  uint16_t offset, length;  // into kDecompositionCps
};
struct Composition {
  char32_t first, second, composite;
};

#include "tokenizer/unicode_nfc_tables.inc"

// Invalid UTF-8 bytes travel through the algorithm as code points past U+10FFFF: they have combining class 0,
// no decomposition and compose with nothing, so they come back out unchanged.
constexpr char32_t kRawByteBase = 0x200000;

// Hangul syllables decompose and compose arithmetically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// No code point below U+0300 has a nonzero class, changes under NFC or composes with what precedes it (so text
// below U+0300 is already NFC); Latin-1 letters from U+00C0 on do decompose, though, once marks follow them.
constexpr char32_t kFirstInteresting = 0x300;
constexpr char32_t kFirstDecomposable = 0xC0;

uint8_t combining_class(char32_t cp) {
  if (cp < kFirstInteresting) return 0;
  const auto* end = std::end(kCccRanges);
  const auto* it =
      std::upper_bound(std::begin(kCccRanges), end, cp, [](char32_t c, const CccRange& r) { return c < r.first; });
  if (it == std::begin(kCccRanges)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

bool may_change(char32_t cp) {
  if (cp < kFirstInteresting) return false;
  const auto* it = std::upper_bound(std::begin(kMaybeChangesRanges), std::end(kMaybeChangesRanges), cp,
                                    [](char32_t c, const CpRange& r) { return c < r.first; });
  if (it == std::begin(kMaybeChangesRanges)) return false;
  --it;
  return cp <= it->last;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= kFirstDecomposable) {
    const auto* it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                                      [](const Decomposition& d, char32_t c) { return d.cp < c; });
    if (it != std::end(kDecompositions) && it->cp == cp) {
      out.insert(out.end(), kDecompositionCps + it->offset, kDecompositionCps + it->offset + it->length);
      return;
    }
  }
  out.push_back(cp);
}

// The primary composite of a + b, or 0 if there is none.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto* it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), Composition{a, b, 0},
                                    [](const Composition& x, const Composition& y) {
                                      return x.first != y.first ? x.first < y.first : x.second < y.second;
                                    });
  if (it != std::end(kCompositions) && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

namespace tokenizer_detail {

std::string nfc_normalize(std::string_view utf8) {
  // Almost all text is already NFC; find out cheaply and hand it back untouched.
  std::vector<char32_t> cps;
  bool needs_work = false;
  for (size_t i = 0; i < utf8.size();) {
    const size_t len = utf8_valid_length(utf8, i);
    if (len == 0) {
      cps.push_back(kRawByteBase + static_cast<unsigned char>(utf8[i]));
      ++i;
      continue;
    }
    const char32_t cp = utf8_decode(utf8, i, len);
    needs_work = needs_work || may_change(cp);
    cps.push_back(cp);
    i += len;
  }
  if (!needs_work) return std::string(utf8);

  std::vector<char32_t> d;
  d.reserve(cps.size() + cps.size() / 4);
  for (char32_t cp : cps) decompose(cp, d);

  // Canonical ordering: stable sort of each run of non-starters by combining class (runs are short).
  for (size_t i = 1; i < d.size(); ++i) {
    const uint8_t cc = combining_class(d[i]);
    if (cc == 0) continue;
    const char32_t cp = d[i];
    size_t j = i;
    while (j > 0) {
      const uint8_t prev = combining_class(d[j - 1]);
      if (prev == 0 || prev <= cc) break;
      d[j] = d[j - 1];
      --j;
    }
    d[j] = cp;
  }

  // Canonical composition: each character joins the last starter unless something in between blocks it.
  std::vector<char32_t> out;
  out.reserve(d.size());
  size_t starter_pos = 0;
  bool have_starter = false;
  int last_class = -1;  // class of the last character appended after the starter; -1: none since the starter
  for (char32_t cp : d) {
    const int cc = combining_class(cp);
    if (have_starter) {
      const bool blocked = last_class != -1 && (last_class == 0 || last_class >= cc);
      if (!blocked) {
        const char32_t composite = compose(out[starter_pos], cp);
        if (composite != 0) {
          out[starter_pos] = composite;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter_pos = out.size();
      have_starter = true;
      last_class = -1;
    } else {
      last_class = cc;
    }
    out.push_back(cp);
  }

  std::string result;
  result.reserve(utf8.size() + 8);
  for (char32_t cp : out) {
    if (cp >= kRawByteBase) {
      result += static_cast<char>(cp - kRawByteBase);
    } else {
      append_utf8(result, cp);
    }
  }
  return result;
}

}  // namespace tokenizer_detail

}  // namespace rwkvl
