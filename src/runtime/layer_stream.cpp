#include "runtime/layer_stream.h"

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "runtime/storage.h"

namespace rwkvl {

namespace {

size_t part_bytes(const kern::MatRef& r) { return static_cast<size_t>(kern::mat_bytes(r)); }
size_t round64(size_t n) { return (n + 63) / 64 * 64; }

template <class LW, class Fn>
void visit(LW& L, Fn&& fn) {
  auto mat = [&](auto& M) {
    if (M.empty()) return;
    if (M.factored()) {
      if (part_bytes(M.a) >= kStreamMinPartBytes) fn(M.a);
      if (part_bytes(M.b) >= kStreamMinPartBytes) fn(M.b);
    } else if (part_bytes(M.ref) >= kStreamMinPartBytes) {
      fn(M.ref);
    }
  };
  for_each_layer_matrix(L, mat);
}

}  // namespace

void for_each_stream_part(LayerWeights& L, const std::function<void(kern::MatRef&)>& fn) { visit(L, fn); }
void for_each_stream_part(const LayerWeights& L, const std::function<void(const kern::MatRef&)>& fn) { visit(L, fn); }

uint64_t layer_stream_bytes(const Model& m, int l) {
  uint64_t n = 0;
  for_each_stream_part(m.layer(l), [&](const kern::MatRef& r) { n += round64(part_bytes(r)); });
  return n;
}

LayerStream::LayerStream(const Model& m, std::shared_ptr<Storage> storage, std::vector<bool> streamed, int slots,
                         bool prefetch)
    : m_(m), storage_(std::move(storage)), streamed_(std::move(streamed)), prefetch_(prefetch) {
  RWKVL_CHECK(slots == 1 || slots == 2);
  RWKVL_CHECK(!prefetch || slots == 2);
  const int L = m.config().n_layer;
  RWKVL_CHECK(static_cast<int>(streamed_.size()) == L);
  const auto& f = m.file();
  if (!f || !f->on_disk() || !storage_)
    RWKVL_FAIL(kInvalidArgument, "streaming weights needs a native rwkv-lite file on disk (convert the model with `rwkv-lite convert`)");
  views_.reserve(static_cast<size_t>(L));
  parts_.resize(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    views_.push_back(m.layer(l));
    if (!streamed_[static_cast<size_t>(l)]) continue;
    size_t off = 0;
    for_each_stream_part(m.layer(l), [&](const kern::MatRef& r) {
      const auto* p = static_cast<const uint8_t*>(r.data);
      if (p < f->data() || p >= f->data() + f->size())
        RWKVL_FAIL(kInvalidArgument, "layer %d holds weights that are not in the file (converted at load?); they cannot be streamed", l);
      const size_t n = part_bytes(r);
      parts_[static_cast<size_t>(l)].push_back(Part{static_cast<uint64_t>(p - f->data()), n, off});
      off += round64(n);
    });
    slot_bytes_ = std::max(slot_bytes_, off);
  }
  const int n_slots = slot_bytes_ == 0 ? 0 : slots;
  for (int s = 0; s < n_slots; ++s) {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, slot_bytes_));
    if (!p) throw std::bad_alloc();
    slots_.emplace_back(static_cast<uint8_t*>(p), &std::free);
    slot_layer_.push_back(-1);
  }
  if (prefetch_ && n_slots) {
    reader_ = std::thread([this] { reader_loop(); });
    // Preload: the first streamed layer is read now, so the first token finds it in its slot (a cold pipeline
    // would make the first token wait for a whole layer read before any compute could overlap the next one).
    const int first = next_streamed(static_cast<int>(streamed_.size()) - 1);
    if (first >= 0) {
      std::lock_guard<std::mutex> lock(mu_);
      req_layer_ = first;
      req_slot_ = 0;
      slot_layer_[0] = first;
      cur_slot_ = 1;  // the first acquire takes slot 0 and prefetches into slot 1
    }
    cv_.notify_all();
  }
}

LayerStream::~LayerStream() {
  if (reader_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    reader_.join();
  }
}

void LayerStream::load(int l, int slot) {
  uint8_t* base = slots_[static_cast<size_t>(slot)].get();
  uint64_t n = 0;
  for (const Part& p : parts_[static_cast<size_t>(l)]) {
    storage_->read(p.file_offset, base + p.slot_offset, p.bytes);
    n += p.bytes;
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.loads += 1;
  stats_.bytes += n;
}

void LayerStream::reader_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || req_layer_ >= 0; });
    if (stop_) return;
    const int l = req_layer_, s = req_slot_;
    req_layer_ = -1;
    busy_ = true;
    lock.unlock();
    std::exception_ptr err;
    try {
      load(l, s);
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    if (err) {
      error_ = err;
      slot_layer_[static_cast<size_t>(s)] = -1;
    }
    cv_.notify_all();
  }
}

int LayerStream::next_streamed(int l) const {
  const int L = static_cast<int>(streamed_.size());
  for (int i = 1; i <= L; ++i) {
    const int n = (l + i) % L;
    if (streamed_[static_cast<size_t>(n)]) return n;
  }
  return -1;
}

int LayerStream::slot_holding(int l) const {
  for (size_t s = 0; s < slot_layer_.size(); ++s)
    if (slot_layer_[s] == l) return static_cast<int>(s);
  return -1;
}

const LayerWeights& LayerStream::acquire(int l) {
  if (!streamed_[static_cast<size_t>(l)]) return m_.layer(l);
  const auto t0 = std::chrono::steady_clock::now();
  int slot = -1;
  if (!prefetch_) {
    slot = slot_holding(l);
    if (slot < 0) {
      slot = slots_.size() == 1 || cur_slot_ < 0 ? 0 : 1 - cur_slot_;
      slot_layer_[static_cast<size_t>(slot)] = -1;
      load(l, slot);
      slot_layer_[static_cast<size_t>(slot)] = l;
    }
    cur_slot_ = slot;
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !busy_ && req_layer_ < 0; });  // the reader is idle: every slot is settled
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    slot = slot_holding(l);
    if (slot >= 0) {
      stats_.prefetch_hits += 1;
    } else {
      slot = cur_slot_ < 0 ? 0 : 1 - cur_slot_;
      slot_layer_[static_cast<size_t>(slot)] = -1;
      lock.unlock();
      load(l, slot);
      lock.lock();
      slot_layer_[static_cast<size_t>(slot)] = l;
    }
    cur_slot_ = slot;
    // The other slot held the previous streamed layer, which is finished: start reading the next one.
    const int next = next_streamed(l);
    if (next >= 0 && slot_holding(next) < 0) {
      req_layer_ = next;
      req_slot_ = 1 - slot;
      slot_layer_[static_cast<size_t>(1 - slot)] = next;
      cv_.notify_all();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // Point the view's streamed parts at the slot.
  LayerWeights& v = views_[static_cast<size_t>(l)];
  uint8_t* base = slots_[static_cast<size_t>(slot)].get();
  size_t i = 0;
  const auto& parts = parts_[static_cast<size_t>(l)];
  for_each_stream_part(v, [&](kern::MatRef& r) { r.data = base + parts[i++].slot_offset; });
  return v;
}

LayerStreamStats LayerStream::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void LayerStream::reset_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = LayerStreamStats{};
}

}  // namespace rwkvl
