// AVX-512 (F/BW/VL/DQ/VNNI) MatMul kernels. Only called after kernels.cc has checked the CPU.
// Each weight row is loaded once and used for up to 8 activation rows held in registers, so a
// batch of T costs little more than T=1 while the loads, not the math, are the bottleneck.
// Quantized weights meet Q8_0 activations in vpdpbusd, two 32-element blocks per register.
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

#include "common/model/kernels_internal.h"

namespace tandem::model::kernels_internal {
namespace {

constexpr int kMaxTB = 8;  // activation rows per register-resident group

// Calls f(std::integral_constant<int, TB>, t0) over [0, T) in groups of at most kMaxTB rows.
template <typename F>
inline void ForEachTGroup(int T, F&& f) {
  int t0 = 0;
  for (; t0 + kMaxTB <= T; t0 += kMaxTB) f(std::integral_constant<int, kMaxTB>{}, t0);
  switch (T - t0) {
    case 1: f(std::integral_constant<int, 1>{}, t0); break;
    case 2: f(std::integral_constant<int, 2>{}, t0); break;
    case 3: f(std::integral_constant<int, 3>{}, t0); break;
    case 4: f(std::integral_constant<int, 4>{}, t0); break;
    case 5: f(std::integral_constant<int, 5>{}, t0); break;
    case 6: f(std::integral_constant<int, 6>{}, t0); break;
    case 7: f(std::integral_constant<int, 7>{}, t0); break;
    default: break;
  }
}

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

// out[t] = dot(row, x + t * cols) for t < TB.
template <int TB, typename W>
inline void DenseRow(const W* row, const float* x, int64_t cols, float* out) {
  constexpr int U = kUnroll<TB>;
  __m512 acc[TB][U];
  for (int t = 0; t < TB; ++t)
    for (int u = 0; u < U; ++u) acc[t][u] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 * U <= cols; c += 16 * U) {
    for (int u = 0; u < U; ++u) {
      const __m512 w = LoadW(row, c + 16 * u);
      for (int t = 0; t < TB; ++t) {
        acc[t][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + t * cols + c + 16 * u), acc[t][u]);
      }
    }
  }
  for (; c < cols; c += 16) {
    const __mmask16 m = cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
    const __m512 w = LoadWMasked(row, c, m);
    for (int t = 0; t < TB; ++t) {
      acc[t][0] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x + t * cols + c), acc[t][0]);
    }
  }
  for (int t = 0; t < TB; ++t) {
    __m512 s = acc[t][0];
    for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[t][u]);
    out[t] = _mm512_reduce_add_ps(s);
  }
}

template <typename W>
void RowsDense(const MatView& w, const float* x, const QuantizedActs&, int T, float* y,
               int64_t r0, int64_t r1) {
  const W* base = static_cast<const W*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    ForEachTGroup(T, [&](auto tb, int t0) {
      constexpr int TB = decltype(tb)::value;
      float out[TB];
      DenseRow<TB>(base + r * w.cols, x + t0 * w.cols, w.cols, out);
      for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r] = out[t];
    });
  }
}

// --- Q8_0 / Q4_0 ---------------------------------------------------------------------------------

// Converts the fp16 scales of blocks [0, nb) of a row to float; dws[nb .. nb rounded up to 16)
// become 0 so the padded last pair contributes nothing. The scale is the first field of every
// block, so a 32-bit gather at the block starts picks it up in the low half.
template <typename Block>
inline void RowScales(const Block* row, int64_t nb, float* dws) {
  const __m512i offsets = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(sizeof(Block))));
  for (int64_t b = 0; b < nb; b += 16) {
    const __mmask16 m = nb - b >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nb - b)) - 1);
    const __m512i raw =
        _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, offsets, row + b, 1);
    _mm512_storeu_ps(dws + b, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw)));
  }
}

// The 64 weights of blocks 2k and 2k+1 as unsigned bytes w + 128 (zero weights for a missing
// second block), matching the -128 * sum(x) folded into QuantizedActs::corr.
struct Q8Weights {
  static inline __m512i Pair(const BlockQ8_0* row, int64_t b) {
    const __m512i w = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[b].qs))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[b + 1].qs)), 1);
    return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
  static inline __m512i Single(const BlockQ8_0* row, int64_t b) {
    const __m512i w = _mm512_inserti64x4(
        _mm512_setzero_si512(),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[b].qs)), 0);
    return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

// The 64 nibbles of blocks 2k and 2k+1 as bytes 0..15 in element order: 128-bit lanes hold
// [low nibbles of b, high nibbles of b, low of b+1, high of b+1]. The -8 is in corr.
struct Q4Weights {
  static inline __m512i Expand(__m256i packed) {
    __m512i z = _mm512_castsi256_si512(packed);
    z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));
    z = _mm512_mask_blend_epi64(0xcc, z, _mm512_srli_epi16(z, 4));
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
  }
  static inline __m512i Pair(const BlockQ4_0* row, int64_t b) {
    return Expand(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[b].qs))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[b + 1].qs)), 1));
  }
  static inline __m512i Single(const BlockQ4_0* row, int64_t b) {
    // A zero byte expands to nibble 0, and the padded activations are 0, so it adds nothing.
    return Expand(_mm256_inserti128_si256(
        _mm256_setzero_si256(),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[b].qs)), 0));
  }
};

// acc[t] += (per-lane int32 dot of w with activation row t0+t over blocks b, b+1) * dw * dx.
template <int TB>
inline void QuantPairStep(__m512i w, __m512 dwl, const QuantizedActs& a, int t0, int64_t b,
                          __m512* acc) {
  const int64_t pb = a.padded_blocks;
  for (int t = 0; t < TB; ++t) {
    const int64_t i = (t0 + t) * pb + b;  // block index into the activation arrays
    const __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(a.corr + i * 8), w,
                                          _mm512_load_si512(a.qs + i * kQK));
    const __m512 scale = _mm512_mul_ps(dwl, _mm512_load_ps(a.d_lanes + i * 8));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[t]);
  }
}

template <int TB, typename Block, typename Weights>
inline void QuantRow(const Block* row, const float* dws, const QuantizedActs& a, int t0,
                     float* out) {
  const int64_t nb = a.n_blocks;
  // Lanes 0-7 take the scale of the pair's first block, lanes 8-15 the second.
  const __m512i pair_idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[TB];
  for (int t = 0; t < TB; ++t) acc[t] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const __m512 dwl = _mm512_permutexvar_ps(
        pair_idx, _mm512_castps128_ps512(
                      _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(dws + b)))));
    QuantPairStep<TB>(Weights::Pair(row, b), dwl, a, t0, b, acc);
  }
  if (b < nb) {
    const __m512 dwl = _mm512_permutexvar_ps(
        pair_idx, _mm512_castps128_ps512(
                      _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(dws + b)))));
    QuantPairStep<TB>(Weights::Single(row, b), dwl, a, t0, b, acc);
  }
  for (int t = 0; t < TB; ++t) out[t] = _mm512_reduce_add_ps(acc[t]);
}

template <typename Block, typename Weights>
void RowsQuant(const MatView& w, const float*, const QuantizedActs& a, int T, float* y,
               int64_t r0, int64_t r1) {
  const Block* base = static_cast<const Block*>(w.data);
  const int64_t nb = a.n_blocks;
  // Row scales as floats, padded to a multiple of 16 (RowScales writes whole vectors).
  constexpr int64_t kStackScales = 1024;
  alignas(64) float stack_scales[kStackScales];
  // malloc rather than std::vector: a std:: template instantiated in this file could be merged
  // by the linker with the baseline copy used elsewhere and carry AVX-512 code into it.
  float* heap_scales = nullptr;
  float* dws = stack_scales;
  if (nb + 16 > kStackScales) {
    heap_scales = static_cast<float*>(std::malloc((nb + 16) * sizeof(float)));
    dws = heap_scales;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const Block* row = base + r * nb;
    RowScales(row, nb, dws);
    dws[nb] = 0.0f;  // read by the last, half-empty pair
    ForEachTGroup(T, [&](auto tb, int t0) {
      constexpr int TB = decltype(tb)::value;
      float out[TB];
      QuantRow<TB, Block, Weights>(row, dws, a, t0, out);
      for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r] = out[t];
    });
  }
  std::free(heap_scales);
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

void QuantizeActsAvx512(const float* x, int T, int offset, QuantizedActs* a) {
  const int64_t nb = a->n_blocks;
  const int64_t pb = a->padded_blocks;
  const __m256i neg_offset = _mm256_set1_epi32(-offset);
  const __m256i ones_u8 = _mm256_set1_epi8(1);
  for (int t = 0; t < T; ++t) {
    for (int64_t b = 0; b < pb; ++b) {
      const int64_t i = t * pb + b;
      if (b == nb) {  // padding block
        std::memset(a->qs + i * kQK, 0, kQK);
        a->d[i] = 0.0f;
        _mm256_store_ps(a->d_lanes + i * 8, _mm256_setzero_ps());
        _mm256_store_si256(reinterpret_cast<__m256i*>(a->corr + i * 8), _mm256_setzero_si256());
        continue;
      }
      const float* xb = x + (t * nb + b) * kQK;
      const __m512 v0 = _mm512_loadu_ps(xb);
      const __m512 v1 = _mm512_loadu_ps(xb + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      // Same scalar arithmetic as ggml's reference quantizer (see ggml_types.cc).
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const __m512 idv = _mm512_set1_ps(id);
      const __m128i q0 = _mm512_cvtepi32_epi8(
          _mm512_cvttps_epi32(RoundHalfAway(_mm512_mul_ps(v0, idv))));
      const __m128i q1 = _mm512_cvtepi32_epi8(
          _mm512_cvttps_epi32(RoundHalfAway(_mm512_mul_ps(v1, idv))));
      const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
      _mm256_store_si256(reinterpret_cast<__m256i*>(a->qs + i * kQK), q);
      const float dh = Fp16ToFp32(Fp32ToFp16(d));
      a->d[i] = dh;
      _mm256_store_ps(a->d_lanes + i * 8, _mm256_set1_ps(dh));
      const __m256i lane_sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones_u8, q);
      _mm256_store_si256(reinterpret_cast<__m256i*>(a->corr + i * 8),
                         _mm256_mullo_epi32(lane_sums, neg_offset));
    }
  }
}

uint64_t StreamReadAvx512(const void* data, size_t bytes) {
  const auto* p = static_cast<const __m512i*>(data);
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < bytes / 64; i += 4) {
    s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + i));
    s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + i + 1));
    s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + i + 2));
    s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + i + 3));
  }
  return static_cast<uint64_t>(
      _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3))));
}

}  // namespace

const KernelSet& Avx512Kernels() {
  static const KernelSet kSet = {RowsDense<float>,
                                 RowsDense<uint16_t>,
                                 RowsQuant<BlockQ8_0, Q8Weights>,
                                 RowsQuant<BlockQ4_0, Q4Weights>,
                                 QuantizeActsAvx512,
                                 StreamReadAvx512};
  return kSet;
}

}  // namespace tandem::model::kernels_internal
