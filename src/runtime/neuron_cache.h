// A bounded RAM cache of FFN neurons streamed from a "neuron-bundled" model file with pread(2) (issue #5).
//
// Layer l of the file has F_l neurons of neuron_bytes bytes each, neuron i at file_offset_l + i*neuron_bytes,
// ordered hot-first. The first n_pinned of each layer are read once at construction and stay resident; the
// others live in a fixed slab of whole slots (one slab of capacity_bytes allocated up front, so the memory
// use is exactly known) managed LRU. The regions are never touched through a memory mapping: peak RSS for
// them is the cache size.
//
// Slot states: empty / loading (by acquire or by the prefetch thread) / ready / failed (a prefetch read that
// failed while an acquire was waiting for it). One mutex + condition variable guards the table, the LRU list
// and the statistics; all file reads happen outside the lock into slots reserved beforehand.
//
// Thread-safety: acquire() and release() must be called from one thread at a time (the compute thread);
// prefetch(), stats() and reset_stats() may be called from any thread. At most one layer is acquired at a
// time; acquiring the same layer again before release() adds to its set.
//
// Capacity: slot_bytes = neuron_bytes rounded up to 64; the cache has floor(capacity_bytes / slot_bytes)
// slots and needs at least  sum_l n_pinned_l + max_l (n_neurons_l - n_pinned_l)  of them (every pinned
// neuron plus everything one layer can ask for at once), i.e. min_capacity_bytes() bytes.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/storage.h"

namespace rwkvl {

class Storage;

class NeuronCache {
 public:
  struct Layer {
    uint64_t file_offset = 0;
    int64_t n_neurons = 0;
    int64_t n_pinned = 0;
  };
  struct Options {
    uint64_t capacity_bytes = 0;
    bool prefetch_thread = true;
    uint32_t test_prefetch_delay_us = 0;  // tests only: the prefetch thread sleeps this long before each read
    std::shared_ptr<Storage> storage;     // optional: every read also occupies this (simulated) device
  };

  // Opens `path` for pread. All layers share one neuron size. Pinned neurons (the first n_pinned of each
  // layer) are read once at construction and never evicted. Throws rwkvl::Error: kInvalidArgument when the
  // capacity cannot hold the pinned neurons plus the largest layer's unpinned neuron count (the message names
  // the minimum capacity in bytes) or a layer description is invalid; kIo when the file cannot be opened or
  // read or a region lies outside the file; kOutOfMemory when the slab cannot be allocated.
  NeuronCache(const std::string& path, size_t neuron_bytes, std::vector<Layer> layers, const Options& opt);
  ~NeuronCache();  // stops and joins the prefetch thread
  NeuronCache(const NeuronCache&) = delete;
  NeuronCache& operator=(const NeuronCache&) = delete;

  // Smallest capacity_bytes that the constructor accepts for these layers.
  static uint64_t min_capacity_bytes(size_t neuron_bytes, const std::vector<Layer>& layers);

  // Makes neurons ids[0..n) of `layer` resident and writes their addresses to ptrs[0..n) (64-byte aligned).
  // Misses are read synchronously (runs of consecutive ids coalesced into one preadv); waits for any that the
  // prefetch thread is reading right now. The returned addresses stay valid and are not evicted until
  // release(layer). Duplicate ids are allowed. Throws rwkvl::Error(kInvalidArgument) for an id or layer out of
  // range or when another layer is still acquired, rwkvl::Error(kIo) on a read error or short file; after an
  // I/O error the layer is released (all its earlier addresses become invalid) and the cache stays usable.
  void acquire(int layer, const int32_t* ids, int64_t n, const void** ptrs);
  // Unpins everything acquired for `layer`. No-op when nothing is acquired; kInvalidArgument for another layer.
  void release(int layer);

  // Asynchronous hint: the background thread starts reading those of ids that are not resident (best
  // effort; dropped when the cache is full of acquired/pinned/just-prefetched slots or an acquire needs the
  // slots; a newer hint replaces an older pending one, and one in progress stops at its next batch).
  // No-op without the prefetch thread. Throws kInvalidArgument for a layer or id out of range.
  void prefetch(int layer, const int32_t* ids, int64_t n);

  // Every requested id is counted once in exactly one of hits_pinned / hits_cached / hits_prefetched / misses
  // (a duplicate id within one acquire counts as hits_cached; a neuron acquire waited for while the prefetch
  // thread read it counts as hits_prefetched), so requests == their sum, and misses*neuron_bytes ==
  // bytes_read_sync.
  struct Stats {
    uint64_t requests = 0;  // neurons asked for by acquire (pinned included)
    uint64_t hits_pinned = 0, hits_cached = 0, hits_prefetched = 0;  // hits_prefetched: resident because the prefetch thread read them
    uint64_t misses = 0;           // read synchronously in acquire
    uint64_t bytes_read = 0;       // from the file, all threads (pinned load included)
    uint64_t bytes_read_sync = 0;  // read in acquire
    uint64_t preads = 0;
    uint64_t evictions = 0;
    uint64_t prefetch_dropped = 0;
    uint64_t capacity_bytes = 0, pinned_bytes = 0;
    double wait_seconds = 0;  // time acquire spent reading or waiting for reads
  };
  Stats stats() const;
  void reset_stats();  // counters only (not capacity/pinned)

  size_t slot_bytes() const { return slot_bytes_; }
  int64_t n_slots() const { return n_slots_; }
  // Last error met by the prefetch thread ("" if none); acquire re-reads such neurons and throws there.
  std::string prefetch_error() const;

  // The largest gap (in neurons) one read spans: the bytes the device moves in one access time (a simulated
  // device's latency x bandwidth), else one 4 KiB page (pages are read whole anyway).
  size_t gap_neurons() const;
  // The same for a device (null or unthrottled: the 4 KiB page) and a neuron size.
  static size_t gap_neurons_for(const StorageOptions* device, size_t neuron_bytes);
  // Expected reads and bytes for `misses` neurons scattered at random over `n_neurons`, read with gaps of at most
  // `gap` neurons spanned (the gaps between misses are geometric): the planner's cost of a layer's misses.
  static void expected_miss_reads(double misses, double n_neurons, size_t gap, size_t neuron_bytes, double* reads, double* bytes);

 private:
  enum State : uint8_t { kEmpty, kLoadingSync, kLoadingPrefetch, kReady, kFailed };
  enum Cls : uint8_t { kClsCached, kClsPrefetched, kClsMiss };
  struct Slot {
    int32_t prev = -1, next = -1;  // LRU links (valid while in_lru)
    int32_t layer = -1, id = -1;   // what the slot holds (kEmpty: nothing)
    State state = kEmpty;
    Cls cls = kClsCached;          // classification within the current acquire call
    bool in_lru = false, acquired = false, pinned = false;
    bool prefetched = false;       // read (or being read) by the prefetch thread and not yet acquired
    uint64_t call_epoch = 0;       // acquire call that last touched it
    uint64_t hint_seq = 0;         // prefetch hint that last wanted it
  };
  struct ReadItem {
    int32_t id;
    int32_t slot;
  };

  uint8_t* slot_ptr(int32_t s) const { return slab_ + static_cast<size_t>(s) * slot_bytes_; }
  int32_t& table(int layer, int32_t id) { return table_[static_cast<size_t>(layer_base_[layer] + id)]; }

  // LRU (head = least recently used = next victim).
  void lru_remove(int32_t s);
  void lru_push_back(int32_t s);
  void lru_push_front(int32_t s);
  // Drops what slot s holds (it must be in the LRU); counts an eviction if it held a neuron.
  void evict(int32_t s);
  void release_locked();
  void cleanup();  // frees the slab and closes the file (destructor, failed constructor)
  void check_ids(const char* what, int layer, const int32_t* ids, int64_t n) const;

  // Reads the neurons items (sorted by id, all of `layer`) into their slots, one preadv per run of ids whose
  // gaps are at most gap_neurons() (the neurons in a gap are read into a scratch buffer and dropped: on storage
  // that charges an access time per read, reading them costs less than a second read). Returns "" or an error
  // message; counts preads into *n_preads. No lock needed.
  std::string read_items(int layer, const ReadItem* items, size_t n, uint64_t* n_preads) const;

  void prefetch_main();

  // The steps of acquire(), all under mu_ (lk holds it; the reads unlock it). waited: seconds spent so far.
  void touch_locked(int32_t s);  // first sight of a resident slot in this call
  void reserve_locked(std::unique_lock<std::mutex>& lk, int layer, const int32_t* ids, int64_t n, double& waited);
  void load_locked(std::unique_lock<std::mutex>& lk, int layer, double& waited);
  void read_misses_locked(std::unique_lock<std::mutex>& lk, int layer, double& waited);  // to_read_, throws kIo
  void publish_locked(int64_t n, const void** ptrs);  // counts the requests, writes the addresses

  std::string path_;
  int fd_ = -1;
  size_t neuron_bytes_ = 0, slot_bytes_ = 0;
  std::vector<Layer> layers_;
  std::shared_ptr<Storage> storage_;
  std::vector<int64_t> layer_base_;    // index of each layer's first entry in table_
  std::vector<int32_t> pinned_base_;   // slot of each layer's neuron 0 (pinned slots are contiguous)
  std::vector<int32_t> table_;         // (layer, neuron) -> slot or -1
  int64_t n_slots_ = 0;
  uint8_t* slab_ = nullptr;
  size_t slab_size_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int acquired_layer_ = -1;
  std::vector<int32_t> acquired_slots_;  // unpinned slots acquired for acquired_layer_
  uint64_t epoch_ = 0;
  int64_t n_loading_prefetch_ = 0;  // slots the prefetch thread is reading right now
  Stats stats_;
  std::string prefetch_error_;

  // acquire scratch (acquire is single-caller)
  std::vector<int32_t> req_slot_;
  std::vector<int32_t> call_slots_;
  std::vector<ReadItem> to_read_;

  // prefetch hand-off (guarded by mu_)
  bool stop_ = false;
  bool has_hint_ = false;
  int hint_layer_ = -1;
  std::vector<int32_t> hint_ids_;
  uint64_t hint_seq_ = 0;
  uint32_t test_delay_us_ = 0;
  int acquire_waiting_ = 0;  // an acquire waits for a free slot: the prefetch thread stops reserving
  std::thread thread_;
};

}  // namespace rwkvl
