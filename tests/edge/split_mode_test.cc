// Split mode through a real verifier on loopback: the edge runs the target's layers [0, k) with
// SplitRunner and sends the layer-k states of the prompt and of every draft round; the verifier
// runs [k, N) and verifies. With the f32 codec the greedy text is identical to the target alone
// for every k (chains and trees); lossy codecs are measured against it; bad hidden-state payloads
// are INVALID_ARGUMENT, counted by reason, while the server keeps serving.
#include "edge/split_runner.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/spec/drafter.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"

namespace tandem::edge {
namespace {

using ::testing::HasSubstr;

const char* const kPrompts[] = {"Once upon a time", "Zoo", "The little dog"};

struct SplitRun {
  std::vector<int32_t> tokens;  // generated
  int rounds = 0;
  int64_t hidden_bytes = 0;
  grpc::Status status;
};

class SplitModeTest : public tandem::testing::Stories260KTest {
 protected:
  void SetUp() override {
    cloud::VerifierLimits limits;
    harness_ = std::make_unique<tandem::testing::VerifierHarness>(*target_, limits);
    stub_ = harness_->Stub();
  }

  std::vector<int32_t> Encode(const char* text) { return target_->vocab().Encode(text, true); }

  // A greedy split-mode edge: early-exit drafts after layer 4, `gamma` per round (or a static
  // 2x2 tree), layers [0, k) here with `codec`.
  SplitRun Run(const std::vector<int32_t>& prompt, int n, int k, const codec::CodecSpec& codec,
               bool tree = false) {
    SplitRun run;
    model::ThreadPool pool(1);
    auto drafter = spec::CreateDrafterFromSpec("early-exit:4", *target_, &pool, {});
    EXPECT_TRUE(drafter.ok()) << drafter.status();
    auto runner = SplitRunner::Create(*target_, k, 512, codec);
    EXPECT_TRUE(runner.ok()) << runner.status();
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_SPLIT);
    m.mutable_open()->set_split_layer(static_cast<uint32_t>(k));
    v1::VerifierMessage reply;
    if (!stream->Write(m) || !stream->Read(&reply)) {
      run.status = stream->Finish();
      return run;
    }
    m.Clear();
    EXPECT_TRUE((*runner)->Prompt(prompt, m.mutable_prompt()->mutable_hidden()).ok());
    EXPECT_EQ(m.prompt().token_ids_size(), 0) << "the prompt's ids stay on the edge";
    run.hidden_bytes += static_cast<int64_t>(m.prompt().hidden().data().size());
    stream->Write(m);
    std::vector<int32_t> committed = prompt;
    while (static_cast<int>(run.tokens.size()) < n) {
      std::vector<int32_t> drafts, parents;
      if (tree) {
        spec::DraftTree t;
        EXPECT_TRUE((*drafter)->ProposeTree(committed, spec::TreeShape{spec::TreeShape::Kind::kStatic, 2, 2}, &t).ok());
        for (size_t i = 1; i < t.tokens.size(); ++i) {
          drafts.push_back(t.tokens[i]);
          parents.push_back(t.parents[i] - 1);
        }
      } else {
        spec::Draft d;
        EXPECT_TRUE((*drafter)->Propose(committed, 3, &d).ok());
        drafts = d.tokens;
      }
      m.Clear();
      v1::DraftRound* r = m.mutable_draft();
      r->set_round(static_cast<uint64_t>(++run.rounds));
      r->set_committed_length(static_cast<uint32_t>(committed.size()));
      for (int32_t t : drafts) r->add_token_ids(t);
      for (int32_t p : parents) r->add_parents(p);
      EXPECT_TRUE((*runner)->Round(committed.back(), drafts, parents, r->mutable_hidden()).ok());
      run.hidden_bytes += static_cast<int64_t>(r->hidden().data().size());
      if (!stream->Write(m) || !stream->Read(&reply)) break;
      const v1::Verdict& v = reply.verdict();
      std::vector<int32_t> nodes;
      if (tree) {
        nodes.assign(v.accepted_nodes().begin(), v.accepted_nodes().end());
      } else {
        for (uint32_t i = 0; i < v.accepted(); ++i) nodes.push_back(static_cast<int32_t>(i));
      }
      EXPECT_TRUE((*runner)->Accept(nodes).ok());
      std::vector<int32_t> emitted;
      for (int32_t node : nodes) emitted.push_back(drafts[node]);
      emitted.push_back(v.next_token());
      bool end = false;
      for (int32_t t : emitted) {
        committed.push_back(t);
        if (t == target_->vocab().bos_id() || t == target_->vocab().eos_id()) {
          end = true;
          break;
        }
        run.tokens.push_back(t);
        if (static_cast<int>(run.tokens.size()) == n) break;
      }
      if (end) break;
    }
    stream->WritesDone();
    run.status = stream->Finish();
    return run;
  }

  std::unique_ptr<tandem::testing::VerifierHarness> harness_;
  std::unique_ptr<v1::Verifier::Stub> stub_;
};

TEST_F(SplitModeTest, F32IsExactForEverySplitLayer) {
  const int n_layers = target_->config().n_layers;
  for (const char* text : kPrompts) {
    const std::vector<int32_t> prompt = Encode(text);
    const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*target_, prompt, 64);
    for (int k = 1; k < n_layers; ++k) {
      SplitRun run = Run(prompt, 64, k, {codec::CodecKind::kF32, false});
      ASSERT_TRUE(run.status.ok()) << run.status.error_message();
      EXPECT_EQ(run.tokens, alone) << "'" << text << "' split at layer " << k;
      EXPECT_LT(run.rounds, static_cast<int>(alone.size())) << "drafts are accepted";
    }
  }
  EXPECT_TRUE(harness_->WaitIdle());
}

TEST_F(SplitModeTest, TreesAndZstdAreExactToo) {
  for (const char* text : kPrompts) {
    const std::vector<int32_t> prompt = Encode(text);
    const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*target_, prompt, 48);
    SplitRun tree = Run(prompt, 48, 2, {codec::CodecKind::kF32, false}, /*tree=*/true);
    ASSERT_TRUE(tree.status.ok()) << tree.status.error_message();
    EXPECT_EQ(tree.tokens, alone) << text;
    SplitRun zstd = Run(prompt, 48, 3, {codec::CodecKind::kF32, true});
    ASSERT_TRUE(zstd.status.ok()) << zstd.status.error_message();
    EXPECT_EQ(zstd.tokens, alone) << text;
  }
}

TEST_F(SplitModeTest, LossyCodecsAreMeasured) {
  // Agreement with exact decoding over 64 tokens, and hidden-state bytes per generated token,
  // at k = 2. Recorded as test properties; bench/ reports the full grid.
  const codec::CodecKind kinds[] = {codec::CodecKind::kF32, codec::CodecKind::kF16,
                                    codec::CodecKind::kBf16, codec::CodecKind::kInt8,
                                    codec::CodecKind::kInt4};
  double f32_bytes = 0;
  for (codec::CodecKind kind : kinds) {
    int identical = 0;
    double bytes_per_token = 0;
    for (const char* text : kPrompts) {
      const std::vector<int32_t> prompt = Encode(text);
      const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*target_, prompt, 64);
      SplitRun run = Run(prompt, 64, 2, {kind, false});
      ASSERT_TRUE(run.status.ok()) << run.status.error_message();
      ASSERT_FALSE(run.tokens.empty());
      identical += run.tokens == alone;
      bytes_per_token += static_cast<double>(run.hidden_bytes) / run.tokens.size() / std::size(kPrompts);
    }
    const std::string name(codec::CodecName(kind));
    RecordProperty(name + "_identical_of_3", identical);
    RecordProperty(name + "_hidden_bytes_per_token", static_cast<int>(bytes_per_token));
    if (kind == codec::CodecKind::kF32) {
      EXPECT_EQ(identical, 3);
      f32_bytes = bytes_per_token;
    } else {
      EXPECT_LT(bytes_per_token, f32_bytes * (kind == codec::CodecKind::kInt4 ? 0.2 : 0.6)) << name;
    }
  }
}

TEST_F(SplitModeTest, BadHiddenStatesAreInvalidArgument) {
  const std::vector<int32_t> prompt = Encode("Zoo");
  auto runner = SplitRunner::Create(*target_, 2, 512, {codec::CodecKind::kF32, false});
  ASSERT_TRUE(runner.ok());
  // Each case: a message sequence whose last message is bad.
  auto send = [&](const std::function<void(v1::EdgeMessage*)>& mutate_prompt,
                  const std::function<void(v1::EdgeMessage*)>& mutate_round) {
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_SPLIT);
    m.mutable_open()->set_split_layer(2);
    v1::VerifierMessage reply;
    stream->Write(m);
    stream->Read(&reply);
    m.Clear();
    EXPECT_TRUE((*runner)->Prompt(prompt, m.mutable_prompt()->mutable_hidden()).ok());
    if (mutate_prompt) mutate_prompt(&m);
    stream->Write(m);
    if (mutate_round) {
      m.Clear();
      v1::DraftRound* r = m.mutable_draft();
      r->set_round(1);
      r->set_committed_length(static_cast<uint32_t>(prompt.size()));
      r->add_token_ids(300);
      EXPECT_TRUE((*runner)->Round(prompt.back(), std::vector<int32_t>{300}, {}, r->mutable_hidden()).ok());
      EXPECT_TRUE((*runner)->Accept({}).ok());
      mutate_round(&m);
      stream->Write(m);
    }
    stream->WritesDone();
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  };
  auto expect = [](const grpc::Status& s, const std::string& text) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(text));
  };
  expect(send([](v1::EdgeMessage* m) { m->mutable_prompt()->add_token_ids(1); }, nullptr),
         "stay on the edge");
  expect(send([](v1::EdgeMessage* m) { m->mutable_prompt()->mutable_hidden()->set_layer(3); }, nullptr),
         "expects layer 2");
  expect(send([](v1::EdgeMessage* m) {
           m->mutable_prompt()->mutable_hidden()->set_rows(m->prompt().hidden().rows() + 1);
         }, nullptr),
         "needs");
  expect(send(nullptr, [](v1::EdgeMessage* m) {
           std::string* data = m->mutable_draft()->mutable_hidden()->mutable_data();
           const float nan = NAN;
           std::memcpy(data->data() + 4, &nan, 4);
         }),
         "not finite");
  expect(send(nullptr, [](v1::EdgeMessage* m) { m->mutable_draft()->clear_hidden(); }),
         "needs the hidden states");
  expect(send(nullptr, [](v1::EdgeMessage* m) {
           m->mutable_draft()->mutable_hidden()->set_codec(static_cast<v1::Codec>(77));
         }),
         "unknown hidden-state codec");
  expect(send(nullptr, [](v1::EdgeMessage* m) { m->mutable_draft()->mutable_hidden()->set_zstd(true); }),
         "zstd");
  EXPECT_EQ(harness_->Metric("tandem_rejections_total", {{"reason", "bad_hidden"}}), 7);
  // The server still serves split sessions correctly.
  const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*target_, prompt, 20);
  SplitRun run = Run(prompt, 20, 2, {codec::CodecKind::kF32, false});
  ASSERT_TRUE(run.status.ok());
  EXPECT_EQ(run.tokens, alone);
  EXPECT_TRUE(harness_->WaitIdle());
}

}  // namespace
}  // namespace tandem::edge
