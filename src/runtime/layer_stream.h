// Streamed layer weights: the big matrices of the layers a memory plan does not keep resident are read
// from the model file (runtime/storage.h, pread into own buffers, so none of their file pages is ever
// mapped into the process) into a preload buffer of one or two layer-sized slots. With prefetch a
// background reader fills the next streamed layer's slot while the current layer computes (layers are
// visited in order, and after the last one comes the next token's first streamed layer; the first streamed
// layer is read as soon as the stream is built, so the first token does not start on a cold pipeline);
// without it a layer is read when it is needed. Small tensors (vectors, LoRAs, scales) always stay in place.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "model/model.h"

namespace rwkvl {

class Storage;

// Parts of a layer smaller than this stay resident whatever the plan (LoRAs, mixing matrices).
constexpr size_t kStreamMinPartBytes = 16 * 1024;

// Calls fn on every streamable weight part (a MatRef of a dense or factored projection) of layer L.
void for_each_stream_part(LayerWeights& L, const std::function<void(kern::MatRef&)>& fn);
void for_each_stream_part(const LayerWeights& L, const std::function<void(const kern::MatRef&)>& fn);
// Bytes of layer l's streamable parts (each rounded up to 64 bytes, as laid out in a slot).
uint64_t layer_stream_bytes(const Model& m, int l);

struct LayerStreamStats {
  uint64_t loads = 0, bytes = 0;  // layer loads and bytes read
  uint64_t prefetch_hits = 0;     // loads that were already under way or done when the layer was needed
  double wait_seconds = 0.0;      // time the compute thread waited for a layer
};

class LayerStream {
 public:
  // streamed[l]: layer l's big matrices are read from the file into `slots` (1 or 2) layer slots; prefetch
  // (needs 2 slots): a background reader loads the next streamed layer while the current one computes,
  // else layers are read when acquired. Throws kInvalidArgument for a model that is not a native file on
  // disk, kIo on read errors (at acquire()).
  LayerStream(const Model& m, std::shared_ptr<Storage> storage, std::vector<bool> streamed, int slots, bool prefetch);
  ~LayerStream();
  LayerStream(const LayerStream&) = delete;
  LayerStream& operator=(const LayerStream&) = delete;
  // The weights of layer l, valid until the acquire() after the next one. Resident layers: the model's own.
  const LayerWeights& acquire(int l);
  uint64_t buffer_bytes() const { return slot_bytes_ * slots_.size(); }
  LayerStreamStats stats() const;
  void reset_stats();

 private:
  struct Part {
    uint64_t file_offset;
    size_t bytes, slot_offset;
  };
  void load(int l, int slot);  // synchronous read of layer l into slot
  void reader_loop();
  int next_streamed(int l) const;
  int slot_holding(int l) const;  // the slot holding (or being filled with) layer l, or -1
  const Model& m_;
  std::shared_ptr<Storage> storage_;
  std::vector<bool> streamed_;
  bool prefetch_;
  std::vector<LayerWeights> views_;
  std::vector<std::vector<Part>> parts_;
  size_t slot_bytes_ = 0;
  std::vector<std::unique_ptr<uint8_t[], void (*)(void*)>> slots_;
  std::vector<int> slot_layer_;  // layer held (or being loaded) per slot; -1 = none
  int cur_slot_ = -1;
  // background reader
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int req_layer_ = -1, req_slot_ = -1;  // request for the reader
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  LayerStreamStats stats_;
};

}  // namespace rwkvl
