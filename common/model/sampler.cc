#include "common/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace tandem::model {
namespace {

uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& s : s_) s = SplitMix64(&x);
}

uint64_t Rng::Next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

float Rng::Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }

double Rng::UniformDouble() { return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0); }

absl::Status ValidateSamplerOptions(const SamplerOptions& o) {
  if (std::isnan(o.temperature) || o.temperature < 0.0f || std::isinf(o.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", o.temperature,
                                                   " must be a finite number >= 0"));
  }
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k ", o.top_k, " must be >= 0"));
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", o.top_p, " must be in (0, 1]"));
  }
  return absl::OkStatus();
}

int32_t Argmax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

float SoftmaxAt(std::span<const float> logits, int32_t index) {
  const float peak = logits[index];
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - peak));
  return static_cast<float>(1.0 / sum);
}

void Softmax(std::span<const float> logits, float temperature, std::vector<float>* probs) {
  probs->resize(logits.size());
  float max_logit = -INFINITY;
  for (float l : logits) max_logit = std::max(max_logit, l);
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    float p = expf((logits[i] - max_logit) / temperature);
    (*probs)[i] = p;
    sum += p;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (float& p : *probs) p *= inv;
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {}

void Sampler::Distribution(std::span<const float> logits, std::vector<float>* probs) const {
  const size_t n = logits.size();
  if (greedy()) {
    probs->assign(n, 0.0f);
    if (n > 0) (*probs)[Argmax(logits)] = 1.0f;
    return;
  }
  Softmax(logits, options_.temperature, probs);
  const bool cut_k = options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n;
  const bool cut_p = options_.top_p < 1.0f;
  if (!cut_k && !cut_p) return;
  // Rank candidates by probability (ties by id, for determinism) and keep a prefix.
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const size_t k = cut_k ? static_cast<size_t>(options_.top_k) : n;
  auto by_prob = [&](int32_t x, int32_t y) {
    return (*probs)[x] > (*probs)[y] || ((*probs)[x] == (*probs)[y] && x < y);
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), by_prob);
  size_t keep = k;
  if (cut_p) {
    double mass = 0.0;
    for (size_t i = 0; i < k; ++i) mass += (*probs)[order[i]];
    // The nucleus is relative to the mass left after top-k.
    double target = options_.top_p * mass, acc = 0.0;
    keep = 0;
    while (keep < k) {
      acc += (*probs)[order[keep++]];
      if (acc >= target) break;
    }
  }
  double kept_mass = 0.0;
  for (size_t i = 0; i < keep; ++i) kept_mass += (*probs)[order[i]];
  std::vector<float> out(n, 0.0f);
  const float inv = static_cast<float>(1.0 / kept_mass);
  for (size_t i = 0; i < keep; ++i) out[order[i]] = (*probs)[order[i]] * inv;
  probs->swap(out);
}

int32_t Sampler::SampleFrom(std::span<const float> probs) {
  double total = 0.0;
  for (float p : probs) total += p;
  const double r = rng_.UniformDouble() * total;
  double acc = 0.0;
  int32_t last_positive = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0f) continue;
    acc += probs[i];
    last_positive = static_cast<int32_t>(i);
    if (r < acc) return last_positive;
  }
  return last_positive;  // rounding: r landed past the accumulated total
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (greedy()) return Argmax(logits);
  Distribution(logits, &probs_);
  return SampleFrom(probs_);
}

}  // namespace tandem::model
