// Pieces shared by the AVX-512 kernel files (kernels_avx512.cc, kernels_wide_avx512.cc); include
// only from files compiled for AVX-512. The helpers have internal linkage in each file, as they
// had when they lived in kernels_avx512.cc alone, so its inlining is what it was; the large-T
// Q8_0 / Q4_0 path is a file of its own for the same reason (in one file, its extra callers of
// these helpers changed the compiler's inlining of the tuned T <= 6 code).
#ifndef TANDEM_COMMON_MODEL_KERNELS_AVX512_INL_H_
#define TANDEM_COMMON_MODEL_KERNELS_AVX512_INL_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/model/kernels_internal.h"

namespace tandem::model::kernels_internal {

// kernels_wide_avx512.cc: RowsQuant for T >= 9 (see there), for rows of at most
// kMaxPackedGroups groups of 8 blocks.
inline constexpr int64_t kMaxPackedGroups = 32;
void RowsQuantPackedQ8(const MatView& w, const QuantizedActs& a, int T, float* y, int64_t r0,
                       int64_t r1);
void RowsQuantPackedQ4(const MatView& w, const QuantizedActs& a, int T, float* y, int64_t r0,
                       int64_t r1);

namespace {

// Requests the cache lines of bytes [begin, end) of `base` into the level `kHint` names.
template <int kHint>
inline void PrefetchLines(const char* base, int64_t begin, int64_t end) {
  for (int64_t p = begin; p < end; p += 64) _mm_prefetch(base + p, static_cast<_mm_hint>(kHint));
}

template <int N, typename F>
inline void TailTGroup(int n, int t0, F& f) {
  if constexpr (N > 0) {
    if (n == N) {
      f(std::integral_constant<int, N>{}, t0);
    } else {
      TailTGroup<N - 1>(n, t0, f);
    }
  }
}

// The fp16 scales of the 8 blocks of a group as floats, each twice ([d0, d0, d1, d1, ...]) to
// match the two accumulator lanes per block. The halves are packed in general-purpose registers
// (integer ports, idle next to the busy vector pipes) and converted with one vcvtph2ps.
template <typename Block>
inline __m512 GroupScales(const Block* blk) {
  auto h = [blk](int j) { return static_cast<uint64_t>(blk[j].d); };
  const uint64_t lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
  const uint64_t hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
  const __m256 d = _mm256_cvtph_ps(_mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(lo)),
                                                    static_cast<int64_t>(hi), 1));
  const __m512i dup_idx = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  return _mm512_permutexvar_ps(dup_idx, _mm512_castps256_ps512(d));
}

// Loaders for one group of 8 weight blocks: the values as 4 registers in the QuantizedActs::xt
// layout (register m, qword j = elements 8m .. 8m + 7 of block j) and as unsigned bytes: Q8_0 as
// w + 128, Q4_0 as the raw nibble (w + 8), and the scales as GroupScales returns them. The offsets
// are cancelled by xt_corr. The shuffles are paid once per weight block and shared by all
// activation rows.
struct Q8Group {
  static constexpr int kOffset = kQ8_0Offset;
  static constexpr int kPrefetchPairs = 4;  // see RowsQuantTB
  static inline void Load(const BlockQ8_0* blk, __m512i* m, __m512* dw) {
    auto qs = [blk](int j) {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[j].qs));
    };
    // zAB = [qwords 0-3 of block A, qwords 0-3 of block B].
    const __m512i z01 = _mm512_inserti64x4(_mm512_castsi256_si512(qs(0)), qs(1), 1);
    const __m512i z23 = _mm512_inserti64x4(_mm512_castsi256_si512(qs(2)), qs(3), 1);
    const __m512i z45 = _mm512_inserti64x4(_mm512_castsi256_si512(qs(4)), qs(5), 1);
    const __m512i z67 = _mm512_inserti64x4(_mm512_castsi256_si512(qs(6)), qs(7), 1);
    // [q0 of blocks 0-3, q1 of blocks 0-3] and [q2 ..., q3 ...]; likewise for blocks 4-7.
    const __m512i lo_idx = _mm512_set_epi64(13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i hi_idx = _mm512_set_epi64(15, 11, 7, 3, 14, 10, 6, 2);
    const __m512i a01 = _mm512_permutex2var_epi64(z01, lo_idx, z23);
    const __m512i a23 = _mm512_permutex2var_epi64(z01, hi_idx, z23);
    const __m512i c01 = _mm512_permutex2var_epi64(z45, lo_idx, z67);
    const __m512i c23 = _mm512_permutex2var_epi64(z45, hi_idx, z67);
    const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
    m[0] = _mm512_xor_si512(_mm512_shuffle_i64x2(a01, c01, _MM_SHUFFLE(1, 0, 1, 0)), k80);
    m[1] = _mm512_xor_si512(_mm512_shuffle_i64x2(a01, c01, _MM_SHUFFLE(3, 2, 3, 2)), k80);
    m[2] = _mm512_xor_si512(_mm512_shuffle_i64x2(a23, c23, _MM_SHUFFLE(1, 0, 1, 0)), k80);
    m[3] = _mm512_xor_si512(_mm512_shuffle_i64x2(a23, c23, _MM_SHUFFLE(3, 2, 3, 2)), k80);
    *dw = GroupScales(blk);
  }
};

// Q4_0 from 2 vector loads per 8 blocks (8 loads, 6 inserts and 8 scalar scale loads before): a
// group is 144 contiguous bytes and every field of a block starts at an even offset (18j, 18j + 2),
// so word permutes over its first 128 bytes gather the packed bytes of blocks 0-6 and all 8
// scales; only block 7's 16 bytes lie beyond and are inserted as two qwords. About 10% off the
// hot-cache time (Q4_0 rows are short, so this work is a large share of it).
struct Q4Group {
  static constexpr int kOffset = kQ4_0Offset;
  static constexpr int kPrefetchPairs = 8;  // about as many bytes ahead as Q8_0's 4 pairs
  static inline void Load(const BlockQ4_0* blk, __m512i* m, __m512* dw) {
    const auto* bytes = reinterpret_cast<const char*>(blk);
    const __m512i a = _mm512_loadu_si512(bytes);
    const __m512i b = _mm512_loadu_si512(bytes + 64);
    // Word 9j is block j's scale, words 9j + 1 .. 9j + 8 its 16 packed bytes.
    const __m512i lo_idx = _mm512_set_epi16(
        0, 0, 0, 0, 58, 57, 56, 55, 49, 48, 47, 46, 40, 39, 38, 37,
        31, 30, 29, 28, 22, 21, 20, 19, 13, 12, 11, 10, 4, 3, 2, 1);
    const __m512i hi_idx = _mm512_set_epi16(
        0, 0, 0, 0, 62, 61, 60, 59, 53, 52, 51, 50, 44, 43, 42, 41,
        35, 34, 33, 32, 26, 25, 24, 23, 17, 16, 15, 14, 8, 7, 6, 5);
    const __m512i d_idx = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        63, 63, 54, 54, 45, 45, 36, 36, 27, 27, 18, 18, 9, 9, 0, 0);
    // Packed bytes 0-7 (elements 0-7 low, 16-23 high) and 8-15 of each block.
    int64_t q7[2];
    std::memcpy(q7, blk[7].qs, sizeof(q7));
    const __m512i p0 =
        _mm512_mask_set1_epi64(_mm512_permutex2var_epi16(a, lo_idx, b), 0x80, q7[0]);
    const __m512i p1 =
        _mm512_mask_set1_epi64(_mm512_permutex2var_epi16(a, hi_idx, b), 0x80, q7[1]);
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    m[0] = _mm512_and_si512(p0, low4);
    m[1] = _mm512_and_si512(p1, low4);
    m[2] = _mm512_and_si512(_mm512_srli_epi16(p0, 4), low4);
    m[3] = _mm512_and_si512(_mm512_srli_epi16(p1, 4), low4);
    *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a, d_idx, b)));
  }
};

// Sums each of v[0..3] across its lanes: out[i] = sum of v[i]. A transposing tree (13 vector ops
// for all four) instead of four separate reductions (about 8 each): with 768-wide rows there are
// only 3 groups per row, so the reductions are a noticeable share of the work.
inline __m128 HorizontalSum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // Per 128-bit lane: partial sums [a, b, c, d].
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// out[i] = lane sum of acc[i] for i < N.
template <int N>
inline void HorizontalSums(const __m512* acc, float* out) {
  int i = 0;
  for (; i + 4 <= N; i += 4) {
    _mm_storeu_ps(out + i, HorizontalSum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
  }
  if constexpr (N % 4 != 0) {
    const __m512 z = _mm512_setzero_ps();
    alignas(16) float tail[4];
    _mm_store_ps(tail, HorizontalSum4(acc[i], N % 4 > 1 ? acc[i + 1] : z,
                                      N % 4 > 2 ? acc[i + 2] : z, z));
    for (int k = 0; k < N % 4; ++k) out[i + k] = tail[k];
  }
}


}  // namespace
}  // namespace tandem::model::kernels_internal

#endif  // TANDEM_COMMON_MODEL_KERNELS_AVX512_INL_H_
