// Reads of weight bytes from the model file, optionally throttled to simulate slow storage (an SD
// card at ~90 MB/s, eMMC at ~250 MB/s, UFS/NVMe at 1-2 GB/s) on a workstation whose file is in the
// page cache. The simulated device serves up to `queue` reads at once: a read waits for a free slot,
// spends `latency` in it (the access time, which reads in flight overlap), then moves its bytes over the
// one shared channel at `mb_per_s` (transfers never overlap); a caller returns when its read would have
// completed. queue 1 is a device that does one read at a time (latency + bytes / bandwidth each). Without a
// throttle reads go straight to pread(2). The presets (storage_preset) model the devices people run on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rwkvl {

struct StorageOptions {
  double mb_per_s = 0.0;    // > 0: simulated bandwidth in MB/s (10^6 bytes); 0 = unthrottled
  double latency_us = 0.0;  // simulated latency per read (with a throttle)
  int queue = 1;            // reads the simulated device serves at once (>= 1)
};

// A storage device's figures (sequential read bandwidth, access time of a small random read, reads in flight).
struct StoragePreset {
  const char* name;  // "sd", "emmc", "ufs", "nvme", "page-cache"
  StorageOptions options;
  const char* what;  // one line for --help and docs
};
// The presets, in order from slowest; page-cache is unthrottled (the file is in RAM).
const StoragePreset* storage_presets(size_t* n);
// The preset of that name, or nullptr.
const StoragePreset* storage_preset(const std::string& name);
// "sd, emmc, ufs, nvme or page-cache" (for messages).
std::string storage_preset_names();

// Predicted seconds for `reads` reads of `bytes` bytes in all, issued `in_flight` at a time (at most the queue),
// on the simulated device: the planner's cost model, and the figure tests compare measured time with.
double storage_seconds(const StorageOptions& o, double reads, double bytes, int in_flight = 1);

struct StorageStats {
  uint64_t reads = 0, bytes = 0;
  double seconds = 0.0;       // wall time callers spent in read(), incl. simulated waiting (their stall)
  double busy_seconds = 0.0;  // simulated: time the device had at least one read in flight
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
  mutable std::mutex mu_;  // the simulated device's clocks
  std::vector<std::chrono::steady_clock::time_point> slot_free_;  // when each of the queue's slots is free
  std::chrono::steady_clock::time_point channel_free_{};  // when the last transfer ends
  double busy_s_ = 0.0;  // under mu_
  std::atomic<uint64_t> reads_{0}, bytes_{0}, nanos_{0};
};

}  // namespace rwkvl
