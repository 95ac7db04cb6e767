// The edge side of Tandem as a library (phone apps embed it; tandem-edge is a thin CLI on top).
// An EdgeGenerator drafts with a local drafter and has the cloud verifier accept or correct the
// drafts over one gRPC session stream (spec mode), or decodes with the local model alone (local
// mode). Output in spec mode is exactly the target's (greedy) or distributed as the target's.
// Thread-safety: one Generate call at a time per generator.
#ifndef TANDEM_EDGE_EDGE_GENERATOR_H_
#define TANDEM_EDGE_EDGE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/model/model.h"
#include "common/model/sampler.h"
#include "common/spec/drafter.h"
#include "tandem/v1/verifier.grpc.pb.h"

namespace tandem::edge {

enum class EdgeMode { kSpec, kLocal };

struct EdgeOptions {
  EdgeMode mode = EdgeMode::kSpec;
  int spec_tokens = 4;             // drafts per round
  model::SamplerOptions sampler;   // greedy by default
  std::string model_name;          // the verifier's model; empty = its default
  double rpc_timeout_s = 30;       // deadline of the whole session stream
};

struct EdgeStats {
  int64_t generated_tokens = 0;
  int64_t round_trips = 0;
  int64_t bytes_up = 0;
  int64_t bytes_down = 0;
  int64_t draft_tokens = 0;
  int64_t accepted_tokens = 0;
  int64_t tokens_verified = 0;        // committed from verdicts
  int64_t tokens_local_fallback = 0;  // produced by the local model alone
  double rtt_seconds = 0;             // round wall time minus the verifier's compute time, summed
  double cloud_compute_seconds = 0;
  double draft_seconds = 0;
};

class EdgeGenerator {
 public:
  // `local` is the edge's model (the fallback in local mode); `drafter` proposes drafts in spec
  // mode (may be null: no drafts, one token per round). `channel` is null in local mode.
  EdgeGenerator(const model::Model& local, spec::Drafter* drafter,
                std::shared_ptr<grpc::Channel> channel, const EdgeOptions& options);

  // Generates up to `max_new_tokens` after `prompt` (BOS first), stopping before BOS/EOS;
  // `emit(prev, token)` for each committed token. Network and verifier errors come back as
  // their gRPC status, converted (UNAVAILABLE, UNAUTHENTICATED, ...).
  absl::Status Generate(std::span<const int32_t> prompt, int max_new_tokens,
                        const std::function<void(int32_t, int32_t)>& emit, EdgeStats* stats);

 private:
  absl::Status GenerateSpec(std::span<const int32_t> prompt, int max_new_tokens,
                            const std::function<void(int32_t, int32_t)>& emit, EdgeStats* stats);
  absl::Status GenerateLocal(std::span<const int32_t> prompt, int max_new_tokens,
                             const std::function<void(int32_t, int32_t)>& emit, EdgeStats* stats);

  const model::Model& local_;
  spec::Drafter* drafter_;
  std::shared_ptr<grpc::Channel> channel_;
  EdgeOptions options_;
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_EDGE_GENERATOR_H_
