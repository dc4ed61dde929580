// GGUF (src/format/gguf.*, src/model/gguf_model.*): ggml's block formats dequantised against an independent
// implementation (tests/scripts/gguf_writer.py, numpy, run here), the Python-bytes-repr token strings both ways,
// quantisers that round-trip within their step, and a parser that refuses every truncation and overflow.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "format/format.h"
#include "format/gguf.h"
#include "model/gguf_model.h"
#include "test_util.h"

namespace rwkvl {
namespace {

std::string python_with_numpy() {
  for (const char* py : {"/usr/bin/python3", "python3"}) {
    std::string out;
    if (test::run_command(std::string(py) + " -c 'import numpy' 2>&1", &out) == 0) return py;
  }
  return "";
}

TEST(Gguf, EveryQuantisedTypeDequantisesAsTheIndependentImplementation) {
  const std::string py = python_with_numpy();
  if (py.empty()) GTEST_SKIP() << "no python3 with numpy";
  const std::string dir = test::temp_dir(), file = dir + "/quants.gguf", expected = dir + "/quants.f32";
  std::string out;
  ASSERT_EQ(test::run_command(py + " " + RWKVL_SOURCE_DIR + "/tests/scripts/gguf_writer.py --quant-fixture " + file + " " + expected, &out), 0) << out;
  const auto f = MappedFile::open(file);
  const GgufFile g = parse_gguf(*f);
  const std::vector<float> want = test::read_f32_file(expected);
  ASSERT_EQ(g.tensors.size(), 8u);
  size_t at = 0;
  for (const GgufTensorInfo& t : g.tensors) {
    ASSERT_EQ(t.ne.size(), 2u);
    const size_t n = static_cast<size_t>(t.ne[0] * t.ne[1]);
    std::vector<float> got(n);
    ggml_to_f32(t.type, f->data() + g.data_offset + t.offset, got.data(), n);
    float scale = 0;
    for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(want[at + i]));
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[at + i], 1e-6f * scale) << t.name << " value " << i;
    std::string upper = t.name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(ggml_type_name(t.type), upper);
    at += n;
  }
  EXPECT_EQ(at, want.size());
}

TEST(Gguf, WrittenQuantisationsRoundTripWithinTheirStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> x(4 * 64);
  for (float& v : x) v = nd(rng);
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1}) {
    const auto bytes = ggml_from_f32(static_cast<uint32_t>(t), x.data(), 4, 64);
    uint32_t be = 0, bb = 0;
    ASSERT_TRUE(ggml_block(static_cast<uint32_t>(t), &be, &bb));
    ASSERT_EQ(bytes.size(), x.size() / be * bb);
    std::vector<float> y(x.size());
    ggml_to_f32(static_cast<uint32_t>(t), bytes.data(), y.data(), y.size());
    for (size_t b = 0; b < x.size(); b += 32) {
      float lo = x[b], hi = x[b], amax = 0;
      for (size_t j = b; j < b + 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]), amax = std::max(amax, std::fabs(x[j]));
      const float step = t == GgmlType::kQ8_0 ? amax / 127 : t == GgmlType::kQ4_0 ? amax / 8 : t == GgmlType::kQ4_1 ? (hi - lo) / 15 : 0;
      // Q4_0 maps the largest magnitude to -8 d, so its opposite clamps at +7 d: one whole step.
      const float tol = step * (t == GgmlType::kQ4_0 ? 1.01f : 0.51f) + amax * (t == GgmlType::kBF16 ? 4e-3f : t == GgmlType::kF32 ? 0.f : 1e-3f);
      for (size_t j = b; j < b + 32; ++j) ASSERT_NEAR(y[j], x[j], tol) << ggml_type_name(static_cast<uint32_t>(t)) << " " << j;
    }
  }
}

TEST(Gguf, TokenStringsArePythonBytesReprs) {
  EXPECT_EQ(gguf_token_escape(std::string("\x00", 1)), "\\x00");
  EXPECT_EQ(gguf_token_escape("\n\n"), "\\n\\n");
  EXPECT_EQ(gguf_token_escape("\t\\"), "\\t\\\\");
  EXPECT_EQ(gguf_token_escape("it's"), "it's");        // repr picks double quotes: ' stays
  EXPECT_EQ(gguf_token_escape("\"'"), "\"\\'");        // both quotes: single quotes, ' escaped
  EXPECT_EQ(gguf_token_escape("\xe4\xb8\xad"), "\\xe4\\xb8\\xad");
  EXPECT_EQ(gguf_token_escape("\x7f"), "\\x7f");
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    std::string s(1 + rng() % 6, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    ASSERT_EQ(gguf_token_unescape(gguf_token_escape(s)), s);
  }
}

TEST(Gguf, EveryTruncationAndHostileCountIsAClearError) {
  // A small valid file: two metadata entries (one an array) and two tensors.
  std::vector<GgufKV> kv = {{"general.architecture", GgufType::kString, GgufType::kU8, "rwkv7"},
                            {"a.list", GgufType::kArray, GgufType::kI32, nlohmann::json::array({1, 2, 3})}};
  std::vector<float> v(64, 0.5f);
  std::vector<GgufOutTensor> ts = {{"t0", static_cast<uint32_t>(GgmlType::kF32), {64}, ggml_from_f32(0, v.data(), 1, 64)},
                                   {"t1", static_cast<uint32_t>(GgmlType::kQ8_0), {32, 2}, ggml_from_f32(8, v.data(), 2, 32)}};
  const std::string path = test::temp_dir() + "/small.gguf";
  write_gguf(path, kv, ts);
  const std::string bytes = test::read_file(path);
  size_t data_end = 0;
  {
    const GgufFile g = parse_gguf(*MappedFile::open(path));
    data_end = g.data_offset + g.tensors[1].offset + g.tensors[1].nbytes;  // the padding after it is optional
    ASSERT_EQ(g.tensors.size(), 2u);
    EXPECT_EQ(g.find("general.architecture")->value, "rwkv7");
    EXPECT_EQ(g.find("a.list")->value.size(), 3u);
    EXPECT_EQ(g.tensors[1].offset % 32, 0u);
  }
  for (size_t n = 4; n < data_end; ++n) {
    auto f = MappedFile::from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(n)), "cut.gguf");
    EXPECT_THROW(parse_gguf(*f), Error) << "cut at " << n;
  }
  // Flip every byte of the header and records in turn: an error or a valid parse, never a crash or a huge allocation.
  const size_t header_end = bytes.size() - 64 * 4 - 32;
  for (size_t i = 4; i < header_end; ++i) {
    std::vector<uint8_t> b(bytes.begin(), bytes.end());
    b[i] ^= 0xA5;
    auto f = MappedFile::from_bytes(std::move(b), "flip.gguf");
    try {
      parse_gguf(*f);
    } catch (const Error&) {
    }
  }
  // The model layer refuses a GGUF file of another architecture.
  auto f = MappedFile::from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()), "small.gguf");
  RawCheckpoint raw = read_gguf(f);
  raw.meta["kv"]["general.architecture"] = "llama";
  EXPECT_THROW(gguf_to_official(std::move(raw)), Error);
}

}  // namespace
}  // namespace rwkvl
