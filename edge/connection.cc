// Verifier channels, bearer tokens, failure classification and backoff (see connection.h).
#include "edge/connection.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tandem::edge {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeVerifierChannel(const std::string& target,
                                                                   const net::ClientTlsOptions& tls,
                                                                   int max_message_bytes) {
  if (target.empty()) return absl::InvalidArgumentError("no verifier address (HOST:PORT)");
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = net::MakeClientCredentials(tls);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(max_message_bytes);
  args.SetMaxSendMessageSize(max_message_bytes);
  if (!tls.server_name_override.empty()) args.SetSslTargetNameOverride(tls.server_name_override);
  // The edge runs its own retry loop; gRPC's reconnection backoff (1 s growing to 2 minutes by
  // default) would hide a verifier that is back.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(target, *creds, args);
}

absl::StatusOr<std::string> ReadAuthTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the auth token file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(ss.str()));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the auth token file '", path, "' is empty"));
  }
  for (char c : token) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the auth token in '", path,
          "' must be one line of printable ASCII without spaces (a bearer token)"));
    }
  }
  return token;
}

namespace {

bool Mentions(const std::string& lower, std::initializer_list<const char*> words) {
  return std::any_of(words.begin(), words.end(),
                     [&](const char* w) { return lower.find(w) != std::string::npos; });
}

}  // namespace

FailureKind ClassifyFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      return FailureKind::kOverload;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kUnknown: {
      const std::string lower = absl::AsciiStrToLower(status.message());
      // A TCP connection that was not established (gRPC cut the attempt short): no TLS yet.
      if (Mentions(lower, {"tcp handshaker"})) return FailureKind::kOutage;
      if (Mentions(lower, {"handshake", "certificate", "ssl_error", "x509"})) {
        return FailureKind::kRefused;
      }
      if (Mentions(lower, {"failed to connect"}) && Mentions(lower, {"socket closed"})) {
        return FailureKind::kHandshakeClosed;
      }
      return FailureKind::kOutage;
    }
    case absl::StatusCode::kInternal: {
      // A connection torn down under a stream can surface as INTERNAL from the HTTP/2 layer.
      const std::string lower = absl::AsciiStrToLower(status.message());
      return Mentions(lower, {"rst_stream", "goaway", "stream removed"}) ? FailureKind::kOutage
                                                                         : FailureKind::kRefused;
    }
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
      return FailureKind::kOutage;
    default:  // UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, FAILED_PRECONDITION, ...
      return FailureKind::kRefused;
  }
}

absl::Status ExplainRefusal(const absl::Status& status, FailureKind kind) {
  if (kind == FailureKind::kHandshakeClosed) {
    return absl::Status(
        status.code(),
        absl::StrCat("the verifier accepted the connection and closed it during the handshake, "
                     "every time: it probably serves TLS and the edge spoke plaintext (give "
                     "--tls-ca), or it requires a client certificate it did not get or does not "
                     "trust (--tls-cert/--tls-key); not retried. gRPC said: ",
                     status.message()));
  }
  if (kind == FailureKind::kRefused &&
      (status.code() == absl::StatusCode::kUnavailable ||
       status.code() == absl::StatusCode::kUnknown)) {
    return absl::Status(
        status.code(),
        absl::StrCat("TLS handshake with the verifier failed (check --tls-ca, --tls-cert, "
                     "--tls-key and --tls-server-name); not retried. gRPC said: ",
                     status.message()));
  }
  return status;
}

Backoff::Backoff(double initial_s, double max_s, uint64_t seed)
    : initial_s_(initial_s), max_s_(std::max(initial_s, max_s)), rng_(seed) {}

double Backoff::Next() {
  double delay = initial_s_;
  for (int i = 0; i < attempt_ && delay < max_s_; ++i) delay *= 2;
  delay = std::min(delay, max_s_);
  ++attempt_;
  return std::uniform_real_distribution<double>(delay / 2, delay)(rng_);
}

}  // namespace tandem::edge
