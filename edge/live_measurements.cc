// Live measurements for the edge scheduler (see live_measurements.h).
#include "edge/live_measurements.h"

#include <algorithm>
#include <cmath>

#include "common/model/engine.h"
#include "common/model/kv_cache.h"
#include "common/model/thread_pool.h"
#include "common/util/clock.h"

namespace tandem::edge {

namespace {

constexpr double kAcceptanceDecay = 0.97;  // per round: recent rounds count most
constexpr double kPriorWeight = 2.0;       // pseudo-rounds behind the prior
constexpr double kEwma = 0.3;              // weight of a new cost sample

double Ewma(double old, double sample, bool first) {
  return first ? sample : (1 - kEwma) * old + kEwma * sample;
}

}  // namespace

LiveMeasurements::LiveMeasurements(const model::Model& local, double prior_acceptance,
                                   int max_positions)
    : local_(local),
      prior_acceptance_(std::clamp(prior_acceptance, 0.0, 1.0)),
      reached_(static_cast<size_t>(std::max(1, max_positions)), 0.0),
      accepted_(static_cast<size_t>(std::max(1, max_positions)), 0.0) {
  const model::ModelConfig& c = local.config();
  cloud_layers_ = c.n_layers;
  cloud_dim_ = c.dim;
}

void LiveMeasurements::CalibrateEdge() {
  if (calibrated_) return;
  calibrated_ = true;
  const model::ModelConfig& c = local_.config();
  model::ThreadPool pool(1);
  model::Engine engine(local_, &pool);
  absl::StatusOr<model::KvCache> cache = model::KvCache::Create(c, 0, c.n_layers, 9);
  if (!cache.ok()) return;
  const std::vector<int32_t> tokens(8, local_.vocab().bos_id());
  model::ForwardResult out;
  auto time = [&](int layers, int positions, model::LogitsMode logits) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      if (!cache->Truncate(0).ok()) return -1.0;
      model::ForwardRequest r;
      r.layer_end = layers;
      r.tokens = std::span<const int32_t>(tokens.data(), static_cast<size_t>(positions));
      r.logits = logits;
      const double t0 = MonotonicSeconds();
      if (!engine.Forward(r, &*cache, &out).ok()) return -1.0;
      best = std::min(best, MonotonicSeconds() - t0);
    }
    return best;
  };
  const double one = time(1, 1, model::LogitsMode::kNone);
  const double eight = time(1, 8, model::LogitsMode::kNone);
  const double pass = time(c.n_layers, 1, model::LogitsMode::kLast);
  if (one > 0 && eight > 0) {
    edge_layer_per_pos_s_ = std::max(0.0, (eight - one) / 7);
    edge_layer_base_s_ = std::max(0.0, one - edge_layer_per_pos_s_);
  }
  if (pass > 0) local_s_per_token_ = pass;
}

void LiveMeasurements::ObserveVerifier(const v1::ModelInfo& info) {
  if (info.n_layers() > 0) cloud_layers_ = static_cast<int>(info.n_layers());
  if (info.dim() > 0) cloud_dim_ = static_cast<int>(info.dim());
  if (info.has_cost() && info.cost().layer_micros_base() + info.cost().layer_micros_per_position() > 0 &&
      std::isfinite(info.cost().layer_micros_base()) &&
      std::isfinite(info.cost().layer_micros_per_position())) {
    cloud_base_s_ = std::max(0.0, info.cost().layer_micros_base() * 1e-6 +
                                      std::max(0.0, info.cost().queue_micros_mean()) * 1e-6 /
                                          std::max(1, cloud_layers_));
    cloud_per_pos_s_ = std::max(0.0, info.cost().layer_micros_per_position() * 1e-6);
    if (std::isfinite(info.cost().head_micros_base()) &&
        std::isfinite(info.cost().head_micros_per_position())) {
      cloud_head_base_s_ = std::max(0.0, info.cost().head_micros_base() * 1e-6);
      cloud_head_per_pos_s_ = std::max(0.0, info.cost().head_micros_per_position() * 1e-6);
    }
    if (!verifier_known_) cloud_scale_ = 1.0;
  }
  verifier_known_ = true;
}

void LiveMeasurements::ObserveRound(int64_t up_bytes, int64_t down_bytes, double wall_s,
                                    double remote_s) {
  link_.ObserveRound(up_bytes, down_bytes, wall_s, remote_s);
}

void LiveMeasurements::ObserveAcceptance(int drafted, int accepted) {
  for (size_t i = 0; i < reached_.size(); ++i) {
    reached_[i] *= kAcceptanceDecay;
    accepted_[i] *= kAcceptanceDecay;
  }
  for (int i = 0; i < drafted && i < static_cast<int>(reached_.size()); ++i) {
    if (i > accepted) break;  // not reached
    reached_[i] += 1;
    if (i < accepted) accepted_[i] += 1;
  }
}

void LiveMeasurements::ObserveCloudPass(int layers, int positions, int head_positions,
                                        double remote_s) {
  if (layers <= 0 || positions <= 0 || !(remote_s > 0) || !std::isfinite(remote_s)) return;
  const double predicted = layers * (cloud_base_s_ + positions * cloud_per_pos_s_) +
                           (head_positions > 0 ? cloud_head_base_s_ + head_positions * cloud_head_per_pos_s_ : 0.0);
  if (predicted <= 0) return;
  cloud_scale_ = std::clamp((1 - kEwma) * cloud_scale_ + kEwma * (remote_s / predicted), 0.05, 100.0);
}

void LiveMeasurements::ObserveDraft(int tokens, double seconds) {
  if (tokens <= 0 || !(seconds >= 0)) return;
  draft_s_per_token_ = Ewma(draft_s_per_token_, seconds / tokens, draft_s_per_token_ < 0);
}

void LiveMeasurements::ObserveEdgeLayers(int layers, int positions, double seconds) {
  if (layers <= 0 || positions <= 0 || !(seconds > 0)) return;
  // Keep the calibrated slope; follow the level.
  const double predicted = layers * (edge_layer_base_s_ + positions * edge_layer_per_pos_s_);
  if (predicted <= 0) return;
  const double scale = std::clamp(seconds / predicted, 0.5, 2.0);
  edge_layer_base_s_ *= (1 - kEwma) + kEwma * scale;
  edge_layer_per_pos_s_ *= (1 - kEwma) + kEwma * scale;
}

void LiveMeasurements::ObserveZstdRatio(int64_t raw_bytes, int64_t wire_bytes) {
  if (raw_bytes <= 0 || wire_bytes <= 0) return;
  zstd_ratio_ = std::clamp(Ewma(zstd_ratio_, static_cast<double>(wire_bytes) / raw_bytes, false),
                           0.01, 1.5);
}

Measurements LiveMeasurements::Snapshot(int remaining_tokens, int context_tokens) const {
  Measurements m;
  m.rtt_s = link_.rtt_s();
  m.up_bps = link_.up_bps();
  m.down_bps = link_.down_bps();
  m.local_s_per_token = local_s_per_token_;
  m.draft_s_per_token = draft_s_per_token_ >= 0 ? draft_s_per_token_ : local_s_per_token_ / 4;
  m.edge_layer_s_base = edge_layer_base_s_;
  m.edge_layer_s_per_position = edge_layer_per_pos_s_;
  m.cloud_layer_s_base = cloud_base_s_ * cloud_scale_;
  m.cloud_layer_s_per_position = cloud_per_pos_s_ * cloud_scale_;
  m.cloud_head_s_base = cloud_head_base_s_ * cloud_scale_;
  m.cloud_head_s_per_position = cloud_head_per_pos_s_ * cloud_scale_;
  m.acceptance.resize(reached_.size());
  for (size_t i = 0; i < reached_.size(); ++i) {
    m.acceptance[i] = (accepted_[i] + kPriorWeight * prior_acceptance_) / (reached_[i] + kPriorWeight);
  }
  m.n_layers = cloud_layers_;
  m.dim = cloud_dim_;
  m.zstd_ratio = zstd_ratio_;
  m.remaining_tokens = std::max(1, remaining_tokens);
  m.context_tokens = std::max(0, context_tokens);
  return m;
}

}  // namespace tandem::edge
