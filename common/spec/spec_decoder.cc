// The draft -> verify -> roll back loop (see spec_decoder.h).
#include "common/spec/spec_decoder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/spec/adaptive.h"
#include "common/spec/target_verifier.h"
#include "common/spec/verify.h"
#include "common/util/clock.h"
#include "common/util/status_macros.h"

namespace tandem::spec {

double SpecStats::MeanAcceptedLength() const {
  return target_forward_passes > 0
             ? static_cast<double>(accepted_tokens + target_forward_passes) / target_forward_passes
             : 0.0;
}

SpecDecoder::SpecDecoder(const model::Model& target, model::ThreadPool* pool, Drafter* drafter,
                         const SpecOptions& options)
    : target_(target), engine_(target, pool), drafter_(drafter), options_(options) {}

int SpecDecoder::MaxDraftNodes() const {
  if (!options_.tree) return std::max(0, options_.spec_tokens);
  const TreeShape& t = *options_.tree;
  int64_t nodes = 0, level = 1;
  for (int d = 0; d < t.depth && nodes < 4096; ++d) nodes += (level *= t.width);
  return static_cast<int>(t.kind == TreeShape::Kind::kDynamic ? std::min<int64_t>(nodes, t.budget)
                                                               : std::min<int64_t>(nodes, 4096));
}

absl::Status SpecDecoder::ProposeRound(const std::vector<int32_t>& tokens, int gamma, int room,
                                       DraftTree* tree, Draft* draft) {
  draft->tokens.clear();
  draft->probs.clear();
  if (options_.tree && gamma > 0) {
    RETURN_IF_ERROR(drafter_->ProposeTree(tokens, *options_.tree, tree));
    if (tree->tokens.empty() || tree->tokens[0] != tokens.back() ||
        tree->parents.size() != tree->tokens.size()) {
      return absl::InternalError("drafter returned a tree without the context's last token");
    }
    // Nodes come parents first, so a prefix of the list is still a tree.
    if (static_cast<int>(tree->tokens.size()) - 1 > room) {
      tree->tokens.resize(room + 1);
      tree->parents.resize(room + 1);
    }
    return absl::OkStatus();
  }
  if (drafter_ != nullptr && gamma > 0) {
    RETURN_IF_ERROR(drafter_->Propose(tokens, gamma, draft));
    if (static_cast<int>(draft->tokens.size()) > gamma) draft->tokens.resize(gamma);
  }
  *tree = DraftTree::Chain(tokens.back(), draft->tokens);
  return absl::OkStatus();
}

void SpecDecoder::RecordRound(const DraftTree& tree, int accepted, SpecStats* stats) {
  stats->target_forward_passes++;
  stats->draft_tokens += static_cast<int64_t>(tree.tokens.size()) - 1;
  stats->accepted_tokens += accepted;
  // Depth of the deepest node (chains: the draft length).
  std::vector<int> depth(tree.tokens.size(), 0);
  int max_depth = 0;
  for (size_t i = 1; i < tree.tokens.size(); ++i) {
    depth[i] = depth[tree.parents[i]] + 1;
    max_depth = std::max(max_depth, depth[i]);
  }
  if (static_cast<int>(stats->proposed_per_position.size()) < max_depth) {
    stats->proposed_per_position.resize(max_depth, 0);
    stats->accepted_per_position.resize(max_depth, 0);
  }
  for (int i = 0; i < max_depth; ++i) {
    stats->proposed_per_position[i]++;
    if (i < accepted) stats->accepted_per_position[i]++;
  }
}

void SpecDecoder::ShareFeatures(const DraftTree& tree, const VerifyResult& verdict,
                                const model::ForwardResult& out) {
  // Committed tokens of the round with the hidden state each was predicted from: the root's
  // for the first, then each accepted node's.
  const int dim = target_.config().dim;
  std::vector<float> features;
  std::vector<int32_t> from = {0};
  from.insert(from.end(), verdict.path.begin(), verdict.path.end());
  for (int32_t node : from) {
    features.insert(features.end(), out.hidden.begin() + static_cast<size_t>(node) * dim,
                    out.hidden.begin() + static_cast<size_t>(node + 1) * dim);
  }
  drafter_->ObserveTarget(verdict.Emitted(tree), features, dim);
}

absl::Status SpecDecoder::Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                   const std::function<void(int32_t, int32_t)>& emit,
                                   SpecStats* stats) {
  const model::ModelConfig& c = target_.config();
  const model::Vocab& vocab = target_.vocab();
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt (it needs at least BOS)");
  if (options_.tree && drafter_ == nullptr) {
    return absl::InvalidArgumentError("draft trees need a drafter");
  }
  const int gamma_max = MaxDraftNodes();
  const int capacity = static_cast<int>(std::min<int64_t>(
      c.max_seq_len, static_cast<int64_t>(prompt.size()) + max_new_tokens + gamma_max + 1));
  if (static_cast<int>(prompt.size()) >= capacity && max_new_tokens > 0) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt is ", prompt.size(),
                                                   " tokens but the context is ", c.max_seq_len));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TargetVerifier> verifier,
                   TargetVerifier::Create(target_, capacity, options_.sampler));
  double t0 = MonotonicSeconds();
  RETURN_IF_ERROR(verifier->Commit(engine_, prompt));
  stats->prefill_seconds += MonotonicSeconds() - t0;

  const bool features = drafter_ != nullptr && drafter_->WantsTargetFeatures();
  AdaptiveGamma adaptive(gamma_max);
  Draft draft;
  DraftTree tree;
  model::ForwardResult pass;
  std::vector<int32_t> drafts, parents;
  int generated = 0;
  while (generated < max_new_tokens) {
    const int room = verifier->Room();
    if (room < 0) {
      stats->context_full = true;
      break;
    }
    int wanted = options_.adaptive && !options_.tree ? adaptive.Choose() : gamma_max;
    // An adaptive loop that stopped drafting still probes one draft now and then, so a draft
    // that becomes good again is noticed.
    if (options_.adaptive && wanted == 0 && stats->target_forward_passes % 16 == 15) wanted = 1;
    const int gamma = std::min({wanted, room, max_new_tokens - generated - 1});
    t0 = MonotonicSeconds();
    RETURN_IF_ERROR(ProposeRound(verifier->committed(), gamma, room, &tree, &draft));
    const double draft_seconds = MonotonicSeconds() - t0;

    // The drafts below the last committed token, in the verifier's form.
    drafts.assign(tree.tokens.begin() + 1, tree.tokens.end());
    parents.clear();
    if (options_.tree) {
      for (size_t i = 1; i < tree.parents.size(); ++i) parents.push_back(tree.parents[i] - 1);
    }
    DraftProbs q;
    if (!options_.tree && !draft.probs.empty() &&
        draft.probs.size() == drafts.size() * static_cast<size_t>(c.vocab_size)) {
      q.kind = DraftProbKind::kFull;
      q.full = Rows{draft.probs.data(), static_cast<int>(drafts.size()), c.vocab_size};
    }
    t0 = MonotonicSeconds();
    const size_t before = verifier->committed().size();
    ASSIGN_OR_RETURN(VerifyResult verdict, verifier->VerifyRound(engine_, drafts, parents, q,
                                                                 features ? &pass : nullptr));
    const double verify_seconds = MonotonicSeconds() - t0;
    const int accepted = static_cast<int>(verdict.path.size());

    stats->draft_seconds += draft_seconds;
    stats->verify_seconds += verify_seconds;
    RecordRound(tree, accepted, stats);
    if (!options_.tree) {
      adaptive.ObserveRound(static_cast<int>(drafts.size()), accepted);
      adaptive.ObserveCosts(static_cast<int>(drafts.size()), draft_seconds, verify_seconds);
    }
    if (features) ShareFeatures(tree, verdict, pass);

    const std::vector<int32_t>& all = verifier->committed();
    for (size_t i = before; i < all.size(); ++i) {
      if (all[i] == vocab.bos_id() || all[i] == vocab.eos_id()) return absl::OkStatus();
      emit(all[i - 1], all[i]);
      ++generated;
      stats->generated_tokens++;
      if (generated == max_new_tokens) break;
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem::spec
