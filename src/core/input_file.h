// Every input file (texts, prompts, LAMBADA, tokenizer files, state files, models) is opened here: the path
// must name a regular file (or be "-" for standard input where the caller allows it), it is opened with
// O_NONBLOCK so a FIFO or a device cannot block in open(), and it is read either in bounded pieces or whole
// up to a stated limit, so /dev/zero, /dev/urandom or a 10 GB file cannot exhaust memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rwkvl {

class InputFile {
 public:
  // Throws Error(kIo) "cannot read <what> '<path>': <reason>" when the path does not exist, is not a regular
  // file ("is a FIFO", "is a character device", "is a directory", ...) or cannot be opened. path "-" is
  // standard input when allow_stdin (its size is unknown: size() is 0).
  static InputFile open(const std::string& path, const char* what, bool allow_stdin = false);
  InputFile() = default;
  ~InputFile();
  InputFile(InputFile&& o) noexcept;
  InputFile& operator=(InputFile&& o) noexcept;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }
  uint64_t size() const { return size_; }  // at open time; 0 for standard input
  bool is_stdin() const { return stdin_; }

  // Up to n bytes (fewer only at the end of the file); 0 at the end. Throws kIo on a read error.
  size_t read(void* buf, size_t n);
  // The rest of the file when it has at most max_bytes; otherwise Error(kInvalidArgument) "<what> '<path>' is
  // larger than the limit of <max_bytes> bytes" (checked from the size first, then while reading, so a file
  // that grows, or standard input, cannot pass it either).
  std::string read_all(uint64_t max_bytes);

 private:
  int fd_ = -1;
  bool stdin_ = false;
  uint64_t size_ = 0;
  std::string path_, what_;
};

// An open file descriptor of a regular file, opened read-only without blocking on FIFOs or devices; the caller
// closes it. Throws like InputFile::open.
int open_regular_file(const std::string& path, const char* what, uint64_t* size);

// "FIFO", "directory", "character device", ... for an st_mode that is not a regular file.
const char* file_type_name(unsigned mode);

}  // namespace rwkvl
