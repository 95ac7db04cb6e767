// Sessions are freed however they end: a session that goes silent is ended by the idle sweeper
// with DEADLINE_EXCEEDED; a client that cancels or whose deadline passes frees its session; a
// cancel that arrives while the session's engine task is running waits for the task.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using ::testing::HasSubstr;
using tandem::testing::OpenMsg;
using tandem::testing::PromptMsg;
using C = grpc::StatusCode;

class VerifierLifecycleTest : public tandem::testing::Stories260KTest {
 protected:

  static v1::EdgeMessage Round(uint64_t round, uint32_t committed, std::vector<int32_t> ids) {
    v1::EdgeMessage m;
    m.mutable_draft()->set_round(round);
    m.mutable_draft()->set_committed_length(committed);
    for (int32_t t : ids) m.mutable_draft()->add_token_ids(t);
    return m;
  }

};

TEST_F(VerifierLifecycleTest, ASilentSessionIsEndedAfterTheIdleTtl) {
  VerifierLimits limits;
  limits.idle_ttl_s = 0.3;
  tandem::testing::VerifierHarness h(*target_, limits);
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(stream->Write(PromptMsg({1, 403})));
  ASSERT_TRUE(stream->Write(Round(1, 2, {})));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(reply.has_verdict());
  // Now silence: the verifier ends the stream by itself.
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), C::DEADLINE_EXCEEDED);
  EXPECT_THAT(s.error_message(), HasSubstr("idle for 0.3 s"));
  ASSERT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "idle_timeout"}}), 1);
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 0);
}

TEST_F(VerifierLifecycleTest, AStreamThatNeverOpensIsAlsoEnded) {
  VerifierLimits limits;
  limits.idle_ttl_s = 0.3;
  tandem::testing::VerifierHarness h(*target_, limits);
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_EQ(stream->Finish().error_code(), C::DEADLINE_EXCEEDED);
}

TEST_F(VerifierLifecycleTest, ACancelledStreamIsFreed) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});  // idle TTL 60 s: not the cause
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(stream->Write(PromptMsg({1, 403})));
  ASSERT_TRUE(stream->Write(Round(1, 2, {})));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(h.service().active_sessions(), 1);
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), C::CANCELLED);
  ASSERT_TRUE(h.WaitIdle());
  ASSERT_TRUE(tandem::testing::WaitFor(
      [&] { return h.Metric("tandem_sessions_total", {{"outcome", "cancelled"}}) == 1; }));
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 0);
}

TEST_F(VerifierLifecycleTest, AnExpiredClientDeadlineFreesTheSession) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  // More than the second within which the verifier takes a cancel for the deadline's doing.
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_FALSE(stream->Read(&reply));  // nothing more comes; the deadline passes
  EXPECT_EQ(stream->Finish().error_code(), C::DEADLINE_EXCEEDED);
  ASSERT_TRUE(h.WaitIdle());
  ASSERT_TRUE(tandem::testing::WaitFor(
      [&] { return h.Metric("tandem_sessions_total", {{"outcome", "deadline"}}) == 1; }));
}

// The engine is held by a task of the test while the client cancels: the session's own task is
// queued behind it, so the cancel must wait for that task before the reactor goes away.
TEST_F(VerifierLifecycleTest, ACancelDuringAnEngineTaskWaitsForTheTask) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(stream->Read(&reply));
  tandem::testing::EngineHold hold(h.worker());
  ASSERT_TRUE(hold.held());
  ASSERT_TRUE(stream->Write(PromptMsg({1, 403, 404, 405})));  // its Commit queues behind the hold
  ASSERT_TRUE(tandem::testing::WaitFor(
      [&] { return h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "prompt"}}) > 0; }));
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), C::CANCELLED);
  // The session cannot end while its task waits for the engine.
  EXPECT_EQ(h.service().active_sessions(), 1);
  hold.Release();
  ASSERT_TRUE(h.WaitIdle());
  ASSERT_TRUE(tandem::testing::WaitFor(
      [&] { return h.Metric("tandem_sessions_total", {{"outcome", "cancelled"}}) == 1; }));
}

}  // namespace
}  // namespace tandem::cloud
