#include "runtime/neuron_cache.h"

#include "runtime/storage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace rwkvl {

namespace {

constexpr size_t kSlotAlign = 64;
constexpr size_t kSlabAlign = 4096;
constexpr int kMaxIov = 1024;          // Linux UIO_MAXIOV
constexpr size_t kPrefetchBatch = 64;  // neurons the prefetch thread reserves per lock round

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// preadv of the whole iovec list at `offset`, retrying on EINTR and continuing after short reads.
// Returns "" or an error message.
std::string read_run(int fd, const std::string& path, uint64_t offset, std::vector<iovec>& iov, uint64_t* n_preads) {
  size_t i = 0;
  while (i < iov.size()) {
    if (iov[i].iov_len == 0) {
      ++i;
      continue;
    }
    const int cnt = static_cast<int>(std::min<size_t>(iov.size() - i, kMaxIov));
    const ssize_t r = ::preadv(fd, &iov[i], cnt, static_cast<off_t>(offset));
    ++*n_preads;
    if (r < 0) {
      if (errno == EINTR) continue;
      return format("read of '%s' at offset %llu failed: %s", path.c_str(), static_cast<unsigned long long>(offset),
                    std::strerror(errno));
    }
    if (r == 0)
      return format("unexpected end of file reading '%s' at offset %llu (file truncated?)", path.c_str(),
                    static_cast<unsigned long long>(offset));
    offset += static_cast<uint64_t>(r);
    size_t left = static_cast<size_t>(r);
    while (left > 0) {
      if (left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        ++i;
      } else {
        iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
        iov[i].iov_len -= left;
        left = 0;
      }
    }
  }
  return "";
}

}  // namespace

uint64_t NeuronCache::min_capacity_bytes(size_t neuron_bytes, const std::vector<Layer>& layers) {
  // Saturates at UINT64_MAX instead of overflowing.
  using u128 = unsigned __int128;
  const u128 slot = (static_cast<u128>(neuron_bytes) + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
  uint64_t pinned = 0, largest = 0;
  for (const Layer& l : layers) {
    const int64_t n = std::max<int64_t>(l.n_neurons, 0);
    const int64_t p = std::clamp<int64_t>(l.n_pinned, 0, n);
    pinned += static_cast<uint64_t>(p);
    largest = std::max<uint64_t>(largest, static_cast<uint64_t>(n - p));
  }
  const u128 bytes = (static_cast<u128>(pinned) + largest) * slot;
  return bytes > std::numeric_limits<uint64_t>::max() ? std::numeric_limits<uint64_t>::max()
                                                      : static_cast<uint64_t>(bytes);
}

NeuronCache::NeuronCache(const std::string& path, size_t neuron_bytes, std::vector<Layer> layers, const Options& opt)
    : path_(path), neuron_bytes_(neuron_bytes), layers_(std::move(layers)), storage_(opt.storage) {
  if (neuron_bytes_ == 0 || neuron_bytes_ > (size_t{1} << 48))
    RWKVL_FAIL(kInvalidArgument, "NeuronCache: neuron size %zu out of range", neuron_bytes_);
  slot_bytes_ = (neuron_bytes_ + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
  if (layers_.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    RWKVL_FAIL(kInvalidArgument, "NeuronCache: too many layers (%zu)", layers_.size());
  int64_t total_neurons = 0, total_pinned = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    if (L.n_neurons < 0 || L.n_neurons > std::numeric_limits<int32_t>::max())
      RWKVL_FAIL(kInvalidArgument, "NeuronCache: layer %zu: neuron count %lld out of range", l,
                 static_cast<long long>(L.n_neurons));
    if (L.n_pinned < 0 || L.n_pinned > L.n_neurons)
      RWKVL_FAIL(kInvalidArgument, "NeuronCache: layer %zu: %lld pinned of %lld neurons", l,
                 static_cast<long long>(L.n_pinned), static_cast<long long>(L.n_neurons));
    layer_base_.push_back(total_neurons);
    total_neurons += L.n_neurons;
    total_pinned += L.n_pinned;
  }
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) RWKVL_FAIL(kIo, "NeuronCache: cannot open '%s': %s", path_.c_str(), std::strerror(errno));
  try {
    struct stat st {};
    if (fstat(fd_, &st) != 0) RWKVL_FAIL(kIo, "NeuronCache: cannot stat '%s': %s", path_.c_str(), std::strerror(errno));
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      const uint64_t n = static_cast<uint64_t>(L.n_neurons);
      const bool inside = L.file_offset <= file_size &&
                          (n == 0 || neuron_bytes_ <= (file_size - L.file_offset) / n);
      if (!inside)
        RWKVL_FAIL(kIo, "NeuronCache: layer %zu region [%llu, +%lld x %zu bytes) lies outside '%s' (%llu bytes)", l,
                   static_cast<unsigned long long>(L.file_offset), static_cast<long long>(L.n_neurons), neuron_bytes_,
                   path_.c_str(), static_cast<unsigned long long>(file_size));
    }
    const uint64_t min_cap = min_capacity_bytes(neuron_bytes_, layers_);
    if (opt.capacity_bytes < min_cap)
      RWKVL_FAIL(kInvalidArgument,
                 "NeuronCache: capacity of %llu bytes is too small; the minimum is %llu bytes (%lld pinned neurons + "
                 "the largest layer's %lld unpinned neurons, %zu bytes per slot)",
                 static_cast<unsigned long long>(opt.capacity_bytes), static_cast<unsigned long long>(min_cap),
                 static_cast<long long>(total_pinned), static_cast<long long>(min_cap / slot_bytes_ - total_pinned),
                 slot_bytes_);
    // More slots than neurons cannot be used: the capacity is bounded by what there is to cache (a request of
    // 10 GB on a 3 MB model gets the model's neurons, not 10 GB of slot records).
    n_slots_ = static_cast<int64_t>(std::min<uint64_t>(
        {opt.capacity_bytes / slot_bytes_, static_cast<uint64_t>(total_neurons),
         static_cast<uint64_t>(std::numeric_limits<int32_t>::max())}));
#ifdef POSIX_FADV_RANDOM
    (void)posix_fadvise(fd_, 0, 0, POSIX_FADV_RANDOM);
#endif

    slab_size_ = static_cast<size_t>(n_slots_) * slot_bytes_;
    if (slab_size_ > 0) {
      const size_t alloc = (slab_size_ + kSlabAlign - 1) / kSlabAlign * kSlabAlign;
      slab_ = static_cast<uint8_t*>(std::aligned_alloc(kSlabAlign, alloc));
      if (!slab_) RWKVL_FAIL(kOutOfMemory, "NeuronCache: cannot allocate %zu bytes", alloc);
    }
    slots_.resize(static_cast<size_t>(n_slots_));
    table_.assign(static_cast<size_t>(total_neurons), -1);

    // Pinned neurons: contiguous slots per layer, read once.
    int32_t next = 0;
    std::vector<ReadItem> items;
    uint64_t n_preads = 0;
    for (size_t l = 0; l < layers_.size(); ++l) {
      pinned_base_.push_back(next);
      items.clear();
      for (int32_t i = 0; i < static_cast<int32_t>(layers_[l].n_pinned); ++i) {
        Slot& sl = slots_[static_cast<size_t>(next)];
        sl.layer = static_cast<int32_t>(l);
        sl.id = i;
        sl.pinned = true;
        sl.state = kReady;
        table(static_cast<int>(l), i) = next;
        items.push_back({i, next});
        ++next;
      }
      const std::string err = read_items(static_cast<int>(l), items.data(), items.size(), &n_preads);
      if (!err.empty()) RWKVL_FAIL(kIo, "NeuronCache: loading pinned neurons: %s", err.c_str());
    }
    for (int32_t s = next; s < static_cast<int32_t>(n_slots_); ++s) lru_push_back(s);
    stats_.capacity_bytes = static_cast<uint64_t>(n_slots_) * slot_bytes_;
    stats_.pinned_bytes = static_cast<uint64_t>(total_pinned) * slot_bytes_;
    stats_.bytes_read = static_cast<uint64_t>(total_pinned) * neuron_bytes_;
    stats_.preads = n_preads;
    test_delay_us_ = opt.test_prefetch_delay_us;
    if (opt.prefetch_thread) thread_ = std::thread([this] { prefetch_main(); });
  } catch (...) {
    cleanup();
    throw;
  }
}

void NeuronCache::cleanup() {
  std::free(slab_);
  slab_ = nullptr;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

NeuronCache::~NeuronCache() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  cleanup();
}

// ---- LRU list (head = next victim) ----

void NeuronCache::lru_remove(int32_t s) {
  Slot& sl = slots_[static_cast<size_t>(s)];
  RWKVL_CHECK(sl.in_lru);
  if (sl.prev >= 0) slots_[static_cast<size_t>(sl.prev)].next = sl.next; else lru_head_ = sl.next;
  if (sl.next >= 0) slots_[static_cast<size_t>(sl.next)].prev = sl.prev; else lru_tail_ = sl.prev;
  sl.prev = sl.next = -1;
  sl.in_lru = false;
}

void NeuronCache::lru_push_back(int32_t s) {
  Slot& sl = slots_[static_cast<size_t>(s)];
  RWKVL_CHECK(!sl.in_lru && !sl.pinned && !sl.acquired);
  sl.prev = lru_tail_;
  sl.next = -1;
  if (lru_tail_ >= 0) slots_[static_cast<size_t>(lru_tail_)].next = s; else lru_head_ = s;
  lru_tail_ = s;
  sl.in_lru = true;
}

void NeuronCache::lru_push_front(int32_t s) {
  Slot& sl = slots_[static_cast<size_t>(s)];
  RWKVL_CHECK(!sl.in_lru && !sl.pinned && !sl.acquired);
  sl.prev = -1;
  sl.next = lru_head_;
  if (lru_head_ >= 0) slots_[static_cast<size_t>(lru_head_)].prev = s; else lru_tail_ = s;
  lru_head_ = s;
  sl.in_lru = true;
}

void NeuronCache::evict(int32_t s) {
  lru_remove(s);
  Slot& sl = slots_[static_cast<size_t>(s)];
  if (sl.state == kReady) {
    table(sl.layer, sl.id) = -1;
    ++stats_.evictions;
  }
  RWKVL_CHECK(sl.state == kReady || sl.state == kEmpty);
  sl.state = kEmpty;
  sl.layer = sl.id = -1;
  sl.prefetched = false;
  sl.hint_seq = 0;
}

void NeuronCache::release_locked() {
  for (int32_t s : acquired_slots_) {
    Slot& sl = slots_[static_cast<size_t>(s)];
    sl.acquired = false;
    switch (sl.state) {
      case kReady: lru_push_back(s); break;
      case kFailed:
        table(sl.layer, sl.id) = -1;
        sl.state = kEmpty;
        sl.layer = sl.id = -1;
        sl.prefetched = false;
        sl.hint_seq = 0;
        lru_push_front(s);
        break;
      case kEmpty: lru_push_front(s); break;
      case kLoadingPrefetch: break;  // the prefetch thread puts it in the LRU when the read completes
      case kLoadingSync: RWKVL_CHECK(false);
    }
  }
  acquired_slots_.clear();
  acquired_layer_ = -1;
}

void NeuronCache::check_ids(const char* what, int layer, const int32_t* ids, int64_t n) const {
  if (layer < 0 || static_cast<size_t>(layer) >= layers_.size())
    RWKVL_FAIL(kInvalidArgument, "NeuronCache::%s: layer %d out of range [0, %zu)", what, layer, layers_.size());
  if (n < 0 || (n > 0 && !ids)) RWKVL_FAIL(kInvalidArgument, "NeuronCache::%s: bad id list (n=%lld)", what, static_cast<long long>(n));
  const int64_t f = layers_[static_cast<size_t>(layer)].n_neurons;
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= f)
      RWKVL_FAIL(kInvalidArgument, "NeuronCache::%s: layer %d: neuron id %d out of range [0, %lld)", what, layer, ids[i],
                 static_cast<long long>(f));
}

size_t NeuronCache::gap_neurons_for(const StorageOptions* device, size_t neuron_bytes) {
  double bytes = 4096;
  if (device && device->mb_per_s > 0) bytes = device->latency_us * 1e-6 * device->mb_per_s * 1e6;
  return static_cast<size_t>(std::clamp(bytes / static_cast<double>(std::max<size_t>(1, neuron_bytes)), 0.0, 4096.0));
}

size_t NeuronCache::gap_neurons() const {
  return gap_neurons_for(storage_ ? &storage_->options() : nullptr, neuron_bytes_);
}

void NeuronCache::expected_miss_reads(double misses, double n_neurons, size_t gap, size_t neuron_bytes, double* reads,
                                      double* bytes) {
  *reads = *bytes = 0;
  if (misses <= 0 || n_neurons <= 0) return;
  const double d = std::min(1.0, misses / n_neurons);  // P(a neuron is a miss)
  // The gap k >= 0 before a miss is geometric: P(k) = d (1 - d)^k. A gap <= gap is spanned (its neurons read too),
  // a longer one starts a new read.
  double spanned = 0, p_span = 0, q = 1;
  for (size_t k = 0; k <= gap; ++k) {
    const double pk = d * q;
    p_span += pk;
    spanned += static_cast<double>(k) * pk;
    q *= 1 - d;
  }
  *reads = std::max(1.0, misses * (1 - p_span));
  *bytes = (misses + misses * spanned) * static_cast<double>(neuron_bytes);
}

std::string NeuronCache::read_items(int layer, const ReadItem* items, size_t n, uint64_t* n_preads) const {
  const Layer& L = layers_[static_cast<size_t>(layer)];
  const size_t max_gap = gap_neurons();
  thread_local std::vector<uint8_t> gap_buf;  // per thread: the reader and the prefetch thread read at once
  if (max_gap && gap_buf.size() < max_gap * neuron_bytes_) gap_buf.resize(max_gap * neuron_bytes_);
  std::vector<iovec> iov;
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && items[j].id > items[j - 1].id && static_cast<size_t>(items[j].id - items[j - 1].id - 1) <= max_gap) ++j;
    iov.clear();
    bool after_gap = false;
    for (size_t k = i; k < j; ++k) {
      if (k > i && items[k].id > items[k - 1].id + 1) {  // the neurons between: read, not kept
        iov.push_back({gap_buf.data(), static_cast<size_t>(items[k].id - items[k - 1].id - 1) * neuron_bytes_});
        after_gap = true;
      }
      uint8_t* dst = slot_ptr(items[k].slot);
      if (!after_gap && !iov.empty() && static_cast<uint8_t*>(iov.back().iov_base) + iov.back().iov_len == dst)
        iov.back().iov_len += neuron_bytes_;
      else
        iov.push_back({dst, neuron_bytes_});
      after_gap = false;
    }
    const uint64_t off = L.file_offset + static_cast<uint64_t>(items[i].id) * neuron_bytes_;
    const auto t0 = Clock::now();
    std::string err = read_run(fd_, path_, off, iov, n_preads);
    if (!err.empty())
      return format("layer %d neurons %d..%d: %s", layer, items[i].id, items[j - 1].id, err.c_str());
    if (storage_) storage_->simulate(static_cast<size_t>(items[j - 1].id - items[i].id + 1) * neuron_bytes_, t0);
    i = j;
  }
  return "";
}

// ---- acquire / release ----

void NeuronCache::acquire(int layer, const int32_t* ids, int64_t n, const void** ptrs) {
  check_ids("acquire", layer, ids, n);
  if (n > 0 && !ptrs) RWKVL_FAIL(kInvalidArgument, "NeuronCache::acquire: ptrs is null");
  std::unique_lock<std::mutex> lk(mu_);
  if (acquired_layer_ != -1 && acquired_layer_ != layer)
    RWKVL_FAIL(kInvalidArgument, "NeuronCache::acquire: layer %d requested while layer %d is still acquired", layer,
               acquired_layer_);
  if (n == 0) return;
  acquired_layer_ = layer;
  ++epoch_;
  req_slot_.assign(static_cast<size_t>(n), -1);
  call_slots_.clear();
  to_read_.clear();
  double waited = 0;
  reserve_locked(lk, layer, ids, n, waited);
  load_locked(lk, layer, waited);
  publish_locked(n, ptrs);
  stats_.wait_seconds += waited;
}

// First sight of slot s in this acquire call: classify it and take it out of the LRU.
void NeuronCache::touch_locked(int32_t s) {
  Slot& sl = slots_[static_cast<size_t>(s)];
  if (sl.call_epoch == epoch_) return;
  sl.call_epoch = epoch_;
  if (sl.pinned) return;
  call_slots_.push_back(s);
  if (sl.acquired) {  // by an earlier acquire of this layer
    sl.cls = kClsCached;
    return;
  }
  sl.cls = sl.prefetched ? kClsPrefetched : kClsCached;
  sl.prefetched = false;
  sl.acquired = true;
  if (sl.in_lru) lru_remove(s);
  acquired_slots_.push_back(s);
}

void NeuronCache::reserve_locked(std::unique_lock<std::mutex>& lk, int layer, const int32_t* ids, int64_t n,
                                 double& waited) {
  // Pass 1: everything already resident or in flight is protected first, so that pass 2's evictions
  // cannot take it.
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = table(layer, ids[i]);
    if (s >= 0) {
      touch_locked(s);
      req_slot_[static_cast<size_t>(i)] = s;
    }
  }
  // Pass 2: reserve a slot for each miss.
  for (int64_t i = 0; i < n; ++i) {
    if (req_slot_[static_cast<size_t>(i)] >= 0) continue;
    const int32_t id = ids[i];
    int32_t s;
    for (;;) {
      s = table(layer, id);
      if (s >= 0) {  // a duplicate id, or the prefetch thread got to it while we waited
        touch_locked(s);
        break;
      }
      s = lru_head_;
      if (s >= 0) {
        evict(s);
        Slot& sl = slots_[static_cast<size_t>(s)];
        sl.layer = layer;
        sl.id = id;
        sl.state = kLoadingSync;
        sl.acquired = true;
        sl.call_epoch = epoch_;
        sl.cls = kClsMiss;
        table(layer, id) = s;
        acquired_slots_.push_back(s);
        call_slots_.push_back(s);
        to_read_.push_back({id, s});
        break;
      }
      // Every unacquired slot is being filled by the prefetch thread (the minimum capacity guarantees
      // that some are): wait for one of those reads to finish.
      RWKVL_CHECK(n_loading_prefetch_ > 0);
      ++acquire_waiting_;
      const auto t0 = Clock::now();
      cv_.wait(lk);
      waited += seconds_since(t0);
      --acquire_waiting_;
    }
    req_slot_[static_cast<size_t>(i)] = s;
  }
}

void NeuronCache::load_locked(std::unique_lock<std::mutex>& lk, int layer, double& waited) {
  // Read the misses, wait for in-flight prefetches, re-read what the prefetch thread failed to read.
  for (;;) {
    if (!to_read_.empty()) read_misses_locked(lk, layer, waited);
    auto in_flight = [&] {
      for (int32_t s : call_slots_)
        if (slots_[static_cast<size_t>(s)].state == kLoadingPrefetch) return true;
      return false;
    };
    if (in_flight()) {
      const auto t0 = Clock::now();
      cv_.wait(lk, [&] { return !in_flight(); });
      waited += seconds_since(t0);
    }
    for (int32_t s : call_slots_) {
      Slot& sl = slots_[static_cast<size_t>(s)];
      if (sl.state == kFailed) {
        sl.state = kLoadingSync;
        sl.cls = kClsMiss;
        to_read_.push_back({sl.id, s});
      }
    }
    if (to_read_.empty()) break;
  }
}

void NeuronCache::read_misses_locked(std::unique_lock<std::mutex>& lk, int layer, double& waited) {
  std::sort(to_read_.begin(), to_read_.end(), [](const ReadItem& a, const ReadItem& b) { return a.id < b.id; });
  uint64_t n_preads = 0;
  lk.unlock();
  const auto t0 = Clock::now();
  std::string err = read_items(layer, to_read_.data(), to_read_.size(), &n_preads);
  const double dt = seconds_since(t0);
  lk.lock();
  waited += dt;
  stats_.preads += n_preads;
  if (!err.empty()) {
    for (const ReadItem& it : to_read_) {
      Slot& sl = slots_[static_cast<size_t>(it.slot)];
      table(layer, it.id) = -1;
      sl.state = kEmpty;
      sl.layer = sl.id = -1;
    }
    to_read_.clear();
    release_locked();
    stats_.wait_seconds += waited;
    RWKVL_FAIL(kIo, "NeuronCache: %s", err.c_str());
  }
  const uint64_t bytes = to_read_.size() * neuron_bytes_;
  stats_.bytes_read += bytes;
  stats_.bytes_read_sync += bytes;
  for (const ReadItem& it : to_read_) slots_[static_cast<size_t>(it.slot)].state = kReady;
  to_read_.clear();
}

void NeuronCache::publish_locked(int64_t n, const void** ptrs) {
  stats_.requests += static_cast<uint64_t>(n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = req_slot_[static_cast<size_t>(i)];
    Slot& sl = slots_[static_cast<size_t>(s)];
    if (sl.pinned) ++stats_.hits_pinned;
    else if (sl.cls == kClsMiss) ++stats_.misses;
    else if (sl.cls == kClsPrefetched) ++stats_.hits_prefetched;
    else ++stats_.hits_cached;
    sl.cls = kClsCached;  // a duplicate id in the same call counts as a cache hit
    ptrs[i] = slot_ptr(s);
  }
}

void NeuronCache::release(int layer) {
  std::lock_guard<std::mutex> lk(mu_);
  if (acquired_layer_ == -1) return;
  if (acquired_layer_ != layer)
    RWKVL_FAIL(kInvalidArgument, "NeuronCache::release: layer %d is not acquired (layer %d is)", layer, acquired_layer_);
  release_locked();
}

// ---- prefetch ----

void NeuronCache::prefetch(int layer, const int32_t* ids, int64_t n) {
  if (!thread_.joinable()) return;
  check_ids("prefetch", layer, ids, n);
  {
    std::lock_guard<std::mutex> lk(mu_);
    hint_layer_ = layer;
    hint_ids_.assign(ids, ids + n);
    has_hint_ = true;
  }
  cv_.notify_all();
}

void NeuronCache::prefetch_main() {
  std::vector<int32_t> ids;
  std::vector<ReadItem> batch;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || has_hint_; });
    if (stop_) return;
    const int layer = hint_layer_;
    ids.swap(hint_ids_);
    hint_ids_.clear();
    has_hint_ = false;
    const uint64_t seq = ++hint_seq_;
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    // Resident ones: mark as wanted by this hint and move to the MRU end so reserving slots for the
    // others does not evict them. Keep the rest.
    size_t w = 0;
    for (int32_t id : ids) {
      const int32_t s = table(layer, id);
      if (s < 0) {
        ids[w++] = id;
        continue;
      }
      Slot& sl = slots_[static_cast<size_t>(s)];
      if (sl.pinned) continue;
      sl.hint_seq = seq;
      if (sl.in_lru) {
        lru_remove(s);
        lru_push_back(s);
      }
    }
    ids.resize(w);

    size_t pos = 0;
    while (pos < ids.size()) {
      if (stop_) return;
      if (has_hint_ || acquire_waiting_ > 0) {  // pre-empted by a newer hint or by an acquire short of slots
        stats_.prefetch_dropped += ids.size() - pos;
        break;
      }
      batch.clear();
      while (pos < ids.size() && batch.size() < kPrefetchBatch) {
        const int32_t id = ids[pos];
        if (table(layer, id) >= 0) {  // an acquire read it meanwhile
          ++pos;
          continue;
        }
        const int32_t s = lru_head_;
        // No free slot, or the least recently used one holds something this hint wants: stop.
        if (s < 0 || slots_[static_cast<size_t>(s)].hint_seq == seq) break;
        evict(s);
        Slot& sl = slots_[static_cast<size_t>(s)];
        sl.layer = layer;
        sl.id = id;
        sl.state = kLoadingPrefetch;
        sl.prefetched = true;
        sl.hint_seq = seq;
        table(layer, id) = s;
        ++n_loading_prefetch_;
        batch.push_back({id, s});
        ++pos;
      }
      if (batch.empty()) {
        stats_.prefetch_dropped += ids.size() - pos;
        break;
      }
      uint64_t n_preads = 0;
      lk.unlock();
      if (test_delay_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(test_delay_us_));
      const std::string err = read_items(layer, batch.data(), batch.size(), &n_preads);
      lk.lock();
      stats_.preads += n_preads;
      if (err.empty()) stats_.bytes_read += batch.size() * neuron_bytes_;
      else prefetch_error_ = err;
      for (const ReadItem& it : batch) {
        Slot& sl = slots_[static_cast<size_t>(it.slot)];
        --n_loading_prefetch_;
        if (err.empty()) {
          sl.state = kReady;
          if (!sl.acquired) lru_push_back(it.slot);
        } else if (sl.acquired) {
          sl.state = kFailed;  // the waiting acquire re-reads it and reports the error
        } else {
          table(layer, it.id) = -1;
          sl.state = kEmpty;
          sl.layer = sl.id = -1;
          sl.prefetched = false;
          sl.hint_seq = 0;
          lru_push_front(it.slot);
        }
      }
      cv_.notify_all();
      if (!err.empty()) {
        stats_.prefetch_dropped += ids.size() - pos;
        break;
      }
    }
  }
}

// ---- stats ----

NeuronCache::Stats NeuronCache::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void NeuronCache::reset_stats() {
  std::lock_guard<std::mutex> lk(mu_);
  Stats s;
  s.capacity_bytes = stats_.capacity_bytes;
  s.pinned_bytes = stats_.pinned_bytes;
  stats_ = s;
}

std::string NeuronCache::prefetch_error() const {
  std::lock_guard<std::mutex> lk(mu_);
  return prefetch_error_;
}

}  // namespace rwkvl
