// PyTorch .pth reader/writer: round trips, the real reference checkpoint, and hostile input
// (truncation, corrupt zip structures, disallowed pickle opcodes and globals, out-of-range storages).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>

#include "core/error.h"
#include "format/format.h"
#include "format/pickle.h"
#include "format/zip.h"
#include "test_util.h"

namespace rwkvl {
namespace {

using Bytes = std::string;
using PickleFn = std::function<void(pickle::Writer&)>;

std::string tmp_path(const std::string& name) { return test::temp_dir() + "/" + name; }

std::shared_ptr<MappedFile> map_string(const Bytes& bytes, const std::string& name = "t.pth") {
  const std::string p = tmp_path(name);
  test::write_file(p, bytes);
  return MappedFile::open(p);
}

RawCheckpoint load(const Bytes& bytes) { return read_pth(map_string(bytes)); }

// Runs f, which must throw rwkvl::Error with `code` and a message containing `substr`.
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
  expect_error([&] { load(bytes); }, code, substr);
}

Bytes make_zip(const std::vector<std::pair<std::string, Bytes>>& entries, bool zip64 = false) {
  Bytes out;
  zip::Writer z([&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }, zip64);
  for (const auto& [name, data] : entries) z.add(name, data.data(), data.size());
  z.finish();
  return out;
}

// An archive with data.pkl, data/<key> storages and a version record.
Bytes make_pth(const Bytes& pkl, const std::vector<std::pair<std::string, Bytes>>& storages,
               const Bytes& version = "3\n", bool zip64 = false) {
  std::vector<std::pair<std::string, Bytes>> e{{"archive/data.pkl", pkl}};
  for (const auto& [k, v] : storages) e.emplace_back("archive/data/" + k, v);
  if (!version.empty()) e.emplace_back("archive/version", version);
  return make_zip(e, zip64);
}

// _rebuild_tensor_v2(persistent_load(('storage', torch.<type>, key, 'cpu', numel)), offset, size, stride, False,
// OrderedDict())
PickleFn tensor_fn(const std::string& type, const std::string& key, int64_t numel, int64_t offset,
                   std::vector<int64_t> size, std::vector<int64_t> stride) {
  return [=](pickle::Writer& w) {
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.op('(');
    w.op('(');
    w.str("storage");
    w.global("torch", type);
    w.str(key);
    w.str("cpu");
    w.integer(numel);
    w.op('t');
    w.op('Q');
    w.integer(offset);
    w.tuple(size);
    w.tuple(stride);
    w.op(0x89);
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
    w.op('t');
    w.op('R');
  };
}

// {key: value, ...} with protocol 2.
Bytes dict_pickle(const std::vector<std::pair<std::string, PickleFn>>& items) {
  pickle::Writer w;
  w.proto(2);
  w.op('}');
  w.op('(');
  for (const auto& [k, f] : items) {
    w.str(k);
    f(w);
  }
  w.op('u');
  w.op('.');
  return w.bytes;
}

Bytes f32_bytes(const std::vector<float>& v) { return Bytes(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A valid one-tensor checkpoint: "w" = f32 [2, 2] {1, 2, 3, 4}.
Bytes simple_pth() {
  return make_pth(dict_pickle({{"w", tensor_fn("FloatStorage", "0", 4, 0, {2, 2}, {2, 1})}}),
                  {{"0", f32_bytes({1, 2, 3, 4})}});
}

size_t find_bytes(const Bytes& hay, const Bytes& needle, size_t from = 0) {
  const size_t p = hay.find(needle, from);
  EXPECT_NE(p, std::string::npos);
  return p;
}
void put32(Bytes& b, size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[at + k] = static_cast<char>(v >> (8 * k));
}
void put64(Bytes& b, size_t at, uint64_t v) {
  for (int k = 0; k < 8; ++k) b[at + k] = static_cast<char>(v >> (8 * k));
}

Tensor make_tensor(const std::string& name, DType dt, std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = Tensor::alloc(name, dt, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  for (size_t i = 0; i < t.nbytes; ++i) p[i] = static_cast<uint8_t>((i * 131 + seed * 17 + (i >> 7)) & 0xff);
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

TEST(FormatPth, RoundTripEachDtype) {
  std::vector<Tensor> ts;
  ts.push_back(make_tensor("emb.weight", DType::kF32, {7, 5}, 1));
  ts.push_back(make_tensor("blocks.0.ln0.weight", DType::kF16, {9}, 2));
  ts.push_back(make_tensor("blocks.0.att.key.weight", DType::kBF16, {3, 4, 5}, 3));
  ts.push_back(make_tensor("scalar", DType::kF32, {}, 4));
  ts.push_back(make_tensor("empty", DType::kF16, {0, 3}, 5));
  ts.push_back(make_tensor("b\xc3\xa4r.\xe2\x82\xac", DType::kBF16, {70000}, 6));  // needs BININT / big storage
  const std::string p = tmp_path("rt.pth");
  write_pth(p, ts);
  RawCheckpoint ck = read_pth(MappedFile::open(p));
  EXPECT_EQ(ck.kind, FileKind::kPth);
  EXPECT_EQ(ck.meta["archive"], "archive");
  EXPECT_EQ(ck.meta["version"], 3);
  expect_same(ts, ck.tensors);
  for (const Tensor& t : ck.tensors) {
    if (!t.nbytes) continue;
    // Zero-copy: the data live in the mapping, 64-byte aligned as torch writes them.
    const auto* d = static_cast<const uint8_t*>(t.data);
    EXPECT_TRUE(d >= ck.file->data() && d < ck.file->data() + ck.file->size()) << t.name;
    EXPECT_EQ((d - ck.file->data()) % 64, 0) << t.name;
  }
}

TEST(FormatPth, WrittenArchiveLayoutMatchesTorch) {
  std::vector<Tensor> ts{make_tensor("a", DType::kF32, {3}, 1), make_tensor("b", DType::kBF16, {2, 2}, 2)};
  const std::string p = tmp_path("layout.pth");
  write_pth(p, ts);
  auto f = MappedFile::open(p);
  std::vector<zip::Entry> e = zip::read_entries(f->data(), f->size(), p);
  std::vector<std::string> names;
  for (const zip::Entry& x : e) {
    names.push_back(x.name);
    EXPECT_EQ(x.data_offset % 64, 0u) << x.name;
    EXPECT_EQ(x.crc32, zip::crc32(f->data() + x.data_offset, x.size)) << x.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"archive/data.pkl", "archive/byteorder", "archive/data/0",
                                             "archive/data/1", "archive/version"}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data() + e[1].data_offset), e[1].size), "little");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data() + e[4].data_offset), e[4].size), "3\n");
  // data.pkl is a protocol-2 pickle starting like torch's: PROTO 2, EMPTY_DICT.
  EXPECT_EQ(f->data()[e[0].data_offset], 0x80);
  EXPECT_EQ(f->data()[e[0].data_offset + 1], 2);
  EXPECT_EQ(f->data()[e[0].data_offset + 2], '}');
}

TEST(FormatPth, Crc32KnownValue) {
  EXPECT_EQ(zip::crc32("123456789", 9), 0xcbf43926u);
  EXPECT_EQ(zip::crc32("", 0), 0u);
  const std::string s(1000, 'x');
  EXPECT_EQ(zip::crc32(s.data() + 3, 997, zip::crc32(s.data(), 3)), zip::crc32(s.data(), 1000));
}

TEST(FormatPth, EmptyStateDict) {
  const std::string p = tmp_path("empty.pth");
  write_pth(p, {});
  RawCheckpoint ck = read_pth(MappedFile::open(p));
  EXPECT_TRUE(ck.tensors.empty());
}

TEST(FormatPth, ReadsZip64Archive) {
  const Bytes pkl = dict_pickle({{"w", tensor_fn("FloatStorage", "0", 4, 0, {4}, {1})}});
  RawCheckpoint ck = load(make_pth(pkl, {{"0", f32_bytes({1, 2, 3, 4})}}, "3\n", /*zip64=*/true));
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors[0].to_f32(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(FormatPth, ArchiveNameFromFirstEntryAndDotDataVersion) {
  const Bytes pkl = dict_pickle({{"w", tensor_fn("HalfStorage", "k", 2, 0, {2}, {1})}});
  Bytes z = make_zip({{"my_model/data.pkl", pkl},
                      {"my_model/data/k", Bytes("\x00\x3c\x00\x40", 4)},
                      {"my_model/.data/version", "3\n"}});
  RawCheckpoint ck = load(z);
  EXPECT_EQ(ck.meta["archive"], "my_model");
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors[0].to_f32(), (std::vector<float>{1, 2}));
}

TEST(FormatPth, NonContiguousViewsAreCopied) {
  // Storage 0..5; "t" is the transpose of the 2x3 matrix, "b" a stride-0 broadcast, "v" a contiguous
  // view at an offset (stays zero-copy), "p" a parameter wrapping a view.
  const Bytes st = f32_bytes({0, 1, 2, 3, 4, 5});
  const PickleFn param = [](pickle::Writer& w) {
    w.global("torch._utils", "_rebuild_parameter");
    w.op('(');
    tensor_fn("FloatStorage", "0", 6, 4, {2}, {1})(w);
    w.op(0x88);
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');
    w.op('t');
    w.op('R');
  };
  const Bytes pkl = dict_pickle({{"t", tensor_fn("FloatStorage", "0", 6, 0, {3, 2}, {1, 3})},
                                 {"b", tensor_fn("FloatStorage", "0", 6, 2, {2, 3}, {0, 0})},
                                 {"v", tensor_fn("FloatStorage", "0", 6, 2, {1, 3}, {3, 1})},
                                 {"p", param}});
  RawCheckpoint ck = load(make_pth(pkl, {{"0", st}}));
  ASSERT_EQ(ck.tensors.size(), 4u);
  EXPECT_EQ(ck.tensors[0].name, "t");
  EXPECT_EQ(ck.tensors[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ck.tensors[0].to_f32(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(ck.tensors[1].to_f32(), (std::vector<float>{2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(ck.tensors[2].to_f32(), (std::vector<float>{2, 3, 4}));
  EXPECT_EQ(ck.tensors[3].name, "p");
  EXPECT_EQ(ck.tensors[3].to_f32(), (std::vector<float>{4, 5}));
  // The copies are not in the mapping; the contiguous view is.
  auto in_file = [&](const Tensor& t) {
    const auto* d = static_cast<const uint8_t*>(t.data);
    return d >= ck.file->data() && d < ck.file->data() + ck.file->size();
  };
  EXPECT_FALSE(in_file(ck.tensors[0]));
  EXPECT_TRUE(in_file(ck.tensors[2]));
}

TEST(FormatPth, AcceptsTorchStyleOrderedDictWithMetadataAndProtocol4) {
  // OrderedDict() + SETITEMS + BUILD {'_metadata': OrderedDict(...)} as torch saves model.state_dict(),
  // written with protocol-4 opcodes: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, LONG1.
  pickle::Writer w;
  w.proto(4);
  w.op(0x95);
  for (int k = 0; k < 8; ++k) w.op(0);  // FRAME length 0 (a hint only)
  auto sstr = [&](const std::string& s) {
    w.op(0x8c);
    w.op(static_cast<uint8_t>(s.size()));
    w.bytes += s;
    w.op(0x94);
  };
  sstr("collections");
  sstr("OrderedDict");
  w.op(0x93);
  w.op(0x94);
  w.op(')');
  w.op('R');
  w.op(0x94);
  w.op('(');
  sstr("w");
  tensor_fn("BFloat16Storage", "0", 3, 0, {3}, {1})(w);
  w.op('u');
  // state: {'_metadata': OrderedDict({'': {'version': 1}})}
  w.op('}');
  sstr("_metadata");
  w.get(2);  // the OrderedDict global memoized above
  w.op(')');
  w.op('R');
  sstr("");
  w.op('}');
  sstr("version");
  w.op(0x8a);
  w.op(1);
  w.op(1);  // LONG1 1
  w.op('s');
  w.op('s');
  w.op('s');
  w.op('b');
  w.op('.');
  RawCheckpoint ck = load(make_pth(w.bytes, {{"0", Bytes("\x80\x3f\x00\x40\x40\x40", 6)}}));
  ASSERT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(ck.tensors[0].to_f32(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(ck.meta["ordered_dict"], true);
}

TEST(FormatPth, RepeatedKeyKeepsFirstPositionLastValue) {
  const Bytes pkl = dict_pickle({{"a", tensor_fn("FloatStorage", "0", 4, 0, {1}, {1})},
                                 {"b", tensor_fn("FloatStorage", "0", 4, 1, {1}, {1})},
                                 {"a", tensor_fn("FloatStorage", "0", 4, 3, {1}, {1})}});
  RawCheckpoint ck = load(make_pth(pkl, {{"0", f32_bytes({1, 2, 3, 4})}}));
  ASSERT_EQ(ck.tensors.size(), 2u);
  EXPECT_EQ(ck.tensors[0].name, "a");
  EXPECT_EQ(ck.tensors[0].to_f32(), std::vector<float>{4});
  EXPECT_EQ(ck.tensors[1].name, "b");
}

// ------------------------------------------------------------------ the real checkpoint

TEST(FormatPth, ReferenceModel) {
  const std::string path = test::shared_file("reference/models/rwkv5-world-l8-d256/model.pth");
  if (path.empty()) GTEST_SKIP() << "reference model not present";
  const auto t0 = std::chrono::steady_clock::now();
  RawCheckpoint ck = read_pth(MappedFile::open(path));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("read_pth(model.pth): %zu tensors in %.2f ms\n", ck.tensors.size(), ms);
  std::map<std::string, const Tensor*> by;
  int64_t params = 0;
  for (const Tensor& t : ck.tensors) {
    by[t.name] = &t;
    params += t.numel();
    EXPECT_EQ(t.dtype, DType::kBF16) << t.name;
    EXPECT_EQ(t.owner.get(), static_cast<const void*>(ck.file->data())) << t.name << " should be zero-copy";
  }
  EXPECT_EQ(ck.tensors.size(), by.size());
  EXPECT_EQ(ck.tensors.front().name, "emb.weight");  // file order
  ASSERT_TRUE(by.count("emb.weight"));
  EXPECT_EQ(by["emb.weight"]->shape, (std::vector<int64_t>{65536, 256}));
  ASSERT_TRUE(by.count("head.weight"));
  EXPECT_EQ(by["head.weight"]->shape, (std::vector<int64_t>{65536, 256}));
  ASSERT_TRUE(by.count("blocks.7.ffn.value.weight"));
  EXPECT_EQ(by["blocks.7.ffn.value.weight"]->shape, (std::vector<int64_t>{256, 896}));
  ASSERT_TRUE(by.count("blocks.7.ffn.key.weight"));
  EXPECT_EQ(by["blocks.7.ffn.key.weight"]->shape, (std::vector<int64_t>{896, 256}));
  ASSERT_TRUE(by.count("blocks.0.att.time_decay"));
  EXPECT_EQ(by["blocks.0.att.time_decay"]->shape, (std::vector<int64_t>{4, 64}));
  ASSERT_TRUE(by.count("blocks.0.ln0.weight"));
  EXPECT_EQ(by["blocks.0.ln0.weight"]->shape, (std::vector<int64_t>{256}));
  EXPECT_TRUE(by.count("ln_out.weight"));
  EXPECT_TRUE(by.count("blocks.3.att.ln_x.weight"));
  EXPECT_NEAR(static_cast<double>(params) / 1e6, 40.4, 0.05);
  // Plausible values: LayerNorm weights are finite and not all zero.
  std::vector<float> ln = by["blocks.0.ln1.weight"]->to_f32();
  double sum = 0;
  for (float v : ln) {
    ASSERT_TRUE(std::isfinite(v));
    sum += std::abs(v);
  }
  EXPECT_GT(sum, 1.0);
}

TEST(FormatPth, ReferenceModelRewriteRoundTrip) {
  const std::string path = test::shared_file("reference/models/rwkv5-world-l8-d256/model.pth");
  if (path.empty()) GTEST_SKIP() << "reference model not present";
  RawCheckpoint a = read_pth(MappedFile::open(path));
  const std::string out = tmp_path("model_rewritten.pth");
  const auto t0 = std::chrono::steady_clock::now();
  write_pth(out, a.tensors);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("write_pth(model.pth contents): %.1f ms\n", ms);
  RawCheckpoint b = read_pth(MappedFile::open(out));
  expect_same(a.tensors, b.tensors);
  std::filesystem::remove(out);
}

// ------------------------------------------------------------------ hostile zip structures

TEST(FormatPth, TruncatedFiles) {
  const Bytes good = simple_pth();
  ASSERT_EQ(load(good).tensors.size(), 1u);
  for (size_t cut :
       {size_t{0}, size_t{4}, size_t{21}, good.size() / 3, good.size() / 2, good.size() - 23, good.size() - 1}) {
    SCOPED_TRACE(cut);
    expect_load_error(good.substr(0, cut), ErrorCode::kFormat, "t.pth");
  }
  expect_load_error(good.substr(0, 10), ErrorCode::kFormat, "truncated");
  expect_load_error(good.substr(0, good.size() / 2), ErrorCode::kFormat, "end-of-central-directory");
  // Cutting away the front moves every offset.
  expect_load_error(good.substr(100), ErrorCode::kFormat, "t.pth");
}

TEST(FormatPth, NotAZip) {
  expect_load_error("hello world, this is not a zip archive at all", ErrorCode::kFormat, "not a zip archive");
  Bytes st(64, ' ');
  put64(st, 0, 2);
  st[8] = '{';
  st[9] = '}';
  expect_load_error(st, ErrorCode::kFormat, "end-of-central-directory");
}

TEST(FormatPth, CorruptSignatures) {
  const Bytes good = simple_pth();
  Bytes b = good;
  b[find_bytes(b, Bytes("PK\x01\x02", 4))] = 'X';  // first central header
  expect_load_error(b, ErrorCode::kFormat, "central directory entry 0");
  b = good;
  b[0] = 'X';  // first local header
  expect_load_error(b, ErrorCode::kFormat, "local header");
  b = good;
  b[find_bytes(b, Bytes("PK\x06\x06", 4))] = 'X';  // ZIP64 end record
  expect_load_error(b, ErrorCode::kFormat, "ZIP64");
}

TEST(FormatPth, CompressedOrEncryptedEntryIsUnsupported) {
  Bytes b = simple_pth();
  const size_t c = find_bytes(b, Bytes("PK\x01\x02", 4));
  b[c + 10] = 8;  // deflate
  expect_load_error(b, ErrorCode::kUnsupported, "compressed (method 8)");
  b = simple_pth();
  b[c + 8] = 1;  // encrypted flag
  expect_load_error(b, ErrorCode::kUnsupported, "encrypted");
}

TEST(FormatPth, HostileZipOffsetsAndCounts) {
  const Bytes good = simple_pth();
  const size_t e64 = find_bytes(good, Bytes("PK\x06\x06", 4));
  Bytes b = good;
  put64(b, e64 + 48, uint64_t{1} << 40);  // central directory offset
  expect_load_error(b, ErrorCode::kFormat, "central directory");
  b = good;
  put64(b, e64 + 24, uint64_t{1} << 60);  // entry counts
  put64(b, e64 + 32, uint64_t{1} << 60);
  expect_load_error(b, ErrorCode::kFormat, "claims");
  b = good;
  const size_t c = find_bytes(b, Bytes("PK\x01\x02", 4));
  put32(b, c + 42, 0x7ffffff0u);  // local header offset
  expect_load_error(b, ErrorCode::kFormat, "local header");
  b = good;
  put32(b, c + 20, 0x7ffffff0u);  // sizes of data.pkl
  put32(b, c + 24, 0x7ffffff0u);
  expect_load_error(b, ErrorCode::kFormat, "outside the archive");
  b = good;
  put32(b, c + 20, 5);  // compressed != uncompressed size
  expect_load_error(b, ErrorCode::kFormat, "compressed size");
  b = good;
  put32(b, c + 20, 0xffffffffu);  // ZIP64 marker without the extra field
  put32(b, c + 24, 0xffffffffu);
  expect_load_error(b, ErrorCode::kFormat, "ZIP64");
  b = good;
  const size_t eocd = find_bytes(b, Bytes("PK\x05\x06", 4));
  b[eocd + 4] = 1;  // disk number
  b[e64 + 16] = 1;
  expect_load_error(b, ErrorCode::kUnsupported, "multi-disk");
}

TEST(FormatPth, DuplicateEntries) {
  const Bytes pkl = dict_pickle({});
  expect_load_error(make_zip({{"archive/data.pkl", pkl}, {"archive/data.pkl", pkl}, {"archive/version", "3"}}),
                    ErrorCode::kFormat, "duplicate zip entry 'archive/data.pkl'");
}

TEST(FormatPth, MissingRecordsAndBadVersion) {
  const Bytes pkl = dict_pickle({});
  EXPECT_TRUE(load(make_pth(pkl, {})).tensors.empty());
  expect_load_error(make_pth(pkl, {}, ""), ErrorCode::kFormat, "no archive/version record");
  expect_load_error(make_pth(pkl, {}, "abc"), ErrorCode::kFormat, "version record is not a number");
  expect_load_error(make_pth(pkl, {}, "3.0\n"), ErrorCode::kFormat, "version record is not a number");
  expect_load_error(make_pth(pkl, {}, "99\n"), ErrorCode::kUnsupported, "format version 99 is not supported");
  expect_load_error(make_pth(pkl, {}, "0"), ErrorCode::kUnsupported, "format version 0");
  expect_load_error(make_zip({{"archive/version", "3\n"}}), ErrorCode::kFormat, "no archive/data.pkl record");
  expect_load_error(make_zip({{"data.pkl", pkl}, {"version", "3\n"}}), ErrorCode::kFormat,
                    "not inside an archive folder");
  expect_load_error(make_zip({}), ErrorCode::kFormat, "empty zip archive");
  expect_load_error(make_zip({{"archive/data.pkl", pkl}, {"archive/byteorder", "big"}, {"archive/version", "3"}}),
                    ErrorCode::kUnsupported, "big-endian");
  expect_load_error(make_zip({{"archive/data.pkl", pkl}, {"archive/byteorder", "middle"}, {"archive/version", "3"}}),
                    ErrorCode::kFormat, "byteorder");
  EXPECT_NO_THROW(
      load(make_zip({{"archive/data.pkl", pkl}, {"archive/byteorder", "little"}, {"archive/version", "3"}})));
}

// ------------------------------------------------------------------ hostile pickles

Bytes pkl_bytes(std::initializer_list<int> ops) {
  Bytes b;
  for (int o : ops) b.push_back(static_cast<char>(o));
  return b;
}

void expect_pickle_error(const Bytes& pkl, ErrorCode code, const std::string& substr) {
  SCOPED_TRACE(substr);
  expect_load_error(make_pth(pkl, {{"0", f32_bytes({1, 2, 3, 4})}}), code, substr);
}

TEST(FormatPth, PickleRejectsUnknownGlobals) {
  // GLOBAL 'os system' ; (  'echo pwned' ; tuple ; REDUCE ; STOP
  pickle::Writer w;
  w.proto(2);
  w.global("os", "system");
  w.op('(');
  w.str("echo pwned");
  w.op('t');
  w.op('R');
  w.op('.');
  expect_pickle_error(w.bytes, ErrorCode::kUnsupported, "global 'os.system' is not allowed");
  // Via STACK_GLOBAL.
  pickle::Writer s;
  s.proto(4);
  s.str("builtins");
  s.str("eval");
  s.op(0x93);
  s.op('.');
  expect_pickle_error(s.bytes, ErrorCode::kUnsupported, "global 'builtins.eval' is not allowed");
  // Lookalikes of allowed names.
  pickle::Writer l;
  l.proto(2);
  l.global("torch._utils", "_rebuild_tensor");
  l.op('.');
  expect_pickle_error(l.bytes, ErrorCode::kUnsupported, "torch._utils._rebuild_tensor'");
  pickle::Writer m;
  m.proto(2);
  m.global("torch", "storage._load_from_bytes");
  m.op('.');
  expect_pickle_error(m.bytes, ErrorCode::kUnsupported, "not allowed");
  pickle::Writer n;
  n.proto(2);
  n.global("torch.serialization", "FloatStorage");
  n.op('.');
  expect_pickle_error(n.bytes, ErrorCode::kUnsupported, "torch.serialization.FloatStorage");
  // A storage class is data, not a function.
  pickle::Writer c;
  c.proto(2);
  c.global("torch", "FloatStorage");
  c.op(')');
  c.op('R');
  c.op('.');
  expect_pickle_error(c.bytes, ErrorCode::kUnsupported, "calling torch.FloatStorage is not allowed");
}

TEST(FormatPth, PickleRejectsDisallowedOpcodes) {
  struct Case {
    Bytes pkl;
    const char* name;
  };
  const Case cases[] = {
      {pkl_bytes({0x80, 2, 'N', '0', '.'}), "POP"},
      {pkl_bytes({0x80, 2, 'N', '2', '.'}), "DUP"},
      {pkl_bytes({0x80, 2, '(', '1', 'N', '.'}), "POP_MARK"},
      {Bytes("\x80\x02(ios\nsystem\n.", 15), "INST"},
      {pkl_bytes({0x80, 2, '(', 'N', 'o', '.'}), "OBJ"},
      {pkl_bytes({0x80, 2, 'N', ')', 0x81, '.'}), "NEWOBJ"},
      {pkl_bytes({0x80, 2, 0x82, 1, '.'}), "EXT1"},
      {pkl_bytes({0x80, 2, 'B', 1, 0, 0, 0, 'x', '.'}), "BINBYTES"},
      {pkl_bytes({0x80, 2, 'C', 1, 'x', '.'}), "SHORT_BINBYTES"},
      {Bytes("\x80\x02S'x'\n.", 9), "STRING"},
      {Bytes("\x80\x02I12\n.", 7), "INT"},
      {Bytes("\x80\x02P1\n.", 6), "PERSID"},
      {pkl_bytes({0x80, 2, 0x8f, '.'}), "EMPTY_SET"},
      {pkl_bytes({0x80, 2, 'd', '.'}), "DICT"},
      {pkl_bytes({0x80, 2, 0x8b, 1, 0, 0, 0, 1, '.'}), "LONG4"},
      {pkl_bytes({0x80, 5, 0x97, '.'}), "NEXT_BUFFER"},
  };
  for (const Case& c : cases) expect_pickle_error(c.pkl, ErrorCode::kUnsupported, std::string("opcode ") + c.name);
  expect_pickle_error(pkl_bytes({0x80, 2, 0xff, '.'}), ErrorCode::kFormat, "invalid opcode byte");
  expect_pickle_error(pkl_bytes({0x80, 2, 0x00, '.'}), ErrorCode::kFormat, "invalid opcode byte");
  expect_pickle_error(pkl_bytes({0x80, 6, '}', '.'}), ErrorCode::kUnsupported, "protocol 6");
}

TEST(FormatPth, PickleStructuralErrors) {
  expect_pickle_error(pkl_bytes({0x80, 2, 's', '.'}), ErrorCode::kFormat,
                      "SETITEM (0x73) at offset 2: stack underflow");
  expect_pickle_error(pkl_bytes({0x80, 2, '}', '(', 's', '.'}), ErrorCode::kFormat, "stack underflow");  // below MARK
  expect_pickle_error(pkl_bytes({0x80, 2, 't', '.'}), ErrorCode::kFormat, "no MARK");
  expect_pickle_error(pkl_bytes({0x80, 2, 'h', 7, '.'}), ErrorCode::kFormat, "memo index 7 is not defined");
  expect_pickle_error(pkl_bytes({0x80, 2, 'j', 0xff, 0xff, 0xff, 0xff, '.'}), ErrorCode::kFormat,
                      "memo index 4294967295");
  expect_pickle_error(pkl_bytes({0x80, 2, 'q', 0, '.'}), ErrorCode::kFormat,
                      "BINPUT (0x71) at offset 2: stack underflow");
  expect_pickle_error(pkl_bytes({0x80, 2, '}'}), ErrorCode::kFormat, "without STOP");
  expect_pickle_error(pkl_bytes({0x80, 2, 'X', 0xff, 0xff, 0xff, 0x7f, 'a', '.'}), ErrorCode::kFormat, "truncated");
  expect_pickle_error(pkl_bytes({0x80, 2, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '.'}),
                      ErrorCode::kFormat, "truncated");
  expect_pickle_error(pkl_bytes({0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0x10, '}', '.'}), ErrorCode::kFormat, "frame");
  expect_pickle_error(pkl_bytes({0x80, 2, 'X', 2, 0, 0, 0, 0xc3, 0x28, '.'}), ErrorCode::kFormat, "UTF-8");
  expect_pickle_error(pkl_bytes({0x80, 2, '}', '}', '.'}), ErrorCode::kFormat, "2 objects on the stack");
  expect_pickle_error(pkl_bytes({0x80, 2, ']', 'N', 'N', 's', '.'}), ErrorCode::kFormat,
                      "target is a list, not a dict");
  expect_pickle_error(pkl_bytes({0x80, 2, '}', 'N', 'a', '.'}), ErrorCode::kFormat, "not a list");
  expect_pickle_error(pkl_bytes({0x80, 2, '}', '(', 'N', 'u', '.'}), ErrorCode::kFormat, "odd number");
  expect_pickle_error(pkl_bytes({0x80, 2, '}', ']', 'N', 's', '.'}), ErrorCode::kUnsupported, "dict key of type list");
  expect_pickle_error(pkl_bytes({0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, '.'}), ErrorCode::kUnsupported,
                      "too large");
  expect_pickle_error(Bytes("\x80\x02"
                            "ctorch\nFloat",
                            13),
                      ErrorCode::kFormat, "unterminated GLOBAL");
  expect_pickle_error(Bytes("\x80\x02"
                            "c",
                            3) +
                          Bytes(1000, 'a') + "\nb\n.",
                      ErrorCode::kFormat, "longer than");
  // BUILD on anything but an OrderedDict.
  expect_pickle_error(pkl_bytes({0x80, 2, '}', '}', 'b', '.'}), ErrorCode::kUnsupported, "BUILD is only supported");
  // REDUCE on a non-global.
  expect_pickle_error(pkl_bytes({0x80, 2, 'N', ')', 'R', '.'}), ErrorCode::kFormat, "not an allowed global");
}

TEST(FormatPth, PickleRejectsDeepNesting) {
  Bytes lists = pkl_bytes({0x80, 2});
  for (int i = 0; i < 70; ++i) lists.push_back(']');
  for (int i = 0; i < 69; ++i) lists.push_back('a');
  lists.push_back('.');
  expect_pickle_error(lists, ErrorCode::kFormat, "nested deeper than 64");
  Bytes marks = pkl_bytes({0x80, 2});
  for (int i = 0; i < 70; ++i) marks.push_back('(');
  marks.push_back('.');
  expect_pickle_error(marks, ErrorCode::kFormat, "MARKs nested deeper than 64");
  Bytes tuples = pkl_bytes({0x80, 2, 'N'});
  for (int i = 0; i < 70; ++i) tuples.push_back(static_cast<char>(0x85));
  tuples.push_back('.');
  expect_pickle_error(tuples, ErrorCode::kFormat, "nested deeper than 64");
  // A list that contains itself (via the memo) neither loops nor leaks.
  expect_pickle_error(pkl_bytes({0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'}), ErrorCode::kFormat, "not a dict");
}

TEST(FormatPth, PickleRejectsHugeCounts) {
  // More objects than any state dict needs, from a small pickle: refused before memory grows without bound.
  Bytes b = pkl_bytes({0x80, 2, ']'});
  for (size_t i = 0; i < pickle::kMaxObjects + 10; ++i) {
    b.push_back('N');
    b.push_back('a');
  }
  b.push_back('.');
  expect_pickle_error(b, ErrorCode::kFormat, "more than");
}

TEST(FormatPth, RebuildTensorArgumentChecks) {
  auto bad_call = [](std::function<void(pickle::Writer&)> args) {
    return dict_pickle({{"w", [args](pickle::Writer& w) {
                           w.global("torch._utils", "_rebuild_tensor_v2");
                           w.op('(');
                           args(w);
                           w.op('t');
                           w.op('R');
                         }}});
  };
  auto storage = [](pickle::Writer& w) {
    w.op('(');
    w.str("storage");
    w.global("torch", "FloatStorage");
    w.str("0");
    w.str("cpu");
    w.integer(4);
    w.op('t');
    w.op('Q');
  };
  expect_pickle_error(bad_call([&](pickle::Writer& w) {
                        storage(w);
                        w.integer(0);
                        w.tuple({4});
                      }),
                      ErrorCode::kFormat, "takes 6 or 7 arguments");
  expect_pickle_error(bad_call([&](pickle::Writer& w) {
                        storage(w);
                        w.integer(0);
                        w.tuple({2, 2});
                        w.tuple({1});
                        w.op(0x89);
                        w.op('}');
                      }),
                      ErrorCode::kFormat, "size has 2 dims but stride 1");
  expect_pickle_error(bad_call([&](pickle::Writer& w) {
                        storage(w);
                        w.integer(-1);
                        w.tuple({4});
                        w.tuple({1});
                        w.op(0x89);
                        w.op('}');
                      }),
                      ErrorCode::kFormat, "negative storage_offset");
  expect_pickle_error(bad_call([&](pickle::Writer& w) {
                        storage(w);
                        w.integer(0);
                        w.tuple({-4});
                        w.tuple({1});
                        w.op(0x89);
                        w.op('}');
                      }),
                      ErrorCode::kFormat, "negative size");
  expect_pickle_error(bad_call([&](pickle::Writer& w) {
                        w.str("not a storage");
                        w.integer(0);
                        w.tuple({4});
                        w.tuple({1});
                        w.op(0x89);
                        w.op('}');
                      }),
                      ErrorCode::kFormat, "storage is a str");
  // Persistent ids other than ('storage', torch.XStorage, key, location, numel).
  pickle::Writer p;
  p.proto(2);
  p.str("storage");
  p.op('Q');
  p.op('.');
  expect_pickle_error(p.bytes, ErrorCode::kFormat, "5-tuple");
  pickle::Writer q;
  q.proto(2);
  q.op('(');
  q.str("module");
  q.global("torch", "FloatStorage");
  q.str("0");
  q.str("cpu");
  q.integer(4);
  q.op('t');
  q.op('Q');
  q.op('.');
  expect_pickle_error(q.bytes, ErrorCode::kUnsupported, "not a 'storage'");
}

TEST(FormatPth, TopLevelMustBeDictOfTensors) {
  expect_pickle_error(pkl_bytes({0x80, 2, ']', '.'}), ErrorCode::kFormat, "holds a list, not a dict of tensors");
  pickle::Writer w;
  w.proto(2);
  w.op('}');
  w.str("epoch");
  w.integer(3);
  w.op('s');
  w.op('.');
  expect_pickle_error(w.bytes, ErrorCode::kFormat, "entry 'epoch' has type int, not tensor");
  pickle::Writer n;
  n.proto(2);
  n.op('}');
  n.str("model");
  n.op('}');
  n.op('s');
  n.op('.');
  expect_pickle_error(n.bytes, ErrorCode::kFormat, "only plain state dicts");
  pickle::Writer k;
  k.proto(2);
  k.op('}');
  k.integer(1);
  tensor_fn("FloatStorage", "0", 4, 0, {4}, {1})(k);
  k.op('s');
  k.op('.');
  expect_pickle_error(k.bytes, ErrorCode::kFormat, "key of type int");
}

// ------------------------------------------------------------------ storages

TEST(FormatPth, StorageOutOfRange) {
  const Bytes st = f32_bytes({1, 2, 3, 4});
  auto one = [&](const PickleFn& f) { return make_pth(dict_pickle({{"w", f}}), {{"0", st}}); };
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 10, {1}, {1})), ErrorCode::kFormat,
                    "reaches past the end of storage '0'");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 1, {4}, {1})), ErrorCode::kFormat, "reaches past the end");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 0, {4}, {2})), ErrorCode::kFormat, "reaches past the end");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 0, {2, 2}, {int64_t{1} << 62, 1})), ErrorCode::kFormat,
                    "reaches past the end");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, int64_t{1} << 62, {2}, {int64_t{1} << 62})),
                    ErrorCode::kFormat, "reaches past the end");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 9, {0}, {1})), ErrorCode::kFormat,
                    "storage_offset 9 is past");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 0, {int64_t{1} << 40, int64_t{1} << 40}, {1, 1})),
                    ErrorCode::kFormat, "shape too large");
  expect_load_error(one(tensor_fn("FloatStorage", "7", 4, 0, {4}, {1})), ErrorCode::kFormat,
                    "no archive/data/7 record");
  expect_load_error(one(tensor_fn("FloatStorage", "0", 5, 0, {4}, {1})), ErrorCode::kFormat,
                    "declares 5 elements of f32 but its record holds 16 bytes");
  expect_load_error(one(tensor_fn("FloatStorage", "0", int64_t{1} << 62, 0, {4}, {1})), ErrorCode::kFormat, "declares");
  expect_load_error(one(tensor_fn("HalfStorage", "0", 4, 0, {4}, {1})), ErrorCode::kFormat,
                    "declares 4 elements of f16");
  // The same storage used with two different types.
  expect_load_error(make_pth(dict_pickle({{"a", tensor_fn("FloatStorage", "0", 4, 0, {4}, {1})},
                                          {"b", tensor_fn("HalfStorage", "0", 8, 0, {8}, {1})}}),
                             {{"0", st}}),
                    ErrorCode::kFormat, "different types");
  // Broadcast views may not blow a tiny file up into gigabytes.
  expect_load_error(one(tensor_fn("FloatStorage", "0", 4, 0, {int64_t{1} << 20, int64_t{1} << 20}, {0, 0})),
                    ErrorCode::kUnsupported, "non-contiguous");
}

TEST(FormatPth, UnsupportedStorageDtypes) {
  for (const char* type : {"DoubleStorage", "LongStorage", "IntStorage", "ByteStorage", "BoolStorage"}) {
    expect_load_error(make_pth(dict_pickle({{"w", tensor_fn(type, "0", 2, 0, {2}, {1})}}), {{"0", Bytes(16, '\0')}}),
                      ErrorCode::kUnsupported, std::string("stored as torch.") + type);
  }
}

// ------------------------------------------------------------------ writer errors

TEST(FormatPth, WriterRejectsBadInputWithoutLeavingAFile) {
  const std::string p = tmp_path("bad.pth");
  std::filesystem::remove(p);
  expect_error([&] { write_pth(p, {make_tensor("q", DType::kI8, {4}, 1)}); }, ErrorCode::kUnsupported, "dtype i8");
  expect_error(
      [&] {
        write_pth(p, {make_tensor("a", DType::kF32, {2}, 1), make_tensor("a", DType::kF32, {2}, 2)});
      },
      ErrorCode::kInvalidArgument, "duplicate tensor name 'a'");
  Tensor bad = make_tensor("a", DType::kF32, {4}, 1);
  bad.shape = {5};
  expect_error([&] { write_pth(p, {bad}); }, ErrorCode::kInvalidArgument, "shape [5] but 16 bytes");
  expect_error([&] { write_pth(p, {make_tensor("\xff\xfe", DType::kF32, {1}, 1)}); }, ErrorCode::kInvalidArgument,
               "UTF-8");
  EXPECT_FALSE(std::filesystem::exists(p));
  // An existing file survives a failed write untouched.
  write_pth(p, {make_tensor("ok", DType::kF32, {2}, 1)});
  const std::string before = test::read_file(p);
  expect_error([&] { write_pth(p, {make_tensor("q", DType::kQ5_1, {32}, 1)}); }, ErrorCode::kUnsupported, "q5_1");
  EXPECT_EQ(test::read_file(p), before);
  for (const auto& e : std::filesystem::directory_iterator(test::temp_dir()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace rwkvl
