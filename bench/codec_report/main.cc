// tandem-codec-report: the lossy hidden-state codec report for split mode (see codec_report.h).
// Usage:
//   tandem-codec-report --out FILE.json [--model M --tokenizer T] [--tokens 64] [--threads 2]
//       [--greedy-layers all|2,3] [--synth110m PATH [--synth-type q8_0]
//       [--synth110m-untied PATH] [--synth-greedy-layers 2]]
// --synth110m writes the synthetic 110M llama (dim 768, hidden 2048, 12 layers, 12 heads, vocab
// 32000, seed 110, as bench/run_engine_bench.sh makes it) to PATH when PATH does not exist.
// Its classifier is tied to the embedding, and random weights make it repeat its input (the
// residual stream stays close to the input token's embedding), so its argmax is hard to move;
// --synth110m-untied adds the same shape with its own random classifier, whose continuations vary.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/codec_report/codec_report.h"
#include "common/model/ggml_types.h"
#include "common/model/model_writer.h"
#include "common/util/flags.h"

namespace tandem::codec_report {
namespace {

// The golden prompts of tests/edge/split_mode_test.cc, then more of the same kind.
const char* const kPrompts[] = {"Once upon a time", "Zoo", "The little dog",
                                "Lily wanted to", "One day, a big", "Tom and his mom went",
                                "The sun was", "She saw a bird", "Ben had a red ball",
                                "There was a girl named"};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-codec-report: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<std::vector<int>> ParseLayers(const std::string& text, int n_layers) {
  std::vector<int> layers;
  if (text == "all") {
    for (int k = 1; k < n_layers; ++k) layers.push_back(k);
    return layers;
  }
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int k;
    if (!absl::SimpleAtoi(part, &k) || k < 1 || k >= n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("split layers must be 'all' or a list in [1, ", n_layers, "): ", text));
    }
    layers.push_back(k);
  }
  return layers;
}

struct ModelRun {
  std::string name;
  std::string path;
  std::unique_ptr<model::Model> model;
  std::string greedy_layers;
};

int Main(int argc, char** argv) {
  absl::StatusOr<Flags> flags = Flags::Parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {"out", "model", "tokenizer", "tokens", "threads", "greedy-layers", "synth110m",
       "synth110m-untied", "synth-type", "synth-greedy-layers"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("out")) return Fail(absl::InvalidArgumentError("--out FILE.json is required"));
  absl::StatusOr<int64_t> tokens = flags->Int("tokens", 64, 1, 4096);
  absl::StatusOr<int64_t> threads = flags->Int("threads", 2, 1, 256);
  if (!tokens.ok()) return Fail(tokens.status());
  if (!threads.ok()) return Fail(threads.status());

  std::vector<ModelRun> runs;
  {
    model::ModelLoadOptions o;
    o.path = flags->String("model", TANDEM_MODELS_DIR "/stories260K.bin");
    o.tokenizer_path = flags->String("tokenizer");
    auto m = model::Model::Load(o);
    if (!m.ok()) return Fail(m.status());
    runs.push_back({std::filesystem::path(o.path).stem().string(), o.path, std::move(*m),
                    flags->String("greedy-layers", "all")});
  }
  const std::string type_name = flags->String("synth-type", "q8_0");
  for (const bool untied : {false, true}) {
    const std::string flag = untied ? "synth110m-untied" : "synth110m";
    if (!flags->Has(flag)) continue;
    const std::string path = flags->String(flag);
    if (!std::filesystem::exists(path)) {
      std::optional<model::GgmlType> type = model::GgmlTypeFromName(type_name);
      if (!type) return Fail(absl::InvalidArgumentError("--synth-type must be f32, f16, q8_0 or q4_0"));
      const model::SyntheticModelSpec s{.dim = 768, .hidden_dim = 2048, .n_layers = 12,
                                        .n_heads = 12, .n_kv_heads = 12, .vocab_size = 32000,
                                        .max_seq_len = 1024, .tied_classifier = !untied,
                                        .seed = 110};
      if (absl::Status st = model::WriteSyntheticGguf(s, *type, path); !st.ok()) return Fail(st);
      std::fprintf(stderr, "wrote %s\n", path.c_str());
    }
    model::ModelLoadOptions o;
    o.path = path;
    auto m = model::Model::Load(o);
    if (!m.ok()) return Fail(m.status());
    runs.push_back({absl::StrCat(flag, "-", type_name), path, std::move(*m),
                    flags->String("synth-greedy-layers", "2")});
  }

  std::vector<ReportRow> rows;
  std::vector<std::string> models_json;
  for (ModelRun& run : runs) {
    const model::Model& m = *run.model;
    ReportOptions options;
    options.tokens = static_cast<int>(*tokens);
    options.threads = static_cast<int>(*threads);
    auto layers = ParseLayers(run.greedy_layers, m.config().n_layers);
    if (!layers.ok()) return Fail(layers.status());
    options.greedy_layers = *layers;
    options.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    std::vector<std::vector<int32_t>> prompts;
    for (const char* text : kPrompts) prompts.push_back(m.vocab().Encode(text, true));
    absl::StatusOr<ModelReport> rep = RunReport(m, run.name, prompts, options);
    if (!rep.ok()) return Fail(rep.status());
    rows.insert(rows.end(), rep->rows.begin(), rep->rows.end());
    std::vector<std::string> quoted;
    for (const char* text : kPrompts) quoted.push_back(absl::StrCat("\"", text, "\""));
    const model::ModelConfig& c = m.config();
    models_json.push_back(absl::StrCat(
        "{\"model\": \"", run.name, "\", \"path\": \"", run.path, "\", \"dim\": ", c.dim,
        ", \"layers\": ", c.n_layers, ", \"vocab\": ", c.vocab_size,
        ", \"parameters\": ", m.ParameterCount(), ", \"weight_bytes\": ", m.WeightBytes(),
        ", \"greedy_layers\": [", absl::StrJoin(options.greedy_layers, ", "),
        "], \"prompts\": [", absl::StrJoin(quoted, ", "), "]}"));
  }

  const std::string json = absl::StrCat(
      "{\n\"tokens\": ", *tokens,
      ",\n\"definitions\": {\"bytes_per_token\": \"HiddenStates payload per one-row round "
      "(teacher-forced over the exact continuations)\", \"message_bytes_per_token\": \"serialized "
      "EdgeMessage (DraftRound) per one-row round\", \"identical\": \"prompts whose greedy split "
      "continuation equals the target alone\", \"mean_first_divergence\": \"first differing "
      "position, identical prompts count as tokens\", \"top1_agreement\": \"teacher-forced argmax "
      "of final logits from codec-round-tripped layer-k states vs exact\"},\n\"models\": [",
      absl::StrJoin(models_json, ", "), "],\n\"rows\": ", RowsToJson(rows), "\n}\n");
  const std::string out = flags->String("out");
  FILE* f = std::fopen(out.c_str(), "w");
  if (f == nullptr) return Fail(absl::InternalError(absl::StrCat("cannot write ", out)));
  std::fwrite(json.data(), 1, json.size(), f);
  std::fclose(f);
  std::fputs(RowsToTable(rows).c_str(), stdout);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i == 0 || rows[i].model != rows[i - 1].model) {
      std::printf("%s exact logits: mean top-1 margin %.4g, RMS %.4g\n", rows[i].model.c_str(),
                  rows[i].exact_top1_margin, rows[i].exact_logit_rms);
    }
  }
  return 0;
}

}  // namespace
}  // namespace tandem::codec_report

int main(int argc, char** argv) { return tandem::codec_report::Main(argc, argv); }
