// Canonical -> official PyTorch layout (names, shapes and raw parameters as published checkpoints
// store them), so a model can be written as .pth or safetensors that official code also reads.
// Inverse of the "official" branch of canonicalize().
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "model/model.h"

namespace rwkvl {

namespace {

Tensor reshaped(const Tensor& t, std::vector<int64_t> shape) {
  Tensor o = t;
  o.shape = std::move(shape);
  return o;
}

Tensor mapped_vec(const Tensor& t, std::vector<int64_t> shape, float (*fn)(float)) {
  std::vector<float> v = t.to_f32();
  for (float& x : v) x = fn(x);
  return Tensor::from_f32(t.name, std::move(shape), v.data());
}

Tensor transposed(const Tensor& t) {
  const int64_t R = t.rows(), C = t.cols();
  const size_t es = dtype_info(t.dtype).block_bytes;
  Tensor o = Tensor::alloc(t.name, t.dtype, {C, R});
  auto* d = static_cast<uint8_t*>(o.mutable_data());
  const auto* s = static_cast<const uint8_t*>(t.data);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      std::memcpy(d + static_cast<size_t>(c * R + r) * es, s + static_cast<size_t>(r * C + c) * es, es);
  return o;
}

}  // namespace

// The model's tensors with every matrix dense: factored ones multiplied out (B A + diag d) and int8 ones (with
// their row scales) as float32; the rest as they are.
TensorMap dense_tensors(const Model& m, const char* files, const char* runtime) {
  const TensorMap& T = m.tensors();
  if (m.config().de_rank > 0)
    RWKVL_FAIL(kUnsupported,
               "%s carry no RWKV-7a DeepEmbed tables (%s does not run RWKV-7a): keep the native file or "
               "export to PyTorch layout",
               files, runtime);
  TensorMap out;
  for (const auto& [name, t] : T) {
    if (name == "head.perm" || name.find(".ffn.bundle.") != std::string::npos || name.find(".ffn.pred.") != std::string::npos ||
        name.find("cluster") != std::string::npos)
      RWKVL_FAIL(kUnsupported, "'%s': %s carry plain models; this one has a %s, which %s cannot run (write it "
                 "from the model before compress --sparse-ffn / --cluster-head)", name.c_str(), files,
                 name == "head.perm" || name.find("cluster") != std::string::npos ? "cluster head" : "neuron-bundled channel-mix", runtime);
    if (name.ends_with(".scale") || name.ends_with(".lr_b") || name.ends_with(".lr_d")) continue;
    if (name.ends_with(".lr_a")) {
      const std::string base = name.substr(0, name.size() - 5);
      const Tensor& ta = t;
      const Tensor& tb = T.at(base + ".lr_b");
      auto sc = [&](const std::string& n) { auto it = T.find(n + ".scale"); return it == T.end() ? nullptr : &it->second; };
      const std::vector<float> A = matrix_to_f32(ta, sc(name)), B = matrix_to_f32(tb, sc(base + ".lr_b"));
      const int64_t r = ta.shape[0], cols = ta.shape[1], rows = tb.shape[0];
      std::vector<float> W(static_cast<size_t>(rows * cols), 0.f);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t k = 0; k < r; ++k) {
          const float b = B[static_cast<size_t>(i * r + k)];
          const float* a = A.data() + k * cols;
          float* w = W.data() + i * cols;
          for (int64_t j = 0; j < cols; ++j) w[j] += b * a[j];
        }
      if (T.count(base + ".lr_d")) {
        const std::vector<float> d = T.at(base + ".lr_d").to_f32();
        for (int64_t i = 0; i < rows && i < cols; ++i) W[static_cast<size_t>(i * cols + i)] += d[static_cast<size_t>(i)];
      }
      out[base + ".weight"] = Tensor::from_f32(base + ".weight", {rows, cols}, W.data());
    } else if (t.dtype == DType::kI8) {
      auto it = T.find(name + ".scale");
      const std::vector<float> v = matrix_to_f32(t, it == T.end() ? nullptr : &it->second);
      out[name] = Tensor::from_f32(name, t.shape, v.data());
    } else {
      out[name] = t;
    }
  }
  return out;
}

std::vector<Tensor> export_official(const Model& m) {
  const ModelConfig& c = m.config();
  const int64_t C = c.n_embd, H = c.n_head, S = c.head_size;
  std::vector<Tensor> out;
  for (const auto& entry : m.tensors()) {
    const std::string& name = entry.first;  // not a structured binding: lambdas below capture it
    const Tensor& t0 = entry.second;
    if (t0.dtype == DType::kI8 || t0.dtype == DType::kI8M || (name.size() > 6 && name.compare(name.size() - 6, 6, ".scale") == 0))
      RWKVL_FAIL(kUnsupported, "'%s': int8 models cannot be exported to PyTorch layout; convert to f16/f32 first", name.c_str());
    if (name == "head.perm" || name.find(".ffn.bundle.") != std::string::npos)
      RWKVL_FAIL(kUnsupported, "'%s': models with a %s cannot be exported to PyTorch layout (official code has no such tensors)",
                 name.c_str(), name == "head.perm" ? "cluster head (compress --cluster-head)" : "neuron-bundled channel-mix (compress --sparse-ffn)");
    Tensor t = t0;
    if (t.dtype == DType::kF16S24 || dtype_is_masked(t.dtype)) {  // pruned, stored packed: the same values dense
      const std::vector<float> v = t.to_f32();
      t = quantize_matrix(name, v.data(), t.rows(), t.cols(), t.dtype == DType::kQ4M ? DType::kQ4 : DType::kF16, false).first;
    }
    const auto ends = [&](const char* s) {
      const size_t n = std::strlen(s);
      return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
    };
    const bool vec = t.shape.size() == 1;
    if (c.arch_major == 4 && ends("att.time_decay")) {
      t = mapped_vec(t, {C}, [](float d) { return std::log(-d); });
    } else if (c.arch_major == 4 && ends("att.time_first")) {
      // stays (C)
    } else if (c.arch_major == 5 && ends("att.time_decay")) {
      t = mapped_vec(t, {H, S}, [](float w) { return std::log(-std::log(w)); });
    } else if ((c.arch_major == 5 || c.arch_major == 6) && ends("att.time_faaaa")) {
      t = reshaped(t, {H, S});
    } else if (c.arch_major == 7 && ends("att.r_k")) {
      t = reshaped(t, {H, S});
    } else if (ends("time_maa_w1") || ends("time_decay_w1") || ends("time_decay_w2") ||
               (c.arch_major == 7 && (ends(".w1") || ends(".w2") || ends(".a1") || ends(".a2") || ends(".v1") ||
                                      ends(".v2") || ends(".g1") || ends(".g2")))) {
      t = transposed(t);
    } else if (c.de_rank > 0 && (ends("ffn.s1") || ends("ffn.s2"))) {  // v7a: (R, C) -> (C, R), (F, R) -> (R, F)
      t = transposed(t);
    } else if (c.de_rank > 0 && ends("ffn.s0")) {
      t = reshaped(t, {1, 1, t.numel()});
    } else if (ends("time_maa_w2")) {  // (5, C, Lm) -> (5, Lm, C)
      const int64_t Lm = t.shape[2];
      std::vector<float> v = t.to_f32(), o(v.size());
      for (int64_t b = 0; b < 5; ++b)
        for (int64_t ci = 0; ci < C; ++ci)
          for (int64_t j = 0; j < Lm; ++j) o[static_cast<size_t>((b * Lm + j) * C + ci)] = v[static_cast<size_t>((b * C + ci) * Lm + j)];
      t = Tensor::from_f32(name, {5, Lm, C}, o.data());
    } else if (vec && name.find(".ln") == std::string::npos && name.find("ln_out") == std::string::npos &&
               name.find("ln_x") == std::string::npos) {
      t = reshaped(t, {1, 1, C});  // time_mix_*, time_maa_*, x_*, w0, a0, v0, k_k, k_a, time_decay (v6)
    }
    out.push_back(t);
  }
  return out;
}

}  // namespace rwkvl
