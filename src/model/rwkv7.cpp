// RWKV-7 ("Goose") forward pass over a chunk of T tokens (T = 1 is RNN mode).
//   att: sx = shifted - xn; x_b = xn + sx*x_b for b in r,w,k,v,a,g
//        r = Wr xr; w = exp(-e^-0.5 sigmoid(w0 + w2 tanh(w1 xw))); k = Wk xk; v = Wv xv
//        v += (v_first - v) sigmoid(v0 + v2 v1 xv)  (layers > 0; v_first = layer 0's v)
//        a = sigmoid(a0 + a2 a1 xa); g = g2 sigmoid(g1 xg)
//        kk = L2-normalise_per_head(k * k_k); k = k (1 + (a - 1) k_a)
//        per head, state S (value i x key j): S = S diag(w) + v k^T + (S (-kk)) (kk a)^T; out = S r
//        GroupNorm (eps 64e-5) * ln_x; out += v * sum_head(r k r_k); * g; x += Wo out
//   ffn: xk = xn + sx*x_k; x += Wv relu(Wk xk)^2
#include <cmath>
#include <cstring>

#include "model/model.h"
#include "model/ops.h"

namespace rwkvl {

namespace {

void wkv7_token(const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a,
                float* S, float* out, size_t H, size_t N) {
  for (size_t h = 0; h < H; ++h) {
    float* Sh = S + h * N * N;
    const size_t o = h * N;
    for (size_t i = 0; i < N; ++i) {
      float* Si = Sh + i * N;
      float sa = 0.f;
      for (size_t j = 0; j < N; ++j) sa -= kk[o + j] * Si[j];
      const float vi = v[o + i];
      float acc = 0.f;
      for (size_t j = 0; j < N; ++j) {
        const float sij = Si[j] * w[o + j] + vi * k[o + j] + sa * kk[o + j] * a[o + j];
        Si[j] = sij;
        acc += sij * r[o + j];
      }
      out[o + i] = acc;
    }
  }
}

// v7a DeepEmbed gate of T tokens (gate: T x F): per token t, u = s1 x_t (R values, x = the ln2 output),
// ss_j = sum_i u_i M_t[i][j] with M_t the token's row as an R x R matrix (row-major), gate_t = s2 ss + s0.
// rows (T x R*R) and small (T x 2R) are scratch.
void deep_embed_gate(ForwardEnv& ctx, const LayerWeights& L, const float* xn, const int32_t* tokens, size_t T,
                     float* rows, float* small, float* gate) {
  const size_t R = static_cast<size_t>(L.de_s1.rows), F = static_cast<size_t>(L.de_s2.rows);
  ctx.deep_embed_rows(L, tokens, T, rows);
  float *u = small, *ss = small + T * R;
  ops::project(ctx, L.de_s1, xn, u, T);
  for (size_t t = 0; t < T; ++t) {
    const float* M = rows + t * R * R;
    float* o = ss + t * R;
    for (size_t j = 0; j < R; ++j) o[j] = 0.f;
    for (size_t i = 0; i < R; ++i) {
      const float ui = u[t * R + i];
      for (size_t j = 0; j < R; ++j) o[j] += ui * M[i * R + j];
    }
  }
  ops::project(ctx, L.de_s2, ss, gate, T);
  for (size_t t = 0; t < T; ++t)
    for (size_t f = 0; f < F; ++f) gate[t * F + f] += L.de_s0[f];
}

}  // namespace

void forward_layers_v7(ForwardEnv& ctx, State& st, float* x, size_t T, int l_begin, int l_end, const int32_t* tokens) {
  const ModelConfig& cfg = ctx.model().config();
  Scratch& sc = ctx.scratch();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const size_t H = static_cast<size_t>(cfg.n_head), N = static_cast<size_t>(cfg.head_size);
  float *xn = sc.xn, *prev = sc.prev, *xk = sc.xk, *xv = sc.xv, *xr = sc.xr;
  float *r = sc.r, *k = sc.k, *v = sc.v, *o = sc.o;
  float *xg = sc.xg, *g = sc.g, *y = sc.y, *lora = sc.lora, *tmp = sc.tmp;
  float *xa = sc.mix, *xw = sc.xw, *w = sc.w, *sx = sc.sx, *a = sc.a;
  float *v_first = sc.v_first, *kk = sc.kk;

  auto lora2 = [&](const Matrix& m1, const Matrix& m2, const float* in, float* out, int act) {
    ops::project(ctx, m1, in, lora, T);
    const size_t n = T * static_cast<size_t>(m1.ref.rows);
    if (act == 1)
      for (size_t i = 0; i < n; ++i) lora[i] = std::tanh(lora[i]);
    else if (act == 2)
      for (size_t i = 0; i < n; ++i) lora[i] = ops::sigmoid(lora[i]);
    ops::project(ctx, m2, lora, out, T);
  };

  for (int l = l_begin; l < l_end; ++l) {
    const LayerWeights& L = ctx.layer(l);
    float* s = st.layer(cfg, l);
    float *ffn_x = s, *att_x = s + C, *S = s + 2 * C;

    ops::layer_norm_rows(x, xn, L.ln1_w, L.ln1_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, att_x, T, C);
    for (size_t i = 0; i < T * C; ++i) sx[i] = prev[i] - xn[i];
    ops::add_mix(xn, sx, L.x_r, xr, T, C);
    ops::add_mix(xn, sx, L.x_w, xw, T, C);
    ops::add_mix(xn, sx, L.x_k, xk, T, C);
    ops::add_mix(xn, sx, L.x_v, xv, T, C);
    ops::add_mix(xn, sx, L.x_a, xa, T, C);
    ops::add_mix(xn, sx, L.x_g, xg, T, C);

    {  // r, k, v: one parallel region for one token
      const Matrix* m[3] = {&L.att_r, &L.att_k, &L.att_v};
      const float* in[3] = {xr, xk, xv};
      float* out[3] = {r, k, v};
      ops::project_many(ctx, m, in, out, 3, T);
    }
    lora2(L.w1, L.w2, xw, w, 1);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < C; ++i)
        w[t * C + i] = std::exp(-0.606531f * ops::sigmoid(L.w0[i] + w[t * C + i]));
    if (l == 0) {
      std::memcpy(v_first, v, T * C * sizeof(float));
    } else {
      lora2(L.v1, L.v2, xv, tmp, 0);
      for (size_t t = 0; t < T; ++t)
        for (size_t i = 0; i < C; ++i) {
          const size_t q = t * C + i;
          v[q] += (v_first[q] - v[q]) * ops::sigmoid(L.v0[i] + tmp[q]);
        }
    }
    lora2(L.a1, L.a2, xa, a, 0);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < C; ++i) a[t * C + i] = ops::sigmoid(L.a0[i] + a[t * C + i]);
    lora2(L.g1, L.g2, xg, g, 2);

    for (size_t t = 0; t < T; ++t) {
      for (size_t h = 0; h < H; ++h) {
        const size_t base = t * C + h * N;
        double ss = 0;
        for (size_t j = 0; j < N; ++j) {
          const float q = k[base + j] * L.k_k[h * N + j];
          kk[base + j] = q;
          ss += static_cast<double>(q) * q;
        }
        const float scale = 1.f / std::fmax(static_cast<float>(std::sqrt(ss)), 1e-12f);
        for (size_t j = 0; j < N; ++j) kk[base + j] *= scale;
      }
      for (size_t i = 0; i < C; ++i) {
        const size_t q = t * C + i;
        k[q] = k[q] * (1.f + (a[q] - 1.f) * L.k_a[i]);
      }
    }
    for (size_t t = 0; t < T; ++t)
      wkv7_token(r + t * C, w + t * C, k + t * C, v + t * C, kk + t * C, a + t * C, S, y + t * C, H, N);
    ops::group_norm_rows(y, L.ln_x_w, L.ln_x_b, T, H, N, cfg.ln_x_eps);
    for (size_t t = 0; t < T; ++t)
      for (size_t h = 0; h < H; ++h) {
        const size_t base = t * C + h * N;
        float dot = 0.f;
        for (size_t j = 0; j < N; ++j) dot += r[base + j] * k[base + j] * L.r_k[h * N + j];
        for (size_t j = 0; j < N; ++j) y[base + j] += dot * v[base + j];
      }
    for (size_t i = 0; i < T * C; ++i) y[i] *= g[i];
    ops::project(ctx, L.att_o, y, o, T);
    for (size_t i = 0; i < T * C; ++i) x[i] += o[i];

    // channel mix
    ops::layer_norm_rows(x, xn, L.ln2_w, L.ln2_b, T, C, cfg.ln_eps);
    ops::token_shift(xn, prev, ffn_x, T, C);
    for (size_t i = 0; i < T * C; ++i) sx[i] = prev[i] - xn[i];
    ops::add_mix(xn, sx, L.ffn_mix_k, xk, T, C);  // ffn.x_k
    const float* gate = nullptr;
    if (L.deep_embed()) {
      deep_embed_gate(ctx, L, xn, tokens, T, tmp, lora, g);
      gate = g;
    }
    ops::ffn_key_value(ctx, L, xk, o, T, {}, gate);
    for (size_t i = 0; i < T * C; ++i) x[i] += o[i];
  }
}

}  // namespace rwkvl
