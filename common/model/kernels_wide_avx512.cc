// AVX-512 Q8_0 / Q4_0 MatMul for many activation rows (T >= 9): called by RowsQuant in
// kernels_avx512.cc, only after kernels.cc has checked the CPU. Thread-safety: pure functions.
// GCC 12's AVX-512 headers trip -Wuninitialized (GCC bug 105593); see kernels_avx512.cc.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/model/kernels_avx512_inl.h"
#include "common/model/kernels_internal.h"

namespace tandem::model::kernels_internal {
namespace {

// --- Large T: pre-shuffled weights ------------------------------------------------------------
// For T >= kMinPackedT (9) the loop is turned around. A chunk of the task's weight rows is
// shuffled once (Group::Load) into a small packed buffer that stays in L1, and the activation rows
// go past it kPackedTB at a time, each tile of activations staying in L1 across the chunk's rows.
// The shuffles are then paid once per weight row instead of once per 8 activation rows, and a
// register tile of kPackedR weight rows x kPackedTB activation rows keeps all its int32 group sums
// live, so each weight and activation register is loaded once per 4 vpdpbusd steps and used
// kPackedTB (kPackedR) times: about 3.2 vector loads per (weight row, activation row, group)
// against 6 with the old R = 2 x TB = 8 tiles, whose loads (not the multiplies) were the limit.
// On Zen 4 the compute-bound cost fell from ~2.8 to ~1.9 ns per (weight row, activation row,
// group of 256), about the cost of the 7 vector operations with no loads at all.
// Per (weight row, activation row) the operations are exactly those of QuantRows: exact int32
// group sums, then acc = fma(cvt(s), dw * dx, acc) group by group in order, and the same
// horizontal sum, so results are bit-identical to the T <= kMaxQuantTB path.
constexpr int kPackedR = 4;   // weight rows per register tile
constexpr int kPackedTB = 3;  // activation rows per register tile: 2 x 12 sums + 4 + 1 registers
constexpr int kPackRegs = 5 * kPackedR * kMaxPackedGroups;  // packed buffer (zmm): 40 KiB
constexpr int kPackTargetRegs = 256;  // chunk size aimed at, in zmm (16 KiB)

// out[r * TB + t] as QuantRows computes it, from weights packed as pk[(g * stride + r) * 5 + j]
// (j < 4: the value registers, j = 4: the scales).
template <int TB, int R>
inline void QuantRowsPacked(const __m512i* pk, int64_t stride, int64_t n_groups,
                            const QuantizedActs& a, int t0, float* out) {
  const int64_t pb = a.padded_blocks;
  __m512 acc[R * TB];
  for (int i = 0; i < R * TB; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < n_groups; ++g) {
    const __m512i* wg = pk + g * stride * 5;
    const int64_t b = g * kGroupBlocks;
    const __m512i* xq[TB];
    __m512i s[R * TB];
    for (int t = 0; t < TB; ++t) {
      const int64_t i = (t0 + t) * pb + b;
      xq[t] = reinterpret_cast<const __m512i*>(a.xt + i * kQK);
      const __m512i corr = _mm512_load_si512(a.xt_corr + i * 2);
      for (int r = 0; r < R; ++r) s[r * TB + t] = corr;
    }
    for (int j = 0; j < 4; ++j) {
      __m512i x[TB];
      for (int t = 0; t < TB; ++t) x[t] = _mm512_load_si512(xq[t] + j);
      for (int r = 0; r < R; ++r) {
        const __m512i wr = _mm512_load_si512(wg + r * 5 + j);
        for (int t = 0; t < TB; ++t) s[r * TB + t] = _mm512_dpbusd_epi32(s[r * TB + t], wr, x[t]);
      }
    }
    __m512 dx[TB];
    for (int t = 0; t < TB; ++t) dx[t] = _mm512_load_ps(a.xt_d + ((t0 + t) * pb + b) * 2);
    for (int r = 0; r < R; ++r) {
      const __m512 dw = _mm512_castsi512_ps(_mm512_load_si512(wg + r * 5 + 4));
      for (int t = 0; t < TB; ++t) {
        acc[r * TB + t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r * TB + t]),
                                          _mm512_mul_ps(dw, dx[t]), acc[r * TB + t]);
      }
    }
  }
  HorizontalSums<R * TB>(acc, out);
}

template <typename Block, typename Group>
__attribute__((noinline)) void RowsQuantPacked(const MatView& w, const QuantizedActs& a, int T,
                                               float* y, int64_t r0, int64_t r1) {
  constexpr int R = kPackedR;
  const Block* base = static_cast<const Block*>(w.data);
  const int64_t nb = a.n_blocks;
  const int64_t n_groups = (nb + kGroupBlocks - 1) / kGroupBlocks;
  const auto* bytes = reinterpret_cast<const char*>(base);
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(Block));
  int64_t chunk = kPackTargetRegs / (5 * n_groups);
  chunk -= chunk % R;
  if (chunk < R) chunk = R;
  // Tiles of kPackedTB activation rows; a remainder of 1 goes as 2 + 2 (a 1-row tile loads as
  // many weights as a full one for a third of the work).
  int full = T / kPackedTB;
  int rem = T % kPackedTB;
  if (rem == 1 && full > 0) {
    --full;
    rem = kPackedTB + 1;
  }
  alignas(64) __m512i pk[kPackRegs];
  // The weight stream: the first chunk into L1 in one burst, then the next chunk into L2 a few
  // lines per register tile while this one is computed (a burst of a whole chunk stalls on the
  // fill buffers; spread out, the lines arrive during the compute).
  auto row_end = [r1](int64_t r) { return r < r1 ? r : r1; };
  PrefetchLines<_MM_HINT_T0>(bytes, r0 * row_bytes, row_end(r0 + chunk) * row_bytes);
  const int64_t n_ttiles = full + (rem == kPackedTB + 1 ? 2 : (rem > 0 ? 1 : 0));
  const int64_t tiles_per_chunk = n_ttiles * ((chunk + R - 1) / R);
  const int64_t chunk_lines = (chunk * row_bytes + 63) / 64;
  const int pf_per_tile = static_cast<int>((chunk_lines + tiles_per_chunk - 1) / tiles_per_chunk);
  for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
    const int64_t c1 = row_end(c0 + chunk);
    const int64_t rows = c1 - c0;
    const char* pf = bytes + c1 * row_bytes;
    const char* const pf_end = bytes + row_end(c1 + chunk) * row_bytes;
    for (int64_t k = 0; k < rows; ++k) {
      const Block* row = base + (c0 + k) * nb;
      for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t b = g * kGroupBlocks;
        __m512i* dst = pk + (g * rows + k) * 5;
        __m512 dw;
        if (b + kGroupBlocks <= nb) {
          Group::Load(row + b, dst, &dw);
        } else {
          // Last, partial group: zero blocks (scale 0, values 0) stand in for the missing ones.
          Block tmp[kGroupBlocks];
          std::memset(tmp, 0, sizeof(tmp));
          std::memcpy(tmp, row + b, (nb - b) * sizeof(Block));
          Group::Load(tmp, dst, &dw);
        }
        dst[4] = _mm512_castps_si512(dw);
      }
    }
    auto t_tile = [&](auto tb, int t0) {
      constexpr int TB = decltype(tb)::value;
      auto tile = [&](auto rows_const, int k) {
        constexpr int kRows = decltype(rows_const)::value;
        for (int i = 0; i < pf_per_tile && pf < pf_end; ++i, pf += 64)
          _mm_prefetch(pf, _MM_HINT_T1);
        float out[kRows * TB];
        QuantRowsPacked<TB, kRows>(pk + k * 5, rows, n_groups, a, t0, out);
        for (int i = 0; i < kRows; ++i)
          for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + c0 + k + i] = out[i * TB + t];
      };
      int k = 0;
      for (; k + R <= rows; k += R) tile(std::integral_constant<int, R>{}, k);
      TailTGroup<R - 1>(static_cast<int>(rows - k), k, tile);
    };
    int t0 = 0;
    for (int i = 0; i < full; ++i, t0 += kPackedTB)
      t_tile(std::integral_constant<int, kPackedTB>{}, t0);
    if (rem == kPackedTB + 1) {
      t_tile(std::integral_constant<int, 2>{}, t0);
      t_tile(std::integral_constant<int, 2>{}, t0 + 2);
    } else {
      TailTGroup<kPackedTB - 1>(rem, t0, t_tile);
    }
  }
}

}  // namespace

void RowsQuantPackedQ8(const MatView& w, const QuantizedActs& a, int T, float* y, int64_t r0,
                       int64_t r1) {
  RowsQuantPacked<BlockQ8_0, Q8Group>(w, a, T, y, r0, r1);
}

void RowsQuantPackedQ4(const MatView& w, const QuantizedActs& a, int T, float* y, int64_t r0,
                       int64_t r1) {
  RowsQuantPacked<BlockQ4_0, Q4Group>(w, a, T, y, r0, r1);
}

}  // namespace tandem::model::kernels_internal
