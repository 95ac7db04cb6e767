// Conversion between absl::Status (used everywhere inside Tandem) and grpc::Status (only at the
// network edge). Codes map one to one; messages are kept.
#ifndef TANDEM_COMMON_NET_STATUS_H_
#define TANDEM_COMMON_NET_STATUS_H_

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace tandem::net {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// How a draining verifier ends the sessions it hands back (with UNAVAILABLE): the edge resumes at
// once, through the load balancer, on another replica by replaying its prefix.
inline constexpr char kHandBackMessage[] = "verifier draining: resume on another replica";

inline bool IsHandBack(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable &&
         s.message().find(kHandBackMessage) != absl::string_view::npos;
}

}  // namespace tandem::net

#endif  // TANDEM_COMMON_NET_STATUS_H_
