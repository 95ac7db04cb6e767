// tandem-edge and tandem-verifier as users run them, as separate processes on loopback:
// TLS with a bearer token works in auto (spec) and cloud modes and prints the golden text; a
// wrong token, a plaintext edge against the TLS verifier and a wrong CA exit non-zero with the
// gRPC code and print no local text; without a verifier auto prints the local model's text and
// strict spec fails after its retry deadline; a verifier killed with SIGKILL mid-generation and
// restarted on the same port does not change a strict spec run's text; speculation paying off is
// visible in the edge's stats and in the verifier's metrics scraped over HTTP; the session of an
// edge killed mid-generation (behind an emulated 300 ms link, so it is surely mid-way) is freed,
// as the metrics show.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/integration/processes.h"
#include "tests/test_util.h"
#include "tools/linkem/linkem.h"

namespace tandem {
namespace {

using testing::Child;
using testing::JsonInt;
using testing::kEdge;
using testing::ReadSome;
using testing::Spawn;
using testing::VerifierProcess;
using testing::WaitExit;
constexpr char kZooText[] =
    "Zoo was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but she didn't want to play with\n";

// Runs the edge to completion: its exit code, stdout and stderr.
struct EdgeRun {
  int code;
  std::string out, err;
};

EdgeRun RunEdge(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {kEdge, "generate"});
  const std::string err_file = dir + "/edge.err";
  Child c = Spawn(args, err_file, true);
  EdgeRun r;
  ReadSome(c, &r.out, std::string::npos, 120);
  close(c.out);
  r.code = WaitExit(c.pid, 60);
  r.err = testing::ReadFileOrDie(err_file);
  return r;
}

std::string Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

TEST(EdgeCliTest, TlsAndBearerTokens) {
  const std::string dir = testing::TempDir();
  testing::TestPki pki = testing::MintTestPki(dir);
  const std::string model = testing::ModelPath("stories260K.bin");
  VerifierProcess v(dir, {"--model", model, "--tls-cert", pki.server_cert, "--tls-key",
                          pki.server_key, "--auth-tokens-file",
                          Write(dir + "/tokens", "phone-app:s3cret\n")});
  ASSERT_TRUE(v.Start());
  const std::string good = Write(dir + "/good", "s3cret\n");
  const std::string stats = dir + "/stats.json";
  const std::vector<std::string> common = {"--verifier", v.target(), "--model", model,
                                           "--prompt", "Zoo", "--max-tokens", "57",
                                           "--stats-json", stats};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };

  // Default mode (auto: the scheduler picks among spec and cloud; this verifier decodes a token
  // in well under a millisecond on loopback, so cloud), TLS, the right token.
  EdgeRun r = RunEdge(dir, with({"--tls-ca", pki.ca, "--auth-token-file", good, "--draft",
                                 "early-exit:4", "--verbose"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kZooText);
  std::string js = testing::ReadFileOrDie(stats);
  EXPECT_TRUE(absl::StrContains(js, "\"mode\": \"auto\"")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"tokens_from_cloud\": 57")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"final_config\": \"cloud\"")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"tokens_local_fallback\": 0")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"rtt_mean_seconds\"")) << js;
  EXPECT_TRUE(absl::StrContains(r.err, "scheduler: start with")) << "--verbose explains the choice: " << r.err;

  // Auto restricted to spec: every token verified.
  r = RunEdge(dir, with({"--tls-ca", pki.ca, "--auth-token-file", good, "--draft",
                         "early-exit:4", "--allowed-modes", "spec"}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kZooText);
  js = testing::ReadFileOrDie(stats);
  EXPECT_TRUE(absl::StrContains(js, "\"tokens_verified\": 57")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"final_config\": \"spec g")) << js;

  // Cloud mode: the verifier decodes.
  r = RunEdge(dir, with({"--mode", "cloud", "--tls-ca", pki.ca, "--auth-token-file", good}));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kZooText);
  js = testing::ReadFileOrDie(stats);
  EXPECT_TRUE(absl::StrContains(js, "\"tokens_from_cloud\": 57")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"round_trips\": 1,")) << js;

  // Refusals: no local text (stdout is the prompt alone), the code on stderr, exit 1.
  const std::string wrong = Write(dir + "/wrong", "not-the-token");
  struct Case {
    const char* what;
    std::vector<std::string> flags;
    const char* expect;
  };
  for (const Case& c : {
           Case{"wrong token", {"--tls-ca", pki.ca, "--auth-token-file", wrong},
                "tandem-edge: error: UNAUTHENTICATED"},
           Case{"no token", {"--tls-ca", pki.ca}, "tandem-edge: error: UNAUTHENTICATED"},
           Case{"plaintext edge", {"--auth-token-file", good}, "tandem-edge: error: UNAVAILABLE"},
           Case{"wrong CA", {"--tls-ca", pki.rogue_ca, "--auth-token-file", good},
                "TLS handshake"},
       }) {
    for (const char* mode : {"auto", "spec", "cloud"}) {
      std::vector<std::string> flags = with(c.flags);
      flags.insert(flags.end(), {"--mode", mode, "--retry-deadline-s", "2"});
      r = RunEdge(dir, flags);
      EXPECT_EQ(r.code, 1) << c.what << " " << mode << ": " << r.err;
      EXPECT_EQ(r.out, "Zoo\n") << c.what << " " << mode;
      EXPECT_TRUE(absl::StrContains(r.err, c.expect)) << c.what << " " << mode << ": " << r.err;
      EXPECT_FALSE(absl::StrContains(r.err, "local model")) << c.what << " " << mode << ": " << r.err;
    }
  }

  // A token file that holds nothing is a flag error.
  r = RunEdge(dir, with({"--tls-ca", pki.ca, "--auth-token-file", Write(dir + "/empty", "\n")}));
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "is empty")) << r.err;
}

TEST(EdgeCliTest, WithoutAVerifier) {
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  // A port where nobody listens: a verifier's, after it was killed.
  VerifierProcess gone(dir, {"--model", model});
  ASSERT_TRUE(gone.Start());
  gone.Kill();
  const std::string stats = dir + "/stats.json";

  // auto: the local model (here the target itself, so the golden text), with a warning.
  EdgeRun r = RunEdge(dir, {"--verifier", gone.target(), "--model", model, "--prompt", "Zoo",
                            "--max-tokens", "57", "--stats-json", stats});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kZooText);
  EXPECT_TRUE(absl::StrContains(r.err, "warning: the verifier is unreachable")) << r.err;
  const std::string js = testing::ReadFileOrDie(stats);
  EXPECT_TRUE(absl::StrContains(js, "\"tokens_local_fallback\": 57")) << js;
  EXPECT_TRUE(absl::StrContains(js, "\"fallbacks\": 1")) << js;

  // Strict spec: retried for --retry-deadline-s, then UNAVAILABLE and exit 1.
  const auto start = std::chrono::steady_clock::now();
  r = RunEdge(dir, {"--mode", "spec", "--verifier", gone.target(), "--model", model, "--prompt",
                    "Zoo", "--max-tokens", "57", "--retry-deadline-s", "1"});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.out, "Zoo\n");
  EXPECT_TRUE(absl::StrContains(r.err, "tandem-edge: error: UNAVAILABLE")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "retry deadline")) << r.err;
  EXPECT_GE(took, 1.0);
}

TEST(EdgeCliTest, StrictSpecSurvivesAVerifierKilledAndRestartedOnTheSamePort) {
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  VerifierProcess v(dir, {"--model", model});
  ASSERT_TRUE(v.Start());
  const std::string stats = dir + "/stats.json";
  const std::vector<std::string> args = {
      kEdge, "generate", "--mode", "spec", "--verifier", v.target(), "--model", model,
      "--draft", "ngram:2", "--spec-tokens", "1", "--prompt", "Once upon a time",
      "--max-tokens", "400", "--retry-deadline-s", "60", "--stats-json", stats};

  Child c = Spawn(args, dir + "/edge1.err", true);
  std::string uninterrupted;
  ReadSome(c, &uninterrupted, std::string::npos, 300);
  close(c.out);
  ASSERT_EQ(WaitExit(c.pid, 60), 0) << testing::ReadFileOrDie(dir + "/edge1.err");
  ASSERT_GT(uninterrupted.size(), 400u);

  // The edge is frozen (SIGSTOP) once some text is out, so the verifier dies (SIGKILL) in the
  // middle of its generation whatever the machine's speed; a new verifier starts on the same
  // port; the edge goes on (SIGCONT). Should the edge have finished before the freeze, try again.
  bool interrupted = false;
  for (int attempt = 0; attempt < 3 && !interrupted; ++attempt) {
    c = Spawn(args, dir + "/edge2.err", true);
    std::string text;
    ReadSome(c, &text, 30, 300);
    ASSERT_GE(text.size(), 30u) << testing::ReadFileOrDie(dir + "/edge2.err");
    kill(c.pid, SIGSTOP);
    int status = 0;
    ASSERT_EQ(waitpid(c.pid, &status, WUNTRACED), c.pid);
    interrupted = WIFSTOPPED(status);
    if (interrupted) {
      ASSERT_TRUE(v.Restart());
    }
    kill(c.pid, SIGCONT);
    ReadSome(c, &text, std::string::npos, 300);
    close(c.out);
    const std::string err = testing::ReadFileOrDie(dir + "/edge2.err");
    if (interrupted) {
      ASSERT_EQ(WaitExit(c.pid, 60), 0) << err;
    } else {
      ASSERT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << err;
    }
    EXPECT_EQ(text, uninterrupted);
    if (!interrupted) continue;
    const std::string js = testing::ReadFileOrDie(stats);
    EXPECT_GE(JsonInt(js, "reconnects"), 1) << js << err;
    EXPECT_GT(JsonInt(js, "generated_tokens"), 100) << js;
    EXPECT_EQ(JsonInt(js, "tokens_verified"), JsonInt(js, "generated_tokens")) << js;
    EXPECT_TRUE(absl::StrContains(err, "retrying")) << err;
  }
  EXPECT_TRUE(interrupted) << "the edge finished before it could be interrupted, three times";
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

using testing::Child;
using testing::kEdge;
using testing::JsonInt;
using testing::ScrapeUntil;
using testing::Spawn;
using testing::VerifierProcess;

TEST(EdgeCliTest, SpeculationPaysInEdgeStatsAndScrapedMetrics) {
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  VerifierProcess v(dir, {"--model", model, "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(v.Start());
  const int mport = v.metrics_port();
  ASSERT_GT(mport, 0);
  const std::string stats = dir + "/stats.json";
  EdgeRun r = RunEdge(dir, {"--verifier", v.target(), "--model", model, "--mode", "spec",
                            "--draft", "early-exit:4", "--prompt", "Zoo", "--max-tokens", "57",
                            "--stats-json", stats});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, kZooText);
  const std::string js = testing::ReadFileOrDie(stats);
  const int64_t passes = JsonInt(js, "target_passes");
  EXPECT_GT(passes, 0);
  EXPECT_LT(passes, 57) << "fewer target passes than tokens";
  auto m = ScrapeUntil(mport, 10, [](auto& m) {
    return m[testing::SeriesKey("tandem_sessions_total", {{"outcome", "ok"}})] >= 1;
  });
  EXPECT_EQ(m["tandem_verify_passes_total"], passes);
  EXPECT_LT(m["tandem_verify_passes_total"], 57);
  EXPECT_EQ(m["tandem_spec_decode_num_draft_tokens_total"], JsonInt(js, "draft_tokens"));
  EXPECT_EQ(m["tandem_spec_decode_num_accepted_tokens_total"], JsonInt(js, "accepted_tokens"));
  EXPECT_EQ(m["tandem_sessions_active"], 0);
  EXPECT_GT(m[testing::SeriesKey("tandem_bytes_total", {{"direction", "up"}, {"kind", "draft"}})], 0);
  EXPECT_GT(m[testing::SeriesKey("tandem_bytes_total", {{"direction", "down"}, {"kind", "verdict"}})], 0);
}

TEST(EdgeCliTest, SplitModeIsExactForEverySplitLayer) {
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  VerifierProcess v(dir, {"--model", model});
  ASSERT_TRUE(v.Start());
  for (int k = 1; k < 5; ++k) {
    const std::string stats = dir + "/split.json";
    EdgeRun r = RunEdge(dir, {"--verifier", v.target(), "--model", model, "--mode", "split",
                              "--split-layer", std::to_string(k), "--draft", "early-exit:4",
                              "--prompt", "Zoo", "--max-tokens", "57", "--stats-json", stats});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, kZooText) << "split at layer " << k;
    EXPECT_LT(JsonInt(testing::ReadFileOrDie(stats), "target_passes"), 57);
  }
  // --split-layer auto: the scheduler picks a layer within the policy; exact with f32; the
  // choice and the measurements land in the edge's metrics.
  const std::string metrics = dir + "/edge.prom";
  EdgeRun a = RunEdge(dir, {"--verifier", v.target(), "--model", model, "--mode", "split",
                            "--split-layer", "auto", "--min-split-layer", "2", "--max-edge-layers",
                            "3", "--draft", "early-exit:4", "--prompt", "Zoo", "--max-tokens",
                            "57", "--metrics-file", metrics, "--verbose"});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, kZooText);
  EXPECT_TRUE(absl::StrContains(a.err, "scheduler: start with split k")) << a.err;
  std::map<std::string, double> m = testing::ParsePrometheusText(testing::ReadFileOrDie(metrics));
  int configs = 0;
  for (const auto& [key, value] : m) {
    if (key.rfind("tandem_edge_config{", 0) != 0) continue;
    configs++;
    EXPECT_TRUE(absl::StrContains(key, "mode=\"split\"")) << key;
    EXPECT_TRUE(absl::StrContains(key, "split_layer=\"2\"") || absl::StrContains(key, "split_layer=\"3\"")) << key;
  }
  EXPECT_EQ(configs, 1);
  EXPECT_EQ(m[testing::SeriesKey("tandem_edge_tokens_total", {{"source", "verified"}})], 57);
  // Loopback: the round trip is within the verifier's own timing, so only its presence is checked.
  EXPECT_EQ(m.count(testing::SeriesKey("tandem_edge_link_rtt_seconds")), 1u);
  EXPECT_GT(m[testing::SeriesKey("tandem_edge_layer_seconds", {{"side", "edge"}, {"term", "per_position"}})], 0);
  EdgeRun bad = RunEdge(dir, {"--verifier", v.target(), "--model", model, "--mode", "split",
                              "--split-layer", "5", "--prompt", "Zoo"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "split layer 5 is outside [1, 5)")) << bad.err;
}

TEST(EdgeCliTest, SessionOfAKilledEdgeIsFreed) {
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  VerifierProcess v(dir, {"--model", model, "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(v.Start());
  const int mport = v.metrics_port();
  ASSERT_GT(mport, 0);
  // 300 ms per round trip: 200 tokens take well over ten seconds, so the edge is mid-generation.
  linkem::LinkemOptions lo;
  lo.upstream = v.target();
  lo.link.rtt_ms = 300;
  auto link = linkem::LinkEmulator::Start(lo);
  ASSERT_TRUE(link.ok()) << link.status();
  Child edge = Spawn({kEdge, "generate", "--verifier", absl::StrCat("127.0.0.1:", (*link)->port()),
                      "--model", model, "--mode", "spec", "--draft", "early-exit:4", "--prompt",
                      "Once upon a time", "--max-tokens", "200"},
                     dir + "/edge.err", true);
  std::string text;
  ReadSome(edge, &text, 20, 30);  // a few verified tokens have arrived
  auto m = ScrapeUntil(mport, 10, [](auto& m) { return m["tandem_sessions_active"] == 1; });
  ASSERT_EQ(m["tandem_sessions_active"], 1) << "the session is open mid-generation";
  EXPECT_GT(m["tandem_verify_passes_total"], 0);
  kill(edge.pid, SIGKILL);
  waitpid(edge.pid, nullptr, 0);
  close(edge.out);
  m = ScrapeUntil(mport, 30, [](auto& m) { return m["tandem_sessions_active"] == 0; });
  EXPECT_EQ(m["tandem_sessions_active"], 0) << "the abandoned session was freed";
  EXPECT_EQ(m[testing::SeriesKey("tandem_sessions_total", {{"outcome", "cancelled"}})], 1);
  EXPECT_EQ(m[testing::SeriesKey("tandem_sessions_total", {{"outcome", "ok"}})], 0);
}

}  // namespace
}  // namespace tandem
