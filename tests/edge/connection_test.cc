// Connection helpers of the edge: bearer token files, how failures are classified (outage, load,
// refusal), and the reconnection backoff.
#include "edge/connection.h"

#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = tandem::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ConnectionTest, TokenFileIsTrimmedAndMustHoldAToken) {
  auto token = ReadAuthTokenFile(WriteFile("t1", "  s3cr3t-token_42\n\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cr3t-token_42");

  auto empty = ReadAuthTokenFile(WriteFile("t2", " \n\t\n"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(empty.status().message(), "empty")) << empty.status();

  auto two = ReadAuthTokenFile(WriteFile("t3", "one two\n"));
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(two.status().message(), "one two"));  // never echo a token

  auto missing = ReadAuthTokenFile("/nonexistent/token");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "/nonexistent/token"));
}

TEST(ConnectionTest, ChannelNeedsAnAddressAndReadableTlsFiles) {
  EXPECT_EQ(MakeVerifierChannel("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeVerifierChannel("127.0.0.1:1").ok());
  net::ClientTlsOptions tls;
  tls.ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(MakeVerifierChannel("127.0.0.1:1", tls).status().code(), absl::StatusCode::kNotFound);
}

TEST(ConnectionTest, FailuresAreClassified) {
  using absl::StatusCode;
  struct Case {
    absl::Status status;
    FailureKind kind;
  };
  const Case cases[] = {
      // gRPC's own messages (1.51) for a verifier that is down, and for TLS problems.
      {absl::UnavailableError("failed to connect to all addresses; last error: UNKNOWN: "
                              "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection "
                              "refused"),
       FailureKind::kOutage},
      {absl::UnavailableError("Socket closed"), FailureKind::kOutage},  // a stream broken mid-way
      {absl::UnknownError("Stream removed"), FailureKind::kOutage},
      {absl::DeadlineExceededError("Deadline Exceeded"), FailureKind::kOutage},
      {absl::CancelledError("the verifier is going away"), FailureKind::kOutage},
      {absl::AbortedError("drained"), FailureKind::kOutage},
      {absl::InternalError("Received RST_STREAM with error code 2"), FailureKind::kOutage},
      {absl::InternalError("engine failed"), FailureKind::kRefused},
      {absl::ResourceExhaustedError("session limit reached"), FailureKind::kOverload},
      {absl::UnavailableError("failed to connect to all addresses; last error: UNKNOWN: "
                              "ipv4:127.0.0.1:5: Ssl handshake failed: SSL_ERROR_SSL: "
                              "error:0A000086:SSL routines::certificate verify failed"),
       FailureKind::kRefused},
      {absl::UnavailableError("failed to connect to all addresses; last error: UNAVAILABLE: "
                              "ipv4:127.0.0.1:5: Socket closed"),
       FailureKind::kHandshakeClosed},
      {absl::UnauthenticatedError("bad token"), FailureKind::kRefused},
      {absl::PermissionDeniedError("tenant"), FailureKind::kRefused},
      {absl::InvalidArgumentError("draft too long"), FailureKind::kRefused},
      {absl::FailedPreconditionError("vocabulary"), FailureKind::kRefused},
      {absl::NotFoundError("unknown model"), FailureKind::kRefused},
      {absl::UnimplementedError("mode"), FailureKind::kRefused},
      {absl::DataLossError("malformed verdict"), FailureKind::kRefused},
      // A connection attempt cut short before TCP was up (seen with an edge frozen mid-connect):
      // no TLS involved, so an outage, not a handshake refusal.
      {absl::UnavailableError("failed to connect to all addresses; last error: UNKNOWN: "
                              "ipv4:127.0.0.1:43835: tcp handshaker shutdown"),
       FailureKind::kOutage},
  };
  for (const Case& c : cases) EXPECT_EQ(ClassifyFailure(c.status), c.kind) << c.status;

  absl::Status explained = ExplainRefusal(cases[9].status, FailureKind::kRefused);
  EXPECT_EQ(explained.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(explained.message(), "TLS handshake")) << explained;
  EXPECT_TRUE(absl::StrContains(explained.message(), "--tls-ca")) << explained;
  explained = ExplainRefusal(cases[10].status, FailureKind::kHandshakeClosed);
  EXPECT_TRUE(absl::StrContains(explained.message(), "plaintext")) << explained;
  EXPECT_EQ(ExplainRefusal(cases[11].status, FailureKind::kRefused), cases[11].status);
}

TEST(ConnectionTest, BackoffDoublesUpToItsCapWithJitter) {
  Backoff b(0.05, 1.0, 42);
  double cap = 0.05;
  for (int i = 0; i < 12; ++i) {
    const double d = b.Next();
    EXPECT_GE(d, cap / 2) << "attempt " << i;
    EXPECT_LE(d, cap) << "attempt " << i;
    cap = std::min(cap * 2, 1.0);
  }
  EXPECT_EQ(b.attempts(), 12);
  b.Reset();
  EXPECT_LE(b.Next(), 0.05);
}

}  // namespace
}  // namespace tandem::edge
