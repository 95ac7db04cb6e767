// The loopback fleet of deploy/: three tandem-verifier replicas behind HAProxy with
// deploy/haproxy/tandem.cfg (the file operators use; addresses from the environment), edges
// behind an emulated 20 ms link. An edge's successive sessions (same affinity key) stay on one
// replica. Nine edges at once (spec, cloud and auto) spread over all three replicas; one replica
// is drained (SIGTERM) while the edges are frozen mid-generation, so it surely holds sessions: it
// hands them back and exits 0, the edges resume on the other replicas by replaying their prefix,
// and every edge prints exactly the target's greedy text (the edge's --mode local output, the
// local model being the target).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/integration/processes.h"
#include "tests/test_util.h"
#include "tools/linkem/linkem.h"

namespace tandem {
namespace {

using testing::Child;
using testing::kEdge;
using testing::Scrape;
using testing::VerifierProcess;

constexpr int kReplicas = 3;
const std::string kConfig = std::string(TANDEM_SOURCE_DIR) + "/deploy/haproxy/tandem.cfg";

// The haproxy binary, or "" when it is not installed.
std::string FindHaproxy() {
  std::vector<std::string> dirs = {"/usr/sbin", "/usr/local/sbin", "/sbin"};
  if (const char* path = std::getenv("PATH")) {
    for (absl::string_view d : absl::StrSplit(path, ':')) dirs.emplace_back(d);
  }
  for (const std::string& d : dirs) {
    const std::string candidate = d + "/haproxy";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// A port that was free a moment ago (HAProxy's listeners take fixed ports).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// HAProxy in the foreground (-db) with the deploy config; its log (stdout and stderr) in `log`.
class HaproxyProcess {
 public:
  ~HaproxyProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      testing::WaitExit(pid_, 10);
    }
  }
  void Start(const std::string& binary, const std::vector<std::string>& env, const std::string& log) {
    log_ = log;
    const std::string command = absl::StrCat("exec env ", absl::StrJoin(env, " "), " ", binary,
                                             " -db -f ", kConfig, " >", log, " 2>&1");
    pid_ = testing::Spawn({"/bin/sh", "-c", command}, log + ".sh").pid;
  }
  std::string log() const { return testing::ReadFileOrDie(log_); }

 private:
  int pid_ = -1;
  std::string log_;
};

// Sessions a replica has taken: ended ones (every outcome) and open ones.
double SessionsSeen(const std::map<std::string, double>& m) {
  double n = 0;
  for (const auto& [key, value] : m) {
    if (absl::StartsWith(key, "tandem_sessions_total{") || key == "tandem_sessions_active") n += value;
  }
  return n;
}

double Active(const std::map<std::string, double>& m) {
  auto it = m.find("tandem_sessions_active");
  return it == m.end() ? 0 : it->second;
}

// Whether HAProxy's stats (CSV) show server `name` of the tandem_verifiers backend up.
bool ServerUp(const std::string& csv, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(csv, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ',');
    if (f.size() > 17 && f[0] == "tandem_verifiers" && f[1] == name) return f[17] == "UP";
  }
  return false;
}

// Appends what the child has written to its stdout so far, without waiting.
void ReadAvailable(const Child& c, std::string* text) {
  char buf[4096];
  pollfd p{c.out, POLLIN, 0};
  while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
    const ssize_t got = read(c.out, buf, sizeof(buf));
    if (got <= 0) return;
    text->append(buf, static_cast<size_t>(got));
  }
}

int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

struct EdgeSpec {
  std::vector<std::string> mode;  // --mode and its flags
  std::string prompt;
};

TEST(FleetTest, ThreeReplicasBehindHaproxyDrainOneMidRun) {
  const std::string haproxy = FindHaproxy();
  ASSERT_FALSE(haproxy.empty())
      << "haproxy is not installed: the fleet test needs it (bash tools/install_deps.sh)";
  const std::string dir = testing::TempDir();
  const std::string model = testing::ModelPath("stories260K.bin");
  const std::string tokenizer = testing::ModelPath("tok512.bin");

  // Three replicas, each with its metrics (and /healthz) listener.
  std::vector<std::unique_ptr<VerifierProcess>> replicas;
  std::vector<std::string> env;
  for (int i = 0; i < kReplicas; ++i) {
    const std::string rdir = absl::StrCat(dir, "/replica", i + 1);
    std::filesystem::create_directories(rdir);
    replicas.push_back(std::make_unique<VerifierProcess>(
        rdir, std::vector<std::string>{"--model", model, "--tokenizer", tokenizer,
                                       "--metrics-listen", "127.0.0.1:0"}));
    ASSERT_TRUE(replicas.back()->Start()) << "replica " << i + 1;
    ASSERT_GT(replicas.back()->metrics_port(), 0);
    env.push_back(absl::StrCat("TANDEM_VERIFIER_", i + 1, "=", replicas.back()->target()));
    env.push_back(absl::StrCat("TANDEM_VERIFIER_", i + 1, "_METRICS=127.0.0.1:",
                               replicas.back()->metrics_port()));
  }
  const int lb_port = FreePort(), stats_port = FreePort();
  ASSERT_GT(lb_port, 0);
  env.push_back(absl::StrCat("TANDEM_LB_LISTEN=127.0.0.1:", lb_port));
  env.push_back(absl::StrCat("TANDEM_LB_STATS_LISTEN=127.0.0.1:", stats_port));
  HaproxyProcess lb;
  lb.Start(haproxy, env, dir + "/haproxy.log");
  // Serving once its stats page lists the three replicas up.
  bool up = false;
  for (int i = 0; i < 3000 && !up; ++i) {  // up to 30 s
    const std::string csv = testing::HttpGet(stats_port, "/stats;csv").body;
    up = true;
    for (int r = 1; r <= kReplicas; ++r) up = up && ServerUp(csv, absl::StrCat("verifier", r));
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(up) << lb.log();
  const std::string lb_target = absl::StrCat("127.0.0.1:", lb_port);

  auto seen = [&] {
    std::vector<double> n;
    for (auto& r : replicas) n.push_back(SessionsSeen(Scrape(r->metrics_port())));
    return n;
  };
  const std::vector<std::string> common = {"--model", model, "--tokenizer", tokenizer,
                                           "--max-tokens", "400", "--retry-deadline-s", "30"};

  // Affinity: one key's successive sessions go to one replica.
  {
    const std::vector<double> before = seen();
    for (int i = 0; i < 3; ++i) {
      std::vector<std::string> args = {kEdge, "generate", "--verifier", lb_target, "--mode",
                                       "cloud", "--affinity-key", "fleet-test-affinity",
                                       "--prompt", "Zoo"};
      args.insert(args.end(), common.begin(), common.end());
      Child c = testing::Spawn(args, dir + "/affinity.err");
      ASSERT_EQ(testing::WaitExit(c.pid, 60), 0) << testing::ReadFileOrDie(dir + "/affinity.err");
    }
    std::vector<double> after;
    for (int i = 0; i < 3000; ++i) {  // the last session's end reaches the metrics
      after = seen();
      double added = 0;
      for (int r = 0; r < kReplicas; ++r) added += after[r] - before[r];
      if (added >= 3) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    int holding = 0;
    for (int r = 0; r < kReplicas; ++r) {
      if (after[r] - before[r] == 3) holding++;
      EXPECT_TRUE(after[r] == before[r] || after[r] - before[r] == 3)
          << "replica " << r + 1 << " took " << after[r] - before[r] << " of the key's 3 sessions";
    }
    EXPECT_EQ(holding, 1) << lb.log();
  }

  // The edges' references: the target alone, greedy (local mode: the edge model is the target).
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben", "The cat",
                                            "Tim had a red ball", "One day"};
  std::map<std::string, std::string> reference;
  for (const std::string& p : prompts) {
    std::vector<std::string> args = {kEdge, "generate", "--mode", "local", "--prompt", p};
    args.insert(args.end(), common.begin(), common.end());
    Child c = testing::Spawn(args, dir + "/local.err", true);
    testing::ReadSome(c, &reference[p], std::string::npos, 60);
    close(c.out);
    ASSERT_EQ(testing::WaitExit(c.pid, 60), 0) << testing::ReadFileOrDie(dir + "/local.err");
    ASSERT_GT(reference[p].size(), 200u) << p;
  }

  // Nine edges at once through a 20 ms link: spec takes seconds, cloud less.
  linkem::LinkemOptions lo;
  lo.upstream = lb_target;
  lo.link.rtt_ms = 20;
  auto link = linkem::LinkEmulator::Start(lo);
  ASSERT_TRUE(link.ok()) << link.status();
  const std::string via_link = absl::StrCat("127.0.0.1:", (*link)->port());
  const std::vector<EdgeSpec> edges = {
      {{"spec", "--draft", "early-exit:4"}, prompts[0]}, {{"cloud"}, prompts[1]},
      {{"spec", "--draft", "ngram:2"}, prompts[2]},      {{"spec", "--draft", "early-exit:4"}, prompts[3]},
      {{"cloud"}, prompts[4]},                           {{"auto", "--draft", "early-exit:4"}, prompts[0]},
      {{"spec", "--draft", "ngram:2"}, prompts[1]},      {{"cloud"}, prompts[2]},
      {{"spec", "--draft", "early-exit:4"}, prompts[4]},
  };
  const std::vector<double> before = seen();
  std::vector<Child> children;
  for (size_t i = 0; i < edges.size(); ++i) {
    std::vector<std::string> args = {kEdge, "generate", "--verifier", via_link, "--prompt",
                                     edges[i].prompt, "--stats-json",
                                     absl::StrCat(dir, "/edge", i, ".json"), "--mode"};
    args.insert(args.end(), edges[i].mode.begin(), edges[i].mode.end());
    args.insert(args.end(), common.begin(), common.end());
    children.push_back(testing::Spawn(args, absl::StrCat(dir, "/edge", i, ".err"), true));
  }

  // Once every edge has text (its session is up, or it is done) and every replica holds a
  // session, the edges are frozen (SIGSTOP): no session ends meanwhile.
  std::vector<std::string> outs(children.size());
  std::vector<std::map<std::string, double>> scraped(kReplicas);
  bool everywhere = false, started = false;
  for (int i = 0; i < 1200 && !(everywhere && started); ++i) {  // up to a minute
    started = true;
    for (size_t e = 0; e < children.size(); ++e) {
      ReadAvailable(children[e], &outs[e]);
      started = started && outs[e].size() > edges[e].prompt.size() + 1;
    }
    everywhere = true;
    for (int r = 0; r < kReplicas; ++r) {
      scraped[r] = Scrape(replicas[r]->metrics_port());
      everywhere = everywhere && Active(scraped[r]) >= 1;
    }
    if (!(everywhere && started)) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const Child& c : children) kill(c.pid, SIGSTOP);
  ASSERT_TRUE(started) << "not every edge got going";
  ASSERT_TRUE(everywhere) << "the sessions did not reach every replica: " << lb.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // in-flight messages land
  int drained = 0;
  for (int r = 0; r < kReplicas; ++r) {
    scraped[r] = Scrape(replicas[r]->metrics_port());
    EXPECT_GT(SessionsSeen(scraped[r]) - before[r], 0) << "replica " << r + 1 << " got no session";
    if (Active(scraped[r]) > Active(scraped[drained])) drained = r;
  }
  ASSERT_GE(Active(scraped[drained]), 1);

  // Drain the busiest replica: its health goes down, HAProxy takes it out, it hands its sessions
  // back after its hand-back delay, and exits 0 once they have ended. Then the edges go on.
  replicas[drained]->Terminate();
  const int drained_exit = replicas[drained]->Wait(60);
  for (const Child& c : children) kill(c.pid, SIGCONT);
  const std::string drained_log = replicas[drained]->log();
  EXPECT_EQ(drained_exit, 0) << drained_log;
  EXPECT_GE(Count(drained_log, "outcome=handed_back"), 1) << drained_log;
  EXPECT_TRUE(absl::StrContains(drained_log, "handing back")) << drained_log;

  int resumed = 0;
  for (size_t i = 0; i < children.size(); ++i) {
    std::string& out = outs[i];
    testing::ReadSome(children[i], &out, std::string::npos, 120);
    close(children[i].out);
    const int code = testing::WaitExit(children[i].pid, 60);
    const std::string err = testing::ReadFileOrDie(absl::StrCat(dir, "/edge", i, ".err"));
    SCOPED_TRACE(absl::StrCat("edge ", i, " (", absl::StrJoin(edges[i].mode, " "), ", '",
                              edges[i].prompt, "')"));
    EXPECT_EQ(code, 0) << err;
    EXPECT_EQ(out, reference[edges[i].prompt]) << err;
    // (An auto edge may have counted the frozen second as an outage and gone local for a while:
    // the same text here, its local model being the target. That a hand-back alone sends auto to
    // no local token is tests/edge/hand_back_test.cc's.)
    const std::string js = testing::ReadFileOrDie(absl::StrCat(dir, "/edge", i, ".json"));
    if (absl::StrContains(err, "handed the session back")) {
      resumed++;
      EXPECT_GE(testing::JsonInt(js, "reconnects"), 1) << js;
      EXPECT_TRUE(absl::StrContains(err, "prefix replayed")) << err;
    }
  }
  EXPECT_GE(resumed, 1) << "no edge resumed after the hand-back";
  EXPECT_LE(resumed, Count(drained_log, "outcome=handed_back"));
  EXPECT_TRUE(absl::StrContains(lb.log(), absl::StrCat("verifier", drained + 1, " is DOWN")))
      << lb.log();
}

}  // namespace
}  // namespace tandem
