// Drafters propose the next tokens for the target to verify. A drafter sees only the committed
// token sequence, so it works the same whether verification is local or in the cloud, and new
// kinds (an EAGLE head on the target's hidden states) plug in behind the same interface.
// Implementations here: a model drafter (a separate draft model, or the target's own first k
// layers with its final head: early exit) and prompt-lookup n-gram drafting.
// Thread-safety: a Drafter is used by one decoding loop at a time.
#ifndef TANDEM_COMMON_SPEC_DRAFTER_H_
#define TANDEM_COMMON_SPEC_DRAFTER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "common/spec/verify.h"

namespace tandem::spec {

// The shape of a draft tree.
struct TreeShape {
  enum class Kind {
    kStatic,   // every node down to `depth` gets the draft's top-`width` children
    kDynamic,  // EAGLE-2: expand the `width` most probable frontier nodes per depth, then keep
               // the `budget` nodes with the highest cumulative draft probability
  };
  Kind kind = Kind::kStatic;
  int width = 2;
  int depth = 3;
  int budget = 16;  // kDynamic only
};

struct Draft {
  std::vector<int32_t> tokens;
  // Optional: the distribution each token was drawn from (one vocabulary-wide row per token),
  // for lossless sampled verification. Empty for deterministic drafters (greedy, n-gram).
  std::vector<float> probs;
  // Optional: the drafter's confidence in each token, the probability its own distribution gave
  // it (greedy: the softmax probability of the argmax; sampling: q of the sampled token). The
  // edge's `uncertain` policy reads it. Empty when the drafter has no distribution (n-gram).
  std::vector<float> confidence;
};

class Drafter {
 public:
  virtual ~Drafter() = default;
  // Proposes up to `max_tokens` tokens to follow `context` (the whole committed sequence, BOS
  // first). May propose fewer, or none. The drafter may keep state between calls (a KV cache);
  // `context` always extends a previous call's context by the tokens committed since, or starts
  // over, and the drafter must handle both.
  virtual absl::Status Propose(std::span<const int32_t> context, int max_tokens, Draft* out) = 0;
  // Proposes a tree of candidates below the last context token (node 0 of `out` is that token).
  // Candidates are chosen, not sampled, so verification treats them as point masses.
  // Unimplemented for drafters that only make chains.
  virtual absl::Status ProposeTree(std::span<const int32_t> context, const TreeShape& shape,
                                   DraftTree* out) {
    return absl::UnimplementedError(Name() + " drafts chains only");
  }
  // A short description for logs and stats, e.g. "ngram:3" or "early-exit:2".
  virtual std::string Name() const = 0;

  // Drafters that read the target's features (an EAGLE head) return true; the decoder then calls
  // ObserveTarget after every verification with the committed tokens of the round and the
  // target's final hidden states (pre-norm, `dim` floats per token) that produced them: row i is
  // the state at committed[i]'s predecessor position, i.e. the one the target predicted it from.
  virtual bool WantsTargetFeatures() const { return false; }
  virtual void ObserveTarget(std::span<const int32_t> committed, std::span<const float> hidden,
                             int dim) {}
};

struct ModelDrafterOptions {
  // Layers of `model` to run; < 0 means all. With fewer, the model's final norm and classifier
  // are applied after layer `layers` (early exit).
  int layers = -1;
  // Sampling for the draft tokens; greedy when temperature is 0. With sampling the drafter
  // returns the distributions it drew from.
  model::SamplerOptions sampler;
  int max_context = 0;  // KV capacity; 0 = the model's context length
};

// A drafter that runs a model (any file the engine loads, sharing the target's vocabulary), or
// the first `layers` layers of the target itself.
class ModelDrafter : public Drafter {
 public:
  static absl::StatusOr<std::unique_ptr<ModelDrafter>> Create(const model::Model& model,
                                                              model::ThreadPool* pool,
                                                              const ModelDrafterOptions& options);
  absl::Status Propose(std::span<const int32_t> context, int max_tokens, Draft* out) override;
  absl::Status ProposeTree(std::span<const int32_t> context, const TreeShape& shape,
                           DraftTree* out) override;
  std::string Name() const override;

 private:
  // Logits of every node of `tree` (root = the last context token). Leaves the cache as Sync
  // left it. REQUIRES: Sync(context) was called.
  absl::Status TreeLogits(const DraftTree& tree);
  ModelDrafter(const model::Model& model, model::ThreadPool* pool, model::KvCache cache,
               const ModelDrafterOptions& options);
  // Brings the cache to all of `context`, reusing the longest cached common prefix, and leaves
  // the logits after its last token in out_.
  absl::Status Sync(std::span<const int32_t> context);

  const model::Model& model_;
  model::Engine engine_;
  model::KvCache cache_;
  ModelDrafterOptions options_;
  int layers_;
  model::Sampler sampler_;
  std::vector<int32_t> cached_;  // tokens whose keys/values are in cache_
  model::ForwardResult out_;
};

// Prompt lookup: finds the most recent earlier occurrence of the longest suffix of the context
// (up to `max_ngram` tokens, at least 1) and proposes the tokens that followed it.
class NgramDrafter : public Drafter {
 public:
  explicit NgramDrafter(int max_ngram) : max_ngram_(max_ngram) {}
  absl::Status Propose(std::span<const int32_t> context, int max_tokens, Draft* out) override;
  // A trie of the continuations (up to shape.depth tokens) of up to shape.width earlier matches,
  // longest n-gram first, most recent first; at most shape.budget nodes for dynamic shapes.
  absl::Status ProposeTree(std::span<const int32_t> context, const TreeShape& shape,
                           DraftTree* out) override;
  std::string Name() const override;

 private:
  int max_ngram_;
};

// OK when `draft` can draft for `target`: the same vocabulary, token for token. Otherwise
// InvalidArgument saying where they differ.
absl::Status CheckDraftVocabulary(const model::Model& draft, const model::Model& target);

// Builds a drafter from its command-line spelling: "early-exit:K" (the first K layers of
// `model`, K below its layer count) or "ngram:N". InvalidArgument names the accepted forms.
absl::StatusOr<std::unique_ptr<Drafter>> CreateDrafterFromSpec(const std::string& spec,
                                                               const model::Model& model,
                                                               model::ThreadPool* pool,
                                                               ModelDrafterOptions options);

// Parses a tree shape's command-line spelling: "static:K,D" (K children per node, depth D) or
// "dynamic:BUDGET" (EAGLE-2 style, BUDGET nodes). InvalidArgument names the accepted forms.
absl::StatusOr<TreeShape> ParseTreeShape(const std::string& text);

}  // namespace tandem::spec

#endif  // TANDEM_COMMON_SPEC_DRAFTER_H_
