// Batching across sessions gives exactly the unbatched greedy text: many concurrent edges with
// different prompts, draft kinds (chains of several lengths, adaptive length, static and dynamic
// trees), split sessions entering at different layers and cloud-mode decoding, against one real
// verifier over loopback gRPC, with batching on (and the passes really shared, as the
// verifier's metrics show) and off (every pass alone).
#include <thread>

#include "common/spec/drafter.h"
#include "edge/edge_generator.h"
#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/edge/loopback_verifier.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

using tandem::testing::LoopbackVerifier;
using tandem::testing::ParsePrometheusText;

class BatchedSessionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    o.tokenizer_path = tandem::testing::ModelPath("tok512.bin");
    target_ = std::move(*model::Model::Load(o)).release();
  }
  static void TearDownTestSuite() { delete target_; }

  struct Session {
    std::string what;
    EdgeOptions options;
    std::string prompt;
  };

  static std::vector<Session> Sessions() {
    const std::vector<std::string> prompts = {
        "Once upon a time", "The little dog", "Lily and Tom went to the park", "", "Sam had a red ball",
        "One day, a bird", "The sun was"};
    std::vector<Session> out;
    auto add = [&](const std::string& what, EdgeOptions o) {
      o.reply_timeout_s = 60;
      out.push_back({what, o, prompts[out.size() % prompts.size()]});
    };
    for (int gamma : {1, 2, 4, 6, 8}) {
      EdgeOptions o;
      o.mode = EdgeMode::kSpec;
      o.spec_tokens = gamma;
      add("spec g" + std::to_string(gamma), o);
    }
    {
      EdgeOptions o;
      o.mode = EdgeMode::kSpec;
      o.spec_tokens = 8;
      o.adaptive_spec_tokens = true;
      add("spec adaptive", o);
    }
    for (const char* shape : {"static:2,3", "dynamic:8"}) {
      EdgeOptions o;
      o.mode = EdgeMode::kSpec;
      o.tree = *spec::ParseTreeShape(shape);
      add(shape, o);
    }
    for (int k : {1, 3}) {
      EdgeOptions o;
      o.mode = EdgeMode::kSplit;
      o.split_layer = k;
      o.spec_tokens = 3;
      add("split k" + std::to_string(k), o);
    }
    for (int i = 0; i < 3; ++i) {
      EdgeOptions o;
      o.mode = EdgeMode::kCloud;
      add("cloud", o);
    }
    return out;
  }

  // Runs every session at once against a verifier with `batching`; returns its metrics.
  std::map<std::string, double> RunAll(const cloud::BatchingOptions& batching) {
    LoopbackVerifier v(*target_, {}, {}, nullptr, batching);
    EXPECT_TRUE(v.Start());
    auto channel = MakeVerifierChannel(v.target(), {});
    EXPECT_TRUE(channel.ok());
    const std::vector<Session> sessions = Sessions();
    constexpr int kTokens = 48;
    std::vector<std::vector<int32_t>> got(sessions.size());
    std::vector<absl::Status> status(sessions.size());
    std::vector<EdgeStats> stats(sessions.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < sessions.size(); ++i) {
      threads.emplace_back([&, i] {
        spec::ModelDrafterOptions d;
        d.layers = 3;
        auto drafter = spec::ModelDrafter::Create(*target_, nullptr, d);
        ASSERT_TRUE(drafter.ok());
        EdgeGenerator gen(*target_, drafter->get(), *channel, sessions[i].options);
        const std::vector<int32_t> prompt = target_->vocab().Encode(sessions[i].prompt, true);
        status[i] = gen.Generate(prompt, kTokens,
                                 [&](int32_t, int32_t t) { got[i].push_back(t); }, &stats[i]);
      });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < sessions.size(); ++i) {
      SCOPED_TRACE(sessions[i].what + " on '" + sessions[i].prompt + "'");
      EXPECT_TRUE(status[i].ok()) << status[i];
      const std::vector<int32_t> prompt = target_->vocab().Encode(sessions[i].prompt, true);
      EXPECT_EQ(got[i], tandem::testing::GreedyTargetAlone(*target_, prompt, kTokens));
      EXPECT_EQ(stats[i].sessions, 1);
      EXPECT_EQ(stats[i].reconnects, 0);
    }
    return ParsePrometheusText(v.MetricsText());
  }

  static model::Model* target_;
};
model::Model* BatchedSessionsTest::target_ = nullptr;

TEST_F(BatchedSessionsTest, BatchedPassesGiveTheUnbatchedText) {
  cloud::BatchingOptions on;
  on.window_s = 0.005;  // generous, so that passes surely share
  on.prefill_chunk = 4;  // prompts in several chunks, mixed with others' rounds
  std::map<std::string, double> m = RunAll(on);
  const double passes = m["tandem_engine_batch_sessions_count"];
  const double sessions = m["tandem_engine_batch_sessions_sum"];
  EXPECT_GT(passes, 0);
  EXPECT_EQ(passes, m["tandem_engine_passes_total"]);
  // Several sessions per pass on average: the passes were shared.
  EXPECT_GT(sessions, 1.5 * passes) << sessions << " session passes in " << passes << " passes";
}

TEST_F(BatchedSessionsTest, UnbatchedBaselineRunsEveryPassAlone) {
  cloud::BatchingOptions off;
  off.enabled = false;
  off.prefill_chunk = 4;
  std::map<std::string, double> m = RunAll(off);
  const double passes = m["tandem_engine_batch_sessions_count"];
  EXPECT_GT(passes, 0);
  EXPECT_EQ(m["tandem_engine_batch_sessions_sum"], passes);  // one session per pass
}

}  // namespace
}  // namespace tandem::edge
