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

// The halves a batching worker uses: a round begun, run by the caller and ended gives what
// VerifyRound gives; a Begin that fails hands its own error through End (the worker passes it
// on), and End without a Begin is refused. Prefill runs in chunks of the size asked for.
TEST_F(TargetVerifierTest, HalvesGiveWhatTheOneCallGives) {
  std::vector<int32_t> prompt = model_->vocab().Encode("Once upon a time there was", true);
  auto whole = TargetVerifier::Create(*model_, 64, {});
  auto halves = TargetVerifier::Create(*model_, 64, {});
  ASSERT_TRUE(whole.ok() && halves.ok());
  ASSERT_TRUE((*whole)->Commit(*engine_, prompt).ok());
  ASSERT_TRUE((*halves)->Append(prompt).ok());
  model::BatchItem item;
  int chunks = 0;
  while ((*halves)->BeginPrefill(2, &item)) {
    EXPECT_LE(item.request.tokens.size(), 2u);
    ASSERT_TRUE((*halves)->EndPrefill(engine_->Forward(item.request, item.cache, item.result)).ok());
    ++chunks;
  }
  const int positions = static_cast<int>(prompt.size()) - 1;  // the last one is the next root
  EXPECT_EQ(chunks, (positions + 1) / 2);
  EXPECT_EQ((*halves)->PendingPrefill(), 0);

  const std::vector<int32_t> drafts = {300, 12, 77};
  auto want = (*whole)->VerifyRound(*engine_, drafts, {}, DraftProbs{});
  ASSERT_TRUE(want.ok());
  const DraftProbs none;
  ASSERT_TRUE((*halves)->BeginRound(drafts, {}, none, &item).ok());
  auto got = (*halves)->EndRound(engine_->Forward(item.request, item.cache, item.result));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->path, want->path);
  EXPECT_EQ(got->next_token, want->next_token);
  EXPECT_EQ((*halves)->committed(), (*whole)->committed());

  // A Begin that fails: its error comes back through End, and nothing changes.
  const std::vector<int32_t> too_many(80, 5);
  absl::Status begun = (*halves)->BeginRound(too_many, {}, none, &item);
  EXPECT_TRUE(absl::IsResourceExhausted(begun)) << begun;
  auto ended = (*halves)->EndRound(begun);
  EXPECT_TRUE(absl::IsResourceExhausted(ended.status())) << ended.status();
  EXPECT_EQ((*halves)->committed(), (*whole)->committed());
  EXPECT_EQ((*halves)->EndRound(absl::OkStatus()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tandem::spec
