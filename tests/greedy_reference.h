// The reference every speculative path is compared with: the target decoding alone, greedy, one
// position per forward pass, stopping before BOS/EOS (as `tandem-model generate` does).
#ifndef TANDEM_TESTS_GREEDY_REFERENCE_H_
#define TANDEM_TESTS_GREEDY_REFERENCE_H_

#include <vector>

#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "gtest/gtest.h"

namespace tandem::testing {

inline std::vector<int32_t> GreedyTargetAlone(const model::Model& m,
                                              const std::vector<int32_t>& prompt, int n) {
  model::Engine e(m, nullptr);
  auto cache = model::KvCache::Create(m.config(), 0, m.config().n_layers,
                                      static_cast<int>(prompt.size()) + n + 1);
  EXPECT_TRUE(cache.ok());
  model::ForwardRequest r;
  r.tokens = prompt;
  r.logits = model::LogitsMode::kLast;
  model::ForwardResult out;
  EXPECT_TRUE(e.Forward(r, &*cache, &out).ok());
  std::vector<int32_t> gen;
  while (static_cast<int>(gen.size()) < n) {
    const int32_t next = model::Argmax(out.Row(0));
    if (next == m.vocab().bos_id() || next == m.vocab().eos_id()) break;
    gen.push_back(next);
    r.tokens = std::span<const int32_t>(&gen.back(), 1);
    EXPECT_TRUE(e.Forward(r, &*cache, &out).ok());
  }
  return gen;
}

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_GREEDY_REFERENCE_H_
