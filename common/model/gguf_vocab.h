// Conversion between a tokenizer stored in GGUF metadata (llama.cpp's tokenizer.ggml.* keys)
// and VocabData / Vocab. Thread-safety: stateless functions; a GgufWriter must not be shared
// while WriteVocabToGguf runs.
#ifndef TANDEM_COMMON_MODEL_GGUF_VOCAB_H_
#define TANDEM_COMMON_MODEL_GGUF_VOCAB_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/model/gguf.h"
#include "common/model/vocab.h"

namespace tandem::model {

// Reads tokenizer.ggml.model ("llama" -> kSpm, "gpt2" -> kGpt2), .tokens, .scores,
// .token_type, .merges, .bos_token_id, .eos_token_id, .unknown_token_id and .add_bos_token.
// Absent ids default to llama.cpp's SPM defaults (unk 0, BOS 1, EOS 2) for "llama" and to none
// for "gpt2"; an id of 0xFFFFFFFF means none. add_bos defaults to true for "llama" and false for
// "gpt2". NotFound when the file has no tokenizer, InvalidArgument for a malformed one,
// Unimplemented for other tokenizer models. The result still has to pass Vocab::Create.
absl::StatusOr<VocabData> VocabDataFromGguf(const GgufFile& gguf);

// VocabDataFromGguf followed by Vocab::Create, for a GGUF file on disk.
absl::StatusOr<Vocab> LoadVocabFromGguf(const std::string& path);

// Adds the tokenizer.ggml.* keys that VocabDataFromGguf reads. SPM pieces are written with the
// space spelled U+2581, as llama.cpp expects, whatever form the Vocab was built from.
void WriteVocabToGguf(const Vocab& vocab, GgufWriter* writer);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_GGUF_VOCAB_H_
