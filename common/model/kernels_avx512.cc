// AVX-512 (F/BW/VL/DQ/VNNI) MatMul kernels; only called after kernels.cc has checked the CPU.
// Each weight block is loaded once and used for a register-resident group of activation rows, so
// T rows cost little more than one while the weight stream is the bottleneck. Quantized weights
// are regrouped 8 blocks at a time (see QuantizedActs::xt) so vpdpbusd sums whole blocks in int32
// and the float work per activation row is one convert, multiply and FMA per 8 blocks.
// Thread-safety: pure functions.
// GCC 12's AVX-512 headers build casts and reductions from _mm512_undefined_*(), which trips
// -Wuninitialized once inlined (GCC bug 105593); the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "common/model/kernels_avx512_inl.h"
#include "common/model/kernels_internal.h"

namespace tandem::model::kernels_internal {
namespace {

// Calls f(std::integral_constant<int, TB>, t0) over [0, T) in groups of at most kMax activation
// rows, each group's accumulators held in registers.
template <int kMax, typename F>
inline void ForEachTGroup(int T, F&& f) {
  int t0 = 0;
  for (; t0 + kMax <= T; t0 += kMax) f(std::integral_constant<int, kMax>{}, t0);
  TailTGroup<kMax - 1>(T - t0, t0, f);
}

constexpr int kMaxDenseTB = 8;  // activation rows per pass for F32 / F16
// Activation rows per pass for Q8_0 / Q4_0: with 2 weight rows (4 registers each) in flight,
// 2 x 6 accumulators still fit in the 32 zmm registers.
constexpr int kMaxQuantTB = 6;
// For T > kMaxQuantTB, up to 8 rows per pass: the 16 accumulators and 8 weight registers leave no
// room for the activations, which vpdpbusd then reads from memory (L1), but each weight row pair
// is loaded and shuffled once instead of twice (T = 7, 8). Kept apart from the T <= 6 code so its
// register allocation is unaffected. From T = kMinPackedT on, rows of up to 8192 columns go to
// RowsQuantPackedQ8 / Q4 (kernels_wide_avx512.cc) instead: at T = 8 this path, one pass per row
// pair, was still ~7% faster streaming weights from DRAM (~10% slower from L2); at T = 9 and up
// the packed one wins (1.2x at T = 16, 1.5x at T = 32 and up).
constexpr int kMaxWideQuantTB = 8;
constexpr int kMinPackedT = 9;

// Independent accumulators per activation row: with few rows, one FMA chain per row would make
// FMA latency (not bandwidth) the limit.
template <int TB>
constexpr int kUnroll = TB == 1 ? 4 : (TB == 2 ? 2 : 1);

// --- F32 / F16 -----------------------------------------------------------------------------------

// Loads 16 weights as floats starting at element c, zero-filled outside `mask`.
inline __m512 LoadW(const float* row, int64_t c) { return _mm512_loadu_ps(row + c); }
inline __m512 LoadW(const uint16_t* row, int64_t c) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c)));
}
inline __m512 LoadWMasked(const float* row, int64_t c, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, row + c);
}
inline __m512 LoadWMasked(const uint16_t* row, int64_t c, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + c));
}

// out[k * TB + t] = dot(row k, x + t * cols) for k < R consecutive rows (cols apart) starting at
// row0 and t < TB. Each row keeps its own accumulators and order of operations whatever R, so
// results do not depend on how rows are grouped; the activation loads are shared by the R rows.
// Unless `pf` is null, each main-loop step also prefetches the next pf_lines cache lines from
// `pf` into L2.
template <int TB, int R, typename W>
inline void DenseRows(const W* row0, const float* x, int64_t cols, const char* pf, int pf_lines,
                      float* out) {
  constexpr int U = kUnroll<TB>;
  __m512 acc[R][TB][U];
  for (int k = 0; k < R; ++k)
    for (int t = 0; t < TB; ++t)
      for (int u = 0; u < U; ++u) acc[k][t][u] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 * U <= cols; c += 16 * U) {
    if (pf != nullptr) {
      for (int i = 0; i < pf_lines; ++i) _mm_prefetch(pf + 64 * i, _MM_HINT_T1);
      pf += 64 * pf_lines;
    }
    for (int u = 0; u < U; ++u) {
      __m512 w[R];
      for (int k = 0; k < R; ++k) w[k] = LoadW(row0 + k * cols, c + 16 * u);
      for (int t = 0; t < TB; ++t) {
        const __m512 xv = _mm512_loadu_ps(x + t * cols + c + 16 * u);
        for (int k = 0; k < R; ++k) acc[k][t][u] = _mm512_fmadd_ps(w[k], xv, acc[k][t][u]);
      }
    }
  }
  for (; c < cols; c += 16) {
    const __mmask16 m = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
    __m512 w[R];
    for (int k = 0; k < R; ++k) w[k] = LoadWMasked(row0 + k * cols, c, m);
    for (int t = 0; t < TB; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * cols + c);
      for (int k = 0; k < R; ++k) acc[k][t][0] = _mm512_fmadd_ps(w[k], xv, acc[k][t][0]);
    }
  }
  for (int k = 0; k < R; ++k) {
    for (int t = 0; t < TB; ++t) {
      __m512 s = acc[k][t][0];
      for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[k][t][u]);
      out[k * TB + t] = _mm512_reduce_add_ps(s);
    }
  }
}

// Dense prefetching, tuned on Zen 4 in the real forward pass like the quantized kernels' below:
// each group of rows is requested into L1 in one burst just before it is computed, and the
// weights kDenseAheadBytes further on are requested into L2, a few lines per main-loop step, so
// the memory stream keeps going while a group is computed. Together about 20-25% off F16 decode.
// Without them, computing rows in groups was slower than one at a time.
constexpr int64_t kDenseAheadBytes = 16 * 1024;
// At T = 1, rows per group are chosen so the L1 burst stays within this many bytes (a larger
// burst evicts what is being computed); at T > 1 it is always 4 rows, whose shared activation
// loads more than halve the cost of T = 5 (the loads, not the FMAs, were the limit). Except F32
// at T = 1, see RowsDense.
constexpr int64_t kDenseL1BurstBytes = 6 * 1024;

// Rows [r0, r1) in groups of R (then single rows), for all T activation rows.
template <typename W, int R>
__attribute__((noinline)) void RowsDenseR(const MatView& w, const float* x, int T, Segments segs,
                                          float* y, int64_t r0, int64_t r1) {
  const W* base = static_cast<const W*>(w.data);
  const auto* bytes = reinterpret_cast<const char*>(base);
  const int64_t row_bytes = w.cols * static_cast<int64_t>(sizeof(W));
  const int64_t ahead_groups = (kDenseAheadBytes + R * row_bytes - 1) / (R * row_bytes);
  // The rows up to the first group the loop prefetches go into L2 in one burst. Only this task's
  // rows: the ones after it belong to another task, maybe on another thread.
  const int64_t task_end = r1 * row_bytes;
  const int64_t ahead_end = (r0 + ahead_groups * R) * row_bytes;
  PrefetchLines<_MM_HINT_T1>(bytes, (r0 + R) * row_bytes,
                             ahead_end < task_end ? ahead_end : task_end);
  auto run = [&](auto rows_const, int64_t r) {
    constexpr int kRows = decltype(rows_const)::value;
    PrefetchLines<_MM_HINT_T0>(bytes, r * row_bytes, (r + kRows) * row_bytes);
    const char* pf = nullptr;
    if (r + (ahead_groups + 1) * R <= r1) pf = bytes + (r + ahead_groups * R) * row_bytes;
    // Activation rows in groups within each segment (a segment's rows then see the order of
    // operations a call over that segment alone gives them).
    ForEachSegment(T, segs, [&](int n, int s0) {
      ForEachTGroup<kMaxDenseTB>(n, [&](auto tb, int g0) {
        constexpr int TB = decltype(tb)::value;
        const int t0 = s0 + g0;
        // L2 prefetch: pf_lines lines per main-loop step cover one group of R rows.
        const int64_t steps = w.cols / (16 * kUnroll<TB>);
        const int pf_lines =
            steps > 0 ? static_cast<int>((R * row_bytes + 64 * steps - 1) / (64 * steps)) : 0;
        float out[kRows * TB];
        DenseRows<TB, kRows>(base + r * w.cols, x + t0 * w.cols, w.cols, t0 == 0 ? pf : nullptr,
                             pf_lines, out);
        for (int k = 0; k < kRows; ++k)
          for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r + k] = out[k * TB + t];
      });
    });
  };
  int64_t r = r0;
  for (; r + R <= r1; r += R) run(std::integral_constant<int, R>{}, r);
  for (; r < r1; ++r) run(std::integral_constant<int, 1>{}, r);
}

template <typename W>
void RowsDense(const MatView& w, const float* x, const QuantizedActs&, int T, Segments segs,
               float* y, int64_t r0, int64_t r1) {
  const int64_t row_bytes = w.cols * static_cast<int64_t>(sizeof(W));
  if (std::is_same_v<W, float> && T == 1) {
    // F32 decode was already near the bandwidth bound one row at a time, without software
    // prefetch (its rows are long sequential runs the hardware prefetcher follows); grouping and
    // prefetching measured 2-4% slower.
    const W* base = static_cast<const W*>(w.data);
    for (int64_t r = r0; r < r1; ++r) {
      DenseRows<1, 1>(base + r * w.cols, x, w.cols, nullptr, 0, y + r);
    }
  } else if (T > 1 || 4 * row_bytes <= kDenseL1BurstBytes) {
    RowsDenseR<W, 4>(w, x, T, segs, y, r0, r1);
  } else if (2 * row_bytes <= kDenseL1BurstBytes) {
    RowsDenseR<W, 2>(w, x, T, segs, y, r0, r1);
  } else {
    RowsDenseR<W, 1>(w, x, T, segs, y, r0, r1);
  }
}

// --- Q8_0 / Q4_0 ---------------------------------------------------------------------------------

// out[r * TB + t] = (weight row r) . (activation row t0 + t) for R consecutive rows starting at
// row0. Per group of 8 blocks and per activation row this is 4 vpdpbusd into an int32
// accumulator (exact), then one convert, one scale multiply and one FMA; the activation loads are
// shared by the R weight rows and the weight shuffles by the TB activation rows. Unless `pf` is
// null, each group also prefetches the next pf_lines cache lines from `pf` into L2.
template <int TB, int R, typename Block, typename Group>
inline void QuantRows(const Block* row0, const QuantizedActs& a, int t0, const char* pf,
                      int pf_lines, float* out) {
  const int64_t nb = a.n_blocks;
  const int64_t pb = a.padded_blocks;
  __m512 acc[R * TB];
  for (int i = 0; i < R * TB; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b += kGroupBlocks) {
    if (pf != nullptr) {
      for (int k = 0; k < pf_lines; ++k) _mm_prefetch(pf + 64 * k, _MM_HINT_T1);
      pf += 64 * pf_lines;
    }
    __m512i w[R][4];
    __m512 dw[R];
    for (int r = 0; r < R; ++r) {
      const Block* blk = row0 + r * nb + b;
      if (b + kGroupBlocks <= nb) {
        Group::Load(blk, w[r], &dw[r]);
      } else {
        // Last, partial group: zero blocks (scale 0, values 0) stand in for the missing ones.
        Block tmp[kGroupBlocks];
        std::memset(tmp, 0, sizeof(tmp));
        std::memcpy(tmp, blk, (nb - b) * sizeof(Block));
        Group::Load(tmp, w[r], &dw[r]);
      }
    }
    for (int t = 0; t < TB; ++t) {
      const int64_t i = (t0 + t) * pb + b;  // first block of the group in activation arrays
      const __m512i* xq = reinterpret_cast<const __m512i*>(a.xt + i * kQK);
      const __m512i corr = _mm512_load_si512(a.xt_corr + i * 2);
      const __m512 dx = _mm512_load_ps(a.xt_d + i * 2);
      const __m512i x0 = _mm512_load_si512(xq), x1 = _mm512_load_si512(xq + 1);
      const __m512i x2 = _mm512_load_si512(xq + 2), x3 = _mm512_load_si512(xq + 3);
      for (int r = 0; r < R; ++r) {
        __m512i s = _mm512_dpbusd_epi32(corr, w[r][0], x0);
        s = _mm512_dpbusd_epi32(s, w[r][1], x1);
        s = _mm512_dpbusd_epi32(s, w[r][2], x2);
        s = _mm512_dpbusd_epi32(s, w[r][3], x3);
        acc[r * TB + t] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[r], dx), acc[r * TB + t]);
      }
    }
  }
  HorizontalSums<R * TB>(acc, out);
}

// Prefetching, tuned on Zen 4 in the real forward pass (T = 1 and T = 5). Each row pair's cache
// lines are requested into L1 in one burst just before it is computed: the compute loop alone
// reaches the next group's lines only when the out-of-order window gets there. The pair
// kPrefetchPairs ahead is requested into L2 while the current one is computed, a few lines per
// group, so the memory stream keeps going during the long compute of T > 1. (Into L1 or only 1-2
// pairs ahead was slower; without the L1 burst, T = 1 decode was about 20% slower.) The distance,
// Group::kPrefetchPairs, is about 6.5 KiB at 768 columns for both types: 4 Q8_0 pairs, 8 of the
// shorter Q4_0 ones (4 were 7% slower at T = 1).

template <typename Block, typename Group, int kMaxTB>
__attribute__((noinline)) void RowsQuantTB(const MatView& w, const QuantizedActs& a, int T,
                                           float* y, int64_t r0, int64_t r1) {
  constexpr int R = 2;  // weight rows processed together
  const Block* base = static_cast<const Block*>(w.data);
  const int64_t nb = a.n_blocks;
  const auto* bytes = reinterpret_cast<const char*>(base);
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(Block));
  // L2 prefetch: pf_lines lines per group cover a row pair. The rows up to the first pair the
  // loop prefetches go in one burst. Only this task's rows: the ones after it belong to another
  // task, maybe on another thread.
  constexpr int kPrefetchPairs = Group::kPrefetchPairs;
  const int64_t n_groups = (nb + kGroupBlocks - 1) / kGroupBlocks;
  const int pf_lines = static_cast<int>((R * row_bytes + 64 * n_groups - 1) / (64 * n_groups));
  const int64_t task_end = r1 * row_bytes;
  const int64_t ahead_end = (r0 + kPrefetchPairs * R) * row_bytes;
  // Not std::min: a std:: template instantiated in this file could be merged by the linker with
  // the baseline copy used elsewhere and carry AVX-512 code into it.
  PrefetchLines<_MM_HINT_T1>(bytes, (r0 + R) * row_bytes,
                             ahead_end < task_end ? ahead_end : task_end);
  auto run = [&](auto rows_const, int64_t r) {
    constexpr int kRows = decltype(rows_const)::value;
    PrefetchLines<_MM_HINT_T0>(bytes, r * row_bytes, (r + kRows) * row_bytes);
    const char* pf = nullptr;
    if (r + (kPrefetchPairs + 1) * R <= r1) pf = bytes + (r + kPrefetchPairs * R) * row_bytes;
    ForEachTGroup<kMaxTB>(T, [&](auto tb, int t0) {
      constexpr int TB = decltype(tb)::value;
      float out[kRows * TB];
      QuantRows<TB, kRows, Block, Group>(base + r * nb, a, t0, t0 == 0 ? pf : nullptr, pf_lines,
                                         out);
      for (int k = 0; k < kRows; ++k)
        for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r + k] = out[k * TB + t];
    });
  };
  int64_t r = r0;
  for (; r + R <= r1; r += R) run(std::integral_constant<int, R>{}, r);
  if (r < r1) run(std::integral_constant<int, 1>{}, r);
}

template <typename Block, typename Group>
void RowsQuant(const MatView& w, const float*, const QuantizedActs& a, int T, Segments, float* y,
               int64_t r0, int64_t r1) {
  if (T <= kMaxQuantTB) {
    RowsQuantTB<Block, Group, kMaxQuantTB>(w, a, T, y, r0, r1);
  } else if (T >= kMinPackedT &&
             (a.n_blocks + kGroupBlocks - 1) / kGroupBlocks <= kMaxPackedGroups) {
    if constexpr (std::is_same_v<Block, BlockQ8_0>) {
      RowsQuantPackedQ8(w, a, T, y, r0, r1);
    } else {
      RowsQuantPackedQ4(w, a, T, y, r0, r1);
    }
  } else {
    RowsQuantTB<Block, Group, kMaxWideQuantTB>(w, a, T, y, r0, r1);
  }
}

// --- Activation quantization ---------------------------------------------------------------------

// roundf (half away from zero), exactly: trunc, then step away from zero if |fraction| >= 0.5.
inline __m512 RoundHalfAway(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
  const __mmask16 up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f),
                                  _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));  // copysign(1, v)
  return _mm512_mask_add_ps(t, up, t, one);
}

// Quantizes one block of 32 floats (ggml's reference arithmetic); returns the codes, sets *d.
inline __m256i QuantizeBlock(const float* xb, float* d_out) {
  const __m512 v0 = _mm512_loadu_ps(xb);
  const __m512 v1 = _mm512_loadu_ps(xb + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  // Same scalar arithmetic as ggml's reference quantizer (see ggml_types.cc).
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m512 idv = _mm512_set1_ps(id);
  const __m128i q0 =
      _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(RoundHalfAway(_mm512_mul_ps(v0, idv))));
  const __m128i q1 =
      _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(RoundHalfAway(_mm512_mul_ps(v1, idv))));
  *d_out = Fp16ToFp32(Fp32ToFp16(d));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
}

void QuantizeActsAvx512(const float* x, int T, int offset, QuantizedActs* a) {
  const int64_t nb = a->n_blocks;
  const int64_t pb = a->padded_blocks;
  const __m256i ones_u8 = _mm256_set1_epi8(1);
  for (int t = 0; t < T; ++t) {
    for (int64_t b = 0; b < pb; ++b) {
      const int64_t i = t * pb + b;
      __m256i q = _mm256_setzero_si256();
      float d = 0.0f;
      if (b < nb) q = QuantizeBlock(x + (t * nb + b) * kQK, &d);
      _mm256_store_si256(reinterpret_cast<__m256i*>(a->qs + i * kQK), q);
      a->d[i] = d;
      // Scatter the 4 qwords into the group-transposed layout.
      const int64_t group = i / kGroupBlocks;  // t * pb is a multiple of kGroupBlocks
      const int j = static_cast<int>(i % kGroupBlocks);
      int8_t* xt = a->xt + group * kGroupBlocks * kQK + j * 8;
      alignas(32) int32_t lane_sums[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lane_sums),
                         _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones_u8, q));
      alignas(32) int8_t bytes[32];
      _mm256_store_si256(reinterpret_cast<__m256i*>(bytes), q);
      for (int m = 0; m < 4; ++m) std::memcpy(xt + m * 64, bytes + 8 * m, 8);
      a->xt_corr[2 * i] = -offset * (lane_sums[0] + lane_sums[2] + lane_sums[4] + lane_sums[6]);
      a->xt_corr[2 * i + 1] = -offset * (lane_sums[1] + lane_sums[3] + lane_sums[5] + lane_sums[7]);
      a->xt_d[2 * i] = d;
      a->xt_d[2 * i + 1] = d;
    }
  }
}

template <int S>
uint64_t StreamReadStreams(const uint8_t* data, size_t bytes) {
  const size_t len = bytes / S;
  __m512i acc[S];
  for (int k = 0; k < S; ++k) acc[k] = _mm512_setzero_si512();
  for (size_t off = 0; off + 256 <= len; off += 256) {
    for (int k = 0; k < S; ++k) {
      const auto* p = reinterpret_cast<const __m512i*>(data + k * len + off);
      acc[k] = _mm512_add_epi64(
          acc[k], _mm512_add_epi64(_mm512_add_epi64(_mm512_load_si512(p), _mm512_load_si512(p + 1)),
                                   _mm512_add_epi64(_mm512_load_si512(p + 2), _mm512_load_si512(p + 3))));
    }
  }
  __m512i t = acc[0];
  for (int k = 1; k < S; ++k) t = _mm512_add_epi64(t, acc[k]);
  // Summed as unsigned: _mm512_reduce_add_epi64 adds signed 64-bit lanes, which may overflow.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, t);
  uint64_t sum = 0;
  for (uint64_t v : lanes) sum += v;
  return sum;
}

uint64_t StreamReadAvx512(const void* data, size_t bytes, int streams) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (streams >= 4) return StreamReadStreams<4>(p, bytes);
  if (streams == 2) return StreamReadStreams<2>(p, bytes);
  return StreamReadStreams<1>(p, bytes);
}

}  // namespace

const KernelSet& Avx512Kernels() {
  static const KernelSet kSet = {RowsDense<float>,
                                 RowsDense<uint16_t>,
                                 RowsQuant<BlockQ8_0, Q8Group>,
                                 RowsQuant<BlockQ4_0, Q4Group>,
                                 QuantizeActsAvx512,
                                 StreamReadAvx512};
  return kSet;
}

}  // namespace tandem::model::kernels_internal
