// SplitRunner::DraftRound: split mode drafting by early exit at layer k on the edge's own
// layer-k states, on stories260K (F32 matrices) and a synthetic model with Q8_0 matrices, for
// every split layer k. Its drafts are spec::ModelDrafter's early-exit (layers = k) greedy drafts
// for the same committed prefix; the states it sends are Round(root, the same drafts)'s, bit for
// bit with quantized matrices and to float rounding with F32 ones (f32 and int8 codecs); after
// Accept with any accepted count it goes on as a runner driven by Round; through a real verifier
// the f32 text is the target's own; bad input is an error that leaves the cache as it was.
// SplitDraftTiming (opt-in: TANDEM_SPLIT_BENCH_MODEL=a model file) records the edge's seconds per
// round for DraftRound against a separate early-exit drafter + Round.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/model/model_writer.h"
#include "common/spec/drafter.h"
#include "edge/split_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

using ::testing::HasSubstr;

const char* const kPrompts[] = {"Once upon a time", "The little dog", "Zoo"};
constexpr int kGammas[] = {3, 1, 4, 0, 5, 2, 6};

const codec::CodecSpec kF32{codec::CodecKind::kF32, false};
const int32_t kFirst[] = {0};  // Accept(kFirst): the first draft

// Compares two encoded state messages. `exact`: every field and every payload byte. Otherwise the
// same shape and codec, and decoded values within float rounding (plus, for int8, one
// quantization step of the row). Returns the largest decoded difference.
float CompareStates(const v1::HiddenStates& a, const v1::HiddenStates& b, bool exact,
                    const std::string& where) {
  EXPECT_EQ(a.layer(), b.layer()) << where;
  EXPECT_EQ(a.rows(), b.rows()) << where;
  EXPECT_EQ(a.dim(), b.dim()) << where;
  EXPECT_EQ(a.codec(), b.codec()) << where;
  EXPECT_EQ(a.zstd(), b.zstd()) << where;
  if (exact) {
    EXPECT_TRUE(a.data() == b.data()) << where << ": payloads differ (" << a.data().size()
                                      << " vs " << b.data().size() << " bytes)";
    return a.data() == b.data() ? 0.0f : 1.0f;
  }
  if (a.rows() != b.rows() || a.dim() != b.dim() || a.codec() != b.codec()) return 1.0f;
  const codec::CodecKind kind =
      a.codec() == v1::CODEC_INT8 ? codec::CodecKind::kInt8 : codec::CodecKind::kF32;
  EXPECT_TRUE(a.codec() == v1::CODEC_INT8 || a.codec() == v1::CODEC_F32) << where;
  const int rows = static_cast<int>(a.rows()), dim = static_cast<int>(a.dim());
  std::vector<float> x(static_cast<size_t>(rows) * dim), y(x.size());
  EXPECT_TRUE(codec::Decode({kind, a.zstd()}, a.data(), rows, dim, x).ok()) << where;
  EXPECT_TRUE(codec::Decode({kind, b.zstd()}, b.data(), rows, dim, y).ok()) << where;
  float worst = 0;
  for (int r = 0; r < rows; ++r) {
    float amax = 0;
    for (int i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(y[static_cast<size_t>(r) * dim + i]));
    const float tol = 1e-4f * std::max(1.0f, amax) + (kind == codec::CodecKind::kInt8 ? 1.01f * amax / 127 : 0.0f);
    for (int i = 0; i < dim; ++i) {
      const size_t j = static_cast<size_t>(r) * dim + i;
      const float d = std::fabs(x[j] - y[j]);
      worst = std::max(worst, d);
      EXPECT_LE(d, tol) << where << " row " << r << " value " << i;
    }
  }
  return worst;
}

// Two models: stories260K (F32 weights) and a synthetic one whose every matrix is Q8_0.
// The engine's F32/F16 kernels sum a batch of positions in another order than one position
// (they unroll by batch group), so for stories260K Round's batched rows and DraftRound's
// one-position rows agree to float rounding only; the quantized kernels sum each position
// alike, so for the Q8_0 model they agree bit for bit.
struct TestModel {
  const char* name;
  const model::Model* model;
  bool exact;  // DraftRound's rows equal Round's bit for bit
};

class SplitDraftTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    auto m = model::Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    stories_ = std::move(*m).release();
    model::SyntheticModelSpec spec;
    spec.dim = 64;
    spec.hidden_dim = 192;  // a multiple of 32: W2 is quantized too
    spec.n_layers = 5;
    spec.n_heads = 8;
    spec.n_kv_heads = 4;
    spec.vocab_size = 512;
    spec.max_seq_len = 512;
    spec.seed = 260;
    const std::string path = tandem::testing::TempDir() + "/q8.gguf";
    ASSERT_TRUE(model::WriteSyntheticGguf(spec, model::GgmlType::kQ8_0, path).ok());
    o.path = path;
    auto q = model::Model::Load(o);
    ASSERT_TRUE(q.ok()) << q.status();
    q8_ = std::move(*q).release();
  }
  static void TearDownTestSuite() {
    delete stories_;
    delete q8_;
    stories_ = q8_ = nullptr;
  }
  static std::vector<TestModel> Models() { return {{"stories260K", stories_, false}, {"q8_0", q8_, true}}; }

  static std::vector<int32_t> Encode(const model::Model& m, const char* text) {
    return m.vocab().Encode(text, true);
  }

  static std::unique_ptr<SplitRunner> Runner(const model::Model& m, int k, const codec::CodecSpec& codec,
                                             int capacity = 512) {
    auto r = SplitRunner::Create(m, k, capacity, codec);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(*r) : nullptr;
  }
  std::unique_ptr<spec::ModelDrafter> Drafter(const model::Model& m, int layers, int capacity = 0) {
    spec::ModelDrafterOptions o;
    o.layers = layers;
    o.max_context = capacity;
    auto d = spec::ModelDrafter::Create(m, &pool_, o);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }
  // The whole target's greedy continuation of `context`, n tokens.
  std::vector<int32_t> TargetGreedy(const model::Model& m, const std::vector<int32_t>& context, int n) {
    auto& full = full_[&m];
    if (full == nullptr) full = Drafter(m, -1);
    spec::Draft d;
    EXPECT_TRUE(full->Propose(context, n, &d).ok());
    return d.tokens;
  }

  static inline model::Model* stories_ = nullptr;
  static inline model::Model* q8_ = nullptr;
  model::ThreadPool pool_{1};
  std::map<const model::Model*, std::unique_ptr<spec::ModelDrafter>> full_;  // reference verifiers
};

// (1) The drafts are the early-exit drafter's (layers = k), over many greedily verified rounds.
TEST_F(SplitDraftTest, DraftsEqualEarlyExitDrafter) {
  for (const TestModel& tm : Models()) {
    const model::Model& m = *tm.model;
    int accepted_total = 0, drafted_total = 0;
    for (int k = 1; k < m.config().n_layers; ++k) {
      for (const char* text : kPrompts) {
        std::vector<int32_t> committed = Encode(m, text);
        auto runner = Runner(m, k, kF32);
        auto drafter = Drafter(m, k);
        ASSERT_NE(runner, nullptr);
        ASSERT_NE(drafter, nullptr);
        v1::HiddenStates hs;
        ASSERT_TRUE(runner->Prompt(committed, &hs).ok());
        EXPECT_EQ(hs.rows(), committed.size() - 1);
        for (int round = 0; round < 40; ++round) {
          const int gamma = kGammas[round % std::size(kGammas)];
          const std::string where = absl::StrCat(tm.name, " k=", k, " '", text, "' round ", round);
          spec::Draft want;
          ASSERT_TRUE(drafter->Propose(committed, gamma, &want).ok()) << where;
          std::vector<int32_t> drafts;
          std::vector<float> confidence;
          ASSERT_TRUE(runner->DraftRound(committed.back(), gamma, &drafts, &hs, &confidence).ok()) << where;
          EXPECT_EQ(drafts, want.tokens) << where;
          ASSERT_EQ(confidence.size(), drafts.size()) << where;
          for (size_t i = 0; i < confidence.size() && i < want.confidence.size(); ++i) {
            // The drafter re-feeds committed tokens in batches: the same to float rounding.
            if (tm.exact) {
              EXPECT_EQ(confidence[i], want.confidence[i]) << where << " draft " << i;
            } else {
              EXPECT_NEAR(confidence[i], want.confidence[i], 1e-5) << where << " draft " << i;
            }
            EXPECT_GT(confidence[i], 0.0f);
            EXPECT_LE(confidence[i], 1.0f);
          }
          EXPECT_EQ(hs.rows(), drafts.size() + 1) << where;
          EXPECT_EQ(runner->length(), static_cast<int>(committed.size()) + gamma) << where;
          // Greedy verification by the whole target.
          const std::vector<int32_t> truth = TargetGreedy(m, committed, static_cast<int>(drafts.size()) + 1);
          ASSERT_EQ(truth.size(), drafts.size() + 1) << where;
          int a = 0;
          while (a < static_cast<int>(drafts.size()) && drafts[a] == truth[a]) ++a;
          std::vector<int32_t> nodes;
          for (int i = 0; i < a; ++i) nodes.push_back(i);
          ASSERT_TRUE(runner->Accept(nodes).ok()) << where;
          committed.insert(committed.end(), truth.begin(), truth.begin() + a + 1);
          EXPECT_EQ(runner->length(), static_cast<int>(committed.size()) - 1) << where;
          accepted_total += a;
          drafted_total += static_cast<int>(drafts.size());
        }
      }
    }
    if (!tm.exact) {  // the trained model: early exits are often right, never always
      EXPECT_GT(accepted_total, 0) << tm.name;
      EXPECT_LT(accepted_total, drafted_total) << tm.name;
    }
  }
}

// (2) + (3) The states equal Round's for the same drafts, and after Accept with every accepted
// count (none, some, all) both runners go on alike.
class SplitDraftCodecTest : public SplitDraftTest,
                            public ::testing::WithParamInterface<codec::CodecKind> {};

TEST_P(SplitDraftCodecTest, StatesEqualRoundAndAcceptContinuesIdentically) {
  const codec::CodecSpec codec{GetParam(), false};
  for (const TestModel& tm : Models()) {
    const model::Model& m = *tm.model;
    float worst = 0;
    for (int k = 1; k < m.config().n_layers; ++k) {
      for (const char* text : kPrompts) {
        std::vector<int32_t> committed = Encode(m, text);
        auto drafting = Runner(m, k, codec);  // DraftRound
        auto plain = Runner(m, k, codec);     // Round with the same drafts
        ASSERT_NE(drafting, nullptr);
        ASSERT_NE(plain, nullptr);
        v1::HiddenStates a, b;
        ASSERT_TRUE(drafting->Prompt(committed, &a).ok());
        ASSERT_TRUE(plain->Prompt(committed, &b).ok());
        CompareStates(a, b, true, "prompt");
        for (int round = 0; round < 30; ++round) {
          const int gamma = kGammas[round % std::size(kGammas)];
          const std::string where = absl::StrCat(tm.name, " ", std::string(codec::CodecName(codec.kind)),
                                                 " k=", k, " '", text, "' round ", round, " gamma ", gamma);
          std::vector<int32_t> drafts;
          ASSERT_TRUE(drafting->DraftRound(committed.back(), gamma, &drafts, &a).ok()) << where;
          ASSERT_EQ(static_cast<int>(drafts.size()), gamma) << where;
          ASSERT_TRUE(plain->Round(committed.back(), drafts, {}, &b).ok()) << where;
          worst = std::max(worst, CompareStates(a, b, tm.exact, where));
          EXPECT_EQ(drafting->length(), plain->length()) << where;
          // Accept a count that cycles through 0..gamma, whatever the target says, then the
          // target's token after the accepted prefix.
          const int accepted = round % (gamma + 1);
          std::vector<int32_t> nodes;
          for (int i = 0; i < accepted; ++i) nodes.push_back(i);
          ASSERT_TRUE(drafting->Accept(nodes).ok()) << where;
          ASSERT_TRUE(plain->Accept(nodes).ok()) << where;
          committed.insert(committed.end(), drafts.begin(), drafts.begin() + accepted);
          committed.push_back(TargetGreedy(m, committed, 1).at(0));
          EXPECT_EQ(drafting->length(), static_cast<int>(committed.size()) - 1) << where;
          EXPECT_EQ(plain->length(), drafting->length()) << where;
        }
        EXPECT_EQ(drafting->raw_bytes(), plain->raw_bytes());
        EXPECT_EQ(drafting->wire_bytes(), plain->wire_bytes());
        // The two kinds of round mix on one runner: a Round after DraftRounds still matches.
        const std::vector<int32_t> drafts = TargetGreedy(m, committed, 3);
        ASSERT_TRUE(drafting->Round(committed.back(), drafts, {}, &a).ok());
        ASSERT_TRUE(plain->Round(committed.back(), drafts, {}, &b).ok());
        worst = std::max(worst, CompareStates(a, b, tm.exact, "a Round after DraftRounds"));
        ASSERT_TRUE(drafting->Accept({}).ok());
        ASSERT_TRUE(plain->Accept({}).ok());
      }
    }
    ::testing::Test::RecordProperty(absl::StrCat("max_diff_", tm.name), absl::StrCat(worst));
    std::printf("%s %s: largest difference from Round %g\n", tm.name,
                std::string(codec::CodecName(codec.kind)).c_str(), worst);
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, SplitDraftCodecTest,
                         ::testing::Values(codec::CodecKind::kF32, codec::CodecKind::kInt8),
                         [](const ::testing::TestParamInfo<codec::CodecKind>& info) {
                           return std::string(codec::CodecName(info.param));
                         });

// gamma = 0 sends the root alone, as Round(root, {}) does, and drafts nothing.
TEST_F(SplitDraftTest, GammaZeroSendsTheRootAlone) {
  for (const TestModel& tm : Models()) {
    const std::vector<int32_t> prompt = Encode(*tm.model, "Once upon a time");
    auto drafting = Runner(*tm.model, 2, kF32);
    auto plain = Runner(*tm.model, 2, kF32);
    v1::HiddenStates a, b;
    ASSERT_TRUE(drafting->Prompt(prompt, &a).ok());
    ASSERT_TRUE(plain->Prompt(prompt, &b).ok());
    std::vector<int32_t> drafts = {7, 8};
    std::vector<float> confidence = {0.5f};
    ASSERT_TRUE(drafting->DraftRound(prompt.back(), 0, &drafts, &a, &confidence).ok());
    EXPECT_TRUE(drafts.empty());
    EXPECT_TRUE(confidence.empty());
    ASSERT_TRUE(plain->Round(prompt.back(), {}, {}, &b).ok());
    EXPECT_EQ(a.rows(), 1u);
    CompareStates(a, b, true, absl::StrCat(tm.name, " gamma 0"));  // one position: the same path
    EXPECT_TRUE(drafting->Accept({}).ok());
    EXPECT_EQ(drafting->length(), static_cast<int>(prompt.size()));
  }
}

// With less room than gamma + 1 positions, DraftRound drafts as many as fit.
TEST_F(SplitDraftTest, DraftsOnlyAsManyAsTheCacheHolds) {
  for (const TestModel& tm : Models()) {
    const model::Model& m = *tm.model;
    const std::vector<int32_t> prompt = Encode(m, "Once upon a time");
    const int capacity = static_cast<int>(prompt.size()) + 2;  // room for the root and 2 drafts
    auto drafting = Runner(m, 3, kF32, capacity);
    auto plain = Runner(m, 3, kF32, capacity);
    v1::HiddenStates a, b;
    ASSERT_TRUE(drafting->Prompt(prompt, &a).ok());
    ASSERT_TRUE(plain->Prompt(prompt, &b).ok());
    std::vector<int32_t> drafts;
    std::vector<float> confidence;
    ASSERT_TRUE(drafting->DraftRound(prompt.back(), 5, &drafts, &a, &confidence).ok());
    EXPECT_EQ(drafts.size(), 2u);
    EXPECT_EQ(confidence.size(), 2u);
    EXPECT_EQ(a.rows(), 3u);
    EXPECT_EQ(drafting->length(), capacity);
    ASSERT_TRUE(plain->Round(prompt.back(), drafts, {}, &b).ok());
    CompareStates(a, b, tm.exact, absl::StrCat(tm.name, " clamped to the room left"));
    // The early-exit drafter drafts the same (it needs no slot for its last draft, so it may
    // draft one more).
    auto drafter = Drafter(m, 3, capacity);
    spec::Draft want;
    ASSERT_TRUE(drafter->Propose(prompt, 5, &want).ok());
    ASSERT_GE(want.tokens.size(), drafts.size());
    EXPECT_TRUE(std::equal(drafts.begin(), drafts.end(), want.tokens.begin())) << tm.name;
    ASSERT_TRUE(drafting->Accept(kFirst).ok());
    EXPECT_EQ(drafting->length(), capacity - 1);
  }
}

// (4) Bad input is a clear error and leaves the cache as it was: the runner afterwards sends
// exactly what a runner that never saw the bad calls sends.
TEST_F(SplitDraftTest, BadInputIsAnErrorAndLeavesTheCacheUntouched) {
  for (const TestModel& tm : Models()) {
    const model::Model& m = *tm.model;
    const std::vector<int32_t> prompt = Encode(m, "The little dog");
    const int vocab = m.config().vocab_size;
    auto runner = Runner(m, 2, kF32);
    auto twin = Runner(m, 2, kF32);
    v1::HiddenStates a, b;
    ASSERT_TRUE(runner->Prompt(prompt, &a).ok());
    ASSERT_TRUE(twin->Prompt(prompt, &b).ok());
    const int length = runner->length();
    std::vector<int32_t> drafts = {1, 2, 3};

    absl::Status s = runner->DraftRound(prompt.back(), -1, &drafts, &a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("negative"));
    EXPECT_EQ(runner->length(), length);

    for (int32_t bad : {-1, vocab, vocab + 100}) {
      s = runner->DraftRound(bad, 3, &drafts, &a);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_THAT(std::string(s.message()), HasSubstr("outside the vocabulary"));
      EXPECT_EQ(runner->length(), length);
    }
    // The refused calls left no round pending.
    EXPECT_EQ(runner->Accept({}).code(), absl::StatusCode::kFailedPrecondition);

    // A round pending: neither kind of round may start before Accept.
    ASSERT_TRUE(runner->DraftRound(prompt.back(), 2, &drafts, &a).ok());
    std::vector<int32_t> twin_drafts;
    ASSERT_TRUE(twin->DraftRound(prompt.back(), 2, &twin_drafts, &b).ok());
    EXPECT_EQ(drafts, twin_drafts);
    s = runner->DraftRound(prompt.back(), 2, &drafts, &a);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(runner->Round(prompt.back(), twin_drafts, {}, &a).code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(runner->length(), length + 3);
    ASSERT_TRUE(runner->Accept(kFirst).ok());
    ASSERT_TRUE(twin->Accept(kFirst).ok());

    // After the errors the runner goes on exactly like its twin (the same path: bit for bit).
    const int32_t bonus = twin_drafts[1];
    ASSERT_TRUE(runner->DraftRound(bonus, 4, &drafts, &a).ok());
    ASSERT_TRUE(twin->DraftRound(bonus, 4, &twin_drafts, &b).ok());
    EXPECT_EQ(drafts, twin_drafts) << tm.name;
    CompareStates(a, b, true, absl::StrCat(tm.name, " after the refused calls"));
    EXPECT_EQ(runner->length(), twin->length());
  }
}

// No room at all: ResourceExhausted, and nothing changes.
TEST_F(SplitDraftTest, NoRoomIsResourceExhausted) {
  const std::vector<int32_t> prompt = Encode(*stories_, "Once upon a time");
  const int capacity = static_cast<int>(prompt.size()) - 1;  // the prompt fills it
  auto runner = Runner(*stories_, 1, kF32, capacity);
  v1::HiddenStates hs;
  ASSERT_TRUE(runner->Prompt(prompt, &hs).ok());
  ASSERT_EQ(runner->length(), capacity);
  std::vector<int32_t> drafts = {5};
  std::vector<float> confidence = {0.5f};
  for (int gamma : {0, 1, 4}) {
    absl::Status s = runner->DraftRound(prompt.back(), gamma, &drafts, &hs, &confidence);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("KV cache full"));
    EXPECT_EQ(runner->length(), capacity);
  }
  EXPECT_EQ(runner->Accept({}).code(), absl::StatusCode::kFailedPrecondition) << "no round is pending";
  // Room again after a rollback: the runner drafts as a fresh one does.
  auto twin = Runner(*stories_, 1, kF32, capacity);
  v1::HiddenStates a, b;
  std::vector<int32_t> prefix(prompt.begin(), prompt.end() - 2);  // room for the root and 1 draft
  ASSERT_TRUE(runner->Prompt(prefix, &a).ok());
  ASSERT_TRUE(twin->Prompt(prefix, &b).ok());
  std::vector<int32_t> twin_drafts;
  ASSERT_TRUE(runner->DraftRound(prefix.back(), 4, &drafts, &a).ok());
  ASSERT_TRUE(twin->DraftRound(prefix.back(), 4, &twin_drafts, &b).ok());
  EXPECT_EQ(drafts.size(), 1u);
  EXPECT_EQ(drafts, twin_drafts);
  CompareStates(a, b, true, "after the refusal");
}

// Through a real verifier on loopback with f32: the text is the target's own greedy text.
TEST_F(SplitDraftTest, ThroughTheVerifierF32IsExact) {
  cloud::VerifierLimits limits;
  tandem::testing::VerifierHarness harness(*stories_, limits);
  auto stub = harness.Stub();
  int total_rounds = 0, total_generated = 0;
  for (int k = 1; k < stories_->config().n_layers; ++k) {
    for (const char* text : kPrompts) {
      const std::vector<int32_t> prompt = Encode(*stories_, text);
      const int n = 48;
      const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*stories_, prompt, n);
      auto runner = Runner(*stories_, k, kF32);
      grpc::ClientContext ctx;
      auto stream = stub->Session(&ctx);
      v1::EdgeMessage m;
      m.mutable_open()->set_mode(v1::MODE_SPLIT);
      m.mutable_open()->set_split_layer(static_cast<uint32_t>(k));
      v1::VerifierMessage reply;
      ASSERT_TRUE(stream->Write(m));
      ASSERT_TRUE(stream->Read(&reply));
      m.Clear();
      ASSERT_TRUE(runner->Prompt(prompt, m.mutable_prompt()->mutable_hidden()).ok());
      ASSERT_TRUE(stream->Write(m));
      std::vector<int32_t> committed = prompt, generated;
      int rounds = 0;
      bool end = false;
      while (!end && static_cast<int>(generated.size()) < n) {
        m.Clear();
        v1::DraftRound* r = m.mutable_draft();
        r->set_round(static_cast<uint64_t>(++rounds));
        r->set_committed_length(static_cast<uint32_t>(committed.size()));
        std::vector<int32_t> drafts;
        ASSERT_TRUE(runner->DraftRound(committed.back(), 3, &drafts, r->mutable_hidden()).ok());
        for (int32_t t : drafts) r->add_token_ids(t);
        ASSERT_TRUE(stream->Write(m));
        ASSERT_TRUE(stream->Read(&reply));
        ASSERT_TRUE(reply.has_verdict());
        const v1::Verdict& v = reply.verdict();
        std::vector<int32_t> nodes;
        for (uint32_t i = 0; i < v.accepted(); ++i) nodes.push_back(static_cast<int32_t>(i));
        ASSERT_TRUE(runner->Accept(nodes).ok());
        std::vector<int32_t> emitted(drafts.begin(), drafts.begin() + v.accepted());
        emitted.push_back(v.next_token());
        for (int32_t t : emitted) {
          committed.push_back(t);
          if (t == stories_->vocab().bos_id() || t == stories_->vocab().eos_id()) {
            end = true;
            break;
          }
          generated.push_back(t);
          if (static_cast<int>(generated.size()) == n) break;
        }
      }
      stream->WritesDone();
      const grpc::Status status = stream->Finish();
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(generated, alone) << "k=" << k << " '" << text << "'";
      total_rounds += rounds;
      total_generated += static_cast<int>(generated.size());
    }
  }
  EXPECT_LT(total_rounds, total_generated) << "drafts are accepted";
  EXPECT_TRUE(harness.WaitIdle());
}

// Opt-in timing on a bigger model (e.g. a synthetic 110M q8_0 from `tandem-model synth`):
// TANDEM_SPLIT_BENCH_MODEL=path. Edge seconds per round, DraftRound against a separate
// early-exit drafter + Round, for k = 2 and 4 and gamma = 4, one thread; the same rounds (the
// same drafts, one accepted per round) for both. Records gtest properties; asserts only that
// both give the same drafts and states.
TEST(SplitDraftTiming, DraftRoundAgainstDrafterPlusRound) {
  const char* path = std::getenv("TANDEM_SPLIT_BENCH_MODEL");
  if (path == nullptr || *path == '\0') GTEST_SKIP() << "set TANDEM_SPLIT_BENCH_MODEL to a model file";
  model::ModelLoadOptions o;
  o.path = path;
  auto loaded = model::Model::Load(o);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::Model& m = **loaded;
  const int gamma = 4, rounds = 24;
  const char* env_rounds = std::getenv("TANDEM_SPLIT_BENCH_ROUNDS");
  const int n_rounds = env_rounds != nullptr ? std::max(1, std::atoi(env_rounds)) : rounds;
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 31; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + 13) % m.config().vocab_size));
  for (int k : {2, 4}) {
    if (k >= m.config().n_layers) continue;
    auto draft_runner = SplitRunner::Create(m, k, 1024, kF32);
    auto plain_runner = SplitRunner::Create(m, k, 1024, kF32);
    ASSERT_TRUE(draft_runner.ok() && plain_runner.ok());
    model::ThreadPool pool(1);
    spec::ModelDrafterOptions dopt;
    dopt.layers = k;
    auto drafter = spec::ModelDrafter::Create(m, &pool, dopt);
    ASSERT_TRUE(drafter.ok()) << drafter.status();
    v1::HiddenStates a, b;
    ASSERT_TRUE((*draft_runner)->Prompt(prompt, &a).ok());
    ASSERT_TRUE((*plain_runner)->Prompt(prompt, &b).ok());
    std::vector<int32_t> committed = prompt;
    double t_draft = 0, t_plain = 0;
    using Clock = std::chrono::steady_clock;
    for (int round = 0; round < n_rounds; ++round) {
      std::vector<int32_t> drafts;
      auto t0 = Clock::now();
      ASSERT_TRUE((*draft_runner)->DraftRound(committed.back(), gamma, &drafts, &a).ok());
      auto t1 = Clock::now();
      spec::Draft d;
      ASSERT_TRUE((*drafter)->Propose(committed, gamma, &d).ok());
      ASSERT_TRUE((*plain_runner)->Round(committed.back(), d.tokens, {}, &b).ok());
      auto t2 = Clock::now();
      t_draft += std::chrono::duration<double>(t1 - t0).count();
      t_plain += std::chrono::duration<double>(t2 - t1).count();
      ASSERT_EQ(drafts, d.tokens);
      CompareStates(a, b, true, absl::StrCat("k=", k, " round ", round));
      ASSERT_TRUE((*draft_runner)->Accept(kFirst).ok());
      ASSERT_TRUE((*plain_runner)->Accept(kFirst).ok());
      committed.push_back(drafts[0]);
      committed.push_back(static_cast<int32_t>((round * 104729 + 7) % m.config().vocab_size));
    }
    const double per_draft = t_draft / n_rounds, per_plain = t_plain / n_rounds;
    ::testing::Test::RecordProperty(absl::StrCat("draft_round_s_k", k), absl::StrCat(per_draft));
    ::testing::Test::RecordProperty(absl::StrCat("drafter_plus_round_s_k", k), absl::StrCat(per_plain));
    std::printf("k=%d gamma=%d: DraftRound %.4f s/round, drafter + Round %.4f s/round (%.2fx)\n", k,
                gamma, per_draft, per_plain, per_plain / per_draft);
  }
}

}  // namespace
}  // namespace tandem::edge
