// A loaded llama-family model: hyperparameters, weight views into the mmapped file, and its
// tokenizer. Loads llama2.c legacy checkpoints (+ tokenizer.bin) and GGUF files (tokenizer
// embedded). Every header field is checked against the file before any weight is touched.
// Thread-safety: immutable after Load; share one Model between any number of Engines/threads.
#ifndef TANDEM_COMMON_MODEL_MODEL_H_
#define TANDEM_COMMON_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/gguf.h"
#include "common/model/kernels.h"
#include "common/model/mapped_file.h"
#include "common/model/vocab.h"

namespace tandem::model {

struct ModelConfig {
  std::string architecture = "llama";
  int32_t dim = 0;          // embedding width
  int32_t hidden_dim = 0;   // SwiGLU inner width
  int32_t n_layers = 0;
  int32_t n_heads = 0;      // query heads
  int32_t n_kv_heads = 0;   // key/value heads (GQA: n_heads % n_kv_heads == 0)
  int32_t head_dim = 0;     // dim / n_heads unless the file says otherwise
  int32_t vocab_size = 0;
  int32_t max_seq_len = 0;  // context length the model was trained for
  int32_t rope_dim = 0;     // rotary dimensions per head (<= head_dim, even)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_classifier = true;  // classifier shares the token embedding

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

struct LayerWeights {
  const float* attn_norm = nullptr;  // (dim)
  MatView wq;                        // (n_heads * head_dim, dim)
  MatView wk;                        // (kv_dim, dim)
  MatView wv;                        // (kv_dim, dim)
  MatView wo;                        // (dim, n_heads * head_dim)
  const float* ffn_norm = nullptr;   // (dim)
  MatView w1;                        // gate (hidden_dim, dim)
  MatView w2;                        // down (dim, hidden_dim)
  MatView w3;                        // up (hidden_dim, dim)
};

struct ModelLoadOptions {
  std::string path;            // .gguf or llama2.c .bin (detected from the first bytes)
  // llama2.c only: the tokenizer.bin. Empty = look beside the model for tok<vocab>.bin, then
  // tokenizer.bin. Ignored for GGUF (the tokenizer is embedded).
  std::string tokenizer_path;
  // Refuse models whose weights exceed this many bytes (protects small devices). 0 = no limit.
  uint64_t max_weight_bytes = 0;
};

enum class ModelFormat { kLlama2c, kGguf };

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelLoadOptions& options);

  // Parses a model image already in memory (fuzzing, tests). `bytes` (and `llama2c_tokenizer`,
  // the tokenizer.bin image that a llama2.c checkpoint needs) must outlive the Model.
  static absl::StatusOr<std::unique_ptr<Model>> FromMemory(
      std::span<const uint8_t> bytes, std::span<const uint8_t> llama2c_tokenizer = {});

  const ModelConfig& config() const { return config_; }
  const Vocab& vocab() const { return *vocab_; }
  ModelFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  const std::string& tokenizer_path() const { return tokenizer_path_; }  // llama2.c only

  const MatView& token_embedding() const { return token_embedding_; }  // (vocab, dim)
  const LayerWeights& layer(int i) const { return layers_[i]; }
  const float* output_norm() const { return output_norm_; }            // (dim)
  const MatView& classifier() const { return classifier_; }            // (vocab, dim)

  uint64_t ParameterCount() const;
  uint64_t WeightBytes() const;            // bytes of all weights as stored
  uint64_t LayerWeightBytes(int i) const;  // bytes of layer i's matrices and norms
  // Bytes streamed from memory to decode one token (all layers, the final norm, classifier and
  // one embedding row): the denominator of the bandwidth bound.
  uint64_t BytesPerDecodedToken() const;

  // The GGUF file when format() == kGguf (metadata for `info`), else null.
  const GgufFile* gguf() const { return gguf_.get(); }

 private:
  Model() = default;
  absl::Status LoadFrom(const ModelLoadOptions& options, std::span<const uint8_t> tokenizer);
  absl::Status LoadLlama2c(const ModelLoadOptions& options, std::span<const uint8_t> tokenizer);
  absl::Status LoadGguf();
  absl::Status Validate(const ModelLoadOptions& options) const;
  // Returns an f32 view of a norm vector, converting (and keeping) it when stored otherwise.
  const float* NormAsF32(const GgufTensorInfo& t);

  ModelConfig config_;
  ModelFormat format_ = ModelFormat::kGguf;
  std::string path_;
  std::string tokenizer_path_;
  std::unique_ptr<MappedFile> file_;  // null for FromMemory
  std::span<const uint8_t> bytes_;    // the whole model image
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<Vocab> vocab_;
  MatView token_embedding_;
  std::vector<LayerWeights> layers_;
  const float* output_norm_ = nullptr;
  MatView classifier_;
  std::vector<std::vector<float>> owned_norms_;  // converted non-f32 norm vectors
};

// Resolves a llama2.c tokenizer beside `model_path` for a vocabulary of `vocab_size`:
// tok<vocab_size>.bin, then tokenizer.bin. NotFound names both paths tried.
absl::StatusOr<std::string> FindLlama2cTokenizer(const std::string& model_path,
                                                 int32_t vocab_size);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_MODEL_H_
