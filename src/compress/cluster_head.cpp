#include "compress/cluster_head.h"

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "compress/calibrate.h"
#include "compress/compress.h"
#include "core/error.h"
#include "core/logprob.h"
#include "core/threadpool.h"
#include "model/ops.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

namespace rwkvl::compress {

namespace {

using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Points are handled in fixed blocks, so a block's products (and with them every assignment) do not depend
// on how many threads share the blocks.
constexpr int64_t kBlock = 256;

void for_blocks(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  auto run = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) fn(i * kBlock, std::min(n, (i + 1) * kBlock));
  };
  if (!pool || pool->size() == 1 || nb < 2) run(0, nb);
  else pool->parallel_for(nb, run, 1);
}

// Nearest centroid of every point (ties: the lower index); dist2 receives the squared distance.
void assign_points(ThreadPool* pool, const float* pts, int64_t n, int64_t d, const RowMatF& cent, std::vector<int32_t>& a,
                   std::vector<float>& dist2) {
  const int64_t k = cent.rows();
  Eigen::VectorXf cn = cent.rowwise().squaredNorm();
  for_blocks(pool, n, [&](int64_t b, int64_t e) {
    Eigen::Map<const RowMatF> P(pts + b * d, e - b, d);
    const RowMatF dots = P * cent.transpose();
    for (int64_t i = 0; i < e - b; ++i) {
      const float xn = P.row(i).squaredNorm();
      int32_t best = 0;
      float bd = std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < k; ++j) {
        const float v = cn[j] - 2.f * dots(i, j);
        if (v < bd) {
          bd = v;
          best = static_cast<int32_t>(j);
        }
      }
      a[static_cast<size_t>(b + i)] = best;
      dist2[static_cast<size_t>(b + i)] = std::max(0.f, bd + xn);
    }
  });
}

}  // namespace

std::vector<float> pca_project(const float* rows, int64_t n, int64_t d, int dims) {
  return pca_project(
      [rows, d](int64_t first, int64_t count, float* out) {
        std::memcpy(out, rows + first * d, sizeof(float) * static_cast<size_t>(count * d));
      },
      n, d, dims);
}

std::vector<float> pca_project(const RowFetch& fetch, int64_t n, int64_t d, int dims) {
  RWKVL_CHECK(n > 0 && d > 0 && dims > 0);
  dims = static_cast<int>(std::min<int64_t>(dims, d));
  constexpr int64_t kRows = 4096;  // rows per block (the covariance sums blocks of this many rows, in order)
  std::vector<float> buf(static_cast<size_t>(std::min(n, kRows) * d));
  // Three passes over the rows: the mean (summed row after row in double), the covariance, the projection.
  Eigen::RowVectorXd sum = Eigen::RowVectorXd::Zero(d);
  for (int64_t b = 0; b < n; b += kRows) {
    const int64_t m = std::min(kRows, n - b);
    fetch(b, m, buf.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < d; ++j) sum[j] += static_cast<double>(buf[static_cast<size_t>(i * d + j)]);
  }
  const Eigen::RowVectorXd mean = sum / static_cast<double>(n);
  Eigen::MatrixXd cov = Eigen::MatrixXd::Zero(d, d);
  for (int64_t b = 0; b < n; b += kRows) {
    const int64_t m = std::min(kRows, n - b);
    fetch(b, m, buf.data());
    Eigen::Map<const RowMatF> X(buf.data(), m, d);
    const RowMatD Xc = X.cast<double>().rowwise() - mean;
    cov.noalias() += Xc.transpose() * Xc;
  }
  cov /= static_cast<double>(std::max<int64_t>(1, n - 1));
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(cov);
  // Eigenvalues come in increasing order: the top `dims` components are the last columns.
  const Eigen::MatrixXd E = es.eigenvectors().rightCols(dims).rowwise().reverse();
  std::vector<float> out(static_cast<size_t>(n * dims));
  for (int64_t b = 0; b < n; b += kRows) {
    const int64_t m = std::min(kRows, n - b);
    fetch(b, m, buf.data());
    Eigen::Map<const RowMatF> X(buf.data(), m, d);
    const RowMatD Y = (X.cast<double>().rowwise() - mean) * E;
    for (int64_t i = 0; i < m; ++i)
      for (int j = 0; j < dims; ++j) out[static_cast<size_t>((b + i) * dims + j)] = static_cast<float>(Y(i, j));
  }
  return out;
}

std::vector<int32_t> kmeans(const float* pts, int64_t n, int64_t d, int k, int iters, uint64_t seed, int n_threads,
                            const std::function<void(int)>& on_iteration) {
  RWKVL_CHECK(n > 0 && d > 0 && k > 0);
  k = static_cast<int>(std::min<int64_t>(k, n));
  std::unique_ptr<ThreadPool> pool = n_threads > 1 ? std::make_unique<ThreadPool>(n_threads) : nullptr;
  Rng rng(seed);
  auto uniform = [&rng]() { return rng.uniform(); };
  // k-means++ seeding.
  RowMatF cent(k, d);
  std::vector<float> d2(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
  int64_t pick = static_cast<int64_t>(uniform() * static_cast<double>(n));
  for (int c = 0; c < k; ++c) {
    pick = std::min(pick, n - 1);
    cent.row(c) = Eigen::Map<const Eigen::RowVectorXf>(pts + pick * d, d);
    for_blocks(pool.get(), n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float s = 0;
        for (int64_t j = 0; j < d; ++j) {
          const float v = pts[i * d + j] - cent(c, j);
          s += v * v;
        }
        d2[static_cast<size_t>(i)] = std::min(d2[static_cast<size_t>(i)], s);
      }
    });
    if (c + 1 == k) break;
    double total = 0;
    for (float v : d2) total += v;
    if (!(total > 0)) {  // every point sits on a centre: take the next unused index in order
      pick = (pick + 1) % n;
      continue;
    }
    const double r = uniform() * total;
    double acc = 0;
    pick = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      acc += d2[static_cast<size_t>(i)];
      if (acc > r) {
        pick = i;
        break;
      }
    }
  }
  std::vector<int32_t> a(static_cast<size_t>(n), -1), prev;
  std::vector<float> dist(static_cast<size_t>(n));
  for (int it = 0; it < std::max(1, iters); ++it) {
    prev = a;
    assign_points(pool.get(), pts, n, d, cent, a, dist);
    // Empty clusters take the point farthest from its centre (of a cluster with more than one point).
    std::vector<int64_t> count(static_cast<size_t>(k), 0);
    for (int32_t c : a) ++count[static_cast<size_t>(c)];
    for (int c = 0; c < k; ++c) {
      if (count[static_cast<size_t>(c)] > 0) continue;
      int64_t far = -1;
      for (int64_t i = 0; i < n; ++i)
        if (count[static_cast<size_t>(a[static_cast<size_t>(i)])] > 1 &&
            (far < 0 || dist[static_cast<size_t>(i)] > dist[static_cast<size_t>(far)]))
          far = i;
      if (far < 0) break;
      --count[static_cast<size_t>(a[static_cast<size_t>(far)])];
      a[static_cast<size_t>(far)] = c;
      dist[static_cast<size_t>(far)] = 0;
      count[static_cast<size_t>(c)] = 1;
    }
    // New centres: means in double, summed in point order.
    RowMatD sum = RowMatD::Zero(k, d);
    for (int64_t i = 0; i < n; ++i)
      sum.row(a[static_cast<size_t>(i)]) += Eigen::Map<const Eigen::RowVectorXf>(pts + i * d, d).cast<double>();
    for (int c = 0; c < k; ++c)
      if (count[static_cast<size_t>(c)] > 0) cent.row(c) = (sum.row(c) / static_cast<double>(count[static_cast<size_t>(c)])).cast<float>();
    if (on_iteration) on_iteration(it + 1);
    if (a == prev) break;
  }
  return a;
}

std::vector<int32_t> cap_clusters(const float* pts, int64_t n, int64_t d, std::vector<int32_t> assign, int cap,
                                  uint64_t seed, int n_threads) {
  RWKVL_CHECK(cap >= 1 && static_cast<int64_t>(assign.size()) == n);
  int32_t k = 0;
  for (int32_t c : assign) k = std::max(k, c + 1);
  std::vector<std::vector<int32_t>> groups(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) groups[static_cast<size_t>(assign[static_cast<size_t>(i)])].push_back(static_cast<int32_t>(i));
  std::vector<std::vector<int32_t>> done;
  std::vector<std::vector<int32_t>> todo;
  for (auto& g : groups)
    if (!g.empty()) todo.push_back(std::move(g));
  uint64_t round = 0;
  while (!todo.empty()) {
    std::vector<int32_t> g = std::move(todo.back());
    todo.pop_back();
    if (static_cast<int64_t>(g.size()) <= cap) {
      done.push_back(std::move(g));
      continue;
    }
    const int64_t m = static_cast<int64_t>(g.size());
    const int parts = static_cast<int>((m + cap - 1) / cap);
    std::vector<float> sub(static_cast<size_t>(m * d));
    for (int64_t i = 0; i < m; ++i) std::memcpy(sub.data() + i * d, pts + static_cast<int64_t>(g[static_cast<size_t>(i)]) * d, sizeof(float) * static_cast<size_t>(d));
    const std::vector<int32_t> sa = kmeans(sub.data(), m, d, parts, 20, seed + 0x9e3779b97f4a7c15ull * ++round, n_threads);
    std::vector<std::vector<int32_t>> pieces(static_cast<size_t>(parts));
    for (int64_t i = 0; i < m; ++i) pieces[static_cast<size_t>(sa[static_cast<size_t>(i)])].push_back(g[static_cast<size_t>(i)]);
    size_t largest = 0;
    for (const auto& p : pieces) largest = std::max(largest, p.size());
    if (largest == g.size()) {
      // k-means cannot separate these points: equal runs along the first coordinate (ties by index).
      std::vector<int32_t> order = g;
      std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return pts[static_cast<int64_t>(x) * d] < pts[static_cast<int64_t>(y) * d]; });
      pieces.assign(static_cast<size_t>(parts), {});
      for (int64_t i = 0; i < m; ++i) pieces[static_cast<size_t>(i * parts / m)].push_back(order[static_cast<size_t>(i)]);
    }
    for (auto& p : pieces)
      if (!p.empty()) {
        std::sort(p.begin(), p.end());
        todo.push_back(std::move(p));
      }
  }
  for (auto& g : done) std::sort(g.begin(), g.end());
  std::sort(done.begin(), done.end(), [](const auto& x, const auto& y) { return x.front() < y.front(); });
  std::vector<int32_t> out(static_cast<size_t>(n), -1);
  for (size_t c = 0; c < done.size(); ++c)
    for (int32_t i : done[c]) out[static_cast<size_t>(i)] = static_cast<int32_t>(c);
  return out;
}

namespace {

void validate(const Model& in, const ClusterHeadOptions& o) {
  const int64_t V = in.config().n_vocab;
  const Matrix& head = in.head();
  if (in.cluster_head().present()) RWKVL_FAIL(kInvalidArgument, "the model already has a cluster head");
  if (head.factored() || head.ref.data == nullptr) RWKVL_FAIL(kInvalidArgument, "--cluster-head needs a dense head.weight");
  if (o.k < 2 || o.k > V) RWKVL_FAIL(kInvalidArgument, "--cluster-head K must lie in [2, %lld], got %d", static_cast<long long>(V), o.k);
  if (o.cap < 1) RWKVL_FAIL(kInvalidArgument, "--cluster-cap must be at least 1, got %d", o.cap);
  if (o.pca_dims < 1) RWKVL_FAIL(kInvalidArgument, "--pca-dims must be at least 1, got %d", o.pca_dims);
  if (!(o.prior_smoothing >= 0) || !std::isfinite(o.prior_smoothing))
    RWKVL_FAIL(kInvalidArgument, "--prior-smoothing must be a finite number >= 0, got %g", o.prior_smoothing);
  if (o.epochs < 1 || !(o.lr > 0) || !(o.holdout > 0 && o.holdout < 1))
    RWKVL_FAIL(kInvalidArgument, "bad distillation settings (epochs %d, lr %g, holdout %g)", o.epochs, o.lr, o.holdout);
  const size_t min_tokens = 64;
  if (o.calib.size() < min_tokens)
    RWKVL_FAIL(kInvalidArgument, "--cluster-head needs calibration text of at least %zu tokens (--calib FILE), got %zu",
               min_tokens, o.calib.size());
  for (int32_t t : o.calib)
    if (t < 0 || t >= V) RWKVL_FAIL(kInvalidArgument, "calibration token %d is out of range [0, %lld)", t, static_cast<long long>(V));
  if (o.int4_version && (in.config().n_embd % 32 != 0 || head.ref.dtype == DType::kQ4))
    RWKVL_FAIL(kInvalidArgument, "--fidelities ...,int4 needs a head of width a multiple of 32 stored above int4 (the head is %s, width %lld)",
               dtype_name(head.ref.dtype), static_cast<long long>(in.config().n_embd));
  if (o.int4_version && o.high_dtype && *o.high_dtype != head.ref.dtype)
    RWKVL_FAIL(kInvalidArgument, "--fidelities names %s first, but the head is stored as %s%s", dtype_name(*o.high_dtype),
               dtype_name(head.ref.dtype), *o.high_dtype == DType::kI8 ? " (add --quant int8 --quant-head)" : "");
  if (o.int4_version && o.profile_positions < 16)
    RWKVL_FAIL(kInvalidArgument, "the fidelity profile needs at least 16 positions, got %lld", static_cast<long long>(o.profile_positions));
}

// One cluster_head pass: cluster, calibrate, distil, write.
class HeadPass {
 public:
  HeadPass(const std::shared_ptr<const Model>& in, const ClusterHeadOptions& o, ClusterHeadReport& rep)
      : in_(in), o_(o), rep_(rep), cfg_(in->config()), head_(in->head()), V_(cfg_.n_vocab), C_(cfg_.n_embd) {}

  std::shared_ptr<Model> run() {
    validate(*in_, o_);
    const auto t_cluster = std::chrono::steady_clock::now();
    cluster();
    group();
    rep_.seconds_cluster = seconds_since(t_cluster);
    const auto t_calib = std::chrono::steady_clock::now();
    calibrate();
    release_input();
    rep_.seconds_calib = seconds_since(t_calib);
    const auto t_train = std::chrono::steady_clock::now();
    distil();
    order_by_co_use();  // and the usage of each cluster
    rep_.seconds_train = seconds_since(t_train);
    if (o_.int4_version) {
      const auto t_prof = std::chrono::steady_clock::now();
      profile_int4();
      rep_.seconds_profile = seconds_since(t_prof);
    }
    TensorMap tm = in_->tensors();
    put_tensors(tm);
    rep_.pass = pass_record();
    return model_with_pass(std::move(tm), cfg_, *in_, rep_.pass);
  }

 private:
  void progress(const char* s, int64_t a, int64_t b) const {
    if (o_.progress) o_.progress(s, a, b);
  }
  void release_input() const { o_.mem.release(); }

  // ---- 1. clusters of the head rows (or the embedding rows): PCA, k-means, cap
  void cluster() {
    const int64_t V = V_, C = C_;
    const ClusterHeadOptions& o = o_;
    const Matrix& src = o.from_embedding ? in_->emb() : head_;
    if (src.factored() || src.ref.data == nullptr || src.ref.rows != V || src.ref.cols != C)
      RWKVL_FAIL(kInvalidArgument, "--cluster-source emb needs a dense emb.weight of %lld x %lld", static_cast<long long>(V),
                 static_cast<long long>(C));
    // The rows a block at a time (V x C floats would be the largest buffer of the pass).
    const int dims = static_cast<int>(std::min<int64_t>(o.pca_dims, C));
    const std::vector<float> proj = pca_project(
        [&src, C](int64_t first, int64_t count, float* out) {
          for (int64_t t = 0; t < count; ++t) kern::get_row(src.ref, first + t, out + t * C);
        },
        V, C, dims);
    release_input();
    progress("clustering", 0, o.kmeans_iters);
    assign_ = kmeans(proj.data(), V, dims, o.k, o.kmeans_iters, o.seed, o.n_threads,
                     [&](int it) { progress("clustering", it, o.kmeans_iters); });
    std::vector<int64_t> cnt(static_cast<size_t>(o.k), 0);
    for (int32_t c : assign_) ++cnt[static_cast<size_t>(c)];
    rep_.k_initial = o.k;
    rep_.largest_before_cap = *std::max_element(cnt.begin(), cnt.end());
    assign_ = cap_clusters(proj.data(), V, dims, std::move(assign_), o.cap, o.seed, o.n_threads);
  }

  // Rows grouped by cluster: offsets_ (K + 1) and perm_ (grouped row -> token).
  void group() {
    const int64_t V = V_;
    int64_t K = 0;
    for (int32_t c : assign_) K = std::max<int64_t>(K, c + 1);
    K_ = K;
    offsets_.assign(static_cast<size_t>(K + 1), 0);
    perm_.assign(static_cast<size_t>(V), 0);
    for (int32_t c : assign_) ++offsets_[static_cast<size_t>(c) + 1];
    for (int64_t j = 0; j < K; ++j) offsets_[static_cast<size_t>(j + 1)] += offsets_[static_cast<size_t>(j)];
    std::vector<int32_t> fill(offsets_.begin(), offsets_.end() - 1);
    for (int64_t t = 0; t < V; ++t) perm_[static_cast<size_t>(fill[static_cast<size_t>(assign_[static_cast<size_t>(t)])]++)] = static_cast<int32_t>(t);
    rep_.k_final = K;
    rep_.largest = 0;
    rep_.smallest = V;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t s = offsets_[static_cast<size_t>(j + 1)] - offsets_[static_cast<size_t>(j)];
      rep_.largest = std::max(rep_.largest, s);
      rep_.smallest = std::min(rep_.smallest, s);
    }
  }

  // ---- 2. calibration: the head input of every position, the full head's mass per cluster, each token's
  //         mean probability and the argmax token.
  void calibrate() {
    const int64_t V = V_, C = C_, K = K_;
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    const size_t chunk = static_cast<size_t>(std::max(1, o_.chunk));
    const int L = cfg_.n_layer;
    const int64_t total = N * (L + 1);  // token-layers, the head counting as one more layer
    // Layer by layer (the same numbers as a whole-model pass, chunk for chunk): one layer's weights are resident
    // at a time, not the whole model's.
    {
      LayerwiseCalibration cal(in_, o_.calib, std::max(1, o_.n_threads), chunk);
      for (int l = 0; l < L; ++l) {
        cal.advance(in_, l);
        o_.mem.release();
        progress("calibration", N * (l + 1), total);
      }
      X_ = cal.take_stream();
    }
    target_.assign(static_cast<size_t>(N * K), 0.f);
    mean_p_.assign(static_cast<size_t>(V), 0.0);
    top_.assign(static_cast<size_t>(N), 0);
    ThreadPool pool_obj(std::max(1, o_.n_threads));
    ThreadPool* pool = &pool_obj;
    std::vector<float> logits(chunk * static_cast<size_t>(V));
    for (size_t done = 0; done < static_cast<size_t>(N); done += chunk) {
      const size_t T = std::min(chunk, static_cast<size_t>(N) - done);
      float* xn = X_.data() + done * static_cast<size_t>(C);
      ops::layer_norm_rows(xn, xn, in_->ln_out_w(), in_->ln_out_b(), T, static_cast<size_t>(C), cfg_.ln_eps);
      kern::matmul(head_.ref, xn, static_cast<int64_t>(T), logits.data(), pool);
      auto rows = [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          float* z = logits.data() + t * V;
          const double l = logprob::log_sum_exp(z, static_cast<size_t>(V));
          int32_t best = 0;
          for (int64_t i = 0; i < V; ++i) {
            if (z[i] > z[best]) best = static_cast<int32_t>(i);
          }
          top_[done + static_cast<size_t>(t)] = best;
          std::vector<double> mass(static_cast<size_t>(K), 0.0);
          for (int64_t i = 0; i < V; ++i) {
            const double p = std::exp(static_cast<double>(z[i]) - l);
            z[i] = static_cast<float>(p);
            mass[static_cast<size_t>(assign_[static_cast<size_t>(i)])] += p;
          }
          float* tg = target_.data() + (static_cast<int64_t>(done) + t) * K;
          for (int64_t j = 0; j < K; ++j) tg[j] = static_cast<float>(mass[static_cast<size_t>(j)]);
        }
      };
      pool->parallel_for(static_cast<int64_t>(T), rows, 1);
      for (size_t t = 0; t < T; ++t)  // in position order: the same sums for any thread count
        for (int64_t i = 0; i < V; ++i) mean_p_[static_cast<size_t>(i)] += logits[t * static_cast<size_t>(V) + static_cast<size_t>(i)];
      progress("calibration", N * L + static_cast<int64_t>(done + T), total);
    }
    for (double& m : mean_p_) m /= static_cast<double>(N);
  }

  // The runtime's selection rule at its defaults (HeadOptions: p 0.95, 3..100 clusters): calls take(j) for the
  // clusters chosen from the log-probabilities logp, most probable first (ties: lower index). order: scratch of K.
  template <class Take>
  static void select(const std::vector<float>& logp, std::vector<int32_t>& order, Take take) {
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t c) {
      return logp[static_cast<size_t>(a)] > logp[static_cast<size_t>(c)] || (logp[static_cast<size_t>(a)] == logp[static_cast<size_t>(c)] && a < c);
    });
    double cum = 0;
    int n = 0;
    for (int32_t j : order) {
      if (n >= 100 || (n >= 3 && cum >= 0.95)) break;
      take(j);
      cum += std::exp(static_cast<double>(logp[static_cast<size_t>(j)]));
      ++n;
    }
  }

  // Mean KL over held-out positions, and (selection) the figures of the runtime's selection rule.
  double evaluate(const RowMatF& Wt, const Eigen::RowVectorXf& b, bool selection) {
    const int64_t K = K_, V = V_;
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    Eigen::Map<const RowMatF> Xall(X_.data(), N, C_);
    Eigen::Map<const RowMatF> Tall(target_.data(), N, K);
    const RowMatF Z = (Xall.bottomRows(n_hold_) * Wt).rowwise() + b;
    double kl = 0;
    double agree = 0, rows_read = 0, covered = 0, mass = 0;
    std::vector<int32_t> order(static_cast<size_t>(K));
    std::vector<float> logp(static_cast<size_t>(K));
    std::vector<uint8_t> chosen(static_cast<size_t>(K));
    for (int64_t i = 0; i < n_hold_; ++i) {
      const int64_t pos = n_train_ + i;
      logprob::log_softmax(Z.row(i).data(), static_cast<size_t>(K), logp.data());
      int64_t tbest = 0, pbest = 0;
      for (int64_t j = 0; j < K; ++j) {
        kl += logprob::kl_term(Tall(pos, j), logp[static_cast<size_t>(j)]);
        if (Tall(pos, j) > Tall(pos, tbest)) tbest = j;
        if (Z(i, j) > Z(i, pbest)) pbest = j;
      }
      if (!selection) continue;
      agree += tbest == pbest;
      std::fill(chosen.begin(), chosen.end(), 0);
      select(logp, order, [&](int32_t j) {
        chosen[static_cast<size_t>(j)] = 1;
        rows_read += static_cast<double>(offsets_[static_cast<size_t>(j) + 1] - offsets_[static_cast<size_t>(j)]);
        mass += Tall(pos, j);
      });
      covered += chosen[static_cast<size_t>(assign_[static_cast<size_t>(top_[static_cast<size_t>(pos)])])];
    }
    const double h = static_cast<double>(n_hold_);
    if (selection) {
      rep_.heldout_top1_cluster = agree / h;
      rep_.heldout_rows_frac = rows_read / h / static_cast<double>(V);
      rep_.heldout_token_covered = covered / h;
      rep_.heldout_mass_covered = mass / h;
    }
    return kl / h;
  }

  // Initialisation: each cluster's score is the log-sum-exp approximation log n_j + mean row . x.
  void init_weights() {
    const int64_t K = K_, C = C_;
    Wt_ = RowMatF(C, K);
    bias_ = Eigen::RowVectorXf(K);
    std::vector<float> row(static_cast<size_t>(C));
    for (int64_t j = 0; j < K; ++j) {
      Eigen::VectorXd acc = Eigen::VectorXd::Zero(C);
      for (int32_t g = offsets_[static_cast<size_t>(j)]; g < offsets_[static_cast<size_t>(j) + 1]; ++g) {
        kern::get_row(head_.ref, perm_[static_cast<size_t>(g)], row.data());
        acc += Eigen::Map<const Eigen::VectorXf>(row.data(), C).cast<double>();
      }
      const double n = static_cast<double>(offsets_[static_cast<size_t>(j) + 1] - offsets_[static_cast<size_t>(j)]);
      if (o_.lse_init) Wt_.col(j) = (acc / n).cast<float>();
      else Wt_.col(j).setZero();
      bias_[j] = o_.lse_init ? static_cast<float>(std::log(n)) : 0.f;
    }
  }

  // ---- 3. distillation: W (K x C), b (K) minimise KL(target || softmax(W x + b)) with Adam; the weights of
  // the epoch with the lowest held-out KL are kept (the initialisation included).
  void distil() {
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    n_hold_ = std::max<int64_t>(1, static_cast<int64_t>(std::llround(o_.holdout * static_cast<double>(N))));
    n_train_ = N - n_hold_;
    init_weights();
    rep_.heldout_kl_init = evaluate(Wt_, bias_, false);
    RowMatF best_W = Wt_;
    Eigen::RowVectorXf best_b = bias_;
    double best_kl = rep_.heldout_kl_init;
    Adam adam(C_, K_);
    std::vector<int64_t> idx(static_cast<size_t>(n_train_));
    std::iota(idx.begin(), idx.end(), 0);
    Rng rng(o_.seed ^ 0x5eedc1a5ull);
    for (int ep = 0; ep < o_.epochs; ++ep) {
      for (int64_t i = n_train_ - 1; i > 0; --i) std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(rng.next() % static_cast<uint64_t>(i + 1))]);
      epoch(idx, adam);
      const double kl = evaluate(Wt_, bias_, false);
      if (kl < best_kl) {
        best_kl = kl;
        best_W = Wt_;
        best_b = bias_;
        rep_.best_epoch = ep + 1;
      }
      progress("distillation", ep + 1, o_.epochs);
    }
    Wt_ = best_W;
    bias_ = best_b;
    rep_.heldout_kl = evaluate(Wt_, bias_, true);
  }

  // Calls take(chosen) with the clusters the runtime's rule selects (select) at every calibration position, in
  // position order.
  template <class Take>
  void for_each_selection(Take take) const {
    const int64_t K = K_;
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    Eigen::Map<const RowMatF> Xall(X_.data(), N, C_);
    std::vector<int32_t> order(static_cast<size_t>(K)), chosen;
    std::vector<float> logp(static_cast<size_t>(K));
    const int64_t B = 1024;
    for (int64_t s = 0; s < N; s += B) {
      const int64_t m = std::min(B, N - s);
      const RowMatF Z = (Xall.middleRows(s, m) * Wt_).rowwise() + bias_;
      for (int64_t i = 0; i < m; ++i) {
        logprob::log_softmax(Z.row(i).data(), static_cast<size_t>(K), logp.data());
        chosen.clear();
        select(logp, order, [&](int32_t j) { chosen.push_back(j); });
        take(static_cast<const std::vector<int32_t>&>(chosen));
      }
    }
  }

  // ---- 3a. file order of the clusters by co-use: the runtime reads the chosen clusters that are not resident
  // in file order, adjacent ones in one read, so clusters chosen together should sit together. Greedy chain: the
  // most used cluster first, then repeatedly the unplaced cluster chosen most often together with the last one
  // placed (ties: the more used, then the lower index). Renumbers everything indexed by cluster; records, per
  // cluster, the share of calibration positions that chose it and the next cluster too (usage_next), from which
  // the planner predicts how many reads merge. Heads of more than kMaxOrder clusters keep the k-means order.
  // The same pass over the selections measures each cluster's usage: the share of all calibration positions
  // (training and held-out) whose selection includes it.
  static constexpr int64_t kMaxOrder = 4096;
  void order_by_co_use() {
    const int64_t K = K_;
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    std::vector<float> co;
    const bool reorder = K <= kMaxOrder;
    if (reorder) co.assign(static_cast<size_t>(K * K), 0.f);
    std::vector<double> next(static_cast<size_t>(K), 0.0);  // chose j and j + 1 (in the final order)
    std::vector<uint8_t> is(static_cast<size_t>(K), 0);
    std::vector<double> count(static_cast<size_t>(K), 0.0);
    for_each_selection([&](const std::vector<int32_t>& chosen) {
      for (int32_t j : chosen) count[static_cast<size_t>(j)] += 1.0;
      if (reorder) {
        for (int32_t a : chosen)
          for (int32_t b : chosen) co[static_cast<size_t>(a) * static_cast<size_t>(K) + static_cast<size_t>(b)] += 1.f;
      } else {
        for (int32_t a : chosen) is[static_cast<size_t>(a)] = 1;
        for (int32_t a : chosen) next[static_cast<size_t>(a)] += a + 1 < K && is[static_cast<size_t>(a) + 1];
        for (int32_t a : chosen) is[static_cast<size_t>(a)] = 0;
      }
    });
    const double n = static_cast<double>(std::max<int64_t>(1, N));
    rep_.cluster_usage.resize(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) rep_.cluster_usage[static_cast<size_t>(j)] = count[static_cast<size_t>(j)] / n;
    if (!reorder) {
      rep_.cluster_usage_next.resize(static_cast<size_t>(K));
      for (int64_t j = 0; j < K; ++j) rep_.cluster_usage_next[static_cast<size_t>(j)] = next[static_cast<size_t>(j)] / n;
      return;
    }
    const std::vector<double>& u = rep_.cluster_usage;
    std::vector<int32_t> chain;
    std::vector<uint8_t> placed(static_cast<size_t>(K), 0);
    int32_t last = -1;
    for (int64_t step = 0; step < K; ++step) {
      int32_t best = -1;
      for (int32_t j = 0; j < K; ++j) {
        if (placed[static_cast<size_t>(j)]) continue;
        if (best < 0) {
          best = j;
          continue;
        }
        const float cj = last < 0 ? 0.f : co[static_cast<size_t>(last) * static_cast<size_t>(K) + static_cast<size_t>(j)];
        const float cb = last < 0 ? 0.f : co[static_cast<size_t>(last) * static_cast<size_t>(K) + static_cast<size_t>(best)];
        if (cj > cb || (cj == cb && u[static_cast<size_t>(j)] > u[static_cast<size_t>(best)])) best = j;
      }
      chain.push_back(best);
      placed[static_cast<size_t>(best)] = 1;
      last = best;
    }
    // Renumber: new cluster i is old cluster chain[i].
    std::vector<int32_t> new_of(static_cast<size_t>(K));
    for (int64_t i = 0; i < K; ++i) new_of[static_cast<size_t>(chain[static_cast<size_t>(i)])] = static_cast<int32_t>(i);
    for (int32_t& a : assign_) a = new_of[static_cast<size_t>(a)];
    std::vector<int32_t> offsets(static_cast<size_t>(K + 1), 0), perm;
    perm.reserve(static_cast<size_t>(V_));
    RowMatF W(C_, K);
    Eigen::RowVectorXf b(K);
    std::vector<double> usage(static_cast<size_t>(K));
    for (int64_t i = 0; i < K; ++i) {
      const int32_t j = chain[static_cast<size_t>(i)];
      for (int32_t g = offsets_[static_cast<size_t>(j)]; g < offsets_[static_cast<size_t>(j) + 1]; ++g) perm.push_back(perm_[static_cast<size_t>(g)]);
      offsets[static_cast<size_t>(i) + 1] = static_cast<int32_t>(perm.size());
      W.col(i) = Wt_.col(j);
      b[i] = bias_[j];
      usage[static_cast<size_t>(i)] = u[static_cast<size_t>(j)];
    }
    perm_ = std::move(perm);
    offsets_ = std::move(offsets);
    Wt_ = std::move(W);
    bias_ = std::move(b);
    rep_.cluster_usage = std::move(usage);
    rep_.cluster_usage_next.assign(static_cast<size_t>(K), 0.0);
    for (int64_t i = 0; i + 1 < K; ++i)
      rep_.cluster_usage_next[static_cast<size_t>(i)] =
          co[static_cast<size_t>(chain[static_cast<size_t>(i)]) * static_cast<size_t>(K) + static_cast<size_t>(chain[static_cast<size_t>(i) + 1])] / n;
  }

  // Head row g (grouped order) as the runtime reads it: at the head's own dtype (f32 out) and at int4 (the q4
  // version put_tensors writes, decoded).
  void head_row(int32_t g, float* hi, float* lo, std::vector<uint8_t>& q) const {
    kern::get_row(head_.ref, perm_[static_cast<size_t>(g)], hi);
    if (!lo) return;
    q.resize(static_cast<size_t>(kern::row_bytes(DType::kQ4, C_)));
    quantize_rows_q4(hi, 1, C_, q.data());
    q4_to_f32_row(q.data(), lo, static_cast<size_t>(C_));
  }

  // ---- 3b. importance of each cluster's fidelity: on up to profile_positions calibration positions (evenly
  // spaced), with the runtime's cluster-mode output (chosen clusters' exact logits y, the others pseudo-logits
  // that together carry Q (1 - cum) / cum, Q = sum of exp(y) over the chosen rows), the next token t of a chosen
  // cluster has loss log Q - log cum - y_t and one of an unchosen cluster a loss that no head row changes. So
  // the increase when cluster j alone is read at int4 is log(Q - Q_j + Q4_j) - log Q + (y_t - y4_t if t in j).
  void profile_int4() {
    const int64_t K = K_, C = C_;
    const int64_t N = static_cast<int64_t>(o_.calib.size()) - 1;  // positions with a next token
    const int64_t P = std::min<int64_t>(N, o_.profile_positions);
    std::vector<int64_t> pos(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) pos[static_cast<size_t>(i)] = i * N / P;
    Eigen::Map<const RowMatF> Xall(X_.data(), N + 1, C);
    // 1. the chosen clusters of every profiled position
    std::vector<std::vector<int32_t>> chosen(static_cast<size_t>(P));
    std::vector<double> log_cum(static_cast<size_t>(P));
    {
      std::vector<int32_t> order(static_cast<size_t>(K));
      std::vector<float> logp(static_cast<size_t>(K));
      RowMatF z(1, K);
      for (int64_t i = 0; i < P; ++i) {
        z = (Xall.row(pos[static_cast<size_t>(i)]) * Wt_) + bias_;
        logprob::log_softmax(z.data(), static_cast<size_t>(K), logp.data());
        double cum = 0;
        select(logp, order, [&](int32_t j) {
          chosen[static_cast<size_t>(i)].push_back(j);
          cum += std::exp(static_cast<double>(logp[static_cast<size_t>(j)]));
        });
        log_cum[static_cast<size_t>(i)] = std::log(cum);
      }
    }
    // 2. per cluster, the positions that chose it: log-sum-exp of its exact logits at both fidelities, and the
    //    target's logit when the target is in it
    std::vector<std::vector<int64_t>> users(static_cast<size_t>(K));
    for (int64_t i = 0; i < P; ++i)
      for (int32_t j : chosen[static_cast<size_t>(i)]) users[static_cast<size_t>(j)].push_back(i);
    struct Part {
      int32_t j;
      double lse_hi, lse_lo;
    };
    std::vector<std::vector<Part>> parts(static_cast<size_t>(P));
    std::vector<double> y_hi(static_cast<size_t>(P), 0.0), y_lo(static_cast<size_t>(P), 0.0);
    std::vector<int32_t> tcluster(static_cast<size_t>(P)), trow(static_cast<size_t>(P));
    std::vector<int32_t> grouped_of(static_cast<size_t>(V_));
    for (int64_t g = 0; g < V_; ++g) grouped_of[static_cast<size_t>(perm_[static_cast<size_t>(g)])] = static_cast<int32_t>(g);
    for (int64_t i = 0; i < P; ++i) {
      const int32_t t = o_.calib[static_cast<size_t>(pos[static_cast<size_t>(i)] + 1)];
      trow[static_cast<size_t>(i)] = grouped_of[static_cast<size_t>(t)];
      tcluster[static_cast<size_t>(i)] = assign_[static_cast<size_t>(t)];
    }
    for (auto& v : parts) v.reserve(64);
    std::vector<uint8_t> q;
    for (int64_t j = 0; j < K; ++j) {
      const auto& us = users[static_cast<size_t>(j)];
      if (us.empty()) continue;
      const int32_t b = offsets_[static_cast<size_t>(j)], n = offsets_[static_cast<size_t>(j) + 1] - b;
      RowMatF Rh(n, C), Rl(n, C), Xs(static_cast<int64_t>(us.size()), C);
      for (int32_t r = 0; r < n; ++r) head_row(b + r, Rh.row(r).data(), Rl.row(r).data(), q);
      for (size_t u = 0; u < us.size(); ++u) Xs.row(static_cast<int64_t>(u)) = Xall.row(pos[static_cast<size_t>(us[u])]);
      const RowMatF Yh = Xs * Rh.transpose(), Yl = Xs * Rl.transpose();
      for (size_t u = 0; u < us.size(); ++u) {
        const int64_t i = us[u];
        const auto row = static_cast<int64_t>(u);
        parts[static_cast<size_t>(i)].push_back({static_cast<int32_t>(j), logprob::log_sum_exp(Yh.row(row).data(), static_cast<size_t>(n)),
                                                 logprob::log_sum_exp(Yl.row(row).data(), static_cast<size_t>(n))});
        if (tcluster[static_cast<size_t>(i)] == j) {
          y_hi[static_cast<size_t>(i)] = Yh(row, trow[static_cast<size_t>(i)] - b);
          y_lo[static_cast<size_t>(i)] = Yl(row, trow[static_cast<size_t>(i)] - b);
        }
      }
      progress("profile", j + 1, K);
    }
    // 3. the increases
    std::vector<double> loss(static_cast<size_t>(K), 0.0);
    double all = 0;
    for (int64_t i = 0; i < P; ++i) {
      const auto& ps = parts[static_cast<size_t>(i)];
      bool target_chosen = false;
      double lq = -std::numeric_limits<double>::infinity(), lq4 = lq;
      for (const Part& p : ps) {
        target_chosen = target_chosen || p.j == tcluster[static_cast<size_t>(i)];
        lq = std::max(lq, p.lse_hi);
        lq4 = std::max(lq4, p.lse_lo);
      }
      if (!target_chosen) continue;
      double q_hi = 0, q_lo = 0;
      for (const Part& p : ps) {
        q_hi += std::exp(p.lse_hi - lq);
        q_lo += std::exp(p.lse_lo - lq4);
      }
      const double log_q = lq + std::log(q_hi), log_q4 = lq4 + std::log(q_lo);
      all += log_q4 - log_q + y_hi[static_cast<size_t>(i)] - y_lo[static_cast<size_t>(i)];
      for (const Part& p : ps) {
        // log(Q - Q_j + Q4_j) - log Q, computed relative to Q
        const double r = 1.0 - std::exp(p.lse_hi - log_q) + std::exp(p.lse_lo - log_q);
        double d = std::log(std::max(r, 1e-300));
        if (p.j == tcluster[static_cast<size_t>(i)]) d += y_hi[static_cast<size_t>(i)] - y_lo[static_cast<size_t>(i)];
        loss[static_cast<size_t>(p.j)] += d;
      }
    }
    rep_.cluster_loss_int4.resize(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) rep_.cluster_loss_int4[static_cast<size_t>(j)] = loss[static_cast<size_t>(j)] / static_cast<double>(P);
    rep_.loss_int4_all = all / static_cast<double>(P);
    rep_.profile_positions = P;
  }

  struct Adam {
    Adam(int64_t C, int64_t K)
        : mW(RowMatF::Zero(C, K)), vW(RowMatF::Zero(C, K)), mb(Eigen::RowVectorXf::Zero(K)), vb(Eigen::RowVectorXf::Zero(K)) {}
    RowMatF mW, vW;
    Eigen::RowVectorXf mb, vb;
    int64_t step = 0;
  };

  // One pass over the training positions in the order idx, in batches of 256.
  void epoch(const std::vector<int64_t>& idx, Adam& st) {
    const int64_t K = K_, C = C_;
    const int64_t N = static_cast<int64_t>(o_.calib.size());
    Eigen::Map<const RowMatF> Xall(X_.data(), N, C);
    Eigen::Map<const RowMatF> Tall(target_.data(), N, K);
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const int64_t B = 256;
    RowMatF Xb(B, C), Tb(B, K);
    for (int64_t s = 0; s < n_train_; s += B) {
      const int64_t m = std::min(B, n_train_ - s);
      Xb.resize(m, C);
      Tb.resize(m, K);
      for (int64_t i = 0; i < m; ++i) {
        Xb.row(i) = Xall.row(idx[static_cast<size_t>(s + i)]);
        Tb.row(i) = Tall.row(idx[static_cast<size_t>(s + i)]);
      }
      RowMatF G = (Xb * Wt_).rowwise() + bias_;
      for (int64_t i = 0; i < m; ++i) logprob::softmax(G.row(i).data(), static_cast<size_t>(K), G.row(i).data());
      G = (G - Tb) / static_cast<float>(m);
      const RowMatF gW = Xb.transpose() * G;
      const Eigen::RowVectorXf gb = G.colwise().sum();
      ++st.step;
      const float c1 = 1.f - std::pow(b1, static_cast<float>(st.step)), c2 = 1.f - std::pow(b2, static_cast<float>(st.step));
      const float lr = static_cast<float>(o_.lr);
      st.mW = b1 * st.mW + (1 - b1) * gW;
      st.vW = b2 * st.vW + (1 - b2) * gW.cwiseProduct(gW);
      st.mb = b1 * st.mb + (1 - b1) * gb;
      st.vb = b2 * st.vb + (1 - b2) * gb.cwiseProduct(gb);
      Wt_.array() -= lr * (st.mW.array() / c1) / ((st.vW.array() / c2).sqrt() + eps);
      bias_.array() -= lr * (st.mb.array() / c1) / ((st.vb.array() / c2).sqrt() + eps);
    }
  }

  // ---- 4. tensors: grouped head rows (raw bytes), table, cluster head, priors.
  void put_tensors(TensorMap& tm) const {
    const int64_t V = V_, C = C_, K = K_;
    const Tensor& h = tm.at("head.weight");
    tm["head.weight"] = grouped_rows(h, static_cast<size_t>(kern::row_bytes(h.dtype, C)));
    auto sc = tm.find("head.weight.scale");
    if (sc != tm.end()) {
      const Tensor s = sc->second;
      tm["head.weight.scale"] = grouped_rows(s, s.dtype == DType::kF16 ? 2 : 4);
    }
    if (o_.int4_version) {  // the int4 version of every grouped row
      Tensor t = Tensor::alloc("head.weight.q4", DType::kQ4, {V, C});
      std::vector<float> hi(static_cast<size_t>(C));
      std::vector<uint8_t> q;
      const size_t rb = static_cast<size_t>(kern::row_bytes(DType::kQ4, C));
      for (int64_t g = 0; g < V; ++g) {
        head_row(static_cast<int32_t>(g), hi.data(), nullptr, q);
        quantize_rows_q4(hi.data(), 1, C, static_cast<uint8_t*>(t.mutable_data()) + static_cast<size_t>(g) * rb);
      }
      tm["head.weight.q4"] = o_.mem.keep(std::move(t));
    }
    auto i32 = [](const std::string& name, const std::vector<int32_t>& v) {
      Tensor t = Tensor::alloc(name, DType::kI32, {static_cast<int64_t>(v.size())});
      std::memcpy(t.mutable_data(), v.data(), v.size() * 4);
      return t;
    };
    const PassMemory& mem = o_.mem;
    tm["head.perm"] = mem.keep(i32("head.perm", perm_));
    tm["head.cluster.offsets"] = mem.keep(i32("head.cluster.offsets", offsets_));
    const RowMatF W = Wt_.transpose();
    tm["head.cluster.weight"] = mem.keep(Tensor::from_f32("head.cluster.weight", {K, C}, W.data()));
    std::vector<float> b(bias_.data(), bias_.data() + K);
    tm["head.cluster.bias"] = Tensor::from_f32("head.cluster.bias", {K}, b.data());
    const std::vector<float> prior = priors();
    tm["head.cluster.prior"] = mem.keep(Tensor::from_f32("head.cluster.prior", {V}, prior.data()));
  }

  // The rows of t (rb bytes each) in grouped order: to the spool a block at a time when there is one.
  Tensor grouped_rows(const Tensor& t, size_t rb) const {
    const int64_t V = V_;
    if (!o_.mem.spool || t.nbytes < PassMemory::kSpoolMin) {
      Tensor g = Tensor::alloc(t.name, t.dtype, t.shape);
      for (int64_t i = 0; i < V; ++i)
        std::memcpy(static_cast<uint8_t*>(g.mutable_data()) + static_cast<size_t>(i) * rb,
                    static_cast<const uint8_t*>(t.data) + static_cast<size_t>(perm_[static_cast<size_t>(i)]) * rb, rb);
      return g;
    }
    Spool& sp = *o_.mem.spool;
    const int64_t block = std::max<int64_t>(1, static_cast<int64_t>((size_t{8} << 20) / rb));
    std::vector<uint8_t> buf(static_cast<size_t>(std::min(block, V)) * rb);
    sp.begin();
    for (int64_t i0 = 0; i0 < V; i0 += block) {
      const int64_t n = std::min(block, V - i0);
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(buf.data() + static_cast<size_t>(i) * rb,
                    static_cast<const uint8_t*>(t.data) + static_cast<size_t>(perm_[static_cast<size_t>(i0 + i)]) * rb, rb);
      sp.append(buf.data(), static_cast<size_t>(n) * rb);
    }
    Tensor g = sp.end(t.name, t.dtype, t.shape);
    sp.release();
    return g;
  }

  // Each token's log share of its cluster's calibration mass (in grouped order).
  std::vector<float> priors() const {
    std::vector<float> prior(static_cast<size_t>(V_));
    for (int64_t j = 0; j < K_; ++j) {
      const int32_t b = offsets_[static_cast<size_t>(j)], e = offsets_[static_cast<size_t>(j) + 1];
      const double n = static_cast<double>(e - b);
      double mean = 0;
      for (int32_t g = b; g < e; ++g) mean += mean_p_[static_cast<size_t>(perm_[static_cast<size_t>(g)])];
      mean /= n;
      // Smoothing: a token never seen still gets prior_smoothing x the cluster's mean share.
      const double a = o_.prior_smoothing * mean + 1e-300;
      double tot = 0;
      for (int32_t g = b; g < e; ++g) tot += mean_p_[static_cast<size_t>(perm_[static_cast<size_t>(g)])] + a;
      for (int32_t g = b; g < e; ++g)
        prior[static_cast<size_t>(g)] =
            o_.uniform_prior || !(tot > 0) ? static_cast<float>(-std::log(n))
                                           : static_cast<float>(std::log((mean_p_[static_cast<size_t>(perm_[static_cast<size_t>(g)])] + a) / tot));
    }
    return prior;
  }

  // Usage shares rounded to 1e-5 (the record stays small: K numbers).
  static nlohmann::json usage_json(const std::vector<double>& u) {
    nlohmann::json a = nlohmann::json::array();
    for (double v : u) a.push_back(std::round(v * 1e5) / 1e5);
    return a;
  }

  nlohmann::json pass_record() const {
    const ClusterHeadOptions& o = o_;
    const ClusterHeadReport& rep = rep_;
    nlohmann::json rec = {{"tool", "rwkv-lite compress"},
            {"cluster_head",
             {{"k", o.k},
              {"k_final", K_},
              {"cap", o.cap},
              {"pca_dims", std::min<int64_t>(o.pca_dims, C_)},
              {"seed", o.seed},
              {"epochs", o.epochs},
              {"lr", o.lr},
              {"holdout", o.holdout},
              {"source", o.from_embedding ? "embedding rows" : "head rows"},
              {"prior", o.uniform_prior ? "uniform" : "calib"},
              {"prior_smoothing", o.uniform_prior ? 0.0 : o.prior_smoothing},
              {"init", o.lse_init ? "log-sum-exp" : "zero"},
              {"best_epoch", rep.best_epoch},
              {"largest_cluster_before_cap", rep.largest_before_cap},
              {"largest_cluster", rep.largest},
              {"smallest_cluster", rep.smallest},
              {"heldout",
               {{"kl_init", rep.heldout_kl_init},
                {"kl", rep.heldout_kl},
                {"top1_cluster_agree", rep.heldout_top1_cluster},
                {"rows_frac", rep.heldout_rows_frac},
                {"top1_token_covered", rep.heldout_token_covered},
                {"mass_covered", rep.heldout_mass_covered}}},
              {"usage", usage_json(rep.cluster_usage)},
              {"usage_next", usage_json(rep.cluster_usage_next)},
              {"order", K_ <= kMaxOrder ? "co-use" : "k-means"}}},
            {"calibration", {{"file", o.calib_name}, {"fnv1a64", o.calib_hash}, {"tokens", o.calib.size()}}}};
    if (o.int4_version) {
      nlohmann::json loss = nlohmann::json::array();
      for (double v : rep.cluster_loss_int4) loss.push_back(std::round(v * 1e8) / 1e8);
      rec["cluster_head"]["fidelities"] = {{"high", dtype_name(head_.ref.dtype)},
                                           {"low", "q4_g32"},
                                           {"low_tensor", "head.weight.q4"},
                                           {"positions", rep.profile_positions},
                                           {"loss_low_all", rep.loss_int4_all},
                                           {"loss_low", loss}};
    }
    return rec;
  }

  const std::shared_ptr<const Model>& in_;
  const ClusterHeadOptions& o_;
  ClusterHeadReport& rep_;
  const ModelConfig& cfg_;
  const Matrix& head_;
  const int64_t V_, C_;
  int64_t K_ = 0;
  std::vector<int32_t> assign_, offsets_, perm_, top_;
  std::vector<float> X_, target_;  // head inputs (N x C) and the full head's mass per cluster (N x K)
  std::vector<double> mean_p_;
  int64_t n_hold_ = 0, n_train_ = 0;
  RowMatF Wt_;  // C x K
  Eigen::RowVectorXf bias_;
};

}  // namespace

std::shared_ptr<Model> cluster_head(const std::shared_ptr<const Model>& in, const ClusterHeadOptions& o,
                                    ClusterHeadReport* report) {
  ClusterHeadReport local;
  ClusterHeadReport& rep = report ? *report : local;
  rep = ClusterHeadReport{};
  return HeadPass(in, o, rep).run();
}

}  // namespace rwkvl::compress
