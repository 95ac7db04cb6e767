// tandem-linkem: a TCP proxy that emulates a network link for tests and benchmarks, because the
// kernel here has `tbf` but no `netem`. Each accepted connection is relayed to the upstream
// address through two directional pipes (up: client -> upstream, down: upstream -> client). Each
// pipe models a bottleneck of `kbps` with a one-way delay of rtt/2 plus uniform jitter in
// [0, jitter_ms], cut into 1460-byte packets:
//   departure = max(now, previous departure) + packet bits / rate
//   delivery  = max(departure + one-way delay + jitter, previous delivery)   (in order, like TCP)
// Outages either hold all traffic for a period ("drop": nothing moves, then everything resumes, as
// with packets lost and retransmitted) or reset every connection and refuse new ones by accepting
// and resetting them ("reset"). Link parameters can be changed while running (SetLink), or on a
// schedule.
// Thread-safety: Start/Stop from one thread; SetLink and the counters from any thread. The relay
// runs on one internal epoll thread.
#ifndef TANDEM_TOOLS_LINKEM_LINKEM_H_
#define TANDEM_TOOLS_LINKEM_LINKEM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::linkem {

struct LinkParams {
  double rtt_ms = 0;     // split evenly: rtt/2 each way
  double up_kbps = 0;    // client -> upstream; 0 = unlimited
  double down_kbps = 0;  // upstream -> client; 0 = unlimited
  double jitter_ms = 0;  // extra one-way delay, uniform in [0, jitter_ms], order kept
};

enum class OutageKind { kDrop, kReset };

struct Outage {
  double start_s = 0;  // from Start()
  double duration_s = 0;
  OutageKind kind = OutageKind::kDrop;
};

// A scheduled change of link parameters: at `at_s` seconds after Start(), `params` take effect.
struct LinkChange {
  double at_s = 0;
  LinkParams params;
};

struct LinkemOptions {
  std::string listen = "127.0.0.1:0";  // HOST:PORT, port 0 = any
  std::string upstream;                // HOST:PORT (numeric IPv4)
  LinkParams link;
  std::vector<LinkChange> schedule;
  std::vector<Outage> outages;
  uint64_t seed = 1;                     // jitter stream
  int64_t max_queue_bytes = 4 << 20;     // per pipe; reading stops when full (back-pressure)
};

// Parses "3+2:drop,8+1:reset" (start+duration seconds : kind).
absl::StatusOr<std::vector<Outage>> ParseOutages(const std::string& spec);
// Parses "5:up-kbps=200,rtt-ms=80;10:up-kbps=2000" (keys: rtt-ms, up-kbps, down-kbps, jitter-ms;
// keys not named keep their value from the previous step).
absl::StatusOr<std::vector<LinkChange>> ParseSchedule(const std::string& spec, const LinkParams& base);

class LinkEmulator {
 public:
  static absl::StatusOr<std::unique_ptr<LinkEmulator>> Start(const LinkemOptions& options);
  ~LinkEmulator();  // Stop()

  int port() const { return port_; }
  void SetLink(const LinkParams& params);
  LinkParams link() const;
  void Stop();

  int64_t bytes_up() const { return bytes_up_.load(); }
  int64_t bytes_down() const { return bytes_down_.load(); }
  int64_t connections() const { return connections_.load(); }
  int64_t resets() const { return resets_.load(); }

 private:
  struct Pipe;
  struct Conn;
  explicit LinkEmulator(const LinkemOptions& options) : options_(options) {}
  void Loop();

  LinkemOptions options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that stops the loop
  int port_ = 0;
  uint32_t upstream_addr_ = 0;  // network order
  uint16_t upstream_port_ = 0;  // network order
  mutable std::mutex mu_;
  LinkParams link_;  // GUARDED_BY(mu_)
  std::atomic<int64_t> bytes_up_{0}, bytes_down_{0}, connections_{0}, resets_{0};
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace tandem::linkem

#endif  // TANDEM_TOOLS_LINKEM_LINKEM_H_
