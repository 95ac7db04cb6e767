// GGUF v3 parsing and writing. The parser is a bounds-checked cursor over the file image: every
// read checks the remaining length first, and every size computed from header fields is checked
// for overflow before it is compared with the file size.
#include "common/model/gguf.h"

#include <cstring>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/status_macros.h"

namespace tandem::model {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32

size_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool IsValidType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

// A cursor over untrusted bytes. Every Read* fails cleanly at the end of the input.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  const uint8_t* here() const { return bytes_.data() + pos_; }

  absl::Status Need(size_t n, absl::string_view what) const {
    if (n > remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "truncated GGUF: %s needs %u bytes at offset %u but only %u remain", what, n, pos_,
          remaining()));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, here(), sizeof(T));  // the host is little-endian x86-64, like GGUF
    pos_ += sizeof(T);
    return v;
  }

  absl::Status Skip(size_t n, absl::string_view what) {
    RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string_view> ReadString(absl::string_view what, uint64_t max_len) {
    ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > max_len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF %s at offset %u has length %u, over the limit %u", what, pos_ - 8, len, max_len));
    }
    RETURN_IF_ERROR(Need(len, what));
    std::string_view s(reinterpret_cast<const char*>(here()), len);
    pos_ += len;
    return s;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

absl::StatusOr<GgufValue> ReadValue(Reader& r, GgufType type, const GgufLimits& limits,
                                    absl::string_view key) {
  GgufValue v;
  v.type = type;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF key '", key, "': ", why));
  };
  switch (type) {
    case GgufType::kUint8: { ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(key)); v.i = x; break; }
    case GgufType::kInt8: { ASSIGN_OR_RETURN(int8_t x, r.Read<int8_t>(key)); v.i = x; break; }
    case GgufType::kUint16: { ASSIGN_OR_RETURN(uint16_t x, r.Read<uint16_t>(key)); v.i = x; break; }
    case GgufType::kInt16: { ASSIGN_OR_RETURN(int16_t x, r.Read<int16_t>(key)); v.i = x; break; }
    case GgufType::kUint32: { ASSIGN_OR_RETURN(uint32_t x, r.Read<uint32_t>(key)); v.i = x; break; }
    case GgufType::kInt32: { ASSIGN_OR_RETURN(int32_t x, r.Read<int32_t>(key)); v.i = x; break; }
    case GgufType::kInt64: { ASSIGN_OR_RETURN(int64_t x, r.Read<int64_t>(key)); v.i = x; break; }
    case GgufType::kUint64: {
      ASSIGN_OR_RETURN(uint64_t x, r.Read<uint64_t>(key));
      // Keep uint64 values representable: counts and ids never need more than 63 bits, and the
      // "none" id 0xFFFFFFFF is a u32. All-ones u64 sentinels become -1.
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        v.i = (x == std::numeric_limits<uint64_t>::max()) ? -1 : std::numeric_limits<int64_t>::max();
      } else {
        v.i = static_cast<int64_t>(x);
      }
      break;
    }
    case GgufType::kFloat32: { ASSIGN_OR_RETURN(float x, r.Read<float>(key)); v.f = x; break; }
    case GgufType::kFloat64: { ASSIGN_OR_RETURN(double x, r.Read<double>(key)); v.f = x; break; }
    case GgufType::kBool: {
      ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(key));
      if (x > 1) return bad(absl::StrCat("bool value ", x, " is neither 0 nor 1"));
      v.i = x;
      break;
    }
    case GgufType::kString: {
      ASSIGN_OR_RETURN(v.str, r.ReadString(key, limits.max_string));
      break;
    }
    case GgufType::kArray: {
      ASSIGN_OR_RETURN(uint32_t et, r.Read<uint32_t>(key));
      if (!IsValidType(et)) return bad(absl::StrCat("unknown array element type ", et));
      v.array_type = static_cast<GgufType>(et);
      if (v.array_type == GgufType::kArray) return bad("nested arrays are not supported");
      ASSIGN_OR_RETURN(v.array_count, r.Read<uint64_t>(key));
      if (v.array_count > limits.max_array) {
        return bad(absl::StrCat("array of ", v.array_count, " elements is over the limit ",
                                limits.max_array));
      }
      if (v.array_type == GgufType::kString) {
        // Each string needs at least its 8-byte length: reject impossible counts before reserving.
        if (v.array_count > r.remaining() / 8) return bad("string array is longer than the file");
        v.strings.reserve(v.array_count);
        for (uint64_t k = 0; k < v.array_count; ++k) {
          ASSIGN_OR_RETURN(std::string_view s, r.ReadString(key, limits.max_string));
          v.strings.push_back(s);
        }
      } else {
        size_t es = ScalarSize(v.array_type);
        if (v.array_count > r.remaining() / es) return bad("array is longer than the file");
        v.array_data = r.here();
        RETURN_IF_ERROR(r.Skip(v.array_count * es, key));
      }
      break;
    }
  }
  return v;
}

bool IsIntegerType(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kUint16: case GgufType::kInt16:
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kUint64: case GgufType::kInt64:
    case GgufType::kBool:
      return true;
    default:
      return false;
  }
}

// Reads element k of a numeric array as int64 or double.
int64_t ArrayInt(const GgufValue& v, uint64_t k) {
  const uint8_t* p = v.array_data + k * ScalarSize(v.array_type);
  auto get = [p](auto tag) {
    decltype(tag) x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (v.array_type) {
    case GgufType::kUint8: case GgufType::kBool: return get(uint8_t{});
    case GgufType::kInt8: return get(int8_t{});
    case GgufType::kUint16: return get(uint16_t{});
    case GgufType::kInt16: return get(int16_t{});
    case GgufType::kUint32: return get(uint32_t{});
    case GgufType::kInt32: return get(int32_t{});
    case GgufType::kUint64: {
      uint64_t x = get(uint64_t{});
      return x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? -1
                                                                            : static_cast<int64_t>(x);
    }
    case GgufType::kInt64: return get(int64_t{});
    default: return 0;
  }
}

double ArrayFloat(const GgufValue& v, uint64_t k) {
  const uint8_t* p = v.array_data + k * ScalarSize(v.array_type);
  if (v.array_type == GgufType::kFloat32) {
    float x;
    std::memcpy(&x, p, 4);
    return x;
  }
  if (v.array_type == GgufType::kFloat64) {
    double x;
    std::memcpy(&x, p, 8);
    return x;
  }
  return static_cast<double>(ArrayInt(v, k));
}

}  // namespace

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8: return "u8";
    case GgufType::kInt8: return "i8";
    case GgufType::kUint16: return "u16";
    case GgufType::kInt16: return "i16";
    case GgufType::kUint32: return "u32";
    case GgufType::kInt32: return "i32";
    case GgufType::kFloat32: return "f32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "str";
    case GgufType::kArray: return "arr";
    case GgufType::kUint64: return "u64";
    case GgufType::kInt64: return "i64";
    case GgufType::kFloat64: return "f64";
  }
  return "?";
}

int64_t GgufTensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::span<const uint8_t> bytes,
                                                          const GgufLimits& limits) {
  Reader r(bytes);
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a GGUF file: ", bytes.size(), " bytes is too short for the magic"));
  }
  ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a GGUF file: magic is 0x%08x, expected 0x%08x (\"GGUF\")", magic, kMagic));
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  ASSIGN_OR_RETURN(f->version_, r.Read<uint32_t>("version"));
  if (f->version_ == 0x02000000u || f->version_ == 0x03000000u) {
    return absl::InvalidArgumentError(
        "big-endian GGUF files are not supported; convert the model on a little-endian machine");
  }
  if (f->version_ != 2 && f->version_ != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported GGUF version ", f->version_, " (supported: 2, 3)"));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, r.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, r.Read<uint64_t>("metadata count"));
  if (n_kv > limits.max_kv || n_kv > r.remaining() / 12) {  // a KV needs >= 12 bytes
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF metadata count ", n_kv, " is impossible for a ", bytes.size(),
                     "-byte file"));
  }
  if (n_tensors > limits.max_tensors || n_tensors > r.remaining() / 24) {  // info >= 24 bytes
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF tensor count ", n_tensors, " is impossible for a ", bytes.size(), "-byte file"));
  }

  f->kv_.reserve(n_kv);
  f->kv_index_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    ASSIGN_OR_RETURN(std::string_view key, r.ReadString("metadata key", limits.max_string));
    if (key.empty()) return absl::InvalidArgumentError(absl::StrCat("GGUF metadata key ", k, " is empty"));
    ASSIGN_OR_RETURN(uint32_t type, r.Read<uint32_t>("metadata type"));
    if (!IsValidType(type)) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF key '", std::string(key), "' has unknown value type ", type));
    }
    ASSIGN_OR_RETURN(GgufValue v, ReadValue(r, static_cast<GgufType>(type), limits, absl::string_view(key.data(), key.size())));
    // A hash index, not a scan: a linear search per key is quadratic in a hostile key count.
    if (!f->kv_index_.emplace(std::string(key), f->kv_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF key '", std::string(key), "' appears twice"));
    }
    f->kv_.emplace_back(std::string(key), std::move(v));
  }

  if (const GgufValue* a = f->Find("general.alignment"); a != nullptr) {
    // The spec asks for a multiple of 8; a power of two keeps offsets simple to check.
    if (!IsIntegerType(a->type) || a->type == GgufType::kBool || a->i < 8 || a->i > (1 << 20) ||
        (a->i & (a->i - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment ", a->i, " must be a power of two in [8, 2^20]"));
    }
    f->alignment_ = static_cast<uint64_t>(a->i);
  }

  f->tensors_.reserve(n_tensors);
  f->tensor_index_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    ASSIGN_OR_RETURN(std::string_view name, r.ReadString("tensor name", limits.max_string));
    t.name = std::string(name);
    ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>("tensor dims"));
    if (n_dims == 0 || n_dims > 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "' has ", n_dims, " dimensions (1..4 supported)"));
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t dim, r.Read<uint64_t>("tensor dim"));
      // At most 2^60 elements, so that the byte size (<= 4 bytes per element) cannot wrap.
      if (dim == 0 || dim > (1ull << 40) || elements > (1ull << 60) / dim) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "' has absurd dimension ", dim));
      }
      elements *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    ASSIGN_OR_RETURN(uint32_t type_id, r.Read<uint32_t>("tensor type"));
    std::optional<GgmlType> type = GgmlTypeFromId(type_id);
    if (!type) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", t.name, "' has ggml type ", type_id,
          ", which is not supported (supported: f32=0, f16=1, q4_0=2, q8_0=8)"));
    }
    t.type = *type;
    if (t.dims[0] % BlockElements(t.type) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", t.name, "' has row length ", t.dims[0], ", not a multiple of the ",
          std::string(GgmlTypeName(t.type)), " block size ", BlockElements(t.type)));
    }
    ASSIGN_OR_RETURN(t.offset, r.Read<uint64_t>("tensor offset"));
    if (t.offset % f->alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' offset ", t.offset,
                                                     " is not aligned to ", f->alignment_));
    }
    t.bytes = RowBytes(t.type, t.dims[0]) * (elements / t.dims[0]);
    if (!f->tensor_index_.emplace(t.name, f->tensors_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' appears twice"));
    }
    f->tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment. A file without tensors may
  // end right after its metadata, unpadded.
  uint64_t end_of_header = r.pos();
  f->data_offset_ = (end_of_header + f->alignment_ - 1) / f->alignment_ * f->alignment_;
  if (n_tensors == 0) return f;
  if (f->data_offset_ > bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "truncated GGUF: data section starts at ", f->data_offset_, " past the end (",
        bytes.size(), " bytes)"));
  }
  uint64_t data_size = bytes.size() - f->data_offset_;
  for (GgufTensorInfo& t : f->tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", t.name, "' (", t.bytes, " bytes at data offset ", t.offset,
          ") runs past the end of the file (data section is ", data_size, " bytes)"));
    }
    t.data = bytes.data() + f->data_offset_ + t.offset;
  }
  return f;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(absl::string_view(key.data(), key.size()));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(absl::string_view(name.data(), name.size()));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
absl::Status NotFound(std::string_view key) {
  return absl::NotFoundError(absl::StrCat("GGUF key '", std::string(key), "' is missing"));
}
absl::Status WrongType(std::string_view key, const GgufValue& v, std::string_view want) {
  std::string have(GgufTypeName(v.type));
  if (v.type == GgufType::kArray) absl::StrAppend(&have, " of ", std::string(GgufTypeName(v.array_type)));
  return absl::InvalidArgumentError(absl::StrCat("GGUF key '", std::string(key), "' is ", have,
                                                 ", expected ", std::string(want)));
}
}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (v->type != GgufType::kString) return WrongType(key, *v, "a string");
  return std::string(v->str);
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (!IsIntegerType(v->type)) return WrongType(key, *v, "an integer");
  return v->i;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (v->type == GgufType::kFloat32 || v->type == GgufType::kFloat64) return v->f;
  if (IsIntegerType(v->type) && v->type != GgufType::kBool) return static_cast<double>(v->i);
  return WrongType(key, *v, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (!IsIntegerType(v->type)) return WrongType(key, *v, "a bool");
  return v->i != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (v->type != GgufType::kArray || v->array_type != GgufType::kString) {
    return WrongType(key, *v, "an array of strings");
  }
  return std::vector<std::string>(v->strings.begin(), v->strings.end());
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (v->type != GgufType::kArray || v->array_type == GgufType::kString) {
    return WrongType(key, *v, "a numeric array");
  }
  std::vector<float> out(v->array_count);
  for (uint64_t k = 0; k < v->array_count; ++k) out[k] = static_cast<float>(ArrayFloat(*v, k));
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(key);
  if (v->type != GgufType::kArray || !IsIntegerType(v->array_type)) {
    return WrongType(key, *v, "an integer array");
  }
  std::vector<int64_t> out(v->array_count);
  for (uint64_t k = 0; k < v->array_count; ++k) out[k] = ArrayInt(*v, k);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {
void PutBytes(std::vector<uint8_t>* out, const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  out->insert(out->end(), b, b + n);
}
template <typename T>
void Put(std::vector<uint8_t>* out, T v) {
  PutBytes(out, &v, sizeof(v));
}
void PutString(std::vector<uint8_t>* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  PutBytes(out, s.data(), s.size());
}
std::vector<uint8_t> Encoded(GgufType t) {
  std::vector<uint8_t> v;
  Put<uint32_t>(&v, static_cast<uint32_t>(t));
  return v;
}
}  // namespace

void GgufWriter::SetString(std::string key, std::string value) {
  auto v = Encoded(GgufType::kString);
  PutString(&v, value);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetUint32(std::string key, uint32_t value) {
  auto v = Encoded(GgufType::kUint32);
  Put(&v, value);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetInt32(std::string key, int32_t value) {
  auto v = Encoded(GgufType::kInt32);
  Put(&v, value);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetFloat32(std::string key, float value) {
  auto v = Encoded(GgufType::kFloat32);
  Put(&v, value);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetBool(std::string key, bool value) {
  auto v = Encoded(GgufType::kBool);
  Put<uint8_t>(&v, value ? 1 : 0);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetStringArray(std::string key, const std::vector<std::string>& values) {
  auto v = Encoded(GgufType::kArray);
  Put<uint32_t>(&v, static_cast<uint32_t>(GgufType::kString));
  Put<uint64_t>(&v, values.size());
  for (const std::string& s : values) PutString(&v, s);
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetFloat32Array(std::string key, const std::vector<float>& values) {
  auto v = Encoded(GgufType::kArray);
  Put<uint32_t>(&v, static_cast<uint32_t>(GgufType::kFloat32));
  Put<uint64_t>(&v, values.size());
  PutBytes(&v, values.data(), values.size() * sizeof(float));
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::SetInt32Array(std::string key, const std::vector<int32_t>& values) {
  auto v = Encoded(GgufType::kArray);
  Put<uint32_t>(&v, static_cast<uint32_t>(GgufType::kInt32));
  Put<uint64_t>(&v, values.size());
  PutBytes(&v, values.data(), values.size() * sizeof(int32_t));
  kv_.emplace_back(std::move(key), std::move(v));
}
void GgufWriter::AddTensor(std::string name, std::vector<int64_t> dims, GgmlType type,
                           std::span<const uint8_t> data) {
  tensors_.push_back({std::move(name), std::move(dims), type,
                      std::vector<uint8_t>(data.begin(), data.end())});
}
void GgufWriter::SetAlignment(uint32_t alignment) {
  alignment_ = alignment;
  SetUint32("general.alignment", alignment);
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  std::vector<uint8_t> out;
  Put<uint32_t>(&out, kMagic);
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, kv_.size());
  for (const auto& [key, value] : kv_) {
    PutString(&out, key);
    PutBytes(&out, value.data(), value.size());
  }
  auto align = [this](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(&out, static_cast<uint64_t>(d));
    Put<uint32_t>(&out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&out, offset);
    offset = align(offset + t.data.size());
  }
  if (tensors_.empty()) return out;
  out.resize(align(out.size()), 0);
  for (const Tensor& t : tensors_) {
    PutBytes(&out, t.data.data(), t.data.size());
    out.resize(align(out.size()), 0);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  std::vector<uint8_t> bytes = Serialize();
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tmp, "'"));
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("short write to '", tmp, "'"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(absl::StrCat("cannot rename '", tmp, "' to '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace tandem::model
