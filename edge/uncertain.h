// The `uncertain` policy (U-HLM style; lossy, opt-in with EdgeOptions::uncertain_threshold).
//
// Before each spec round (chains of token ids: kSpec, and kAuto's spec rounds; never trees or
// split rounds), the edge drafts one token at a time and commits at once, without waiting for a
// verdict, every leading draft whose confidence is at least the threshold. The confidence is the
// drafter's own probability of the token (spec::Draft::confidence: greedy, the softmax
// probability of its argmax; sampling, q of the sampled token). The stretch ends at the first
// draft below the threshold, or after a bounded run (UnverifiedRunLimit) so that the cloud stays
// in the loop. The round then goes up with the stretch's tokens as DraftRound.context_ids and the
// uncertain drafts as token_ids; the verifier commits the context unchecked and verifies the
// drafts after it in the same forward pass, so the policy costs no extra round.
//
// Lossy by design: a confident draft that the target would not have produced stands, and the
// text then differs from the target's from that token on (measured in tests/edge/uncertain_test.cc).
// With sampling the output is not distributed as the target's either: the committed drafts follow
// the draft model's distribution, truncated to its confident tokens. Drafters without a
// distribution (n-gram) have no confidence, so with them every draft is verified.
//
// Resumption needs nothing more: a new session's prompt is the whole committed prefix, unverified
// tokens included. Context still unsent when the generation ends is never sent: no verdict needs it.
#ifndef TANDEM_EDGE_UNCERTAIN_H_
#define TANDEM_EDGE_UNCERTAIN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/spec/drafter.h"
#include "edge/edge_generator.h"

namespace tandem::edge {

// At most this many tokens per draft token of a round (EdgeOptions::spec_tokens, at least 1) are
// committed without a verdict between two rounds.
inline constexpr int kUnverifiedRunPerDraft = 4;

// InvalidArgument for a threshold that is negative or not a number, or set (> 0) for a mode or
// draft shape the policy does not serve (cloud, local, split, trees).
absl::Status CheckUncertainOptions(const EdgeOptions& options);

// Whether the next spec round runs the policy: it is on, there is a drafter, and the round sends
// a chain of token ids (not a tree, not split states).
bool UncertainApplies(const EdgeOptions& options, const spec::Drafter* drafter, bool split_round);

// The longest stretch of unverified tokens before a round.
int UnverifiedRunLimit(const EdgeOptions& options);

// Drafts one token at a time after `committed` (the sequence `commit` appends to) and commits
// each draft whose confidence is at least `threshold` through `commit`, until a draft falls below
// it, the drafter proposes none or gives no confidence, `max_tokens` are committed, or `commit`
// returns false (the generation is over). The draft below the threshold is dropped: the round
// drafts again from the new end (a model drafter's cache makes that one position of extra work).
// Adds the drafting time to `*draft_seconds`. Returns the number of drafts handed to `commit`.
absl::StatusOr<int> CommitConfidentDrafts(spec::Drafter& drafter,
                                          const std::vector<int32_t>& committed, double threshold,
                                          int max_tokens,
                                          const std::function<bool(int32_t)>& commit,
                                          double* draft_seconds);

}  // namespace tandem::edge

#endif  // TANDEM_EDGE_UNCERTAIN_H_
