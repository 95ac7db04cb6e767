// The verifier's gRPC service: one bidirectional stream per generation session, plus GetInfo.
// Reactors (gRPC callback API) only parse, validate and post work: every forward pass runs on the
// EngineWorker's thread, which owns the Engine. Each session holds its own target KV cache (a
// TargetVerifier), freed when the stream ends for any reason: the edge closing, an error, the
// client cancelling or its deadline passing, or the session going idle for `idle_ttl_s`.
//
// Modes: MODE_SPEC (the edge sends draft rounds, the verifier answers each with a Verdict) and
// MODE_CLOUD (after the prompt the verifier decodes alone, one engine task per token so sessions
// interleave, and streams CloudTokens until done, a Close from the edge, or cancellation).
//
// Calls are authenticated when a TokenAuthenticator is given (metadata `authorization: Bearer
// <token>`), else every call is tenant "default". Sessions count against the global limit and
// their tenant's quota.
//
// Thread-safety: the service is shared by gRPC threads, the engine worker and the idle sweeper.
// A session is touched by its reactor's callbacks, the sweeper and, one task at a time, the engine
// worker; its own mutex orders them. A session never calls Finish while an engine task of its own
// is queued or running (a Finish wanted meanwhile is deferred until the task returns), so the
// reactor outlives every task that refers to it. The sweeper reaches sessions only through a
// registry that OnDone leaves before deleting the reactor.
#ifndef TANDEM_CLOUD_VERIFIER_SERVICE_H_
#define TANDEM_CLOUD_VERIFIER_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "cloud/cost_model.h"
#include "cloud/engine_worker.h"
#include "cloud/verifier_metrics.h"
#include "common/model/engine.h"
#include "common/model/model.h"
#include "common/net/auth.h"
#include "tandem/v1/verifier.grpc.pb.h"

namespace tandem::cloud {

struct VerifierLimits {
  int max_sessions = 64;              // concurrent sessions
  int max_sessions_per_tenant = 64;   // concurrent sessions of one tenant (default quota)
  int max_tokens_per_session = 4096;  // context positions per session (capped by the model)
  int max_draft_tokens = 16;          // drafts per chain round
  int max_tree_nodes = 64;            // nodes per tree round
  int max_message_bytes = 4 << 20;    // largest accepted message from an edge
  double idle_ttl_s = 60.0;           // a session without progress this long is ended
  // KV cache memory for all sessions together; 0: max_sessions full-context sessions, at most
  // half the machine's memory. A session reserves its cache when its prompt arrives: the context
  // it can reach (its prompt, max_new_tokens when the edge gives it, and one round), else
  // max_tokens_per_session; RESOURCE_EXHAUSTED (reason kv_budget) when that does not fit.
  uint64_t kv_budget_bytes = 0;
  // New sessions are refused (RESOURCE_EXHAUSTED, reason overloaded) while the engine queue's
  // smoothed wait is above this; 0: off.
  double max_queue_delay_s = 2.0;
  std::map<std::string, int> tenant_max_sessions;  // per-tenant quota overrides; 0 = disabled

  int QuotaFor(const std::string& tenant) const {
    auto it = tenant_max_sessions.find(tenant);
    return it == tenant_max_sessions.end() ? max_sessions_per_tenant : it->second;
  }
};

class SessionReactor;

class VerifierService final : public v1::Verifier::CallbackService {
 public:
  // `model` and `worker` must outlive the service. `model_name` is what GetInfo reports and
  // sessions name. `auth` null: authentication off (tenant "default").
  VerifierService(const model::Model& model, std::string model_name, EngineWorker* worker,
                  const VerifierLimits& limits,
                  std::shared_ptr<const net::TokenAuthenticator> auth = nullptr);
  // REQUIRES: the gRPC server serving this service has been shut down.
  ~VerifierService() override;

  grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage>* Session(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::ServerInfo* response) override;

  // Refuses new sessions (UNAVAILABLE); running ones go on. tandem_serving drops to 0.
  void StartDrain() {
    draining_ = true;
    metrics_.SetServing(false);
  }
  // The drain's hand-back (call after StartDrain, once the load balancer has stopped sending new
  // sessions here): every running session ends at its next safe point with UNAVAILABLE
  // net::kHandBackMessage, counted as outcome handed_back; edges resume on another replica by
  // replaying their prefix. Returns how many sessions were asked to end. Any thread.
  int HandBackSessions();

  int active_sessions() const { return active_sessions_.load(); }
  int tenant_sessions(const std::string& tenant) const;
  int64_t verify_passes() const { return verify_passes_.load(); }
  int64_t draft_tokens() const { return draft_tokens_.load(); }
  int64_t accepted_tokens() const { return accepted_tokens_.load(); }

  const model::Model& model() const { return model_; }
  const std::string& model_name() const { return model_name_; }
  const VerifierLimits& limits() const { return limits_; }
  EngineWorker* worker() const { return worker_; }
  VerifierMetrics& metrics() { return metrics_; }
  PassCostModel& cost_model() { return *cost_model_; }
  // What the gRPC server should accept at the transport (ServerBuilder::SetMaxReceiveMessageSize):
  // above max_message_bytes, so that messages just over the limit reach the session and are
  // refused (and counted) with a clear message; far larger ones are refused by gRPC itself.
  int transport_max_message_bytes() const;
  void FillModelInfo(v1::ModelInfo* info) const;
  void FillLimits(v1::Limits* limits) const;

  // Used by sessions.
  // The caller's tenant, or UNAUTHENTICATED / PERMISSION_DENIED (counted as rejections).
  absl::StatusOr<std::string> Authenticate(const grpc::CallbackServerContext& context);
  // Takes a session slot for `tenant`: RESOURCE_EXHAUSTED at the global limit or the tenant's
  // quota, UNAVAILABLE when draining (counted).
  grpc::Status AdmitSession(const std::string& tenant);
  // Reserves KV cache bytes for a session against the budget: RESOURCE_EXHAUSTED (counted as
  // kv_budget) when they do not fit. ReleaseKv gives them back.
  grpc::Status ReserveKv(uint64_t bytes);
  void ReleaseKv(uint64_t bytes);
  uint64_t kv_budget_bytes() const { return kv_budget_; }
  uint64_t kv_reserved_bytes() const { return kv_reserved_.load(); }
  void ReleaseSession(const std::string& tenant, Outcome outcome);
  void CountRound(int drafts, int accepted) {
    verify_passes_++;
    draft_tokens_ += drafts;
    accepted_tokens_ += accepted;
  }
  uint64_t NextSessionId() { return next_session_id_++; }
  void Register(SessionReactor* session);
  void Unregister(SessionReactor* session);

 private:
  void SweepLoop();

  const model::Model& model_;
  std::string model_name_;
  EngineWorker* worker_;
  VerifierLimits limits_;
  std::shared_ptr<const net::TokenAuthenticator> auth_;
  VerifierMetrics metrics_;
  // Shared with the start-up calibration task, which may outlive the service.
  std::shared_ptr<PassCostModel> cost_model_ = std::make_shared<PassCostModel>();
  std::atomic<bool> draining_{false};
  std::atomic<int> active_sessions_{0};
  std::atomic<int64_t> verify_passes_{0}, draft_tokens_{0}, accepted_tokens_{0};
  std::atomic<uint64_t> next_session_id_{1};
  uint64_t kv_budget_ = 0;  // resolved from limits_.kv_budget_bytes
  std::atomic<uint64_t> kv_reserved_{0};

  mutable std::mutex admit_mu_;
  std::map<std::string, int> tenant_active_;  // GUARDED_BY(admit_mu_)

  // Live sessions, for the idle sweeper. A session leaves in OnDone before it is deleted.
  std::mutex registry_mu_;
  std::set<SessionReactor*> sessions_;  // GUARDED_BY(registry_mu_)
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stop_sweeper_ = false;  // GUARDED_BY(sweep_mu_)
  std::thread sweeper_;
};

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_VERIFIER_SERVICE_H_
