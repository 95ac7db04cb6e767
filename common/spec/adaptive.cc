// Expected-throughput choice of the draft length (see adaptive.h).
#include "common/spec/adaptive.h"

#include <algorithm>

namespace tandem::spec {

double RoundCosts::RoundSeconds(int gamma) const {
  return gamma * (draft_seconds_per_token + verify_seconds_per_token + network_seconds_per_token) +
         verify_base_seconds + network_seconds_per_round;
}

AdaptiveGamma::AdaptiveGamma(int max_gamma, double alpha, double initial_acceptance)
    : max_gamma_(std::max(0, max_gamma)), alpha_(alpha),
      acceptance_(std::max(1, max_gamma), initial_acceptance) {}

void AdaptiveGamma::ObserveRound(int proposed, int accepted) {
  proposed = std::min(proposed, static_cast<int>(acceptance_.size()));
  // Position i was tried when every earlier draft was accepted.
  for (int i = 0; i < proposed && i <= accepted; ++i) {
    const double hit = i < accepted ? 1.0 : 0.0;
    acceptance_[i] += alpha_ * (hit - acceptance_[i]);
  }
}

void AdaptiveGamma::ObserveCosts(int gamma, double draft_seconds, double verify_seconds) {
  if (gamma > 0) {
    const double per_token = draft_seconds / gamma;
    costs_.draft_seconds_per_token =
        have_draft_cost_ ? costs_.draft_seconds_per_token +
                               alpha_ * (per_token - costs_.draft_seconds_per_token)
                         : per_token;
    have_draft_cost_ = true;
  }
  // Verification time is linear in the positions n = gamma + 1: fit t = base + per_token * (n - 1)
  // by least squares over exponentially weighted moments. Until the draft lengths seen differ,
  // assume a position costs a tenth of a pass (memory-bound batches are cheap).
  const double n = gamma;
  auto update = [this](double* m, double x) { *m = have_verify_cost_ ? *m + alpha_ * (x - *m) : x; };
  update(&mean_n_, n);
  update(&mean_t_, verify_seconds);
  update(&mean_nn_, n * n);
  update(&mean_nt_, n * verify_seconds);
  have_verify_cost_ = true;
  const double var = mean_nn_ - mean_n_ * mean_n_;
  double slope = var > 1e-6 ? (mean_nt_ - mean_n_ * mean_t_) / var : -1.0;
  if (slope < 0) slope = 0.1 * std::max(0.0, mean_t_) / (1.0 + 0.1 * mean_n_);
  costs_.verify_seconds_per_token = slope;
  costs_.verify_base_seconds = std::max(0.0, mean_t_ - slope * mean_n_);
}

void AdaptiveGamma::SetNetwork(double seconds_per_round, double seconds_per_token) {
  costs_.network_seconds_per_round = seconds_per_round;
  costs_.network_seconds_per_token = seconds_per_token;
}

double AdaptiveGamma::ExpectedTokens(int gamma) const {
  double expected = 1.0, reach = 1.0;
  for (int i = 0; i < gamma && i < static_cast<int>(acceptance_.size()); ++i) {
    reach *= acceptance_[i];
    expected += reach;
  }
  return expected;
}

int AdaptiveGamma::Choose() const {
  if (!have_verify_cost_) return std::min(max_gamma_, 1);  // measure before optimizing
  int best = 0;
  double best_rate = -1.0;
  for (int g = 0; g <= max_gamma_; ++g) {
    const double t = costs_.RoundSeconds(g);
    const double rate = t > 0 ? ExpectedTokens(g) / t : ExpectedTokens(g);
    if (rate > best_rate * (1.0 + 1e-9)) {
      best_rate = rate;
      best = g;
    }
  }
  return best;
}

}  // namespace tandem::spec
