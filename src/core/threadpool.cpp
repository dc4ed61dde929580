// Persistent worker pool tuned for many small parallel regions (~100 per generated token).
//
// Protocol. One 64-bit atomic "ticket" describes the current job: generation (32 bits), kind (1 bit),
// number of chunks and index of the next unclaimed chunk. The caller writes the job's arguments,
// stores a new ticket (which publishes them) and wakes the workers; everybody, the caller included,
// then claims chunks by compare-and-swap on the ticket, and each finished chunk counts down
// `remaining`. Because the caller claims too, a worker that is slow to wake (asleep, or descheduled
// on a busy machine) costs nothing: the caller simply runs its chunk as well, instead of waiting
// tens of microseconds or a scheduler tick for it. A worker that shows up late finds the ticket of
// an older generation (its claim fails) or one with no chunks left, and goes back to waiting.
// Arguments are read only after a successful claim, and the caller does not return (and so cannot
// overwrite them) before every claimed chunk has finished, so late workers never race with the next
// job's setup.
//
// run_on_all() needs every thread to run its own index, so there is nothing to claim: the caller
// waits for all workers, and generations cannot be skipped while such a job is open.
//
// Waiting: both sides first spin for a short while (a token's kernels follow each other within
// microseconds) and then block on a condition variable, so an idle pool costs no CPU. Lost wake-ups
// are avoided with a Dekker-style handshake on seq_cst atomics: a sleeper increments its "sleeping"
// count under the mutex and then re-checks its condition; a waker changes the condition and then
// reads the count, and only if someone sleeps does it take the mutex and notify. In the seq_cst
// total order one of the two must see the other's write.
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
// kernels of one token and a read from storage between them (a streamed head piece on eMMC takes
// 0.3-0.8 ms: with 100 us the worker slept through every read and each wake-up cost ~0.1 ms, 0.55 ms per
// token at a 25 % budget), short enough that an idle pool goes quiet within a millisecond.
constexpr auto kSpinTime = std::chrono::microseconds(1000);

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

// Ticket layout: generation << 32 | kind << 31 | chunks << 16 | next.
constexpr int kMaxThreads = 1 << 15;  // chunks <= threads must fit 15 bits
constexpr uint64_t kKindFor = uint64_t{1} << 31;
inline uint64_t make_ticket(uint32_t gen, bool is_for, uint32_t chunks) {
  return uint64_t{gen} << 32 | (is_for ? kKindFor : 0) | uint64_t{chunks} << 16;
}
inline uint32_t ticket_gen(uint64_t t) { return static_cast<uint32_t>(t >> 32); }
inline bool ticket_is_for(uint64_t t) { return (t & kKindFor) != 0; }
inline uint32_t ticket_chunks(uint64_t t) { return static_cast<uint32_t>(t >> 16) & 0x7fffu; }
inline uint32_t ticket_next(uint64_t t) { return static_cast<uint32_t>(t) & 0xffffu; }

// What a parallel region runs; written by the caller before the ticket is published.
struct JobArgs {
  const std::function<void(int64_t, int64_t)>* for_fn = nullptr;  // parallel_for
  const std::function<void(int)>* all_fn = nullptr;               // run_on_all
  int64_t n = 0, grain = 1, blocks = 0, chunks = 0;
};

}  // namespace

struct ThreadPool::Impl {
  int n_threads = 1;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors;  // one slot per thread index, read by the caller after the join

  // Hot shared state on separate cache lines: the ticket (claimed by everybody) with the arguments
  // every claimant reads next, and the countdown that the caller polls.
  alignas(64) std::atomic<uint64_t> ticket{0};
  JobArgs args;
  alignas(64) std::atomic<int64_t> remaining{0};  // chunks (parallel_for) or workers (run_on_all) not done
  // Sleep bookkeeping and flags, written rarely.
  alignas(64) std::atomic<int> sleeping_workers{0};
  std::atomic<bool> caller_sleeping{false};
  std::atomic<bool> stop{false};
  std::atomic<bool> busy{false};  // a caller is inside a region (guards against two outside callers)

  std::mutex mu;
  std::condition_variable work_cv;  // workers wait here for a new generation
  std::condition_variable done_cv;  // the caller waits here for remaining == 0

  // Runs chunk i of the current parallel_for on this thread; exceptions go to this thread's slot.
  void run_chunk(int64_t i, int index) {
    const int64_t b0 = i * args.blocks / args.chunks, b1 = (i + 1) * args.blocks / args.chunks;
    const int64_t begin = b0 * args.grain, end = std::min(args.n, b1 * args.grain);
    try {
      if (begin < end) (*args.for_fn)(begin, end);
    } catch (...) {
      if (!errors[static_cast<size_t>(index)]) errors[static_cast<size_t>(index)] = std::current_exception();
    }
  }

  void finish_one() {
    if (remaining.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_sleeping.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lk(mu);  // pairs with the caller's re-check under the same mutex
      done_cv.notify_one();
    }
  }

  // Claims and runs chunks of generation gen until none are left or a newer job has replaced it.
  void claim_chunks(uint32_t gen, int index) {
    uint64_t cur = ticket.load(std::memory_order_acquire);
    for (;;) {
      if (ticket_gen(cur) != gen || ticket_next(cur) >= ticket_chunks(cur)) return;
      if (ticket.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        run_chunk(ticket_next(cur), index);
        finish_one();
        cur = ticket.load(std::memory_order_acquire);
      }
    }
  }

  void worker_main(int index) {
    t_in_pool_job = true;  // anything a worker runs is pool work
    uint32_t seen = 0;
    for (;;) {
      auto changed = [&] { return ticket_gen(ticket.load(std::memory_order_seq_cst)) != seen; };
      if (!spin_until(changed)) {
        std::unique_lock<std::mutex> lk(mu);
        sleeping_workers.fetch_add(1, std::memory_order_seq_cst);
        work_cv.wait(lk, changed);
        sleeping_workers.fetch_sub(1, std::memory_order_seq_cst);
      }
      const uint64_t t = ticket.load(std::memory_order_acquire);
      seen = ticket_gen(t);
      if (stop.load(std::memory_order_acquire)) return;
      if (ticket_is_for(t)) {
        claim_chunks(seen, index);
      } else {
        // run_on_all: the caller waits for every worker, so this generation is still current.
        try {
          (*args.all_fn)(index);
        } catch (...) {
          errors[static_cast<size_t>(index)] = std::current_exception();
        }
        finish_one();
      }
    }
  }

  // Publishes a new job (arguments already written) and wakes sleeping workers.
  uint32_t publish(bool is_for, uint32_t chunks, int64_t to_finish) {
    const uint32_t gen = ticket_gen(ticket.load(std::memory_order_relaxed)) + 1;
    remaining.store(to_finish, std::memory_order_relaxed);
    ticket.store(make_ticket(gen, is_for, chunks), std::memory_order_seq_cst);  // also publishes args
    if (sleeping_workers.load(std::memory_order_seq_cst) > 0) {
      // Taking the mutex orders us after any worker that is between its re-check and wait().
      { std::lock_guard<std::mutex> lk(mu); }
      work_cv.notify_all();
    }
    return gen;
  }

  void wait_remaining() {
    auto done = [&] { return remaining.load(std::memory_order_seq_cst) == 0; };
    if (spin_until(done)) return;
    std::unique_lock<std::mutex> lk(mu);
    caller_sleeping.store(true, std::memory_order_seq_cst);
    done_cv.wait(lk, done);
    caller_sleeping.store(false, std::memory_order_seq_cst);
  }

  // After the join: clears the error slots and rethrows the first exception, if any.
  void end_region() {
    std::exception_ptr first;
    for (auto& e : errors) {
      if (e && !first) first = e;
      e = nullptr;
    }
    busy.store(false, std::memory_order_release);
    if (first) std::rethrow_exception(first);
  }

  // Whether this call must run inline: single thread, nested call from inside a region, or a second
  // outside caller racing the first (the result is the same, only slower).
  bool run_inline() {
    return n_threads == 1 || t_in_pool_job || busy.exchange(true, std::memory_order_acquire);
  }

  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain, int64_t blocks,
                    int64_t chunks) {
    args = JobArgs{&fn, nullptr, n, grain, blocks, chunks};
    const uint32_t gen = publish(true, static_cast<uint32_t>(chunks), chunks);
    t_in_pool_job = true;
    claim_chunks(gen, 0);
    t_in_pool_job = false;
    wait_remaining();  // chunks claimed by workers may still be running
    end_region();
  }

  void run_on_all(const std::function<void(int)>& fn) {
    args = JobArgs{nullptr, &fn, 0, 1, 0, 0};
    publish(false, 0, n_threads - 1);
    t_in_pool_job = true;
    try {
      fn(0);
    } catch (...) {
      errors[0] = std::current_exception();
    }
    t_in_pool_job = false;
    wait_remaining();  // even if we threw: workers still reference fn
    end_region();
  }

  // Stops and joins every started worker (used by the destructor and by a failed constructor).
  void shutdown() {
    stop.store(true, std::memory_order_seq_cst);
    publish(false, 0, 0);
    for (auto& t : workers) t.join();
    workers.clear();
  }
};

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads < 1 || n_threads > kMaxThreads)
    RWKVL_FAIL(kInvalidArgument, "thread pool size must be in [1, %d] (got %d)", kMaxThreads, n_threads);
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

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t blocks = (n - 1) / grain + 1;
  const int64_t chunks = std::min<int64_t>(blocks, n_threads_);
  // Blocks are spread evenly: chunk i gets blocks [i*B/C, (i+1)*B/C), so sizes differ by at most one
  // block and every chunk except the one clipped at n is a multiple of grain.
  if (chunks == 1) {  // nothing to share: skip the hand-off entirely
    fn(0, n);
    return;
  }
  if (impl_->run_inline()) {
    for (int64_t i = 0; i < chunks; ++i) {
      const int64_t b0 = i * blocks / chunks, b1 = (i + 1) * blocks / chunks;
      fn(b0 * grain, std::min(n, b1 * grain));
    }
    return;
  }
  regions_.fetch_add(1, std::memory_order_relaxed);
  impl_->parallel_for(n, fn, grain, blocks, chunks);
}

void ThreadPool::run_on_all(const std::function<void(int thread_index)>& fn) {
  if (impl_->run_inline()) {
    for (int i = 0; i < n_threads_; ++i) fn(i);
    return;
  }
  regions_.fetch_add(1, std::memory_order_relaxed);
  impl_->run_on_all(fn);
}

}  // namespace rwkvl
