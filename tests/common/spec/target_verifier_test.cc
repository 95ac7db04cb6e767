// The target side of a round: commit, verify, roll back; and bad rounds leave the sequence as it
// was, so a verifier session survives a hostile or buggy edge.
#include "common/spec/target_verifier.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::spec {
namespace {

using ::testing::HasSubstr;

class TargetVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    auto m = model::Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    engine_ = std::make_unique<model::Engine>(*model_, nullptr);
  }
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<model::Engine> engine_;
};

TEST_F(TargetVerifierTest, RoundsCommitAcceptedDraftsAndTheNextToken) {
  auto v = TargetVerifier::Create(*model_, 64, {});
  ASSERT_TRUE(v.ok());
  std::vector<int32_t> prompt = model_->vocab().Encode("Once upon a time", true);
  ASSERT_TRUE((*v)->Commit(*engine_, prompt).ok());
  auto r = (*v)->VerifyRound(*engine_, {}, {}, DraftProbs{});
  ASSERT_TRUE(r.ok()) << r.status();
  const int32_t first = r->next_token;
  EXPECT_EQ((*v)->committed().size(), prompt.size() + 1);
  // Draft the right next token and a wrong one: one accepted, then the correction.
  auto alone = TargetVerifier::Create(*model_, 64, {});
  ASSERT_TRUE((*alone)->Commit(*engine_, (*v)->committed()).ok());
  auto step = (*alone)->VerifyRound(*engine_, {}, {}, DraftProbs{});
  ASSERT_TRUE(step.ok());
  const int32_t second = step->next_token;
  std::vector<int32_t> drafts = {second, 3};
  r = (*v)->VerifyRound(*engine_, drafts, {}, DraftProbs{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->path.size(), 1u);
  EXPECT_EQ((*v)->committed()[prompt.size()], first);
  EXPECT_EQ((*v)->committed()[prompt.size() + 1], second);
  EXPECT_EQ((*v)->forward_passes(), 2);
}

TEST_F(TargetVerifierTest, BadRoundsAreRejectedAndChangeNothing) {
  auto v = TargetVerifier::Create(*model_, 16, {});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)->VerifyRound(*engine_, {}, {}, DraftProbs{}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<int32_t> bad_prompt = {1, 600};
  EXPECT_THAT(std::string((*v)->Commit(*engine_, bad_prompt).message()),
              HasSubstr("outside the vocabulary"));
  std::vector<int32_t> prompt = {1, 300, 301};
  ASSERT_TRUE((*v)->Commit(*engine_, prompt).ok());
  const auto before = (*v)->committed();
  std::vector<int32_t> bad = {5, 512};
  EXPECT_FALSE((*v)->VerifyRound(*engine_, bad, {}, DraftProbs{}).ok());
  std::vector<int32_t> two = {5, 6};
  std::vector<int32_t> cyclic = {-1, 1};
  EXPECT_FALSE((*v)->VerifyRound(*engine_, two, cyclic, DraftProbs{}).ok());
  std::vector<int32_t> short_parents = {-1};
  EXPECT_FALSE((*v)->VerifyRound(*engine_, two, short_parents, DraftProbs{}).ok());
  DraftProbs wrong;
  wrong.kind = DraftProbKind::kSparse;  // no rows for the drafts
  EXPECT_THAT(std::string((*v)->VerifyRound(*engine_, two, {}, wrong).status().message()),
              HasSubstr("wrong shape"));
  std::vector<int32_t> too_many(20, 5);
  EXPECT_EQ((*v)->VerifyRound(*engine_, too_many, {}, DraftProbs{}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*v)->committed(), before);
  // And the sequence still works.
  EXPECT_TRUE((*v)->VerifyRound(*engine_, two, {}, DraftProbs{}).ok());
}

}  // namespace
}  // namespace tandem::spec
