// tandem-model: inspect, convert, benchmark and run models with Tandem's engine.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "tools/tandem_model/commands.h"

namespace tandem::tools {
namespace {

constexpr char kUsage[] =
    "usage: tandem-model COMMAND [flags]\n"
    "  info FILE                          metadata, tensor types, parameter count and size\n"
    "  convert IN OUT --type f32|f16|q8_0|q4_0 [--tokenizer T]\n"
    "                                     llama2.c or GGUF in, GGUF out\n"
    "  generate [--model M] [--tokenizer T] [--prompt P] [--max-tokens N] [--temperature X]\n"
    "           [--top-k K] [--top-p P] [--seed S] [--threads N] [--stats-json FILE]\n"
    "           [--draft-model F | --draft early-exit:K | --draft ngram:N] [--spec-tokens G|auto]\n"
    "           [--tree static:K,D | --tree dynamic:BUDGET]\n"
    "                                     print the prompt and its continuation\n"
    "  bench [--model M] --json FILE [--threads N]\n"
    "                                     decode/prefill speed, batch cost, memory bandwidth\n"
    "  synth OUT [--dim D --hidden H --layers L --heads N --kv-heads K --vocab V --seq-len S\n"
    "         --type T --seed S --untied] [--llama2c-tokenizer TOK]\n"
    "                                     write a model with seeded random weights\n"
    "The default model is stories260K.bin from ../shared/models (override with --model,\n"
    "$TANDEM_MODEL or $TANDEM_MODELS_DIR).\n";

}  // namespace

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20) {
      out += absl::StrFormat("\\u%04x", ch);
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return absl::IsInvalidArgument(status) ? 2 : 1;
}

absl::StatusOr<std::unique_ptr<model::Model>> LoadModelFromFlags(const Flags& flags) {
  model::ModelLoadOptions options;
  options.tokenizer_path = flags.String("tokenizer");
  if (flags.Has("model")) {
    options.path = flags.String("model");
    return model::Model::Load(options);
  }
  std::vector<std::string> candidates;
  if (const char* m = std::getenv("TANDEM_MODEL"); m != nullptr && *m != '\0') {
    candidates.push_back(m);
  } else {
    if (const char* d = std::getenv("TANDEM_MODELS_DIR"); d != nullptr && *d != '\0') {
      candidates.push_back(absl::StrCat(d, "/stories260K.bin"));
    }
    candidates.push_back(absl::StrCat(TANDEM_DEFAULT_MODELS_DIR, "/stories260K.bin"));
    candidates.push_back("../shared/models/stories260K.bin");
  }
  for (const std::string& c : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(c, ec)) {
      options.path = c;
      return model::Model::Load(options);
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "no model given and the default model was not found (looked for: ",
      absl::StrJoin(candidates, ", "),
      "). Put stories260K.bin and tok512.bin in ../shared/models beside the checkout (see "
      "shared/models/README.md), or set TANDEM_MODELS_DIR=/dir/with/models, or pass --model FILE "
      "[--tokenizer FILE]."));
}

}  // namespace tandem::tools

int main(int argc, char** argv) {
  using namespace tandem::tools;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "info") return InfoCommand(args);
  if (cmd == "convert") return ConvertCommand(args);
  if (cmd == "generate") return GenerateCommand(args);
  if (cmd == "bench") return BenchCommand(args);
  if (cmd == "synth") return SynthCommand(args);
  std::fprintf(stderr, "error: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
