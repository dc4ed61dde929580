#include "model/gguf_model.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/dtype.h"
#include "core/error.h"
#include "format/gguf.h"

namespace rwkvl {

namespace {

// ------------------------------------------------------------------------------------------ reading

class GgufIn {
 public:
  explicit GgufIn(RawCheckpoint& raw) : file_(raw.file ? raw.file->path() : "?") {
    for (Tensor& t : raw.tensors) t_.emplace(t.name, std::move(t));
  }
  bool has(const std::string& n) const { return t_.count(n) != 0; }
  Tensor take(const std::string& n) {
    auto it = t_.find(n);
    if (it == t_.end()) RWKVL_FAIL(kFormat, "%s: GGUF: missing tensor '%s'", file_.c_str(), n.c_str());
    Tensor t = std::move(it->second);
    t_.erase(it);
    return t;
  }
  void check_all_used() const {
    if (!t_.empty())
      RWKVL_FAIL(kFormat, "%s: GGUF: unknown tensor '%s' %s (not part of llama.cpp's rwkv6/rwkv7 layout)", file_.c_str(),
                 t_.begin()->first.c_str(), t_.begin()->second.shape_str().c_str());
  }
  const std::string& file() const { return file_; }

 private:
  std::map<std::string, Tensor> t_;
  std::string file_;
};

Tensor renamed(Tensor t, const std::string& name, std::vector<int64_t> shape = {}) {
  t.name = name;
  if (!shape.empty()) {
    if (checked_numel(shape, name) != t.numel()) RWKVL_FAIL(kFormat, "GGUF: '%s' has %lld values, expected %lld", name.c_str(), (long long)t.numel(), (long long)checked_numel(shape, name));
    t.shape = std::move(shape);
  }
  return t;
}

// A (R, C) tensor (any dtype) transposed to (C, R) float32.
Tensor transposed_f32(const Tensor& t, const std::string& name) {
  if (t.shape.size() != 2) RWKVL_FAIL(kFormat, "GGUF: '%s' should be 2-D, has shape %s", t.name.c_str(), t.shape_str().c_str());
  const int64_t R = t.shape[0], C = t.shape[1];
  std::vector<float> v = t.to_f32(), o(v.size());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) o[static_cast<size_t>(c * R + r)] = v[static_cast<size_t>(r * C + c)];
  return Tensor::from_f32(name, {C, R}, o.data());
}

// t * 2^k, exactly (float types: the values; q4 blocks: their scale and offset).
Tensor times_pow2(Tensor t, int k) {
  if (k == 0) return t;
  const float f = std::ldexp(1.0f, k);
  if (t.dtype == DType::kQ4) {
    Tensor o = Tensor::alloc(t.name, DType::kQ4, t.shape);
    std::memcpy(o.mutable_data(), t.data, t.nbytes);
    auto* b = static_cast<BlockQ4*>(o.mutable_data());
    for (size_t i = 0; i < t.nbytes / sizeof(BlockQ4); ++i) {
      b[i].d = f32_to_f16(f16_to_f32(b[i].d) * f);
      b[i].m = f32_to_f16(f16_to_f32(b[i].m) * f);
    }
    return o;
  }
  std::vector<float> v = t.to_f32();
  for (float& x : v) x *= f;
  if (t.dtype == DType::kF32) return Tensor::from_f32(t.name, t.shape, v.data());
  Tensor o = Tensor::alloc(t.name, t.dtype, t.shape);
  auto* d = static_cast<uint16_t*>(o.mutable_data());
  for (size_t i = 0; i < v.size(); ++i) d[i] = t.dtype == DType::kF16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
  return o;
}

// Splits a fused mix (n, 1, 1, C) into n vectors named p + names[i].
void split_fused(std::vector<Tensor>& out, const Tensor& t, const std::string& p, const std::vector<const char*>& names) {
  const int64_t n = static_cast<int64_t>(names.size());
  if (t.numel() % n) RWKVL_FAIL(kFormat, "GGUF: '%s' has %lld values, not %lld vectors", t.name.c_str(), (long long)t.numel(), (long long)n);
  const int64_t C = t.numel() / n;
  std::vector<float> v = t.to_f32();
  for (int64_t i = 0; i < n; ++i) out.push_back(Tensor::from_f32(p + names[static_cast<size_t>(i)], {C}, v.data() + i * C));
}

int64_t kv_int(const nlohmann::json& kv, const std::string& key, int64_t def) {
  if (!kv.contains(key)) return def;
  const nlohmann::json& v = kv[key];
  if (!v.is_number_integer()) RWKVL_FAIL(kFormat, "GGUF: metadata '%s' is not an integer", key.c_str());
  return v.get<int64_t>();
}

void map_common(GgufIn& in, std::vector<Tensor>& out, const std::string& g, const std::string& p) {
  static const std::pair<const char*, const char*> kNames[] = {
      {"attn_norm.weight", "ln1.weight"},           {"attn_norm.bias", "ln1.bias"},
      {"attn_norm_2.weight", "ln2.weight"},         {"attn_norm_2.bias", "ln2.bias"},
      {"time_mix_key.weight", "att.key.weight"},    {"time_mix_value.weight", "att.value.weight"},
      {"time_mix_receptance.weight", "att.receptance.weight"},
      {"time_mix_ln.weight", "att.ln_x.weight"},    {"time_mix_ln.bias", "att.ln_x.bias"},
      {"channel_mix_key.weight", "ffn.key.weight"}};
  for (const auto& [from, to] : kNames) out.push_back(renamed(in.take(g + from), p + to));
}

void map_v6_layer(GgufIn& in, std::vector<Tensor>& out, int l, int64_t rescale) {
  const std::string g = "blk." + std::to_string(l) + ".", p = "blocks." + std::to_string(l) + ".";
  map_common(in, out, g, p);
  const int k = rescale > 0 ? static_cast<int>(l / rescale) : 0;
  out.push_back(times_pow2(renamed(in.take(g + "time_mix_output.weight"), p + "att.output.weight"), k));
  out.push_back(times_pow2(renamed(in.take(g + "channel_mix_value.weight"), p + "ffn.value.weight"), k));
  static const std::pair<const char*, const char*> kNames[] = {
      {"time_mix_gate.weight", "att.gate.weight"},      {"time_mix_lerp_x.weight", "att.time_maa_x"},
      {"time_mix_decay.weight", "att.time_decay"},      {"time_mix_first.weight", "att.time_faaaa"},
      {"channel_mix_lerp_k.weight", "ffn.time_maa_k"},  {"channel_mix_lerp_r.weight", "ffn.time_maa_r"},
      {"channel_mix_receptance.weight", "ffn.receptance.weight"}};
  for (const auto& [from, to] : kNames) out.push_back(renamed(in.take(g + from), p + to));
  if (in.has(g + "time_mix_lerp_fused.weight")) {
    split_fused(out, in.take(g + "time_mix_lerp_fused.weight"), p, {"att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r", "att.time_maa_g"});
  } else {  // older files: one tensor per mix
    for (const char* m : {"w", "k", "v", "r", "g"}) out.push_back(renamed(in.take(g + "time_mix_lerp_" + m + ".weight"), p + "att.time_maa_" + m));
  }
  // LoRAs: GGUF (out, in) -> official (in, out); time_maa_w2 (5, C, Dm) -> (5, Dm, C).
  out.push_back(transposed_f32(in.take(g + "time_mix_w1.weight"), p + "att.time_maa_w1"));
  out.push_back(transposed_f32(in.take(g + "time_mix_decay_w1.weight"), p + "att.time_decay_w1"));
  out.push_back(transposed_f32(in.take(g + "time_mix_decay_w2.weight"), p + "att.time_decay_w2"));
  const Tensor w2 = in.take(g + "time_mix_w2.weight");
  if (w2.shape.size() != 3 || w2.shape[0] != 5) RWKVL_FAIL(kFormat, "%s: GGUF: '%s' has shape %s, expected (5, C, Dm)", in.file().c_str(), w2.name.c_str(), w2.shape_str().c_str());
  const int64_t C = w2.shape[1], Dm = w2.shape[2];
  std::vector<float> v = w2.to_f32(), o(v.size());
  for (int64_t b = 0; b < 5; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < Dm; ++j) o[static_cast<size_t>((b * Dm + j) * C + c)] = v[static_cast<size_t>((b * C + c) * Dm + j)];
  out.push_back(Tensor::from_f32(p + "att.time_maa_w2", {5, Dm, C}, o.data()));
}

void map_v7_layer(GgufIn& in, std::vector<Tensor>& out, int l, int64_t head_size) {
  const std::string g = "blk." + std::to_string(l) + ".", p = "blocks." + std::to_string(l) + ".";
  map_common(in, out, g, p);
  out.push_back(renamed(in.take(g + "time_mix_output.weight"), p + "att.output.weight"));
  out.push_back(renamed(in.take(g + "channel_mix_value.weight"), p + "ffn.value.weight"));
  split_fused(out, in.take(g + "time_mix_lerp_fused.weight"), p, {"att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g"});
  static const std::pair<const char*, const char*> kVecs[] = {{"time_mix_w0.weight", "att.w0"}, {"time_mix_a0.weight", "att.a0"},
                                                              {"time_mix_k_k.weight", "att.k_k"}, {"time_mix_k_a.weight", "att.k_a"},
                                                              {"channel_mix_lerp_k.weight", "ffn.x_k"}};
  for (const auto& [from, to] : kVecs) out.push_back(renamed(in.take(g + from), p + to));
  const Tensor rk = in.take(g + "time_mix_r_k.weight");
  if (head_size <= 0 || rk.numel() % head_size) RWKVL_FAIL(kFormat, "%s: GGUF: time_mix_r_k has %lld values, head size %lld", in.file().c_str(), (long long)rk.numel(), (long long)head_size);
  out.push_back(renamed(rk, p + "att.r_k", {rk.numel() / head_size, head_size}));
  for (const char* lo : {"w", "a", "v", "g"}) {
    const std::string n1 = g + "time_mix_" + lo + "1.weight", n2 = g + "time_mix_" + lo + "2.weight";
    if (l == 0 && std::string(lo) == "v") {  // layer 0 has no value residual: the converter writes copies of a0/a1/a2
      for (const char* n : {"time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight"})
        if (in.has(g + n)) in.take(g + n);
      continue;
    }
    out.push_back(transposed_f32(in.take(n1), p + "att." + lo + "1"));
    out.push_back(transposed_f32(in.take(n2), p + "att." + lo + "2"));
    if (std::string(lo) == "v") out.push_back(renamed(in.take(g + "time_mix_v0.weight"), p + "att.v0"));
  }
}

}  // namespace

RawCheckpoint gguf_to_official(RawCheckpoint raw) {
  const std::string file = raw.file ? raw.file->path() : "?";
  const nlohmann::json& kv = raw.meta["kv"];
  const std::string arch = kv.contains("general.architecture") && kv["general.architecture"].is_string()
                               ? kv["general.architecture"].get<std::string>() : "";
  if (arch != "rwkv6" && arch != "rwkv7")
    RWKVL_FAIL(kUnsupported, "%s: GGUF architecture '%s' is not RWKV (this runtime reads llama.cpp's rwkv6 and rwkv7 files)",
               file.c_str(), arch.c_str());
  const int64_t n_layer = kv_int(kv, arch + ".block_count", -1);
  if (n_layer < 1 || n_layer > 4096) RWKVL_FAIL(kFormat, "%s: GGUF: %s.block_count is missing or out of range", file.c_str(), arch.c_str());
  GgufIn in(raw);
  std::vector<Tensor> out;
  static const std::pair<const char*, const char*> kGlobal[] = {
      {"token_embd.weight", "emb.weight"},       {"token_embd_norm.weight", "blocks.0.ln0.weight"},
      {"token_embd_norm.bias", "blocks.0.ln0.bias"}, {"output_norm.weight", "ln_out.weight"},
      {"output_norm.bias", "ln_out.bias"},       {"output.weight", "head.weight"}};
  for (const auto& [from, to] : kGlobal) out.push_back(renamed(in.take(from), to));
  for (int l = 0; l < n_layer; ++l) {
    if (arch == "rwkv6") map_v6_layer(in, out, l, kv_int(kv, "rwkv6.rescale_every_n_layers", 0));
    else map_v7_layer(in, out, l, kv_int(kv, "rwkv7.wkv.head_size", 64));
  }
  in.check_all_used();
  raw.tensors = std::move(out);
  return raw;
}

std::string gguf_token_escape(const std::string& b) {
  const bool dq = b.find('\'') != std::string::npos && b.find('"') == std::string::npos;
  std::string o;
  for (unsigned char c : b) {
    if (c == '\\') o += "\\\\";
    else if (c == '\t') o += "\\t";
    else if (c == '\n') o += "\\n";
    else if (c == '\r') o += "\\r";
    else if (c == '\'' && !dq) o += "\\'";
    else if (c < 0x20 || c >= 0x7f) {
      char h[8];
      std::snprintf(h, sizeof h, "\\x%02x", c);
      o += h;
    } else o += static_cast<char>(c);
  }
  return o;
}

std::string gguf_token_unescape(const std::string& s) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      o += s[i];
      continue;
    }
    const char c = s[++i];
    if (c == 't') o += '\t';
    else if (c == 'n') o += '\n';
    else if (c == 'r') o += '\r';
    else if (c == 'x' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      o += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else o += c;
  }
  return o;
}

std::vector<std::string> gguf_world_vocab(const RawCheckpoint& raw) {
  if (!raw.meta.contains("tokens") || !raw.meta.contains("kv")) return {};
  const nlohmann::json& kv = raw.meta["kv"];
  if (!kv.contains("tokenizer.ggml.model") || kv["tokenizer.ggml.model"] != "rwkv") return {};
  const nlohmann::json& toks = raw.meta["tokens"];
  if (toks.size() != 65536) return {};
  const nlohmann::json* types = raw.meta.contains("token_type") && raw.meta["token_type"].size() == toks.size() ? &raw.meta["token_type"] : nullptr;
  std::vector<std::string> ids(toks.size());
  for (size_t i = 1; i < toks.size(); ++i) {
    const int type = types && (*types)[i].is_number_integer() ? (*types)[i].get<int>() : types ? 0 : 1;
    if (type != 1) continue;  // control (<s>) and unused ([PADn]) ids have no bytes
    ids[i] = gguf_token_unescape(toks[i].get<std::string>());
  }
  return ids;
}

// ------------------------------------------------------------------------------------------ writing

namespace {


struct Writer {
  std::vector<GgufOutTensor> tensors;
  WeightDType type;
  bool source_i8 = false;

  // A big matrix in the requested type (rows x cols); rows of other than whole 32-value blocks stay F16.
  void matrix(const std::string& name, const Tensor& t) {
    const int64_t rows = t.shape[0], cols = t.numel() / rows;
    uint32_t gt = static_cast<uint32_t>(GgmlType::kF16);
    switch (type) {
      case WeightDType::kKeep:
        gt = t.dtype == DType::kF32 ? (source_i8 ? static_cast<uint32_t>(GgmlType::kQ8_0) : static_cast<uint32_t>(GgmlType::kF32))
             : t.dtype == DType::kBF16 ? static_cast<uint32_t>(GgmlType::kBF16)
             : t.dtype == DType::kQ4   ? static_cast<uint32_t>(GgmlType::kQ4_1)
                                        : static_cast<uint32_t>(GgmlType::kF16);
        break;
      case WeightDType::kF32: gt = static_cast<uint32_t>(GgmlType::kF32); break;
      case WeightDType::kF16: gt = static_cast<uint32_t>(GgmlType::kF16); break;
      case WeightDType::kBF16: gt = static_cast<uint32_t>(GgmlType::kBF16); break;
      case WeightDType::kI8: gt = static_cast<uint32_t>(GgmlType::kQ8_0); break;
      case WeightDType::kQ4: gt = static_cast<uint32_t>(GgmlType::kQ4_1); break;
    }
    if ((gt == static_cast<uint32_t>(GgmlType::kQ8_0) || gt == static_cast<uint32_t>(GgmlType::kQ4_1)) && cols % 32)
      gt = static_cast<uint32_t>(GgmlType::kF16);
    GgufOutTensor o{name, gt, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)}, {}};
    if (t.dtype == DType::kQ4 && gt == static_cast<uint32_t>(GgmlType::kQ4_1)) {
      o.bytes.assign(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes);  // the same blocks
    } else {
      const std::vector<float> v = t.to_f32();
      o.bytes = ggml_from_f32(gt, v.data(), rows, cols);
    }
    tensors.push_back(std::move(o));
  }
  // F32 with the given dims (innermost first).
  void f32(const std::string& name, const Tensor& t, std::vector<uint64_t> ne) {
    const std::vector<float> v = t.to_f32();
    GgufOutTensor o{name, static_cast<uint32_t>(GgmlType::kF32), std::move(ne), {}};
    o.bytes = ggml_from_f32(o.type, v.data(), 1, static_cast<int64_t>(v.size()));
    tensors.push_back(std::move(o));
  }
  void f32_from(const std::string& name, const std::vector<float>& v, std::vector<uint64_t> ne, bool f16 = false) {
    GgufOutTensor o{name, static_cast<uint32_t>(f16 ? GgmlType::kF16 : GgmlType::kF32), std::move(ne), {}};
    o.bytes = ggml_from_f32(o.type, v.data(), 1, static_cast<int64_t>(v.size()));
    tensors.push_back(std::move(o));
  }
};

// (R, C) float values transposed to (C, R).
std::vector<float> transpose(const Tensor& t) {
  const int64_t R = t.shape[0], C = t.numel() / R;
  std::vector<float> v = t.to_f32(), o(v.size());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) o[static_cast<size_t>(c * R + r)] = v[static_cast<size_t>(r * C + c)];
  return o;
}

GgufKV kv_u32(const std::string& k, uint64_t v) { return {k, GgufType::kU32, GgufType::kU8, v}; }
GgufKV kv_f32(const std::string& k, double v) { return {k, GgufType::kF32, GgufType::kU8, v}; }
GgufKV kv_str(const std::string& k, const std::string& v) { return {k, GgufType::kString, GgufType::kU8, v}; }

void tokenizer_kv(std::vector<GgufKV>& kv, const Tokenizer& tok, int n_vocab) {
  nlohmann::json tokens = nlohmann::json::array(), types = nlohmann::json::array();
  if (tok.name() == "byte") {
    for (int i = 0; i < n_vocab; ++i) tokens.push_back(gguf_token_escape(std::string(1, static_cast<char>(i)))), types.push_back(1);
  } else if (tok.name() == "world") {
    tokens.push_back("<s>"), types.push_back(3);
    for (int i = 1; i < n_vocab; ++i) {
      const std::string b = tok.token_bytes(i);
      if (b.empty()) tokens.push_back("[PAD" + std::to_string(i) + "]"), types.push_back(5);
      else tokens.push_back(gguf_token_escape(b)), types.push_back(1);
    }
  } else {
    RWKVL_FAIL(kUnsupported, "GGUF files carry the RWKV World or byte vocabulary; this model's tokenizer is '%s'", tok.name().c_str());
  }
  kv.push_back(kv_str("tokenizer.ggml.model", "rwkv"));
  kv.push_back({"tokenizer.ggml.tokens", GgufType::kArray, GgufType::kString, std::move(tokens)});
  kv.push_back({"tokenizer.ggml.token_type", GgufType::kArray, GgufType::kI32, std::move(types)});
  if (tok.name() == "world") {
    kv.push_back(kv_u32("tokenizer.ggml.bos_token_id", 0));
    kv.push_back(kv_u32("tokenizer.ggml.eos_token_id", 0));
    kv.push_back(kv_u32("tokenizer.ggml.eot_token_id", 261));
  }
}

}  // namespace

void save_gguf(const Model& m, const Tokenizer& tok, const std::string& path, WeightDType type) {
  const ModelConfig& c = m.config();
  if (c.arch_major != 6 && c.arch_major != 7)
    RWKVL_FAIL(kUnsupported, "GGUF files hold RWKV-6 and RWKV-7 models (llama.cpp's rwkv6 / rwkv7); this is %s", c.arch_name().c_str());
  if (tok.vocab_size() != c.n_vocab && !(tok.name() == "byte" && c.n_vocab <= 256))
    RWKVL_FAIL(kInvalidArgument, "the tokenizer has %d tokens, the model %d", tok.vocab_size(), c.n_vocab);
  bool any_i8 = false;
  for (const auto& [name, t] : m.tensors()) any_i8 |= t.dtype == DType::kI8;
  auto dense = Model::from_canonical(dense_tensors(m, "GGUF files", "llama.cpp"), c, FileKind::kNative, {});
  std::map<std::string, Tensor> off;
  for (Tensor& t : export_official(*dense)) off.emplace(t.name, std::move(t));
  auto get = [&](const std::string& n) -> const Tensor& {
    auto it = off.find(n);
    if (it == off.end()) RWKVL_FAIL(kInternal, "save_gguf: no tensor '%s'", n.c_str());
    return it->second;
  };
  const uint64_t C = static_cast<uint64_t>(c.n_embd);
  Writer w{{}, type, any_i8};
  w.matrix("token_embd.weight", get("emb.weight"));
  w.f32("token_embd_norm.weight", get("blocks.0.ln0.weight"), {C});
  w.f32("token_embd_norm.bias", get("blocks.0.ln0.bias"), {C});
  w.f32("output_norm.weight", get("ln_out.weight"), {C});
  w.f32("output_norm.bias", get("ln_out.bias"), {C});
  w.matrix("output.weight", get("head.weight"));
  uint64_t dm = 0, dd = 0, dw = 0, da = 0, dv = 0, dg = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string g = "blk." + std::to_string(l) + ".", p = "blocks." + std::to_string(l) + ".";
    for (const auto& [to, from] : std::initializer_list<std::pair<const char*, const char*>>{
             {"attn_norm.weight", "ln1.weight"}, {"attn_norm.bias", "ln1.bias"}, {"attn_norm_2.weight", "ln2.weight"},
             {"attn_norm_2.bias", "ln2.bias"}, {"time_mix_ln.weight", "att.ln_x.weight"}, {"time_mix_ln.bias", "att.ln_x.bias"}})
      w.f32(g + to, get(p + from), {C});
    for (const auto& [to, from] : std::initializer_list<std::pair<const char*, const char*>>{
             {"time_mix_key.weight", "att.key.weight"}, {"time_mix_value.weight", "att.value.weight"},
             {"time_mix_receptance.weight", "att.receptance.weight"}, {"time_mix_output.weight", "att.output.weight"},
             {"channel_mix_key.weight", "ffn.key.weight"}, {"channel_mix_value.weight", "ffn.value.weight"}})
      w.matrix(g + to, get(p + from));
    if (c.arch_major == 6) {
      w.matrix(g + "time_mix_gate.weight", get(p + "att.gate.weight"));
      w.matrix(g + "channel_mix_receptance.weight", get(p + "ffn.receptance.weight"));
      w.f32(g + "time_mix_lerp_x.weight", get(p + "att.time_maa_x"), {C});
      std::vector<float> fused;
      for (const char* k : {"w", "k", "v", "r", "g"}) {
        const std::vector<float> v = get(p + "att.time_maa_" + k).to_f32();
        fused.insert(fused.end(), v.begin(), v.end());
      }
      w.f32_from(g + "time_mix_lerp_fused.weight", fused, {C, 1, 1, 5});
      const Tensor& w1 = get(p + "att.time_maa_w1");  // (C, 5 Dm)
      dm = static_cast<uint64_t>(w1.shape[1] / 5);
      w.f32_from(g + "time_mix_w1.weight", transpose(w1), {C, 5 * dm});
      const Tensor& w2 = get(p + "att.time_maa_w2");  // (5, Dm, C) -> (5, C, Dm)
      std::vector<float> v = w2.to_f32(), o(v.size());
      for (uint64_t b = 0; b < 5; ++b)
        for (uint64_t j = 0; j < dm; ++j)
          for (uint64_t ci = 0; ci < C; ++ci) o[(b * C + ci) * dm + j] = v[(b * dm + j) * C + ci];
      w.f32_from(g + "time_mix_w2.weight", o, {dm, C, 5});
      w.f32(g + "time_mix_decay.weight", get(p + "att.time_decay"), {C});
      const Tensor& d1 = get(p + "att.time_decay_w1");  // (C, Dd)
      dd = static_cast<uint64_t>(d1.shape[1]);
      w.f32_from(g + "time_mix_decay_w1.weight", transpose(d1), {C, dd});
      w.f32_from(g + "time_mix_decay_w2.weight", transpose(get(p + "att.time_decay_w2")), {dd, C});
      w.f32(g + "time_mix_first.weight", get(p + "att.time_faaaa"), {static_cast<uint64_t>(c.head_size), static_cast<uint64_t>(c.n_head)});
      w.f32(g + "channel_mix_lerp_k.weight", get(p + "ffn.time_maa_k"), {C});
      w.f32(g + "channel_mix_lerp_r.weight", get(p + "ffn.time_maa_r"), {C});
    } else {
      std::vector<float> fused;
      for (const char* k : {"r", "w", "k", "v", "a", "g"}) {
        const std::vector<float> v = get(p + "att.x_" + k).to_f32();
        fused.insert(fused.end(), v.begin(), v.end());
      }
      w.f32_from(g + "time_mix_lerp_fused.weight", fused, {C, 1, 1, 6});
      for (const auto& [to, from] : std::initializer_list<std::pair<const char*, const char*>>{
               {"time_mix_w0.weight", "att.w0"}, {"time_mix_a0.weight", "att.a0"}, {"time_mix_k_k.weight", "att.k_k"},
               {"time_mix_k_a.weight", "att.k_a"}, {"time_mix_r_k.weight", "att.r_k"}, {"channel_mix_lerp_k.weight", "ffn.x_k"}})
        w.f32(g + to, get(p + from), {C});
      // LoRAs: official (C, D) / (D, C) -> GGUF torch (D, C) / (C, D); layer 0's v-LoRA are copies of a's.
      const bool lora_f16 = type != WeightDType::kF32 && !(type == WeightDType::kKeep && get(p + "att.a1").dtype == DType::kF32);
      for (const char* lo : {"w", "a", "v", "g"}) {
        const std::string src = l == 0 && std::string(lo) == "v" ? "a" : lo;
        const Tensor& t1 = get(p + "att." + src + "1");
        const uint64_t r = static_cast<uint64_t>(t1.shape[1]);
        const bool f16 = lora_f16 && std::string(lo) != "w";
        w.f32_from(g + "time_mix_" + lo + "1.weight", transpose(t1), {C, r}, f16);
        w.f32_from(g + "time_mix_" + lo + "2.weight", transpose(get(p + "att." + src + "2")), {r, C}, f16);
        if (std::string(lo) == "v") w.f32(g + "time_mix_v0.weight", get(p + "att." + src + "0"), {C});
        uint64_t& rank = std::string(lo) == "w" ? dw : std::string(lo) == "a" ? da : std::string(lo) == "v" ? dv : dg;
        if (!(l == 0 && std::string(lo) == "v") || c.n_layer == 1) rank = r;
      }
    }
  }
  const std::string arch = c.arch_major == 6 ? "rwkv6" : "rwkv7";
  std::vector<GgufKV> kv = {kv_str("general.architecture", arch), kv_str("general.type", "model"),
                            kv_str("general.name", m.path().empty() ? "rwkv-lite" : m.path().substr(m.path().rfind('/') + 1))};
  kv.push_back(kv_u32(arch + ".context_length", 1048576));
  kv.push_back(kv_u32(arch + ".embedding_length", C));
  kv.push_back(kv_u32(arch + ".block_count", static_cast<uint64_t>(c.n_layer)));
  kv.push_back(kv_f32(arch + ".attention.layer_norm_epsilon", c.ln_eps));
  kv.push_back(kv_u32(arch + ".wkv.head_size", static_cast<uint64_t>(c.head_size)));
  kv.push_back(kv_u32(arch + ".feed_forward_length", static_cast<uint64_t>(c.n_ffn)));
  if (c.arch_major == 6) {
    kv.push_back(kv_u32("rwkv6.rescale_every_n_layers", 0));  // the weights are written unscaled
    kv.push_back(kv_u32("rwkv6.time_mix_extra_dim", dm));
    kv.push_back(kv_u32("rwkv6.time_decay_extra_dim", dd));
  } else {
    kv.push_back(kv_u32("rwkv7.attention.decay_lora_rank", dw));
    kv.push_back(kv_u32("rwkv7.attention.iclr_lora_rank", da));
    kv.push_back(kv_u32("rwkv7.attention.value_residual_mix_lora_rank", dv));
    kv.push_back(kv_u32("rwkv7.attention.gate_lora_rank", dg));
  }
  kv.push_back(kv_u32(arch + ".attention.head_count", 0));
  kv.push_back(kv_u32("general.quantization_version", 2));
  tokenizer_kv(kv, tok, c.n_vocab);
  write_gguf(path, kv, w.tensors);
}

}  // namespace rwkvl
