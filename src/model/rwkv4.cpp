// RWKV-4 forward pass over a chunk of T tokens (T = 1 is RNN mode).
//   att: xk/xv/xr = lerp(ln1(x), shifted, time_mix_*); r = sigmoid(Wr xr); k = Wk xk; v = Wv xv
//        wkv = (e1*aa + e2*v) / (e1*bb + e2) with the numerically stable max trick (pp);
//        x += Wo (r * wkv)
//   ffn: r = sigmoid(Wr xr); k = relu(Wk xk)^2; x += r * (Wv k)
#include <algorithm>
#include <cmath>

#include "model/model.h"
#include "model/ops.h"

namespace rwkvl {

void forward_channel_mix_v4v5(ForwardEnv& ctx, const LayerWeights& L, float* ffn_x, float* x, size_t T);

void forward_layers_v4(ForwardEnv& ctx, State& st, float* x, size_t T, int l_begin, int l_end) {
  const ModelConfig& cfg = ctx.model().config();
  Scratch& sc = ctx.scratch();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  float *xn = sc.xn, *prev = sc.prev, *xk = sc.xk, *xv = sc.xv, *xr = sc.xr;
  float *r = sc.r, *k = sc.k, *v = sc.v, *o = sc.o;

  for (int l = l_begin; l < l_end; ++l) {
    const LayerWeights& L = ctx.layer(l);
    float* s = st.layer(cfg, l);
    float *ffn_x = s, *att_x = s + C, *aa = s + 2 * C, *bb = s + 3 * C, *pp = s + 4 * C;

    ops::layer_norm_rows(x, xn, L.ln1_w, L.ln1_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, att_x, T, C);
    ops::lerp_mix(xn, prev, L.mix_k, xk, T, C);
    ops::lerp_mix(xn, prev, L.mix_v, xv, T, C);
    ops::lerp_mix(xn, prev, L.mix_r, xr, T, C);
    {  // r, k, v: one parallel region for one token
      const Matrix* m[3] = {&L.att_r, &L.att_k, &L.att_v};
      const float* in[3] = {xr, xk, xv};
      float* out[3] = {r, k, v};
      ops::project_many(ctx, m, in, out, 3, T);
    }

    for (size_t t = 0; t < T; ++t) {
      const float* kt = k + t * C;
      const float* vt = v + t * C;
      float* out = xk + t * C;  // reuse xk as r * wkv
      for (size_t i = 0; i < C; ++i) {
        float ww = L.time_first[i] + kt[i];
        float qq = std::max(pp[i], ww);
        float e1 = std::exp(pp[i] - qq), e2 = std::exp(ww - qq);
        const float a = e1 * aa[i] + e2 * vt[i];
        const float b = e1 * bb[i] + e2;
        ww = pp[i] + L.time_decay[i];
        qq = std::max(ww, kt[i]);
        e1 = std::exp(ww - qq);
        e2 = std::exp(kt[i] - qq);
        aa[i] = e1 * aa[i] + e2 * vt[i];
        bb[i] = e1 * bb[i] + e2;
        pp[i] = qq;
        out[i] = ops::sigmoid(r[t * C + i]) * (a / b);
      }
    }
    ops::project(ctx, L.att_o, xk, o, T);
    for (size_t i = 0; i < T * C; ++i) x[i] += o[i];

    forward_channel_mix_v4v5(ctx, L, ffn_x, x, T);
  }
}

// Shared by v4 and v5: time_mix lerp, sigmoid receptance, squared-ReLU key.
void forward_channel_mix_v4v5(ForwardEnv& ctx, const LayerWeights& L, float* ffn_x, float* x, size_t T) {
  const ModelConfig& cfg = ctx.model().config();
  Scratch& sc = ctx.scratch();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  float *xn = sc.xn, *prev = sc.prev, *xk = sc.xk, *xr = sc.xr, *r = sc.r;
  float* o = sc.o;
  ops::layer_norm_rows(x, xn, L.ln2_w, L.ln2_b, T, C, cfg.ln_eps);
  ops::token_shift(xn, prev, ffn_x, T, C);
  ops::lerp_mix(xn, prev, L.ffn_mix_k, xk, T, C);
  ops::lerp_mix(xn, prev, L.ffn_mix_r, xr, T, C);
  ops::ffn_key_value(ctx, L, xk, o, T, SideProjection{&L.ffn_r, xr, r});  // r = Wr xr alongside the key
  for (size_t i = 0; i < T * C; ++i) x[i] += ops::sigmoid(r[i]) * o[i];
}

}  // namespace rwkvl
