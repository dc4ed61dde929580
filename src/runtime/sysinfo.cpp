#include "runtime/sysinfo.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "core/error.h"
#include "kernels/kernels.h"
#include "core/version.h"

namespace rwkvl {

namespace {

// Reads "<key>:   1234 kB" from /proc/self/status.
uint64_t proc_status_kb(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  const size_t key_len = std::strlen(key);
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
      unsigned long long v = 0;
      if (std::sscanf(line + key_len + 1, "%llu", &v) == 1) kb = v;
      break;
    }
  }
  std::fclose(f);
  return kb;
}

// Keeps the read loops observable, so the compiler cannot drop them.
std::atomic<uint64_t> g_bandwidth_sink{0};

uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 += p[i + 0];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
    a4 += p[i + 4];
    a5 += p[i + 5];
    a6 += p[i + 6];
    a7 += p[i + 7];
  }
  for (; i < n; ++i) a0 += p[i];
  return (a0 + a1) ^ (a2 + a3) ^ (a4 + a5) ^ (a6 + a7);
}

struct AlignedFree {
  void operator()(uint64_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
};

// Runs fn(t) on n threads (t = 0 on the caller) and waits for all.
template <typename Fn>
void run_threads(int n, Fn&& fn) {
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(n));
  try {
    for (int t = 1; t < n; ++t) workers.emplace_back(fn, t);
  } catch (const std::system_error& e) {
    for (auto& w : workers) w.join();
    RWKVL_FAIL(kInternal, "cannot start bandwidth threads: %s", e.what());
  }
  fn(0);
  for (auto& w : workers) w.join();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      size_t b = line.find_first_not_of(" \t", colon + 1);
      return b == std::string::npos ? std::string() : line.substr(b);
    }
  }
  return std::string();
}

const char* build_type() {
#if defined(RWKVL_BUILD_TYPE)
  return RWKVL_BUILD_TYPE;
#elif defined(__OPTIMIZE__) && defined(NDEBUG)
  return "release";
#elif defined(__OPTIMIZE__)
  return "optimized+asserts";
#else
  return "debug";
#endif
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown compiler";
#endif
}

}  // namespace

uint64_t peak_rss_bytes() { return proc_status_kb("VmHWM") * 1024; }
uint64_t current_rss_bytes() { return proc_status_kb("VmRSS") * 1024; }

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

int online_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

double measure_read_bandwidth(int n_threads, uint64_t buffer_bytes, double seconds) {
  if (n_threads <= 0) n_threads = online_cores();
  n_threads = std::min(n_threads, 1024);
  if (buffer_bytes == 0) buffer_bytes = 256ull << 20;
  if (!(seconds > 0.0)) seconds = 1.0;
  seconds = std::min(seconds, 600.0);

  // Whole 64-byte lines, at least one page per thread.
  const size_t per_thread_min = 4096 / sizeof(uint64_t);
  size_t words = static_cast<size_t>(buffer_bytes / sizeof(uint64_t));
  words = std::max(words, per_thread_min * static_cast<size_t>(n_threads));
  words -= words % (8 * static_cast<size_t>(n_threads));

  std::unique_ptr<uint64_t, AlignedFree> buf;
  try {
    buf.reset(static_cast<uint64_t*>(::operator new[](words * sizeof(uint64_t), std::align_val_t{64})));
  } catch (const std::bad_alloc&) {
    RWKVL_FAIL(kOutOfMemory, "cannot allocate a %zu-byte bandwidth buffer", words * sizeof(uint64_t));
  }
  uint64_t* data = buf.get();
  const size_t slice = words / static_cast<size_t>(n_threads);

  // Each thread writes its own slice first: every page is resident (and local to that thread) before
  // anything is timed.
  run_threads(n_threads, [&](int t) {
    uint64_t* p = data + slice * static_cast<size_t>(t);
    for (size_t i = 0; i < slice; ++i) p[i] = (i + 1) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(t);
  });

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration<double>(seconds);
  const double bytes = static_cast<double>(slice) * static_cast<double>(n_threads) * sizeof(uint64_t);
  double best = 0.0;
  for (int pass = 0; pass < 100000; ++pass) {
    const auto t0 = clock::now();
    run_threads(n_threads, [&](int t) {
      const uint64_t s = sum_words(data + slice * static_cast<size_t>(t), slice);
      g_bandwidth_sink.fetch_add(s, std::memory_order_relaxed);
    });
    const auto t1 = clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    if (dt > 0.0) best = std::max(best, bytes / dt);
    if (pass >= 2 && t1 >= deadline) break;
  }
  return best;
}

std::string system_info() {
  std::string s = std::string("rwkv-lite ") + kVersionString + " | ";
  s += build_type();
#if defined(__SANITIZE_ADDRESS__)
  s += "+asan";
#endif
  s += " | isa ";
  s += kern::active_isa();
  s += " | " + compiler();
  s += " | " + std::to_string(online_cores()) + (online_cores() == 1 ? " core" : " cores");
  const std::string cpu = cpu_model();
  if (!cpu.empty()) s += " | " + cpu;
  return s;
}

}  // namespace rwkvl
