// Tests for ggml type metadata, FP16 conversion (exhaustive, and against F16C when present) and
// the Q8_0 / Q4_0 reference quantizers (error bounds and ggml's exact block layouts).
#include "common/model/ggml_types.h"

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::model {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(GgmlTypesTest, IdsNamesAndSizes) {
  EXPECT_EQ(GgmlTypeFromId(0), GgmlType::kF32);
  EXPECT_EQ(GgmlTypeFromId(1), GgmlType::kF16);
  EXPECT_EQ(GgmlTypeFromId(2), GgmlType::kQ4_0);
  EXPECT_EQ(GgmlTypeFromId(8), GgmlType::kQ8_0);
  EXPECT_FALSE(GgmlTypeFromId(3).has_value());  // q4_1: not supported
  EXPECT_FALSE(GgmlTypeFromId(12).has_value());
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ4_0, GgmlType::kQ8_0}) {
    EXPECT_EQ(GgmlTypeFromName(GgmlTypeName(t)), t);
  }
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ8_0), "q8_0");
  EXPECT_FALSE(GgmlTypeFromName("q5_k").has_value());

  EXPECT_EQ(BlockElements(GgmlType::kF32), 1);
  EXPECT_EQ(BlockElements(GgmlType::kQ4_0), 32);
  EXPECT_EQ(BlockBytes(GgmlType::kF16), 2u);
  EXPECT_EQ(BlockBytes(GgmlType::kQ8_0), 34u);
  EXPECT_EQ(BlockBytes(GgmlType::kQ4_0), 18u);
  EXPECT_EQ(RowBytes(GgmlType::kF32, 768), 3072u);
  EXPECT_EQ(RowBytes(GgmlType::kF16, 768), 1536u);
  EXPECT_EQ(RowBytes(GgmlType::kQ8_0, 768), 24u * 34);
  EXPECT_EQ(RowBytes(GgmlType::kQ4_0, 768), 24u * 18);
}

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(Fp32ToFp16(0.0f), 0x0000);
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
  EXPECT_EQ(Fp32ToFp16(1.0f), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(-2.0f), 0xc000);
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7bff);   // largest finite half
  EXPECT_EQ(Fp32ToFp16(65519.99f), 0x7bff);  // just below the tie
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7c00);   // tie rounds to even: inf
  EXPECT_EQ(Fp32ToFp16(1e10f), 0x7c00);
  EXPECT_EQ(Fp32ToFp16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);  // tie: to even (zero)
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie to even 2
  EXPECT_EQ(Fp32ToFp16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 units: tie to even 2
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(Fp32ToFp16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // 1 + 2^-11 is halfway between 1 and the next half: even (1.0) wins; 1 + 3*2^-11 goes up.
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
  // Rounding up from the largest subnormal produces the smallest normal.
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1023.5f, -24)), 0x0400);

  EXPECT_EQ(Fp16ToFp32(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(Fp16ToFp32(0x7c00)));
  EXPECT_TRUE(std::signbit(Fp16ToFp32(0x8000)));
  EXPECT_TRUE(std::isnan(Fp16ToFp32(0x7e00)));
  EXPECT_TRUE(std::isnan(Fp16ToFp32(0xfc01)));
  const uint16_t nan16 = Fp32ToFp16(std::nanf(""));
  EXPECT_EQ(nan16 & 0x7c00, 0x7c00);
  EXPECT_NE(nan16 & 0x03ff, 0);
}

TEST(Fp16Test, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFp32(static_cast<uint16_t>(h));
    const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    ASSERT_EQ(std::isnan(f), is_nan) << std::hex << h;
    if (is_nan) {
      // Payload kept; signaling NaNs come back quiet, as with F16C.
      ASSERT_EQ(Fp32ToFp16(f), h | 0x200) << std::hex << h;
    } else {
      ASSERT_EQ(Fp32ToFp16(f), h) << std::hex << h;
    }
  }
}

TEST(Fp16Test, RoundsToNearestHalfUsingFloatOrder) {
  // For floats strictly between two consecutive finite halves, the result is the nearer one.
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) {
    const uint16_t lo = static_cast<uint16_t>(rng() % 0x7bff);  // positive, lo + 1 finite
    const float a = Fp16ToFp32(lo), b = Fp16ToFp32(lo + 1);
    const float u = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
    const float f = a + (b - a) * u;
    if (f <= a || f >= b) continue;
    const uint16_t h = Fp32ToFp16(f);
    if (f - a < b - f) {
      ASSERT_EQ(h, lo) << f;
    } else if (f - a > b - f) {
      ASSERT_EQ(h, lo + 1) << f;
    }
    ASSERT_EQ(Fp32ToFp16(-f), h | 0x8000);
  }
}

__attribute__((target("f16c"))) uint16_t HardwareFp32ToFp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(Fp16Test, MatchesF16cOnSampledFloats) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU";
  // Every 251st bit pattern covers all exponents, subnormals, ties and NaN payloads.
  for (uint64_t u = 0; u <= 0xffffffffull; u += 251) {
    const float f = FromBits(static_cast<uint32_t>(u));
    ASSERT_EQ(Fp32ToFp16(f), HardwareFp32ToFp16(f)) << std::hex << u;
  }
  // Exact ties around every half value.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const uint32_t mid = Bits(Fp16ToFp32(static_cast<uint16_t>(h))) + (h >= 0x400 ? 0x1000 : 0);
    const float f = FromBits(mid);
    ASSERT_EQ(Fp32ToFp16(f), HardwareFp32ToFp16(f)) << std::hex << h;
  }
}

std::vector<float> RandomFloats(int n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(QuantizeTest, F32AndF16Rows) {
  const std::vector<float> x = RandomFloats(64, 3, 2.0f);
  std::vector<float> f32(64), back(64);
  QuantizeRow(GgmlType::kF32, x.data(), f32.data(), 64);
  EXPECT_EQ(f32, x);
  std::vector<uint16_t> f16(64);
  QuantizeRow(GgmlType::kF16, x.data(), f16.data(), 64);
  DequantizeRow(GgmlType::kF16, f16.data(), back.data(), 64);
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(f16[i], Fp32ToFp16(x[i]));
    EXPECT_EQ(back[i], Fp16ToFp32(f16[i]));
  }
}

TEST(QuantizeTest, Q8_0RoundTripError) {
  constexpr int kN = 32 * 64;
  for (float scale : {1e-3f, 1.0f, 300.0f}) {
    const std::vector<float> x = RandomFloats(kN, 5, scale);
    std::vector<BlockQ8_0> q(kN / 32);
    std::vector<float> y(kN);
    QuantizeRow(GgmlType::kQ8_0, x.data(), q.data(), kN);
    DequantizeRow(GgmlType::kQ8_0, q.data(), y.data(), kN);
    for (int b = 0; b < kN / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      ASSERT_EQ(q[b].d, Fp32ToFp16(amax / 127.0f));
      const float d_exact = amax / 127.0f;
      const float d = Fp16ToFp32(q[b].d);
      for (int j = 0; j < 32; ++j) {
        // Half a step, plus what fp16 rounding of d (coarse when d is subnormal) does to the
        // largest (127) code.
        const float bound = 0.5f * d_exact + 127.0f * std::fabs(d - d_exact) + 1e-3f * d_exact;
        ASSERT_LE(std::fabs(x[b * 32 + j] - y[b * 32 + j]), bound)
            << "scale " << scale << " block " << b << " j " << j;
      }
    }
  }
}

TEST(QuantizeTest, Q8_0ExactLayoutAndRounding) {
  // amax = 127 gives d = 1 exactly, so codes equal the (rounded) inputs.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j * 8 - 127);  // -127 .. 121
  x[1] = 2.5f;  // roundf: half away from zero
  x[2] = -2.5f;
  x[3] = 0.49f;
  BlockQ8_0 q;
  QuantizeRow(GgmlType::kQ8_0, x.data(), &q, 32);
  EXPECT_EQ(q.d, 0x3c00);
  EXPECT_EQ(q.qs[0], -127);
  EXPECT_EQ(q.qs[1], 3);
  EXPECT_EQ(q.qs[2], -3);
  EXPECT_EQ(q.qs[3], 0);
  for (int j = 4; j < 32; ++j) EXPECT_EQ(q.qs[j], j * 8 - 127);
  // Raw bytes: scale first (little-endian fp16), then the 32 codes.
  uint8_t raw[34];
  std::memcpy(raw, &q, 34);
  EXPECT_EQ(raw[0], 0x00);
  EXPECT_EQ(raw[1], 0x3c);
  EXPECT_EQ(static_cast<int8_t>(raw[2]), -127);

  std::vector<float> zeros(32, 0.0f), back(32, 1.0f);
  QuantizeRow(GgmlType::kQ8_0, zeros.data(), &q, 32);
  EXPECT_EQ(q.d, 0);
  DequantizeRow(GgmlType::kQ8_0, &q, back.data(), 32);
  EXPECT_EQ(back, zeros);
}

TEST(QuantizeTest, Q4_0NibbleLayoutMatchesGgml) {
  // The signed extreme is -8, so d = -8 / -8 = 1 and code = x + 8.
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) x[j] = static_cast<float>(j - 8);       // codes 0..15
  for (int j = 0; j < 16; ++j) x[16 + j] = static_cast<float>(7 - j);  // codes 15..0
  BlockQ4_0 q;
  QuantizeRow(GgmlType::kQ4_0, x.data(), &q, 32);
  EXPECT_EQ(q.d, 0x3c00);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(q.qs[j], j | ((15 - j) << 4)) << j;  // low nibble: element j, high: j + 16
  }
  std::vector<float> back(32);
  DequantizeRow(GgmlType::kQ4_0, &q, back.data(), 32);
  EXPECT_EQ(back, x);

  // A positive extreme gives a negative scale: d = 8 / -8 = -1, code = 8 - x, clamped to 15.
  for (int j = 0; j < 32; ++j) x[j] = 0.0f;
  x[0] = 8.0f;
  x[17] = -7.0f;
  x[5] = 3.0f;
  QuantizeRow(GgmlType::kQ4_0, x.data(), &q, 32);
  EXPECT_EQ(Fp16ToFp32(q.d), -1.0f);
  EXPECT_EQ(q.qs[0] & 0x0f, 0);  // 8 / -1 + 8.5 = 0.5 -> 0
  EXPECT_EQ(q.qs[5] & 0x0f, 5);  // -3 + 8.5 -> 5
  EXPECT_EQ(q.qs[1] >> 4, 15);   // 7 + 8.5 = 15.5 -> 15
  EXPECT_EQ(q.qs[2] & 0x0f, 8);  // zero -> 8
}

TEST(QuantizeTest, Q4_0RoundTripError) {
  constexpr int kN = 32 * 64;
  const std::vector<float> x = RandomFloats(kN, 9, 1.0f);
  std::vector<BlockQ4_0> q(kN / 32);
  std::vector<float> y(kN);
  QuantizeRow(GgmlType::kQ4_0, x.data(), q.data(), kN);
  DequantizeRow(GgmlType::kQ4_0, q.data(), y.data(), kN);
  for (int b = 0; b < kN / 32; ++b) {
    const float d = std::fabs(Fp16ToFp32(q[b].d));
    for (int j = 0; j < 32; ++j) {
      const float err = std::fabs(x[b * 32 + j] - y[b * 32 + j]);
      // Half a step, except the far side of the range, clamped at code 15: up to one step.
      ASSERT_LE(err, d * 1.01f) << "block " << b << " j " << j;
    }
    // The signed extreme is reproduced (it maps to code 0), up to fp16 rounding of d.
    int arg = 0;
    for (int j = 1; j < 32; ++j) {
      if (std::fabs(x[b * 32 + j]) > std::fabs(x[b * 32 + arg])) arg = j;
    }
    ASSERT_NEAR(y[b * 32 + arg], x[b * 32 + arg], std::fabs(x[b * 32 + arg]) * 2e-3f);
  }
}

}  // namespace
}  // namespace tandem::model
