// Verifier sessions over gRPC (see verifier_service.h).
#include "cloud/verifier_service.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/net/status.h"
#include "common/spec/target_verifier.h"
#include "common/util/clock.h"

namespace tandem::cloud {

EngineWorker::EngineWorker(const model::Model& model, int threads)
    : pool_(threads), engine_(model, &pool_), thread_([this] { Loop(); }) {}

EngineWorker::~EngineWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EngineWorker::Post(std::function<void(model::Engine&)> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void EngineWorker::Loop() {
  while (true) {
    std::function<void(model::Engine&)> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stop_ and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task(engine_);
  }
}

namespace {

grpc::Status Error(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

// One generation session: a state machine over the stream's messages.
class SessionReactor : public grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage> {
 public:
  explicit SessionReactor(VerifierService* service) : service_(service) { StartRead(&in_); }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the edge closed its side
      Finish(grpc::Status::OK);
      return;
    }
    grpc::Status s = Handle();
    if (!s.ok()) Finish(s);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(Error(grpc::StatusCode::CANCELLED, "the edge went away"));
      return;
    }
    StartRead(&in_);
  }

  void OnDone() override {
    if (counted_) service_->RemoveSession();
    delete this;  // frees the session's KV cache
  }

 private:
  enum class State { kExpectOpen, kExpectPrompt, kRounds };

  grpc::Status Handle() {
    switch (in_.kind_case()) {
      case v1::EdgeMessage::kOpen:
        return HandleOpen();
      case v1::EdgeMessage::kPrompt:
        return HandlePrompt();
      case v1::EdgeMessage::kDraft:
        return HandleDraft();
      case v1::EdgeMessage::kClose:
        Finish(grpc::Status::OK);
        return grpc::Status::OK;
      default:
        return Error(grpc::StatusCode::INVALID_ARGUMENT, "empty message");
    }
  }

  grpc::Status HandleOpen() {
    if (state_ != State::kExpectOpen) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "open: the session is already open");
    }
    const v1::OpenSession& open = in_.open();
    if (!open.model().empty() && open.model() != service_->model_name()) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("unknown model '", open.model(), "' (served: '",
                                service_->model_name(), "')"));
    }
    if (open.mode() != v1::MODE_SPEC) {
      return Error(grpc::StatusCode::UNIMPLEMENTED,
                   absl::StrCat("mode ", v1::Mode_Name(open.mode()), " is not served (spec only)"));
    }
    model::SamplerOptions sampling;
    sampling.temperature = open.sampling().temperature();
    sampling.top_k = open.sampling().top_k();
    sampling.top_p = open.sampling().top_p() == 0.0f ? 1.0f : open.sampling().top_p();
    sampling.seed = open.sampling().seed();
    if (absl::Status s = model::ValidateSamplerOptions(sampling); !s.ok()) return net::ToGrpcStatus(s);
    if (!service_->TryAddSession()) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   absl::StrCat("session limit reached (", service_->limits().max_sessions, ")"));
    }
    counted_ = true;
    const int capacity = std::min(service_->model().config().max_seq_len,
                                  service_->limits().max_tokens_per_session);
    auto verifier = spec::TargetVerifier::Create(service_->model(), capacity, sampling);
    if (!verifier.ok()) return net::ToGrpcStatus(verifier.status());
    verifier_ = std::move(*verifier);
    state_ = State::kExpectPrompt;
    v1::SessionOpened* opened = out_.mutable_opened();
    opened->set_session_id(absl::StrCat("s", service_->NextSessionId()));
    service_->FillModelInfo(opened->mutable_model());
    service_->FillLimits(opened->mutable_limits());
    StartWrite(&out_);
    return grpc::Status::OK;
  }

  grpc::Status HandlePrompt() {
    if (state_ != State::kExpectPrompt) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   state_ == State::kExpectOpen ? "prompt before open" : "prompt sent twice");
    }
    if (in_.prompt().token_ids_size() == 0) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT, "empty prompt (it needs at least BOS)");
    }
    prompt_.assign(in_.prompt().token_ids().begin(), in_.prompt().token_ids().end());
    service_->worker()->Post([this](model::Engine& engine) {
      absl::Status s = verifier_->Commit(engine, prompt_);
      if (!s.ok()) {
        Finish(net::ToGrpcStatus(s));
        return;
      }
      state_ = State::kRounds;
      StartRead(&in_);
    });
    return grpc::Status::OK;
  }

  grpc::Status HandleDraft() {
    if (state_ != State::kRounds) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "draft before open and prompt");
    }
    const v1::DraftRound& d = in_.draft();
    if (d.round() != last_round_ + 1) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat("round ", d.round(), " out of order (expected ", last_round_ + 1, ")"));
    }
    if (d.committed_length() != verifier_->committed().size()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("the edge holds ", d.committed_length(),
                                " committed tokens but the session has ",
                                verifier_->committed().size()));
    }
    if (d.has_hidden()) {
      return Error(grpc::StatusCode::UNIMPLEMENTED, "hidden-state payloads (split mode) are not served");
    }
    const int n = d.token_ids_size();
    const bool tree = d.parents_size() > 0;
    const int limit = tree ? service_->limits().max_tree_nodes : service_->limits().max_draft_tokens;
    if (n > limit) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat(tree ? "tree of " : "draft of ", n, " tokens is over the limit ",
                                limit));
    }
    drafts_.assign(d.token_ids().begin(), d.token_ids().end());
    parents_.assign(d.parents().begin(), d.parents().end());
    probs_ = spec::DraftProbs{};
    const int vocab = service_->model().config().vocab_size;
    if (d.probs().full_size() > 0) {
      if (d.probs().full_size() != static_cast<int64_t>(n) * vocab) {
        return Error(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("draft probabilities hold ", d.probs().full_size(),
                                  " values, expected ", n, " x ", vocab));
      }
      full_.assign(d.probs().full().begin(), d.probs().full().end());
      probs_.kind = spec::DraftProbKind::kFull;
      probs_.full = spec::Rows{full_.data(), n, vocab};
    } else if (d.probs().sparse_size() > 0) {
      probs_.kind = spec::DraftProbKind::kSparse;
      for (const v1::SparseRow& row : d.probs().sparse()) {
        if (row.token_ids_size() != row.probs_size()) {
          return Error(grpc::StatusCode::INVALID_ARGUMENT, "sparse row ids and probs differ in length");
        }
        std::vector<std::pair<int32_t, float>> entries;
        for (int i = 0; i < row.token_ids_size(); ++i) entries.push_back({row.token_ids(i), row.probs(i)});
        probs_.sparse.push_back(std::move(entries));
      }
    }
    last_round_ = d.round();
    const double received = MonotonicSeconds();
    service_->worker()->Post([this, received, tree](model::Engine& engine) {
      const double start = MonotonicSeconds();
      absl::StatusOr<spec::VerifyResult> r =
          verifier_->VerifyRound(engine, drafts_, parents_, probs_);
      if (!r.ok()) {
        Finish(net::ToGrpcStatus(r.status()));
        return;
      }
      service_->CountRound(static_cast<int>(drafts_.size()), static_cast<int>(r->path.size()));
      v1::Verdict* v = out_.mutable_verdict();
      v->Clear();
      v->set_round(last_round_);
      v->set_accepted(static_cast<uint32_t>(r->path.size()));
      if (tree) {
        for (int32_t node : r->path) v->add_accepted_nodes(node - 1);
      }
      v->set_next_token(r->next_token);
      const double now = MonotonicSeconds();
      v->set_compute_micros(static_cast<uint64_t>((now - received) * 1e6));
      v->set_queue_micros(static_cast<uint64_t>((start - received) * 1e6));
      StartWrite(&out_);
    });
    return grpc::Status::OK;
  }

  VerifierService* service_;
  v1::EdgeMessage in_;
  v1::VerifierMessage out_;
  State state_ = State::kExpectOpen;
  bool counted_ = false;
  uint64_t last_round_ = 0;
  std::unique_ptr<spec::TargetVerifier> verifier_;
  std::vector<int32_t> prompt_, drafts_, parents_;
  std::vector<float> full_;
  spec::DraftProbs probs_;
};

}  // namespace

VerifierService::VerifierService(const model::Model& model, std::string model_name,
                                 EngineWorker* worker, const VerifierLimits& limits)
    : model_(model), model_name_(std::move(model_name)), worker_(worker), limits_(limits) {}

bool VerifierService::TryAddSession() {
  int now = active_sessions_.load();
  while (now < limits_.max_sessions) {
    if (active_sessions_.compare_exchange_weak(now, now + 1)) return true;
  }
  return false;
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
}

void VerifierService::FillLimits(v1::Limits* l) const {
  l->set_max_sessions(limits_.max_sessions);
  l->set_max_tokens_per_session(limits_.max_tokens_per_session);
  l->set_max_draft_tokens(limits_.max_draft_tokens);
  l->set_max_tree_nodes(limits_.max_tree_nodes);
  l->set_max_message_bytes(limits_.max_message_bytes);
}

grpc::ServerBidiReactor<v1::EdgeMessage, v1::VerifierMessage>* VerifierService::Session(
    grpc::CallbackServerContext* context) {
  return new SessionReactor(this);
}

grpc::ServerUnaryReactor* VerifierService::GetInfo(grpc::CallbackServerContext* context,
                                                   const v1::GetInfoRequest* request,
                                                   v1::ServerInfo* response) {
  response->set_version("tandem-verifier/0.1 protocol tandem.v1");
  FillModelInfo(response->add_models());
  FillLimits(response->mutable_limits());
  response->add_modes(v1::MODE_SPEC);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tandem::cloud
