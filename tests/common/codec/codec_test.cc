// Hidden-state codecs: exact f32, bounded error for f16/bf16/int8/int4, the documented payload
// sizes, zstd framing, and bad payloads (wrong size, NaN/Inf, bad scales, corrupt or lying zstd
// frames, absurd shapes, random mutations) rejected with InvalidArgument and never a crash.
#include "common/codec/codec.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/model/ggml_types.h"
#include "gtest/gtest.h"

namespace tandem::codec {
namespace {

std::vector<float> RandomStates(int rows, int dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows) * dim);
  for (float& x : v) x = normal(rng);
  // Hidden states of real models have a few large outlier channels.
  for (int r = 0; r < rows; ++r) v[static_cast<size_t>(r) * dim + (r * 7) % dim] = 40.0f;
  return v;
}

const CodecKind kAll[] = {CodecKind::kF32, CodecKind::kF16, CodecKind::kBf16, CodecKind::kInt8,
                          CodecKind::kInt4};

TEST(CodecTest, ParseAndNames) {
  for (CodecKind k : kAll) {
    for (bool z : {false, true}) {
      CodecSpec spec{k, z};
      auto parsed = ParseCodec(CodecSpecName(spec));
      ASSERT_TRUE(parsed.ok());
      EXPECT_EQ(parsed->kind, k);
      EXPECT_EQ(parsed->zstd, z);
    }
  }
  EXPECT_FALSE(ParseCodec("int3").ok());
  EXPECT_FALSE(ParseCodec("int8+lz4").ok());
  EXPECT_FALSE(ParseCodec("").ok());
}

TEST(CodecTest, PayloadSizesAreTheDocumentedLayouts) {
  // stories260K: dim 64; the 110M layout: dim 768; an odd dim exercises int4 padding.
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kF32, 3, 64), 3u * 64 * 4);
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kF16, 3, 64), 3u * 64 * 2);
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kBf16, 3, 64), 3u * 64 * 2);
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kInt8, 3, 768), 3u * (4 + 768));
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kInt4, 3, 768), 3u * (24 * 2 + 384));
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kInt4, 1, 33), 2u * 2 + 17);
  EXPECT_EQ(*RawPayloadBytes(CodecKind::kF32, 0, 64), 0u);
  for (CodecKind k : kAll) {
    EXPECT_TRUE(absl::IsInvalidArgument(RawPayloadBytes(k, 1, 0).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(RawPayloadBytes(k, -1, 8).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(RawPayloadBytes(k, 1 << 20, 1 << 20).status()));
  }
}

TEST(CodecTest, RoundTripErrorsAreBounded) {
  for (int dim : {64, 288, 33}) {
    const int rows = 5;
    std::vector<float> x = RandomStates(rows, dim, static_cast<uint64_t>(dim));
    for (CodecKind k : kAll) {
      for (bool z : {false, true}) {
        CodecSpec spec{k, z};
        auto payload = Encode(spec, x, rows, dim);
        ASSERT_TRUE(payload.ok()) << payload.status();
        if (!z) {
          EXPECT_EQ(payload->size(), *RawPayloadBytes(k, rows, dim));
        }
        std::vector<float> y(x.size());
        ASSERT_TRUE(Decode(spec, *payload, rows, dim, y).ok());
        for (int r = 0; r < rows; ++r) {
          float amax = 0;
          for (int i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(x[r * dim + i]));
          for (int i = 0; i < dim; ++i) {
            const float a = x[r * dim + i], b = y[r * dim + i], err = std::fabs(a - b);
            switch (k) {
              case CodecKind::kF32:
                ASSERT_EQ(std::memcmp(&a, &b, 4), 0);
                break;
              case CodecKind::kF16:
                ASSERT_LE(err, std::fabs(a) * 0x1p-11f + 0x1p-24f) << a;
                break;
              case CodecKind::kBf16:
                ASSERT_LE(err, std::fabs(a) * 0x1p-8f) << a;
                break;
              case CodecKind::kInt8:
                ASSERT_LE(err, amax / 127.0f * 0.5f * 1.0001f) << a;
                break;
              case CodecKind::kInt4: {
                const int lo = i / kInt4Group * kInt4Group;
                float gmax = 0;
                for (int j = lo; j < std::min(dim, lo + kInt4Group); ++j) {
                  gmax = std::max(gmax, std::fabs(x[r * dim + j]));
                }
                // Half a step, plus the f16 rounding of the scale over up to 8 steps.
                ASSERT_LE(err, gmax / 7.0f * (0.5f + 8 * 0x1p-11f) * 1.0001f) << a;
                break;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CodecTest, ZstdShrinksRedundantStatesAndZeroRowsWork) {
  std::vector<float> zeros(4 * 64, 0.0f);
  for (CodecKind k : kAll) {
    auto raw = Encode({k, false}, zeros, 4, 64);
    auto z = Encode({k, true}, zeros, 4, 64);
    ASSERT_TRUE(raw.ok() && z.ok());
    EXPECT_LT(z->size(), raw->size());
    std::vector<float> y(zeros.size(), 1.0f);
    ASSERT_TRUE(Decode({k, true}, *z, 4, 64, y).ok());
    for (float v : y) ASSERT_EQ(v, 0.0f);
  }
  auto empty = Encode({CodecKind::kInt8, false}, {}, 0, 64);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_TRUE(Decode({CodecKind::kInt8, false}, *empty, 0, 64, {}).ok());
}

TEST(CodecTest, NonFiniteInputsAreRefusedByTheEncoder) {
  std::vector<float> x(64, 1.0f);
  x[10] = NAN;
  for (CodecKind k : kAll) EXPECT_TRUE(absl::IsInvalidArgument(Encode({k, false}, x, 1, 64).status()));
  x[10] = INFINITY;
  EXPECT_TRUE(absl::IsInvalidArgument(Encode({CodecKind::kInt8, false}, x, 1, 64).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Encode({CodecKind::kF32, false}, x, 2, 64).status()))
      << "size mismatch";
}

TEST(CodecTest, BadPayloadsAreInvalidArgument) {
  const int rows = 2, dim = 64;
  std::vector<float> x = RandomStates(rows, dim, 1), y(x.size());
  auto expect_bad = [&](const CodecSpec& spec, const std::string& payload, const char* what) {
    absl::Status s = Decode(spec, payload, rows, dim, y);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << what << ": " << s;
  };
  for (CodecKind k : kAll) {
    std::string good = *Encode({k, false}, x, rows, dim);
    expect_bad({k, false}, good.substr(0, good.size() - 1), "truncated");
    expect_bad({k, false}, good + "x", "trailing byte");
    expect_bad({k, false}, "", "empty");
    // The right bytes for another shape.
    std::vector<float> other((rows + 1) * dim);
    EXPECT_TRUE(absl::IsInvalidArgument(Decode({k, false}, good, rows + 1, dim, other)));
  }
  std::string f32 = *Encode({CodecKind::kF32, false}, x, rows, dim);
  const float nan = NAN;
  std::memcpy(f32.data() + 8, &nan, 4);
  expect_bad({CodecKind::kF32, false}, f32, "NaN in f32");
  std::string f16 = *Encode({CodecKind::kF16, false}, x, rows, dim);
  f16[6] = 0x00;
  f16[7] = 0x7c;  // +Inf
  expect_bad({CodecKind::kF16, false}, f16, "Inf in f16");
  std::string bf16 = *Encode({CodecKind::kBf16, false}, x, rows, dim);
  bf16[0] = static_cast<char>(0xc0);
  bf16[1] = 0x7f;  // NaN
  expect_bad({CodecKind::kBf16, false}, bf16, "NaN in bf16");
  std::string int8 = *Encode({CodecKind::kInt8, false}, x, rows, dim);
  const float neg = -1.0f;
  std::memcpy(int8.data() + 4 + dim, &neg, 4);  // second row's scale
  expect_bad({CodecKind::kInt8, false}, int8, "negative int8 scale");
  std::memcpy(int8.data(), &nan, 4);
  expect_bad({CodecKind::kInt8, false}, int8, "NaN int8 scale");
  std::string int4 = *Encode({CodecKind::kInt4, false}, x, rows, dim);
  int4[2] = 0x00;
  int4[3] = 0x7e;  // NaN f16 scale of group 1
  expect_bad({CodecKind::kInt4, false}, int4, "NaN int4 scale");

  std::string z = *Encode({CodecKind::kF32, true}, x, rows, dim);
  expect_bad({CodecKind::kF32, true}, "garbage, not zstd", "not a frame");
  expect_bad({CodecKind::kF32, true}, z.substr(0, z.size() / 2), "truncated frame");
  // A frame that declares another size (here: a larger shape's content): refused before
  // decompressing, so a small payload cannot make the verifier allocate a huge buffer.
  std::vector<float> big(64 * 1024, 0.0f);
  std::string bomb = *Encode({CodecKind::kF32, true}, big, 1024, 64);
  EXPECT_LT(bomb.size(), 1000u);
  expect_bad({CodecKind::kF32, true}, bomb, "frame for another shape");
  expect_bad({CodecKind::kF32, false}, z, "zstd payload without the zstd flag");
}

TEST(CodecTest, RandomMutationsNeverCrash) {
  const int rows = 3, dim = 40;
  std::vector<float> x = RandomStates(rows, dim, 7), y(x.size());
  std::mt19937_64 rng(42);
  int ok = 0, bad = 0;
  for (CodecKind k : kAll) {
    for (bool z : {false, true}) {
      const CodecSpec spec{k, z};
      const std::string good = *Encode(spec, x, rows, dim);
      for (int iter = 0; iter < 3000; ++iter) {
        std::string m = good;
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits && !m.empty(); ++e) {
          switch (rng() % 4) {
            case 0:
              m[rng() % m.size()] = static_cast<char>(rng());
              break;
            case 1:
              m.resize(rng() % m.size());
              break;
            case 2:
              m.insert(rng() % (m.size() + 1), 1, static_cast<char>(rng()));
              break;
            case 3:
              m[rng() % m.size()] ^= static_cast<char>(1 << (rng() % 8));
              break;
          }
        }
        absl::Status s = Decode(spec, m, rows, dim, y);
        if (s.ok()) {
          ++ok;
          for (float v : y) ASSERT_TRUE(std::isfinite(v));
        } else {
          ++bad;
          ASSERT_TRUE(absl::IsInvalidArgument(s)) << s;
        }
      }
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(bad, 0);
}

}  // namespace
}  // namespace tandem::codec
