// A cache of recurrent states keyed by the exact token prefix that produced them (from the initial state).
// RWKV's whole context is its state, so a request whose prompt starts with a cached prefix (a system prompt,
// a document, a conversation so far) resumes from that state and processes only the rest. Entries are
// evicted least recently used first when their bytes (state values + key tokens + bookkeeping) exceed the
// capacity. Thread-safe: the server's slots share one cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace rwkvl {

struct PrefixCacheStats {
  uint64_t lookups = 0, hits = 0, misses = 0;  // a hit is a lookup that found any prefix
  uint64_t hit_tokens = 0;                      // tokens not processed thanks to hits
  uint64_t inserts = 0, evictions = 0;
  uint64_t entries = 0, bytes = 0, capacity = 0;
};

class PrefixCache {
 public:
  explicit PrefixCache(uint64_t capacity_bytes);

  // The longest cached prefix of tokens[0..n) no longer than max_len: copies its state into `state` (resized)
  // and returns its length; 0 (state untouched) when none is cached.
  size_t lookup(const int32_t* tokens, size_t n, size_t max_len, std::vector<float>& state);
  // Stores the state after tokens[0..n) (n > 0). An entry larger than the capacity is not stored; an existing
  // entry for the same prefix is refreshed.
  void insert(const int32_t* tokens, size_t n, const std::vector<float>& state);
  void clear();
  PrefixCacheStats stats() const;
  uint64_t capacity() const { return capacity_; }
  // Bytes an entry of n tokens and `floats` state values occupies.
  static uint64_t entry_bytes(size_t n, size_t floats);

 private:
  struct Entry {
    uint64_t hash;
    std::vector<int32_t> tokens;
    std::vector<float> state;
  };
  using List = std::list<Entry>;
  void evict_to(uint64_t bytes);  // mu_ held
  void erase(List::iterator it);  // mu_ held

  uint64_t capacity_;
  mutable std::mutex mu_;
  List lru_;  // most recently used first
  std::unordered_multimap<uint64_t, List::iterator> by_hash_;
  std::map<size_t, size_t> lengths_;  // prefix length -> entries of that length
  PrefixCacheStats st_;
};

// The rolling hash of the prefixes: h[0] = seed, h[i+1] = mix(h[i], tokens[i]).
std::vector<uint64_t> prefix_hashes(const int32_t* tokens, size_t n);

}  // namespace rwkvl
