// One sequence's target-side verification state (see target_verifier.h).
#include "common/spec/target_verifier.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem::spec {

absl::StatusOr<std::unique_ptr<TargetVerifier>> TargetVerifier::Create(
    const model::Model& target, int capacity, const model::SamplerOptions& sampling,
    int layer_begin) {
  RETURN_IF_ERROR(model::ValidateSamplerOptions(sampling));
  if (layer_begin < 0 || layer_begin >= target.config().n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("split layer ", layer_begin, " is outside [1, ",
                                                   target.config().n_layers, ")"));
  }
  ASSIGN_OR_RETURN(model::KvCache cache, model::KvCache::Create(target.config(), layer_begin,
                                                                target.config().n_layers, capacity));
  return std::unique_ptr<TargetVerifier>(
      new TargetVerifier(target, std::move(cache), sampling, layer_begin));
}

TargetVerifier::TargetVerifier(const model::Model& target, model::KvCache cache,
                               const model::SamplerOptions& sampling, int layer_begin)
    : target_(target), layer_begin_(layer_begin), cache_(std::move(cache)), sampler_(sampling) {}

absl::Status TargetVerifier::AppendStates(std::span<const float> states, int rows) {
  if (layer_begin_ == 0) return absl::FailedPreconditionError("states are for split mode");
  if (!committed_.empty()) return absl::FailedPreconditionError("states commit a new sequence only");
  const int dim = target_.config().dim;
  if (rows < 0 || states.size() != static_cast<size_t>(rows) * dim) {
    return absl::InvalidArgumentError(absl::StrCat(states.size(), " state values for ", rows,
                                                   " rows of ", dim));
  }
  if (rows + 1 > cache_.capacity()) {
    return absl::ResourceExhaustedError(absl::StrCat("context full: ", rows + 1,
                                                     " positions exceed ", cache_.capacity()));
  }
  committed_.assign(rows + 1, -1);
  prefill_states_.assign(states.begin(), states.end());
  return absl::OkStatus();
}

absl::Status TargetVerifier::Append(std::span<const int32_t> tokens) {
  if (layer_begin_ > 0) return absl::FailedPreconditionError("split mode commits states, not ids");
  const int vocab = target_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
  }
  if (static_cast<int>(committed_.size() + tokens.size()) > cache_.capacity()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "context full: ", committed_.size(), " + ", tokens.size(), " tokens exceed ",
        cache_.capacity()));
  }
  committed_.insert(committed_.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

int TargetVerifier::PendingPrefill() const {
  return std::max(0, static_cast<int>(committed_.size()) - 1 - cache_.length());
}

bool TargetVerifier::BeginPrefill(int max_rows, model::BatchItem* item) {
  const int pending = std::min(PendingPrefill(), std::max(1, max_rows));
  if (pending == 0) return false;
  const int from = cache_.length();
  item->request = model::ForwardRequest{};
  item->request.layer_begin = layer_begin_;
  item->request.logits = model::LogitsMode::kNone;
  if (layer_begin_ > 0) {
    const size_t dim = target_.config().dim;
    item->request.hidden =
        std::span<const float>(prefill_states_.data() + from * dim, pending * dim);
  } else {
    item->request.tokens = std::span<const int32_t>(committed_.data() + from, pending);
  }
  item->cache = &cache_;
  item->result = &out_;
  return true;
}

absl::Status TargetVerifier::EndPrefill(const absl::Status& pass) {
  if (PendingPrefill() == 0) prefill_states_.clear();
  return pass;
}

absl::Status TargetVerifier::CommitStates(model::Engine& engine, std::span<const float> states,
                                          int rows) {
  RETURN_IF_ERROR(AppendStates(states, rows));
  model::BatchItem item;
  while (BeginPrefill(cache_.capacity(), &item)) {
    RETURN_IF_ERROR(EndPrefill(engine.Forward(item.request, item.cache, item.result)));
  }
  return absl::OkStatus();
}

absl::Status TargetVerifier::Commit(model::Engine& engine, std::span<const int32_t> tokens) {
  RETURN_IF_ERROR(Append(tokens));
  model::BatchItem item;
  while (BeginPrefill(cache_.capacity(), &item)) {
    RETURN_IF_ERROR(EndPrefill(engine.Forward(item.request, item.cache, item.result)));
  }
  return absl::OkStatus();
}

absl::StatusOr<VerifyResult> TargetVerifier::VerifyRound(model::Engine& engine,
                                                         std::span<const int32_t> drafts,
                                                         std::span<const int32_t> parents,
                                                         const DraftProbs& q,
                                                         model::ForwardResult* pass,
                                                         std::span<const float> states,
                                                         std::span<const int32_t> context) {
  model::BatchItem item;
  RETURN_IF_ERROR(BeginRound(drafts, parents, q, &item, states, context, pass != nullptr));
  absl::StatusOr<VerifyResult> verdict =
      EndRound(engine.Forward(item.request, item.cache, item.result));
  if (verdict.ok() && pass != nullptr) std::swap(*pass, out_);
  return verdict;
}

absl::Status TargetVerifier::BeginRound(std::span<const int32_t> drafts,
                                        std::span<const int32_t> parents, const DraftProbs& q,
                                        model::BatchItem* item, std::span<const float> states,
                                        std::span<const int32_t> context, bool want_hidden) {
  if (committed_.empty()) return absl::FailedPreconditionError("no committed tokens yet");
  if (PendingPrefill() > 0) {
    return absl::FailedPreconditionError(absl::StrCat(PendingPrefill(),
                                                      " committed positions are not run yet"));
  }
  const int n = static_cast<int>(drafts.size());
  const int m = static_cast<int>(context.size());
  const int vocab = target_.config().vocab_size;
  if (m > 0) {
    if (layer_begin_ > 0) return absl::InvalidArgumentError("context ids are not for split mode");
    if (!parents.empty()) return absl::InvalidArgumentError("context ids go with chains only");
    for (int i = 0; i < m; ++i) {
      if (context[i] < 0 || context[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("context token id ", context[i],
                                                       " at index ", i,
                                                       " is outside the vocabulary [0, ", vocab,
                                                       ")"));
      }
    }
    if (m > Room()) {
      return absl::InvalidArgumentError(absl::StrCat("context of ", m, " tokens and the next ",
                                                     "token do not fit in ", std::max(0, Room()),
                                                     " positions"));
    }
  }
  if (m + n > Room()) {
    return absl::ResourceExhaustedError(absl::StrCat("context full: ", n, " drafts and the next ",
                                                     "token do not fit in ", Room(), " positions"));
  }
  if ((layer_begin_ > 0) !=
      (states.size() == static_cast<size_t>(n + 1) * target_.config().dim)) {
    return absl::InvalidArgumentError(
        layer_begin_ > 0 ? absl::StrCat("split mode needs the states of the root and ", n,
                                        " draft nodes (", n + 1, " rows)")
                         : std::string("states are for split mode"));
  }
  // The tree: node 0 is the last committed token (the last context token when there is
  // context), drafts follow (parents shifted by one). In split mode the root's id may be
  // unknown; it is never compared.
  DraftTree& tree = tree_;
  tree.tokens.assign(1, std::max(0, m > 0 ? context.back() : committed_.back()));
  tree.parents.assign(1, -1);
  const bool chain = parents.empty();
  if (!chain && parents.size() != drafts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the draft has ", n, " tokens but ",
                                                   parents.size(), " parents"));
  }
  for (int i = 0; i < n; ++i) {
    tree.tokens.push_back(drafts[i]);
    tree.parents.push_back(chain ? i : parents[i] + 1);
  }
  RETURN_IF_ERROR(ValidateTree(tree, vocab, n + 1));

  // Draft probabilities are checked whether or not this round samples: they come from outside.
  for (float v : std::span<const float>(q.full.data, q.full.data == nullptr
                                                          ? 0
                                                          : static_cast<size_t>(q.full.rows) * q.full.cols)) {
    if (!std::isfinite(v) || v < 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat("draft q holds ", v, ", not a probability"));
    }
  }
  for (const auto& row : q.sparse) {
    for (const auto& [token, prob] : row) {
      if (token < 0 || token >= vocab || !std::isfinite(prob) || prob < 0.0f) {
        return absl::InvalidArgumentError(absl::StrCat("draft q entry (", token, ", ", prob,
                                                       ") is not a token probability"));
      }
    }
  }
  // Draft distributions come one per draft position; verification wants one per tree node (node
  // i's children were drawn from row i), so the unused leaf row repeats the last.
  q_nodes_ = DraftProbs{};
  round_q_ = &q;
  if (q.kind == DraftProbKind::kFull && q.full.rows == n && n > 0) {
    if (!chain || q.full.cols != vocab) {
      return absl::InvalidArgumentError("full draft probabilities need a chain of vocabulary-wide rows");
    }
    q_full_.assign(q.full.data, q.full.data + static_cast<size_t>(n) * vocab);
    q_full_.insert(q_full_.end(), q_full_.end() - vocab, q_full_.end());
    q_nodes_.kind = DraftProbKind::kFull;
    q_nodes_.full = Rows{q_full_.data(), n + 1, vocab};
    round_q_ = &q_nodes_;
  } else if (q.kind == DraftProbKind::kSparse && static_cast<int>(q.sparse.size()) == n && n > 0) {
    q_nodes_.kind = DraftProbKind::kSparse;
    q_nodes_.sparse = q.sparse;
    q_nodes_.sparse.push_back(q.sparse.back());
    round_q_ = &q_nodes_;
  } else if (q.kind != DraftProbKind::kIdsOnly) {
    return absl::InvalidArgumentError(absl::StrCat("draft probabilities for ", n,
                                                   " draft tokens have the wrong shape"));
  }
  round_base_ = cache_.length();
  round_context_.assign(context.begin(), context.end());
  model::ForwardRequest& req = item->request;
  req = model::ForwardRequest{};
  if (layer_begin_ > 0) {
    req.layer_begin = layer_begin_;
    req.hidden = states;
  } else if (m > 0) {  // one chain: the last committed token, the context, the drafts
    batch_.assign(1, committed_.back());
    batch_.insert(batch_.end(), context.begin(), context.end());
    batch_.insert(batch_.end(), drafts.begin(), drafts.end());
    req.tokens = batch_;
  } else {
    req.tokens = tree.tokens;
  }
  if (!chain) req.parents = tree.parents;
  req.logits = model::LogitsMode::kAll;
  req.return_hidden = want_hidden;
  item->cache = &cache_;
  item->result = &out_;
  round_open_ = true;
  return absl::OkStatus();
}

absl::StatusOr<VerifyResult> TargetVerifier::EndRound(const absl::Status& pass) {
  // A failed pass, or the error of a BeginRound that failed, is the round's result as it is.
  const bool open = round_open_;
  round_open_ = false;
  RETURN_IF_ERROR(pass);
  if (!open) return absl::FailedPreconditionError("no round begun");
  ++forward_passes_;
  const DraftTree& tree = tree_;
  const int m = static_cast<int>(round_context_.size());
  const int base = round_base_;
  const model::ForwardResult& out = out_;

  // The verification rows: the tree's root (the last context token, row m) and its nodes.
  const int rows = static_cast<int>(tree.tokens.size());
  const float* logits = out.data.data() + static_cast<size_t>(m) * out.cols;
  absl::StatusOr<VerifyResult> verdict;
  if (sampler_.greedy()) {
    verdict = VerifyGreedy(tree, Rows{logits, rows, out.cols});
  } else {
    p_rows_.resize(static_cast<size_t>(rows) * out.cols);
    for (int r = 0; r < rows; ++r) {
      sampler_.Distribution(out.Row(m + r), &p_);
      std::copy(p_.begin(), p_.end(), p_rows_.begin() + static_cast<size_t>(r) * out.cols);
    }
    verdict = VerifySampled(tree, Rows{p_rows_.data(), rows, out.cols}, *round_q_, sampler_.rng());
  }
  if (!verdict.ok()) {
    (void)cache_.Truncate(base);  // leave the sequence as it was
    return verdict.status();
  }
  // Keep the committed prefix, the root, the context and the accepted path; the next token is
  // fed next round.
  RETURN_IF_ERROR(cache_.KeepPath(base + m, verdict->path));
  committed_.insert(committed_.end(), round_context_.begin(), round_context_.end());
  for (int32_t token : verdict->Emitted(tree)) committed_.push_back(token);
  return verdict;
}

}  // namespace tandem::spec
