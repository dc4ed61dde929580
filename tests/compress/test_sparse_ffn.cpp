// The neuron-bundled channel-mix (issue #5, `rwkv-lite compress --sparse-ffn`):
//  * bundle_ffn / unbundle_ffn store Wk rows and Wv columns interleaved in the given neuron order and give
//    them back bit for bit (float dtypes) or as the quantised rows of [Wk; Wv^T] (i8 / q4);
//  * compress::sparse_ffn on synthetic models of every architecture (and on the tiny reference models)
//    leaves the model's function unchanged in dense and exact mode, RNN and chunked; predict mode with every
//    neuron forced in equals exact; the counters are consistent;
//  * the native file keeps bundled models bit for bit and refuses corrupt predictor / order blocks;
//  * the neuron cache gives the same logits as reading the mapped file; FfnRuntime refuses bad settings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/sparse_ffn.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "runtime/ffn_runtime.h"
#include "runtime/neuron_cache.h"
#include "compare.h"
#include "test_util.h"
#include "tiny_models.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

// ------------------------------------------------------------------------------------------ helpers

std::vector<int32_t> random_tokens(size_t n, int vocab, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(g);
  return t;
}

std::vector<int32_t> random_perm(int64_t n, uint32_t seed) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::mt19937 g(seed);
  std::shuffle(p.begin(), p.end(), g);
  return p;
}

struct RunResult {
  std::vector<float> logits;  // n x V: the logits after every token
  FfnStats stats;
  NeuronCache::Stats cache;
  bool has_cache = false;
};

// Feeds `toks` from a fresh state; `opt` null = the context's default FFN settings.
RunResult run(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks, size_t chunk,
              const FfnOptions* opt, int threads = 2) {
  SessionParams sp;
  sp.threads = threads;
  if (opt) sp.ffn = *opt;
  Session ctx(m, sp);
  State st;
  st.reset(m->config());
  RunResult r;
  const size_t V = static_cast<size_t>(m->config().n_vocab);
  r.logits.resize(toks.size() * V);
  ctx.eval(st, toks.data(), toks.size(), chunk, nullptr, r.logits.data());
  r.stats = ctx.ffn().stats();
  if (ctx.ffn().cache()) {
    r.has_cache = true;
    r.cache = ctx.ffn().cache()->stats();
  }
  return r;
}

FfnOptions mode(FfnMode md) {
  FfnOptions o;
  o.mode = md;
  return o;
}

float max_abs(const std::vector<float>& a) {
  float m = 0;
  for (float v : a) m = std::max(m, std::fabs(v));
  return m;
}

// NaN or different sizes: +infinity (tests/support/compare.h).
float max_diff(const std::vector<float>& a, const std::vector<float>& b) { return test::max_abs_diff(a, b); }

// 1e-4 relative to the largest logit, or absolute 1e-4 when the logits are O(1).
float tol(const std::vector<float>& ref, float rel) { return rel * std::max(1.0f, max_abs(ref)); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// arch 71: RWKV-7a (7 with DeepEmbed tables of rank 4, whose gate scales each neuron between its key and value)
ModelConfig synth_cfg(int arch) {
  ModelConfig c;
  c.arch_major = arch == 71 ? 7 : arch;
  c.de_rank = arch == 71 ? 4 : 0;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_vocab = 256;
  return c;
}

compress::SparseFfnOptions sparse_opts(int vocab, bool predictors, uint32_t seed = 7) {
  compress::SparseFfnOptions o;
  o.calib = random_tokens(600, vocab, seed);
  o.calib_name = "random";
  o.predictors = predictors;
  o.pred.epochs = 2;
  o.pred.hidden = 16;
  o.pred.n_threads = 2;
  o.n_threads = 2;
  return o;
}

// An independent FNV-1a 64 (the native format's per-tensor checksum).
uint64_t fnv1a(const void* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// The native file split into its parts (docs/FORMAT.md): magic(8) u32 version, u32 align, u64 header
// length, JSON header, data section starting at the next multiple of 64.
struct NativeFile {
  std::string bytes;
  uint64_t hlen = 0, data_start = 0;
  nlohmann::json header;
  explicit NativeFile(const std::string& path) : bytes(test::read_file(path)) {
    EXPECT_GE(bytes.size(), 24u);
    uint32_t align = 0;
    std::memcpy(&align, bytes.data() + 12, 4);
    EXPECT_EQ(align, 64u);
    std::memcpy(&hlen, bytes.data() + 16, 8);
    header = nlohmann::json::parse(bytes.begin() + 24, bytes.begin() + 24 + static_cast<std::ptrdiff_t>(hlen));
    data_start = (24 + hlen + 63) / 64 * 64;
  }
  nlohmann::json* entry(const std::string& name) {
    for (auto& e : header["tensors"])
      if (e["name"] == name) return &e;
    return nullptr;
  }
  // File offset of a tensor's data.
  size_t at(const std::string& name) {
    nlohmann::json* e = entry(name);
    EXPECT_NE(e, nullptr) << name;
    return e ? static_cast<size_t>(data_start + (*e)["offset"].get<uint64_t>()) : 0;
  }
  size_t nbytes(const std::string& name) {
    nlohmann::json* e = entry(name);
    return e ? static_cast<size_t>((*e)["nbytes"].get<uint64_t>()) : 0;
  }
  // Writes the (possibly edited) header back in place: same length, padded with spaces.
  bool rewrite_header() {
    std::string h = header.dump();
    if (h.size() > hlen) return false;
    h.append(hlen - h.size(), ' ');
    bytes.replace(24, hlen, h);
    return true;
  }
};

std::string load_error(const std::string& path) {
  try {
    Model::load(path, {});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ------------------------------------------------------------------------------------------ 1. bundling

// Known test vectors of FNV-1a 64, so that the checksum helper used below is the real one.
TEST(SparseFfnHelpers, Fnv1aTestVectors) {
  EXPECT_EQ(fnv1a("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a("foobar", 6), 0x85944171f73967e8ull);
}

// A SparseFfn over a bundle made by bundle_ffn, built by hand.
SparseFfn hand_sffn(const Tensor& b, const Tensor& sc, int64_t F, int64_t C, const std::vector<int32_t>& perm) {
  SparseFfn s;
  s.t = b;
  s.scale = sc;
  s.layout.dtype = b.dtype;
  s.layout.rows = 2 * F;
  s.layout.cols = C;
  s.layout.data = b.data;
  if (sc.data) {
    s.layout.row_scale = sc.data;
    s.layout.scale_dtype = sc.dtype;
  }
  s.n = F;
  s.neuron_bytes = static_cast<size_t>(2 * kern::row_bytes(b.dtype, C));
  s.perm = perm.data();
  return s;
}

// Values m / 256 with |m| <= 127 are exact in f16 and bf16 (8 significant bits at most).
std::vector<float> representable(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(g)) / 256.0f;
  return v;
}

TEST(SparseFfnBundle, FloatRoundTripIsBitExact) {
  const int64_t F = 96, C = 64;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    std::vector<float> wk = representable(static_cast<size_t>(F * C), 1), wv = representable(static_cast<size_t>(C * F), 2);
    if (dt == DType::kF32) {  // full f32 precision: arbitrary floats
      std::mt19937 g(3);
      std::normal_distribution<float> nd(0.f, 1.f);
      for (auto& x : wk) x = nd(g);
      for (auto& x : wv) x = nd(g);
    }
    const std::vector<int32_t> perm = random_perm(F, 4);
    auto [b, sc] = compress::bundle_ffn("blocks.0.ffn.bundle.weight", wk.data(), wv.data(), F, C, perm, dt, true);
    ASSERT_EQ(b.dtype, dt);
    ASSERT_EQ(b.shape, (std::vector<int64_t>{2 * F, C}));
    EXPECT_EQ(sc.data, nullptr);
    // Layout: row 2j = Wk row perm[j], row 2j+1 = Wv column perm[j].
    const SparseFfn s = hand_sffn(b, sc, F, C, perm);
    std::vector<float> row(static_cast<size_t>(C));
    for (int64_t j = 0; j < F; ++j) {
      const int64_t i = perm[static_cast<size_t>(j)];
      kern::get_row(s.layout, 2 * j, row.data());
      for (int64_t c = 0; c < C; ++c) ASSERT_EQ(row[static_cast<size_t>(c)], wk[static_cast<size_t>(i * C + c)]) << j << " " << c;
      kern::get_row(s.layout, 2 * j + 1, row.data());
      for (int64_t c = 0; c < C; ++c) ASSERT_EQ(row[static_cast<size_t>(c)], wv[static_cast<size_t>(c * F + i)]) << j << " " << c;
    }
    std::vector<float> wk2, wv2;
    compress::unbundle_ffn(s, &wk2, &wv2);
    EXPECT_TRUE(bitwise_equal(wk2, wk));
    EXPECT_TRUE(bitwise_equal(wv2, wv));
  }
}

TEST(SparseFfnBundle, QuantisedBundleEqualsQuantisedPermutedRows) {
  const int64_t F = 80, C = 64;
  std::mt19937 g(11);
  std::normal_distribution<float> nd(0.f, 0.5f);
  std::vector<float> wk(static_cast<size_t>(F * C)), wv(static_cast<size_t>(C * F));
  for (auto& x : wk) x = nd(g);
  for (auto& x : wv) x = nd(g);
  const std::vector<int32_t> perm = random_perm(F, 12);
  // [Wk; Wv^T] permuted and interleaved, built here.
  std::vector<float> rows(static_cast<size_t>(2 * F * C));
  for (int64_t j = 0; j < F; ++j) {
    const int64_t i = perm[static_cast<size_t>(j)];
    for (int64_t c = 0; c < C; ++c) {
      rows[static_cast<size_t>((2 * j) * C + c)] = wk[static_cast<size_t>(i * C + c)];
      rows[static_cast<size_t>((2 * j + 1) * C + c)] = wv[static_cast<size_t>(c * F + i)];
    }
  }
  struct Q {
    DType dt;
    bool f16_scales;
  };
  for (Q q : {Q{DType::kI8, true}, Q{DType::kI8, false}, Q{DType::kQ4, false}}) {
    SCOPED_TRACE(std::string(dtype_name(q.dt)) + (q.f16_scales ? " f16 scales" : ""));
    auto [b, sc] = compress::bundle_ffn("x", wk.data(), wv.data(), F, C, perm, q.dt, q.f16_scales);
    auto [rb, rsc] = quantize_matrix("x", rows.data(), 2 * F, C, q.dt, q.f16_scales);
    ASSERT_EQ(b.dtype, q.dt);
    ASSERT_EQ(b.nbytes, rb.nbytes);
    EXPECT_EQ(std::memcmp(b.data, rb.data, b.nbytes), 0);
    if (q.dt == DType::kI8) {
      ASSERT_NE(sc.data, nullptr);
      EXPECT_EQ(sc.dtype, q.f16_scales ? DType::kF16 : DType::kF32);
      ASSERT_EQ(sc.nbytes, rsc.nbytes);
      EXPECT_EQ(std::memcmp(sc.data, rsc.data, sc.nbytes), 0);
    } else {
      EXPECT_EQ(sc.data, nullptr);
    }
    // Each row is quantised on its own: quantising row r alone gives the same bytes.
    const size_t rbytes = static_cast<size_t>(kern::row_bytes(q.dt, C));
    for (int64_t r : {int64_t{0}, int64_t{1}, 2 * F - 1, F + 1}) {
      auto [one, osc] = quantize_matrix("r", rows.data() + r * C, 1, C, q.dt, q.f16_scales);
      EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(b.data) + static_cast<size_t>(r) * rbytes, one.data, rbytes), 0) << r;
    }
    // And the dequantised rows stay within the quantisation step of the f32 values.
    const SparseFfn s = hand_sffn(b, sc, F, C, perm);
    std::vector<float> wk2, wv2;
    compress::unbundle_ffn(s, &wk2, &wv2);
    for (int64_t i = 0; i < F; ++i) {
      float mk = 0, mv = 0, ek = 0, ev = 0;
      for (int64_t c = 0; c < C; ++c) {
        mk = std::max(mk, std::fabs(wk[static_cast<size_t>(i * C + c)]));
        mv = std::max(mv, std::fabs(wv[static_cast<size_t>(c * F + i)]));
        ek = std::max(ek, std::fabs(wk2[static_cast<size_t>(i * C + c)] - wk[static_cast<size_t>(i * C + c)]));
        ev = std::max(ev, std::fabs(wv2[static_cast<size_t>(c * F + i)] - wv[static_cast<size_t>(c * F + i)]));
      }
      // int8: half a step of max/127 (+ scale rounding); q4: half a step of range/15 per group of 32.
      const float k = q.dt == DType::kI8 ? 0.51f / 127.f : 1.02f / 15.f;
      EXPECT_LE(ek, k * 2 * mk) << "neuron " << i;
      EXPECT_LE(ev, k * 2 * mv) << "neuron " << i;
    }
  }
}

// unbundle_ffn on what compress::sparse_ffn made gives back the original f32 matrices bit for bit.
TEST(SparseFfnBundle, PassRoundTripsModelWeights) {
  auto m = synth_model(synth_cfg(7), "f32", 21);
  auto b = compress::sparse_ffn(m, sparse_opts(256, false), nullptr);
  ASSERT_TRUE(b->sparse_ffn());
  for (int l = 0; l < m->config().n_layer; ++l) {
    std::vector<float> wk, wv;
    compress::unbundle_ffn(b->layer(l).sffn, &wk, &wv);
    EXPECT_TRUE(bitwise_equal(wk, m->tensors().at("blocks." + std::to_string(l) + ".ffn.key.weight").to_f32())) << l;
    EXPECT_TRUE(bitwise_equal(wv, m->tensors().at("blocks." + std::to_string(l) + ".ffn.value.weight").to_f32())) << l;
  }
}

// ------------------------------------------------------------------------------------------ 2. the pass

class SparseFfnArch : public ::testing::TestWithParam<int> {};

TEST_P(SparseFfnArch, BundledModelComputesTheSameFunction) {
  const int arch = GetParam();
  std::shared_ptr<const Model> m = synth_model(synth_cfg(arch), "f32", 100 + static_cast<uint64_t>(arch));
  const ModelConfig& cfg = m->config();
  const int64_t F = cfg.n_ffn, L = cfg.n_layer;
  ASSERT_FALSE(m->sparse_ffn());
  compress::SparseFfnReport rep;
  std::shared_ptr<const Model> b = compress::sparse_ffn(m, sparse_opts(cfg.n_vocab, true, 30 + arch), &rep);

  // (a) bundled, with predictors; per layer a permutation, hot-first frequencies in [0, 1].
  ASSERT_TRUE(b->sparse_ffn());
  ASSERT_TRUE(b->has_ffn_predictor());
  EXPECT_FALSE(m->sparse_ffn());  // the input is untouched
  EXPECT_EQ(rep.layers.size(), static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    const SparseFfn& s = b->layer(l).sffn;
    EXPECT_EQ(s.n, F);
    EXPECT_EQ(s.hidden, 16);
    EXPECT_TRUE(b->layer(l).ffn_k.empty());
    EXPECT_TRUE(b->layer(l).ffn_v.empty());
    EXPECT_EQ(b->tensors().count("blocks." + std::to_string(l) + ".ffn.key.weight"), 0u);
    std::vector<int32_t> p(s.perm, s.perm + F);
    std::sort(p.begin(), p.end());
    for (int64_t j = 0; j < F; ++j) ASSERT_EQ(p[static_cast<size_t>(j)], j);
    for (int64_t j = 0; j < F; ++j) {
      EXPECT_GE(s.freq[j], 0.f);
      EXPECT_LE(s.freq[j], 1.f);
      if (j) {
        EXPECT_GE(s.freq[j - 1], s.freq[j]) << "layer " << l << " neuron " << j;
      }
    }
  }

  const std::vector<int32_t> toks = random_tokens(20, cfg.n_vocab, 77);
  // chunk 20: two groups of the 1-bit predictor's lanes (16 + 4 tokens), one per thread (FfnRuntime::chunk_select)
  for (size_t chunk : {size_t{1}, size_t{8}, size_t{20}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const RunResult ref = run(m, toks, chunk, nullptr);
    const float t = tol(ref.logits, 1e-4f);
    // (b) exact and dense on the bundled model = the original.
    const FfnOptions oe = mode(FfnMode::kExact), od = mode(FfnMode::kDense);
    const RunResult ex = run(b, toks, chunk, &oe);
    const RunResult de = run(b, toks, chunk, &od);
    EXPECT_LE(max_diff(ex.logits, ref.logits), t);
    EXPECT_LE(max_diff(de.logits, ref.logits), t);

    // (d) exact-mode counters: every key row, value rows only for the active neurons.
    const uint64_t evals = toks.size() * static_cast<uint64_t>(L);
    EXPECT_EQ(ex.stats.evals, evals);
    EXPECT_EQ(ex.stats.neurons, evals * static_cast<uint64_t>(F));
    EXPECT_EQ(ex.stats.computed, ex.stats.neurons);
    EXPECT_LE(ex.stats.value_rows, ex.stats.computed);
    EXPECT_GT(ex.stats.value_rows, 0u);
    EXPECT_TRUE(ex.stats.verified);
    EXPECT_EQ(ex.stats.recall(), 1.0);
    EXPECT_EQ(ex.stats.verify_active, ex.stats.value_rows);
    // dense reads every value row
    EXPECT_EQ(de.stats.computed, de.stats.neurons);
    EXPECT_EQ(de.stats.value_rows, de.stats.neurons);
    EXPECT_EQ(de.stats.neurons, evals * static_cast<uint64_t>(F));

    // (c) predict with every neuron forced in = exact.
    FfnOptions all = mode(FfnMode::kPredict);
    all.random_frac = 1.0;
    const RunResult pa = run(b, toks, chunk, &all);
    EXPECT_LE(max_diff(pa.logits, ex.logits), tol(ex.logits, 1e-5f));
    EXPECT_EQ(pa.stats.computed, pa.stats.neurons);

    // (e) predict with verification.
    FfnOptions pv = mode(FfnMode::kPredict);
    pv.verify = true;
    const RunResult pr = run(b, toks, chunk, &pv);
    EXPECT_TRUE(pr.stats.verified);
    EXPECT_GE(pr.stats.recall(), 0.0);
    EXPECT_LE(pr.stats.recall(), 1.0);
    EXPECT_LE(pr.stats.verify_hit, pr.stats.verify_active);
    EXPECT_LE(pr.stats.computed, pr.stats.neurons);
    EXPECT_LE(pr.stats.value_rows, pr.stats.computed);
    EXPECT_EQ(pr.stats.neurons, evals * static_cast<uint64_t>(F));
    EXPECT_GT(pr.stats.predictor_bytes, 0u);
    for (float v : pr.logits) ASSERT_TRUE(std::isfinite(v));
    std::printf("  v%d chunk %zu: exact active %.3f, predict computed %.3f recall %.4f\n", arch, chunk,
                static_cast<double>(ex.stats.value_rows) / static_cast<double>(ex.stats.neurons), pr.stats.active_frac(),
                pr.stats.recall());
    // (f) sequence mode reads the union of a chunk's neurons once (chunk_union); each token still uses only its
    // own: the same neurons and logits as token by token, up to float summation order.
    FfnOptions pu = mode(FfnMode::kPredict), pt = pu;
    pt.chunk_union = false;
    const RunResult ru = run(b, toks, chunk, &pu), rt = run(b, toks, chunk, &pt);
    EXPECT_LE(max_diff(ru.logits, rt.logits), tol(rt.logits, 1e-4f));
    EXPECT_EQ(ru.stats.computed, rt.stats.computed);
    EXPECT_EQ(ru.stats.value_rows, rt.stats.value_rows);
    EXPECT_EQ(ru.stats.computed, pr.stats.computed);  // = the verified token path's
    if (chunk > 1) EXPECT_LT(ru.stats.weight_bytes, rt.stats.weight_bytes);  // each row once a chunk
    else EXPECT_EQ(ru.stats.weight_bytes, rt.stats.weight_bytes);
    // The default (auto) for a file with predictors is predict.
    Session ctx(b, 1);
    EXPECT_EQ(ctx.ffn().mode(), FfnMode::kPredict);
  }
}

// The number of value rows exact mode reads is the number of (token, neuron) pairs with Wk x > 0, counted here
// on the original model through the projection observer (the input of ffn.value is relu(Wk x)^2).
TEST_P(SparseFfnArch, ExactModeReadsValueRowsOfActiveNeuronsOnly) {
  const int arch = GetParam();
  std::shared_ptr<const Model> m = synth_model(synth_cfg(arch), "f32", 200 + static_cast<uint64_t>(arch));
  std::shared_ptr<const Model> b = compress::sparse_ffn(m, sparse_opts(256, false), nullptr);
  EXPECT_TRUE(b->sparse_ffn());
  EXPECT_FALSE(b->has_ffn_predictor());
  const std::vector<int32_t> toks = random_tokens(20, 256, 5);
  uint64_t active = 0;
  {
    Session ctx(m, 1);
    ctx.set_observer([&](const Matrix& mat, const float* X, size_t T) {
      for (int l = 0; l < m->config().n_layer; ++l)
        if (&mat == &m->layer(l).ffn_v)
          for (size_t i = 0; i < T * static_cast<size_t>(mat.cols); ++i) active += X[i] != 0.f;  // 7a: gated
    });
    State st;
    st.reset(m->config());
    std::vector<float> lg(256);
    ctx.eval(st, toks.data(), toks.size(), 1, lg.data(), nullptr);
  }
  ASSERT_GT(active, 0u);
  const FfnOptions oe = mode(FfnMode::kExact);
  const RunResult ex = run(b, toks, 1, &oe);
  // Float summation order may flip a key that is 0 up to rounding: allow a handful.
  EXPECT_NEAR(static_cast<double>(ex.stats.value_rows), static_cast<double>(active), 2.0 + 1e-3 * static_cast<double>(active));
  // No predictor: auto = dense.
  Session ctx(b, 1);
  EXPECT_EQ(ctx.ffn().mode(), FfnMode::kDense);
}

INSTANTIATE_TEST_SUITE_P(Arch, SparseFfnArch, ::testing::Values(4, 5, 6, 7, 71), [](const auto& param_info) {
  return param_info.param == 71 ? std::string("v7a") : std::to_string(param_info.param).insert(0, 1, 'v');
});

// i8 / q4 bundles: exact mode equals dense mode on the same (quantised) bundle.
TEST(SparseFfnQuantised, ExactEqualsDenseOnTheSameBundle) {
  std::shared_ptr<const Model> m = synth_model(synth_cfg(6), "f32", 300);
  const std::vector<int32_t> toks = random_tokens(20, 256, 9);
  for (const char* dt : {"i8", "q4", "f16", "bf16"}) {
    SCOPED_TRACE(dt);
    auto o = sparse_opts(256, false);
    o.dtype = dt;
    std::shared_ptr<const Model> b = compress::sparse_ffn(m, o, nullptr);
    ASSERT_TRUE(b->sparse_ffn());
    EXPECT_EQ(b->layer(0).sffn.layout.dtype, parse_weight_dtype(dt));
    const FfnOptions oe = mode(FfnMode::kExact), od = mode(FfnMode::kDense);
    for (size_t chunk : {size_t{1}, size_t{8}}) {
      const RunResult ex = run(b, toks, chunk, &oe), de = run(b, toks, chunk, &od);
      EXPECT_LE(max_diff(ex.logits, de.logits), tol(de.logits, 1e-4f)) << "chunk " << chunk;
    }
  }
}

// The tiny reference models: bundling without predictors keeps the expected logits.
TEST(SparseFfnTiny, ExactModeKeepsReferenceLogits) {
  struct T {
    const char* version;
    const char* logits;
  };
  const T cases[] = {{"4v0-660K", "4v0-660K"}, {"5v1-730K", "5v1-730K"}, {"5v2-730K", "5v2-730K"},
                     {"6v0-1m", "6v0-1m"},     {"7v0-834K", "7v0-834K"}};
  const std::vector<int32_t> prompt = {34, 105, 110};  // "in
  std::string text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! ";
  std::vector<int32_t> calib;
  for (int r = 0; r < 4; ++r)
    for (char ch : text) calib.push_back(static_cast<unsigned char>(ch));
  int tested = 0;
  for (const T& c : cases) {
    for (const char* fmt : {"FP32", "FP16"}) {
      SCOPED_TRACE(std::string(c.version) + "-" + fmt);
      const std::string path = test::shared_file(std::string("reference/tiny-rwkv/tiny-rwkv-") + c.version + "-" + fmt + ".bin");
      const std::string ref_path = test::shared_file(std::string("reference/tiny-rwkv/expected-logits-") + c.logits + ".bin");
      if (path.empty() || ref_path.empty()) continue;
      std::shared_ptr<const Model> m = Model::load(path, {});
      if (m->config().n_embd % 8 != 0) continue;
      compress::SparseFfnOptions o;
      o.calib = calib;
      o.predictors = false;
      o.n_threads = 2;
      std::shared_ptr<const Model> b = compress::sparse_ffn(m, o, nullptr);
      ASSERT_TRUE(b->sparse_ffn());
      EXPECT_FALSE(b->has_ffn_predictor());
      const std::vector<float> expected = test::read_f32_file(ref_path);
      const FfnOptions oe = mode(FfnMode::kExact);
      for (size_t chunk : {size_t{1}, size_t{3}}) {
        const RunResult ex = run(b, prompt, chunk, &oe), dense = run(m, prompt, chunk, nullptr);
        const std::vector<float> last(ex.logits.end() - 256, ex.logits.end());
        EXPECT_LE(max_diff(ex.logits, dense.logits), tol(dense.logits, 1e-4f)) << "chunk " << chunk;
        // test_tiny_models' tolerances (tests/support/compare.h).
        EXPECT_LE(max_diff(last, expected), std::string(fmt) == "FP32" ? test::kTinyFp32LogitTol : test::kTinyFp16LogitTol)
            << "chunk " << chunk;
      }
      ++tested;
      std::printf("  %s-%s: width %d bundled, exact mode checked\n", c.version, fmt, m->config().n_embd);
    }
  }
  if (tested == 0) GTEST_SKIP() << "tiny reference models not found (or none has a width divisible by 8)";
}

// ------------------------------------------------------------------------------------------ 3. the file

// One bundled model with predictors, saved once for the file tests.
struct Saved {
  std::shared_ptr<const Model> mem;  // in memory
  std::string path;
};
const Saved& saved() {
  static const Saved s = [] {
    Saved r;
    std::shared_ptr<const Model> m = synth_model(synth_cfg(7), "f32", 400);
    r.mem = compress::sparse_ffn(m, sparse_opts(256, true, 41), nullptr);
    r.path = test::temp_dir() + "/sparse-v7.rwkvl";
    r.mem->save_native(r.path, "keep");
    return r;
  }();
  return s;
}

TEST(SparseFfnFile, SaveLoadIsBitExact) {
  const Saved& s = saved();
  ASSERT_TRUE(s.mem->has_ffn_predictor());
  std::shared_ptr<const Model> g = Model::load(s.path, {});
  ASSERT_TRUE(g->sparse_ffn());
  ASSERT_TRUE(g->has_ffn_predictor());
  EXPECT_EQ(g->passes().size(), s.mem->passes().size());
  const std::vector<int32_t> toks = random_tokens(20, 256, 13);
  for (size_t chunk : {size_t{1}, size_t{8}}) {
    const FfnOptions oe = mode(FfnMode::kExact), op = mode(FfnMode::kPredict);
    EXPECT_TRUE(bitwise_equal(run(g, toks, chunk, &oe).logits, run(s.mem, toks, chunk, &oe).logits)) << chunk;
    EXPECT_TRUE(bitwise_equal(run(g, toks, chunk, &op).logits, run(s.mem, toks, chunk, &op).logits)) << chunk;
  }
  // The stored checksums are FNV-1a 64 of the tensor bytes.
  NativeFile f(s.path);
  for (const char* n : {"blocks.0.ffn.perm", "blocks.1.ffn.pred.w1", "blocks.0.ffn.freq", "blocks.1.ffn.bundle.weight"}) {
    nlohmann::json* e = f.entry(n);
    ASSERT_NE(e, nullptr) << n;
    EXPECT_EQ((*e)["fnv1a64"].get<std::string>(), hex16(fnv1a(f.bytes.data() + f.at(n), f.nbytes(n)))) << n;
  }
}

// The MLP stored as int8 with f16 row scales (compress --pred-dtype i8): the tensors are int8 with
// their scales, counted in the predictor bytes, and the model saves, loads and predicts bit for bit;
// a corrupted scale block is refused like any predictor block.
TEST(SparseFfnFile, Int8PredictorSavesLoadsAndPredicts) {
  std::shared_ptr<const Model> m = synth_model(synth_cfg(6), "f32", 410);
  compress::SparseFfnOptions so = sparse_opts(256, true, 43);
  so.pred.int8 = true;
  std::shared_ptr<const Model> b = compress::sparse_ffn(m, so, nullptr);
  const SparseFfn& S = b->layer(1).sffn;
  ASSERT_TRUE(S.has_predictor());
  EXPECT_EQ(S.w1.dtype, DType::kI8);
  EXPECT_EQ(S.w2.dtype, DType::kI8);
  EXPECT_EQ(S.w1.scale_dtype, DType::kF16);
  EXPECT_EQ(S.sw1.nbytes, static_cast<size_t>(S.hidden) * 2);
  EXPECT_EQ(S.sw2.nbytes, static_cast<size_t>(S.n) * 2);
  EXPECT_EQ(S.predictor_bytes(), S.tw1.nbytes + S.tw2.nbytes + S.sw1.nbytes + S.sw2.nbytes + S.tbits.nbytes +
                                     S.tlo.nbytes + S.tstep.nbytes + S.tthresh.nbytes);
  const std::string path = test::temp_dir() + "/sparse-i8pred.rwkvl";
  b->save_native(path, "keep");
  std::shared_ptr<const Model> g = Model::load(path, {});
  const std::vector<int32_t> toks = random_tokens(16, 256, 17);
  FfnOptions op = mode(FfnMode::kPredict);
  op.verify = true;
  const RunResult a = run(g, toks, 1, &op), c = run(b, toks, 1, &op);
  EXPECT_TRUE(bitwise_equal(a.logits, c.logits));
  EXPECT_LT(a.stats.computed, a.stats.neurons);
  EXPECT_GT(a.stats.recall(), 0.5);
  NativeFile f(path);
  f.bytes[f.at("blocks.0.ffn.pred.w2.scale") + 1] ^= 0x10;
  const std::string bad = test::temp_dir() + "/sparse-i8pred-bad.rwkvl";
  test::write_file(bad, f.bytes);
  const std::string err = load_error(bad);
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find("blocks.0.ffn.pred.w2.scale"), std::string::npos) << err;
}

TEST(SparseFfnFile, CorruptPredictorOrOrderIsRefused) {
  const Saved& s = saved();
  for (const char* name : {"blocks.0.ffn.pred.w1", "blocks.0.ffn.perm", "blocks.1.ffn.freq", "blocks.1.ffn.pred.thresh"}) {
    SCOPED_TRACE(name);
    NativeFile f(s.path);
    const size_t nb = f.nbytes(name);
    ASSERT_GT(nb, 0u);
    f.bytes[f.at(name) + nb / 2] ^= 0x10;
    const std::string p = test::temp_dir() + "/corrupt.rwkvl";
    test::write_file(p, f.bytes);
    const std::string msg = load_error(p);
    EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
  // The unmodified copy loads (the edits above were the only problem).
  NativeFile f(s.path);
  const std::string p = test::temp_dir() + "/copy.rwkvl";
  test::write_file(p, f.bytes);
  EXPECT_EQ(load_error(p), "");
}

TEST(SparseFfnFile, NonPermutationWithValidChecksumIsRefused) {
  const Saved& s = saved();
  const std::string name = "blocks.0.ffn.perm";
  {
    // Recompute the checksum in the header (same length, so the layout does not move).
    NativeFile f(s.path);
    int32_t* perm = reinterpret_cast<int32_t*>(f.bytes.data() + f.at(name));
    perm[5] = perm[3];  // a duplicate
    (*f.entry(name))["fnv1a64"] = hex16(fnv1a(perm, f.nbytes(name)));
    ASSERT_TRUE(f.rewrite_header());
    const std::string p = test::temp_dir() + "/notperm.rwkvl";
    test::write_file(p, f.bytes);
    const std::string msg = load_error(p);
    EXPECT_NE(msg.find("permutation"), std::string::npos) << msg;
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
  {
    // Without a checksum field (older writers): an out-of-range entry.
    NativeFile f(s.path);
    int32_t* perm = reinterpret_cast<int32_t*>(f.bytes.data() + f.at(name));
    perm[0] = static_cast<int32_t>(s.mem->config().n_ffn);
    f.entry(name)->erase("fnv1a64");
    ASSERT_TRUE(f.rewrite_header());
    const std::string p = test::temp_dir() + "/notperm2.rwkvl";
    test::write_file(p, f.bytes);
    const std::string msg = load_error(p);
    EXPECT_NE(msg.find("permutation"), std::string::npos) << msg;
  }
}

// ------------------------------------------------------------------------------------------ 4. the cache

// The documented minimum (runtime/neuron_cache.h): slot = neuron bytes rounded up to 64, and a cache with
// nothing pinned needs one whole layer of slots.
uint64_t min_cache_unpinned(const Model& m) {
  const uint64_t nb = m.layer(0).sffn.neuron_bytes;
  return (nb + 63) / 64 * 64 * static_cast<uint64_t>(m.config().n_ffn);
}

// Parses "... the minimum is N bytes ..." from a cache error.
uint64_t named_minimum(const std::string& msg) {
  const std::string key = "minimum is ";
  const size_t p = msg.find(key);
  if (p == std::string::npos) return 0;
  return std::stoull(msg.substr(p + key.size()));
}

TEST(SparseFfnCache, SameLogitsAsTheMappedFile) {
  const Saved& s = saved();
  std::shared_ptr<const Model> g = Model::load(s.path, {});
  const uint64_t nb = g->layer(0).sffn.neuron_bytes;
  EXPECT_EQ(nb, 2u * 64u * 4u);  // f32, C = 64
  const uint64_t min = min_cache_unpinned(*g);

  // Too small: the error names the minimum.
  {
    FfnOptions o = mode(FfnMode::kExact);
    o.cache_bytes = min - 1;
    SessionParams sp;
    sp.ffn = o;
    try {
      Session ctx(g, sp);
      ADD_FAILURE() << "a cache below one layer was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(named_minimum(e.what()), min) << e.what();
    }
  }

  const std::vector<int32_t> toks = random_tokens(20, 256, 17);
  for (size_t chunk : {size_t{1}, size_t{8}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const FfnOptions oe = mode(FfnMode::kExact), op = mode(FfnMode::kPredict);
    const RunResult ref_e = run(g, toks, chunk, &oe), ref_p = run(g, toks, chunk, &op);
    for (uint64_t cap : {min, min + 40 * nb, 4 * min}) {
      for (bool prefetch : {true, false}) {
        SCOPED_TRACE("cache " + std::to_string(cap) + (prefetch ? " prefetch" : ""));
        FfnOptions ce = oe, cp = op;
        ce.cache_bytes = cp.cache_bytes = cap;
        ce.prefetch = cp.prefetch = prefetch;
        const RunResult e = run(g, toks, chunk, &ce), p = run(g, toks, chunk, &cp);
        EXPECT_TRUE(bitwise_equal(e.logits, ref_e.logits));
        EXPECT_TRUE(bitwise_equal(p.logits, ref_p.logits));
        for (const RunResult* r : {&e, &p}) {
          ASSERT_TRUE(r->has_cache);
          const auto& c = r->cache;
          EXPECT_GT(c.requests, 0u);
          EXPECT_EQ(c.requests, c.hits_pinned + c.hits_cached + c.hits_prefetched + c.misses);
          // token by token one request per computed neuron; a chunk asks once for the union of its tokens' neurons
          if (chunk == 1) EXPECT_EQ(c.requests, r->stats.computed);
          else EXPECT_LT(c.requests, r->stats.computed);
          // A capacity beyond every neuron of the model is cut to what there is to cache (one slot each).
          EXPECT_EQ(c.capacity_bytes, std::min<uint64_t>(cap, min * static_cast<uint64_t>(g->config().n_layer)));
        }
        // exact mode asks for every neuron of every layer for every token (chunk 1) or chunk (20 tokens: 8, 8, 4)
        const uint64_t steps = chunk == 1 ? toks.size() : 3;
        EXPECT_EQ(e.cache.requests, steps * 2u * static_cast<uint64_t>(g->config().n_ffn));
        EXPECT_EQ(e.stats.computed, ref_e.stats.computed);
        EXPECT_EQ(p.stats.computed, ref_p.stats.computed);
      }
    }
  }
}

// Cache minimum for a bundle whose neurons are not a multiple of 64 bytes (q4, C = 64: 2 x 40 bytes, slots of
// 128 bytes): one layer of slots (nothing pinned) is the documented minimum; it is accepted, a byte less is
// refused naming it, and whatever minimum an error names is accepted when asked for.
TEST(SparseFfnCache, MinimumForQ4Bundles) {
  std::shared_ptr<const Model> m = synth_model(synth_cfg(4), "f32", 500);
  auto o = sparse_opts(256, false);
  o.dtype = "q4";
  auto b = compress::sparse_ffn(m, o, nullptr);
  const std::string path = test::temp_dir() + "/sparse-q4.rwkvl";
  b->save_native(path, "keep");
  std::shared_ptr<const Model> g = Model::load(path, {});
  ASSERT_EQ(g->layer(0).sffn.layout.dtype, DType::kQ4);
  EXPECT_EQ(g->layer(0).sffn.neuron_bytes, 80u);
  const uint64_t min = min_cache_unpinned(*g);  // F slots of 128 bytes
  EXPECT_EQ(min, 256u * 128u);
  const std::vector<int32_t> toks = random_tokens(12, 256, 19);
  const FfnOptions oe = mode(FfnMode::kExact);
  const RunResult ref = run(g, toks, 1, &oe);
  auto try_run = [&](uint64_t cap, RunResult* r) {
    FfnOptions co = oe;
    co.cache_bytes = cap;
    try {
      *r = run(g, toks, 1, &co);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  RunResult r;
  // The runtime counts slots of neuron_bytes rounded up to 64 (128 here, not 80): a cache of exactly
  // one layer of slots is the minimum and works.
  const std::string at_min = try_run(min, &r);
  ASSERT_EQ(at_min, "");
  EXPECT_TRUE(bitwise_equal(r.logits, ref.logits));
  const std::string below = try_run(min - 1, &r);
  EXPECT_EQ(named_minimum(below), min) << below;
}

// ------------------------------------------------------------------------------------------ 5. errors

TEST(SparseFfnRuntime, RefusesSettingsTheModelCannotHonour) {
  std::shared_ptr<const Model> plain = synth_model(synth_cfg(5), "f32", 600);
  std::shared_ptr<const Model> nopred = compress::sparse_ffn(plain, sparse_opts(256, false), nullptr);
  const Saved& s = saved();
  auto refused = [](const std::shared_ptr<const Model>& m, const FfnOptions& o) {
    SessionParams sp;
    sp.ffn = o;
    try {
      Session ctx(m, sp);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refused(plain, mode(FfnMode::kExact)), "");
  EXPECT_NE(refused(plain, mode(FfnMode::kPredict)), "");
  EXPECT_NE(refused(nopred, mode(FfnMode::kPredict)), "");
  FfnOptions r = mode(FfnMode::kPredict);
  r.random_frac = 1.5;
  EXPECT_NE(refused(s.mem, r), "");
  r.random_frac = -0.25;
  EXPECT_NE(refused(s.mem, r), "");
  FfnOptions rp = mode(FfnMode::kDense);
  rp.random_frac = 0.5;
  EXPECT_NE(refused(plain, rp), "");  // random sets need a bundled model
  FfnOptions c = mode(FfnMode::kDense);
  c.cache_bytes = 1 << 20;
  EXPECT_NE(refused(plain, c), "");   // a cache needs a bundled model
  EXPECT_NE(refused(s.mem, c), "");   // ... mapped from a file
  // What is allowed: dense on a plain model, every mode on a bundled model with predictors, exact without.
  EXPECT_EQ(refused(plain, mode(FfnMode::kDense)), "");
  EXPECT_EQ(refused(plain, mode(FfnMode::kAuto)), "");
  EXPECT_EQ(refused(nopred, mode(FfnMode::kExact)), "");
  FfnOptions rnd = mode(FfnMode::kPredict);
  rnd.random_frac = 0.25;  // a forced random set needs no predictor
  EXPECT_EQ(refused(nopred, rnd), "");
  for (FfnMode md : {FfnMode::kDense, FfnMode::kExact, FfnMode::kPredict}) EXPECT_EQ(refused(s.mem, mode(md)), "");
  EXPECT_THROW(parse_ffn_mode("sparse"), Error);
  EXPECT_EQ(parse_ffn_mode("exact"), FfnMode::kExact);
  // A failed set_ffn_options leaves nothing half-made: the plain model still evaluates.
  const FfnOptions od = mode(FfnMode::kDense);
  const std::vector<int32_t> toks = random_tokens(5, 256, 3);
  EXPECT_EQ(run(plain, toks, 1, &od).stats.evals, 5u * 2u);
}

// random_frac picks round(frac * F) distinct neurons per (token, layer).
TEST(SparseFfnRuntime, RandomShareComputesThatManyNeurons) {
  const Saved& s = saved();
  const int64_t F = s.mem->config().n_ffn;
  const std::vector<int32_t> toks = random_tokens(10, 256, 23);
  for (double frac : {0.25, 0.5}) {
    FfnOptions o = mode(FfnMode::kPredict);
    o.random_frac = frac;
    const RunResult r = run(s.mem, toks, 1, &o);
    EXPECT_EQ(r.stats.computed, r.stats.evals * static_cast<uint64_t>(std::llround(frac * static_cast<double>(F))));
    EXPECT_EQ(r.stats.evals, toks.size() * 2u);
    for (float v : r.logits) ASSERT_TRUE(std::isfinite(v));
  }
}

}  // namespace
}  // namespace rwkvl
