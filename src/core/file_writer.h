// The one writer of every output file (models, state, logits, reports, plots). An output either
// appears complete or not at all, and the writer never writes through anything but a regular file:
//  * OUT must be absent or a regular file. A directory, device, FIFO or socket at OUT is refused, and
//    so is a symbolic link unless WriteOptions::follow_symlinks (then the link's target is replaced
//    and the link kept).
//  * The data goes to an anonymous O_TMPFILE in OUT's folder (nothing to plant, nothing left by a
//    crash or SIGKILL) that is linked in at commit(): straight to OUT when OUT is absent, else to a
//    fresh random name (created exclusively) renamed over OUT. Where O_TMPFILE is not supported the
//    temporary is a random name opened O_CREAT|O_EXCL|O_NOFOLLOW, so a planted file or symlink can
//    never redirect the write.
//  * commit() fsyncs the file, renames, then fsyncs the folder. Named temporaries are removed on every
//    error path (destructor) and on SIGINT / SIGTERM / SIGHUP (a process-wide registry and handlers
//    installed with the first named temporary, which then re-raise the signal with its old action).
// Errors are Error(kIo) naming the caller's path, never the temporary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rwkvl {

struct WriteOptions {
  bool follow_symlinks = false;  // a symbolic link at OUT: replace its target (true) or refuse (false)
};

// Preflight before any work: OUT is absent or a regular file (a symlink only with follow_symlinks, and
// then to a regular file or nothing), its folder exists and this process may create files in it.
// Throws Error(kIo) with a message naming `path`.
void check_output_path(const std::string& path, const WriteOptions& opt = {});

class FileWriter {
 public:
  // Runs check_output_path() and creates the temporary.
  explicit FileWriter(const std::string& path, const WriteOptions& opt = {});
  ~FileWriter();  // discards the temporary unless commit() succeeded
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* p, size_t n);
  void pad_to(uint64_t alignment);
  uint64_t tell() const { return pos_; }
  // Makes the file appear at its path (fsync, rename, fsync of the folder). Throws Error(kIo).
  void commit();
  const std::string& path() const { return path_; }

 private:
  void flush_buffer();
  void write_fd(const void* p, size_t n);
  void discard() noexcept;
  [[noreturn]] void fail(const char* what, int err);

  std::string path_;    // what the caller asked for (in messages)
  std::string dir_;     // the folder of the file that is replaced (the link's target's with follow_symlinks)
  std::string base_;    // its name in dir_
  std::string tmp_;     // named temporary in dir_ (fallback), "" with O_TMPFILE
  int dirfd_ = -1, fd_ = -1;
  int slot_ = -1;       // signal registry slot of tmp_
  bool anonymous_ = false;
  bool committed_ = false;
  uint64_t pos_ = 0;
  std::vector<unsigned char> buf_;
  size_t buf_used_ = 0;
};

// The whole of [data, data + size) to `path` through a FileWriter.
void write_file_atomic(const std::string& path, const void* data, size_t size, const WriteOptions& opt = {});

namespace file_writer_testing {
// Tests: false makes new writers skip O_TMPFILE and use the named-temporary fallback.
void set_use_tmpfile(bool on);
// Tests: when non-empty, the only names a named temporary may take, tried in this order (the writer fails
// as when its random names are exhausted once they are used up). Empty: random names again.
void set_temp_names(std::vector<std::string> names);
// Tests: installs the clean-up handlers now (over what is there, e.g. after a fork that reset them).
void install_signal_handlers();
// Tests: the names of the named temporaries currently registered for signal clean-up.
std::vector<std::string> live_temporaries();
}  // namespace file_writer_testing

}  // namespace rwkvl
