// Verification: greedy path following, and the losslessness of sampled verification checked
// statistically (chi-square, fixed seeds) on small vocabularies where the exact target
// distribution is known. A deliberately broken verifier (no residual) must fail the same check,
// which shows the check has the power to catch that bug.
#include "common/spec/verify.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::spec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kVocab = 6;
// Critical value of chi-square with 5 degrees of freedom at significance 1e-4.
constexpr double kChi2Df5Crit = 25.74;
constexpr int kTrials = 200000;

const std::vector<float> kP0 = {0.30f, 0.05f, 0.25f, 0.10f, 0.20f, 0.10f};
const std::vector<float> kP1 = {0.02f, 0.40f, 0.08f, 0.30f, 0.10f, 0.10f};
const std::vector<float> kP2 = {0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.50f};
const std::vector<float> kQ0 = {0.10f, 0.40f, 0.10f, 0.20f, 0.10f, 0.10f};
const std::vector<float> kQ1 = {0.05f, 0.05f, 0.50f, 0.30f, 0.05f, 0.05f};

std::vector<float> Stack(std::initializer_list<std::vector<float>> rows) {
  std::vector<float> out;
  for (const auto& r : rows) out.insert(out.end(), r.begin(), r.end());
  return out;
}

double ChiSquare(const std::vector<int>& counts, const std::vector<float>& p) {
  int n = 0;
  for (int c : counts) n += c;
  double stat = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * static_cast<double>(n);
    if (expected == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    stat += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  std::printf("chi-square %.2f over %d samples (critical value %.2f at 1e-4)\n", stat, n,
              kChi2Df5Crit);
  return stat;
}

int SampleFrom(const std::vector<float>& p, model::Rng& rng) {
  double u = rng.UniformDouble(), acc = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return static_cast<int>(i);
  }
  return static_cast<int>(p.size()) - 1;
}

// One speculative round on a two-draft chain: drafts sampled from q0 and q1, verified against
// the fixed target rows p0, p1, p2. Returns the emitted tokens.
using Verifier = std::function<std::vector<int32_t>(const DraftTree&, model::Rng&)>;

struct Histograms {
  std::vector<int> first = std::vector<int>(kVocab, 0);
  std::vector<int> second = std::vector<int>(kVocab, 0);  // when a second token was emitted
};

Histograms RunChain(const Verifier& verify, uint64_t seed) {
  model::Rng rng(seed);
  Histograms h;
  for (int t = 0; t < kTrials; ++t) {
    int32_t drafts[2] = {SampleFrom(kQ0, rng), SampleFrom(kQ1, rng)};
    DraftTree tree = DraftTree::Chain(0, drafts);
    std::vector<int32_t> out = verify(tree, rng);
    h.first[out[0]]++;
    if (out.size() >= 2) h.second[out[1]]++;
  }
  return h;
}

class SampledChainTest : public ::testing::TestWithParam<DraftProbKind> {};

TEST_P(SampledChainTest, EmittedTokensFollowTheTargetDistribution) {
  const std::vector<float> target = Stack({kP0, kP1, kP2});
  const std::vector<float> q_rows = Stack({kQ0, kQ1, kQ1});
  DraftProbs q;
  q.kind = GetParam();
  q.full = {q_rows.data(), 3, kVocab};
  for (const auto* row : {&kQ0, &kQ1, &kQ1}) {
    std::vector<std::pair<int32_t, float>> entries;
    for (int i = 0; i < kVocab; ++i) entries.push_back({i, (*row)[i]});
    q.sparse.push_back(entries);
  }
  Verifier verify = [&](const DraftTree& tree, model::Rng& rng) {
    auto r = VerifySampled(tree, {target.data(), 3, kVocab}, q, rng);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->Emitted(tree);
  };
  Histograms h = RunChain(verify, 1234);
  EXPECT_LT(ChiSquare(h.first, kP0), kChi2Df5Crit);
  EXPECT_LT(ChiSquare(h.second, kP1), kChi2Df5Crit);
}

INSTANTIATE_TEST_SUITE_P(DraftKinds, SampledChainTest,
                         ::testing::Values(DraftProbKind::kIdsOnly, DraftProbKind::kFull,
                                           DraftProbKind::kSparse));

TEST(SampledVerifyTest, TopKTruncatedDraftStaysExact) {
  // The draft samples from its top-3, renormalized, and sends only those three probabilities.
  const std::vector<float> target = Stack({kP0, kP1});
  // kQ0's top-3 is {1: 0.4, 3: 0.2, 0: 0.1 (tie with 2, 4, 5; the draft kept 2)}.
  const std::vector<float> q_norm = {0.0f, 0.4f / 0.7f, 0.1f / 0.7f, 0.2f / 0.7f, 0.0f, 0.0f};
  DraftProbs q;
  q.kind = DraftProbKind::kSparse;
  // Sent as the raw q values of the kept tokens; the verifier renormalizes them.
  q.sparse = {{{1, 0.4f}, {2, 0.1f}, {3, 0.2f}}, {}};
  model::Rng rng(77);
  std::vector<int> counts(kVocab, 0);
  for (int t = 0; t < kTrials; ++t) {
    int32_t x = SampleFrom(q_norm, rng);
    DraftTree tree = DraftTree::Chain(0, std::span<const int32_t>(&x, 1));
    auto r = VerifySampled(tree, {target.data(), 2, kVocab}, q, rng);
    ASSERT_TRUE(r.ok()) << r.status();
    counts[r->Emitted(tree)[0]]++;
  }
  EXPECT_LT(ChiSquare(counts, kP0), kChi2Df5Crit);
}

TEST(SampledVerifyTest, TreeWithSeveralCandidatesPerNodeStaysExact) {
  // Root with three candidates (fixed: the draft's top-3), the first with two children.
  DraftTree tree;
  tree.tokens = {0, 1, 3, 0, 2, 3};
  tree.parents = {-1, 0, 0, 0, 1, 1};
  const std::vector<float> target = Stack({kP0, kP1, kP2, kP2, kP2, kP2});
  model::Rng rng(99);
  Histograms h;
  for (int t = 0; t < kTrials; ++t) {
    auto r = VerifySampled(tree, {target.data(), 6, kVocab}, DraftProbs{}, rng);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<int32_t> out = r->Emitted(tree);
    h.first[out[0]]++;
    if (out[0] == 1) h.second[out[1]]++;  // went through node 1: next follows p1
  }
  EXPECT_LT(ChiSquare(h.first, kP0), kChi2Df5Crit);
  EXPECT_LT(ChiSquare(h.second, kP1), kChi2Df5Crit);
}

TEST(SampledVerifyTest, TheCheckCatchesAVerifierThatSkipsTheResidual) {
  // Injected bug: on rejection, resample from p instead of norm(max(0, p - q)).
  const std::vector<float> target = Stack({kP0, kP1, kP2});
  Verifier buggy = [&](const DraftTree& tree, model::Rng& rng) {
    std::vector<int32_t> out;
    const std::vector<float>* p[3] = {&kP0, &kP1, &kP2};
    const std::vector<float>* q[2] = {&kQ0, &kQ1};
    for (int i = 0; i < 2; ++i) {
      int32_t x = tree.tokens[i + 1];
      if (rng.UniformDouble() < std::min(1.0, double((*p[i])[x]) / (*q[i])[x])) {
        out.push_back(x);
        continue;
      }
      out.push_back(SampleFrom(*p[i], rng));  // the bug
      return out;
    }
    out.push_back(SampleFrom(kP2, rng));
    return out;
  };
  Histograms h = RunChain(buggy, 1234);
  EXPECT_GT(ChiSquare(h.first, kP0), kChi2Df5Crit);
}

TEST(GreedyVerifyTest, AcceptsTheMatchingPrefixThenCorrects) {
  // Rows: argmax 2, then 4, then 1, then 5.
  std::vector<float> rows(4 * kVocab, 0.0f);
  int argmax[4] = {2, 4, 1, 5};
  for (int r = 0; r < 4; ++r) rows[r * kVocab + argmax[r]] = 1.0f;
  Rows target{rows.data(), 4, kVocab};
  std::vector<int32_t> all = {2, 4, 1};
  auto res = VerifyGreedy(DraftTree::Chain(0, all), target);
  ASSERT_TRUE(res.ok());
  EXPECT_THAT(res->path, ElementsAre(1, 2, 3));
  EXPECT_EQ(res->next_token, 5);  // bonus
  std::vector<int32_t> miss = {2, 3, 1};
  res = VerifyGreedy(DraftTree::Chain(0, miss), target);
  ASSERT_TRUE(res.ok());
  EXPECT_THAT(res->Emitted(DraftTree::Chain(0, miss)), ElementsAre(2, 4));
  std::vector<int32_t> none = {};
  res = VerifyGreedy(DraftTree::Chain(0, none), Rows{rows.data(), 1, kVocab});
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE(res->path.empty());
  EXPECT_EQ(res->next_token, 2);
}

TEST(GreedyVerifyTest, FollowsTheArgmaxPathThroughATree) {
  DraftTree tree;
  tree.tokens = {0, 3, 2, 1, 4, 4};
  tree.parents = {-1, 0, 0, 2, 2, 1};
  std::vector<float> rows(6 * kVocab, 0.0f);
  int argmax[6] = {2, 0, 4, 0, 5, 0};  // root -> node 2 (token 2) -> node 4 (token 4) -> bonus 5
  for (int r = 0; r < 6; ++r) rows[r * kVocab + argmax[r]] = 1.0f;
  auto res = VerifyGreedy(tree, Rows{rows.data(), 6, kVocab});
  ASSERT_TRUE(res.ok());
  EXPECT_THAT(res->path, ElementsAre(2, 4));
  EXPECT_EQ(res->next_token, 5);
}

TEST(VerifyInputTest, BadDraftsAreRejected) {
  std::vector<float> rows = Stack({kP0, kP1});
  Rows target{rows.data(), 2, kVocab};
  model::Rng rng(1);
  std::vector<int32_t> bad_token = {6};
  EXPECT_THAT(std::string(VerifyGreedy(DraftTree::Chain(0, bad_token), target).status().message()),
              HasSubstr("outside the vocabulary"));
  DraftTree cyclic;
  cyclic.tokens = {0, 1};
  cyclic.parents = {-1, 1};
  EXPECT_FALSE(VerifyGreedy(cyclic, target).ok());
  std::vector<int32_t> three = {1, 2, 3};
  EXPECT_THAT(std::string(VerifyGreedy(DraftTree::Chain(0, three), target).status().message()),
              HasSubstr("over the limit"));
  // q says the draft token could not have been drawn.
  std::vector<int32_t> one = {0};
  DraftProbs q;
  q.kind = DraftProbKind::kSparse;
  q.sparse = {{{1, 1.0f}}, {}};
  EXPECT_THAT(std::string(VerifySampled(DraftTree::Chain(0, one), target, q, rng).status().message()),
              HasSubstr("draft probability 0"));
  q.sparse = {{{1, NAN}}, {}};
  EXPECT_FALSE(VerifySampled(DraftTree::Chain(0, one), target, q, rng).ok());
  q.sparse = {{{9, 1.0f}}, {}};
  EXPECT_FALSE(VerifySampled(DraftTree::Chain(0, one), target, q, rng).ok());
  q.sparse = {};
  EXPECT_FALSE(VerifySampled(DraftTree::Chain(0, one), target, q, rng).ok());
  std::vector<float> negative = rows;
  negative[3] = -0.5f;
  EXPECT_THAT(std::string(VerifySampled(DraftTree::Chain(0, one), Rows{negative.data(), 2, kVocab},
                                        DraftProbs{}, rng)
                              .status()
                              .message()),
              HasSubstr("not a probability"));
}

}  // namespace
}  // namespace tandem::spec
