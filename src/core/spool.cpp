#include "core/spool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace rwkvl {

namespace {

constexpr uint64_t kAlign = 64;                  // every view starts on a 64-byte boundary (the SIMD kernels)
constexpr uint64_t kSegment = uint64_t{1} << 30;  // bytes of address space mapped at a time

uint64_t page_size() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

int open_anonymous(const std::string& dir) {
#ifdef O_TMPFILE
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT)
    RWKVL_FAIL(kIo, "cannot create a spool file in '%s': %s", dir.c_str(), std::strerror(errno));
#endif
  for (int attempt = 0; attempt < 16; ++attempt) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) r ^= static_cast<uint64_t>(getpid()) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(attempt);
    char name[64];
    std::snprintf(name, sizeof name, "/.rwkvl-spool-%016llx", static_cast<unsigned long long>(r));
    const std::string path = dir + name;
    const int named = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (named >= 0) {
      ::unlink(path.c_str());  // anonymous from here on
      return named;
    }
    if (errno != EEXIST) RWKVL_FAIL(kIo, "cannot create a spool file in '%s': %s", dir.c_str(), std::strerror(errno));
  }
  RWKVL_FAIL(kIo, "cannot create a spool file in '%s': no free name", dir.c_str());
}

}  // namespace

std::shared_ptr<Spool> Spool::create(const std::string& dir) {
  std::shared_ptr<Spool> s(new Spool());
  s->dir_ = dir.empty() ? "." : dir;
  s->fd_ = open_anonymous(s->dir_);
  return s;
}

std::shared_ptr<Spool> Spool::open(const std::string& path, uint64_t keep) {
  std::shared_ptr<Spool> s(new Spool());
  s->dir_ = path;
  s->fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (s->fd_ < 0) RWKVL_FAIL(kIo, "cannot open the spool file '%s': %s", path.c_str(), std::strerror(errno));
  struct stat st {};
  if (fstat(s->fd_, &st) != 0 || !S_ISREG(st.st_mode))
    RWKVL_FAIL(kIo, "the spool file '%s' is not a regular file", path.c_str());
  if (static_cast<uint64_t>(st.st_size) < keep)
    RWKVL_FAIL(kFormat, "the spool file '%s' holds %llu bytes, its journal says %llu were written", path.c_str(),
               static_cast<unsigned long long>(st.st_size), static_cast<unsigned long long>(keep));
  if (ftruncate(s->fd_, static_cast<off_t>(keep)) != 0)
    RWKVL_FAIL(kIo, "cannot cut the spool file '%s': %s", path.c_str(), std::strerror(errno));
  s->size_ = keep;
  return s;
}

Spool::~Spool() {
  for (const Segment& g : segments_) munmap(g.base, g.length);
  if (fd_ >= 0) ::close(fd_);
}

void Spool::write_at(uint64_t off, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd_, b, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      RWKVL_FAIL(kIo, "cannot write the spool file in '%s' (%llu bytes so far): %s", dir_.c_str(),
                 static_cast<unsigned long long>(off), w < 0 ? std::strerror(errno) : "no progress");
    b += w;
    off += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
}

const uint8_t* Spool::view_of(uint64_t off, uint64_t n) {
  for (auto g = segments_.rbegin(); g != segments_.rend(); ++g)
    if (off >= g->offset && off + n <= g->offset + g->length) return g->base + (off - g->offset);
  const uint64_t page = page_size();
  Segment g;
  g.offset = off / page * page;
  g.length = std::max(kSegment, (off + n - g.offset + page - 1) / page * page);
  // Address space only: pages past the end of the file are never touched (every view lies in written bytes).
  void* m = mmap(nullptr, g.length, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd_, static_cast<off_t>(g.offset));
  if (m == MAP_FAILED) RWKVL_FAIL(kIo, "cannot map the spool file in '%s': %s", dir_.c_str(), std::strerror(errno));
  g.base = static_cast<uint8_t*>(m);
  segments_.push_back(g);
  return g.base + (off - g.offset);
}

Tensor Spool::put(const Tensor& t) {
  begin();
  append(t.data, t.nbytes);
  return end(t.name, t.dtype, t.shape);
}

void Spool::begin() {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = true;  // (a tensor begun and never ended is abandoned: its bytes stay in the file, unused)
  open_start_ = (size_ + kAlign - 1) / kAlign * kAlign;
  size_ = open_start_;
}

void Spool::append(const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  RWKVL_CHECK(open_);
  if (n == 0) return;
  write_at(size_, p, n);
  size_ += n;
}

Tensor Spool::end(std::string name, DType dtype, std::vector<int64_t> shape) {
  std::lock_guard<std::mutex> lock(mu_);
  RWKVL_CHECK(open_);
  open_ = false;
  const uint64_t n = size_ - open_start_;
  if (n == 0) {  // a valid address for an empty view: one padding block
    static const uint8_t zero[kAlign] = {};
    write_at(size_, zero, kAlign);
    size_ += kAlign;
  }
  return make_view(std::move(name), dtype, std::move(shape), open_start_, n);
}

Tensor Spool::make_view(std::string name, DType dtype, std::vector<int64_t> shape, uint64_t offset, uint64_t nbytes) {
  Tensor v;
  v.name = std::move(name);
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.data = view_of(offset, std::max<uint64_t>(nbytes, 1));
  v.nbytes = static_cast<size_t>(nbytes);
  v.owner = std::shared_ptr<const void>(shared_from_this());
  return v;
}

void Spool::release() const {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t page = page_size();
  for (const Segment& g : segments_) {
    if (g.offset >= size_) continue;
    const uint64_t used = std::min(g.length, (size_ - g.offset + page - 1) / page * page);
    madvise(g.base, used, MADV_DONTNEED);
  }
}

int64_t Spool::offset_of(const void* p) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto* b = static_cast<const uint8_t*>(p);
  for (const Segment& g : segments_)
    if (b >= g.base && b < g.base + g.length) return static_cast<int64_t>(g.offset + static_cast<uint64_t>(b - g.base));
  return -1;
}

Tensor Spool::view(std::string name, DType dtype, std::vector<int64_t> shape, uint64_t offset, uint64_t nbytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (offset > size_ || nbytes > size_ - offset || (nbytes == 0 && offset >= size_))
    RWKVL_FAIL(kFormat, "tensor '%s' lies outside the written part of the spool file '%s'", name.c_str(), dir_.c_str());
  return make_view(std::move(name), dtype, std::move(shape), offset, nbytes);
}

void Spool::sync() const {
  if (fdatasync(fd_) != 0) RWKVL_FAIL(kIo, "cannot sync the spool file '%s': %s", dir_.c_str(), std::strerror(errno));
}

bool Spool::holds(const void* p) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto* b = static_cast<const uint8_t*>(p);
  for (const Segment& g : segments_)
    if (b >= g.base && b < g.base + g.length) return true;
  return false;
}

}  // namespace rwkvl
