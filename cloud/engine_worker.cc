// The engine worker (see engine_worker.h).
#include "cloud/engine_worker.h"

#include <algorithm>
#include <chrono>

#include "common/util/clock.h"

namespace tandem::cloud {

EngineWorker::EngineWorker(const model::Model& model, int threads, const BatchingOptions& batching)
    : batching_(batching), pool_(threads), engine_(model, &pool_), thread_([this] { Loop(); }) {}

EngineWorker::~EngineWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EngineWorker::Post(std::function<void(model::Engine&)> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void EngineWorker::PostPass(PassJob job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool prefill = job.prefill;
    (prefill ? prefills_ : rounds_).push_back(Pending{std::move(job), MonotonicSeconds()});
    queued_++;
  }
  cv_.notify_one();
}

double EngineWorker::QueueDelay() {
  const double now = MonotonicSeconds();
  double delay = now - last_pass_end_.load() < 1.0 ? queue_delay_.load() : 0.0;
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::deque<Pending>* q : {&rounds_, &prefills_}) {
    if (!q->empty()) delay = std::max(delay, now - q->front().queued_at);
  }
  return delay;
}

void EngineWorker::SetExpectedJobs(std::function<int()> expected) {
  std::lock_guard<std::mutex> lock(mu_);
  expected_ = std::move(expected);
}

void EngineWorker::SetOnBatch(std::function<void(const BatchStats&)> on_batch) {
  std::lock_guard<std::mutex> lock(mu_);
  on_batch_ = std::move(on_batch);
}

int EngineWorker::Gather(std::vector<Pending>* batch, int tokens) {
  auto take = [&](std::deque<Pending>& q) {
    tokens += q.front().job.rows;
    batch->push_back(std::move(q.front()));
    q.pop_front();
    queued_--;
  };
  if (!batching_.enabled) {  // one job, in arrival order
    if (!batch->empty()) return tokens;
    const bool round_first =
        prefills_.empty() ||
        (!rounds_.empty() && rounds_.front().queued_at <= prefills_.front().queued_at);
    take(round_first ? rounds_ : prefills_);
    return tokens;
  }
  const int max = batching_.max_batch_tokens;
  const bool has_prefill = std::any_of(batch->begin(), batch->end(),
                                       [](const Pending& p) { return p.job.prefill; });
  if (!has_prefill && !prefills_.empty()) take(prefills_);
  while (!rounds_.empty() && (batch->empty() || tokens + rounds_.front().job.rows <= max)) {
    take(rounds_);
  }
  while (!prefills_.empty() && (batch->empty() || tokens + prefills_.front().job.rows <= max)) {
    take(prefills_);
  }
  return tokens;
}

void EngineWorker::Loop() {
  std::vector<Pending> batch;
  while (true) {
    std::function<void(model::Engine&)> task;
    batch.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] {
        return stop_ || !tasks_.empty() || !rounds_.empty() || !prefills_.empty();
      });
      if (!tasks_.empty()) {
        task = std::move(tasks_.front());
        tasks_.pop_front();
      } else if (rounds_.empty() && prefills_.empty()) {
        return;  // stop_ and drained
      } else {
        int tokens = Gather(&batch, 0);
        if (batching_.enabled && batching_.window_s > 0 && expected_) {
          // Wait a little for the sessions that have not posted yet.
          const auto deadline = std::chrono::steady_clock::now() +
                                std::chrono::duration<double>(batching_.window_s);
          while (!stop_ && tokens < batching_.max_batch_tokens &&
                 static_cast<int>(batch.size()) < expected_()) {
            const bool timed_out = cv_.wait_until(lock, deadline) == std::cv_status::timeout;
            tokens = Gather(&batch, tokens);
            if (timed_out) break;
          }
        }
      }
    }
    if (task) {
      task(engine_);
      continue;
    }
    RunBatch(&batch);
  }
}

void EngineWorker::RunBatch(std::vector<Pending>* batch) {
  const double started = MonotonicSeconds();
  items_.clear();
  item_job_.clear();
  PassInfo info;
  info.started_at = started;
  int layer_begin = -2;
  for (size_t i = 0; i < batch->size(); ++i) {
    Pending& p = (*batch)[i];
    model::BatchItem item;
    absl::StatusOr<bool> run = p.job.begin(&item);
    if (!run.ok() || !*run) {
      info.queued_at = p.queued_at;
      p.job.end(run.ok() ? absl::OkStatus() : run.status(), info);
      p.job.end = nullptr;
      continue;
    }
    const int a = item.request.layer_begin;
    layer_begin = layer_begin == -2 ? a : (layer_begin == a ? a : -1);
    info.batch_tokens += static_cast<int>(
        a == 0 ? item.request.tokens.size()
               : item.request.hidden.size() / engine_.model().config().dim);
    items_.push_back(std::move(item));
    item_job_.push_back(static_cast<int>(i));
  }
  if (!items_.empty()) engine_.ForwardBatch(std::span<model::BatchItem>(items_));
  info.seconds = MonotonicSeconds() - started;
  info.batch_sessions = static_cast<int>(items_.size());
  double queue_sum = 0;
  for (size_t k = 0; k < items_.size(); ++k) {
    Pending& p = (*batch)[item_job_[k]];
    info.queued_at = p.queued_at;
    queue_sum += started - p.queued_at;
    p.job.end(items_[k].status, info);
  }
  if (items_.empty()) return;
  const double mean_queue = queue_sum / static_cast<double>(items_.size());
  // Smoothed over about the last 8 passes.
  queue_delay_.store(0.875 * queue_delay_.load() + 0.125 * mean_queue);
  last_pass_end_.store(MonotonicSeconds());
  std::function<void(const BatchStats&)> on_batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_batch = on_batch_;
  }
  if (on_batch) {
    BatchStats stats;
    stats.sessions = info.batch_sessions;
    stats.tokens = info.batch_tokens;
    stats.layer_begin = layer_begin;
    stats.seconds = info.seconds;
    stats.mean_queue_s = mean_queue;
    on_batch(stats);
  }
}

}  // namespace tandem::cloud
