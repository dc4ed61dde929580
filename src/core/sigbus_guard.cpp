#include "core/sigbus_guard.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace rwkvl::sigbus_guard {

namespace {

constexpr int kSlots = 256;
constexpr size_t kPathMax = 1024;

// state: 0 free, 1 being written or removed (the handler skips it), 2 live.
struct Slot {
  std::atomic<int> state{0};
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> size{0};
  char path[kPathMax] = {};
  uint64_t dev = 0, ino = 0, file_size = 0;
  int64_t mtime_ns = 0;
};

Slot g_slots[kSlots];
char g_program[64] = "rwkv-lite";
struct sigaction g_previous;
std::atomic<bool> g_installed{false};
std::mutex g_install_mu;

static_assert(std::atomic<uintptr_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free &&
                  std::atomic<size_t>::is_always_lock_free,
              "the signal handler needs lock-free atomics");

size_t length(const char* s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

void write_str(const char* s) {
  size_t n = length(s);
  while (n > 0) {
    const ssize_t w = ::write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void handler(int sig, siginfo_t* info, void* /*ucontext*/) {
  // si_code > 0: raised by the kernel for a fault at si_addr (BUS_ADRERR for pages past the end of a file).
  if (info && info->si_code > 0) {
    const auto a = reinterpret_cast<uintptr_t>(info->si_addr);
    for (Slot& s : g_slots) {
      if (s.state.load(std::memory_order_acquire) != 2) continue;
      const uintptr_t b = s.base.load(std::memory_order_relaxed);
      const size_t n = s.size.load(std::memory_order_relaxed);
      if (a >= b && a - b < n) {
        write_str(g_program);
        write_str(": error: model file '");
        write_str(s.path);
        write_str("' ");
        write_str(kMessage);
        write_str("\n");
        _exit(1);
      }
    }
  }
  // Not a fault in a registered mapping: hand over to the previous action. A fault re-executes the faulting
  // instruction and raises SIGBUS again under it; a signal sent by kill()/raise() is sent once more.
  sigaction(SIGBUS, &g_previous, nullptr);
  g_installed.store(false, std::memory_order_relaxed);
  if (!info || info->si_code <= 0) raise(sig);
}

}  // namespace

void install(const char* program) {
  std::lock_guard<std::mutex> lock(g_install_mu);
  if (program) {
    std::strncpy(g_program, program, sizeof g_program - 1);
    g_program[sizeof g_program - 1] = 0;
  }
  if (g_installed.load()) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &g_previous) == 0) g_installed.store(true);
}

bool installed() { return g_installed.load(); }

bool add(const void* base, size_t size, const char* path, int fd) {
  if (!base || size == 0) return false;
  struct stat st {};
  const bool have_stat = fd >= 0 && fstat(fd, &st) == 0;
  for (Slot& s : g_slots) {
    int expect = 0;
    if (!s.state.compare_exchange_strong(expect, 1, std::memory_order_acquire)) continue;
    s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
    s.size.store(size, std::memory_order_relaxed);
    std::strncpy(s.path, path ? path : "?", kPathMax - 1);
    s.path[kPathMax - 1] = 0;
    s.dev = have_stat ? static_cast<uint64_t>(st.st_dev) : 0;
    s.ino = have_stat ? static_cast<uint64_t>(st.st_ino) : 0;
    s.file_size = have_stat ? static_cast<uint64_t>(st.st_size) : 0;
    s.mtime_ns = have_stat ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : 0;
    s.state.store(2, std::memory_order_release);
    return true;
  }
  return false;
}

void remove(const void* base) {
  if (!base) return;
  const auto b = reinterpret_cast<uintptr_t>(base);
  for (Slot& s : g_slots) {
    if (s.base.load(std::memory_order_relaxed) != b) continue;
    int expect = 2;
    if (!s.state.compare_exchange_strong(expect, 1, std::memory_order_acquire)) continue;
    s.base.store(0, std::memory_order_relaxed);
    s.size.store(0, std::memory_order_relaxed);
    s.state.store(0, std::memory_order_release);
    return;
  }
}

int count() {
  int n = 0;
  for (const Slot& s : g_slots) n += s.state.load(std::memory_order_acquire) == 2;
  return n;
}

bool changed(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  for (Slot& s : g_slots) {
    if (s.state.load(std::memory_order_acquire) != 2) continue;
    const uintptr_t b = s.base.load(std::memory_order_relaxed);
    if (!(a >= b && a - b < s.size.load(std::memory_order_relaxed))) continue;
    if (s.ino == 0 && s.dev == 0) return false;  // identity unknown
    // Only a change of the mapped inode itself matters: a file removed or renamed over (another inode at the
    // path) leaves the mapping intact.
    struct stat st {};
    if (::stat(s.path, &st) != 0) return false;
    if (static_cast<uint64_t>(st.st_dev) != s.dev || static_cast<uint64_t>(st.st_ino) != s.ino) return false;
    const int64_t mt = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    return static_cast<uint64_t>(st.st_size) != s.file_size || mt != s.mtime_ns;
  }
  return false;
}

}  // namespace rwkvl::sigbus_guard
