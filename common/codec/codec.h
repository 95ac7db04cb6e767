// Hidden-state codecs for split mode: the edge encodes the layer-k states of `rows` positions
// (each `dim` floats) and the verifier decodes them against the shape it expects for the session.
//
// Wire layouts (all little-endian; a payload is exactly the size given here, nothing else):
//   f32   rows x dim IEEE binary32. Exact.
//   f16   rows x dim IEEE binary16, round to nearest even. Values beyond +-65504 are clamped
//         to +-65504 (hidden states of trained models stay far below).
//   bf16  rows x dim bfloat16 (the top 16 bits of binary32, round to nearest even).
//   int8  per row: binary32 scale s = absmax/127, then dim int8 q; x = s * q.
//   int4  per row: ceil(dim/32) binary16 scales s_g = absmax_g/7, then ceil(dim/2) bytes of
//         4-bit codes c = q + 8 with q in [-8, 7]; element 2j in the low nibble of byte j, 2j+1 in
//         the high nibble (a zero nibble pads an odd dim); x = s_g * q.
//   +zstd any of the above as one zstd frame with its content size in the header.
// Decoders check the size (and, with zstd, the declared content size) against rows x dim, and
// reject NaN/Inf values and negative or non-finite scales: a bad payload is InvalidArgument,
// never a crash, and never an allocation larger than the expected shape.
// Thread-safety: stateless functions.
#ifndef TANDEM_COMMON_CODEC_CODEC_H_
#define TANDEM_COMMON_CODEC_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::codec {

enum class CodecKind { kF32, kF16, kBf16, kInt8, kInt4 };

struct CodecSpec {
  CodecKind kind = CodecKind::kF32;
  bool zstd = false;
  int zstd_level = 3;
};

inline constexpr int kInt4Group = 32;
// Largest rows x dim a payload may describe (256 Mi floats); larger shapes are InvalidArgument.
inline constexpr int64_t kMaxElements = int64_t{1} << 28;

std::string_view CodecName(CodecKind kind);  // "f32", "f16", "bf16", "int8", "int4"
// Parses "f32", "f16", "bf16", "int8", "int4", optionally with "+zstd" (e.g. "int8+zstd").
absl::StatusOr<CodecSpec> ParseCodec(std::string_view text);
std::string CodecSpecName(const CodecSpec& spec);  // "int8+zstd"

// Bytes of the raw (not zstd-compressed) payload for this shape.
absl::StatusOr<size_t> RawPayloadBytes(CodecKind kind, int rows, int dim);

// Encodes rows x dim floats (row-major). Non-finite inputs are InvalidArgument.
absl::StatusOr<std::string> Encode(const CodecSpec& spec, std::span<const float> values, int rows,
                                   int dim);
// Decodes a payload that must describe exactly rows x dim values into `out` (rows*dim floats).
absl::Status Decode(const CodecSpec& spec, std::string_view payload, int rows, int dim,
                    std::span<float> out);

float Bf16ToFp32(uint16_t b);
uint16_t Fp32ToBf16(float f);  // round to nearest even; NaN stays NaN

}  // namespace tandem::codec

#endif  // TANDEM_COMMON_CODEC_CODEC_H_
