// RWKV-7a's DeepEmbed tables on storage (issue #18): every layer has a (V x R*R) token table of which a token
// uses one row per layer, so the tables (1.5 GiB at 0.1B in bf16, more than the rest of the model) stay in the
// file and a token's rows are read when the token is known. The rows of one token in all layers are used
// together, so a cache slot holds all of them: fetch() is called with a chunk's tokens before its first layer and
// reads, for every token not cached, its row of every layer at once (L small reads issued together: over the
// session's threads when the storage is throttled, so a device with a queue serves them in parallel). Slots are
// managed LRU, except the pinned ones: the rows of hot tokens (the file's list, most frequent first) that are
// never evicted. Rows stay in their stored dtype (f32 / f16 / bf16 / i8 / q4) and are converted when a layer uses
// them; int8 row scales are read through the table's own pointer (V scales per layer, small). A row is exactly the
// bytes the table holds whether it came from the cache, the file or a reread, so outputs never depend on the cache.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/kernels.h"

namespace rwkvl {

class Storage;
class ThreadPool;

struct DeepEmbedCacheStats {
  uint64_t lookups = 0, hits = 0;  // one per token of each fetched chunk; hits: its rows were cached
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
  DeepEmbedCache(std::vector<Table> tables, std::shared_ptr<Storage> storage, int64_t slots,
                 const std::vector<int32_t>& pinned, ThreadPool* pool);
  // Makes the rows of tokens[0..T) resident, all layers of a token at once (tokens are checked: kInvalidArgument).
  // A chunk with more distinct unpinned tokens than LRU slots: its last tokens that fit are fetched, the others are
  // left to row(), so a use of a token never reads more than its row of each layer.
  void fetch(const int32_t* tokens, size_t T);
  // Layer l's row of `token` as float32 (R*R values); a token fetch() did not cache is read here, that layer's row
  // only. Not thread-safe (one cache per session).
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
  void read_rows(int32_t token, uint8_t* dst, int l_only);
  int32_t take_slot();
  void unlink(int32_t s);
  void push_front(int32_t s);
  std::vector<Table> tables_;
  std::vector<size_t> row_bytes_, row_offset_;  // per layer: bytes of a row, offset of its row in a slot
  std::shared_ptr<Storage> storage_;
  ThreadPool* pool_ = nullptr;
  size_t slot_bytes_ = 0;
  int64_t n_slots_ = 0, n_pinned_ = 0, used_ = 0;
  std::vector<uint8_t> slab_, filled_;  // filled_: a pinned slot's rows have been read
  std::vector<int32_t> slot_of_token_, token_of_slot_, prev_, next_;
  int32_t head_ = -1, tail_ = -1;  // most / least recently used of the unpinned slots
  std::vector<uint8_t> reread_;    // one slot's rows read again (see row())
  std::vector<uint8_t> mark_;      // fetch(): per token, 1 = fetched, 2 = left to row() (a chunk wider than the cache)
  DeepEmbedCacheStats stats_;
};

}  // namespace rwkvl
