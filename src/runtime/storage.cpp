#include "runtime/storage.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <algorithm>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include "core/error.h"

namespace rwkvl {

namespace {
// Sequential bandwidth, the access time of a 4 KB random read and the reads a device serves at once, for the
// classes of storage small devices have (typical figures of current parts: A1/A2 SD cards, eMMC 5.1, UFS 3.1,
// a PCIe 3 NVMe drive); page-cache is a file already in RAM (no simulation).
const StoragePreset kPresets[] = {
    {"sd", {90.0, 1000.0, 1}, "SD card (A1): 90 MB/s, 1 ms per read, one read at a time"},
    {"emmc", {250.0, 150.0, 2}, "eMMC 5.1: 250 MB/s, 150 us per read, 2 in flight"},
    {"ufs", {1500.0, 80.0, 8}, "UFS 3.1: 1.5 GB/s, 80 us per read, 8 in flight"},
    {"nvme", {3000.0, 60.0, 32}, "NVMe SSD: 3 GB/s, 60 us per read, 32 in flight"},
    {"page-cache", {0.0, 0.0, 1}, "the file in RAM (the page cache): no simulated cost"},
};
}  // namespace

const StoragePreset* storage_presets(size_t* n) {
  *n = sizeof(kPresets) / sizeof(kPresets[0]);
  return kPresets;
}
const StoragePreset* storage_preset(const std::string& name) {
  for (const StoragePreset& p : kPresets)
    if (name == p.name) return &p;
  return nullptr;
}
std::string storage_preset_names() { return "sd, emmc, ufs, nvme or page-cache"; }

double storage_seconds(const StorageOptions& o, double reads, double bytes, int in_flight) {
  if (!(o.mb_per_s > 0.0) || reads <= 0) return 0.0;
  const double par = static_cast<double>(std::max(1, std::min(in_flight, o.queue)));
  // The access times of reads in flight overlap; the transfers share one channel.
  return reads * o.latency_us * 1e-6 / par + bytes / (o.mb_per_s * 1e6);
}

Storage::Storage(const std::string& path, const StorageOptions& opt) : path_(path), opt_(opt) {
  if (!(opt.mb_per_s >= 0.0) || !std::isfinite(opt.mb_per_s) || !(opt.latency_us >= 0.0) || !std::isfinite(opt.latency_us))
    RWKVL_FAIL(kInvalidArgument, "storage throttle must be a finite bandwidth >= 0 MB/s and latency >= 0 us (got %g MB/s, %g us)",
               opt.mb_per_s, opt.latency_us);
  if (opt.queue < 1 || opt.queue > 4096)
    RWKVL_FAIL(kInvalidArgument, "the storage queue depth must be 1..4096 reads in flight (got %d)", opt.queue);
  slot_free_.assign(static_cast<size_t>(opt.queue), std::chrono::steady_clock::time_point{});
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) RWKVL_FAIL(kIo, "cannot open '%s': %s", path.c_str(), std::strerror(errno));
  struct stat st {};
  if (fstat(fd_, &st) != 0) {
    const int e = errno;
    ::close(fd_);
    RWKVL_FAIL(kIo, "cannot stat '%s': %s", path.c_str(), std::strerror(e));
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

Storage::~Storage() {
  if (fd_ >= 0) ::close(fd_);
}

// The simulated device: a read of n bytes issued at t0 takes the queue slot that frees first, spends the access
// time in it, then transfers its bytes when the channel is free; returns when that transfer would have finished.
// (Transfers end in issue order, so the device's busy time is the union of [start, end) computed as it grows.)
std::chrono::steady_clock::time_point Storage::occupy(size_t n, std::chrono::steady_clock::time_point t0) {
  using Clock = std::chrono::steady_clock;
  auto dur = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };
  std::lock_guard<std::mutex> lock(mu_);
  auto slot = std::min_element(slot_free_.begin(), slot_free_.end());
  const Clock::time_point start = std::max(t0, *slot);
  const Clock::time_point accessed = start + dur(opt_.latency_us * 1e-6);
  const Clock::time_point end = std::max(accessed, channel_free_) + dur(static_cast<double>(n) / (opt_.mb_per_s * 1e6));
  // The channel frees when the latest transfer ends, so it is also the end of the busy time so far.
  busy_s_ += std::chrono::duration<double>(end - std::max(start, channel_free_)).count();
  channel_free_ = end;
  *slot = end;
  return end;
}

void Storage::count(size_t n, std::chrono::steady_clock::time_point t0) {
  reads_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(n, std::memory_order_relaxed);
  nanos_.fetch_add(static_cast<uint64_t>(
                       std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()),
                   std::memory_order_relaxed);
}

void Storage::read(uint64_t offset, void* dst, size_t n) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (offset > size_ || n > size_ - offset)
    RWKVL_FAIL(kIo, "read of %zu bytes at offset %llu lies outside '%s' (%llu bytes; file truncated or changed?)", n,
               static_cast<unsigned long long>(offset), path_.c_str(), static_cast<unsigned long long>(size_));
  const bool throttled = opt_.mb_per_s > 0.0;
  const Clock::time_point done = throttled ? occupy(n, t0) : t0;
  auto* p = static_cast<uint8_t*>(dst);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd_, p + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      RWKVL_FAIL(kIo, "read of '%s' at offset %llu failed: %s", path_.c_str(),
                 static_cast<unsigned long long>(offset + got), std::strerror(errno));
    }
    if (r == 0)
      RWKVL_FAIL(kIo, "unexpected end of file reading '%s' at offset %llu (file truncated?)", path_.c_str(),
                 static_cast<unsigned long long>(offset + got));
    got += static_cast<size_t>(r);
  }
  if (throttled) std::this_thread::sleep_until(done);
  count(n, t0);
}

void Storage::simulate(size_t n, std::chrono::steady_clock::time_point started) {
  if (opt_.mb_per_s > 0.0) std::this_thread::sleep_until(occupy(n, started));
  count(n, started);
}

StorageStats Storage::stats() const {
  StorageStats s;
  s.reads = reads_.load();
  s.bytes = bytes_.load();
  s.seconds = static_cast<double>(nanos_.load()) * 1e-9;
  std::lock_guard<std::mutex> lock(mu_);
  s.busy_seconds = busy_s_;
  return s;
}

void Storage::reset_stats() {
  reads_ = 0;
  bytes_ = 0;
  nanos_ = 0;
  std::lock_guard<std::mutex> lock(mu_);
  busy_s_ = 0.0;
}

}  // namespace rwkvl
