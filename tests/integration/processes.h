// The binaries as separate processes, for the integration tests: a tandem-verifier started on a
// free port (and drained or killed), the integers of an edge's stats JSON, and scrapes of a
// verifier's /metrics.
#ifndef TANDEM_TESTS_INTEGRATION_PROCESSES_H_
#define TANDEM_TESTS_INTEGRATION_PROCESSES_H_

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/cloud/http_get.h"
#include "tests/test_util.h"

namespace tandem::testing {

inline const std::string kVerifier = std::string(TANDEM_BIN_DIR) + "/tandem-verifier";
inline const std::string kEdge = std::string(TANDEM_BIN_DIR) + "/tandem-edge";

// A running tandem-verifier; its stderr (the log) is `dir`/verifier.err. One per directory.
class VerifierProcess {
 public:
  VerifierProcess(std::string dir, std::vector<std::string> args)
      : dir_(std::move(dir)), args_(std::move(args)) {}
  ~VerifierProcess() { Kill(); }

  // Starts on `port` (0: a free one) and waits until it serves.
  bool Start(int port = 0) {
    const std::string port_file = dir_ + "/port";
    std::remove(port_file.c_str());
    std::vector<std::string> args = {kVerifier, "--listen", absl::StrCat("127.0.0.1:", port),
                                     "--port-file", port_file};
    args.insert(args.end(), args_.begin(), args_.end());
    pid_ = Spawn(args, dir_ + "/verifier.err", false).pid;
    for (int i = 0; i < 3000 && port_ == 0; ++i) {  // up to 30 s
      std::ifstream in(port_file);
      int p = 0;
      if (in >> p && p > 0) port_ = p;
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (port_ == 0) std::fprintf(stderr, "%s\n", log().c_str());
    return port_ > 0;
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGKILL, then the same command line on the same port.
  bool Restart() {
    const int port = port_;
    Kill();
    port_ = 0;
    return Start(port) && port_ == port;
  }
  // SIGTERM: the verifier drains (see cloud/verifier_main.cc); Wait collects its exit.
  void Terminate() {
    if (pid_ > 0) kill(pid_, SIGTERM);
  }
  // The exit code once it exits within `seconds` (-1: killed by a signal; -2: it did not, and was
  // killed).
  int Wait(int seconds) {
    const int code = WaitExit(pid_, seconds);
    pid_ = -1;
    return code;
  }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  // Line 2 of the port file: the metrics port (0 without --metrics-listen).
  int metrics_port() const {
    std::ifstream in(dir_ + "/port");
    int grpc = 0, metrics = 0;
    in >> grpc >> metrics;
    return metrics;
  }
  std::string log() const { return ReadFileOrDie(dir_ + "/verifier.err"); }

 private:
  std::string dir_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// The integer after "key": in the edge's stats JSON; -1 when absent.
inline int64_t JsonInt(const std::string& js, const std::string& key) {
  const std::string k = "\"" + key + "\": ";
  const size_t at = js.find(k);
  return at == std::string::npos ? -1 : std::stoll(js.substr(at + k.size()));
}

// One scrape of a verifier's metrics; empty on failure.
inline std::map<std::string, double> Scrape(int port) {
  HttpResponse r = HttpGet(port, "/metrics");
  if (r.status != 200) return {};
  return ParsePrometheusText(r.body);
}

// Polls the metrics until `done` holds (up to `seconds`); returns the last scrape.
inline std::map<std::string, double> ScrapeUntil(
    int port, double seconds, const std::function<bool(std::map<std::string, double>&)>& done) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::map<std::string, double> m;
  while (std::chrono::steady_clock::now() < end) {
    m = Scrape(port);
    if (!m.empty() && done(m)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return m;
}

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_INTEGRATION_PROCESSES_H_
