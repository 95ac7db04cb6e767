// Spec-mode and local-mode generation on the edge (see edge_generator.h).
#include "edge/edge_generator.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/net/status.h"
#include "common/spec/spec_decoder.h"
#include "common/util/clock.h"

namespace tandem::edge {

EdgeGenerator::EdgeGenerator(const model::Model& local, spec::Drafter* drafter,
                             std::shared_ptr<grpc::Channel> channel, const EdgeOptions& options)
    : local_(local), drafter_(drafter), channel_(std::move(channel)), options_(options) {}

absl::Status EdgeGenerator::Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                     const std::function<void(int32_t, int32_t)>& emit,
                                     EdgeStats* stats) {
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt (it needs at least BOS)");
  if (options_.mode == EdgeMode::kLocal) return GenerateLocal(prompt, max_new_tokens, emit, stats);
  if (channel_ == nullptr) return absl::InvalidArgumentError("spec mode needs a verifier channel");
  return GenerateSpec(prompt, max_new_tokens, emit, stats);
}

absl::Status EdgeGenerator::GenerateLocal(std::span<const int32_t> prompt, int max_new_tokens,
                                          const std::function<void(int32_t, int32_t)>& emit,
                                          EdgeStats* stats) {
  spec::SpecOptions o;
  o.spec_tokens = 0;
  o.sampler = options_.sampler;
  spec::SpecDecoder decoder(local_, nullptr, nullptr, o);
  spec::SpecStats s;
  absl::Status status = decoder.Generate(prompt, max_new_tokens, emit, &s);
  stats->generated_tokens += s.generated_tokens;
  stats->tokens_local_fallback += s.generated_tokens;
  return status;
}

absl::Status EdgeGenerator::GenerateSpec(std::span<const int32_t> prompt, int max_new_tokens,
                                         const std::function<void(int32_t, int32_t)>& emit,
                                         EdgeStats* stats) {
  auto stub = v1::Verifier::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(options_.rpc_timeout_s * 1000)));
  auto stream = stub->Session(&ctx);
  auto fail = [&](const std::string& what) -> absl::Status {
    stream->WritesDone();
    grpc::Status s = stream->Finish();
    if (s.ok()) return absl::UnavailableError(absl::StrCat("verifier closed the session during ", what));
    return net::FromGrpcStatus(s);
  };
  auto send = [&](const v1::EdgeMessage& m) {
    stats->bytes_up += static_cast<int64_t>(m.ByteSizeLong());
    return stream->Write(m);
  };
  v1::EdgeMessage out;
  v1::VerifierMessage in;
  v1::OpenSession* open = out.mutable_open();
  open->set_mode(v1::MODE_SPEC);
  open->set_model(options_.model_name);
  open->set_client("tandem-edge/0.1");
  open->mutable_sampling()->set_temperature(options_.sampler.temperature);
  open->mutable_sampling()->set_top_k(options_.sampler.top_k);
  open->mutable_sampling()->set_top_p(options_.sampler.top_p);
  open->mutable_sampling()->set_seed(options_.sampler.seed);
  if (!send(out) || !stream->Read(&in)) return fail("open");
  stats->bytes_down += static_cast<int64_t>(in.ByteSizeLong());
  if (in.kind_case() != v1::VerifierMessage::kOpened) return fail("open");
  const v1::ModelInfo& info = in.opened().model();
  if (static_cast<int>(info.vocab_size()) != local_.config().vocab_size ||
      static_cast<int>(info.bos_id()) != local_.vocab().bos_id()) {
    stream->WritesDone();
    stream->Finish();
    return absl::FailedPreconditionError(absl::StrCat(
        "the verifier's model '", info.name(), "' has a ", info.vocab_size(),
        "-token vocabulary; the edge model has ", local_.config().vocab_size));
  }
  out.Clear();
  for (int32_t t : prompt) out.mutable_prompt()->add_token_ids(t);
  if (!send(out)) return fail("prompt");

  std::vector<int32_t> committed(prompt.begin(), prompt.end());
  const int vocab = local_.config().vocab_size;
  int generated = 0;
  uint64_t round = 0;
  while (generated < max_new_tokens) {
    spec::Draft draft;
    const int gamma = std::min(options_.spec_tokens, max_new_tokens - generated - 1);
    double t0 = MonotonicSeconds();
    if (drafter_ != nullptr && gamma > 0) {
      absl::Status s = drafter_->Propose(committed, gamma, &draft);
      if (!s.ok()) return s;
    }
    stats->draft_seconds += MonotonicSeconds() - t0;
    out.Clear();
    v1::DraftRound* d = out.mutable_draft();
    d->set_round(++round);
    d->set_committed_length(static_cast<uint32_t>(committed.size()));
    for (int32_t t : draft.tokens) d->add_token_ids(t);
    if (!draft.probs.empty() && draft.probs.size() == draft.tokens.size() * static_cast<size_t>(vocab)) {
      d->mutable_probs()->mutable_full()->Add(draft.probs.begin(), draft.probs.end());
    }
    t0 = MonotonicSeconds();
    if (!send(out) || !stream->Read(&in)) return fail(absl::StrCat("round ", round));
    const double wall = MonotonicSeconds() - t0;
    stats->bytes_down += static_cast<int64_t>(in.ByteSizeLong());
    if (in.kind_case() != v1::VerifierMessage::kVerdict || in.verdict().round() != round ||
        in.verdict().accepted() > draft.tokens.size()) {
      stream->WritesDone();
      stream->Finish();
      return absl::DataLossError(absl::StrCat("malformed verdict for round ", round));
    }
    const v1::Verdict& v = in.verdict();
    const double compute = v.compute_micros() * 1e-6;
    stats->round_trips++;
    stats->cloud_compute_seconds += compute;
    stats->rtt_seconds += std::max(0.0, wall - compute);
    stats->draft_tokens += static_cast<int64_t>(draft.tokens.size());
    stats->accepted_tokens += v.accepted();
    std::vector<int32_t> emitted(draft.tokens.begin(), draft.tokens.begin() + v.accepted());
    emitted.push_back(v.next_token());
    for (int32_t token : emitted) {
      committed.push_back(token);
      if (token == local_.vocab().bos_id() || token == local_.vocab().eos_id()) {
        generated = max_new_tokens;  // the end of the text
        break;
      }
      emit(committed[committed.size() - 2], token);
      ++generated;
      stats->generated_tokens++;
      stats->tokens_verified++;
      if (generated == max_new_tokens) break;
    }
  }
  out.Clear();
  out.mutable_close();
  send(out);
  stream->WritesDone();
  return net::FromGrpcStatus(stream->Finish());
}

}  // namespace tandem::edge
