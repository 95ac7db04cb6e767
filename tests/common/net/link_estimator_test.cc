// The link estimator recovers RTT and both bandwidths from rounds of varied sizes, follows a
// tenfold bandwidth drop within a few rounds, keeps its bandwidths when sizes carry no
// information, and ignores nonsense samples.
#include "common/net/link_estimator.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace tandem::net {
namespace {

struct Link {
  double rtt_s, up_bps, down_bps;
  double Seconds(int64_t up, int64_t down) const { return rtt_s + up * 8.0 / up_bps + down * 8.0 / down_bps; }
};

// Feeds `n` rounds with sizes like split mode (kilobytes up, a few hundred bytes down) and
// +-5% noise on the network time; the verifier's compute is subtracted exactly.
void Feed(LinkEstimator* e, const Link& link, int n, std::mt19937_64* rng) {
  std::uniform_int_distribution<int64_t> up(200, 40000), down(100, 3000);
  std::uniform_real_distribution<double> noise(0.95, 1.05), compute(0.001, 0.05);
  for (int i = 0; i < n; ++i) {
    const int64_t u = up(*rng), d = down(*rng);
    const double remote = compute(*rng);
    e->ObserveRound(u, d, link.Seconds(u, d) * noise(*rng) + remote, remote);
  }
}

TEST(LinkEstimatorTest, RecoversRttAndBandwidths) {
  std::mt19937_64 rng(1);
  for (const Link& link : {Link{0.040, 2e6, 20e6}, Link{0.005, 100e6, 100e6}, Link{0.100, 0.5e6, 10e6}}) {
    LinkEstimator e;
    Feed(&e, link, 40, &rng);
    EXPECT_NEAR(e.rtt_s(), link.rtt_s, link.rtt_s * 0.10 + 0.0005) << link.up_bps;
    EXPECT_NEAR(e.up_bps(), link.up_bps, link.up_bps * 0.10);
    // The downlink carries little; its estimate only has to predict the round well.
    EXPECT_NEAR(e.NetworkSeconds(20000, 1000), link.Seconds(20000, 1000), link.Seconds(20000, 1000) * 0.05);
  }
}

TEST(LinkEstimatorTest, FollowsATenfoldDropWithinAFewRounds) {
  std::mt19937_64 rng(2);
  LinkEstimator e;
  Feed(&e, {0.020, 10e6, 50e6}, 30, &rng);
  EXPECT_NEAR(e.up_bps(), 10e6, 1e6);
  const Link slow{0.020, 1e6, 50e6};
  int rounds = 0;
  while (rounds < 50 && std::fabs(e.up_bps() - 1e6) > 0.2e6) {
    Feed(&e, slow, 1, &rng);
    ++rounds;
  }
  RecordProperty("rounds_to_adapt", rounds);
  EXPECT_LE(rounds, 5) << "rounds to get within 20% of the new uplink";
}

TEST(LinkEstimatorTest, ConstantSizesLearnRttAndKeepThePriorBandwidth) {
  LinkEstimatorOptions o;
  o.prior_up_bps = 5e6;
  LinkEstimator e(o);
  const Link link{0.030, 5e6, 50e6};
  for (int i = 0; i < 20; ++i) e.ObserveRound(40, 12, link.Seconds(40, 12) + 0.002, 0.002);  // spec-mode sizes
  EXPECT_NEAR(e.rtt_s(), 0.030, 0.001);
  EXPECT_NEAR(e.up_bps(), 5e6, 0.5e6);
}

TEST(LinkEstimatorTest, AsksForAProbeWhenSizesCannotTellBandwidthFromRtt) {
  LinkEstimator e;
  Link link{0.010, 50e6, 50e6};
  for (int i = 0; i < 10; ++i) e.ObserveRound(800, 20, link.Seconds(800, 20), 0.0);
  EXPECT_FALSE(e.WantsProbe(16)) << "a steady link, recently started";
  // The uplink collapses; rounds keep their size: the change is noticed, and a probe asked for.
  link.up_bps = 64e3;
  for (int i = 0; i < 3; ++i) e.ObserveRound(800, 20, link.Seconds(800, 20), 0.0);
  EXPECT_GE(e.changes(), 1);
  EXPECT_TRUE(e.WantsProbe(16));
  // One round of a clearly different size (the probe) answers it, and pins the bandwidth.
  e.ObserveRound(3000, 20, link.Seconds(3000, 20), 0.0);
  EXPECT_FALSE(e.WantsProbe(16));
  e.ObserveRound(800, 20, link.Seconds(800, 20), 0.0);
  EXPECT_NEAR(e.up_bps(), 64e3, 64e3 * 0.3);
  // What the scheduler asks: the time of rounds of either size.
  for (int64_t up : {800, 3000}) {
    EXPECT_NEAR(e.NetworkSeconds(up, 20), link.Seconds(up, 20), 0.1 * link.Seconds(up, 20)) << up;
  }
  // Without changes, now and then.
  for (int i = 0; i < 16; ++i) e.ObserveRound(800, 20, link.Seconds(800, 20), 0.0);
  EXPECT_TRUE(e.WantsProbe(16));
}

TEST(LinkEstimatorTest, NonsenseSamplesAreIgnored) {
  LinkEstimator e;
  e.ObserveRound(-1, 10, 0.1, 0.0);
  e.ObserveRound(10, 10, NAN, 0.0);
  e.ObserveRound(10, 10, 0.1, INFINITY);
  e.ObserveRound(10, 10, -0.1, 0.0);
  EXPECT_EQ(e.rounds(), 0);
  // A verdict claiming more compute than the whole round: network time 0, not negative.
  e.ObserveRound(100, 100, 0.01, 0.5);
  EXPECT_GE(e.rtt_s(), 0.0);
  EXPECT_GT(e.up_bps(), 0.0);
  EXPECT_TRUE(std::isfinite(e.NetworkSeconds(1000, 1000)));
}

}  // namespace
}  // namespace tandem::net
