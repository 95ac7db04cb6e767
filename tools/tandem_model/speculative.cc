// `generate --draft-model FILE | --draft early-exit:K | --draft ngram:N [--spec-tokens G]`:
// local speculative decoding with the target verifying every draft in one pass.
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/spec/spec_decoder.h"
#include "common/util/clock.h"
#include "tools/tandem_model/commands.h"

namespace tandem::tools {

int GenerateSpeculative(const Flags& flags, const model::Model& target,
                        const std::vector<int32_t>& prompt, int max_tokens,
                        const model::SamplerOptions& sampler, int threads) {
  if (flags.Has("draft-model") && flags.Has("draft")) {
    return Fail(absl::InvalidArgumentError("give either --draft-model or --draft, not both"));
  }
  // --spec-tokens G, or "auto": adaptive, up to 8 drafts per round.
  const bool adaptive = flags.String("spec-tokens") == "auto";
  absl::StatusOr<int64_t> gamma = adaptive ? absl::StatusOr<int64_t>(8)
                                           : flags.Int("spec-tokens", 4, 0, 64);
  if (!gamma.ok()) return Fail(gamma.status());
  model::ThreadPool pool(threads);
  // The draft samples with the target's settings (the same processing of p and q) and its own
  // random stream.
  spec::ModelDrafterOptions dopt;
  dopt.sampler = sampler;
  dopt.sampler.seed = sampler.seed ^ 0x9e3779b97f4a7c15ull;
  std::unique_ptr<model::Model> draft_model;
  std::unique_ptr<spec::Drafter> drafter;
  if (flags.Has("draft-model")) {
    model::ModelLoadOptions o;
    o.path = flags.String("draft-model");
    auto dm = model::Model::Load(o);
    if (!dm.ok()) return Fail(dm.status());
    draft_model = std::move(*dm);
    if (absl::Status s = spec::CheckDraftVocabulary(*draft_model, target); !s.ok()) return Fail(s);
    auto d = spec::ModelDrafter::Create(*draft_model, &pool, dopt);
    if (!d.ok()) return Fail(d.status());
    drafter = std::move(*d);
  } else {
    auto d = spec::CreateDrafterFromSpec(flags.String("draft"), target, &pool, dopt);
    if (!d.ok()) return Fail(d.status());
    drafter = std::move(*d);
  }

  spec::SpecOptions options;
  options.spec_tokens = static_cast<int>(*gamma);
  options.adaptive = adaptive;
  if (flags.Has("tree")) {
    absl::StatusOr<spec::TreeShape> tree = spec::ParseTreeShape(flags.String("tree"));
    if (!tree.ok()) return Fail(tree.status());
    options.tree = *tree;
  }
  options.sampler = sampler;
  spec::SpecDecoder decoder(target, &pool, drafter.get(), options);
  spec::SpecStats stats;
  const model::Vocab& vocab = target.vocab();
  for (size_t i = 1; i < prompt.size(); ++i) PrintPiece(vocab.DecodeNext(prompt[i - 1], prompt[i]));
  const double t0 = MonotonicSeconds();
  absl::Status s = decoder.Generate(
      prompt, max_tokens,
      [&](int32_t prev, int32_t token) { PrintPiece(vocab.DecodeNext(prev, token)); }, &stats);
  std::printf("\n");
  std::fflush(stdout);
  if (!s.ok()) return Fail(s);
  const double seconds = MonotonicSeconds() - t0;
  if (stats.context_full) std::fprintf(stderr, "stopped: the context is full\n");
  std::fprintf(stderr,
               "prompt %zu tokens, generated %lld tokens in %.3f s (%.1f tok/s), %s draft, "
               "%lld target passes, mean accepted length %.2f\n",
               prompt.size(), static_cast<long long>(stats.generated_tokens), seconds,
               stats.generated_tokens / seconds, drafter->Name().c_str(),
               static_cast<long long>(stats.target_forward_passes), stats.MeanAcceptedLength());
  if (flags.Has("stats-json")) {
    std::vector<std::string> per_pos;
    for (size_t i = 0; i < stats.proposed_per_position.size(); ++i) {
      per_pos.push_back(absl::StrFormat(
          "%.4f", stats.proposed_per_position[i] > 0
                      ? static_cast<double>(stats.accepted_per_position[i]) /
                            stats.proposed_per_position[i]
                      : 0.0));
    }
    std::ofstream js(flags.String("stats-json"), std::ios::trunc);
    js << absl::StrFormat(
        "{\n  \"model\": %s,\n  \"draft\": %s,\n  \"spec_tokens\": %s,\n  \"prompt_tokens\": %d,\n"
        "  \"generated_tokens\": %d,\n  \"seconds\": %.6f,\n  \"tokens_per_second\": %.3f,\n"
        "  \"target_forward_passes\": %d,\n  \"draft_tokens\": %d,\n  \"accepted_tokens\": %d,\n"
        "  \"mean_accepted_length\": %.4f,\n  \"acceptance_per_position\": [%s],\n"
        "  \"draft_seconds\": %.6f,\n  \"verify_seconds\": %.6f,\n  \"prefill_seconds\": %.6f,\n"
        "  \"threads\": %d\n}\n",
        JsonString(target.path()), JsonString(flags.Has("tree") ? drafter->Name() + " tree " + flags.String("tree")
                                                    : drafter->Name()),
        adaptive ? std::string("\"auto\"") : absl::StrCat(*gamma), prompt.size(),
        stats.generated_tokens, seconds, stats.generated_tokens / seconds,
        stats.target_forward_passes, stats.draft_tokens, stats.accepted_tokens,
        stats.MeanAcceptedLength(), absl::StrJoin(per_pos, ", "), stats.draft_seconds,
        stats.verify_seconds, stats.prefill_seconds, pool.size());
    if (!js) return Fail(absl::PermissionDeniedError("cannot write " + flags.String("stats-json")));
  }
  return 0;
}

}  // namespace tandem::tools
