// The tandem-model binary, run the way users run it: subcommands, flags, outputs, JSON files,
// exit codes, and clear errors for bad input.
#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include <sys/wait.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

Result RunTool(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  std::string err_file = testing::TempDir() + "/stderr" + std::to_string(counter++);
  std::string cmd = env + " " + std::string(TANDEM_BIN_DIR) + "/tandem-model " + args + " 2>" + err_file;
  Result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = testing::ReadFileOrDie(err_file);
  return r;
}

std::string Model() { return testing::ModelPath("stories260K.bin"); }

TEST(ToolTest, InfoShowsMetadataTypesParametersAndSize) {
  Result r = RunTool("info " + testing::ModelPath("stories260K.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("GGUF v3"));
  // llama.cpp's converter stores the tied classifier as an explicit copy: 260032 + 512*64.
  EXPECT_THAT(r.out, HasSubstr("parameters:      292800"));
  EXPECT_THAT(r.out, HasSubstr("classifier:      separate"));
  EXPECT_THAT(r.out, HasSubstr("tokenizer.ggml.model"));
  EXPECT_THAT(r.out, HasSubstr("blk.0.attn_q.weight"));
  EXPECT_THAT(r.out, HasSubstr("f32"));
  r = RunTool("info " + Model());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("llama2.c legacy checkpoint"));
  EXPECT_THAT(r.out, HasSubstr("tok512.bin"));
  EXPECT_THAT(r.out, HasSubstr("weight bytes:    1040128"));
}

TEST(ToolTest, ConvertWritesALoadableQuantizedGguf) {
  std::string out = testing::TempDir() + "/q4.gguf";
  Result r = RunTool("convert " + Model() + " " + out + " --type q4_0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunTool("info " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("q4_0"));
  r = RunTool("generate --model " + out + " --prompt Zoo --max-tokens 10");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Zoo"));
  r = RunTool("convert " + Model() + " " + out + " --type q5_k");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--type must be one of"));
}

TEST(ToolTest, GenerateWritesStatsJson) {
  std::string js = testing::TempDir() + "/stats.json";
  Result r = RunTool("generate --model " + Model() + " --prompt 'Once upon' --max-tokens 30 "
                 "--temperature 0.9 --top-p 0.9 --seed 3 --threads 2 --stats-json " + js);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Once upon"));
  std::string stats = testing::ReadFileOrDie(js);
  for (const char* key : {"\"prompt_tokens\": 3", "\"generated_tokens\": 30", "\"seconds\"",
                          "\"tokens_per_second\""}) {
    EXPECT_THAT(stats, HasSubstr(key));
  }
  // Diagnostics go to stderr, never stdout.
  EXPECT_THAT(r.out, Not(HasSubstr("tok/s")));
  EXPECT_THAT(r.err, HasSubstr("tok/s"));
  // Same seed, same text.
  Result again = RunTool("generate --model " + Model() + " --prompt 'Once upon' --max-tokens 30 "
                     "--temperature 0.9 --top-p 0.9 --seed 3");
  EXPECT_EQ(again.out, r.out);
  Result other = RunTool("generate --model " + Model() + " --prompt 'Once upon' --max-tokens 30 "
                     "--temperature 0.9 --top-p 0.9 --seed 4");
  EXPECT_NE(other.out, r.out);
}

TEST(ToolTest, DefaultModelComesFromTheEnvironmentOrSaysWhatToDo) {
  Result r = RunTool("generate --prompt Zoo --max-tokens 5",
                 "TANDEM_MODELS_DIR=" + testing::ModelsDir());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Zoo"));
  r = RunTool("generate --prompt Zoo --max-tokens 5", "TANDEM_MODEL=/nonexistent/model.bin");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("default model was not found"));
  EXPECT_THAT(r.err, HasSubstr("TANDEM_MODELS_DIR"));
  EXPECT_THAT(r.err, HasSubstr("--model"));
}

TEST(ToolTest, BadFlagsAndFilesGiveClearErrors) {
  Result r = RunTool("generate --model " + Model() + " --max-tokens lots");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--max-tokens must be an integer"));
  r = RunTool("generate --model " + Model() + " --temperature -1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("temperature"));
  r = RunTool("generate --model " + Model() + " --top-p 2");
  EXPECT_EQ(r.exit_code, 2);
  r = RunTool("generate --modle x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown flag --modle"));
  r = RunTool("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  r = RunTool("info /nonexistent.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent.gguf"));
  r = RunTool("info " + testing::ModelPath("tok512.bin"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("error:"));
  r = RunTool("generate --model " + Model() + " --tokenizer " + testing::ModelPath("tokenizer.bin"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("tokenizer"));
  r = RunTool("bench --model " + Model());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--json"));
}

TEST(ToolTest, SpeculativeGenerateKeepsTheGoldenTextAndReportsAcceptance) {
  Result plain = RunTool("generate --model " + Model() + " --max-tokens 200");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  std::string draft = testing::TempDir() + "/draft-q8.gguf";
  ASSERT_EQ(RunTool("convert " + Model() + " " + draft + " --type q8_0").exit_code, 0);
  std::string js = testing::TempDir() + "/spec.json";
  for (const std::string& how :
       std::vector<std::string>{"--draft ngram:3", "--draft early-exit:2", "--draft-model " + draft,
                                "--draft-model " + draft + " --tree static:2,3",
                                "--draft early-exit:4 --tree dynamic:12",
                                "--draft ngram:3 --tree static:3,4"}) {
    Result r = RunTool("generate --model " + Model() + " --max-tokens 200 --spec-tokens 3 " + how +
                       " --stats-json " + js);
    ASSERT_EQ(r.exit_code, 0) << how << ": " << r.err;
    EXPECT_EQ(r.out, plain.out) << how;
    std::string stats = testing::ReadFileOrDie(js);
    for (const char* key : {"\"target_forward_passes\"", "\"draft_tokens\"", "\"accepted_tokens\"",
                            "\"mean_accepted_length\"", "\"acceptance_per_position\"",
                            "\"draft_seconds\"", "\"verify_seconds\"", "\"generated_tokens\": 200"}) {
      EXPECT_THAT(stats, HasSubstr(key)) << how;
    }
  }
  // Sampling with a draft model runs too (its exactness is tested statistically in common/spec).
  Result s = RunTool("generate --model " + Model() + " --max-tokens 50 --temperature 1 --seed 5 "
                     "--draft-model " + draft);
  EXPECT_EQ(s.exit_code, 0) << s.err;
}

TEST(ToolTest, BadSpeculativeFlagsGiveClearErrors) {
  Result r = RunTool("generate --model " + Model() + " --draft ngram:x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--draft must be early-exit:K or ngram:N"));
  r = RunTool("generate --model " + Model() + " --draft early-exit:5");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("fewer than the target's 5 layers"));
  r = RunTool("generate --model " + Model() + " --draft-model " +
              testing::ModelPath("llama-2-tiny-random.gguf"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("vocabulary"));
  r = RunTool("generate --model " + Model() + " --draft ngram:2 --spec-tokens 100");
  EXPECT_EQ(r.exit_code, 2);
  r = RunTool("generate --model " + Model() + " --draft early-exit:2 --tree static:2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tree must be"));

}

TEST(ToolTest, BenchWritesJson) {
  std::string js = testing::TempDir() + "/bench.json";
  Result r = RunTool("bench --model " + Model() + " --json " + js + " --seconds 0.05");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string j = testing::ReadFileOrDie(js);
  for (const char* key : {"\"decode_tokens_per_second\"", "\"bandwidth_bound_tokens_per_second\"",
                          "\"memory_read_bandwidth_bytes_per_second\"", "\"forward_cost\"",
                          "\"positions\": 16", "\"prefill_tokens_per_second\""}) {
    EXPECT_THAT(j, HasSubstr(key));
  }
}

}  // namespace
}  // namespace tandem
