// TLS and mutual TLS over real loopback sockets, with certificates minted by the test with the
// openssl CLI: a plaintext client is refused by a TLS server, a client that trusts another CA is
// refused, and with mutual TLS a client without a certificate (or with one from another CA) is
// refused while a client with a good certificate is served.
#include "common/net/tls.h"

#include <chrono>
#include <fstream>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tandem/v1/verifier.grpc.pb.h"
#include "tests/test_util.h"

namespace tandem::net {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new testing::TestPki(testing::MintTestPki(testing::TempDir())); }
  static void TearDownTestSuite() { delete pki_; }

  void Start(const ServerTlsOptions& o) {
    auto creds = MakeServerCredentials(o);
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterService(&unimplemented_);  // a server needs one callback service
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // A health check through a channel built from `o`; returns the status of the call.
  grpc::Status Check(const ClientTlsOptions& o, const std::string& host = "localhost") {
    auto channel = MakeChannel(absl::StrCat(host, ":", port_), o);
    EXPECT_TRUE(channel.ok()) << channel.status();
    auto stub = grpc::health::v1::Health::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = stub->Check(&ctx, req, &resp);
    if (s.ok()) {
      EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    }
    return s;
  }

  static testing::TestPki* pki_;
  tandem::v1::Verifier::CallbackService unimplemented_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};
testing::TestPki* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, TlsServerServesTlsClientAndRefusesPlaintext) {
  Start({pki_->server_cert, pki_->server_key, ""});
  EXPECT_TRUE(Check({pki_->ca, "", "", ""}).ok());
  EXPECT_TRUE(Check({pki_->ca, "", "", ""}, "127.0.0.1").ok());  // the IP SAN
  grpc::Status plain = Check({});
  EXPECT_FALSE(plain.ok());
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  grpc::Status wrong_ca = Check({pki_->rogue_ca, "", "", ""});
  EXPECT_EQ(wrong_ca.error_code(), grpc::StatusCode::UNAVAILABLE) << wrong_ca.error_message();
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  Start({pki_->server_cert, pki_->server_key, pki_->ca});
  EXPECT_TRUE(Check({pki_->ca, pki_->client_cert, pki_->client_key, ""}).ok());
  grpc::Status no_cert = Check({pki_->ca, "", "", ""});
  EXPECT_EQ(no_cert.error_code(), grpc::StatusCode::UNAVAILABLE) << no_cert.error_message();
  grpc::Status rogue = Check({pki_->ca, pki_->rogue_client_cert, pki_->rogue_client_key, ""});
  EXPECT_EQ(rogue.error_code(), grpc::StatusCode::UNAVAILABLE) << rogue.error_message();
  EXPECT_EQ(Check({}).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(TlsOptionsTest, BadFilesAndCombinationsAreClearErrors) {
  ServerTlsOptions only_cert{"/nonexistent.pem", "", ""};
  EXPECT_TRUE(absl::IsInvalidArgument(MakeServerCredentials(only_cert).status()));
  ServerTlsOptions missing{"/nonexistent.pem", "/nonexistent.key", ""};
  absl::Status s = MakeServerCredentials(missing).status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_NE(s.message().find("/nonexistent.pem"), std::string::npos);
  ServerTlsOptions ca_only{"", "", "/x.pem"};
  EXPECT_TRUE(absl::IsInvalidArgument(MakeServerCredentials(ca_only).status()));
  std::string dir = testing::TempDir();
  std::string junk = dir + "/junk.pem";
  { std::ofstream(junk) << "not a certificate"; }
  s = MakeClientCredentials({junk, "", "", ""}).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::IsInvalidArgument(MakeClientCredentials({"", junk, junk, ""}).status()));
  EXPECT_TRUE(MakeClientCredentials({}).ok());
}

}  // namespace
}  // namespace tandem::net
