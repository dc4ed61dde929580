// The channel-mix (FFN) at run time: dense, exact-sparse or predicted-sparse evaluation of
// out = Wv relu(Wk x)^2, with the neuron-bundled weights (SparseFfn, model.h) either read in place
// from the mapped file or streamed through a bounded neuron cache (neuron_cache.h).
//
//   dense    every neuron's key row and value row is read (the reference; any model)
//   exact    every key row is read; value rows only for neurons with relu(k) > 0 (no predictor:
//            the same output as dense up to float summation order, the baseline for predictors)
//   predict  the predictor picks neurons first; only their key rows are read, and of those only the
//            value rows of neurons that turn out non-zero (needs a file with predictors)
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/model.h"

namespace rwkvl {

class NeuronCache;
class Storage;
class ThreadPool;

enum class FfnMode { kAuto, kDense, kExact, kPredict };
const char* ffn_mode_name(FfnMode m);
// "auto", "dense", "exact", "predict"; throws kInvalidArgument otherwise.
FfnMode parse_ffn_mode(const std::string& s);

struct FfnOptions {
  FfnMode mode = FfnMode::kAuto;  // auto = predict for files with predictors, dense otherwise
  uint64_t cache_bytes = 0;       // > 0: bundled neurons are streamed from the file through a cache this big
  bool prefetch = false;          // with a cache: a background reader fetches the next layer's predicted neurons
  bool verify = false;            // predict mode: also compute every key row to measure recall (slower)
  double random_frac = 0.0;       // > 0: after the predictor ran, replace its set by this share of random neurons
  uint64_t seed = 1;              // for random_frac
  std::shared_ptr<Storage> storage;  // the cache's reads also occupy this simulated device (the session sets it)
  // Sequence mode (without verification): a chunk's tokens share one read of the union of their neurons (from the
  // mapped file or through the cache), keys as one matrix product, value rows added for the tokens that activate
  // them; each token still uses only its own neurons. false: token by token (the same neurons, another float
  // summation order).
  bool chunk_union = true;
};

// Counters over (token, layer) evaluations of the channel-mix.
struct FfnStats {
  uint64_t evals = 0;            // (token, layer) pairs
  uint64_t neurons = 0;          // neurons those had (F each)
  uint64_t computed = 0;         // neurons whose key row was read
  uint64_t value_rows = 0;       // value rows read
  uint64_t weight_bytes = 0;     // key + value row bytes read (incl. int8 row scales)
  uint64_t predictor_bytes = 0;  // predictor bytes read
  uint64_t verify_active = 0;    // truly active neurons seen (exact/dense always; predict with verify)
  uint64_t verify_hit = 0;       // of those, how many were computed
  bool verified = false;         // verify_* are meaningful
  double seconds = 0.0;          // wall time inside the channel-mix key/value part
  double seconds_predictor = 0.0;
  double active_frac() const { return neurons ? static_cast<double>(computed) / static_cast<double>(neurons) : 0.0; }
  double recall() const { return verify_active ? static_cast<double>(verify_hit) / static_cast<double>(verify_active) : 1.0; }
};

// Sequence mode (FfnRuntime::forward_chunk_fused) multiplies the union of a chunk's neurons in blocks: their key rows
// gathered into one matrix of about 256 KB (128 to 1024 rows, a multiple of 32), one key product and one value pass
// per block. Bytes of a block's gathered rows with their int8 scales: what the memory plan counts for them.
int64_t ffn_chunk_block_rows(const SparseFfn& S);
uint64_t ffn_chunk_block_bytes(const SparseFfn& S);
// Sequence mode's 1-bit predictor builds the lane tables of up to this many groups of kern::kBitsLanes tokens at once.
constexpr int kFfnBitsGroups = 4;

class FfnRuntime {
 public:
  // Throws when the options do not fit the model (predict without predictors, a cache without a
  // mapped neuron-bundled file, a cache below its minimum).
  FfnRuntime(const Model& model, ThreadPool* pool, const FfnOptions& opt);
  ~FfnRuntime();
  FfnMode mode() const { return mode_; }  // resolved (never kAuto)
  const FfnOptions& options() const { return opt_; }
  // out (T x C) = Wv relu(Wk xk)^2 for the T rows of xk (T x C), for layer L of the model.
  // env supplies the threads, scratch and the projection observer for models with plain matrices.
  // side: a projection of the same tokens computed with the key matrix (forward.h), in its parallel region for
  // one token of a plain channel-mix (stats().seconds then includes it), else before the FFN.
  // gate (T x F, v7a DeepEmbed; null = none) multiplies relu(Wk xk)^2 before Wv.
  void forward(ForwardEnv& env, const LayerWeights& L, const float* xk, float* out, size_t T,
               const SideProjection& side = {}, const float* gate = nullptr);
  const FfnStats& stats() const { return stats_; }
  void reset_stats();
  const NeuronCache* cache() const { return cache_.get(); }

 private:
  void forward_dense_matrix(ForwardEnv& env, const LayerWeights& L, const float* xk, float* out, size_t T,
                            const SideProjection& side, const float* gate);
  void forward_token(const LayerWeights& L, const float* x, float* out);        // with a neuron cache
  void forward_token_fused(const LayerWeights& L, const float* x, float* out);  // weights in place
  // chunk_union; gate (T x F in the original neuron order, v7a; null = none) multiplies each token's relu(k)^2
  void forward_chunk_fused(const LayerWeights& L, const float* xk, float* out, size_t T, const float* gate = nullptr);
  const float* union_order(const SparseFfn& S, size_t T, const float* gate);
  uint64_t chunk_select(const SparseFfn& S, const float* xk, size_t T);                    // its neurons per token
  template <class Mark>
  void chunk_bits(const SparseFfn& S, const float* xk, size_t T, const Mark& mark);  // chunk_select's 1-bit copy
  int64_t shuffle_random(int64_t F);  // rand_perm_[0, k) a random set of k = round(random_frac F) neurons
  void draw_random(int64_t F);        // chosen_ marks such a set
  void verify_count(const SparseFfn& S, const float* x);  // recall counters against every key row
  void count(const SparseFfn& S, uint64_t n, uint64_t nz, bool skip_zero);
  void predict(const SparseFfn& S, const float* x, std::vector<int32_t>& ids);
  const Model& model_;
  ThreadPool* pool_;
  FfnOptions opt_;
  FfnMode mode_ = FfnMode::kDense;
  std::unique_ptr<NeuronCache> cache_;
  FfnStats stats_;
  // scratch
  std::vector<int32_t> ids_, next_ids_, all_ids_, rand_perm_;
  std::vector<const void*> ptrs_;
  std::vector<uint8_t> chosen_;
  std::vector<std::vector<int32_t>> tids_;  // per thread (fused path)
  std::vector<std::vector<const void*>> tptrs_;
  std::vector<std::vector<float>> tkout_, ttable_;
  std::vector<double> tpred_sec_;
  std::vector<int64_t> bounds_;
  std::vector<const void*> vptrs_;  // verification
  std::vector<float> vscratch_;
  std::vector<float> kout_, partial_, hid_, z_, score_, table_, kbuf_;
  // chunk_union scratch: per (token, neuron) use; the union; a block of gathered key rows (64-byte aligned), its
  // products, activations and transposed value rows; the block's output
  std::vector<float> cmask_, cumask_, cmasku_, cgateu_;  // cgateu_: the DeepEmbed gate in union order
  std::vector<uint8_t> cany_;  // per thread and neuron of a block: some token of the thread activates it
  std::vector<int32_t> cunion_;
  std::vector<uint64_t> tpairs_;  // per thread: (token, neuron) pairs with a != 0 (forward_chunk_fused)
  std::unique_ptr<uint8_t, void (*)(void*)> ckeys_{nullptr, &std::free};
  size_t ckeys_cap_ = 0;
  std::vector<uint8_t> cscales_;
  std::vector<float> chid_, cz_, ck_;
  std::vector<const void*> cptrs_;
  uint64_t rng_ = 0;
};

}  // namespace rwkvl
