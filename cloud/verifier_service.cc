// Verifier sessions over gRPC (see verifier_service.h).
#include "cloud/verifier_service.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <optional>

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/codec/codec.h"
#include "common/net/status.h"
#include "common/spec/target_verifier.h"
#include "common/util/clock.h"
#include "common/util/status_macros.h"

namespace tandem::cloud {

namespace {

using C = grpc::StatusCode;

std::string CodeName(C code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

const char* ModeName(v1::Mode mode) {
  switch (mode) {
    case v1::MODE_SPEC: return "spec";
    case v1::MODE_CLOUD: return "cloud";
    case v1::MODE_SPLIT: return "split";
    default: return "-";
  }
}

MsgKind UpKind(const v1::EdgeMessage& m) {
  switch (m.kind_case()) {
    case v1::EdgeMessage::kPrompt: return MsgKind::kPrompt;
    case v1::EdgeMessage::kDraft: return MsgKind::kDraft;
    default: return MsgKind::kControl;
  }
}

MsgKind DownKind(const v1::VerifierMessage& m) {
  switch (m.kind_case()) {
    case v1::VerifierMessage::kVerdict: return MsgKind::kVerdict;
    case v1::VerifierMessage::kTokens: return MsgKind::kTokens;
    default: return MsgKind::kControl;
  }
}

}  // namespace

// One generation session: a state machine over the stream's messages. Every member below mu_ is
// guarded by it, except the engine-side state (verifier_ and the buffers a task reads), which only
// the one task in flight touches while task_in_flight_ is set, and the reactor otherwise.
class SessionReactor : public grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage> {
 public:
  SessionReactor(VerifierService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), started_(MonotonicSeconds()) {
    // No reaction runs before the constructor returns (gRPC binds the reactor afterwards).
    absl::StatusOr<std::string> tenant = service_->Authenticate(*context);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!tenant.ok()) {
        authenticated_ = false;
        finished_ = true;
        Finish(net::ToGrpcStatus(tenant.status()));
        return;
      }
      tenant_ = *tenant;
      last_activity_ = started_;
      ReadLocked();
    }
    service_->Register(this);
  }

  // The sweeper: ends the session when it made no progress for the idle TTL. Called with the
  // service's registry lock held, so the reactor cannot be deleted meanwhile.
  void CheckIdle(double now) {
    std::lock_guard<std::mutex> lock(mu_);
    const double ttl = service_->limits().idle_ttl_s;
    if (finished_ || task_in_flight_ || now - last_activity_ < ttl) return;
    FinishLocked(grpc::Status(C::DEADLINE_EXCEEDED,
                              absl::StrCat("session ", SessionName(), " idle for ", ttl,
                                           " s: ended by the verifier")),
                 Outcome::kIdleTimeout);
  }

  // A drain's hand-back: ends the session with UNAVAILABLE kHandBackMessage at its next safe
  // point (now, or once its engine task returns), so that the edge resumes on another replica.
  // A cloud session that has sent its last tokens is left to end by itself (OK). Called with the
  // service's registry lock held, like CheckIdle.
  void HandBack() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || sent_done_) return;
    FinishLocked(grpc::Status(C::UNAVAILABLE, net::kHandBackMessage), Outcome::kHandedBack);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    read_pending_ = false;
    last_activity_ = MonotonicSeconds();
    if (finished_) return;
    if (!ok) {
      if (context_->IsCancelled()) {  // the call broke (OnCancel runs too, or has run)
        cancel_outcome_ = CancelOutcome();
        FinishLocked(grpc::Status(C::CANCELLED, "the call was cancelled"), *cancel_outcome_);
        return;
      }
      // The edge closed its side. In cloud mode the edge may half-close right after the prompt
      // and keep reading the stream.
      if (mode_ == v1::MODE_CLOUD && state_ == State::kRounds) return;
      FinishLocked(grpc::Status::OK, Outcome::kOk);
      return;
    }
    const size_t bytes = in_.ByteSizeLong();
    bytes_up_ += bytes;
    service_->metrics().CountBytes(Direction::kUp, UpKind(in_), bytes);
    if (bytes > static_cast<size_t>(service_->limits().max_message_bytes)) {
      FinishLocked(Reject("message_too_large", C::RESOURCE_EXHAUSTED,
                          absl::StrCat("message of ", bytes, " bytes is over the limit of ",
                                       service_->limits().max_message_bytes, " bytes")),
                   Outcome::kError);
      return;
    }
    grpc::Status s = Handle();
    if (!s.ok()) FinishLocked(s, Outcome::kError);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_pending_ = false;
    last_activity_ = MonotonicSeconds();
    if (finished_) return;
    if (!ok) {
      FinishLocked(grpc::Status(C::CANCELLED, "the edge went away"), Outcome::kCancelled);
      return;
    }
    if (mode_ == v1::MODE_CLOUD && state_ == State::kRounds) {
      if (sent_done_) {
        FinishLocked(grpc::Status::OK, Outcome::kOk);
      } else {
        FlushTokensLocked();
      }
      return;
    }
    ReadLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_outcome_ = CancelOutcome();
    const bool deadline = *cancel_outcome_ == Outcome::kDeadline;
    FinishLocked(grpc::Status(deadline ? C::DEADLINE_EXCEEDED : C::CANCELLED,
                              deadline ? "the client's deadline passed" : "cancelled by the client"),
                 *cancel_outcome_);
  }

  void OnDone() override {
    if (authenticated_) service_->Unregister(this);
    {
      // Whoever called Finish last has released the lock before OnDone can run; taking it once
      // more orders their writes before the deletion.
      std::lock_guard<std::mutex> lock(mu_);
    }
    if (authenticated_) {
      Outcome outcome = outcome_;
      if (cancel_outcome_ && outcome == Outcome::kOk) outcome = *cancel_outcome_;
      if (admitted_) service_->ReleaseSession(tenant_, outcome);
      if (kv_bytes_ > 0) service_->ReleaseKv(kv_bytes_);
      spdlog::info(
          "session {} end: tenant={} mode={} outcome={} status={}{}{} rounds={} draft_tokens={} "
          "accepted={} context={} generated={} bytes_up={} bytes_down={} duration_s={:.3f}",
          SessionName(), tenant_, ModeName(mode_), admitted_ ? OutcomeName(outcome) : "refused",
          CodeName(status_.error_code()), status_.ok() ? "" : " message=", status_.error_message(),
          rounds_, draft_tokens_, accepted_, context_tokens_, generated_, bytes_up_, bytes_down_,
          MonotonicSeconds() - started_);
    }
    delete this;  // frees the session's KV cache
  }

 private:
  enum class State { kExpectOpen, kExpectPrompt, kRounds };

  std::string SessionName() const { return session_id_.empty() ? "-" : session_id_; }

  // Why a cancelled call ended. A client whose deadline expires cancels the call itself, and its
  // cancel can reach us before our copy of the deadline (taken when the call arrived, so a little
  // later) passes: a cancel within a second of the deadline counts as the deadline.
  Outcome CancelOutcome() const {
    const auto now = std::chrono::system_clock::now();
    return context_->deadline() <= now + std::chrono::seconds(1) ? Outcome::kDeadline
                                                                 : Outcome::kCancelled;
  }

  grpc::Status Reject(const char* reason, C code, const std::string& message) {
    service_->metrics().CountRejection(reason);
    return grpc::Status(code, message);
  }

  // --- stream operations; all with mu_ held --------------------------------------------------

  void ReadLocked() {
    read_pending_ = true;
    StartRead(&in_);
  }

  void WriteLocked() {
    const size_t bytes = out_.ByteSizeLong();
    bytes_down_ += bytes;
    service_->metrics().CountBytes(Direction::kDown, DownKind(out_), bytes);
    write_pending_ = true;
    StartWrite(&out_);
  }

  // Ends the stream once. While an engine task is in flight the Finish waits for it (the task
  // refers to this reactor, which OnDone would delete).
  void FinishLocked(const grpc::Status& status, Outcome outcome) {
    if (finished_) return;
    if (task_in_flight_) {
      if (!deferred_) deferred_.emplace(status, outcome);
      return;
    }
    finished_ = true;
    status_ = status;
    outcome_ = status.ok() ? Outcome::kOk : outcome;
    Finish(status);
  }

  // Runs one pass of this session on the engine worker, batched with other sessions' passes
  // when batching is on: `begin` (worker thread) fills the pass (see PassJob), `end` (worker
  // thread) takes its status and returns the session's; then, back under mu_, `then` (if all
  // succeeded and the stream is still wanted) or Finish with the error or the deferred status.
  void PostPassLocked(bool prefill, int rows,
                      std::function<absl::StatusOr<bool>(model::BatchItem*)> begin,
                      std::function<grpc::Status(const absl::Status&, const PassInfo&)> end,
                      std::function<void()> then) {
    task_in_flight_ = true;
    PassJob job;
    job.prefill = prefill;
    job.rows = rows;
    job.begin = std::move(begin);
    job.end = [this, end = std::move(end), then = std::move(then)](const absl::Status& pass,
                                                                    const PassInfo& info) {
      service_->metrics().ObserveQueueWait(info.started_at - info.queued_at);
      task_queued_at_ = info.queued_at;
      task_started_at_ = info.started_at;
      grpc::Status s = end(pass, info);
      std::lock_guard<std::mutex> lock(mu_);
      task_in_flight_ = false;
      last_activity_ = MonotonicSeconds();
      if (deferred_) {
        auto [status, outcome] = *deferred_;
        FinishLocked(status, outcome);
        return;
      }
      if (finished_) return;  // cannot happen: Finish waits for the task
      if (!s.ok()) {
        FinishLocked(s, Outcome::kError);
        return;
      }
      then();
    };
    service_->worker()->PostPass(std::move(job));
  }

  // Runs the session's pending prompt positions through the target, a chunk per pass (so a long
  // prompt shares the engine with other sessions' rounds), then `then`.
  void PostPrefillLocked(std::function<void()> then) {
    const int chunk = std::max(1, service_->worker()->batching().prefill_chunk);
    PostPassLocked(
        /*prefill=*/true, std::min(chunk, verifier_->PendingPrefill()),
        [this, chunk](model::BatchItem* item) -> absl::StatusOr<bool> {
          return verifier_->BeginPrefill(chunk, item);
        },
        [this](const absl::Status& pass, const PassInfo&) {
          return net::ToGrpcStatus(verifier_->EndPrefill(pass));
        },
        [this, then = std::move(then)] {
          if (verifier_->PendingPrefill() > 0) {
            PostPrefillLocked(then);
          } else {
            then();
          }
        });
  }

  // The context positions a session needs for a prompt of `prompt_positions`: the rest of a
  // max_new_tokens budget when the edge gave one, plus one round of drafts, else the limit.
  int SessionCapacity(int prompt_positions) const {
    const VerifierLimits& l = service_->limits();
    const int limit = std::min(service_->model().config().max_seq_len, l.max_tokens_per_session);
    if (max_new_tokens_ == 0) return limit;
    const int64_t want = static_cast<int64_t>(prompt_positions) + max_new_tokens_ +
                         std::max(l.max_draft_tokens, l.max_tree_nodes) + 1;
    return static_cast<int>(std::min<int64_t>(limit, want));
  }

  // Reserves the KV cache of a session for `prompt_positions` and creates its verifier.
  grpc::Status CreateVerifier(int prompt_positions) {
    const int capacity = SessionCapacity(prompt_positions);
    if (prompt_positions >= capacity) {
      return Reject("context_full", C::RESOURCE_EXHAUSTED,
                    absl::StrCat("prompt of ", prompt_positions,
                                 " positions leaves no room in a session of ", capacity,
                                 " positions"));
    }
    const model::ModelConfig& c = service_->model().config();
    const uint64_t bytes = model::KvCache::BytesFor(c, c.n_layers - split_layer_, capacity);
    if (grpc::Status s = service_->ReserveKv(bytes); !s.ok()) return s;
    kv_bytes_ = bytes;
    auto verifier = spec::TargetVerifier::Create(service_->model(), capacity, sampling_, split_layer_);
    if (!verifier.ok()) return net::ToGrpcStatus(verifier.status());
    verifier_ = std::move(*verifier);
    return grpc::Status::OK;
  }

  // --- messages ---------------------------------------------------------------------------------

  grpc::Status Handle() {
    if (mode_ == v1::MODE_CLOUD && state_ == State::kRounds) {
      if (in_.kind_case() == v1::EdgeMessage::kClose) {
        FinishLocked(grpc::Status::OK, Outcome::kOk);
        return grpc::Status::OK;
      }
      return Reject("bad_message", C::FAILED_PRECONDITION,
                    "cloud mode: after the prompt the edge may only send Close");
    }
    switch (in_.kind_case()) {
      case v1::EdgeMessage::kOpen:
        return HandleOpen();
      case v1::EdgeMessage::kPrompt:
        return HandlePrompt();
      case v1::EdgeMessage::kDraft:
        return HandleDraft();
      case v1::EdgeMessage::kClose:
        FinishLocked(grpc::Status::OK, Outcome::kOk);
        return grpc::Status::OK;
      default:
        return Reject("bad_message", C::INVALID_ARGUMENT, "empty message");
    }
  }

  grpc::Status HandleOpen() {
    const double open_at = MonotonicSeconds();
    if (state_ != State::kExpectOpen) {
      return Reject("out_of_order", C::FAILED_PRECONDITION, "open: the session is already open");
    }
    const v1::OpenSession& open = in_.open();
    if (!open.model().empty() && open.model() != service_->model_name()) {
      return Reject("unknown_model", C::NOT_FOUND,
                    absl::StrCat("unknown model '", open.model(), "' (served: '",
                                 service_->model_name(), "')"));
    }
    if (open.mode() != v1::MODE_SPEC && open.mode() != v1::MODE_CLOUD &&
        open.mode() != v1::MODE_SPLIT) {
      return Reject("unsupported_mode", C::UNIMPLEMENTED,
                    absl::StrCat("mode ", v1::Mode_Name(open.mode()),
                                 " is not served (MODE_SPEC, MODE_CLOUD and MODE_SPLIT are)"));
    }
    const int n_layers = service_->model().config().n_layers;
    if (open.mode() == v1::MODE_SPLIT &&
        (open.split_layer() < 1 || static_cast<int>(open.split_layer()) >= n_layers)) {
      return Reject("bad_split_layer", C::INVALID_ARGUMENT,
                    absl::StrCat("split_layer ", open.split_layer(), " is outside [1, ", n_layers,
                                 ") for this ", n_layers, "-layer model"));
    }
    model::SamplerOptions sampling;
    sampling.temperature = open.sampling().temperature();
    sampling.top_k = open.sampling().top_k();
    sampling.top_p = open.sampling().top_p() == 0.0f ? 1.0f : open.sampling().top_p();
    sampling.seed = open.sampling().seed();
    if (absl::Status s = model::ValidateSamplerOptions(sampling); !s.ok()) {
      return Reject("bad_sampling", C::INVALID_ARGUMENT, std::string(s.message()));
    }
    if (grpc::Status s = service_->AdmitSession(tenant_); !s.ok()) return s;
    admitted_ = true;
    mode_ = open.mode();
    max_new_tokens_ = open.max_new_tokens();
    split_layer_ = open.mode() == v1::MODE_SPLIT ? static_cast<int>(open.split_layer()) : 0;
    sampling_ = sampling;  // the verifier and its KV cache come with the prompt
    state_ = State::kExpectPrompt;
    session_id_ = absl::StrCat("s", service_->NextSessionId());
    v1::SessionOpened* opened = out_.mutable_opened();
    opened->set_session_id(session_id_);
    opened->set_setup_micros(static_cast<uint64_t>((MonotonicSeconds() - open_at) * 1e6));
    service_->FillModelInfo(opened->mutable_model());
    service_->FillLimits(opened->mutable_limits());
    WriteLocked();
    return grpc::Status::OK;
  }

  grpc::Status HandlePrompt() {
    if (state_ != State::kExpectPrompt) {
      return Reject("out_of_order", C::FAILED_PRECONDITION,
                    state_ == State::kExpectOpen ? "prompt before open" : "prompt sent twice");
    }
    const v1::Prompt& p = in_.prompt();
    if (split_layer_ > 0) return HandleSplitPrompt(p);
    if (p.has_hidden()) {
      return Reject("bad_hidden", C::INVALID_ARGUMENT, "hidden states are for split mode");
    }
    if (p.token_ids_size() == 0) {
      return Reject("empty_prompt", C::INVALID_ARGUMENT, "empty prompt (it needs at least BOS)");
    }
    if (grpc::Status s = CheckIds(p.token_ids(), "prompt", "bad_token"); !s.ok()) return s;
    if (grpc::Status s = CreateVerifier(p.token_ids_size()); !s.ok()) return s;
    prompt_.assign(p.token_ids().begin(), p.token_ids().end());
    if (absl::Status s = verifier_->Append(prompt_); !s.ok()) return net::ToGrpcStatus(s);
    prompt_at_ = MonotonicSeconds();
    PostPrefillLocked([this] {
      state_ = State::kRounds;
      ReadLocked();  // cloud mode: for a Close while tokens stream
      if (mode_ == v1::MODE_CLOUD) {
        last_token_at_ = 0;
        PostStepLocked();
      }
    });
    return grpc::Status::OK;
  }

  // Decodes a hidden-state payload that must hold `rows` rows entering the session's split layer.
  grpc::Status DecodeHidden(const v1::HiddenStates& h, int rows, std::vector<float>* out) {
    const int dim = service_->model().config().dim;
    if (static_cast<int>(h.layer()) != split_layer_ || static_cast<int>(h.dim()) != dim ||
        static_cast<int>(h.rows()) != rows) {
      return Reject("bad_hidden", C::INVALID_ARGUMENT,
                    absl::StrCat("hidden states of layer ", h.layer(), ", ", h.rows(), " x ", h.dim(),
                                 "; the session expects layer ", split_layer_, ", ", rows, " x ", dim));
    }
    codec::CodecSpec spec;
    switch (h.codec()) {
      case v1::CODEC_F32: spec.kind = codec::CodecKind::kF32; break;
      case v1::CODEC_F16: spec.kind = codec::CodecKind::kF16; break;
      case v1::CODEC_BF16: spec.kind = codec::CodecKind::kBf16; break;
      case v1::CODEC_INT8: spec.kind = codec::CodecKind::kInt8; break;
      case v1::CODEC_INT4: spec.kind = codec::CodecKind::kInt4; break;
      default:
        return Reject("bad_hidden", C::INVALID_ARGUMENT,
                      absl::StrCat("unknown hidden-state codec ", static_cast<int>(h.codec())));
    }
    spec.zstd = h.zstd();
    out->resize(static_cast<size_t>(rows) * dim);
    if (absl::Status s = codec::Decode(spec, h.data(), rows, dim, *out); !s.ok()) {
      return Reject("bad_hidden", C::INVALID_ARGUMENT, std::string(s.message()));
    }
    return grpc::Status::OK;
  }

  // Split mode: the prompt's ids stay on the edge; its layer-k states come instead.
  grpc::Status HandleSplitPrompt(const v1::Prompt& p) {
    if (p.token_ids_size() > 0) {
      return Reject("bad_hidden", C::INVALID_ARGUMENT,
                    "split mode: the prompt's token ids stay on the edge; send its hidden states");
    }
    if (!p.has_hidden()) {
      return Reject("empty_prompt", C::INVALID_ARGUMENT, "split mode: the prompt needs its hidden states");
    }
    const int rows = static_cast<int>(p.hidden().rows());
    if (grpc::Status s = DecodeHidden(p.hidden(), rows, &states_); !s.ok()) return s;
    if (grpc::Status s = CreateVerifier(rows + 1); !s.ok()) return s;
    if (absl::Status s = verifier_->AppendStates(states_, rows); !s.ok()) {
      return net::ToGrpcStatus(s);
    }
    prompt_at_ = MonotonicSeconds();
    PostPrefillLocked([this] {
      state_ = State::kRounds;
      ReadLocked();
    });
    return grpc::Status::OK;
  }

  // INVALID_ARGUMENT, counted under `reason`, for the first of `ids` outside the vocabulary.
  grpc::Status CheckIds(const google::protobuf::RepeatedField<int32_t>& ids, const char* what,
                        const char* reason) {
    const int vocab = service_->model().config().vocab_size;
    for (int i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return Reject(reason, C::INVALID_ARGUMENT,
                      absl::StrCat(what, " token id ", ids[i], " at index ", i,
                                   " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
    return grpc::Status::OK;
  }

  // The `uncertain` policy's context ids of a draft round: token ids in a spec-mode chain round
  // that leave the next token room in the session. Split sessions (whose ids stay on the edge)
  // and tree rounds take none.
  grpc::Status CheckContext(const v1::DraftRound& d, bool tree) {
    if (split_layer_ > 0 || tree) {
      return Reject("bad_context", C::INVALID_ARGUMENT,
                    split_layer_ > 0 ? "context ids are not for split mode"
                                     : "context ids go with chain drafts only, not trees");
    }
    if (grpc::Status s = CheckIds(d.context_ids(), "context", "bad_context"); !s.ok()) return s;
    if (d.context_ids_size() > verifier_->Room()) {
      return Reject("bad_context", C::INVALID_ARGUMENT,
                    absl::StrCat("context of ", d.context_ids_size(), " tokens overflows the session: ",
                                 verifier_->committed().size(), " committed tokens, the next one and ",
                                 "the context exceed its ", verifier_->Room() + 1 +
                                     static_cast<int>(verifier_->committed().size()),
                                 " positions"));
    }
    return grpc::Status::OK;
  }

  grpc::Status HandleDraft() {
    if (state_ != State::kRounds) {
      return Reject("out_of_order", C::FAILED_PRECONDITION, "draft before open and prompt");
    }
    const v1::DraftRound& d = in_.draft();
    if (d.round() != last_round_ + 1) {
      return Reject("out_of_order", C::INVALID_ARGUMENT,
                    absl::StrCat("round ", d.round(), " out of order (expected ", last_round_ + 1, ")"));
    }
    // The edge counts the context it sends (tokens it committed without a verdict) as committed.
    const int m = d.context_ids_size();
    if (d.committed_length() != verifier_->committed().size() + m) {
      return Reject("committed_mismatch", C::FAILED_PRECONDITION,
                    absl::StrCat("the edge holds ", d.committed_length(),
                                 " committed tokens but the session has ",
                                 verifier_->committed().size(),
                                 m > 0 ? absl::StrCat(" and ", m, " context tokens") : ""));
    }
    if (d.has_hidden() != (split_layer_ > 0)) {
      return Reject("bad_hidden", C::INVALID_ARGUMENT,
                    split_layer_ > 0 ? "split mode: a draft round needs the hidden states of its root and drafts"
                                     : "hidden states are for split mode");
    }
    const int n = d.token_ids_size();
    const bool tree = d.parents_size() > 0;
    const int limit = tree ? service_->limits().max_tree_nodes : service_->limits().max_draft_tokens;
    if (n > limit) {
      return Reject(tree ? "tree_too_large" : "draft_too_long", C::INVALID_ARGUMENT,
                    absl::StrCat(tree ? "tree of " : "draft of ", n, " tokens is over the limit ",
                                 limit));
    }
    const int vocab = service_->model().config().vocab_size;
    if (grpc::Status s = CheckIds(d.token_ids(), "draft", "bad_token"); !s.ok()) return s;
    if (tree) {
      if (d.parents_size() != n) {
        return Reject("bad_tree", C::INVALID_ARGUMENT,
                      absl::StrCat("the tree has ", n, " tokens but ", d.parents_size(), " parents"));
      }
      for (int i = 0; i < n; ++i) {
        if (d.parents(i) < -1 || d.parents(i) >= i) {
          return Reject("bad_tree", C::INVALID_ARGUMENT,
                        absl::StrCat("tree node ", i, " has parent ", d.parents(i),
                                     "; parents must be in [-1, ", i, ")"));
        }
      }
    }
    if (m > 0) {
      if (grpc::Status s = CheckContext(d, tree); !s.ok()) return s;
    }
    if (n > verifier_->Room() - m) {
      return Reject("context_full", C::RESOURCE_EXHAUSTED,
                    absl::StrCat("context full: ", n, " drafts and the next token do not fit in ",
                                 std::max(0, verifier_->Room() - m), " positions"));
    }
    context_ids_.assign(d.context_ids().begin(), d.context_ids().end());
    drafts_.assign(d.token_ids().begin(), d.token_ids().end());
    parents_.assign(d.parents().begin(), d.parents().end());
    probs_ = spec::DraftProbs{};
    if (d.probs().full_size() > 0) {
      if (d.probs().full_size() != static_cast<int64_t>(n) * vocab) {
        return Reject("bad_probs", C::INVALID_ARGUMENT,
                      absl::StrCat("draft probabilities hold ", d.probs().full_size(),
                                   " values, expected ", n, " x ", vocab));
      }
      for (float v : d.probs().full()) {
        if (!std::isfinite(v) || v < 0.0f) {
          return Reject("bad_probs", C::INVALID_ARGUMENT,
                        absl::StrCat("draft q holds ", v, ", not a probability"));
        }
      }
      full_.assign(d.probs().full().begin(), d.probs().full().end());
      probs_.kind = spec::DraftProbKind::kFull;
      probs_.full = spec::Rows{full_.data(), n, vocab};
    } else if (d.probs().sparse_size() > 0) {
      probs_.kind = spec::DraftProbKind::kSparse;
      for (const v1::SparseRow& row : d.probs().sparse()) {
        if (row.token_ids_size() != row.probs_size()) {
          return Reject("bad_probs", C::INVALID_ARGUMENT,
                        "sparse row ids and probs differ in length");
        }
        std::vector<std::pair<int32_t, float>> entries;
        for (int i = 0; i < row.token_ids_size(); ++i) {
          const int32_t t = row.token_ids(i);
          const float q = row.probs(i);
          if (t < 0 || t >= vocab || !std::isfinite(q) || q < 0.0f) {
            return Reject("bad_probs", C::INVALID_ARGUMENT,
                          absl::StrCat("draft q entry (", t, ", ", q, ") is not a token probability"));
          }
          entries.push_back({t, q});
        }
        probs_.sparse.push_back(std::move(entries));
      }
    }
    if (split_layer_ > 0) {
      if (grpc::Status s = DecodeHidden(d.hidden(), n + 1, &states_); !s.ok()) return s;
    }
    last_round_ = d.round();
    const double received = MonotonicSeconds();
    PostPassLocked(
        /*prefill=*/false, n + m + 1,
        [this](model::BatchItem* item) -> absl::StatusOr<bool> {
          RETURN_IF_ERROR(verifier_->BeginRound(drafts_, parents_, probs_, item, states_,
                                                context_ids_));
          return true;
        },
        [this, tree](const absl::Status& pass, const PassInfo& info) {
          absl::StatusOr<spec::VerifyResult> r = verifier_->EndRound(pass);
          if (!r.ok()) {
            const char* reason = absl::IsResourceExhausted(r.status()) ? "context_full"
                                 : absl::IsInvalidArgument(r.status()) ? "bad_probs"
                                                                       : "other";
            service_->metrics().CountRejection(reason);
            return net::ToGrpcStatus(r.status());
          }
          const int accepted = static_cast<int>(r->path.size());
          const int context = static_cast<int>(context_ids_.size());
          service_->CountRound(static_cast<int>(drafts_.size()), accepted);
          // The context is committed, not verified: it counts in the pass, not as drafts.
          service_->metrics().CountVerify(static_cast<int>(drafts_.size()), accepted, info.seconds,
                                          static_cast<int>(drafts_.size()) + context + 1);
          service_->metrics().CountContext(context);
          context_tokens_ += context;
          service_->metrics().CountGenerated(false, accepted + 1);
          rounds_++;
          draft_tokens_ += static_cast<int64_t>(drafts_.size());
          accepted_ += accepted;
          generated_ += accepted + 1;
          v1::Verdict* v = out_.mutable_verdict();
          v->Clear();
          v->set_round(last_round_);
          v->set_accepted(static_cast<uint32_t>(accepted));
          if (tree) {
            for (int32_t node : r->path) v->add_accepted_nodes(node - 1);
          }
          v->set_next_token(r->next_token);
          return grpc::Status::OK;
        },
        [this, received] {
          v1::Verdict* v = out_.mutable_verdict();
          const double now = MonotonicSeconds();
          v->set_compute_micros(static_cast<uint64_t>((now - received) * 1e6));
          v->set_queue_micros(static_cast<uint64_t>((task_started_at_ - received) * 1e6));
          WriteLocked();
        });
    return grpc::Status::OK;
  }

  // --- cloud mode ----------------------------------------------------------------------------

  // One decoding step per engine task: the target over the last committed token, then the next
  // token from the session's sampler (TargetVerifier with an empty draft). Stops before BOS/EOS,
  // after max_new_tokens, or when the context is full.
  void PostStepLocked() {
    PostPassLocked(
        /*prefill=*/false, 1,
        [this](model::BatchItem* item) -> absl::StatusOr<bool> {
          step_token_ = -1;
          step_done_ = false;
          if (verifier_->Room() < 0) {
            step_done_ = true;
            return false;
          }
          RETURN_IF_ERROR(verifier_->BeginRound({}, {}, no_probs_, item));
          return true;
        },
        [this](const absl::Status& pass, const PassInfo& info) {
          if (step_done_) return net::ToGrpcStatus(pass);  // nothing ran
          absl::StatusOr<spec::VerifyResult> r = verifier_->EndRound(pass);
          if (!r.ok()) return net::ToGrpcStatus(r.status());
          step_micros_ =
              static_cast<uint64_t>((info.started_at + info.seconds - info.queued_at) * 1e6);
          const int32_t t = r->next_token;
          const model::Vocab& vocab = service_->model().vocab();
          if (t == vocab.bos_id() || t == vocab.eos_id()) {
            step_done_ = true;
            return grpc::Status::OK;
          }
          step_token_ = t;
          generated_++;
          service_->metrics().CountGenerated(true, 1);
          step_done_ = (max_new_tokens_ > 0 && generated_ >= max_new_tokens_) ||
                       verifier_->Room() < 0;
          return grpc::Status::OK;
        },
        [this] {
          const double now = MonotonicSeconds();
          if (step_token_ >= 0) {
            pending_tokens_.push_back(step_token_);
            if (last_token_at_ == 0) {
              service_->metrics().ObserveTimeToFirstToken(now - prompt_at_);
            } else {
              service_->metrics().ObserveTimePerOutputToken(now - last_token_at_);
            }
            last_token_at_ = now;
          }
          pending_micros_ += step_micros_;
          decode_done_ = step_done_;
          if (!write_pending_) FlushTokensLocked();
          if (!decode_done_) PostStepLocked();
        });
  }

  // Sends the tokens decoded since the last write (and `done` once decoding ended).
  void FlushTokensLocked() {
    if (pending_tokens_.empty() && !decode_done_) return;
    v1::CloudTokens* t = out_.mutable_tokens();
    t->Clear();
    for (int32_t id : pending_tokens_) t->add_token_ids(id);
    t->set_done(decode_done_);
    t->set_compute_micros(pending_micros_);
    pending_tokens_.clear();
    pending_micros_ = 0;
    sent_done_ = decode_done_;
    WriteLocked();
  }

  VerifierService* const service_;
  grpc::CallbackServerContext* const context_;
  const double started_;

  std::mutex mu_;
  // Stream state, GUARDED_BY(mu_).
  bool authenticated_ = true;
  bool admitted_ = false;  // holds a session slot
  bool finished_ = false;
  bool task_in_flight_ = false;
  bool read_pending_ = false, write_pending_ = false;
  double last_activity_ = 0;
  std::optional<std::pair<grpc::Status, Outcome>> deferred_;
  std::optional<Outcome> cancel_outcome_;
  grpc::Status status_;
  Outcome outcome_ = Outcome::kOk;
  std::string tenant_, session_id_;
  v1::Mode mode_ = v1::MODE_UNSPECIFIED;
  State state_ = State::kExpectOpen;
  uint64_t last_round_ = 0;
  uint32_t max_new_tokens_ = 0;
  v1::EdgeMessage in_;
  v1::VerifierMessage out_;
  // Cloud mode.
  std::vector<int32_t> pending_tokens_;
  uint64_t pending_micros_ = 0;
  bool decode_done_ = false, sent_done_ = false;
  double prompt_at_ = 0, last_token_at_ = 0;
  // Statistics for the log line.
  int64_t rounds_ = 0, draft_tokens_ = 0, accepted_ = 0, generated_ = 0, context_tokens_ = 0;
  uint64_t bytes_up_ = 0, bytes_down_ = 0;

  // Engine-side state: the task in flight owns it.
  std::unique_ptr<spec::TargetVerifier> verifier_;
  std::vector<int32_t> prompt_, drafts_, parents_;
  std::vector<int32_t> context_ids_;  // the uncertain policy's context ids of the current round
  std::vector<float> full_;
  std::vector<float> states_;  // split mode: the decoded hidden states of the current message
  int split_layer_ = 0;        // split mode: the verifier runs layers [split_layer_, N)
  model::SamplerOptions sampling_;
  uint64_t kv_bytes_ = 0;      // reserved against the service's KV budget
  spec::DraftProbs probs_;
  const spec::DraftProbs no_probs_;  // cloud-mode steps: no draft
  double task_queued_at_ = 0, task_started_at_ = 0;
  int32_t step_token_ = -1;
  bool step_done_ = false;
  uint64_t step_micros_ = 0;
};

namespace {

// Accepted-per-position series are kept for at most this many draft positions.
constexpr int kMaxPositionSeries = 256;

uint64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                               : uint64_t{8} << 30;
}

std::vector<std::string> MetricTenants(const net::TokenAuthenticator* auth) {
  return auth == nullptr ? std::vector<std::string>{} : auth->tenants();
}

}  // namespace

VerifierService::VerifierService(const model::Model& model, std::string model_name,
                                 EngineWorker* worker, const VerifierLimits& limits,
                                 std::shared_ptr<const net::TokenAuthenticator> auth)
    : model_(model),
      model_name_(std::move(model_name)),
      worker_(worker),
      limits_(limits),
      auth_(std::move(auth)),
      metrics_(std::min(kMaxPositionSeries, std::max(limits.max_draft_tokens, limits.max_tree_nodes)),
               MetricTenants(auth_.get())),
      sweeper_([this] { SweepLoop(); }) {
  const model::ModelConfig& c = model_.config();
  const int context = std::min(c.max_seq_len, limits_.max_tokens_per_session);
  kv_budget_ = limits_.kv_budget_bytes;
  if (kv_budget_ == 0) {
    const uint64_t full = static_cast<uint64_t>(limits_.max_sessions) *
                          model::KvCache::BytesFor(c, c.n_layers, context);
    kv_budget_ = std::min(full, PhysicalMemoryBytes() / 2);
  }
  metrics_.SetKvBudget(kv_budget_);
  worker_->SetExpectedJobs([this] { return active_sessions_.load(); });
  worker_->SetOnBatch([this](const BatchStats& b) {
    metrics_.ObserveBatch(b.sessions, b.tokens);
    if (b.layer_begin >= 0) {
      cost_model_->Observe(model_.config().n_layers - b.layer_begin, b.tokens, b.tokens, b.seconds,
                           b.mean_queue_s);
    }
  });
  // The first sessions may open before this has run; they get a cost model without it.
  worker_->Post([cost = cost_model_](model::Engine& engine) {
    if (absl::Status s = cost->Calibrate(engine); !s.ok()) {
      spdlog::warn("cost model calibration failed: {}", s.ToString());
    }
  });
}

VerifierService::~VerifierService() {
  worker_->SetOnBatch(nullptr);
  worker_->SetExpectedJobs(nullptr);
  {
    std::lock_guard<std::mutex> lock(sweep_mu_);
    stop_sweeper_ = true;
  }
  sweep_cv_.notify_all();
  sweeper_.join();
}

void VerifierService::SweepLoop() {
  const double period = std::clamp(limits_.idle_ttl_s / 4, 0.01, 1.0);
  std::unique_lock<std::mutex> lock(sweep_mu_);
  while (!stop_sweeper_) {
    sweep_cv_.wait_for(lock, std::chrono::duration<double>(period));
    if (stop_sweeper_) break;
    const double now = MonotonicSeconds();
    std::lock_guard<std::mutex> registry(registry_mu_);
    for (SessionReactor* s : sessions_) s->CheckIdle(now);
  }
}

void VerifierService::Register(SessionReactor* session) {
  std::lock_guard<std::mutex> lock(registry_mu_);
  sessions_.insert(session);
}

void VerifierService::Unregister(SessionReactor* session) {
  std::lock_guard<std::mutex> lock(registry_mu_);
  sessions_.erase(session);
}

absl::StatusOr<std::string> VerifierService::Authenticate(const grpc::CallbackServerContext& context) {
  std::string tenant = "default";
  if (auth_ != nullptr) {
    absl::StatusOr<std::string> t = auth_->Authenticate(context.client_metadata());
    if (!t.ok()) {
      metrics_.CountRejection("unauthenticated");
      return t.status();
    }
    tenant = *t;
  }
  if (limits_.QuotaFor(tenant) == 0) {
    metrics_.CountRejection("permission_denied");
    return absl::PermissionDeniedError(absl::StrCat("tenant ", tenant, " is disabled (quota 0)"));
  }
  return tenant;
}

grpc::Status VerifierService::AdmitSession(const std::string& tenant) {
  if (draining_) {
    metrics_.CountRejection("draining");
    return grpc::Status(C::UNAVAILABLE, "the verifier is draining; retry on another one");
  }
  std::lock_guard<std::mutex> lock(admit_mu_);
  if (active_sessions_.load() >= limits_.max_sessions) {
    metrics_.CountRejection("session_limit");
    return grpc::Status(C::RESOURCE_EXHAUSTED,
                        absl::StrCat("session limit reached (", limits_.max_sessions, ")"));
  }
  if (limits_.max_queue_delay_s > 0) {
    const double delay = worker_->QueueDelay();
    if (delay > limits_.max_queue_delay_s) {
      metrics_.CountRejection("overloaded");
      return grpc::Status(C::RESOURCE_EXHAUSTED,
                          absl::StrFormat("overloaded: the engine queue wait is %.3f s, over "
                                          "%.3f s; retry later or on another verifier",
                                          delay, limits_.max_queue_delay_s));
    }
  }
  const int quota = limits_.QuotaFor(tenant);
  int& mine = tenant_active_[tenant];
  if (mine >= quota) {
    metrics_.CountRejection("quota");
    return grpc::Status(C::RESOURCE_EXHAUSTED, absl::StrCat("tenant ", tenant, " has ", mine,
                                                            " sessions (quota ", quota, ")"));
  }
  mine++;
  active_sessions_++;
  metrics_.SessionStarted(tenant);
  return grpc::Status::OK;
}

void VerifierService::ReleaseSession(const std::string& tenant, Outcome outcome) {
  std::lock_guard<std::mutex> lock(admit_mu_);
  if (--tenant_active_[tenant] == 0) tenant_active_.erase(tenant);
  active_sessions_--;
  metrics_.SessionEnded(tenant, outcome);
}

grpc::Status VerifierService::ReserveKv(uint64_t bytes) {
  uint64_t reserved = kv_reserved_.load();
  do {
    if (reserved + bytes > kv_budget_) {
      metrics_.CountRejection("kv_budget");
      constexpr double kMiB = 1024.0 * 1024.0;
      return grpc::Status(
          C::RESOURCE_EXHAUSTED,
          absl::StrFormat("KV budget exhausted: the session needs %.1f MiB of KV cache; %.1f of "
                          "%.1f MiB are reserved by open sessions",
                          bytes / kMiB, reserved / kMiB, kv_budget_ / kMiB));
    }
  } while (!kv_reserved_.compare_exchange_weak(reserved, reserved + bytes));
  metrics_.SetKvReserved(reserved + bytes);
  return grpc::Status::OK;
}

void VerifierService::ReleaseKv(uint64_t bytes) {
  metrics_.SetKvReserved(kv_reserved_.fetch_sub(bytes) - bytes);
}

int VerifierService::tenant_sessions(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(admit_mu_);
  auto it = tenant_active_.find(tenant);
  return it == tenant_active_.end() ? 0 : it->second;
}

int VerifierService::transport_max_message_bytes() const {
  return static_cast<int>(std::min<int64_t>(INT_MAX, 2 * static_cast<int64_t>(limits_.max_message_bytes)));
}

void VerifierService::FillModelInfo(v1::ModelInfo* info) const {
  const model::ModelConfig& c = model_.config();
  info->set_name(model_name_);
  info->set_vocab_size(c.vocab_size);
  info->set_n_layers(c.n_layers);
  info->set_dim(c.dim);
  info->set_max_context(c.max_seq_len);
  info->set_tokenizer(model_.vocab().kind() == model::TokenizerKind::kSpm ? "spm" : "gpt2");
  info->set_bos_id(model_.vocab().bos_id());
  info->set_eos_id(model_.vocab().eos_id());
  cost_model_->Fill(info->mutable_cost());
}

void VerifierService::FillLimits(v1::Limits* l) const {
  l->set_max_sessions(limits_.max_sessions);
  l->set_max_sessions_per_tenant(limits_.max_sessions_per_tenant);
  l->set_max_tokens_per_session(limits_.max_tokens_per_session);
  l->set_max_draft_tokens(limits_.max_draft_tokens);
  l->set_max_tree_nodes(limits_.max_tree_nodes);
  l->set_max_message_bytes(limits_.max_message_bytes);
  l->set_idle_ttl_seconds(static_cast<uint32_t>(std::ceil(limits_.idle_ttl_s)));
}

grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage>* VerifierService::Session(
    grpc::CallbackServerContext* context) {
  return new SessionReactor(this, context);
}

grpc::ServerUnaryReactor* VerifierService::GetInfo(grpc::CallbackServerContext* context,
                                                   const v1::GetInfoRequest* request,
                                                   v1::ServerInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  if (!tenant.ok()) {
    reactor->Finish(net::ToGrpcStatus(tenant.status()));
    return reactor;
  }
  response->set_version("tandem-verifier/0.2 protocol tandem.v1");
  FillModelInfo(response->add_models());
  FillLimits(response->mutable_limits());
  response->add_modes(v1::MODE_SPEC);
  response->add_modes(v1::MODE_CLOUD);
  response->add_modes(v1::MODE_SPLIT);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

int VerifierService::HandBackSessions() {
  std::lock_guard<std::mutex> lock(registry_mu_);
  for (SessionReactor* s : sessions_) s->HandBack();
  return static_cast<int>(sessions_.size());
}

}  // namespace tandem::cloud
