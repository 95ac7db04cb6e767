// Portable vector primitives and the run-time choice between them and the AVX2 versions.
#include "common/model/vec_ops.h"

#include <cmath>

#include "common/model/kernels.h"

namespace tandem::model {
namespace vec_ops_internal {
namespace {

float DotScalar(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void AxpyScalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

float ExpShiftSumScalar(float* x, float shift, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = expf(x[i] - shift));
  return sum;
}

void SwiGluScalar(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    gate[i] = g * (1.0f / (1.0f + expf(-g))) * up[i];
  }
}

}  // namespace

const VecOps& ScalarVecOps() {
  static const VecOps ops = {DotScalar, AxpyScalar, ExpShiftSumScalar, SwiGluScalar};
  return ops;
}

}  // namespace vec_ops_internal

const VecOps& ActiveVecOps() {
  return ActiveSimdLevel() == SimdLevel::kScalar ? vec_ops_internal::ScalarVecOps()
                                                 : vec_ops_internal::Avx2VecOps();
}

}  // namespace tandem::model
