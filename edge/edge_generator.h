// The edge side of Tandem as a library (phone apps embed it; tandem-edge is a thin CLI on top).
//
// An EdgeGenerator produces text for a prompt in one of four modes:
//   kSpec   the edge drafts (a chain, or a tree with `EdgeOptions::tree`) and the verifier accepts
//           or corrects the drafts over one gRPC session stream; output = the target's.
//   kCloud  the verifier decodes by itself and streams the tokens; output = the target's.
//   kSplit  as kSpec, but the edge also runs the target's first layers [0, k) and sends their
//           compressed states instead of the prompt's ids; exact with the f32 codec. Strict like
//           kSpec (retries within the deadline, never falls back).
//   kLocal  the edge's own model alone, no network.
//   kAuto   with EdgeOptions::scheduler: the scheduler picks spec (draft length), split (layer,
//           codec) or cloud every round from live measurements (see scheduler.h,
//           live_measurements.h); without it, kSpec. In both, while the verifier is reachable.
//           When it is not (at the start, or it goes away
//           mid-generation) the edge warns, continues with its local model, keeps trying to
//           reconnect with backoff between local tokens, and resumes kSpec by replaying the
//           accepted prefix (local tokens included).
// In kSpec and kCloud an outage (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, a broken stream) is
// retried with jittered exponential backoff for up to `retry_deadline_s`, resuming on the same or
// a restarted verifier with a new session whose prompt is the whole accepted prefix; after that
// Generate fails with the last error. It never falls back to local.
// A session that a draining verifier hands back (UNAVAILABLE net::kHandBackMessage) is resumed
// at once, in every mode, without backoff or local tokens: behind a load balancer the new
// session lands on another replica.
// In every mode, a refusal ends the generation at once with its status: UNAUTHENTICATED,
// PERMISSION_DENIED, TLS handshake/certificate failures, INVALID_ARGUMENT, FAILED_PRECONDITION
// (vocabulary mismatch), NOT_FOUND (unknown model), UNIMPLEMENTED. RESOURCE_EXHAUSTED (load) is
// retried like an outage; kAuto goes local meanwhile and says so.
// No token is ever emitted twice or skipped across reconnects and mode changes.
//
// Typical use:
//   auto channel = edge::MakeVerifierChannel("pop.example.net:443", {.ca_file = "ca.pem"});
//   edge::EdgeOptions o;                    // kAuto, greedy, 4 drafts per round
//   o.auth_token = *edge::ReadAuthTokenFile("token");
//   edge::EdgeGenerator gen(local_model, drafter.get(), *channel, o);
//   gen.Generate(prompt, 256, [&](int32_t prev, int32_t t) { ... }, &stats);
//
// Thread-safety: one Generate call at a time per generator.
#ifndef TANDEM_EDGE_EDGE_GENERATOR_H_
#define TANDEM_EDGE_EDGE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "common/codec/codec.h"
#include "common/model/model.h"
#include "common/model/sampler.h"
#include "common/spec/drafter.h"
#include "edge/connection.h"
#include "edge/edge_metrics.h"
#include "edge/live_measurements.h"
#include "edge/scheduler.h"
#include "edge/verifier_stream.h"

namespace tandem::edge {

enum class EdgeMode { kAuto, kSpec, kCloud, kLocal, kSplit };

// "auto", "spec", "cloud", "local", "split".
const char* EdgeModeName(EdgeMode mode);

// One round as seen by the edge (EdgeOptions::on_round).
struct RoundTrace {
  double t_s = 0;              // since Generate began
  RunConfig config;            // the configuration this round ran with
  int tokens = 0;              // tokens committed by the round
  int64_t bytes_up = 0, bytes_down = 0;  // of the round
  double est_rtt_s = 0, est_up_bps = 0, est_down_bps = 0;  // link estimates after the round
};

struct EdgeOptions {
  EdgeMode mode = EdgeMode::kAuto;
  int spec_tokens = 4;                // drafts per chain round (the most, when adaptive)
  bool adaptive_spec_tokens = false;  // pick the draft length each round from measured costs
  std::optional<spec::TreeShape> tree;  // draft trees of this shape instead of chains
  model::SamplerOptions sampler;        // greedy by default
  std::string model_name;               // the verifier's model; empty = its default
  std::string auth_token;               // sent as "authorization: Bearer <token>"; empty = none
  // Sent with every session (and GetInfo) as "x-tandem-affinity: <key>": a load balancer in
  // front of several verifiers (deploy/haproxy) sends the calls of one key to the same replica
  // while it is up. Empty = not sent.
  std::string affinity_key;
  // kSplit: the edge runs the target's layers [0, split_layer) with `local` (which must be the
  // target model) and sends the layer-k states, encoded with `codec`; the prompt's ids stay here.
  int split_layer = 0;
  codec::CodecSpec codec;
  // Split rounds (kSplit, and kAuto's): draft greedy chains by early exit on the edge's own
  // layer-k states (SplitRunner::DraftRound) instead of with `drafter`, so each draft's layers
  // [0, k) run once and are sent as they are. Greedy only (sampling uses `drafter`).
  bool split_self_draft = false;

  double reply_timeout_s = 30;   // longest wait for one verifier reply; longer = an outage
  // kAuto: the longest one connection attempt may take (it holds up local tokens meanwhile; a
  // refused connection fails at once, a silent network takes this long).
  double connect_timeout_s = 1;
  double retry_deadline_s = 10;  // kSpec/kCloud/kSplit: how long one outage is retried
  double backoff_initial_s = 0.05;
  double backoff_max_s = 1.0;
  // kAuto: also attempt a reconnection after this many local tokens, backoff or not (0: only
  // when the backoff expires).
  int reconnect_every_tokens = 0;
  // Warnings (fallback to local, resumption). Null: printed to stderr.
  std::function<void(const std::string&)> on_warning;

  // kAuto with a scheduler: every round, the scheduler picks the configuration (spec with a draft
  // length, split with a layer and codec, cloud; never local while the verifier is reachable
  // unless `allowed` has it) from the live measurements, with hysteresis; a change of mode or
  // split layer opens a new session that replays the committed prefix. Without it, kAuto is
  // spec with local fallback. kSplit with split_layer == 0 ("--split-layer auto") schedules the
  // split layer (and codec among `codecs`) the same way, split mode only.
  std::optional<SchedulerPolicy> scheduler;
  // The scheduler's prior for the acceptance of a draft position it has not measured yet
  // (optimistic, so that speculation gets tried where it could pay).
  double prior_acceptance = 0.9;
  // `uncertain` policy (lossy, opt-in; chains in kSpec/kAuto-spec): a draft whose draft
  // probability is at least this is committed without waiting for a verdict and reaches the
  // verifier later as context (DraftRound.context_ids). 0 = off (every token verified).
  double uncertain_threshold = 0;
  // Debug lines (one per scheduler change, with its reason). Null: dropped.
  std::function<void(const std::string&)> on_debug;
  // Updated after every round when set (serve its registry, or render it at the end).
  std::shared_ptr<EdgeMetrics> metrics;
  // Called after every round (spec/split verdict, cloud token batch) with what was decided and
  // measured; for benchmarks and timelines. Null: not called.
  std::function<void(const RoundTrace&)> on_round;
};


struct EdgeStats {
  int64_t generated_tokens = 0;
  int64_t tokens_verified = 0;        // committed from verdicts (spec)
  int64_t tokens_from_cloud = 0;      // streamed by the verifier (cloud)
  int64_t tokens_local_fallback = 0;  // produced by the local model alone (local, auto offline)
  int64_t round_trips = 0;            // spec: verdicts; cloud: sessions that streamed tokens
  int64_t target_passes = 0;          // target forward passes: spec rounds + cloud tokens
  int64_t sessions = 0;               // session streams opened
  int64_t reconnects = 0;             // sessions opened again after a failure
  int64_t fallbacks = 0;              // auto: switches from spec to local
  int64_t bytes_up = 0;    // protobuf payload bytes sent (gRPC/HTTP/2/TLS framing excluded)
  int64_t bytes_down = 0;  // and received
  int64_t draft_tokens = 0;
  int64_t accepted_tokens = 0;
  int64_t rtt_samples = 0;
  double rtt_seconds = 0;  // summed over samples: reply wall time minus the verifier's compute
  double cloud_compute_seconds = 0;
  double draft_seconds = 0;
  int64_t tokens_unverified = 0;    // uncertain policy: committed without a verdict
  int64_t config_changes = 0;       // scheduler: configuration changes (the first choice included)
  int64_t session_switches = 0;     // new sessions opened for a change of mode or split layer
  int64_t probes = 0;               // rounds padded as link probes (scheduled modes)
  std::string final_config;         // the configuration in use at the end ("spec g4", "cloud", ...)
  double MeanRttSeconds() const { return rtt_samples > 0 ? rtt_seconds / rtt_samples : 0.0; }
};

class EdgeGenerator {
 public:
  // `local` is the edge's model: kLocal decodes with it, kAuto falls back to it; it must share the
  // verifier's vocabulary. `drafter` proposes drafts in kSpec/kAuto (may be null: no drafts, one
  // token per round; trees need one). `channel` may be null only in kLocal and kAuto (then
  // kAuto is kLocal). All three must outlive the generator.
  EdgeGenerator(const model::Model& local, spec::Drafter* drafter,
                std::shared_ptr<grpc::Channel> channel, const EdgeOptions& options);
  ~EdgeGenerator();

  // Generates up to `max_new_tokens` after `prompt` (BOS first), stopping before BOS/EOS;
  // `emit(prev, token)` for each committed token, in order, once. On error the tokens emitted so
  // far stand; the status names the gRPC code (UNAVAILABLE, UNAUTHENTICATED, ...).
  // `stats` is added to.
  absl::Status Generate(std::span<const int32_t> prompt, int max_new_tokens,
                        const std::function<void(int32_t, int32_t)>& emit, EdgeStats* stats);

 private:
  class Run;  // one Generate call

  // Finishes the sessions left behind (closed without waiting for the verifier's answer).
  void CollectClosed(double timeout_s);

  const model::Model& local_;
  spec::Drafter* drafter_;
  std::shared_ptr<grpc::Channel> channel_;
  EdgeOptions options_;
  // Kept across Generate calls: what was learned about the link, the verifier and the drafts,
  // and the scheduler's current choice.
  std::unique_ptr<LiveMeasurements> live_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<v1::Verifier::Stub> stub_;
  std::unique_ptr<ReplyWatchdog> watchdog_;
  std::vector<std::unique_ptr<VerifierStream>> closing_;  // Close sent, call not yet finished
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_EDGE_GENERATOR_H_
