// tandem-verifier as users start it: a real process on loopback that answers GetInfo, serves a
// session, and on SIGTERM drains and exits 0. Bad flags exit 2 with a message.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/net/auth.h"
#include "common/net/tls.h"
#include "gtest/gtest.h"
#include "tandem/v1/verifier.grpc.pb.h"
#include "tests/cloud/http_get.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

using testing::WaitExit;

// Starts a process with stderr to `err_file`; its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& err_file) {
  return testing::Spawn(args, err_file).pid;
}

const std::string kBin = std::string(TANDEM_BIN_DIR) + "/tandem-verifier";

TEST(VerifierProcessTest, ServesAndDrainsOnSigterm) {
  std::string dir = testing::TempDir();
  pid_t pid = Spawn({kBin, "--model", testing::ModelPath("stories260K.bin"), "--listen",
                     "127.0.0.1:0", "--port-file", dir + "/port", "--grace-s", "2"},
                    dir + "/stderr");
  int port = 0;
  for (int i = 0; i < 1000 && port == 0; ++i) {
    std::ifstream in(dir + "/port");
    if (!(in >> port)) port = 0;
    if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(port, 0) << testing::ReadFileOrDie(dir + "/stderr");
  auto stub = v1::Verifier::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                        grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ServerInfo info;
  grpc::Status s = stub->GetInfo(&ctx, v1::GetInfoRequest(), &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.models(0).name(), "stories260K");
  EXPECT_EQ(info.models(0).vocab_size(), 512u);

  // One short greedy round trip.
  grpc::ClientContext sctx;
  auto stream = stub->Session(&sctx);
  v1::EdgeMessage m;
  m.mutable_open()->set_mode(v1::MODE_SPEC);
  ASSERT_TRUE(stream->Write(m));
  v1::VerifierMessage r;
  ASSERT_TRUE(stream->Read(&r));
  m.Clear();
  m.mutable_prompt()->add_token_ids(1);
  ASSERT_TRUE(stream->Write(m));
  m.Clear();
  m.mutable_draft()->set_round(1);
  m.mutable_draft()->set_committed_length(1);
  ASSERT_TRUE(stream->Write(m));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.verdict().next_token(), 403);  // "Once": the golden text's first token
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  // The edge CLI, a separate process, drafts with early exit and verifies here: golden text.
  const std::string edge = std::string(TANDEM_BIN_DIR) + "/tandem-edge generate --verifier 127.0.0.1:" +
                           std::to_string(port) + " --model " + testing::ModelPath("stories260K.bin") +
                           " --draft early-exit:4 --prompt Zoo --max-tokens 57 --stats-json " + dir +
                           "/edge.json 2>" + dir + "/edge.err";
  FILE* p = popen(edge.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, got);
  EXPECT_EQ(pclose(p), 0) << testing::ReadFileOrDie(dir + "/edge.err");
  EXPECT_EQ(text,
            "Zoo was a little girl named Lily. She loved to play outside in the park. One day, she "
            "saw a big, red ball. She wanted to play with it, but she didn't want to play with\n");
  const std::string stats = testing::ReadFileOrDie(dir + "/edge.json");
  EXPECT_NE(stats.find("\"round_trips\""), std::string::npos);
  EXPECT_NE(stats.find("\"generated_tokens\": 57"), std::string::npos);

  kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, 10), 0) << testing::ReadFileOrDie(dir + "/stderr");
  EXPECT_NE(testing::ReadFileOrDie(dir + "/stderr").find("draining"), std::string::npos);
}

TEST(VerifierProcessTest, EdgeWithoutAVerifierFailsClearly) {
  std::string dir = testing::TempDir();
  const std::string edge = std::string(TANDEM_BIN_DIR) +
                           "/tandem-edge generate --mode spec --verifier 127.0.0.1:1 --retry-deadline-s 1 "
                           "--timeout-s 2 --model " +
                           testing::ModelPath("stories260K.bin") + " --max-tokens 5 >/dev/null 2>" +
                           dir + "/err";
  int status = system(edge.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = testing::ReadFileOrDie(dir + "/err");
  EXPECT_TRUE(err.find("UNAVAILABLE") != std::string::npos ||
              err.find("DEADLINE_EXCEEDED") != std::string::npos) << err;
}

TEST(VerifierProcessTest, BadFlagsExitWithAMessage) {
  std::string dir = testing::TempDir();
  pid_t pid = Spawn({kBin, "--listen", "127.0.0.1:0"}, dir + "/err1");
  EXPECT_EQ(WaitExit(pid, 10), 2);
  EXPECT_NE(testing::ReadFileOrDie(dir + "/err1").find("--model FILE is required"), std::string::npos);
  pid = Spawn({kBin, "--model", "/nonexistent.gguf"}, dir + "/err2");
  EXPECT_EQ(WaitExit(pid, 10), 1);
  EXPECT_NE(testing::ReadFileOrDie(dir + "/err2").find("/nonexistent.gguf"), std::string::npos);
  pid = Spawn({kBin, "--model", testing::ModelPath("stories260K.bin"), "--max-sessions", "0"},
              dir + "/err3");
  EXPECT_EQ(WaitExit(pid, 10), 2);
}

// Reads the port file the verifier writes once serving: gRPC port, then metrics port.
bool ReadPorts(const std::string& path, int* grpc_port, int* metrics_port) {
  for (int i = 0; i < 3000; ++i) {
    std::ifstream in(path);
    if (in >> *grpc_port >> *metrics_port && *grpc_port > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(VerifierProcessTest, StartsFromAConfigFileWithTlsAuthAndMetrics) {
  const std::string dir = testing::TempDir();
  testing::TestPki pki = testing::MintTestPki(dir);
  std::ofstream(dir + "/tokens") << "# tenants\nacme:s3cret\n";
  // Relative paths are taken from the config file's directory.
  std::ofstream(dir + "/verifier.yaml")
      << "listen: 127.0.0.1:0\n"
      << "model: " << testing::ModelPath("stories260K.bin") << "\n"
      << "metrics_listen: 127.0.0.1:0\n"
      << "port_file: ports\n"
      << "tls:\n  cert: server.pem\n  key: server.key\n"
      << "auth:\n  tokens_file: tokens\n"
      << "limits:\n  max_sessions: 4\n  idle_ttl_s: 30\n"
      << "tenants:\n  acme:\n    max_sessions: 2\n";
  pid_t pid = Spawn({kBin, "--config", dir + "/verifier.yaml", "--name", "tiny-stories", "--grace-s", "2"},
                    dir + "/stderr");
  int port = 0, metrics_port = 0;
  ASSERT_TRUE(ReadPorts(dir + "/ports", &port, &metrics_port))
      << testing::ReadFileOrDie(dir + "/stderr");
  ASSERT_GT(metrics_port, 0);

  net::ClientTlsOptions tls;
  tls.ca_file = pki.ca;
  auto channel = net::MakeChannel("localhost:" + std::to_string(port), tls);
  ASSERT_TRUE(channel.ok()) << channel.status();
  auto stub = v1::Verifier::NewStub(*channel);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ServerInfo info;
    EXPECT_EQ(stub->GetInfo(&ctx, v1::GetInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata(net::kAuthorizationMetadata, net::BearerValue("s3cret"));
    v1::ServerInfo info;
    grpc::Status s = stub->GetInfo(&ctx, v1::GetInfoRequest(), &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.models(0).name(), "tiny-stories");  // the flag overrode the file
    EXPECT_EQ(info.limits().max_sessions(), 4u);
    EXPECT_EQ(info.limits().idle_ttl_seconds(), 30u);
  }
  // A cloud-mode session over TLS: "Once" continues as the golden text does.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ctx.AddMetadata(net::kAuthorizationMetadata, net::BearerValue("s3cret"));
    auto stream = stub->Session(&ctx);
    v1::EdgeMessage m;
    m.mutable_open()->set_mode(v1::MODE_CLOUD);
    m.mutable_open()->set_model("tiny-stories");
    m.mutable_open()->set_max_new_tokens(1);
    ASSERT_TRUE(stream->Write(m));
    v1::VerifierMessage r;
    ASSERT_TRUE(stream->Read(&r));
    m.Clear();
    m.mutable_prompt()->add_token_ids(1);
    ASSERT_TRUE(stream->Write(m));
    std::vector<int32_t> tokens;
    while (stream->Read(&r)) {
      for (int32_t t : r.tokens().token_ids()) tokens.push_back(t);
    }
    grpc::Status s = stream->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(tokens, std::vector<int32_t>{403});  // "Once"
  }
  // The metrics endpoint counts it once the session is freed.
  std::map<std::string, double> metrics;
  const std::string ok_series = testing::SeriesKey("tandem_sessions_total", {{"outcome", "ok"}});
  for (int i = 0; i < 3000 && metrics[ok_series] != 1; ++i) {
    testing::HttpResponse r = testing::HttpGet(metrics_port, "/metrics");
    ASSERT_EQ(r.status, 200);
    metrics = testing::ParsePrometheusText(r.body);
    if (metrics[ok_series] != 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(metrics[ok_series], 1);
  EXPECT_EQ(metrics[testing::SeriesKey("tandem_generated_tokens_total", {{"mode", "cloud"}})], 1);
  EXPECT_EQ(metrics[testing::SeriesKey("tandem_rejections_total", {{"reason", "unauthenticated"}})], 1);
  EXPECT_EQ(metrics["tandem_sessions_active"], 0);

  kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, 10), 0) << testing::ReadFileOrDie(dir + "/stderr");
  const std::string log = testing::ReadFileOrDie(dir + "/stderr");
  EXPECT_NE(log.find("tls on"), std::string::npos) << log;
  EXPECT_NE(log.find("metrics on port " + std::to_string(metrics_port)), std::string::npos) << log;
  EXPECT_NE(log.find("session s1 end: tenant=acme mode=cloud outcome=ok"), std::string::npos) << log;
  EXPECT_NE(log.find("draining"), std::string::npos);
}

TEST(VerifierProcessTest, BadConfigurationExitsTwoWithAMessage) {
  const std::string dir = testing::TempDir();
  auto run = [&](const std::vector<std::string>& args, const std::string& want) {
    std::vector<std::string> argv = {kBin};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_t pid = Spawn(argv, dir + "/err");
    EXPECT_EQ(WaitExit(pid, 10), 2) << want;
    const std::string err = testing::ReadFileOrDie(dir + "/err");
    EXPECT_NE(err.find(want), std::string::npos) << err;
  };
  std::ofstream(dir + "/unknown.yaml") << "model: m.bin\nlimits:\n  max_sesions: 3\n";
  run({"--config", dir + "/unknown.yaml"}, "unknown.yaml:3: unknown key 'limits.max_sesions'");
  std::ofstream(dir + "/type.yaml") << "threads: two\n";
  run({"--config", dir + "/type.yaml"}, "'threads' must be an integer, got 'two'");
  std::ofstream(dir + "/range.yaml") << "limits:\n  idle_ttl_s: -5\n";
  run({"--config", dir + "/range.yaml"}, "'limits.idle_ttl_s' must be in");
  run({"--config", dir + "/missing.yaml"}, "cannot read the config file");
  std::ofstream(dir + "/tokens") << "acme:a\nacme\n";
  run({"--model", testing::ModelPath("stories260K.bin"), "--auth-tokens-file", dir + "/tokens"},
      dir + "/tokens:2: expected 'tenant:token'");
  run({"--model", testing::ModelPath("stories260K.bin"), "--tls-cert", dir + "/nope.pem", "--tls-key",
       dir + "/nope.key"},
      "nope.pem");
  run({"--model", testing::ModelPath("stories260K.bin"), "--metrics-listen", "9464"},
      "is not HOST:PORT");
}

}  // namespace
}  // namespace tandem
