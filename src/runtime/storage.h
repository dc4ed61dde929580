// Reads of weight bytes from the model file, optionally throttled to simulate slow storage (an SD
// card at ~90 MB/s, eMMC at ~250 MB/s, UFS/NVMe at 1-2 GB/s) on a workstation whose file is in the
// page cache: every read occupies the simulated device for `latency` + bytes / bandwidth, reads from
// all threads share the one device (they queue), and a caller returns when its read would have
// completed. Without a throttle reads go straight to pread(2).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace rwkvl {

struct StorageOptions {
  double mb_per_s = 0.0;    // > 0: simulated bandwidth in MB/s (10^6 bytes); 0 = unthrottled
  double latency_us = 0.0;  // simulated latency per read (with a throttle)
};

struct StorageStats {
  uint64_t reads = 0, bytes = 0;
  double seconds = 0.0;  // wall time callers spent in read(), incl. simulated waiting
};

class Storage {
 public:
  // Opens `path` read-only; throws kIo. Throws kInvalidArgument for a negative or non-finite throttle
  // (0 is "unthrottled" here: the CLI refuses --io-throttle 0 itself).
  Storage(const std::string& path, const StorageOptions& opt);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  // Reads exactly n bytes at offset into dst (retrying short reads and EINTR); throws kIo with the
  // path and offset on failure or end of file. Thread-safe.
  void read(uint64_t offset, void* dst, size_t n);
  // For reads done elsewhere (the neuron cache's preadv): occupies the simulated device for n bytes and
  // waits until that read would have completed; counts it. No-op timing without a throttle.
  void simulate(size_t n, std::chrono::steady_clock::time_point started);
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const StorageOptions& options() const { return opt_; }
  StorageStats stats() const;
  void reset_stats();

 private:
  std::chrono::steady_clock::time_point occupy(size_t n, std::chrono::steady_clock::time_point t0);
  void count(size_t n, std::chrono::steady_clock::time_point t0);
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  StorageOptions opt_;
  std::mutex mu_;  // the simulated device's clock
  std::chrono::steady_clock::time_point busy_until_{};
  std::atomic<uint64_t> reads_{0}, bytes_{0}, nanos_{0};
};

}  // namespace rwkvl
