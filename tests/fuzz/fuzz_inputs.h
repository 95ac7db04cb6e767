// Shared by the libFuzzer targets, the seed-corpus tool and fuzz_smoke_test: how one input is fed
// to the model parsers, the invariants a successful parse must satisfy, small seed models, and a
// deterministic structure-aware mutator. Header-only so that each fuzz executable can compile the
// parser sources itself with the fuzzing sanitizers. Thread-safety: stateless functions.
#ifndef TANDEM_TESTS_FUZZ_FUZZ_INPUTS_H_
#define TANDEM_TESTS_FUZZ_FUZZ_INPUTS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/model/ggml_types.h"
#include "common/model/gguf.h"
#include "common/model/gguf_vocab.h"
#include "common/model/model.h"
#include "common/model/vocab.h"

namespace tandem::fuzz {

using Bytes = std::vector<uint8_t>;

// ---------------------------------------------------------------------------------------------
// Invariants. Each returns "" when they hold, else what is wrong.

inline bool Inside(std::span<const uint8_t> buf, const void* p, uint64_t n) {
  const uint8_t* q = static_cast<const uint8_t*>(p);
  return q >= buf.data() && q <= buf.data() + buf.size() &&
         n <= static_cast<uint64_t>(buf.data() + buf.size() - q);
}

inline std::string CheckGguf(const model::GgufFile& g, std::span<const uint8_t> buf) {
  if (g.alignment() == 0 || (g.alignment() & (g.alignment() - 1)) != 0) return "bad alignment";
  for (const auto& [key, v] : g.metadata()) {
    if (key.empty()) return "empty key accepted";
    if (v.type == model::GgufType::kString && !Inside(buf, v.str.data(), v.str.size())) {
      return absl::StrCat("string value of '", key, "' outside the buffer");
    }
    for (std::string_view s : v.strings) {
      if (!Inside(buf, s.data(), s.size())) return absl::StrCat("array string outside: ", key);
    }
  }
  for (const model::GgufTensorInfo& t : g.tensors()) {
    if (t.dims.empty() || t.dims.size() > 4) return absl::StrCat(t.name, ": bad rank");
    for (int64_t d : t.dims) {
      if (d <= 0) return absl::StrCat(t.name, ": non-positive dim");
    }
    if (t.offset % g.alignment() != 0) return absl::StrCat(t.name, ": misaligned offset");
    if (t.dims[0] % model::BlockElements(t.type) != 0) return absl::StrCat(t.name, ": partial block");
    const uint64_t want = model::RowBytes(t.type, t.dims[0]) * (t.elements() / t.dims[0]);
    if (t.bytes != want || t.bytes == 0) return absl::StrCat(t.name, ": wrong byte count");
    if (t.data != buf.data() + g.data_offset() + t.offset) return absl::StrCat(t.name, ": data");
    if (!Inside(buf, t.data, t.bytes)) return absl::StrCat(t.name, ": data outside the buffer");
  }
  return "";
}

// Exercises the tokenizer a little: ids in range, no crash on arbitrary text.
inline std::string CheckVocab(const model::Vocab& v) {
  if (v.size() <= 0) return "empty vocabulary";
  for (int32_t id : {v.bos_id(), v.eos_id(), v.unk_id()}) {
    if (id < -1 || id >= v.size()) return "special id out of range";
  }
  static const char* kTexts[] = {"Hello world", " a  b\n\t", "\xE2\x96\x81\xFF\x00z"};
  for (const char* text : kTexts) {
    std::vector<int32_t> ids = v.Encode(text, true);
    for (int32_t id : ids) {
      if (id < 0 || id >= v.size()) return absl::StrCat("Encode gave id ", id);
    }
    (void)v.Decode(ids);
  }
  return "";
}

inline std::string CheckModel(const model::Model& m, std::span<const uint8_t> buf) {
  const model::ModelConfig& c = m.config();
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 ||
      c.n_kv_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0 || c.max_seq_len <= 0) {
    return "non-positive hyperparameter";
  }
  if (c.n_heads % c.n_kv_heads != 0) return "n_kv_heads does not divide n_heads";
  if (c.head_dim % 2 != 0 || c.rope_dim % 2 != 0 || c.rope_dim <= 0 || c.rope_dim > c.head_dim) {
    return "bad head/rope dims";
  }
  if (!(c.norm_eps > 0) || !(c.rope_theta > 1)) return "bad eps or rope theta";
  if (m.vocab().size() != c.vocab_size) return "vocab size mismatch";
  auto mat = [&](const model::MatView& v, int64_t rows, int64_t cols, const char* what) {
    if (v.rows != rows || v.cols != cols) return absl::StrCat(what, ": shape");
    if (cols % model::BlockElements(v.type) != 0) return absl::StrCat(what, ": partial block");
    if (!Inside(buf, v.data, rows * model::RowBytes(v.type, cols))) {
      return absl::StrCat(what, ": outside the buffer");
    }
    return std::string();
  };
  std::string err;
  auto check = [&](std::string e) {
    if (err.empty()) err = std::move(e);
  };
  check(mat(m.token_embedding(), c.vocab_size, c.dim, "embedding"));
  check(mat(m.classifier(), c.vocab_size, c.dim, "classifier"));
  for (int l = 0; l < c.n_layers && err.empty(); ++l) {
    const model::LayerWeights& w = m.layer(l);
    check(mat(w.wq, c.q_dim(), c.dim, "wq"));
    check(mat(w.wk, c.kv_dim(), c.dim, "wk"));
    check(mat(w.wv, c.kv_dim(), c.dim, "wv"));
    check(mat(w.wo, c.dim, c.q_dim(), "wo"));
    check(mat(w.w1, c.hidden_dim, c.dim, "w1"));
    check(mat(w.w2, c.dim, c.hidden_dim, "w2"));
    check(mat(w.w3, c.hidden_dim, c.dim, "w3"));
    if (w.attn_norm == nullptr || w.ffn_norm == nullptr) check("null norm");
  }
  if (m.output_norm() == nullptr) check("null output norm");
  if (!err.empty()) return err;
  return CheckVocab(m.vocab());
}

// A clear error: a code chosen by meaning and a message that says something.
inline std::string CheckError(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kUnimplemented:
      break;
    default:
      return absl::StrCat("unexpected status code: ", s.ToString());
  }
  if (s.message().size() < 10) return absl::StrCat("uninformative message: ", s.ToString());
  return "";
}

// ---------------------------------------------------------------------------------------------
// Feeding one input. Return "" when all is well, else a description of the violation.

// GGUF: the container, its tokenizer (also for vocab-only files), then the whole model.
inline std::string FuzzGguf(std::span<const uint8_t> data) {
  absl::StatusOr<std::unique_ptr<model::GgufFile>> g = model::GgufFile::Parse(data);
  if (g.ok()) {
    if (std::string e = CheckGguf(**g, data); !e.empty()) return "GgufFile: " + e;
    absl::StatusOr<model::VocabData> vd = model::VocabDataFromGguf(**g);
    if (vd.ok()) {
      absl::StatusOr<model::Vocab> v = model::Vocab::Create(*std::move(vd));
      if (v.ok()) {
        if (std::string e = CheckVocab(*v); !e.empty()) return "Vocab: " + e;
      }
    }
  } else if (std::string e = CheckError(g.status()); !e.empty()) {
    return "Parse: " + e;
  }
  absl::StatusOr<std::unique_ptr<model::Model>> m = model::Model::FromMemory(data);
  if (m.ok()) {
    if (!g.ok()) return "Model accepted what GgufFile rejected";
    if (std::string e = CheckModel(**m, data); !e.empty()) return "Model: " + e;
  } else if (std::string e = CheckError(m.status()); !e.empty()) {
    return "Model: " + e;
  }
  return "";
}

// llama2.c: a checkpoint and its tokenizer.bin, loaded from separate (heap, so aligned) copies.
inline std::string FuzzLlama2c(std::span<const uint8_t> checkpoint,
                               std::span<const uint8_t> tokenizer) {
  const Bytes ckpt(checkpoint.begin(), checkpoint.end());
  const Bytes tok(tokenizer.begin(), tokenizer.end());
  absl::StatusOr<std::unique_ptr<model::Model>> m = model::Model::FromMemory(ckpt, tok);
  if (m.ok()) {
    if (m->get()->format() == model::ModelFormat::kLlama2c) {
      if (ckpt.size() < 28) return "llama2.c model from under 28 bytes";
    }
    if (std::string e = CheckModel(**m, ckpt); !e.empty()) return "Model: " + e;
  } else if (std::string e = CheckError(m.status()); !e.empty()) {
    return "Model: " + e;
  }
  return "";
}

// The llama2.c fuzz input packs both files: u32 little-endian checkpoint length, the checkpoint,
// then the tokenizer (the rest). A length past the end takes everything as the checkpoint.
inline Bytes PackLlama2c(std::span<const uint8_t> checkpoint, std::span<const uint8_t> tokenizer) {
  Bytes out(4);
  const uint32_t n = static_cast<uint32_t>(checkpoint.size());
  std::memcpy(out.data(), &n, 4);
  out.insert(out.end(), checkpoint.begin(), checkpoint.end());
  out.insert(out.end(), tokenizer.begin(), tokenizer.end());
  return out;
}
inline std::string FuzzPackedLlama2c(std::span<const uint8_t> data) {
  if (data.size() < 4) return FuzzLlama2c(data, {});
  uint32_t n;
  std::memcpy(&n, data.data(), 4);
  std::span<const uint8_t> rest = data.subspan(4);
  const size_t split = std::min<size_t>(n, rest.size());
  return FuzzLlama2c(rest.subspan(0, split), rest.subspan(split));
}

// ---------------------------------------------------------------------------------------------
// Tiny valid seeds: 3-token vocabularies, dim 2 (llama2.c) / dim 4 (GGUF).

template <typename T>
void Append(Bytes* b, T v) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
  b->insert(b->end(), p, p + sizeof(T));
}

// dim 2, hidden 1, 1 layer, 1 head, 1 kv head, vocab 3, seq_len 1, and tokenizer.bin.
inline void TinyLlama2c(Bytes* checkpoint, Bytes* tokenizer) {
  const int32_t h[7] = {2, 1, 1, 1, 1, 3, 1};
  checkpoint->clear();
  for (int32_t x : h) Append(checkpoint, x);
  // embedding 3x2, rms_att 2, wq 4, wk 4, wv 4, wo 4, rms_ffn 2, w1 2, w2 2, w3 2, final 2, rope 2.
  const int floats = 6 + 2 + 4 + 4 + 4 + 4 + 2 + 2 + 2 + 2 + 2 + 2;
  for (int i = 0; i < floats; ++i) Append(checkpoint, 0.25f * static_cast<float>(i % 7) - 0.5f);
  tokenizer->clear();
  Append<int32_t>(tokenizer, 5);
  for (const char* piece : {"<unk>", "\n<s>\n", "a"}) {
    Append<float>(tokenizer, -1.0f);
    Append<int32_t>(tokenizer, static_cast<int32_t>(std::strlen(piece)));
    tokenizer->insert(tokenizer->end(), piece, piece + std::strlen(piece));
  }
}

// dim 4, hidden 2, 1 layer, 2 heads of 2, 1 kv head, vocab 4, F32 and F16 weights.
inline Bytes TinyGguf(uint32_t alignment = 0) {
  model::GgufWriter w;
  if (alignment != 0) w.SetAlignment(alignment);
  w.SetString("general.architecture", "llama");
  w.SetUint32("llama.context_length", 16);
  w.SetUint32("llama.embedding_length", 4);
  w.SetUint32("llama.feed_forward_length", 2);
  w.SetUint32("llama.block_count", 1);
  w.SetUint32("llama.attention.head_count", 2);
  w.SetUint32("llama.attention.head_count_kv", 1);
  w.SetFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a"});
  w.SetFloat32Array("tokenizer.ggml.scores", {0, 0, 0, -1});
  w.SetInt32Array("tokenizer.ggml.token_type", {2, 3, 3, 1});
  w.SetUint32("tokenizer.ggml.bos_token_id", 1);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  auto tensor = [&](const std::string& name, std::vector<int64_t> dims, model::GgmlType type) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    std::vector<float> f(n);
    for (int64_t i = 0; i < n; ++i) f[i] = 0.125f * static_cast<float>(i % 9) - 0.5f;
    Bytes data(model::RowBytes(type, dims[0]) * (n / dims[0]));
    model::QuantizeRow(type, f.data(), data.data(), n);
    w.AddTensor(name, dims, type, data);
  };
  using model::GgmlType;
  tensor("token_embd.weight", {4, 4}, GgmlType::kF16);
  tensor("output_norm.weight", {4}, GgmlType::kF32);
  tensor("blk.0.attn_norm.weight", {4}, GgmlType::kF32);
  tensor("blk.0.attn_q.weight", {4, 4}, GgmlType::kF32);
  tensor("blk.0.attn_k.weight", {4, 2}, GgmlType::kF16);
  tensor("blk.0.attn_v.weight", {4, 2}, GgmlType::kF32);
  tensor("blk.0.attn_output.weight", {4, 4}, GgmlType::kF32);
  tensor("blk.0.ffn_norm.weight", {4}, GgmlType::kF16);
  tensor("blk.0.ffn_gate.weight", {4, 2}, GgmlType::kF32);
  tensor("blk.0.ffn_down.weight", {2, 4}, GgmlType::kF32);
  tensor("blk.0.ffn_up.weight", {4, 2}, GgmlType::kF32);
  return w.Serialize();
}

// ---------------------------------------------------------------------------------------------
// A deterministic mutator that knows where the length, count, type and offset fields are.

// Offsets of the fixed-size fields of a well-formed GGUF header (lengths, counts, types, dims,
// tensor offsets), found by walking it. Stops quietly at anything malformed.
inline std::vector<size_t> GgufFieldOffsets(std::span<const uint8_t> b) {
  std::vector<size_t> out;
  size_t pos = 0;
  auto have = [&](size_t n) { return pos <= b.size() && n <= b.size() - pos; };
  auto u32 = [&]() {
    uint32_t v = 0;
    if (have(4)) std::memcpy(&v, b.data() + pos, 4);
    out.push_back(pos);
    pos += 4;
    return v;
  };
  auto u64 = [&]() {
    uint64_t v = 0;
    if (have(8)) std::memcpy(&v, b.data() + pos, 8);
    out.push_back(pos);
    pos += 8;
    return v;
  };
  auto str = [&]() {
    const uint64_t n = u64();
    pos += std::min<uint64_t>(n, b.size());
  };
  static constexpr size_t kScalar[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  if (b.size() < 24) return out;
  pos = 4;
  u32();
  const uint64_t n_tensors = u64(), n_kv = u64();
  for (uint64_t k = 0; k < n_kv && pos < b.size(); ++k) {
    str();
    const uint32_t type = u32();
    if (type > 12) return out;
    if (type == 8) {
      str();
    } else if (type == 9) {
      const uint32_t et = u32();
      const uint64_t count = u64();
      if (et > 12 || et == 9) return out;
      if (et == 8) {
        for (uint64_t i = 0; i < count && pos < b.size(); ++i) {
          if (i < 4 || i + 2 >= count) str();  // the first and last few lengths only
          else {
            uint64_t n = 0;
            if (have(8)) std::memcpy(&n, b.data() + pos, 8);
            pos += 8 + std::min<uint64_t>(n, b.size());
          }
        }
      } else {
        pos += std::min<uint64_t>(count * kScalar[et], b.size());
      }
    } else {
      pos += kScalar[type];
    }
  }
  for (uint64_t k = 0; k < n_tensors && pos < b.size(); ++k) {
    str();
    const uint32_t n_dims = u32();
    for (uint32_t d = 0; d < n_dims && d < 4; ++d) u64();
    u32();
    u64();
  }
  out.erase(std::remove_if(out.begin(), out.end(), [&](size_t o) { return o + 4 > b.size(); }),
            out.end());
  return out;
}

// The header fields of a packed llama2.c input: the split, the 7 header ints, the tokenizer's
// max_token_length and the first entries' score/length fields.
inline std::vector<size_t> Llama2cFieldOffsets(std::span<const uint8_t> b) {
  std::vector<size_t> out = {0};
  if (b.size() < 4) return out;
  uint32_t split;
  std::memcpy(&split, b.data(), 4);
  for (size_t i = 0; i < 7; ++i) out.push_back(4 + 4 * i);
  size_t pos = 4 + static_cast<size_t>(split);
  if (pos + 4 > b.size()) return out;
  out.push_back(pos);
  pos += 4;
  for (int k = 0; k < 16 && pos + 8 <= b.size(); ++k) {
    out.push_back(pos);
    out.push_back(pos + 4);
    int32_t len;
    std::memcpy(&len, b.data() + pos + 4, 4);
    if (len < 0) break;
    pos += 8 + static_cast<size_t>(len);
  }
  return out;
}

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<size_t> fields) : rng_(seed), fields_(std::move(fields)) {}

  // Applies 1 to 4 random mutations to `b`.
  void Mutate(Bytes* b) {
    const int n = 1 + static_cast<int>(Below(4));
    for (int i = 0; i < n; ++i) MutateOnce(b);
  }

 private:
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  // Mostly a known field; sometimes anywhere.
  size_t Offset(const Bytes& b, size_t width) {
    if (b.size() < width) return 0;
    if (!fields_.empty() && Below(4) != 0) {
      const size_t o = fields_[Below(fields_.size())];
      if (o + width <= b.size()) return o;
    }
    // Headers live at the front: favour it.
    const size_t span = Below(2) ? std::min<size_t>(b.size(), 512) : b.size();
    return static_cast<size_t>(Below(span - width + 1));
  }

  uint64_t Interesting(const Bytes& b) {
    static constexpr uint64_t kValues[] = {
        0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 16, 31, 32, 33, 63, 64, 255, 256, 259, 0x7FFF, 0x8000,
        0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x100000000ull,
        1ull << 40, 1ull << 60, 1ull << 62, 1ull << 63, ~0ull - 31, ~0ull - 1, ~0ull};
    const uint64_t r = Below(std::size(kValues) + 3);
    if (r < std::size(kValues)) return kValues[r];
    if (r == std::size(kValues)) return b.size();
    if (r == std::size(kValues) + 1) return b.size() + 1;
    return b.size() - 1;
  }

  void MutateOnce(Bytes* b) {
    switch (Below(10)) {
      case 0:  // bit flip
        if (!b->empty()) (*b)[Offset(*b, 1)] ^= static_cast<uint8_t>(1u << Below(8));
        break;
      case 1: {  // byte set
        static constexpr uint8_t kBytes[] = {0, 0xFF, 0x7F, 0x80, 1};
        if (!b->empty()) (*b)[Offset(*b, 1)] = kBytes[Below(std::size(kBytes))];
        break;
      }
      case 2:
      case 3: {  // interesting u32 in a field
        if (b->size() < 4) break;
        const uint32_t v = static_cast<uint32_t>(Interesting(*b));
        std::memcpy(b->data() + Offset(*b, 4), &v, 4);
        break;
      }
      case 4: {  // interesting u64 in a field
        if (b->size() < 8) break;
        const uint64_t v = Interesting(*b);
        std::memcpy(b->data() + Offset(*b, 8), &v, 8);
        break;
      }
      case 5: {  // small change to a field, as in an off-by-some length
        if (b->size() < 4) break;
        const size_t o = Offset(*b, 4);
        uint32_t v;
        std::memcpy(&v, b->data() + o, 4);
        static constexpr int32_t kDelta[] = {-32, -8, -4, -1, 1, 4, 8, 32};
        v += static_cast<uint32_t>(kDelta[Below(std::size(kDelta))]);
        std::memcpy(b->data() + o, &v, 4);
        break;
      }
      case 6:  // truncate
        b->resize(Below(b->size() + 1));
        break;
      case 7: {  // insert 1..16 random bytes
        const size_t at = Below(b->size() + 1);
        const size_t n = 1 + Below(16);
        Bytes ins(n);
        for (uint8_t& x : ins) x = static_cast<uint8_t>(rng_());
        b->insert(b->begin() + static_cast<std::ptrdiff_t>(at), ins.begin(), ins.end());
        break;
      }
      case 8: {  // erase a range
        if (b->empty()) break;
        const size_t at = Below(b->size());
        const size_t n = 1 + Below(std::min<size_t>(64, b->size() - at));
        b->erase(b->begin() + static_cast<std::ptrdiff_t>(at),
                 b->begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      default: {  // copy a chunk over another place (duplicates keys, names, lengths)
        if (b->size() < 2) break;
        const size_t n = 1 + Below(std::min<size_t>(48, b->size() / 2));
        const size_t from = Below(b->size() - n + 1), to = Below(b->size() - n + 1);
        std::memmove(b->data() + to, b->data() + from, n);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  std::vector<size_t> fields_;
};

}  // namespace tandem::fuzz

#endif  // TANDEM_TESTS_FUZZ_FUZZ_INPUTS_H_
