// A session handed back by a draining verifier resumes at once on another replica, in spec, cloud
// and auto modes (with and without the scheduler): the text is the target's, exactly; the prefix
// is replayed on the new replica; auto generates no local token meanwhile. The edge's channel
// lists two replicas, A then B (gRPC's pick_first: A while it serves, B once A has gone): a load
// balancer in miniature.
#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "common/model/model_writer.h"
#include "common/spec/drafter.h"
#include "edge/edge_generator.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

class EdgeHandBackTest : public tandem::testing::Stories260KTest {
 protected:
  static void SetUpTestSuite() {
    Stories260KTest::SetUpTestSuite();
    // The edge's own model is an int8 copy of the target: local tokens would show in the text.
    const std::string path = tandem::testing::TempDir() + "/edge-q8.gguf";
    ASSERT_TRUE(model::ConvertToGguf(*target_, model::GgmlType::kQ8_0, path).ok());
    model::ModelLoadOptions o;
    o.path = path;
    edge_model_ = std::move(*model::Model::Load(o)).release();
  }
  static void TearDownTestSuite() {
    delete edge_model_;
    edge_model_ = nullptr;
    Stories260KTest::TearDownTestSuite();
  }
  static inline model::Model* edge_model_ = nullptr;
};

struct Case {
  const char* name;
  EdgeMode mode;
  bool scheduler;
};

TEST_F(EdgeHandBackTest, EveryModeResumesOnAnotherReplica) {
  const std::vector<int32_t> prompt = target_->vocab().Encode("Once upon a time", true);
  constexpr int kTokens = 120, kDrainAt = 20;
  const std::vector<int32_t> reference = tandem::testing::GreedyTargetAlone(*target_, prompt, kTokens);
  ASSERT_GT(static_cast<int>(reference.size()), kDrainAt + 20);
  for (const Case& c : {Case{"spec", EdgeMode::kSpec, false}, Case{"cloud", EdgeMode::kCloud, false},
                        Case{"auto", EdgeMode::kAuto, false},
                        Case{"auto+scheduler", EdgeMode::kAuto, true}}) {
    SCOPED_TRACE(c.name);
    tandem::testing::VerifierHarness a(*target_, cloud::VerifierLimits{});
    tandem::testing::VerifierHarness b(*target_, cloud::VerifierLimits{});
    auto channel = grpc::CreateChannel(
        absl::StrCat("ipv4:127.0.0.1:", a.port(), ",127.0.0.1:", b.port()),
        grpc::InsecureChannelCredentials());
    auto drafter = std::move(*spec::ModelDrafter::Create(*edge_model_, nullptr, {}));
    EdgeOptions o;
    o.mode = c.mode;
    o.affinity_key = "edge-under-test";
    if (c.scheduler) {
      SchedulerPolicy policy;
      policy.allowed = {RunMode::kSpec, RunMode::kCloud};
      o.scheduler = policy;
    }
    std::vector<std::string> warnings;
    o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
    std::vector<int32_t> got;
    EdgeStats stats;
    {
      EdgeGenerator gen(*edge_model_, drafter.get(), channel, o);
      absl::Status s = gen.Generate(
          prompt, kTokens,
          [&](int32_t, int32_t t) {
            got.push_back(t);
            if (got.size() != kDrainAt) return;
            // A drains mid-generation, as tandem-verifier does on SIGTERM after its hand-back
            // delay: refuse new sessions, hand the running one back, close the listener.
            a.service().StartDrain();
            EXPECT_EQ(a.service().HandBackSessions(), 1);
            a.ShutdownServer(10);
          },
          &stats);
      ASSERT_TRUE(s.ok()) << s;
    }
    EXPECT_EQ(got, reference);
    EXPECT_GE(stats.reconnects, 1);
    EXPECT_EQ(stats.tokens_local_fallback, 0);
    EXPECT_EQ(stats.fallbacks, 0);
    bool told = false;
    for (const std::string& w : warnings) told = told || absl::StrContains(w, "handed the session back");
    EXPECT_TRUE(told) << "no hand-back warning";
    EXPECT_TRUE(tandem::testing::WaitFor(
        [&] { return a.Metric("tandem_sessions_total", {{"outcome", "handed_back"}}) == 1; }));
    // B served the rest, from a session whose prompt was the replayed prefix.
    EXPECT_TRUE(tandem::testing::WaitFor([&] {
      return b.Metric("tandem_sessions_total", {{"outcome", "ok"}}) +
                 b.Metric("tandem_sessions_total", {{"outcome", "cancelled"}}) >= 1;
    }));
    EXPECT_GT(b.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "prompt"}}), 0);
  }
}

}  // namespace
}  // namespace tandem::edge
