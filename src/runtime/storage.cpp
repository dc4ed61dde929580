#include "runtime/storage.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include "core/error.h"

namespace rwkvl {

Storage::Storage(const std::string& path, const StorageOptions& opt) : path_(path), opt_(opt) {
  if (!(opt.mb_per_s >= 0.0) || !std::isfinite(opt.mb_per_s) || !(opt.latency_us >= 0.0) || !std::isfinite(opt.latency_us))
    RWKVL_FAIL(kInvalidArgument, "storage throttle must be a finite bandwidth >= 0 MB/s and latency >= 0 us (got %g MB/s, %g us)",
               opt.mb_per_s, opt.latency_us);
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

// The simulated device: a transfer of n bytes starting no earlier than t0 occupies it for latency +
// n / bandwidth after whatever is queued; returns when that transfer would have finished.
std::chrono::steady_clock::time_point Storage::occupy(size_t n, std::chrono::steady_clock::time_point t0) {
  using Clock = std::chrono::steady_clock;
  const double secs = opt_.latency_us * 1e-6 + static_cast<double>(n) / (opt_.mb_per_s * 1e6);
  std::lock_guard<std::mutex> lock(mu_);
  const Clock::time_point start = std::max(t0, busy_until_);
  busy_until_ = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(secs));
  return busy_until_;
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
  return s;
}

void Storage::reset_stats() {
  reads_ = 0;
  bytes_ = 0;
  nanos_ = 0;
}

}  // namespace rwkvl
