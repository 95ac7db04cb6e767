// Adaptive draft length: tracks the acceptance rate at each draft position (EWMA) and the
// measured costs of drafting and verifying, and picks the draft length gamma that maximizes the
// expected committed tokens per second of a round. Network terms (RTT, bytes / bandwidth) are
// hooks the edge fills in; locally they are zero.
// Thread-safety: not thread-safe; one per decoding loop.
#ifndef TANDEM_COMMON_SPEC_ADAPTIVE_H_
#define TANDEM_COMMON_SPEC_ADAPTIVE_H_

#include <vector>

namespace tandem::spec {

struct RoundCosts {
  double draft_seconds_per_token = 0;   // one draft token
  double verify_base_seconds = 0;       // a target pass over one position
  double verify_seconds_per_token = 0;  // each further position in the same pass
  double network_seconds_per_round = 0;  // hook: RTT (edge)
  double network_seconds_per_token = 0;  // hook: bytes per draft token / bandwidth (edge)
  // Seconds for a round with `gamma` drafts.
  double RoundSeconds(int gamma) const;
};

class AdaptiveGamma {
 public:
  // `alpha` weights new observations in the EWMAs; `initial_acceptance` is the prior for
  // positions never tried.
  AdaptiveGamma(int max_gamma, double alpha = 0.1, double initial_acceptance = 0.6);

  // Records a round: `proposed` drafts, of which the first `accepted` were accepted.
  void ObserveRound(int proposed, int accepted);
  // Records measured costs (seconds) for a round with `gamma` drafts.
  void ObserveCosts(int gamma, double draft_seconds, double verify_seconds);
  void SetNetwork(double seconds_per_round, double seconds_per_token);

  // Conditional acceptance at draft position i (given positions < i were accepted).
  double Acceptance(int i) const { return acceptance_[i]; }
  // Expected tokens committed by a round of `gamma` drafts (the bonus/correction included).
  double ExpectedTokens(int gamma) const;
  // The gamma in [0, max_gamma] with the most expected tokens per second.
  int Choose() const;
  const RoundCosts& costs() const { return costs_; }

 private:
  int max_gamma_;
  double alpha_;
  std::vector<double> acceptance_;
  RoundCosts costs_;
  bool have_draft_cost_ = false, have_verify_cost_ = false;
  // Exponentially weighted moments of (drafts n, verify seconds t) for the linear fit.
  double mean_n_ = 0, mean_t_ = 0, mean_nn_ = 0, mean_nt_ = 0;
};

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_ADAPTIVE_H_
