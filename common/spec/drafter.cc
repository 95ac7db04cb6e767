// Model and n-gram drafters (see drafter.h).
#include "common/spec/drafter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"

namespace tandem::spec {

absl::StatusOr<std::unique_ptr<ModelDrafter>> ModelDrafter::Create(
    const model::Model& model, model::ThreadPool* pool, const ModelDrafterOptions& options) {
  const int n_layers = model.config().n_layers;
  const int layers = options.layers < 0 ? n_layers : options.layers;
  if (layers < 1 || layers > n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("draft layers ", layers, " must be in [1, ",
                                                   n_layers, "]"));
  }
  RETURN_IF_ERROR(model::ValidateSamplerOptions(options.sampler));
  ASSIGN_OR_RETURN(model::KvCache cache,
                   model::KvCache::Create(model.config(), 0, layers, options.max_context));
  return std::unique_ptr<ModelDrafter>(new ModelDrafter(model, pool, std::move(cache), options));
}

ModelDrafter::ModelDrafter(const model::Model& model, model::ThreadPool* pool,
                           model::KvCache cache, const ModelDrafterOptions& options)
    : model_(model),
      engine_(model, pool),
      cache_(std::move(cache)),
      options_(options),
      layers_(cache_.layer_end()),
      sampler_(options.sampler) {}

std::string ModelDrafter::Name() const {
  return layers_ < model_.config().n_layers ? absl::StrCat("early-exit:", layers_)
                                            : std::string("model");
}

absl::Status ModelDrafter::Sync(std::span<const int32_t> context) {
  // Keep the longest common prefix of what is cached and the new context (minus its last
  // token, which is fed below to get fresh logits).
  size_t keep = 0;
  const size_t limit = std::min(cached_.size(), context.size() - 1);
  while (keep < limit && cached_[keep] == context[keep]) ++keep;
  RETURN_IF_ERROR(cache_.Truncate(static_cast<int>(keep)));
  cached_.resize(keep);
  model::ForwardRequest req;
  req.layer_end = layers_;
  req.early_exit = true;
  req.logits = model::LogitsMode::kLast;
  req.tokens = context.subspan(keep);
  RETURN_IF_ERROR(engine_.Forward(req, &cache_, &out_));
  cached_.insert(cached_.end(), context.begin() + keep, context.end());
  return absl::OkStatus();
}

absl::Status ModelDrafter::Propose(std::span<const int32_t> context, int max_tokens, Draft* out) {
  out->tokens.clear();
  out->probs.clear();
  out->confidence.clear();
  if (context.empty()) return absl::InvalidArgumentError("empty context");
  // Room: the drafts themselves need cache slots, except the last one (never fed).
  max_tokens = std::min(max_tokens, cache_.capacity() - static_cast<int>(context.size()) + 1);
  if (max_tokens <= 0) return absl::OkStatus();
  RETURN_IF_ERROR(Sync(context));
  std::vector<float> q;
  for (int i = 0; i < max_tokens; ++i) {
    std::span<const float> logits = out_.Row(out_.rows - 1);
    int32_t token;
    if (sampler_.greedy()) {
      token = model::Argmax(logits);
      out->confidence.push_back(model::SoftmaxAt(logits, token));
    } else {
      sampler_.Distribution(logits, &q);
      token = sampler_.SampleFrom(q);
      out->probs.insert(out->probs.end(), q.begin(), q.end());
      out->confidence.push_back(q[token]);
    }
    out->tokens.push_back(token);
    if (i + 1 == max_tokens) break;
    model::ForwardRequest req;
    req.layer_end = layers_;
    req.early_exit = true;
    req.logits = model::LogitsMode::kLast;
    req.tokens = std::span<const int32_t>(&out->tokens.back(), 1);
    RETURN_IF_ERROR(engine_.Forward(req, &cache_, &out_));
    cached_.push_back(token);
  }
  return absl::OkStatus();
}

absl::Status ModelDrafter::TreeLogits(const DraftTree& tree) {
  const int base = cache_.length();
  model::ForwardRequest req;
  req.layer_end = layers_;
  req.early_exit = true;
  req.logits = model::LogitsMode::kAll;
  req.tokens = tree.tokens;
  req.parents = tree.parents;
  RETURN_IF_ERROR(engine_.Forward(req, &cache_, &out_));
  return cache_.Truncate(base);
}

absl::Status ModelDrafter::ProposeTree(std::span<const int32_t> context, const TreeShape& shape,
                                       DraftTree* out) {
  if (context.empty()) return absl::InvalidArgumentError("empty context");
  if (shape.width < 1 || shape.depth < 1 || shape.width > 64 || shape.depth > 64 ||
      (shape.kind == TreeShape::Kind::kDynamic && (shape.budget < 1 || shape.budget > 1024))) {
    return absl::InvalidArgumentError("tree width and depth must be in [1, 64], budget in [1, 1024]");
  }
  // Sync everything but the last token; the root (last token) is part of each tree pass.
  std::span<const int32_t> prefix = context.first(context.size() - 1);
  if (prefix.empty()) {
    cached_.clear();
    RETURN_IF_ERROR(cache_.Truncate(0));
  } else {
    RETURN_IF_ERROR(Sync(prefix));
  }
  const int room = cache_.capacity() - cache_.length() - 1;
  out->tokens.assign(1, context.back());
  out->parents.assign(1, -1);
  std::vector<double> cum(1, 1.0);  // cumulative draft probability per node
  std::vector<int32_t> frontier = {0};
  std::vector<float> probs;
  for (int d = 0; d < shape.depth && !frontier.empty(); ++d) {
    RETURN_IF_ERROR(TreeLogits(*out));
    if (shape.kind == TreeShape::Kind::kDynamic &&
        static_cast<int>(frontier.size()) > shape.width) {
      std::partial_sort(frontier.begin(), frontier.begin() + shape.width, frontier.end(),
                        [&](int32_t a, int32_t b) { return cum[a] > cum[b] || (cum[a] == cum[b] && a < b); });
      frontier.resize(shape.width);
    }
    std::vector<int32_t> next;
    for (int32_t node : frontier) {
      model::Softmax(out_.Row(node), 1.0f, &probs);
      std::vector<int32_t> order(probs.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
      const int k = std::min<int>(shape.width, static_cast<int>(order.size()));
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
      });
      for (int i = 0; i < k && static_cast<int>(out->tokens.size()) - 1 < room; ++i) {
        out->tokens.push_back(order[i]);
        out->parents.push_back(node);
        cum.push_back(cum[node] * probs[order[i]]);
        next.push_back(static_cast<int32_t>(out->tokens.size()) - 1);
      }
    }
    frontier = std::move(next);
  }
  if (shape.kind == TreeShape::Kind::kDynamic &&
      static_cast<int>(out->tokens.size()) - 1 > shape.budget) {
    // Keep the `budget` most probable nodes. Cumulative probability never grows along a path,
    // so with ties broken toward earlier (shallower) nodes the kept set contains its ancestors.
    std::vector<int32_t> order(out->tokens.size() - 1);
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i) + 1;
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return cum[a] > cum[b]; });
    order.resize(shape.budget);
    std::sort(order.begin(), order.end());
    std::vector<int32_t> remap(out->tokens.size(), -1);
    remap[0] = 0;
    DraftTree kept;
    kept.tokens.push_back(out->tokens[0]);
    kept.parents.push_back(-1);
    for (int32_t node : order) {
      const int32_t parent = remap[out->parents[node]];
      if (parent < 0) continue;  // an ancestor was dropped (ties at probability 0)
      remap[node] = static_cast<int32_t>(kept.tokens.size());
      kept.tokens.push_back(out->tokens[node]);
      kept.parents.push_back(parent);
    }
    *out = std::move(kept);
  }
  return absl::OkStatus();
}

absl::Status NgramDrafter::Propose(std::span<const int32_t> context, int max_tokens, Draft* out) {
  out->tokens.clear();
  out->probs.clear();
  out->confidence.clear();
  const int n = static_cast<int>(context.size());
  for (int len = std::min(max_ngram_, n - 1); len >= 1; --len) {
    // The suffix context[n - len, n) occurring earlier, ending before n - 1; most recent first.
    for (int end = n - 1; end >= len; --end) {
      if (!std::equal(context.begin() + (end - len), context.begin() + end,
                      context.begin() + (n - len))) {
        continue;
      }
      for (int k = end; k < n && static_cast<int>(out->tokens.size()) < max_tokens; ++k) {
        out->tokens.push_back(context[k]);
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

absl::Status NgramDrafter::ProposeTree(std::span<const int32_t> context, const TreeShape& shape,
                                       DraftTree* out) {
  if (context.empty()) return absl::InvalidArgumentError("empty context");
  out->tokens.assign(1, context.back());
  out->parents.assign(1, -1);
  const int n = static_cast<int>(context.size());
  const int max_nodes = shape.kind == TreeShape::Kind::kDynamic ? shape.budget : 1 << 20;
  int branches = 0;
  std::vector<int> used_ends;
  for (int len = std::min(max_ngram_, n - 1); len >= 1 && branches < shape.width; --len) {
    for (int end = n - 1; end >= len && branches < shape.width; --end) {
      if (std::find(used_ends.begin(), used_ends.end(), end) != used_ends.end()) continue;
      if (!std::equal(context.begin() + (end - len), context.begin() + end,
                      context.begin() + (n - len))) {
        continue;
      }
      used_ends.push_back(end);
      // Insert context[end, end + depth) into the trie below the root.
      int32_t node = 0;
      bool added = false;
      for (int k = end; k < n && k < end + shape.depth; ++k) {
        int32_t child = -1;
        for (size_t c = 1; c < out->tokens.size(); ++c) {
          if (out->parents[c] == node && out->tokens[c] == context[k]) child = static_cast<int32_t>(c);
        }
        if (child < 0) {
          if (static_cast<int>(out->tokens.size()) - 1 >= max_nodes) break;
          out->tokens.push_back(context[k]);
          out->parents.push_back(node);
          child = static_cast<int32_t>(out->tokens.size()) - 1;
          added = true;
        }
        node = child;
      }
      if (added) ++branches;
    }
  }
  return absl::OkStatus();
}

std::string NgramDrafter::Name() const { return absl::StrCat("ngram:", max_ngram_); }

absl::Status CheckDraftVocabulary(const model::Model& draft, const model::Model& target) {
  const model::Vocab& d = draft.vocab();
  const model::Vocab& t = target.vocab();
  if (d.size() != t.size() || d.bos_id() != t.bos_id() || d.eos_id() != t.eos_id()) {
    return absl::InvalidArgumentError(absl::StrCat("the draft model's vocabulary (", d.size(),
                                                   " tokens) is not the target's (", t.size(),
                                                   " tokens)"));
  }
  for (int32_t i = 0; i < t.size(); ++i) {
    if (d.TokenBytes(i) != t.TokenBytes(i)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the draft model's token ", i, " differs from the target's"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Drafter>> CreateDrafterFromSpec(const std::string& spec,
                                                               const model::Model& model,
                                                               model::ThreadPool* pool,
                                                               ModelDrafterOptions options) {
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  int value = 0;
  if ((kind != "early-exit" && kind != "ngram") || colon == std::string::npos ||
      !absl::SimpleAtoi(spec.substr(colon + 1), &value) || value < 1 || value > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--draft must be early-exit:K or ngram:N with a positive integer, got '", spec, "'"));
  }
  if (kind == "ngram") return std::unique_ptr<Drafter>(std::make_unique<NgramDrafter>(value));
  if (value >= model.config().n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("early-exit:", value,
                                                   " must use fewer than the target's ",
                                                   model.config().n_layers, " layers"));
  }
  options.layers = value;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelDrafter> d, ModelDrafter::Create(model, pool, options));
  return std::unique_ptr<Drafter>(std::move(d));
}

absl::StatusOr<TreeShape> ParseTreeShape(const std::string& text) {
  TreeShape t;
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tree must be static:K,D (K children per node, depth D) or dynamic:BUDGET, got '", text,
        "'"));
  };
  size_t colon = text.find(':');
  if (colon == std::string::npos) return bad();
  const std::string kind = text.substr(0, colon), args = text.substr(colon + 1);
  if (kind == "static") {
    size_t comma = args.find(',');
    if (comma == std::string::npos || !absl::SimpleAtoi(args.substr(0, comma), &t.width) ||
        !absl::SimpleAtoi(args.substr(comma + 1), &t.depth) || t.width < 1 || t.width > 16 ||
        t.depth < 1 || t.depth > 16) {
      return bad();
    }
    t.kind = TreeShape::Kind::kStatic;
  } else if (kind == "dynamic") {
    if (!absl::SimpleAtoi(args, &t.budget) || t.budget < 1 || t.budget > 256) return bad();
    t.kind = TreeShape::Kind::kDynamic;
    t.width = 4;  // frontier nodes expanded per depth, and children per expanded node
    t.depth = std::min(t.budget, 8);
  } else {
    return bad();
  }
  return t;
}

}  // namespace tandem::spec
