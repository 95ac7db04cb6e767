// Verification of a speculative draft against the target model's next-token distributions:
// greedy (argmax matching) and lossless sampling (Leviathan/Chen rejection for chains, sequential
// per-child rejection for trees). The functions see only probability rows and token ids, never a
// model or a network, so the cloud verifier and local speculation share them. Draft ids and
// draft probabilities come from outside and are validated.
// Thread-safety: pure functions; the Rng passed in is the caller's.
#ifndef TANDEM_COMMON_SPEC_VERIFY_H_
#define TANDEM_COMMON_SPEC_VERIFY_H_

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/sampler.h"

namespace tandem::spec {

// Row-major probability (or logit) rows: rows x cols floats.
struct Rows {
  const float* data = nullptr;
  int rows = 0;
  int cols = 0;
  std::span<const float> Row(int r) const {
    return {data + static_cast<size_t>(r) * cols, static_cast<size_t>(cols)};
  }
};

// A draft tree. Node 0 is the root: the last committed token, whose target row gives the
// distribution of its children. Every other node i has parents[i] in [0, i) and a draft token.
// A chain of gamma drafts is the tree with parents = {-1, 0, 1, ..., gamma - 1}.
struct DraftTree {
  std::vector<int32_t> tokens;   // tokens[0] is the root's (committed) token
  std::vector<int32_t> parents;  // parents[0] == -1
  static DraftTree Chain(int32_t root_token, std::span<const int32_t> drafts);
};

// How the draft's own distribution is known to the verifier, per tree node (the distribution
// the node's children were drawn from).
enum class DraftProbKind {
  kIdsOnly,  // no probabilities: each draft token is treated as a point mass (q one-hot)
  kFull,     // q rows, one per node, vocabulary wide
  kSparse,   // per node, (token, prob) pairs for the top-k tokens; renormalized to sum to 1
};

struct DraftProbs {
  DraftProbKind kind = DraftProbKind::kIdsOnly;
  Rows full;                                               // kFull: one row per tree node
  std::vector<std::vector<std::pair<int32_t, float>>> sparse;  // kSparse: one list per node
};

struct VerifyResult {
  // Accepted draft nodes, root excluded, in path order (empty when the first draft is rejected).
  std::vector<int32_t> path;
  // The target's token after the accepted path: the correction at the first rejection, or the
  // bonus token when the path ends at a leaf.
  int32_t next_token = -1;
  // Tokens to commit: the accepted drafts' tokens, then next_token.
  std::vector<int32_t> Emitted(const DraftTree& tree) const;
};

// Greedy: follow the child whose token equals the argmax of the current node's target row.
// `target` has one row of logits or probabilities per tree node.
absl::StatusOr<VerifyResult> VerifyGreedy(const DraftTree& tree, const Rows& target);

// Lossless sampling. `target` holds one probability row per node: the target's distribution
// after temperature / top-k / top-p (model::Sampler::Distribution), the same processing the draft
// used for q. A node's children are tried in order:
//   - with q (kFull / kSparse) and a single child (a chain): accept x with min(1, p(x)/q(x)),
//     and on rejection sample from norm(max(0, p - q)) [Leviathan et al.; Chen et al.];
//   - without q, or with several children (a tree whose candidates were chosen, not sampled):
//     accept child x with r(x), else set r(x) = 0 and renormalize, then the next child; after
//     the last child, sample from r. Each step leaves the output distributed exactly as p.
// InvalidArgument for malformed trees, token ids outside the vocabulary, rows of the wrong shape,
// negative or non-finite probabilities, or a draft token whose claimed q is 0.
absl::StatusOr<VerifyResult> VerifySampled(const DraftTree& tree, const Rows& target,
                                           const DraftProbs& draft, model::Rng& rng);

// Checks a tree against a vocabulary size and a node limit.
absl::Status ValidateTree(const DraftTree& tree, int vocab_size, int max_nodes);

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_VERIFY_H_
