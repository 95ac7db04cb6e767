// The verifier's measured cost model (see cost_model.h).
#include "cloud/cost_model.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/model/kv_cache.h"
#include "common/util/clock.h"
#include "common/util/status_macros.h"

namespace tandem::cloud {

absl::Status PassCostModel::Calibrate(model::Engine& engine) {
  const model::ModelConfig& c = engine.model().config();
  constexpr int kLong = 8;
  ASSIGN_OR_RETURN(model::KvCache cache, model::KvCache::Create(c, 0, c.n_layers, kLong + 1));
  const std::vector<int32_t> tokens(kLong, engine.model().vocab().bos_id());
  model::ForwardResult out;
  std::vector<float> logits(static_cast<size_t>(kLong) * c.vocab_size);
  // The best of a few runs of each size: the machine's speed, not its noise.
  double layers_best[2] = {1e30, 1e30}, head_best[2] = {1e30, 1e30};
  const int sizes[2] = {1, kLong};
  for (int rep = 0; rep < 3; ++rep) {
    for (int i = 0; i < 2; ++i) {
      RETURN_IF_ERROR(cache.Truncate(0));
      model::ForwardRequest r;
      r.tokens = std::span<const int32_t>(tokens.data(), static_cast<size_t>(sizes[i]));
      r.logits = model::LogitsMode::kNone;  // hidden states: the layers alone
      double t0 = MonotonicSeconds();
      RETURN_IF_ERROR(engine.Forward(r, &cache, &out));
      layers_best[i] = std::min(layers_best[i], MonotonicSeconds() - t0);
      t0 = MonotonicSeconds();
      engine.Head(out.data.data(), sizes[i], logits.data());
      head_best[i] = std::min(head_best[i], MonotonicSeconds() - t0);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  head_per_position_ = std::max(0.0, (head_best[1] - head_best[0]) / (kLong - 1));
  head_base_ = std::max(0.0, head_best[0] - head_per_position_);
  for (int i = 0; i < 2; ++i) AddLocked(sizes[i], layers_best[i] / c.n_layers, 2.0);
  SolveLocked();
  return absl::OkStatus();
}

void PassCostModel::Observe(int layers, int positions, int head_positions, double seconds,
                            double queue_seconds) {
  if (layers <= 0 || positions <= 0 || head_positions < 0 || !(seconds > 0) ||
      !std::isfinite(seconds)) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  const double head = head_positions > 0 ? head_base_ + head_positions * head_per_position_ : 0.0;
  const double y = std::max(0.0, seconds - head) / layers;
  s1_ *= decay_;
  sp_ *= decay_;
  spp_ *= decay_;
  sy_ *= decay_;
  spy_ *= decay_;
  AddLocked(positions, y, 1.0);
  SolveLocked();
  if (queue_seconds >= 0 && std::isfinite(queue_seconds)) {
    queue_mean_ = samples_ == 0 ? queue_seconds : 0.9 * queue_mean_ + 0.1 * queue_seconds;
  }
  samples_++;
}

void PassCostModel::AddLocked(double p, double y, double w) {
  s1_ += w;
  sp_ += w * p;
  spp_ += w * p * p;
  sy_ += w * y;
  spy_ += w * p * y;
}

void PassCostModel::SolveLocked() {
  if (s1_ <= 0) return;
  const double mean_p = sp_ / s1_, mean_y = sy_ / s1_;
  const double var = spp_ / s1_ - mean_p * mean_p;
  // Passes of (nearly) one size say nothing about the slope: keep the slope, refit the base.
  if (var > 1e-3) per_position_ = std::max(0.0, (spy_ / s1_ - mean_p * mean_y) / var);
  base_ = std::max(0.0, mean_y - per_position_ * mean_p);
}

double PassCostModel::LayerSeconds(int positions) const {
  std::lock_guard<std::mutex> lock(mu_);
  return base_ + positions * per_position_;
}

void PassCostModel::Fill(v1::CostModel* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->set_layer_micros_base(base_ * 1e6);
  out->set_layer_micros_per_position(per_position_ * 1e6);
  out->set_queue_micros_mean(queue_mean_ * 1e6);
  out->set_samples(samples_);
  out->set_head_micros_base(head_base_ * 1e6);
  out->set_head_micros_per_position(head_per_position_ * 1e6);
}

}  // namespace tandem::cloud
