// RWKV-5.x forward pass over a chunk of T tokens (T = 1 is RNN mode).
//   att: xk/xv/xr/xg = lerp(ln1(x), shifted, time_mix_*); r,k,v = W* x*; g = silu(Wg xg) (5.1+)
//        per head, state S (key i x value j):  out_j = sum_i r_i (u_i k_i v_j + S_ij);
//        S_ij = S_ij w_i + k_i v_j      (w = exp(-exp(decay)), u = time_faaaa)
//        GroupNorm(out) * ln_x (eps 1e-5 for rwkv.cpp files, 64e-5 officially); * g; x += Wo out
//   ffn: as v4.
#include "model/model.h"
#include "model/ops.h"

namespace rwkvl {

void forward_channel_mix_v4v5(ForwardEnv& ctx, const LayerWeights& L, float* ffn_x, float* x, size_t T);

// kern::wkv5_token (SIMD, the documented fma sequence) over T tokens (w per token when w_stride = C, else one w for
// all), the heads split over the pool's threads: each head's state and outputs are its own, so the split changes no
// result. Below ~64K multiply-adds (a 4-head D256 token) the region costs more than it saves and the heads run on the
// caller.
void wkv5_tokens(ForwardEnv& ctx, const float* r, const float* k, const float* v, const float* w, size_t w_stride,
                 const float* u, float* S, float* y, size_t T, size_t H, size_t N) {
  struct Args {
    const float *r, *k, *v, *w, *u;
    float *S, *y;
    size_t w_stride, T, C, N;
    void run(int64_t h0, int64_t h1) const {
      const size_t o = static_cast<size_t>(h0) * N, nh = static_cast<size_t>(h1 - h0);
      for (size_t t = 0; t < T; ++t)
        kern::wkv5_token(r + t * C + o, k + t * C + o, v + t * C + o, w + t * w_stride + o, u + o, S + o * N,
                         y + t * C + o, static_cast<int64_t>(nh), static_cast<int64_t>(N));
    }
  } a{r, k, v, w, u, S, y, w_stride, T, H * N, N};
  ThreadPool* pool = ctx.pool();
  if (!pool || pool->size() == 1 || H < 2 || T * H * N * N < (64u << 10)) {
    a.run(0, static_cast<int64_t>(H));
    return;
  }
  // One small capture (a pointer) keeps std::function from allocating on every call.
  pool->parallel_for(static_cast<int64_t>(H), [p = &a](int64_t h0, int64_t h1) { p->run(h0, h1); }, 1);
}

void forward_layers_v5(ForwardEnv& ctx, State& st, float* x, size_t T, int l_begin, int l_end) {
  const ModelConfig& cfg = ctx.model().config();
  Scratch& sc = ctx.scratch();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const size_t H = static_cast<size_t>(cfg.n_head), N = static_cast<size_t>(cfg.head_size);
  float *xn = sc.xn, *prev = sc.prev, *xk = sc.xk, *xv = sc.xv, *xr = sc.xr;
  float *r = sc.r, *k = sc.k, *v = sc.v, *o = sc.o, *xg = sc.xg, *g = sc.g;
  float* y = sc.y;

  for (int l = l_begin; l < l_end; ++l) {
    const LayerWeights& L = ctx.layer(l);
    float* s = st.layer(cfg, l);
    float *ffn_x = s, *att_x = s + C, *S = s + 2 * C;

    ops::layer_norm_rows(x, xn, L.ln1_w, L.ln1_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, att_x, T, C);
    ops::lerp_mix(xn, prev, L.mix_k, xk, T, C);
    ops::lerp_mix(xn, prev, L.mix_v, xv, T, C);
    ops::lerp_mix(xn, prev, L.mix_r, xr, T, C);
    if (cfg.has_gate) ops::lerp_mix(xn, prev, L.mix_g, xg, T, C);
    {  // r, k, v (and g): one parallel region for one token
      const Matrix* m[4] = {&L.att_r, &L.att_k, &L.att_v, &L.att_g};
      const float* in[4] = {xr, xk, xv, xg};
      float* out[4] = {r, k, v, g};
      ops::project_many(ctx, m, in, out, cfg.has_gate ? 4 : 3, T);
    }
    wkv5_tokens(ctx, r, k, v, L.time_decay, 0, L.time_first, S, y, T, H, N);
    ops::group_norm_rows(y, L.ln_x_w, L.ln_x_b, T, H, N, cfg.ln_x_eps);
    if (cfg.has_gate)
      for (size_t i = 0; i < T * C; ++i) y[i] *= ops::silu(g[i]);
    ops::project(ctx, L.att_o, y, o, T);
    for (size_t i = 0; i < T * C; ++i) x[i] += o[i];

    forward_channel_mix_v4v5(ctx, L, ffn_x, x, T);
  }
}

}  // namespace rwkvl
