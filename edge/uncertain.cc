// The `uncertain` policy's stretch of confident drafts (see uncertain.h).
#include "edge/uncertain.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/util/clock.h"
#include "common/util/status_macros.h"

namespace tandem::edge {

absl::Status CheckUncertainOptions(const EdgeOptions& o) {
  if (!(o.uncertain_threshold >= 0)) {  // NaN too
    return absl::InvalidArgumentError(absl::StrCat(
        "the uncertain threshold must be a probability >= 0 (0 = off), got ", o.uncertain_threshold));
  }
  if (o.uncertain_threshold == 0) return absl::OkStatus();
  if (o.mode != EdgeMode::kSpec && o.mode != EdgeMode::kAuto) {
    return absl::InvalidArgumentError(absl::StrCat("the uncertain policy drafts in spec and auto ",
                                                   "modes, not in ", EdgeModeName(o.mode)));
  }
  if (o.tree.has_value()) {
    return absl::InvalidArgumentError("the uncertain policy drafts chains, not trees");
  }
  return absl::OkStatus();
}

bool UncertainApplies(const EdgeOptions& o, const spec::Drafter* drafter, bool split_round) {
  return o.uncertain_threshold > 0 && drafter != nullptr && !o.tree.has_value() && !split_round;
}

int UnverifiedRunLimit(const EdgeOptions& o) {
  return kUnverifiedRunPerDraft * std::max(1, o.spec_tokens);
}

absl::StatusOr<int> CommitConfidentDrafts(spec::Drafter& drafter,
                                          const std::vector<int32_t>& committed, double threshold,
                                          int max_tokens,
                                          const std::function<bool(int32_t)>& commit,
                                          double* draft_seconds) {
  int n = 0;
  spec::Draft next;
  while (n < max_tokens) {
    const double t0 = MonotonicSeconds();
    absl::Status s = drafter.Propose(committed, 1, &next);
    *draft_seconds += MonotonicSeconds() - t0;
    RETURN_IF_ERROR(s);
    if (next.tokens.empty() || next.confidence.empty() || next.confidence[0] < threshold) break;
    ++n;
    if (!commit(next.tokens[0])) break;
  }
  return n;
}

}  // namespace tandem::edge
