// The edge's metric set (Prometheus, names `tandem_edge_*`): what the edge measured (link RTT and
// bandwidths, its draft and per-layer costs, the verifier's per-layer cost as seen from here,
// acceptance per draft position), what the scheduler chose (an info series per configuration,
// changes, new sessions, probes) and what happened (tokens by source, bytes, round trips).
// An EdgeGenerator given one (EdgeOptions::metrics) updates it after every round; serve its
// registry with obs::MetricsEndpoint or render it with obs::RenderText.
// Thread-safety: updates from one generation loop at a time; scrapes from any thread.
#ifndef TANDEM_EDGE_EDGE_METRICS_H_
#define TANDEM_EDGE_EDGE_METRICS_H_

#include <memory>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "edge/scheduler.h"

namespace tandem::edge {

struct EdgeStats;

class EdgeMetrics {
 public:
  explicit EdgeMetrics(int max_positions = 8);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // The scheduler's inputs now, and the configuration in use (null: none, e.g. local).
  void SetMeasurements(const Measurements& m);
  void SetConfig(const RunConfig* config, double predicted_tokens_per_s);
  // Adds what `now` counts beyond `before` (two snapshots of one generation's stats).
  void AddStats(const EdgeStats& before, const EdgeStats& now);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge *rtt_, *up_bps_, *down_bps_, *draft_s_, *local_s_;
  prometheus::Gauge *edge_base_, *edge_per_pos_, *cloud_base_, *cloud_per_pos_, *cloud_head_base_,
      *cloud_head_per_pos_;
  prometheus::Gauge* predicted_tps_;
  std::vector<prometheus::Gauge*> acceptance_;
  prometheus::Family<prometheus::Gauge>* config_family_;
  prometheus::Gauge* config_ = nullptr;
  prometheus::Counter *tokens_verified_, *tokens_cloud_, *tokens_local_, *tokens_unverified_;
  prometheus::Counter *bytes_up_, *bytes_down_, *round_trips_, *sessions_, *reconnects_;
  prometheus::Counter *fallbacks_, *config_changes_, *session_switches_, *probes_;
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_EDGE_METRICS_H_
