// ThreadPool: workers spin briefly on a generation counter and then sleep on a condition
// variable. A forward pass issues ~100 short ParallelFor calls per token, so back-to-back calls
// find the workers still spinning (dispatch costs a cache-line round trip, not a futex wake),
// while an idle pool sleeps instead of burning the cores other processes need.
// Thread-safety: ParallelFor must be called by one thread at a time (see thread_pool.h).
#include "common/model/thread_pool.h"

#include <atomic>
#include <cassert>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tandem::model {
namespace {

// How long a worker spins for the next job before sleeping. Long enough to bridge the gaps
// between the ParallelFor calls of one forward pass, short enough that idle pools go quiet.
constexpr auto kSpinTime = std::chrono::microseconds(50);
// How many pause iterations the caller waits for stragglers before it starts yielding the core
// (with more threads than cores, a straggler may need our core to finish).
constexpr int kCallerSpinsBeforeYield = 2000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

struct ThreadPool::Impl {
  explicit Impl(int n) : n_threads(n) {}

  void WorkerLoop(int thread);
  void RunTasks(int thread);

  const int n_threads;
  std::vector<std::thread> workers;

  // The current job. Written by the caller before `generation` is bumped (release) and read by
  // workers after they observe the bump (acquire).
  const std::function<void(int64_t, int)>* fn = nullptr;
  int64_t n_tasks = 0;

  alignas(64) std::atomic<uint64_t> generation{0};
  alignas(64) std::atomic<int64_t> next_task{0};
  // Workers that have not yet finished the current job; the caller waits for zero so that no
  // worker can touch `fn` or `next_task` once ParallelFor returns.
  alignas(64) std::atomic<int> workers_busy{0};
  alignas(64) std::atomic<int> sleepers{0};

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;  // GUARDED_BY(mu)
};

void ThreadPool::Impl::RunTasks(int thread) {
  const int64_t n = n_tasks;
  for (int64_t i = next_task.fetch_add(1, std::memory_order_relaxed); i < n;
       i = next_task.fetch_add(1, std::memory_order_relaxed)) {
    (*fn)(i, thread);
  }
}

void ThreadPool::Impl::WorkerLoop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    // Spin phase: cheap polling of one cache line.
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    uint64_t g = generation.load(std::memory_order_acquire);
    for (int i = 0; g == seen; ++i) {
      CpuRelax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
      g = generation.load(std::memory_order_acquire);
    }
    if (g == seen) {
      // Sleep phase. `sleepers` is incremented before re-checking `generation` (both seq_cst),
      // and ParallelFor bumps `generation` before reading `sleepers`, so either the caller sees
      // us and notifies under the mutex, or we see the new generation and do not wait.
      std::unique_lock<std::mutex> lock(mu);
      sleepers.fetch_add(1);
      cv.wait(lock, [&] { return stop || generation.load() != seen; });
      sleepers.fetch_sub(1);
      if (stop) return;
      g = generation.load(std::memory_order_acquire);
    }
    seen = g;
    RunTasks(thread);
    workers_busy.fetch_sub(1, std::memory_order_release);
  }
}

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl(n_threads < 1 ? 1 : n_threads)) {
  for (int i = 1; i < impl_->n_threads; ++i) {
    impl_->workers.emplace_back([this, i] { impl_->WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  // Sleeping workers wake here; spinning ones reach the sleep phase within kSpinTime and see
  // `stop` before waiting.
  impl_->cv.notify_all();
  for (std::thread& t : impl_->workers) t.join();
  delete impl_;
}

int ThreadPool::size() const { return impl_->n_threads; }

void ThreadPool::ParallelFor(int64_t n_tasks,
                             const std::function<void(int64_t task, int thread)>& fn) {
  if (n_tasks <= 0) return;
  Impl& p = *impl_;
  if (p.n_threads == 1 || n_tasks == 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
  p.fn = &fn;
  p.n_tasks = n_tasks;
  p.next_task.store(0, std::memory_order_relaxed);
  p.workers_busy.store(p.n_threads - 1, std::memory_order_relaxed);
  p.generation.fetch_add(1);  // seq_cst: publishes the job (see WorkerLoop)
  if (p.sleepers.load() > 0) {
    std::lock_guard<std::mutex> lock(p.mu);
    p.cv.notify_all();
  }
  p.RunTasks(0);
  for (int i = 0; p.workers_busy.load(std::memory_order_acquire) != 0; ++i) {
    if (i < kCallerSpinsBeforeYield) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace tandem::model
