// Deterministic mutation fuzzing of the model parsers, run by CTest with any compiler: real and
// synthetic seed files get thousands of seeded, structure-aware mutations (bit flips, byte sets,
// interesting u32/u64 values in length/count/type/offset fields, truncations, insertions). Each
// input must give OK with sane invariants or a clear error, quickly. The libFuzzer targets in
// this folder run the same checks (fuzz_inputs.h) open-endedly.
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/model_writer.h"
#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "tests/test_util.h"

namespace tandem::fuzz {
namespace {

enum class Kind { kGguf, kLlama2c };

struct Seed {
  std::string name;
  Kind kind;
  Bytes bytes;
  int iterations;
};

Bytes ReadBytes(const std::string& path) {
  const std::string s = testing::ReadFileOrDie(path);
  return Bytes(s.begin(), s.end());
}

model::SyntheticModelSpec SmallSpec() {
  model::SyntheticModelSpec s;
  s.dim = 16;
  s.hidden_dim = 32;
  s.n_layers = 2;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.vocab_size = 300;
  s.max_seq_len = 8;
  s.seed = 11;
  return s;
}

std::string Run(Kind kind, std::span<const uint8_t> b) {
  return kind == Kind::kGguf ? FuzzGguf(b) : FuzzPackedLlama2c(b);
}

// Runs one seed's campaign; a violation or a slow input fails the test and is saved for replay.
void Campaign(const Seed& seed, uint64_t rng_seed) {
  SCOPED_TRACE(seed.name);
  // The unmutated seed loads.
  ASSERT_EQ(Run(seed.kind, seed.bytes), "");
  if (seed.kind == Kind::kGguf) {
    ASSERT_TRUE(model::Model::FromMemory(seed.bytes).ok());
  }
  std::vector<size_t> fields = seed.kind == Kind::kGguf ? GgufFieldOffsets(seed.bytes)
                                                        : Llama2cFieldOffsets(seed.bytes);
  ASSERT_GT(fields.size(), 3u);
  Mutator mutator(rng_seed, std::move(fields));
  int failures = 0, loaded = 0;
  double slowest = 0;
  for (int i = 0; i < seed.iterations && failures < 5; ++i) {
    Bytes b = seed.bytes;
    mutator.Mutate(&b);
    const auto start = std::chrono::steady_clock::now();
    const std::string problem = Run(seed.kind, b);
    if (problem.empty() && seed.kind == Kind::kGguf && model::Model::FromMemory(b).ok()) ++loaded;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    slowest = std::max(slowest, seconds);
    if (seconds > 2.0 || !problem.empty()) {
      ++failures;
      const std::string path =
          absl::StrCat(testing::TempDir(), "/", seed.name, "-", i, ".crash");
      if (FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(b.data(), 1, b.size(), f);
        std::fclose(f);
      }
      ADD_FAILURE() << "iteration " << i << " (" << seconds << " s): "
                    << (problem.empty() ? "too slow" : problem) << "; input saved to " << path;
    }
  }
  std::printf("[ fuzz     ] %-20s %6d inputs, %5d loaded as a model (GGUF), slowest %.1f ms\n",
              seed.name.c_str(), seed.iterations, loaded, slowest * 1e3);
}

class FuzzSmoke : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::TempDir();
    auto& s = *new std::vector<Seed>();
    seeds_ = &s;
    const std::string models = testing::ModelsDir();
    s.push_back({"stories260K.gguf", Kind::kGguf, ReadBytes(models + "/stories260K.gguf"), 3000});
    s.push_back({"stories260K.bin", Kind::kLlama2c,
                 PackLlama2c(ReadBytes(models + "/stories260K.bin"),
                             ReadBytes(models + "/tok512.bin")),
                 3000});
    const model::SyntheticModelSpec spec = SmallSpec();
    if (model::WriteSyntheticGguf(spec, model::GgmlType::kF32, dir + "/s.gguf").ok()) {
      s.push_back({"synthetic.gguf", Kind::kGguf, ReadBytes(dir + "/s.gguf"), 20000});
    }
    if (model::WriteSyntheticGguf(spec, model::GgmlType::kF16, dir + "/h.gguf").ok()) {
      s.push_back({"synthetic-f16.gguf", Kind::kGguf, ReadBytes(dir + "/h.gguf"), 10000});
    }
    if (model::WriteSyntheticLlama2c(spec, dir + "/s.bin", dir + "/s.tok").ok()) {
      s.push_back({"synthetic.bin", Kind::kLlama2c,
                   PackLlama2c(ReadBytes(dir + "/s.bin"), ReadBytes(dir + "/s.tok")), 20000});
    }
    s.push_back({"tiny.gguf", Kind::kGguf, TinyGguf(), 40000});
    s.push_back({"tiny-align64.gguf", Kind::kGguf, TinyGguf(64), 20000});
    Bytes ckpt, tok;
    TinyLlama2c(&ckpt, &tok);
    s.push_back({"tiny.bin", Kind::kLlama2c, PackLlama2c(ckpt, tok), 40000});
  }
  static const Seed& Get(const std::string& name) {
    for (const Seed& s : *seeds_) {
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no seed " << name;
    static const Seed* none = new Seed{"none", Kind::kGguf, {}, 0};
    return *none;
  }
  static std::vector<Seed>* seeds_;
};
std::vector<Seed>* FuzzSmoke::seeds_ = nullptr;

TEST_F(FuzzSmoke, AllSeedsPresent) { EXPECT_EQ(seeds_->size(), 8u); }
TEST_F(FuzzSmoke, Stories260KGguf) { Campaign(Get("stories260K.gguf"), 1); }
TEST_F(FuzzSmoke, Stories260KLlama2c) { Campaign(Get("stories260K.bin"), 2); }
TEST_F(FuzzSmoke, SyntheticGguf) { Campaign(Get("synthetic.gguf"), 3); }
TEST_F(FuzzSmoke, SyntheticF16Gguf) { Campaign(Get("synthetic-f16.gguf"), 4); }
TEST_F(FuzzSmoke, SyntheticLlama2c) { Campaign(Get("synthetic.bin"), 5); }
TEST_F(FuzzSmoke, TinyGguf) { Campaign(Get("tiny.gguf"), 6); }
TEST_F(FuzzSmoke, TinyGgufAlign64) { Campaign(Get("tiny-align64.gguf"), 7); }
TEST_F(FuzzSmoke, TinyLlama2c) { Campaign(Get("tiny.bin"), 8); }

// Mutations of the tiny seeds must reach past the container: some mutated inputs still load as
// models (mutations of weights, scores, names that do not matter), many do not.
TEST_F(FuzzSmoke, MutationsReachTheModelLoader) {
  for (const char* name : {"tiny.gguf", "tiny.bin"}) {
    const Seed& seed = Get(name);
    Mutator mutator(99, seed.kind == Kind::kGguf ? GgufFieldOffsets(seed.bytes)
                                                 : Llama2cFieldOffsets(seed.bytes));
    int loaded = 0, rejected = 0;
    std::map<absl::StatusCode, int> codes;
    for (int i = 0; i < 2000; ++i) {
      Bytes b = seed.bytes;
      mutator.Mutate(&b);
      absl::Status s;
      if (seed.kind == Kind::kGguf) {
        s = model::Model::FromMemory(b).status();
      } else {
        uint32_t n = 0;
        if (b.size() >= 4) std::memcpy(&n, b.data(), 4);
        const size_t rest = b.size() >= 4 ? b.size() - 4 : 0;
        const size_t split = std::min<size_t>(n, rest);
        const Bytes ckpt(b.begin() + std::min<size_t>(4, b.size()),
                         b.begin() + std::min<size_t>(4, b.size()) + split);
        const Bytes tok(b.begin() + std::min<size_t>(4, b.size()) + split, b.end());
        s = model::Model::FromMemory(ckpt, tok).status();
      }
      s.ok() ? ++loaded : ++rejected;
      ++codes[s.code()];
    }
    EXPECT_GT(loaded, 20) << name;
    EXPECT_GT(rejected, 500) << name;
    for (const auto& [code, n] : codes) {
      std::printf("[ fuzz     ] %s: %s x%d\n", name, absl::StatusCodeToString(code).c_str(), n);
    }
  }
}

}  // namespace
}  // namespace tandem::fuzz
