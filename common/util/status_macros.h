// Small helpers for absl::Status / absl::StatusOr. Debian's Abseil (20220623) lacks
// ASSIGN_OR_RETURN and RETURN_IF_ERROR, so the project keeps its own.
#ifndef TANDEM_COMMON_UTIL_STATUS_MACROS_H_
#define TANDEM_COMMON_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TANDEM_CONCAT_INNER_(a, b) a##b
#define TANDEM_CONCAT_(a, b) TANDEM_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status tandem_status_ = (expr);              \
    if (!tandem_status_.ok()) return tandem_status_;     \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns x from a StatusOr, or returns its status.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  TANDEM_ASSIGN_OR_RETURN_IMPL_(TANDEM_CONCAT_(tandem_statusor_, __LINE__), lhs, rexpr)
#define TANDEM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

#endif  // TANDEM_COMMON_UTIL_STATUS_MACROS_H_
