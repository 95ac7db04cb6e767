// GPT-2 byte-level BPE: the GPT-2 pre-tokenizer regex, written out by hand over code points
// with ICU's character classes, the bytes_to_unicode() alphabet, and ranked merges applied with
// a min-heap (lowest rank, then leftmost). Thread-safety: pure functions and const reads only.
#include <array>
#include <cstdint>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include <unicode/uchar.h>

#include "common/model/vocab.h"
#include "common/model/vocab_internal.h"

namespace tandem::model {
namespace vocab_internal {
namespace {

// Bytes that GPT-2 keeps as themselves: printable Latin-1 except the soft hyphen.
bool IsDirectByte(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

struct ByteTables {
  std::array<char32_t, 256> to_cp;
  std::array<int16_t, 256 + 68> from_cp;  // code points 0..323 -> byte, -1 = none
};

const ByteTables& Tables() {
  static const ByteTables tables = [] {
    ByteTables t;
    t.from_cp.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      // The 68 other bytes are moved, in order, to U+0100 and up.
      t.to_cp[b] = static_cast<char32_t>(IsDirectByte(b) ? b : 256 + shifted++);
      t.from_cp[t.to_cp[b]] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// \p{L}, \p{N} and \s as Python's `regex` module sees them; stray bytes are "other".
CharClass Classify(int32_t cp) {
  if (cp < 0) return CharClass::kOther;
  if (u_hasBinaryProperty(cp, UCHAR_WHITE_SPACE)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(cp);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

struct CodePoint {
  size_t pos;  // byte offset in the text
  int32_t cp;  // -1 for a stray byte
  CharClass cls;
};

}  // namespace

char32_t Gpt2ByteToCodePoint(uint8_t b) { return Tables().to_cp[b]; }

int Gpt2CodePointToByte(char32_t cp) {
  if (cp >= Tables().from_cp.size()) return -1;
  return Tables().from_cp[cp];
}

std::vector<std::string_view> Gpt2PreTokenize(std::string_view text) {
  std::vector<CodePoint> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    int32_t cp;
    const size_t len = Utf8CharLen(text, pos, &cp);
    cps.push_back(CodePoint{pos, cp, Classify(cp)});
    pos += len;
  }
  const size_t n = cps.size();
  auto run_end = [&](size_t k, CharClass cls) {
    while (k < n && cps[k].cls == cls) ++k;
    return k;
  };
  auto cp_at = [&](size_t k) { return k < n ? cps[k].cp : -1; };

  std::vector<std::string_view> pieces;
  size_t i = 0;
  while (i < n) {
    const CodePoint& c = cps[i];
    size_t j = i;
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2)
    if (c.cp == '\'') {
      const int32_t c1 = cp_at(i + 1), c2 = cp_at(i + 2);
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        j = i + 2;
      } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                 (c1 == 'l' && c2 == 'l')) {
        j = i + 3;
      }
    }
    if (j == i && c.cls != CharClass::kSpace) {
      // \p{L}+ | \p{N}+ | [^\s\p{L}\p{N}]+
      j = run_end(i, c.cls);
    } else if (j == i && c.cp == ' ' && i + 1 < n && cps[i + 1].cls != CharClass::kSpace) {
      // The optional leading space of " ?\p{L}+", " ?\p{N}+" and " ?[^\s\p{L}\p{N}]+".
      j = run_end(i + 1, cps[i + 1].cls);
    } else if (j == i) {
      // \s+(?!\S) backs off one character when the run is followed by a non-space, leaving that
      // character (perhaps a ' ') to start the next piece; a lone space falls through to \s+.
      const size_t k = run_end(i, CharClass::kSpace);
      j = (k < n && k - i >= 2) ? k - 1 : k;
    }
    const size_t begin = c.pos;
    const size_t end = j < n ? cps[j].pos : text.size();
    pieces.push_back(text.substr(begin, end - begin));
    i = j;
  }
  return pieces;
}

}  // namespace vocab_internal

namespace {

// Indices are 64-bit so that no input size (one pre-token may be the whole text) overflows.
struct BpeSymbol {
  int64_t prev;  // -1 at the ends
  int64_t next;
  int32_t id;    // token id; -1 when the byte has no token, -2 once merged away
};

struct BpePair {
  int32_t rank;
  int32_t id;       // token of the concatenation
  int64_t left;     // symbol indices
  int64_t right;
  int32_t left_id;  // ids when queued; a mismatch later means the entry is stale
  int32_t right_id;
};

// Orders the heap so that top() is the lowest rank, then the leftmost pair.
struct BpePairGreater {
  bool operator()(const BpePair& a, const BpePair& b) const {
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.left > b.left;
  }
};

}  // namespace

void Vocab::EncodeGpt2(std::string_view text, std::vector<int32_t>* out) const {
  for (std::string_view word : vocab_internal::Gpt2PreTokenize(text)) EncodeGpt2Word(word, out);
}

void Vocab::EncodeGpt2Word(std::string_view word, std::vector<int32_t>* out) const {
  const int64_t n = static_cast<int64_t>(word.size());
  std::vector<BpeSymbol> sym(n);
  for (int64_t i = 0; i < n; ++i) {
    sym[i] = BpeSymbol{i - 1, i + 1 < n ? i + 1 : -1, byte_token_[static_cast<uint8_t>(word[i])]};
  }
  std::priority_queue<BpePair, std::vector<BpePair>, BpePairGreater> queue;
  auto try_pair = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0 || sym[left].id < 0 || sym[right].id < 0) return;
    const auto it = merge_rank_.find(PairKey(sym[left].id, sym[right].id));
    if (it == merge_rank_.end()) return;
    queue.push(BpePair{it->second.rank, it->second.id, left, right, sym[left].id, sym[right].id});
  };
  for (int64_t i = 0; i + 1 < n; ++i) try_pair(i, i + 1);

  while (!queue.empty()) {
    const BpePair p = queue.top();
    queue.pop();
    BpeSymbol& left = sym[p.left];
    BpeSymbol& right = sym[p.right];
    if (left.id != p.left_id || right.id != p.right_id || left.next != p.right) continue;
    left.id = p.id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = p.left;
    right.id = -2;
    try_pair(left.prev, p.left);
    try_pair(p.left, left.next);
  }
  for (int64_t i = 0; i >= 0 && i < n; i = sym[i].next) {
    if (sym[i].id >= 0) {
      out->push_back(sym[i].id);
    } else if (unk_id_ >= 0) {
      out->push_back(unk_id_);  // a byte without a token in this vocabulary
    }
  }
}

}  // namespace tandem::model
