// Token sampling: greedy, temperature, top-k and top-p (nucleus), with a seeded RNG whose stream
// is defined here (not by the standard library), so a seed reproduces the same tokens on every
// machine and run. Distribution() exposes the exact probability vector that Sample() draws from,
// which speculative verification needs for lossless acceptance.
// Thread-safety: a Sampler owns its RNG state; use one per sequence/thread.
#ifndef TANDEM_COMMON_MODEL_SAMPLER_H_
#define TANDEM_COMMON_MODEL_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace tandem::model {

// xoshiro256** seeded through splitmix64. Deterministic for a given seed.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t Next();
  // Uniform in [0, 1) with 24 bits of resolution (exactly representable as float).
  float Uniform();
  // Uniform in [0, 1) with 53 bits.
  double UniformDouble();

 private:
  uint64_t s_[4];
};

struct SamplerOptions {
  float temperature = 0.0f;  // <= 0: greedy (argmax)
  int top_k = 0;             // 0: no top-k cut
  float top_p = 1.0f;        // 1: no nucleus cut; keep the smallest set with mass >= top_p
  uint64_t seed = 0;
};

// Validates options: InvalidArgument for NaN/negative temperature, top_k < 0, top_p outside (0, 1].
absl::Status ValidateSamplerOptions(const SamplerOptions& options);

// Index of the largest value (the first on ties). REQUIRES: !values.empty().
int32_t Argmax(std::span<const float> values);

// softmax(logits)[index] = 1 / sum_i exp(logits[i] - logits[index]) (differences in float, the sum
// in double): a draft's confidence in its token. REQUIRES: index within logits.
float SoftmaxAt(std::span<const float> logits, int32_t index);

// Softmax of logits / temperature into probs (resized to logits.size()).
void Softmax(std::span<const float> logits, float temperature, std::vector<float>* probs);

class Sampler {
 public:
  // REQUIRES: ValidateSamplerOptions(options).ok()
  explicit Sampler(const SamplerOptions& options);

  bool greedy() const { return options_.temperature <= 0.0f; }
  const SamplerOptions& options() const { return options_; }

  // The distribution Sample() draws from: softmax(logits / T) restricted to top-k, then to the
  // top-p nucleus, renormalized; zero elsewhere. Greedy gives a one-hot vector at the argmax.
  void Distribution(std::span<const float> logits, std::vector<float>* probs) const;

  // Draws a token from Distribution(logits), advancing the RNG (except when greedy).
  int32_t Sample(std::span<const float> logits);

  // Draws an index from a probability vector (need not be normalized; must have positive mass).
  int32_t SampleFrom(std::span<const float> probs);

  Rng& rng() { return rng_; }

 private:
  SamplerOptions options_;
  Rng rng_;
  std::vector<float> probs_;
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_SAMPLER_H_
