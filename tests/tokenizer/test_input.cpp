// Inputs: regular files only (FIFOs, devices and folders refused at once, nothing blocks in open()), bounded
// whole-file reads, and text streams whose tokens equal the tokenizer's encode() of the whole text.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/input_file.h"
#include "test_util.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(InputFile, RefusesWhatIsNotARegularFileWithoutBlocking) {
  const std::string dir = test::temp_dir();
  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  // A FIFO without a writer would block a plain open() forever.
  std::string msg = error_of([&] { InputFile::open(fifo, "text file"); });
  EXPECT_NE(msg.find("cannot read text file '" + fifo + "': it is a FIFO"), std::string::npos) << msg;
  msg = error_of([&] { InputFile::open("/dev/zero", "prompt file"); });
  EXPECT_NE(msg.find("'/dev/zero': it is a character device"), std::string::npos) << msg;
  msg = error_of([&] { InputFile::open(dir, "tokenizer file"); });
  EXPECT_NE(msg.find("it is a directory"), std::string::npos) << msg;
  msg = error_of([&] { InputFile::open(dir + "/absent", "state file"); });
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  // The model loader goes through the same check.
  uint64_t size = 0;
  msg = error_of([&] { open_regular_file(fifo, "model file", &size); });
  EXPECT_NE(msg.find("FIFO"), std::string::npos) << msg;
}

TEST(InputFile, ReadAllStopsAtTheLimit) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/ten";
  test::write_file(path, "0123456789");
  EXPECT_EQ(InputFile::open(path, "text file").read_all(10), "0123456789");
  const std::string msg = error_of([&] { InputFile::open(path, "text file").read_all(9); });
  EXPECT_NE(msg.find("larger than the limit of 9 bytes"), std::string::npos) << msg;
  // Pieces: read() returns what is there, then 0.
  InputFile f = InputFile::open(path, "text file");
  EXPECT_EQ(f.size(), 10u);
  char buf[4];
  EXPECT_EQ(f.read(buf, 4), 4u);
  EXPECT_EQ(f.read(buf, 4), 4u);
  EXPECT_EQ(f.read(buf, 4), 2u);
  EXPECT_EQ(f.read(buf, 4), 0u);
}

// Streams `text` from a file through the tokenizer in pieces of `cap` tokens and returns the tokens.
std::vector<int32_t> stream_tokens(const Tokenizer& tok, const std::string& text, size_t cap, uint64_t* forced) {
  const std::string path = test::temp_dir() + "/stream.txt";
  test::write_file(path, text);
  TokenStream s(tok, InputFile::open(path, "text file"));
  std::vector<int32_t> out, piece(cap);
  for (size_t n; (n = s.read(piece.data(), cap)) > 0;) out.insert(out.end(), piece.begin(), piece.begin() + static_cast<long>(n));
  EXPECT_EQ(s.bytes_read(), text.size());
  *forced = s.forced_cuts();
  return out;
}

// Text that stresses the cut points: words, runs of spaces and newlines, multi-byte characters, combining marks
// (NFC), non-ASCII white space, digits, punctuation, and long stretches with no white space at all.
std::string tricky_text(size_t bytes, uint64_t seed) {
  static const char* pieces[] = {"the", " ", "  ", "\n", "\n\n", "   \n ", "caf\xc3\xa9", "e\xcc\x81", "\xc2\xa0",
                                 "\xe3\x80\x80", "\xe4\xb8\xad\xe6\x96\x87", "123", "4.5", "!?", "'s", "don't", "\t",
                                 "\xe2\x80\x83", "<|endoftext|>", "A", "z", "\xf0\x9f\x98\x80", ",", "-"};
  std::mt19937_64 rng(seed);
  std::string t;
  while (t.size() < bytes) {
    if (rng() % 500 == 0) t.append(3000 + rng() % 3000, 'x');  // long words
    t += pieces[rng() % (sizeof pieces / sizeof pieces[0])];
  }
  return t;
}

class StreamEquality : public ::testing::TestWithParam<int> {};

std::unique_ptr<Tokenizer> make_tokenizer(int kind) {
  if (kind == 0) return Tokenizer::byte_level();
  const std::string world = test::shared_file("reference/tokenizers/rwkv_vocab_v20230424.txt");
  const std::string neox = test::shared_file("reference/tokenizers/20B_tokenizer.json");
  if (kind == 1) return world.empty() ? nullptr : Tokenizer::world_from_file(world);
  return neox.empty() ? nullptr : Tokenizer::neox_from_file(neox);
}

// The tokens of a text read in 64 KiB pieces equal encode() of the whole text: WikiText-2 test (1.2 MB) and
// generated text with cut points in awkward places, read with small and large token pieces.
TEST_P(StreamEquality, TokensEqualWholeTextEncoding) {
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(GetParam());
  if (!tok) GTEST_SKIP() << "tokenizer file missing";
  std::vector<std::string> texts = {tricky_text(300 << 10, 7), tricky_text(70 << 10, 8), "", "a", "  x  "};
  const std::string wiki = test::shared_file("data/wikitext2-test.txt");
  if (!wiki.empty()) texts.push_back(test::read_file(wiki));
  for (const std::string& text : texts) {
    const std::vector<int32_t> whole = tok->encode(text);
    for (size_t cap : {size_t{1} << 20, size_t{7}}) {
      if (cap == 7 && text.size() > (400 << 10)) continue;  // the small pieces once is enough for the long text
      uint64_t forced = 0;
      const std::vector<int32_t> streamed = stream_tokens(*tok, text, cap, &forced);
      EXPECT_EQ(forced, 0u) << tok->name();
      ASSERT_EQ(streamed.size(), whole.size()) << tok->name() << " text of " << text.size() << " bytes";
      EXPECT_TRUE(streamed == whole) << tok->name() << " text of " << text.size() << " bytes";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, StreamEquality, ::testing::Values(0, 1, 2),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(i.param == 0 ? "Byte" : i.param == 1 ? "World" : "Neox");
                         });

// GPT-NeoX can only cut where white space follows something else: 100 KB without white space is cut at a
// character boundary once the 64 KiB block is full, counted, and no byte is lost.
TEST(TokenStream, NeoxTextWithoutWhiteSpaceIsCutAndCounted) {
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(2);
  if (!tok) GTEST_SKIP() << "tokenizer file missing";
  std::string text;
  while (text.size() < (100 << 10)) text += "ab\xc3\xa9";
  uint64_t forced = 0;
  const std::vector<int32_t> streamed = stream_tokens(*tok, text, 4096, &forced);
  EXPECT_EQ(forced, 1u);
  EXPECT_EQ(tok->decode(streamed), text);
}

}  // namespace
}  // namespace rwkvl
