// The engine worker's batch formation: with batching on, a batch holds the oldest prompt chunk
// (prompts always progress) and then rounds in arrival order within the token budget, so prefill
// never starves rounds and rounds never starve prefill; the gathering window collects the
// sessions that post a little later; with batching off every pass runs alone in arrival order.
// Jobs here run no forward (begin returns false), so only the worker's choices are seen.
#include "cloud/engine_worker.h"

#include <future>
#include <map>
#include <mutex>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

class EngineWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    model_ = std::move(*model::Model::Load(o)).release();
  }
  static void TearDownTestSuite() { delete model_; }

  struct Ran {
    std::string name;
    bool prefill;
    int rows;
    double batch;  // the batch's start: equal for the jobs of one batch
  };

  // Holds the worker until the returned promise is set, so that posted jobs queue up.
  static std::promise<void> Hold(EngineWorker& w) {
    std::promise<void> release;
    std::shared_future<void> f = release.get_future().share();
    std::promise<void> holding;
    std::future<void> held = holding.get_future();
    w.Post([f, h = std::make_shared<std::promise<void>>(std::move(holding))](model::Engine&) {
      h->set_value();
      f.wait();
    });
    held.wait();
    return release;
  }

  void PostJob(EngineWorker& w, const std::string& name, bool prefill, int rows) {
    PassJob job;
    job.prefill = prefill;
    job.rows = rows;
    job.begin = [](model::BatchItem*) -> absl::StatusOr<bool> { return false; };
    job.end = [this, name, prefill, rows](const absl::Status& s, const PassInfo& info) {
      EXPECT_TRUE(s.ok()) << s;
      std::lock_guard<std::mutex> lock(mu_);
      ran_.push_back({name, prefill, rows, info.started_at});
      done_.notify_all();
    };
    w.PostPass(std::move(job));
  }

  void WaitRan(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(done_.wait_for(lock, std::chrono::seconds(30), [&] { return ran_.size() >= n; }));
  }

  // The jobs grouped by batch, in order.
  std::vector<std::vector<Ran>> Batches() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::vector<Ran>> out;
    for (const Ran& r : ran_) {
      if (out.empty() || out.back().front().batch != r.batch) out.emplace_back();
      out.back().push_back(r);
    }
    return out;
  }

  static model::Model* model_;
  std::mutex mu_;
  std::condition_variable done_;
  std::vector<Ran> ran_;
};
model::Model* EngineWorkerTest::model_ = nullptr;

TEST_F(EngineWorkerTest, PrefillAndRoundsShareEveryBatchWithinTheBudget) {
  BatchingOptions b;
  b.max_batch_tokens = 64;
  b.window_s = 0;
  EngineWorker w(*model_, 1, b);
  std::promise<void> release = Hold(w);
  for (int i = 0; i < 4; ++i) PostJob(w, "prompt" + std::to_string(i), true, 32);
  for (int i = 0; i < 20; ++i) PostJob(w, "round" + std::to_string(i), false, 5);
  release.set_value();
  WaitRan(24);
  const std::vector<std::vector<Ran>> batches = Batches();
  int next_round = 0, next_prompt = 0;
  for (size_t k = 0; k < batches.size(); ++k) {
    int tokens = 0, prompts = 0;
    for (const Ran& r : batches[k]) {
      tokens += r.rows;
      if (r.prefill) {
        EXPECT_EQ(r.name, "prompt" + std::to_string(next_prompt++));  // oldest first
        ++prompts;
      } else {
        EXPECT_EQ(r.name, "round" + std::to_string(next_round++));  // arrival order
      }
    }
    SCOPED_TRACE(::testing::Message() << "batch " << k);
    EXPECT_LE(tokens, 64);
    // While prompts wait, every batch advances one; rounds fill the rest of the budget.
    if (k < 4) EXPECT_EQ(prompts, 1);
  }
  EXPECT_EQ(next_round, 20);
  EXPECT_EQ(next_prompt, 4);
  // 4 batches of one chunk and 6 rounds, then what is left: no round waits behind all prompts.
  EXPECT_EQ(batches[0].size(), 7u);
  EXPECT_LE(batches.size(), 5u);
}

TEST_F(EngineWorkerTest, TheWindowWaitsForSessionsThatPostALittleLater) {
  BatchingOptions b;
  b.window_s = 5.0;  // long: the batch forms when all three sessions have posted, not by time
  EngineWorker w(*model_, 1, b);
  w.SetExpectedJobs([] { return 3; });
  PostJob(w, "a", false, 5);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  PostJob(w, "b", false, 5);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  PostJob(w, "c", false, 5);
  WaitRan(3);
  const std::vector<std::vector<Ran>> batches = Batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].size(), 3u);
}

TEST_F(EngineWorkerTest, WithoutBatchingEveryPassRunsAloneInArrivalOrder) {
  BatchingOptions b;
  b.enabled = false;
  EngineWorker w(*model_, 1, b);
  w.SetExpectedJobs([] { return 10; });
  std::promise<void> release = Hold(w);
  PostJob(w, "r0", false, 5);
  PostJob(w, "p0", true, 32);
  PostJob(w, "r1", false, 5);
  release.set_value();
  WaitRan(3);
  const std::vector<std::vector<Ran>> batches = Batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0][0].name, "r0");
  EXPECT_EQ(batches[1][0].name, "p0");
  EXPECT_EQ(batches[2][0].name, "r1");
}

}  // namespace
}  // namespace tandem::cloud
