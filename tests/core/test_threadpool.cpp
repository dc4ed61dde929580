// ThreadPool: coverage and chunking of parallel_for, run_on_all, wake-up from sleep, exceptions,
// nesting and concurrent callers. Run under TSan/ASan to check the hand-off protocol.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/threadpool.h"

namespace rwkvl {
namespace {

struct Chunk {
  int64_t begin, end;
};

// Runs parallel_for and checks the contract: every index exactly once, at most size() chunks, every
// chunk starts on a multiple of grain and all but the last have a length that is a multiple of grain.
void check_cover(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n > 0 ? n : 0));
  std::mutex mu;
  std::vector<Chunk> chunks;
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lk(mu);
        chunks.push_back({b, e});
      },
      grain);
  SCOPED_TRACE(testing::Message() << "threads=" << pool.size() << " n=" << n << " grain=" << grain);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "index " << i;
  if (n <= 0) {
    EXPECT_TRUE(chunks.empty());
    return;
  }
  ASSERT_LE(static_cast<int>(chunks.size()), pool.size());
  const int64_t g = grain < 1 ? 1 : grain;
  for (const Chunk& c : chunks) {
    EXPECT_LT(c.begin, c.end);  // no empty calls
    EXPECT_EQ(c.begin % g, 0);
    if (c.end != n) {
      EXPECT_EQ((c.end - c.begin) % g, 0);
    }
  }
}

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 15, 16, 17, 63, 100, 1000, 1023, 4097}) {
      for (int64_t grain : {-1, 0, 1, 2, 3, 7, 16, 64, 1000, 5000}) check_cover(pool, n, grain);
    }
  }
}

TEST(ThreadPool, ParallelForUsesAllThreadsWhenThereIsEnoughWork) {
  ThreadPool pool(3);
  std::mutex mu;
  std::vector<Chunk> chunks;
  pool.parallel_for(300, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> lk(mu);
    chunks.push_back({b, e});
  });
  ASSERT_EQ(chunks.size(), 3u);
  for (const Chunk& c : chunks) EXPECT_EQ(c.end - c.begin, 100);  // balanced
}

TEST(ThreadPool, RunOnAllRunsEachIndexOnceAndCallerIsZero) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(threads));
    std::atomic<bool> zero_on_caller{false};
    const auto caller = std::this_thread::get_id();
    std::mutex mu;
    std::set<std::thread::id> ids;
    pool.run_on_all([&](int i) {
      hits[static_cast<size_t>(i)].fetch_add(1);
      if (i == 0) zero_on_caller = std::this_thread::get_id() == caller;
      std::lock_guard<std::mutex> lk(mu);
      ids.insert(std::this_thread::get_id());
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    EXPECT_TRUE(zero_on_caller.load());
    EXPECT_EQ(static_cast<int>(ids.size()), threads);  // really distinct threads
  }
}

TEST(ThreadPool, SizeOneRunsInlineOnCaller) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  int calls = 0;
  pool.parallel_for(1000, [&](int64_t b, int64_t e) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 1000);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPool, RejectsBadSize) {
  EXPECT_THROW(ThreadPool(0), Error);
  EXPECT_THROW(ThreadPool(-3), Error);
  EXPECT_THROW(ThreadPool(1 << 20), Error);
}

// Many back-to-back small regions: the spin hand-off path, and the generation counter never
// letting a worker run a job twice or miss one.
TEST(ThreadPool, ManyTinyRegions) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  const int kIters = 20000;
  for (int it = 0; it < kIters; ++it) {
    pool.parallel_for(4, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i + 1, std::memory_order_relaxed);
    });
  }
  EXPECT_EQ(sum.load(), int64_t{kIters} * 10);
}

// Workers may arrive late (asleep, descheduled) and find their job already finished by the others:
// they must never run a chunk of a region that has returned. Each region's state lives in a fresh
// heap block freed right after the call, so a stale chunk would be a use-after-free (ASan) or a
// miscount; irregular pauses let workers fall asleep and wake at random points.
TEST(ThreadPool, LateWorkersNeverRunFinishedRegions) {
  ThreadPool pool(3);
  uint32_t rng = 12345;
  for (int it = 0; it < 3000; ++it) {
    auto hits = std::make_unique<std::vector<std::atomic<int>>>(6);
    pool.parallel_for(6, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) (*hits)[static_cast<size_t>(i)].fetch_add(1);
    });
    for (auto& h : *hits) ASSERT_EQ(h.load(), 1) << "iteration " << it;
    hits.reset();
    rng = rng * 1664525u + 1013904223u;
    if ((rng >> 24) < 8) std::this_thread::sleep_for(std::chrono::microseconds(rng % 300));
  }
}

// Workers that have gone to sleep on the condition variable must wake for the next job (the
// lost-wake-up case), and the destructor must join sleeping workers.
TEST(ThreadPool, WakesFromSleep) {
  ThreadPool pool(3);
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // well past the spin window
    std::atomic<int> hits{0};
    pool.run_on_all([&](int) { hits.fetch_add(1); });
    EXPECT_EQ(hits.load(), 3);
  }
}

// The caller finishes early and must sleep/spin until a slow worker is done, and see its writes.
TEST(ThreadPool, CallerWaitsForSlowWorker) {
  ThreadPool pool(2);
  std::vector<int> out(2, 0);  // plain ints: the join must publish them (TSan checks this)
  pool.run_on_all([&](int i) {
    if (i == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    out[static_cast<size_t>(i)] = i + 10;
  });
  EXPECT_EQ(out[0], 10);
  EXPECT_EQ(out[1], 11);
}

TEST(ThreadPool, ExceptionsPropagateAndPoolStaysUsable) {
  ThreadPool pool(3);
  for (int thrower : {0, 1, 2}) {
    EXPECT_THROW(pool.run_on_all([&](int i) {
      if (i == thrower) throw std::runtime_error("boom");
    }),
                 std::runtime_error);
    std::atomic<int> hits{0};
    pool.run_on_all([&](int) { hits.fetch_add(1); });
    EXPECT_EQ(hits.load(), 3);
  }
  EXPECT_THROW(pool.parallel_for(90, [](int64_t b, int64_t) {
    if (b > 0) throw std::logic_error("late chunk");
  }),
               std::logic_error);
}

TEST(ThreadPool, NestedParallelForRunsInline) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(64 * 64);
  pool.parallel_for(64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      pool.parallel_for(64, [&](int64_t b2, int64_t e2) {
        for (int64_t j = b2; j < e2; ++j) hits[static_cast<size_t>(i * 64 + j)].fetch_add(1);
      });
    }
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

// Two outside threads sharing one pool: not the intended use, but it must stay correct (the second
// caller runs its shares inline).
TEST(ThreadPool, ConcurrentCallersStayCorrect) {
  ThreadPool pool(2);
  auto work = [&pool](std::atomic<int64_t>* total) {
    for (int it = 0; it < 2000; ++it)
      pool.parallel_for(100, [&](int64_t b, int64_t e) { total->fetch_add(e - b, std::memory_order_relaxed); });
  };
  std::atomic<int64_t> t1{0}, t2{0};
  std::thread a(work, &t1), b(work, &t2);
  a.join();
  b.join();
  EXPECT_EQ(t1.load(), 2000 * 100);
  EXPECT_EQ(t2.load(), 2000 * 100);
}

TEST(ThreadPool, CreateAndDestroyRepeatedly) {
  for (int i = 0; i < 50; ++i) {
    ThreadPool pool(1 + i % 4);
    if (i % 2) {
      std::atomic<int> hits{0};
      pool.run_on_all([&](int) { hits.fetch_add(1); });
      EXPECT_EQ(hits.load(), pool.size());
    }
  }
}

}  // namespace
}  // namespace rwkvl
