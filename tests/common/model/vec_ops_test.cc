// The AVX2 vector primitives agree with the portable ones (and with libm) over ordinary and
// extreme inputs, for every length including the scalar tails.
#include "common/model/vec_ops.h"

#include <cmath>
#include <vector>

#include "common/model/kernels.h"
#include "common/model/sampler.h"
#include "gtest/gtest.h"

namespace tandem::model {
namespace {

using vec_ops_internal::Avx2VecOps;
using vec_ops_internal::ScalarVecOps;

bool HaveAvx2() { return DetectedSimdLevel() != SimdLevel::kScalar; }

std::vector<float> Random(int n, float scale, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * (2.0f * r.Uniform() - 1.0f);
  return v;
}

TEST(VecOpsTest, DotAndAxpyMatchPortable) {
  if (!HaveAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 64, 100, 1000}) {
    std::vector<float> a = Random(n, 1.0f, n), b = Random(n, 2.0f, n + 1);
    double want = 0;
    for (int i = 0; i < n; ++i) want += static_cast<double>(a[i]) * b[i];
    EXPECT_NEAR(Avx2VecOps().dot(a.data(), b.data(), n), want, 1e-5 * (n + 1)) << n;
    EXPECT_NEAR(ScalarVecOps().dot(a.data(), b.data(), n), want, 1e-5 * (n + 1)) << n;
    std::vector<float> y1 = b, y2 = b;
    Avx2VecOps().axpy(0.37f, a.data(), y1.data(), n);
    ScalarVecOps().axpy(0.37f, a.data(), y2.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(y1[i], y2[i], 1e-6f) << n;
  }
}

TEST(VecOpsTest, ExpShiftSumMatchesLibm) {
  if (!HaveAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (int n : {1, 5, 8, 13, 64, 333}) {
    std::vector<float> x = Random(n, 30.0f, 7 * n);
    x[0] = -200.0f;  // underflows
    std::vector<float> want = x, got = x;
    const float shift = 3.0f;
    float sum_want = ScalarVecOps().exp_shift_sum(want.data(), shift, n);
    float sum_got = Avx2VecOps().exp_shift_sum(got.data(), shift, n);
    EXPECT_NEAR(sum_got, sum_want, 1e-6f * sum_want) << n;
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(got[i], want[i], 4e-7f * want[i] + 1e-37f) << "x=" << x[i];
    }
  }
}

TEST(VecOpsTest, SwiGluMatchesPortableIncludingSaturation) {
  if (!HaveAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::vector<float> g = Random(203, 12.0f, 5), u = Random(203, 3.0f, 6);
  g[0] = -1000.0f;
  g[1] = 1000.0f;
  g[2] = 0.0f;
  g[3] = -90.0f;
  g[4] = 90.0f;
  std::vector<float> a = g, b = g;
  Avx2VecOps().swiglu(a.data(), u.data(), a.size());
  ScalarVecOps().swiglu(b.data(), u.data(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(a[i])) << g[i];
    EXPECT_NEAR(a[i], b[i], 1e-6f * std::fabs(b[i]) + 1e-30f) << "g=" << g[i];
  }
  EXPECT_NEAR(a[0], 0.0f, 1e-30f);  // silu(-1000) ~ -1000 e^-1000
  EXPECT_FLOAT_EQ(a[1], 1000.0f * u[1]);
}

TEST(VecOpsTest, ActiveOpsFollowTheForcedSimdLevel) {
  ForceSimdLevel(SimdLevel::kScalar);
  EXPECT_EQ(&ActiveVecOps(), &ScalarVecOps());
  ForceSimdLevel(DetectedSimdLevel());
  if (HaveAvx2()) {
    EXPECT_EQ(&ActiveVecOps(), &Avx2VecOps());
  }
}

}  // namespace
}  // namespace tandem::model
