// The embedding table on storage: rows are read on demand (pread through runtime/storage.h) into an
// LRU cache of a fixed number of rows, so the (V x C) table is never resident. Rows are kept in their
// stored dtype (f32 / f16 / bf16 / i8 / q4) and converted when used; int8 row scales stay in memory
// (one scale per token). A cache hit or miss gives exactly the bytes the table holds, so outputs never
// depend on the cache size.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/kernels.h"

namespace rwkvl {

class Storage;

struct EmbCacheStats {
  uint64_t lookups = 0, hits = 0, bytes_read = 0;
  double hit_rate() const { return lookups ? static_cast<double>(hits) / static_cast<double>(lookups) : 0.0; }
};

class EmbCache {
 public:
  // emb: the table as bound (its data pointer is only used when storage is null: then rows are copied
  // from memory, for models that are not memory-mapped native files). file_offset: byte offset of row 0
  // in the storage's file. rows >= 1 (kInvalidArgument otherwise); capped at the vocabulary.
  EmbCache(const kern::MatRef& emb, std::shared_ptr<Storage> storage, uint64_t file_offset, int64_t rows);
  // The row of `token` as float32 (C values). Not thread-safe (one cache per context).
  void get(int32_t token, float* out);
  int64_t capacity() const { return n_slots_; }
  size_t bytes() const;  // resident bytes of the cache (slots + index)
  const EmbCacheStats& stats() const { return stats_; }
  void reset_stats() { stats_ = EmbCacheStats{}; }

 private:
  void unlink(int32_t s);
  void push_front(int32_t s);
  kern::MatRef emb_;
  std::shared_ptr<Storage> storage_;
  uint64_t offset_ = 0;
  size_t row_bytes_ = 0;
  int64_t n_slots_ = 0, used_ = 0;
  std::vector<uint8_t> slab_;
  std::vector<int32_t> slot_of_token_, token_of_slot_, prev_, next_;
  int32_t head_ = -1, tail_ = -1;  // most / least recently used
  EmbCacheStats stats_;
};

}  // namespace rwkvl
