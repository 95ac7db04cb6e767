// ThreadPool: workers spin briefly on a generation counter and then sleep on a condition
// variable. A forward pass issues ~100 short ParallelFor calls per token, so back-to-back calls
// find the workers still spinning (dispatch costs a cache-line round trip, not a futex wake),
// while an idle pool sleeps instead of burning the cores other processes need.
// Thread-safety: ParallelFor must be called by one thread at a time (see thread_pool.h).
#include "common/model/thread_pool.h"

#include <algorithm>
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
  using Fn = std::function<void(int64_t, int)>;
  explicit Impl(int n) : n_threads(n) {}

  void WorkerLoop(int thread);
  void RunTasks(int thread, uint64_t job);

  const int n_threads;
  std::vector<std::thread> workers;

  // Job protocol. Tasks are claimed by CAS on `ticket` = (low 32 bits of the job's generation)
  // << 32 | next task index. The caller waits for `done` to reach n_tasks, not for every worker
  // to show up: on a busy machine a descheduled worker must not hold up a job it never joined.
  // A late worker that still carries an old generation cannot claim anything, because ParallelFor
  // closes the ticket under the new generation before it touches fn / n_tasks. All atomics are
  // seq_cst; they are touched a few times per task, which is cheap next to a task.
  alignas(64) std::atomic<uint64_t> generation{0};  // bumped once per job; wakes the workers
  alignas(64) std::atomic<uint64_t> ticket{0};
  alignas(64) std::atomic<int64_t> done{0};  // tasks finished in the current job
  std::atomic<const Fn*> fn{nullptr};
  std::atomic<int64_t> n_tasks{0};
  alignas(64) std::atomic<int> sleepers{0};

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;  // GUARDED_BY(mu)
};

namespace {
constexpr uint64_t kIndexMask = 0xffffffffu;
constexpr uint64_t kClosed = kIndexMask;  // an index no job reaches
constexpr int64_t kMaxTasksPerJob = int64_t{1} << 31;
uint64_t JobTag(uint64_t generation) { return (generation & kIndexMask) << 32; }
}  // namespace

void ThreadPool::Impl::RunTasks(int thread, uint64_t job) {
  const uint64_t tag = JobTag(job);
  // If these belong to a newer job than `job`, the ticket already carries that job's tag and the
  // loop below claims nothing (ParallelFor writes the ticket before them).
  const Fn* f = fn.load();
  const int64_t n = n_tasks.load();
  uint64_t t = ticket.load();
  while ((t & ~kIndexMask) == tag && static_cast<int64_t>(t & kIndexMask) < n) {
    if (ticket.compare_exchange_weak(t, t + 1)) {
      (*f)(static_cast<int64_t>(t & kIndexMask), thread);
      done.fetch_add(1);
      t = ticket.load();
    }
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
      g = generation.load();
    }
    seen = g;
    RunTasks(thread, g);
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
  if (n_tasks > kMaxTasksPerJob) {  // task indices must fit the ticket's 32 bits
    for (int64_t base = 0; base < n_tasks; base += kMaxTasksPerJob) {
      ParallelFor(std::min(kMaxTasksPerJob, n_tasks - base),
                  [&](int64_t task, int thread) { fn(base + task, thread); });
    }
    return;
  }
  const uint64_t g = p.generation.load() + 1;  // only this thread writes `generation`
  p.ticket.store(JobTag(g) | kClosed);         // late workers of older jobs now claim nothing
  p.fn.store(&fn);
  p.n_tasks.store(n_tasks);
  p.done.store(0);
  p.ticket.store(JobTag(g));  // open: next task is 0
  p.generation.store(g);      // seq_cst: publishes the job (see WorkerLoop)
  if (p.sleepers.load() > 0) {
    std::lock_guard<std::mutex> lock(p.mu);
    p.cv.notify_all();
  }
  p.RunTasks(0, g);
  for (int i = 0; p.done.load() < n_tasks; ++i) {
    if (i < kCallerSpinsBeforeYield) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace tandem::model
