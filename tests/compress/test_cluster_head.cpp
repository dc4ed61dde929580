// compress --cluster-head (issue #6): the building blocks against hand-made data (k-means finds separated
// blobs, is deterministic and thread-count independent; the cap splits big clusters, also of identical
// points; PCA keeps the variance of data in a subspace) and the whole pass on a synthetic model: a valid
// grouped head whose rows are the original rows byte for byte, training that beats its initialisation,
// the same logits as the plain model in full mode, the same file for the same seed and any thread count,
// and clear errors for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "compress/cluster_head.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "runtime/head_runtime.h"
#include "model/model.h"
#include "runtime/session.h"

namespace rwkvl {
namespace {

std::vector<float> blobs(int n_blobs, int per, int d, uint32_t seed, std::vector<int>* label) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> centres(static_cast<size_t>(n_blobs * d));
  for (float& c : centres) c = 40.f * n(g);
  std::vector<float> pts;
  for (int b = 0; b < n_blobs; ++b)
    for (int i = 0; i < per; ++i) {
      for (int j = 0; j < d; ++j) pts.push_back(centres[static_cast<size_t>(b * d + j)] + n(g));
      label->push_back(b);
    }
  return pts;
}

TEST(ClusterKmeans, FindsSeparatedBlobs) {
  std::vector<int> label;
  const auto pts = blobs(5, 120, 8, 3, &label);
  const int64_t n = static_cast<int64_t>(label.size());
  const auto a = compress::kmeans(pts.data(), n, 8, 5, 30, 7, 1);
  // Every blob is one cluster and the clusters differ.
  std::set<int32_t> used;
  for (int b = 0; b < 5; ++b) {
    const int32_t c = a[static_cast<size_t>(b * 120)];
    for (int i = 0; i < 120; ++i) ASSERT_EQ(a[static_cast<size_t>(b * 120 + i)], c) << "blob " << b;
    used.insert(c);
  }
  EXPECT_EQ(used.size(), 5u);
}

TEST(ClusterKmeans, DeterministicAndThreadIndependent) {
  std::mt19937 g(11);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> pts(3000 * 6);
  for (float& x : pts) x = n(g);
  const auto a = compress::kmeans(pts.data(), 3000, 6, 17, 25, 5, 1);
  EXPECT_EQ(a, compress::kmeans(pts.data(), 3000, 6, 17, 25, 5, 1));
  EXPECT_EQ(a, compress::kmeans(pts.data(), 3000, 6, 17, 25, 5, 2));
  EXPECT_NE(a, compress::kmeans(pts.data(), 3000, 6, 17, 25, 6, 1));  // another seed, another start
  std::vector<int> count(17, 0);
  for (int32_t c : a) {
    ASSERT_GE(c, 0);
    ASSERT_LT(c, 17);
    ++count[static_cast<size_t>(c)];
  }
  for (int c : count) EXPECT_GT(c, 0);  // no empty cluster
}

TEST(ClusterCap, SplitsBigClustersAndCoversEveryPointOnce) {
  std::mt19937 g(2);
  std::normal_distribution<float> n(0.f, 1.f);
  const int64_t N = 1000, d = 4;
  std::vector<float> pts(static_cast<size_t>(N * d));
  for (float& x : pts) x = n(g);
  // One huge cluster (900 points) and ten small ones; then 300 identical points that k-means cannot split.
  std::vector<int32_t> a(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) a[static_cast<size_t>(i)] = i < 900 ? 0 : static_cast<int32_t>(1 + (i - 900) / 10);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < d; ++j) pts[static_cast<size_t>(i * d + j)] = 0.5f;
  const auto c = compress::cap_clusters(pts.data(), N, d, a, 64, 3, 2);
  ASSERT_EQ(c.size(), a.size());
  int32_t k = 0;
  for (int32_t x : c) k = std::max(k, x + 1);
  std::vector<int> size(static_cast<size_t>(k), 0);
  for (int32_t x : c) ++size[static_cast<size_t>(x)];
  for (int s : size) {
    EXPECT_GT(s, 0);
    EXPECT_LE(s, 64);
  }
  EXPECT_GE(k, 900 / 64 + 10);
  // Clusters are numbered in order of their first point, and the small clusters stay as they were.
  std::vector<int32_t> first(static_cast<size_t>(k), -1);
  for (int64_t i = 0; i < N; ++i)
    if (first[static_cast<size_t>(c[static_cast<size_t>(i)])] < 0) first[static_cast<size_t>(c[static_cast<size_t>(i)])] = static_cast<int32_t>(i);
  EXPECT_TRUE(std::is_sorted(first.begin(), first.end()));
  for (int64_t i = 900; i < N; ++i) EXPECT_EQ(c[static_cast<size_t>(i)], c[static_cast<size_t>(900 + (i - 900) / 10 * 10)]);
  EXPECT_EQ(c, compress::cap_clusters(pts.data(), N, d, a, 64, 3, 1));
}

TEST(ClusterPca, KeepsTheVarianceOfDataInASubspace) {
  // Points a*u + b*v (+ an offset) in 6-D with u, v orthonormal: two components carry all the variance.
  std::mt19937 g(5);
  std::normal_distribution<double> n(0.0, 1.0);
  const int64_t N = 2000, d = 6;
  const double u[6] = {0.6, 0.8, 0, 0, 0, 0}, v[6] = {0, 0, 0, 0.8, 0, -0.6};
  std::vector<float> X(static_cast<size_t>(N * d));
  double va = 0, vb = 0, ma = 0, mb = 0;
  std::vector<double> A(static_cast<size_t>(N)), B(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    A[static_cast<size_t>(i)] = 3.0 * n(g);
    B[static_cast<size_t>(i)] = 1.0 * n(g);
    ma += A[static_cast<size_t>(i)];
    mb += B[static_cast<size_t>(i)];
    for (int j = 0; j < d; ++j) X[static_cast<size_t>(i * d + j)] = static_cast<float>(5.0 + A[static_cast<size_t>(i)] * u[j] + B[static_cast<size_t>(i)] * v[j]);
  }
  ma /= N;
  mb /= N;
  for (int64_t i = 0; i < N; ++i) {
    va += (A[static_cast<size_t>(i)] - ma) * (A[static_cast<size_t>(i)] - ma);
    vb += (B[static_cast<size_t>(i)] - mb) * (B[static_cast<size_t>(i)] - mb);
  }
  const auto P = compress::pca_project(X.data(), N, d, 4);
  std::vector<double> var(4, 0.0), mean(4, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int j = 0; j < 4; ++j) mean[static_cast<size_t>(j)] += P[static_cast<size_t>(i * 4 + j)] / static_cast<double>(N);
  for (int64_t i = 0; i < N; ++i)
    for (int j = 0; j < 4; ++j) {
      const double x = P[static_cast<size_t>(i * 4 + j)] - mean[static_cast<size_t>(j)];
      var[static_cast<size_t>(j)] += x * x;
    }
  EXPECT_NEAR(mean[0], 0.0, 1e-3);
  EXPECT_NEAR(var[0] + var[1], va + vb, 1e-3 * (va + vb));  // all the variance in two components
  EXPECT_GT(var[0], var[1]);
  EXPECT_LT(var[2] + var[3], 1e-6 * (va + vb));
  EXPECT_NEAR(var[0], std::max(va, vb), 0.05 * std::max(va, vb));
}

std::shared_ptr<Model> synth(const char* dtype) {
  ModelConfig cfg;
  cfg.arch_major = 5;
  cfg.n_layer = 2;
  cfg.n_embd = 64;
  cfg.n_vocab = 1024;
  return synth_model(cfg, dtype, 3);
}

compress::ClusterHeadOptions small_options(int threads = 1) {
  compress::ClusterHeadOptions o;
  o.k = 8;
  o.cap = 200;
  o.pca_dims = 32;
  o.epochs = 15;
  o.lr = 0.02;
  std::mt19937 g(9);
  for (int i = 0; i < 400; ++i) o.calib.push_back(static_cast<int32_t>(g() % 1024));
  o.n_threads = threads;
  o.chunk = 64;
  return o;
}

TEST(ClusterHeadPass, BuildsAValidGroupedHead) {
  for (const char* dt : {"f32", "i8"}) {
    SCOPED_TRACE(dt);
    const auto m = synth(dt);
    compress::ClusterHeadReport rep;
    const auto out = compress::cluster_head(m, small_options(), &rep);
    const ClusterHead& H = out->cluster_head();
    ASSERT_TRUE(H.present());
    EXPECT_EQ(H.k, rep.k_final);
    EXPECT_GE(rep.k_final, 8);
    EXPECT_LE(rep.largest, 200);
    EXPECT_LE(H.largest, 200);
    // Grouped rows are the original rows, byte for byte (and the int8 scales follow them).
    const kern::MatRef& a = m->head().ref;
    const kern::MatRef& b = out->head().ref;
    const size_t rb = static_cast<size_t>(kern::row_bytes(a.dtype, a.cols));
    for (int64_t i = 0; i < 1024; ++i) {
      ASSERT_EQ(0, std::memcmp(static_cast<const uint8_t*>(b.data) + static_cast<size_t>(i) * rb,
                               static_cast<const uint8_t*>(a.data) + static_cast<size_t>(H.perm[i]) * rb, rb));
      if (a.dtype == DType::kI8) {
        ASSERT_EQ(b.scale_at(i), a.scale_at(H.perm[i]));
      }
    }
    // The kept weights are never worse than the start; the runtime's rule reads a part of the head.
    EXPECT_LE(rep.heldout_kl, rep.heldout_kl_init);
    EXPECT_GT(rep.heldout_rows_frac, 0.0);
    EXPECT_LE(rep.heldout_rows_frac, 1.0);
    ASSERT_EQ(out->passes().size(), m->passes().size() + 1);
    EXPECT_TRUE(out->passes().back().contains("cluster_head"));
    // Full mode gives the plain model's logits; cluster mode gives finite ones.
    std::vector<int32_t> toks = {1, 5, 900, 77, 3};
    for (HeadMode mode : {HeadMode::kFull, HeadMode::kCluster}) {
      SessionParams sp;
      sp.head.mode = mode;
      Session c0(m, 1), c1(out, sp);
      State s0, s1;
      s0.reset(m->config());
      s1.reset(m->config());
      std::vector<float> l0(1024), l1(1024);
      c0.eval(s0, toks.data(), toks.size(), 1, l0.data(), nullptr);
      c1.eval(s1, toks.data(), toks.size(), 1, l1.data(), nullptr);
      for (size_t i = 0; i < l0.size(); ++i) {
        ASSERT_TRUE(std::isfinite(l1[i]));
        if (mode == HeadMode::kFull) {
          ASSERT_NEAR(l0[i], l1[i], 1e-5);
        }
      }
    }
  }
}

TEST(ClusterHeadPass, DistillationLearnsFromZero) {
  // From an all-zero head (uniform cluster distribution) training must find most of the structure.
  const auto m = synth("f32");
  auto o = small_options();
  o.lse_init = false;
  o.epochs = 40;
  compress::ClusterHeadReport rep;
  compress::cluster_head(m, o, &rep);
  EXPECT_LT(rep.heldout_kl, 0.5 * rep.heldout_kl_init) << rep.heldout_kl << " vs " << rep.heldout_kl_init;
  EXPECT_GT(rep.best_epoch, 0);
}

TEST(ClusterHeadPass, SameSeedSameFileAnyThreadCount) {
  const auto m = synth("f32");
  const auto a = compress::cluster_head(m, small_options(1), nullptr);
  const auto b = compress::cluster_head(m, small_options(2), nullptr);
  for (const char* name : {"head.perm", "head.cluster.offsets", "head.cluster.weight", "head.cluster.bias", "head.cluster.prior", "head.weight"}) {
    const Tensor& x = a->tensors().at(name);
    const Tensor& y = b->tensors().at(name);
    ASSERT_EQ(x.nbytes, y.nbytes) << name;
    EXPECT_EQ(0, std::memcmp(x.data, y.data, x.nbytes)) << name;
  }
}

TEST(ClusterHeadPass, UniformPriorIsMinusLogClusterSize) {
  const auto m = synth("f32");
  auto o = small_options();
  o.uniform_prior = true;
  const auto out = compress::cluster_head(m, o, nullptr);
  const ClusterHead& H = out->cluster_head();
  for (int64_t j = 0; j < H.k; ++j)
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i)
      ASSERT_FLOAT_EQ(H.prior[i], static_cast<float>(-std::log(static_cast<double>(H.size(j)))));
}

TEST(ClusterHeadPass, EmbeddingSourceGroupsByTheEmbeddingRows) {
  // The pass's clusters with from_embedding are k-means (same seed and iterations) of the PCA of the
  // embedding rows, computed here directly; the cap is above the vocabulary so it never splits.
  const auto m = synth("f32");
  auto o = small_options();
  o.from_embedding = true;
  o.cap = 1024;
  const auto out = compress::cluster_head(m, o, nullptr);
  const int64_t V = 1024, C = 64;
  std::vector<float> rows(static_cast<size_t>(V * C));
  for (int64_t t = 0; t < V; ++t) kern::get_row(m->emb().ref, t, rows.data() + t * C);
  const auto proj = compress::pca_project(rows.data(), V, C, o.pca_dims);
  const auto assign = compress::kmeans(proj.data(), V, o.pca_dims, o.k, o.kmeans_iters, o.seed, 1);
  const ClusterHead& H = out->cluster_head();
  ASSERT_EQ(H.k, o.k);
  for (int64_t j = 0; j < H.k; ++j)
    for (int32_t g = H.offsets[j]; g < H.offsets[j + 1]; ++g)
      ASSERT_EQ(assign[static_cast<size_t>(H.perm[g])], assign[static_cast<size_t>(H.perm[H.offsets[j]])]) << "cluster " << j;
  EXPECT_EQ(out->passes().back()["cluster_head"]["source"], "embedding rows");
  // Head rows give other clusters on this model (its embedding and head are independent random matrices).
  const auto by_head = compress::cluster_head(m, small_options(), nullptr);
  EXPECT_NE(0, std::memcmp(by_head->tensors().at("head.perm").data, out->tensors().at("head.perm").data, V * 4));
}

TEST(ClusterHeadPass, PriorSmoothingMovesTowardsUniform) {
  // Smoothing a adds a x the cluster's mean share to every token's share: a huge a gives -log n_j.
  const auto m = synth("f32");
  auto o = small_options();
  o.prior_smoothing = 1e6;
  const auto smooth = compress::cluster_head(m, o, nullptr);
  const ClusterHead& H = smooth->cluster_head();
  for (int64_t j = 0; j < H.k; ++j)
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i)
      ASSERT_NEAR(H.prior[i], -std::log(static_cast<double>(H.size(j))), 1e-4);
  // Little smoothing keeps the calibration shares apart: priors differ inside some cluster.
  o.prior_smoothing = 1e-3;
  const auto sharp = compress::cluster_head(m, o, nullptr);
  const ClusterHead& S = sharp->cluster_head();
  double spread = 0;
  for (int64_t j = 0; j < S.k; ++j)
    for (int32_t i = S.offsets[j]; i < S.offsets[j + 1]; ++i)
      spread = std::max(spread, std::abs(S.prior[i] + std::log(static_cast<double>(S.size(j)))));
  EXPECT_GT(spread, 0.2);
}

TEST(ClusterHeadPass, RefusesBadInput) {
  const auto m = synth("f32");
  auto bad = [&](auto edit, const char* what) {
    auto o = small_options();
    edit(o);
    EXPECT_THROW(compress::cluster_head(m, o, nullptr), Error) << what;
  };
  bad([](compress::ClusterHeadOptions& o) { o.k = 1; }, "k 1");
  bad([](compress::ClusterHeadOptions& o) { o.k = 5000; }, "k above the vocabulary");
  bad([](compress::ClusterHeadOptions& o) { o.cap = 0; }, "cap 0");
  bad([](compress::ClusterHeadOptions& o) { o.prior_smoothing = -0.5; }, "negative prior smoothing");
  bad([](compress::ClusterHeadOptions& o) { o.calib.resize(10); }, "too little calibration");
  bad([](compress::ClusterHeadOptions& o) { o.calib[3] = 1024; }, "token out of range");
  const auto once = compress::cluster_head(m, small_options(), nullptr);
  EXPECT_THROW(compress::cluster_head(once, small_options(), nullptr), Error);  // already clustered
}

}  // namespace
}  // namespace rwkvl
