// SentencePiece-BPE encoding as llama2.c does it: dummy-prefix space, one symbol per UTF-8
// character (or byte fallback), then greedy merges of the adjacent pair with the highest score,
// leftmost on ties. A max-heap over candidate pairs with lazy invalidation keeps it O(n log n).
// Thread-safety: only reads the immutable Vocab.
#include <cstdint>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/model/vocab.h"
#include "common/model/vocab_internal.h"

namespace tandem::model {
namespace {

// One run of text in the doubly linked list of symbols. Symbols keep their index as they grow
// to the right, so index order is text order.
// Offsets and indices are 64-bit so that no input size can overflow them.
struct SpmSymbol {
  int64_t start;  // byte offset in the prefixed text
  int64_t prev;   // -1 at the ends
  int64_t next;
  int32_t len;    // bytes (a character or a piece); 0 once merged into its left neighbour
  int32_t id;     // token id, or -1 for a character without a piece (byte fallback)
};

struct SpmPair {
  float score;
  int32_t id;     // token of the concatenation
  int64_t left;   // symbol indices
  int64_t right;
  int64_t len;    // combined length when queued; a mismatch later means the entry is stale
};

// Orders the heap so that top() is the highest score, then the leftmost pair.
struct SpmPairLess {
  bool operator()(const SpmPair& a, const SpmPair& b) const {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  }
};

}  // namespace

void Vocab::EncodeSpm(std::string_view text, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  std::string buf;
  buf.reserve(text.size() + 1);
  buf.push_back(' ');  // SentencePiece's dummy prefix
  buf.append(text);
  const std::string_view s(buf);

  // Debian's Abseil has its own string_view, so lookups go through absl::string_view.
  std::vector<SpmSymbol> sym;
  sym.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t len = vocab_internal::Utf8CharLen(s, pos);
    const auto it = piece_to_id_.find(absl::string_view(s.data() + pos, len));
    const int64_t index = static_cast<int64_t>(sym.size());
    sym.push_back(SpmSymbol{static_cast<int64_t>(pos), index - 1, index + 1,
                            static_cast<int32_t>(len), it == piece_to_id_.end() ? -1 : it->second});
    pos += len;
  }
  sym.back().next = -1;

  std::priority_queue<SpmPair, std::vector<SpmPair>, SpmPairLess> queue;
  auto try_pair = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0 || sym[left].id < 0 || sym[right].id < 0) return;
    const int64_t len = int64_t{sym[left].len} + sym[right].len;
    const auto it = piece_to_id_.find(absl::string_view(s.data() + sym[left].start, len));
    if (it == piece_to_id_.end()) return;
    queue.push(SpmPair{Score(it->second), it->second, left, right, len});
  };
  for (int64_t i = 0; i + 1 < static_cast<int64_t>(sym.size()); ++i) try_pair(i, i + 1);

  while (!queue.empty()) {
    const SpmPair p = queue.top();
    queue.pop();
    SpmSymbol& left = sym[p.left];
    SpmSymbol& right = sym[p.right];
    // Stale if either side merged with something else since the pair was queued.
    if (left.len == 0 || right.len == 0 || left.next != p.right ||
        int64_t{left.len} + right.len != p.len) {
      continue;
    }
    left.len = static_cast<int32_t>(p.len);  // a vocabulary piece, so it fits
    left.id = p.id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = p.left;
    right.len = 0;
    try_pair(left.prev, p.left);
    try_pair(p.left, left.next);
  }

  for (int64_t i = 0; i >= 0; i = sym[i].next) {
    const SpmSymbol& x = sym[i];
    if (x.id >= 0) {
      out->push_back(x.id);
      continue;
    }
    // Byte fallback: all bytes of the character as <0xXX> tokens, else one unknown token.
    bool have_bytes = true;
    for (int32_t k = 0; k < x.len; ++k) {
      have_bytes = have_bytes && byte_token_[static_cast<uint8_t>(s[x.start + k])] >= 0;
    }
    if (have_bytes) {
      for (int32_t k = 0; k < x.len; ++k) {
        out->push_back(byte_token_[static_cast<uint8_t>(s[x.start + k])]);
      }
    } else if (unk_id_ >= 0) {
      out->push_back(unk_id_);
    }
  }
}

}  // namespace tandem::model
