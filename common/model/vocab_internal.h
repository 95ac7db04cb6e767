// Pieces of the tokenizers shared between vocab.cc, vocab_spm.cc and vocab_gpt2.cc, exposed
// here so tests can check them directly. All functions are pure and thread-safe.
#ifndef TANDEM_COMMON_MODEL_VOCAB_INTERNAL_H_
#define TANDEM_COMMON_MODEL_VOCAB_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::model::vocab_internal {

// Length of the UTF-8 character starting at text[pos]: 1..4 for a well-formed sequence (no
// overlongs, surrogates or code points above U+10FFFF), 1 for a stray or truncated byte.
// If `cp` is not null it receives the code point, or -1 for a stray byte.
size_t Utf8CharLen(std::string_view text, size_t pos, int32_t* cp = nullptr);

// Appends the UTF-8 encoding of `cp` (< 0x110000) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// GPT-2's bytes_to_unicode(): the printable code point that stands for byte `b` in token text.
char32_t Gpt2ByteToCodePoint(uint8_t b);
// The inverse: the byte for code point `cp`, or -1 when `cp` stands for no byte.
int Gpt2CodePointToByte(char32_t cp);

// Splits `text` the way the GPT-2 pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does. Every byte of `text` lands in exactly one piece, in order; stray (non-UTF-8) bytes count
// as single characters that are neither letters, numbers nor spaces.
std::vector<std::string_view> Gpt2PreTokenize(std::string_view text);

}  // namespace tandem::model::vocab_internal

#endif  // TANDEM_COMMON_MODEL_VOCAB_INTERNAL_H_
