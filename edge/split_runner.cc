// The edge half of split mode (see split_runner.h).
#include "edge/split_runner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/model/sampler.h"
#include "common/util/status_macros.h"

namespace tandem::edge {

v1::Codec ToProtoCodec(codec::CodecKind kind) {
  switch (kind) {
    case codec::CodecKind::kF32:
      return v1::CODEC_F32;
    case codec::CodecKind::kF16:
      return v1::CODEC_F16;
    case codec::CodecKind::kBf16:
      return v1::CODEC_BF16;
    case codec::CodecKind::kInt8:
      return v1::CODEC_INT8;
    case codec::CodecKind::kInt4:
      return v1::CODEC_INT4;
  }
  return v1::CODEC_UNSPECIFIED;
}

absl::StatusOr<std::unique_ptr<SplitRunner>> SplitRunner::Create(const model::Model& target, int k,
                                                                  int capacity,
                                                                  const codec::CodecSpec& codec,
                                                                  int threads) {
  const int n_layers = target.config().n_layers;
  if (k < 1 || k >= n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("split layer ", k, " is outside [1, ", n_layers, ") for this model"));
  }
  ASSIGN_OR_RETURN(model::KvCache cache, model::KvCache::Create(target.config(), 0, k, capacity));
  return std::unique_ptr<SplitRunner>(new SplitRunner(target, k, std::move(cache), codec, threads));
}

SplitRunner::SplitRunner(const model::Model& target, int k, model::KvCache cache,
                         const codec::CodecSpec& codec, int threads)
    : target_(target), k_(k), codec_(codec), pool_(threads), engine_(target, &pool_),
      cache_(std::move(cache)) {}

absl::Status SplitRunner::Encode(const model::ForwardResult& states, v1::HiddenStates* out) {
  out->Clear();
  out->set_layer(static_cast<uint32_t>(k_));
  out->set_rows(static_cast<uint32_t>(states.rows));
  out->set_dim(static_cast<uint32_t>(target_.config().dim));
  out->set_codec(ToProtoCodec(codec_.kind));
  out->set_zstd(codec_.zstd);
  if (states.rows == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string data,
                   codec::Encode(codec_, std::span<const float>(states.data.data(),
                                                                static_cast<size_t>(states.rows) * states.cols),
                                 states.rows, states.cols));
  raw_bytes_ += static_cast<int64_t>(
      codec::RawPayloadBytes(codec_.kind, states.rows, states.cols).value_or(0));
  wire_bytes_ += static_cast<int64_t>(data.size());
  out->set_data(std::move(data));
  return absl::OkStatus();
}

absl::Status SplitRunner::Prompt(std::span<const int32_t> committed, v1::HiddenStates* out) {
  if (committed.empty()) return absl::InvalidArgumentError("empty prompt (it needs at least BOS)");
  RETURN_IF_ERROR(cache_.Truncate(0));
  round_base_ = -1;
  out_ = model::ForwardResult{};
  if (committed.size() > 1) {
    model::ForwardRequest req;
    req.layer_end = k_;
    req.tokens = committed.first(committed.size() - 1);
    req.logits = model::LogitsMode::kNone;
    RETURN_IF_ERROR(engine_.Forward(req, &cache_, &out_));
  }
  return Encode(out_, out);
}

absl::Status SplitRunner::Round(int32_t root, std::span<const int32_t> drafts,
                                std::span<const int32_t> parents, v1::HiddenStates* out) {
  if (round_base_ >= 0) return absl::FailedPreconditionError("the previous round was not accepted");
  round_tokens_.assign(1, root);
  round_tokens_.insert(round_tokens_.end(), drafts.begin(), drafts.end());
  round_parents_.clear();
  if (!parents.empty()) {
    if (parents.size() != drafts.size()) return absl::InvalidArgumentError("one parent per draft node");
    round_parents_.push_back(-1);
    for (int32_t p : parents) round_parents_.push_back(p + 1);
  }
  const int base = cache_.length();
  model::ForwardRequest req;
  req.layer_end = k_;
  req.tokens = round_tokens_;
  req.parents = round_parents_;
  req.logits = model::LogitsMode::kNone;
  RETURN_IF_ERROR(engine_.Forward(req, &cache_, &out_));
  round_base_ = base;
  return Encode(out_, out);
}

absl::Status SplitRunner::DraftRound(int32_t root, int gamma, std::vector<int32_t>* drafts,
                                     v1::HiddenStates* out, std::vector<float>* confidence) {
  if (round_base_ >= 0) return absl::FailedPreconditionError("the previous round was not accepted");
  if (gamma < 0) return absl::InvalidArgumentError(absl::StrCat("draft length ", gamma, " is negative"));
  const model::ModelConfig& c = target_.config();
  if (root < 0 || root >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("root token id ", root,
                                                   " is outside the vocabulary [0, ", c.vocab_size, ")"));
  }
  const int base = cache_.length();
  const int room = cache_.capacity() - base;
  if (room < 1) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", base, " of ",
                                                     cache_.capacity(),
                                                     " positions used, no room for the root"));
  }
  // The root and every draft take a slot (each draft's state is sent), so at most room - 1 drafts.
  gamma = std::min(gamma, room - 1);
  drafts->clear();
  if (confidence != nullptr) confidence->clear();
  round_tokens_.assign(1, root);
  round_parents_.clear();
  out_.is_logits = false;
  out_.rows = 0;
  out_.cols = c.dim;
  out_.data.clear();
  out_.data.reserve(static_cast<size_t>(gamma + 1) * c.dim);
  out_.hidden.clear();
  model::ForwardRequest req;
  req.layer_end = k_;
  for (int i = 0; i <= gamma; ++i) {
    const bool last = i == gamma;  // the last position's state is sent, but it drafts nothing
    req.tokens = std::span<const int32_t>(&round_tokens_.back(), 1);
    req.early_exit = !last;
    req.return_hidden = !last;
    req.logits = last ? model::LogitsMode::kNone : model::LogitsMode::kLast;
    if (absl::Status s = engine_.Forward(req, &cache_, &step_); !s.ok()) {
      cache_.Truncate(base).IgnoreError();  // cannot fail: base <= length
      round_tokens_.clear();
      return s;
    }
    // The layer-k state: pre-norm, the same values Round's LogitsMode::kNone pass returns.
    const std::vector<float>& state = last ? step_.data : step_.hidden;
    out_.data.insert(out_.data.end(), state.begin(), state.begin() + c.dim);
    ++out_.rows;
    if (last) break;
    std::span<const float> logits = step_.Row(0);
    const int32_t token = model::Argmax(logits);
    if (confidence != nullptr) confidence->push_back(model::SoftmaxAt(logits, token));
    drafts->push_back(token);
    round_tokens_.push_back(token);
  }
  if (absl::Status s = Encode(out_, out); !s.ok()) {
    cache_.Truncate(base).IgnoreError();
    return s;
  }
  round_base_ = base;
  return absl::OkStatus();
}

absl::Status SplitRunner::Accept(std::span<const int32_t> accepted_nodes) {
  if (round_base_ < 0) return absl::FailedPreconditionError("no round to accept");
  const int base = round_base_;
  round_base_ = -1;
  const int n = static_cast<int>(round_tokens_.size()) - 1;
  std::vector<int32_t> path;  // tree node indices: draft i is node i + 1
  for (int32_t node : accepted_nodes) {
    if (node < 0 || node >= n) return absl::InvalidArgumentError("accepted node out of range");
    path.push_back(node + 1);
  }
  return cache_.KeepPath(base, path);
}

}  // namespace tandem::edge
