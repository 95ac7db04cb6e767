// Subcommands of the tandem-model tool. Each takes the arguments after its name and returns the
// process exit code; errors are printed to stderr by the command itself.
#ifndef TANDEM_TOOLS_TANDEM_MODEL_COMMANDS_H_
#define TANDEM_TOOLS_TANDEM_MODEL_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model.h"
#include "common/model/sampler.h"
#include "common/util/flags.h"

namespace tandem::tools {

int InfoCommand(const std::vector<std::string>& args);
int ConvertCommand(const std::vector<std::string>& args);
int GenerateCommand(const std::vector<std::string>& args);
int BenchCommand(const std::vector<std::string>& args);
int SynthCommand(const std::vector<std::string>& args);

// Loads --model (or the default model) with --tokenizer. The default is found, in order, from
// $TANDEM_MODEL (a file), $TANDEM_MODELS_DIR/stories260K.bin, the build-time models directory,
// and ../shared/models relative to the working directory. When none exists the error says what
// to do.
absl::StatusOr<std::unique_ptr<model::Model>> LoadModelFromFlags(const Flags& flags);

// Prints a token's bytes to stdout the way llama2.c's `run` does (control-byte pieces dropped).
void PrintPiece(const std::string& piece);

// `generate` with --draft-model / --draft: speculative decoding (common/spec).
int GenerateSpeculative(const Flags& flags, const model::Model& target,
                        const std::vector<int32_t>& prompt, int max_tokens,
                        const model::SamplerOptions& sampler, int threads);

// JSON string literal (with quotes) for s.
std::string JsonString(std::string_view s);

// Prints "error: <message>" to stderr and returns 1 (or 2 for usage errors).
int Fail(const absl::Status& status);

}  // namespace tandem::tools

#endif  // TANDEM_TOOLS_TANDEM_MODEL_COMMANDS_H_
