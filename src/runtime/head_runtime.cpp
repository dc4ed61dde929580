#include "runtime/head_runtime.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <cstring>

#include "core/error.h"
#include "core/logprob.h"
#include "core/mapped_file.h"
#include "core/threadpool.h"
#include "runtime/storage.h"

namespace rwkvl {

const char* head_mode_name(HeadMode m) {
  switch (m) {
    case HeadMode::kAuto: return "auto";
    case HeadMode::kFull: return "full";
    case HeadMode::kCluster: return "cluster";
  }
  return "?";
}

HeadMode parse_head_mode(const std::string& s) {
  if (s == "auto") return HeadMode::kAuto;
  if (s == "full") return HeadMode::kFull;
  if (s == "cluster") return HeadMode::kCluster;
  RWKVL_FAIL(kInvalidArgument, "unknown head mode '%s' (use auto, full or cluster)", s.c_str());
}

HeadRuntime::HeadRuntime(const Model& model, ThreadPool* pool, const HeadOptions& opt)
    : model_(model), pool_(pool), opt_(opt) {
  const ClusterHead& H = model.cluster_head();
  if (opt.mode == HeadMode::kCluster && !H.present())
    RWKVL_FAIL(kInvalidArgument, "head mode 'cluster' needs a file with a cluster head (made by rwkv-lite compress --cluster-head K)");
  mode_ = opt.mode == HeadMode::kAuto ? (H.present() ? HeadMode::kCluster : HeadMode::kFull) : opt.mode;
  if (!(opt.p > 0.0 && opt.p <= 1.0))
    RWKVL_FAIL(kInvalidArgument, "head probability %g is outside (0, 1] (--head-p)", opt.p);
  if (opt.min_clusters < 1) RWKVL_FAIL(kInvalidArgument, "--head-min must be at least 1, not %d", opt.min_clusters);
  if (opt.max_clusters < opt.min_clusters)
    RWKVL_FAIL(kInvalidArgument, "--head-max (%d) is below --head-min (%d)", opt.max_clusters, opt.min_clusters);
  // Buffers are sized on first use (a memory plan counts them as scratch, not as what is already resident).
}

void HeadRuntime::logits(const float* xn, size_t T, float* out) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t V = static_cast<size_t>(model_.config().n_vocab), C = static_cast<size_t>(model_.config().n_embd);
  const ClusterHead& H = model_.cluster_head();
  if (H.present() && grouped_.size() != V) {
    grouped_.resize(V);
    y_.resize(V);
    z_.resize(static_cast<size_t>(H.k));
    is_chosen_.resize(static_cast<size_t>(H.k));
    if (opt_.compare) yfull_.resize(V);
    // per token its prior and its cluster (uint16 up to 65,536 clusters), so that clustered() writes the logits in
    // token order from sequential arrays
    tok_prior_.resize(V);
    if (H.k <= 65536) tok_cluster16_.resize(V);
    else tok_cluster_.resize(V);
    for (int64_t j = 0; j < H.k; ++j)
      for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i) {
        const size_t t = static_cast<size_t>(H.perm[i]);
        tok_prior_[t] = H.prior[i];
        if (H.k <= 65536) tok_cluster16_[t] = static_cast<uint16_t>(j);
        else tok_cluster_[t] = static_cast<int32_t>(j);
      }
    base_.resize(static_cast<size_t>(H.k));
  }
  if (mode_ == HeadMode::kFull) {
    full(xn, T, out);
    stats_.rows_read += T * V;
  } else {
    for (size_t t = 0; t < T; ++t) {
      clustered(xn + t * C, out + t * V);
      if (opt_.compare) compare(xn + t * C, out + t * V);
    }
  }
  stats_.tokens += T;
  stats_.rows += T * V;
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void HeadRuntime::full(const float* xn, size_t T, float* out) {
  const ClusterHead& H = model_.cluster_head();
  const Matrix& head = model_.head();
  const size_t V = static_cast<size_t>(model_.config().n_vocab), C = static_cast<size_t>(head.cols);
  if (!H.present()) {  // rows in token order: one product for the T tokens, in place or piece by piece
    if (!storage_) {
      kern::matmul(head.ref, xn, static_cast<int64_t>(T), out, pool_);  // T == 1 runs the matvec kernel
      return;
    }
    const int64_t buf_rows = static_cast<int64_t>(buf_.size() / src_[0].row_bytes);
    for (int64_t b = 0; b < static_cast<int64_t>(V); b += buf_rows) {
      const int64_t n = std::min<int64_t>(buf_rows, static_cast<int64_t>(V) - b);
      const kern::MatRef v = read_rows(src_[0], b, n);
      if (ybuf_.size() < T * static_cast<size_t>(n)) ybuf_.resize(T * static_cast<size_t>(n));
      kern::matmul(v, xn, static_cast<int64_t>(T), ybuf_.data(), pool_);
      for (size_t t = 0; t < T; ++t)
        std::memcpy(out + t * V + static_cast<size_t>(b), ybuf_.data() + t * static_cast<size_t>(n), sizeof(float) * static_cast<size_t>(n));
    }
    return;
  }
  // Rows grouped by cluster: token by token in grouped order, then each logit put at its token.
  if ((storage_ || !low_.empty()) && all_clusters_.size() != static_cast<size_t>(H.k)) {
    all_clusters_.resize(static_cast<size_t>(H.k));
    std::iota(all_clusters_.begin(), all_clusters_.end(), 0);
  }
  for (size_t t = 0; t < T; ++t) {
    if (storage_ || !low_.empty()) rows(xn + t * C, grouped_.data(), all_clusters_);
    else kern::matvec(head.ref, xn + t * C, grouped_.data(), pool_);
    float* o = out + t * V;
    for (size_t i = 0; i < V; ++i) o[H.perm[i]] = grouped_[i];
  }
}

// Rows [b, b + n) of a fidelity read from the file into the stream buffer, as a matrix (int8 scales copied).
kern::MatRef HeadRuntime::read_rows(const Source& src, int64_t b, int64_t n) {
  storage_->read(src.file_offset + static_cast<uint64_t>(b) * src.row_bytes, buf_.data(), static_cast<size_t>(n) * src.row_bytes);
  return buffered_rows(src, b, n, 0);
}

kern::MatRef HeadRuntime::buffered_rows(const Source& src, int64_t b, int64_t n, size_t at) {
  const kern::MatRef& w = src.w;
  stream_bytes_ += static_cast<uint64_t>(n) * src.row_bytes;
  kern::MatRef v = w;
  v.rows = n;
  v.data = buf_.data() + at;
  if (w.dtype == DType::kI8) {  // the int8 source has the widest rows: the rows before `at` number at most at / row_bytes
    float* sc = sbuf_.data() + at / src.row_bytes;
    for (int64_t i = 0; i < n; ++i) sc[i] = w.scale_at(b + i);
    v.row_scale = sc;
    v.scale_dtype = DType::kF32;
  }
  return v;
}

void HeadRuntime::set_low(const std::vector<uint8_t>& low) {
  const ClusterHead& H = model_.cluster_head();
  if (storage_) RWKVL_FAIL(kInvalidArgument, "the head is streamed: give its int4 clusters to set_stream");
  low_.clear();
  if (low.empty() || std::find(low.begin(), low.end(), 1) == low.end()) return;
  if (!H.present() || !H.has_low() || low.size() != static_cast<size_t>(H.k))
    RWKVL_FAIL(kInvalidArgument, "int4 head clusters asked of a file without an int4 version of its %zu clusters (compress --fidelities HIGH,int4)",
               low.size());
  low_ = low;
  src_[1].w = H.low;
}

void HeadRuntime::set_stream(std::shared_ptr<Storage> storage, uint64_t buffer_bytes, const std::vector<uint8_t>& resident,
                             const std::vector<uint8_t>& low) {
  storage_.reset();
  buf_.clear();
  for (Source& s : src_) s = Source{};
  set_low(low);
  if (!storage) return;
  const ClusterHead& H = model_.cluster_head();
  const auto& f = model_.file();
  src_[0].w = model_.head().ref;
  for (int i = 0; i < 2; ++i) {
    Source& s = src_[i];
    if (i == 1 && low_.empty()) break;
    const auto* p = static_cast<const uint8_t*>(s.w.data);
    if (!f || p < f->data() || p >= f->data() + f->size())
      RWKVL_FAIL(kInvalidArgument, "the head is not stored in the model file; it cannot be streamed");
    s.row_bytes = static_cast<size_t>(kern::row_bytes(s.w.dtype, s.w.cols));
    s.file_offset = static_cast<uint64_t>(p - f->data());
  }
  const int64_t buf_rows = std::max<int64_t>(1, static_cast<int64_t>(buffer_bytes / src_[0].row_bytes));
  buf_.resize(static_cast<size_t>(buf_rows) * src_[0].row_bytes);
  const int64_t most_rows = low_.empty() ? buf_rows : static_cast<int64_t>(buf_.size() / std::min(src_[0].row_bytes, src_[1].row_bytes));
  ybuf_.resize(static_cast<size_t>(most_rows));
  if (src_[0].w.dtype == DType::kI8) sbuf_.resize(static_cast<size_t>(buf_rows));
  storage_ = std::move(storage);
  if (resident.empty()) return;
  if (!H.present() || resident.size() != static_cast<size_t>(H.k))
    RWKVL_FAIL(kInvalidArgument, "resident head clusters given for a head without %zu clusters", resident.size());
  for (int i = 0; i < 2; ++i) {
    Source& s = src_[i];
    if (i == 1 && low_.empty()) break;
    auto here = [&](int64_t j) { return resident[static_cast<size_t>(j)] && (low_.empty() ? 0 : low_[static_cast<size_t>(j)]) == i; };
    s.res_at.assign(static_cast<size_t>(H.k), -1);
    int64_t rows = 0;
    for (int64_t j = 0; j < H.k; ++j)
      if (here(j)) {
        s.res_at[static_cast<size_t>(j)] = rows;
        rows += H.size(j);
      }
    s.res_buf.resize(static_cast<size_t>(rows) * s.row_bytes);
    if (s.w.dtype == DType::kI8) s.res_scale.resize(static_cast<size_t>(rows));
    // One read per run of adjacent resident clusters.
    for (int64_t j = 0; j < H.k;) {
      if (s.res_at[static_cast<size_t>(j)] < 0) {
        ++j;
        continue;
      }
      int64_t e = j + 1;
      while (e < H.k && s.res_at[static_cast<size_t>(e)] >= 0) ++e;
      const int64_t b = H.offsets[j], n = H.offsets[e] - b, at = s.res_at[static_cast<size_t>(j)];
      storage_->read(s.file_offset + static_cast<uint64_t>(b) * s.row_bytes, s.res_buf.data() + static_cast<size_t>(at) * s.row_bytes,
                     static_cast<size_t>(n) * s.row_bytes);
      if (s.w.dtype == DType::kI8)
        for (int64_t r = 0; r < n; ++r) s.res_scale[static_cast<size_t>(at + r)] = s.w.scale_at(b + r);
      j = e;
    }
    s.res_ref = s.w;
    s.res_ref.rows = rows;
    s.res_ref.data = s.res_buf.data();
    if (s.w.dtype == DType::kI8) {
      s.res_ref.row_scale = s.res_scale.data();
      s.res_ref.scale_dtype = DType::kF32;
    }
  }
}

namespace {

// w without its first r0 rows (data and row scales advanced).
kern::MatRef from_row(const kern::MatRef& w, int64_t r0) {
  kern::MatRef v = w;
  v.rows = w.rows - r0;
  v.data = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * kern::row_bytes(w.dtype, w.cols);
  if (w.row_scale)
    v.row_scale = w.scale_dtype == DType::kF16 ? static_cast<const void*>(static_cast<const uint16_t*>(w.row_scale) + r0)
                                               : static_cast<const void*>(static_cast<const float*>(w.row_scale) + r0);
  return v;
}

}  // namespace

// Exact logits of the segments (rows of w -> grouped positions of y), spread over the pool.
void HeadRuntime::segments(const kern::MatRef& w, const float* x, float* y, const std::vector<Segment>& segs) {
  starts_.assign(1, 0);
  for (const auto& g : segs) starts_.push_back(starts_.back() + g.len);
  const int64_t n = starts_.back();
  auto run = [&](int64_t b, int64_t e) {
    size_t c = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), b) - starts_.begin()) - 1;
    while (b < e) {
      const int64_t s = starts_[c], len = starts_[c + 1] - s;
      const int64_t lo = b - s, hi = std::min(e - s, len);
      // rows [src + lo, src + hi) of w land at y[dst + lo ...]: the matrix seen from row src on
      const kern::MatRef v = from_row(w, segs[c].src);
      kern::matvec_rows(v, x, y + segs[c].dst, lo, hi);
      b = s + hi;
      ++c;
    }
  };
  if (!pool_ || pool_->size() == 1 || n * w.cols < (1 << 16)) run(0, n);
  else pool_->parallel_for(n, run, 64);
}

// Exact logits of the grouped row ranges in ranges_ (y indexed by grouped row): in place spread over the
// pool, or streamed: ranges cut into pieces that fit the stream buffer, each piece one read from the file.
void HeadRuntime::ranges(const float* x, float* y) {
  if (!storage_) {
    for (int i = 0; i < 2; ++i) {
      auto& segs = src_[i].segs;
      segs.clear();
      for (const Range& r : ranges_)
        if (r.fid == i) segs.push_back({r.b, r.b, r.e - r.b});
      if (!segs.empty()) segments(i == 0 ? model_.head().ref : src_[1].w, x, y, segs);
    }
    return;
  }
  // Pieces of at most a buffer each, gathered into batches that fill the buffer; a batch's reads are issued
  // together, one per pool thread (a device with a queue overlaps their access times), then multiplied.
  pieces_.clear();
  for (const Range& r : ranges_) {
    const Source& s = src_[r.fid];
    const int64_t buf_rows = static_cast<int64_t>(buf_.size() / s.row_bytes);
    for (int64_t b = r.b; b < r.e; b += buf_rows) pieces_.push_back({b, std::min(buf_rows, r.e - b), r.fid, 0});
  }
  for (size_t i = 0; i < pieces_.size();) {
    size_t e = i, at = 0;
    for (; e < pieces_.size(); ++e) {
      const size_t n = static_cast<size_t>(pieces_[e].n) * src_[pieces_[e].fid].row_bytes;
      if (at + n > buf_.size()) break;
      pieces_[e].at = at;
      at += n;
    }
    auto read = [&](int64_t b, int64_t end) {
      for (int64_t k = b; k < end; ++k) {
        const Piece& p = pieces_[i + static_cast<size_t>(k)];
        const Source& s = src_[p.fid];
        storage_->read(s.file_offset + static_cast<uint64_t>(p.b) * s.row_bytes, buf_.data() + p.at, static_cast<size_t>(p.n) * s.row_bytes);
      }
    };
    const int64_t n_batch = static_cast<int64_t>(e - i);
    if (n_batch > 1 && pool_ && pool_->size() > 1) pool_->parallel_for(n_batch, read, 1);
    else read(0, n_batch);
    for (size_t k = i; k < e; ++k) {
      const Piece& p = pieces_[k];
      const kern::MatRef v = buffered_rows(src_[p.fid], p.b, p.n, p.at);
      kern::matvec(v, x, ybuf_.data(), pool_);
      std::memcpy(y + p.b, ybuf_.data(), sizeof(float) * static_cast<size_t>(p.n));
    }
    i = e;
  }
}

void HeadRuntime::rows(const float* x, float* y, const std::vector<int32_t>& clusters) {
  const ClusterHead& H = model_.cluster_head();
  ranges_.clear();
  for (Source& s : src_) s.segs.clear();
  for (int32_t j : clusters) {
    const int64_t b = H.offsets[j], e = H.offsets[j + 1];
    const int fid = low_.empty() ? 0 : low_[static_cast<size_t>(j)];
    Source& s = src_[fid];
    const int64_t at = s.res_at.empty() ? -1 : s.res_at[static_cast<size_t>(j)];
    if (at >= 0) {  // resident: adjacent resident clusters are adjacent in the buffer too
      auto& segs = s.segs;
      if (!segs.empty() && segs.back().dst + segs.back().len == b && segs.back().src + segs.back().len == at) segs.back().len += e - b;
      else segs.push_back({at, b, e - b});
    } else if (!ranges_.empty() && ranges_.back().e == b && ranges_.back().fid == fid) {
      ranges_.back().e = e;  // adjacent clusters of one fidelity: one read
    } else {
      ranges_.push_back({b, e, fid});
    }
  }
  for (const Source& s : src_)
    if (!s.segs.empty()) segments(s.res_ref, x, y, s.segs);
  if (!ranges_.empty()) ranges(x, y);
}

void HeadRuntime::clustered(const float* x, float* out) {
  const ClusterHead& H = model_.cluster_head();
  const int64_t K = H.k;
  // 1. cluster log-probabilities
  kern::matvec(H.w, x, z_.data(), pool_);
  for (int64_t j = 0; j < K; ++j) z_[static_cast<size_t>(j)] += H.bias[j];
  const double lse = logprob::log_sum_exp(z_.data(), static_cast<size_t>(K));
  // 2. choose clusters in order of probability (ties: lower index first)
  order_.resize(static_cast<size_t>(K));
  std::iota(order_.begin(), order_.end(), 0);
  std::sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
    return z_[static_cast<size_t>(a)] > z_[static_cast<size_t>(b)] || (z_[static_cast<size_t>(a)] == z_[static_cast<size_t>(b)] && a < b);
  });
  chosen_.clear();
  std::fill(is_chosen_.begin(), is_chosen_.end(), 0);
  double cum = 0.0;
  for (int32_t j : order_) {
    const size_t n = chosen_.size();
    if (n >= static_cast<size_t>(opt_.max_clusters)) break;
    if (n >= static_cast<size_t>(opt_.min_clusters) && cum >= opt_.p) break;
    chosen_.push_back(j);
    is_chosen_[static_cast<size_t>(j)] = 1;
    cum += std::exp(static_cast<double>(z_[static_cast<size_t>(j)]) - lse);
  }
  std::sort(chosen_.begin(), chosen_.end());  // file order: reads go forward through the head
  // 3. exact logits of the chosen clusters, and log Q over them
  rows(x, y_.data(), chosen_);
  float ymx = -std::numeric_limits<float>::infinity();
  cstarts_.assign(1, 0);  // per chosen cluster, its first row among the chosen rows
  for (int32_t j : chosen_) {
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i) ymx = std::max(ymx, y_[static_cast<size_t>(i)]);
    cstarts_.push_back(cstarts_.back() + H.size(j));
  }
  const uint64_t n_rows = static_cast<uint64_t>(cstarts_.back());
  // Q: the exps of the chosen rows computed over the threads (each as on one thread), summed in row order
  ebuf_.resize(n_rows);
  const auto exps = [&](int64_t b, int64_t e) {
    size_t c = static_cast<size_t>(std::upper_bound(cstarts_.begin(), cstarts_.end(), b) - cstarts_.begin()) - 1;
    for (; b < e; ++c) {
      const int64_t s = cstarts_[c], hi = std::min(e, cstarts_[c + 1]);
      const float* yc = y_.data() + (H.offsets[chosen_[c]] - s);
      for (; b < hi; ++b) ebuf_[static_cast<size_t>(b)] = std::exp(static_cast<double>(yc[b]) - ymx);
    }
  };
  if (pool_ && pool_->size() > 1 && n_rows >= 2048) pool_->parallel_for(static_cast<int64_t>(n_rows), exps, 256);
  else exps(0, static_cast<int64_t>(n_rows));
  double q = 0.0;
  for (double v : ebuf_) q += v;
  const double log_q = ymx + std::log(q);
  const double log_chosen = std::log(cum);
  // 4. pseudo-logits for every token, written in token order from sequential arrays (tokens [t0, t1) per thread,
  // each value computed as on one thread), then the chosen clusters' exact logits over them
  for (int64_t j = 0; j < K; ++j)
    base_[static_cast<size_t>(j)] = log_q + (static_cast<double>(z_[static_cast<size_t>(j)]) - lse) - log_chosen;
  const auto pseudo = [out, prior = tok_prior_.data(), base = base_.data()](const auto* cl, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) out[t] = static_cast<float>(base[cl[t]] + prior[t]);
  };
  const auto write = [&](int64_t t0, int64_t t1) {
    if (!tok_cluster16_.empty()) pseudo(tok_cluster16_.data(), t0, t1);
    else pseudo(tok_cluster_.data(), t0, t1);
  };
  const int64_t V = H.offsets[K];
  if (pool_ && pool_->size() > 1 && V >= 8192) pool_->parallel_for(V, write, 1024);
  else write(0, V);
  for (int32_t j : chosen_)
    for (int32_t i = H.offsets[j]; i < H.offsets[j + 1]; ++i) out[H.perm[i]] = y_[static_cast<size_t>(i)];
  stats_.rows_read += n_rows;
  stats_.clusters += chosen_.size();
}

// Agreement with the full head for one token: same argmax (ties: lowest token id) and KL(full || approx).
void HeadRuntime::compare(const float* x, const float* approx) {
  const ClusterHead& H = model_.cluster_head();
  const size_t V = static_cast<size_t>(model_.config().n_vocab);
  if (storage_ || !low_.empty()) {
    if (all_clusters_.size() != static_cast<size_t>(H.k)) {
      all_clusters_.resize(static_cast<size_t>(H.k));
      std::iota(all_clusters_.begin(), all_clusters_.end(), 0);
    }
    rows(x, yfull_.data(), all_clusters_);
  } else {
    kern::matvec(model_.head().ref, x, yfull_.data(), pool_);
  }
  float fmx = yfull_[0], amx = approx[0];
  int32_t ftop = H.perm[0], atop = 0;
  for (size_t i = 1; i < V; ++i) {
    const float v = yfull_[i];
    if (v > fmx || (v == fmx && H.perm[i] < ftop)) {
      fmx = v;
      ftop = H.perm[i];
    }
    if (approx[i] > amx) {
      amx = approx[i];
      atop = static_cast<int32_t>(i);
    }
  }
  // KL over the grouped order (the full head's); the approximation is in token order.
  cmp_.resize(V);
  for (size_t i = 0; i < V; ++i) cmp_[i] = approx[H.perm[i]];
  const double kl = logprob::kl_divergence(yfull_.data(), cmp_.data(), V);
  stats_.compared += 1;
  stats_.top1_agree += ftop == atop;
  stats_.kl_sum += std::max(0.0, kl);
}

}  // namespace rwkvl
