// The verifier over real gRPC on loopback: a client drafting locally and verifying remotely gets
// exactly the target-alone text in fewer target passes than tokens, and every kind of bad input
// gets a precise status while a concurrent good session still finishes correctly.
#include "cloud/verifier_service.h"

#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/model/model_writer.h"
#include "common/obs/metrics.h"
#include "common/spec/drafter.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using ::testing::HasSubstr;

class VerifierServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    target_ = std::move(*model::Model::Load(o)).release();
    std::string path = tandem::testing::TempDir() + "/draft-q8.gguf";
    ASSERT_TRUE(model::ConvertToGguf(*target_, model::GgmlType::kQ8_0, path).ok());
    model::ModelLoadOptions d;
    d.path = path;
    draft_ = std::move(*model::Model::Load(d)).release();
  }
  static void TearDownTestSuite() {
    delete target_;
    delete draft_;
  }

  void SetUp() override {
    worker_ = std::make_unique<EngineWorker>(*target_, 1);
    VerifierLimits limits;
    limits.max_draft_tokens = 8;
    limits.max_tree_nodes = 16;
    limits.max_message_bytes = 1 << 20;
    service_ = std::make_unique<VerifierService>(*target_, "stories260K", worker_.get(), limits);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(service_->transport_max_message_bytes());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Verifier::NewStub(channel_);
  }
  void TearDown() override {
    server_->Shutdown();
    server_.reset();
    service_.reset();
    worker_.reset();
  }

  static std::vector<int32_t> TargetAlone(const std::vector<int32_t>& prompt, int n) {
    return tandem::testing::GreedyTargetAlone(*target_, prompt, n);
  }

  // A minimal edge: drafts locally with the q8_0 copy, verifies remotely, greedy.
  std::vector<int32_t> RemoteGreedy(const std::vector<int32_t>& prompt, int n, int gamma,
                                    int* rounds) {
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage msg;
    msg.mutable_open()->set_mode(v1::MODE_SPEC);
    EXPECT_TRUE(stream->Write(msg));
    v1::VerifierMessage reply;
    EXPECT_TRUE(stream->Read(&reply));
    EXPECT_EQ(reply.kind_case(), v1::VerifierMessage::kOpened);
    msg.Clear();
    for (int32_t t : prompt) msg.mutable_prompt()->add_token_ids(t);
    EXPECT_TRUE(stream->Write(msg));
    auto drafter = std::move(*spec::ModelDrafter::Create(*draft_, nullptr, {}));
    std::vector<int32_t> committed = prompt, gen;
    *rounds = 0;
    while (static_cast<int>(gen.size()) < n) {
      spec::Draft draft;
      const int g = std::min<int>(gamma, n - static_cast<int>(gen.size()) - 1);
      if (g > 0) {
        EXPECT_TRUE(drafter->Propose(committed, g, &draft).ok());
      }
      msg.Clear();
      v1::DraftRound* d = msg.mutable_draft();
      d->set_round(++*rounds);
      d->set_committed_length(committed.size());
      for (int32_t t : draft.tokens) d->add_token_ids(t);
      EXPECT_TRUE(stream->Write(msg));
      if (!stream->Read(&reply)) break;
      const v1::Verdict& v = reply.verdict();
      std::vector<int32_t> emitted(draft.tokens.begin(), draft.tokens.begin() + v.accepted());
      emitted.push_back(v.next_token());
      bool stop = false;
      for (int32_t t : emitted) {
        committed.push_back(t);
        if (t == 1 || t == 2) stop = true;
        if (stop || static_cast<int>(gen.size()) == n) continue;
        gen.push_back(t);
      }
      if (stop) break;
    }
    stream->WritesDone();
    grpc::Status s = stream->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return gen;
  }

  // Opens a session, sends `msgs` after the open (and the prompt when given), returns the final
  // status the verifier ended the stream with.
  grpc::Status SendBad(const std::vector<v1::EdgeMessage>& msgs, bool open = true,
                       const std::string& model = "") {
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    v1::VerifierMessage reply;
    if (open) {
      m.mutable_open()->set_mode(v1::MODE_SPEC);
      m.mutable_open()->set_model(model);
      stream->Write(m);
      stream->Read(&reply);
    }
    for (const v1::EdgeMessage& x : msgs) {
      if (!stream->Write(x)) break;
    }
    stream->WritesDone();
    while (stream->Read(&reply)) {
    }
    return stream->Finish();
  }

  static v1::EdgeMessage Prompt(std::vector<int32_t> ids) {
    v1::EdgeMessage m;
    m.mutable_prompt();
    for (int32_t t : ids) m.mutable_prompt()->add_token_ids(t);
    return m;
  }
  static v1::EdgeMessage Draft(uint64_t round, uint32_t committed, std::vector<int32_t> ids,
                               std::vector<int32_t> parents = {}) {
    v1::EdgeMessage m;
    m.mutable_draft()->set_round(round);
    m.mutable_draft()->set_committed_length(committed);
    for (int32_t t : ids) m.mutable_draft()->add_token_ids(t);
    for (int32_t p : parents) m.mutable_draft()->add_parents(p);
    return m;
  }

  static model::Model* target_;
  static model::Model* draft_;
  std::unique_ptr<EngineWorker> worker_;
  std::unique_ptr<VerifierService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Verifier::Stub> stub_;
};
model::Model* VerifierServiceTest::target_ = nullptr;
model::Model* VerifierServiceTest::draft_ = nullptr;

TEST_F(VerifierServiceTest, GetInfoDescribesTheModel) {
  grpc::ClientContext ctx;
  v1::ServerInfo info;
  ASSERT_TRUE(stub_->GetInfo(&ctx, v1::GetInfoRequest(), &info).ok());
  ASSERT_EQ(info.models_size(), 1);
  EXPECT_EQ(info.models(0).name(), "stories260K");
  EXPECT_EQ(info.models(0).vocab_size(), 512u);
  EXPECT_EQ(info.models(0).n_layers(), 5u);
  EXPECT_EQ(info.limits().max_draft_tokens(), 8u);
}

TEST_F(VerifierServiceTest, RemoteSpeculationEqualsTargetAloneOnTheGoldenPrompts) {
  for (auto [text, n] : {std::pair{"", 200}, {"Zoo", 57}}) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    int rounds = 0;
    std::vector<int32_t> got = RemoteGreedy(prompt, n, 4, &rounds);
    EXPECT_EQ(got, TargetAlone(prompt, n)) << "prompt '" << text << "'";
    EXPECT_LT(rounds, static_cast<int>(got.size()));
  }
  EXPECT_LT(service_->verify_passes(), 257);
  EXPECT_GT(service_->accepted_tokens(), 0);
  // Both sessions are freed; OnDone runs on a gRPC thread right after the client's Finish.
  for (int i = 0; i < 200 && service_->active_sessions() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(service_->active_sessions(), 0);
}

TEST_F(VerifierServiceTest, BadInputGetsPreciseStatusesWhileAGoodSessionFinishes) {
  std::vector<int32_t> prompt = target_->vocab().Encode("Once upon a time", true);
  std::vector<int32_t> want = TargetAlone(prompt, 120);
  std::vector<int32_t> good;
  std::thread good_session([&] {
    int rounds = 0;
    good = RemoteGreedy(prompt, 120, 4, &rounds);
  });
  using C = grpc::StatusCode;
  auto expect = [](const grpc::Status& s, C code, const char* text) {
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(text));
  };
  expect(SendBad({Prompt({1, 512})}), C::INVALID_ARGUMENT, "outside the vocabulary");
  expect(SendBad({Prompt({})}), C::INVALID_ARGUMENT, "empty prompt");
  expect(SendBad({Prompt({1, 5}), Draft(1, 2, std::vector<int32_t>(9, 5))}), C::INVALID_ARGUMENT,
         "over the limit");
  expect(SendBad({Prompt({1, 5}), Draft(1, 2, std::vector<int32_t>(17, 5), std::vector<int32_t>(17, -1))}),
         C::INVALID_ARGUMENT, "over the limit");
  expect(SendBad({Prompt({1, 5}), Draft(1, 2, {5, 6}, {-1, 1})}), C::INVALID_ARGUMENT, "parents");
  expect(SendBad({Prompt({1, 5}), Draft(1, 2, {5, 600})}), C::INVALID_ARGUMENT, "vocabulary");
  expect(SendBad({Prompt({1, 5}), Draft(2, 2, {5})}), C::INVALID_ARGUMENT, "out of order");
  expect(SendBad({Prompt({1, 5}), Draft(1, 7, {5})}), C::FAILED_PRECONDITION, "committed");
  expect(SendBad({Draft(1, 0, {5})}), C::FAILED_PRECONDITION, "before open and prompt");
  expect(SendBad({Prompt({1})}, /*open=*/false), C::FAILED_PRECONDITION, "prompt before open");
  expect(SendBad({}, true, "llama-70b"), C::NOT_FOUND, "unknown model");
  v1::EdgeMessage nan = Draft(1, 2, {5});
  nan.mutable_draft()->mutable_probs()->add_sparse()->add_token_ids(5);
  nan.mutable_draft()->mutable_probs()->mutable_sparse(0)->add_probs(NAN);
  expect(SendBad({Prompt({1, 5}), nan}), C::INVALID_ARGUMENT, "draft q");
  v1::EdgeMessage nan_full = Draft(1, 2, {5});
  for (int i = 0; i < 512; ++i) nan_full.mutable_draft()->mutable_probs()->add_full(i == 9 ? NAN : 0.001f);
  expect(SendBad({Prompt({1, 5}), nan_full}), C::INVALID_ARGUMENT, "draft q holds nan");
  v1::EdgeMessage negative = Draft(1, 2, {5});
  negative.mutable_draft()->mutable_probs()->add_sparse()->add_token_ids(5);
  negative.mutable_draft()->mutable_probs()->mutable_sparse(0)->add_probs(-0.5f);
  expect(SendBad({Prompt({1, 5}), negative}), C::INVALID_ARGUMENT, "not a token probability");
  // 300000 ids of 2 bytes: under the 1 MiB message limit, but far over the context.
  expect(SendBad({Prompt(std::vector<int32_t>(300000, 300))}), C::RESOURCE_EXHAUSTED, "no room");
  // 600000 ids of 2 bytes: over the 1 MiB message limit.
  expect(SendBad({Prompt(std::vector<int32_t>(600000, 300))}), C::RESOURCE_EXHAUSTED,
         "bytes is over the limit of 1048576 bytes");
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_UNSPECIFIED);
    stream->Write(m);
    stream->WritesDone();
    v1::VerifierMessage reply;
    while (stream->Read(&reply)) {
    }
    expect(stream->Finish(), C::UNIMPLEMENTED, "MODE_UNSPECIFIED is not served");
  }
  for (uint32_t layer : {0u, 5u, 99u}) {  // stories260K has 5 layers: split at 1..4
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_SPLIT);
    m.mutable_open()->set_split_layer(layer);
    stream->Write(m);
    stream->WritesDone();
    v1::VerifierMessage reply;
    while (stream->Read(&reply)) {
    }
    expect(stream->Finish(), C::INVALID_ARGUMENT, "split_layer");
  }
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_SPEC);
    m.mutable_open()->mutable_sampling()->set_temperature(-1);
    stream->Write(m);
    stream->WritesDone();
    v1::VerifierMessage reply;
    while (stream->Read(&reply)) {
    }
    expect(stream->Finish(), C::INVALID_ARGUMENT, "temperature");
  }
  expect(SendBad({Prompt({1, 5}), v1::EdgeMessage()}), C::INVALID_ARGUMENT, "empty message");
  good_session.join();
  EXPECT_EQ(good, want);
  // Every session, good or bad, was freed.
  for (int i = 0; i < 100 && service_->active_sessions() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(service_->active_sessions(), 0);
  // Every refusal is counted under its reason.
  auto metrics = tandem::testing::ParsePrometheusText(obs::RenderText(*service_->metrics().registry()));
  auto rejected = [&](const char* reason) {
    return metrics[tandem::testing::SeriesKey("tandem_rejections_total", {{"reason", reason}})];
  };
  EXPECT_EQ(rejected("bad_token"), 2);
  EXPECT_EQ(rejected("empty_prompt"), 1);
  EXPECT_EQ(rejected("draft_too_long"), 1);
  EXPECT_EQ(rejected("tree_too_large"), 1);
  EXPECT_EQ(rejected("bad_tree"), 1);
  EXPECT_EQ(rejected("out_of_order"), 3);  // round 2 first, draft before prompt, prompt before open
  EXPECT_EQ(rejected("committed_mismatch"), 1);
  EXPECT_EQ(rejected("unknown_model"), 1);
  EXPECT_EQ(rejected("bad_probs"), 3);
  EXPECT_EQ(rejected("context_full"), 1);
  EXPECT_EQ(rejected("message_too_large"), 1);
  EXPECT_EQ(rejected("unsupported_mode"), 1);
  EXPECT_EQ(rejected("bad_split_layer"), 3);
  EXPECT_EQ(rejected("bad_sampling"), 1);
  EXPECT_EQ(rejected("bad_message"), 1);
  EXPECT_EQ(rejected("other"), 0);
  EXPECT_EQ(metrics[tandem::testing::SeriesKey("tandem_sessions_total", {{"outcome", "ok"}})], 1);
}

}  // namespace
}  // namespace tandem::cloud
