#include "runtime/deep_embed_cache.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "runtime/storage.h"

namespace rwkvl {

uint64_t DeepEmbedCache::bytes_for(int64_t slots, uint64_t row_bytes, int64_t V) {
  // per slot: the rows, its token, its LRU links and its pinned flag; per vocabulary entry: its slot and a mark
  return static_cast<uint64_t>(std::max<int64_t>(0, slots)) * (row_bytes + 13) + static_cast<uint64_t>(V) * 5 +
         row_bytes;
}

DeepEmbedCache::DeepEmbedCache(std::vector<Table> tables, std::shared_ptr<Storage> storage, int64_t slots,
                               const std::vector<int32_t>& pinned, int readers)
    : tables_(std::move(tables)), storage_(std::move(storage)) {
  if (slots < 1)
    RWKVL_FAIL(kInvalidArgument, "the DeepEmbed row cache needs at least 1 token slot (--de-cache), got %lld",
               static_cast<long long>(slots));
  if (tables_.empty()) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: no tables");
  const int64_t V = tables_[0].ref.rows;
  if (V <= 0 || V > (int64_t{1} << 31) - 1) RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: bad table shape");
  for (size_t l = 0; l < tables_.size(); ++l) {
    const Table& t = tables_[l];
    if (t.ref.rows != V || t.ref.cols <= 0)
      RWKVL_FAIL(kInvalidArgument, "DeepEmbedCache: the layers' tables differ in rows");
    const size_t rb = static_cast<size_t>(kern::mat_row_bytes(t.ref));
    if (storage_ &&
        (t.file_offset > storage_->size() || rb * static_cast<uint64_t>(V) > storage_->size() - t.file_offset))
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
  state_.assign(static_cast<size_t>(n_slots_) * tables_.size(), kReady);
  if (storage_)
    for (int i = 0; i < std::clamp(readers, 0, 16); ++i) readers_.emplace_back([this] { reader(); });
}

DeepEmbedCache::~DeepEmbedCache() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : readers_) t.join();
}

// A background reader: takes the queued rows in order (layer by layer: the first layers' rows come first) and reads
// each into its slot, outside the lock; row() waits for the rows it needs.
void DeepEmbedCache::reader() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [this] { return stop_ || next_job_ < jobs_.size(); });
    if (stop_) return;
    const Job j = jobs_[next_job_++];
    lk.unlock();
    uint8_t st = kReady;
    std::string err;
    try {
      read_row(j.token, static_cast<size_t>(j.layer), slab_.data() + static_cast<size_t>(j.slot) * slot_bytes_);
    } catch (const std::exception& e) {
      st = kFailed;
      err = e.what();
    }
    lk.lock();
    state_[static_cast<size_t>(j.slot) * tables_.size() + static_cast<size_t>(j.layer)] = st;
    if (st == kFailed && error_.empty()) error_ = err;
    if (--pending_ == 0) {
      jobs_.clear();
      next_job_ = 0;
    }
    done_cv_.notify_all();
  }
}

// Waits until no read is queued or running. Slots whose read failed lose their token (the next use reads it again);
// the first failure's message is returned ("" when none).
std::string DeepEmbedCache::drain() {
  if (readers_.empty()) return "";
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [this] { return pending_ == 0; });
  std::string err;
  err.swap(error_);
  if (err.empty()) return err;
  const size_t L = tables_.size();
  for (int64_t s = 0; s < n_slots_; ++s) {
    bool failed = false;
    for (size_t l = 0; l < L; ++l) failed = failed || state_[static_cast<size_t>(s) * L + l] == kFailed;
    if (!failed) continue;
    for (size_t l = 0; l < L; ++l) state_[static_cast<size_t>(s) * L + l] = kReady;
    if (s < n_pinned_) {
      filled_[static_cast<size_t>(s)] = 0;  // read again when next used
      continue;
    }
    const int32_t t = token_of_slot_[static_cast<size_t>(s)];
    if (t >= 0) slot_of_token_[static_cast<size_t>(t)] = -1;
    token_of_slot_[static_cast<size_t>(s)] = -1;  // stays in the LRU list, holding nothing: taken again in turn
  }
  return err;
}

size_t DeepEmbedCache::bytes() const {
  return slab_.size() + reread_.size() + filled_.size() + mark_.size() +
         4 * (slot_of_token_.size() + token_of_slot_.size() + prev_.size() + next_.size());
}

void DeepEmbedCache::unlink(int32_t s) {
  const int32_t p = prev_[static_cast<size_t>(s)], n = next_[static_cast<size_t>(s)];
  if (p >= 0) next_[static_cast<size_t>(p)] = n;
  else head_ = n;
  if (n >= 0) prev_[static_cast<size_t>(n)] = p;
  else tail_ = p;
  prev_[static_cast<size_t>(s)] = next_[static_cast<size_t>(s)] = -1;
}

void DeepEmbedCache::push_front(int32_t s) {
  prev_[static_cast<size_t>(s)] = -1;
  next_[static_cast<size_t>(s)] = head_;
  if (head_ >= 0) prev_[static_cast<size_t>(head_)] = s;
  head_ = s;
  if (tail_ < 0) tail_ = s;
}

void DeepEmbedCache::read_row(int32_t token, size_t l, uint8_t* slot) {
  const uint64_t off = static_cast<uint64_t>(token) * row_bytes_[l];
  if (storage_) storage_->read(tables_[l].file_offset + off, slot + row_offset_[l], row_bytes_[l]);
  else std::memcpy(slot + row_offset_[l], static_cast<const uint8_t*>(tables_[l].ref.data) + off, row_bytes_[l]);
}

// The rows of every layer of the chunk's missed tokens (slot, token pairs): queued for the readers layer by layer, or
// read here without readers.
void DeepEmbedCache::read_missed() {
  const size_t L = tables_.size();
  uint64_t slot_read = 0;
  for (size_t rb : row_bytes_) slot_read += rb;
  stats_.rows_read += L * missed_.size();
  stats_.bytes_read += slot_read * missed_.size();
  if (readers_.empty()) {
    for (const Job& m : missed_)
      for (size_t l = 0; l < L; ++l) read_row(m.token, l, slab_.data() + static_cast<size_t>(m.slot) * slot_bytes_);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t l = 0; l < L; ++l)
      for (const Job& m : missed_) {
        jobs_.push_back(Job{m.token, m.slot, static_cast<int32_t>(l)});
        state_[static_cast<size_t>(m.slot) * L + l] = kPending;
      }
    pending_ += L * missed_.size();
  }
  work_cv_.notify_all();
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
  drain();  // the last chunk's reads (a failed one's slot is emptied: read again below if needed)
  // More distinct unpinned tokens than LRU slots: the last ones that fit are fetched; the others are neither read nor
  // moved here (row() reads their rows layer by layer), so no token's rows are read twice for one use.
  const int64_t lru = n_slots_ - n_pinned_;
  const bool wide = static_cast<int64_t>(T) > lru;
  if (wide) {
    int64_t distinct = 0;
    for (size_t i = T; i-- > 0;) {
      const int32_t s = slot_of_token_[static_cast<size_t>(tokens[i])];
      uint8_t& m = mark_[static_cast<size_t>(tokens[i])];
      if ((s >= 0 && s < n_pinned_) || m) continue;
      m = ++distinct > lru ? 2 : 1;
    }
  }
  missed_.clear();
  for (size_t i = 0; i < T; ++i) {
    const int32_t token = tokens[i];
    ++stats_.lookups;
    int32_t s = slot_of_token_[static_cast<size_t>(token)];
    if (s >= 0 && s < n_pinned_) {  // pinned: read once, when first used
      if (filled_[static_cast<size_t>(s)]) {
        ++stats_.hits;
      } else {
        filled_[static_cast<size_t>(s)] = 1;
        missed_.push_back(Job{token, s, 0});
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
    token_of_slot_[static_cast<size_t>(s)] = token;
    slot_of_token_[static_cast<size_t>(token)] = s;
    push_front(s);
    missed_.push_back(Job{token, s, 0});
  }
  if (wide)
    for (size_t i = 0; i < T; ++i) mark_[static_cast<size_t>(tokens[i])] = 0;
  try {
    read_missed();
  } catch (...) {  // (without readers) the slots of this chunk's misses hold nothing: forget their tokens
    for (const Job& m : missed_) {
      if (m.slot < n_pinned_) {
        filled_[static_cast<size_t>(m.slot)] = 0;
        continue;
      }
      slot_of_token_[static_cast<size_t>(m.token)] = -1;
      token_of_slot_[static_cast<size_t>(m.slot)] = -1;
    }
    throw;
  }
}

// With readers: waits until layer l's row of slot s has been read; kIo when its read failed.
void DeepEmbedCache::wait_row(int32_t s, int l, int32_t token) {
  std::unique_lock<std::mutex> lk(mu_);
  const size_t i = static_cast<size_t>(s) * tables_.size() + static_cast<size_t>(l);
  done_cv_.wait(lk, [&] { return state_[i] != kPending; });
  if (state_[i] == kFailed)
    RWKVL_FAIL(kIo, "reading layer %d's DeepEmbed row of token %d failed: %s", l, token, error_.c_str());
}

void DeepEmbedCache::row(int l, int32_t token, float* out) {
  const Table& t = tables_.at(static_cast<size_t>(l));
  if (token < 0 || token >= t.ref.rows)
    RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %lld)", token, static_cast<long long>(t.ref.rows));
  const int32_t s = slot_of_token_[static_cast<size_t>(token)];
  const uint8_t* src;
  if (s >= 0 && (s >= n_pinned_ || filled_[static_cast<size_t>(s)])) {
    if (!readers_.empty()) wait_row(s, l, token);
    src = slab_.data() + static_cast<size_t>(s) * slot_bytes_ + row_offset_[static_cast<size_t>(l)];
  } else {
    read_row(token, static_cast<size_t>(l), reread_.data());
    ++stats_.rows_read;
    stats_.bytes_read += row_bytes_[static_cast<size_t>(l)];
    ++stats_.rereads;
    src = reread_.data() + row_offset_[static_cast<size_t>(l)];
  }
  kern::MatRef one = t.ref;
  one.rows = 1;
  one.data = src;
  if (t.ref.row_scale)
    one.row_scale = static_cast<const uint8_t*>(t.ref.row_scale) +
                    static_cast<size_t>(token) * (t.ref.scale_dtype == DType::kF16 ? 2 : 4);
  kern::get_row(one, 0, out);
}

}  // namespace rwkvl
