// Maps llama.cpp's tokenizer.ggml.* GGUF keys to VocabData and back. Thread-safety: stateless.
#include "common/model/gguf_vocab.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/model/mapped_file.h"
#include "common/util/status_macros.h"

namespace tandem::model {
namespace {

constexpr char kModelKey[] = "tokenizer.ggml.model";
constexpr char kPreKey[] = "tokenizer.ggml.pre";
constexpr char kTokensKey[] = "tokenizer.ggml.tokens";
constexpr char kScoresKey[] = "tokenizer.ggml.scores";
constexpr char kTypesKey[] = "tokenizer.ggml.token_type";
constexpr char kMergesKey[] = "tokenizer.ggml.merges";
constexpr char kBosKey[] = "tokenizer.ggml.bos_token_id";
constexpr char kEosKey[] = "tokenizer.ggml.eos_token_id";
constexpr char kUnkKey[] = "tokenizer.ggml.unknown_token_id";
constexpr char kAddBosKey[] = "tokenizer.ggml.add_bos_token";

// Reads an optional token id into *id; keeps the default when the key is absent.
absl::Status ReadTokenId(const GgufFile& gguf, const char* key, int32_t* id) {
  absl::StatusOr<int64_t> v = gguf.GetInt(key);
  if (absl::IsNotFound(v.status())) return absl::OkStatus();
  if (!v.ok()) return v.status();
  // Converters write "none" as uint32 -1.
  if (*v < 0 || *v == std::numeric_limits<uint32_t>::max()) {
    *id = -1;
  } else if (*v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s = %d is out of range", key, *v));
  } else {
    *id = static_cast<int32_t>(*v);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VocabData> VocabDataFromGguf(const GgufFile& gguf) {
  absl::StatusOr<std::string> model = gguf.GetString(kModelKey);
  if (!model.ok()) return model.status();
  VocabData data;
  if (*model == "llama") {
    data.kind = TokenizerKind::kSpm;
    data.unk_id = 0, data.bos_id = 1, data.eos_id = 2, data.add_bos = true;
  } else if (*model == "gpt2") {
    data.kind = TokenizerKind::kGpt2;
    data.unk_id = -1, data.bos_id = -1, data.eos_id = -1, data.add_bos = false;
  } else {
    return absl::UnimplementedError(
        absl::StrCat("unsupported tokenizer model '", *model, "' (", kModelKey, ")"));
  }
  ASSIGN_OR_RETURN(data.tokens, gguf.GetStringArray(kTokensKey));
  const int64_t n = static_cast<int64_t>(data.tokens.size());
  // Defaults that fall outside a small vocabulary mean "none".
  for (int32_t* id : {&data.unk_id, &data.bos_id, &data.eos_id}) {
    if (*id >= n) *id = -1;
  }

  absl::StatusOr<std::vector<float>> scores = gguf.GetFloatArray(kScoresKey);
  if (scores.ok()) {
    data.scores = std::move(*scores);
  } else if (!absl::IsNotFound(scores.status())) {
    return scores.status();
  }
  absl::StatusOr<std::vector<int64_t>> types = gguf.GetIntArray(kTypesKey);
  if (types.ok()) {
    data.types.reserve(types->size());
    for (int64_t t : *types) {
      // Create() rejects unknown values; keep them recognisably wrong rather than truncated.
      data.types.push_back(t < 0 || t > 1000 ? -1 : static_cast<int32_t>(t));
    }
  } else if (!absl::IsNotFound(types.status())) {
    return types.status();
  }
  absl::StatusOr<std::vector<std::string>> merges = gguf.GetStringArray(kMergesKey);
  if (merges.ok()) {
    data.merges = std::move(*merges);
  } else if (!absl::IsNotFound(merges.status())) {
    return merges.status();
  }
  RETURN_IF_ERROR(ReadTokenId(gguf, kBosKey, &data.bos_id));
  RETURN_IF_ERROR(ReadTokenId(gguf, kEosKey, &data.eos_id));
  RETURN_IF_ERROR(ReadTokenId(gguf, kUnkKey, &data.unk_id));
  absl::StatusOr<bool> add_bos = gguf.GetBool(kAddBosKey);
  if (add_bos.ok()) {
    data.add_bos = *add_bos;
  } else if (!absl::IsNotFound(add_bos.status())) {
    return add_bos.status();
  }
  return data;
}

absl::StatusOr<Vocab> LoadVocabFromGguf(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Parse(file->bytes());
  absl::StatusOr<VocabData> data =
      gguf.ok() ? VocabDataFromGguf(**gguf) : absl::StatusOr<VocabData>(gguf.status());
  absl::StatusOr<Vocab> vocab = data.ok() ? Vocab::Create(*std::move(data))
                                          : absl::StatusOr<Vocab>(data.status());
  if (!vocab.ok()) {
    return absl::Status(vocab.status().code(), absl::StrCat(path, ": ", vocab.status().message()));
  }
  return vocab;
}

void WriteVocabToGguf(const Vocab& vocab, GgufWriter* writer) {
  VocabData data = vocab.ToData();
  const bool spm = data.kind == TokenizerKind::kSpm;
  writer->SetString(kModelKey, spm ? "llama" : "gpt2");
  if (!spm) writer->SetString(kPreKey, "gpt-2");
  if (spm) {
    for (std::string& t : data.tokens) t = absl::StrReplaceAll(t, {{" ", "\xE2\x96\x81"}});
  }
  writer->SetStringArray(kTokensKey, data.tokens);
  if (!data.scores.empty()) writer->SetFloat32Array(kScoresKey, data.scores);
  writer->SetInt32Array(kTypesKey, data.types);
  if (!data.merges.empty()) writer->SetStringArray(kMergesKey, data.merges);
  // Absent keys read back as the defaults above, so "none" is written as uint32 -1.
  const std::pair<const char*, int32_t> ids[] = {
      {kBosKey, data.bos_id}, {kEosKey, data.eos_id}, {kUnkKey, data.unk_id}};
  for (const auto& [key, id] : ids) {
    writer->SetUint32(key, id >= 0 ? static_cast<uint32_t>(id) : 0xFFFFFFFFu);
  }
  writer->SetBool(kAddBosKey, data.add_bos);
}

}  // namespace tandem::model
