// A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes stay clean).
#pragma once

#include <cstdint>
#include <string>

namespace rwkvl::cli {

class Progress {
 public:
  Progress(std::string label, uint64_t total, const char* unit);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(uint64_t done);  // redraws at most about 10 times a second
  void finish();               // clears the line (idempotent)
  bool enabled() const { return enabled_; }

 private:
  void draw(uint64_t done);

  std::string label_;
  uint64_t total_;
  const char* unit_;
  bool enabled_;
  bool finished_ = false;
  double start_;
  double last_draw_ = 0.0;
};

}  // namespace rwkvl::cli
