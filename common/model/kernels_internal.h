// Private interface between the MatMul dispatcher (kernels.cc) and the per-ISA kernel files
// (kernels_avx2.cc, kernels_avx512.cc). Not for use outside common/model/kernels*.cc.
// Thread-safety: the kernels are pure; a KernelSet is immutable after static initialization.
#ifndef TANDEM_COMMON_MODEL_KERNELS_INTERNAL_H_
#define TANDEM_COMMON_MODEL_KERNELS_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "common/model/ggml_types.h"
#include "common/model/kernels.h"

namespace tandem::model::kernels_internal {

// The T activation rows of one MatMul, quantized to Q8_0 once per call (ggml's reference formula,
// so results match dot(dequant(w), dequant(quant_q8_0(x)))). Every level fills `qs` and `d`
// identically; the other arrays are encodings that only one ISA's kernels read, filled by that
// ISA's quantizer. All arrays are 64-byte aligned and padded with zero blocks to a multiple of
// kGroupBlocks blocks per activation row.
inline constexpr int kGroupBlocks = 8;  // blocks per AVX-512 "group" (see xt below)

struct QuantizedActs {
  int64_t n_blocks = 0;       // cols / 32
  int64_t padded_blocks = 0;  // n_blocks rounded up to kGroupBlocks; row stride below
  int8_t* qs = nullptr;       // [T][padded_blocks * 32] quantized values q, element order
  float* d = nullptr;         // [T][padded_blocks] block scale, fp16-rounded as ggml stores it

  // AVX2 only. [T][padded_blocks * 8]: -offset * (sum of the 4 values in each int32 lane of a
  // block), so a kernel that feeds weights to pmaddubsw as unsigned w + offset can start from it.
  int32_t* corr = nullptr;

  // AVX-512 only. Blocks come in groups of 8 "transposed" to 8-byte granularity, so that one
  // vpdpbusd accumulator holds 8 blocks, 2 int32 lanes each, and the int32 sums of a whole block
  // accumulate exactly across 4 registers before a single int-to-float conversion:
  //   xt [T][group][m in 0..3][j in 0..7][8 bytes] = q[block 8 * group + j][8m .. 8m + 7].
  // Lane 2j of the accumulator then sums elements {0-3, 8-11, 16-19, 24-27} of block j, lane
  // 2j + 1 the rest.
  int8_t* xt = nullptr;
  int32_t* xt_corr = nullptr;  // [T][padded_blocks * 2]: -offset * (sum of q over that lane)
  float* xt_d = nullptr;       // [T][padded_blocks * 2]: d of the lane's block
};

// Offsets the quantizer folds into corr / xt_corr, by weight type: kernels feed Q8_0 weights as
// w + 128 (w ^ 0x80) and Q4_0 nibbles as they are (nibble = w + 8).
inline constexpr int kQ8_0Offset = 128;
inline constexpr int kQ4_0Offset = 8;

// Bytes of scratch a QuantizedActs needs for T rows of n_blocks blocks.
size_t QuantizedActsBytes(int T, int64_t n_blocks);
// Carves the arrays out of `scratch` (64-byte aligned, QuantizedActsBytes long).
QuantizedActs LayoutQuantizedActs(void* scratch, int T, int64_t n_blocks);

// Quantizes x [T][n_blocks * 32] into `a` (laid out by LayoutQuantizedActs); `offset` is
// kQ8_0Offset or kQ4_0Offset, for the weight type the activations will meet.
using QuantizeActsFn = void (*)(const float* x, int T, int offset, QuantizedActs* a);
// The T activation rows of a call as consecutive segments (row counts summing to T; count 0
// means one segment of T). Each segment's rows must come out exactly as a separate call over that
// segment would give them: the F32/F16 kernels group activation rows per segment, since their
// order of operations depends on the group size; the quantized kernels do not depend on it.
struct Segments {
  const int32_t* sizes = nullptr;
  int count = 0;
};

// Calls f(n, t0) for each segment (n rows starting at row t0).
template <typename F>
inline void ForEachSegment(int T, Segments segs, F&& f) {
  if (segs.count == 0) {
    f(T, 0);
    return;
  }
  int t0 = 0;
  for (int i = 0; i < segs.count; ++i) {
    f(static_cast<int>(segs.sizes[i]), t0);
    t0 += segs.sizes[i];
  }
}

// Computes y[t * w.rows + r] for r in [r0, r1) and all t < T. `a` is filled for quantized
// weight types and unused (may be empty) for F32/F16, which read x directly.
using RowsFn = void (*)(const MatView& w, const float* x, const QuantizedActs& a, int T,
                        Segments segs, float* y, int64_t r0, int64_t r1);
// Reads `bytes` (a multiple of 256, 64-byte aligned) as fast as possible; returns a value that
// depends on the data so the loads cannot be optimized away.
// Reads `bytes` as `streams` equal, concurrently advancing sequential streams (1, 2 or 4; each
// stream's length a multiple of 256 bytes). Several streams per core draw more bandwidth from
// some memory systems, as a matrix kernel walking several rows at once does.
using StreamReadFn = uint64_t (*)(const void* data, size_t bytes, int streams);

struct KernelSet {
  RowsFn f32;
  RowsFn f16;
  RowsFn q8_0;
  RowsFn q4_0;
  QuantizeActsFn quantize_acts;
  StreamReadFn stream_read;
};

const KernelSet& ScalarKernels();  // kernels.cc
const KernelSet& Avx2Kernels();    // kernels_avx2.cc; REQUIRES: CPU has AVX2, FMA, F16C
const KernelSet& Avx512Kernels();  // kernels_avx512.cc; REQUIRES: AVX-512 F/BW/VL/DQ/VNNI

// Portable activation quantizer (fills qs, d and corr); the SIMD versions must produce
// identical qs and d.
void QuantizeActsScalar(const float* x, int T, int offset, QuantizedActs* a);

}  // namespace tandem::model::kernels_internal

#endif  // TANDEM_COMMON_MODEL_KERNELS_INTERNAL_H_
