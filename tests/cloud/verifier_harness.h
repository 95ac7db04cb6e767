// A verifier served in-process over real gRPC on loopback, with its Prometheus endpoint on a free
// port, for the loopback tests of tests/cloud/. Also a scripted spec-mode client whose "draft" is
// the reference continuation with a wrong token planted every third round, so the number of
// accepted tokens at each draft position is known to the client exactly.
#ifndef TANDEM_TESTS_CLOUD_VERIFIER_HARNESS_H_
#define TANDEM_TESTS_CLOUD_VERIFIER_HARNESS_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "cloud/verifier_service.h"
#include "common/net/auth.h"
#include "common/obs/metrics.h"
#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/test_util.h"

namespace tandem::testing {

// A test suite that loads the target, stories260K.bin, once for all its tests.
class Stories260KTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = ModelPath("stories260K.bin");
    target_ = std::move(*model::Model::Load(o)).release();
  }
  static void TearDownTestSuite() {
    delete target_;
    target_ = nullptr;
  }
  static inline model::Model* target_ = nullptr;
};

// Polls `cond` every 10 ms until it holds or `timeout_s` passes; returns whether it held.
inline bool WaitFor(const std::function<bool()>& cond, double timeout_s = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class VerifierHarness {
 public:
  VerifierHarness(const model::Model& model, const cloud::VerifierLimits& limits,
                  std::shared_ptr<const net::TokenAuthenticator> auth = nullptr) {
    worker_ = std::make_unique<cloud::EngineWorker>(model, 1);
    service_ = std::make_unique<cloud::VerifierService>(model, "stories260K", worker_.get(), limits,
                                                        std::move(auth));
    static int next_path = 0;
    path_ = absl::StrCat("/metrics/", next_path++);
    if (SharedEndpoint() != nullptr) SharedEndpoint()->Register(service_->metrics().registry(), path_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(service_->transport_max_message_bytes());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
  }
  ~VerifierHarness() {
    server_->Shutdown();
    server_.reset();
    if (SharedEndpoint() != nullptr) SharedEndpoint()->Unregister(service_->metrics().registry(), path_);
    service_.reset();
    worker_.reset();
  }

  std::unique_ptr<v1::Verifier::Stub> Stub() { return v1::Verifier::NewStub(channel_); }
  // Stops the gRPC server as tandem-verifier does on SIGTERM: the listener closes at once, running
  // calls get up to `grace_s`; returns when they have ended.
  void ShutdownServer(double grace_s) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)));
  }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  int port() const { return port_; }
  cloud::VerifierService& service() { return *service_; }
  cloud::EngineWorker& worker() { return *worker_; }
  int metrics_port() const { return SharedEndpoint() ? SharedEndpoint()->port() : 0; }
  const std::string& metrics_path() const { return path_; }

  // Scrapes this service's metrics over HTTP and parses them.
  std::map<std::string, double> Metrics() {
    HttpResponse r = HttpGet(metrics_port(), path_);
    EXPECT_EQ(r.status, 200) << r.headers;
    return ParsePrometheusText(r.body);
  }
  double Metric(const std::string& name, std::map<std::string, std::string> labels = {}) {
    auto m = Metrics();
    auto it = m.find(SeriesKey(name, labels));
    EXPECT_NE(it, m.end()) << "no series " << SeriesKey(name, labels);
    return it == m.end() ? -1 : it->second;
  }
  // Waits until every session is freed, both by the service's count and the exported gauge.
  bool WaitIdle() {
    return WaitFor([&] {
      return service_->active_sessions() == 0 && Metric("tandem_sessions_active") == 0;
    });
  }

 private:
  std::unique_ptr<cloud::EngineWorker> worker_;
  std::unique_ptr<cloud::VerifierService> service_;
  // One HTTP endpoint for the whole test program (civetweb takes ~2 s to stop); each harness
  // serves its own registry on its own path. Never destroyed.
  static obs::MetricsEndpoint* SharedEndpoint() {
    static obs::MetricsEndpoint* endpoint = [] {
      auto e = obs::MetricsEndpoint::Start("127.0.0.1:0");
      EXPECT_TRUE(e.ok()) << e.status();
      return e.ok() ? e->release() : nullptr;
    }();
    return endpoint;
  }
  std::string path_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  int port_ = 0;
};

// Occupies the engine worker with a task of the test until Release (or destruction), so that
// sessions' tasks queue behind it: the test can then act while a session's task is pending.
class EngineHold {
 public:
  explicit EngineHold(cloud::EngineWorker& worker) {
    std::shared_future<void> released = release_.get_future().share();
    worker.Post([holding = holding_, released](model::Engine&) {
      *holding = true;
      released.wait();
    });
    held_ = WaitFor([&] { return holding_->load(); });
  }
  ~EngineHold() { Release(); }
  bool held() const { return held_; }
  void Release() {
    if (!released_) release_.set_value();
    released_ = true;
  }

 private:
  std::shared_ptr<std::atomic<bool>> holding_ = std::make_shared<std::atomic<bool>>(false);
  std::promise<void> release_;
  bool held_ = false, released_ = false;
};

using Stream = grpc::ClientReaderWriter<v1::EdgeMessage, v1::VerifierMessage>;

inline v1::EdgeMessage OpenMsg(v1::Mode mode, uint32_t max_new_tokens = 0) {
  v1::EdgeMessage m;
  m.mutable_open()->set_mode(mode);
  m.mutable_open()->set_max_new_tokens(max_new_tokens);
  return m;
}
inline v1::EdgeMessage PromptMsg(const std::vector<int32_t>& ids) {
  v1::EdgeMessage m;
  m.mutable_prompt();
  for (int32_t t : ids) m.mutable_prompt()->add_token_ids(t);
  return m;
}
inline v1::EdgeMessage CloseMsg() {
  v1::EdgeMessage m;
  m.mutable_close();
  return m;
}

// What a scripted spec client saw.
struct SpecRun {
  std::vector<int32_t> generated;
  int rounds = 0, drafts = 0, accepted = 0, committed_growth = 0;
  std::vector<int> accepted_at;  // per draft position
  grpc::Status status;
};

// Greedy spec session whose drafts are `reference` (the target's own continuation of `prompt`)
// with the third draft token made wrong every third round. Stops after `n` tokens.
inline SpecRun RunScriptedSpec(v1::Verifier::Stub* stub, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& reference, int n, int gamma,
                               int vocab, grpc::ClientContext* ctx) {
  SpecRun run;
  run.accepted_at.assign(gamma, 0);
  auto stream = stub->Session(ctx);
  v1::VerifierMessage reply;
  if (!stream->Write(OpenMsg(v1::MODE_SPEC)) || !stream->Read(&reply) ||
      !stream->Write(PromptMsg(prompt))) {
    run.status = stream->Finish();
    return run;
  }
  std::vector<int32_t> committed = prompt;
  while (static_cast<int>(run.generated.size()) < n) {
    const size_t pos = run.generated.size();
    const int g = std::min<int>(gamma, static_cast<int>(reference.size() - pos) - 1);
    v1::EdgeMessage m;
    v1::DraftRound* d = m.mutable_draft();
    d->set_round(++run.rounds);
    d->set_committed_length(committed.size());
    std::vector<int32_t> draft(reference.begin() + pos, reference.begin() + pos + std::max(g, 0));
    if (run.rounds % 3 == 0 && draft.size() >= 3) draft[2] = (draft[2] + 7) % vocab;
    for (int32_t t : draft) d->add_token_ids(t);
    run.drafts += static_cast<int>(draft.size());
    if (!stream->Write(m) || !stream->Read(&reply)) break;
    const v1::Verdict& v = reply.verdict();
    run.accepted += v.accepted();
    for (uint32_t i = 0; i < v.accepted(); ++i) run.accepted_at[i]++;
    std::vector<int32_t> emitted(draft.begin(), draft.begin() + v.accepted());
    emitted.push_back(v.next_token());
    run.committed_growth += static_cast<int>(emitted.size());
    for (int32_t t : emitted) {
      committed.push_back(t);
      if (static_cast<int>(run.generated.size()) < n) run.generated.push_back(t);
    }
  }
  stream->WritesDone();
  run.status = stream->Finish();
  return run;
}

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_CLOUD_VERIFIER_HARNESS_H_
