// Read-only view of a whole file: memory-mapped where possible. Every reader checks offsets and
// sizes against size() before touching bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

namespace rwkvl {

class MappedFile {
 public:
  // Throws Error(kIo) if the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // An in-memory "file" (fuzzers, tests): same interface, the bytes are owned by the object.
  static std::shared_ptr<MappedFile> from_bytes(std::vector<uint8_t> bytes, const std::string& name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // True for open(): the bytes can also be read from path() (streamed weights); false for from_bytes().
  bool on_disk() const { return on_disk_; }
  // Drops this process's resident pages of the mapping (madvise MADV_DONTNEED; they are read again from
  // the page cache when touched). No-op for in-memory files.
  void release_pages() const;
  // The same for the whole pages inside [p, p + n) (a part of the mapping).
  void release_range(const void* p, size_t n) const;
  // True if [offset, offset+len) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t len) const { return offset <= size_ && len <= size_ - offset; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  bool on_disk_ = false;
  std::vector<uint8_t> owned_;
};

}  // namespace rwkvl
