// tandem-edge: generate text on the edge with drafts verified by a remote tandem-verifier.
//
//   tandem-edge generate --verifier HOST:PORT --model M [--tokenizer T] [--prompt P]
//       [--max-tokens N] [--temperature X] [--top-k K] [--top-p P] [--seed S]
//       [--mode spec|local] [--draft-model F | --draft early-exit:K | --draft ngram:N]
//       [--spec-tokens G] [--stats-json F] [--timeout-s S]
//
// Prints like `tandem-model generate`. In spec mode a verifier error (unreachable, refused) ends
// the run with a non-zero exit and the status on stderr; local mode needs no verifier.
#include <cstdio>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/flags.h"
#include "edge/edge_generator.h"

namespace {

using namespace tandem;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-edge: error: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  return absl::IsInvalidArgument(s) ? 2 : 1;
}

void PrintPiece(const std::string& piece) {
  if (!model::IsPrintablePiece(piece)) return;
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

int Generate(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, {"verifier", "model", "tokenizer", "prompt", "max-tokens",
                                   "temperature", "top-k", "top-p", "seed", "mode", "draft-model",
                                   "draft", "spec-tokens", "stats-json", "timeout-s"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("model")) return Fail(absl::InvalidArgumentError("--model FILE is required"));
  edge::EdgeOptions o;
  const std::string mode = flags->String("mode", "spec");
  if (mode == "spec") {
    o.mode = edge::EdgeMode::kSpec;
    if (!flags->Has("verifier")) return Fail(absl::InvalidArgumentError("spec mode needs --verifier HOST:PORT"));
  } else if (mode == "local") {
    o.mode = edge::EdgeMode::kLocal;
  } else {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--mode must be spec or local (auto and cloud are not implemented yet), got '", mode, "'")));
  }
  auto max_tokens = flags->Int("max-tokens", 256, 0, 1 << 24);
  auto gamma = flags->Int("spec-tokens", 4, 0, 64);
  auto top_k = flags->Int("top-k", 0, 0, 1 << 24);
  auto temperature = flags->Double("temperature", 0.0);
  auto top_p = flags->Double("top-p", 1.0);
  auto seed = flags->Uint64("seed", 0);
  auto timeout = flags->Double("timeout-s", 60.0);
  for (const absl::Status& s : {max_tokens.status(), gamma.status(), top_k.status(),
                                temperature.status(), top_p.status(), seed.status(),
                                timeout.status()}) {
    if (!s.ok()) return Fail(s);
  }
  o.spec_tokens = static_cast<int>(*gamma);
  o.sampler.temperature = static_cast<float>(*temperature);
  o.sampler.top_k = static_cast<int>(*top_k);
  o.sampler.top_p = static_cast<float>(*top_p);
  o.sampler.seed = *seed;
  o.rpc_timeout_s = *timeout;
  if (absl::Status s = model::ValidateSamplerOptions(o.sampler); !s.ok()) return Fail(s);

  model::ModelLoadOptions mo;
  mo.path = flags->String("model");
  mo.tokenizer_path = flags->String("tokenizer");
  auto local = model::Model::Load(mo);
  if (!local.ok()) return Fail(local.status());
  // The drafter: a separate draft model, the local model's first layers, n-gram, or the whole
  // local model.
  spec::ModelDrafterOptions dopt;
  dopt.sampler = o.sampler;
  dopt.sampler.seed = o.sampler.seed ^ 0x9e3779b97f4a7c15ull;
  std::unique_ptr<model::Model> draft_model;
  std::unique_ptr<spec::Drafter> drafter;
  if (flags->Has("draft-model")) {
    model::ModelLoadOptions d;
    d.path = flags->String("draft-model");
    auto dm = model::Model::Load(d);
    if (!dm.ok()) return Fail(dm.status());
    draft_model = std::move(*dm);
    if (absl::Status s = spec::CheckDraftVocabulary(*draft_model, **local); !s.ok()) return Fail(s);
    auto dr = spec::ModelDrafter::Create(*draft_model, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  } else if (flags->Has("draft")) {
    auto dr = spec::CreateDrafterFromSpec(flags->String("draft"), **local, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  } else {
    auto dr = spec::ModelDrafter::Create(**local, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  }
  std::shared_ptr<grpc::Channel> channel;
  if (o.mode == edge::EdgeMode::kSpec) {
    channel = grpc::CreateChannel(flags->String("verifier"), grpc::InsecureChannelCredentials());
  }
  edge::EdgeGenerator gen(**local, drafter.get(), channel, o);
  const model::Vocab& vocab = (*local)->vocab();
  std::vector<int32_t> prompt = vocab.Encode(flags->String("prompt"), true);
  if (prompt.empty()) prompt.push_back(vocab.bos_id() >= 0 ? vocab.bos_id() : 0);
  for (size_t i = 1; i < prompt.size(); ++i) PrintPiece(vocab.DecodeNext(prompt[i - 1], prompt[i]));
  edge::EdgeStats stats;
  absl::Status s = gen.Generate(prompt, static_cast<int>(*max_tokens),
                                [&](int32_t prev, int32_t t) { PrintPiece(vocab.DecodeNext(prev, t)); },
                                &stats);
  std::printf("\n");
  std::fflush(stdout);
  if (!s.ok()) return Fail(s);
  std::fprintf(stderr, "tandem-edge: %lld tokens, %lld round trips, %lld bytes up, %lld down\n",
               static_cast<long long>(stats.generated_tokens),
               static_cast<long long>(stats.round_trips), static_cast<long long>(stats.bytes_up),
               static_cast<long long>(stats.bytes_down));
  if (flags->Has("stats-json")) {
    std::ofstream js(flags->String("stats-json"), std::ios::trunc);
    js << absl::StrFormat(
        "{\n  \"mode\": \"%s\",\n  \"prompt_tokens\": %d,\n  \"generated_tokens\": %d,\n"
        "  \"round_trips\": %d,\n  \"bytes_up\": %d,\n  \"bytes_down\": %d,\n"
        "  \"rtt_seconds\": %.6f,\n  \"cloud_compute_seconds\": %.6f,\n"
        "  \"draft_tokens\": %d,\n  \"accepted_tokens\": %d,\n  \"tokens_verified\": %d,\n"
        "  \"tokens_from_cloud\": 0,\n  \"tokens_local_fallback\": %d\n}\n",
        mode, prompt.size(), stats.generated_tokens, stats.round_trips, stats.bytes_up,
        stats.bytes_down, stats.rtt_seconds, stats.cloud_compute_seconds, stats.draft_tokens,
        stats.accepted_tokens, stats.tokens_verified, stats.tokens_local_fallback);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "generate") {
    std::fprintf(stderr, "usage: tandem-edge generate --verifier HOST:PORT --model M [flags]\n");
    return 2;
  }
  return Generate(std::vector<std::string>(argv + 2, argv + argc));
}
