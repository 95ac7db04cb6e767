// Rounds with context (the edge's `uncertain` policy): the context is committed unchecked and the
// drafts after it verified in the same single pass, exactly as if the context had been committed
// first, greedy and sampled; a refused round leaves the sequence as it was.
#include <random>

#include "common/spec/target_verifier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"  // the Stories260KTest fixture
#include "tests/greedy_reference.h"

namespace tandem::spec {
namespace {

using ::testing::HasSubstr;

class TargetVerifierContextTest : public tandem::testing::Stories260KTest {
 protected:
  void SetUp() override { engine_ = std::make_unique<model::Engine>(*target_, nullptr); }
  std::unique_ptr<model::Engine> engine_;
};

// Two sequences fed the same rounds: one gets each round's context in the round, the other
// commits it first (Commit) and verifies the drafts alone. Verdicts and sequences must match,
// through rejections (rollback) and acceptances, greedy and sampled (same seed: the context
// consumes no randomness).
TEST_F(TargetVerifierContextTest, ContextInTheRoundEqualsCommittingItFirst) {
  for (float temperature : {0.0f, 0.9f}) {
    model::SamplerOptions s;
    s.temperature = temperature;
    s.seed = 11;
    auto with = TargetVerifier::Create(*target_, 256, s);
    auto apart = TargetVerifier::Create(*target_, 256, s);
    ASSERT_TRUE(with.ok() && apart.ok());
    std::vector<int32_t> prompt = target_->vocab().Encode("Once upon a time", true);
    ASSERT_TRUE((*with)->Commit(*engine_, prompt).ok());
    ASSERT_TRUE((*apart)->Commit(*engine_, prompt).ok());
    std::mt19937 rng(3);
    int accepted = 0;
    const int vocab = target_->config().vocab_size;
    for (int round = 0; round < 20; ++round) {
      std::vector<int32_t> context(rng() % 4);
      for (int32_t& t : context) t = static_cast<int32_t>(rng() % vocab);
      // Drafts: the target's greedy continuation after the context with one token made wrong
      // (some get accepted, then a rejection), or anything.
      std::vector<int32_t> after = (*with)->committed();
      after.insert(after.end(), context.begin(), context.end());
      std::vector<int32_t> drafts = tandem::testing::GreedyTargetAlone(*target_, after, rng() % 5);
      if (!drafts.empty()) {
        const size_t wrong = rng() % (drafts.size() + 1);
        if (rng() % 3 == 0) {
          for (int32_t& t : drafts) t = static_cast<int32_t>(rng() % vocab);
        } else if (wrong < drafts.size()) {
          drafts[wrong] = (drafts[wrong] + 1) % vocab;
        }
      }
      auto a = (*with)->VerifyRound(*engine_, drafts, {}, DraftProbs{}, nullptr, {}, context);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE((*apart)->Commit(*engine_, context).ok());
      auto b = (*apart)->VerifyRound(*engine_, drafts, {}, DraftProbs{});
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_EQ(a->path, b->path) << "temperature " << temperature << " round " << round;
      accepted += static_cast<int>(a->path.size());
      EXPECT_EQ(a->next_token, b->next_token) << "temperature " << temperature << " round " << round;
      ASSERT_EQ((*with)->committed(), (*apart)->committed());
    }
    EXPECT_GT(accepted, 3) << "temperature " << temperature;
    EXPECT_EQ((*with)->forward_passes(), 20);  // one pass per round, context or not
  }
}

TEST_F(TargetVerifierContextTest, RefusedContextLeavesTheSequenceAsItWas) {
  auto v = TargetVerifier::Create(*target_, 16, {});
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE((*v)->Commit(*engine_, std::vector<int32_t>{1, 403, 261}).ok());
  const std::vector<int32_t> before = (*v)->committed();
  auto expect = [&](std::vector<int32_t> context, std::vector<int32_t> drafts,
                    std::vector<int32_t> parents, absl::StatusCode code, const char* text) {
    auto r = (*v)->VerifyRound(*engine_, drafts, parents, DraftProbs{}, nullptr, {}, context);
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(text));
    EXPECT_EQ((*v)->committed(), before);
  };
  expect({5, 512}, {}, {}, absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  expect({5}, {6, 7}, {-1, -1}, absl::StatusCode::kInvalidArgument, "chains only");
  expect(std::vector<int32_t>(13, 5), {}, {}, absl::StatusCode::kInvalidArgument, "do not fit");
  expect(std::vector<int32_t>(12, 5), {6}, {}, absl::StatusCode::kResourceExhausted, "context full");
  // Still usable: 12 context tokens fill it to the last position, the next token included.
  auto r = (*v)->VerifyRound(*engine_, {}, {}, DraftProbs{}, nullptr, {}, std::vector<int32_t>(12, 5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*v)->committed().size(), 16u);
  EXPECT_LT((*v)->Room(), 0);
}

}  // namespace
}  // namespace tandem::spec
