// Model loading for llama2.c legacy checkpoints and GGUF files. Sizes are validated with
// overflow-checked arithmetic before any pointer into the file is formed.
#include "common/model/model.h"

#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/gguf_vocab.h"
#include "common/util/status_macros.h"

namespace tandem::model {
namespace {

// Sanity bounds on hyperparameters: far above any real model, far below anything that would
// overflow the size arithmetic below.
constexpr int64_t kMaxDim = 1 << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxSeqLen = 1 << 24;

uint64_t MatBytes(const MatView& m) {
  return m.data == nullptr ? 0 : static_cast<uint64_t>(m.rows) * RowBytes(m.type, m.cols);
}

absl::Status CheckRange(absl::string_view what, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", what, " = ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

std::string ShapeString(const std::vector<int64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

}  // namespace

absl::StatusOr<std::string> FindLlama2cTokenizer(const std::string& model_path,
                                                 int32_t vocab_size) {
  std::filesystem::path dir = std::filesystem::path(model_path).parent_path();
  if (dir.empty()) dir = ".";
  std::vector<std::string> tried;
  for (std::string name : {absl::StrCat("tok", vocab_size, ".bin"), std::string("tokenizer.bin")}) {
    std::filesystem::path p = dir / name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
    tried.push_back(p.string());
  }
  return absl::NotFoundError(absl::StrCat(
      "no tokenizer given for llama2.c model '", model_path, "' and none found beside it (tried ",
      absl::StrJoin(tried, ", "), "); pass --tokenizer FILE"));
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelLoadOptions& options) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = options.path;
  ASSIGN_OR_RETURN(m->file_, MappedFile::Open(options.path));
  m->bytes_ = m->file_->bytes();
  RETURN_IF_ERROR(m->LoadFrom(options, {}));
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromMemory(
    std::span<const uint8_t> bytes, std::span<const uint8_t> llama2c_tokenizer) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = "<memory>";
  m->bytes_ = bytes;
  ModelLoadOptions options;
  options.path = m->path_;
  options.tokenizer_path = "<memory>";
  RETURN_IF_ERROR(m->LoadFrom(options, llama2c_tokenizer));
  return m;
}

absl::Status Model::LoadFrom(const ModelLoadOptions& options, std::span<const uint8_t> tokenizer) {
  if (bytes_.size() >= 4 && std::memcmp(bytes_.data(), "GGUF", 4) == 0) {
    format_ = ModelFormat::kGguf;
    RETURN_IF_ERROR(LoadGguf());
  } else {
    format_ = ModelFormat::kLlama2c;
    RETURN_IF_ERROR(LoadLlama2c(options, tokenizer));
  }
  return Validate(options);
}

absl::Status Model::LoadLlama2c(const ModelLoadOptions& options,
                                std::span<const uint8_t> tokenizer) {
  std::span<const uint8_t> bytes = bytes_;
  auto err = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("'", path_, "': ", why));
  };
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "ak42", 4) == 0) {
    return err("llama2.c version-1/2 checkpoints (magic \"ak42\") are not supported; export "
               "with the legacy format or convert to GGUF");
  }
  if (bytes.size() < 28) {
    return err(absl::StrCat("too short for a llama2.c header (", bytes.size(),
                            " bytes, need 28); not a llama2.c checkpoint or GGUF file"));
  }
  int32_t h[7];
  std::memcpy(h, bytes.data(), sizeof(h));
  ModelConfig& c = config_;
  c.architecture = "llama";
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tied_classifier = h[5] > 0;
  // -INT32_MIN overflows: reject it explicitly.
  if (h[5] == std::numeric_limits<int32_t>::min()) return err("vocab_size is INT32_MIN");
  c.vocab_size = h[5] > 0 ? h[5] : -h[5];
  c.max_seq_len = h[6];
  RETURN_IF_ERROR(CheckRange("dim", c.dim, 2, kMaxDim));
  RETURN_IF_ERROR(CheckRange("hidden_dim", c.hidden_dim, 1, 8 * kMaxDim));
  RETURN_IF_ERROR(CheckRange("n_layers", c.n_layers, 1, kMaxLayers));
  RETURN_IF_ERROR(CheckRange("n_heads", c.n_heads, 1, kMaxHeads));
  RETURN_IF_ERROR(CheckRange("n_kv_heads", c.n_kv_heads, 1, c.n_heads));
  RETURN_IF_ERROR(CheckRange("vocab_size", c.vocab_size, 1, kMaxVocab));
  RETURN_IF_ERROR(CheckRange("seq_len", c.max_seq_len, 1, kMaxSeqLen));
  if (c.n_heads % c.n_kv_heads != 0) {
    return err(absl::StrCat("n_heads ", c.n_heads, " is not a multiple of n_kv_heads ",
                            c.n_kv_heads));
  }
  if (c.dim % c.n_heads != 0) return err(absl::StrCat("dim ", c.dim, " is not a multiple of n_heads ", c.n_heads));
  c.head_dim = c.dim / c.n_heads;
  if (c.head_dim % 2 != 0) return err(absl::StrCat("head size ", c.head_dim, " is odd"));
  c.rope_dim = c.head_dim;
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;

  // Expected size, in floats, of everything after the header.
  const uint64_t dim = c.dim, hid = c.hidden_dim, L = c.n_layers, kv = c.kv_dim(),
                 vocab = c.vocab_size, seq = c.max_seq_len, hs = c.head_dim;
  uint64_t per_layer = dim + dim * dim + 2 * kv * dim + dim * dim + dim + 3 * hid * dim;
  uint64_t floats = vocab * dim + L * per_layer + dim + seq * hs;  // seq*hs = two RoPE tables
  if (!c.tied_classifier) floats += vocab * dim;
  uint64_t expected = 28 + floats * 4;
  if (bytes.size() != expected) {
    return err(absl::StrFormat(
        "file is %u bytes but its header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d%s, "
        "seq_len %d) needs exactly %u; the file is truncated, has trailing data, or is not a "
        "llama2.c legacy checkpoint",
        bytes.size(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
        c.tied_classifier ? "" : " separate classifier", c.max_seq_len, expected));
  }

  const float* p = reinterpret_cast<const float*>(bytes.data() + 28);
  auto take = [&p](uint64_t n) {
    const float* r = p;
    p += n;
    return r;
  };
  auto mat = [](const float* data, int64_t rows, int64_t cols) {
    return MatView{GgmlType::kF32, data, rows, cols};
  };
  token_embedding_ = mat(take(vocab * dim), vocab, dim);
  layers_.resize(L);
  const float* rms_att = take(L * dim);
  const float* wq = take(L * dim * dim);
  const float* wk = take(L * kv * dim);
  const float* wv = take(L * kv * dim);
  const float* wo = take(L * dim * dim);
  const float* rms_ffn = take(L * dim);
  const float* w1 = take(L * hid * dim);
  const float* w2 = take(L * dim * hid);
  const float* w3 = take(L * hid * dim);
  for (uint64_t l = 0; l < L; ++l) {
    LayerWeights& w = layers_[l];
    w.attn_norm = rms_att + l * dim;
    w.wq = mat(wq + l * dim * dim, dim, dim);
    w.wk = mat(wk + l * kv * dim, kv, dim);
    w.wv = mat(wv + l * kv * dim, kv, dim);
    w.wo = mat(wo + l * dim * dim, dim, dim);
    w.ffn_norm = rms_ffn + l * dim;
    w.w1 = mat(w1 + l * hid * dim, hid, dim);
    w.w2 = mat(w2 + l * dim * hid, dim, hid);
    w.w3 = mat(w3 + l * hid * dim, hid, dim);
  }
  output_norm_ = take(dim);
  take(seq * hs);  // legacy RoPE tables: RoPE is computed instead
  classifier_ = c.tied_classifier ? token_embedding_ : mat(take(vocab * dim), vocab, dim);

  tokenizer_path_ = options.tokenizer_path;
  if (tokenizer_path_.empty()) {
    ASSIGN_OR_RETURN(tokenizer_path_, FindLlama2cTokenizer(path_, c.vocab_size));
  }
  absl::StatusOr<Vocab> vocab_or =
      file_ == nullptr ? Vocab::FromLlama2cTokenizer(tokenizer, c.vocab_size)
                       : Vocab::LoadLlama2cTokenizer(tokenizer_path_, c.vocab_size);
  if (!vocab_or.ok()) {
    return absl::Status(vocab_or.status().code(),
                        absl::StrCat("tokenizer for '", path_, "': ", vocab_or.status().message()));
  }
  vocab_ = std::make_unique<Vocab>(*std::move(vocab_or));
  return absl::OkStatus();
}

const float* Model::NormAsF32(const GgufTensorInfo& t) {
  if (t.type == GgmlType::kF32) return reinterpret_cast<const float*>(t.data);
  owned_norms_.emplace_back(t.elements());
  DequantizeRow(t.type, t.data, owned_norms_.back().data(), t.elements());
  return owned_norms_.back().data();
}

absl::Status Model::LoadGguf() {
  auto parsed = GgufFile::Parse(bytes_);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat("'", path_, "': ", parsed.status().message()));
  }
  gguf_ = *std::move(parsed);
  const GgufFile& g = *gguf_;
  auto err = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("'", path_, "': ", why));
  };
  ModelConfig& c = config_;
  ASSIGN_OR_RETURN(c.architecture, g.GetString("general.architecture"));
  if (c.architecture != "llama" && c.architecture != "mistral") {
    return absl::UnimplementedError(absl::StrCat(
        "'", path_, "': architecture '", c.architecture, "' is not supported (supported: llama)"));
  }
  const std::string a = c.architecture;
  auto get_int = [&](const std::string& key, int64_t lo, int64_t hi,
                     std::optional<int64_t> def) -> absl::StatusOr<int32_t> {
    absl::StatusOr<int64_t> v = g.GetInt(key);
    if (absl::IsNotFound(v.status()) && def.has_value()) return static_cast<int32_t>(*def);
    if (!v.ok()) return err(v.status().message());
    RETURN_IF_ERROR(CheckRange(key, *v, lo, hi));
    return static_cast<int32_t>(*v);
  };
  ASSIGN_OR_RETURN(c.dim, get_int(a + ".embedding_length", 2, kMaxDim, std::nullopt));
  ASSIGN_OR_RETURN(c.hidden_dim, get_int(a + ".feed_forward_length", 1, 8 * kMaxDim, std::nullopt));
  ASSIGN_OR_RETURN(c.n_layers, get_int(a + ".block_count", 1, kMaxLayers, std::nullopt));
  ASSIGN_OR_RETURN(c.n_heads, get_int(a + ".attention.head_count", 1, kMaxHeads, std::nullopt));
  ASSIGN_OR_RETURN(c.n_kv_heads, get_int(a + ".attention.head_count_kv", 1, c.n_heads, c.n_heads));
  ASSIGN_OR_RETURN(c.max_seq_len, get_int(a + ".context_length", 1, kMaxSeqLen, 2048));
  if (c.n_heads % c.n_kv_heads != 0) {  // GQA maps query head h to kv head h / (heads / kv)
    return err(absl::StrCat("head_count ", c.n_heads, " is not a multiple of head_count_kv ",
                            c.n_kv_heads));
  }
  if (c.dim % c.n_heads != 0 && !g.Find(a + ".attention.key_length")) {
    return err(absl::StrCat("embedding_length ", c.dim, " is not a multiple of head_count ",
                            c.n_heads));
  }
  ASSIGN_OR_RETURN(c.head_dim, get_int(a + ".attention.key_length", 2, 4096, c.dim / c.n_heads));
  if (c.head_dim % 2 != 0) return err(absl::StrCat("head size ", c.head_dim, " is odd"));
  if (absl::StatusOr<int64_t> vl = g.GetInt(a + ".attention.value_length");
      vl.ok() && *vl != c.head_dim) {
    return absl::UnimplementedError(absl::StrCat("'", path_, "': value_length ", *vl,
                                                 " != key_length ", c.head_dim));
  }
  ASSIGN_OR_RETURN(c.rope_dim, get_int(a + ".rope.dimension_count", 2, c.head_dim, c.head_dim));
  if (c.rope_dim % 2 != 0) return err(absl::StrCat("rope.dimension_count ", c.rope_dim, " is odd"));
  if (absl::StatusOr<double> th = g.GetFloat(a + ".rope.freq_base"); th.ok()) {
    if (!(*th > 1.0 && *th < 1e12)) return err(absl::StrCat("rope.freq_base ", *th, " is absurd"));
    c.rope_theta = static_cast<float>(*th);
  }
  if (absl::StatusOr<double> eps = g.GetFloat(a + ".attention.layer_norm_rms_epsilon"); eps.ok()) {
    if (!(*eps > 0 && *eps < 1)) return err(absl::StrCat("rms epsilon ", *eps, " is absurd"));
    c.norm_eps = static_cast<float>(*eps);
  }
  if (g.Find("rope.scaling.type") || g.Find(a + ".rope.scaling.type")) {
    absl::StatusOr<std::string> st = g.GetString(a + ".rope.scaling.type");
    if (st.ok() && *st != "none") {
      return absl::UnimplementedError(
          absl::StrCat("'", path_, "': RoPE scaling '", *st, "' is not supported"));
    }
  }

  // Tensors, with their expected shapes (GGUF lists ne[0], the row length, first).
  auto tensor = [&](const std::string& name, std::vector<int64_t> want,
                    bool optional = false) -> absl::StatusOr<const GgufTensorInfo*> {
    const GgufTensorInfo* t = g.FindTensor(name);
    if (t == nullptr) {
      if (optional) return nullptr;
      return err(absl::StrCat("tensor '", name, "' is missing"));
    }
    if (t->dims != want) {
      return err(absl::StrCat("tensor '", name, "' has shape ", ShapeString(t->dims),
                              ", expected ", ShapeString(want)));
    }
    return t;
  };
  auto view = [](const GgufTensorInfo* t) {
    return MatView{t->type, t->data, t->dims.size() > 1 ? t->dims[1] : 1, t->dims[0]};
  };
  const GgufTensorInfo* embd = g.FindTensor("token_embd.weight");
  if (embd == nullptr) return err("tensor 'token_embd.weight' is missing");
  if (embd->dims.size() != 2) return err("tensor 'token_embd.weight' is not 2-D");
  c.vocab_size = static_cast<int32_t>(std::min<int64_t>(embd->dims[1], kMaxVocab + 1));
  RETURN_IF_ERROR(CheckRange("vocab size (token_embd rows)", embd->dims[1], 1, kMaxVocab));
  ASSIGN_OR_RETURN(embd, tensor("token_embd.weight", {c.dim, c.vocab_size}));
  token_embedding_ = view(embd);
  ASSIGN_OR_RETURN(const GgufTensorInfo* onorm, tensor("output_norm.weight", {c.dim}));
  output_norm_ = NormAsF32(*onorm);
  ASSIGN_OR_RETURN(const GgufTensorInfo* out, tensor("output.weight", {c.dim, c.vocab_size}, true));
  c.tied_classifier = out == nullptr;
  classifier_ = out == nullptr ? token_embedding_ : view(out);

  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    LayerWeights& w = layers_[l];
    ASSIGN_OR_RETURN(const GgufTensorInfo* an, tensor(p + "attn_norm.weight", {c.dim}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* q, tensor(p + "attn_q.weight", {c.dim, c.q_dim()}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* k, tensor(p + "attn_k.weight", {c.dim, c.kv_dim()}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* v, tensor(p + "attn_v.weight", {c.dim, c.kv_dim()}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* o, tensor(p + "attn_output.weight", {c.q_dim(), c.dim}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* fn, tensor(p + "ffn_norm.weight", {c.dim}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* g1, tensor(p + "ffn_gate.weight", {c.dim, c.hidden_dim}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* d2, tensor(p + "ffn_down.weight", {c.hidden_dim, c.dim}));
    ASSIGN_OR_RETURN(const GgufTensorInfo* u3, tensor(p + "ffn_up.weight", {c.dim, c.hidden_dim}));
    for (const char* bias : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) {
      if (g.FindTensor(p + bias) != nullptr) {
        return absl::UnimplementedError(
            absl::StrCat("'", path_, "': tensor '", p, bias, "': attention biases are not supported"));
      }
    }
    w.attn_norm = NormAsF32(*an);
    w.wq = view(q);
    w.wk = view(k);
    w.wv = view(v);
    w.wo = view(o);
    w.ffn_norm = NormAsF32(*fn);
    w.w1 = view(g1);
    w.w2 = view(d2);
    w.w3 = view(u3);
  }

  absl::StatusOr<VocabData> vd = VocabDataFromGguf(g);
  if (!vd.ok()) return err(absl::StrCat("tokenizer: ", vd.status().message()));
  absl::StatusOr<Vocab> vocab = Vocab::Create(*std::move(vd));
  if (!vocab.ok()) return err(absl::StrCat("tokenizer: ", vocab.status().message()));
  vocab_ = std::make_unique<Vocab>(*std::move(vocab));
  return absl::OkStatus();
}

absl::Status Model::Validate(const ModelLoadOptions& options) const {
  if (vocab_->size() != config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path_, "': the tokenizer has ", vocab_->size(), " tokens but the model has ",
        config_.vocab_size, " embedding rows"));
  }
  if (options.max_weight_bytes > 0 && WeightBytes() > options.max_weight_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("'", path_, "': weights take ", WeightBytes(),
                                                     " bytes, over the limit of ",
                                                     options.max_weight_bytes));
  }
  return absl::OkStatus();
}

uint64_t Model::LayerWeightBytes(int i) const {
  const LayerWeights& w = layers_[i];
  return MatBytes(w.wq) + MatBytes(w.wk) + MatBytes(w.wv) + MatBytes(w.wo) + MatBytes(w.w1) +
         MatBytes(w.w2) + MatBytes(w.w3) + 2ull * config_.dim * sizeof(float);
}

uint64_t Model::WeightBytes() const {
  uint64_t n = MatBytes(token_embedding_) + config_.dim * sizeof(float);
  if (!config_.tied_classifier) n += MatBytes(classifier_);
  for (int i = 0; i < config_.n_layers; ++i) n += LayerWeightBytes(i);
  return n;
}

uint64_t Model::BytesPerDecodedToken() const {
  uint64_t n = MatBytes(classifier_) + config_.dim * sizeof(float) +
               RowBytes(token_embedding_.type, config_.dim);
  for (int i = 0; i < config_.n_layers; ++i) n += LayerWeightBytes(i);
  return n;
}

uint64_t Model::ParameterCount() const {
  const ModelConfig& c = config_;
  uint64_t per_layer = 2ull * c.dim + 2ull * c.q_dim() * c.dim + 2ull * c.kv_dim() * c.dim +
                       3ull * c.hidden_dim * c.dim;
  uint64_t n = static_cast<uint64_t>(c.vocab_size) * c.dim + c.dim + c.n_layers * per_layer;
  if (!c.tied_classifier) n += static_cast<uint64_t>(c.vocab_size) * c.dim;
  return n;
}

}  // namespace tandem::model
