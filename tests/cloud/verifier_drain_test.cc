// A drain's hand-back: once draining, the verifier refuses new sessions, says so on its health
// gauge (tandem_serving 0), and HandBackSessions ends every running session with UNAVAILABLE
// kHandBackMessage, counted as handed_back; a session whose engine task is queued or running is
// ended only after that task.
#include <thread>

#include "common/net/status.h"
#include "common/obs/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using tandem::testing::OpenMsg;
using tandem::testing::PromptMsg;
using C = grpc::StatusCode;

class VerifierDrainTest : public tandem::testing::Stories260KTest {
 protected:
  static v1::EdgeMessage Round(uint64_t round, uint32_t committed) {
    v1::EdgeMessage m;
    m.mutable_draft()->set_round(round);
    m.mutable_draft()->set_committed_length(committed);
    return m;
  }
  // tandem_serving, as /healthz serves it.
  static double Serving(VerifierService& service) {
    auto m = tandem::testing::ParsePrometheusText(
        obs::RenderText(*service.metrics().health_registry()));
    return m.count("tandem_serving") ? m["tandem_serving"] : -1;
  }
};

TEST_F(VerifierDrainTest, RunningSessionsAreHandedBackAfterTheirEngineTasks) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  v1::VerifierMessage reply;
  EXPECT_EQ(Serving(h.service()), 1);

  // A spec session that has had one round, and a cloud session that is open.
  grpc::ClientContext spec_ctx, cloud_ctx, idle_ctx;
  auto spec = stub->Session(&spec_ctx);
  ASSERT_TRUE(spec->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(spec->Read(&reply));
  ASSERT_TRUE(spec->Write(PromptMsg({1, 403})));
  ASSERT_TRUE(spec->Write(Round(1, 2)));
  ASSERT_TRUE(spec->Read(&reply));
  ASSERT_TRUE(reply.has_verdict());
  auto cloud = stub->Session(&cloud_ctx);
  ASSERT_TRUE(cloud->Write(OpenMsg(v1::MODE_CLOUD)));
  ASSERT_TRUE(cloud->Read(&reply));
  ASSERT_TRUE(reply.has_opened());
  // And a spec session with nothing in flight.
  auto idle = stub->Session(&idle_ctx);
  ASSERT_TRUE(idle->Write(OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(idle->Read(&reply));
  EXPECT_EQ(h.service().active_sessions(), 3);

  h.service().StartDrain();
  EXPECT_EQ(Serving(h.service()), 0);
  {
    grpc::ClientContext ctx;
    auto refused = stub->Session(&ctx);
    refused->Write(OpenMsg(v1::MODE_SPEC));
    EXPECT_FALSE(refused->Read(&reply));
    grpc::Status s = refused->Finish();
    EXPECT_EQ(s.error_code(), C::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("draining"));
  }
  EXPECT_EQ(h.service().active_sessions(), 3) << "draining alone ends no running session";

  // The engine is held; the spec session's second round and the cloud session's prompt queue
  // behind the hold.
  tandem::testing::EngineHold hold(h.worker());
  ASSERT_TRUE(hold.held());
  const double drafts_up = h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "draft"}});
  const double prompts_up = h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "prompt"}});
  ASSERT_TRUE(spec->Write(Round(2, 3)));
  ASSERT_TRUE(cloud->Write(PromptMsg({1})));
  ASSERT_TRUE(tandem::testing::WaitFor([&] {
    return h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "draft"}}) > drafts_up &&
           h.Metric("tandem_bytes_total", {{"direction", "up"}, {"kind", "prompt"}}) > prompts_up;
  }));

  EXPECT_EQ(h.service().HandBackSessions(), 3);
  // The idle session ends now; the two with a task pending wait for it.
  EXPECT_FALSE(idle->Read(&reply));
  grpc::Status s = idle->Finish();
  EXPECT_EQ(s.error_code(), C::UNAVAILABLE);
  EXPECT_EQ(s.error_message(), net::kHandBackMessage);
  EXPECT_TRUE(net::IsHandBack(net::FromGrpcStatus(s)));
  ASSERT_TRUE(tandem::testing::WaitFor([&] { return h.service().active_sessions() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(h.service().active_sessions(), 2) << "a session with an engine task is not ended yet";

  hold.Release();
  for (auto* stream : {spec.get(), cloud.get()}) {
    while (stream->Read(&reply)) {
    }
    s = stream->Finish();
    EXPECT_EQ(s.error_code(), C::UNAVAILABLE);
    EXPECT_EQ(s.error_message(), net::kHandBackMessage);
  }
  ASSERT_TRUE(h.WaitIdle());
  ASSERT_TRUE(tandem::testing::WaitFor(
      [&] { return h.Metric("tandem_sessions_total", {{"outcome", "handed_back"}}) == 3; }));
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 0);
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "error"}}), 0);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "draining"}}), 1);
}

TEST_F(VerifierDrainTest, NothingToHandBackWhenNoSessionRuns) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  h.service().StartDrain();
  EXPECT_EQ(h.service().HandBackSessions(), 0);
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "handed_back"}}), 0);
}

}  // namespace
}  // namespace tandem::cloud
