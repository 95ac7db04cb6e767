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

  // --- Batched use ---------------------------------------------------------------------------
  // The verifier's engine worker runs many sessions' passes together (Engine::ForwardBatch), so
  // each call above also comes in halves: Begin* checks its input and fills `item` with the pass
  // it needs; the caller runs the item, alone or in a batch; End* takes the item's status and
  // finishes. Between the halves the sequence must not be touched, and the inputs given to Begin*
  // (drafts, q, states, context) must stay valid. The one-call forms above are Begin, Forward, End.

  // Appends committed tokens without running them (the prefill passes below do): the checks of
  // Commit.
  absl::Status Append(std::span<const int32_t> tokens);
  // Split mode: the checks of CommitStates; keeps a copy of the states for the prefill passes.
  absl::Status AppendStates(std::span<const float> states, int rows);
  // Positions appended but not yet run through the target.
  int PendingPrefill() const;
  // Fills `item` with a pass over up to `max_rows` pending positions (a prefill chunk, no head).
  // False when none is pending.
  bool BeginPrefill(int max_rows, model::BatchItem* item);
  absl::Status EndPrefill(const absl::Status& pass);
  // The checks of VerifyRound, then `item` holds its pass (FailedPrecondition while a prefill is
  // pending). With `want_hidden` the pass returns the target's final hidden states, which
  // EndRound leaves in pass_result().
  absl::Status BeginRound(std::span<const int32_t> drafts, std::span<const int32_t> parents,
                          const DraftProbs& q, model::BatchItem* item,
                          std::span<const float> states = {},
                          std::span<const int32_t> context = {}, bool want_hidden = false);
  // `pass`: the item's status, or BeginRound's error (returned as it is).
  absl::StatusOr<VerifyResult> EndRound(const absl::Status& pass);
  const model::ForwardResult& pass_result() const { return out_; }

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
  std::vector<float> prefill_states_;  // split mode: the appended states not yet run
  // The round between BeginRound and EndRound.
  DraftTree tree_;
  DraftProbs q_nodes_;
  const DraftProbs* round_q_ = nullptr;
  std::vector<int32_t> round_context_;
  int round_base_ = 0;
  bool round_open_ = false;
};

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_TARGET_VERIFIER_H_
