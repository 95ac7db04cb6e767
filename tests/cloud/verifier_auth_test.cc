// Bearer-token auth, tenants and quotas on a real loopback verifier: callers without a valid
// token are UNAUTHENTICATED, a disabled tenant is PERMISSION_DENIED, a tenant over its quota gets
// RESOURCE_EXHAUSTED while another tenant is still served, and every refusal is counted by reason.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using ::testing::HasSubstr;
using tandem::testing::OpenMsg;
using tandem::testing::PromptMsg;
using C = grpc::StatusCode;

class VerifierAuthTest : public tandem::testing::Stories260KTest {
 protected:

  void SetUp() override {
    auto auth = net::TokenAuthenticator::Parse(
        "# test tenants\nacme:tok-acme\nglobex:tok-globex\nblocked:tok-blocked\n");
    ASSERT_TRUE(auth.ok()) << auth.status();
    VerifierLimits limits;
    limits.max_sessions = 3;
    limits.max_sessions_per_tenant = 2;
    limits.tenant_max_sessions = {{"acme", 1}, {"blocked", 0}};
    harness_ = std::make_unique<tandem::testing::VerifierHarness>(
        *target_, limits, std::make_shared<net::TokenAuthenticator>(std::move(*auth)));
    stub_ = harness_->Stub();
  }

  static void SetToken(grpc::ClientContext* ctx, const std::string& token) {
    ctx->AddMetadata(net::kAuthorizationMetadata, net::BearerValue(token));
  }

  grpc::Status Info(const std::string& token) {
    grpc::ClientContext ctx;
    if (!token.empty()) SetToken(&ctx, token);
    v1::ServerInfo info;
    return stub_->GetInfo(&ctx, v1::GetInfoRequest(), &info);
  }

  // An opened session held by the caller.
  struct Held {
    grpc::ClientContext ctx;
    std::unique_ptr<tandem::testing::Stream> stream;
  };
  // Opens a session; returns the status the stream ended with if it was refused, else OK (and
  // keeps the stream in `held`).
  grpc::Status Open(const std::string& token, Held* held) {
    if (!token.empty()) SetToken(&held->ctx, token);
    held->stream = stub_->Session(&held->ctx);
    v1::VerifierMessage reply;
    held->stream->Write(OpenMsg(v1::MODE_SPEC));
    if (held->stream->Read(&reply) && reply.has_opened()) return grpc::Status::OK;
    return held->stream->Finish();
  }
  static grpc::Status Close(Held* held) {
    held->stream->Write(tandem::testing::CloseMsg());
    held->stream->WritesDone();
    return held->stream->Finish();
  }

  std::unique_ptr<tandem::testing::VerifierHarness> harness_;
  std::unique_ptr<v1::Verifier::Stub> stub_;
};

TEST_F(VerifierAuthTest, MissingOrWrongTokensAreUnauthenticated) {
  grpc::Status none = Info("");
  EXPECT_EQ(none.error_code(), C::UNAUTHENTICATED);
  EXPECT_THAT(none.error_message(), HasSubstr("authorization: Bearer <token>"));
  grpc::Status wrong = Info("tok-acme2");
  EXPECT_EQ(wrong.error_code(), C::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("invalid bearer token"));
  EXPECT_TRUE(Info("tok-acme").ok());
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata(net::kAuthorizationMetadata, "tok-acme");  // no "Bearer "
    v1::ServerInfo info;
    EXPECT_EQ(stub_->GetInfo(&ctx, v1::GetInfoRequest(), &info).error_code(), C::UNAUTHENTICATED);
  }
  Held a, b;
  EXPECT_EQ(Open("", &a).error_code(), C::UNAUTHENTICATED);
  grpc::Status s = Open("nope", &b);
  EXPECT_EQ(s.error_code(), C::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("invalid bearer token"));
  EXPECT_EQ(harness_->Metric("tandem_rejections_total", {{"reason", "unauthenticated"}}), 5);
  EXPECT_EQ(harness_->service().active_sessions(), 0);
}

TEST_F(VerifierAuthTest, ADisabledTenantIsPermissionDenied) {
  grpc::Status info = Info("tok-blocked");
  EXPECT_EQ(info.error_code(), C::PERMISSION_DENIED);
  EXPECT_THAT(info.error_message(), HasSubstr("tenant blocked is disabled"));
  Held held;
  EXPECT_EQ(Open("tok-blocked", &held).error_code(), C::PERMISSION_DENIED);
  EXPECT_EQ(harness_->Metric("tandem_rejections_total", {{"reason", "permission_denied"}}), 2);
}

TEST_F(VerifierAuthTest, ATenantOverQuotaIsRefusedWhileAnotherIsServed) {
  Held first;
  ASSERT_TRUE(Open("tok-acme", &first).ok());
  EXPECT_EQ(harness_->service().tenant_sessions("acme"), 1);
  Held second;
  grpc::Status over = Open("tok-acme", &second);
  EXPECT_EQ(over.error_code(), C::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.error_message(), HasSubstr("tenant acme has 1 sessions (quota 1)"));
  EXPECT_EQ(harness_->Metric("tandem_rejections_total", {{"reason", "quota"}}), 1);

  // globex is served meanwhile, and decodes exactly.
  const std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  const std::vector<int32_t> ref = tandem::testing::GreedyTargetAlone(*target_, prompt, 40);
  grpc::ClientContext ctx;
  SetToken(&ctx, "tok-globex");
  tandem::testing::SpecRun run = tandem::testing::RunScriptedSpec(
      stub_.get(), prompt, ref, 30, 4, target_->config().vocab_size, &ctx);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(run.generated, std::vector<int32_t>(ref.begin(), ref.begin() + 30));

  // Once acme's session ends, acme may open another.
  EXPECT_EQ(harness_->Metric("tandem_tenant_sessions_active", {{"tenant", "acme"}}), 1);
  EXPECT_TRUE(Close(&first).ok());
  ASSERT_TRUE(tandem::testing::WaitFor([&] { return harness_->service().tenant_sessions("acme") == 0; }));
  EXPECT_EQ(harness_->Metric("tandem_tenant_sessions_active", {{"tenant", "acme"}}), 0);
  Held third;
  EXPECT_TRUE(Open("tok-acme", &third).ok());
  EXPECT_TRUE(Close(&third).ok());
  EXPECT_TRUE(harness_->WaitIdle());
}

TEST_F(VerifierAuthTest, TheGlobalSessionLimitHolds) {
  Held a, b, c, d;
  ASSERT_TRUE(Open("tok-globex", &a).ok());
  ASSERT_TRUE(Open("tok-globex", &b).ok());
  ASSERT_TRUE(Open("tok-acme", &c).ok());
  grpc::Status full = Open("tok-acme", &d);  // acme's quota and the global limit are both hit
  EXPECT_EQ(full.error_code(), C::RESOURCE_EXHAUSTED);
  EXPECT_THAT(full.error_message(), HasSubstr("session limit reached (3)"));
  EXPECT_EQ(harness_->Metric("tandem_rejections_total", {{"reason", "session_limit"}}), 1);
  for (Held* h : {&a, &b, &c}) EXPECT_TRUE(Close(h).ok());
  EXPECT_TRUE(harness_->WaitIdle());
  EXPECT_EQ(harness_->Metric("tandem_sessions_total", {{"outcome", "ok"}}), 3);
}

}  // namespace
}  // namespace tandem::cloud
