// Bearer-token authentication for the verifier. Tokens map to tenants through a tokens file:
//
//   # comment
//   tenant-a:token-1
//   tenant-b:token-2        (whitespace around the tenant and the token is trimmed)
//
// One `tenant:token` per line; blank lines and lines starting with '#' are skipped. The token is
// everything after the first ':'. A tenant may own several tokens; a token belongs to one tenant.
// Clients send the gRPC metadata `authorization: Bearer <token>` on every call.
//
// Only SHA-256 digests of the tokens are kept; a presented token is hashed and compared with every
// entry with CRYPTO_memcmp, without stopping at the first match, so the time taken does not depend
// on which entry (if any) matches nor on how many leading bytes are right.
// Thread-safety: immutable after Parse/Load; Authenticate may be called from any thread.
#ifndef TANDEM_COMMON_NET_AUTH_H_
#define TANDEM_COMMON_NET_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <grpcpp/support/string_ref.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tandem::net {

inline constexpr char kAuthorizationMetadata[] = "authorization";  // gRPC metadata keys are lower case
inline constexpr char kBearerPrefix[] = "Bearer ";

// "Bearer <token>": the value a client puts under kAuthorizationMetadata.
std::string BearerValue(absl::string_view token);

class TokenAuthenticator {
 public:
  // Parses tokens-file text. InvalidArgument naming `source` and the 1-based line for a line
  // without ':', an empty tenant or token, whitespace inside a token, or a duplicate token.
  static absl::StatusOr<TokenAuthenticator> Parse(absl::string_view text,
                                                  const std::string& source = "tokens");
  // Reads and parses a file (NotFound when it cannot be read).
  static absl::StatusOr<TokenAuthenticator> LoadFile(const std::string& path);

  // The tenant owning `token`, or Unauthenticated.
  absl::StatusOr<std::string> AuthenticateToken(absl::string_view token) const;
  // The tenant named by an `authorization: Bearer <token>` entry in `metadata` (as
  // grpc::ServerContextBase::client_metadata() returns it), or Unauthenticated with a message
  // saying what is missing or wrong (never echoing the token).
  absl::StatusOr<std::string> Authenticate(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

  size_t size() const { return entries_.size(); }
  // Every tenant named in the file, sorted, each once.
  std::vector<std::string> tenants() const;

 private:
  struct Entry {
    std::array<uint8_t, 32> digest;
    std::string tenant;
  };
  std::vector<Entry> entries_;
};

}  // namespace tandem::net

#endif  // TANDEM_COMMON_NET_AUTH_H_
