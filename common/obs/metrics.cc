// prometheus-cpp helpers (see metrics.h).
#include "common/obs/metrics.h"

#include <exception>

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tandem::obs {

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i, start *= factor) b.push_back(start);
  return b;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

std::string RenderText(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", listen, "' is not HOST:PORT (PORT 0 picks a free one)"));
  }
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint);
  try {
    // One HTTP thread is plenty for scrapes.
    e->exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& ex) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, ": ", ex.what()));
  }
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": no port bound"));
  }
  e->port_ = ports.front();
  return e;
}

MetricsEndpoint::~MetricsEndpoint() = default;

void MetricsEndpoint::Register(const std::shared_ptr<prometheus::Registry>& registry,
                               const std::string& path) {
  exposer_->RegisterCollectable(registry, path);
}

void MetricsEndpoint::Unregister(const std::shared_ptr<prometheus::Registry>& registry,
                                 const std::string& path) {
  exposer_->RemoveCollectable(registry, path);
}

}  // namespace tandem::obs
