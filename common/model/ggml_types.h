// Tensor element types shared with GGUF (ggml's numbering and block layouts), FP16 conversion,
// and row quantization / dequantization. Pure functions: safe to call from any thread.
#ifndef TANDEM_COMMON_MODEL_GGML_TYPES_H_
#define TANDEM_COMMON_MODEL_GGML_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem::model {

// ggml type ids as stored in GGUF tensor infos. Only these four are supported by the engine.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
};

inline constexpr int kQK = 32;  // elements per Q4_0 / Q8_0 block

// Q8_0: 32 signed bytes with one fp16 scale; x[i] = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q4_0: 32 4-bit values with one fp16 scale; x[i] = d * (nibble_i - 8). Byte j holds element j in
// its low nibble and element j + 16 in its high nibble.
struct BlockQ4_0 {
  uint16_t d;  // fp16 scale
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Returns the type for a raw GGUF type id, or nullopt when the engine does not support it.
std::optional<GgmlType> GgmlTypeFromId(uint32_t id);
std::string_view GgmlTypeName(GgmlType t);  // "f32", "f16", "q4_0", "q8_0"
std::optional<GgmlType> GgmlTypeFromName(std::string_view name);

// Elements per block (1 for F32/F16, 32 for the quantized types) and bytes per block.
int BlockElements(GgmlType t);
size_t BlockBytes(GgmlType t);
// Bytes for a row of n elements. REQUIRES: n % BlockElements(t) == 0.
size_t RowBytes(GgmlType t, int64_t n);

float Fp16ToFp32(uint16_t h);
uint16_t Fp32ToFp16(float f);  // round to nearest even, like F16C

// Converts n floats into type t (the layouts above). REQUIRES: n % BlockElements(t) == 0.
void QuantizeRow(GgmlType t, const float* src, void* dst, int64_t n);
// Converts n elements of type t back to float.
void DequantizeRow(GgmlType t, const void* src, float* dst, int64_t n);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_GGML_TYPES_H_
