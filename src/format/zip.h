// Minimal ZIP archive support for PyTorch checkpoints: a reader for uncompressed ("stored") archives
// held in memory (a mapped file), ZIP64 included, and a writer that produces what torch.save writes:
// stored entries whose data start on an aligned offset, plus ZIP64 end records.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rwkvl::zip {

struct Entry {
  std::string name;
  uint64_t data_offset = 0;  // absolute offset of the entry's bytes in the archive
  uint64_t size = 0;         // stored size == uncompressed size
  uint32_t crc32 = 0;        // as recorded in the central directory (not verified by the reader)
};

// Parses the end-of-central-directory record (ZIP64 where present), the central directory and each
// entry's local header. Every offset and size is checked against `size`; compressed or encrypted
// entries, multi-disk archives and duplicate names are rejected. `what` names the file in errors.
// Entries are returned in central-directory order.
std::vector<Entry> read_entries(const uint8_t* data, size_t size, const std::string& what);

// CRC-32 (ISO 3309, as used by zip), continuing from `crc` (0 to start).
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

// Streams a stored zip archive to `sink`. Entry data start on a multiple of `alignment` (torch uses
// 64) thanks to an "FB" padding extra field in the local header, as torch's writer does.
class Writer {
 public:
  using Sink = std::function<void(const void*, size_t)>;
  explicit Writer(Sink sink, bool force_zip64 = false);
  void add(const std::string& name, const void* data, uint64_t size, uint32_t alignment = 64);
  // Writes the central directory and the (ZIP64 and classic) end records. No add() afterwards.
  void finish();
  uint64_t bytes_written() const { return pos_; }

 private:
  struct Record {
    std::string name;
    uint64_t header_offset, size;
    uint32_t crc;
  };
  void put(const void* p, size_t n);
  Sink sink_;
  bool force_zip64_;
  bool finished_ = false;
  uint64_t pos_ = 0;
  std::vector<Record> records_;
};

}  // namespace rwkvl::zip
