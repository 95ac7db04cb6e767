// The golden greedy texts of stories260K (recorded from upstream llama2.c; see
// ../shared/models/README.md) must come out of `tandem-model generate` byte for byte, from the
// llama2.c checkpoint and from llama.cpp's GGUF conversion of it.
#include <array>
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

// llama2.c `run stories260K.bin -z tok512.bin -t 0 -n 200` (no prompt).
constexpr char kGolden200[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to "
    "do.\"\n"
    "Lily didn't want to help her mom, so she";

// llama2.c `-t 0 -n 60 -i Zoo`: 3 prompt tokens after BOS, then 57 generated.
constexpr char kGoldenZoo[] =
    "Zoo was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but she didn't want to play with";

std::string RunTool(const std::string& args, int* exit_code) {
  std::string cmd = std::string(TANDEM_BIN_DIR) + "/tandem-model " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  *exit_code = pclose(p);
  return out;
}

struct GoldenCase {
  const char* model_args;
};

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, NoPrompt200Tokens) {
  int rc = -1;
  std::string out = RunTool(GetParam() + " --max-tokens 200 --temperature 0", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, std::string(kGolden200) + "\n");
}

TEST_P(GoldenTest, ZooPrompt) {
  int rc = -1;
  std::string out = RunTool(GetParam() + " --prompt Zoo --max-tokens 57", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, std::string(kGoldenZoo) + "\n");
}

TEST_P(GoldenTest, ThreadsDoNotChangeTheText) {
  int rc = -1;
  std::string out = RunTool(GetParam() + " --max-tokens 200 --threads 2", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, std::string(kGolden200) + "\n");
}

INSTANTIATE_TEST_SUITE_P(
    Files, GoldenTest,
    ::testing::Values("generate --model " + testing::ModelPath("stories260K.bin") + " --tokenizer " +
                          testing::ModelPath("tok512.bin"),
                      // The tokenizer is found beside the checkpoint (tok512.bin).
                      "generate --model " + testing::ModelPath("stories260K.bin"),
                      "generate --model " + testing::ModelPath("stories260K.gguf")));

}  // namespace
}  // namespace tandem
