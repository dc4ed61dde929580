#include "runtime/deep_embed_cache.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/threadpool.h"
#include "runtime/storage.h"

namespace rwkvl {

uint64_t DeepEmbedCache::bytes_for(int64_t slots, uint64_t row_bytes, int64_t V) {
  // per slot: the rows, its token, its LRU links and its pinned flag; per vocabulary entry: its slot and a mark
  return static_cast<uint64_t>(std::max<int64_t>(0, slots)) * (row_bytes + 13) + static_cast<uint64_t>(V) * 5 + row_bytes;
}

DeepEmbedCache::DeepEmbedCache(std::vector<Table> tables, std::shared_ptr<Storage> storage, int64_t slots,
                               const std::vector<int32_t>& pinned, ThreadPool* pool)
    : tables_(std::move(tables)), storage_(std::move(storage)), pool_(pool) {
  if (slots < 1)
    RWKVL_FAIL(kInvalidArgument, "the DeepEmbed row cache needs at least 1 token slot (--de-cache), got %lld", static_cast<long long>(slots));
  if (tables_.empty()) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: no tables");
  const int64_t V = tables_[0].ref.rows;
  if (V <= 0 || V > (int64_t{1} << 31) - 1) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: bad table shape");
  for (size_t l = 0; l < tables_.size(); ++l) {
    const Table& t = tables_[l];
    if (t.ref.rows != V || t.ref.cols <= 0) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: the layers' tables differ in rows");
    const size_t rb = static_cast<size_t>(kern::mat_row_bytes(t.ref));
    if (storage_ && (t.file_offset > storage_->size() || rb * static_cast<uint64_t>(V) > storage_->size() - t.file_offset))
      RWKVL_FAIL(kFormat, "layer %zu's DeepEmbed table lies outside '%s'", l, storage_->path().c_str());
    if (!storage_ && !t.ref.data) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: layer %zu's table has no data", l);
    row_offset_.push_back(slot_bytes_);
    row_bytes_.push_back(rb);
    slot_bytes_ += (rb + 63) / 64 * 64;  // each row 64-byte aligned in its slot
  }
  n_slots_ = std::min(slots, V);
  slab_.assign(static_cast<size_t>(n_slots_) * slot_bytes_, 0);
  reread_.assign(slot_bytes_, 0);
  filled_.assign(static_cast<size_t>(n_slots_), 0);
  slot_of_token_.assign(static_cast<size_t>(V), -1);
  mark_.assign(static_cast<size_t>(V), 0);
  token_of_slot_.assign(static_cast<size_t>(n_slots_), -1);
  prev_.assign(static_cast<size_t>(n_slots_), -1);
  next_.assign(static_cast<size_t>(n_slots_), -1);
  // The pinned slots come first and never join the LRU list; they are filled on first use.
  const int64_t most = n_slots_ / 2;
  for (int32_t t : pinned) {
    if (n_pinned_ >= most) break;
    if (t < 0 || t >= V || slot_of_token_[static_cast<size_t>(t)] >= 0) continue;
    slot_of_token_[static_cast<size_t>(t)] = static_cast<int32_t>(n_pinned_);
    token_of_slot_[static_cast<size_t>(n_pinned_)] = t;
    ++n_pinned_;
  }
  used_ = n_pinned_;
}

size_t DeepEmbedCache::bytes() const {
  return slab_.size() + reread_.size() + filled_.size() + mark_.size() +
         4 * (slot_of_token_.size() + token_of_slot_.size() + prev_.size() + next_.size());
}

void DeepEmbedCache::unlink(int32_t s) {
  const int32_t p = prev_[static_cast<size_t>(s)], n = next_[static_cast<size_t>(s)];
  if (p >= 0) next_[static_cast<size_t>(p)] = n; else head_ = n;
  if (n >= 0) prev_[static_cast<size_t>(n)] = p; else tail_ = p;
  prev_[static_cast<size_t>(s)] = next_[static_cast<size_t>(s)] = -1;
}

void DeepEmbedCache::push_front(int32_t s) {
  prev_[static_cast<size_t>(s)] = -1;
  next_[static_cast<size_t>(s)] = head_;
  if (head_ >= 0) prev_[static_cast<size_t>(head_)] = s;
  head_ = s;
  if (tail_ < 0) tail_ = s;
}

// Reads `token`'s row of every layer (l_only < 0) or of layer l_only into a slot-shaped buffer. With a throttled
// device and several threads the layers' reads are issued from all threads at once (the device overlaps their
// access times up to its queue); page-cache reads of a few KB cost less than a fork and a join.
void DeepEmbedCache::read_rows(int32_t token, uint8_t* dst, int l_only) {
  auto one = [&](size_t l) {
    const uint64_t off = static_cast<uint64_t>(token) * row_bytes_[l];
    if (storage_) storage_->read(tables_[l].file_offset + off, dst + row_offset_[l], row_bytes_[l]);
    else std::memcpy(dst + row_offset_[l], static_cast<const uint8_t*>(tables_[l].ref.data) + off, row_bytes_[l]);
  };
  if (l_only >= 0) {
    one(static_cast<size_t>(l_only));
    ++stats_.rows_read;
    stats_.bytes_read += row_bytes_[static_cast<size_t>(l_only)];
    return;
  }
  const int64_t L = static_cast<int64_t>(tables_.size());
  if (storage_ && storage_->options().mb_per_s > 0 && pool_ && pool_->size() > 1 && L > 1) {
    pool_->parallel_for(L, [&](int64_t b, int64_t e) {
      for (int64_t l = b; l < e; ++l) one(static_cast<size_t>(l));
    });
  } else {
    for (size_t l = 0; l < tables_.size(); ++l) one(l);
  }
  stats_.rows_read += static_cast<uint64_t>(L);
  for (size_t rb : row_bytes_) stats_.bytes_read += rb;
}

// An unpinned slot for a new token: a never used one, else the least recently used (its token forgotten).
int32_t DeepEmbedCache::take_slot() {
  int32_t s;
  if (used_ < n_slots_) {
    s = static_cast<int32_t>(used_++);
  } else {
    s = tail_;
    unlink(s);
    const int32_t old = token_of_slot_[static_cast<size_t>(s)];
    if (old >= 0) slot_of_token_[static_cast<size_t>(old)] = -1;
    token_of_slot_[static_cast<size_t>(s)] = -1;
  }
  return s;
}

void DeepEmbedCache::fetch(const int32_t* tokens, size_t T) {
  const int64_t V = tables_[0].ref.rows;
  for (size_t i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %lld)", tokens[i], static_cast<long long>(V));
  // More distinct unpinned tokens than LRU slots: the last ones that fit are fetched; the others are neither read nor
  // moved here (row() reads their rows layer by layer), so no token's rows are read twice for one use.
  const int64_t lru = n_slots_ - n_pinned_;
  if (static_cast<int64_t>(T) > lru) {
    int64_t distinct = 0;
    for (size_t i = T; i-- > 0;) {
      const int32_t s = slot_of_token_[static_cast<size_t>(tokens[i])];
      uint8_t& m = mark_[static_cast<size_t>(tokens[i])];
      if ((s >= 0 && s < n_pinned_) || m) continue;
      m = ++distinct > lru ? 2 : 1;
    }
  }
  for (size_t i = 0; i < T; ++i) {
    const int32_t token = tokens[i];
    ++stats_.lookups;
    int32_t s = slot_of_token_[static_cast<size_t>(token)];
    if (s >= 0 && s < n_pinned_) {  // pinned: read once, when first used
      if (filled_[static_cast<size_t>(s)]) {
        ++stats_.hits;
      } else {
        read_rows(token, slab_.data() + static_cast<size_t>(s) * slot_bytes_, -1);
        filled_[static_cast<size_t>(s)] = 1;
      }
      continue;
    }
    if (mark_[static_cast<size_t>(token)] == 2) {  // left to row()
      stats_.hits += s >= 0;
      continue;
    }
    if (s >= 0) {
      ++stats_.hits;
      if (s != head_) {
        unlink(s);
        push_front(s);
      }
      continue;
    }
    s = take_slot();
    try {
      read_rows(token, slab_.data() + static_cast<size_t>(s) * slot_bytes_, -1);
    } catch (...) {
      // The slot holds nothing now: link it as the least recently used, to be taken first.
      prev_[static_cast<size_t>(s)] = tail_;
      next_[static_cast<size_t>(s)] = -1;
      if (tail_ >= 0) next_[static_cast<size_t>(tail_)] = s; else head_ = s;
      tail_ = s;
      for (size_t j = 0; j < T; ++j) mark_[static_cast<size_t>(tokens[j])] = 0;
      throw;
    }
    token_of_slot_[static_cast<size_t>(s)] = token;
    slot_of_token_[static_cast<size_t>(token)] = s;
    push_front(s);
  }
  if (static_cast<int64_t>(T) > lru)
    for (size_t i = 0; i < T; ++i) mark_[static_cast<size_t>(tokens[i])] = 0;
}

void DeepEmbedCache::row(int l, int32_t token, float* out) {
  const Table& t = tables_.at(static_cast<size_t>(l));
  if (token < 0 || token >= t.ref.rows)
    RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %lld)", token, static_cast<long long>(t.ref.rows));
  const int32_t s = slot_of_token_[static_cast<size_t>(token)];
  const uint8_t* src;
  if (s >= 0 && (s >= n_pinned_ || filled_[static_cast<size_t>(s)])) {
    src = slab_.data() + static_cast<size_t>(s) * slot_bytes_ + row_offset_[static_cast<size_t>(l)];
  } else {
    read_rows(token, reread_.data(), l);
    ++stats_.rereads;
    src = reread_.data() + row_offset_[static_cast<size_t>(l)];
  }
  kern::MatRef one = t.ref;
  one.rows = 1;
  one.data = src;
  if (t.ref.row_scale)
    one.row_scale = static_cast<const uint8_t*>(t.ref.row_scale) + static_cast<size_t>(token) * (t.ref.scale_dtype == DType::kF16 ? 2 : 4);
  kern::get_row(one, 0, out);
}

}  // namespace rwkvl
