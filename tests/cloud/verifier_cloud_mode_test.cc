// Cloud mode over real gRPC on loopback: the verifier decodes alone and streams CloudTokens. Greedy
// output equals the target decoding alone on the golden prompts (with sessions interleaved on the
// one engine), Close mid-stream ends the session cleanly, and a new stream whose prompt is the
// accepted prefix continues exactly where the first one stopped.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using tandem::testing::CloseMsg;
using tandem::testing::OpenMsg;
using tandem::testing::PromptMsg;
using C = grpc::StatusCode;

struct CloudRun {
  std::vector<int32_t> tokens;
  int messages = 0;
  bool done = false;
  uint64_t compute_micros = 0;
  grpc::Status status;
};

// Opens a cloud session, sends the prompt, half-closes and reads every CloudTokens message.
CloudRun RunCloud(v1::Verifier::Stub* stub, const std::vector<int32_t>& prompt, uint32_t max_new,
                  float temperature = 0, uint64_t seed = 0) {
  CloudRun run;
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::EdgeMessage open = OpenMsg(v1::MODE_CLOUD, max_new);
  open.mutable_open()->mutable_sampling()->set_temperature(temperature);
  open.mutable_open()->mutable_sampling()->set_seed(seed);
  v1::VerifierMessage reply;
  if (stream->Write(open) && stream->Read(&reply) && reply.has_opened() &&
      stream->Write(PromptMsg(prompt))) {
    stream->WritesDone();
    while (stream->Read(&reply)) {
      EXPECT_TRUE(reply.has_tokens());
      EXPECT_FALSE(run.done) << "a message after done";
      run.messages++;
      for (int32_t t : reply.tokens().token_ids()) run.tokens.push_back(t);
      run.compute_micros += reply.tokens().compute_micros();
      run.done = reply.tokens().done();
    }
  }
  run.status = stream->Finish();
  return run;
}

class VerifierCloudModeTest : public tandem::testing::Stories260KTest {
 protected:
  std::vector<int32_t> Encode(const char* text) { return target_->vocab().Encode(text, true); }
};

TEST_F(VerifierCloudModeTest, GetInfoListsTheServedModes) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  grpc::ClientContext ctx;
  v1::ServerInfo info;
  ASSERT_TRUE(h.Stub()->GetInfo(&ctx, v1::GetInfoRequest(), &info).ok());
  EXPECT_THAT(info.modes(), ::testing::ElementsAre(v1::MODE_SPEC, v1::MODE_CLOUD, v1::MODE_SPLIT));
  EXPECT_EQ(info.limits().idle_ttl_seconds(), 60u);
}

TEST_F(VerifierCloudModeTest, GreedyEqualsTargetAloneOnTheGoldenPromptsWithSessionsInterleaved) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  const std::vector<std::pair<const char*, int>> golden = {{"", 200}, {"Zoo", 57}, {"Once upon a time", 120}};
  std::vector<CloudRun> runs(golden.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < golden.size(); ++i) {
    threads.emplace_back([&, i] { runs[i] = RunCloud(stub.get(), Encode(golden[i].first), golden[i].second); });
  }
  for (std::thread& t : threads) t.join();
  int total = 0;
  for (size_t i = 0; i < golden.size(); ++i) {
    const CloudRun& r = runs[i];
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_TRUE(r.done);
    EXPECT_EQ(r.tokens, tandem::testing::GreedyTargetAlone(*target_, Encode(golden[i].first), golden[i].second))
        << "prompt '" << golden[i].first << "'";
    EXPECT_GT(r.compute_micros, 0u);
    total += static_cast<int>(r.tokens.size());
  }
  ASSERT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_generated_tokens_total", {{"mode", "cloud"}}), total);
  EXPECT_EQ(h.Metric("tandem_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(h.Metric("tandem_time_per_output_token_seconds_count"), total - 3);
  EXPECT_GT(h.Metric("tandem_bytes_total", {{"direction", "down"}, {"kind", "tokens"}}), 0);
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 3);
}

TEST_F(VerifierCloudModeTest, StopsBeforeEosWithoutALimit) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  const std::vector<int32_t> prompt = Encode("Zoo");
  const CloudRun r = RunCloud(h.Stub().get(), prompt, 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.done);
  const std::vector<int32_t> ref = tandem::testing::GreedyTargetAlone(*target_, prompt, 1000);
  EXPECT_EQ(r.tokens, ref);  // both stop before BOS/EOS or at the context's end
  EXPECT_LT(prompt.size() + r.tokens.size(), 513u);
}

TEST_F(VerifierCloudModeTest, AResumedStreamContinuesExactly) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  const std::vector<int32_t> ref = tandem::testing::GreedyTargetAlone(*target_, prompt, 90);
  const CloudRun first = RunCloud(stub.get(), prompt, 33);
  ASSERT_TRUE(first.status.ok());
  ASSERT_EQ(first.tokens, std::vector<int32_t>(ref.begin(), ref.begin() + 33));
  std::vector<int32_t> prefix = prompt;
  prefix.insert(prefix.end(), first.tokens.begin(), first.tokens.end());
  const CloudRun second = RunCloud(stub.get(), prefix, 57);
  ASSERT_TRUE(second.status.ok());
  EXPECT_EQ(second.tokens, std::vector<int32_t>(ref.begin() + 33, ref.end()));
}

TEST_F(VerifierCloudModeTest, SamplingIsReproducibleBySeed) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  const std::vector<int32_t> prompt = Encode("Zoo");
  const CloudRun a = RunCloud(stub.get(), prompt, 60, 0.9f, 7);
  const CloudRun b = RunCloud(stub.get(), prompt, 60, 0.9f, 7);
  const CloudRun c = RunCloud(stub.get(), prompt, 60, 0.9f, 8);
  ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok());
  EXPECT_FALSE(a.tokens.empty());
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NE(a.tokens, c.tokens);
}

// Close mid-stream: the engine is held by the test while the Close arrives, so the session is
// certainly still decoding; it ends OK without a done message once its queued step returns.
TEST_F(VerifierCloudModeTest, CloseMidStreamEndsTheSession) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  const std::vector<int32_t> ref = tandem::testing::GreedyTargetAlone(*target_, prompt, 400);
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_CLOUD, 400)));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(stream->Write(PromptMsg(prompt)));
  std::vector<int32_t> got;
  ASSERT_TRUE(stream->Read(&reply));
  for (int32_t t : reply.tokens().token_ids()) got.push_back(t);
  ASSERT_FALSE(reply.tokens().done());

  tandem::testing::EngineHold hold(h.worker());
  ASSERT_TRUE(hold.held());
  const double control_before = h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "control"}});
  ASSERT_TRUE(stream->Write(CloseMsg()));
  ASSERT_TRUE(tandem::testing::WaitFor([&] {
    return h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "control"}}) > control_before;
  }));
  EXPECT_EQ(h.service().active_sessions(), 1);  // a step of the session waits behind the hold
  hold.Release();
  bool done = false;
  while (stream->Read(&reply)) {
    for (int32_t t : reply.tokens().token_ids()) got.push_back(t);
    done = done || reply.tokens().done();
  }
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(done);
  ASSERT_LT(got.size(), ref.size());
  EXPECT_EQ(got, std::vector<int32_t>(ref.begin(), ref.begin() + got.size()));
  ASSERT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 1);
}

TEST_F(VerifierCloudModeTest, DraftsAreRefusedInCloudMode) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_CLOUD, 400)));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(stream->Write(PromptMsg(Encode("Once upon a time"))));
  ASSERT_TRUE(stream->Read(&reply));  // decoding runs
  ASSERT_FALSE(reply.tokens().done());
  tandem::testing::EngineHold hold(h.worker());  // so decoding cannot finish before the draft
  ASSERT_TRUE(hold.held());
  v1::EdgeMessage draft;
  draft.mutable_draft()->set_round(1);
  draft.mutable_draft()->add_token_ids(5);
  ASSERT_TRUE(stream->Write(draft));
  ASSERT_TRUE(tandem::testing::WaitFor([&] {
    return h.Metric("tandem_rejections_total", {{"reason", "bad_message"}}) == 1;
  }));
  hold.Release();
  while (stream->Read(&reply)) {
    EXPECT_FALSE(reply.tokens().done());
  }
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), C::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("may only send Close"));
  ASSERT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "error"}}), 1);
}

}  // namespace
}  // namespace tandem::cloud
