// Connecting the edge to a verifier: the gRPC channel (plaintext, TLS or mutual TLS), the bearer
// token, and how a failed call is classified (an outage to ride out, load, or a refusal that no
// retry will fix), with the backoff between reconnection attempts.
// Thread-safety: free functions are thread-safe; a Backoff belongs to one generation loop.
#ifndef TANDEM_EDGE_CONNECTION_H_
#define TANDEM_EDGE_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/net/tls.h"

namespace tandem::edge {

// A channel to the verifier at `target` ("host:port"). `tls.ca_file` empty = plaintext (loopback
// and tests only); with `tls.cert_file`/`key_file` the edge presents a client certificate (mTLS).
// gRPC's own reconnection backoff is capped at one second, so a verifier that comes back on the
// same address is found again quickly. Files are read here: a missing one is an error now, not at
// the first call.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeVerifierChannel(
    const std::string& target, const net::ClientTlsOptions& tls = {},
    int max_message_bytes = 64 << 20);

// The bearer token in `path`: the whole file with surrounding whitespace trimmed. NotFound when
// the file cannot be read; InvalidArgument when it is empty or the token has inner whitespace or
// control characters (it goes into an HTTP/2 header as "authorization: Bearer <token>").
absl::StatusOr<std::string> ReadAuthTokenFile(const std::string& path);

// What a failed verifier call means for the generation loop.
enum class FailureKind {
  kOutage,           // the verifier is unreachable or went away: retry (and, in auto, go local)
  kOverload,         // RESOURCE_EXHAUSTED: the verifier is up but full; retry later
  kHandshakeClosed,  // the TCP connection was accepted, then closed before gRPC started: a TLS
                     // verifier reached in plaintext, or a client certificate it rejected; a
                     // server in the middle of shutting down looks the same once, so this is a
                     // refusal only when it repeats
  kRefused,          // credentials, certificates, protocol or model mismatch: never retried
};

// Classifies a failed call from its code and, for UNAVAILABLE/UNKNOWN (how gRPC reports every
// transport problem), the message: TLS handshake and certificate errors are refusals.
FailureKind ClassifyFailure(const absl::Status& status);

// For refusals that gRPC reports as UNAVAILABLE (TLS), a message that says what to check; other
// statuses are returned unchanged.
absl::Status ExplainRefusal(const absl::Status& status, FailureKind kind);

// Exponential backoff with jitter: initial, doubling up to max, each delay drawn uniformly from
// [delay/2, delay].
class Backoff {
 public:
  Backoff(double initial_s, double max_s, uint64_t seed = 0x7a6d);
  double Next();  // seconds to wait before the next attempt
  void Reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  double initial_s_, max_s_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_CONNECTION_H_
