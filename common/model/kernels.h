// Matrix kernels of the forward pass: weight matrix (F32/F16/Q8_0/Q4_0, usually mmapped) times a
// batch of T activation rows. Each weight row is read once for the whole batch, so a pass over
// T positions costs little more than one while the model is memory bound. The best SIMD variant
// (AVX-512 VNNI, AVX2+FMA+F16C, or portable C++) is chosen once at run time from the CPU.
// Thread-safety: pure functions; concurrency comes only from the ThreadPool passed in.
#ifndef TANDEM_COMMON_MODEL_KERNELS_H_
#define TANDEM_COMMON_MODEL_KERNELS_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "common/model/ggml_types.h"
#include "common/model/thread_pool.h"

namespace tandem::model {

// A read-only weight matrix: `rows` rows of `cols` elements, row-major, each row RowBytes(type,
// cols) bytes, rows contiguous. y = W x maps cols -> rows.
struct MatView {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

enum class SimdLevel { kScalar, kAvx2, kAvx512 };
SimdLevel DetectedSimdLevel();            // what the CPU supports
std::string_view SimdLevelName(SimdLevel level);
// Tests use this to run every variant on one machine. Levels above DetectedSimdLevel() are
// clamped to it. Not thread-safe with concurrent MatMul calls.
void ForceSimdLevel(SimdLevel level);
SimdLevel ActiveSimdLevel();

// y[t * w.rows + r] = sum_c W[r][c] * x[t * w.cols + c] for t in [0, T), r in [0, w.rows).
// x and y are row-major float32 with T rows. For Q8_0/Q4_0 the activations are quantized to Q8_0
// per block of 32 first (as llama.cpp does), so results differ from an f32 reference by the
// activation rounding. `pool` may be null (single thread).
// `segments` (row counts summing to T) splits the batch into independent sequences: each
// segment's rows come out bit for bit as a separate call over that segment alone would give
// them, while every weight is still read once for the whole batch (batching across sessions).
// Empty: one segment.
// REQUIRES: T >= 1, w.cols % BlockElements(w.type) == 0, y does not alias x; segments positive
// and summing to T.
void MatMul(const MatView& w, const float* x, int T, float* y, ThreadPool* pool,
            std::span<const int32_t> segments = {});

// ys[i] = ws[i] x for every i, with the same contract as MatMul for each product: the results
// equal separate MatMul calls bit for bit. Faster than separate calls for matrices that share
// their input (Q/K/V, or the two FFN up projections): the activations are quantized once and all
// rows go through a single ParallelFor, so there is one pool dispatch instead of one per matrix
// and the threads balance over the whole set.
// REQUIRES: ws.size() == ys.size(); every matrix has the same cols; ys[i] holds T * ws[i].rows
// floats and aliases neither x nor another ys[j].
void MatMulMany(std::span<const MatView> ws, const float* x, int T, std::span<float* const> ys,
                ThreadPool* pool, std::span<const int32_t> segments = {});

// Measures sustained memory read bandwidth (bytes/second) by streaming a buffer much larger than
// the caches with all threads of `pool`. Takes about `seconds` of wall time.
double MeasureReadBandwidth(ThreadPool* pool, double seconds = 0.5);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_KERNELS_H_
