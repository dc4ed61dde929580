// libFuzzer target for the whole model-loading path of rwkv.cpp and native files: reader, mapping
// to the canonical layout, binding, and one evaluation step of whatever loads.
// Built by scripts/fuzz.sh (clang, -DRWKVL_FUZZ=ON); seeds: the tiny reference models and small
// synthesized native files written by the script.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "format/format.h"
#include "model/model.h"
#include "runtime/session.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace rwkvl;
  try {
    auto f = MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.bin");
    const FileKind k = detect_file_kind(*f);
    if (k != FileKind::kRwkvCpp && k != FileKind::kNative) return 0;  // .pth/safetensors have their own targets
    auto m = Model::from_raw(read_checkpoint(f), {});
    if (m->config().n_embd * static_cast<int64_t>(m->config().n_ffn) > (1 << 22)) return 0;  // keep runs fast
    Session ctx(m, 1);
    State st;
    st.reset(m->config());
    const int32_t tok = 0;
    std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
    ctx.eval(st, &tok, 1, 1, logits.data(), nullptr);
  } catch (const Error&) {
  }
  return 0;
}
