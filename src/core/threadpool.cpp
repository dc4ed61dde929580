// Persistent worker pool tuned for many small parallel regions (~100 per generated token).
//
// Dispatch protocol: the caller publishes a job (function pointer + context), bumps a generation
// counter and runs its own share; workers notice the new generation, run their share and count
// down `pending`. Both sides first spin for a short while (a token's kernels follow each other
// within microseconds, so a sleeping worker would add tens of microseconds of wake-up latency per
// kernel) and then block on a condition variable so an idle pool costs no CPU.
//
// Lost wake-ups are avoided with a Dekker-style handshake on seq_cst atomics: a sleeper increments
// its "sleeping" counter under the mutex and then re-checks the condition; a waker changes the
// condition and then reads the counter, and only if someone sleeps does it take the mutex and
// notify. In the seq_cst total order one of the two must see the other's write.
#include "core/threadpool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

namespace rwkvl {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// How long a thread busy-waits before blocking. Long enough to bridge the gap between consecutive
// kernels of one token, short enough that an idle pool goes quiet almost at once.
constexpr auto kSpinTime = std::chrono::microseconds(100);

// Spins until pred() holds or kSpinTime passed; returns pred(). The clock is read only every 64
// iterations because it costs about as much as the check itself. Every 1024 iterations we yield so
// an oversubscribed machine (more threads than cores, sanitizers, ctest -j) still makes progress.
template <class Pred>
bool spin_until(Pred pred) {
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 1;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 0) {
      if ((i & 1023) == 0) std::this_thread::yield();
      if (std::chrono::steady_clock::now() - start > kSpinTime) return pred();
    }
  }
}

// Set while a thread executes pool work: a nested parallel_for then runs inline instead of
// deadlocking on the pool it is already part of.
thread_local bool t_in_pool_job = false;

}  // namespace

struct ThreadPool::Impl {
  using JobFn = void (*)(void* ctx, int thread_index);

  int n_threads = 1;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors;  // one slot per thread index, read by the caller after the join

  // The job being run: written by the caller before the generation bump (release), read by
  // workers after they observe it (acquire).
  JobFn job_fn = nullptr;
  void* job_ctx = nullptr;

  std::atomic<uint32_t> generation{0};
  std::atomic<bool> stop{false};
  std::atomic<int> pending{0};           // workers that have not finished the current job
  std::atomic<bool> busy{false};         // a caller is inside dispatch (guards against two callers)

  std::mutex mu;
  std::condition_variable work_cv;       // workers wait here for a new generation
  std::condition_variable done_cv;       // the caller waits here for pending == 0
  std::atomic<int> sleeping_workers{0};
  std::atomic<bool> caller_sleeping{false};

  void worker_main(int index) {
    t_in_pool_job = true;  // anything a worker runs is pool work
    uint32_t seen = 0;
    for (;;) {
      auto changed = [&] { return generation.load(std::memory_order_seq_cst) != seen; };
      if (!spin_until(changed)) {
        std::unique_lock<std::mutex> lk(mu);
        sleeping_workers.fetch_add(1, std::memory_order_seq_cst);
        work_cv.wait(lk, changed);
        sleeping_workers.fetch_sub(1, std::memory_order_seq_cst);
      }
      seen = generation.load(std::memory_order_acquire);
      if (stop.load(std::memory_order_acquire)) return;
      try {
        job_fn(job_ctx, index);
      } catch (...) {
        errors[static_cast<size_t>(index)] = std::current_exception();
      }
      if (pending.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_sleeping.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lk(mu);  // pairs with the caller's check under the same mutex
        done_cv.notify_one();
      }
    }
  }

  void wake_workers() {
    generation.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_workers.load(std::memory_order_seq_cst) > 0) {
      // Taking the mutex orders us after any worker that is between its re-check and wait().
      { std::lock_guard<std::mutex> lk(mu); }
      work_cv.notify_all();
    }
  }

  void wait_workers() {
    auto done = [&] { return pending.load(std::memory_order_seq_cst) == 0; };
    if (spin_until(done)) return;
    std::unique_lock<std::mutex> lk(mu);
    caller_sleeping.store(true, std::memory_order_seq_cst);
    done_cv.wait(lk, done);
    caller_sleeping.store(false, std::memory_order_seq_cst);
  }

  // Stops and joins every started worker (used by the destructor and by a failed constructor).
  void shutdown() {
    stop.store(true, std::memory_order_seq_cst);
    wake_workers();
    for (auto& t : workers) t.join();
    workers.clear();
  }

  // Runs fn(ctx, i) for every thread index i in [0, n_threads), the caller taking index 0.
  void dispatch(JobFn fn, void* ctx) {
    if (n_threads == 1 || t_in_pool_job || busy.exchange(true, std::memory_order_acquire)) {
      // Single thread, nested call from inside a job, or a second caller racing the first: run every
      // share inline so the result is the same, only slower.
      for (int i = 0; i < n_threads; ++i) fn(ctx, i);
      return;
    }
    job_fn = fn;
    job_ctx = ctx;
    pending.store(n_threads - 1, std::memory_order_relaxed);
    wake_workers();  // seq_cst bump also publishes job_fn/job_ctx/pending
    std::exception_ptr caller_error;
    t_in_pool_job = true;
    try {
      fn(ctx, 0);
    } catch (...) {
      caller_error = std::current_exception();
    }
    t_in_pool_job = false;
    wait_workers();  // even if we threw: workers still reference ctx on our stack
    std::exception_ptr first = caller_error;
    for (auto& e : errors) {
      if (e && !first) first = e;
      e = nullptr;
    }
    busy.store(false, std::memory_order_release);
    if (first) std::rethrow_exception(first);
  }
};

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads < 1) RWKVL_FAIL(kInvalidArgument, "thread pool size must be >= 1 (got %d)", n_threads);
  n_threads_ = n_threads;
  impl_ = new Impl;
  impl_->n_threads = n_threads;
  impl_->errors.resize(static_cast<size_t>(n_threads));
  Impl* im = impl_;
  try {
    im->workers.reserve(static_cast<size_t>(n_threads - 1));
    for (int i = 1; i < n_threads; ++i) im->workers.emplace_back([im, i] { im->worker_main(i); });
  } catch (...) {  // thread creation failed: join what started so nothing outlives us, then report
    im->shutdown();
    delete im;
    impl_ = nullptr;
    throw;
  }
}

ThreadPool::~ThreadPool() {
  if (!impl_) return;
  impl_->shutdown();
  delete impl_;
}

namespace {
struct ForCtx {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n, grain, blocks, chunks;
};

void for_share(void* p, int i) {
  const ForCtx& c = *static_cast<const ForCtx*>(p);
  if (i >= c.chunks) return;
  // Blocks are spread evenly: chunk i gets blocks [i*B/C, (i+1)*B/C), so sizes differ by at most one
  // block and every chunk except the one clipped at n is a multiple of grain.
  const int64_t b0 = i * c.blocks / c.chunks, b1 = (i + 1) * c.blocks / c.chunks;
  const int64_t begin = b0 * c.grain, end = std::min(c.n, b1 * c.grain);
  if (begin < end) (*c.fn)(begin, end);
}

void all_share(void* p, int i) { (*static_cast<const std::function<void(int)>*>(p))(i); }
}  // namespace

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t blocks = (n - 1) / grain + 1;
  const int64_t chunks = std::min<int64_t>(blocks, n_threads_);
  if (chunks == 1) {  // nothing to share: skip the wake-up entirely
    fn(0, n);
    return;
  }
  ForCtx ctx{&fn, n, grain, blocks, chunks};
  impl_->dispatch(&for_share, &ctx);
}

void ThreadPool::run_on_all(const std::function<void(int thread_index)>& fn) {
  impl_->dispatch(&all_share, const_cast<std::function<void(int)>*>(&fn));
}

}  // namespace rwkvl
