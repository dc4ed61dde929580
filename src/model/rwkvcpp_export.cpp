// Canonical -> rwkv.cpp file layout. The canonical layout already follows rwkv.cpp's conventions (model.h: decays
// transformed, LoRAs (out, in)), so this is mostly shapes and dtypes, applied as rwkv.cpp's converter
// (python/convert_pytorch_to_ggml.py at 4358e70) applies them to an official checkpoint:
//   * every '.time_' tensor squeezed; v5.2/v6 time_decay and time_faaaa (H, S, 1); v5.1 time_decay and time_first
//     (H, 1, 1), one value per head; v7 token-shift mixes concatenated into att.x_rwkvag (6, 1, C) in r w k v a g
//     order; the other v7 vectors keep the official (1, 1, C) and r_k (H, S);
//   * FP16 files: 2-D+ tensors f16 except time_*, k_k, k_a, r_k, x_rwkvag, x_k, w0, a0, v0 (f32).
// canonicalize() reads the result back to the same canonical values (tests/format/test_rwkvcpp_export.cpp checks
// it against the files rwkv.cpp's converter wrote).
#include <map>

#include "core/error.h"
#include "model/model.h"

namespace rwkvl {

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// The converter's FP16 rule: matrices (2-D+) become f16 unless their name holds one of these.
bool stays_f32(const std::string& n) {
  for (const char* k : {".time_", ".k_k", ".k_a", ".r_k", ".x_rwkvag", ".x_k", ".w0", ".a0", ".v0"})
    if (contains(n, k)) return true;
  return false;
}

// One value per head from a per-channel vector whose heads are constant (v5.1 stores per-head values).
std::vector<float> per_head(const Tensor& t, int64_t H, int64_t S) {
  const std::vector<float> v = t.to_f32();
  std::vector<float> out(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    out[static_cast<size_t>(h)] = v[static_cast<size_t>(h * S)];
    for (int64_t s = 1; s < S; ++s)
      if (v[static_cast<size_t>(h * S + s)] != out[static_cast<size_t>(h)])
        RWKVL_FAIL(kUnsupported, "'%s': RWKV-5.1 files of rwkv.cpp hold one value per head; head %lld varies", t.name.c_str(),
                   static_cast<long long>(h));
  }
  return out;
}

class Exporter {
 public:
  Exporter(const ModelConfig& c, bool f16) : c_(c), f16_(f16) {}

  void add(const std::string& name, const Tensor& t) {
    const int64_t C = c_.n_embd, H = c_.n_head, S = c_.head_size;
    const bool v5 = c_.arch_major == 5, v6 = c_.arch_major == 6, v7 = c_.arch_major == 7;
    if (v5 && c_.arch_minor < 2 && (name.ends_with("att.time_decay") || name.ends_with("att.time_faaaa"))) {
      const std::string n = name.ends_with("att.time_faaaa") ? name.substr(0, name.size() - 10) + "time_first" : name;
      put(n, {H, 1, 1}, per_head(t, H, S));
    } else if ((v5 || v6) && (name.ends_with("att.time_decay") || name.ends_with("att.time_faaaa"))) {
      put(name, {H, S, 1}, t.to_f32());
    } else if (v7 && contains(name, "att.x_")) {
      mixes_[name.substr(0, name.find("att.x_"))][name.substr(name.size() - 1)] = t.to_f32();
    } else if (v7 && t.shape.size() == 1 && (name.ends_with(".k_k") || name.ends_with(".k_a") || name.ends_with(".w0") ||
                                             name.ends_with(".a0") || name.ends_with(".v0") || name.ends_with("ffn.x_k"))) {
      put(name, {1, 1, C}, t.to_f32());
    } else if (v7 && name.ends_with("att.r_k")) {
      put(name, {H, S}, t.to_f32());
    } else {
      put(name, t.shape, t.to_f32());
    }
  }

  // v7: the six token-shift mixes of each layer as one (6, 1, C) tensor, in the order the converter meets them.
  std::vector<Tensor> finish() {
    for (auto& [prefix, m] : mixes_) {
      std::vector<float> v;
      for (const char* k : {"r", "w", "k", "v", "a", "g"}) {
        auto it = m.find(k);
        if (it == m.end()) RWKVL_FAIL(kInternal, "export_rwkvcpp: %satt.x_%s missing", prefix.c_str(), k);
        v.insert(v.end(), it->second.begin(), it->second.end());
      }
      put(prefix + "att.x_rwkvag", {6, 1, c_.n_embd}, v);
    }
    return std::move(out_);
  }

 private:
  void put(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    const bool half = f16_ && shape.size() > 1 && !stays_f32(name);
    Tensor t = Tensor::from_f32(name, std::move(shape), v.data());
    if (half) {
      Tensor h = Tensor::alloc(name, DType::kF16, t.shape);
      auto* d = static_cast<uint16_t*>(h.mutable_data());
      for (size_t i = 0; i < v.size(); ++i) d[i] = f32_to_f16(v[i]);
      t = h;
    }
    out_.push_back(std::move(t));
  }

  const ModelConfig& c_;
  const bool f16_;
  std::vector<Tensor> out_;
  std::map<std::string, std::map<std::string, std::vector<float>>> mixes_;
};

}  // namespace

std::vector<Tensor> export_rwkvcpp(const Model& m, bool f16) {
  const ModelConfig& c = m.config();
  if (c.arch_major < 4 || c.arch_major > 7) RWKVL_FAIL(kUnsupported, "rwkv.cpp files hold RWKV-4 to RWKV-7 models");
  const TensorMap dense = dense_tensors(m, "rwkv.cpp files", "rwkv.cpp");
  Exporter e(c, f16);
  for (const auto& [name, t] : dense) e.add(name, t);  // dense_tensors refused bundled FFNs and cluster heads
  return e.finish();
}

}  // namespace rwkvl
