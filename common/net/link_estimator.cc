// Weighted least-squares link estimates (see link_estimator.h).
#include "common/net/link_estimator.h"

#include <algorithm>
#include <cmath>

namespace tandem::net {
namespace {

// Units inside the fit: kilobytes and milliseconds, so the numbers stay near 1.
// A slope s in ms per kB is a bandwidth of 8e6 / (s * 1e3) ... = 8000 / s  kbit/s = 8e6 / s bit/s.
double SlopeFromBps(double bps) { return 8e6 / bps; }
double BpsFromSlope(double slope) { return 8e6 / slope; }

// Solves the 3x3 system a x = b by Gaussian elimination with partial pivoting; false if singular.
bool Solve3(double a[3][3], double b[3], double x[3]) {
  for (int c = 0; c < 3; ++c) {
    int p = c;
    for (int r = c + 1; r < 3; ++r) {
      if (std::fabs(a[r][c]) > std::fabs(a[p][c])) p = r;
    }
    if (std::fabs(a[p][c]) < 1e-12) return false;
    std::swap(a[p], a[c]);
    std::swap(b[p], b[c]);
    for (int r = c + 1; r < 3; ++r) {
      const double f = a[r][c] / a[c][c];
      for (int k = c; k < 3; ++k) a[r][k] -= f * a[c][k];
      b[r] -= f * b[c];
    }
  }
  for (int r = 2; r >= 0; --r) {
    double s = b[r];
    for (int k = r + 1; k < 3; ++k) s -= a[r][k] * x[k];
    x[r] = s / a[r][r];
  }
  return true;
}

}  // namespace

LinkEstimator::LinkEstimator(const LinkEstimatorOptions& options)
    : options_(options),
      rtt_s_(options.prior_rtt_s),
      up_bps_(options.prior_up_bps),
      down_bps_(options.prior_down_bps),
      anchor_bps_{options.prior_up_bps, options.prior_down_bps} {}

void LinkEstimator::ObserveRound(int64_t up_bytes, int64_t down_bytes, double wall_s,
                                 double remote_s) {
  if (up_bytes < 0 || down_bytes < 0 || !std::isfinite(wall_s) || !std::isfinite(remote_s) ||
      wall_s < 0 || remote_s < 0) {
    return;
  }
  const double x[3] = {1.0, up_bytes / 1e3, down_bytes / 1e3};
  const double y = std::max(0.0, wall_s - remote_s) * 1e3;
  // Change detection: two rounds in a row far off the model (relative error above 30% and three
  // times the usual) mean the link changed; the past then keeps only 5% of its weight.
  double decay = options_.decay;
  if (rounds_ >= 4) {
    const double predicted = NetworkSeconds(up_bytes, down_bytes) * 1e3;
    const double error = std::fabs(y - predicted) / std::max(predicted, 1.0);
    const bool surprise = error > std::max(0.3, 3 * typical_error_);
    if (surprise && last_surprised_) {
      decay = 0.05;
      changes_++;
      last_change_round_ = rounds_;
    }
    last_surprised_ = surprise;
    if (!surprise) typical_error_ = 0.9 * typical_error_ + 0.1 * error;
  }
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) sxx_[i][j] = decay * sxx_[i][j] + x[i] * x[j];
    sxy_[i] = decay * sxy_[i] + x[i] * y;
  }
  // Sizes that differ by half or more from the usual tell bandwidth apart from RTT.
  if (typical_up_bytes_ < 0) {
    typical_up_bytes_ = static_cast<double>(up_bytes);
  } else {
    const double u = static_cast<double>(up_bytes);
    if (u > 1.5 * typical_up_bytes_ + 64 || u < typical_up_bytes_ / 1.5 - 64) last_varied_round_ = rounds_;
    typical_up_bytes_ = 0.8 * typical_up_bytes_ + 0.2 * u;
  }
  ++rounds_;
  Solve();
}

bool LinkEstimator::WantsProbe(int every) const {
  if (rounds_ < 2) return false;
  // (A change detected on a round of a different size needs no further probe.)
  const bool changed_since_varied = last_change_round_ > last_varied_round_;
  return changed_since_varied || rounds_ - last_varied_round_ >= every;
}

void LinkEstimator::Solve() {
  // Ridge toward the priors, scaled by the data's own size so that it only decides directions
  // the data leaves open: rounds that all have the same size leave the bandwidths at the prior
  // instead of letting them drift (to a bound) with the noise.
  // The pull is toward the anchors: the priors at first, then the last estimates that the data
  // themselves determined (below), so that evidence from a probe is not forgotten when only
  // small messages follow.
  const double prior[3] = {0, SlopeFromBps(anchor_bps_[0]), SlopeFromBps(anchor_bps_[1])};
  double a[3][3], b[3], theta[3] = {};
  const double scale = std::max(sxx_[0][0], 1e-9) * options_.ridge_kb * options_.ridge_kb;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) a[i][j] = sxx_[i][j];
    b[i] = sxy_[i];
  }
  for (int i = 1; i < 3; ++i) {
    a[i][i] += options_.ridge * scale;  // a pseudo-round: x_i = ridge_kb, y = prior slope x_i
    b[i] += options_.ridge * scale * prior[i];
  }
  if (!Solve3(a, b, theta)) return;
  // Bandwidths stay within bounds; if a slope hits a bound, the RTT is refitted with it fixed.
  const double lo = SlopeFromBps(options_.max_bps), hi = SlopeFromBps(options_.min_bps);
  double su = std::clamp(theta[1], lo, hi), sd = std::clamp(theta[2], lo, hi);
  double rtt_ms = theta[0];
  if (su != theta[1] || sd != theta[2] || rtt_ms < 0) {
    rtt_ms = (sxy_[0] - su * sxx_[0][1] - sd * sxx_[0][2]) / std::max(sxx_[0][0], 1e-12);
  }
  rtt_s_ = std::max(0.0, rtt_ms) * 1e-3;
  up_bps_ = BpsFromSlope(su);
  down_bps_ = BpsFromSlope(sd);
  // A bandwidth the data determine (their size information outweighs the ridge's several times)
  // becomes the new anchor.
  for (int i = 1; i < 3; ++i) {
    const double info = sxx_[i][i] - sxx_[0][i] * sxx_[0][i] / std::max(sxx_[0][0], 1e-12);
    if (info > 4 * options_.ridge * scale) anchor_bps_[i - 1] = i == 1 ? up_bps_ : down_bps_;
  }
}

double LinkEstimator::NetworkSeconds(int64_t up_bytes, int64_t down_bytes) const {
  return rtt_s_ + up_bytes * 8.0 / up_bps_ + down_bytes * 8.0 / down_bps_;
}

}  // namespace tandem::net
