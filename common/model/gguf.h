// GGUF v3 reader and writer (llama.cpp's model container). The reader validates every length,
// count and offset against the file size before use, so a hostile file yields InvalidArgument,
// never a crash. Tensor data and string values point into the caller's bytes (usually an mmap):
// a GgufFile must not outlive the bytes it was parsed from.
// Thread-safety: a parsed GgufFile is immutable and may be read from any thread.
#ifndef TANDEM_COMMON_MODEL_GGUF_H_
#define TANDEM_COMMON_MODEL_GGUF_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/ggml_types.h"

namespace tandem::model {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
std::string_view GgufTypeName(GgufType t);

// One metadata value. Scalars are widened: integers and bools to `i` (uint64 values above
// INT64_MAX are rejected by the parser), floats to `f`. Arrays keep their element type; numeric
// array elements stay in the file (little-endian, `array_data`), string arrays are listed in
// `strings`. Nested arrays are rejected.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  int64_t i = 0;
  double f = 0;
  std::string_view str;
  GgufType array_type = GgufType::kUint8;
  uint64_t array_count = 0;
  const uint8_t* array_data = nullptr;    // numeric arrays
  std::vector<std::string_view> strings;  // string arrays
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne[0] first: dims[0] is the row length (innermost)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;        // relative to the data section
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t elements() const;
};

// Limits that keep a hostile header from making the parser allocate absurd amounts.
struct GgufLimits {
  uint64_t max_kv = 1 << 20;          // metadata pairs
  uint64_t max_tensors = 1 << 20;
  uint64_t max_array = 1ull << 28;    // elements in one array
  uint64_t max_string = 1ull << 26;   // bytes in one string
};

class GgufFile {
 public:
  // Parses a complete GGUF image. `bytes` must stay valid and unchanged while the result lives.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(std::span<const uint8_t> bytes,
                                                         const GgufLimits& limits = {});

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute start of the data section
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* Find(std::string_view key) const;
  const GgufTensorInfo* FindTensor(std::string_view name) const;

  // Typed getters. NotFound when the key is absent, InvalidArgument when its type does not fit.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;    // any integer type or bool
  absl::StatusOr<double> GetFloat(std::string_view key) const;   // float32/64 or integer
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

 private:
  GgufFile() = default;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  // Name -> index, so lookups stay O(1) however many entries a (hostile) file declares.
  absl::flat_hash_map<std::string, size_t> kv_index_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file in memory. Keys and tensors are written in the order added.
class GgufWriter {
 public:
  void SetString(std::string key, std::string value);
  void SetUint32(std::string key, uint32_t value);
  void SetInt32(std::string key, int32_t value);
  void SetFloat32(std::string key, float value);
  void SetBool(std::string key, bool value);
  void SetStringArray(std::string key, const std::vector<std::string>& values);
  void SetFloat32Array(std::string key, const std::vector<float>& values);
  void SetInt32Array(std::string key, const std::vector<int32_t>& values);
  // `data` holds RowBytes(type, dims[0]) * (product of the other dims) bytes.
  void AddTensor(std::string name, std::vector<int64_t> dims, GgmlType type,
                 std::span<const uint8_t> data);
  void SetAlignment(uint32_t alignment);  // also writes general.alignment; default 32

  std::vector<uint8_t> Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    GgmlType type;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, std::vector<uint8_t>>> kv_;  // key -> encoded type+value
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_GGUF_H_
