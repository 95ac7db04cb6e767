// Vocab construction (validation, lookup tables, the llama2.c tokenizer.bin reader) and decoding.
// The encoders live in vocab_spm.cc and vocab_gpt2.cc. A Vocab is immutable once built, so
// every const method may run concurrently.
#include "common/model/vocab.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model/mapped_file.h"
#include "common/model/vocab_internal.h"

namespace tandem::model {
namespace {

static_assert(std::endian::native == std::endian::little, "tokenizer.bin is little-endian");

// Far above any real vocabulary (the largest in use have ~256K entries), low enough that a
// hostile size cannot make us allocate gigabytes before the data proves it.
constexpr int64_t kMaxVocabSize = int64_t{1} << 24;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Whether text may turn into this token: everything but control/unknown/byte/unused.
bool IsTextType(TokenType t) {
  return t == TokenType::kNormal || t == TokenType::kUserDefined || t == TokenType::kUndefined;
}

// Parses "<0xXX>" (hex digits in either case) into its byte; -1 if `s` is not of that form.
int ParseByteToken(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  int value = 0;
  for (char c : s.substr(3, 2)) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return -1;
    value = value * 16 + d;
  }
  return value;
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// The raw bytes a GPT-2 token stands for: each byte-to-unicode character maps back to its byte;
// characters outside that alphabet (added special tokens) are kept as they are.
std::string Gpt2TokenBytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t cp;
    size_t len = vocab_internal::Utf8CharLen(text, pos, &cp);
    int b = cp >= 0 ? vocab_internal::Gpt2CodePointToByte(static_cast<char32_t>(cp)) : -1;
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(text.substr(pos, len));
    }
    pos += len;
  }
  return out;
}

int32_t ReadI32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

float ReadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

namespace vocab_internal {

size_t Utf8CharLen(std::string_view text, size_t pos, int32_t* cp) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t left = text.size() - pos;
  const uint8_t c = s[pos];
  int32_t dummy;
  int32_t& out = cp != nullptr ? *cp : dummy;
  out = -1;
  if (c < 0x80) {
    out = c;
    return 1;
  }
  size_t len;
  int32_t value;
  int32_t min_value;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, value = c & 0x1F, min_value = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, value = c & 0x0F, min_value = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, value = c & 0x07, min_value = 0x10000;
  } else {
    return 1;  // continuation byte or invalid lead byte
  }
  if (left < len) return 1;
  for (size_t k = 1; k < len; ++k) {
    if ((s[pos + k] & 0xC0) != 0x80) return 1;
    value = (value << 6) | (s[pos + k] & 0x3F);
  }
  if (value < min_value || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 1;
  out = value;
  return len;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace vocab_internal

absl::StatusOr<Vocab> Vocab::Create(VocabData data) {
  const size_t n = data.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("vocabulary has no tokens");
  if (n > static_cast<size_t>(kMaxVocabSize)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vocabulary has %d tokens; at most %d are supported", n, kMaxVocabSize));
  }
  if (!data.scores.empty() && data.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary has %d tokens but %d scores", n, data.scores.size()));
  }
  if (!data.types.empty() && data.types.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary has %d tokens but %d token types", n, data.types.size()));
  }
  for (size_t i = 0; i < data.scores.size(); ++i) {
    if (std::isnan(data.scores[i])) {
      return absl::InvalidArgumentError(absl::StrFormat("score of token %d is NaN", i));
    }
  }
  for (size_t i = 0; i < data.types.size(); ++i) {
    if (data.types[i] < static_cast<int32_t>(TokenType::kUndefined) ||
        data.types[i] > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token %d has unknown token type %d", i, data.types[i]));
    }
  }
  const std::pair<const char*, int32_t> specials[] = {
      {"BOS", data.bos_id}, {"EOS", data.eos_id}, {"unknown", data.unk_id}};
  for (const auto& [name, id] : specials) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s token id %d is outside the vocabulary of %d tokens (-1 = none)", name, id, n));
    }
  }

  Vocab v;
  v.kind_ = data.kind;
  v.tokens_ = std::move(data.tokens);
  v.scores_ = std::move(data.scores);
  v.merges_ = std::move(data.merges);
  v.bos_id_ = data.bos_id;
  v.eos_id_ = data.eos_id;
  v.unk_id_ = data.unk_id;
  v.add_bos_ = data.add_bos;
  v.types_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (!data.types.empty()) {
      v.types_[i] = static_cast<TokenType>(data.types[i]);
    } else if (static_cast<int32_t>(i) == v.unk_id_) {
      v.types_[i] = TokenType::kUnknown;
    } else if (static_cast<int32_t>(i) == v.bos_id_ || static_cast<int32_t>(i) == v.eos_id_) {
      v.types_[i] = TokenType::kControl;
    } else if (v.kind_ == TokenizerKind::kSpm && ParseByteToken(v.tokens_[i]) >= 0) {
      v.types_[i] = TokenType::kByte;
    } else {
      v.types_[i] = TokenType::kNormal;
    }
  }
  absl::Status status = v.BuildTables();
  if (!status.ok()) return status;
  return v;
}

absl::Status Vocab::BuildTables() {
  const int32_t n = size();
  std::fill(std::begin(byte_token_), std::end(byte_token_), -1);
  token_bytes_.assign(n, std::string());
  piece_to_id_.reserve(n);
  for (int32_t id = 0; id < n; ++id) {
    const TokenType type = types_[id];
    const std::string& text = tokens_[id];
    if (kind_ == TokenizerKind::kSpm) {
      if (type == TokenType::kByte) {
        int b = ParseByteToken(text);
        if (b < 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "token %d has type BYTE but its text '%s' is not of the form <0xXX>", id,
              absl::CHexEscape(text)));
        }
        if (byte_token_[b] < 0) byte_token_[b] = id;
        token_bytes_[id] = std::string(1, static_cast<char>(b));
        continue;
      }
      std::string piece = ReplaceAll(text, kSpmSpace, " ");
      if (IsTextType(type) && !piece.empty()) piece_to_id_.try_emplace(piece, id);
      if (type != TokenType::kControl && type != TokenType::kUnused) {
        token_bytes_[id] = std::move(piece);
      }
    } else {
      if (IsTextType(type) && !text.empty()) piece_to_id_.try_emplace(text, id);
      if (type != TokenType::kControl && type != TokenType::kUnused) {
        token_bytes_[id] = Gpt2TokenBytes(text);
      }
    }
  }
  if (kind_ != TokenizerKind::kGpt2) return absl::OkStatus();

  for (int b = 0; b < 256; ++b) {
    std::string ch;
    vocab_internal::AppendUtf8(vocab_internal::Gpt2ByteToCodePoint(static_cast<uint8_t>(b)), &ch);
    if (auto it = piece_to_id_.find(ch); it != piece_to_id_.end()) byte_token_[b] = it->second;
  }
  // Merges may name any token; only those between text tokens that yield a text token are used.
  absl::flat_hash_map<std::string_view, int32_t> all_tokens;
  all_tokens.reserve(n);
  for (int32_t id = 0; id < n; ++id) all_tokens.try_emplace(tokens_[id], id);
  merge_rank_.reserve(merges_.size());
  std::string joined;
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    const std::string& line = merges_[rank];
    // Search from 1 so that a left half that is itself a space still splits correctly.
    const size_t sep = line.size() < 2 ? std::string::npos : line.find(' ', 1);
    if (sep == std::string::npos || sep + 1 >= line.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "merge %d ('%s') is not of the form 'left right'", rank, absl::CHexEscape(line)));
    }
    const std::string_view left = std::string_view(line).substr(0, sep);
    const std::string_view right = std::string_view(line).substr(sep + 1);
    auto l = all_tokens.find(left);
    auto r = all_tokens.find(right);
    if (l == all_tokens.end() || r == all_tokens.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("merge %d ('%s') refers to a token that is not in the vocabulary", rank,
                          absl::CHexEscape(line)));
    }
    joined.assign(left);
    joined.append(right);
    auto m = all_tokens.find(joined);
    if (m == all_tokens.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("merge %d ('%s') yields '%s', which is not in the vocabulary", rank,
                          absl::CHexEscape(line), absl::CHexEscape(joined)));
    }
    if (!IsTextType(types_[l->second]) || !IsTextType(types_[r->second]) ||
        !IsTextType(types_[m->second])) {
      continue;
    }
    merge_rank_.try_emplace(PairKey(l->second, r->second),
                            MergeResult{static_cast<int32_t>(rank), m->second});
  }
  return absl::OkStatus();
}

absl::StatusOr<Vocab> Vocab::FromLlama2cTokenizer(std::span<const uint8_t> bytes,
                                                  int32_t vocab_size) {
  if (vocab_size <= 0 || vocab_size > kMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocab_size %d is out of range (1..%d)", vocab_size, kMaxVocabSize));
  }
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer file is %d bytes, too short for its max_token_length header", bytes.size()));
  }
  const int32_t max_len = ReadI32(bytes.data());
  if (max_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_token_length %d at offset 0 must be positive", max_len));
  }
  // Every entry takes at least 8 bytes; check before reserving memory for vocab_size entries.
  if ((bytes.size() - 4) / 8 < static_cast<size_t>(vocab_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer file of %d bytes cannot hold %d tokens (at least 8 bytes each)", bytes.size(),
        vocab_size));
  }
  VocabData data;
  data.kind = TokenizerKind::kSpm;
  data.tokens.reserve(vocab_size);
  data.scores.reserve(vocab_size);
  size_t off = 4;
  for (int32_t id = 0; id < vocab_size; ++id) {
    if (bytes.size() - off < 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer file truncated at offset %d: token %d needs a score and a length", off, id));
    }
    const float score = ReadF32(bytes.data() + off);
    const int32_t len = ReadI32(bytes.data() + off + 4);
    if (len < 0 || len > max_len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token %d at offset %d has length %d, outside 0..max_token_length (%d)", id, off + 4,
          len, max_len));
    }
    off += 8;
    if (bytes.size() - off < static_cast<size_t>(len)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tokenizer file truncated at offset %d: token %d needs %d bytes, %d remain", off, id,
          len, bytes.size() - off));
    }
    data.tokens.emplace_back(reinterpret_cast<const char*>(bytes.data() + off), len);
    data.scores.push_back(score);
    off += len;
  }
  if (off != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d trailing bytes at offset %d after %d tokens (is vocab_size right?)",
        bytes.size() - off, off, vocab_size));
  }
  // llama2.c fixes the special ids: 0 = <unk>, 1 = BOS, 2 = EOS.
  data.unk_id = 0;
  data.bos_id = vocab_size > 1 ? 1 : -1;
  data.eos_id = vocab_size > 2 ? 2 : -1;
  data.add_bos = true;
  return Create(std::move(data));
}

absl::StatusOr<Vocab> Vocab::LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<Vocab> vocab = FromLlama2cTokenizer((*file)->bytes(), vocab_size);
  if (!vocab.ok()) {
    return absl::Status(vocab.status().code(),
                        absl::StrCat(path, ": ", vocab.status().message()));
  }
  return vocab;
}

std::vector<int32_t> Vocab::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  if (kind_ == TokenizerKind::kSpm) {
    EncodeSpm(text, &out);
  } else {
    EncodeGpt2(text, &out);
  }
  return out;
}

std::string Vocab::TokenBytes(int32_t id) const {
  if (id < 0 || id >= size()) return std::string();
  return token_bytes_[id];
}

std::string Vocab::DecodeNext(int32_t prev, int32_t id) const {
  if (id < 0 || id >= size()) return std::string();
  const std::string& bytes = token_bytes_[id];
  // llama2.c strips the space from the piece text, so a <0x20> byte token keeps its space.
  if (kind_ == TokenizerKind::kSpm && prev >= 0 && prev == bos_id_ && !bytes.empty() &&
      bytes[0] == ' ' && types_[id] != TokenType::kByte) {
    return bytes.substr(1);
  }
  return bytes;
}

std::string Vocab::Decode(std::span<const int32_t> ids) const {
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= size()) continue;
    const std::string& bytes = token_bytes_[id];
    if (bytes.empty()) continue;
    // Encode put a dummy-prefix space in front of the text; whichever token carries it (a piece
    // or the <0x20> byte token) comes first.
    if (first && kind_ == TokenizerKind::kSpm && bytes[0] == ' ') {
      out.append(bytes, 1);
    } else {
      out.append(bytes);
    }
    first = false;
  }
  return out;
}

float Vocab::Score(int32_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(scores_.size())) return 0.0f;
  return scores_[id];
}

TokenType Vocab::Type(int32_t id) const {
  if (id < 0 || id >= size()) return TokenType::kUndefined;
  return types_[id];
}

VocabData Vocab::ToData() const {
  VocabData data;
  data.kind = kind_;
  data.tokens = tokens_;
  data.scores = scores_;
  data.types.reserve(types_.size());
  for (TokenType t : types_) data.types.push_back(static_cast<int32_t>(t));
  data.merges = merges_;
  data.bos_id = bos_id_;
  data.eos_id = eos_id_;
  data.unk_id = unk_id_;
  data.add_bos = add_bos_;
  return data;
}

bool IsPrintablePiece(std::string_view piece) {
  if (piece.empty()) return false;
  if (piece.size() > 1) return true;
  const unsigned char b = static_cast<unsigned char>(piece[0]);
  return (b >= 0x20 && b < 0x7f) || (b >= '\t' && b <= '\r') || b >= 0x80;
}

}  // namespace tandem::model
