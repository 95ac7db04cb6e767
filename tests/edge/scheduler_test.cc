// The scheduler's cost model and decisions: longer drafts when round trips are expensive, shorter
// ones when acceptance is low, split only when the uplink can carry the states, the policy's
// bounds (allowed modes, min split layer, max edge layers) always respected, hysteresis against
// flapping, a readable explanation per change, and the cloud-cost objective.
#include "edge/scheduler.h"

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::edge {
namespace {

using ::testing::HasSubstr;

Measurements Base() {
  Measurements m;
  m.n_layers = 12;
  m.dim = 768;
  m.rtt_s = 0.020;
  m.up_bps = 10e6;
  m.down_bps = 50e6;
  m.draft_s_per_token = 0.002;
  m.edge_layer_s_per_position = 0.004;
  m.local_s_per_token = 0.030;
  m.cloud_layer_s_base = 0.0005;
  m.cloud_layer_s_per_position = 0.00005;
  m.acceptance.assign(8, 0.8);
  return m;
}

TEST(SchedulerTest, ExpectedTokens) {
  EXPECT_DOUBLE_EQ(ExpectedTokens({0.5, 0.5}, 0), 1.0);
  EXPECT_DOUBLE_EQ(ExpectedTokens({0.5, 0.5}, 2), 1.75);
  EXPECT_DOUBLE_EQ(ExpectedTokens({1.0}, 3), 2.0) << "positions without an estimate count as 0";
  EXPECT_DOUBLE_EQ(ExpectedTokens({2.0, -1.0}, 2), 2.0) << "clamped to [0, 1]";
}

TEST(SchedulerTest, RoundTripCostDrivesDraftLength) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec};
  Measurements m = Base();
  m.rtt_s = 0.002;
  Scheduler near(policy);
  const int g_near = near.Decide(m, nullptr).gamma;
  m.rtt_s = 0.100;
  Scheduler far(policy);
  const int g_far = far.Decide(m, nullptr).gamma;
  EXPECT_GT(g_far, g_near);
  m.acceptance.assign(8, 0.1);
  Scheduler poor(policy);
  EXPECT_LE(poor.Decide(m, nullptr).gamma, 1) << "drafts that are rarely accepted are not worth it";
}

TEST(SchedulerTest, SplitNeedsTheUplink) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec, RunMode::kSplit};
  Measurements m = Base();
  // Cloud layers dearer than edge layers, fast uplink: running layers at the edge pays.
  m.cloud_layer_s_base = 0.002;
  m.edge_layer_s_per_position = 0.0002;
  m.up_bps = 100e6;
  Scheduler fast(policy);
  const RunConfig c = fast.Decide(m, nullptr);
  EXPECT_EQ(c.mode, RunMode::kSplit) << c.Name();
  // The same with a 0.5 Mbit/s uplink: a 768-float state per position is too much to send.
  m.up_bps = 0.5e6;
  Scheduler slow(policy);
  EXPECT_EQ(slow.Decide(m, nullptr).mode, RunMode::kSpec);
  // At a middling uplink, the smaller codec wins over f32 when split is chosen.
  m.up_bps = 8e6;
  Scheduler mid(policy);
  const RunConfig cm = mid.Decide(m, nullptr);
  if (cm.mode == RunMode::kSplit) {
    EXPECT_EQ(cm.codec.kind, codec::CodecKind::kInt8) << cm.Name();
  }
  const Prediction f32 = mid.Predict({RunMode::kSplit, 4, 6, {codec::CodecKind::kF32, false}}, m);
  const Prediction int8 = mid.Predict({RunMode::kSplit, 4, 6, {codec::CodecKind::kInt8, false}}, m);
  EXPECT_GT(int8.tokens_per_s, f32.tokens_per_s);
  EXPECT_LT(int8.up_bytes_per_token, f32.up_bytes_per_token / 3);
}

TEST(SchedulerTest, PolicyBoundsAreAlwaysRespected) {
  SchedulerPolicy policy;
  policy.min_split_layer = 3;
  policy.max_edge_layers = 5;
  policy.allowed = {RunMode::kSplit};
  Measurements m = Base();
  Scheduler s(policy);
  for (const Prediction& p : s.PredictAll(m)) {
    EXPECT_EQ(p.config.mode, RunMode::kSplit);
    EXPECT_GE(p.config.split_layer, 3);
    EXPECT_LE(p.config.split_layer, 5);
  }
  for (double up : {0.5e6, 2e6, 100e6}) {
    m.up_bps = up;
    const RunConfig c = s.Decide(m, nullptr);
    EXPECT_GE(c.split_layer, 3);
    EXPECT_LE(c.split_layer, 5);
  }
  SchedulerPolicy local_only;
  local_only.allowed = {RunMode::kLocal};
  Scheduler l(local_only);
  EXPECT_EQ(l.Decide(m, nullptr).mode, RunMode::kLocal);
}

TEST(SchedulerTest, HysteresisAndExplanations) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec, RunMode::kLocal};
  Scheduler s(policy);
  Measurements m = Base();
  std::string why;
  const RunConfig first = s.Decide(m, &why);
  EXPECT_THAT(why, HasSubstr("start with " + first.Name()));
  // A 2% change in RTT changes nothing.
  m.rtt_s *= 1.02;
  EXPECT_EQ(s.Decide(m, &why), first);
  EXPECT_TRUE(why.empty());
  // The verifier becomes far away: local decoding is now faster; the change is explained.
  m.rtt_s = 0.300;
  const RunConfig second = s.Decide(m, &why);
  EXPECT_FALSE(second == first);
  EXPECT_THAT(why, HasSubstr(first.Name() + " -> " + second.Name()));
  EXPECT_THAT(why, HasSubstr("rtt 300.0 ms"));
  EXPECT_EQ(s.changes(), 2);
}

TEST(SchedulerTest, CloudCostObjectivePrefersLessCloudCompute) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec, RunMode::kSplit, RunMode::kCloud};
  policy.objective = Objective::kCloudCost;
  policy.cost_slack = 0.5;
  Measurements m = Base();
  m.up_bps = 100e6;
  Scheduler cost(policy);
  const RunConfig c = cost.Decide(m, nullptr);
  const Prediction pc = cost.Predict(c, m);
  policy.objective = Objective::kLatency;
  Scheduler latency(policy);
  const Prediction pl = latency.Predict(latency.Decide(m, nullptr), m);
  EXPECT_LE(pc.cloud_s_per_token, pl.cloud_s_per_token);
  EXPECT_GE(pc.tokens_per_s, pl.tokens_per_s * 0.5);
}

}  // namespace
}  // namespace tandem::edge

namespace tandem::edge {
namespace {

TEST(SchedulerTest, NewSessionsMustPayForThemselves) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec, RunMode::kCloud};
  policy.max_gamma = 4;
  Measurements m = Base();
  m.rtt_s = 0.005;
  m.acceptance.assign(8, 0.95);
  m.context_tokens = 400;
  m.remaining_tokens = 1000;
  Scheduler s(policy);
  ASSERT_EQ(s.Decide(m, nullptr).mode, RunMode::kSpec);
  // The round trip grows: cloud becomes faster per token. Near the end of the text, a new
  // session (a round trip plus replaying 400 tokens) does not pay; early on it does.
  m.rtt_s = 0.060;
  const double spec = s.Predict(s.current(), m).tokens_per_s;
  const double cloud = s.Predict({RunMode::kCloud, 0, 0, {}}, m).tokens_per_s;
  ASSERT_GT(cloud, spec * 1.2) << "the test needs cloud to be clearly faster per token";
  const double switch_s = s.SwitchSeconds({RunMode::kCloud, 0, 0, {}}, m);
  EXPECT_GT(switch_s, m.rtt_s) << "a round trip plus the replay";
  m.remaining_tokens = 3;
  ASSERT_LT(m.remaining_tokens / spec - m.remaining_tokens / cloud, switch_s);
  EXPECT_EQ(s.Decide(m, nullptr).mode, RunMode::kSpec);
  m.remaining_tokens = 1000;
  std::string why;
  EXPECT_EQ(s.Decide(m, &why).mode, RunMode::kCloud);
  EXPECT_THAT(why, HasSubstr("new session"));
  // A change of draft length keeps the session and costs nothing.
  EXPECT_TRUE(SameSession({RunMode::kSpec, 2, 0, {}}, {RunMode::kSpec, 8, 0, {}}));
  EXPECT_TRUE(SameSession({RunMode::kSplit, 2, 3, {codec::CodecKind::kF32, false}},
                          {RunMode::kSplit, 4, 3, {codec::CodecKind::kInt8, false}}));
  EXPECT_FALSE(SameSession({RunMode::kSplit, 2, 3, {}}, {RunMode::kSplit, 2, 4, {}}));
  EXPECT_FALSE(SameSession({RunMode::kSpec, 2, 0, {}}, {RunMode::kCloud, 0, 0, {}}));
}

TEST(SchedulerTest, ExactCodecUnlessALossyOneClearlyWins) {
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSplit};
  Measurements m = Base();
  // A fast uplink: int8 saves almost nothing, f32 (exact) is kept.
  m.up_bps = 1e9;
  Scheduler fast(policy);
  EXPECT_EQ(fast.Decide(m, nullptr).codec.kind, codec::CodecKind::kF32);
  // A slow one: int8 is several times faster and wins.
  m.up_bps = 1e6;
  Scheduler slow(policy);
  EXPECT_EQ(slow.Decide(m, nullptr).codec.kind, codec::CodecKind::kInt8);
}

TEST(SchedulerTest, ParseRunModes) {
  auto m = ParseRunModes("spec,cloud,split");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->size(), 3u);
  EXPECT_FALSE(ParseRunModes("spec,warp").ok());
  EXPECT_FALSE(ParseRunModes("").ok());
}

}  // namespace
}  // namespace tandem::edge
