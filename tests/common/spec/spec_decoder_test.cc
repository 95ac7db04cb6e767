// Greedy speculative decoding is exact: with every drafter kind and draft length, the text equals
// the target decoding alone, token for token, on the golden prompts and 20 more. Good drafts
// also take fewer target passes than tokens.
#include "common/spec/spec_decoder.h"

#include <memory>

#include "common/model/model_writer.h"
#include "gtest/gtest.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::spec {
namespace {

const char* const kPrompts[] = {
    "",  // golden: no prompt
    "Zoo",  // golden
    "Once upon a time",
    "The little dog",
    "Tom and Sue went to the park",
    "One day, a bird",
    "She was very happy because",
    "The sun was hot and",
    "Lily had a red ball",
    "The big bear said",
    "Timmy wanted to play with his friend",
    "Mom made a cake",
    "There was a tiny cat named Tom",
    "He looked at the sky and saw",
    "The girl was sad",
    "In the garden, there were many flowers",
    "Ben liked to run",
    "A little boy found a box",
    "The fish swam",
    "They played all day and",
    "The tree was very tall",
    "Sam and his dad",
};

class SpecDecoderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    o.tokenizer_path = tandem::testing::ModelPath("tok512.bin");
    auto m = model::Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    target_ = std::move(*m).release();
    std::string dir = tandem::testing::TempDir();
    for (auto [type, slot] : {std::pair{model::GgmlType::kQ8_0, &q8_}, {model::GgmlType::kQ4_0, &q4_}}) {
      std::string path = dir + "/draft-" + std::string(model::GgmlTypeName(type)) + ".gguf";
      ASSERT_TRUE(model::ConvertToGguf(*target_, type, path).ok());
      model::ModelLoadOptions d;
      d.path = path;
      auto dm = model::Model::Load(d);
      ASSERT_TRUE(dm.ok()) << dm.status();
      *slot = std::move(*dm).release();
    }
  }
  static void TearDownTestSuite() {
    delete target_;
    delete q8_;
    delete q4_;
  }

  static std::vector<int32_t> TargetAlone(const std::vector<int32_t>& prompt, int n) {
    return tandem::testing::GreedyTargetAlone(*target_, prompt, n);
  }

  static std::vector<int32_t> Speculative(Drafter* drafter, int gamma,
                                          const std::vector<int32_t>& prompt, int n,
                                          SpecStats* stats,
                                          std::optional<TreeShape> tree = std::nullopt) {
    SpecOptions o;
    o.spec_tokens = gamma;
    o.tree = tree;
    SpecDecoder dec(*target_, nullptr, drafter, o);
    std::vector<int32_t> gen;
    absl::Status s = dec.Generate(prompt, n, [&](int32_t, int32_t t) { gen.push_back(t); }, stats);
    EXPECT_TRUE(s.ok()) << s;
    return gen;
  }

  static model::Model* target_;
  static model::Model* q8_;
  static model::Model* q4_;
};
model::Model* SpecDecoderTest::target_ = nullptr;
model::Model* SpecDecoderTest::q8_ = nullptr;
model::Model* SpecDecoderTest::q4_ = nullptr;

TEST_F(SpecDecoderTest, GreedyTextEqualsTargetAloneForEveryDrafterAndGamma) {
  struct Kind {
    std::string name;
    std::function<std::unique_ptr<Drafter>()> make;
  };
  std::vector<Kind> kinds = {
      {"ngram:3", [] { return std::make_unique<NgramDrafter>(3); }},
      {"early-exit:2", [] {
         ModelDrafterOptions o;
         o.layers = 2;
         return std::unique_ptr<Drafter>(*ModelDrafter::Create(*target_, nullptr, o));
       }},
      {"early-exit:4", [] {
         ModelDrafterOptions o;
         o.layers = 4;
         return std::unique_ptr<Drafter>(*ModelDrafter::Create(*target_, nullptr, o));
       }},
      {"q8_0 model", [] {
         return std::unique_ptr<Drafter>(*ModelDrafter::Create(*q8_, nullptr, ModelDrafterOptions{}));
       }},
      {"q4_0 model", [] {
         return std::unique_ptr<Drafter>(*ModelDrafter::Create(*q4_, nullptr, ModelDrafterOptions{}));
       }},
  };
  for (const char* text : kPrompts) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    const int n = std::string(text).empty() ? 200 : (std::string(text) == "Zoo" ? 57 : 60);
    std::vector<int32_t> want = TargetAlone(prompt, n);
    for (const Kind& kind : kinds) {
      for (int gamma : {1, 3, 5}) {
        std::unique_ptr<Drafter> d = kind.make();
        SpecStats stats;
        std::vector<int32_t> got = Speculative(d.get(), gamma, prompt, n, &stats);
        ASSERT_EQ(got, want) << kind.name << " gamma " << gamma << " prompt '" << text << "'";
        EXPECT_EQ(stats.generated_tokens, static_cast<int64_t>(want.size()));
      }
    }
  }
}

TEST_F(SpecDecoderTest, AdaptiveDraftLengthStaysExact) {
  for (const char* text : kPrompts) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    std::vector<int32_t> want = TargetAlone(prompt, 60);
    auto d = ModelDrafter::Create(*q8_, nullptr, ModelDrafterOptions{});
    ASSERT_TRUE(d.ok());
    SpecOptions o;
    o.spec_tokens = 6;
    o.adaptive = true;
    SpecDecoder dec(*target_, nullptr, d->get(), o);
    std::vector<int32_t> got;
    SpecStats stats;
    ASSERT_TRUE(dec.Generate(prompt, 60, [&](int32_t, int32_t t) { got.push_back(t); }, &stats).ok());
    ASSERT_EQ(got, want) << "prompt '" << text << "'";
  }
}

TEST_F(SpecDecoderTest, GreedyTreesEqualTargetAlone) {
  std::vector<TreeShape> shapes;
  for (auto [w, d] : {std::pair{2, 3}, {3, 2}, {1, 4}}) {
    TreeShape t;
    t.kind = TreeShape::Kind::kStatic;
    t.width = w;
    t.depth = d;
    shapes.push_back(t);
  }
  for (int budget : {6, 16}) {
    TreeShape t;
    t.kind = TreeShape::Kind::kDynamic;
    t.width = 3;
    t.depth = 5;
    t.budget = budget;
    shapes.push_back(t);
  }
  for (const char* text : kPrompts) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    const int n = std::string(text).empty() ? 200 : (std::string(text) == "Zoo" ? 57 : 60);
    std::vector<int32_t> want = TargetAlone(prompt, n);
    for (model::Model* draft_model : {q4_, target_, static_cast<model::Model*>(nullptr)}) {
      for (const TreeShape& shape : shapes) {
        std::unique_ptr<Drafter> d;
        if (draft_model == nullptr) {
          d = std::make_unique<NgramDrafter>(3);
        } else {
          ModelDrafterOptions o;
          if (draft_model == target_) o.layers = 4;  // early exit
          d = std::move(*ModelDrafter::Create(*draft_model, nullptr, o));
        }
        SpecStats stats;
        std::vector<int32_t> got = Speculative(d.get(), 0, prompt, n, &stats, shape);
        ASSERT_EQ(got, want) << d->Name() << " tree " << shape.width << "x" << shape.depth
                             << " budget " << shape.budget << " prompt '" << text << "'";
      }
    }
  }
}

TEST_F(SpecDecoderTest, TreesAcceptMoreThanChainsOfTheSameDepth) {
  std::vector<int32_t> prompt = target_->vocab().Encode("", true);
  auto d = ModelDrafter::Create(*q4_, nullptr, ModelDrafterOptions{});
  ASSERT_TRUE(d.ok());
  SpecStats chain, tree;
  Speculative(d->get(), 3, prompt, 200, &chain);
  TreeShape t;
  t.width = 2;
  t.depth = 3;
  Speculative(d->get(), 0, prompt, 200, &tree, t);
  std::printf("q4_0 draft: chain of 3 tau %.2f, static 2x3 tree tau %.2f\n",
              chain.MeanAcceptedLength(), tree.MeanAcceptedLength());
  EXPECT_GT(tree.MeanAcceptedLength(), chain.MeanAcceptedLength());
}

TEST_F(SpecDecoderTest, GoodDraftsTakeFewerTargetPassesThanTokens) {
  std::vector<int32_t> prompt = target_->vocab().Encode("", true);
  auto d = ModelDrafter::Create(*q8_, nullptr, ModelDrafterOptions{});
  ASSERT_TRUE(d.ok());
  SpecStats stats;
  std::vector<int32_t> got = Speculative(d->get(), 4, prompt, 200, &stats);
  EXPECT_EQ(got.size(), 200u);
  EXPECT_LT(stats.target_forward_passes, stats.generated_tokens);
  EXPECT_GT(stats.MeanAcceptedLength(), 2.0);
  std::printf("q8_0 draft, gamma 4: %lld tokens in %lld target passes, tau %.2f\n",
              static_cast<long long>(stats.generated_tokens),
              static_cast<long long>(stats.target_forward_passes), stats.MeanAcceptedLength());
  ASSERT_EQ(stats.accepted_per_position.size(), 4u);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_LE(stats.accepted_per_position[i], stats.accepted_per_position[i - 1]);
  }
}

// A stand-in for an EAGLE head: it drafts nothing useful but records the target features the
// decoder hands it, which must be the target's own final hidden states.
class FeatureRecorder : public Drafter {
 public:
  absl::Status Propose(std::span<const int32_t> context, int max_tokens, Draft* out) override {
    out->tokens.assign(std::min(max_tokens, 2), 5);
    return absl::OkStatus();
  }
  std::string Name() const override { return "feature-recorder"; }
  bool WantsTargetFeatures() const override { return true; }
  void ObserveTarget(std::span<const int32_t> committed, std::span<const float> hidden,
                     int dim) override {
    EXPECT_EQ(hidden.size(), committed.size() * dim);
    tokens.insert(tokens.end(), committed.begin(), committed.end());
    features.insert(features.end(), hidden.begin(), hidden.end());
  }
  std::vector<int32_t> tokens;
  std::vector<float> features;
};

TEST_F(SpecDecoderTest, DraftersCanReadTheTargetsFeatures) {
  std::vector<int32_t> prompt = target_->vocab().Encode("Once upon a time", true);
  FeatureRecorder rec;
  SpecStats stats;
  std::vector<int32_t> got = Speculative(&rec, 2, prompt, 20, &stats);
  ASSERT_EQ(rec.tokens.size(), got.size());
  // Reference: the target's final hidden states over prompt + generated text; the feature for
  // committed token j is the state at the position before it.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), got.begin(), got.end());
  model::Engine e(*target_, nullptr);
  auto cache = model::KvCache::Create(target_->config(), 0, target_->config().n_layers, 64);
  model::ForwardRequest r;
  r.tokens = all;
  r.logits = model::LogitsMode::kNone;
  model::ForwardResult h;
  ASSERT_TRUE(e.Forward(r, &*cache, &h).ok());
  const int dim = target_->config().dim;
  for (size_t j = 0; j < got.size(); ++j) {
    const size_t pos = prompt.size() - 1 + j;
    for (int k = 0; k < dim; ++k) {
      ASSERT_NEAR(rec.features[j * dim + k], h.data[pos * dim + k], 1e-4) << "token " << j;
    }
  }
}

TEST_F(SpecDecoderTest, NgramDrafterProposesTheContinuationOfTheLatestMatch) {
  NgramDrafter d(3);
  Draft draft;
  std::vector<int32_t> ctx = {1, 5, 6, 7, 8, 9, 5, 6, 7};
  ASSERT_TRUE(d.Propose(ctx, 4, &draft).ok());
  EXPECT_EQ(draft.tokens, (std::vector<int32_t>{8, 9, 5, 6}));
  std::vector<int32_t> none = {1, 2, 3};
  ASSERT_TRUE(d.Propose(none, 4, &draft).ok());
  EXPECT_TRUE(draft.tokens.empty());
  // Trees: continuations of several matches share a trie. After "... 5 6 7", the matches of
  // "6 7" / "7" continue with 8 9 and with 4.
  std::vector<int32_t> ctx2 = {1, 6, 7, 8, 9, 7, 4, 6, 7};
  TreeShape shape;
  shape.width = 3;
  shape.depth = 2;
  DraftTree tree;
  ASSERT_TRUE(d.ProposeTree(ctx2, shape, &tree).ok());
  EXPECT_EQ(tree.tokens, (std::vector<int32_t>{7, 8, 9, 4, 6}));
  EXPECT_EQ(tree.parents, (std::vector<int32_t>{-1, 0, 1, 0, 3}));
}

}  // namespace
}  // namespace tandem::spec
