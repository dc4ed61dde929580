#include "core/mapped_file.h"

#include <algorithm>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace rwkvl {

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) RWKVL_FAIL(kIo, "cannot open '%s': %s", path.c_str(), std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    RWKVL_FAIL(kIo, "cannot stat '%s': %s", path.c_str(), std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    RWKVL_FAIL(kIo, "'%s' is not a regular file", path.c_str());
  }
  std::shared_ptr<MappedFile> mf(new MappedFile());
  mf->path_ = path;
  mf->on_disk_ = true;
  mf->size_ = static_cast<size_t>(st.st_size);
  if (mf->size_ > 0) {
    void* p = mmap(nullptr, mf->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      RWKVL_FAIL(kIo, "cannot map '%s': %s", path.c_str(), std::strerror(e));
    }
    mf->data_ = static_cast<const uint8_t*>(p);
    mf->mapped_ = true;
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
  if (mapped_) munmap(const_cast<uint8_t*>(data_), size_);
}

AtomicFileWriter::AtomicFileWriter(const std::string& path) : path_(path) {
  tmp_ = path + ".tmp." + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) RWKVL_FAIL(kIo, "cannot create '%s': %s", tmp_.c_str(), std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (f_) std::fclose(f_);
  if (!committed_) std::remove(tmp_.c_str());
}

void AtomicFileWriter::write(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n) RWKVL_FAIL(kIo, "write to '%s' failed: %s", tmp_.c_str(), std::strerror(errno));
  pos_ += n;
}

void AtomicFileWriter::pad_to(uint64_t alignment) {
  static const uint8_t zeros[256] = {};
  while (pos_ % alignment) {
    const uint64_t need = alignment - pos_ % alignment;
    write(zeros, need < sizeof(zeros) ? need : sizeof(zeros));
  }
}

void AtomicFileWriter::commit() {
  if (std::fflush(f_) != 0 || fsync(fileno(f_)) != 0)
    RWKVL_FAIL(kIo, "flush of '%s' failed: %s", tmp_.c_str(), std::strerror(errno));
  if (std::fclose(f_) != 0) {
    f_ = nullptr;
    RWKVL_FAIL(kIo, "close of '%s' failed: %s", tmp_.c_str(), std::strerror(errno));
  }
  f_ = nullptr;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    RWKVL_FAIL(kIo, "cannot rename '%s' to '%s': %s", tmp_.c_str(), path_.c_str(), std::strerror(errno));
  committed_ = true;
}

}  // namespace rwkvl
