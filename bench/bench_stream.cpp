// Streaming weights from the model file under a memory budget: pread into own buffers (what the runtime
// does) against mmap with explicit madvise release (MADV_DONTNEED after each layer, optionally
// MADV_WILLNEED on the next one), on the layers of a real native model file, side by side in one run.
//
// Each "token" reads every layer's streamable projections once, in order, and consumes them the way a
// matvec does (every byte loaded once); it then measures time per token, GB/s, and how much the process's
// peak RSS grew (the budget counts file-backed mapped pages too). Two cache states:
//   warm: the file is in the page cache (a board with RAM to spare for it, or a second run);
//   cold: posix_fadvise(DONTNEED) drops the file's pages before every token (the reads hit storage).
//
//   bench_stream MODEL.rwkvl [tokens]      (native rwkv-lite file; e.g. from rwkv-lite synth or convert)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "runtime/layer_stream.h"
#include "runtime/sysinfo.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Range {
  uint64_t offset, size;
};

// What a matvec does with the weights: every 8-byte word loaded once. The sum keeps the loads alive.
uint64_t consume(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    s += w;
  }
  for (; i < n; ++i) s += p[i];
  return s;
}

void drop_page_cache(int fd) { (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); }

enum class Mode { kPread, kMmap, kMmapWillneed };
const char* mode_name(Mode m) {
  return m == Mode::kPread ? "pread into own buffer" : m == Mode::kMmap ? "mmap + DONTNEED" : "mmap + WILLNEED/DONTNEED";
}

struct Result {
  double ms_per_token = 0, gb_per_s = 0;
  uint64_t rss_growth = 0;
};

Result run(Mode mode, bool cold, const std::vector<std::vector<Range>>& layers, int fd, const uint8_t* map,
           int tokens, volatile uint64_t* sink) {
  uint64_t largest = 0, total = 0;
  for (const auto& l : layers) {
    uint64_t b = 0;
    for (const Range& r : l) b += r.size;
    largest = std::max(largest, b);
    total += b;
  }
  const long page = sysconf(_SC_PAGESIZE);
  auto release = [&](const std::vector<Range>& l) {
    for (const Range& r : l) {
      const uint64_t b = (r.offset + static_cast<uint64_t>(page) - 1) / static_cast<uint64_t>(page) * static_cast<uint64_t>(page);
      const uint64_t e = (r.offset + r.size) / static_cast<uint64_t>(page) * static_cast<uint64_t>(page);
      if (e > b) (void)madvise(const_cast<uint8_t*>(map) + b, e - b, MADV_DONTNEED);
    }
  };
  auto willneed = [&](const std::vector<Range>& l) {
    for (const Range& r : l) {
      const uint64_t b = r.offset / static_cast<uint64_t>(page) * static_cast<uint64_t>(page);
      (void)madvise(const_cast<uint8_t*>(map) + b, r.offset + r.size - b, MADV_WILLNEED);
    }
  };
  std::vector<uint8_t> buf;
  Result res;
  double seconds = 0;
  for (const auto& l : layers) release(l);
  buf.clear();
  buf.shrink_to_fit();
  rwkvl::reset_peak_rss();
  const uint64_t base = rwkvl::peak_rss_bytes();
  if (mode == Mode::kPread) buf.resize(largest);
  for (int t = 0; t < tokens; ++t) {
    if (cold) drop_page_cache(fd);
    const auto t0 = Clock::now();
    for (size_t li = 0; li < layers.size(); ++li) {
      const auto& l = layers[li];
      if (mode == Mode::kPread) {
        uint64_t at = 0;
        for (const Range& r : l) {
          uint64_t done = 0;
          while (done < r.size) {
            const ssize_t got = pread(fd, buf.data() + at + done, r.size - done, static_cast<off_t>(r.offset + done));
            if (got <= 0) RWKVL_FAIL(kIo, "pread failed: %s", got < 0 ? std::strerror(errno) : "end of file");
            done += static_cast<uint64_t>(got);
          }
          at += r.size;
        }
        *sink = *sink + consume(buf.data(), at);
      } else {
        if (mode == Mode::kMmapWillneed && li + 1 < layers.size()) willneed(layers[li + 1]);
        for (const Range& r : l) *sink = *sink + consume(map + r.offset, r.size);
        release(l);
      }
    }
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  const uint64_t peak = rwkvl::peak_rss_bytes();
  res.rss_growth = peak > base ? peak - base : 0;
  // The allocator may hand back pages an earlier row already touched (no growth seen): the buffer is held anyway.
  if (mode == Mode::kPread) res.rss_growth = std::max(res.rss_growth, largest);
  res.ms_per_token = 1e3 * seconds / tokens;
  res.gb_per_s = static_cast<double>(total) * tokens / seconds / 1e9;
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_stream MODEL.rwkvl [tokens]\n");
    return 2;
  }
  const std::string path = argv[1];
  const int tokens = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  try {
    rwkvl::Model::LoadOptions lo;
    const auto model = rwkvl::Model::load(path, lo);
    const auto& f = model->file();
    if (!f || !f->on_disk()) {
      std::fprintf(stderr, "bench_stream: %s is not a native rwkv-lite file (convert it first)\n", path.c_str());
      return 1;
    }
    std::vector<std::vector<Range>> layers;
    uint64_t total = 0;
    for (int l = 0; l < model->config().n_layer; ++l) {
      std::vector<Range> rs;
      rwkvl::for_each_stream_part(model->layer(l), [&](const rwkvl::kern::MatRef& r) {
        const auto* p = static_cast<const uint8_t*>(r.data);
        const uint64_t n = static_cast<uint64_t>(rwkvl::kern::row_bytes(r.dtype, r.cols) * r.rows);
        rs.push_back({static_cast<uint64_t>(p - f->data()), n});
        total += n;
      });
      layers.push_back(std::move(rs));
    }
    f->release_pages();
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) RWKVL_FAIL(kIo, "cannot open %s: %s", path.c_str(), std::strerror(errno));
    volatile uint64_t sink = 0;
    std::printf("%s: %d layers, %.1f MiB of streamable projections per token, %d tokens per row\n\n", path.c_str(),
                model->config().n_layer, static_cast<double>(total) / 1048576.0, tokens);
    std::printf("%-6s %-26s %12s %10s %16s %10s\n", "cache", "mode", "ms/token", "GB/s", "held (RSS)", "vs pread");
    for (bool cold : {false, true}) {
      // One untimed pass brings the file into the page cache for the warm rows.
      if (!cold) (void)run(Mode::kPread, false, layers, fd, f->data(), 1, &sink);
      double pread_ms = 0;
      for (Mode m : {Mode::kPread, Mode::kMmap, Mode::kMmapWillneed}) {
        const Result r = run(m, cold, layers, fd, f->data(), tokens, &sink);
        if (m == Mode::kPread) pread_ms = r.ms_per_token;
        std::printf("%-6s %-26s %12.2f %10.2f %12.2f MiB %9.2fx\n", cold ? "cold" : "warm", mode_name(m), r.ms_per_token,
                    r.gb_per_s, static_cast<double>(r.rss_growth) / 1048576.0, pread_ms / r.ms_per_token);
      }
    }
    close(fd);
    std::printf("\n(vs pread > 1: faster than pread. held: pread holds one layer's buffer; for mmap, the growth of peak RSS: "
                "the layer's pages, with fault-around and readahead neighbours, until DONTNEED drops them.)\n");
    return sink == 42 ? 3 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_stream: %s\n", e.what());
    return 1;
  }
}
