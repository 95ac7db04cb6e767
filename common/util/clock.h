// Monotonic wall-clock seconds for timing measurements (not for time of day).
#ifndef TANDEM_COMMON_UTIL_CLOCK_H_
#define TANDEM_COMMON_UTIL_CLOCK_H_

#include <chrono>

namespace tandem {

inline double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace tandem

#endif  // TANDEM_COMMON_UTIL_CLOCK_H_
