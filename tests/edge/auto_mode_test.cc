// The scheduled auto mode against a real verifier over loopback gRPC, through the link emulator
// where the link matters: whatever the scheduler picks (spec with a draft length, split with a
// layer, cloud) and however often it changes its mind, greedy output is the target's text; it
// settles on cloud when round trips dominate a fast verifier; it leaves split for spec when the
// uplink collapses under the cloud-cost objective (a new session, prefix replayed, nothing lost
// or repeated); each change comes with a readable reason; `--split-layer auto` picks a layer
// within the policy's bounds.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/spec/drafter.h"
#include "edge/connection.h"
#include "edge/edge_generator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/obs/metrics.h"
#include "tests/cloud/http_get.h"
#include "tests/edge/loopback_verifier.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"
#include "tools/linkem/linkem.h"

namespace tandem::edge {
namespace {

using ::testing::HasSubstr;
using tandem::testing::LoopbackVerifier;

const char* const kPrompts[] = {"Once upon a time", "Zoo", "The little dog"};

class AutoModeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    target_ = std::move(*model::Model::Load(o)).release();
  }
  static void TearDownTestSuite() { delete target_; }

  void SetUp() override {
    verifier_ = std::make_unique<LoopbackVerifier>(*target_);
    ASSERT_TRUE(verifier_->Start());
    spec::ModelDrafterOptions d;
    d.layers = 3;
    drafter_ = std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  }

  std::vector<int32_t> Encode(const char* text) { return target_->vocab().Encode(text, true); }

  // Through a link emulator in front of the verifier.
  std::string Link(const linkem::LinkParams& params) {
    linkem::LinkemOptions o;
    o.upstream = verifier_->target();
    o.link = params;
    auto l = linkem::LinkEmulator::Start(o);
    EXPECT_TRUE(l.ok()) << l.status();
    link_ = std::move(*l);
    return absl::StrCat("127.0.0.1:", link_->port());
  }

  EdgeOptions Scheduled(const SchedulerPolicy& policy) {
    EdgeOptions o;
    o.mode = EdgeMode::kAuto;
    o.scheduler = policy;
    o.reply_timeout_s = 30;
    o.on_warning = [this](const std::string& w) { warnings_.push_back(w); };
    o.on_debug = [this](const std::string& line) { debug_.push_back(line); };
    o.on_round = [this](const RoundTrace& t) { trace_.push_back(t); };
    return o;
  }

  std::vector<int32_t> Generate(EdgeGenerator& gen, const std::vector<int32_t>& prompt, int n,
                                EdgeStats* stats,
                                const std::function<void(int)>& after_token = nullptr) {
    std::vector<int32_t> out;
    absl::Status s = gen.Generate(
        prompt, n,
        [&](int32_t, int32_t t) {
          out.push_back(t);
          if (after_token) after_token(static_cast<int>(out.size()));
        },
        stats);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  static model::Model* target_;
  std::unique_ptr<LoopbackVerifier> verifier_;
  std::unique_ptr<linkem::LinkEmulator> link_;
  std::unique_ptr<spec::Drafter> drafter_;
  std::vector<std::string> warnings_, debug_;
  std::vector<RoundTrace> trace_;
};
model::Model* AutoModeTest::target_ = nullptr;

SchedulerPolicy AllRemoteModes() {
  SchedulerPolicy p;
  p.allowed = {RunMode::kSpec, RunMode::kSplit, RunMode::kCloud};
  p.codecs = {{codec::CodecKind::kF32, false}};
  return p;
}

TEST_F(AutoModeTest, ExactWhateverItChooses) {
  auto channel = MakeVerifierChannel(verifier_->target(), {});
  ASSERT_TRUE(channel.ok());
  // Every remote mode allowed, and an optimistic prior: the first choice is revised as the
  // measurements come in, within and across generations of one generator.
  EdgeOptions o = Scheduled(AllRemoteModes());
  EdgeGenerator gen(*target_, drafter_.get(), *channel, o);
  int64_t changes = 0;
  for (const char* p : kPrompts) {
    const std::vector<int32_t> prompt = Encode(p);
    EdgeStats stats;
    const std::vector<int32_t> out = Generate(gen, prompt, 48, &stats);
    EXPECT_EQ(out, tandem::testing::GreedyTargetAlone(*target_, prompt, 48)) << p;
    EXPECT_FALSE(stats.final_config.empty());
    EXPECT_EQ(stats.tokens_local_fallback, 0);
    changes += stats.config_changes;
  }
  EXPECT_GE(changes, 1) << "the first choice counts as a change";
  ASSERT_FALSE(debug_.empty());
  EXPECT_THAT(debug_[0], HasSubstr("scheduler: start with"));
  EXPECT_TRUE(warnings_.empty()) << warnings_[0];
}

TEST_F(AutoModeTest, SettlesOnCloudWhenRoundTripsDominateAFastVerifier) {
  // stories260K decodes a token in well under a millisecond; every spec round costs 40 ms.
  const std::string via = Link({.rtt_ms = 40, .up_kbps = 20000, .down_kbps = 20000});
  auto channel = MakeVerifierChannel(via, {});
  ASSERT_TRUE(channel.ok());
  EdgeGenerator gen(*target_, drafter_.get(), *channel, Scheduled(AllRemoteModes()));
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  const std::vector<int32_t> want = tandem::testing::GreedyTargetAlone(*target_, prompt, 64);
  EdgeStats first;
  EXPECT_EQ(Generate(gen, prompt, 64, &first), want);
  EXPECT_EQ(first.final_config, "cloud");
  // The second generation starts from what the first learned: cloud at once, one session.
  EdgeStats second;
  EXPECT_EQ(Generate(gen, prompt, 64, &second), want);
  EXPECT_EQ(second.final_config, "cloud");
  EXPECT_EQ(second.sessions, 1);
  EXPECT_EQ(second.session_switches, 0);
  EXPECT_EQ(second.tokens_from_cloud, static_cast<int64_t>(want.size()));
  for (const std::string& line : debug_) {
    if (line.find("-> cloud") != std::string::npos || line.find("start with cloud") != std::string::npos) {
      EXPECT_THAT(line, HasSubstr("rtt "));
      return;
    }
  }
  ADD_FAILURE() << "no debug line explains the choice of cloud";
}

TEST_F(AutoModeTest, CloudCostObjectiveLeavesSplitWhenTheUplinkCollapses) {
  // Least cloud compute within 50% of the fastest: split at the deepest layer while the uplink
  // carries the states easily; at 64 kbit/s a round of states takes far too long, and spec
  // (token ids only) is chosen instead, in a new session.
  const std::string via = Link({.rtt_ms = 10, .up_kbps = 50000, .down_kbps = 50000});
  auto channel = MakeVerifierChannel(via, {});
  ASSERT_TRUE(channel.ok());
  SchedulerPolicy policy;
  policy.allowed = {RunMode::kSpec, RunMode::kSplit};
  policy.codecs = {{codec::CodecKind::kF32, false}};
  policy.objective = Objective::kCloudCost;
  policy.cost_slack = 0.5;
  EdgeGenerator gen(*target_, drafter_.get(), *channel, Scheduled(policy));
  const std::vector<int32_t> prompt = Encode("The little dog");
  const int n = 120;
  const std::vector<int32_t> want = tandem::testing::GreedyTargetAlone(*target_, prompt, n);
  EdgeStats stats;
  const std::vector<int32_t> out = Generate(gen, prompt, n, &stats, [&](int produced) {
    if (produced == 40) link_->SetLink({.rtt_ms = 10, .up_kbps = 64, .down_kbps = 50000});
  });
  EXPECT_EQ(out, want) << "a switch of session loses or repeats nothing";
  ASSERT_FALSE(trace_.empty());
  EXPECT_EQ(trace_.front().config.mode, RunMode::kSplit) << trace_.front().config.Name();
  EXPECT_EQ(trace_.back().config.mode, RunMode::kSpec) << trace_.back().config.Name();
  EXPECT_GE(stats.session_switches, 1);
  EXPECT_GE(stats.sessions, 2);
  // No flapping back to split: the probe's evidence of the slow uplink is kept while only small
  // spec messages follow (each return would replay the prefix's states over 64 kbit/s).
  EXPECT_LE(stats.sessions, 3);
  bool explained = false;
  for (const std::string& line : debug_) explained |= line.find("split k") != std::string::npos &&
                                                      line.find("-> spec") != std::string::npos &&
                                                      line.find("new session") != std::string::npos;
  EXPECT_TRUE(explained) << ::testing::PrintToString(debug_);
}

TEST_F(AutoModeTest, MeasurementsAndChoicesAreExportedAsEdgeMetrics) {
  const std::string via = Link({.rtt_ms = 30, .up_kbps = 4000, .down_kbps = 20000});
  auto channel = MakeVerifierChannel(via, {});
  ASSERT_TRUE(channel.ok());
  SchedulerPolicy policy = AllRemoteModes();
  policy.allowed = {RunMode::kSpec, RunMode::kSplit};  // rounds: the link gets measured
  EdgeOptions o = Scheduled(policy);
  o.metrics = std::make_shared<EdgeMetrics>();
  EdgeGenerator gen(*target_, drafter_.get(), *channel, o);
  EdgeStats stats;
  const std::vector<int32_t> out = Generate(gen, Encode("Zoo"), 40, &stats);
  ASSERT_FALSE(out.empty());
  using tandem::testing::SeriesKey;
  std::map<std::string, double> m =
      tandem::testing::ParsePrometheusText(obs::RenderText(*o.metrics->registry()));
  // The link as measured through the emulator: 30 ms of round trip.
  EXPECT_NEAR(m[SeriesKey("tandem_edge_link_rtt_seconds")], 0.030, 0.010);
  EXPECT_GT(m[SeriesKey("tandem_edge_link_bandwidth_bits_per_second", {{"direction", "up"}})], 0);
  EXPECT_GT(m[SeriesKey("tandem_edge_draft_seconds_per_token")], 0);
  EXPECT_GT(m[SeriesKey("tandem_edge_layer_seconds", {{"side", "cloud"}, {"term", "base"}})] +
                m[SeriesKey("tandem_edge_layer_seconds", {{"side", "cloud"}, {"term", "per_position"}})],
            0);
  const double a0 = m[SeriesKey("tandem_edge_acceptance", {{"position", "0"}})];
  EXPECT_GT(a0, 0);
  EXPECT_LE(a0, 1);
  // Counters agree with the stats; the configuration in use is the one series at 1.
  EXPECT_EQ(m[SeriesKey("tandem_edge_tokens_total", {{"source", "verified"}})],
            static_cast<double>(stats.tokens_verified));
  EXPECT_EQ(m[SeriesKey("tandem_edge_round_trips_total")], static_cast<double>(stats.round_trips));
  EXPECT_EQ(m[SeriesKey("tandem_edge_bytes_total", {{"direction", "up"}})],
            static_cast<double>(stats.bytes_up));
  EXPECT_EQ(m[SeriesKey("tandem_edge_scheduler_changes_total")],
            static_cast<double>(stats.config_changes));
  int in_use = 0;
  for (const auto& [key, value] : m) {
    if (key.rfind("tandem_edge_config{", 0) == 0) {
      in_use++;
      EXPECT_EQ(value, 1.0) << key;
      EXPECT_NE(key.find("gamma=\"" + std::to_string(trace_.back().config.gamma) + "\""), std::string::npos) << key;
    }
  }
  EXPECT_EQ(in_use, 1);
  EXPECT_GT(m[SeriesKey("tandem_edge_predicted_tokens_per_second")], 0);
}

TEST_F(AutoModeTest, SplitLayerAutoStaysWithinThePolicy) {
  auto channel = MakeVerifierChannel(verifier_->target(), {});
  ASSERT_TRUE(channel.ok());
  EdgeOptions o;
  o.mode = EdgeMode::kSplit;
  o.split_layer = 0;  // auto
  SchedulerPolicy policy;
  policy.min_split_layer = 2;
  policy.max_edge_layers = 3;
  policy.codecs = {{codec::CodecKind::kF32, false}};
  o.scheduler = policy;
  o.on_round = [this](const RoundTrace& t) { trace_.push_back(t); };
  EdgeGenerator gen(*target_, drafter_.get(), *channel, o);
  const std::vector<int32_t> prompt = Encode("Zoo");
  EdgeStats stats;
  EXPECT_EQ(Generate(gen, prompt, 48, &stats),
            tandem::testing::GreedyTargetAlone(*target_, prompt, 48));
  ASSERT_FALSE(trace_.empty());
  for (const RoundTrace& t : trace_) {
    EXPECT_EQ(t.config.mode, RunMode::kSplit);
    EXPECT_GE(t.config.split_layer, 2);
    EXPECT_LE(t.config.split_layer, 3);
  }
  EXPECT_EQ(stats.tokens_from_cloud, 0);
  EXPECT_GT(stats.tokens_verified, 0);
}

TEST_F(AutoModeTest, SplitSelfDraftingIsExactAtEveryLayer) {
  // Drafts by early exit on the edge's own layer-k states: no drafter at all.
  auto channel = MakeVerifierChannel(verifier_->target(), {});
  ASSERT_TRUE(channel.ok());
  for (int k = 1; k < target_->config().n_layers; ++k) {
    EdgeOptions o;
    o.mode = EdgeMode::kSplit;
    o.split_layer = k;
    o.split_self_draft = true;
    o.spec_tokens = 4;
    EdgeGenerator gen(*target_, nullptr, *channel, o);
    for (const char* p : kPrompts) {
      const std::vector<int32_t> prompt = Encode(p);
      EdgeStats stats;
      EXPECT_EQ(Generate(gen, prompt, 48, &stats),
                tandem::testing::GreedyTargetAlone(*target_, prompt, 48))
          << "k=" << k << " " << p;
      EXPECT_GT(stats.draft_tokens, 0);
      if (k == 4) EXPECT_GT(stats.accepted_tokens, 0) << "layer 4 of 5 drafts well";
    }
  }
}

TEST_F(AutoModeTest, PolicyWithoutAFeasibleSplitLayerIsRefused) {
  auto channel = MakeVerifierChannel(verifier_->target(), {});
  ASSERT_TRUE(channel.ok());
  EdgeOptions o;
  o.mode = EdgeMode::kSplit;
  o.split_layer = 0;
  SchedulerPolicy policy;
  policy.min_split_layer = 4;
  policy.max_edge_layers = 2;
  o.scheduler = policy;
  EdgeGenerator gen(*target_, drafter_.get(), *channel, o);
  EdgeStats stats;
  absl::Status s = gen.Generate(Encode("Zoo"), 8, [](int32_t, int32_t) {}, &stats);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("min_split_layer"));
}

}  // namespace
}  // namespace tandem::edge
