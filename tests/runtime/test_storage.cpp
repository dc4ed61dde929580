// The simulated storage device (src/runtime/storage.cpp, issue #16): presets, the queue model (access times of
// reads in flight overlap, transfers share one channel) against its closed form storage_seconds(), the device's
// busy time, and bad settings. Timing checks use lower bounds (the simulation sleeps until a read's completion,
// so a read never returns early) and generous upper bounds (a busy machine only adds time).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "runtime/storage.h"
#include "test_util.h"

namespace rwkvl {
namespace {

std::string blob(size_t n) {
  const std::string path = test::temp_dir() + "/storage_blob.bin";
  std::string bytes(n, '\0');
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>(i * 13 + 1);
  test::write_file(path, bytes);
  return path;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(Storage, Presets) {
  size_t n = 0;
  const StoragePreset* all = storage_presets(&n);
  ASSERT_EQ(n, 5u);
  double last_bw = 0;
  for (size_t i = 0; i + 1 < n; ++i) {  // slowest first; page-cache last and unthrottled
    EXPECT_GT(all[i].options.mb_per_s, last_bw) << all[i].name;
    EXPECT_GT(all[i].options.latency_us, 0) << all[i].name;
    EXPECT_GE(all[i].options.queue, 1) << all[i].name;
    last_bw = all[i].options.mb_per_s;
  }
  EXPECT_EQ(storage_preset("page-cache")->options.mb_per_s, 0.0);
  EXPECT_EQ(storage_preset("emmc")->options.mb_per_s, 250.0);
  EXPECT_EQ(storage_preset("emmc")->options.queue, 2);
  EXPECT_EQ(storage_preset("EMMC"), nullptr);
  EXPECT_EQ(storage_preset(""), nullptr);
}

TEST(Storage, ClosedForm) {
  StorageOptions o;
  o.mb_per_s = 100;  // 100 bytes per microsecond
  o.latency_us = 200;
  o.queue = 4;
  // 10 reads of 1,000 bytes: one at a time 10 x 200 us + 10,000 bytes / 100 MB/s = 2.1 ms; 4 in flight: the access
  // times overlap four-fold (0.5 ms) + the same 0.1 ms of transfer.
  EXPECT_NEAR(storage_seconds(o, 10, 10000, 1), 0.0021, 1e-12);
  EXPECT_NEAR(storage_seconds(o, 10, 10000, 4), 0.0006, 1e-12);
  EXPECT_NEAR(storage_seconds(o, 10, 10000, 16), 0.0006, 1e-12);  // at most the queue
  o.mb_per_s = 0;
  EXPECT_EQ(storage_seconds(o, 10, 10000, 1), 0.0);
}

TEST(Storage, OneAtATimeBusyTimeIsTheSumOfTheReads) {
  const std::string path = blob(1 << 20);
  StorageOptions o;
  o.mb_per_s = 200;
  o.latency_us = 2000;
  Storage s(path, o);
  std::vector<char> buf(65536);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i) s.read(static_cast<uint64_t>(i) * 65536, buf.data(), buf.size());
  const double wall = seconds_since(t0);
  const double want = storage_seconds(o, 8, 8 * 65536.0, 1);  // 8 x (2 ms + 0.33 ms)
  EXPECT_GE(wall, want - 1e-4);
  EXPECT_LE(wall, want * 3 + 0.05);
  const StorageStats st = s.stats();
  EXPECT_EQ(st.reads, 8u);
  EXPECT_EQ(st.bytes, 8u * 65536u);
  // Each read is issued after the previous one returned: the busy intervals are disjoint, their sum the formula.
  EXPECT_NEAR(st.busy_seconds, want, want * 0.01);
  EXPECT_GE(st.seconds, st.busy_seconds - 1e-4);  // the caller stalled at least that long
  s.reset_stats();
  EXPECT_EQ(s.stats().busy_seconds, 0.0);
}

TEST(Storage, QueueOverlapsTheAccessTimesOfConcurrentReads) {
  const std::string path = blob(1 << 20);
  for (int queue : {1, 4}) {
    SCOPED_TRACE(queue);
    StorageOptions o;
    o.mb_per_s = 1000;
    o.latency_us = 5000;  // 5 ms access time, 4 KB reads take 4 us to transfer
    o.queue = queue;
    Storage s(path, o);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> th;
    for (int t = 0; t < 4; ++t)
      th.emplace_back([&s, t] {
        std::vector<char> buf(4096);
        for (int i = 0; i < 3; ++i) s.read(static_cast<uint64_t>(t * 3 + i) * 4096, buf.data(), buf.size());
      });
    for (auto& x : th) x.join();
    const double wall = seconds_since(t0);
    // 12 reads: one at a time 60 ms; four in flight 15 ms.
    const double want = storage_seconds(o, 12, 12 * 4096.0, 4);
    EXPECT_GE(wall, want - 1e-4);
    EXPECT_LE(wall, want * 2 + 0.04);
    EXPECT_EQ(s.stats().reads, 12u);
    EXPECT_LE(s.stats().busy_seconds, wall + 1e-3);
    EXPECT_GE(s.stats().busy_seconds, want * 0.9);
  }
}

TEST(Storage, BadSettings) {
  const std::string path = blob(4096);
  StorageOptions o;
  o.mb_per_s = 10;
  o.queue = 0;
  EXPECT_THROW(Storage(path, o), Error);
  o.queue = 5000;
  EXPECT_THROW(Storage(path, o), Error);
  o.queue = 1;
  o.latency_us = -1;
  EXPECT_THROW(Storage(path, o), Error);
  o.latency_us = 1.0 / 0.0;
  EXPECT_THROW(Storage(path, o), Error);
}

}  // namespace
}  // namespace rwkvl
