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

#include "gtest/gtest.h"
#include "tandem/v1/verifier.grpc.pb.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

pid_t Spawn(const std::vector<std::string>& args, const std::string& err_file) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;  // did not exit in time
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

}  // namespace
}  // namespace tandem
