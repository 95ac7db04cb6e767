// `generate`: local text generation, printed the way llama2.c's `run` prints it.
#include <cstdio>
#include <fstream>

#include "absl/strings/str_format.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "common/util/clock.h"
#include "tools/tandem_model/commands.h"

namespace tandem::tools {

// Prints a token's bytes. Like llama2.c's safe_printf, a piece that is one control byte (not
// printable, not whitespace) is dropped; unlike it, bytes >= 0x80 from byte-fallback tokens are
// kept, so UTF-8 split across tokens comes out whole.
void PrintPiece(const std::string& piece) {
  if (!model::IsPrintablePiece(piece)) return;
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

int GenerateCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(args, {"model", "tokenizer", "prompt", "max-tokens", "temperature", "top-p",
                          "top-k", "seed", "threads", "stats-json", "draft-model", "draft",
                          "spec-tokens", "tree"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->positional().empty()) {
    return Fail(absl::InvalidArgumentError("generate takes no positional arguments"));
  }
  absl::StatusOr<int64_t> max_tokens = flags->Int("max-tokens", 256, 0, 1 << 24);
  absl::StatusOr<int64_t> threads = flags->Int("threads", 1, 1, 256);
  absl::StatusOr<int64_t> top_k = flags->Int("top-k", 0, 0, 1 << 24);
  absl::StatusOr<double> temperature = flags->Double("temperature", 0.0);
  absl::StatusOr<double> top_p = flags->Double("top-p", 1.0);
  absl::StatusOr<uint64_t> seed = flags->Uint64("seed", 0);
  for (const absl::Status& s : {max_tokens.status(), threads.status(), top_k.status(),
                                temperature.status(), top_p.status(), seed.status()}) {
    if (!s.ok()) return Fail(s);
  }
  model::SamplerOptions so;
  so.temperature = static_cast<float>(*temperature);
  so.top_k = static_cast<int>(*top_k);
  so.top_p = static_cast<float>(*top_p);
  so.seed = *seed;
  if (absl::Status s = model::ValidateSamplerOptions(so); !s.ok()) return Fail(s);

  auto loaded = LoadModelFromFlags(*flags);
  if (!loaded.ok()) return Fail(loaded.status());
  const model::Model& m = **loaded;
  const model::Vocab& vocab = m.vocab();
  std::vector<int32_t> prompt = vocab.Encode(flags->String("prompt"), /*add_bos=*/true);
  if (prompt.empty()) prompt.push_back(vocab.bos_id() >= 0 ? vocab.bos_id() : 0);
  const int n_prompt = static_cast<int>(prompt.size());
  if (n_prompt >= m.config().max_seq_len) {
    return Fail(absl::InvalidArgumentError(absl::StrFormat(
        "the prompt is %d tokens but the model's context is %d", n_prompt, m.config().max_seq_len)));
  }
  if (flags->Has("draft-model") || flags->Has("draft")) {
    return GenerateSpeculative(*flags, m, prompt, static_cast<int>(*max_tokens), so,
                               static_cast<int>(*threads));
  }
  const int capacity = static_cast<int>(
      std::min<int64_t>(m.config().max_seq_len, n_prompt + *max_tokens));

  model::ThreadPool pool(static_cast<int>(*threads));
  model::Engine engine(m, &pool);
  auto cache = model::KvCache::Create(m.config(), 0, m.config().n_layers, capacity);
  if (!cache.ok()) return Fail(cache.status());
  model::Sampler sampler(so);
  model::ForwardResult out;

  const double t0 = MonotonicSeconds();
  model::ForwardRequest req;
  req.tokens = prompt;
  req.logits = model::LogitsMode::kLast;
  if (absl::Status s = engine.Forward(req, &*cache, &out); !s.ok()) return Fail(s);
  const double t_prefill = MonotonicSeconds();
  for (int i = 1; i < n_prompt; ++i) PrintPiece(vocab.DecodeNext(prompt[i - 1], prompt[i]));

  int generated = 0;
  int32_t prev = prompt.back();
  bool context_full = false;
  while (generated < *max_tokens) {
    int32_t next = sampler.Sample(out.Row(out.rows - 1));
    if (next == vocab.bos_id() || next == vocab.eos_id()) break;
    PrintPiece(vocab.DecodeNext(prev, next));
    ++generated;
    prev = next;
    if (generated == *max_tokens) break;
    if (cache->length() >= cache->capacity()) {
      context_full = true;
      break;
    }
    req.tokens = std::span<const int32_t>(&next, 1);
    if (absl::Status s = engine.Forward(req, &*cache, &out); !s.ok()) return Fail(s);
  }
  std::printf("\n");
  std::fflush(stdout);
  const double t_end = MonotonicSeconds();
  const double seconds = t_end - t0;
  const double decode_seconds = t_end - t_prefill;
  const double tps = generated > 0 ? generated / seconds : 0.0;
  if (context_full) {
    std::fprintf(stderr, "stopped: the context of %d positions is full\n", cache->capacity());
  }
  std::fprintf(stderr, "prompt %d tokens, generated %d tokens in %.3f s (%.1f tok/s, %d threads)\n",
               n_prompt, generated, seconds, tps, pool.size());
  if (flags->Has("stats-json")) {
    std::ofstream js(flags->String("stats-json"), std::ios::trunc);
    js << absl::StrFormat(
        "{\n  \"model\": %s,\n  \"prompt_tokens\": %d,\n  \"generated_tokens\": %d,\n"
        "  \"seconds\": %.6f,\n  \"tokens_per_second\": %.3f,\n  \"prefill_seconds\": %.6f,\n"
        "  \"decode_tokens_per_second\": %.3f,\n  \"threads\": %d,\n  \"simd\": \"%s\"\n}\n",
        JsonString(m.path()), n_prompt, generated, seconds, tps, t_prefill - t0,
        generated > 1 && decode_seconds > 0 ? (generated - 1) / decode_seconds : 0.0, pool.size(),
        std::string(model::SimdLevelName(model::ActiveSimdLevel())));
    if (!js) return Fail(absl::PermissionDeniedError("cannot write " + flags->String("stats-json")));
  }
  return 0;
}

}  // namespace tandem::tools
