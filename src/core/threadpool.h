// A small fixed pool of worker threads. The calling thread takes part in the work, so a pool of
// size 1 runs everything inline (no threads are created).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace rwkvl {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1, total including the caller
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Splits [0, n) into at most size() contiguous chunks (each a multiple of `grain`, except the last)
  // and runs fn(begin, end) on each, blocking until all are done. Not re-entrant.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain = 1);

  // Runs fn(thread_index) once on each of the size() threads (index 0 is the caller).
  void run_on_all(const std::function<void(int thread_index)>& fn);

  // Regions handed to the workers so far (each a fork and a join; work run inline is not counted): what the
  // per-token parallel overhead is made of (bench reports it per token).
  uint64_t regions() const { return regions_.load(std::memory_order_relaxed); }

 private:
  struct Impl;
  Impl* impl_ = nullptr;
  int n_threads_ = 1;
  std::atomic<uint64_t> regions_{0};
};

}  // namespace rwkvl
