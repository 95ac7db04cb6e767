// Tests for MatMul: every weight type x SIMD level x batch size x shape against a double
// precision reference, with and without thread pools; the SIMD activation quantizers against the
// portable one byte for byte; and exact integer cases where no rounding is allowed at all.
#include "common/model/kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/model/ggml_types.h"
#include "common/model/kernels_internal.h"
#include "common/model/thread_pool.h"
#include "gtest/gtest.h"

namespace tandem::model {
namespace {

namespace ki = kernels_internal;

constexpr GgmlType kTypes[] = {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_0};

// Levels this CPU can run (ForceSimdLevel clamps the rest, so they would only repeat one).
std::vector<SimdLevel> Levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (l <= DetectedSimdLevel()) levels.push_back(l);
  }
  return levels;
}

class KernelsTest : public ::testing::Test {
 protected:
  void TearDown() override { ForceSimdLevel(DetectedSimdLevel()); }
};

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> dequant;  // rows x cols, what the kernel should be multiplying by
  MatView view;
};

Weights MakeWeights(GgmlType t, int64_t rows, int64_t cols, uint32_t seed) {
  Weights w;
  const std::vector<float> src = RandomFloats(rows * cols, seed);
  const size_t row_bytes = RowBytes(t, cols);
  w.bytes.resize(row_bytes * rows);
  w.dequant.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(t, src.data() + r * cols, w.bytes.data() + r * row_bytes, cols);
    DequantizeRow(t, w.bytes.data() + r * row_bytes, w.dequant.data() + r * cols, cols);
  }
  w.view = {t, w.bytes.data(), rows, cols};
  return w;
}

// The activations the kernel should see: as given for F32/F16, Q8_0 round-tripped otherwise.
std::vector<float> EffectiveActivations(GgmlType t, const std::vector<float>& x, int64_t cols) {
  if (t == GgmlType::kF32 || t == GgmlType::kF16) return x;
  std::vector<float> out(x.size());
  std::vector<BlockQ8_0> blocks(cols / kQK);
  for (size_t off = 0; off < x.size(); off += cols) {
    QuantizeRow(GgmlType::kQ8_0, x.data() + off, blocks.data(), cols);
    DequantizeRow(GgmlType::kQ8_0, blocks.data(), out.data() + off, cols);
  }
  return out;
}

// Reference y and a per-output error bound (relative to sum |w| |x|, float rounding scale).
void Reference(const Weights& w, const std::vector<float>& x_eff, int T, std::vector<double>* y,
               std::vector<double>* bound) {
  const int64_t rows = w.view.rows, cols = w.view.cols;
  y->assign(T * rows, 0.0);
  bound->assign(T * rows, 0.0);
  for (int t = 0; t < T; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double p = double(w.dequant[r * cols + c]) * double(x_eff[t * cols + c]);
        s += p;
        mag += std::fabs(p);
      }
      (*y)[t * rows + r] = s;
      (*bound)[t * rows + r] = 2e-5 * mag + 1e-6;
    }
  }
}

std::string Describe(SimdLevel level, GgmlType t, int T, int64_t rows, int64_t cols, int threads) {
  return std::string(SimdLevelName(level)) + " " + std::string(GgmlTypeName(t)) +
         " T=" + std::to_string(T) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
         " threads=" + std::to_string(threads);
}

TEST_F(KernelsTest, DetectionAndForcing) {
  EXPECT_EQ(ActiveSimdLevel(), DetectedSimdLevel());
  ForceSimdLevel(SimdLevel::kScalar);
  EXPECT_EQ(ActiveSimdLevel(), SimdLevel::kScalar);
  ForceSimdLevel(SimdLevel::kAvx512);
  EXPECT_EQ(ActiveSimdLevel(), DetectedSimdLevel());  // clamped
  EXPECT_EQ(SimdLevelName(SimdLevel::kAvx2), "avx2");
}

// The main sweep: every level, type, batch size and shape against the reference; the same level
// must give bit-identical results whatever the pool, because a row is always computed by the
// same code in the same order.
TEST_F(KernelsTest, MatchesReferenceAcrossLevelsTypesShapesAndPools) {
  const int kBatches[] = {1, 2, 3, 5, 7, 8, 11, 16};
  const int64_t kRows[] = {1, 7, 33, 100};
  const int64_t kCols[] = {32, 64, 96, 768};
  std::unique_ptr<ThreadPool> pools[] = {nullptr, std::make_unique<ThreadPool>(1),
                                         std::make_unique<ThreadPool>(2),
                                         std::make_unique<ThreadPool>(3)};
  uint32_t seed = 100;
  for (GgmlType type : kTypes) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        const Weights w = MakeWeights(type, rows, cols, seed++);
        const std::vector<float> x = RandomFloats(16 * cols, seed++);
        const std::vector<float> x_eff = EffectiveActivations(type, x, cols);
        std::vector<double> ref, bound;
        Reference(w, x_eff, 16, &ref, &bound);
        for (int T : kBatches) {
          for (SimdLevel level : Levels()) {
            ForceSimdLevel(level);
            std::vector<float> first;
            for (int p = 0; p < 4; ++p) {
              ThreadPool* pool = pools[p].get();
              const int threads = pool ? pool->size() : 0;
              SCOPED_TRACE(Describe(level, type, T, rows, cols, threads));
              std::vector<float> y(T * rows, std::nanf(""));
              MatMul(w.view, x.data(), T, y.data(), pool);
              for (int t = 0; t < T; ++t) {
                for (int64_t r = 0; r < rows; ++r) {
                  ASSERT_NEAR(y[t * rows + r], ref[t * rows + r], bound[t * rows + r])
                      << "t=" << t << " r=" << r;
                }
              }
              if (p == 0) {
                first = y;
              } else {
                ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * sizeof(float)));
              }
            }
          }
        }
      }
    }
  }
}

// F32 and F16 rows need not be a multiple of 32 (or of the SIMD width).
TEST_F(KernelsTest, DenseTypesWithOddColumnCounts) {
  ThreadPool pool(2);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16}) {
    for (int64_t cols : {1, 5, 15, 17, 40, 129}) {
      const Weights w = MakeWeights(type, 67, cols, static_cast<uint32_t>(cols));
      const std::vector<float> x = RandomFloats(5 * cols, 7);
      std::vector<double> ref, bound;
      Reference(w, x, 5, &ref, &bound);
      for (SimdLevel level : Levels()) {
        ForceSimdLevel(level);
        for (int T : {1, 2, 5}) {
          SCOPED_TRACE(Describe(level, type, T, 67, cols, 2));
          std::vector<float> y(T * 67);
          MatMul(w.view, x.data(), T, y.data(), &pool);
          for (int i = 0; i < T * 67; ++i) ASSERT_NEAR(y[i], ref[i], bound[i]) << i;
        }
      }
    }
  }
}

// Integer-valued data where every product and sum is exact in float: all levels must return
// exactly the integer dot product, including Q8_0 codes of -128 (legal on disk, though ggml's
// quantizer never writes them) that stress the unsigned-offset and sign tricks.
TEST_F(KernelsTest, ExactIntegerResults) {
  constexpr int64_t kCols = 96, kRows = 5;
  constexpr int kT = 3;
  std::mt19937 rng(11);
  // Activations with |x| <= 127 and 127 present in each block quantize with d = 1, exactly.
  std::vector<float> x(kT * kCols);
  for (int64_t i = 0; i < kT * kCols; ++i) {
    x[i] = (i % kQK == 0) ? ((i / kQK) % 2 ? 127.0f : -127.0f)
                          : static_cast<float>(static_cast<int>(rng() % 255) - 127);
  }
  std::vector<BlockQ8_0> q8(kRows * kCols / kQK);
  std::vector<BlockQ4_0> q4(kRows * kCols / kQK);
  std::vector<int> w8(kRows * kCols), w4(kRows * kCols);
  for (size_t b = 0; b < q8.size(); ++b) {
    q8[b].d = Fp32ToFp16(1.0f);
    q4[b].d = Fp32ToFp16(1.0f);
    for (int j = 0; j < kQK; ++j) {
      const int v8 = (j == 3 || j == 20) ? -128 : static_cast<int>(rng() % 256) - 128;
      q8[b].qs[j] = static_cast<int8_t>(v8);
      w8[b * kQK + j] = v8;
    }
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = static_cast<int>(rng() % 16), hi = static_cast<int>(rng() % 16);
      q4[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
      w4[b * kQK + j] = lo - 8;
      w4[b * kQK + j + kQK / 2] = hi - 8;
    }
  }
  for (SimdLevel level : Levels()) {
    ForceSimdLevel(level);
    for (int which = 0; which < 2; ++which) {
      const MatView view = which == 0 ? MatView{GgmlType::kQ8_0, q8.data(), kRows, kCols}
                                      : MatView{GgmlType::kQ4_0, q4.data(), kRows, kCols};
      const std::vector<int>& wi = which == 0 ? w8 : w4;
      std::vector<float> y(kT * kRows);
      MatMul(view, x.data(), kT, y.data(), nullptr);
      for (int t = 0; t < kT; ++t) {
        for (int64_t r = 0; r < kRows; ++r) {
          int64_t expect = 0;
          for (int64_t c = 0; c < kCols; ++c) {
            expect += int64_t{wi[r * kCols + c]} * static_cast<int64_t>(x[t * kCols + c]);
          }
          EXPECT_EQ(y[t * kRows + r], static_cast<float>(expect))
              << SimdLevelName(level) << " type " << which << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

// The SIMD activation quantizers must produce the portable quantizer's bytes exactly, including
// on exact rounding ties (x * id = k + 0.5), zero blocks and the padding block.
TEST_F(KernelsTest, ActivationQuantizersAgreeBytewise) {
  constexpr int kT = 3;
  for (int64_t nb : {1, 2, 3, 24}) {
    std::vector<float> x = RandomFloats(kT * nb * kQK, static_cast<uint32_t>(nb), 3.0f);
    // Block 0 of row 0: amax 127 -> id 1, so halves are exact ties for roundf.
    for (int j = 0; j < kQK; ++j) x[j] = (j == 0) ? 127.0f : (j % 2 ? 0.5f : -0.5f) + (j - 16);
    if (nb > 1) {
      for (int j = 0; j < kQK; ++j) x[kQK + j] = 0.0f;  // an all-zero block
    }
    for (int offset : {ki::kQ8_0Offset, ki::kQ4_0Offset}) {
      const size_t bytes = ki::QuantizedActsBytes(kT, nb);
      auto scratch = [&] {
        void* p = std::aligned_alloc(64, (bytes + 63) & ~size_t{63});
        std::memset(p, 0xcd, bytes);
        return std::unique_ptr<void, decltype(&std::free)>(p, &std::free);
      };
      auto ref_buf = scratch();
      ki::QuantizedActs ref = ki::LayoutQuantizedActs(ref_buf.get(), kT, nb);
      ki::QuantizeActsScalar(x.data(), kT, offset, &ref);
      // The portable layout is the reference quantizer's output.
      BlockQ8_0 blk;
      QuantizeRow(GgmlType::kQ8_0, x.data(), &blk, kQK);
      EXPECT_EQ(0, std::memcmp(blk.qs, ref.qs, kQK));
      EXPECT_EQ(ref.d[0], Fp16ToFp32(blk.d));
      EXPECT_EQ(ref.corr[0], -offset * (blk.qs[0] + blk.qs[1] + blk.qs[2] + blk.qs[3]));

      for (const ki::KernelSet* set : {&ki::Avx2Kernels(), &ki::Avx512Kernels()}) {
        if (set == &ki::Avx2Kernels() && DetectedSimdLevel() < SimdLevel::kAvx2) continue;
        if (set == &ki::Avx512Kernels() && DetectedSimdLevel() < SimdLevel::kAvx512) continue;
        auto buf = scratch();
        ki::QuantizedActs got = ki::LayoutQuantizedActs(buf.get(), kT, nb);
        set->quantize_acts(x.data(), kT, offset, &got);
        const size_t n = kT * ref.padded_blocks;
        SCOPED_TRACE(testing::Message() << "nb=" << nb);
        EXPECT_EQ(0, std::memcmp(ref.qs, got.qs, n * kQK));
        EXPECT_EQ(0, std::memcmp(ref.d, got.d, n * sizeof(float)));
        if (set == &ki::Avx2Kernels()) {
          EXPECT_EQ(0, std::memcmp(ref.corr, got.corr, n * 8 * sizeof(int32_t)));
        } else {
          // The group-transposed encoding, rebuilt here from the reference values.
          for (size_t i = 0; i < n; ++i) {
            const int8_t* q = ref.qs + i * kQK;
            const int8_t* xt = got.xt + (i / ki::kGroupBlocks) * ki::kGroupBlocks * kQK +
                               (i % ki::kGroupBlocks) * 8;
            int32_t lane_sum[2] = {0, 0};
            for (int m = 0; m < 4; ++m) {
              for (int k = 0; k < 8; ++k) {
                ASSERT_EQ(xt[m * 64 + k], q[8 * m + k]) << "block " << i;
                lane_sum[k / 4] += q[8 * m + k];
              }
            }
            ASSERT_EQ(got.xt_corr[2 * i], -offset * lane_sum[0]) << "block " << i;
            ASSERT_EQ(got.xt_corr[2 * i + 1], -offset * lane_sum[1]) << "block " << i;
            ASSERT_EQ(got.xt_d[2 * i], ref.d[i]);
            ASSERT_EQ(got.xt_d[2 * i + 1], ref.d[i]);
          }
        }
      }
    }
  }
}

// MatMulMany must give exactly what separate MatMul calls give, for every mix of weight types
// (Q8_0 and Q4_0 need differently quantized activations), with matrices large enough to be split
// across the pool and ones too small to be, and an empty one.
TEST_F(KernelsTest, MatMulManyEqualsSeparateMatMuls) {
  constexpr int64_t kCols = 256;
  const int64_t kRowCounts[] = {301, 64, 0, 7};
  std::unique_ptr<ThreadPool> pools[] = {nullptr, std::make_unique<ThreadPool>(2),
                                         std::make_unique<ThreadPool>(3)};
  const std::vector<float> x = RandomFloats(16 * kCols, 7);
  uint32_t seed = 900;
  for (int mix = 0; mix < 5; ++mix) {
    // mix 0-3: every matrix of one type; mix 4: the types rotate through the set.
    std::vector<Weights> ws;
    for (size_t i = 0; i < std::size(kRowCounts); ++i) {
      const GgmlType type = kTypes[mix < 4 ? mix : i % std::size(kTypes)];
      ws.push_back(MakeWeights(type, kRowCounts[i], kCols, seed++));
    }
    std::vector<MatView> views;
    for (const Weights& w : ws) views.push_back(w.view);
    for (int T : {1, 2, 5, 9}) {
      for (SimdLevel level : Levels()) {
        ForceSimdLevel(level);
        for (const auto& pool : pools) {
          SCOPED_TRACE(Describe(level, views[0].type, T, kRowCounts[0], kCols,
                                pool ? pool->size() : 0) +
                       " mix=" + std::to_string(mix));
          std::vector<std::vector<float>> separate, fused;
          std::vector<float*> outs;
          for (const MatView& v : views) {
            separate.emplace_back(T * v.rows + 1, std::nanf(""));
            fused.emplace_back(T * v.rows + 1, std::nanf(""));
            MatMul(v, x.data(), T, separate.back().data(), pool.get());
          }
          for (auto& f : fused) outs.push_back(f.data());
          MatMulMany(views, x.data(), T, outs, pool.get());
          for (size_t i = 0; i < views.size(); ++i) {
            ASSERT_EQ(0, std::memcmp(separate[i].data(), fused[i].data(),
                                     fused[i].size() * sizeof(float)))
                << "matrix " << i;
          }
        }
      }
    }
  }
}

// For Q8_0 / Q4_0 every output is computed the same way whatever T: the AVX-512 kernel splits T
// into passes of up to 6 activation rows (T <= 6) or 8 (T > 6), and each must give the bits a
// single-row call gives. T values cover every pass shape: one pass of each size 1-8, then 8 + 1
// up to 8 + 8.
TEST_F(KernelsTest, QuantizedResultsDoNotDependOnBatchSize) {
  constexpr int64_t kRows = 37;  // odd: the last row goes through the single-row tail
  constexpr int64_t kCols = 320;  // 10 blocks: one full group of 8 and a partial one
  ThreadPool pool(2);
  uint32_t seed = 900;
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    const Weights w = MakeWeights(type, kRows, kCols, seed++);
    const std::vector<float> x = RandomFloats(16 * kCols, seed++);
    for (SimdLevel level : Levels()) {
      ForceSimdLevel(level);
      std::vector<float> single(16 * kRows);
      for (int t = 0; t < 16; ++t) {
        MatMul(w.view, x.data() + t * kCols, 1, single.data() + t * kRows, nullptr);
      }
      for (int T = 2; T <= 16; ++T) {
        SCOPED_TRACE(Describe(level, type, T, kRows, kCols, 2));
        std::vector<float> y(T * kRows, std::nanf(""));
        MatMul(w.view, x.data(), T, y.data(), &pool);
        ASSERT_EQ(0, std::memcmp(single.data(), y.data(), y.size() * sizeof(float)));
      }
    }
  }
}

// The F32 / F16 kernels compute rows in groups (F16 at T = 1: of 4, 2 or 1 by row length; both
// at T > 1: of 4) and the Q4_0 loader reads a group of 8 blocks with two vector loads: each row
// must still come out exactly as when it is computed alone, whatever its place in a group, the
// task split and the tail of single rows. Shapes cover every group size (F16 rows of 1024 columns
// go in pairs at T = 1, of 2048 alone) and Q4_0 rows with and without a partial last group.
TEST_F(KernelsTest, RowsDoNotDependOnTheirNeighbours) {
  constexpr int64_t kRows = 103;  // splits into tasks; leaves tails of 3 and 1 rows
  ThreadPool pool(2);
  uint32_t seed = 500;
  for (GgmlType type : kTypes) {
    for (int64_t cols : {64, 320, 768, 1024, 2048}) {
      const Weights w = MakeWeights(type, kRows, cols, seed++);
      const std::vector<float> x = RandomFloats(9 * cols, seed++);
      for (SimdLevel level : Levels()) {
        ForceSimdLevel(level);
        for (int T : {1, 2, 5, 9}) {
          SCOPED_TRACE(Describe(level, type, T, kRows, cols, 2));
          std::vector<float> y(T * kRows, std::nanf(""));
          MatMul(w.view, x.data(), T, y.data(), &pool);
          const size_t row_bytes = RowBytes(type, cols);
          for (int64_t r = 0; r < kRows; ++r) {
            const MatView one{type, w.bytes.data() + r * row_bytes, 1, cols};
            std::vector<float> y1(T, std::nanf(""));
            MatMul(one, x.data(), T, y1.data(), nullptr);
            for (int t = 0; t < T; ++t) {
              ASSERT_EQ(0, std::memcmp(&y1[t], &y[t * kRows + r], sizeof(float)))
                  << "t=" << t << " r=" << r << ": " << y1[t] << " vs " << y[t * kRows + r];
            }
          }
        }
      }
    }
  }
}

// Batching across sessions: one call over several sequences' rows (segments) must give each
// sequence exactly the bits a call over its rows alone gives, for every type and level, whatever
// the segment sizes (1 and 2 take the unrolled single-row paths, 9 spans two groups) and wherever
// a segment falls in the batch.
TEST_F(KernelsTest, SegmentsEqualSeparateCalls) {
  constexpr int64_t kRows = 67;
  constexpr int64_t kCols = 320;
  const std::vector<std::vector<int32_t>> layouts = {
      {1, 1, 1}, {5, 1, 2}, {2, 9, 1, 3}, {1, 8, 7}, {3, 3, 3, 3, 3, 3}, {16}};
  ThreadPool pool(2);
  uint32_t seed = 1300;
  for (GgmlType type : kTypes) {
    const Weights w = MakeWeights(type, kRows, kCols, seed++);
    for (SimdLevel level : Levels()) {
      ForceSimdLevel(level);
      for (const std::vector<int32_t>& segs : layouts) {
        int T = 0;
        for (int32_t n : segs) T += n;
        SCOPED_TRACE(Describe(level, type, T, kRows, kCols, 2) + " segments " +
                     std::to_string(segs.size()));
        const std::vector<float> x = RandomFloats(T * kCols, seed++);
        std::vector<float> batched(T * kRows, std::nanf(""));
        MatMul(w.view, x.data(), T, batched.data(), &pool, segs);
        int t0 = 0;
        for (int32_t n : segs) {
          std::vector<float> alone(n * kRows, std::nanf(""));
          MatMul(w.view, x.data() + t0 * kCols, n, alone.data(), nullptr);
          ASSERT_EQ(0, std::memcmp(alone.data(), batched.data() + t0 * kRows,
                                   alone.size() * sizeof(float)))
              << "segment at row " << t0 << " of " << n << " rows";
          t0 += n;
        }
      }
    }
  }
}

TEST_F(KernelsTest, ZeroRowsIsANoOp) {
  const std::vector<float> x(64, 1.0f);
  MatMul(MatView{GgmlType::kQ8_0, nullptr, 0, 64}, x.data(), 2, nullptr, nullptr);
}

TEST_F(KernelsTest, MeasureReadBandwidthIsPositive) {
  ThreadPool pool(2);
  const double bw = MeasureReadBandwidth(&pool, 0.0);
  EXPECT_GT(bw, 1e8);   // 100 MB/s: any machine
  EXPECT_LT(bw, 1e13);  // 10 TB/s: no machine
}

}  // namespace
}  // namespace tandem::model
