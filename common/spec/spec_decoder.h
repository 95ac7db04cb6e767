// Local speculative decoding: a Drafter proposes, the target verifies every draft in one batched
// forward pass, the target's KV cache is rolled back to the accepted path, and the committed
// text is exactly the target's (greedy), or distributed exactly as the target's (sampling).
// Thread-safety: one Generate call at a time per decoder.
#ifndef TANDEM_COMMON_SPEC_SPEC_DECODER_H_
#define TANDEM_COMMON_SPEC_SPEC_DECODER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "common/spec/drafter.h"

namespace tandem::spec {

struct SpecOptions {
  int spec_tokens = 4;             // draft length gamma per round (0: target alone)
  // Choose the draft length each round (AdaptiveGamma), up to spec_tokens. Chains only.
  bool adaptive = false;
  // When set, draft trees of this shape instead of chains (the drafter must support trees).
  std::optional<TreeShape> tree;
  model::SamplerOptions sampler;   // the target's sampling; drafts must use the same processing
};

struct SpecStats {
  int64_t generated_tokens = 0;
  int64_t target_forward_passes = 0;  // verification passes, prefill excluded
  int64_t draft_tokens = 0;
  int64_t accepted_tokens = 0;
  // Chains: drafts offered at position i of a round, and how many were accepted. Trees: rounds
  // whose tree reached depth i + 1, and how many accepted a node at that depth.
  std::vector<int64_t> proposed_per_position;
  std::vector<int64_t> accepted_per_position;
  double draft_seconds = 0;
  double verify_seconds = 0;
  double prefill_seconds = 0;
  bool context_full = false;
  // Tokens per verification pass, the bonus/correction token included.
  double MeanAcceptedLength() const;
};

class SpecDecoder {
 public:
  // `target` must outlive the decoder. `drafter` may be null (target alone).
  SpecDecoder(const model::Model& target, model::ThreadPool* pool, Drafter* drafter,
              const SpecOptions& options);

  // Generates up to `max_new_tokens` after `prompt` (BOS first), stopping before BOS/EOS.
  // `emit(prev, token)` is called for each committed token in order.
  absl::Status Generate(std::span<const int32_t> prompt, int max_new_tokens,
                        const std::function<void(int32_t prev, int32_t token)>& emit,
                        SpecStats* stats);

 private:
  // Draft nodes per round at most (gamma for chains, the tree size for trees).
  int MaxDraftNodes() const;
  // Drafts the round: a chain of up to `gamma` tokens or a tree of up to `room` nodes below the
  // last committed token.
  absl::Status ProposeRound(const std::vector<int32_t>& tokens, int gamma, int room,
                            DraftTree* tree, Draft* draft);
  static void RecordRound(const DraftTree& tree, int accepted, SpecStats* stats);
  // Hands the committed tokens and their target features to the drafter (EAGLE hook).
  void ShareFeatures(const DraftTree& tree, const VerifyResult& verdict,
                     const model::ForwardResult& out);

  const model::Model& target_;
  model::Engine engine_;
  Drafter* drafter_;
  SpecOptions options_;
};

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_SPEC_DECODER_H_
