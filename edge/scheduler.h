// The edge's scheduler: from live measurements (link, compute on each side, acceptance per draft
// position) it predicts the tokens per second of every allowed configuration (mode, draft length
// gamma, split layer k, codec) and picks the best under the configured policy, re-deciding each
// round with hysteresis. Every change comes with a one-line explanation for the debug log.
//
// Cost model, for a round with gamma drafts (E = expected committed tokens of the round, from
// the conditional acceptance a_i: E = 1 + a_0 + a_0 a_1 + ... up to gamma terms):
//   spec      T = gamma * t_draft + rtt + up_bytes/uplink + down_bytes/downlink + cloud(N layers,
//               gamma + 1 positions)
//   split k   T = gamma * t_draft + edge([0,k), gamma + 1 positions) + rtt + (gamma + 1) rows of
//               the codec / uplink + down/downlink + cloud([k,N), gamma + 1 positions)
//   cloud     streaming: a token every cloud(N layers, 1 position) + rtt / remaining tokens
//             (one round trip to start, none per token)
//   local     a token every t_local
// where edge(L layers, P positions) = L (edge_base + P edge_per_position), and cloud(...) alike
// plus the head over the positions that need logits (P in a verification pass, 1 when decoding).
// tokens/s = E / T. With the objective `cloud_cost`, the configuration with the least cloud
// compute per token wins among those within `cost_slack` of the best tokens/s.
// Thread-safety: not thread-safe; one per generation loop.
#ifndef TANDEM_EDGE_SCHEDULER_H_
#define TANDEM_EDGE_SCHEDULER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/codec.h"

namespace tandem::edge {

enum class RunMode { kLocal, kSpec, kSplit, kCloud };
std::string RunModeName(RunMode mode);

struct RunConfig {
  RunMode mode = RunMode::kSpec;
  int gamma = 4;        // drafts per round (spec, split)
  int split_layer = 0;  // k (split)
  codec::CodecSpec codec;
  bool operator==(const RunConfig& o) const {
    return mode == o.mode && gamma == o.gamma && split_layer == o.split_layer &&
           codec.kind == o.codec.kind && codec.zstd == o.codec.zstd;
  }
  std::string Name() const;  // "spec g4", "split k2 int8 g3", "cloud", "local"
};

enum class Objective { kLatency, kCloudCost };

struct SchedulerPolicy {
  std::vector<RunMode> allowed = {RunMode::kLocal, RunMode::kSpec, RunMode::kSplit, RunMode::kCloud};
  int min_split_layer = 1;   // privacy: the cloud never sees layers below this
  int max_edge_layers = 1 << 20;  // memory: target layers the edge may hold
  std::vector<codec::CodecSpec> codecs = {{codec::CodecKind::kF32, false},
                                          {codec::CodecKind::kInt8, false}};
  int max_gamma = 8;
  Objective objective = Objective::kLatency;
  double cost_slack = 0.10;   // kCloudCost: allowed loss of tokens/s against the fastest
  double hysteresis = 0.10;   // a new choice must beat the current one by this fraction
  // A lossy codec (anything but f32) is chosen only when it beats the best exact configuration
  // by this fraction: exactness is worth a little speed.
  double lossy_min_gain = 0.10;
};

struct Measurements {
  // Link (from net::LinkEstimator).
  double rtt_s = 0.02, up_bps = 10e6, down_bps = 50e6;
  // Edge compute.
  double draft_s_per_token = 0.001;      // one draft token
  // One target layer over P positions on the edge: base + P * per_position.
  double edge_layer_s_base = 0;
  double edge_layer_s_per_position = 1e-4;
  double local_s_per_token = 0.002;      // the local model alone, one token
  // Cloud compute, queueing included: a pass over L layers and P positions costs
  // L * (cloud_layer_s_base + P * cloud_layer_s_per_position).
  double cloud_layer_s_base = 2e-4, cloud_layer_s_per_position = 2e-5;
  // Plus the final norm and classifier over the positions that need logits (all of a
  // verification pass; one per cloud decoding step): head_base + H * head_per_position.
  double cloud_head_s_base = 0, cloud_head_s_per_position = 0;
  // Acceptance of draft position i given all earlier ones were accepted.
  std::vector<double> acceptance = {0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7};
  // Model shape.
  int n_layers = 5, dim = 64;
  // Bytes on the wire besides the payload, per round (framing, ids, verdict).
  int up_overhead_bytes = 40, down_overhead_bytes = 20, bytes_per_draft_id = 3;
  double zstd_ratio = 0.9;  // compressed / raw, measured from the payloads sent
  int remaining_tokens = 128;  // tokens still to generate (cloud mode pays one RTT over them)
  int context_tokens = 0;      // committed tokens a new session must replay
};

struct Prediction {
  RunConfig config;
  double tokens_per_s = 0;
  double cloud_s_per_token = 0;
  double up_bytes_per_token = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerPolicy& policy);

  // Every configuration the policy allows, with its prediction.
  std::vector<Prediction> PredictAll(const Measurements& m) const;
  Prediction Predict(const RunConfig& config, const Measurements& m) const;

  // Re-decides: returns the configuration for the next round. `why` (may be null) gets a
  // one-line explanation when the choice changed, else is cleared.
  // A change of mode or split layer opens a new session, which replays the committed prefix: it
  // is made only when the predicted time saved over the remaining tokens exceeds that cost
  // (SwitchSeconds) and the hysteresis.
  RunConfig Decide(const Measurements& m, std::string* why);
  // The predicted cost of opening a new session for `to`: a round trip, the prefix's upload, and
  // its replay through the layers on each side.
  double SwitchSeconds(const RunConfig& to, const Measurements& m) const;
  const RunConfig& current() const { return current_; }
  int changes() const { return changes_; }

 private:
  SchedulerPolicy policy_;
  RunConfig current_;
  bool have_current_ = false;
  int changes_ = 0;
};

// "spec,cloud,split,local" (any subset, comma-separated) into modes.
absl::StatusOr<std::vector<RunMode>> ParseRunModes(const std::string& list);

// Whether going from `a` to `b` keeps the session (only the draft length or codec changes).
bool SameSession(const RunConfig& a, const RunConfig& b);

// Expected committed tokens of a round with `gamma` drafts (the correction or bonus included).
double ExpectedTokens(const std::vector<double>& acceptance, int gamma);

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_SCHEDULER_H_
