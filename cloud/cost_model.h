// The verifier's own compute cost, measured, for edges to plan with (ModelInfo.cost): a forward
// pass over L layers and P positions, with logits for H of them, takes about
// L * (base + P * per_position) + head(H) seconds, head(H) = head_base + H * head_per_position
// (the final norm and classifier: with a large vocabulary, worth several layers). Seeded by a
// short calibration on the engine at start-up (layers and head timed apart), then the layer terms
// are updated from every real pass by exponentially weighted least squares over (P, seconds per
// layer, the head's predicted time taken out), so they follow the machine's real speed and load.
// Queueing is tracked apart (mean wait for the engine).
// Thread-safety: thread-safe.
#ifndef TANDEM_CLOUD_COST_MODEL_H_
#define TANDEM_CLOUD_COST_MODEL_H_

#include <cstdint>
#include <mutex>

#include "absl/status/status.h"
#include "common/model/engine.h"
#include "tandem/v1/verifier.pb.h"

namespace tandem::cloud {

class PassCostModel {
 public:
  // `decay`: weight kept by past passes, per pass.
  explicit PassCostModel(double decay = 0.97) : decay_(decay) {}

  // Times passes of 1 and 8 positions over all layers on `engine` (a scratch cache; the engine's
  // own state is not touched otherwise). Run it on the thread that owns the engine.
  absl::Status Calibrate(model::Engine& engine);

  // One real pass: `layers` layers over `positions` positions, logits for `head_positions` of
  // them, took `seconds` of compute after `queue_seconds` waiting for the engine. Non-positive or
  // non-finite values are ignored.
  void Observe(int layers, int positions, int head_positions, double seconds, double queue_seconds);

  void Fill(v1::CostModel* out) const;
  // Seconds per layer for one pass over `positions` positions.
  double LayerSeconds(int positions) const;

 private:
  void AddLocked(double positions, double seconds_per_layer, double weight);
  void SolveLocked();

  const double decay_;
  mutable std::mutex mu_;
  // Weighted sums over passes of 1, P, P^2, y, P y (y = seconds per layer). GUARDED_BY(mu_)
  double s1_ = 0, sp_ = 0, spp_ = 0, sy_ = 0, spy_ = 0;
  double base_ = 0, per_position_ = 0;  // GUARDED_BY(mu_)
  double head_base_ = 0, head_per_position_ = 0;  // GUARDED_BY(mu_)
  double queue_mean_ = 0;               // GUARDED_BY(mu_)
  uint64_t samples_ = 0;                // GUARDED_BY(mu_)
};

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_COST_MODEL_H_
