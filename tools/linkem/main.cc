// tandem-linkem: emulates a network link between an edge and a verifier (see linkem.h).
//
//   tandem-linkem --listen 127.0.0.1:A --upstream 127.0.0.1:B [--rtt-ms 40] [--up-kbps 2000]
//       [--down-kbps 20000] [--jitter-ms 0] [--schedule "5:up-kbps=200;10:up-kbps=2000"]
//       [--outage "3+2:drop,8+1:reset"] [--seed S] [--port-file F]
//
// Rates are in kbit/s (0 = unlimited); --rtt-ms is split evenly between the two directions.
// Runs until SIGTERM/SIGINT, then prints the bytes relayed each way as one JSON line on stdout.
#include <csignal>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/util/flags.h"
#include "tools/linkem/linkem.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-linkem: error: %s\n", std::string(s.message()).c_str());
  return absl::IsInvalidArgument(s) ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = Flags::Parse(args, {"listen", "upstream", "rtt-ms", "up-kbps", "down-kbps",
                                   "jitter-ms", "schedule", "outage", "seed", "port-file"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("upstream")) return Fail(absl::InvalidArgumentError("--upstream HOST:PORT is required"));
  linkem::LinkemOptions o;
  o.listen = flags->String("listen", "127.0.0.1:0");
  o.upstream = flags->String("upstream");
  struct D {
    const char* name;
    double* out;
  };
  for (D d : {D{"rtt-ms", &o.link.rtt_ms}, D{"up-kbps", &o.link.up_kbps},
              D{"down-kbps", &o.link.down_kbps}, D{"jitter-ms", &o.link.jitter_ms}}) {
    absl::StatusOr<double> v = flags->Double(d.name, 0.0);
    if (!v.ok()) return Fail(v.status());
    if (!(*v >= 0) || *v > 1e9) return Fail(absl::InvalidArgumentError(absl::StrCat("--", d.name, " must be in [0, 1e9]")));
    *d.out = *v;
  }
  auto schedule = linkem::ParseSchedule(flags->String("schedule"), o.link);
  if (!schedule.ok()) return Fail(schedule.status());
  o.schedule = *schedule;
  auto outages = linkem::ParseOutages(flags->String("outage"));
  if (!outages.ok()) return Fail(outages.status());
  o.outages = *outages;
  auto seed = flags->Int("seed", 1, 0, INT64_MAX);
  if (!seed.ok()) return Fail(seed.status());
  o.seed = static_cast<uint64_t>(*seed);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto em = linkem::LinkEmulator::Start(o);
  if (!em.ok()) return Fail(em.status());
  std::fprintf(stderr, "tandem-linkem: %s -> %s on port %d (rtt %.1f ms, up %.0f kbit/s, down %.0f kbit/s)\n",
               o.listen.c_str(), o.upstream.c_str(), (*em)->port(), o.link.rtt_ms, o.link.up_kbps,
               o.link.down_kbps);
  if (flags->Has("port-file")) std::ofstream(flags->String("port-file")) << (*em)->port() << "\n";
  int sig = 0;
  sigwait(&signals, &sig);
  (*em)->Stop();
  std::printf("{\"bytes_up\": %lld, \"bytes_down\": %lld, \"connections\": %lld, \"resets\": %lld}\n",
              static_cast<long long>((*em)->bytes_up()), static_cast<long long>((*em)->bytes_down()),
              static_cast<long long>((*em)->connections()), static_cast<long long>((*em)->resets()));
  return 0;
}
