// The one calibration driver of the compression passes and of the activation statistics (`stats`): it runs
// the real forward pass (embedding + ln0, then the layers, with the model's own per-architecture code) over
// calibration tokens and hands a pass the inputs of the projections it taps. A tap names a projection by
// its identity (layer, MatRole), never by the matrix's address, so taps also fire on layers the runtime
// streams as copies (a memory budget).
//
// Every use of the runtime's evaluation object in src/compress lives in calibrate.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace rwkvl {
class ThreadPool;
}

namespace rwkvl::compress {

// The projections a pass observes: roles in every layer, or in one layer.
class TapSet {
 public:
  TapSet& add(MatRole role) {  // in every layer
    all_ |= bit(role);
    return *this;
  }
  TapSet& add(int layer, MatRole role);
  bool contains(int layer, MatRole role) const {
    const uint64_t b = bit(role);
    if (all_ & b) return true;
    return layer >= 0 && static_cast<size_t>(layer) < per_layer_.size() && (per_layer_[static_cast<size_t>(layer)] & b);
  }
  bool empty() const;

 private:
  static uint64_t bit(MatRole r) { return uint64_t{1} << static_cast<unsigned>(r); }
  uint64_t all_ = 0;
  std::vector<uint64_t> per_layer_;
};
static_assert(static_cast<unsigned>(MatRole::kCount) <= 64, "TapSet keeps one bit per role");

// A tapped projection's input: X is T x cols (the matrix's input width), row-major, valid during the call.
using TapFn = std::function<void(int layer, MatRole role, const float* X, size_t T)>;

struct CalibrationOptions {
  int n_threads = 1;
  // > 0: run within this memory budget (native files on disk): layers the plan does not keep resident are
  // streamed as copies; the taps and every output are the same as without.
  uint64_t memory_budget = 0;
};

// Whole-model calibration over a token sequence, chunk by chunk from the initial state.
class Calibrator {
 public:
  Calibrator(std::shared_ptr<const Model> model, const CalibrationOptions& opts);
  ~Calibrator();
  Calibrator(const Calibrator&) = delete;
  Calibrator& operator=(const Calibrator&) = delete;

  // fn receives the inputs of the projections in `taps` (no taps: none).
  void set_taps(TapSet taps, TapFn fn);

  // For each chunk of at most `chunk` tokens (>= 1): embeds it, runs every layer (the state carried from
  // chunk to chunk) and calls after(offset, T, x) with the residual stream leaving the last layer (T x C,
  // not yet ln_out-normalised; writable) before the next chunk.
  using ChunkFn = std::function<void(size_t offset, size_t T, float* x)>;
  void run(const int32_t* tokens, size_t n, size_t chunk, const ChunkFn& after = nullptr);

  // The worker threads (for a pass's own work between chunks).
  ThreadPool* pool();
  // Layers loaded from the file under a memory budget so far (0 without one, or when all stay resident).
  uint64_t streamed_layer_loads() const;
  const Model& model() const { return *model_; }

 private:
  std::shared_ptr<const Model> model_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sequential (layer by layer) calibration, as low-rank factorisation and the layer-streamed passes need it:
// the residual stream of every calibration token entering the current layer and the state, carried from layer
// to layer (for RWKV-7 also each token's v_first, the value of layer 0 that later layers mix in). Each step
// may run another model of the same shape (the one with the layers compressed so far). Running the layers
// one after another this way gives, chunk for chunk, the same numbers as Calibrator::run on the same model
// (the same chunks, the same kernels): the taps see bit-identical inputs.
class LayerwiseCalibration {
 public:
  // Embeds all tokens with `model` (every step then runs `chunk` tokens at a time).
  LayerwiseCalibration(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& tokens, int n_threads,
                       size_t chunk);
  // Runs layer l of `model` over all tokens, calling fn for the projections in `taps`; the stream and the
  // state are left as they were (a trial pass that collects inputs).
  void collect(const std::shared_ptr<const Model>& model, int l, const TapSet& taps, const TapFn& fn);
  // Runs layer l of `model` over all tokens and moves the stream and the state on to layer l + 1 (calling fn
  // for the projections in `taps` on the way, when given).
  void advance(const std::shared_ptr<const Model>& model, int l);
  void advance(const std::shared_ptr<const Model>& model, int l, const TapSet& taps, const TapFn& fn);
  size_t tokens() const { return n_; }
  // The residual stream entering next_layer() (tokens() x C floats, row-major).
  const float* stream() const { return x_.data(); }
  // The layer the stream enters next (0 after construction).
  int next_layer() const { return next_layer_; }
  // Hands the stream over (tokens() x C floats: after the last layer, the input of ln_out and the head) and
  // frees the rest; the object can no longer run layers.
  std::vector<float> take_stream();
  // Bytes held: the stream (n x C floats, twice that for RWKV-7) and the state.
  uint64_t bytes() const;
  // Writes where the calibration stands (the stream, RWKV-7's v_first, the state, next_layer()) to `path`,
  // atomically, with a checksum: a compress journal (checkpoint.h) resumes from it.
  void save(const std::string& path) const;
  // Continues from what save() wrote for the same model shape and tokens: the same numbers as the run that saved
  // it. Error(kFormat) for a file that is not such a snapshot, is damaged or was made for other sizes.
  void load(const std::string& path);

 private:
  void run_layer(const std::shared_ptr<const Model>& model, int l, const TapSet* taps, const TapFn* fn, bool advance);
  std::vector<float> x_;        // n x C
  std::vector<float> v_first_;  // n x C (RWKV-7 only): layer 0's value of each token
  std::vector<int32_t> tokens_;  // RWKV-7a only: the tokens (every layer reads its DeepEmbed table by token)
  State state_;
  size_t n_ = 0, chunk_ = 1;
  int n_threads_ = 1, next_layer_ = 0;
};

}  // namespace rwkvl::compress
