// The verifier's Prometheus metrics (names follow vLLM's where one exists). Every series with a
// label is created up front or from a bounded set (positions below the draft/tree limits, the
// outcomes and reasons listed here, tenants named in the tokens file), so the label cardinality
// is bounded by the configuration, never by clients.
//
//   tandem_spec_decode_num_draft_tokens_total                 draft tokens received
//   tandem_spec_decode_num_accepted_tokens_total              draft tokens accepted
//   tandem_spec_decode_num_accepted_tokens_per_pos_total{position}  accepted at draft position i
//                                                             (tree: depth i of the accepted path;
//                                                             positions below max(max_draft_tokens,
//                                                             max_tree_nodes), at most 256)
//   tandem_verify_passes_total                                target passes (verify rounds)
//   tandem_verify_duration_seconds                            engine time per verify pass
//   tandem_verify_batch_tokens                                positions per pass (drafts + context + 1)
//   tandem_queue_wait_seconds                                 engine-queue wait per task
//   tandem_engine_passes_total                                forward passes of the engine worker
//                                                             (batched: one per batch)
//   tandem_engine_batch_sessions                              sessions per forward pass
//   tandem_engine_batch_tokens                                positions per forward pass
//   tandem_kv_budget_bytes / tandem_kv_reserved_bytes         KV cache budget and its reserved part
//   tandem_bytes_total{direction=up|down, kind=prompt|draft|verdict|tokens|control}
//   tandem_sessions_active                                    open sessions
//   tandem_tenant_sessions_active{tenant}                     open sessions per tenant
//   tandem_sessions_total{outcome=ok|cancelled|error|idle_timeout|deadline|handed_back}
//                                                             (handed_back: ended by a drain so
//                                                             that the edge resumes elsewhere)
//   tandem_rejections_total{reason}                           refused requests/messages by reason
//   tandem_time_to_first_token_seconds                        cloud mode: prompt in -> first token out
//   tandem_time_per_output_token_seconds                      cloud mode: between tokens
//   tandem_generated_tokens_total{mode=spec|cloud}            tokens committed by the verifier
//   tandem_context_tokens_total                               uncertain policy: tokens the edge
//                                                             committed without a verdict, received
//                                                             as context (never verified; not in
//                                                             tandem_spec_decode_*)
//   tandem_serving                                            1 while new sessions are taken, 0
//                                                             once draining; also alone in
//                                                             health_registry(), which the binary
//                                                             serves at /healthz for load
//                                                             balancers' checks
// Thread-safety: all methods may be called from any thread.
#ifndef TANDEM_CLOUD_VERIFIER_METRICS_H_
#define TANDEM_CLOUD_VERIFIER_METRICS_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/obs/metrics.h"

namespace tandem::cloud {

enum class Direction { kUp = 0, kDown = 1 };
enum class MsgKind { kPrompt = 0, kDraft, kVerdict, kTokens, kControl, kCount };
enum class Outcome { kOk = 0, kCancelled, kError, kIdleTimeout, kDeadline, kHandedBack, kCount };
const char* OutcomeName(Outcome o);

// Every reason label of tandem_rejections_total (each series exists from the start, at 0).
inline constexpr const char* kRejectionReasons[] = {
    "unauthenticated", "permission_denied", "quota",         "session_limit", "draining",
    "bad_token",       "empty_prompt",      "draft_too_long", "tree_too_large", "bad_tree",
    "out_of_order",    "unknown_model",     "message_too_large", "bad_probs",  "bad_sampling",
    "unsupported_mode", "bad_message",      "committed_mismatch", "context_full", "bad_split_layer",
    "bad_hidden",      "bad_context",       "kv_budget",     "overloaded"};

class VerifierMetrics {
 public:
  // `max_positions`: per-position series are kept for draft positions [0, max_positions).
  // `tenants`: the tenants that get a tandem_tenant_sessions_active series ("default" always
  // does; sessions of other tenants are counted only in the totals).
  VerifierMetrics(int max_positions, const std::vector<std::string>& tenants);

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  // tandem_serving alone: a page small enough for a load balancer to check often.
  const std::shared_ptr<prometheus::Registry>& health_registry() const { return health_registry_; }
  void SetServing(bool serving) { serving_->Set(serving ? 1 : 0); }

  // One verify pass (spec mode): `drafts` received, `accepted` of them accepted (draft positions
  // 0 .. accepted-1 along the accepted path), engine seconds and positions in the pass. Cloud-mode
  // decoding steps are not verify passes; they show in the TTFT/TPOT histograms.
  void CountVerify(int drafts, int accepted, double engine_seconds, int batch_tokens);
  void ObserveQueueWait(double seconds) { queue_wait_->Observe(seconds); }
  // One forward pass of the engine worker with `sessions` sessions' `tokens` positions.
  void ObserveBatch(int sessions, int tokens);
  void SetKvBudget(uint64_t bytes) { kv_budget_->Set(static_cast<double>(bytes)); }
  void SetKvReserved(uint64_t bytes) { kv_reserved_->Set(static_cast<double>(bytes)); }
  void CountBytes(Direction d, MsgKind k, size_t bytes);
  void CountGenerated(bool cloud, int tokens) { (cloud ? gen_cloud_ : gen_spec_)->Increment(tokens); }
  void CountContext(int tokens) { context_tokens_->Increment(tokens); }
  void ObserveTimeToFirstToken(double s) { ttft_->Observe(s); }
  void ObserveTimePerOutputToken(double s) { tpot_->Observe(s); }
  void SessionStarted(const std::string& tenant);
  void SessionEnded(const std::string& tenant, Outcome outcome);
  // `reason` should be one of kRejectionReasons; others are counted under "other".
  void CountRejection(const std::string& reason);

 private:
  prometheus::Gauge* TenantGauge(const std::string& tenant);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter *draft_tokens_, *accepted_tokens_, *verify_passes_, *gen_spec_, *gen_cloud_;
  prometheus::Counter* context_tokens_;
  std::vector<prometheus::Counter*> per_pos_;
  prometheus::Histogram *verify_duration_, *batch_tokens_, *queue_wait_, *ttft_, *tpot_;
  prometheus::Counter* engine_passes_;
  prometheus::Histogram *engine_batch_sessions_, *engine_batch_tokens_;
  prometheus::Gauge *kv_budget_, *kv_reserved_;
  prometheus::Counter* bytes_[2][static_cast<int>(MsgKind::kCount)];
  prometheus::Gauge* sessions_active_;
  std::map<std::string, prometheus::Gauge*> tenant_active_;  // fixed after construction
  prometheus::Counter* sessions_total_[static_cast<int>(Outcome::kCount)];
  std::map<std::string, prometheus::Counter*> rejections_;  // fixed after construction
  std::shared_ptr<prometheus::Registry> health_registry_;
  prometheus::Gauge* serving_;
};

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_VERIFIER_METRICS_H_
