// RWKV-7a's DeepEmbed tables on storage (issue #18): every layer has a (V x R*R) token table of which a token uses
// one row per layer, so the tables (1.5 GiB at 0.1B in bf16, more than the rest of the model) stay in the file and a
// token's rows are read when the token is known. The rows of one token in all layers are used together, so a cache
// slot holds all of them: fetch() is called with a chunk's tokens before its first layer and queues, for every token
// not cached, its row of every layer (layer 0's rows first) for background readers, which read them while the
// forward pass runs its first layers; a layer waits only for its own rows (row()). Without readers fetch() reads them
// itself. Slots are managed LRU, except the pinned ones: the rows of hot tokens (the file's list, most frequent
// first) that are never evicted. Rows stay in their stored dtype (f32 / f16 / bf16 / i8 / q4) and are converted when
// a layer uses them; int8 row scales are read through the table's own pointer (V scales per layer, small). A row is
// exactly the bytes the table holds whether it came from the cache, the file or a direct read, so outputs never
// depend on the cache.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/kernels.h"

namespace rwkvl {

class Storage;

struct DeepEmbedCacheStats {
  uint64_t lookups = 0, hits = 0;          // one per token of each fetched chunk; hits: its rows were cached
  uint64_t rows_read = 0, bytes_read = 0;  // table rows read from storage (misses x layers, rereads)
  uint64_t rereads = 0;  // rows read by row() one layer at a time: a chunk held more distinct tokens than the cache
  double hit_rate() const { return lookups ? static_cast<double>(hits) / static_cast<double>(lookups) : 0.0; }
};

class DeepEmbedCache {
 public:
  struct Table {
    kern::MatRef ref;          // the layer's table as bound (rows = V, cols = R*R); data is read when storage is null
    uint64_t file_offset = 0;  // byte offset of row 0 in the storage's file
  };
  // tables: one per layer, all with the same number of rows. slots >= 1 token slots (kInvalidArgument otherwise),
  // capped at the vocabulary; pinned: tokens whose slots are never evicted (the first min(size, slots / 2) of them,
  // duplicates and out-of-range ids skipped), filled when first used. storage null: rows are copied from memory.
  // readers (with storage; 0..16): background threads that read a chunk's missed rows while the forward pass runs
  // (each layer waits for its own rows only); 0 = fetch() reads them itself.
  DeepEmbedCache(std::vector<Table> tables, std::shared_ptr<Storage> storage, int64_t slots,
                 const std::vector<int32_t>& pinned, int readers = 0);
  ~DeepEmbedCache();
  DeepEmbedCache(const DeepEmbedCache&) = delete;
  DeepEmbedCache& operator=(const DeepEmbedCache&) = delete;
  // Makes the rows of tokens[0..T) resident, all layers of a token at once (tokens are checked: kInvalidArgument):
  // with readers, queues their reads (layer 0's rows of every missed token first) and returns.
  // A chunk with more distinct unpinned tokens than LRU slots: its last tokens that fit are fetched, the others are
  // left to row(), so a use of a token never reads more than its row of each layer.
  void fetch(const int32_t* tokens, size_t T);
  // Layer l's row of `token` as float32 (R*R values); a token fetch() did not cache is read here, that layer's row
  // only; with readers, waits for a queued row (kIo when its read failed). fetch() and row(): one thread at a time
  // (one cache per session).
  void row(int l, int32_t token, float* out);

  int64_t capacity() const { return n_slots_; }
  int64_t pinned() const { return n_pinned_; }
  size_t slot_bytes() const { return slot_bytes_; }
  size_t bytes() const;  // resident bytes: slots and index
  const DeepEmbedCacheStats& stats() const { return stats_; }
  void reset_stats() { stats_ = DeepEmbedCacheStats{}; }
  // Resident bytes of a cache of `slots` slots for tables of `row_bytes` bytes per token (all layers) and V rows.
  static uint64_t bytes_for(int64_t slots, uint64_t row_bytes, int64_t V);

 private:
  struct Job {
    int32_t token, slot, layer;
  };
  enum : uint8_t { kReady = 0, kPending = 1, kFailed = 2 };
  void read_row(int32_t token, size_t l, uint8_t* slot);
  void read_missed();
  void reader();
  std::string drain();
  void wait_row(int32_t s, int l, int32_t token);
  int32_t take_slot();
  void unlink(int32_t s);
  void push_front(int32_t s);
  std::vector<Table> tables_;
  std::vector<size_t> row_bytes_, row_offset_;  // per layer: bytes of a row, offset of its row in a slot
  std::shared_ptr<Storage> storage_;
  size_t slot_bytes_ = 0;
  int64_t n_slots_ = 0, n_pinned_ = 0, used_ = 0;
  std::vector<uint8_t> slab_, filled_;  // filled_: a pinned slot's rows have been read
  std::vector<int32_t> slot_of_token_, token_of_slot_, prev_, next_;
  int32_t head_ = -1, tail_ = -1;  // most / least recently used of the unpinned slots
  std::vector<uint8_t> reread_;    // one slot's rows read again (see row())
  std::vector<uint8_t> mark_;      // fetch(): per token, 1 = fetched, 2 = left to row() (a chunk wider than the cache)
  DeepEmbedCacheStats stats_;
  std::vector<Job> missed_;  // fetch(): the chunk's misses (layer unused)
  // The readers: the queue (jobs_[next_job_..)), per (slot, layer) its state, reads not finished, the first error.
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<Job> jobs_;
  size_t next_job_ = 0, pending_ = 0;
  std::vector<uint8_t> state_;
  std::string error_;
  bool stop_ = false;
  std::vector<std::thread> readers_;
};

}  // namespace rwkvl
