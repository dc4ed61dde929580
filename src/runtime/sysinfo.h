// Process and machine measurements used by the benchmarks: resident memory, memory read bandwidth, and
// a one-line description of the build and machine.
#pragma once

#include <cstdint>
#include <string>

namespace rwkvl {

// VmHWM / VmRSS of this process in bytes (from /proc/self/status); 0 if unknown.
uint64_t peak_rss_bytes();
uint64_t current_rss_bytes();
// Resets VmHWM to the current RSS (Linux >= 4.0, /proc/self/clear_refs); false if not possible.
bool reset_peak_rss();

// Number of online CPU cores (at least 1).
int online_cores();

// Sustained read bandwidth in bytes/s: n_threads threads (<= 0 -> online cores) each sum their slice
// of a buffer_bytes buffer (0 -> 256 MiB) that was written first (so every page is resident), passes
// repeated for about `seconds` (<= 0 -> 1 s, at least 3 passes); the best pass wins.
// Throws rwkvl::Error(kOutOfMemory) if the buffer cannot be allocated.
double measure_read_bandwidth(int n_threads, uint64_t buffer_bytes, double seconds);

// "rwkv-lite 0.1.0 | Release | isa avx2 | GCC 12.2.0 | 2 cores | <cpu model>"
std::string system_info();

}  // namespace rwkvl
