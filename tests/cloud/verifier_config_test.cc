// tandem-verifier's configuration: the committed example loads, flags override it, and every kind
// of mistake (unknown key, wrong type, out of range, bad YAML, missing pieces) is a clear
// InvalidArgument that names the file and line.
#include "cloud/verifier_config.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using ::testing::HasSubstr;

const std::string kExample = std::string(TANDEM_SOURCE_DIR) + "/configs/verifier.yaml";

TEST(VerifierConfigTest, TheExampleLoads) {
  absl::StatusOr<VerifierConfig> c = LoadVerifierConfigFile(kExample);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->name, "stories260K");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(c->threads, 1);
  EXPECT_EQ(c->grace_s, 10.0);
  EXPECT_EQ(c->drain_handback_delay_s, 1.0);
  EXPECT_EQ(c->limits.max_sessions, 64);
  EXPECT_EQ(c->limits.max_sessions_per_tenant, 16);
  EXPECT_EQ(c->limits.max_draft_tokens, 16);
  EXPECT_EQ(c->limits.max_tree_nodes, 64);
  EXPECT_EQ(c->limits.max_message_bytes, 4194304);
  EXPECT_EQ(c->limits.idle_ttl_s, 60.0);
  EXPECT_EQ(c->limits.QuotaFor("acme"), 32);
  EXPECT_EQ(c->limits.QuotaFor("suspended-co"), 0);
  EXPECT_EQ(c->limits.QuotaFor("anyone-else"), 16);
  EXPECT_TRUE(c->tls_cert.empty());
  EXPECT_TRUE(c->auth_tokens_file.empty());
  // Relative paths are anchored at the file's directory: they name the shared model files.
  EXPECT_TRUE(std::filesystem::equivalent(c->model, testing::ModelPath("stories260K.bin"))) << c->model;
  EXPECT_TRUE(std::filesystem::equivalent(c->tokenizer, testing::ModelPath("tok512.bin")));
  EXPECT_TRUE(ValidateVerifierConfig(*c).ok());
}

TEST(VerifierConfigTest, FlagsOverrideTheFile) {
  absl::StatusOr<VerifierConfig> c = VerifierConfigFromArgs(
      {"--config", kExample, "--max-sessions", "8", "--listen=127.0.0.1:0", "--idle-ttl-s", "2.5",
       "--tls-cert", "c.pem", "--tls-key", "k.pem", "--metrics-listen", "", "--auth-tokens-file",
       "tokens", "--drain-handback-delay-s", "0.25"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->limits.max_sessions, 8);
  EXPECT_EQ(c->limits.max_sessions_per_tenant, 16);  // from the file
  EXPECT_EQ(c->listen, "127.0.0.1:0");
  EXPECT_EQ(c->limits.idle_ttl_s, 2.5);
  EXPECT_EQ(c->tls_cert, "c.pem");  // flag paths stay as given
  EXPECT_EQ(c->metrics_listen, "");
  EXPECT_EQ(c->auth_tokens_file, "tokens");
  EXPECT_EQ(c->limits.QuotaFor("acme"), 32);
  EXPECT_EQ(c->drain_handback_delay_s, 0.25);
}

TEST(VerifierConfigTest, BatchingAndKvBudget) {
  absl::StatusOr<VerifierConfig> file = LoadVerifierConfigFile(kExample);
  ASSERT_TRUE(file.ok()) << file.status();
  BatchingOptions b = file->Batching();
  EXPECT_TRUE(b.enabled);
  EXPECT_EQ(b.max_batch_tokens, 512);
  EXPECT_EQ(b.window_s, 0.001);
  EXPECT_EQ(b.prefill_chunk, 128);
  EXPECT_EQ(file->Limits().kv_budget_bytes, 0u);
  EXPECT_EQ(file->Limits().max_queue_delay_s, 2.0);

  absl::StatusOr<VerifierConfig> c = VerifierConfigFromArgs(
      {"--model", "m.gguf", "--batching", "off", "--max-batch-tokens", "64", "--batch-window-ms",
       "2.5", "--prefill-chunk", "100", "--kv-budget-mb", "300", "--max-queue-delay-s", "0"});
  ASSERT_TRUE(c.ok()) << c.status();
  b = c->Batching();
  EXPECT_FALSE(b.enabled);
  EXPECT_EQ(b.max_batch_tokens, 64);
  EXPECT_EQ(b.window_s, 0.0025);
  EXPECT_EQ(b.prefill_chunk, 64);  // never above the batch
  EXPECT_EQ(c->Limits().kv_budget_bytes, uint64_t{300} << 20);
  EXPECT_EQ(c->Limits().max_queue_delay_s, 0.0);

  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--batching", "maybe"}, {"--max-batch-tokens", "0"},
        {"--batch-window-ms", "-1"}, {"--kv-budget-mb", "-5"}, {"--prefill-chunk", "x"}}) {
    std::vector<std::string> args = {"--model", "m.gguf"};
    args.insert(args.end(), bad.begin(), bad.end());
    absl::StatusOr<VerifierConfig> r = VerifierConfigFromArgs(args);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad[0] << " " << bad[1];
    EXPECT_THAT(r.status().message(), HasSubstr(bad[0] == "--batching" ? "batching" : bad[0].substr(2)))
        << r.status();
  }
  absl::StatusOr<VerifierConfig> y =
      ParseVerifierConfigYaml("model: m\nbatching:\n  window_ms: 5000\n", "v.yaml", "");
  EXPECT_THAT(y.status().message(), HasSubstr("v.yaml:3: 'batching.window_ms' must be in"));
  y = ParseVerifierConfigYaml("model: m\nbatching:\n  size: 5\n", "v.yaml", "");
  EXPECT_THAT(y.status().message(), HasSubstr("unknown key 'batching.size'"));
}

TEST(VerifierConfigTest, DefaultsWithoutAFile) {
  absl::StatusOr<VerifierConfig> c = VerifierConfigFromArgs({"--model", "m.bin"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model, "m.bin");
  EXPECT_EQ(c->listen, "127.0.0.1:50051");
  EXPECT_EQ(c->limits.idle_ttl_s, 60.0);
  EXPECT_TRUE(c->metrics_listen.empty());
  EXPECT_TRUE(ParseVerifierConfigYaml("", "empty.yaml", "").ok());
}

TEST(VerifierConfigTest, MistakesAreClearErrors) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"model: m\nlisen: 1.2.3.4:5\n", "c.yaml:2: unknown key 'lisen'"},
      {"limits:\n  max_session: 3\n", "c.yaml:2: unknown key 'limits.max_session'"},
      {"tls:\n  certificate: x\n", "unknown key 'tls.certificate'"},
      {"threads: many\n", "c.yaml:1: 'threads' must be an integer, got 'many'"},
      {"threads: 2.5\n", "'threads' must be an integer"},
      {"threads: [1, 2]\n", "'threads' must be an integer"},
      {"threads: 0\n", "'threads' must be in [1, 256], got 0"},
      {"limits:\n  max_sessions: -1\n", "c.yaml:2: 'limits.max_sessions' must be in [1,"},
      {"limits:\n  max_draft_tokens: 99999999999999999999\n", "'limits.max_draft_tokens' must be an integer"},
      {"limits:\n  idle_ttl_s: soon\n", "'limits.idle_ttl_s' must be a number"},
      {"limits:\n  idle_ttl_s: 0\n", "'limits.idle_ttl_s' must be in [0.01,"},
      {"grace_s: .nan\n", "'grace_s' must be in [0,"},
      {"drain_handback_delay_s: -1\n", "'drain_handback_delay_s' must be in [0,"},
      {"limits: 5\n", "'limits' must be a mapping"},
      {"model: {a: 1}\n", "'model' must be a string"},
      {"tenants:\n  acme: 3\n", "c.yaml:2: tenant 'acme' must be a mapping"},
      {"tenants:\n  acme:\n    max_session: 3\n", "c.yaml:3: unknown key 'tenants.acme.max_session'"},
      {"tenants:\n  acme:\n    max_sessions: -2\n", "'tenants.acme.max_sessions' must be in [0,"},
      {"tenants: [a, b]\n", "'tenants' must map tenant names"},
      {"model: [unclosed\n", "c.yaml:2: not valid YAML"},
      {"- a\n- b\n", "must be a mapping of keys to values"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<VerifierConfig> got = ParseVerifierConfigYaml(c.yaml, "c.yaml", "/etc");
    ASSERT_FALSE(got.ok()) << c.yaml;
    EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.want)) << c.yaml;
  }
}

TEST(VerifierConfigTest, CommandLineMistakes) {
  auto error = [](const std::vector<std::string>& args) {
    absl::StatusOr<VerifierConfig> c = VerifierConfigFromArgs(args);
    EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << c.status();
    return std::string(c.status().message());
  };
  EXPECT_THAT(error({}), HasSubstr("--model FILE is required"));
  EXPECT_THAT(error({"--model", "m", "--max-sessions", "0"}), HasSubstr("--max-sessions"));
  EXPECT_THAT(error({"--model", "m", "--idle-ttl-s", "-1"}), HasSubstr("--idle-ttl-s"));
  EXPECT_THAT(error({"--model", "m", "--tls-cert", "c.pem"}), HasSubstr("--tls-cert and --tls-key"));
  EXPECT_THAT(error({"--model", "m", "--tls-client-ca", "ca.pem"}), HasSubstr("--tls-client-ca needs"));
  EXPECT_THAT(error({"--model", "m", "--log-level", "loud"}), HasSubstr("log level 'loud'"));
  EXPECT_THAT(error({"--model", "m", "--frobnicate", "1"}), HasSubstr("unknown flag --frobnicate"));
  EXPECT_THAT(error({"--config", "/nonexistent/v.yaml"}), HasSubstr("/nonexistent/v.yaml"));
  const std::string bad = testing::TempDir() + "/bad.yaml";
  std::ofstream(bad) << "model: m\nlimits:\n  max_tree_nodes: 5000\n";
  EXPECT_THAT(error({"--config", bad}), HasSubstr(bad + ":3: 'limits.max_tree_nodes' must be in [0, 4096]"));
}

}  // namespace
}  // namespace tandem::cloud
