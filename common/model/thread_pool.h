// A fixed pool of worker threads for data-parallel loops in the forward pass.
// Thread-safety: one caller at a time may call ParallelFor (the forward pass owns the pool);
// the pool itself is not re-entrant.
#ifndef TANDEM_COMMON_MODEL_THREAD_POOL_H_
#define TANDEM_COMMON_MODEL_THREAD_POOL_H_

#include <cstdint>
#include <functional>

namespace tandem::model {

class ThreadPool {
 public:
  // n_threads >= 1 counts the calling thread, so ThreadPool(1) starts no workers.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;

  // Calls fn(task, thread) for every task in [0, n_tasks), spread over the threads, and returns
  // when all are done. `thread` is in [0, size()) and unique among concurrently running calls, so
  // it can index per-thread scratch space.
  void ParallelFor(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_THREAD_POOL_H_
