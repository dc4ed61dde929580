#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common.h"

namespace rwkvl::cli {

Progress::Progress(std::string label, uint64_t total, const char* unit)
    : label_(std::move(label)), total_(total), unit_(unit), enabled_(isatty(STDERR_FILENO) == 1),
      start_(now_seconds()) {}

Progress::~Progress() { finish(); }

void Progress::update(uint64_t done) {
  if (!enabled_ || finished_) return;
  const double t = now_seconds();
  if (t - last_draw_ < 0.1 && done < total_) return;
  last_draw_ = t;
  draw(done);
}

void Progress::draw(uint64_t done) {
  constexpr int kWidth = 30;
  const double frac = total_ ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total_)) : 1.0;
  const int filled = static_cast<int>(frac * kWidth);
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = '\0';
  const double elapsed = now_seconds() - start_;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - std::min(done, total_)) / rate : 0.0;
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %llu/%llu %s, %.1f %s/s, ETA %.0f s  ", label_.c_str(), bar,
               frac * 100.0, static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
               unit_, rate, unit_, eta);
  std::fflush(stderr);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace rwkvl::cli
