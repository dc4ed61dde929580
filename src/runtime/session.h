// A session: everything mutable for evaluating one stream of tokens with a loaded model - the thread pool,
// the forward pass's named scratch, the channel-mix runtime (dense / exact / predicted neurons, neuron cache),
// the head runtime (full or cluster head, streamed rows), simulated storage, the memory plan, the layer
// stream and the embedding cache. It is built once from one SessionParams: the parts are made in the one
// order their dependencies need (storage -> head -> plan -> embedding cache, layer stream, head stream ->
// FFN runtime with the plan's cache), so there is no setter order to get wrong and nothing is rebuilt.
// The model stays read-only and may be shared by any number of sessions; one session is used by one thread
// at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/forward.h"
#include "model/model.h"
#include "runtime/ffn_runtime.h"
#include "runtime/head_runtime.h"
#include "runtime/planner.h"
#include "runtime/storage.h"

namespace rwkvl {

class ThreadPool;
class EmbCache;
class DeepEmbedCache;
class LayerStream;
struct MemoryPlan;

// The default DeepEmbed row cache without a budget: tables of at least this many bytes stay on storage ...
inline constexpr uint64_t kDeepEmbedOnStorage = 64ull << 20;
// ... behind a cache of this many tokens' rows (all layers; 12 MiB at 0.1B in bf16).
inline constexpr int64_t kDeepEmbedSlots = 512;

struct MemoryOptions {
  uint64_t budget = 0;    // bytes for the whole process (peak RSS); 0 = no budget
  bool prefetch = true;   // plan two layer slots and read the next streamed layer in the background
  bool reader = true;     // with prefetch: false keeps the plan but reads synchronously (for A/B timing)
  int64_t emb_rows = -1;  // embedding cache rows: -1 = 4096 under a budget and none without; 0 = none
  // v7a DeepEmbed tables: token slots of their row cache (runtime/deep_embed_cache.h). -1 = the plan's under a
  // budget, else kDeepEmbedSlots when the tables are in a native file on disk and hold at least
  // kDeepEmbedOnStorage bytes (else read in place); 0 = read in place (no budget only); > 0 = that many slots.
  int64_t de_rows = -1;
  uint64_t de_on_storage = kDeepEmbedOnStorage;  // the table bytes from which de_rows -1 keeps them on storage
  uint64_t reserve = 0;   // caller buffers to leave room for
  size_t chunk = 32;      // most tokens per chunk: eval() feeds at most this many at a time under a plan
  uint64_t baseline = 0;  // bytes already resident in the process; 0 = measure (VmRSS) when planning
  // Fidelities of the head clusters (files made with compress --fidelities HIGH,int4), see MemoryRequest.
  MemoryRequest::Fidelity fidelity = MemoryRequest::Fidelity::kAuto;
  double latency_target = 0;   // seconds per token the plan must predict at most (storage + compute); 0 = none
  double compute_seconds = 0;  // compute per token the plan adds to its storage time
};

struct SessionParams {
  int threads = 1;
  FfnOptions ffn;          // its `storage` member is ignored: the session's storage is used
  HeadOptions head;
  StorageOptions storage;  // simulated bandwidth and latency of every read from the model file
  MemoryOptions memory;
};

class Session final : public ForwardEnv {
 public:
  // Throws rwkvl::Error when the model cannot honour the parameters (predict mode without predictors, a
  // cluster head mode without a cluster head, a budget below the minimum or on a model that cannot be
  // streamed, ...). With a budget it measures the process's resident memory and drops the model's resident
  // pages first (no other session of the model may be evaluating meanwhile).
  Session(std::shared_ptr<const Model> model, const SessionParams& params);
  // Defaults with this many threads (calibration, tests).
  Session(std::shared_ptr<const Model> model, int threads) : Session(std::move(model), with_threads(threads)) {}
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const SessionParams& params() const { return params_; }

  // Feeds tokens[0..n) through the model in chunks of at most `chunk` (1 = RNN mode; 0 = 32; above
  // kMaxChunk = kMaxChunk; under a plan at most the plan's chunk). logits_last: NULL or n_vocab floats;
  // logits_all: NULL or n * n_vocab floats. Throws for out-of-range tokens, a state of the wrong size,
  // a model file modified while in use, non-finite activations.
  static constexpr size_t kMaxChunk = 1024;
  void eval(State& state, const int32_t* tokens, size_t n, size_t chunk, float* logits_last, float* logits_all);

  // Lower-level steps of eval() for calibration (src/compress/): embeds T tokens + ln0 into x (T x C),
  // runs layers [l_begin, l_end) over x, and computes logits of x's rows.
  void embed(const int32_t* tokens, size_t T, float* x);
  void forward_layers(State& state, float* x, size_t T, int l_begin, int l_end, const int32_t* tokens = nullptr);
  // The calibration tap (model/forward.h): every projection calls it with its input; null = none.
  void set_observer(Observer obs) { observer_ = std::move(obs); }

  // ForwardEnv
  const Model& model() const override { return *model_; }
  ThreadPool* pool() override { return pool_.get(); }
  Scratch& scratch() override { return scratch_; }
  const LayerWeights& layer(int l) override;
  void ffn_key_value(const LayerWeights& L, const float* xk, float* out, size_t T, const SideProjection& side,
                     const float* gate) override;
  void deep_embed_rows(const LayerWeights& L, const int32_t* tokens, size_t T, float* rows) override;
  const Observer& observer() const override { return observer_; }

  // The parts (for statistics).
  FfnRuntime& ffn() { return *ffn_; }
  const FfnRuntime& ffn() const { return *ffn_; }
  HeadRuntime& head() { return *head_; }
  const HeadRuntime& head() const { return *head_; }
  // The simulated device of the file's reads; null until a part reads the file, and for models that are not
  // native files on disk (their weights live in memory).
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  const EmbCache* emb_cache() const { return emb_cache_.get(); }
  // v7a: the DeepEmbed tables' row cache (null: the tables are read in place).
  DeepEmbedCache* deep_embed_cache() { return de_cache_.get(); }
  const DeepEmbedCache* deep_embed_cache() const { return de_cache_.get(); }
  const MemoryPlan* plan() const { return plan_.get(); }
  const LayerStream* layer_stream() const { return stream_.get(); }
  // Zeroes the memory counters (embedding and DeepEmbed caches, storage, layer stream); ffn() and head() reset
  // their own.
  void reset_memory_stats();

 private:
  static SessionParams with_threads(int threads) {
    SessionParams p;
    p.threads = threads;
    return p;
  }
  const std::shared_ptr<Storage>& need_storage();
  void plan_memory_parts(FfnOptions& ffn);
  void make_emb_cache(int64_t rows);
  void make_deep_embed_cache(int64_t slots);
  void eval_chunk(State& state, const int32_t* tokens, size_t T, float* logits_last, float* logits_all);
  std::shared_ptr<const Model> model_;
  SessionParams params_;
  std::unique_ptr<ThreadPool> pool_;
  Scratch scratch_;
  std::vector<float> x_;  // the residual stream of the current chunk, T x C
  std::vector<float> de_e_, de_m_;  // v7a: ln0(emb) of a chunk's tokens and s_emb_x times it (unmerged tables)
  Observer observer_;
  std::shared_ptr<Storage> storage_;
  std::unique_ptr<HeadRuntime> head_;
  std::unique_ptr<MemoryPlan> plan_;
  std::unique_ptr<EmbCache> emb_cache_;
  std::unique_ptr<DeepEmbedCache> de_cache_;
  std::unique_ptr<LayerStream> stream_;
  std::unique_ptr<FfnRuntime> ffn_;
  size_t plan_chunk_ = 0;
};

}  // namespace rwkvl
