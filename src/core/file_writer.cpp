#include "core/file_writer.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>

#include "core/error.h"

namespace rwkvl {

namespace {

// ---------------------------------------------------------------- signal clean-up registry
// Fixed slots (no allocation in the handler): 0 free, 1 being filled, 2 live (path valid).
constexpr int kSlots = 32;
struct Slot {
  std::atomic<int> state{0};
  char path[PATH_MAX];
};
Slot g_slots[kSlots];
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_old_actions[sizeof kSignals / sizeof kSignals[0]];
std::once_flag g_handlers_once;

void unlink_live_temporaries() {
  for (Slot& s : g_slots)
    if (s.state.load(std::memory_order_acquire) == 2) ::unlink(s.path);
}

// Async-signal-safe: unlink, then hand the signal to what was there before (a handler of the
// program, or the default action: restored and re-raised, so the exit status shows the signal).
void on_signal(int sig, siginfo_t* info, void* uctx) {
  const int saved_errno = errno;
  unlink_live_temporaries();
  for (size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) {
    if (kSignals[i] != sig) continue;
    const struct sigaction& old = g_old_actions[i];
    if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) {
      old.sa_sigaction(sig, info, uctx);
    } else if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
      old.sa_handler(sig);
    } else {
      sigaction(sig, &old, nullptr);
      raise(sig);  // blocked until this handler returns, then delivered with the default action
    }
  }
  errno = saved_errno;
}

void install_handlers() {
  for (size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) {
    struct sigaction old {};
    if (sigaction(kSignals[i], nullptr, &old) != 0) continue;
    if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_signal) continue;  // already ours
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) continue;  // ignored: the process survives it
    g_old_actions[i] = old;
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int s : kSignals) sigaddset(&sa.sa_mask, s);
    sigaction(kSignals[i], &sa, nullptr);
  }
}

// Returns the slot holding `path`, or -1 when it cannot be registered (too long, all slots taken).
int register_temporary(const std::string& path) {
  if (path.size() >= PATH_MAX) return -1;
  std::call_once(g_handlers_once, install_handlers);
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!g_slots[i].state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    g_slots[i].state.store(2, std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_temporary(int slot) {
  if (slot >= 0) g_slots[slot].state.store(0, std::memory_order_release);
}

// ---------------------------------------------------------------- test hooks and temporary names
std::atomic<bool> g_use_tmpfile{true};
std::mutex g_names_mu;
std::vector<std::string> g_test_names;  // when set: the only candidate names, used in order
size_t g_test_next = 0;

constexpr int kNameTries = 100;

// A fresh candidate for a named temporary next to `base` ("" when the test list is used up).
std::string temp_name(const std::string& base) {
  {
    std::lock_guard<std::mutex> lk(g_names_mu);
    if (!g_test_names.empty()) return g_test_next < g_test_names.size() ? g_test_names[g_test_next++] : std::string();
  }
  static const char kAlnum[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  unsigned char rnd[12];
  if (getrandom(rnd, sizeof rnd, 0) != static_cast<ssize_t>(sizeof rnd)) {
    std::random_device rd;
    for (unsigned char& c : rnd) c = static_cast<unsigned char>(rd());
  }
  std::string name(1, '.');
  name.append(base, 0, 200);
  name.append(".tmp-");
  for (unsigned char c : rnd) name += kAlnum[c % 62];
  return name;
}

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISLNK(m)) return "a symbolic link";
  return "not a regular file";
}

struct Target {
  std::string dir, base;
};

// Where the file that `path` names lives, after the checks of check_output_path().
Target resolve(const std::string& path, const WriteOptions& opt) {
  const char* p = path.c_str();
  if (path.empty()) RWKVL_FAIL(kInvalidArgument, "empty output file name");
  std::string file = path;
  struct stat st {};
  if (lstat(p, &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      if (!opt.follow_symlinks)
        RWKVL_FAIL(kIo, "cannot write '%s': it is a symbolic link (refusing to replace it; remove it or name its target)",
                   p);
      char* real = realpath(p, nullptr);
      if (!real) RWKVL_FAIL(kIo, "cannot write '%s': cannot follow the symbolic link: %s", p, std::strerror(errno));
      file = real;
      std::free(real);
      if (lstat(file.c_str(), &st) != 0)
        RWKVL_FAIL(kIo, "cannot write '%s': cannot access its target '%s': %s", p, file.c_str(), std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
      RWKVL_FAIL(kIo, "cannot write '%s': it is %s, not a regular file (refusing to replace it)", p, kind_of(st.st_mode));
  } else if (errno != ENOENT) {
    RWKVL_FAIL(kIo, "cannot write '%s': %s", p, std::strerror(errno));
  }
  if (file.back() == '/') RWKVL_FAIL(kIo, "cannot write '%s': it names a folder, not a file", p);
  Target t;
  const size_t k = file.find_last_of('/');
  t.dir = k == std::string::npos ? "." : k == 0 ? "/" : file.substr(0, k);
  t.base = k == std::string::npos ? file : file.substr(k + 1);
  if (t.base == "." || t.base == "..") RWKVL_FAIL(kIo, "cannot write '%s': it names a folder, not a file", p);
  struct stat ds {};
  if (stat(t.dir.c_str(), &ds) != 0)
    RWKVL_FAIL(kIo, "cannot write '%s': its folder '%s' %s", p, t.dir.c_str(),
               errno == ENOENT ? "does not exist" : std::strerror(errno));
  if (!S_ISDIR(ds.st_mode)) RWKVL_FAIL(kIo, "cannot write '%s': '%s' is not a folder", p, t.dir.c_str());
  if (access(t.dir.c_str(), W_OK | X_OK) != 0)
    RWKVL_FAIL(kIo, "cannot write '%s': cannot create files in its folder '%s': %s", p, t.dir.c_str(),
               std::strerror(errno));
  return t;
}

}  // namespace

void check_output_path(const std::string& path, const WriteOptions& opt) { resolve(path, opt); }

FileWriter::FileWriter(const std::string& path, const WriteOptions& opt) : path_(path) {
  const Target t = resolve(path, opt);
  dir_ = t.dir;
  base_ = t.base;
  dirfd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd_ < 0) fail("cannot open its folder", errno);
  if (g_use_tmpfile.load()) {
    fd_ = ::openat(dirfd_, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      anonymous_ = true;
      return;
    }
    // Not supported by this kernel or filesystem: fall back to a named temporary.
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT) fail("cannot create a temporary file", errno);
  }
  for (int i = 0; i < kNameTries; ++i) {
    const std::string name = temp_name(base_);
    if (name.empty()) break;
    slot_ = register_temporary(dir_ + "/" + name);
    fd_ = ::openat(dirfd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      tmp_ = name;
      return;
    }
    const int e = errno;
    unregister_temporary(slot_);
    slot_ = -1;
    if (e != EEXIST) fail("cannot create a temporary file", e);
  }
  fail("cannot create a temporary file", EEXIST);
}

FileWriter::~FileWriter() { discard(); }

void FileWriter::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty() && !committed_) ::unlinkat(dirfd_, tmp_.c_str(), 0);
  tmp_.clear();
  unregister_temporary(slot_);
  slot_ = -1;
  if (dirfd_ >= 0) ::close(dirfd_);
  dirfd_ = -1;
}

void FileWriter::fail(const char* what, int err) {
  RWKVL_FAIL(kIo, "cannot write '%s': %s: %s", path_.c_str(), what, std::strerror(err));
}

void FileWriter::write_fd(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd_, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail("write failed", errno);
    if (w == 0) fail("write failed", ENOSPC);
    c += w;
    n -= static_cast<size_t>(w);
  }
}

void FileWriter::flush_buffer() {
  if (buf_used_) write_fd(buf_.data(), buf_used_);
  buf_used_ = 0;
}

void FileWriter::write(const void* p, size_t n) {
  if (fd_ < 0 || committed_) RWKVL_FAIL(kIo, "cannot write '%s': the file is already closed", path_.c_str());
  constexpr size_t kBuf = 256 * 1024;
  if (n == 0) return;
  if (buf_used_ + n > kBuf) flush_buffer();
  if (n >= kBuf) {
    write_fd(p, n);
  } else {
    if (buf_.empty()) buf_.resize(kBuf);
    std::memcpy(buf_.data() + buf_used_, p, n);
    buf_used_ += n;
  }
  pos_ += n;
}

void FileWriter::pad_to(uint64_t alignment) {
  static const uint8_t zeros[256] = {};
  while (pos_ % alignment) {
    const uint64_t need = alignment - pos_ % alignment;
    write(zeros, need < sizeof(zeros) ? need : sizeof(zeros));
  }
}

void FileWriter::commit() {
  if (committed_) return;
  if (fd_ < 0) RWKVL_FAIL(kIo, "cannot write '%s': the file is already closed", path_.c_str());
  flush_buffer();
  if (::fsync(fd_) != 0) fail("cannot flush to disk", errno);
  // What is at the destination now (it may have changed since the checks).
  struct stat st {};
  bool exists = ::fstatat(dirfd_, base_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (exists && !S_ISREG(st.st_mode))
    RWKVL_FAIL(kIo, "cannot write '%s': it is now %s, not a regular file (refusing to replace it)", path_.c_str(),
               kind_of(st.st_mode));
  if (anonymous_) {
    auto link_as = [&](const std::string& name) {
      if (::linkat(fd_, "", dirfd_, name.c_str(), AT_EMPTY_PATH) == 0) return 0;
      if (errno == EEXIST) return EEXIST;
      char proc[64];
      std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd_);
      return ::linkat(AT_FDCWD, proc, dirfd_, name.c_str(), AT_SYMLINK_FOLLOW) == 0 ? 0 : errno;
    };
    int e = EEXIST;
    if (!exists) {
      e = link_as(base_);  // nothing there: the file appears complete under its name in one step
      if (e != 0 && e != EEXIST) fail("cannot link the file into its folder", e);
    }
    if (e == EEXIST) {
      // Replace: link under a fresh name (linkat never follows or replaces what is there), rename over.
      for (int i = 0; i < kNameTries && tmp_.empty(); ++i) {
        const std::string name = temp_name(base_);
        if (name.empty()) break;
        slot_ = register_temporary(dir_ + "/" + name);
        e = link_as(name);
        if (e == 0) {
          tmp_ = name;
          break;
        }
        unregister_temporary(slot_);
        slot_ = -1;
        if (e != EEXIST) fail("cannot link the file into its folder", e);
      }
      if (tmp_.empty()) fail("cannot link the file into its folder", EEXIST);
    }
  }
  if (!tmp_.empty()) {
    if (::renameat(dirfd_, tmp_.c_str(), dirfd_, base_.c_str()) != 0) fail("cannot rename the temporary file", errno);
    tmp_.clear();
    unregister_temporary(slot_);
    slot_ = -1;
  }
  committed_ = true;
  ::close(fd_);  // fsync above reported any write-back error
  fd_ = -1;
  const int ds = ::fsync(dirfd_);
  const int de = errno;
  ::close(dirfd_);
  dirfd_ = -1;
  if (ds != 0 && de != EINVAL && de != EROFS)
    RWKVL_FAIL(kIo, "'%s' was written but its folder could not be synced: %s", path_.c_str(), std::strerror(de));
}

void write_file_atomic(const std::string& path, const void* data, size_t size, const WriteOptions& opt) {
  FileWriter w(path, opt);
  w.write(data, size);
  w.commit();
}

namespace file_writer_testing {

void set_use_tmpfile(bool on) { g_use_tmpfile.store(on); }

void install_signal_handlers() { install_handlers(); }

void set_temp_names(std::vector<std::string> names) {
  std::lock_guard<std::mutex> lk(g_names_mu);
  g_test_names = std::move(names);
  g_test_next = 0;
}

std::vector<std::string> live_temporaries() {
  std::vector<std::string> out;
  for (const Slot& s : g_slots)
    if (s.state.load(std::memory_order_acquire) == 2) out.emplace_back(s.path);
  return out;
}

}  // namespace file_writer_testing

}  // namespace rwkvl
