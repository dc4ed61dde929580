#include "runtime/prefix_cache.h"

#include <algorithm>
#include <cstring>

namespace rwkvl {

namespace {

uint64_t mix(uint64_t h, int32_t token) {
  uint64_t x = h ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) + 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr uint64_t kSeed = 0x243f6a8885a308d3ull;
constexpr uint64_t kOverhead = 160;  // list node, hash-map node, vector headers

}  // namespace

std::vector<uint64_t> prefix_hashes(const int32_t* tokens, size_t n) {
  std::vector<uint64_t> h(n + 1);
  h[0] = kSeed;
  for (size_t i = 0; i < n; ++i) h[i + 1] = mix(h[i], tokens[i]);
  return h;
}

PrefixCache::PrefixCache(uint64_t capacity_bytes) : capacity_(capacity_bytes) { st_.capacity = capacity_bytes; }

uint64_t PrefixCache::entry_bytes(size_t n, size_t floats) {
  return kOverhead + static_cast<uint64_t>(n) * sizeof(int32_t) + static_cast<uint64_t>(floats) * sizeof(float);
}

size_t PrefixCache::lookup(const int32_t* tokens, size_t n, size_t max_len, std::vector<float>& state) {
  max_len = std::min(max_len, n);
  const std::vector<uint64_t> hs = prefix_hashes(tokens, max_len);  // outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  ++st_.lookups;
  if (lengths_.empty() || max_len == 0) {
    ++st_.misses;
    return 0;
  }
  // Only the prefix lengths some entry has are tried, longest first.
  for (auto it = lengths_.upper_bound(max_len); it != lengths_.begin();) {
    --it;
    const size_t len = it->first;
    auto [a, b] = by_hash_.equal_range(hs[len]);
    for (; a != b; ++a) {
      Entry& e = *a->second;
      if (e.tokens.size() != len || !std::equal(e.tokens.begin(), e.tokens.end(), tokens)) continue;
      state = e.state;
      lru_.splice(lru_.begin(), lru_, a->second);
      ++st_.hits;
      st_.hit_tokens += len;
      return len;
    }
  }
  ++st_.misses;
  return 0;
}

void PrefixCache::insert(const int32_t* tokens, size_t n, const std::vector<float>& state) {
  if (n == 0) return;
  const uint64_t bytes = entry_bytes(n, state.size());
  if (bytes > capacity_) return;
  const uint64_t h = prefix_hashes(tokens, n)[n];
  std::lock_guard<std::mutex> lock(mu_);
  auto [a, b] = by_hash_.equal_range(h);
  for (; a != b; ++a) {
    Entry& e = *a->second;
    if (e.tokens.size() == n && std::equal(e.tokens.begin(), e.tokens.end(), tokens)) {
      lru_.splice(lru_.begin(), lru_, a->second);
      return;
    }
  }
  evict_to(capacity_ - bytes);
  lru_.push_front(Entry{h, std::vector<int32_t>(tokens, tokens + n), state});
  by_hash_.emplace(h, lru_.begin());
  ++lengths_[n];
  ++st_.inserts;
  ++st_.entries;
  st_.bytes += bytes;
}

void PrefixCache::erase(List::iterator it) {
  auto [a, b] = by_hash_.equal_range(it->hash);
  for (; a != b; ++a)
    if (a->second == it) {
      by_hash_.erase(a);
      break;
    }
  const size_t len = it->tokens.size();
  if (--lengths_[len] == 0) lengths_.erase(len);
  st_.bytes -= entry_bytes(len, it->state.size());
  --st_.entries;
  lru_.erase(it);
}

void PrefixCache::evict_to(uint64_t bytes) {
  while (st_.bytes > bytes && !lru_.empty()) {
    erase(std::prev(lru_.end()));
    ++st_.evictions;
  }
}

void PrefixCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  lru_.clear();
  by_hash_.clear();
  lengths_.clear();
  st_.entries = 0;
  st_.bytes = 0;
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return st_;
}

}  // namespace rwkvl
