// Writes models as GGUF: conversion between formats and tensor types (`tandem-model convert`),
// and seeded synthetic models for tests and benchmarks (any shape, random weights).
// Thread-safety: free functions with no shared state.
#ifndef TANDEM_COMMON_MODEL_MODEL_WRITER_H_
#define TANDEM_COMMON_MODEL_MODEL_WRITER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/model/ggml_types.h"
#include "common/model/model.h"

namespace tandem::model {

// Writes `model` (llama2.c or GGUF source) as a GGUF v3 file with its tokenizer embedded.
// 2-D weight matrices become `type`; a matrix whose row length is not a multiple of 32 cannot be
// block-quantized and is stored as F16 instead when `type` is Q8_0/Q4_0. Norm vectors stay F32.
absl::Status ConvertToGguf(const Model& model, GgmlType type, const std::string& out_path);

struct SyntheticModelSpec {
  int dim = 64;
  int hidden_dim = 172;
  int n_layers = 2;
  int n_heads = 8;
  int n_kv_heads = 4;
  int vocab_size = 512;     // >= 259: <unk>, <s>, </s>, 256 byte tokens, then made-up pieces
  int max_seq_len = 256;
  bool tied_classifier = true;
  int rope_dim = 0;         // 0 = head size
  float rope_theta = 10000.0f;
  uint64_t seed = 1;
};

// A GGUF model with N(0, 1/sqrt(fan_in))-ish random weights of `type` (norms near 1), and a
// synthetic SPM vocabulary of spec.vocab_size tokens.
absl::Status WriteSyntheticGguf(const SyntheticModelSpec& spec, GgmlType type,
                                const std::string& path);

// The same weights (for the same spec) as a llama2.c legacy checkpoint plus its tokenizer.bin.
absl::Status WriteSyntheticLlama2c(const SyntheticModelSpec& spec, const std::string& model_path,
                                   const std::string& tokenizer_path);

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_MODEL_WRITER_H_
