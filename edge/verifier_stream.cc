// A verifier session stream with reply deadlines (see verifier_stream.h).
#include "edge/verifier_stream.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/net/status.h"

namespace tandem::edge {

ReplyWatchdog::ReplyWatchdog() : thread_([this] { Loop(); }) {}

ReplyWatchdog::~ReplyWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ReplyWatchdog::Arm(grpc::ClientContext* context, double seconds) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    context_ = context;
    fired_ = false;
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::microseconds(static_cast<int64_t>(std::max(0.0, seconds) * 1e6));
  }
  cv_.notify_all();
}

bool ReplyWatchdog::Disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = nullptr;
  return fired_;
}

void ReplyWatchdog::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (context_ == nullptr) {
      cv_.wait(lock);
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline_) {
      context_->TryCancel();
      context_ = nullptr;
      fired_ = true;
      continue;
    }
    cv_.wait_until(lock, deadline_);
  }
}

VerifierStream::VerifierStream(v1::Verifier::Stub* stub, const std::string& auth_token,
                               const std::string& affinity_key, double write_timeout_s,
                               ReplyWatchdog* watchdog, StreamCounters* counters)
    : stub_(stub),
      auth_token_(auth_token),
      watchdog_(watchdog),
      counters_(counters),
      timeout_s_(write_timeout_s) {
  if (!auth_token_.empty()) context_.AddMetadata("authorization", "Bearer " + auth_token_);
  if (!affinity_key.empty()) context_.AddMetadata(kAffinityMetadata, affinity_key);
}

VerifierStream::~VerifierStream() {
  if (stream_ != nullptr && !finished_) {
    context_.TryCancel();
    stream_->Finish();
  }
}

absl::Status VerifierStream::Failure(const char* during) {
  // The call is over (a read or write failed, or was cancelled): its status is there, or soon.
  watchdog_->Arm(&context_, 5.0);
  grpc::Status s = stream_->Finish();
  finished_ = true;
  watchdog_->Disarm();
  if (s.ok()) {
    return absl::UnavailableError(absl::StrCat("the verifier ended the session during ", during));
  }
  return net::FromGrpcStatus(s);
}

absl::Status VerifierStream::Open(const v1::OpenSession& open, std::span<const int32_t> prompt,
                                  double timeout_s, v1::SessionOpened* opened,
                                  const v1::HiddenStates* hidden) {
  stream_ = stub_->Session(&context_);
  // The prompt follows the open at once (one round trip, not two); a verifier that refuses the
  // session ignores it.
  v1::EdgeMessage out;
  *out.mutable_open() = open;
  if (absl::Status s = Send(out); !s.ok()) return s;
  out.Clear();
  if (hidden != nullptr) {
    *out.mutable_prompt()->mutable_hidden() = *hidden;
  } else {
    out.mutable_prompt()->mutable_token_ids()->Add(prompt.begin(), prompt.end());
  }
  if (absl::Status s = Send(out); !s.ok()) return s;
  v1::VerifierMessage in;
  if (absl::Status s = Receive(timeout_s, &in); !s.ok()) return s;
  if (in.kind_case() != v1::VerifierMessage::kOpened) {
    return absl::DataLossError("the verifier answered the session open with something else");
  }
  *opened = in.opened();
  return absl::OkStatus();
}

absl::Status VerifierStream::Send(const v1::EdgeMessage& message) {
  counters_->bytes_up += static_cast<int64_t>(message.ByteSizeLong());
  // A write blocks only on flow control (a verifier that stopped reading).
  watchdog_->Arm(&context_, timeout_s_);
  const bool ok = stream_->Write(message);
  const bool late = watchdog_->Disarm();
  if (!ok || late) return Late(late, Failure("a write"));
  return absl::OkStatus();
}

absl::Status VerifierStream::Receive(double timeout_s, v1::VerifierMessage* message) {
  watchdog_->Arm(&context_, timeout_s);
  const bool ok = stream_->Read(message);
  const bool late = watchdog_->Disarm();
  if (!ok || late) return Late(late, Failure("a read"), timeout_s);
  counters_->bytes_down += static_cast<int64_t>(message->ByteSizeLong());
  return absl::OkStatus();
}

absl::Status VerifierStream::Late(bool late, absl::Status failure, double timeout_s) {
  if (!late) return failure;
  return absl::DeadlineExceededError(absl::StrFormat(
      "no reply from the verifier within %.1f s (call cancelled: %s)",
      timeout_s > 0 ? timeout_s : timeout_s_, failure.message()));
}

void VerifierStream::BeginClose() {
  if (stream_ == nullptr || finished_ || closing_) return;
  v1::EdgeMessage out;
  out.mutable_close();
  counters_->bytes_up += static_cast<int64_t>(out.ByteSizeLong());
  stream_->Write(out);
  stream_->WritesDone();
  closing_ = true;
}

absl::Status VerifierStream::Close(double timeout_s) {
  if (stream_ == nullptr || finished_) return absl::OkStatus();
  BeginClose();
  watchdog_->Arm(&context_, timeout_s);
  grpc::Status s = stream_->Finish();
  finished_ = true;
  watchdog_->Disarm();
  return net::FromGrpcStatus(s);
}

}  // namespace tandem::edge
