// Tokenizer tests: byte-level, RWKV World and GPT-NeoX 20B against reference ids, round trips, error reporting,
// NFC normalization and the UTF-8 streamer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"


namespace rwkvl {
namespace {

using Ids = std::vector<int32_t>;

std::string world_path() { return test::shared_file("reference/tokenizers/rwkv_vocab_v20230424.txt"); }
std::string neox_path() { return test::shared_file("reference/tokenizers/20B_tokenizer.json"); }

// Loading is the slow part (65k lines / a 2.4 MB JSON), so each tokenizer is built once per process.
const Tokenizer* world() {
  static const std::unique_ptr<Tokenizer> tok =
      world_path().empty() ? nullptr : Tokenizer::world_from_file(world_path());
  return tok.get();
}
const Tokenizer* neox() {
  static const std::unique_ptr<Tokenizer> tok = neox_path().empty() ? nullptr : Tokenizer::neox_from_file(neox_path());
  return tok.get();
}

#define REQUIRE_WORLD()                                                      \
  if (!world()) {                                                            \
    GTEST_SKIP() << "reference/tokenizers/rwkv_vocab_v20230424.txt missing"; \
  }
#define REQUIRE_NEOX()                                                 \
  if (!neox()) {                                                       \
    GTEST_SKIP() << "reference/tokenizers/20B_tokenizer.json missing"; \
  }

// Runs `fn`, expecting an rwkvl::Error with `code`; returns its message.
template <typename Fn>
std::string expect_error(ErrorCode code, Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected rwkvl::Error(" << error_code_name(code) << ")";
  return "";
}

struct Case {
  const char* name;
  std::string text;
  Ids ids;
};

// Strings whose bytes must survive encode -> decode unchanged (all are NFC, so NeoX keeps them too).
std::vector<std::string> tricky_strings() {
  return {
      "",
      " ",
      "a",
      "Hello, world!",
      "\n\n\n",
      "\t \t  \t",
      std::string(100, ' '),
      "caf\xc3\xa9 na\xc3\xafve \xc3\x85ngstr\xc3\xb6m",                           // Latin-1 supplement
      "\xe4\xb8\xad\xe6\x96\x87\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",  // CJK + fullwidth comma
      "\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",  // emoji, ZWJ
      "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 \xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa",  // RTL
      "\xef\xbb\xbf"
      "BOM and \xe2\x80\x8b zero width",
      "\xf4\x8f\xbf\xbf max code point",
      "<|endoftext|> inside <|padding|> text",
      "q\xcc\xa3\xcc\x87",  // q + dot below + dot above: already NFC (no precomposed form exists)
      std::string("nul\0byte", 8),
      "\x80 invalid \xc3 utf8 \xed\xa0\x80 surrogate \xe2\x82",  // invalid UTF-8 passes through
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Byte-level

TEST(ByteTokenizer, IdsAreBytes) {
  auto tok = Tokenizer::byte_level();
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->encode("A\xff\n"), (Ids{65, 255, 10}));
  EXPECT_EQ(tok->encode(""), Ids{});
  for (const std::string& s : tricky_strings()) EXPECT_EQ(tok->decode(tok->encode(s)), s);
  EXPECT_EQ(tok->token_bytes(0), std::string(1, '\0'));
  expect_error(ErrorCode::kInvalidArgument, [&] { tok->token_bytes(256); });
  expect_error(ErrorCode::kInvalidArgument, [&] { tok->token_bytes(-1); });
}

// ---------------------------------------------------------------------------------------------------------------
// RWKV World
//
// Expected ids were produced by running the public Python implementation (rwkv.cpp,
// python/rwkv_cpp/rwkv_world_tokenizer.py, greedy longest match over a byte trie) on the same vocab file with
// /usr/bin/python3, and the token strings were checked by eye, e.g. 33155 = b'Hello', 40213 = b' world',
// 261 = b'\n\n', 3340 = b'   ', 257 = b'\t\t', 10464 = '你', 3319 = b'\xf0\x9f' (emoji have no whole tokens
// except 👍 = 28333), 65436 = 25 spaces.
std::vector<Case> world_cases() {
  return {
      {"english", "Hello world", {33155, 40213}},
      {"english2",
       "The quick brown fox jumps over the lazy dog.",
       {6699, 39418, 37917, 21704, 38828, 31601, 22590, 31261, 21551, 47}},
      {"contractions",
       "I'm sure it's what they'll do, isn't it?",
       {74, 459, 32157, 4601, 460, 32464, 32232, 5229, 4491, 45, 21896, 461, 4601, 64}},
      {"chinese", "你好，世界", {10464, 11685, 19137, 10267, 14610}},
      {"chinese2", "中文分词测试", {10285, 13012, 10768, 16702, 13827, 16707}},
      {"emoji", "😀👍🏽", {3319, 153, 129, 28333, 3319, 144, 190}},
      {"newlines", "\n\n", {261}},
      {"spaces3", "   ", {3340}},
      {"tabs", "\t\t", {257}},
      {"tab_word", "a\tb", {98, 10, 99}},
      {"multi_space", "Hello   world", {33155, 3340, 36017}},
      {"lines", "line1\n\nline2\n", {26150, 50, 261, 26150, 51, 11}},
      {"mixed",
       "RWKV 是一个 RNN 🚀 model's 123 test!",
       {1413, 1184, 33, 13091, 10250, 10283, 4163, 79, 33, 3319, 155, 129, 39043, 460, 3485, 52, 32223, 34}},
      {"numbers", "3.14159 and 2024-01-01", {52, 47, 634, 635, 58, 21265, 3493, 644, 46, 621, 46, 621}},
      {"no_special_tokens", "<|endoftext|>Hi", {61, 125, 25258, 7588, 2318, 125, 63, 1097}},
      {"combining_not_normalized", "Cafe\u0301 na\u00efve", {918, 1870, 2672, 46644}},
      {"spaces25", std::string(25, ' ').append("x"), {65436, 121}},
  };
}

TEST(WorldTokenizer, Basics) {
  REQUIRE_WORLD();
  EXPECT_EQ(world()->name(), "world");
  EXPECT_EQ(world()->vocab_size(), 65536);
  EXPECT_EQ(world()->token_bytes(0), "");  // end of text
  EXPECT_EQ(world()->token_bytes(1), std::string(1, '\0'));
  EXPECT_EQ(world()->token_bytes(33155), "Hello");
  EXPECT_EQ(world()->token_bytes(257), "\t\t");
  EXPECT_EQ(world()->token_bytes(65529), std::string(128, ' '));  // last line of the file
  EXPECT_EQ(world()->token_bytes(19125), "\xef\xbb\xbf");         // '\ufeff' str literal -> UTF-8
  EXPECT_EQ(world()->encode(""), Ids{});
  EXPECT_EQ(world()->decode({0, 33155, 0}), "Hello");
  expect_error(ErrorCode::kInvalidArgument, [] { world()->token_bytes(65536); });
  expect_error(ErrorCode::kInvalidArgument, [] { world()->token_bytes(-1); });
}

TEST(WorldTokenizer, ReferenceIds) {
  REQUIRE_WORLD();
  for (const Case& c : world_cases()) {
    EXPECT_EQ(world()->encode(c.text), c.ids) << c.name;
    EXPECT_EQ(world()->decode(c.ids), c.text) << c.name;
  }
}

TEST(WorldTokenizer, BytesLiteralsDecodeToRawBytes) {
  REQUIRE_WORLD();
  // Ids 129..256 are written as b'\x80'..b'\xff' and must be single raw bytes, not UTF-8 encoded code points.
  for (int b = 0x80; b <= 0xFF; ++b) EXPECT_EQ(world()->token_bytes(b + 1), std::string(1, static_cast<char>(b)));
  // Every single byte is a token of its own, so any input can be encoded.
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, static_cast<char>(b));
    EXPECT_EQ(world()->encode(s), Ids{b + 1});
  }
}

std::string all_bytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s += static_cast<char>(b);
  return s;
}

TEST(WorldTokenizer, RoundTripTrickyStrings) {
  REQUIRE_WORLD();
  for (const std::string& s : tricky_strings()) EXPECT_EQ(world()->decode(world()->encode(s)), s);
  EXPECT_EQ(world()->decode(world()->encode(all_bytes())), all_bytes());
}

// ---------------------------------------------------------------------------------------------------------------
// GPT-NeoX 20B
//
// No Debian package ships Hugging Face `tokenizers`/`transformers`, so the expected ids were derived with an
// independent Python re-implementation of what 20B_tokenizer.json declares (split on <|endoftext|>/<|padding|>,
// NFC, leftmost-longest split on the normalized space-run added tokens 50254..50276, the GPT-2 regex through
// the `regex` module, GPT-2 bytes_to_unicode, lowest-rank-first BPE), and a sample was checked by hand against
// the JSON's vocab and merges:
//   "Hello world": pieces "Hello", " world"; "Hello" is vocab 12092 as a whole, " world" -> "Ġworld" = 1533.
//   "\t\t": bytes 09 09 -> "ĉĉ" (byte 0x09 maps to U+0109); merge "ĉ ĉ" (rank 378) gives "ĉĉ" = 623.
//   "\n\n": one \s+ piece "ĊĊ"; merge "Ċ Ċ" (rank 290) -> 535.
//   "line1\n\nline2": \s+(?!\S) takes only the first "\n" (the second is followed by 'l'), so two "Ċ" = 187.
//   "14159": merges "1 5" (765), "1 4" (802), "15 9" (16975) -> "14" 1047, "159" 17220.
//   "Hello   world": "   " is added token 50275 (3 spaces), cut out before the regex, so "world" = 10186 has no Ġ.
//   "Cafe\u0301": NFC makes "é" (C3 A9 -> "Ã©"), BPE gives "C" 36, "af" 2320, "Ã©" 860.
std::vector<Case> neox_cases() {
  return {
      {"english", "Hello world", {12092, 1533}},
      {"english2",
       "The quick brown fox jumps over the lazy dog.",
       {510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15}},
      {"contractions",
       "I'm sure it's what they'll do, isn't it?",
       {42, 1353, 2119, 352, 434, 752, 597, 1833, 513, 13, 3548, 626, 352, 32}},
      {"chinese", "你好，世界", {24553, 34439, 6238, 42848, 45261}},
      {"chinese2", "中文分词测试", {13609, 20855, 18434, 11894, 224, 21998, 222, 11894, 232}},
      {"emoji", "😀👍🏽", {14931, 235, 211, 14931, 228, 224, 14931, 226, 123}},
      {"newlines", "\n\n", {535}},
      {"spaces3", "   ", {50275}},
      {"tabs", "\t\t", {623}},
      {"tab_word", "a\tb", {66, 186, 67}},
      {"multi_space", "Hello   world", {12092, 50275, 10186}},
      {"lines", "line1\n\nline2\n", {1282, 18, 187, 187, 1282, 19, 187}},
      {"mixed",
       "RWKV 是一个 RNN 🚀 model's 123 test!",
       {51, 27767, 55, 209, 12105, 27896, 416, 8504, 22692, 237, 211, 1566, 434, 15567, 1071, 2}},
      {"numbers", "3.14159 and 2024-01-01", {20, 15, 1047, 17220, 285, 1384, 1348, 14, 520, 14, 520}},
      {"special", "<|endoftext|>Hi", {0, 12764}},
      {"specials", "<|padding|><|endoftext|>", {1, 0}},
      {"nfc", "Cafe\u0301 na\u00efve", {36, 2320, 860, 36060}},
      {"nfc_reorder", "x\u0323\u0307 a\u0307\u0323", {9702, 222, 136, 98, 209, 30110, 136, 218}},
      {"hangul_jamo", "\u1100\u1161\u11a8", {26532, 212}},
      {"nbsp", "Hello\u00a0world", {12092, 575, 10186}},
      {"spaces25", std::string(25, ' ').append("x"), {50254, 1269}},
      // Pieces longer than 32 bytes take the heap-based merge path.
      {"long_word",
       "Pneumonoultramicroscopicsilicovolcanoconiosis",
       {49, 11312, 251, 3941, 1206, 312, 1813, 1026, 412, 982, 24479, 729, 311, 5092, 406, 12355, 2433}},
      {"long_repeat",
       [] {
         std::string s;
         for (int i = 0; i < 40; ++i) s += "ab";
         return s;
       }(),
       Ids(40, 357)},
      {"long_cjk",
       "中华人民共和国国务院总理",
       {13609, 12363, 225, 13484, 46356, 7056, 111, 21458, 23197, 23197, 45008, 17783, 97, 13258, 121, 24017}},
  };
}

TEST(NeoxTokenizer, Basics) {
  REQUIRE_NEOX();
  EXPECT_EQ(neox()->name(), "neox");
  EXPECT_EQ(neox()->vocab_size(), 50277);
  EXPECT_EQ(neox()->token_bytes(0), "<|endoftext|>");
  EXPECT_EQ(neox()->token_bytes(1533), " world");
  EXPECT_EQ(neox()->token_bytes(187), "\n");
  EXPECT_EQ(neox()->token_bytes(50276), "  ");  // added token: its content taken as bytes
  EXPECT_EQ(neox()->token_bytes(50254), std::string(24, ' '));
  EXPECT_EQ(neox()->token_bytes(14931), "\xf0\x9f");  // partial UTF-8: "ðŁ" maps back to two bytes
  EXPECT_EQ(neox()->encode(""), Ids{});
  expect_error(ErrorCode::kInvalidArgument, [] { neox()->token_bytes(50277); });
  expect_error(ErrorCode::kInvalidArgument, [] { neox()->token_bytes(-5); });
}

TEST(NeoxTokenizer, ReferenceIds) {
  REQUIRE_NEOX();
  for (const Case& c : neox_cases()) {
    EXPECT_EQ(neox()->encode(c.text), c.ids) << c.name;
    EXPECT_EQ(neox()->decode(c.ids), tokenizer_detail::nfc_normalize(c.text)) << c.name;
  }
}

TEST(NeoxTokenizer, RoundTripTrickyStrings) {
  REQUIRE_NEOX();
  for (const std::string& s : tricky_strings()) {
    ASSERT_EQ(tokenizer_detail::nfc_normalize(s), s) << "test string is not NFC";
    EXPECT_EQ(neox()->decode(neox()->encode(s)), s);
  }
}

TEST(NeoxTokenizer, BytesWithoutTokensBecomeReplacementChar) {
  REQUIRE_NEOX();
  // The vocabulary has no token for C0, C1, F5..FF (never in valid UTF-8); they are encoded as U+FFFD (21478).
  EXPECT_EQ(neox()->encode("\xef\xbf\xbd"), Ids{21478});
  EXPECT_EQ(neox()->encode("\xff"), Ids{21478});
  EXPECT_EQ(neox()->encode("\xc0\xc1"), neox()->encode("\xef\xbf\xbd\xef\xbf\xbd"));
  std::string expected;
  for (char c : all_bytes()) {
    const auto b = static_cast<unsigned char>(c);
    expected += (b == 0xC0 || b == 0xC1 || b >= 0xF5) ? std::string("\xef\xbf\xbd") : std::string(1, c);
  }
  EXPECT_EQ(neox()->decode(neox()->encode(all_bytes())), expected);
}

// ---------------------------------------------------------------------------------------------------------------
// Both on real text

TEST(Tokenizers, RoundTripWikitextPrefix) {
  const std::string path = test::shared_file("data/wikitext2-test.txt");
  if (path.empty()) GTEST_SKIP() << "data/wikitext2-test.txt missing";
  std::string text = test::read_file(path);
  text.resize(std::min<size_t>(text.size(), 100 * 1024));
  std::vector<const Tokenizer*> toks = {world(), neox()};
  auto byte = Tokenizer::byte_level();
  toks.push_back(byte.get());
  for (const Tokenizer* tok : toks) {
    if (!tok) continue;
    const Ids ids = tok->encode(text);
    if (tok->name() != "byte") {
      EXPECT_LT(ids.size(), text.size() / 2) << tok->name();  // real compression
    }
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size()) << tok->name();
    EXPECT_TRUE(tok->decode(ids) == text) << tok->name();
  }
}

// Round trip of 1 MB of real text. Speed is recorded as a property only: timing claims belong in
// benchmarks, and this test also runs under sanitizers and qemu.
TEST(Tokenizers, EncodesOneMegabyteRoundTrip) {
  const std::string path = test::shared_file("data/wikitext2-test.txt");
  if (path.empty()) GTEST_SKIP() << "data/wikitext2-test.txt missing";
  std::string text = test::read_file(path);
  text.resize(std::min<size_t>(text.size(), 1 << 20));
  for (const Tokenizer* tok : {world(), neox()}) {
    if (!tok) continue;
    const auto t0 = std::chrono::steady_clock::now();
    const Ids ids = tok->encode(text);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    RecordProperty(tok->name() + "_encode_1mb_seconds", std::to_string(secs));
    EXPECT_EQ(tok->decode(ids), text) << tok->name();
  }
}

TEST(Tokenizers, EncodeIsThreadSafe) {
  const std::string path = test::shared_file("data/wikitext2-test.txt");
  if (path.empty()) GTEST_SKIP() << "data/wikitext2-test.txt missing";
  std::string text = test::read_file(path);
  text.resize(std::min<size_t>(text.size(), 32 * 1024));
  for (const Tokenizer* tok : {world(), neox()}) {
    if (!tok) continue;
    const Ids expected = tok->encode(text);
    std::vector<Ids> got(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t) {
      threads.emplace_back([&, t] {
        for (int rep = 0; rep < 3; ++rep) got[t] = tok->encode(text);
      });
    }
    for (std::thread& th : threads) th.join();
    for (const Ids& g : got) EXPECT_EQ(g, expected) << tok->name();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

TEST(TokenizerErrors, MissingFileIsIoError) {
  const std::string missing = test::temp_dir() + "/no-such-vocab.txt";
  std::string msg = expect_error(ErrorCode::kIo, [&] { Tokenizer::world_from_file(missing); });
  EXPECT_NE(msg.find("cannot read tokenizer file '" + missing + "'"), std::string::npos) << msg;
  msg = expect_error(ErrorCode::kIo, [&] { Tokenizer::neox_from_file(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  // A directory opens but cannot be read.
  expect_error(ErrorCode::kIo, [&] { Tokenizer::world_from_file(test::temp_dir()); });
}

TEST(TokenizerErrors, MalformedWorldVocabIsFormatError) {
  const std::string good = "1 'a' 1\n2 b'\\xff' 1\n";
  const struct {
    const char* name;
    std::string line;
  } bad[] = {
      {"length mismatch", "3 'abc' 2"},
      {"length mismatch utf8", "3 '\\u4e2d' 1"},  // U+4E2D is 3 bytes in UTF-8
      {"str \\x80 is two bytes", "3 '\\x80' 1"},
      {"no literal", "3 1"},
      {"not a literal", "3 abc 3"},
      {"unterminated", "3 'abc 3"},
      {"bad id", "x3 'abc' 3"},
      {"id zero", "0 'abc' 3"},
      {"id too large", "65536 'abc' 3"},
      {"bad length", "3 'abc' three"},
      {"duplicate id", "1 'zz' 2"},
      {"duplicate bytes", "3 'a' 1"},
      {"empty token", "3 '' 0"},
      {"bad hex escape", "3 '\\xZZ' 1"},
      {"truncated \\u", "3 '\\u12' 1"},
      {"surrogate", "3 '\\ud800' 3"},
      {"non-ASCII in bytes literal", "3 b'\xc3\xa9' 2"},
      {"unescaped quote", "3 'a'b' 3"},
      {"invalid UTF-8 in str", "3 '\xff' 1"},
  };
  const std::string path = test::temp_dir() + "/bad_vocab.txt";
  for (const auto& b : bad) {
    test::write_file(path, good + b.line + "\n");
    const std::string msg = expect_error(ErrorCode::kFormat, [&] { Tokenizer::world_from_file(path); });
    EXPECT_NE(msg.find(path + ":3:"), std::string::npos) << b.name << ": " << msg;
  }
  test::write_file(path, "");
  expect_error(ErrorCode::kFormat, [&] { Tokenizer::world_from_file(path); });
}

TEST(WorldTokenizer, SmallVocabParsesPythonEscapes) {
  // Each line exercises one literal form; byte lengths are what Python computes for the decoded value.
  const std::string vocab =
      "1 'a' 1\n"
      "2 'b' 1\n"
      "3 'ab' 2\n"
      "4 '\\n\\t\\r\\\\' 4\n"
      "5 \"it's\" 4\n"
      "6 '\\'q\\\"' 3\n"
      "7 '\\u4e2d' 3\n"
      "8 '\\U0001F600' 4\n"
      "9 b'\\x80\\xff' 2\n"
      "10 '\\xe9' 2\n"
      "11 '\\101\\0' 2\n"
      "12 '\\q' 2\n"
      "13 b'\\u00' 4\n"
      "14 '文' 3\r\n"
      "\n"
      "15 ' ' 1\n";
  const std::string path = test::temp_dir() + "/small_vocab.txt";
  test::write_file(path, vocab);
  auto tok = Tokenizer::world_from_file(path);
  EXPECT_EQ(tok->token_bytes(4), "\n\t\r\\");
  EXPECT_EQ(tok->token_bytes(5), "it's");
  EXPECT_EQ(tok->token_bytes(6), "'q\"");
  EXPECT_EQ(tok->token_bytes(7), "\xe4\xb8\xad");
  EXPECT_EQ(tok->token_bytes(8), "\xf0\x9f\x98\x80");
  EXPECT_EQ(tok->token_bytes(9), "\x80\xff");
  EXPECT_EQ(tok->token_bytes(10), "\xc3\xa9");
  EXPECT_EQ(tok->token_bytes(11), std::string("A\0", 2));
  EXPECT_EQ(tok->token_bytes(12), "\\q");
  EXPECT_EQ(tok->token_bytes(13), "\\u00");
  EXPECT_EQ(tok->token_bytes(14), "\xe6\x96\x87");
  EXPECT_EQ(tok->token_bytes(15), " ");
  EXPECT_EQ(tok->token_bytes(16), "");  // unused id
  // Greedy longest match: "ab" beats "a" + "b".
  EXPECT_EQ(tok->encode("abab a"), (Ids{3, 3, 15, 1}));
  // A byte without a token cannot be encoded.
  expect_error(ErrorCode::kInvalidArgument, [&] { tok->encode("z"); });
}

TEST(TokenizerErrors, MalformedNeoxJsonIsFormatError) {
  const std::string path = test::temp_dir() + "/bad_tokenizer.json";
  test::write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": ");
  std::string msg = expect_error(ErrorCode::kFormat, [&] { Tokenizer::neox_from_file(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  test::write_file(path,
                   "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []},"
                   " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  expect_error(ErrorCode::kFormat, [&] { Tokenizer::neox_from_file(path); });
  test::write_file(path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
  expect_error(ErrorCode::kUnsupported, [&] { Tokenizer::neox_from_file(path); });
}

// ---------------------------------------------------------------------------------------------------------------
// NFC (used by the NeoX normalizer); expected strings from Python's unicodedata.normalize('NFC', ...).

TEST(Nfc, Normalizes) {
  using tokenizer_detail::nfc_normalize;
  EXPECT_EQ(nfc_normalize("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc_normalize("e\xcc\x81"), "\xc3\xa9");                                 // e + U+0301 -> é
  EXPECT_EQ(nfc_normalize("a\xcc\x87\xcc\xa3"), "\xe1\xba\xa1\xcc\x87");             // reorder, then ạ + ̇
  EXPECT_EQ(nfc_normalize("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"), "\xea\xb0\x81");  // Hangul jamo -> 각
  EXPECT_EQ(nfc_normalize("\xe2\x84\xab"), "\xc3\x85");                              // Å (U+212B) singleton -> U+00C5
  EXPECT_EQ(nfc_normalize("A\xcc\x8a\xcc\x81"), "\xc7\xba");                         // A + ring + acute -> Ǻ
  EXPECT_EQ(nfc_normalize("\xcd\x84"), "\xcc\x88\xcc\x81");                          // U+0344 decomposes for good
  EXPECT_EQ(nfc_normalize("q\xcc\x87\xcc\xa3"), "q\xcc\xa3\xcc\x87");                // only reordered
  // Precomposed Latin-1 letters decompose when a mark of lower class follows: ñ + cedilla -> ņ + tilde.
  EXPECT_EQ(nfc_normalize("\xc3\xb1\xcc\xa7"), "\xc5\x86\xcc\x83");
  EXPECT_EQ(nfc_normalize("\xc3\xa9\xcc\xa3"), "\xe1\xba\xb9\xcc\x81");  // é + dot below -> ẹ + acute
  EXPECT_EQ(nfc_normalize("\xc3\x85\xcc\x81"), "\xc7\xba");              // Å + acute -> Ǻ
  EXPECT_EQ(nfc_normalize("\xff"
                          "e\xcc\x81\xc3"),
            "\xff\xc3\xa9\xc3");  // invalid bytes kept
}

// ---------------------------------------------------------------------------------------------------------------
// Utf8Streamer

TEST(Utf8Streamer, HoldsBackIncompleteSequences) {
  const std::string emoji = "\xf0\x9f\x98\x80";  // U+1F600, 4 bytes
  Utf8Streamer s;
  EXPECT_EQ(s.push("ab"), "ab");
  EXPECT_EQ(s.push(emoji.substr(0, 1)), "");
  EXPECT_EQ(s.push(emoji.substr(1, 2)), "");
  EXPECT_EQ(s.push(emoji.substr(3, 1) + "c"), emoji + "c");
  EXPECT_EQ(s.push(std::string("x").append(emoji, 0, 2)), "x");
  EXPECT_EQ(s.push(emoji.substr(2)), emoji);
  EXPECT_EQ(s.flush(), "");

  // Every split point of a mixed string gives back the same bytes, and nothing incomplete is emitted early.
  const std::string text = "a\xc3\xa9" + emoji + "\xe4\xb8\xad!";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    Utf8Streamer st;
    std::string out = st.push(text.substr(0, cut));
    out += st.push(text.substr(cut));
    EXPECT_EQ(out, text) << cut;
    EXPECT_EQ(st.flush(), "");
  }

  // Bytes that can never complete are passed on instead of being held forever.
  Utf8Streamer t;
  EXPECT_EQ(t.push("\xff"), "\xff");
  EXPECT_EQ(t.push("\xe0\x80"), "\xe0\x80");  // overlong form can never be valid
  EXPECT_EQ(t.push("\xe4"), "");
  EXPECT_EQ(t.flush(), "\xe4");
  EXPECT_EQ(t.flush(), "");
}

TEST(Utf8Streamer, StreamsTokenByToken) {
  REQUIRE_WORLD();
  const std::string text = "😀👍🏽 中文";
  Utf8Streamer s;
  std::string out;
  for (int32_t id : world()->encode(text)) {
    const std::string piece = s.push(world()->token_bytes(id));
    // Whatever comes out is valid UTF-8 on its own.
    for (size_t i = 0; i < piece.size();) {
      const size_t len = tokenizer_detail::utf8_valid_length(piece, i);
      ASSERT_GT(len, 0u) << "incomplete UTF-8 emitted";
      i += len;
    }
    out += piece;
  }
  out += s.flush();
  EXPECT_EQ(out, text);
}

}  // namespace
}  // namespace rwkvl
