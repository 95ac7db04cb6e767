// Logging set-up: spdlog's default logger writes to stderr, one line per event:
//   2024-05-01T12:00:00.123 info [tandem-verifier] session s3 end: tenant=acme mode=spec ...
// Components log with spdlog::info/warn/error directly after SetUpLogging.
// Thread-safety: call SetUpLogging once from main() before starting threads.
#ifndef TANDEM_COMMON_OBS_LOGGING_H_
#define TANDEM_COMMON_OBS_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace tandem::obs {

// `level`: trace, debug, info, warn, error, critical or off. InvalidArgument for anything else.
absl::Status ValidateLogLevel(const std::string& level);
absl::Status SetUpLogging(const std::string& program, const std::string& level);

}  // namespace tandem::obs

#endif  // TANDEM_COMMON_OBS_LOGGING_H_
