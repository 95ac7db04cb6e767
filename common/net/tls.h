// TLS and mutual-TLS credentials for the verifier (server) and the edge (client), built from PEM
// files. Files are read once, at start-up; a missing or empty file is a clear error, not a crash.
// Plaintext is used only when no certificate is given (loopback and tests).
#ifndef TANDEM_COMMON_NET_TLS_H_
#define TANDEM_COMMON_NET_TLS_H_

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace tandem::net {

struct ServerTlsOptions {
  std::string cert_file;       // PEM certificate chain; empty = plaintext
  std::string key_file;        // PEM private key (required with cert_file)
  std::string client_ca_file;  // PEM CA bundle; non-empty = mutual TLS (client certs required)
};

struct ClientTlsOptions {
  std::string ca_file;    // PEM roots that sign the verifier's certificate; empty = plaintext
  std::string cert_file;  // client certificate for mutual TLS (optional, with key_file)
  std::string key_file;
  std::string server_name_override;  // for tests whose certificates name a host, not an IP
};

// Reads a whole file; NotFound / InvalidArgument (empty) with the path in the message.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* what);

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeClientCredentials(
    const ClientTlsOptions& options);

// A channel to `target` ("host:port") with the given credentials and the message size limit.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ClientTlsOptions& options,
                                                           int max_message_bytes = 64 << 20);

}  // namespace tandem::net

#endif  // TANDEM_COMMON_NET_TLS_H_
