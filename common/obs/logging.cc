// spdlog set-up (see logging.h).
#include "common/obs/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace tandem::obs {
namespace {

bool ParseLevel(const std::string& level, spdlog::level::level_enum* out) {
  static const std::pair<const char*, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},   {"critical", spdlog::level::critical},
      {"off", spdlog::level::off}};
  for (const auto& [name, l] : kLevels) {
    if (level == name) {
      *out = l;
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status ValidateLogLevel(const std::string& level) {
  spdlog::level::level_enum l;
  if (!ParseLevel(level, &l)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log level '", level, "' is not one of trace, debug, info, warn, error, critical, off"));
  }
  return absl::OkStatus();
}

absl::Status SetUpLogging(const std::string& program, const std::string& level) {
  spdlog::level::level_enum l;
  if (!ParseLevel(level, &l)) return ValidateLogLevel(level);
  auto logger = std::make_shared<spdlog::logger>(
      program, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l [%n] %v");
  logger->set_level(l);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace tandem::obs
