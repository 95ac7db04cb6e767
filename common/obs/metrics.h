// A thin layer over prometheus-cpp: bucket helpers, a text rendering of a registry, and an HTTP
// endpoint (prometheus::Exposer, civetweb inside) that serves GET /metrics in the Prometheus text
// format. Metric sets themselves (names, labels) live with the component that owns them, e.g.
// cloud/verifier_metrics.h; every name starts with `tandem_`.
// Thread-safety: prometheus-cpp metrics are safe to update from any thread; MetricsEndpoint is
// created and destroyed by one owner.
#ifndef TANDEM_COMMON_OBS_METRICS_H_
#define TANDEM_COMMON_OBS_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace tandem::obs {

// `count` upper bounds start, start*factor, start*factor^2, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` upper bounds start, start+width, ...
std::vector<double> LinearBuckets(double start, double width, int count);

// The registry rendered in the Prometheus text exposition format (what /metrics returns).
std::string RenderText(prometheus::Registry& registry);

// Serves registries on http://HOST:PORT/metrics.
class MetricsEndpoint {
 public:
  // `listen` is "HOST:PORT" (PORT 0 picks a free port; see port()). Unavailable when the address
  // cannot be bound, InvalidArgument when it is malformed.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen);
  ~MetricsEndpoint();

  // The registry is held weakly: the owner keeps it alive while it is served. Several registries
  // on one path are served together.
  void Register(const std::shared_ptr<prometheus::Registry>& registry,
                const std::string& path = "/metrics");
  void Unregister(const std::shared_ptr<prometheus::Registry>& registry,
                  const std::string& path = "/metrics");
  int port() const { return port_; }  // the bound port

 private:
  MetricsEndpoint() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace tandem::obs

#endif  // TANDEM_COMMON_OBS_METRICS_H_
