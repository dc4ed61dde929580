// safetensors reader/writer: round trips with metadata, alignment, and hostile input (truncation,
// hostile header sizes, corrupt JSON, unknown dtypes, bad offsets, overlaps).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "format/format.h"
#include "test_util.h"

namespace rwkvl {
namespace {

using Bytes = std::string;

std::string tmp_path(const std::string& name) { return test::temp_dir() + "/" + name; }

RawCheckpoint load(const Bytes& bytes) {
  const std::string p = tmp_path("t.safetensors");
  test::write_file(p, bytes);
  return read_safetensors(MappedFile::open(p));
}

void expect_error(const std::function<void()>& f, ErrorCode code, const std::string& substr) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << substr << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(substr), std::string::npos) << "message: " << e.what();
  }
}
void expect_load_error(const Bytes& bytes, ErrorCode code, const std::string& substr) {
  SCOPED_TRACE(substr);
  expect_error([&] { load(bytes); }, code, substr);
}

Bytes u64le(uint64_t v) {
  Bytes b(8, '\0');
  for (int k = 0; k < 8; ++k) b[k] = static_cast<char>(v >> (8 * k));
  return b;
}

// A file from header text and data bytes.
Bytes st_file(const std::string& header, const Bytes& data) { return u64le(header.size()) + header + data; }

Bytes f32_bytes(const std::vector<float>& v) { return Bytes(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

Tensor make_tensor(const std::string& name, DType dt, std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = Tensor::alloc(name, dt, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  for (size_t i = 0; i < t.nbytes; ++i) p[i] = static_cast<uint8_t>((i * 151 + seed * 29 + (i >> 9)) & 0xff);
  return t;
}

void expect_same(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].name);
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].dtype, b[i].dtype);
    EXPECT_EQ(a[i].shape, b[i].shape);
    ASSERT_EQ(a[i].nbytes, b[i].nbytes);
    if (a[i].nbytes) {
      EXPECT_EQ(std::memcmp(a[i].data, b[i].data, a[i].nbytes), 0);
    }
  }
}

// ------------------------------------------------------------------ round trips

TEST(FormatSafetensors, RoundTripEachDtypeWithMetadata) {
  std::vector<Tensor> ts;
  ts.push_back(make_tensor("z.f32", DType::kF32, {3, 5}, 1));  // names out of alphabetical order on purpose
  ts.push_back(make_tensor("a.f16", DType::kF16, {7}, 2));
  ts.push_back(make_tensor("m.bf16", DType::kBF16, {2, 3, 4}, 3));
  ts.push_back(make_tensor("q.i8", DType::kI8, {5, 3}, 4));
  ts.push_back(make_tensor("i.i32", DType::kI32, {6}, 5));
  ts.push_back(make_tensor("u.u8", DType::kU8, {3}, 6));
  ts.push_back(make_tensor("scalar", DType::kF32, {}, 7));
  ts.push_back(make_tensor("empty", DType::kF16, {0, 4}, 8));
  ts.push_back(make_tensor("b\xc3\xa4r \"quoted\"", DType::kF32, {2}, 9));
  const std::string p = tmp_path("rt.safetensors");
  write_safetensors(p, ts, {{"format", "pt"}, {"note", "line1\nline2 \xe2\x82\xac"}});
  RawCheckpoint ck = read_safetensors(MappedFile::open(p));
  EXPECT_EQ(ck.kind, FileKind::kSafetensors);
  expect_same(ts, ck.tensors);  // file order is the given order
  EXPECT_EQ(ck.meta["metadata"], (nlohmann::json{{"format", "pt"}, {"note", "line1\nline2 \xe2\x82\xac"}}));
  // Header padded with spaces so the data start 8-byte aligned; non-empty tensors are zero-copy.
  const std::string raw = test::read_file(p);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8], '{');
  EXPECT_EQ(raw.size(), 8 + n + 15 * 4 + 7 * 2 + 24 * 2 + 15 + 6 * 4 + 3 + 4 + 2 * 4);
  for (size_t i = 0; i < ck.tensors.size(); ++i) {
    const Tensor& t = ck.tensors[i];
    const auto* d = static_cast<const uint8_t*>(t.data);
    // Every tensor is aligned for its type: the i32 tensor after 15 bytes of i8 is a copy.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % dtype_info(t.dtype).block_bytes, 0u) << t.name;
    const bool in_file = d >= ck.file->data() && d < ck.file->data() + ck.file->size();
    if (i < 4) {
      EXPECT_TRUE(in_file) << t.name;  // f32, f16, bf16, i8 at aligned offsets: zero-copy
    } else if (i == 4) {
      EXPECT_FALSE(in_file) << t.name;
    }
  }
}

TEST(FormatSafetensors, NoMetadataAndNoTensors) {
  const std::string p = tmp_path("empty.safetensors");
  write_safetensors(p, {});
  RawCheckpoint ck = read_safetensors(MappedFile::open(p));
  EXPECT_TRUE(ck.tensors.empty());
  EXPECT_TRUE(ck.meta["metadata"].is_object());
  EXPECT_TRUE(ck.meta["metadata"].empty());
  EXPECT_TRUE(load(st_file("{}", "")).tensors.empty());
}

TEST(FormatSafetensors, ReadsHandWrittenFile) {
  // Offsets in the header need not follow header order; tensors come back in data order.
  const std::string h = R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"__metadata__":{"k":"v"},)"
                        R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})";
  RawCheckpoint ck = load(st_file(h + std::string((8 - h.size() % 8) % 8, ' '), f32_bytes({1, 2, 3, 4})));
  ASSERT_EQ(ck.tensors.size(), 2u);
  EXPECT_EQ(ck.tensors[0].name, "a");
  EXPECT_EQ(ck.tensors[0].shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(ck.tensors[0].to_f32(), (std::vector<float>{1, 2}));
  EXPECT_EQ(ck.tensors[1].to_f32(), (std::vector<float>{3, 4}));
  EXPECT_EQ(ck.meta["metadata"]["k"], "v");
}

TEST(FormatSafetensors, MisalignedDataAreCopied) {
  // A 3-byte U8 tensor first puts the F32 tensor at an odd address; the reader copies it.
  const std::string h = R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                        R"("f":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  const Bytes data = Bytes("\x01\x02\x03", 3) + f32_bytes({1.5f, -2.0f});
  for (size_t pad = 0; pad < 8; ++pad) {
    RawCheckpoint ck = load(st_file(h + std::string(pad, ' '), data));
    ASSERT_EQ(ck.tensors.size(), 2u);
    EXPECT_EQ(ck.tensors[1].to_f32(), (std::vector<float>{1.5f, -2.0f}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ck.tensors[1].data) % 4, 0u);
  }
}

TEST(FormatSafetensors, ReferenceModelAsSafetensors) {
  const std::string path = test::shared_file("reference/models/rwkv5-world-l8-d256/model.pth");
  if (path.empty()) GTEST_SKIP() << "reference model not present";
  RawCheckpoint a = read_pth(MappedFile::open(path));
  const std::string out = tmp_path("model.safetensors");
  write_safetensors(out, a.tensors, {{"format", "pt"}});
  const auto t0 = std::chrono::steady_clock::now();
  RawCheckpoint b = read_safetensors(MappedFile::open(out));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("read_safetensors(model.safetensors): %zu tensors in %.2f ms\n", b.tensors.size(), ms);
  expect_same(a.tensors, b.tensors);
  std::filesystem::remove(out);
}

// ------------------------------------------------------------------ hostile input

const std::string kGoodHeader = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

Bytes good_file() {
  std::string h = kGoodHeader;
  h.append((8 - h.size() % 8) % 8, ' ');
  return st_file(h, f32_bytes({1, 2, 3, 4}));
}

TEST(FormatSafetensors, TruncatedFiles) {
  const Bytes good = good_file();
  ASSERT_EQ(load(good).tensors.size(), 1u);
  expect_load_error("", ErrorCode::kFormat, "truncated safetensors file (0 bytes");
  expect_load_error(good.substr(0, 7), ErrorCode::kFormat, "truncated");
  expect_load_error(good.substr(0, 8), ErrorCode::kFormat, "exceeds the file");
  expect_load_error(good.substr(0, 40), ErrorCode::kFormat, "exceeds the file");
  expect_load_error(good.substr(0, good.size() - 16), ErrorCode::kFormat, "outside the data area");
  expect_load_error(good.substr(0, good.size() - 1), ErrorCode::kFormat, "outside the data area");
}

TEST(FormatSafetensors, HostileHeaderSizes) {
  const Bytes good = good_file();
  for (uint64_t n : {~uint64_t{0}, uint64_t{1} << 63, (uint64_t{100} << 20) + 1, uint64_t{1} << 40}) {
    Bytes b = good;
    b.replace(0, 8, u64le(n));
    expect_load_error(b, ErrorCode::kFormat, "implausibly large");
  }
  Bytes b = good;
  b.replace(0, 8, u64le(good.size()));  // a few bytes more than the file
  expect_load_error(b, ErrorCode::kFormat, "exceeds the file");
  b.replace(0, 8, u64le(0));
  expect_load_error(b, ErrorCode::kFormat, "not a JSON object");
}

TEST(FormatSafetensors, CorruptHeaders) {
  const Bytes data = f32_bytes({1, 2, 3, 4});
  expect_load_error(st_file("PK\x03\x04 not json", data), ErrorCode::kFormat, "not a JSON object");
  expect_load_error(st_file("[1, 2, 3]", data), ErrorCode::kFormat, "not a JSON object");
  expect_load_error(st_file("{\"w\": {\"dtype\": \"F32\", ", data), ErrorCode::kFormat, "invalid safetensors JSON");
  expect_load_error(st_file("{} trailing", data), ErrorCode::kFormat, "invalid safetensors JSON");
  expect_load_error(st_file("{\"\xff\xfe\": 1}", data), ErrorCode::kFormat, "invalid safetensors JSON");
  std::string deep = "{\"a\":";
  for (int i = 0; i < 100000; ++i) deep += '[';
  expect_load_error(st_file(deep, data), ErrorCode::kFormat, "nests deeper than 64");
  // Brackets inside strings do not count as nesting.
  std::string brackets =
      "{\"__metadata__\":{\"x\":\"" + std::string(200, '[') + "\\\"" + std::string(200, '{') + "\"}}";
  EXPECT_EQ(load(st_file(brackets, "")).meta["metadata"]["x"], std::string(200, '[') + "\"" + std::string(200, '{'));
  expect_load_error(st_file(R"({"w": 5})", data), ErrorCode::kFormat, "'w' is not an object");
  expect_load_error(st_file(R"({"w": {"shape": [4], "data_offsets": [0, 16]}})", data), ErrorCode::kFormat,
                    "'w' has no dtype string");
  expect_load_error(st_file(R"({"w": {"dtype": "F32", "data_offsets": [0, 16]}})", data), ErrorCode::kFormat,
                    "'w' has no shape array");
  expect_load_error(st_file(R"({"w": {"dtype": "F32", "shape": [4]}})", data), ErrorCode::kFormat, "data_offsets");
  expect_load_error(st_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}})", data), ErrorCode::kFormat,
                    "data_offsets");
  expect_load_error(st_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.0]}})", data),
                    ErrorCode::kFormat, "non-integer data_offsets");
  expect_load_error(st_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 15]}})", data),
                    ErrorCode::kFormat, "non-integer data_offsets");
  expect_load_error(st_file(R"({"": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", data),
                    ErrorCode::kFormat, "empty name");
  expect_load_error(st_file(R"({"__metadata__": [1]})", data), ErrorCode::kFormat, "__metadata__ is not an object");
  expect_load_error(st_file(R"({"__metadata__": {"a": 1}})", data), ErrorCode::kFormat, "metadata value of 'a'");
}

TEST(FormatSafetensors, UnknownDtypes) {
  const Bytes data = f32_bytes({1, 2, 3, 4});
  for (const char* dt : {"F64", "I64", "BOOL", "F8_E4M3", "f32", "Q4_0", ""}) {
    const std::string h = std::string(R"({"w": {"dtype": ")") + dt + R"(", "shape": [2], "data_offsets": [0, 16]}})";
    expect_load_error(st_file(h, data), ErrorCode::kUnsupported, std::string("unsupported dtype '") + dt + "'");
  }
  expect_load_error(st_file(R"({"w": {"dtype": 3, "shape": [4], "data_offsets": [0, 16]}})", data), ErrorCode::kFormat,
                    "no dtype string");
}

TEST(FormatSafetensors, BadShapesAndOffsets) {
  const Bytes data = f32_bytes({1, 2, 3, 4});
  auto one = [](const std::string& shape, const std::string& offs, const std::string& dt = "F32") {
    return R"({"w": {"dtype": ")" + dt + R"(", "shape": )" + shape + R"(, "data_offsets": )" + offs + "}}";
  };
  expect_load_error(st_file(one("[-4]", "[0, 16]"), data), ErrorCode::kFormat, "not a non-negative integer");
  expect_load_error(st_file(one("[2.5]", "[0, 16]"), data), ErrorCode::kFormat, "not a non-negative integer");
  expect_load_error(st_file(one("[\"4\"]", "[0, 16]"), data), ErrorCode::kFormat, "not a non-negative integer");
  expect_load_error(st_file(one("[18446744073709551615]", "[0, 16]"), data), ErrorCode::kFormat,
                    "not a non-negative integer");
  expect_load_error(st_file(one("[1099511627776, 1099511627776]", "[0, 16]"), data), ErrorCode::kFormat,
                    "shape too large");
  expect_load_error(st_file(one("[4]", "[0, 12]"), data), ErrorCode::kFormat,
                    "needs 16 bytes but its data_offsets span 12");
  expect_load_error(st_file(one("[3]", "[0, 16]"), data), ErrorCode::kFormat, "needs 12 bytes");
  expect_load_error(st_file(one("[4]", "[16, 0]"), data), ErrorCode::kFormat, "outside the data area");
  expect_load_error(st_file(one("[4]", "[8, 24]"), data), ErrorCode::kFormat, "outside the data area");
  expect_load_error(st_file(one("[4]", "[18446744073709551600, 18446744073709551615]"), data), ErrorCode::kFormat,
                    "outside the data area");
  expect_load_error(st_file(one("[4]", "[0, 16]", "F16"), data), ErrorCode::kFormat, "needs 8 bytes");
  // Overlapping tensors.
  const std::string ov = R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},)"
                         R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})";
  expect_load_error(st_file(ov, data), ErrorCode::kFormat, "'a' and 'b' overlap");
  const std::string same = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                           R"( "b": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}})";
  expect_load_error(st_file(same, data), ErrorCode::kFormat, "overlap");
  // Empty tensors take no bytes and may sit anywhere in range.
  const std::string empty = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                            R"( "e": {"dtype": "F32", "shape": [0, 7], "data_offsets": [4, 4]}})";
  EXPECT_EQ(load(st_file(empty, data)).tensors.size(), 2u);
}

// ------------------------------------------------------------------ writer errors

TEST(FormatSafetensors, WriterRejectsBadInputWithoutLeavingAFile) {
  const std::string p = tmp_path("bad.safetensors");
  std::filesystem::remove(p);
  expect_error([&] { write_safetensors(p, {make_tensor("q", DType::kQ5_1, {32}, 1)}); }, ErrorCode::kUnsupported,
               "dtype q5_1");
  expect_error(
      [&] {
        write_safetensors(p, {make_tensor("a", DType::kF32, {1}, 1), make_tensor("a", DType::kF32, {1}, 2)});
      },
      ErrorCode::kInvalidArgument, "duplicate tensor name 'a'");
  expect_error([&] { write_safetensors(p, {make_tensor("__metadata__", DType::kF32, {1}, 1)}); },
               ErrorCode::kInvalidArgument, "invalid tensor name");
  expect_error([&] { write_safetensors(p, {make_tensor("", DType::kF32, {1}, 1)}); }, ErrorCode::kInvalidArgument,
               "invalid tensor name");
  expect_error([&] { write_safetensors(p, {make_tensor("\xff", DType::kF32, {1}, 1)}); }, ErrorCode::kInvalidArgument,
               "UTF-8");
  expect_error(
      [&] {
        write_safetensors(p, {}, {{"k", "a"}, {"k", "b"}});
      },
      ErrorCode::kInvalidArgument, "duplicate metadata key 'k'");
  Tensor bad = make_tensor("a", DType::kF32, {4}, 1);
  bad.nbytes = 12;
  expect_error([&] { write_safetensors(p, {bad}); }, ErrorCode::kInvalidArgument, "shape [4] but 12 bytes");
  EXPECT_FALSE(std::filesystem::exists(p));
  write_safetensors(p, {make_tensor("ok", DType::kF32, {2}, 1)});
  const std::string before = test::read_file(p);
  expect_error([&] { write_safetensors(p, {make_tensor("q", DType::kQ5_1, {32}, 1)}); }, ErrorCode::kUnsupported,
               "q5_1");
  EXPECT_EQ(test::read_file(p), before);
}

}  // namespace
}  // namespace rwkvl
