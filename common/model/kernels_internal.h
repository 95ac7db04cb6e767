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
// so results match dot(dequant(w), dequant(quant_q8_0(x)))). The layout is unpacked for SIMD:
// int8 values and float scales in separate 64-byte aligned arrays, and the block count padded to
// an even number (with zero blocks) so AVX-512 can take two blocks per register. Each block also
// carries per-32-bit-lane data, because an int8 dot product instruction (vpdpbusd, pmaddubsw +
// pmaddwd) leaves the block's sum spread over 8 int32 lanes.
struct QuantizedActs {
  int64_t n_blocks = 0;       // cols / 32
  int64_t padded_blocks = 0;  // n_blocks rounded up to even; row stride of the arrays below
  int8_t* qs = nullptr;       // [T][padded_blocks * 32] quantized values
  float* d = nullptr;         // [T][padded_blocks] block scale, fp16-rounded as ggml stores it
  float* d_lanes = nullptr;   // [T][padded_blocks * 8] d repeated for each int32 lane of the block
  // [T][padded_blocks * 8] -offset * (sum of the 4 values in each int32 lane). Kernels that feed
  // weights as unsigned bytes w + offset (offset 128 for Q8_0, 8 for Q4_0 nibbles) start their
  // accumulators here, which cancels the offset exactly.
  int32_t* corr = nullptr;
};

// Offsets used for `corr` by weight type.
inline constexpr int kQ8_0Offset = 128;
inline constexpr int kQ4_0Offset = 8;

// Bytes of scratch QuantizeActs needs for T rows of n_blocks blocks (64-byte aligned arrays).
size_t QuantizedActsBytes(int T, int64_t n_blocks);
// Carves the arrays out of `scratch` (64-byte aligned, QuantizedActsBytes long).
QuantizedActs LayoutQuantizedActs(void* scratch, int T, int64_t n_blocks);

// Quantizes x [T][n_blocks * 32] into `a` (laid out by LayoutQuantizedActs).
using QuantizeActsFn = void (*)(const float* x, int T, int offset, QuantizedActs* a);
// Computes y[t * w.rows + r] for r in [r0, r1) and all t < T. `a` is filled for quantized
// weight types and unused (may be empty) for F32/F16, which read x directly.
using RowsFn = void (*)(const MatView& w, const float* x, const QuantizedActs& a, int T,
                        float* y, int64_t r0, int64_t r1);
// Reads `bytes` (a multiple of 256, 64-byte aligned) as fast as possible; returns a value that
// depends on the data so the loads cannot be optimized away.
using StreamReadFn = uint64_t (*)(const void* data, size_t bytes);

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

// Portable activation quantizer; the SIMD versions must produce identical bytes.
void QuantizeActsScalar(const float* x, int T, int offset, QuantizedActs* a);

}  // namespace tandem::model::kernels_internal

#endif  // TANDEM_COMMON_MODEL_KERNELS_INTERNAL_H_
