// Tokenizers: SentencePiece-style BPE (llama: score-driven merges with byte fallback, as in
// llama2.c and llama.cpp's SPM vocab) and GPT-2 byte-level BPE (ranked merges after the GPT-2
// pre-tokenizer). A Vocab is immutable after creation and safe to use from any thread.
#ifndef TANDEM_COMMON_MODEL_VOCAB_H_
#define TANDEM_COMMON_MODEL_VOCAB_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::model {

enum class TokenizerKind { kSpm, kGpt2 };

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

// Everything needed to build a Vocab, as found in a GGUF file or a llama2.c tokenizer.bin.
struct VocabData {
  TokenizerKind kind = TokenizerKind::kSpm;
  std::vector<std::string> tokens;  // SPM: pieces, space as ' ' or U+2581; GPT-2: byte-to-unicode form
  std::vector<float> scores;        // SPM merge priorities; may be empty for GPT-2
  std::vector<int32_t> types;       // TokenType per token; empty = infer (llama2.c files)
  std::vector<std::string> merges;  // GPT-2 only: "left right", rank = index
  int32_t bos_id = 1;               // -1 = none
  int32_t eos_id = 2;               // -1 = none
  int32_t unk_id = 0;               // -1 = none
  bool add_bos = true;              // whether Encode(..., add_bos=true) callers should add BOS
};

class Vocab {
 public:
  // Validates `data` (sizes agree, ids in range, merges refer to tokens) and builds lookup tables.
  // Without types, they are inferred as llama2.c implies: unk_id -> kUnknown, bos/eos ->
  // kControl, SPM pieces spelled exactly "<0xXX>" -> kByte, the rest kNormal. Only kNormal,
  // kUserDefined and kUndefined tokens can come out of Encode's merges. InvalidArgument names
  // the offending token or merge.
  static absl::StatusOr<Vocab> Create(VocabData data);

  // Parses a llama2.c tokenizer.bin image. llama2.c files do not store the vocabulary size, so
  // the model's is given; the file must hold exactly that many entries.
  static absl::StatusOr<Vocab> FromLlama2cTokenizer(std::span<const uint8_t> bytes,
                                                    int32_t vocab_size);
  static absl::StatusOr<Vocab> LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size);

  // Tokenizes UTF-8 (or arbitrary) bytes; never fails. With add_bos, BOS comes first (when the
  // vocabulary has one). Special tokens in the text are not parsed (plain text only).
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;

  // The raw bytes of one token: byte-fallback tokens give their byte, U+2581 gives ' ', GPT-2
  // tokens are mapped back from byte-to-unicode. Control and unused tokens, and ids out of
  // range, give "". The unknown token gives its text (e.g. "<unk>"), as llama2.c prints it.
  std::string TokenBytes(int32_t id) const;

  // Bytes to print for `id` when it follows `prev`, exactly as llama2.c's decode(): after BOS the
  // SPM dummy-prefix space is dropped.
  std::string DecodeNext(int32_t prev, int32_t id) const;

  // Concatenated bytes of `ids` (control tokens skipped; the SPM dummy-prefix space of the first
  // text token dropped), so Decode(Encode(s, b)) == s for every byte string s.
  std::string Decode(std::span<const int32_t> ids) const;

  TokenizerKind kind() const { return kind_; }
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  bool add_bos() const { return add_bos_; }
  const std::string& TokenText(int32_t id) const { return tokens_[id]; }  // as stored
  float Score(int32_t id) const;     // 0 when the vocabulary has no scores or id is out of range
  TokenType Type(int32_t id) const;  // kUndefined when id is out of range
  const std::vector<std::string>& merges() const { return merges_; }

  // The stored form, so a converter can write the vocabulary back out (e.g. into GGUF). Token
  // texts are as given to Create; types are always filled in (inferred ones included).
  VocabData ToData() const;

 private:
  // A GPT-2 merge, found by the ids of its two halves.
  struct MergeResult {
    int32_t rank;  // index in merges_; lower merges first
    int32_t id;    // token of the concatenation
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  Vocab() = default;
  absl::Status BuildTables();  // fills the lookup tables below from the stored form
  // Appends the tokens of `text` (no BOS) to `out`; implemented in vocab_spm.cc / vocab_gpt2.cc.
  void EncodeSpm(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeGpt2Word(std::string_view word, std::vector<int32_t>* out) const;

  TokenizerKind kind_ = TokenizerKind::kSpm;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;  // always one per token (inferred when the data had none)
  std::vector<std::string> merges_;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  bool add_bos_ = true;
  // Pieces that text may turn into (normal, user-defined, undefined types only). SPM keys spell
  // the space as ' '; GPT-2 keys are the stored byte-to-unicode form.
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  absl::flat_hash_map<uint64_t, MergeResult> merge_rank_;  // GPT-2: PairKey(left, right) -> merge
  // SPM: byte-fallback token <0xXX> of each byte; GPT-2: the token of the byte's single
  // byte-to-unicode character. -1 = none.
  int32_t byte_token_[256] = {};
  std::vector<std::string> token_bytes_;  // TokenBytes(id) for every id, precomputed
};

// Whether a decoded piece should be printed, as llama2.c's safe_printf decides: a piece that is a
// single control byte (not printable, not whitespace) is dropped. Unlike llama2.c, single bytes
// >= 0x80 (byte-fallback parts of UTF-8) are kept, so split characters print whole.
bool IsPrintablePiece(std::string_view piece);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_VOCAB_H_
