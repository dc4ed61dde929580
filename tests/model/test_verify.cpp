// Corruption is detected, never run silently (issue #13, items 7-8): verify_model / rwkvl_verify_model check
// every checksum and value; non-finite activations stop eval naming the layer; state files carry a checksum;
// a World vocabulary cut short is refused for a 65536-token model; a mapped file truncated under a running
// process gives a clear error and exit 1 (SIGBUS guard), not a silent signal.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sigbus_guard.h"
#include "model/model.h"
#include "model/verify.h"
#include "rwkv_lite.h"
#include "test_util.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

std::string tmp(const std::string& name) { return test::temp_dir() + "/" + name; }

// A small native model on disk; dtype: f32, f16, bf16, i8, q4 (matrices).
std::string small_model(const std::string& name, int arch, const std::string& dtype, int vocab = 64) {
  ModelConfig c;
  c.arch_major = arch;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_vocab = vocab;
  c.head_size = 16;
  auto m = synth_model(c, "f32", 11);
  const std::string p = tmp(name);
  m->save_native(p, dtype);
  return p;
}

const nlohmann::json& tensor_entry(const nlohmann::json& rep, const std::string& name) {
  for (const auto& t : rep.at("tensors"))
    if (t.at("name") == name) return t;
  static const nlohmann::json none;
  ADD_FAILURE() << "no tensor " << name << " in the report";
  return none;
}

void patch(const std::string& path, uint64_t offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string copy_of(const std::string& src, const std::string& name) {
  const std::string p = tmp(name);
  test::write_file(p, test::read_file(src));
  return p;
}

TEST(Verify, GoodFilesPassEveryDtype) {
  for (const char* dt : {"f32", "f16", "bf16", "i8", "q4"}) {
    const std::string p = small_model(std::string("good-") + dt + ".rwkvl", 5, dt);
    const nlohmann::json rep = verify_model(p);
    EXPECT_TRUE(rep.at("ok").get<bool>()) << dt << ": " << rep.at("problems").dump();
    EXPECT_EQ(rep.at("format"), "native");
    const nlohmann::json& s = rep.at("summary");
    EXPECT_GT(s.at("tensors").get<int>(), 10);
    EXPECT_EQ(s.at("checksum_ok"), s.at("tensors")) << dt;
    EXPECT_EQ(s.at("checksum_mismatch").get<int>(), 0);
    EXPECT_EQ(s.at("nonfinite_values").get<int>(), 0);
    EXPECT_TRUE(rep.at("model").is_object());
    EXPECT_EQ(rep.at("model").at("n_layer").get<int>(), 2);
  }
}

TEST(Verify, FlippedByteNamesTheTensor) {
  const std::string good = small_model("flip-src.rwkvl", 7, "f16");
  const nlohmann::json before = verify_model(good);
  ASSERT_TRUE(before.at("ok").get<bool>());
  const std::string name = "blocks.1.ffn.value.weight";
  const uint64_t off = tensor_entry(before, name).at("offset").get<uint64_t>();
  const std::string bad = copy_of(good, "flip.rwkvl");
  patch(bad, off + 10, std::string(1, '\x01'));  // low mantissa byte of an f16: the value stays finite
  const nlohmann::json rep = verify_model(bad);
  EXPECT_FALSE(rep.at("ok").get<bool>());
  EXPECT_EQ(tensor_entry(rep, name).at("checksum"), "mismatch");
  EXPECT_EQ(rep.at("summary").at("checksum_mismatch").get<int>(), 1);
  EXPECT_EQ(rep.at("summary").at("nonfinite_values").get<int>(), 0);
  ASSERT_FALSE(rep.at("problems").empty());
  EXPECT_NE(rep.at("problems")[0].get<std::string>().find(name), std::string::npos);
  // The file still loads (big tensors are not hashed on load): only verify sees it.
  EXPECT_NO_THROW(Model::load(bad, {}));

  // The C API: JSON into a caller buffer; a buffer too small reports the size, the next call gets the same report.
  size_t n = 0;
  int ok = -1;
  char small[16];
  EXPECT_EQ(rwkvl_verify_model(bad.c_str(), small, sizeof small, &n, &ok), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_GT(n, sizeof small);
  EXPECT_EQ(ok, 0);
  std::vector<char> buf(n + 1);
  ASSERT_EQ(rwkvl_verify_model(bad.c_str(), buf.data(), buf.size(), &n, &ok), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(ok, 0);
  const nlohmann::json again = nlohmann::json::parse(std::string(buf.data(), n));
  EXPECT_EQ(again.at("problems"), rep.at("problems"));
  ASSERT_EQ(rwkvl_verify_model(good.c_str(), buf.data(), buf.size(), &n, &ok), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(ok, 1);
}

// Non-finite values are counted in every float representation: f32, f16, bf16, the f16 scales of int8 rows and
// the f16 scale/offset of q4 blocks; +inf in ffn-style thresholds is not what is being tested here.
TEST(Verify, NonFiniteCountedForEveryDtype) {
  struct Case {
    const char* dtype;
    const char* tensor;
    uint64_t byte;     // offset within the tensor
    std::string bytes; // written there
  };
  const std::string nan32("\x00\x00\xc0\x7f", 4), inf16("\x00\x7c", 2), nan_bf16("\xc0\x7f", 2);
  const Case cases[] = {
      {"f32", "blocks.0.att.key.weight", 40, nan32},
      {"f16", "blocks.0.att.key.weight", 40, inf16},
      {"bf16", "blocks.0.att.key.weight", 40, nan_bf16},
      {"i8", "blocks.0.att.key.weight.scale", 4, inf16},  // save_native("i8") writes f16 or f32 scales
      {"q4", "blocks.0.att.key.weight", 20, inf16},       // d of the second block
      {"q4", "blocks.0.att.key.weight", 22, inf16},       // m of the second block
      {"f32", "blocks.1.ln1.weight", 0, nan32},
  };
  int k = 0;
  for (const Case& c : cases) {
    const std::string src = small_model(std::string("nf-src-") + c.dtype + ".rwkvl", 6, c.dtype);
    const nlohmann::json good = verify_model(src);
    const nlohmann::json& e = tensor_entry(good, c.tensor);
    if (e.is_null()) continue;
    std::string bytes = c.bytes;
    if (std::string(c.dtype) == "i8" && e.at("dtype") == "f32") bytes = nan32;
    const std::string bad = copy_of(src, "nf-" + std::to_string(k++) + ".rwkvl");
    patch(bad, e.at("offset").get<uint64_t>() + c.byte, bytes);
    const nlohmann::json rep = verify_model(bad);
    EXPECT_FALSE(rep.at("ok").get<bool>()) << c.dtype << " " << c.tensor;
    EXPECT_EQ(tensor_entry(rep, c.tensor).at("nonfinite").get<int>(), 1) << c.dtype << " " << c.tensor;
    EXPECT_EQ(rep.at("summary").at("nonfinite_tensors").get<int>(), 1) << c.dtype << " " << c.tensor;
  }
}

TEST(Verify, OtherFormatsHaveNoChecksumsAndBadFilesAreReported) {
  const std::string tiny = test::shared_file("reference/tiny-rwkv/tiny-rwkv-5v1-730K-Q5_1.bin");
  if (!tiny.empty()) {
    const nlohmann::json rep = verify_model(tiny);
    EXPECT_TRUE(rep.at("ok").get<bool>()) << rep.at("problems").dump();
    EXPECT_EQ(rep.at("format"), "rwkv.cpp");
    EXPECT_FALSE(rep.at("summary").at("checksums_in_format").get<bool>());
    EXPECT_EQ(rep.at("summary").at("checksum_none"), rep.at("summary").at("tensors"));
    for (const auto& t : rep.at("tensors")) EXPECT_EQ(t.at("checksum"), "none");
  }
  const nlohmann::json missing = verify_model(tmp("no-such-model.bin"));
  EXPECT_FALSE(missing.at("ok").get<bool>());
  EXPECT_NE(missing.at("load_error").get<std::string>(), "");
  // A header that does not bind (a negative epsilon) is a problem even when every checksum matches.
  const std::string p = small_model("eps.rwkvl", 5, "f32");
  std::string b = test::read_file(p);
  const size_t at = b.find("\"ln_x_eps\":");
  ASSERT_NE(at, std::string::npos);
  const size_t v = at + 11, e = b.find_first_of(",}", v);
  b.replace(v, e - v, "-1" + std::string(e - v - 2, ' '));  // same header length: the data does not move
  test::write_file(p, b);
  const nlohmann::json rep = verify_model(p);
  EXPECT_FALSE(rep.at("ok").get<bool>());
  EXPECT_NE(rep.dump().find("ln_x_eps"), std::string::npos) << rep.dump();
}

// ---------------------------------------------------------------- non-finite activations stop eval

TEST(NonFinite, CorruptWeightStopsEvalNamingTheLayer) {
  for (int arch : {4, 5, 6, 7}) {
    const std::string src = small_model("act-src" + std::to_string(arch) + ".rwkvl", arch, "f32");
    const uint64_t off = tensor_entry(verify_model(src), "blocks.1.att.value.weight").at("offset").get<uint64_t>();
    const std::string bad = copy_of(src, "act" + std::to_string(arch) + ".rwkvl");
    patch(bad, off, std::string("\x00\x00\xc0\x7f", 4));  // row 0, column 0: NaN
    // The good file runs; the corrupt one throws with the layer, not NaN logits.
    for (const std::string& path : {src, bad}) {
      auto m = Model::load(path, {});
      Session ctx(m, 1);
      State st;
      st.reset(m->config());
      std::vector<int32_t> toks = {1, 2, 3, 4, 5};
      std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
      if (path == src) {
        EXPECT_NO_THROW(ctx.eval(st, toks.data(), toks.size(), 2, logits.data(), nullptr));
        for (float x : logits) ASSERT_TRUE(std::isfinite(x));
        continue;
      }
      try {
        ctx.eval(st, toks.data(), toks.size(), 2, logits.data(), nullptr);
        ADD_FAILURE() << "v" << arch << ": NaN weight ran without an error";
      } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(e.code(), ErrorCode::kFormat);
        EXPECT_NE(msg.find("non-finite values after layer 1"), std::string::npos) << msg;
        EXPECT_NE(msg.find("rwkv-lite verify -m " + bad), std::string::npos) << msg;
      }
    }
  }
}

TEST(NonFinite, CorruptStateStopsEval) {
  ModelConfig c;
  c.arch_major = 5;
  c.n_layer = 3;
  c.n_embd = 32;
  c.n_vocab = 40;
  c.head_size = 16;
  auto m = synth_model(c, "f32", 3);
  Session ctx(m, 1);
  State st;
  st.reset(m->config());
  st.layer(m->config(), 2)[40] = std::nanf("");  // layer 2's wkv state
  const int32_t tok = 1;
  std::vector<float> logits(40);
  try {
    ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
    ADD_FAILURE() << "a NaN state ran without an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("after layer 2"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- state files

struct ApiModel {
  rwkvl_model* m = nullptr;
  rwkvl_state* s = nullptr;
  explicit ApiModel(const std::string& path) {
    EXPECT_EQ(rwkvl_model_load(path.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
    if (m) {
      EXPECT_EQ(rwkvl_state_new(m, &s), RWKVL_OK);
    }
  }
  ~ApiModel() {
    rwkvl_state_free(s);
    rwkvl_model_free(m);
  }
};

TEST(StateFile, ChecksumAndFiniteValuesOnLoad) {
  const std::string mp = small_model("state-model.rwkvl", 5, "f32");
  ApiModel a(mp);
  ASSERT_TRUE(a.s);
  rwkvl_model_info info;
  ASSERT_EQ(rwkvl_model_get_info(a.m, &info), RWKVL_OK);
  float* d = rwkvl_state_data(a.s);
  for (size_t i = 0; i < info.state_floats; ++i) d[i] = 0.001f * static_cast<float>(i % 97);
  const std::vector<float> saved(d, d + info.state_floats);
  const std::string sp = tmp("s.state");
  ASSERT_EQ(rwkvl_state_save(a.s, sp.c_str()), RWKVL_OK) << rwkvl_last_error();
  const std::string good = test::read_file(sp);
  ASSERT_EQ(good.size(), 64 + 4 * info.state_floats);
  EXPECT_EQ(good.substr(0, 8), "RWKVSTAT");

  auto load = [&](const std::string& bytes) {
    test::write_file(sp, bytes);
    for (size_t i = 0; i < info.state_floats; ++i) d[i] = -7.f;
    const rwkvl_status st = rwkvl_state_load(a.s, sp.c_str());
    if (st != RWKVL_OK) {  // a refused file leaves the state as it was
      for (size_t i = 0; i < info.state_floats; ++i) EXPECT_EQ(d[i], -7.f);
    }
    return st;
  };
  ASSERT_EQ(load(good), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(std::vector<float>(d, d + info.state_floats), saved);

  // One bit flipped anywhere in the values (or the checksum) is refused.
  for (size_t pos : {size_t{64}, size_t{64 + 4 * 33 + 2}, good.size() - 1, size_t{60}}) {
    std::string b = good;
    b[pos] = static_cast<char>(b[pos] ^ 0x10);
    EXPECT_EQ(load(b), RWKVL_ERR_FORMAT) << pos;
    EXPECT_NE(std::string(rwkvl_last_error()).find("corrupt"), std::string::npos) << rwkvl_last_error();
  }
  // Header shape fields: another model's state.
  std::string shape = good;
  shape[20] = static_cast<char>(shape[20] + 1);  // n_layer
  EXPECT_EQ(load(shape), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("different model"), std::string::npos);
  // Truncated or padded.
  EXPECT_EQ(load(good.substr(0, good.size() - 4)), RWKVL_ERR_FORMAT);
  EXPECT_EQ(load(good + "x"), RWKVL_ERR_FORMAT);
  EXPECT_EQ(load(good.substr(0, 30)), RWKVL_ERR_FORMAT);

  // Version 1 (no checksum): accepted when every value is finite, refused otherwise.
  std::string v1 = "RWKVSTAT";
  const uint32_t h1[7] = {1u, 5u, 2u, 64u, 4u, 16u, 0u};
  v1.append(reinterpret_cast<const char*>(h1), sizeof h1);
  const uint64_t n = info.state_floats;
  v1.append(reinterpret_cast<const char*>(&n), 8);
  v1.append(reinterpret_cast<const char*>(saved.data()), saved.size() * 4);
  ASSERT_EQ(load(v1), RWKVL_OK) << rwkvl_last_error();
  EXPECT_EQ(std::vector<float>(d, d + info.state_floats), saved);
  std::string v1nan = v1;
  const float nan = std::nanf("");
  std::memcpy(&v1nan[44 + 4 * 5], &nan, 4);
  EXPECT_EQ(load(v1nan), RWKVL_ERR_FORMAT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("non-finite"), std::string::npos) << rwkvl_last_error();
  std::string v3 = good;
  v3[8] = 3;
  EXPECT_EQ(load(v3), RWKVL_ERR_UNSUPPORTED);
}

// ---------------------------------------------------------------- tokenizers for a model

TEST(TokenizerForModel, WorldVocabularyMustBeComplete) {
  const std::string vocab = test::shared_file("reference/tokenizers/rwkv_vocab_v20230424.txt");
  if (vocab.empty()) GTEST_SKIP();
  ModelConfig c;
  c.arch_major = 5;
  c.n_layer = 1;
  c.n_embd = 16;
  c.n_vocab = 65536;
  c.head_size = 16;
  const std::string mp = tmp("world.rwkvl");
  synth_model(c, "f32", 1)->save_native(mp, "keep");
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(mp.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_tokenizer* tok = nullptr;
  ASSERT_EQ(rwkvl_tokenizer_for_model(m, mp.c_str(), vocab.c_str(), &tok), RWKVL_OK) << rwkvl_last_error();
  rwkvl_tokenizer_free(tok);
  // The first 1,000 lines: a well-formed file that would load and tokenise wrongly.
  const std::string text = test::read_file(vocab);
  size_t cut = 0;
  for (int i = 0; i < 1000; ++i) cut = text.find('\n', cut) + 1;
  const std::string trunc = tmp("vocab-1000.txt");
  test::write_file(trunc, text.substr(0, cut));
  tok = nullptr;
  EXPECT_EQ(rwkvl_tokenizer_for_model(m, mp.c_str(), trunc.c_str(), &tok), RWKVL_ERR_FORMAT);
  EXPECT_EQ(tok, nullptr);
  const std::string msg = rwkvl_last_error();
  EXPECT_NE(msg.find("1000 entries"), std::string::npos) << msg;
  EXPECT_NE(msg.find("65529"), std::string::npos) << msg;
  // All but the last line: still refused.
  const std::string most = tmp("vocab-most.txt");
  test::write_file(most, text.substr(0, text.rfind('\n', text.size() - 2) + 1));
  EXPECT_EQ(rwkvl_tokenizer_for_model(m, mp.c_str(), most.c_str(), &tok), RWKVL_ERR_FORMAT);
  rwkvl_model_free(m);
}

TEST(TokenizerForModel, TokenizerFileForByteModelIsAnError) {
  const std::string mp = small_model("byte.rwkvl", 5, "f32", 256);
  rwkvl_model* m = nullptr;
  ASSERT_EQ(rwkvl_model_load(mp.c_str(), nullptr, &m), RWKVL_OK) << rwkvl_last_error();
  rwkvl_tokenizer* tok = nullptr;
  ASSERT_EQ(rwkvl_tokenizer_for_model(m, mp.c_str(), nullptr, &tok), RWKVL_OK);
  EXPECT_STREQ(rwkvl_tokenizer_name(tok), "byte");
  rwkvl_tokenizer_free(tok);
  tok = nullptr;
  EXPECT_EQ(rwkvl_tokenizer_for_model(m, mp.c_str(), "/some/vocab.txt", &tok), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("byte-level"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(tok, nullptr);
  rwkvl_model_free(m);
}

// ---------------------------------------------------------------- SIGBUS guard

struct ChildResult {
  int status = 0;
  std::string err;
};

// Forks a child that maps `path` (registered = through MappedFile, else a raw mmap the guard does not know),
// waits until the parent has truncated the file, then reads every page. Returns its wait status and stderr.
ChildResult truncate_under_child(const std::string& path, bool registered) {
  int ready[2], go[2], err[2];
  EXPECT_EQ(pipe(ready), 0);
  EXPECT_EQ(pipe(go), 0);
  EXPECT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], 2);
    close(ready[0]);
    close(go[1]);
    close(err[0]);
    rwkvl_install_sigbus_guard("guard-test");
    const uint8_t* p = nullptr;
    size_t n = 0;
    std::shared_ptr<MappedFile> f;
    if (registered) {
      f = MappedFile::open(path);
      p = f->data();
      n = f->size();
    } else {
      const int fd = ::open(path.c_str(), O_RDONLY);
      n = static_cast<size_t>(lseek(fd, 0, SEEK_END));
      p = static_cast<const uint8_t*>(mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0));
      close(fd);
    }
    char c = 'r';
    if (write(ready[1], &c, 1) != 1) _exit(3);
    if (read(go[0], &c, 1) != 1) _exit(4);
    unsigned sum = 0;
    for (size_t i = 0; i < n; i += 4096) sum += *static_cast<const volatile uint8_t*>(p + i);
    _exit(sum == 12345 ? 5 : 0);  // not reached when the guard works
  }
  close(ready[1]);
  close(go[0]);
  close(err[1]);
  char c;
  EXPECT_EQ(read(ready[0], &c, 1), 1);
  EXPECT_EQ(truncate(path.c_str(), 0), 0);
  EXPECT_EQ(write(go[1], &c, 1), 1);
  ChildResult r;
  char buf[4096];
  ssize_t k;
  while ((k = read(err[0], buf, sizeof buf)) > 0) r.err.append(buf, static_cast<size_t>(k));
  waitpid(pid, &r.status, 0);
  close(ready[0]);
  close(go[1]);
  close(err[0]);
  return r;
}

TEST(SigbusGuard, TruncatedMappedFileIsAnErrorNotACrash) {
  const std::string p = tmp("mapped.bin");
  test::write_file(p, std::string(1 << 20, 'x'));
  const ChildResult r = truncate_under_child(p, true);
  ASSERT_TRUE(WIFEXITED(r.status)) << "child killed by signal " << (WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0);
  EXPECT_EQ(WEXITSTATUS(r.status), 1);
  EXPECT_EQ(r.err, "guard-test: error: model file '" + p + "' was truncated or replaced while in use\n");
}

TEST(SigbusGuard, FaultsOutsideRegisteredMappingsAreNotSwallowed) {
  const std::string p = tmp("unregistered.bin");
  test::write_file(p, std::string(1 << 20, 'x'));
  const ChildResult r = truncate_under_child(p, false);
  // The previous action handles it: the default kills with SIGBUS; a sanitizer's handler reports it and exits,
  // or aborts (SIGABRT) under ASAN_OPTIONS=abort_on_error=1 as in scripts/test.sh.
  EXPECT_EQ(r.err.find("was truncated or replaced"), std::string::npos) << r.err;
  EXPECT_FALSE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
  if (WIFSIGNALED(r.status)) {
    EXPECT_TRUE(WTERMSIG(r.status) == SIGBUS || WTERMSIG(r.status) == SIGABRT) << "signal " << WTERMSIG(r.status);
  }
}

TEST(SigbusGuard, MappingsAreRegisteredWhileOpen) {
  const std::string p = tmp("reg.bin");
  test::write_file(p, "abc");
  const int before = sigbus_guard::count();
  {
    auto f = MappedFile::open(p);
    EXPECT_EQ(sigbus_guard::count(), before + 1);
    EXPECT_FALSE(sigbus_guard::changed(f->data()));
    // Modified in place (same inode): changed. Replaced by rename (new inode): the mapping is intact.
    test::write_file(p, "abcd");
    EXPECT_TRUE(sigbus_guard::changed(f->data()));
  }
  EXPECT_EQ(sigbus_guard::count(), before);
  auto mem = MappedFile::from_bytes({1, 2, 3}, "mem");
  EXPECT_EQ(sigbus_guard::count(), before);
}

TEST(SigbusGuard, ModelFileModifiedInPlaceIsRefused) {
  const std::string p = small_model("inplace.rwkvl", 5, "f32");
  auto m = Model::load(p, {});
  Session ctx(m, 1);
  State st;
  st.reset(m->config());
  const int32_t tok = 1;
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ASSERT_NO_THROW(ctx.eval(st, &tok, 1, 1, logits.data(), nullptr));
  // Rewritten through the same inode (as cp onto it does), with the same bytes but a new modification time.
  const std::string bytes = test::read_file(p);
  usleep(20000);
  test::write_file(p, bytes);
  try {
    ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
    ADD_FAILURE() << "ran on a model file modified in place";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("was modified while in use"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkvl
