// RWKV-6 ("Finch") forward pass over a chunk of T tokens (T = 1 is RNN mode).
//   att: sx = shifted - xn; xxx = xn + sx*maa_x; m_{w,k,v,r,g} = maa_w2[b] tanh(maa_w1 xxx)[b]
//        x_b = xn + sx*(maa_b + m_b); r,k,v = W* x*; g = silu(Wg xg)
//        w = exp(-exp(time_decay + decay_w2 tanh(decay_w1 xw)))   (data-dependent decay)
//        wkv as v5 with per-token w; GroupNorm (eps 64e-5) * ln_x; * g; x += Wo out
//   ffn: xk = xn + sx*maa_k; xr = xn + sx*maa_r; x += sigmoid(Wr xr) * (Wv relu(Wk xk)^2)
#include <cmath>
#include <cstring>

#include "model/model.h"
#include "model/ops.h"

namespace rwkvl {

void wkv5_tokens(ForwardEnv& ctx, const float* r, const float* k, const float* v, const float* w, size_t w_stride,
                 const float* u, float* S, float* y, size_t T, size_t H, size_t N);

void forward_layers_v6(ForwardEnv& ctx, State& st, float* x, size_t T, int l_begin, int l_end) {
  const ModelConfig& cfg = ctx.model().config();
  Scratch& sc = ctx.scratch();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const size_t H = static_cast<size_t>(cfg.n_head), N = static_cast<size_t>(cfg.head_size);
  float *xn = sc.xn, *prev = sc.prev, *xk = sc.xk, *xv = sc.xv, *xr = sc.xr;
  float *r = sc.r, *k = sc.k, *v = sc.v, *o = sc.o;
  float *xg = sc.xg, *g = sc.g, *y = sc.y, *lora = sc.lora, *slice = sc.tmp;
  float *m = sc.mix, *xw = sc.xw, *w = sc.w, *sx = sc.sx;

  for (int l = l_begin; l < l_end; ++l) {
    const LayerWeights& L = ctx.layer(l);
    float* s = st.layer(cfg, l);
    float *ffn_x = s, *att_x = s + C, *S = s + 2 * C;

    ops::layer_norm_rows(x, xn, L.ln1_w, L.ln1_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, att_x, T, C);
    for (size_t i = 0; i < T * C; ++i) sx[i] = prev[i] - xn[i];
    ops::add_mix(xn, sx, L.maa_x, xr, T, C);  // xr holds xxx for now
    const size_t Lm = static_cast<size_t>(L.maa_w2[0].ref.cols);
    ops::project(ctx, L.maa_w1, xr, lora, T);  // T x 5*Lm
    for (size_t i = 0; i < T * 5 * Lm; ++i) lora[i] = std::tanh(lora[i]);
    const float* maa[5] = {L.maa_w, L.maa_k, L.maa_v, L.maa_r, L.maa_g};
    float* dst[5] = {xw, xk, xv, xr, xg};
    for (size_t b = 0; b < 5; ++b) {
      for (size_t t = 0; t < T; ++t) std::memcpy(slice + t * Lm, lora + t * 5 * Lm + b * Lm, Lm * sizeof(float));
      ops::project(ctx, L.maa_w2[b], slice, m, T);
      for (size_t t = 0; t < T; ++t)
        for (size_t i = 0; i < C; ++i)
          dst[b][t * C + i] = xn[t * C + i] + sx[t * C + i] * (maa[b][i] + m[t * C + i]);
    }
    {  // r, k, v, g and the decay LoRA's first factor: one parallel region for one token
      const Matrix* mm[5] = {&L.att_r, &L.att_k, &L.att_v, &L.att_g, &L.decay_w1};
      const float* in[5] = {xr, xk, xv, xg, xw};
      float* out[5] = {r, k, v, g, lora};
      ops::project_many(ctx, mm, in, out, 5, T);
    }
    const size_t Ld = static_cast<size_t>(L.decay_w1.ref.rows);
    for (size_t i = 0; i < T * Ld; ++i) lora[i] = std::tanh(lora[i]);
    ops::project(ctx, L.decay_w2, lora, w, T);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < C; ++i) w[t * C + i] = std::exp(-std::exp(L.time_decay[i] + w[t * C + i]));

    wkv5_tokens(ctx, r, k, v, w, C, L.time_first, S, y, T, H, N);  // heads split over the threads
    ops::group_norm_rows(y, L.ln_x_w, L.ln_x_b, T, H, N, cfg.ln_x_eps);
    for (size_t i = 0; i < T * C; ++i) y[i] *= ops::silu(g[i]);
    ops::project(ctx, L.att_o, y, o, T);
    for (size_t i = 0; i < T * C; ++i) x[i] += o[i];

    // channel mix
    ops::layer_norm_rows(x, xn, L.ln2_w, L.ln2_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, ffn_x, T, C);
    for (size_t i = 0; i < T * C; ++i) sx[i] = prev[i] - xn[i];
    ops::add_mix(xn, sx, L.ffn_mix_k, xk, T, C);  // ffn.time_maa_k
    ops::add_mix(xn, sx, L.ffn_mix_r, xr, T, C);  // ffn.time_maa_r
    ops::ffn_key_value(ctx, L, xk, o, T, SideProjection{&L.ffn_r, xr, r});  // r = Wr xr alongside the key
    for (size_t i = 0; i < T * C; ++i) x[i] += ops::sigmoid(r[i]) * o[i];
  }
}

}  // namespace rwkvl
