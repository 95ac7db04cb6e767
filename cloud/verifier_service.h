// The verifier's gRPC service: one bidirectional stream per generation session (spec mode), plus
// GetInfo. Reactors (gRPC callback API) only parse, validate and post work: every forward pass
// runs on the EngineWorker's thread, which owns the Engine. Each session holds its own target KV
// cache (a TargetVerifier), freed when the stream ends for any reason.
// Thread-safety: the service is shared by gRPC threads; sessions are touched by their reactor and,
// one task at a time, by the engine worker (never both at once: a reactor posts at most one task
// and waits for it before reading again).
#ifndef TANDEM_CLOUD_VERIFIER_SERVICE_H_
#define TANDEM_CLOUD_VERIFIER_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/model/engine.h"
#include "common/model/model.h"
#include "tandem/v1/verifier.grpc.pb.h"

namespace tandem::cloud {

struct VerifierLimits {
  int max_sessions = 64;             // concurrent sessions
  int max_tokens_per_session = 4096;  // context positions per session (capped by the model)
  int max_draft_tokens = 16;         // drafts per chain round
  int max_tree_nodes = 64;           // nodes per tree round
  int max_message_bytes = 4 << 20;   // largest accepted message
};

// Runs tasks that need the model, in order, on one thread that owns the Engine.
class EngineWorker {
 public:
  EngineWorker(const model::Model& model, int threads);
  ~EngineWorker();  // finishes queued tasks, then joins
  void Post(std::function<void(model::Engine&)> task);

 private:
  void Loop();
  model::ThreadPool pool_;
  model::Engine engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void(model::Engine&)>> tasks_;  // GUARDED_BY(mu_)
  bool stop_ = false;                                       // GUARDED_BY(mu_)
  std::thread thread_;
};

class VerifierService final : public v1::Verifier::CallbackService {
 public:
  // `model` must outlive the service. `model_name` is what GetInfo reports and sessions name.
  VerifierService(const model::Model& model, std::string model_name, EngineWorker* worker,
                  const VerifierLimits& limits);

  grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage>* Session(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::ServerInfo* response) override;

  int active_sessions() const { return active_sessions_.load(); }
  int64_t verify_passes() const { return verify_passes_.load(); }
  int64_t draft_tokens() const { return draft_tokens_.load(); }
  int64_t accepted_tokens() const { return accepted_tokens_.load(); }

  const model::Model& model() const { return model_; }
  const std::string& model_name() const { return model_name_; }
  const VerifierLimits& limits() const { return limits_; }
  EngineWorker* worker() const { return worker_; }
  void FillModelInfo(v1::ModelInfo* info) const;
  void FillLimits(v1::Limits* limits) const;

  // Used by sessions.
  bool TryAddSession();
  void RemoveSession() { active_sessions_--; }
  void CountRound(int drafts, int accepted) {
    verify_passes_++;
    draft_tokens_ += drafts;
    accepted_tokens_ += accepted;
  }
  uint64_t NextSessionId() { return next_session_id_++; }

 private:
  const model::Model& model_;
  std::string model_name_;
  EngineWorker* worker_;
  VerifierLimits limits_;
  std::atomic<int> active_sessions_{0};
  std::atomic<int64_t> verify_passes_{0}, draft_tokens_{0}, accepted_tokens_{0};
  std::atomic<uint64_t> next_session_id_{1};
};

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_VERIFIER_SERVICE_H_
