#include "model/forward.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sigbus_guard.h"
#include "model/ops.h"

namespace rwkvl {

// ------------------------------------------------------------------------------------------ scratch

size_t Scratch::width_for(const Model& m) {
  size_t width = static_cast<size_t>(std::max(m.config().n_embd, m.config().n_ffn));
  // Every matrix a forward pass projects writes one of these buffers; the embedding, the head and the sparse FFN's
  // bundles (2 n_ffn rows of keys and values, computed through FfnRuntime's own buffers) do not.
  // Nor do v7a's token tables (one row per token, R x R values: a buffer of that width holds a chunk's rows).
  for (const auto& [name, t] : m.tensors())
    if (t.shape.size() >= 2 && name != "emb.weight" && name != "head.weight" && name != "head.weight.q4" &&
        name.find(".ffn.bundle.") == std::string::npos && name.find(".ffn.s_emb.") == std::string::npos)
      width = std::max(width, static_cast<size_t>(t.shape.size() == 3 ? t.shape[1] : t.rows()));
  const size_t R = static_cast<size_t>(m.config().de_rank);
  return std::max(width, R * R);
}

uint64_t Scratch::bytes_for(const Model& m, size_t T) {
  return static_cast<uint64_t>(kBuffers) * T * width_for(m) * sizeof(float);
}

void Scratch::reserve(const Model& m, size_t T) {
  if (T <= cap_) return;
  const size_t n = T * width_for(m);
  data_.assign(static_cast<size_t>(kBuffers) * n, 0.f);
  float* p = data_.data();
  for (float** b : {&xn, &prev, &xk, &xv, &xr, &xg, &r, &k, &v, &g, &o, &y, &lora, &tmp, &mix, &xw, &w, &sx, &a,
                    &v_first, &kk}) {
    *b = p;
    p += n;
  }
  RWKVL_CHECK(p == data_.data() + data_.size());
  cap_ = T;
}

// ------------------------------------------------------------------------------------------ checks

// True when no value is NaN or +-inf: a branch-free test of the exponent bits that compiles to vector code
// (n_embd values per token and layer: negligible next to the layer's matrix products).
bool all_finite(const float* p, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

bool model_file_changed(const Model& m) {
  for (const void* p : {m.file() ? static_cast<const void*>(m.file()->data()) : nullptr, m.emb().t.data})
    if (p && sigbus_guard::changed(p)) return true;
  return false;
}

// Non-finite activations mean corrupt weights (or state), or a model file changed under the mapping:
// stop with an error naming where they appeared instead of printing garbage.
void fail_nonfinite(const Model& m, const std::string& where) {
  const std::string& path = m.path();
  if (model_file_changed(m))
    RWKVL_FAIL(kFormat, "non-finite values %s: the model file '%s' was changed while in use", where.c_str(), path.c_str());
  RWKVL_FAIL(kFormat, "non-finite values %s (the weights are corrupt? run 'rwkv-lite verify -m %s')", where.c_str(),
             path.empty() ? "FILE" : path.c_str());
}

// ------------------------------------------------------------------------------------------ layers

void forward_layers(ForwardEnv& env, State& st, float* x, size_t T, int l_begin, int l_end, const int32_t* tokens) {
  const Model& model = env.model();
  const ModelConfig& cfg = model.config();
  RWKVL_CHECK(0 <= l_begin && l_begin <= l_end && l_end <= cfg.n_layer);
  RWKVL_CHECK(st.data.size() == State::floats_for(cfg));
  RWKVL_CHECK(env.scratch().capacity() >= T);
  if (cfg.de_rank > 0 && !tokens && l_begin < l_end)
    RWKVL_FAIL(kInvalidArgument, "an RWKV-7a model's layers need the chunk's token ids (their DeepEmbed tables)");
  // One layer at a time, so the residual stream is checked after each (scratch buffers that carry values
  // across layers, such as v7's v_first, persist between the calls).
  const size_t C = static_cast<size_t>(cfg.n_embd);
  for (int l = l_begin; l < l_end; ++l) {
    switch (cfg.arch_major) {
      case 4: forward_layers_v4(env, st, x, T, l, l + 1); break;
      case 5: forward_layers_v5(env, st, x, T, l, l + 1); break;
      case 6: forward_layers_v6(env, st, x, T, l, l + 1); break;
      case 7: forward_layers_v7(env, st, x, T, l, l + 1, tokens); break;
      default: RWKVL_FAIL(kUnsupported, "unsupported RWKV version %d", cfg.arch_major);
    }
    if (!all_finite(x, T * C))
      fail_nonfinite(model, "after layer " + std::to_string(l) + " of " + std::to_string(cfg.n_layer) + " (blocks." +
                                std::to_string(l) + ".*)");
  }
}

}  // namespace rwkvl
