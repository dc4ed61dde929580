#include "runtime/ffn_runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "model/ops.h"
#include "runtime/neuron_cache.h"
#include "runtime/sampler.h"

namespace rwkvl {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Bytes of one row's int8 scale (0 for the other dtypes).
size_t scale_bytes(const SparseFfn& S) {
  if (S.layout.dtype != DType::kI8) return 0;
  return S.layout.scale_dtype == DType::kF16 ? 2 : 4;
}

// Bytes read for one key or value row of the bundle, int8 row scale included.
uint64_t row_read_bytes(const SparseFfn& S) {
  return static_cast<uint64_t>(kern::row_bytes(S.layout.dtype, S.layout.cols)) + scale_bytes(S);
}

// The neurons of a layer are summed in kBlocks fixed blocks (block b: neurons [F b / kBlocks,
// F (b + 1) / kBlocks)), each into its own partial output, and the partials are added in block order, so the
// output bits do not depend on the number of threads (thread ti of P takes the blocks
// [kBlocks ti / P, kBlocks (ti + 1) / P)). 16 blocks keep up to 16 threads busy; adding 16 partials costs
// 16 C additions per token and layer, against 2 F C multiply-adds of the neurons.
constexpr int kBlocks = 16;
int first_block(int ti, int P) { return kBlocks * ti / P; }
int64_t block_start(int64_t F, int b) { return F * b / kBlocks; }

// out = partial[0] + partial[1] + ... + partial[kBlocks - 1] (each C floats), in that order.
void sum_blocks(const float* partial, int64_t C, float* out) {
  std::memcpy(out, partial, sizeof(float) * static_cast<size_t>(C));
  for (int b = 1; b < kBlocks; ++b)
    for (int64_t c = 0; c < C; ++c) out[c] += partial[static_cast<size_t>(b * C + c)];
}

// The neurons ids[0, n) (ascending, thread ti's share) computed block by block into partial + b C.
void neurons_by_block(const SparseFfn& S, int ti, int P, const void* const* ptrs, const int32_t* ids, int64_t n,
                      const float* x, float* partial, float* kout, bool skip_zero) {
  const int64_t C = S.layout.cols;
  int64_t lo = 0;
  for (int b = first_block(ti, P); b < first_block(ti + 1, P); ++b) {
    const int32_t end = static_cast<int32_t>(block_start(S.n, b + 1));
    const int64_t hi = std::lower_bound(ids + lo, ids + n, end) - ids;
    kern::ffn_neurons(S.layout, ptrs + lo, ids + lo, hi - lo, x, partial + static_cast<size_t>(b) * static_cast<size_t>(C),
                      kout + lo, skip_zero);
    lo = hi;
  }
}

// buf holds at least `need` bytes, 64-byte aligned (cap: its size; the contents are not kept when it grows).
void grow_aligned(std::unique_ptr<uint8_t, void (*)(void*)>& buf, size_t& cap, size_t need) {
  if (cap >= need) return;
  void* p = std::aligned_alloc(64, (need + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  buf.reset(static_cast<uint8_t*>(p));
  cap = need;
}

// Key rows gathered for a chunk's product (forward_chunk_fused) are copied by all threads from this many bytes.
constexpr size_t kParallelGatherBytes = 64 * 1024;

}  // namespace

int64_t ffn_chunk_block_rows(const SparseFfn& S) {
  constexpr int64_t kTargetBytes = 256 * 1024;
  const int64_t rb = static_cast<int64_t>(row_read_bytes(S));
  const int64_t rows = rb > 0 ? kTargetBytes / rb : 1024;
  return std::clamp<int64_t>(rows / 32 * 32, 128, 1024);
}

uint64_t ffn_chunk_block_bytes(const SparseFfn& S) {
  return static_cast<uint64_t>(ffn_chunk_block_rows(S)) * row_read_bytes(S);
}

const char* ffn_mode_name(FfnMode m) {
  switch (m) {
    case FfnMode::kAuto: return "auto";
    case FfnMode::kDense: return "dense";
    case FfnMode::kExact: return "exact";
    case FfnMode::kPredict: return "predict";
  }
  return "?";
}

FfnMode parse_ffn_mode(const std::string& s) {
  if (s == "auto") return FfnMode::kAuto;
  if (s == "dense") return FfnMode::kDense;
  if (s == "exact") return FfnMode::kExact;
  if (s == "predict") return FfnMode::kPredict;
  RWKVL_FAIL(kInvalidArgument, "unknown FFN mode '%s' (use dense, exact or predict)", s.c_str());
}

FfnRuntime::FfnRuntime(const Model& model, ThreadPool* pool, const FfnOptions& opt)
    : model_(model), pool_(pool), opt_(opt), rng_(opt.seed) {
  const bool bundled = model.sparse_ffn(), pred = model.has_ffn_predictor();
  mode_ = opt.mode;
  if (mode_ == FfnMode::kAuto) mode_ = pred ? FfnMode::kPredict : FfnMode::kDense;
  if ((mode_ == FfnMode::kExact || mode_ == FfnMode::kPredict) && !bundled)
    RWKVL_FAIL(kInvalidArgument,
               "--ffn-mode %s needs a neuron-bundled model (made by `rwkv-lite compress --sparse-ffn`); this one has plain "
               "ffn.key/ffn.value matrices",
               ffn_mode_name(mode_));
  if (mode_ == FfnMode::kPredict && !pred && opt.random_frac <= 0)
    RWKVL_FAIL(kInvalidArgument, "--ffn-mode predict needs a model with activation predictors; this file has none (use exact)");
  if (opt.random_frac < 0 || opt.random_frac > 1)
    RWKVL_FAIL(kInvalidArgument, "the random active share must lie in [0, 1], not %g", opt.random_frac);
  if (opt.random_frac > 0) {
    if (!bundled) RWKVL_FAIL(kInvalidArgument, "a forced random active set needs a neuron-bundled model");
    mode_ = FfnMode::kPredict;
  }
  if (opt.cache_bytes > 0) {
    if (!bundled) RWKVL_FAIL(kInvalidArgument, "--ffn-cache needs a neuron-bundled model (rwkv-lite compress --sparse-ffn)");
    const auto& f = model.file();
    const ModelConfig& cfg = model.config();
    std::vector<NeuronCache::Layer> layers;
    // Pin the hottest neurons over all layers (calibration frequency) with half of what the cache has
    // beyond one full layer; the rest is an LRU of recently used neurons.
    const size_t nb = model.layer(0).sffn.neuron_bytes;
    const size_t slot = (nb + 63) / 64 * 64;  // the cache's slots are 64-byte aligned
    const int64_t slots = static_cast<int64_t>(opt.cache_bytes / slot), F = cfg.n_ffn;
    const int64_t pin_total = std::max<int64_t>(0, (slots - F) / 2);
    std::vector<std::pair<float, int>> hot;  // (freq, layer) for every neuron
    for (int l = 0; l < cfg.n_layer; ++l) {
      const SparseFfn& S = model.layer(l).sffn;
      const auto* p = static_cast<const uint8_t*>(S.layout.data);
      if (!f || !f->data() || p < f->data() || p + S.t.nbytes > f->data() + f->size())
        RWKVL_FAIL(kInvalidArgument, "--ffn-cache streams the FFN from the model file: load the file as it is stored (no "
                                     "dtype conversion)");
      layers.push_back({static_cast<uint64_t>(p - f->data()), S.n, 0});
      for (int64_t j = 0; j < S.n; ++j) hot.emplace_back(S.freq[j], l);
    }
    std::stable_sort(hot.begin(), hot.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (int64_t i = 0; i < std::min<int64_t>(pin_total, static_cast<int64_t>(hot.size())); ++i)
      layers[static_cast<size_t>(hot[static_cast<size_t>(i)].second)].n_pinned++;
    NeuronCache::Options co;
    co.capacity_bytes = opt.cache_bytes;
    co.prefetch_thread = opt.prefetch;
    co.storage = opt.storage;
    cache_ = std::make_unique<NeuronCache>(f->path(), nb, std::move(layers), co);
  }
}

FfnRuntime::~FfnRuntime() = default;

void FfnRuntime::reset_stats() {
  stats_ = FfnStats{};
  if (cache_) cache_->reset_stats();
}

void FfnRuntime::forward(ForwardEnv& env, const LayerWeights& L, const float* xk, float* out, size_t T,
                         const SideProjection& side, const float* gate) {
  if (side.m && L.sffn.present()) ops::project(env, *side.m, side.X, side.Y, T);
  const auto t0 = Clock::now();
  if (!L.sffn.present()) {
    forward_dense_matrix(env, L, xk, out, T, side, gate);
  } else {
    const size_t C = static_cast<size_t>(L.sffn.layout.cols);
    // v7a's DeepEmbed gate scales each neuron's relu(k)^2 between its key and its value: the chunk path, which
    // computes the keys before it reads the value rows, takes it (single tokens too: a chunk of one).
    if (T > 1 && !opt_.verify && opt_.chunk_union) {
      forward_chunk_fused(L, xk, out, T, gate);
      stats_.seconds += since(t0);
      return;
    }
    if (gate) {  // token by token through the chunk path, with the recall of each token's predicted set
      const size_t F = static_cast<size_t>(L.sffn.n);
      for (size_t t = 0; t < T; ++t) {
        forward_chunk_fused(L, xk + t * C, out + t * C, 1, gate + t * F);
        if (mode_ != FfnMode::kPredict || !opt_.verify) continue;
        chosen_.resize(F);
        for (size_t j = 0; j < F; ++j) chosen_[j] = cmask_[j] != 0.f;
        verify_count(L.sffn, xk + t * C);
      }
      stats_.seconds += since(t0);
      return;
    }
    for (size_t t = 0; t < T; ++t) {
      if (cache_) forward_token(L, xk + t * C, out + t * C);
      else forward_token_fused(L, xk + t * C, out + t * C);
    }
  }
  stats_.seconds += since(t0);
}

// Plain ffn.key / ffn.value matrices (dense only): the two projections of the classic layout.
void FfnRuntime::forward_dense_matrix(ForwardEnv& env, const LayerWeights& L, const float* xk, float* out, size_t T,
                                      const SideProjection& side, const float* gate) {
  const int64_t F = L.ffn_k.rows;
  kbuf_.resize(T * static_cast<size_t>(F));
  float* kf = kbuf_.data();
  auto proj = [&](const Matrix& m, const float* X, float* Y) { ops::project(env, m, X, Y, T); };
  {
    const Matrix* m[2] = {&L.ffn_k, side.m};
    const float* in[2] = {xk, side.X};
    float* o[2] = {kf, side.Y};
    ops::project_many(env, m, in, o, side.m ? 2 : 1, T);
  }
  for (size_t i = 0; i < kbuf_.size(); ++i) {
    const float a = kf[i] > 0.f ? kf[i] : 0.f;
    if (kf[i] > 0.f) stats_.verify_active++;
    kf[i] = a * a;
  }
  if (gate)  // v7a DeepEmbed
    for (size_t i = 0; i < kbuf_.size(); ++i) kf[i] *= gate[i];
  proj(L.ffn_v, kf, out);
  stats_.verify_hit = stats_.verify_active;
  stats_.verified = true;
  stats_.evals += T;
  stats_.neurons += T * static_cast<uint64_t>(F);
  stats_.computed += T * static_cast<uint64_t>(F);
  stats_.value_rows += T * static_cast<uint64_t>(F);
  stats_.weight_bytes += T * (L.ffn_k.bytes() + L.ffn_v.bytes());
}

void FfnRuntime::predict(const SparseFfn& S, const float* x, std::vector<int32_t>& ids) {
  const int64_t F = S.n, C = S.layout.cols, H = S.hidden;
  hid_.resize(static_cast<size_t>(H));
  z_.resize(static_cast<size_t>(F));
  score_.resize(static_cast<size_t>(F));
  // +inf switches a predictor off; -inf makes it fire for every neuron.
  const bool use_mlp = S.mlp_thresh != INFINITY, use_bits = S.bits_thresh != INFINITY;
  if (use_mlp) {
    kern::matvec(S.w1, x, hid_.data(), pool_);
    for (float& h : hid_) h = h > 0.f ? h : 0.f;
    kern::matvec(S.w2, hid_.data(), z_.data(), pool_);
  }
  if (use_bits) {
    table_.resize(kern::bits_table_floats(C));
    kern::bits_prepare(x, C, table_.data());
    const auto run = [this, &S, C](int64_t b, int64_t e) {
      kern::bits_scores_rows(S.bits, S.lo, S.step, C, table_.data(), score_.data(), b, e);
    };
    if (pool_ && pool_->size() > 1 && F >= 512) pool_->parallel_for(F, run, 64);
    else run(0, F);
  }
  ids.clear();
  for (int64_t j = 0; j < F; ++j)
    if ((use_mlp && z_[static_cast<size_t>(j)] > S.mlp_thresh) || (use_bits && score_[static_cast<size_t>(j)] > S.bits_thresh))
      ids.push_back(static_cast<int32_t>(j));
}

// A random set of round(random_frac F) distinct neurons (partial Fisher-Yates): rand_perm_[0, k); returns k.
int64_t FfnRuntime::shuffle_random(int64_t F) {
  if (rand_perm_.size() != static_cast<size_t>(F)) {
    rand_perm_.resize(static_cast<size_t>(F));
    std::iota(rand_perm_.begin(), rand_perm_.end(), 0);
  }
  const int64_t k = std::llround(opt_.random_frac * static_cast<double>(F));
  for (int64_t i = 0; i < k; ++i) {
    const int64_t r = i + static_cast<int64_t>(splitmix64(rng_) % static_cast<uint64_t>(F - i));
    std::swap(rand_perm_[static_cast<size_t>(i)], rand_perm_[static_cast<size_t>(r)]);
  }
  return k;
}

void FfnRuntime::draw_random(int64_t F) {
  const int64_t k = shuffle_random(F);
  chosen_.assign(static_cast<size_t>(F), 0);
  for (int64_t i = 0; i < k; ++i) chosen_[static_cast<size_t>(rand_perm_[static_cast<size_t>(i)])] = 1;
}

// chunk_select's 1-bit predictor: the masks of T tokens through mark(t0, n, b, e, group, with_union).
template <class Mark>
void FfnRuntime::chunk_bits(const SparseFfn& S, const float* xk, size_t T, const Mark& mark) {
  const int64_t F = S.n, C = S.layout.cols;
  const size_t Fz = static_cast<size_t>(F), Cz = static_cast<size_t>(C);
  constexpr size_t L = static_cast<size_t>(kern::kBitsLanes);
  const bool parallel = pool_ && pool_->size() > 1;
  // The scores of kBitsLanes tokens at once (a group), each as the token path scores it, then their masks; up to
  // kFfnBitsGroups groups per pass. With at least as many groups as threads, each thread builds its groups' lane
  // tables and scores every neuron for them (one parallel region, and a table is read by the core that built it;
  // the union is taken afterwards, as two groups mark the same neurons). Else the tables are built one group per
  // thread, then the neurons are split across the threads (each range's scores, masks and union).
  const size_t tf = kern::bits_chunk_table_floats(C), span = L * static_cast<size_t>(kFfnBitsGroups);
  const size_t P = parallel ? static_cast<size_t>(pool_->size()) : 1;
  for (size_t t0 = 0; t0 < T; t0 += span) {
    const size_t t1 = std::min(T, t0 + span), ng = (t1 - t0 + L - 1) / L;
    const auto prepare = [&, t0, t1](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g) {
        const size_t t = t0 + static_cast<size_t>(g) * L;
        kern::bits_prepare_chunk(xk + t * Cz, C, static_cast<int64_t>(std::min(L, t1 - t)), C,
                                 table_.data() + static_cast<size_t>(g) * tf);
      }
    };
    const auto score = [&, t0, t1](size_t g, int64_t b, int64_t e, bool with_union) {
      const size_t t = t0 + g * L, n = std::min(L, t1 - t);
      kern::bits_scores_chunk(S.bits, S.lo, S.step, C, table_.data() + g * tf, static_cast<int64_t>(n),
                              score_.data() + g * L * Fz, F, b, e);
      mark(t, n, b, e, g, with_union);
    };
    if (parallel && ng >= P) {
      pool_->parallel_for(
          static_cast<int64_t>(ng),
          [&](int64_t b, int64_t e) {
            for (int64_t g = b; g < e; ++g) {
              prepare(g, g + 1);
              score(static_cast<size_t>(g), 0, F, false);
            }
          },
          1);
      float* __restrict um = cumask_.data();
      for (size_t t = t0; t < t1; ++t) {
        const float* __restrict mask = cmask_.data() + t * Fz;
        for (size_t j = 0; j < Fz; ++j) um[j] = std::max(um[j], mask[j]);
      }
      continue;
    }
    if (parallel && ng > 1) pool_->parallel_for(static_cast<int64_t>(ng), prepare, 1);
    else prepare(0, static_cast<int64_t>(ng));
    const auto run = [&, ng](int64_t b, int64_t e) {
      for (size_t g = 0; g < ng; ++g) score(g, b, e, true);
    };
    if (parallel && F * static_cast<int64_t>(t1 - t0) >= 512) pool_->parallel_for(F, run, 64);
    else run(0, F);
  }
}

// Sequence mode, step (1): cmask_[t F + j] = 1 where token t uses neuron j, else 0 (floats: the loops that read it
// vectorise), cumask_[j] = 1 where some token of the chunk does; returns the (token, neuron) pairs used. Predict mode
// runs the MLP over the chunk as two matrix products and the 1-bit copy kBitsLanes tokens at once; the masks of a
// range of neurons are made in the parallel region that scores them.
uint64_t FfnRuntime::chunk_select(const SparseFfn& S, const float* xk, size_t T) {
  const int64_t F = S.n, C = S.layout.cols;
  const size_t Fz = static_cast<size_t>(F), Cz = static_cast<size_t>(C);
  const bool predict_mode = mode_ == FfnMode::kPredict;
  const bool random = predict_mode && opt_.random_frac > 0;
  const bool use_mlp = predict_mode && S.has_predictor() && S.mlp_thresh != INFINITY;
  const bool use_bits = predict_mode && S.has_predictor() && S.bits_thresh != INFINITY;
  if (!predict_mode) {  // dense / exact: every neuron for every token
    cmask_.assign(T * Fz, 1.f);
    cumask_.assign(Fz, 1.f);
    return T * static_cast<uint64_t>(F);
  }
  const auto tp = Clock::now();
  cmask_.resize(T * Fz);
  cumask_.assign(Fz, 0.f);
  if (use_mlp) {
    chid_.resize(T * static_cast<size_t>(S.hidden));
    cz_.resize(T * Fz);
    kern::matmul(S.w1, xk, static_cast<int64_t>(T), chid_.data(), pool_);
    for (float& h : chid_) h = h > 0.f ? h : 0.f;
    kern::matmul(S.w2, chid_.data(), static_cast<int64_t>(T), cz_.data(), pool_);
  }
  constexpr size_t L = static_cast<size_t>(kern::kBitsLanes);
  if (use_bits) {
    score_.resize(L * Fz * static_cast<size_t>(kFfnBitsGroups));
    table_.resize(kern::bits_chunk_table_floats(C) * static_cast<size_t>(kFfnBitsGroups));
  }
  std::atomic<uint64_t> used{0};
  // Masks of tokens [t0, t0 + n) for neurons [b, e) (the bits scores of token t0 + l in row l of group g's rows of
  // score_), their count, and with_union their union.
  const auto mark = [&](size_t t0, size_t n, int64_t b, int64_t e, size_t g, bool with_union) {
    const float mt = S.mlp_thresh, bt = S.bits_thresh;
    float* __restrict um = cumask_.data();
    int64_t count = 0;
    for (size_t l = 0; l < n; ++l) {
      float* __restrict mask = cmask_.data() + (t0 + l) * Fz;
      const float* __restrict z = use_mlp ? cz_.data() + (t0 + l) * Fz : nullptr;
      const float* __restrict sc = use_bits ? score_.data() + (g * L + l) * Fz : nullptr;
      if (random)
        for (int64_t j = b; j < e; ++j) mask[j] = chosen_[static_cast<size_t>(j)] ? 1.f : 0.f;
      else if (use_mlp && use_bits)
        for (int64_t j = b; j < e; ++j)
          mask[j] = static_cast<float>(static_cast<int>(z[j] > mt) | static_cast<int>(sc[j] > bt));
      else if (use_mlp)
        for (int64_t j = b; j < e; ++j) mask[j] = static_cast<float>(z[j] > mt);
      else if (use_bits)
        for (int64_t j = b; j < e; ++j) mask[j] = static_cast<float>(sc[j] > bt);
      else
        for (int64_t j = b; j < e; ++j) mask[j] = 0.f;
      int32_t c = 0;  // integer counts: the loop vectorises
      for (int64_t j = b; j < e; ++j) c += mask[j] != 0.f;
      if (with_union)
        for (int64_t j = b; j < e; ++j) um[j] = std::max(um[j], mask[j]);
      count += c;
    }
    used.fetch_add(static_cast<uint64_t>(count), std::memory_order_relaxed);
  };
  const bool parallel = pool_ && pool_->size() > 1;
  if (random) {  // one draw per token, in token order; the 1-bit copy still runs (its cost is part of what is timed)
    for (size_t t = 0; t < T; ++t) {
      if (use_bits && t % L == 0) {
        const int64_t n = static_cast<int64_t>(std::min(L, T - t));
        kern::bits_prepare_chunk(xk + t * Cz, C, n, C, table_.data());
        const auto run = [&, n](int64_t b, int64_t e) {
          kern::bits_scores_chunk(S.bits, S.lo, S.step, C, table_.data(), n, score_.data(), F, b, e);
        };
        if (parallel && F * n >= 512) pool_->parallel_for(F, run, 64);
        else run(0, F);
      }
      draw_random(F);
      mark(t, 1, 0, F, 0, true);
    }
  } else if (use_bits) {
    chunk_bits(S, xk, T, mark);
  } else {
    const auto run = [&](int64_t b, int64_t e) { mark(0, T, b, e, 0, true); };
    if (parallel && F * static_cast<int64_t>(T) >= 512) pool_->parallel_for(F, run, 64);
    else run(0, F);
  }
  stats_.seconds_predictor += since(tp);
  if (S.has_predictor()) stats_.predictor_bytes += T * S.predictor_bytes();
  return used.load();
}

// A chunk of T tokens with the bundle in place. (1) Which neurons each token uses: the predictors run over the chunk
// (the MLP as two matrix products, the 1-bit copy kBitsLanes tokens at once), or every neuron in dense / exact mode.
// (2) The union of those, in blocks of ffn_chunk_block_rows neurons: their key rows gathered into one matrix and
// multiplied with the T inputs at once (the matmul kernels); then, in one parallel region with the tokens split,
// a = relu(k)^2 where the token uses the neuron, else 0, and each value row of a neuron some token activates added,
// scaled by a, to the outputs of the tokens with a != 0 (kern::ffn_values). Each weight row is read once per chunk.
// The chunk's masks in union order (cunion_: the neurons some token uses), and v7a's gate the same way into cgateu_
// (bundled neuron j is neuron perm[j] of the layer).
const float* FfnRuntime::union_order(const SparseFfn& S, size_t T, const float* gate) {
  const size_t Fz = static_cast<size_t>(S.n), Uz = cunion_.size();
  const float* masku = cmask_.data();
  if (Uz < Fz) {
    cmasku_.resize(T * Uz);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < Uz; ++i) cmasku_[t * Uz + i] = cmask_[t * Fz + static_cast<size_t>(cunion_[i])];
    masku = cmasku_.data();
  }
  if (gate) {
    cgateu_.resize(T * Uz);
    for (size_t t = 0; t < T; ++t)
      for (size_t i = 0; i < Uz; ++i) cgateu_[t * Uz + i] = gate[t * Fz + static_cast<size_t>(S.perm[cunion_[i]])];
  }
  return masku;
}

void FfnRuntime::forward_chunk_fused(const LayerWeights& L, const float* xk, float* out, size_t T, const float* gate) {
  const SparseFfn& S = L.sffn;
  const int64_t kChunkBlock = ffn_chunk_block_rows(S);
  const int64_t F = S.n, C = S.layout.cols;
  const size_t Cz = static_cast<size_t>(C);
  const bool skip_zero = mode_ != FfnMode::kDense;

  const uint64_t computed = chunk_select(S, xk, T);  // (1)
  cunion_.clear();
  for (int64_t j = 0; j < F; ++j)
    if (cumask_[static_cast<size_t>(j)] != 0.f) cunion_.push_back(static_cast<int32_t>(j));
  const int64_t U = static_cast<int64_t>(cunion_.size());
  const size_t Uz = static_cast<size_t>(U);
  const float* masku = union_order(S, T, gate);

  // (2) the union, block by block
  const size_t rb = static_cast<size_t>(kern::row_bytes(S.layout.dtype, C));
  const bool i8 = S.layout.dtype == DType::kI8;
  const size_t sb = scale_bytes(S);
  const size_t need = static_cast<size_t>(kChunkBlock) * rb;
  grow_aligned(ckeys_, ckeys_cap_, need);
  cscales_.resize(static_cast<size_t>(kChunkBlock) * sb);
  ck_.resize(T * static_cast<size_t>(kChunkBlock));
  cptrs_.resize(static_cast<size_t>(kChunkBlock));
  std::fill(out, out + T * Cz, 0.f);
  uint64_t nz_pairs = 0, rows_read = 0;
  for (int64_t b0 = 0; b0 < U; b0 += kChunkBlock) {
    const int64_t n = std::min(kChunkBlock, U - b0);
    const size_t nz = static_cast<size_t>(n);
    const int32_t* ids = cunion_.data() + b0;
    // the block's neurons: in place in the mapped file, or pinned in the neuron cache until released below
    if (cache_) cache_->acquire(L.index, ids, n, cptrs_.data());
    struct Release {
      NeuronCache* c;
      int layer;
      ~Release() {
        if (c) c->release(layer);
      }
    } release{cache_.get(), L.index};
    const auto gather = [&](int64_t gb, int64_t ge) {  // the key rows side by side (split across the threads)
      for (size_t i = static_cast<size_t>(gb); i < static_cast<size_t>(ge); ++i) {
        if (!cache_) cptrs_[i] = S.neuron(ids[i]);
        std::memcpy(ckeys_.get() + i * rb, cptrs_[i], rb);
        // the neuron's value row (after its key row) on its way to the cache while the keys are multiplied
        for (size_t off = 0; off < rb; off += 64)
          __builtin_prefetch(static_cast<const uint8_t*>(cptrs_[i]) + rb + off, 0, 2);
        if (i8)
          std::memcpy(cscales_.data() + i * sb,
                      static_cast<const uint8_t*>(S.layout.row_scale) + 2 * static_cast<size_t>(ids[i]) * sb, sb);
      }
    };
    if (pool_ && pool_->size() > 1 && nz * rb >= kParallelGatherBytes) pool_->parallel_for(n, gather, 64);
    else gather(0, n);
    kern::MatRef keys = S.layout;
    keys.rows = n;
    keys.data = ckeys_.get();
    keys.row_scale = i8 ? cscales_.data() : nullptr;
    kern::matmul(keys, xk, static_cast<int64_t>(T), ck_.data(), pool_);  // ck_[t n + i]
    rows_read += nz;
    // One parallel region, the tokens split across the threads: a = mask relu(k)^2, then out[t] += sum over the
    // block's neurons of a[t][i] value row i (rows of zero a are not read), each token's sum in neuron order whatever
    // the thread count. Per thread: its pairs with a != 0, the neurons its tokens activate (dense: every used one).
    const int P = pool_ && pool_->size() > 1 && T >= 2 ? pool_->size() : 1;
    const size_t Pz = static_cast<size_t>(P);
    cany_.assign(Pz * nz, skip_zero ? 0 : 1);
    tpairs_.assign(Pz, 0);
    const auto part = [&](int ti) {
      const size_t t0 = T * static_cast<size_t>(ti) / Pz, t1 = T * static_cast<size_t>(ti + 1) / Pz;
      uint8_t* __restrict any = cany_.data() + static_cast<size_t>(ti) * nz;
      uint64_t pairs = 0;
      const size_t m = nz;  // a local bound: the loop below vectorises
      for (size_t t = t0; t < t1; ++t) {
        const float* __restrict mask = masku + t * Uz + static_cast<size_t>(b0);
        float* __restrict k = ck_.data() + t * m;
        int32_t on = 0;  // integer counts: the loop vectorises
        for (size_t i = 0; i < m; ++i) {
          const float r = k[i] > 0.f ? k[i] : 0.f;
          const float a = r * r * mask[i];
          k[i] = a;
          on += a != 0.f;
          any[i] |= static_cast<uint8_t>(a != 0.f);
        }
        if (gate) {  // after the count: a gated neuron may be negative, never zero where the neuron fired
          const float* __restrict g = cgateu_.data() + t * Uz + static_cast<size_t>(b0);
          for (size_t i = 0; i < m; ++i) k[i] *= g[i];
        }
        pairs += static_cast<uint64_t>(on);
      }
      tpairs_[static_cast<size_t>(ti)] = pairs;
      kern::ffn_values(S.layout, cptrs_.data(), ids, n, ck_.data(), n, static_cast<int64_t>(t0),
                       static_cast<int64_t>(t1), out, C);
    };
    if (P > 1) pool_->run_on_all(part);
    else part(0);
    for (uint64_t p : tpairs_) nz_pairs += p;
    for (size_t i = 0; i < nz; ++i) {
      bool read = false;
      for (size_t ti = 0; ti < Pz; ++ti) read = read || cany_[ti * nz + i] != 0;
      rows_read += read;
    }
  }

  // Counters, per (token, layer) as the token path counts them; the bytes are those read: each row once a chunk.
  const uint64_t vrows = skip_zero ? nz_pairs : computed;
  stats_.evals += T;
  stats_.neurons += T * static_cast<uint64_t>(F);
  stats_.computed += computed;
  stats_.value_rows += vrows;
  stats_.weight_bytes += rows_read * row_read_bytes(S);
  if (mode_ != FfnMode::kPredict) {
    stats_.verify_active += nz_pairs;
    stats_.verify_hit += nz_pairs;
    stats_.verified = true;
  }
}

// Without a cache everything after the predictor's first layer runs in one parallel region: each
// thread takes a contiguous range of neurons, scores them, keeps the predicted ones and computes them
// into its own partial output (one fork/join per token and layer instead of four).
void FfnRuntime::forward_token_fused(const LayerWeights& L, const float* x, float* out) {
  const SparseFfn& S = L.sffn;
  const int64_t F = S.n, C = S.layout.cols;
  const bool predict_mode = mode_ == FfnMode::kPredict;
  const bool random = predict_mode && opt_.random_frac > 0;
  const bool use_mlp = predict_mode && S.has_predictor() && S.mlp_thresh != INFINITY;
  const bool use_bits = predict_mode && S.has_predictor() && S.bits_thresh != INFINITY;
  const bool skip_zero = mode_ != FfnMode::kDense;
  const auto tp = Clock::now();
  if (use_mlp) {
    hid_.resize(static_cast<size_t>(S.hidden));
    kern::matvec_rows(S.w1, x, hid_.data(), 0, S.hidden);
    for (float& h : hid_) h = h > 0.f ? h : 0.f;
    z_.resize(static_cast<size_t>(F));
  }
  if (use_bits) score_.resize(static_cast<size_t>(F));
  if (random) draw_random(F);
  double pred_serial = since(tp);
  const int P = pool_ ? pool_->size() : 1;
  if (tids_.size() < static_cast<size_t>(P)) tids_.resize(static_cast<size_t>(P));
  if (tptrs_.size() < static_cast<size_t>(P)) tptrs_.resize(static_cast<size_t>(P));
  if (tkout_.size() < static_cast<size_t>(P)) tkout_.resize(static_cast<size_t>(P));
  if (ttable_.size() < static_cast<size_t>(P)) ttable_.resize(static_cast<size_t>(P));
  tpred_sec_.assign(static_cast<size_t>(P), 0.0);
  partial_.assign(static_cast<size_t>(kBlocks) * static_cast<size_t>(C), 0.f);
  auto work = [&](int ti) {
    const int64_t b = block_start(F, first_block(ti, P)), e = block_start(F, first_block(ti + 1, P));
    std::vector<int32_t>& ids = tids_[static_cast<size_t>(ti)];
    ids.clear();
    const auto t0 = Clock::now();
    if (use_mlp) kern::matvec_rows(S.w2, hid_.data(), z_.data(), b, e);
    if (use_bits) {
      // Each thread builds its own look-up table (a few microseconds) rather than reading one that
      // another core wrote: the table is ~100 KB and every row touches it all.
      std::vector<float>& table = ttable_[static_cast<size_t>(ti)];
      table.resize(kern::bits_table_floats(C));
      kern::bits_prepare(x, C, table.data());
      kern::bits_scores_rows(S.bits, S.lo, S.step, C, table.data(), score_.data(), b, e);
    }
    if (!predict_mode) {
      for (int64_t j = b; j < e; ++j) ids.push_back(static_cast<int32_t>(j));
    } else if (random) {
      for (int64_t j = b; j < e; ++j)
        if (chosen_[static_cast<size_t>(j)]) ids.push_back(static_cast<int32_t>(j));
    } else {
      for (int64_t j = b; j < e; ++j)
        if ((use_mlp && z_[static_cast<size_t>(j)] > S.mlp_thresh) || (use_bits && score_[static_cast<size_t>(j)] > S.bits_thresh))
          ids.push_back(static_cast<int32_t>(j));
    }
    if (predict_mode) tpred_sec_[static_cast<size_t>(ti)] = since(t0);
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<const void*>& ptrs = tptrs_[static_cast<size_t>(ti)];
    std::vector<float>& kout = tkout_[static_cast<size_t>(ti)];
    ptrs.resize(static_cast<size_t>(n));
    kout.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) ptrs[static_cast<size_t>(j)] = S.neuron(ids[static_cast<size_t>(j)]);
    neurons_by_block(S, ti, P, ptrs.data(), ids.data(), n, x, partial_.data(), kout.data(), skip_zero);
  };
  if (P > 1) pool_->run_on_all(work);
  else work(0);
  sum_blocks(partial_.data(), C, out);

  // Counters. The predictor's share of the time: the serial part plus the slowest thread's scoring.
  double pred_par = 0;
  for (double v : tpred_sec_) pred_par = std::max(pred_par, v);
  if (predict_mode) stats_.seconds_predictor += pred_serial + pred_par;
  if (predict_mode && S.has_predictor()) stats_.predictor_bytes += S.predictor_bytes();
  uint64_t n = 0, nz = 0;
  for (int ti = 0; ti < P; ++ti) {
    n += tids_[static_cast<size_t>(ti)].size();
    for (float k : tkout_[static_cast<size_t>(ti)]) nz += k > 0.f;
  }
  count(S, n, nz, skip_zero);
  if (predict_mode && opt_.verify) {
    chosen_.assign(static_cast<size_t>(F), 0);
    for (int ti = 0; ti < P; ++ti)
      for (int32_t id : tids_[static_cast<size_t>(ti)]) chosen_[static_cast<size_t>(id)] = 1;
    verify_count(S, x);
  }
}

// Counters of one (token, layer): n neurons computed, nz of them non-zero. Without a predictor every
// neuron was computed, so the non-zero ones are exactly the truly active ones (recall 1).
void FfnRuntime::count(const SparseFfn& S, uint64_t n, uint64_t nz, bool skip_zero) {
  stats_.evals++;
  stats_.neurons += static_cast<uint64_t>(S.n);
  stats_.computed += n;
  const uint64_t vrows = skip_zero ? nz : n;
  stats_.value_rows += vrows;
  stats_.weight_bytes += (n + vrows) * row_read_bytes(S);
  if (mode_ != FfnMode::kPredict) {
    stats_.verify_active += nz;
    stats_.verify_hit += nz;
    stats_.verified = true;
  }
}

void FfnRuntime::verify_count(const SparseFfn& S, const float* x) {
  // Every key row's pre-activation, through the neuron kernel (its kout is bitwise what matvec_rows
  // gives; value rows of active neurons are read into a scratch output and dropped). Read in place,
  // through the mapping, even with a cache: verification only.
  const int64_t F = S.n, C = S.layout.cols;
  if (all_ids_.size() != static_cast<size_t>(F)) {
    all_ids_.resize(static_cast<size_t>(F));
    std::iota(all_ids_.begin(), all_ids_.end(), 0);
  }
  vptrs_.resize(static_cast<size_t>(F));
  for (int64_t j = 0; j < F; ++j) vptrs_[static_cast<size_t>(j)] = S.neuron(j);
  kbuf_.resize(static_cast<size_t>(F));
  const int P = pool_ ? pool_->size() : 1;
  vscratch_.assign(static_cast<size_t>(P) * static_cast<size_t>(C), 0.f);
  auto work = [&](int ti) {
    const int64_t b = F * ti / P, e = F * (ti + 1) / P;
    kern::ffn_neurons(S.layout, vptrs_.data() + b, all_ids_.data() + b, e - b, x, vscratch_.data() + static_cast<size_t>(ti) * C,
                      kbuf_.data() + b, true);
  };
  if (P > 1) pool_->run_on_all(work);
  else work(0);
  for (int64_t j = 0; j < F; ++j)
    if (kbuf_[static_cast<size_t>(j)] > 0.f) {
      stats_.verify_active++;
      stats_.verify_hit += chosen_[static_cast<size_t>(j)];
    }
  stats_.verified = true;
}

void FfnRuntime::forward_token(const LayerWeights& L, const float* x, float* out) {
  const SparseFfn& S = L.sffn;
  const int64_t F = S.n, C = S.layout.cols;
  const int n_layer = model_.config().n_layer;
  if (all_ids_.size() != static_cast<size_t>(F)) {
    all_ids_.resize(static_cast<size_t>(F));
    std::iota(all_ids_.begin(), all_ids_.end(), 0);
  }
  const std::vector<int32_t>* ids = &all_ids_;
  bool skip_zero = mode_ != FfnMode::kDense;
  if (mode_ == FfnMode::kPredict) {
    const auto tp = Clock::now();
    if (S.has_predictor()) predict(S, x, ids_);
    if (opt_.random_frac > 0) {
      const int64_t k = shuffle_random(F);  // in file order below
      ids_.assign(rand_perm_.begin(), rand_perm_.begin() + k);
      std::sort(ids_.begin(), ids_.end());
    }
    if (S.has_predictor()) stats_.predictor_bytes += S.predictor_bytes();
    // With a cache, start reading what the next layer will probably need: its predictor applied to
    // this layer's input (the residual stream changes little from one layer to the next).
    if (cache_ && opt_.prefetch && L.index + 1 < n_layer) {
      const SparseFfn& N = model_.layer(L.index + 1).sffn;
      if (N.has_predictor() && opt_.random_frac <= 0) {
        predict(N, x, next_ids_);
        cache_->prefetch(L.index + 1, next_ids_.data(), static_cast<int64_t>(next_ids_.size()));
        stats_.predictor_bytes += N.predictor_bytes();
      }
    }
    stats_.seconds_predictor += since(tp);
    ids = &ids_;
  }
  const int64_t n = static_cast<int64_t>(ids->size());
  ptrs_.resize(static_cast<size_t>(n));
  kout_.resize(static_cast<size_t>(n));
  if (cache_) {
    cache_->acquire(L.index, ids->data(), n, ptrs_.data());
  } else {
    for (int64_t j = 0; j < n; ++j) ptrs_[static_cast<size_t>(j)] = S.neuron((*ids)[static_cast<size_t>(j)]);
  }
  // Split the neurons over the pool in the fused path's blocks (ids are ascending), so both paths sum in the
  // same order and neither a cache nor the thread count changes the output bits.
  const int P = pool_ ? pool_->size() : 1;
  partial_.assign(static_cast<size_t>(kBlocks) * static_cast<size_t>(C), 0.f);
  bounds_.resize(static_cast<size_t>(P) + 1);
  for (int ti = 0; ti <= P; ++ti)
    bounds_[static_cast<size_t>(ti)] =
        std::lower_bound(ids->begin(), ids->end(), static_cast<int32_t>(block_start(F, first_block(ti, P)))) - ids->begin();
  struct Args {  // one pointer captured: std::function keeps it without allocating
    const SparseFfn* S;
    const void* const* ptrs;
    const int32_t* ids;
    const int64_t* bounds;
    const float* x;
    float* partial;
    float* kout;
    bool skip;
    int P;
  } a{&S, ptrs_.data(), ids->data(), bounds_.data(), x, partial_.data(), kout_.data(), skip_zero, P};
  auto work = [p = &a](int ti) {
    const int64_t b = p->bounds[ti], e = p->bounds[ti + 1];
    neurons_by_block(*p->S, ti, p->P, p->ptrs + b, p->ids + b, e - b, p->x, p->partial, p->kout + b, p->skip);
  };
  if (P > 1) pool_->run_on_all(work);
  else work(0);
  sum_blocks(partial_.data(), C, out);
  if (cache_) cache_->release(L.index);

  uint64_t nz = 0;
  for (int64_t j = 0; j < n; ++j) nz += kout_[static_cast<size_t>(j)] > 0.f;
  count(S, static_cast<uint64_t>(n), nz, skip_zero);
  if (mode_ == FfnMode::kPredict && opt_.verify) {
    chosen_.assign(static_cast<size_t>(F), 0);
    for (int64_t j = 0; j < n; ++j) chosen_[static_cast<size_t>((*ids)[static_cast<size_t>(j)])] = 1;
    verify_count(S, x);
  }
}


}  // namespace rwkvl
