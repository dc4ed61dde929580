// Finished tensors of a long job (the compression passes) kept on storage instead of in memory: their bytes are
// appended to an anonymous temporary file and come back as read-only mapped views. A view costs page cache, not
// this process's resident memory, until it is read; release() drops the resident pages again (they are read back
// from the page cache, or from the file, when touched). So a pass that finishes a layer, spools its tensors and
// releases holds the layer at hand, not the model made so far (issue #19).
//
// The file is made with O_TMPFILE in the given folder (nothing to clean up, nothing left by a crash), or, where
// that is not supported, as a random name that is unlinked at once. Views stay valid while any of them (or the
// spool) lives. Writes that fail (a full disk) throw Error(kIo); nothing is written through a view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace rwkvl {

class Spool : public std::enable_shared_from_this<Spool> {
 public:
  // A spool whose file lives in `dir` (an existing folder this process may write). Throws Error(kIo).
  static std::shared_ptr<Spool> create(const std::string& dir);
  // A spool in the named file `path` that outlives the process (a compress journal, see compress/checkpoint.h):
  // created when absent (0600, never through a symbolic link; anything but a regular file is refused), cut to its
  // first `keep` bytes (what a journal recorded as written; the rest is an interrupted write) and appended to from
  // there. Throws Error(kIo), or Error(kFormat) when the file is shorter than `keep`.
  static std::shared_ptr<Spool> open(const std::string& path, uint64_t keep);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Copies t's bytes to the file and returns a view with the same name, dtype and shape (data 64-byte aligned).
  Tensor put(const Tensor& t);
  // The same for bytes produced piece by piece: begin() starts a tensor, append() adds bytes (any number of
  // calls), end() finishes it and returns the view (nbytes = what was appended). One tensor at a time; begin() abandons
  // a tensor that was begun and not ended (after an error).
  void begin();
  void append(const void* p, size_t n);
  Tensor end(std::string name, DType dtype, std::vector<int64_t> shape);

  // Drops this process's resident pages of every view (madvise MADV_DONTNEED on the written part).
  void release() const;
  // True when p points into a view of this spool.
  bool holds(const void* p) const;
  // Bytes written to the file so far (with alignment padding).
  uint64_t bytes() const { return size_; }
  // The file offset of p when it points into a view of this spool, else -1.
  int64_t offset_of(const void* p) const;
  // A view of bytes written earlier (by this process or, for open(), a previous one): [offset, offset + nbytes)
  // must lie in the written part (else Error(kFormat)).
  Tensor view(std::string name, DType dtype, std::vector<int64_t> shape, uint64_t offset, uint64_t nbytes);
  // Makes the written bytes durable (fdatasync). Throws Error(kIo).
  void sync() const;

 private:
  struct Segment {
    uint64_t offset = 0, length = 0;  // the part of the file this mapping covers
    uint8_t* base = nullptr;
  };
  Spool() = default;
  void write_at(uint64_t off, const void* p, size_t n);
  const uint8_t* view_of(uint64_t off, uint64_t n);  // maps a segment covering [off, off + n) when needed
  // The view of written bytes [offset, offset + nbytes) (mu_ held).
  Tensor make_view(std::string name, DType dtype, std::vector<int64_t> shape, uint64_t offset, uint64_t nbytes);
  std::string dir_;  // (the file's path for open())
  int fd_ = -1;
  uint64_t size_ = 0;        // file length
  uint64_t open_start_ = 0;  // start of the tensor begin() opened
  bool open_ = false;
  std::vector<Segment> segments_;
  mutable std::mutex mu_;
};

}  // namespace rwkvl
