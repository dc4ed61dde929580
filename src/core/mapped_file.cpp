#include "core/mapped_file.h"

#include <algorithm>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/sigbus_guard.h"
#include "core/input_file.h"

namespace rwkvl {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  // A regular file only, opened without blocking (a FIFO given as a model must not hang in open()).
  uint64_t file_size = 0;
  const int fd = open_regular_file(path, "file", &file_size);
  std::shared_ptr<MappedFile> mf(new MappedFile());
  mf->path_ = path;
  mf->on_disk_ = true;
  mf->size_ = static_cast<size_t>(file_size);
  if (mf->size_ > 0) {
    void* p = mmap(nullptr, mf->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      RWKVL_FAIL(kIo, "cannot map '%s': %s", path.c_str(), std::strerror(e));
    }
    mf->data_ = static_cast<const uint8_t*>(p);
    mf->mapped_ = true;
    // A SIGBUS in this range (the file truncated under us) is reported by name (core/sigbus_guard.h).
    sigbus_guard::add(p, mf->size_, path.c_str(), fd);
  }
  ::close(fd);
  return mf;
}

void MappedFile::release_pages() const {
  if (mapped_ && size_ > 0) madvise(const_cast<uint8_t*>(data_), size_, MADV_DONTNEED);
}

void MappedFile::release_range(const void* p, size_t n) const {
  if (!mapped_ || n == 0) return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto b = reinterpret_cast<uintptr_t>(p), e = b + n;
  const uintptr_t lo = std::max(reinterpret_cast<uintptr_t>(data_), (b + page - 1) / page * page);
  const uintptr_t hi = std::min(reinterpret_cast<uintptr_t>(data_) + size_, e / page * page);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

std::shared_ptr<MappedFile> MappedFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  std::shared_ptr<MappedFile> mf(new MappedFile());
  mf->path_ = name;
  mf->owned_ = std::move(bytes);
  mf->data_ = mf->owned_.data();
  mf->size_ = mf->owned_.size();
  return mf;
}

MappedFile::~MappedFile() {
  if (mapped_) sigbus_guard::remove(data_);
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace rwkvl
