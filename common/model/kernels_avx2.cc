// AVX2 + FMA + F16C MatMul kernels, for x86-64 CPUs without AVX-512 VNNI. Only called after
// kernels.cc has checked the CPU. Same structure as kernels_avx512.cc: each weight row is loaded
// once for up to 8 activation rows; quantized blocks use pmaddubsw/pmaddwd, one block per
// register. Thread-safety: pure functions.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/model/kernels_internal.h"

namespace tandem::model::kernels_internal {
namespace {

constexpr int kMaxTB = 8;  // activation rows per register-resident group

template <typename F>
inline void ForEachTGroup(int T, F&& f) {
  int t0 = 0;
  for (; t0 + kMaxTB <= T; t0 += kMaxTB) f(std::integral_constant<int, kMaxTB>{}, t0);
  switch (T - t0) {
    case 1:
      f(std::integral_constant<int, 1>{}, t0);
      break;
    case 2:
      f(std::integral_constant<int, 2>{}, t0);
      break;
    case 3:
      f(std::integral_constant<int, 3>{}, t0);
      break;
    case 4:
      f(std::integral_constant<int, 4>{}, t0);
      break;
    case 5:
      f(std::integral_constant<int, 5>{}, t0);
      break;
    case 6:
      f(std::integral_constant<int, 6>{}, t0);
      break;
    case 7:
      f(std::integral_constant<int, 7>{}, t0);
      break;
    default:
      break;
  }
}

template <int TB>
constexpr int kUnroll = TB == 1 ? 4 : (TB == 2 ? 2 : 1);

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// --- F32 / F16 -----------------------------------------------------------------------------------

inline __m256 LoadW(const float* row, int64_t c) { return _mm256_loadu_ps(row + c); }
inline __m256 LoadW(const uint16_t* row, int64_t c) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
}
inline float ScalarW(const float* row, int64_t c) { return row[c]; }
inline float ScalarW(const uint16_t* row, int64_t c) { return _cvtsh_ss(row[c]); }

template <int TB, typename W>
inline void DenseRow(const W* row, const float* x, int64_t cols, float* out) {
  constexpr int U = kUnroll<TB>;
  __m256 acc[TB][U];
  for (int t = 0; t < TB; ++t)
    for (int u = 0; u < U; ++u) acc[t][u] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 * U <= cols; c += 8 * U) {
    for (int u = 0; u < U; ++u) {
      const __m256 w = LoadW(row, c + 8 * u);
      for (int t = 0; t < TB; ++t) {
        acc[t][u] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * cols + c + 8 * u), acc[t][u]);
      }
    }
  }
  for (; c + 8 <= cols; c += 8) {
    const __m256 w = LoadW(row, c);
    for (int t = 0; t < TB; ++t) {
      acc[t][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * cols + c), acc[t][0]);
    }
  }
  for (int t = 0; t < TB; ++t) {
    __m256 s = acc[t][0];
    for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[t][u]);
    float sum = HorizontalSum(s);
    for (int64_t cc = c; cc < cols; ++cc) sum += ScalarW(row, cc) * x[t * cols + cc];
    out[t] = sum;
  }
}

template <typename W>
void RowsDense(const MatView& w, const float* x, const QuantizedActs&, int T, Segments segs,
               float* y, int64_t r0, int64_t r1) {
  const W* base = static_cast<const W*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    ForEachSegment(T, segs, [&](int n, int s0) {
      ForEachTGroup(n, [&](auto tb, int g0) {
        constexpr int TB = decltype(tb)::value;
        const int t0 = s0 + g0;
        float out[TB];
        DenseRow<TB>(base + r * w.cols, x + t0 * w.cols, w.cols, out);
        for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r] = out[t];
      });
    });
  }
}

// --- Q8_0 / Q4_0 ---------------------------------------------------------------------------------

// pmaddubsw multiplies unsigned by signed bytes with int16 saturation. Q8_0 uses the sign trick:
// |w| (at most 128) times x * sign(w) (at most 127 in magnitude) keeps each pair sum within
// int16, which an offset encoding (w + 128, up to 255) would not.
template <int TB>
inline void Q8Row(const BlockQ8_0* row, const QuantizedActs& a, int t0, float* out) {
  const int64_t pb = a.padded_blocks;
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc[TB];
  for (int t = 0; t < TB; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[b].qs));
    const __m256i aw = _mm256_abs_epi8(w);
    const __m256 dw = _mm256_set1_ps(_cvtsh_ss(row[b].d));
    for (int t = 0; t < TB; ++t) {
      const int64_t i = (t0 + t) * pb + b;
      const __m256i xs =
          _mm256_sign_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + i * kQK)), w);
      const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones16);
      const __m256 scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(a.d + i));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t]);
    }
  }
  for (int t = 0; t < TB; ++t) out[t] = HorizontalSum(acc[t]);
}

// Q4_0 nibbles (0..15) are already unsigned; the -8 comes from QuantizedActs::corr.
template <int TB>
inline void Q4Row(const BlockQ4_0* row, const QuantizedActs& a, int t0, float* out) {
  const int64_t pb = a.padded_blocks;
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  __m256 acc[TB];
  for (int t = 0; t < TB; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.n_blocks; ++b) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[b].qs));
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(packed, 4), low4),
                                       _mm_and_si128(packed, low4));
    const __m256 dw = _mm256_set1_ps(_cvtsh_ss(row[b].d));
    for (int t = 0; t < TB; ++t) {
      const int64_t i = (t0 + t) * pb + b;
      const __m256i p = _mm256_maddubs_epi16(
          w, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + i * kQK)));
      const __m256i s =
          _mm256_add_epi32(_mm256_madd_epi16(p, ones16),
                           _mm256_load_si256(reinterpret_cast<const __m256i*>(a.corr + i * 8)));
      const __m256 scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(a.d + i));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t]);
    }
  }
  for (int t = 0; t < TB; ++t) out[t] = HorizontalSum(acc[t]);
}

template <typename Block>
void RowsQuant(const MatView& w, const float*, const QuantizedActs& a, int T, Segments, float* y,
               int64_t r0, int64_t r1) {
  const Block* base = static_cast<const Block*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    const Block* row = base + r * a.n_blocks;
    ForEachTGroup(T, [&](auto tb, int t0) {
      constexpr int TB = decltype(tb)::value;
      float out[TB];
      if constexpr (std::is_same_v<Block, BlockQ8_0>) {
        Q8Row<TB>(row, a, t0, out);
      } else {
        Q4Row<TB>(row, a, t0, out);
      }
      for (int t = 0; t < TB; ++t) y[(t0 + t) * w.rows + r] = out[t];
    });
  }
}

// --- Activation quantization ---------------------------------------------------------------------

// roundf (half away from zero), exactly: trunc, then step away from zero if |fraction| >= 0.5.
inline __m256 RoundHalfAway(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
  const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, sign));
  return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

void QuantizeActsAvx2(const float* x, int T, int offset, QuantizedActs* a) {
  const int64_t nb = a->n_blocks;
  const int64_t pb = a->padded_blocks;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i neg_offset = _mm256_set1_epi32(-offset);
  const __m256i ones_u8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  // packs works within 128-bit lanes; this restores element order afterwards.
  const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int t = 0; t < T; ++t) {
    for (int64_t b = 0; b < pb; ++b) {
      const int64_t i = t * pb + b;
      auto* qs = reinterpret_cast<__m256i*>(a->qs + i * kQK);
      auto* corr = reinterpret_cast<__m256i*>(a->corr + i * 8);
      if (b >= nb) {  // padding block
        _mm256_store_si256(qs, _mm256_setzero_si256());
        a->d[i] = 0.0f;
        _mm256_store_si256(corr, _mm256_setzero_si256());
        continue;
      }
      const float* xb = x + (t * nb + b) * kQK;
      __m256 v[4];
      for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(xb + 8 * k);
      __m256 m =
          _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      // Same scalar arithmetic as ggml's reference quantizer (see ggml_types.cc).
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const __m256 idv = _mm256_set1_ps(id);
      __m256i qi[4];
      for (int k = 0; k < 4; ++k) {
        qi[k] = _mm256_cvttps_epi32(RoundHalfAway(_mm256_mul_ps(v[k], idv)));
      }
      const __m256i q16 =
          _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
      const __m256i q = _mm256_permutevar8x32_epi32(q16, unshuffle);
      _mm256_store_si256(qs, q);
      const float dh = Fp16ToFp32(Fp32ToFp16(d));
      a->d[i] = dh;
      const __m256i lane_sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones_u8, q), ones16);
      _mm256_store_si256(corr, _mm256_mullo_epi32(lane_sums, neg_offset));
    }
  }
}

template <int S>
uint64_t StreamReadStreams(const uint8_t* data, size_t bytes) {
  const size_t len = bytes / S;
  __m256i acc[S];
  for (int k = 0; k < S; ++k) acc[k] = _mm256_setzero_si256();
  for (size_t off = 0; off + 256 <= len; off += 256) {
    for (int k = 0; k < S; ++k) {
      const auto* p = reinterpret_cast<const __m256i*>(data + k * len + off);
      __m256i a = _mm256_add_epi64(_mm256_load_si256(p), _mm256_load_si256(p + 1));
      __m256i b = _mm256_add_epi64(_mm256_load_si256(p + 2), _mm256_load_si256(p + 3));
      __m256i c = _mm256_add_epi64(_mm256_load_si256(p + 4), _mm256_load_si256(p + 5));
      __m256i d = _mm256_add_epi64(_mm256_load_si256(p + 6), _mm256_load_si256(p + 7));
      acc[k] = _mm256_add_epi64(acc[k], _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
    }
  }
  __m256i t = acc[0];
  for (int k = 1; k < S; ++k) t = _mm256_add_epi64(t, acc[k]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), t);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t StreamReadAvx2(const void* data, size_t bytes, int streams) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (streams >= 4) return StreamReadStreams<4>(p, bytes);
  if (streams == 2) return StreamReadStreams<2>(p, bytes);
  return StreamReadStreams<1>(p, bytes);
}

}  // namespace

const KernelSet& Avx2Kernels() {
  static const KernelSet kSet = {RowsDense<float>,     RowsDense<uint16_t>, RowsQuant<BlockQ8_0>,
                                 RowsQuant<BlockQ4_0>, QuantizeActsAvx2,    StreamReadAvx2};
  return kSet;
}

}  // namespace tandem::model::kernels_internal
