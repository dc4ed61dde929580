// RWKV-7a ("DeepEmbed"): a random model written in the official PyTorch layout (a synthetic RWKV-7 exported with
// export_official, plus per layer ffn.s_emb.weight (V, 1024), ffn.s_emb_x.weight (1024, C), ffn.s1 (C, 32),
// ffn.s2 (32, F), ffn.s0 (1, 1, F)) is loaded like any checkpoint and run; its logits are compared with an
// independent float64 implementation of the reference code's RNN path (RWKV-LM RWKV-v7/rwkv_v7a_demo.py:
// ln0 folded into the embedding, each layer's table merged with s_emb_x times it, RWKV_x070_TMix_one and
// RWKV_x070_CMix_one), token by token; sequence mode against RNN mode; and bad files.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "compress/deep_embed.h"
#include "compress/pipeline.h"
#include "core/error.h"
#include "format/format.h"
#include "model/model.h"
#include "runtime/deep_embed_cache.h"
#include "runtime/session.h"
#include "test_util.h"

namespace rwkvl {
namespace {

constexpr int kR = 32;  // the reference code's view(32, 32)

// ---- the official tensors as float64 arrays, by name
struct Official {
  std::map<std::string, std::vector<double>> v;
  std::map<std::string, std::vector<int64_t>> shape;
  const std::vector<double>& operator()(const std::string& n) const {
    auto it = v.find(n);
    if (it == v.end()) throw std::runtime_error("reference: no tensor " + n);
    return it->second;
  }
  bool has(const std::string& n) const { return v.count(n) != 0; }
};

using Vec = std::vector<double>;

Vec layer_norm(const Vec& x, const Vec& w, const Vec& b, double eps) {
  const size_t n = x.size();
  double mu = 0, var = 0;
  for (double e : x) mu += e;
  mu /= static_cast<double>(n);
  for (double e : x) var += (e - mu) * (e - mu);
  var /= static_cast<double>(n);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = (x[i] - mu) / std::sqrt(var + eps) * w[i] + b[i];
  return y;
}
// y = W x with W stored (out, in): the official layout of key/value/receptance/output/head weights.
Vec out_in(const Vec& W, const Vec& x, size_t out) {
  const size_t in = x.size();
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o)
    for (size_t i = 0; i < in; ++i) y[o] += W[o * in + i] * x[i];
  return y;
}
// y = x @ W with W stored (in, out): the official layout of the LoRAs and of s1, s2.
Vec in_out(const Vec& x, const Vec& W, size_t out) {
  Vec y(out, 0.0);
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t o = 0; o < out; ++o) y[o] += x[i] * W[i * out + o];
  return y;
}
double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The reference code's RNN path in float64.
class Reference {
 public:
  Reference(const Official& z, int L, int C, int H, int F, int V)
      : z_(z), L_(L), C_(C), H_(H), N_(C / H), F_(F), V_(V) {
    att_x_.assign(static_cast<size_t>(L), Vec(static_cast<size_t>(C), 0.0));
    ffn_x_.assign(static_cast<size_t>(L), Vec(static_cast<size_t>(C), 0.0));
    S_.assign(static_cast<size_t>(L), Vec(static_cast<size_t>(C * N_), 0.0));
  }

  Vec forward(int tok) {
    const size_t C = static_cast<size_t>(C_);
    Vec e(z_("emb.weight").begin() + static_cast<int64_t>(tok) * C_,
          z_("emb.weight").begin() + static_cast<int64_t>(tok + 1) * C_);
    e = layer_norm(e, z_("blocks.0.ln0.weight"), z_("blocks.0.ln0.bias"), 1e-5);  // emb after ln0 (demo line 103)
    Vec x = e, v_first;
    for (int l = 0; l < L_; ++l) {
      const std::string b = "blocks." + std::to_string(l) + ".";
      Vec xx = layer_norm(x, z_(b + "ln1.weight"), z_(b + "ln1.bias"), 1e-5);
      const Vec att = tmix(l, b + "att.", xx, v_first);
      for (size_t i = 0; i < C; ++i) x[i] += att[i];
      xx = layer_norm(x, z_(b + "ln2.weight"), z_(b + "ln2.bias"), 1e-5);
      const Vec ffn = cmix(l, b + "ffn.", xx, e, tok);
      for (size_t i = 0; i < C; ++i) x[i] += ffn[i];
    }
    x = layer_norm(x, z_("ln_out.weight"), z_("ln_out.bias"), 1e-5);
    return out_in(z_("head.weight"), x, static_cast<size_t>(V_));
  }

 private:
  Vec tmix(int l, const std::string& a, const Vec& x, Vec& v_first) {
    const size_t C = static_cast<size_t>(C_), H = static_cast<size_t>(H_), N = static_cast<size_t>(N_);
    Vec& xp = att_x_[static_cast<size_t>(l)];
    Vec xr(C), xw(C), xk(C), xv(C), xa(C), xg(C);
    for (size_t i = 0; i < C; ++i) {
      const double d = xp[i] - x[i];
      xr[i] = x[i] + d * z_(a + "x_r")[i];
      xw[i] = x[i] + d * z_(a + "x_w")[i];
      xk[i] = x[i] + d * z_(a + "x_k")[i];
      xv[i] = x[i] + d * z_(a + "x_v")[i];
      xa[i] = x[i] + d * z_(a + "x_a")[i];
      xg[i] = x[i] + d * z_(a + "x_g")[i];
    }
    xp = x;
    const auto lora = [&](const Vec& in, const std::string& n1, const std::string& n2, int act) {
      const size_t r = static_cast<size_t>(z_.shape.at(a + n1)[1]);
      Vec h = in_out(in, z_(a + n1), r);
      for (double& e : h) e = act == 1 ? std::tanh(e) : act == 2 ? sigmoid(e) : e;
      return in_out(h, z_(a + n2), C);
    };
    const Vec r = out_in(z_(a + "receptance.weight"), xr, C);
    Vec w = lora(xw, "w1", "w2", 1);
    Vec k = out_in(z_(a + "key.weight"), xk, C);
    Vec v = out_in(z_(a + "value.weight"), xv, C);
    Vec av = lora(xa, "a1", "a2", 0);
    for (size_t i = 0; i < C; ++i) av[i] = sigmoid(z_(a + "a0")[i] + av[i]);
    const Vec g = lora(xg, "g1", "g2", 2);
    Vec kk(C);
    for (size_t i = 0; i < C; ++i) kk[i] = k[i] * z_(a + "k_k")[i];
    for (size_t h = 0; h < H; ++h) {
      double n2 = 0;
      for (size_t j = 0; j < N; ++j) n2 += kk[h * N + j] * kk[h * N + j];
      const double nrm = std::max(std::sqrt(n2), 1e-12);
      for (size_t j = 0; j < N; ++j) kk[h * N + j] /= nrm;
    }
    for (size_t i = 0; i < C; ++i) k[i] = k[i] * (1 + (av[i] - 1) * z_(a + "k_a")[i]);
    if (l == 0) {
      v_first = v;
    } else {
      const Vec vl = lora(xv, "v1", "v2", 0);
      for (size_t i = 0; i < C; ++i) v[i] = v[i] + (v_first[i] - v[i]) * sigmoid(z_(a + "v0")[i] + vl[i]);
    }
    for (size_t i = 0; i < C; ++i) w[i] = std::exp(-0.606531 * sigmoid(z_(a + "w0")[i] + w[i]));
    Vec& S = S_[static_cast<size_t>(l)];
    Vec y(C, 0.0);
    for (size_t h = 0; h < H; ++h) {
      double* s = S.data() + h * N * N;  // s[i][j]: value i, key j
      Vec sab(N * N, 0.0);               // (state @ ab) with the old state
      for (size_t i = 0; i < N; ++i)
        for (size_t j = 0; j < N; ++j) {
          double acc = 0;
          for (size_t m = 0; m < N; ++m) acc += s[i * N + m] * (-kk[h * N + m]) * (kk[h * N + j] * av[h * N + j]);
          sab[i * N + j] = acc;
        }
      for (size_t i = 0; i < N; ++i)
        for (size_t j = 0; j < N; ++j)
          s[i * N + j] = s[i * N + j] * w[h * N + j] + sab[i * N + j] + v[h * N + i] * k[h * N + j];
      for (size_t i = 0; i < N; ++i) {
        double acc = 0;
        for (size_t j = 0; j < N; ++j) acc += s[i * N + j] * r[h * N + j];
        y[h * N + i] = acc;
      }
      double mu = 0, var = 0;  // group_norm, eps 64e-5
      for (size_t i = 0; i < N; ++i) mu += y[h * N + i];
      mu /= static_cast<double>(N);
      for (size_t i = 0; i < N; ++i) var += (y[h * N + i] - mu) * (y[h * N + i] - mu);
      var /= static_cast<double>(N);
      for (size_t i = 0; i < N; ++i)
        y[h * N + i] = (y[h * N + i] - mu) / std::sqrt(var + 64e-5) * z_(a + "ln_x.weight")[h * N + i] +
                       z_(a + "ln_x.bias")[h * N + i];
      double dot = 0;
      for (size_t j = 0; j < N; ++j) dot += r[h * N + j] * k[h * N + j] * z_(a + "r_k")[h * N + j];
      for (size_t i = 0; i < N; ++i) y[h * N + i] += dot * v[h * N + i];
    }
    for (size_t i = 0; i < C; ++i) y[i] *= g[i];
    return out_in(z_(a + "output.weight"), y, C);
  }

  Vec cmix(int l, const std::string& f, const Vec& x, const Vec& e, int tok) {
    const size_t C = static_cast<size_t>(C_), F = static_cast<size_t>(F_), R = kR;
    Vec& xp = ffn_x_[static_cast<size_t>(l)];
    Vec xk(C);
    for (size_t i = 0; i < C; ++i) xk[i] = x[i] + (xp[i] - x[i]) * z_(f + "x_k")[i];
    xp = x;
    Vec k = out_in(z_(f + "key.weight"), xk, F);
    for (double& a : k) a = a > 0 ? a * a : 0.0;
    // the merged row: s_emb[tok] + emb_ln0[tok] @ s_emb_x^T (demo lines 105-106)
    Vec M(z_(f + "s_emb.weight").begin() + static_cast<int64_t>(tok) * kR * kR,
          z_(f + "s_emb.weight").begin() + static_cast<int64_t>(tok + 1) * kR * kR);
    const Vec mx = out_in(z_(f + "s_emb_x.weight"), e, R * R);
    for (size_t i = 0; i < R * R; ++i) M[i] += mx[i];
    const Vec u = in_out(x, z_(f + "s1"), R);
    Vec ss(R, 0.0);
    for (size_t i = 0; i < R; ++i)
      for (size_t j = 0; j < R; ++j) ss[j] += u[i] * M[i * R + j];
    const Vec gate = in_out(ss, z_(f + "s2"), F);
    for (size_t i = 0; i < F; ++i) k[i] *= gate[i] + z_(f + "s0")[i];
    return out_in(z_(f + "value.weight"), k, C);
  }

  const Official& z_;
  int L_, C_, H_, N_, F_, V_;
  std::vector<Vec> att_x_, ffn_x_, S_;
};

// ---- the model
struct Fixture7a {
  int L = 2, C = 64, H = 2, F = 256, V = 300;
  std::vector<Tensor> tensors;  // official layout, f32
  Official z;
};

Tensor random_tensor(const std::string& name, std::vector<int64_t> shape, double lo, double hi, std::mt19937_64& gen) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::uniform_real_distribution<double> U(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = static_cast<float>(U(gen));
  return Tensor::from_f32(name, shape, v.data());
}

Fixture7a make_7a(uint64_t seed) {
  Fixture7a fx;
  const ModelConfig cfg{
      .arch_major = 7, .n_layer = fx.L, .n_embd = fx.C, .n_vocab = fx.V, .head_size = fx.C / fx.H, .n_ffn = fx.F};
  const std::shared_ptr<Model> base = synth_model(cfg, "f32", seed);
  fx.tensors = export_official(*base);
  std::mt19937_64 gen(seed ^ 0x7a7a7a7aull);
  const double sc = 1.0 / std::sqrt(static_cast<double>(fx.C));
  for (int l = 0; l < fx.L; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".ffn.";
    fx.tensors.push_back(random_tensor(p + "s_emb.weight", {fx.V, kR * kR}, -0.3, 0.3, gen));
    fx.tensors.push_back(random_tensor(p + "s_emb_x.weight", {kR * kR, fx.C}, -0.3 * sc, 0.3 * sc, gen));
    fx.tensors.push_back(random_tensor(p + "s1", {fx.C, kR}, -sc, sc, gen));
    fx.tensors.push_back(random_tensor(p + "s2", {kR, fx.F}, -0.3, 0.3, gen));
    fx.tensors.push_back(random_tensor(p + "s0", {1, 1, fx.F}, 0.5, 1.5, gen));
  }
  for (const Tensor& t : fx.tensors) {
    const std::vector<float> f = t.to_f32();
    fx.z.v[t.name] = Vec(f.begin(), f.end());
    fx.z.shape[t.name] = t.shape;
  }
  return fx;
}

std::string write_official(const std::vector<Tensor>& tensors, const std::string& name) {
  const std::string path = test::temp_dir() + "/" + name;
  write_pth(path, tensors);
  return path;
}

std::vector<float> run(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks, size_t chunk,
                       int threads) {
  SessionParams sp;
  sp.threads = threads;
  Session ctx(m, sp);
  State st;
  st.reset(m->config());
  std::vector<float> all(toks.size() * static_cast<size_t>(m->config().n_vocab));
  ctx.eval(st, toks.data(), toks.size(), chunk, nullptr, all.data());
  return all;
}

TEST(Rwkv7a, OfficialCheckpointMatchesFloat64Reference) {
  const Fixture7a fx = make_7a(17);
  const std::string path = write_official(fx.tensors, "rwkv7a.pth");
  const std::shared_ptr<const Model> m = Model::load(path, {});
  EXPECT_EQ(m->config().de_rank, kR);
  EXPECT_EQ(m->config().arch_name(), "v7a");
  ASSERT_TRUE(m->layer(0).deep_embed());

  std::mt19937_64 gen(5);
  std::vector<int32_t> toks(128);
  for (int32_t& t : toks) t = static_cast<int32_t>(gen() % static_cast<uint64_t>(fx.V));
  const std::vector<float> rnn = run(m, toks, 1, 1);
  Reference ref(fx.z, fx.L, fx.C, fx.H, fx.F, fx.V);
  const size_t V = static_cast<size_t>(fx.V);
  double worst = 0, scale = 0;
  for (size_t t = 0; t < toks.size(); ++t) {
    const Vec want = ref.forward(toks[t]);
    for (size_t i = 0; i < V; ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(rnn[t * V + i]) - want[i]));
      scale = std::max(scale, std::fabs(want[i]));
    }
  }
  std::printf("  7a vs float64 reference, 128 tokens: max |diff| %.3g (logits up to %.3g)\n", worst, scale);
  EXPECT_LE(worst, 1e-4 * std::max(1.0, scale));

  // Sequence mode (chunks of 16 and 128, 2 threads) equals RNN mode.
  for (size_t chunk : {size_t{16}, size_t{128}}) {
    const std::vector<float> seq = run(m, toks, chunk, 2);
    double d = 0;
    for (size_t i = 0; i < seq.size(); ++i) d = std::max(d, static_cast<double>(std::fabs(seq[i] - rnn[i])));
    EXPECT_LE(d, 1e-4 * std::max(1.0, scale)) << "chunk " << chunk;
  }
}

// The table merged with s_emb_x ln0(emb) ahead of time (as the reference code does at load, and as a conversion may
// store it): the same logits as the file that keeps s_emb_x.
TEST(Rwkv7a, MergedTablesGiveTheSameLogits) {
  const Fixture7a fx = make_7a(31);
  const size_t C = static_cast<size_t>(fx.C), RR = static_cast<size_t>(kR * kR);
  std::vector<Tensor> merged;
  for (const Tensor& t : fx.tensors) {
    if (t.name.find("ffn.s_emb_x.") != std::string::npos) continue;
    if (t.name.find("ffn.s_emb.weight") == std::string::npos) {
      merged.push_back(t);
      continue;
    }
    const std::string px = t.name.substr(0, t.name.find("s_emb.weight")) + "s_emb_x.weight";
    std::vector<float> m(static_cast<size_t>(fx.V) * RR);
    for (int v = 0; v < fx.V; ++v) {
      Vec e(fx.z("emb.weight").begin() + static_cast<int64_t>(v) * fx.C,
            fx.z("emb.weight").begin() + static_cast<int64_t>(v + 1) * fx.C);
      e = layer_norm(e, fx.z("blocks.0.ln0.weight"), fx.z("blocks.0.ln0.bias"), 1e-5);
      const Vec add = out_in(fx.z(px), e, RR);
      for (size_t j = 0; j < RR; ++j) m[v * RR + j] = static_cast<float>(fx.z(t.name)[v * RR + j] + add[j]);
    }
    merged.push_back(Tensor::from_f32(t.name, t.shape, m.data()));
  }
  (void)C;
  const auto a = Model::load(write_official(fx.tensors, "rwkv7a-x.pth"), {});
  const auto b = Model::load(write_official(merged, "rwkv7a-merged.pth"), {});
  EXPECT_FALSE(a->layer(1).de_emb_x.empty());
  EXPECT_TRUE(b->layer(1).de_emb_x.empty());
  std::vector<int32_t> toks(40);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 37 + 11) % static_cast<size_t>(fx.V));
  const std::vector<float> la = run(a, toks, 8, 2), lb = run(b, toks, 8, 2);
  double d = 0, scale = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(la[i] - lb[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(la[i])));
  }
  EXPECT_LE(d, 1e-5 * std::max(1.0, scale));
}

// synth writes 7a models (merged tables, any rank); the native file keeps de_rank and gives the same bits; the
// tables convert like any matrix (int8 with row scales).
TEST(Rwkv7a, SynthNativeRoundTripAndInt8Tables) {
  const std::shared_ptr<Model> m = synth_model(
      ModelConfig{.arch_major = 7, .n_layer = 2, .n_embd = 64, .n_vocab = 200, .head_size = 32, .de_rank = 8}, "f32",
      3);
  EXPECT_EQ(m->config().arch_name(), "v7a");
  ASSERT_TRUE(m->layer(1).deep_embed());
  const std::string path = test::temp_dir() + "/synth7a.rwkvl";
  m->save_native(path, WeightDType::kKeep);
  const auto back = Model::load(path, {});
  EXPECT_EQ(back->config().de_rank, 8);
  std::vector<int32_t> toks = {1, 5, 199, 0, 42, 42, 7, 100, 3, 150};
  const std::vector<float> want = run(m, toks, 1, 1), got = run(back, toks, 4, 1), seq = run(m, toks, 4, 1);
  EXPECT_EQ(seq, got);
  double d = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(want[i] - seq[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
  }
  EXPECT_LE(d, 1e-4 * std::max(1.0, scale));
  Model::LoadOptions o;
  o.weight_dtype = WeightDType::kI8;
  const auto q = Model::load(path, o);
  EXPECT_EQ(q->layer(0).de_emb.ref.dtype, DType::kI8);
  EXPECT_EQ(q->layer(0).de_s1.ref.dtype, DType::kF32);  // the small projections stay exact, as the LoRAs
  const std::vector<float> lq = run(q, toks, 4, 1);
  double dq = 0;
  for (size_t i = 0; i < lq.size(); ++i) dq = std::max(dq, static_cast<double>(std::fabs(lq[i] - want[i])));
  EXPECT_LT(dq, 0.05 * std::max(1.0, scale));  // int8 everywhere: close, not equal
  EXPECT_GT(dq, 0.0);
}

// The conversion pass merges s_emb_x into the tables (the same logits as the file that keeps it, no s_emb_x left),
// records the calibration's most frequent tokens, and the runtime pins their rows.
TEST(Rwkv7a, DeepEmbedPassMergesTablesAndRecordsHotTokens) {
  const Fixture7a fx = make_7a(41);
  const auto a = Model::load(write_official(fx.tensors, "rwkv7a-pass.pth"), {});
  compress::DeepEmbedOptions o;
  o.calib = {9, 5, 5, 7, 5, 7, 42};  // 5 x3, 7 x2, then 9 and 42 once (lower id first)
  o.hot = 3;
  o.n_threads = 2;
  compress::DeepEmbedReport rep;
  const std::shared_ptr<Model> b = compress::deep_embed(a, o, &rep);
  EXPECT_EQ(rep.layers_merged, fx.L);
  for (int l = 0; l < fx.L; ++l) {
    EXPECT_TRUE(b->layer(l).de_emb_x.empty());
    EXPECT_EQ(b->tensors().count("blocks." + std::to_string(l) + ".ffn.s_emb_x.weight"), 0u);
  }
  EXPECT_EQ(rep.pass["deep_embed"]["hot_tokens"], nlohmann::json({5, 7, 9}));
  EXPECT_DOUBLE_EQ(rep.hot_share, 6.0 / 7.0);
  std::vector<int32_t> toks(40);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 53 + 2) % static_cast<size_t>(fx.V));
  const std::vector<float> la = run(a, toks, 8, 2), lb = run(b, toks, 8, 2);
  double d = 0, scale = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(la[i] - lb[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(la[i])));
  }
  EXPECT_LE(d, 1e-5 * std::max(1.0, scale));  // (may be 0: on NEON the two sums round alike)
  // Saved natively, the hot tokens travel with the file and the cache pins them (at most half its slots).
  const std::string path = test::temp_dir() + "/rwkv7a-pass.rwkvl";
  b->save_native(path, WeightDType::kKeep);
  const auto c = Model::load(path, {});
  SessionParams sp;
  sp.memory.de_rows = 8;
  EXPECT_EQ(Session(c, sp).deep_embed_cache()->pinned(), 3);
  sp.memory.de_rows = 4;
  EXPECT_EQ(Session(c, sp).deep_embed_cache()->pinned(), 2);
  // Merged already: nothing to merge again. A plain v7 model and a quantised table with s_emb_x are refused.
  EXPECT_EQ(
      [&] {
        compress::DeepEmbedReport r2;
        compress::deep_embed(c, {}, &r2);
        return r2.layers_merged;
      }(),
      0);
  const auto v7 =
      synth_model(ModelConfig{.arch_major = 7, .n_layer = 1, .n_embd = 64, .n_vocab = 50, .head_size = 32}, "f32", 1);
  EXPECT_THROW(compress::deep_embed(v7, {}, nullptr), Error);
  Model::LoadOptions q;
  q.weight_dtype = WeightDType::kI8;
  EXPECT_THROW(compress::deep_embed(Model::load(write_official(fx.tensors, "rwkv7a-q.pth"), q), {}, nullptr), Error);
}

// The pipeline runs the merge first, then quantises the merged tables (int8 with per-row scales).
TEST(Rwkv7a, CompressPipelineMergesThenQuantises) {
  const Fixture7a fx = make_7a(43);
  const auto a = Model::load(write_official(fx.tensors, "rwkv7a-pipe.pth"), {});
  compress::Recipe r;
  r.deep_embed.enabled = true;
  r.quant.type = compress::Quant::kInt8;
  compress::PipelineReport rep;
  const auto b = compress::compress_model(a, r, compress::calibration_from_tokens({1, 2, 2}, "t"), nullptr, &rep);
  EXPECT_TRUE(rep.ran_deep_embed);
  EXPECT_EQ(b->layer(0).de_emb.ref.dtype, DType::kI8);
  EXPECT_TRUE(b->layer(1).de_emb_x.empty());
  EXPECT_EQ(rep.to_json()["deep_embed"]["hot_tokens"], nlohmann::json({2, 1}));
  compress::Recipe plain;
  plain.deep_embed.enabled = true;
  const auto v7 =
      synth_model(ModelConfig{.arch_major = 7, .n_layer = 1, .n_embd = 64, .n_vocab = 50, .head_size = 32}, "f32", 1);
  EXPECT_THROW(compress::compress_model(v7, plain, compress::calibration_from_tokens({}, "none"), nullptr, nullptr),
               Error);
}

TEST(Rwkv7a, MissingOrMisshapenTensorsAreClearErrors) {
  const Fixture7a fx = make_7a(23);
  for (const char* drop : {"blocks.1.ffn.s2", "blocks.1.ffn.s_emb.weight", "blocks.0.ffn.s0", "blocks.1.ffn.s1"}) {
    std::vector<Tensor> ts;
    for (const Tensor& t : fx.tensors)
      if (t.name != drop) ts.push_back(t);
    const std::string path = write_official(ts, "rwkv7a-missing.pth");
    try {
      Model::load(path, {});
      ADD_FAILURE() << "loaded without " << drop;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(drop).substr(std::string(drop).find("ffn."))), std::string::npos)
          << drop << ": " << e.what();
    }
  }
  std::vector<Tensor> ts = fx.tensors;
  std::mt19937_64 gen(1);
  for (Tensor& t : ts)
    if (t.name == "blocks.1.ffn.s_emb.weight") t = random_tensor(t.name, {fx.V, kR * kR - 24}, -0.1, 0.1, gen);
  const std::string path = write_official(ts, "rwkv7a-width.pth");
  try {
    Model::load(path, {});
    ADD_FAILURE() << "loaded a table of the wrong width";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.ffn.s_emb.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1024"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkvl
