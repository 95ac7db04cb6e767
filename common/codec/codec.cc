// Hidden-state codecs (see codec.h for the wire layouts).
#include "common/codec/codec.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/ggml_types.h"

namespace tandem::codec {
namespace {

constexpr float kF16Max = 65504.0f;

absl::Status CheckShape(int rows, int dim) {
  if (rows < 0 || dim <= 0 || static_cast<int64_t>(rows) * dim > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden-state shape ", rows, " x ", dim, " is out of range"));
  }
  return absl::OkStatus();
}

void PutF32(char* p, float v) { std::memcpy(p, &v, 4); }
float GetF32(const char* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
void PutU16(char* p, uint16_t v) { std::memcpy(p, &v, 2); }
uint16_t GetU16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

int Int4Groups(int dim) { return (dim + kInt4Group - 1) / kInt4Group; }

absl::Status NonFinite(const char* what, int64_t index) {
  return absl::InvalidArgumentError(
      absl::StrCat("hidden-state payload: ", what, " ", index, " is not finite"));
}

}  // namespace

std::string_view CodecName(CodecKind kind) {
  switch (kind) {
    case CodecKind::kF32:
      return "f32";
    case CodecKind::kF16:
      return "f16";
    case CodecKind::kBf16:
      return "bf16";
    case CodecKind::kInt8:
      return "int8";
    case CodecKind::kInt4:
      return "int4";
  }
  return "?";
}

absl::StatusOr<CodecSpec> ParseCodec(std::string_view text) {
  CodecSpec spec;
  std::string_view base = text;
  if (size_t plus = text.find('+'); plus != std::string_view::npos) {
    if (text.substr(plus + 1) != "zstd") {
      return absl::InvalidArgumentError(absl::StrCat("codec '", std::string(text), "': only +zstd may follow"));
    }
    spec.zstd = true;
    base = text.substr(0, plus);
  }
  for (CodecKind k : {CodecKind::kF32, CodecKind::kF16, CodecKind::kBf16, CodecKind::kInt8,
                      CodecKind::kInt4}) {
    if (base == CodecName(k)) {
      spec.kind = k;
      return spec;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec '", std::string(text), "' (f32, f16, bf16, int8, int4, optionally +zstd)"));
}

std::string CodecSpecName(const CodecSpec& spec) {
  return absl::StrCat(std::string(CodecName(spec.kind)), spec.zstd ? "+zstd" : "");
}

float Bf16ToFp32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t Fp32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

absl::StatusOr<size_t> RawPayloadBytes(CodecKind kind, int rows, int dim) {
  if (absl::Status s = CheckShape(rows, dim); !s.ok()) return s;
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(dim);
  switch (kind) {
    case CodecKind::kF32:
      return n * 4;
    case CodecKind::kF16:
    case CodecKind::kBf16:
      return n * 2;
    case CodecKind::kInt8:
      return static_cast<size_t>(rows) * (4 + static_cast<size_t>(dim));
    case CodecKind::kInt4:
      return static_cast<size_t>(rows) *
             (2 * static_cast<size_t>(Int4Groups(dim)) + (static_cast<size_t>(dim) + 1) / 2);
  }
  return absl::InvalidArgumentError("unknown codec");
}

absl::StatusOr<std::string> Encode(const CodecSpec& spec, std::span<const float> values, int rows,
                                   int dim) {
  absl::StatusOr<size_t> bytes = RawPayloadBytes(spec.kind, rows, dim);
  if (!bytes.ok()) return bytes.status();
  if (values.size() != static_cast<size_t>(rows) * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError(absl::StrCat("encode: ", values.size(), " values for shape ",
                                                   rows, " x ", dim));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return NonFinite("input value", static_cast<int64_t>(i));
  }
  std::string out(*bytes, '\0');
  char* p = out.data();
  switch (spec.kind) {
    case CodecKind::kF32:
      std::memcpy(p, values.data(), values.size() * 4);
      break;
    case CodecKind::kF16:
      for (size_t i = 0; i < values.size(); ++i) {
        PutU16(p + 2 * i, model::Fp32ToFp16(std::clamp(values[i], -kF16Max, kF16Max)));
      }
      break;
    case CodecKind::kBf16:
      for (size_t i = 0; i < values.size(); ++i) PutU16(p + 2 * i, Fp32ToBf16(values[i]));
      break;
    case CodecKind::kInt8:
      for (int r = 0; r < rows; ++r) {
        const float* x = values.data() + static_cast<size_t>(r) * dim;
        float amax = 0;
        for (int i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float scale = amax / 127.0f;
        const float inv = scale > 0 ? 1.0f / scale : 0.0f;
        PutF32(p, scale);
        for (int i = 0; i < dim; ++i) {
          p[4 + i] = static_cast<char>(static_cast<int8_t>(std::lrintf(std::clamp(x[i] * inv, -127.0f, 127.0f))));
        }
        p += 4 + dim;
      }
      break;
    case CodecKind::kInt4: {
      const int groups = Int4Groups(dim);
      for (int r = 0; r < rows; ++r) {
        const float* x = values.data() + static_cast<size_t>(r) * dim;
        char* codes = p + 2 * groups;
        std::memset(codes, 0, (static_cast<size_t>(dim) + 1) / 2);
        for (int g = 0; g < groups; ++g) {
          const int lo = g * kInt4Group, hi = std::min(dim, lo + kInt4Group);
          float amax = 0;
          for (int i = lo; i < hi; ++i) amax = std::max(amax, std::fabs(x[i]));
          // The scale travels as f16: quantize with the rounded scale the decoder will use.
          const uint16_t scale_h = model::Fp32ToFp16(std::min(amax / 7.0f, kF16Max));
          PutU16(p + 2 * g, scale_h);
          const float scale = model::Fp16ToFp32(scale_h);
          const float inv = scale > 0 ? 1.0f / scale : 0.0f;
          for (int i = lo; i < hi; ++i) {
            const int q = static_cast<int>(std::lrintf(std::clamp(x[i] * inv, -8.0f, 7.0f)));
            const uint8_t c = static_cast<uint8_t>(q + 8);
            codes[i / 2] = static_cast<char>(static_cast<uint8_t>(codes[i / 2]) | (i % 2 ? c << 4 : c));
          }
        }
        p += 2 * groups + (dim + 1) / 2;
      }
      break;
    }
  }
  if (!spec.zstd) return out;
  std::string z(ZSTD_compressBound(out.size()), '\0');
  const size_t zn = ZSTD_compress(z.data(), z.size(), out.data(), out.size(), spec.zstd_level);
  if (ZSTD_isError(zn)) {
    return absl::InternalError(absl::StrCat("zstd: ", ZSTD_getErrorName(zn)));
  }
  z.resize(zn);
  return z;
}

absl::Status Decode(const CodecSpec& spec, std::string_view payload, int rows, int dim,
                    std::span<float> out) {
  absl::StatusOr<size_t> bytes = RawPayloadBytes(spec.kind, rows, dim);
  if (!bytes.ok()) return bytes.status();
  if (out.size() != static_cast<size_t>(rows) * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError("decode: output size does not match the shape");
  }
  std::string raw;
  if (spec.zstd) {
    const unsigned long long declared = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (declared == ZSTD_CONTENTSIZE_ERROR) {
      return absl::InvalidArgumentError("hidden-state payload: not a zstd frame");
    }
    if (declared != *bytes) {  // also catches ZSTD_CONTENTSIZE_UNKNOWN
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden-state payload: zstd frame declares ", declared == ZSTD_CONTENTSIZE_UNKNOWN ? 0 : declared,
          " bytes, the shape ", rows, " x ", dim, " needs ", *bytes));
    }
    raw.resize(*bytes);
    const size_t n = ZSTD_decompress(raw.data(), raw.size(), payload.data(), payload.size());
    if (ZSTD_isError(n) || n != *bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden-state payload: bad zstd frame (", ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short", ")"));
    }
    payload = raw;
  }
  if (payload.size() != *bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden-state payload of ", payload.size(), " bytes; ", std::string(CodecName(spec.kind)),
        " for ", rows, " x ", dim, " needs ", *bytes));
  }
  const char* p = payload.data();
  const size_t n = out.size();
  switch (spec.kind) {
    case CodecKind::kF32:
      std::memcpy(out.data(), p, n * 4);
      break;
    case CodecKind::kF16:
      for (size_t i = 0; i < n; ++i) out[i] = model::Fp16ToFp32(GetU16(p + 2 * i));
      break;
    case CodecKind::kBf16:
      for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFp32(GetU16(p + 2 * i));
      break;
    case CodecKind::kInt8:
      for (int r = 0; r < rows; ++r) {
        const float scale = GetF32(p);
        if (!std::isfinite(scale) || scale < 0) return NonFinite("int8 scale of row", r);
        float* y = out.data() + static_cast<size_t>(r) * dim;
        for (int i = 0; i < dim; ++i) y[i] = scale * static_cast<float>(static_cast<int8_t>(p[4 + i]));
        p += 4 + dim;
      }
      break;
    case CodecKind::kInt4: {
      const int groups = Int4Groups(dim);
      for (int r = 0; r < rows; ++r) {
        const char* codes = p + 2 * groups;
        float* y = out.data() + static_cast<size_t>(r) * dim;
        for (int g = 0; g < groups; ++g) {
          const float scale = model::Fp16ToFp32(GetU16(p + 2 * g));
          if (!std::isfinite(scale) || scale < 0) return NonFinite("int4 group scale", int64_t{r} * groups + g);
          const int lo = g * kInt4Group, hi = std::min(dim, lo + kInt4Group);
          for (int i = lo; i < hi; ++i) {
            const uint8_t b = static_cast<uint8_t>(codes[i / 2]);
            const int c = i % 2 ? (b >> 4) : (b & 0xf);
            y[i] = scale * static_cast<float>(c - 8);
          }
        }
        p += 2 * groups + (dim + 1) / 2;
      }
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return NonFinite("value", static_cast<int64_t>(i));
  }
  return absl::OkStatus();
}

}  // namespace tandem::codec
