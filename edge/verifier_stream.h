// One Verifier.Session stream as the edge uses it: open, send the committed prefix as the prompt,
// then exchange messages, each reply awaited for at most a given time (a verifier that stops
// answering counts as gone, like one that closed the connection). Every call carries the bearer
// token and the affinity key. Failures come back as the call's gRPC status, converted; a reply that did not come in
// time is DEADLINE_EXCEEDED. Internal to the edge library.
// Thread-safety: one thread drives a stream; a helper thread only cancels overdue calls.
#ifndef TANDEM_EDGE_VERIFIER_STREAM_H_
#define TANDEM_EDGE_VERIFIER_STREAM_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "tandem/v1/verifier.grpc.pb.h"

namespace tandem::edge {

// The metadata key of EdgeOptions::affinity_key (what deploy/haproxy/tandem.cfg sticks on).
inline constexpr char kAffinityMetadata[] = "x-tandem-affinity";

// Cancels a call whose reply is overdue. Arm before a blocking read, Disarm after.
class ReplyWatchdog {
 public:
  ReplyWatchdog();
  ~ReplyWatchdog();
  void Arm(grpc::ClientContext* context, double seconds);
  // Returns true when the armed call was cancelled for being late.
  bool Disarm();

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  grpc::ClientContext* context_ = nullptr;  // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point deadline_;
  bool fired_ = false;
  bool stop_ = false;
  std::thread thread_;
};

struct StreamCounters {
  int64_t bytes_up = 0;
  int64_t bytes_down = 0;
};

class VerifierStream {
 public:
  // `write_timeout_s`: the longest a write may block (a verifier that stopped reading).
  // `affinity_key`: sent as metadata "x-tandem-affinity" (load balancers' session affinity)
  // unless empty.
  VerifierStream(v1::Verifier::Stub* stub, const std::string& auth_token,
                 const std::string& affinity_key, double write_timeout_s, ReplyWatchdog* watchdog,
                 StreamCounters* counters);
  ~VerifierStream();  // cancels the call if it was not closed

  // Sends `open` and `prompt` together, then waits up to `timeout_s` for SessionOpened.
  // With `hidden` (split mode) the prompt message carries those states instead of the ids.
  absl::Status Open(const v1::OpenSession& open, std::span<const int32_t> prompt, double timeout_s,
                    v1::SessionOpened* opened, const v1::HiddenStates* hidden = nullptr);
  absl::Status Send(const v1::EdgeMessage& message);
  // Waits up to `timeout_s` for the next message.
  absl::Status Receive(double timeout_s, v1::VerifierMessage* message);
  // Sends Close and ends the call; the status of the call (OK after a clean close).
  absl::Status Close(double timeout_s);
  // Sends Close without waiting for the verifier to end the call (Close later collects it): for a
  // session left for another one, or ended, while the edge goes on. Afterwards the stream no
  // longer touches `counters`.
  void BeginClose();

 private:
  // The call's final status after a failed read or write.
  absl::Status Failure(const char* during);
  // DEADLINE_EXCEEDED when the watchdog cancelled the call, else `failure`.
  absl::Status Late(bool late, absl::Status failure, double timeout_s = 0);

  v1::Verifier::Stub* stub_;
  std::string auth_token_;
  ReplyWatchdog* watchdog_;
  StreamCounters* counters_;
  grpc::ClientContext context_;  // declared before stream_, which it outlives
  std::unique_ptr<grpc::ClientReaderWriter<v1::EdgeMessage, v1::VerifierMessage>> stream_;
  bool finished_ = false;
  bool closing_ = false;  // Close sent
  double timeout_s_;  // for writes
};

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_VERIFIER_STREAM_H_
