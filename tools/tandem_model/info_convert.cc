// `info`, `convert` and `synth`: the model-file commands of tandem-model.
#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/model_writer.h"
#include "tools/tandem_model/commands.h"

namespace tandem::tools {
namespace {

using model::GgmlType;
using model::GgmlTypeName;

std::string ValueString(const model::GgufValue& v) {
  using model::GgufType;
  switch (v.type) {
    case GgufType::kString: {
      std::string s(v.str.substr(0, 80));
      return absl::StrCat("\"", absl::CEscape(s), v.str.size() > 80 ? "...\"" : "\"");
    }
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      return absl::StrFormat("%g", v.f);
    case GgufType::kBool:
      return v.i ? "true" : "false";
    case GgufType::kArray:
      return absl::StrCat("[", std::string(model::GgufTypeName(v.array_type)), " x ", v.array_count, "]");
    default:
      return absl::StrCat(v.i);
  }
}

void PrintMat(const char* name, const model::MatView& m) {
  std::printf("  %-28s %-5s [%lld, %lld]  %llu bytes\n", name,
              std::string(GgmlTypeName(m.type)).c_str(), static_cast<long long>(m.cols),
              static_cast<long long>(m.rows),
              static_cast<unsigned long long>(m.rows * model::RowBytes(m.type, m.cols)));
}

}  // namespace

int InfoCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(args, {"tokenizer"});
  if (!flags.ok()) return Fail(flags.status());
  if (flags->positional().size() != 1) {
    return Fail(absl::InvalidArgumentError("usage: tandem-model info FILE [--tokenizer T]"));
  }
  model::ModelLoadOptions options;
  options.path = flags->positional()[0];
  options.tokenizer_path = flags->String("tokenizer");
  auto m = model::Model::Load(options);
  if (!m.ok()) return Fail(m.status());
  const model::Model& mod = **m;
  const model::ModelConfig& c = mod.config();
  std::printf("file:            %s\n", mod.path().c_str());
  std::printf("format:          %s\n", mod.format() == model::ModelFormat::kGguf
                                           ? absl::StrCat("GGUF v", mod.gguf()->version()).c_str()
                                           : "llama2.c legacy checkpoint");
  if (mod.format() == model::ModelFormat::kLlama2c) {
    std::printf("tokenizer:       %s\n", mod.tokenizer_path().c_str());
  }
  std::printf("architecture:    %s\n", c.architecture.c_str());
  std::printf("dim:             %d\nhidden_dim:      %d\nlayers:          %d\n", c.dim,
              c.hidden_dim, c.n_layers);
  std::printf("heads:           %d (kv %d, head size %d)\n", c.n_heads, c.n_kv_heads, c.head_dim);
  std::printf("vocab:           %d (%s tokenizer, bos %d, eos %d)\n", c.vocab_size,
              mod.vocab().kind() == model::TokenizerKind::kSpm ? "SentencePiece BPE" : "GPT-2 BPE",
              mod.vocab().bos_id(), mod.vocab().eos_id());
  std::printf("context:         %d\n", c.max_seq_len);
  std::printf("rope:            dim %d, theta %g\nrms eps:         %g\n", c.rope_dim,
              c.rope_theta, c.norm_eps);
  std::printf("classifier:      %s\n", c.tied_classifier ? "tied to the embedding" : "separate");
  std::printf("parameters:      %llu (%.3f M)\n",
              static_cast<unsigned long long>(mod.ParameterCount()), mod.ParameterCount() / 1e6);
  std::printf("weight bytes:    %llu (%.2f MiB)\n", static_cast<unsigned long long>(mod.WeightBytes()),
              mod.WeightBytes() / 1048576.0);
  std::printf("bytes per token: %llu (weights read to decode one token)\n",
              static_cast<unsigned long long>(mod.BytesPerDecodedToken()));
  if (const model::GgufFile* g = mod.gguf()) {
    std::printf("metadata (%zu keys):\n", g->metadata().size());
    for (const auto& [key, value] : g->metadata()) {
      std::printf("  %-40s %s\n", key.c_str(), ValueString(value).c_str());
    }
    std::printf("tensors (%zu):\n", g->tensors().size());
    for (const model::GgufTensorInfo& t : g->tensors()) {
      std::printf("  %-28s %-5s [%s]  %zu bytes\n", t.name.c_str(),
                  std::string(GgmlTypeName(t.type)).c_str(), absl::StrJoin(t.dims, ", ").c_str(),
                  t.bytes);
    }
  } else {
    std::printf("tensors:\n");
    PrintMat("token_embedding", mod.token_embedding());
    for (int l = 0; l < c.n_layers; ++l) {
      const model::LayerWeights& w = mod.layer(l);
      for (auto [n, m] : {std::pair{"wq", &w.wq}, {"wk", &w.wk}, {"wv", &w.wv}, {"wo", &w.wo},
                          {"w1", &w.w1}, {"w2", &w.w2}, {"w3", &w.w3}}) {
        PrintMat(absl::StrCat("layers.", l, ".", n).c_str(), *m);
      }
    }
    if (!c.tied_classifier) PrintMat("classifier", mod.classifier());
  }
  return 0;
}

int ConvertCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(args, {"type", "tokenizer"});
  if (!flags.ok()) return Fail(flags.status());
  if (flags->positional().size() != 2) {
    return Fail(absl::InvalidArgumentError(
        "usage: tandem-model convert IN OUT --type f32|f16|q8_0|q4_0 [--tokenizer T]"));
  }
  std::optional<GgmlType> type = model::GgmlTypeFromName(flags->String("type", "f32"));
  if (!type) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--type must be one of f32, f16, q8_0, q4_0, got '", flags->String("type"), "'")));
  }
  model::ModelLoadOptions options;
  options.path = flags->positional()[0];
  options.tokenizer_path = flags->String("tokenizer");
  auto m = model::Model::Load(options);
  if (!m.ok()) return Fail(m.status());
  const std::string& out = flags->positional()[1];
  if (absl::Status s = model::ConvertToGguf(**m, *type, out); !s.ok()) return Fail(s);
  std::fprintf(stderr, "wrote %s (%s)\n", out.c_str(), std::string(GgmlTypeName(*type)).c_str());
  return 0;
}

int SynthCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(args, {"dim", "hidden", "layers", "heads", "kv-heads", "vocab", "seq-len",
                          "type", "seed", "llama2c-tokenizer"},
                   {"untied"});
  if (!flags.ok()) return Fail(flags.status());
  if (flags->positional().size() != 1) {
    return Fail(absl::InvalidArgumentError("usage: tandem-model synth OUT [flags]"));
  }
  model::SyntheticModelSpec s;
  auto get = [&](const char* name, int def, int lo, int hi, int* out) -> absl::Status {
    absl::StatusOr<int64_t> v = flags->Int(name, def, lo, hi);
    if (!v.ok()) return v.status();
    *out = static_cast<int>(*v);
    return absl::OkStatus();
  };
  for (absl::Status st : {get("dim", 768, 2, 65536, &s.dim), get("hidden", 2048, 1, 1 << 19, &s.hidden_dim),
                          get("layers", 12, 1, 1024, &s.n_layers), get("heads", 12, 1, 1024, &s.n_heads),
                          get("kv-heads", -1, -1, 1024, &s.n_kv_heads),
                          get("vocab", 32000, 259, 1 << 22, &s.vocab_size),
                          get("seq-len", 1024, 1, 1 << 24, &s.max_seq_len)}) {
    if (!st.ok()) return Fail(st);
  }
  if (s.n_kv_heads < 0) s.n_kv_heads = s.n_heads;
  absl::StatusOr<uint64_t> seed = flags->Uint64("seed", 1);
  if (!seed.ok()) return Fail(seed.status());
  s.seed = *seed;
  s.tied_classifier = !flags->Bool("untied");
  const std::string& out = flags->positional()[0];
  absl::Status st;
  if (flags->Has("llama2c-tokenizer")) {
    st = model::WriteSyntheticLlama2c(s, out, flags->String("llama2c-tokenizer"));
  } else {
    std::optional<GgmlType> type = model::GgmlTypeFromName(flags->String("type", "f32"));
    if (!type) return Fail(absl::InvalidArgumentError("--type must be f32, f16, q8_0 or q4_0"));
    st = model::WriteSyntheticGguf(s, *type, out);
  }
  if (!st.ok()) return Fail(st);
  std::fprintf(stderr, "wrote %s\n", out.c_str());
  return 0;
}

}  // namespace tandem::tools
