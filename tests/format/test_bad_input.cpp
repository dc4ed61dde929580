// Bad input never crashes: truncated, corrupt and wrong-version files, unknown tensors, hostile
// header sizes, out-of-range tokens each give a clear rwkvl::Error; a seeded mutation loop over
// small valid files (rwkv.cpp and native) finds no crash (ASan/UBSan build in CI).
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "core/error.h"
#include "format/format.h"
#include "model/model.h"
#include "test_util.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

std::vector<uint8_t> bytes_of(const std::string& path) {
  std::string s = test::read_file(path);
  return std::vector<uint8_t>(s.begin(), s.end());
}

// Loads a model from bytes; returns "" on success or the error message. *nonfinite: it loaded and ran but gave
// NaN / infinite logits without an error (what a corrupt weight did before the runtime checked activations).
std::string try_load(std::vector<uint8_t> b, ErrorCode* code = nullptr, bool* nonfinite = nullptr) {
  try {
    auto m = Model::from_raw(read_checkpoint(MappedFile::from_bytes(std::move(b), "mem.bin")), {});
    // A file that loads must also run.
    Session ctx(m, 1);
    State st;
    st.reset(m->config());
    int32_t tok = 0;
    std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
    ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
    if (nonfinite)
      for (float x : logits) *nonfinite = *nonfinite || !std::isfinite(x);
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
  EXPECT_NE(try_load(h, &code).find("exceeds the limit"), std::string::npos) << try_load(h);
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

// The native file `b` with its header JSON edited by `edit` (the data section is kept, realigned).
std::vector<uint8_t> with_header(const std::vector<uint8_t>& b, const std::function<void(nlohmann::json&)>& edit) {
  uint64_t hlen;
  std::memcpy(&hlen, b.data() + 16, 8);
  nlohmann::json j = nlohmann::json::parse(b.begin() + 24, b.begin() + 24 + static_cast<std::ptrdiff_t>(hlen));
  edit(j);
  const std::string h = j.dump();
  auto align64 = [](uint64_t x) { return (x + 63) / 64 * 64; };
  std::string out(reinterpret_cast<const char*>(b.data()), 24);
  const uint64_t nh = h.size();
  std::memcpy(&out[16], &nh, 8);
  out += h;
  out.resize(align64(out.size()), '\0');
  out.append(reinterpret_cast<const char*>(b.data()) + align64(24 + hlen), b.size() - align64(24 + hlen));
  return std::vector<uint8_t>(out.begin(), out.end());
}

// Masked (unstructured sparse) tensors take their value slots from their byte size: a size that fits no layout, or a
// masked tensor that is not 2-D, is refused by name; a size that fits (the f16 bytes of a 32 x 32 matrix read as
// f16_masked: 30 slots per row, masks from the values' bits) loads and runs: its masks are garbage, but the kernels
// never read outside a row (ASan in CI).
TEST(BadInput, NativeMaskedTensorsOfWrongSize) {
  const std::vector<uint8_t> b = small_native(7);
  ASSERT_EQ(try_load(b), "");
  const std::string victim = "blocks.0.att.key.weight";
  auto retype = [&](uint32_t dtype, bool three_d) {
    return with_header(b, [&](nlohmann::json& j) {
      bool found = false;
      for (auto& e : j["tensors"])
        if (e["name"] == victim) {
          e["dtype"] = dtype;
          if (three_d) e["shape"] = {32, 32, 1};
          found = true;
        }
      ASSERT_TRUE(found);
    });
  };
  ErrorCode code{};
  const std::string q4 = try_load(retype(static_cast<uint32_t>(DType::kQ4M), false), &code);
  EXPECT_NE(q4.find("no mask-and-values layout"), std::string::npos) << q4;
  EXPECT_NE(q4.find(victim), std::string::npos) << q4;
  EXPECT_EQ(code, ErrorCode::kFormat);
  const std::string d3 = try_load(retype(static_cast<uint32_t>(DType::kF16M), true), &code);
  EXPECT_NE(d3.find("a masked matrix has 2"), std::string::npos) << d3;
  EXPECT_EQ(try_load(retype(static_cast<uint32_t>(DType::kF16M), false)), "");
}

long max_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST(BadInput, NativeHeaderDepthBombIsRefusedQuickly) {
  const uint64_t n = 100000;  // 100k nested '[' (the review's 64 MB version took 2.5 GB)
  std::vector<uint8_t> b((24 + n + 63) / 64 * 64, static_cast<uint8_t>('['));
  std::memcpy(b.data(), "RWKVLITE", 8);
  const uint32_t ver = 1, align = 64;
  std::memcpy(b.data() + 8, &ver, 4);
  std::memcpy(b.data() + 12, &align, 4);
  std::memcpy(b.data() + 16, &n, 8);
  std::fill(b.begin() + 24 + static_cast<std::ptrdiff_t>(n), b.end(), 0);
  const long rss0 = max_rss_kib();
  const auto t0 = std::chrono::steady_clock::now();
  ErrorCode code{};
  const std::string msg = try_load(b, &code);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("nests deeper than 32 levels"), std::string::npos) << msg;
  EXPECT_EQ(code, ErrorCode::kFormat);
  EXPECT_LT(secs, 1.0);
  EXPECT_LT(max_rss_kib() - rss0, 64 * 1024) << "peak RSS grew by " << (max_rss_kib() - rss0) << " KiB";
  // The same bytes past the 16 MiB header limit: refused before parsing.
  const uint64_t too_long = (16ull << 20) + 1;
  std::vector<uint8_t> big(24 + too_long + 64, ' ');
  std::memcpy(big.data(), b.data(), 16);
  std::memcpy(big.data() + 16, &too_long, 8);
  EXPECT_NE(try_load(big, &code).find("exceeds the limit of 16777216 bytes"), std::string::npos) << try_load(big);
}

TEST(BadInput, NativeIntegerFieldsMustBeIntegers) {
  const std::vector<uint8_t> b = small_native(5);
  ASSERT_EQ(try_load(b), "");
  ASSERT_EQ(try_load(with_header(b, [](nlohmann::json&) {})), "");  // the helper itself keeps a good file good
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    const char* expect;
  };
  const Case cases[] = {
      {"offset 0.5", [](nlohmann::json& j) { j["tensors"][0]["offset"] = 0.5; }, "'offset' must be an integer"},
      {"offset 1e308", [](nlohmann::json& j) { j["tensors"][1]["offset"] = 1e308; }, "'offset' must be an integer"},
      {"offset -64", [](nlohmann::json& j) { j["tensors"][1]["offset"] = -64; }, "'offset' must be an integer"},
      {"nbytes 4.0", [](nlohmann::json& j) { j["tensors"][2]["nbytes"] = 4.0; }, "'nbytes' must be an integer"},
      {"shape 256.9",
       [](nlohmann::json& j) {
         auto& s = j["tensors"][3]["shape"];
         s[0] = s[0].get<double>() + 0.9;
       },
       "'shape' must be an integer"},
      {"shape -1", [](nlohmann::json& j) { j["tensors"][3]["shape"][0] = -1; }, "'shape' must be an integer"},
      {"shape 1e30", [](nlohmann::json& j) { j["tensors"][3]["shape"][0] = 1e30; }, "'shape' must be an integer"},
      {"dtype 0.5", [](nlohmann::json& j) { j["tensors"][0]["dtype"] = 0.5; }, "'dtype' must be an integer"},
      {"dtype string", [](nlohmann::json& j) { j["tensors"][0]["dtype"] = "f32"; }, "'dtype' must be an integer"},
      {"checksum not hex", [](nlohmann::json& j) { j["tensors"][0]["fnv1a64"] = "zz"; }, "16 lowercase hex digits"},
      {"n_layer 2.5", [](nlohmann::json& j) { j["model"]["n_layer"] = 2.5; }, "'n_layer' must be an integer"},
      {"n_embd 1e308", [](nlohmann::json& j) { j["model"]["n_embd"] = 1e308; }, "'n_embd' must be an integer"},
      {"n_vocab -40", [](nlohmann::json& j) { j["model"]["n_vocab"] = -40; }, "'n_vocab' must be an integer"},
      {"arch_major 9", [](nlohmann::json& j) { j["model"]["arch_major"] = 9; }, "'arch_major' must be an integer"},
      {"ln_x_eps -1", [](nlohmann::json& j) { j["model"]["ln_x_eps"] = -1; }, "'ln_x_eps' must be a number in (0, 1]"},
      {"ln_x_eps 0", [](nlohmann::json& j) { j["model"]["ln_x_eps"] = 0; }, "'ln_x_eps' must be a number in (0, 1]"},
      {"ln_x_eps NaN (null)", [](nlohmann::json& j) { j["model"]["ln_x_eps"] = std::nan(""); },
       "'ln_x_eps' must be a number in (0, 1]"},
      {"ln_x_eps 1e39", [](nlohmann::json& j) { j["model"]["ln_x_eps"] = 1e39; }, "'ln_x_eps' must be a number in (0, 1]"},
      {"ln_x_eps string", [](nlohmann::json& j) { j["model"]["ln_x_eps"] = "1e-5"; },
       "'ln_x_eps' must be a number in (0, 1]"},
      {"ln_eps -1e-5", [](nlohmann::json& j) { j["model"]["ln_eps"] = -1e-5; }, "'ln_eps' must be a number in (0, 1]"},
      {"model not an object", [](nlohmann::json& j) { j["model"] = 5; }, "no 'model' object"},
  };
  for (const Case& c : cases) {
    ErrorCode code{};
    const std::string msg = try_load(with_header(b, c.edit), &code);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
    EXPECT_EQ(code, ErrorCode::kFormat) << c.what;
  }
  // The load-time override is checked too.
  Model::LoadOptions o;
  o.ln_x_eps_override = std::numeric_limits<float>::infinity();
  try {
    Model::from_raw(read_checkpoint(MappedFile::from_bytes(b, "mem.bin")), o);
    ADD_FAILURE() << "an infinite ln_x epsilon was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("epsilon"), std::string::npos) << e.what();
  }
}

TEST(BadInput, TokenOutOfRangeLeavesStateUnchanged) {
  ModelConfig c;
  c.arch_major = 6;
  c.n_layer = 1;
  c.n_embd = 32;
  c.n_vocab = 50;
  c.head_size = 16;
  auto m = synth_model(c, "f32", 1);
  Session ctx(m, 1);
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
  size_t loaded = 0, rejected = 0, silent_nonfinite = 0;
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
    bool nonfinite = false;
    (try_load(b, nullptr, &nonfinite).empty() ? loaded : rejected)++;
    silent_nonfinite += nonfinite;
  }
  std::printf("  %zu mutants: %zu loaded and ran, %zu rejected with an error, %zu ran to non-finite logits without one\n",
              iters, loaded, rejected, silent_nonfinite);
  EXPECT_GT(rejected, 0u);
  // A corrupt weight is an error naming the layer, never NaN logits handed to the caller.
  EXPECT_EQ(silent_nonfinite, 0u);
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
