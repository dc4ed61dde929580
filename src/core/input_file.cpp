#include "core/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace rwkvl {

const char* file_type_name(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFIFO: return "FIFO";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFSOCK: return "socket";
    case S_IFLNK: return "symbolic link";
    default: return "special file";
  }
}

int open_regular_file(const std::string& path, const char* what, uint64_t* size) {
  // O_NONBLOCK: open() of a FIFO without a writer (or of some devices) would otherwise wait forever. A regular
  // file ignores the flag; it is cleared anyway before any read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) RWKVL_FAIL(kIo, "cannot read %s '%s': %s", what, path.c_str(), std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    RWKVL_FAIL(kIo, "cannot read %s '%s': %s", what, path.c_str(), std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    RWKVL_FAIL(kIo, "cannot read %s '%s': it is a %s, not a regular file", what, path.c_str(),
               file_type_name(static_cast<unsigned>(st.st_mode)));
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (size) *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

InputFile InputFile::open(const std::string& path, const char* what, bool allow_stdin) {
  InputFile f;
  f.path_ = path;
  f.what_ = what;
  if (path == "-" && allow_stdin) {
    f.fd_ = ::dup(STDIN_FILENO);
    if (f.fd_ < 0) RWKVL_FAIL(kIo, "cannot read %s from standard input: %s", what, std::strerror(errno));
    f.stdin_ = true;
    f.path_ = "<stdin>";
    return f;
  }
  f.fd_ = open_regular_file(path, what, &f.size_);
  return f;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

InputFile::InputFile(InputFile&& o) noexcept { *this = std::move(o); }

InputFile& InputFile::operator=(InputFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    stdin_ = o.stdin_;
    size_ = o.size_;
    path_ = std::move(o.path_);
    what_ = std::move(o.what_);
  }
  return *this;
}

size_t InputFile::read(void* buf, size_t n) {
  RWKVL_CHECK(fd_ >= 0);
  size_t got = 0;
  auto* p = static_cast<char*>(buf);
  while (got < n) {
    const ssize_t r = ::read(fd_, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      RWKVL_FAIL(kIo, "cannot read %s '%s': %s", what_.c_str(), path_.c_str(), std::strerror(errno));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

std::string InputFile::read_all(uint64_t max_bytes) {
  auto too_big = [&] {
    RWKVL_FAIL(kInvalidArgument, "%s '%s' is larger than the limit of %llu bytes", what_.c_str(), path_.c_str(),
               static_cast<unsigned long long>(max_bytes));
  };
  if (size_ > max_bytes) too_big();
  std::string out;
  if (size_ > 0) out.reserve(static_cast<size_t>(size_));
  char buf[1 << 16];
  for (;;) {
    const size_t got = read(buf, sizeof buf);
    if (got == 0) break;
    if (out.size() + got > max_bytes) too_big();
    out.append(buf, got);
  }
  return out;
}

}  // namespace rwkvl
