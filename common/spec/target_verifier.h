// The target side of speculative decoding for one sequence: the committed tokens, the target's
// KV cache over them, and one verification round at a time (one batched forward over the last
// committed token and the draft, verification, rollback or compaction, commit). Local decoding
// (SpecDecoder) and the cloud verifier's sessions share it.
// Thread-safety: one caller at a time; the Engine passed in belongs to the calling thread.
#ifndef TANDEM_COMMON_SPEC_TARGET_VERIFIER_H_
#define TANDEM_COMMON_SPEC_TARGET_VERIFIER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "common/spec/verify.h"

namespace tandem::spec {

class TargetVerifier {
 public:
  // A sequence of up to `capacity` positions. InvalidArgument for bad sampling options.
  // With `layer_begin` k > 0 (split mode) it runs only layers [k, N) and takes the states entering
  // layer k instead of token ids.
  static absl::StatusOr<std::unique_ptr<TargetVerifier>> Create(
      const model::Model& target, int capacity, const model::SamplerOptions& sampling,
      int layer_begin = 0);

  // Appends committed tokens (a prompt, or a prefix replayed on resume) and runs all but the
  // last through the target. InvalidArgument for ids outside the vocabulary; ResourceExhausted
  // when the context would overflow.
  absl::Status Commit(model::Engine& engine, std::span<const int32_t> tokens);
  // Split mode: commits `rows` + 1 positions whose ids the edge keeps to itself, given the
  // layer-k states of the first `rows` (rows x dim floats); the last one's state comes as the root
  // of the next round. Only on an empty sequence.
  absl::Status CommitStates(model::Engine& engine, std::span<const float> states, int rows);

  // Verifies `drafts` below the last committed token: a chain when `parents` is empty, else tree
  // nodes with parents[i] in [-1, i) (-1: below the last committed token). Commits the accepted
  // drafts and the next token. `q` gives the draft distributions for sampled chains (one row per
  // draft position). With `hidden`, receives the target's final hidden states of the pass
  // (one row per tree node, the root first).
  // Split mode: `states` holds the layer-k states of the root and the draft nodes
  // ((drafts + 1) x dim floats).
  // `context` (the edge's `uncertain` policy; chains of token ids only): tokens committed without
  // a verdict. They follow the last committed token, are committed unconditionally, and the
  // drafts hang after the last of them; all of it runs in the same single forward pass (root,
  // context, drafts), and `pass` then holds the context's rows between the root and the drafts.
  // InvalidArgument for context ids outside the vocabulary, context in split mode or with a tree,
  // or context that leaves no room for the next token; on any error nothing is committed.
  absl::StatusOr<VerifyResult> VerifyRound(model::Engine& engine, std::span<const int32_t> drafts,
                                           std::span<const int32_t> parents, const DraftProbs& q,
                                           model::ForwardResult* pass = nullptr,
                                           std::span<const float> states = {},
                                           std::span<const int32_t> context = {});

  // Committed ids; in split mode the ids of committed states are unknown and read as -1.
  const std::vector<int32_t>& committed() const { return committed_; }
  int layer_begin() const { return layer_begin_; }
  // Draft nodes that still fit this round, with the next token (negative when the context is
  // full).
  int Room() const { return cache_.capacity() - static_cast<int>(committed_.size()) - 1; }
  uint64_t MemoryBytes() const { return cache_.MemoryBytes(); }
  int64_t forward_passes() const { return forward_passes_; }

 private:
  TargetVerifier(const model::Model& target, model::KvCache cache,
                 const model::SamplerOptions& sampling, int layer_begin);

  const model::Model& target_;
  int layer_begin_ = 0;
  model::KvCache cache_;  // holds committed_[0, n - 1)
  model::Sampler sampler_;
  std::vector<int32_t> committed_;
  int64_t forward_passes_ = 0;
  model::ForwardResult out_;
  std::vector<float> p_rows_, p_, q_full_;
  std::vector<int32_t> batch_;  // the pass's token ids: root, context, drafts
};

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_TARGET_VERIFIER_H_
