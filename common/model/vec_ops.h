// Vector primitives for the parts of the forward pass that are not matrix products: attention
// dot products and weighted sums, the softmax exponentials and SwiGLU. Picked at run time like
// the matrix kernels (AVX2+FMA or portable C++), following ActiveSimdLevel() so tests can force
// the portable path. Thread-safety: pure functions.
#ifndef TANDEM_COMMON_MODEL_VEC_OPS_H_
#define TANDEM_COMMON_MODEL_VEC_OPS_H_

#include <cstdint>

namespace tandem::model {

struct VecOps {
  // sum_i a[i] * b[i]
  float (*dot)(const float* a, const float* b, int64_t n);
  // y[i] += alpha * x[i]
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);
  // x[i] = exp(x[i] - shift); returns the sum of the new x[i]. Relative error ~1e-7.
  float (*exp_shift_sum)(float* x, float shift, int64_t n);
  // gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
  void (*swiglu)(float* gate, const float* up, int64_t n);
};

// The primitives for the active SIMD level (see kernels.h).
const VecOps& ActiveVecOps();

namespace vec_ops_internal {
const VecOps& ScalarVecOps();
const VecOps& Avx2VecOps();  // REQUIRES: the CPU has AVX2 and FMA
}  // namespace vec_ops_internal

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_VEC_OPS_H_
