// Greedy and lossless sampled verification of draft chains and trees (see verify.h).
#include "common/spec/verify.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem::spec {
namespace {

std::vector<std::vector<int32_t>> Children(const DraftTree& tree) {
  std::vector<std::vector<int32_t>> kids(tree.tokens.size());
  for (size_t i = 1; i < tree.tokens.size(); ++i) kids[tree.parents[i]].push_back(static_cast<int32_t>(i));
  return kids;
}

absl::Status CheckRows(const Rows& rows, int want_rows, int vocab, const char* what) {
  if (rows.data == nullptr || rows.rows != want_rows || rows.cols != vocab) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", rows.rows, " x ", rows.cols,
                                                   " values, expected ", want_rows, " x ", vocab));
  }
  return absl::OkStatus();
}

// A copy of a probability row in double precision, checked: finite, >= 0, positive mass.
absl::StatusOr<std::vector<double>> Distribution(std::span<const float> row, const char* what,
                                                 int node) {
  std::vector<double> r(row.begin(), row.end());
  double total = 0.0;
  for (double v : r) {
    if (!std::isfinite(v) || v < 0.0) {
      return absl::InvalidArgumentError(absl::StrCat(what, " row ", node, " holds ", v,
                                                     ", not a probability"));
    }
    total += v;
  }
  if (!(total > 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " row ", node, " has no mass"));
  }
  return r;
}

// Draws an index with probability r[i] / sum(r). REQUIRES: positive mass.
int32_t SampleIndex(const std::vector<double>& r, model::Rng& rng) {
  double total = 0.0;
  for (double v : r) total += v;
  const double u = rng.UniformDouble() * total;
  double acc = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i] <= 0.0) continue;
    acc += r[i];
    last = static_cast<int32_t>(i);
    if (u < acc) return last;
  }
  return last;  // rounding put u at the very top
}

// The draft distribution of a node's children as a dense, normalized vector.
absl::StatusOr<std::vector<double>> DraftRow(const DraftProbs& d, int node, int vocab) {
  if (d.kind == DraftProbKind::kFull) return Distribution(d.full.Row(node), "draft q", node);
  std::vector<double> q(vocab, 0.0);
  double total = 0.0;
  for (const auto& [token, prob] : d.sparse[node]) {
    if (token < 0 || token >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("draft q token ", token, " at node ", node,
                                                     " is outside the vocabulary"));
    }
    if (!std::isfinite(prob) || prob < 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat("draft q at node ", node, " holds ", prob));
    }
    q[token] += prob;
    total += prob;
  }
  if (!(total > 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat("draft q at node ", node, " has no mass"));
  }
  for (double& v : q) v /= total;
  return q;
}

}  // namespace

DraftTree DraftTree::Chain(int32_t root_token, std::span<const int32_t> drafts) {
  DraftTree t;
  t.tokens.push_back(root_token);
  t.parents.push_back(-1);
  for (size_t i = 0; i < drafts.size(); ++i) {
    t.tokens.push_back(drafts[i]);
    t.parents.push_back(static_cast<int32_t>(i));
  }
  return t;
}

std::vector<int32_t> VerifyResult::Emitted(const DraftTree& tree) const {
  std::vector<int32_t> out;
  for (int32_t node : path) out.push_back(tree.tokens[node]);
  out.push_back(next_token);
  return out;
}

absl::Status ValidateTree(const DraftTree& tree, int vocab_size, int max_nodes) {
  const size_t n = tree.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("draft tree is empty (it needs a root)");
  if (tree.parents.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("draft tree has ", n, " tokens but ",
                                                   tree.parents.size(), " parents"));
  }
  if (static_cast<int64_t>(n) > max_nodes) {
    return absl::InvalidArgumentError(absl::StrCat("draft tree has ", n,
                                                   " nodes, over the limit ", max_nodes));
  }
  if (tree.parents[0] != -1) return absl::InvalidArgumentError("draft tree root must have parent -1");
  for (size_t i = 0; i < n; ++i) {
    if (tree.tokens[i] < 0 || tree.tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("draft token ", tree.tokens[i], " at node ", i,
                                                     " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
    if (i > 0 && (tree.parents[i] < 0 || tree.parents[i] >= static_cast<int32_t>(i))) {
      return absl::InvalidArgumentError(absl::StrCat("draft tree parents[", i, "] = ",
                                                     tree.parents[i], " must be in [0, ", i, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<VerifyResult> VerifyGreedy(const DraftTree& tree, const Rows& target) {
  RETURN_IF_ERROR(ValidateTree(tree, target.cols, target.rows));
  RETURN_IF_ERROR(CheckRows(target, static_cast<int>(tree.tokens.size()), target.cols, "target"));
  const auto kids = Children(tree);
  VerifyResult result;
  int32_t node = 0;
  while (true) {
    const int32_t best = model::Argmax(target.Row(node));
    int32_t next = -1;
    for (int32_t c : kids[node]) {
      if (tree.tokens[c] == best) {
        next = c;
        break;
      }
    }
    if (next < 0) {
      result.next_token = best;  // the correction, or the bonus token after a leaf
      return result;
    }
    result.path.push_back(next);
    node = next;
  }
}

absl::StatusOr<VerifyResult> VerifySampled(const DraftTree& tree, const Rows& target,
                                           const DraftProbs& draft, model::Rng& rng) {
  const int vocab = target.cols;
  const int n = static_cast<int>(tree.tokens.size());
  RETURN_IF_ERROR(ValidateTree(tree, vocab, target.rows));
  RETURN_IF_ERROR(CheckRows(target, n, vocab, "target"));
  if (draft.kind == DraftProbKind::kFull) RETURN_IF_ERROR(CheckRows(draft.full, n, vocab, "draft q"));
  if (draft.kind == DraftProbKind::kSparse && static_cast<int>(draft.sparse.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("draft q has ", draft.sparse.size(),
                                                   " node lists for ", n, " nodes"));
  }
  const auto kids = Children(tree);
  VerifyResult result;
  int32_t node = 0;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<double> r, Distribution(target.Row(node), "target", node));
    const std::vector<int32_t>& children = kids[node];
    int32_t accepted = -1;
    if (draft.kind != DraftProbKind::kIdsOnly && children.size() == 1) {
      // Rejection sampling against the draft distribution q the child was drawn from.
      ASSIGN_OR_RETURN(std::vector<double> q, DraftRow(draft, node, vocab));
      double total = 0.0;
      for (double v : r) total += v;
      for (double& v : r) v /= total;
      const int32_t x = tree.tokens[children[0]];
      if (!(q[x] > 0.0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "draft token ", x, " at node ", children[0], " has draft probability 0"));
      }
      if (rng.UniformDouble() < std::min(1.0, r[x] / q[x])) {
        accepted = children[0];
      } else {
        std::vector<double> residual(vocab);
        double mass = 0.0;
        for (int i = 0; i < vocab; ++i) mass += (residual[i] = std::max(0.0, r[i] - q[i]));
        if (!(mass > 0.0)) {
          // p <= q everywhere means p == q, where rejection has probability 0; rounding can
          // still land here, and p with x removed is then the right residual.
          residual = r;
          residual[x] = 0.0;
        }
        result.next_token = SampleIndex(residual, rng);
        return result;
      }
    } else {
      // Candidates as point masses: accept with the remaining probability, else remove them.
      for (int32_t c : children) {
        const int32_t x = tree.tokens[c];
        double total = 0.0;
        for (double v : r) total += v;
        if (!(total > 0.0)) break;
        if (rng.UniformDouble() * total < r[x]) {
          accepted = c;
          break;
        }
        r[x] = 0.0;
      }
    }
    if (accepted < 0) {
      double total = 0.0;
      for (double v : r) total += v;
      if (!(total > 0.0)) {
        // Every token with mass was a rejected candidate, which has probability 0; rounding
        // aside, fall back to the untouched target row.
        ASSIGN_OR_RETURN(r, Distribution(target.Row(node), "target", node));
      }
      result.next_token = SampleIndex(r, rng);
      return result;
    }
    result.path.push_back(accepted);
    node = accepted;
  }
}

}  // namespace tandem::spec
