// The output head at run time (issue #6) and the embedding cache:
//  * a hand-built cluster head (random grouping, cluster head and priors) on a synthetic model: full mode
//    equals the plain model; cluster mode with every cluster chosen equals full; with fewer clusters the
//    chosen tokens keep their exact logits and every other token gets log(Q * p_j / P_chosen * prior_t),
//    recomputed here independently in double; the softmax of the result gives the chosen clusters
//    exactly their cluster-head probability; the selection rule honours p / min / max;
//  * the binder refuses cluster tables that do not cover the vocabulary exactly once and bad values;
//  * the embedding cache (in memory and read from a native file) never changes outputs, its LRU and
//    hit counts are those of a hand-traced sequence; the storage throttle takes the simulated time;
//  * the memory planner: logits are bit-identical for every budget from "everything resident" down to the
//    minimum (layers and head streamed, with and without prefetch, plain and cluster head); budgets below
//    the minimum and models that are not native files are refused with the minimum named.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "compress/cluster_head.h"
#include "compress/compress.h"
#include "compress/sparse_ffn.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "core/threadpool.h"
#include "runtime/head_runtime.h"
#include "model/model.h"
#include "runtime/ffn_runtime.h"
#include "runtime/emb_cache.h"
#include "runtime/layer_stream.h"
#include "runtime/planner.h"
#include "runtime/storage.h"
#include "test_util.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

constexpr int kV = 512, kC = 64, kK = 12;

std::shared_ptr<Model> base_model(const std::string& dtype = "f32", int C = kC, int V = kV, int layers = 2) {
  ModelConfig cfg;
  cfg.arch_major = 5;
  cfg.n_layer = layers;
  cfg.n_embd = C;
  cfg.n_vocab = V;
  return synth_model(cfg, dtype, 7);
}

struct Clusters {
  std::vector<int32_t> perm, offsets;
  std::vector<float> w, bias, prior;
};

// Random clusters of uneven sizes over a shuffled vocabulary, a random cluster head and random priors
// (normalised per cluster).
Clusters random_clusters(uint32_t seed, bool uniform_prior = false, int kV = rwkvl::kV, int kC = rwkvl::kC) {
  std::mt19937 g(seed);
  Clusters c;
  c.perm.resize(kV);
  std::iota(c.perm.begin(), c.perm.end(), 0);
  std::shuffle(c.perm.begin(), c.perm.end(), g);
  std::vector<int32_t> cuts;
  std::uniform_int_distribution<int> cut(1, kV - 1);
  while (cuts.size() < kK - 1) {
    const int x = cut(g);
    if (std::find(cuts.begin(), cuts.end(), x) == cuts.end()) cuts.push_back(x);
  }
  std::sort(cuts.begin(), cuts.end());
  c.offsets.push_back(0);
  c.offsets.insert(c.offsets.end(), cuts.begin(), cuts.end());
  c.offsets.push_back(kV);
  std::normal_distribution<float> n(0.f, 1.f);
  c.w.resize(static_cast<size_t>(kK) * kC);
  for (float& x : c.w) x = 0.3f * n(g);
  c.bias.resize(kK);
  for (float& x : c.bias) x = n(g);
  c.prior.resize(kV);
  for (int j = 0; j < kK; ++j) {
    double sum = 0;
    for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) {
      c.prior[i] = uniform_prior ? 0.f : n(g);
      sum += std::exp(static_cast<double>(c.prior[i]));
    }
    for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) c.prior[i] = static_cast<float>(c.prior[i] - std::log(sum));
  }
  return c;
}

Tensor i32_tensor(const std::string& name, const std::vector<int32_t>& v) {
  Tensor t = Tensor::alloc(name, DType::kI32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.mutable_data(), v.data(), v.size() * 4);
  return t;
}

// The tensors of `m` with head.weight regrouped by c.perm (raw row bytes) and the cluster tensors added.
TensorMap clustered_tensors(const Model& m, const Clusters& c) {
  const int kV = m.config().n_vocab, kC = m.config().n_embd;
  TensorMap tm = m.tensors();
  const Tensor& h = tm.at("head.weight");
  const size_t rb = static_cast<size_t>(kern::row_bytes(h.dtype, kC));
  Tensor g = Tensor::alloc("head.weight", h.dtype, h.shape);
  for (int i = 0; i < kV; ++i)
    std::memcpy(static_cast<uint8_t*>(g.mutable_data()) + i * rb, static_cast<const uint8_t*>(h.data) + c.perm[i] * rb, rb);
  tm["head.weight"] = g;
  if (tm.count("head.weight.scale")) {
    const Tensor& s = tm.at("head.weight.scale");
    const size_t es = s.dtype == DType::kF16 ? 2 : 4;
    Tensor gs = Tensor::alloc("head.weight.scale", s.dtype, s.shape);
    for (int i = 0; i < kV; ++i)
      std::memcpy(static_cast<uint8_t*>(gs.mutable_data()) + i * es, static_cast<const uint8_t*>(s.data) + c.perm[i] * es, es);
    tm["head.weight.scale"] = gs;
  }
  tm["head.perm"] = i32_tensor("head.perm", c.perm);
  tm["head.cluster.offsets"] = i32_tensor("head.cluster.offsets", c.offsets);
  const int64_t K = static_cast<int64_t>(c.offsets.size()) - 1;
  tm["head.cluster.weight"] = Tensor::from_f32("head.cluster.weight", {K, kC}, c.w.data());
  tm["head.cluster.bias"] = Tensor::from_f32("head.cluster.bias", {K}, c.bias.data());
  tm["head.cluster.prior"] = Tensor::from_f32("head.cluster.prior", {kV}, c.prior.data());
  return tm;
}

std::shared_ptr<Model> clustered(const Model& m, const Clusters& c) {
  return Model::from_canonical(clustered_tensors(m, c), m.config(), FileKind::kNative, {});
}

std::vector<int32_t> tokens(size_t n, uint32_t seed, int kV = rwkvl::kV) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(g() % kV);
  return t;
}

// The cluster head pass as the runtime tests run it: k clusters of at most cap rows, short training.
compress::ClusterHeadOptions quick_head_options(int k, int cap, std::vector<int32_t> calib) {
  compress::ClusterHeadOptions ho;
  ho.k = k;
  ho.cap = cap;
  ho.pca_dims = 32;
  ho.epochs = 3;
  ho.chunk = 64;
  ho.calib = std::move(calib);
  return ho;
}

// Logits after every token (RNN mode and chunked), with the given head options (null = defaults).
std::vector<float> run(const std::shared_ptr<Model>& m, const std::vector<int32_t>& toks, const HeadOptions* ho,
                       size_t chunk = 1, HeadStats* stats = nullptr, int64_t emb_rows = 0) {
  SessionParams sp;
  sp.threads = 2;
  if (ho) sp.head = *ho;
  if (emb_rows) sp.memory.emb_rows = emb_rows;
  Session ctx(m, sp);
  State st;
  st.reset(m->config());
  std::vector<float> out(toks.size() * kV);
  ctx.eval(st, toks.data(), toks.size(), chunk, nullptr, out.data());
  if (stats) *stats = ctx.head().stats();
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}

// The hidden state the head sees (ln_out output) before each token's logits, via the context's steps.
std::vector<float> head_inputs(const std::shared_ptr<Model>& m, const std::vector<int32_t>& toks) {
  Session ctx(m, 1);
  State st;
  st.reset(m->config());
  std::vector<float> xs;
  std::vector<float> x(kC), xn(kC);
  for (int32_t t : toks) {
    ctx.embed(&t, 1, x.data());
    ctx.forward_layers(st, x.data(), 1, 0, m->config().n_layer);
    double mean = 0, var = 0;
    for (float v : x) mean += v;
    mean /= kC;
    for (float v : x) var += (v - mean) * (v - mean);
    var /= kC;
    for (int i = 0; i < kC; ++i)
      xn[i] = static_cast<float>((x[i] - mean) / std::sqrt(var + m->config().ln_eps)) * m->ln_out_w()[i] + m->ln_out_b()[i];
    xs.insert(xs.end(), xn.begin(), xn.end());
  }
  return xs;
}

TEST(ClusterHead, FullModeEqualsThePlainModel) {
  for (const char* dt : {"f32", "i8"}) {
    SCOPED_TRACE(dt);
    const auto m = base_model(dt);
    const auto cm = clustered(*m, random_clusters(1));
    ASSERT_TRUE(cm->cluster_head().present());
    EXPECT_EQ(cm->cluster_head().k, kK);
    const auto toks = tokens(9, 3);
    HeadOptions full;
    full.mode = HeadMode::kFull;
    for (size_t chunk : {1, 4}) {
      const auto a = run(m, toks, nullptr, chunk), b = run(cm, toks, &full, chunk);
      EXPECT_LE(max_abs_diff(a, b), 1e-5) << "chunk " << chunk;
    }
  }
}

TEST(ClusterHead, EveryClusterChosenEqualsFull) {
  const auto m = base_model();
  const auto cm = clustered(*m, random_clusters(2));
  const auto toks = tokens(7, 4);
  HeadOptions all;
  all.mode = HeadMode::kCluster;
  all.p = 1.0;
  all.min_clusters = kK;
  all.max_clusters = kK;
  all.compare = true;
  HeadStats hs;
  const auto a = run(m, toks, nullptr), b = run(cm, toks, &all, 1, &hs);
  EXPECT_LE(max_abs_diff(a, b), 1e-5);
  EXPECT_EQ(hs.rows_read, hs.rows);
  EXPECT_EQ(hs.compared, toks.size());
  EXPECT_EQ(hs.top1_agree, toks.size());
  EXPECT_LT(hs.kl(), 1e-9);
}

TEST(ClusterHead, PseudoLogitsFollowTheFormula) {
  for (bool uniform : {false, true}) {
    SCOPED_TRACE(uniform ? "uniform prior" : "calibrated prior");
    const auto m = base_model();
    const Clusters c = random_clusters(5, uniform);
    const auto cm = clustered(*m, c);
    const auto toks = tokens(6, 8);
    HeadOptions ho;
    ho.mode = HeadMode::kCluster;
    ho.p = 0.5;
    ho.min_clusters = 2;
    ho.max_clusters = 4;
    ho.compare = true;
    HeadStats hs;
    const auto out = run(cm, toks, &ho, 1, &hs);
    const auto exact = run(m, toks, nullptr);
    const auto xs = head_inputs(m, toks);
    uint64_t rows = 0;
    for (size_t t = 0; t < toks.size(); ++t) {
      const float* x = xs.data() + t * kC;
      // cluster probabilities in double
      std::vector<double> z(kK);
      for (int j = 0; j < kK; ++j) {
        double s = c.bias[j];
        for (int i = 0; i < kC; ++i) s += static_cast<double>(c.w[j * kC + i]) * x[i];
        z[j] = s;
      }
      const double zm = *std::max_element(z.begin(), z.end());
      double zs = 0;
      for (double v : z) zs += std::exp(v - zm);
      std::vector<double> p(kK);
      for (int j = 0; j < kK; ++j) p[j] = std::exp(z[j] - zm) / zs;
      std::vector<int> order(kK);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      std::vector<bool> chosen(kK, false);
      double pc = 0;
      int n = 0;
      for (int j : order) {
        if (n >= ho.max_clusters || (n >= ho.min_clusters && pc >= ho.p)) break;
        chosen[j] = true;
        pc += p[j];
        ++n;
        rows += static_cast<uint64_t>(c.offsets[j + 1] - c.offsets[j]);
      }
      EXPECT_GE(n, ho.min_clusters);
      const float* ex = exact.data() + t * kV;
      const float* o = out.data() + t * kV;
      double q = 0;
      for (int j = 0; j < kK; ++j)
        if (chosen[j])
          for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) q += std::exp(static_cast<double>(ex[c.perm[i]]));
      for (int j = 0; j < kK; ++j)
        for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) {
          const int tok = c.perm[i];
          const double want = chosen[j] ? ex[tok] : std::log(q * p[j] / pc) + c.prior[i];
          ASSERT_NEAR(o[tok], want, 2e-4) << "token " << tok << " cluster " << j << (chosen[j] ? " chosen" : "");
        }
      // softmax mass of the chosen clusters' tokens = their cluster-head probability
      double all = 0, mass = 0;
      for (int j = 0; j < kK; ++j)
        for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) {
          const double e = std::exp(static_cast<double>(o[c.perm[i]]));
          all += e;
          if (chosen[j]) mass += e;
        }
      for (int j = 0; j < kK; ++j) {
        if (chosen[j]) continue;
        double cm_mass = 0;
        for (int i = c.offsets[j]; i < c.offsets[j + 1]; ++i) cm_mass += std::exp(static_cast<double>(o[c.perm[i]]));
        EXPECT_NEAR(cm_mass / all, p[j], 1e-5);
      }
      EXPECT_NEAR(mass / all, pc, 1e-5);
    }
    EXPECT_EQ(hs.rows_read, rows);
    EXPECT_EQ(hs.rows, toks.size() * kV);
    EXPECT_LT(hs.rows_read, hs.rows);
    EXPECT_GT(hs.kl(), 0.0);
  }
}

TEST(ClusterHead, SelectionHonoursMinAndMax) {
  const auto m = base_model();
  const auto cm = clustered(*m, random_clusters(3));
  const auto toks = tokens(5, 9);
  for (auto [p, mn, mx, want] : {std::tuple{1e-9, 1, 1, 1}, std::tuple{1e-9, 5, 8, 5}, std::tuple{1.0, 1, 3, 3}}) {
    HeadOptions ho;
    ho.mode = HeadMode::kCluster;
    ho.p = p;
    ho.min_clusters = mn;
    ho.max_clusters = mx;
    HeadStats hs;
    run(cm, toks, &ho, 1, &hs);
    EXPECT_EQ(hs.clusters, toks.size() * static_cast<uint64_t>(want)) << p << " " << mn << " " << mx;
  }
}

TEST(ClusterHead, ChunkedEqualsRnnMode) {
  const auto cm = clustered(*base_model(), random_clusters(4));
  const auto toks = tokens(11, 5);
  EXPECT_LE(max_abs_diff(run(cm, toks, nullptr, 1), run(cm, toks, nullptr, 5)), 2e-4);
}

TEST(ClusterHead, RefusesBadOptions) {
  const auto m = base_model();
  HeadOptions ho;
  ho.mode = HeadMode::kCluster;
  EXPECT_THROW(HeadRuntime(*m, nullptr, ho), Error);  // no cluster head
  const auto cm = clustered(*m, random_clusters(1));
  for (auto [p, mn, mx] : {std::tuple{0.0, 3, 100}, std::tuple{1.5, 3, 100}, std::tuple{0.9, 0, 100}, std::tuple{0.9, 5, 4}}) {
    HeadOptions o;
    o.p = p;
    o.min_clusters = mn;
    o.max_clusters = mx;
    EXPECT_THROW(HeadRuntime(*cm, nullptr, o), Error) << p << " " << mn << " " << mx;
  }
  EXPECT_THROW(parse_head_mode("partial"), Error);
}

void expect_refused(const Model& m, TensorMap tm, const char* what) {
  try {
    Model::from_canonical(std::move(tm), m.config(), FileKind::kNative, {});
    ADD_FAILURE() << "accepted: " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFormat) << what;
  }
}

TEST(ClusterHead, BinderRefusesBadTables) {
  const auto m = base_model();
  const Clusters good = random_clusters(6);
  auto with = [&](auto edit, const char* what) {
    Clusters c = good;
    TensorMap tm = clustered_tensors(*m, c);
    edit(c, tm);
    expect_refused(*m, tm, what);
  };
  with([](Clusters& c, TensorMap& tm) { c.perm[10] = c.perm[11]; tm["head.perm"] = i32_tensor("head.perm", c.perm); }, "duplicate token");
  with([](Clusters& c, TensorMap& tm) { c.perm[3] = kV; tm["head.perm"] = i32_tensor("head.perm", c.perm); }, "token out of range");
  with([](Clusters& c, TensorMap& tm) { c.offsets.back() = kV - 1; tm["head.cluster.offsets"] = i32_tensor("head.cluster.offsets", c.offsets); }, "short cover");
  with([](Clusters& c, TensorMap& tm) { c.offsets[2] = c.offsets[1]; tm["head.cluster.offsets"] = i32_tensor("head.cluster.offsets", c.offsets); }, "empty cluster");
  with([](Clusters& c, TensorMap& tm) { c.offsets[0] = 1; tm["head.cluster.offsets"] = i32_tensor("head.cluster.offsets", c.offsets); }, "offset start");
  with([](Clusters& c, TensorMap& tm) {
    c.prior[5] += 1.f;
    tm["head.cluster.prior"] = Tensor::from_f32("head.cluster.prior", {kV}, c.prior.data());
  }, "prior not normalised");
  with([](Clusters& c, TensorMap& tm) {
    c.bias[1] = std::nanf("");
    tm["head.cluster.bias"] = Tensor::from_f32("head.cluster.bias", {kK}, c.bias.data());
  }, "NaN bias");
  with([](Clusters&, TensorMap& tm) { tm.erase("head.cluster.prior"); }, "missing prior");
  with([](Clusters& c, TensorMap& tm) {
    tm["head.cluster.weight"] = Tensor::from_f32("head.cluster.weight", {kK - 1, kC}, c.w.data());
  }, "wrong shape");
}

TEST(ClusterHead, ChecksPassOnGoodTable) {
  const auto m = base_model();
  EXPECT_NO_THROW(clustered(*m, random_clusters(6)));
}

// ---------------------------------------------------------------- embedding cache and storage

TEST(EmbCache, LruAndHitCountsOfAHandTracedSequence) {
  const auto m = base_model();
  EmbCache cache(m->emb().ref, nullptr, 0, 2);
  std::vector<float> row(kC), want(kC);
  // a b a c b : a miss, b miss, a hit, c miss (evicts b, the least recently used), b miss (evicts a)
  for (int32_t t : {1, 2, 1, 3, 2, 1}) {
    cache.get(t, row.data());
    kern::get_row(m->emb().ref, t, want.data());
    ASSERT_EQ(0, std::memcmp(row.data(), want.data(), sizeof(float) * kC));
  }
  // 1 m, 2 m, 1 h, 3 m (evict 2), 2 m (evict 1), 1 m (evict 3)
  EXPECT_EQ(cache.stats().lookups, 6u);
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.stats().bytes_read, 5u * kC * 4);
  EXPECT_THROW(cache.get(kV, row.data()), Error);
  EXPECT_THROW(cache.get(-1, row.data()), Error);
  EXPECT_THROW(EmbCache(m->emb().ref, nullptr, 0, 0), Error);
}

TEST(EmbCache, NeverChangesOutputsInMemoryOrFromTheFile) {
  for (const char* dt : {"f32", "bf16", "i8"}) {
    SCOPED_TRACE(dt);
    const auto m0 = base_model(dt);
    const std::string path = test::temp_dir() + "/emb_" + dt + ".rwkvl";
    m0->save_native(path, "keep");
    const auto m = Model::load(path, {});
    ASSERT_TRUE(m->file());
    const auto toks = tokens(40, 12);
    const auto ref = run(m, toks, nullptr);
    for (int64_t rows : {1, 7, kV}) {
      SessionParams sp;
      sp.threads = 2;
      sp.memory.emb_rows = rows;
      Session ctx(m, sp);
      State st;
      st.reset(m->config());
      std::vector<float> out(toks.size() * kV);
      ctx.eval(st, toks.data(), toks.size(), 1, nullptr, out.data());
      ASSERT_EQ(0, std::memcmp(out.data(), ref.data(), out.size() * 4)) << rows << " rows";
      ASSERT_TRUE(ctx.storage());
      EXPECT_EQ(ctx.emb_cache()->stats().lookups, toks.size());
      const uint64_t misses = ctx.emb_cache()->stats().lookups - ctx.emb_cache()->stats().hits;
      EXPECT_EQ(ctx.storage()->stats().reads, misses);  // every miss is one read from the file
      EXPECT_EQ(ctx.storage()->stats().bytes, ctx.emb_cache()->stats().bytes_read);
      if (rows == kV) {  // only first sightings miss
        std::vector<int32_t> u = toks;
        std::sort(u.begin(), u.end());
        EXPECT_EQ(misses, static_cast<uint64_t>(std::unique(u.begin(), u.end()) - u.begin()));
      }
    }
  }
}

TEST(Storage, ThrottleTakesTheSimulatedTime) {
  const std::string path = test::temp_dir() + "/blob.bin";
  std::string bytes(1 << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  test::write_file(path, bytes);
  StorageOptions o;
  o.mb_per_s = 50;  // 1 MiB -> 21 ms
  o.latency_us = 1000;
  Storage s(path, o);
  std::vector<char> buf(bytes.size());
  const auto t0 = std::chrono::steady_clock::now();
  s.read(0, buf.data(), buf.size());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(secs, 0.001 + (1 << 20) / 50e6 - 1e-4);
  EXPECT_EQ(0, std::memcmp(buf.data(), bytes.data(), bytes.size()));
  EXPECT_EQ(s.stats().reads, 1u);
  EXPECT_EQ(s.stats().bytes, bytes.size());
  EXPECT_THROW(s.read(bytes.size() - 10, buf.data(), 11), Error);  // beyond the end
  StorageOptions bad;
  bad.mb_per_s = -1;
  EXPECT_THROW(Storage(path, bad), Error);
  EXPECT_THROW(Storage(path + ".missing", StorageOptions{}), Error);
}

// ---------------------------------------------------------------- memory planner

// Big enough for streaming: 128 KiB per projection, a 2 MiB head.
constexpr int kBigC = 256, kBigV = 4096;

struct BudgetRun {
  std::vector<float> logits;
  MemoryPlan plan;
  LayerStreamStats stream;
  uint64_t head_stream = 0;
};

BudgetRun run_budget(const std::shared_ptr<Model>& m, const std::vector<int32_t>& toks, uint64_t budget, bool prefetch,
                     size_t chunk) {
  SessionParams sp;
  sp.threads = 2;
  MemoryOptions& mo = sp.memory;
  mo.budget = budget ? budget : uint64_t{1} << 40;  // 0: this session's own minimum (probed first)
  mo.prefetch = prefetch;
  mo.chunk = chunk;
  mo.baseline = 8u << 20;  // fixed, so the minimum does not move with this process's RSS (sanitizers)
  if (budget == 0) mo.budget = Session(m, sp).plan()->minimum + (64u << 10);
  Session ctx(m, sp);
  State st;
  st.reset(m->config());
  BudgetRun r;
  r.logits.resize(toks.size() * static_cast<size_t>(m->config().n_vocab));
  ctx.eval(st, toks.data(), toks.size(), chunk, nullptr, r.logits.data());
  if (ctx.plan()) r.plan = *ctx.plan();
  if (ctx.layer_stream()) r.stream = ctx.layer_stream()->stats();
  r.head_stream = ctx.head().stream_bytes_read();
  return r;
}

TEST(MemoryPlan, LogitsAreBitIdenticalAcrossBudgets) {
  for (bool cluster : {false, true}) {
    for (const char* dt : {"f16", "i8"}) {
      SCOPED_TRACE(std::string(cluster ? "cluster head " : "full head ") + dt);
      const auto base = base_model(dt, kBigC, kBigV);
      const std::string path = test::temp_dir() + "/plan_" + dt + (cluster ? "_c" : "") + ".rwkvl";
      if (cluster) clustered(*base, random_clusters(9, false, kBigV, kBigC))->save_native(path, "keep");
      else base->save_native(path, "keep");
      const auto m = Model::load(path, {});
      const auto toks = tokens(12, 21, kBigV);
      for (size_t chunk : {size_t{1}, size_t{4}}) {
        Session plain(m, 2);
        State st;
        st.reset(m->config());
        std::vector<float> ref(toks.size() * kBigV);
        plain.eval(st, toks.data(), toks.size(), chunk, nullptr, ref.data());
        // The plan at a huge budget keeps everything; at its own minimum everything is streamed.
        const BudgetRun big = run_budget(m, toks, uint64_t{1} << 40, true, chunk);
        EXPECT_EQ(0, std::memcmp(big.logits.data(), ref.data(), ref.size() * 4));
        for (bool s : big.plan.layer_streamed) EXPECT_FALSE(s);
        EXPECT_FALSE(big.plan.head_streamed);
        const uint64_t minimum = big.plan.minimum;
        const uint64_t everything = big.plan.total;
        ASSERT_LT(minimum, everything);
        for (double f : {1.0, 0.6, 0.3, 0.0}) {
          for (bool prefetch : {true, false}) {
            // Budgets between the minimum (plus slack for RSS moving between plans) and everything resident.
            const uint64_t budget =
                f == 0.0 ? 0 : minimum + (64u << 10) + static_cast<uint64_t>(f * static_cast<double>(everything - minimum));
            const BudgetRun r = run_budget(m, toks, budget, prefetch, chunk);
            ASSERT_EQ(0, std::memcmp(r.logits.data(), ref.data(), ref.size() * 4))
                << "budget " << budget << " prefetch " << prefetch << " chunk " << chunk;
            if (budget) {
              EXPECT_LE(r.plan.total, budget);
            }
            if (f == 0.0) {
              int streamed = 0;
              for (bool b : r.plan.layer_streamed) streamed += b;
              // Two layers take the room of the two preload slots: the minimum either streams them or keeps both
              // (then the head is streamed).
              EXPECT_TRUE(streamed > 0 || r.plan.head_streamed);
              if (streamed == 0) continue;
              EXPECT_GT(r.stream.loads, 0u);
              // Two streamed layers fill both slots: from the second token on every layer is a hit.
              if (prefetch) {
                EXPECT_GT(r.stream.prefetch_hits, 0u);
              } else {
                EXPECT_EQ(r.stream.prefetch_hits, 0u);
              }
            }
          }
        }
      }
    }
  }
}

// Six layers at the minimum budget: more streamed layers than the two preload slots, so each hit is the
// background reader having loaded the next layer while the current one ran (not a layer left in a slot).
// With prefetch every acquire is a hit, the first too (preloaded when the stream is built; the reader is waited for before
// the check, so the count does not depend on timing); without it, none is, and every acquire is a load.
TEST(MemoryPlan, PrefetchHitsWhenManyLayersStream) {
  const auto base = base_model("f16", kBigC, kBigV, 6);
  const std::string path = test::temp_dir() + "/prefetch6.rwkvl";
  base->save_native(path, "keep");
  const auto m = Model::load(path, {});
  const auto toks = tokens(8, 23, kBigV);
  for (size_t chunk : {size_t{1}, size_t{4}}) {
    SCOPED_TRACE(chunk);
    const BudgetRun big = run_budget(m, toks, uint64_t{1} << 40, true, chunk);
    const BudgetRun on = run_budget(m, toks, 0, true, chunk);
    const BudgetRun off = run_budget(m, toks, 0, false, chunk);
    int streamed = 0;
    for (bool b : on.plan.layer_streamed) streamed += b;
    ASSERT_GE(streamed, 4) << "the minimum budget should stream most of the 6 layers";
    const uint64_t acquires = static_cast<uint64_t>(streamed) * ((toks.size() + chunk - 1) / chunk);
    std::printf("  chunk %zu: %d layers streamed, %llu acquires; prefetch: %llu loads, %llu hits; off: %llu loads\n",
                chunk, streamed, static_cast<unsigned long long>(acquires),
                static_cast<unsigned long long>(on.stream.loads), static_cast<unsigned long long>(on.stream.prefetch_hits),
                static_cast<unsigned long long>(off.stream.loads));
    EXPECT_GT(on.stream.prefetch_hits, 0u);
    EXPECT_EQ(on.stream.prefetch_hits, acquires);  // every one: the first streamed layer is preloaded with the stream
    EXPECT_EQ(off.stream.prefetch_hits, 0u);
    EXPECT_EQ(off.stream.loads, acquires);
    EXPECT_EQ(0, std::memcmp(on.logits.data(), big.logits.data(), big.logits.size() * 4));
    EXPECT_EQ(0, std::memcmp(off.logits.data(), big.logits.data(), big.logits.size() * 4));
  }
}

TEST(MemoryPlan, HeadStreamingGivesTheSameLogits) {
  // A budget just above the minimum streams the head too (its rows are far bigger than one layer here).
  for (bool cluster : {false, true}) {
    const auto base = base_model("f16", kBigC, kBigV);
    const std::string path = test::temp_dir() + std::string("/head_stream") + (cluster ? "_c" : "") + ".rwkvl";
    if (cluster) clustered(*base, random_clusters(10, false, kBigV, kBigC))->save_native(path, "keep");
    else base->save_native(path, "keep");
    const auto m = Model::load(path, {});
    const auto toks = tokens(9, 22, kBigV);
    const BudgetRun big = run_budget(m, toks, uint64_t{1} << 40, true, 4);
    const BudgetRun small = run_budget(m, toks, 0, true, 4);
    EXPECT_TRUE(small.plan.head_streamed);
    EXPECT_GT(small.head_stream, 0u);
    EXPECT_EQ(0, std::memcmp(small.logits.data(), big.logits.data(), big.logits.size() * 4));
  }
}

TEST(MemoryPlan, EveryTechniqueInOneFileKeepsItsLogitsUnderEveryBudget) {
  // Low-rank + int8 (embedding and head too) + sparse FFN with predictors + cluster head in one file, as
  // `compress` chains them: budgets from everything resident down to the minimum (layers, bundled FFN and
  // head rows streamed, embedding rows cached) change where the bytes live, never the logits.
  const auto base = base_model("f16", kBigC, kBigV);
  compress::Options co;
  co.lowrank = "svd";
  co.rank_frac = 0.25;
  co.quant = "int8";
  co.quant_emb = co.quant_head = true;
  const auto low = compress::run(base, co, nullptr);
  compress::SparseFfnOptions so;
  so.calib = tokens(300, 41, kBigV);
  so.pred.epochs = 3;
  const auto sparse = compress::sparse_ffn(low, so, nullptr);
  const compress::ClusterHeadOptions ho = quick_head_options(16, 512, tokens(300, 42, kBigV));
  const std::string path = test::temp_dir() + "/every_technique.rwkvl";
  compress::cluster_head(sparse, ho, nullptr)->save_native(path, "keep");
  const auto m = Model::load(path, {});
  ASSERT_TRUE(m->sparse_ffn());
  ASSERT_TRUE(m->cluster_head().present());
  ASSERT_TRUE(m->layer(0).att_k.factored());
  ASSERT_EQ(m->head().ref.dtype, DType::kI8);
  const auto toks = tokens(10, 43, kBigV);
  for (size_t chunk : {size_t{1}, size_t{4}}) {
    SCOPED_TRACE(chunk);
    Session plain(m, 2);
    State st;
    st.reset(m->config());
    std::vector<float> ref(toks.size() * kBigV);
    plain.eval(st, toks.data(), toks.size(), chunk, nullptr, ref.data());
    const BudgetRun big = run_budget(m, toks, uint64_t{1} << 40, true, chunk);
    ASSERT_EQ(0, std::memcmp(big.logits.data(), ref.data(), ref.size() * 4));
    const uint64_t minimum = big.plan.minimum, everything = big.plan.total;
    ASSERT_LT(minimum, everything);
    for (double f : {0.5, 0.0}) {
      for (bool prefetch : {true, false}) {
        const uint64_t budget =
            f == 0.0 ? 0 : minimum + (64u << 10) + static_cast<uint64_t>(f * static_cast<double>(everything - minimum));
        const BudgetRun r = run_budget(m, toks, budget, prefetch, chunk);
        ASSERT_EQ(0, std::memcmp(r.logits.data(), ref.data(), ref.size() * 4)) << "budget " << budget << " prefetch " << prefetch;
        if (f == 0.0) {
          EXPECT_TRUE(r.plan.ffn_streamed);
          EXPECT_TRUE(r.plan.head_streamed);
          bool any = false;
          for (bool b : r.plan.layer_streamed) any = any || b;
          if (any) {
            EXPECT_GT(r.stream.loads, 0u);
          }
          EXPECT_GT(r.head_stream, 0u);
        }
      }
    }
  }
}

// A budget that holds the layers but only part of the head: the plan keeps the clusters that save the most storage
// time per resident byte (the cluster head pass's measured usage, stored in the file), copies them into memory and
// streams the rest; the logits stay bit-identical and fewer head bytes are read than with the whole head streamed.
TEST(MemoryPlan, MostUsedHeadClustersStayResident) {
  const auto base = base_model("f16", kBigC, kBigV);
  const compress::ClusterHeadOptions ho = quick_head_options(12, 1024, tokens(400, 44, kBigV));
  compress::ClusterHeadReport rep;
  const std::string path = test::temp_dir() + "/head_clusters_resident.rwkvl";
  compress::cluster_head(base, ho, &rep)->save_native(path, "keep");
  const auto m = Model::load(path, {});
  const ClusterHead& H = m->cluster_head();
  // The usage: one share per cluster, each in [0, 1], summing to the mean number of clusters chosen (at least 3).
  ASSERT_EQ(rep.cluster_usage.size(), static_cast<size_t>(H.k));
  double sum = 0;
  for (double u : rep.cluster_usage) {
    EXPECT_GE(u, 0.0);
    EXPECT_LE(u, 1.0);
    sum += u;
  }
  EXPECT_GE(sum, 3.0 - 1e-9);
  const auto toks = tokens(10, 45, kBigV);
  const BudgetRun big = run_budget(m, toks, uint64_t{1} << 40, true, 1);
  const BudgetRun none = run_budget(m, toks, 0, true, 1);
  ASSERT_TRUE(none.plan.head_streamed);
  const uint64_t head_bytes = static_cast<uint64_t>(kern::row_bytes(m->head().ref.dtype, m->head().ref.cols)) *
                              static_cast<uint64_t>(m->head().ref.rows);
  // Layers resident, about half of the head's bytes on top (and an embedding cache of 256 rows, the least a plan
  // gives it by default: the room left after the weights goes to it).
  const uint64_t emb_row = static_cast<uint64_t>(kern::row_bytes(m->emb().ref.dtype, m->emb().ref.cols)) + 12;
  const uint64_t budget = big.plan.total - head_bytes / 2 - (4096 - 256) * emb_row;
  const BudgetRun half = run_budget(m, toks, budget, true, 1);
  ASSERT_EQ(0, std::memcmp(half.logits.data(), big.logits.data(), big.logits.size() * 4));
  EXPECT_LE(half.plan.total, budget);
  ASSERT_TRUE(half.plan.head_streamed);
  for (bool s : half.plan.layer_streamed) EXPECT_FALSE(s);
  ASSERT_GT(half.plan.head_clusters_resident, 0);
  ASSERT_LT(half.plan.head_clusters_resident, H.k);
  ASSERT_EQ(half.plan.head_resident_clusters.size(), static_cast<size_t>(H.k));
  // The resident clusters hold a larger share of the rows read per token than of the head's bytes (hot ones first),
  // and every resident cluster is used at least as often as every streamed one of no more rows.
  EXPECT_GT(half.plan.head_resident_usage, static_cast<double>(half.plan.resident_head) / static_cast<double>(head_bytes));
  for (int64_t i = 0; i < H.k; ++i)
    for (int64_t j = 0; j < H.k; ++j)
      if (half.plan.head_resident_clusters[static_cast<size_t>(i)] && !half.plan.head_resident_clusters[static_cast<size_t>(j)] &&
          H.size(j) <= H.size(i)) {
        EXPECT_GE(rep.cluster_usage[static_cast<size_t>(i)], rep.cluster_usage[static_cast<size_t>(j)]) << i << " vs " << j;
      }
  EXPECT_GT(half.head_stream, 0u);
  EXPECT_LT(half.head_stream, none.head_stream);
  EXPECT_LT(half.plan.streamed_per_token, none.plan.streamed_per_token);
  // The predicted storage time is the storage model's for the plan's reads and bytes.
  StorageOptions emmc = storage_preset("emmc")->options;
  SessionParams sp;
  sp.memory.budget = budget;
  sp.memory.baseline = 8u << 20;
  sp.memory.chunk = 1;
  sp.storage = emmc;
  Session ctx(m, sp);
  const MemoryPlan& p = *ctx.plan();
  EXPECT_GT(p.reads_per_token, 0.0);
  EXPECT_NEAR(p.io_seconds_per_token, storage_seconds(emmc, p.reads_per_token, static_cast<double>(p.streamed_per_token), 1),
              1e-6 * p.io_seconds_per_token + 1e-9);
  // Two threads on a device with a queue of two issue a token's head pieces together: the same plan (a margin
  // given, so the thread count does not move it) predicts less time, by at most half the head reads' access times.
  MemoryRequest r1;
  r1.budget = budget;
  r1.baseline = 8u << 20;
  r1.chunk = 1;
  r1.cluster_head = true;
  r1.cluster_usage = rep.cluster_usage;
  r1.storage = emmc;
  r1.margin = 1u << 20;
  MemoryRequest r2 = r1;
  r2.threads = 2;
  const MemoryPlan p1 = plan_memory(*m, r1), p2 = plan_memory(*m, r2);
  ASSERT_EQ(p1.head_resident_clusters, p2.head_resident_clusters);
  ASSERT_EQ(p1.reads_per_token, p2.reads_per_token);
  ASSERT_GT(p1.reads_per_token, 1.0);
  EXPECT_LT(p2.io_seconds_per_token, p1.io_seconds_per_token);
  EXPECT_GE(p2.io_seconds_per_token, storage_seconds(emmc, p1.reads_per_token, static_cast<double>(p1.streamed_per_token), 2) - 1e-9);
}

TEST(MemoryPlan, StorageAfterAnFfnCacheKeepsTheCacheAndTheLogits) {
  // set_storage() re-creates the FFN runtime from its own options (once a use-after-free): the neuron
  // cache must survive with the same outputs.
  const auto base = base_model("f32");
  compress::SparseFfnOptions so;
  so.calib = tokens(200, 31);
  so.predictors = false;
  const std::string path = test::temp_dir() + "/bundled.rwkvl";
  compress::sparse_ffn(base, so, nullptr)->save_native(path, "keep");
  const auto m = Model::load(path, {});
  const auto toks = tokens(8, 32);
  SessionParams sp;
  sp.ffn.mode = FfnMode::kExact;
  Session plain(m, sp);
  State s0;
  s0.reset(m->config());
  std::vector<float> ref(toks.size() * kV);
  plain.eval(s0, toks.data(), toks.size(), 1, nullptr, ref.data());
  SessionParams cached = sp;
  cached.ffn.cache_bytes = 1u << 20;
  cached.storage.mb_per_s = 1e5;
  Session ctx(m, cached);
  ASSERT_NE(ctx.ffn().cache(), nullptr);
  State s1;
  s1.reset(m->config());
  std::vector<float> out(toks.size() * kV);
  ctx.eval(s1, toks.data(), toks.size(), 1, nullptr, out.data());
  EXPECT_EQ(0, std::memcmp(out.data(), ref.data(), ref.size() * 4));
  EXPECT_GT(ctx.storage()->stats().reads, 0u);  // the cache's reads went through the simulated device
}

TEST(MemoryPlan, RefusesBudgetsBelowTheMinimumNamingIt) {
  const auto base = base_model("f16", kBigC, kBigV);
  const std::string path = test::temp_dir() + "/refuse.rwkvl";
  base->save_native(path, "keep");
  const auto m = Model::load(path, {});
  SessionParams mo;
  mo.memory.budget = 1 << 20;  // 1 MiB: less than the process itself
  mo.memory.baseline = 8u << 20;
  try {
    Session ctx(m, mo);
    ADD_FAILURE() << "accepted a 1 MiB budget";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("below the minimum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--mem-budget"), std::string::npos) << e.what();
  }
  // A model in memory (not a native file) runs under a budget only when everything fits.
  const auto mem = base_model("f16", kBigC, kBigV);
  SessionParams big;
  big.memory.budget = uint64_t{1} << 40;
  big.memory.baseline = 8u << 20;
  std::unique_ptr<Session> c2;
  EXPECT_NO_THROW(c2 = std::make_unique<Session>(mem, big));
  ASSERT_TRUE(c2 && c2->plan());
  SessionParams tight = big;
  tight.memory.budget = c2->plan()->minimum + (64u << 10);
  try {
    Session c3(mem, tight);
    ADD_FAILURE() << "streamed an in-memory model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("native"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkvl

namespace rwkvl {
namespace {

// The cluster head pass with an int4 version of the head rows and its importance profile (compress --fidelities).
std::shared_ptr<Model> fidelity_model(const std::shared_ptr<Model>& base, int V, const std::string& name,
                                      compress::ClusterHeadReport* rep, std::vector<int32_t>* calib = nullptr) {
  compress::ClusterHeadOptions ho = quick_head_options(12, 1024, tokens(300, 51, V));
  ho.int4_version = true;
  if (calib) *calib = ho.calib;
  const std::string path = test::temp_dir() + "/" + name + ".rwkvl";
  compress::cluster_head(base, ho, rep)->save_native(path, "keep");
  return Model::load(path, {});
}

// Mean next-token loss over positions 0..n-2 of toks (x: the head inputs), with the given clusters read at int4.
double mean_nll(const std::shared_ptr<Model>& m, const std::vector<float>& x, const std::vector<int32_t>& toks,
                const std::vector<uint8_t>& low) {
  HeadRuntime hr(*m, nullptr, HeadOptions{});
  hr.set_low(low);
  std::vector<float> out(kV);
  double s = 0;
  for (size_t i = 0; i + 1 < toks.size(); ++i) {
    hr.logits(x.data() + i * kC, 1, out.data());
    double mx = out[0];
    for (float v : out) mx = std::max(mx, static_cast<double>(v));
    double z = 0;
    for (float v : out) z += std::exp(static_cast<double>(v) - mx);
    s += mx + std::log(z) - out[static_cast<size_t>(toks[i + 1])];
  }
  return s / static_cast<double>(toks.size() - 1);
}

}  // namespace

// The int4 version holds the grouped head rows quantised (q4_g32), and the pass's profile of each cluster (from
// its closed form over the chosen clusters' log-sum-exps) equals the loss increase the runtime's cluster-mode
// logits show when that cluster alone is read at int4 (a second implementation: full logits, log-softmax).
TEST(Fidelity, ProfileEqualsTheRuntimesLossIncrease) {
  compress::ClusterHeadReport rep;
  std::vector<int32_t> calib;
  const auto m = fidelity_model(base_model("f32"), kV, "fidelity_small", &rep, &calib);
  const ClusterHead& H = m->cluster_head();
  ASSERT_TRUE(H.has_low());
  const size_t rb = static_cast<size_t>(kern::row_bytes(DType::kQ4, kC));
  std::vector<float> row(kC);
  std::vector<uint8_t> q(rb);
  for (int64_t g = 0; g < kV; ++g) {
    kern::get_row(m->head().ref, g, row.data());
    quantize_rows_q4(row.data(), 1, kC, q.data());
    ASSERT_EQ(0, std::memcmp(q.data(), static_cast<const uint8_t*>(H.low.data) + static_cast<size_t>(g) * rb, rb)) << "row " << g;
  }
  ASSERT_EQ(rep.profile_positions, static_cast<int64_t>(calib.size()) - 1);
  ASSERT_EQ(rep.cluster_loss_int4.size(), static_cast<size_t>(H.k));
  const std::vector<float> x = head_inputs(m, calib);
  const double base = mean_nll(m, x, calib, {});
  double sum_abs = 0;
  for (int64_t j = 0; j < H.k; ++j) {
    std::vector<uint8_t> low(static_cast<size_t>(H.k), 0);
    low[static_cast<size_t>(j)] = 1;
    const double want = rep.cluster_loss_int4[static_cast<size_t>(j)];
    EXPECT_NEAR(mean_nll(m, x, calib, low) - base, want, 2e-6 + 1e-3 * std::fabs(want)) << "cluster " << j;
    sum_abs += std::fabs(want);
  }
  EXPECT_GT(sum_abs, 1e-5);  // int4 changes the loss measurably: the comparison above is not between zeros
  const double all = mean_nll(m, x, calib, std::vector<uint8_t>(static_cast<size_t>(H.k), 1)) - base;
  EXPECT_NEAR(all, rep.loss_int4_all, 2e-6 + 1e-3 * std::fabs(all));
  EXPECT_GT(std::fabs(all), 1e-5);
  // Without an int4 version: int4 clusters are refused.
  const auto plain = clustered(*base_model("f32"), random_clusters(1));
  HeadRuntime hr(*plain, nullptr, HeadOptions{});
  EXPECT_THROW(hr.set_low(std::vector<uint8_t>(kK, 1)), Error);
}

// Int4 clusters give the same logits read in place, from a resident copy or streamed from the file.
TEST(Fidelity, Int4ClustersReadInPlaceResidentOrStreamedAgree) {
  compress::ClusterHeadReport rep;
  const auto m = fidelity_model(base_model("i8"), kV, "fidelity_stream", &rep);
  const ClusterHead& H = m->cluster_head();
  const std::vector<float> x = head_inputs(m, tokens(6, 52));
  std::vector<uint8_t> low(static_cast<size_t>(H.k), 0), resident(static_cast<size_t>(H.k), 0);
  for (int64_t j = 0; j < H.k; ++j) {
    low[static_cast<size_t>(j)] = j % 2;
    resident[static_cast<size_t>(j)] = (j / 2) % 2;  // every combination of fidelity and residency
  }
  HeadOptions all;  // every cluster chosen: every row's logit is exact
  all.p = 1.0;
  all.max_clusters = static_cast<int>(H.k);
  HeadRuntime high(*m, nullptr, all), in_place(*m, nullptr, all), streamed(*m, nullptr, all);
  in_place.set_low(low);
  streamed.set_stream(std::make_shared<Storage>(m->file()->path(), StorageOptions{}), 4096, resident, low);
  EXPECT_GT(streamed.resident_bytes(), 0u);
  // Streamed by two threads from a device with a queue of two: a buffer that holds several pieces, whose reads are
  // issued together (their 2 ms access times overlap: the device is busy for less than the callers wait in all).
  ThreadPool pool(2);
  HeadRuntime together(*m, &pool, all);
  const StorageOptions queued{1000.0, 2000.0, 2};
  const auto queued_storage = std::make_shared<Storage>(m->file()->path(), queued);
  together.set_stream(queued_storage, 64 << 10, resident, low);
  std::vector<float> a(kV), b(kV), c(kV), d(kV);
  double changed = 0;
  for (size_t t = 0; t < 6; ++t) {
    high.logits(x.data() + t * kC, 1, a.data());
    in_place.logits(x.data() + t * kC, 1, b.data());
    streamed.logits(x.data() + t * kC, 1, c.data());
    together.logits(x.data() + t * kC, 1, d.data());
    for (int64_t g = 0; g < kV; ++g) {
      const size_t tok = static_cast<size_t>(H.perm[g]);
      const bool is_low = low[static_cast<size_t>(std::upper_bound(H.offsets, H.offsets + H.k + 1, g) - H.offsets - 1)];
      ASSERT_NEAR(b[tok], c[tok], 1e-5) << "token " << tok;
      ASSERT_NEAR(b[tok], d[tok], 1e-5) << "token " << tok;
      if (!is_low) ASSERT_NEAR(a[tok], b[tok], 1e-5) << "token " << tok;
      else changed = std::max(changed, std::fabs(static_cast<double>(a[tok]) - b[tok]));
    }
  }
  EXPECT_GT(changed, 1e-4);  // the int4 clusters' logits do come from the int4 rows
  EXPECT_GT(streamed.stream_bytes_read(), 0u);
  EXPECT_EQ(together.stream_bytes_read(), streamed.stream_bytes_read());
  const StorageStats st = queued_storage->stats();
  EXPECT_GE(st.reads, 12u);  // at least two streamed pieces per token
  EXPECT_LT(st.busy_seconds, 0.8 * st.seconds) << st.reads << " reads";
}

// Under a latency target the planner reads the clusters that cost the least loss per byte at int4 until the
// predicted time per token meets it; a target below the fastest plan is refused, naming that plan's prediction.
TEST(Fidelity, LatencyTargetTradesTheLeastImportantClusters) {
  compress::ClusterHeadReport rep;
  const auto m = fidelity_model(base_model("i8", kBigC, kBigV), kBigV, "fidelity_plan", &rep);
  const ClusterHead& H = m->cluster_head();
  const auto toks = tokens(6, 53, kBigV);
  auto params = [&](uint64_t budget, MemoryRequest::Fidelity f, double target) {
    SessionParams sp;
    sp.threads = 2;
    sp.memory.budget = budget;
    sp.memory.baseline = 8u << 20;
    sp.memory.chunk = 1;
    sp.memory.fidelity = f;
    sp.memory.latency_target = target;
    sp.storage = storage_preset("emmc")->options;
    return sp;
  };
  using F = MemoryRequest::Fidelity;
  const uint64_t minimum = Session(m, params(uint64_t{1} << 40, F::kHigh, 0)).plan()->minimum;
  const uint64_t budget = minimum + (256u << 10);
  const MemoryPlan high = *Session(m, params(budget, F::kHigh, 0)).plan();
  const MemoryPlan low = *Session(m, params(budget, F::kLow, 0)).plan();
  ASSERT_TRUE(high.head_streamed);
  EXPECT_EQ(high.head_clusters_low, 0);
  EXPECT_EQ(low.head_clusters_low, H.k);
  double sum = 0;
  for (double v : rep.cluster_loss_int4) sum += v;
  EXPECT_NEAR(low.predicted_loss, sum, 1e-6);
  ASSERT_LT(low.seconds_per_token(), high.seconds_per_token());
  // A target between the two: met, with some clusters at int4 and no more loss than all of them.
  const double target = 0.5 * (low.seconds_per_token() + high.seconds_per_token());
  Session elastic(m, params(budget, F::kAuto, target));
  const MemoryPlan& e = *elastic.plan();
  EXPECT_LE(e.seconds_per_token(), target);
  EXPECT_GT(e.head_clusters_low, 0);
  EXPECT_LE(e.predicted_loss, low.predicted_loss + 1e-12);
  EXPECT_LE(e.total, budget);
  // Its logits are those of the same int4 clusters read in place.
  State st;
  st.reset(m->config());
  std::vector<float> out(toks.size() * kBigV);
  elastic.eval(st, toks.data(), toks.size(), 1, nullptr, out.data());
  SessionParams in_place;
  in_place.threads = 2;
  Session ref(m, in_place);
  ref.head().set_low(e.head_low_clusters);
  State st2;
  st2.reset(m->config());
  std::vector<float> want(toks.size() * kBigV);
  ref.eval(st2, toks.data(), toks.size(), 1, nullptr, want.data());
  EXPECT_LE(max_abs_diff(out, want), 1e-5);
  // A target no plan meets: refused, naming the fastest plan's prediction.
  try {
    Session s(m, params(budget, F::kAuto, 0.5 * low.seconds_per_token()));
    ADD_FAILURE() << "a target below the fastest plan was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("the fastest plan predicts"), std::string::npos) << err.what();
  }
  // A target or a fidelity without a budget, int4 on a file without an int4 version: refused.
  EXPECT_THROW(Session(m, params(0, F::kAuto, 0.01)), Error);
  EXPECT_THROW(Session(m, params(0, F::kLow, 0)), Error);
  const std::string path = test::temp_dir() + "/fidelity_none.rwkvl";
  clustered(*base_model("i8", kBigC, kBigV), random_clusters(9, false, kBigV, kBigC))->save_native(path, "keep");
  const auto none = Model::load(path, {});
  EXPECT_THROW(Session(none, params(budget, F::kLow, 0)), Error);
}

}  // namespace rwkvl
