// What the edge's scheduler knows, measured live: the link (net::LinkEstimator over the real
// rounds), the acceptance of each draft position, the edge's draft and per-layer costs, and the
// verifier's cost (its advertised ModelInfo.cost, scaled by what the verdicts report, queueing
// included). Kept by an EdgeGenerator across Generate calls, as a daemon keeps what it learned
// about its link and its verifier between requests.
// Thread-safety: not thread-safe; one generation loop at a time.
#ifndef TANDEM_EDGE_LIVE_MEASUREMENTS_H_
#define TANDEM_EDGE_LIVE_MEASUREMENTS_H_

#include <cstdint>
#include <vector>

#include "common/model/model.h"
#include "common/net/link_estimator.h"
#include "edge/scheduler.h"
#include "tandem/v1/verifier.pb.h"

namespace tandem::edge {

class LiveMeasurements {
 public:
  // `prior_acceptance`: the acceptance assumed for draft positions not measured yet.
  LiveMeasurements(const model::Model& local, double prior_acceptance, int max_positions = 16);

  // Times the edge's model: one layer over 1 and 8 positions (split costs), and a whole pass
  // (local decoding). Once; later calls do nothing.
  void CalibrateEdge();

  // The verifier's advertised cost model and shape (SessionOpened.model).
  void ObserveVerifier(const v1::ModelInfo& info);
  // A round trip: bytes each way, wall time from send to reply, the verifier's reported compute.
  void ObserveRound(int64_t up_bytes, int64_t down_bytes, double wall_s, double remote_s);
  // A chain round's outcome: `drafted` drafts, of which the first `accepted` were accepted.
  void ObserveAcceptance(int drafted, int accepted);
  // The verifier took `remote_s` (queueing included) for `layers` layers over `positions`
  // positions, logits for `head_positions` of them: scales its advertised cost.
  void ObserveCloudPass(int layers, int positions, int head_positions, double remote_s);
  void ObserveDraft(int tokens, double seconds);
  void ObserveEdgeLayers(int layers, int positions, double seconds);
  void ObserveZstdRatio(int64_t raw_bytes, int64_t wire_bytes);

  // The scheduler's inputs now.
  Measurements Snapshot(int remaining_tokens, int context_tokens) const;
  const net::LinkEstimator& link() const { return link_; }
  bool verifier_known() const { return verifier_known_; }

 private:
  const model::Model& local_;
  double prior_acceptance_;
  net::LinkEstimator link_;
  // Decayed counts per draft position: rounds that reached it, and accepted it.
  std::vector<double> reached_, accepted_;
  bool calibrated_ = false;
  double edge_layer_base_s_ = 2e-4, edge_layer_per_pos_s_ = 2e-5;
  double local_s_per_token_ = 5e-3;
  double draft_s_per_token_ = -1;  // < 0: not measured (a quarter of a local pass is assumed)
  bool verifier_known_ = false;
  int cloud_layers_ = 0, cloud_dim_ = 0;
  double cloud_base_s_ = 2e-4, cloud_per_pos_s_ = 2e-5;
  double cloud_head_base_s_ = 0, cloud_head_per_pos_s_ = 0;
  double cloud_scale_ = 1.0;  // observed / advertised
  double zstd_ratio_ = 0.9;
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_LIVE_MEASUREMENTS_H_
