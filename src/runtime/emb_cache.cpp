#include "runtime/emb_cache.h"

#include <algorithm>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "runtime/storage.h"

namespace rwkvl {

EmbCache::EmbCache(const kern::MatRef& emb, std::shared_ptr<Storage> storage, uint64_t file_offset, int64_t rows)
    : emb_(emb), storage_(std::move(storage)), offset_(file_offset) {
  if (rows < 1) RWKVL_FAIL(kInvalidArgument, "the embedding cache needs at least 1 row (--emb-cache), got %lld", static_cast<long long>(rows));
  if (emb.rows <= 0 || emb.cols <= 0 || emb.rows > (int64_t{1} << 31) - 1) RWKVL_FAIL(kInvalidArgument, "EmbCache: bad table shape");
  row_bytes_ = static_cast<size_t>(kern::row_bytes(emb.dtype, emb.cols));
  if (storage_ && (offset_ > storage_->size() || row_bytes_ * static_cast<uint64_t>(emb.rows) > storage_->size() - offset_))
    RWKVL_FAIL(kFormat, "the embedding table lies outside '%s'", storage_->path().c_str());
  n_slots_ = std::min(rows, emb.rows);
  slab_.assign(static_cast<size_t>(n_slots_) * row_bytes_, 0);
  slot_of_token_.assign(static_cast<size_t>(emb.rows), -1);
  token_of_slot_.assign(static_cast<size_t>(n_slots_), -1);
  prev_.assign(static_cast<size_t>(n_slots_), -1);
  next_.assign(static_cast<size_t>(n_slots_), -1);
}

size_t EmbCache::bytes() const {
  return slab_.size() + 4 * (slot_of_token_.size() + token_of_slot_.size() + prev_.size() + next_.size());
}

void EmbCache::unlink(int32_t s) {
  const int32_t p = prev_[static_cast<size_t>(s)], n = next_[static_cast<size_t>(s)];
  if (p >= 0) next_[static_cast<size_t>(p)] = n; else head_ = n;
  if (n >= 0) prev_[static_cast<size_t>(n)] = p; else tail_ = p;
  prev_[static_cast<size_t>(s)] = next_[static_cast<size_t>(s)] = -1;
}

void EmbCache::push_front(int32_t s) {
  prev_[static_cast<size_t>(s)] = -1;
  next_[static_cast<size_t>(s)] = head_;
  if (head_ >= 0) prev_[static_cast<size_t>(head_)] = s;
  head_ = s;
  if (tail_ < 0) tail_ = s;
}

void EmbCache::get(int32_t token, float* out) {
  if (token < 0 || token >= emb_.rows)
    RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %lld)", token, static_cast<long long>(emb_.rows));
  ++stats_.lookups;
  int32_t s = slot_of_token_[static_cast<size_t>(token)];
  if (s >= 0) {
    ++stats_.hits;
    if (s != head_) {
      unlink(s);
      push_front(s);
    }
  } else {
    if (used_ < n_slots_) {
      s = static_cast<int32_t>(used_++);
    } else {
      s = tail_;
      unlink(s);
      const int32_t old = token_of_slot_[static_cast<size_t>(s)];
      if (old >= 0) slot_of_token_[static_cast<size_t>(old)] = -1;
    }
    uint8_t* dst = slab_.data() + static_cast<size_t>(s) * row_bytes_;
    const uint64_t off = static_cast<uint64_t>(token) * row_bytes_;
    try {
      if (storage_) storage_->read(offset_ + off, dst, row_bytes_);
      else std::memcpy(dst, static_cast<const uint8_t*>(emb_.data) + off, row_bytes_);
    } catch (...) {
      // The slot holds nothing now: link it as the least recently used, to be taken first.
      token_of_slot_[static_cast<size_t>(s)] = -1;
      prev_[static_cast<size_t>(s)] = tail_;
      next_[static_cast<size_t>(s)] = -1;
      if (tail_ >= 0) next_[static_cast<size_t>(tail_)] = s; else head_ = s;
      tail_ = s;
      throw;
    }
    stats_.bytes_read += row_bytes_;
    token_of_slot_[static_cast<size_t>(s)] = token;
    slot_of_token_[static_cast<size_t>(token)] = s;
    push_front(s);
  }
  kern::MatRef one = emb_;
  one.rows = 1;
  one.data = slab_.data() + static_cast<size_t>(s) * row_bytes_;
  if (emb_.dtype == DType::kI8)
    one.row_scale = static_cast<const uint8_t*>(emb_.row_scale) + static_cast<size_t>(token) * (emb_.scale_dtype == DType::kF16 ? 2 : 4);
  kern::get_row(one, 0, out);
}

}  // namespace rwkvl
