// The edge half of split mode: runs the target's layers [0, k) for the committed prefix and for
// each draft, with its own KV cache kept in step with the verifier's cache of layers [k, N), and
// encodes the layer-k states with the session's codec into the protocol's HiddenStates.
// The cache holds the same positions as the verifier's: every committed token but the last, which
// enters as the root of the next round.
// Thread-safety: one caller at a time (one generation loop).
#ifndef TANDEM_EDGE_SPLIT_RUNNER_H_
#define TANDEM_EDGE_SPLIT_RUNNER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/codec.h"
#include "common/model/engine.h"
#include "common/model/kv_cache.h"
#include "common/model/model.h"
#include "tandem/v1/verifier.pb.h"

namespace tandem::edge {

class SplitRunner {
 public:
  // `target` is the edge's copy of the target model; layers [0, k) run here, 1 <= k < N.
  static absl::StatusOr<std::unique_ptr<SplitRunner>> Create(const model::Model& target, int k,
                                                             int capacity,
                                                             const codec::CodecSpec& codec,
                                                             int threads = 1);

  // Starts a sequence (a prompt, or a prefix replayed on resume): runs committed[0, n-1) and
  // fills `out` with their states (n - 1 rows).
  absl::Status Prompt(std::span<const int32_t> committed, v1::HiddenStates* out);

  // One round: runs the root (the last committed token) and the draft nodes (a chain when
  // `parents` is empty, else parents[i] in [-1, i), -1 below the root) and fills `out` with their
  // states (drafts + 1 rows). Must be followed by Accept.
  absl::Status Round(int32_t root, std::span<const int32_t> drafts,
                     std::span<const int32_t> parents, v1::HiddenStates* out);

  // One round that drafts by itself: an early exit at layer k on this runner's own states. Runs
  // the root, then each new draft, one position at a time through layers [0, k); the next draft
  // is the argmax of the model's final norm + classifier over the layer-k state (greedy, as
  // Engine's early_exit and spec::ModelDrafter with layers = k). So each draft's [0, k) work is
  // done once and its state is the row sent. Up to `gamma` drafts (fewer when the cache has room
  // for fewer than gamma + 1 positions; gamma = 0 sends the root alone) go to `drafts`, and `out`
  // gets the pre-norm layer-k states of the root and the drafts (drafts + 1 rows) with the
  // session's codec, as Round(root, *drafts, {}, out) would. The rows are Round's bit for bit
  // when the model's matrices are block-quantized (Q8_0/Q4_0); with F32/F16 matrices they agree
  // to float rounding only (~1e-6 relative), because the engine's dense kernels sum a batch of
  // positions in another order than a single one. `confidence` (optional) gets each draft's
  // softmax probability. Must be followed by Accept, which rolls back as after Round.
  // Errors (nothing is modified, no round is pending): FailedPrecondition when a round is
  // pending, InvalidArgument for gamma < 0 or a root outside the vocabulary, ResourceExhausted
  // when the cache is full.
  absl::Status DraftRound(int32_t root, int gamma, std::vector<int32_t>* drafts,
                          v1::HiddenStates* out, std::vector<float>* confidence = nullptr);

  // After the verdict: keeps the root and the accepted draft nodes (indices into `drafts`, in
  // path order; for a chain, 0..accepted-1).
  absl::Status Accept(std::span<const int32_t> accepted_nodes);

  int k() const { return k_; }
  // The codec for the states sent from now on (each message names its codec).
  void set_codec(const codec::CodecSpec& codec) { codec_ = codec; }
  int length() const { return cache_.length(); }
  int64_t raw_bytes() const { return raw_bytes_; }    // payload bytes before zstd
  int64_t wire_bytes() const { return wire_bytes_; }  // payload bytes sent

 private:
  SplitRunner(const model::Model& target, int k, model::KvCache cache, const codec::CodecSpec& codec,
              int threads);
  absl::Status Encode(const model::ForwardResult& states, v1::HiddenStates* out);

  const model::Model& target_;
  int k_;
  codec::CodecSpec codec_;
  model::ThreadPool pool_;
  model::Engine engine_;
  model::KvCache cache_;
  model::ForwardResult out_;
  model::ForwardResult step_;  // DraftRound: one position's early-exit result
  int round_base_ = -1;  // cache length before the pending round; -1: no round pending
  std::vector<int32_t> round_tokens_, round_parents_;
  int64_t raw_bytes_ = 0, wire_bytes_ = 0;
};

// The protocol's codec enum for a codec kind.
v1::Codec ToProtoCodec(codec::CodecKind kind);

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_SPLIT_RUNNER_H_
