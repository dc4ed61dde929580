// Writes the libFuzzer seed corpus: valid files of every format the loaders read, made from the tiny
// reference models (../shared/reference/tiny-rwkv) and from small synthesized models, so that fuzzing
// starts from inputs that reach deep into each reader instead of from nothing.
//
//   seed_corpus SHARED_DIR OUT_DIR
//     OUT_DIR/model/        rwkv.cpp files (copies of tiny FP16 / Q5_1 files) and native files (the tiny
//                           models converted, f16 and i8; synthesized v4..v7 models)  -> fuzz_model
//     OUT_DIR/pth/          official-layout .pth exports of the same models           -> fuzz_pth
//     OUT_DIR/safetensors/  official-layout safetensors exports                       -> fuzz_safetensors
//
// Every file written is loaded back and run for one token (finite logits), so a seed is a valid input.
// Exit 0: all written. Exit 1: an error, or ../shared missing (reference data must not vanish silently).
// Exit 77: ../shared missing and RWKVL_ALLOW_NO_SHARED=1: the synthesized seeds alone were written.
// Built by tests/CMakeLists.txt (ctest fuzz_seed_corpus) and tests/fuzz/CMakeLists.txt (scripts/fuzz.sh).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "format/format.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "runtime/session.h"

namespace {

namespace fs = std::filesystem;
using rwkvl::Model;

int g_written = 0;

// Loads a written seed (v5 official exports with rwkv.cpp's GroupNorm eps when the source had it, which
// does not matter for a seed) and runs one token; throws if anything is wrong.
void check_seed(const std::string& path) {
  auto m = Model::load(path, {});
  rwkvl::Session ctx(m, 1);
  rwkvl::State st;
  st.reset(m->config());
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  const int32_t tok = 1;
  ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
  for (float v : logits)
    if (!std::isfinite(v)) throw std::runtime_error(path + ": non-finite logits");
  ++g_written;
  std::printf("  %-60s %9llu bytes\n", path.c_str(), static_cast<unsigned long long>(fs::file_size(path)));
}

// A model as a native file (dtypes as listed) and as official-layout .pth and safetensors.
void write_all(const Model& m, const std::string& out, const std::string& name, const std::vector<std::string>& native) {
  for (const std::string& dt : native) {
    const std::string p = out + "/model/" + name + "-" + dt + ".rwkvl";
    m.save_native(p, dt);
    check_seed(p);
  }
  if (m.config().arch_major >= 6) {  // GGUF: llama.cpp's rwkv6 / rwkv7 layout
    const std::string p = out + "/model/" + name + ".gguf";
    rwkvl::save_gguf(m, *rwkvl::Tokenizer::byte_level(), p, rwkvl::WeightDType::kKeep);
    check_seed(p);
  }
  const std::vector<rwkvl::Tensor> official = rwkvl::export_official(m);
  rwkvl::write_pth(out + "/pth/" + name + ".pth", official);
  check_seed(out + "/pth/" + name + ".pth");
  rwkvl::write_safetensors(out + "/safetensors/" + name + ".safetensors", official, {{"format", "pt"}});
  check_seed(out + "/safetensors/" + name + ".safetensors");
}

void write_synthesized(const std::string& out) {
  for (int arch = 4; arch <= 7; ++arch) {
    rwkvl::ModelConfig cfg;
    cfg.arch_major = arch;
    cfg.n_layer = 1;
    cfg.n_embd = 32;
    cfg.n_vocab = 16;
    cfg.head_size = 16;
    auto m = rwkvl::synth_model(cfg, "f16", 100 + static_cast<uint64_t>(arch));
    write_all(*m, out, "synth-v" + std::to_string(arch), {"keep", "i8"});
  }
}

// The tiny models: the rwkv.cpp files themselves (FP16 and Q5_1: smaller than FP32, and the quantised
// reader), and the FP16 ones converted (fp16 weights keep the .pth / safetensors seeds under 2 MB).
void write_tiny(const std::string& tiny, const std::string& out) {
  for (const char* f : {"4v0-660K-FP16", "5v1-730K-Q5_1", "5v2-730K-FP16", "6v0-1m-FP16", "7v0-834K-Q5_1"}) {
    const std::string dst = out + "/model/tiny-rwkv-" + f + ".bin";
    fs::copy_file(tiny + "/tiny-rwkv-" + f + ".bin", dst, fs::copy_options::overwrite_existing);
    check_seed(dst);
  }
  for (const char* v : {"4v0-660K", "5v2-730K", "6v0-1m", "7v0-834K"}) {
    auto m = Model::load(tiny + "/tiny-rwkv-" + std::string(v) + "-FP16.bin", {});
    write_all(*m, out, std::string("tiny-") + v, {"keep", "i8"});
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SHARED_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string shared = argv[1], out = argv[2];
  const std::string tiny = shared + "/reference/tiny-rwkv";
  const char* allow = std::getenv("RWKVL_ALLOW_NO_SHARED");
  const bool have_tiny = fs::is_directory(tiny);
  if (!have_tiny && !(allow && std::strcmp(allow, "1") == 0)) {
    std::fprintf(stderr, "seed_corpus: %s not found (set RWKVL_ALLOW_NO_SHARED=1 for synthesized seeds only)\n", tiny.c_str());
    return 1;
  }
  try {
    for (const char* d : {"model", "pth", "safetensors"}) fs::create_directories(out + "/" + d);
    write_synthesized(out);
    if (have_tiny) write_tiny(tiny, out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seed_corpus: %s\n", e.what());
    return 1;
  }
  std::printf("seed_corpus: %d seeds in %s%s\n", g_written, out.c_str(),
              have_tiny ? "" : " (synthesized only: no tiny reference models)");
  return have_tiny ? 0 : 77;
}
