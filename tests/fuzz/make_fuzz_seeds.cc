// Writes seed corpora for the libFuzzer targets: make_fuzz_seeds MODELS_DIR OUT_DIR fills
// OUT_DIR/gguf and OUT_DIR/llama2c with tiny and small synthetic models, and packs the real
// stories260K.bin + tok512.bin pair for llama2c_fuzz. Real .gguf files can be copied as they are.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/model/model_writer.h"
#include "tests/fuzz/fuzz_inputs.h"

namespace {

using tandem::fuzz::Bytes;

Bytes Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

bool Write(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s MODELS_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string models = argv[1], out = argv[2];
  std::filesystem::create_directories(out + "/gguf");
  std::filesystem::create_directories(out + "/llama2c");
  bool ok = Write(out + "/gguf/tiny.gguf", tandem::fuzz::TinyGguf()) &&
            Write(out + "/gguf/tiny-align64.gguf", tandem::fuzz::TinyGguf(64));
  Bytes ckpt, tok;
  tandem::fuzz::TinyLlama2c(&ckpt, &tok);
  ok = ok && Write(out + "/llama2c/tiny.bin", tandem::fuzz::PackLlama2c(ckpt, tok));

  tandem::model::SyntheticModelSpec spec;
  spec.dim = 16;
  spec.hidden_dim = 32;
  spec.n_layers = 1;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.vocab_size = 260;
  spec.max_seq_len = 4;
  const std::string tmp = out + "/tmp";
  std::filesystem::create_directories(tmp);
  ok = ok && tandem::model::WriteSyntheticGguf(spec, tandem::model::GgmlType::kF32,
                                               out + "/gguf/small-f32.gguf").ok();
  ok = ok && tandem::model::WriteSyntheticGguf(spec, tandem::model::GgmlType::kF16,
                                               out + "/gguf/small-f16.gguf").ok();
  ok = ok && tandem::model::WriteSyntheticLlama2c(spec, tmp + "/m.bin", tmp + "/t.bin").ok();
  ok = ok && Write(out + "/llama2c/small.bin",
                   tandem::fuzz::PackLlama2c(Read(tmp + "/m.bin"), Read(tmp + "/t.bin")));
  const Bytes bin = Read(models + "/stories260K.bin"), tok512 = Read(models + "/tok512.bin");
  if (!bin.empty() && !tok512.empty()) {
    ok = ok && Write(out + "/llama2c/stories260K.bin", tandem::fuzz::PackLlama2c(bin, tok512));
  }
  std::filesystem::remove_all(tmp);
  if (!ok) {
    std::fprintf(stderr, "could not write the seeds under %s\n", out.c_str());
    return 1;
  }
  return 0;
}
