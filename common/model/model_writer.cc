// GGUF conversion and synthetic models. Both go through one f32 image of the weights
// (F32Weights), so a synthetic model written as GGUF and as llama2.c holds identical values.
#include "common/model/model_writer.h"

#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/model/gguf.h"
#include "common/model/gguf_vocab.h"
#include "common/model/sampler.h"
#include "common/util/status_macros.h"

namespace tandem::model {
namespace {

// All weights as f32, matrices row-major [out][in], per-layer tensors stacked.
struct F32Weights {
  ModelConfig config;
  std::vector<float> embedding;                // (vocab, dim)
  std::vector<float> attn_norm, ffn_norm;      // (L, dim)
  std::vector<float> wq, wk, wv, wo;           // (L, q_dim, dim), (L, kv, dim) x2, (L, dim, q_dim)
  std::vector<float> w1, w2, w3;               // (L, hidden, dim), (L, dim, hidden), (L, hidden, dim)
  std::vector<float> output_norm;              // (dim)
  std::vector<float> classifier;               // (vocab, dim); empty when tied
};

void Dequantize(const MatView& m, float* out) {
  const size_t row_bytes = RowBytes(m.type, m.cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    DequantizeRow(m.type, static_cast<const uint8_t*>(m.data) + r * row_bytes, out + r * m.cols,
                  m.cols);
  }
}

F32Weights FromModel(const Model& model) {
  F32Weights w;
  const ModelConfig& c = model.config();
  w.config = c;
  const size_t L = c.n_layers, dim = c.dim;
  auto fill = [&](std::vector<float>* v, const MatView& m, size_t layer, size_t per_layer) {
    if (v->empty()) v->resize(L * per_layer);
    Dequantize(m, v->data() + layer * per_layer);
  };
  w.embedding.resize(static_cast<size_t>(c.vocab_size) * dim);
  Dequantize(model.token_embedding(), w.embedding.data());
  w.attn_norm.resize(L * dim);
  w.ffn_norm.resize(L * dim);
  for (size_t l = 0; l < L; ++l) {
    const LayerWeights& lw = model.layer(static_cast<int>(l));
    std::copy(lw.attn_norm, lw.attn_norm + dim, w.attn_norm.begin() + l * dim);
    std::copy(lw.ffn_norm, lw.ffn_norm + dim, w.ffn_norm.begin() + l * dim);
    fill(&w.wq, lw.wq, l, static_cast<size_t>(c.q_dim()) * dim);
    fill(&w.wk, lw.wk, l, static_cast<size_t>(c.kv_dim()) * dim);
    fill(&w.wv, lw.wv, l, static_cast<size_t>(c.kv_dim()) * dim);
    fill(&w.wo, lw.wo, l, static_cast<size_t>(c.q_dim()) * dim);
    fill(&w.w1, lw.w1, l, static_cast<size_t>(c.hidden_dim) * dim);
    fill(&w.w2, lw.w2, l, static_cast<size_t>(c.hidden_dim) * dim);
    fill(&w.w3, lw.w3, l, static_cast<size_t>(c.hidden_dim) * dim);
  }
  w.output_norm.assign(model.output_norm(), model.output_norm() + dim);
  if (!c.tied_classifier) {
    w.classifier.resize(static_cast<size_t>(c.vocab_size) * dim);
    Dequantize(model.classifier(), w.classifier.data());
  }
  return w;
}

uint32_t FileType(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ8_0: return 7;
  }
  return 0;
}

// Encodes rows x cols floats as `type` (F16 when the rows cannot be block-quantized).
std::vector<uint8_t> Encode(const float* data, int64_t rows, int64_t cols, GgmlType* type) {
  if (cols % BlockElements(*type) != 0) *type = GgmlType::kF16;
  const size_t row_bytes = RowBytes(*type, cols);
  std::vector<uint8_t> out(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(*type, data + r * cols, out.data() + r * row_bytes, cols);
  }
  return out;
}

absl::Status WriteGguf(const F32Weights& w, const Vocab& vocab, GgmlType type,
                       const std::string& name, const std::string& path) {
  const ModelConfig& c = w.config;
  GgufWriter g;
  g.SetString("general.architecture", "llama");
  g.SetString("general.name", name);
  g.SetUint32("general.file_type", FileType(type));
  g.SetUint32("llama.context_length", c.max_seq_len);
  g.SetUint32("llama.embedding_length", c.dim);
  g.SetUint32("llama.feed_forward_length", c.hidden_dim);
  g.SetUint32("llama.block_count", c.n_layers);
  g.SetUint32("llama.attention.head_count", c.n_heads);
  g.SetUint32("llama.attention.head_count_kv", c.n_kv_heads);
  if (c.head_dim * c.n_heads != c.dim) g.SetUint32("llama.attention.key_length", c.head_dim);
  g.SetUint32("llama.rope.dimension_count", c.rope_dim);
  g.SetFloat32("llama.rope.freq_base", c.rope_theta);
  g.SetFloat32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  WriteVocabToGguf(vocab, &g);

  auto matrix = [&](const std::string& tname, const float* data, int64_t rows, int64_t cols) {
    GgmlType t = type;
    std::vector<uint8_t> bytes = Encode(data, rows, cols, &t);
    g.AddTensor(tname, {cols, rows}, t, bytes);
  };
  auto vec = [&](const std::string& tname, const float* data, int64_t n) {
    g.AddTensor(tname, {n}, GgmlType::kF32,
                {reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n) * sizeof(float)});
  };
  const int64_t dim = c.dim, hid = c.hidden_dim, qd = c.q_dim(), kv = c.kv_dim();
  matrix("token_embd.weight", w.embedding.data(), c.vocab_size, dim);
  vec("output_norm.weight", w.output_norm.data(), dim);
  if (!w.classifier.empty()) matrix("output.weight", w.classifier.data(), c.vocab_size, dim);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    matrix(p + "attn_q.weight", w.wq.data() + l * qd * dim, qd, dim);
    matrix(p + "attn_k.weight", w.wk.data() + l * kv * dim, kv, dim);
    matrix(p + "attn_v.weight", w.wv.data() + l * kv * dim, kv, dim);
    matrix(p + "attn_output.weight", w.wo.data() + l * qd * dim, dim, qd);
    vec(p + "attn_norm.weight", w.attn_norm.data() + l * dim, dim);
    matrix(p + "ffn_gate.weight", w.w1.data() + l * hid * dim, hid, dim);
    matrix(p + "ffn_down.weight", w.w2.data() + l * hid * dim, dim, hid);
    matrix(p + "ffn_up.weight", w.w3.data() + l * hid * dim, hid, dim);
    vec(p + "ffn_norm.weight", w.ffn_norm.data() + l * dim, dim);
  }
  return g.WriteFile(path);
}

// A made-up SPM vocabulary: <unk>, <s>, </s>, 256 byte pieces, then letters, "▁"+letters,
// letter pairs, ... so that every piece is reachable by merging two shorter ones.
absl::StatusOr<Vocab> SyntheticVocab(int vocab_size) {
  if (vocab_size < 259) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic vocab_size ", vocab_size, " < 259"));
  }
  VocabData d;
  d.kind = TokenizerKind::kSpm;
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    d.tokens.push_back(absl::StrFormat("<0x%02X>", b));
    d.types.push_back(6);
  }
  std::vector<std::string> prev = {""};
  while (static_cast<int>(d.tokens.size()) < vocab_size) {
    std::vector<std::string> next;
    for (const std::string& s : prev) {
      for (char ch = 'a'; ch <= 'z'; ++ch) next.push_back(s + ch);
    }
    for (const std::string& s : next) {
      for (const std::string& piece : {s, "\xE2\x96\x81" + s}) {
        if (static_cast<int>(d.tokens.size()) == vocab_size) break;
        d.tokens.push_back(piece);
        d.types.push_back(1);
      }
    }
    prev = std::move(next);
  }
  d.scores.resize(d.tokens.size());
  for (size_t i = 0; i < d.scores.size(); ++i) d.scores[i] = i < 259 ? 0.0f : -static_cast<float>(i);
  return Vocab::Create(std::move(d));
}

F32Weights Synthesize(const SyntheticModelSpec& s) {
  F32Weights w;
  ModelConfig& c = w.config;
  c.dim = s.dim;
  c.hidden_dim = s.hidden_dim;
  c.n_layers = s.n_layers;
  c.n_heads = s.n_heads;
  c.n_kv_heads = s.n_kv_heads;
  c.head_dim = s.dim / s.n_heads;
  c.vocab_size = s.vocab_size;
  c.max_seq_len = s.max_seq_len;
  c.rope_dim = s.rope_dim > 0 ? s.rope_dim : c.head_dim;
  c.rope_theta = s.rope_theta;
  c.tied_classifier = s.tied_classifier;
  Rng rng(s.seed);
  // Uniform in [-a, a] has standard deviation a / sqrt(3).
  auto fill = [&rng](std::vector<float>* v, size_t n, float stddev, float mean = 0.0f) {
    const float a = stddev * std::sqrt(3.0f);
    v->resize(n);
    for (float& x : *v) x = mean + a * (2.0f * rng.Uniform() - 1.0f);
  };
  const size_t L = c.n_layers, dim = c.dim, hid = c.hidden_dim, kv = c.kv_dim(), vocab = c.vocab_size;
  const float in_std = 1.0f / std::sqrt(static_cast<float>(dim));
  fill(&w.embedding, vocab * dim, 1.0f);
  fill(&w.attn_norm, L * dim, 0.1f, 1.0f);
  fill(&w.wq, L * dim * dim, in_std);
  fill(&w.wk, L * kv * dim, in_std);
  fill(&w.wv, L * kv * dim, in_std);
  fill(&w.wo, L * dim * dim, in_std);
  fill(&w.ffn_norm, L * dim, 0.1f, 1.0f);
  fill(&w.w1, L * hid * dim, in_std);
  fill(&w.w2, L * dim * hid, 1.0f / std::sqrt(static_cast<float>(hid)));
  fill(&w.w3, L * hid * dim, in_std);
  fill(&w.output_norm, dim, 0.1f, 1.0f);
  if (!c.tied_classifier) fill(&w.classifier, vocab * dim, in_std * 4.0f);
  return w;
}

absl::Status CheckSpec(const SyntheticModelSpec& s) {
  if (s.dim <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.dim % s.n_heads != 0 ||
      s.n_heads % s.n_kv_heads != 0 || (s.dim / s.n_heads) % 2 != 0 || s.hidden_dim <= 0 ||
      s.n_layers <= 0 || s.max_seq_len <= 0) {
    return absl::InvalidArgumentError("inconsistent synthetic model spec");
  }
  return absl::OkStatus();
}

template <typename T>
void WriteRaw(std::ofstream& out, const T* data, size_t n) {
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
}

}  // namespace

absl::Status ConvertToGguf(const Model& model, GgmlType type, const std::string& out_path) {
  F32Weights w = FromModel(model);
  std::string name = model.gguf() != nullptr
                         ? model.gguf()->GetString("general.name").value_or("llama")
                         : std::string("llama");
  return WriteGguf(w, model.vocab(), type, name, out_path);
}

absl::Status WriteSyntheticGguf(const SyntheticModelSpec& spec, GgmlType type,
                                const std::string& path) {
  RETURN_IF_ERROR(CheckSpec(spec));
  ASSIGN_OR_RETURN(Vocab vocab, SyntheticVocab(spec.vocab_size));
  return WriteGguf(Synthesize(spec), vocab, type, "synthetic", path);
}

absl::Status WriteSyntheticLlama2c(const SyntheticModelSpec& spec, const std::string& model_path,
                                   const std::string& tokenizer_path) {
  RETURN_IF_ERROR(CheckSpec(spec));
  if (spec.rope_dim != 0 && spec.rope_dim != spec.dim / spec.n_heads) {
    return absl::InvalidArgumentError("llama2.c checkpoints cannot express a partial rotary dim");
  }
  ASSIGN_OR_RETURN(Vocab vocab, SyntheticVocab(spec.vocab_size));
  F32Weights w = Synthesize(spec);
  const ModelConfig& c = w.config;
  {
    std::ofstream out(model_path, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", model_path, "'"));
    int32_t header[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         c.tied_classifier ? c.vocab_size : -c.vocab_size, c.max_seq_len};
    WriteRaw(out, header, 7);
    for (const std::vector<float>* v : {&w.embedding, &w.attn_norm, &w.wq, &w.wk, &w.wv, &w.wo,
                                        &w.ffn_norm, &w.w1, &w.w2, &w.w3, &w.output_norm}) {
      WriteRaw(out, v->data(), v->size());
    }
    std::vector<float> rope_tables(static_cast<size_t>(c.max_seq_len) * c.head_dim, 0.0f);
    WriteRaw(out, rope_tables.data(), rope_tables.size());
    if (!c.tied_classifier) WriteRaw(out, w.classifier.data(), w.classifier.size());
    if (!out) return absl::DataLossError(absl::StrCat("short write to '", model_path, "'"));
  }
  std::ofstream out(tokenizer_path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tokenizer_path, "'"));
  int32_t max_len = 0;
  std::vector<std::string> pieces;
  for (int32_t i = 0; i < vocab.size(); ++i) {
    // tokenizer.bin spells the SPM space as a plain ' '.
    std::string p = absl::StrReplaceAll(vocab.TokenText(i), {{"\xE2\x96\x81", " "}});
    max_len = std::max<int32_t>(max_len, static_cast<int32_t>(p.size()));
    pieces.push_back(std::move(p));
  }
  WriteRaw(out, &max_len, 1);
  for (int32_t i = 0; i < vocab.size(); ++i) {
    float score = vocab.Score(i);
    int32_t len = static_cast<int32_t>(pieces[i].size());
    WriteRaw(out, &score, 1);
    WriteRaw(out, &len, 1);
    out.write(pieces[i].data(), len);
  }
  if (!out) return absl::DataLossError(absl::StrCat("short write to '", tokenizer_path, "'"));
  return absl::OkStatus();
}

}  // namespace tandem::model
