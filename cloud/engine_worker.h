// The verifier's engine worker: one thread that owns the Engine and runs every forward pass.
// Sessions post passes (verification rounds, cloud-mode decode steps, prompt prefill chunks); with
// batching on, the worker gathers the pending passes of many sessions and runs them as one
// batched forward (Engine::ForwardBatch), so each weight is read once for all of them.
//
// Batch formation, each time the engine is free:
//   - the oldest pending prefill chunk, if any (prompts always progress);
//   - then rounds and decode steps, oldest first, while the batch stays within max_batch_tokens
//     (latency-bound work is never starved by prefill);
//   - then more prefill chunks if room is left;
//   - while the batch is not full and fewer sessions have posted than are active, it waits up to
//     `window_s` for more to arrive.
// With batching off, passes run one at a time in arrival order (the baseline).
// Prefill chunks are at most `prefill_chunk` positions; a session posts its next chunk when one
// ends, so a long prompt shares the engine with the others' rounds.
//
// Thread-safety: Post and PostPass may be called from any thread. Job callbacks run on the
// worker thread.
#ifndef TANDEM_CLOUD_ENGINE_WORKER_H_
#define TANDEM_CLOUD_ENGINE_WORKER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/engine.h"
#include "common/model/model.h"
#include "common/model/thread_pool.h"

namespace tandem::cloud {

struct BatchingOptions {
  bool enabled = true;
  int max_batch_tokens = 512;  // positions per batched pass
  double window_s = 0.001;     // longest wait for more sessions' work before a pass
  int prefill_chunk = 128;     // positions per prompt prefill pass
};

// What one pass was, for the job that took part and for metrics.
struct PassInfo {
  double queued_at = 0;    // when the job was posted (MonotonicSeconds)
  double started_at = 0;   // when the batch's pass started
  double seconds = 0;      // the batched forward's duration
  int batch_sessions = 0;  // jobs in the pass
  int batch_tokens = 0;    // positions in the pass
};

// One session's share of a pass.
struct PassJob {
  bool prefill = false;  // a prompt chunk (latency-tolerant)
  int rows = 1;          // positions it expects to run (for the batch budget)
  // Worker thread, as the batch forms: fills the item and returns true; false when there is
  // nothing to run; an error when the job cannot run. `end` follows in every case.
  std::function<absl::StatusOr<bool>(model::BatchItem* item)> begin;
  // Worker thread, after the pass: the item's status (or begin's error, or OK when nothing ran).
  std::function<void(const absl::Status& status, const PassInfo& info)> end;
};

// One batched pass, for metrics and the cost model.
struct BatchStats {
  int sessions = 0;
  int tokens = 0;
  int layer_begin = 0;  // first layer of every item, or -1 when they differ
  double seconds = 0;
  double mean_queue_s = 0;  // mean wait of its jobs
};

class EngineWorker {
 public:
  EngineWorker(const model::Model& model, int threads, const BatchingOptions& batching = {});
  ~EngineWorker();  // finishes queued work, then joins

  // A task that needs the engine to itself (calibration, tests); runs before queued passes.
  void Post(std::function<void(model::Engine&)> task);
  void PostPass(PassJob job);

  // How many sessions could post soon (the batch waits for them within the window); default 0.
  void SetExpectedJobs(std::function<int()> expected);
  // Called on the worker thread after every batched pass.
  void SetOnBatch(std::function<void(const BatchStats&)> on_batch);

  const BatchingOptions& batching() const { return batching_; }
  // Jobs waiting for the engine.
  int queued() const { return queued_.load(); }
  // How long work waits for the engine now (seconds): the smoothed wait of the last passes'
  // jobs while passes keep coming (forgotten a second after the last one), or the age of the
  // oldest queued job if that is longer.
  double QueueDelay();

 private:
  struct Pending {
    PassJob job;
    double queued_at = 0;
  };
  void Loop();
  // Moves the next batch out of the queues (mu_ held). Returns the positions gathered.
  int Gather(std::vector<Pending>* batch, int tokens);
  void RunBatch(std::vector<Pending>* batch);

  const BatchingOptions batching_;
  model::ThreadPool pool_;
  model::Engine engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void(model::Engine&)>> tasks_;  // GUARDED_BY(mu_)
  std::deque<Pending> rounds_, prefills_;                   // GUARDED_BY(mu_)
  bool stop_ = false;                                       // GUARDED_BY(mu_)
  std::function<int()> expected_;                           // GUARDED_BY(mu_)
  std::function<void(const BatchStats&)> on_batch_;         // GUARDED_BY(mu_)
  std::atomic<int> queued_{0};
  std::atomic<double> queue_delay_{0};
  std::atomic<double> last_pass_end_{0};
  // Worker-thread scratch.
  std::vector<model::BatchItem> items_;
  std::vector<int> item_job_;
  std::thread thread_;
};

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_ENGINE_WORKER_H_
