// The adaptive draft length follows acceptance and costs: long drafts when drafts are cheap and
// accepted, none when they cost as much as they save, and longer again once a round trip (the
// edge's network hook) makes every target pass expensive.
#include "common/spec/adaptive.h"

#include <cmath>

#include "common/model/sampler.h"
#include "gtest/gtest.h"

namespace tandem::spec {
namespace {

// Feeds rounds where each draft position is accepted with probability `a`.
void Train(AdaptiveGamma* g, double a, int gamma, double draft_s, double verify_base,
           double verify_per_token, uint64_t seed) {
  model::Rng rng(seed);
  for (int round = 0; round < 400; ++round) {
    const int proposed = (round % 3 == 0) ? gamma : std::max(1, gamma / 2);  // vary lengths
    int accepted = 0;
    while (accepted < proposed && rng.UniformDouble() < a) ++accepted;
    g->ObserveRound(proposed, accepted);
    g->ObserveCosts(proposed, draft_s * proposed, verify_base + verify_per_token * proposed);
  }
}

TEST(AdaptiveGammaTest, ExpectedTokensFollowsTheGeometricFormula) {
  AdaptiveGamma g(8, 0.1, 0.7);
  for (int gamma = 0; gamma <= 8; ++gamma) {
    EXPECT_NEAR(g.ExpectedTokens(gamma), (1 - std::pow(0.7, gamma + 1)) / (1 - 0.7), 1e-12);
  }
}

TEST(AdaptiveGammaTest, CheapAcceptedDraftsGetLongDrafts) {
  AdaptiveGamma g(8);
  Train(&g, 0.95, 8, /*draft_s=*/1e-4, /*verify_base=*/1e-2, /*verify_per_token=*/5e-4, 1);
  EXPECT_NEAR(g.Acceptance(0), 0.95, 0.06);
  EXPECT_NEAR(g.costs().verify_seconds_per_token, 5e-4, 1e-4);
  EXPECT_NEAR(g.costs().verify_base_seconds, 1e-2, 1e-3);
  EXPECT_GE(g.Choose(), 6);
}

TEST(AdaptiveGammaTest, DraftsThatCostAsMuchAsTheTargetAreDropped) {
  AdaptiveGamma g(8);
  Train(&g, 0.3, 4, /*draft_s=*/1e-2, /*verify_base=*/1e-2, /*verify_per_token=*/2e-3, 2);
  EXPECT_EQ(g.Choose(), 0);
}

TEST(AdaptiveGammaTest, ARoundTripMakesDraftingPayAgain) {
  AdaptiveGamma g(8);
  Train(&g, 0.7, 4, /*draft_s=*/5e-3, /*verify_base=*/1e-2, /*verify_per_token=*/1e-3, 3);
  const int local = g.Choose();
  g.SetNetwork(/*seconds_per_round=*/0.04, /*seconds_per_token=*/1e-5);  // 40 ms RTT
  const int remote = g.Choose();
  EXPECT_GT(remote, local);
  EXPECT_GE(remote, 3);
}

TEST(AdaptiveGammaTest, AcceptanceIsTrackedPerPosition) {
  AdaptiveGamma g(4, 0.2, 0.5);
  for (int i = 0; i < 200; ++i) g.ObserveRound(4, 1);  // first accepted, second always rejected
  EXPECT_GT(g.Acceptance(0), 0.99);
  EXPECT_LT(g.Acceptance(1), 0.01);
  EXPECT_NEAR(g.Acceptance(2), 0.5, 1e-12);  // never tried: still the prior
}

}  // namespace
}  // namespace tandem::spec
