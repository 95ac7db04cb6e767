// Tests for ThreadPool: every task runs exactly once, thread indices are valid and exclusive,
// back-to-back calls (spinning workers) and calls after idling (sleeping workers) both work.
#include "common/model/thread_pool.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::model {
namespace {

// Runs ParallelFor(n_tasks) and checks each task ran once, on a valid thread index that no
// other task was using at the same time.
void CheckOnce(ThreadPool& pool, int64_t n_tasks) {
  std::vector<std::atomic<int>> runs(n_tasks);
  std::vector<std::atomic<int>> busy(pool.size());
  std::atomic<bool> overlap{false};
  std::atomic<bool> bad_thread{false};
  pool.ParallelFor(n_tasks, [&](int64_t task, int thread) {
    if (thread < 0 || thread >= pool.size()) {
      bad_thread = true;
      return;
    }
    if (busy[thread].exchange(1) != 0) overlap = true;
    runs[task].fetch_add(1);
    busy[thread].store(0);
  });
  EXPECT_FALSE(bad_thread);
  EXPECT_FALSE(overlap);
  for (int64_t i = 0; i < n_tasks; ++i) ASSERT_EQ(runs[i].load(), 1) << "task " << i;
}

TEST(ThreadPoolTest, Size) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
}

TEST(ThreadPoolTest, EveryTaskRunsExactlyOnce) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    for (int64_t n_tasks : {0, 1, 2, 3, 5, 17, 100, 1000}) {
      SCOPED_TRACE(testing::Message() << n_threads << " threads, " << n_tasks << " tasks");
      CheckOnce(pool, n_tasks);
    }
  }
}

TEST(ThreadPoolTest, ZeroTasksDoesNotCallFn) {
  ThreadPool pool(2);
  bool called = false;
  pool.ParallelFor(0, [&](int64_t, int) { called = true; });
  pool.ParallelFor(-3, [&](int64_t, int) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPoolTest, SingleThreadRunsInOrderOnCaller) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  std::vector<int64_t> order;
  pool.ParallelFor(5, [&](int64_t task, int thread) {
    EXPECT_EQ(thread, 0);
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(task);
  });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(ThreadPoolTest, ManyBackToBackCalls) {
  ThreadPool pool(3);
  std::vector<int64_t> sums(3000);
  for (size_t call = 0; call < sums.size(); ++call) {
    const int64_t n_tasks = 1 + call % 7;  // includes fewer tasks than threads
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(n_tasks, [&](int64_t task, int) { sum.fetch_add(task + 1); });
    sums[call] = sum.load();
    ASSERT_EQ(sums[call], n_tasks * (n_tasks + 1) / 2) << "call " << call;
  }
}

TEST(ThreadPoolTest, ResultsVisibleToCallerAfterReturn) {
  ThreadPool pool(2);
  std::vector<int> out(4096);
  for (int round = 0; round < 200; ++round) {
    pool.ParallelFor(64, [&](int64_t task, int) {
      for (int i = 0; i < 64; ++i) out[task * 64 + i] = round + static_cast<int>(task);
    });
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(out[i], round + i / 64);
  }
}

TEST(ThreadPoolTest, WakesAfterWorkersSleep) {
  ThreadPool pool(2);
  for (int i = 0; i < 3; ++i) {
    // Longer than the spin phase, so the worker is blocked on its condition variable.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CheckOnce(pool, 8);
  }
}

TEST(ThreadPoolTest, UsesWorkersWhenTasksBlock) {
  // One task waits until another thread runs a second task: only possible with a real worker.
  ThreadPool pool(2);
  std::atomic<bool> other_started{false};
  std::atomic<bool> timed_out{false};
  pool.ParallelFor(2, [&](int64_t task, int) {
    if (task == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (!other_started.load()) {
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out = true;
          break;
        }
        std::this_thread::yield();
      }
    } else {
      other_started = true;
    }
  });
  EXPECT_FALSE(timed_out);
}

TEST(ThreadPoolTest, CreateAndDestroyRepeatedly) {
  for (int i = 0; i < 50; ++i) {
    auto pool = std::make_unique<ThreadPool>(1 + i % 4);
    if (i % 2 == 0) CheckOnce(*pool, 10);
  }
}

}  // namespace
}  // namespace tandem::model
