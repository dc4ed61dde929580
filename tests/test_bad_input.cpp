// Bad input never crashes: truncated, corrupt and wrong-version files, unknown tensors, hostile
// header sizes, out-of-range tokens each give a clear rwkvl::Error; a seeded mutation loop over
// small valid files (rwkv.cpp and native) finds no crash (ASan/UBSan build in CI).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/error.h"
#include "format/format.h"
#include "model/model.h"
#include "test_util.h"

namespace rwkvl {
namespace {

std::vector<uint8_t> bytes_of(const std::string& path) {
  std::string s = test::read_file(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}

// Loads a model from bytes; returns "" on success or the error message.
std::string try_load(std::vector<uint8_t> b, ErrorCode* code = nullptr) {
  try {
    auto m = Model::from_raw(read_checkpoint(MappedFile::from_bytes(std::move(b), "mem.bin")), {});
    // A file that loads must also run.
    Context ctx(m, 1);
    State st;
    st.reset(m->config());
    int32_t tok = 0;
    std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
    ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
    return "";
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
}

std::vector<uint8_t> tiny(const char* name) {
  const std::string p = test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + name + ".bin");
  return p.empty() ? std::vector<uint8_t>() : bytes_of(p);
}

// A small synthetic native model of each architecture, as bytes.
std::vector<uint8_t> small_native(int arch) {
  ModelConfig c;
  c.arch_major = arch;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_vocab = 40;
  c.head_size = 16;
  auto m = synth_model(c, arch == 7 ? "f16" : "f32", 7);
  const std::string p = test::temp_dir() + "/small" + std::to_string(arch) + ".rwkvl";
  m->save_native(p, arch == 5 ? "i8" : "keep");
  return bytes_of(p);
}

TEST(BadInput, RwkvCppTruncatedAtEveryRegion) {
  std::vector<uint8_t> b = tiny("5v2-730K-FP32");
  if (b.empty()) GTEST_SKIP();
  ASSERT_EQ(try_load(b), "");
  for (size_t cut : {size_t{0}, size_t{3}, size_t{20}, size_t{24}, size_t{30}, size_t{40}, size_t{100}, b.size() / 2,
                     b.size() - 1}) {
    std::vector<uint8_t> t(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(cut));
    ErrorCode code = ErrorCode::kOk;
    const std::string msg = try_load(t, &code);
    EXPECT_NE(msg, "") << "cut at " << cut;
    EXPECT_EQ(code, ErrorCode::kFormat) << msg;
  }
  // A cut in the middle of a tensor's data names the tensor and says the file is truncated.
  std::vector<uint8_t> t(b.begin(), b.end() - 100);
  EXPECT_NE(try_load(t).find("truncated"), std::string::npos) << try_load(t);
}

TEST(BadInput, RwkvCppWrongVersionMagicAndType) {
  std::vector<uint8_t> b = tiny("4v0-660K-FP32");
  if (b.empty()) GTEST_SKIP();
  ErrorCode code{};
  auto v = b;
  const int32_t ver = 102;
  std::memcpy(v.data() + 4, &ver, 4);
  EXPECT_NE(try_load(v, &code).find("version 102"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kUnsupported);
  auto mg = b;
  mg[0] ^= 0xff;
  EXPECT_NE(try_load(mg, &code).find("not a model file"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kFormat);
  auto dt = b;  // first tensor's data type -> Q4_0
  const int32_t q40 = 2;
  std::memcpy(dt.data() + 24 + 8, &q40, 4);
  EXPECT_NE(try_load(dt, &code).find("Q4_0"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kUnsupported);
  auto hdr = b;  // header disagrees with the tensors
  const int32_t layers = 5;
  std::memcpy(hdr.data() + 16, &layers, 4);
  EXPECT_NE(try_load(hdr).find("header says"), std::string::npos);
  auto dims = b;  // absurd dimension count
  const int32_t nd = 70000;
  std::memcpy(dims.data() + 24, &nd, 4);
  EXPECT_NE(try_load(dims).find("dimensions"), std::string::npos);
}

TEST(BadInput, UnknownAndMissingTensors) {
  const std::string p = test::shared_file("reference/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin");
  if (p.empty()) GTEST_SKIP();
  RawCheckpoint raw = read_checkpoint(p);
  std::vector<Tensor> extra = raw.tensors;
  Tensor t = Tensor::alloc("blocks.0.att.mystery", DType::kF32, {4});
  std::memset(t.mutable_data(), 0, t.nbytes);
  extra.push_back(t);
  const std::string dir = test::temp_dir();
  write_rwkvcpp(dir + "/extra.bin", extra, 256, 64, 12);
  ErrorCode code{};
  EXPECT_NE(try_load(bytes_of(dir + "/extra.bin"), &code).find("unknown tensor 'blocks.0.att.mystery'"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kFormat);
  std::vector<Tensor> missing;
  for (const Tensor& x : raw.tensors)
    if (x.name != "blocks.3.ffn.value.weight") missing.push_back(x);
  write_rwkvcpp(dir + "/missing.bin", missing, 256, 64, 12);
  EXPECT_NE(try_load(bytes_of(dir + "/missing.bin")).find("missing tensor 'blocks.3.ffn.value.weight'"), std::string::npos);
  std::vector<Tensor> wrong = raw.tensors;  // a matrix with the wrong shape
  for (Tensor& x : wrong)
    if (x.name == "blocks.1.att.key.weight") x.shape = {32, 128};
  write_rwkvcpp(dir + "/wrong.bin", wrong, 256, 64, 12);
  EXPECT_NE(try_load(bytes_of(dir + "/wrong.bin")).find("blocks.1.att.key.weight"), std::string::npos);
}

TEST(BadInput, NativeHostileHeaderAndVersion) {
  std::vector<uint8_t> b = small_native(7);
  ASSERT_EQ(try_load(b), "");
  ErrorCode code{};
  auto h = b;
  const uint64_t huge = 1ull << 62;
  std::memcpy(h.data() + 16, &huge, 8);
  EXPECT_NE(try_load(h, &code).find("does not fit"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kFormat);
  auto v = b;
  const uint32_t ver = 9;
  std::memcpy(v.data() + 8, &ver, 4);
  EXPECT_NE(try_load(v, &code).find("version 9"), std::string::npos);
  EXPECT_EQ(code, ErrorCode::kUnsupported);
  std::vector<uint8_t> t(b.begin(), b.end() - 64);
  EXPECT_NE(try_load(t, &code).find("outside the file"), std::string::npos) << try_load(t);
  auto j = b;  // break the JSON
  j[24] = 'x';  // the JSON header starts at byte 24
  EXPECT_NE(try_load(j, &code), "");
  EXPECT_EQ(code, ErrorCode::kFormat);
}

TEST(BadInput, TokenOutOfRangeLeavesStateUnchanged) {
  ModelConfig c;
  c.arch_major = 6;
  c.n_layer = 1;
  c.n_embd = 32;
  c.n_vocab = 50;
  c.head_size = 16;
  auto m = synth_model(c, "f32", 1);
  Context ctx(m, 1);
  State st;
  st.reset(m->config());
  const std::vector<float> before = st.data;
  for (int32_t bad : {-1, 50, 1 << 30}) {
    const int32_t toks[3] = {1, 2, bad};
    try {
      ctx.eval(st, toks, 3, 1, nullptr, nullptr);
      FAIL() << "token " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos);
    }
    EXPECT_EQ(st.data, before);
  }
}

// Seeded mutation loop: byte flips, overwrites with extreme values, truncations, insertions.
void mutate_and_load(const std::vector<uint8_t>& seed, size_t iters, uint64_t rng_seed, size_t focus) {
  std::mt19937_64 rng(rng_seed);
  size_t loaded = 0, rejected = 0;
  for (size_t it = 0; it < iters; ++it) {
    std::vector<uint8_t> b = seed;
    const int n_mut = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_mut && !b.empty(); ++k) {
      // Most mutations land in the first `focus` bytes, where the headers are.
      const size_t span = (rng() % 4 == 0) ? b.size() : std::min(focus, b.size());
      const size_t pos = rng() % span;
      switch (rng() % 6) {
        case 0: b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: b[pos] = static_cast<uint8_t>(rng()); break;
        case 2: {
          const uint32_t vals[] = {0u, 0xffffffffu, 0x7fffffffu, 0x80000000u, 1u << 20, 65536u};
          const uint32_t v = vals[rng() % 6];
          if (pos + 4 <= b.size()) std::memcpy(b.data() + pos, &v, 4);
          break;
        }
        case 3: b.resize(pos); break;
        case 4: b.insert(b.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng())); break;
        default: b.erase(b.begin() + static_cast<std::ptrdiff_t>(pos)); break;
      }
    }
    (try_load(b).empty() ? loaded : rejected)++;
  }
  std::printf("  %zu mutants: %zu loaded and ran, %zu rejected with an error\n", iters, loaded, rejected);
  EXPECT_GT(rejected, 0u);
}

TEST(Fuzz, RwkvCppMutations) {
  std::vector<uint8_t> b = tiny("6v0-1m-FP16");
  if (b.empty()) GTEST_SKIP();
  mutate_and_load(b, 300, 1, 4096);
}

TEST(Fuzz, NativeMutations) {
  for (int arch : {4, 5, 6, 7}) mutate_and_load(small_native(arch), 400, 100 + static_cast<uint64_t>(arch), 4096);
}

}  // namespace
}  // namespace rwkvl
