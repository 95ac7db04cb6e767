// Speculative sampling on stories260K at temperature 1 gives the target's distribution: the first
// generated token matches the exact softmax of the target (chi-square goodness of fit), and the
// first two tokens match direct target sampling (two-sample chi-square), for a draft model with
// probabilities, an early-exit draft, and an ids-only n-gram draft. Fixed seeds; significance 1e-4.
#include <cmath>
#include <map>
#include <memory>

#include "common/model/model_writer.h"
#include "common/spec/spec_decoder.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::spec {
namespace {

constexpr int kRuns = 4000;

// Chi-square critical value at significance 1e-4 (Wilson-Hilferty approximation).
double Critical(int df) {
  const double z = 3.719;
  const double a = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

class SpecSamplingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    o.tokenizer_path = tandem::testing::ModelPath("tok512.bin");
    target_ = std::move(*model::Model::Load(o)).release();
    std::string path = tandem::testing::TempDir() + "/draft-q4.gguf";
    ASSERT_TRUE(model::ConvertToGguf(*target_, model::GgmlType::kQ4_0, path).ok());
    model::ModelLoadOptions d;
    d.path = path;
    draft_ = std::move(*model::Model::Load(d)).release();
  }
  static void TearDownTestSuite() {
    delete target_;
    delete draft_;
  }

  static model::SamplerOptions Temp1(uint64_t seed) {
    model::SamplerOptions s;
    s.temperature = 1.0f;
    s.seed = seed;
    return s;
  }

  // First two tokens of `kRuns` speculative generations.
  static std::vector<std::pair<int, int>> RunSpec(const std::vector<int32_t>& prompt,
                                                  Drafter* drafter, int gamma,
                                                  std::optional<TreeShape> tree) {
    std::vector<std::pair<int, int>> out;
    for (int run = 0; run < kRuns; ++run) {
      SpecOptions o;
      o.spec_tokens = gamma;
      o.tree = tree;
      o.sampler = Temp1(1000 + run);
      SpecDecoder dec(*target_, nullptr, drafter, o);
      std::vector<int32_t> gen;
      SpecStats stats;
      absl::Status s = dec.Generate(prompt, 2, [&](int32_t, int32_t t) { gen.push_back(t); }, &stats);
      EXPECT_TRUE(s.ok()) << s;
      out.push_back({gen.size() > 0 ? gen[0] : -1, gen.size() > 1 ? gen[1] : -1});
    }
    return out;
  }

  // First two tokens sampled from the target directly, one position per pass.
  static std::vector<std::pair<int, int>> RunDirect(const std::vector<int32_t>& prompt) {
    std::vector<std::pair<int, int>> out;
    model::Engine e(*target_, nullptr);
    for (int run = 0; run < kRuns; ++run) {
      model::Sampler sampler(Temp1(500000 + run));
      auto cache = model::KvCache::Create(target_->config(), 0, target_->config().n_layers, 64);
      model::ForwardRequest r;
      r.tokens = prompt;
      r.logits = model::LogitsMode::kLast;
      model::ForwardResult res;
      EXPECT_TRUE(e.Forward(r, &*cache, &res).ok());
      int32_t t1 = sampler.Sample(res.Row(0));
      int t2 = -1;
      if (t1 != 1 && t1 != 2) {
        r.tokens = std::span<const int32_t>(&t1, 1);
        EXPECT_TRUE(e.Forward(r, &*cache, &res).ok());
        t2 = sampler.Sample(res.Row(0));
        if (t2 == 1 || t2 == 2) t2 = -1;
      }
      out.push_back({t1 == 1 || t1 == 2 ? -1 : t1, t2});
    }
    return out;
  }

  // Goodness of fit of the first tokens against the exact target distribution after `prompt`.
  static double FirstTokenFit(const std::vector<int32_t>& prompt,
                              const std::vector<std::pair<int, int>>& samples, int* df) {
    model::Engine e(*target_, nullptr);
    auto cache = model::KvCache::Create(target_->config(), 0, target_->config().n_layers, 64);
    model::ForwardRequest r;
    r.tokens = prompt;
    r.logits = model::LogitsMode::kLast;
    model::ForwardResult res;
    EXPECT_TRUE(e.Forward(r, &*cache, &res).ok());
    std::vector<float> p;
    model::Softmax(res.Row(0), 1.0f, &p);
    std::vector<int> counts(p.size(), 0);
    int stopped = 0;
    for (auto [a, b] : samples) {
      if (a < 0) {
        ++stopped;
      } else {
        counts[a]++;
      }
    }
    // Tokens 1 and 2 end generation (counted as "stopped"); pool categories with expected < 5.
    double stat = 0, pooled_exp = (p[1] + p[2]) * kRuns, pooled_obs = stopped;
    int cats = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      if (i == 1 || i == 2) continue;
      double expct = p[i] * kRuns;
      if (expct < 5) {
        pooled_exp += expct;
        pooled_obs += counts[i];
        continue;
      }
      stat += (counts[i] - expct) * (counts[i] - expct) / expct;
      ++cats;
    }
    if (pooled_exp > 0) {
      stat += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / pooled_exp;
      ++cats;
    }
    *df = cats - 1;
    return stat;
  }

  // Two-sample chi-square on (first, second) token pairs; pairs seen < 10 times in total pooled.
  static double PairHomogeneity(const std::vector<std::pair<int, int>>& a,
                                const std::vector<std::pair<int, int>>& b, int* df) {
    std::map<std::pair<int, int>, std::pair<int, int>> counts;
    for (auto x : a) counts[x].first++;
    for (auto x : b) counts[x].second++;
    double stat = 0;
    int cats = 0, rest_a = 0, rest_b = 0;
    for (const auto& [key, c] : counts) {
      if (c.first + c.second < 10) {
        rest_a += c.first;
        rest_b += c.second;
        continue;
      }
      stat += static_cast<double>(c.first - c.second) * (c.first - c.second) / (c.first + c.second);
      ++cats;
    }
    if (rest_a + rest_b > 0) {
      stat += static_cast<double>(rest_a - rest_b) * (rest_a - rest_b) / (rest_a + rest_b);
      ++cats;
    }
    *df = cats - 1;
    return stat;
  }

  void CheckDrafter(Drafter* drafter, const char* prompt_text, int gamma,
                    std::optional<TreeShape> tree = std::nullopt) {
    std::vector<int32_t> prompt = target_->vocab().Encode(prompt_text, true);
    auto spec = RunSpec(prompt, drafter, gamma, tree);
    int df = 0;
    double fit = FirstTokenFit(prompt, spec, &df);
    std::printf("%s: first token chi-square %.1f, df %d, critical %.1f\n", drafter->Name().c_str(),
                fit, df, Critical(df));
    EXPECT_LT(fit, Critical(df)) << drafter->Name();
    auto direct = RunDirect(prompt);
    double pairs = PairHomogeneity(spec, direct, &df);
    std::printf("%s: token pair two-sample chi-square %.1f, df %d, critical %.1f\n",
                drafter->Name().c_str(), pairs, df, Critical(df));
    EXPECT_LT(pairs, Critical(df)) << drafter->Name();
  }

  static model::Model* target_;
  static model::Model* draft_;
};
model::Model* SpecSamplingTest::target_ = nullptr;
model::Model* SpecSamplingTest::draft_ = nullptr;

TEST_F(SpecSamplingTest, DraftModelWithProbabilities) {
  ModelDrafterOptions o;
  o.sampler = Temp1(7);
  auto d = ModelDrafter::Create(*draft_, nullptr, o);
  ASSERT_TRUE(d.ok());
  CheckDrafter(d->get(), "The dog ran. The dog", 3);
}

TEST_F(SpecSamplingTest, EarlyExitDraft) {
  ModelDrafterOptions o;
  o.layers = 3;
  o.sampler = Temp1(8);
  auto d = ModelDrafter::Create(*target_, nullptr, o);
  ASSERT_TRUE(d.ok());
  CheckDrafter(d->get(), "The dog ran. The dog", 2);
}

TEST_F(SpecSamplingTest, DynamicTreeDraft) {
  auto d = ModelDrafter::Create(*draft_, nullptr, ModelDrafterOptions{});
  ASSERT_TRUE(d.ok());
  TreeShape t;
  t.kind = TreeShape::Kind::kDynamic;
  t.width = 3;
  t.depth = 3;
  t.budget = 8;
  CheckDrafter(d->get(), "The dog ran. The dog", 0, t);
}

TEST_F(SpecSamplingTest, IdsOnlyNgramDraft) {
  NgramDrafter d(2);
  CheckDrafter(&d, "The dog ran. The dog", 3);
}

}  // namespace
}  // namespace tandem::spec
