// ggml type metadata, bit-exact FP16 conversion and the reference (scalar) row quantizers.
// The quantizers follow ggml's reference formulas exactly so that files we write load in
// llama.cpp and files it writes decode here bit for bit. Pure functions; thread-safe.
#include "common/model/ggml_types.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace tandem::model {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// ggml's quantize_row_q8_0_reference for one block of 32.
void QuantizeBlockQ8_0(const float* x, BlockQ8_0* out) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out->d = Fp32ToFp16(d);
  for (int j = 0; j < kQK; ++j) out->qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
}

// ggml's quantize_row_q4_0_reference for one block of 32. Using the signed extreme (not its
// magnitude) maps it exactly to -8, which spends the asymmetric extra code on the largest value.
void QuantizeBlockQ4_0(const float* x, BlockQ4_0* out) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  out->d = Fp32ToFp16(d);
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[j + kQK / 2] * id;
    // The int8 cast truncates toward zero; +8.5 turns that into round-half-up on [0, 16].
    const uint8_t q0 = static_cast<uint8_t>(std::min<int8_t>(15, static_cast<int8_t>(x0 + 8.5f)));
    const uint8_t q1 = static_cast<uint8_t>(std::min<int8_t>(15, static_cast<int8_t>(x1 + 8.5f)));
    out->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

}  // namespace

std::optional<GgmlType> GgmlTypeFromId(uint32_t id) {
  switch (id) {
    case 0:
      return GgmlType::kF32;
    case 1:
      return GgmlType::kF16;
    case 2:
      return GgmlType::kQ4_0;
    case 8:
      return GgmlType::kQ8_0;
    default:
      return std::nullopt;
  }
}

std::string_view GgmlTypeName(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kQ4_0:
      return "q4_0";
    case GgmlType::kQ8_0:
      return "q8_0";
  }
  return "unknown";
}

std::optional<GgmlType> GgmlTypeFromName(std::string_view name) {
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ4_0, GgmlType::kQ8_0}) {
    if (GgmlTypeName(t) == name) return t;
  }
  return std::nullopt;
}

int BlockElements(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
    case GgmlType::kF16:
      return 1;
    case GgmlType::kQ4_0:
    case GgmlType::kQ8_0:
      return kQK;
  }
  assert(false && "unknown GgmlType");
  return 1;
}

size_t BlockBytes(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return sizeof(float);
    case GgmlType::kF16:
      return sizeof(uint16_t);
    case GgmlType::kQ4_0:
      return sizeof(BlockQ4_0);
    case GgmlType::kQ8_0:
      return sizeof(BlockQ8_0);
  }
  assert(false && "unknown GgmlType");
  return 0;
}

size_t RowBytes(GgmlType t, int64_t n) {
  assert(n % BlockElements(t) == 0);
  return static_cast<size_t>(n / BlockElements(t)) * BlockBytes(t);
}

float Fp16ToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float v = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan (payload kept)
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t Fp32ToFp16(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    // Inf stays inf; NaN becomes a quiet NaN keeping the top payload bits, as F16C does.
    if (a == 0x7f800000u) return sign | 0x7c00;
    return static_cast<uint16_t>(sign | 0x7e00 | ((a >> 13) & 0x3ff));
  }
  // 65520 is halfway between the largest half (65504, odd mantissa) and 2^16: ties go up to inf.
  if (a >= 0x477ff000u) return sign | 0x7c00;
  if (a < 0x38800000u) {
    // Result is a half subnormal (or zero): units of 2^-24, rounded to nearest even. Rounding
    // up from the largest subnormal yields 0x400, which is exactly the smallest normal.
    const uint32_t exp = a >> 23;
    if (exp < 102) return sign;  // below 2^-25: rounds to zero (2^-25 itself ties to even 0)
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // in [14, 24]
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even; a carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

void QuantizeRow(GgmlType t, const float* src, void* dst, int64_t n) {
  assert(n % BlockElements(t) == 0);
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = Fp32ToFp16(src[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      auto* out = static_cast<BlockQ8_0*>(dst);
      for (int64_t b = 0; b < n / kQK; ++b) QuantizeBlockQ8_0(src + b * kQK, out + b);
      return;
    }
    case GgmlType::kQ4_0: {
      auto* out = static_cast<BlockQ4_0*>(dst);
      for (int64_t b = 0; b < n / kQK; ++b) QuantizeBlockQ4_0(src + b * kQK, out + b);
      return;
    }
  }
  assert(false && "unknown GgmlType");
}

void DequantizeRow(GgmlType t, const void* src, float* dst, int64_t n) {
  assert(n % BlockElements(t) == 0);
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(in[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      const auto* in = static_cast<const BlockQ8_0*>(src);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float d = Fp16ToFp32(in[b].d);
        for (int j = 0; j < kQK; ++j) dst[b * kQK + j] = d * static_cast<float>(in[b].qs[j]);
      }
      return;
    }
    case GgmlType::kQ4_0: {
      const auto* in = static_cast<const BlockQ4_0*>(src);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const float d = Fp16ToFp32(in[b].d);
        float* out = dst + b * kQK;
        for (int j = 0; j < kQK / 2; ++j) {
          out[j] = d * static_cast<float>((in[b].qs[j] & 0x0f) - 8);
          out[j + kQK / 2] = d * static_cast<float>((in[b].qs[j] >> 4) - 8);
        }
      }
      return;
    }
  }
  assert(false && "unknown GgmlType");
}

}  // namespace tandem::model
