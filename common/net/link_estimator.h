// Link estimates for the edge's scheduler, from the rounds it actually makes: each round sends
// `up` bytes, receives `down` bytes, takes `wall` seconds from the first byte sent to the last
// byte received, of which the verifier reports `remote` seconds of compute (queueing included).
// The network part is modelled as
//     wall - remote = rtt + up / uplink + down / downlink
// and fitted by exponentially weighted least squares (forgetting factor `decay` per round, so the
// estimates follow a link that changes within a few rounds). Rounds of nearly constant size carry
// no information about bandwidth, and small messages (a few hundred bytes) hardly any, whatever
// their spread: a ridge term, worth `ridge` rounds of `ridge_kb` kilobytes each way at the prior
// bandwidths, keeps the bandwidths at the priors until rounds of kilobytes say otherwise (then at
// the last values such rounds determined), while the RTT is still learned. Small probes sent
// when idle are ordinary rounds to this estimator. Two rounds in a row far off the model are
// taken as a change of link, and the past is then mostly forgotten at once.
// Thread-safety: not thread-safe; one per edge session loop.
#ifndef TANDEM_COMMON_NET_LINK_ESTIMATOR_H_
#define TANDEM_COMMON_NET_LINK_ESTIMATOR_H_

#include <cstdint>

namespace tandem::net {

struct LinkEstimatorOptions {
  double decay = 0.85;                 // weight kept by past rounds, per round
  double prior_rtt_s = 0.020;
  double prior_up_bps = 10e6;          // bit/s
  double prior_down_bps = 50e6;
  double ridge = 0.1;                  // pseudo-rounds (relative to the data's weight) at the priors
  double ridge_kb = 1.0;               // their size, each way
  double min_bps = 1e3, max_bps = 1e11;
};

class LinkEstimator {
 public:
  explicit LinkEstimator(const LinkEstimatorOptions& options = {});

  // One request/response round. Rounds with non-finite or negative values are ignored.
  void ObserveRound(int64_t up_bytes, int64_t down_bytes, double wall_s, double remote_s);

  double rtt_s() const { return rtt_s_; }
  double up_bps() const { return up_bps_; }
  double down_bps() const { return down_bps_; }
  int64_t rounds() const { return rounds_; }
  // Link changes detected so far (two surprising rounds in a row).
  int64_t changes() const { return changes_; }
  // Whether a round of a clearly different uplink size would teach something: the recent rounds
  // were all about the same size (so bandwidth and RTT cannot be told apart) and a change was
  // just detected, or it has been `every` rounds since sizes last varied.
  bool WantsProbe(int every = 16) const;
  // Predicted network seconds for a round of this many bytes each way.
  double NetworkSeconds(int64_t up_bytes, int64_t down_bytes) const;

 private:
  void Solve();

  LinkEstimatorOptions options_;
  // Weighted sums over rounds of x x^T and x y, x = (1, up kB, down kB), y = network ms.
  double sxx_[3][3] = {};
  double sxy_[3] = {};
  double typical_error_ = 0.1;  // EWMA of the relative prediction error
  bool last_surprised_ = false;
  double rtt_s_, up_bps_, down_bps_;
  double anchor_bps_[2];  // where the ridge pulls: up, down
  int64_t rounds_ = 0;
  int64_t changes_ = 0;
  int64_t last_change_round_ = -1;
  int64_t last_varied_round_ = 0;  // the last round whose uplink size differed from the typical
  double typical_up_bytes_ = -1;   // EWMA of the uplink size
};

}  // namespace tandem::net

#endif  // TANDEM_COMMON_NET_LINK_ESTIMATOR_H_
