// tandem-linkem must itself be accurate: through the emulator, a ping-pong takes the configured
// RTT and a bulk transfer runs at the configured rate, each within 10%; a rate change on the
// schedule takes effect; outages hold traffic ("drop") or reset connections ("reset"); bad specs
// are clear errors. Measured over real loopback TCP sockets against an echo server.
#include "tools/linkem/linkem.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "common/util/clock.h"
#include "gtest/gtest.h"

namespace tandem::linkem {
namespace {

// A TCP server on 127.0.0.1 that echoes (or, with echo=false, only counts) what each connection
// sends. One thread per connection.
class TcpServer {
 public:
  explicit TcpServer(bool echo) : echo_(echo) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    listen(fd_, 16);
    socklen_t len = sizeof(sa);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        workers_.emplace_back([this, c] {
          char buf[65536];
          while (true) {
            ssize_t n = recv(c, buf, sizeof(buf), 0);
            if (n <= 0) break;
            received_ += n;
            if (echo_ && send(c, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
          }
          close(c);
        });
      }
    });
  }
  ~TcpServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
    for (auto& w : workers_) w.join();
  }
  int port() const { return port_; }
  int64_t received() const { return received_.load(); }

 private:
  bool echo_;
  int fd_ = -1, port_ = 0;
  std::atomic<int64_t> received_{0};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends n bytes and reads n echoed bytes back; returns false on error or EOF.
bool PingPong(int fd, size_t n) {
  std::string msg(n, 'x');
  if (send(fd, msg.data(), n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) return false;
  size_t got = 0;
  char buf[4096];
  while (got < n) {
    ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::unique_ptr<LinkEmulator> StartLink(int upstream_port, const LinkParams& link,
                                        std::vector<Outage> outages = {},
                                        std::vector<LinkChange> schedule = {}) {
  LinkemOptions o;
  o.upstream = "127.0.0.1:" + std::to_string(upstream_port);
  o.link = link;
  o.outages = std::move(outages);
  o.schedule = std::move(schedule);
  auto em = LinkEmulator::Start(o);
  EXPECT_TRUE(em.ok()) << em.status();
  return em.ok() ? std::move(*em) : nullptr;
}

TEST(LinkemTest, RoundTripTimeIsTheConfiguredRtt) {
  TcpServer echo(true);
  for (double rtt_ms : {20.0, 80.0}) {
    auto em = StartLink(echo.port(), {rtt_ms, 0, 0, 0});
    int fd = Connect(em->port());
    ASSERT_GE(fd, 0);
    std::vector<double> samples;
    for (int i = 0; i < 15; ++i) {
      const double t0 = MonotonicSeconds();
      ASSERT_TRUE(PingPong(fd, 100));
      samples.push_back((MonotonicSeconds() - t0) * 1e3);
    }
    close(fd);
    const double median = Median(samples);
    ::testing::Test::RecordProperty("rtt_" + std::to_string(static_cast<int>(rtt_ms)) + "ms_measured_ms",
                                    std::to_string(median));
    EXPECT_GE(median, rtt_ms) << "never early";
    EXPECT_LE(median, rtt_ms * 1.10) << "rtt " << rtt_ms << " ms measured " << median << " ms";
  }
}

// Time for `bytes` sent one way to reach the server through the emulator.
double TransferSeconds(LinkEmulator* em, TcpServer* sink, int64_t bytes) {
  int fd = Connect(em->port());
  EXPECT_GE(fd, 0);
  const int64_t before = sink->received();
  const double t0 = MonotonicSeconds();
  std::thread sender([fd, bytes] {
    std::string chunk(16384, 'y');
    for (int64_t sent = 0; sent < bytes;) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(bytes - sent, chunk.size()));
      ssize_t w = send(fd, chunk.data(), n, MSG_NOSIGNAL);
      if (w <= 0) return;
      sent += w;
    }
  });
  while (sink->received() - before < bytes && MonotonicSeconds() - t0 < 30) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const double elapsed = MonotonicSeconds() - t0;
  sender.join();
  close(fd);
  return elapsed;
}

TEST(LinkemTest, BulkTransferRunsAtTheConfiguredRate) {
  TcpServer sink(false);
  const double kbps = 4000;          // 500 kB/s
  const int64_t bytes = 500 * 1000;  // 1.0 s at that rate
  auto em = StartLink(sink.port(), {10.0, kbps, 0, 0});
  const double seconds = TransferSeconds(em.get(), &sink, bytes) - 0.005;  // minus one-way delay
  const double measured_kbps = bytes * 8.0 / seconds / 1000.0;
  ::testing::Test::RecordProperty("measured_kbps", std::to_string(measured_kbps));
  EXPECT_GE(measured_kbps, kbps * 0.90) << seconds << " s";
  EXPECT_LE(measured_kbps, kbps * 1.10) << seconds << " s";
  EXPECT_EQ(em->bytes_up(), bytes);
}

TEST(LinkemTest, DownlinkRateAndScheduledChange) {
  TcpServer echo(true);
  // Up unlimited, down 2000 kbit/s; after 0.5 s the downlink drops tenfold.
  LinkParams base{0, 0, 2000, 0};
  auto schedule = ParseSchedule("0.5:down-kbps=200", base);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  auto em = StartLink(echo.port(), base, {}, *schedule);
  int fd = Connect(em->port());
  ASSERT_GE(fd, 0);
  double t0 = MonotonicSeconds();
  ASSERT_TRUE(PingPong(fd, 50000));  // 400 kbit at 2000 kbit/s: 0.2 s
  const double fast = MonotonicSeconds() - t0;
  EXPECT_GE(fast, 0.2);
  EXPECT_LE(fast, 0.2 * 1.10);
  while (MonotonicSeconds() - t0 < 0.6) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  t0 = MonotonicSeconds();
  ASSERT_TRUE(PingPong(fd, 10000));  // 80 kbit at 200 kbit/s: 0.4 s
  const double slow = MonotonicSeconds() - t0;
  EXPECT_GE(slow, 0.4);
  EXPECT_LE(slow, 0.4 * 1.10);
  close(fd);
}

TEST(LinkemTest, DropOutageHoldsTrafficThenDeliversIt) {
  TcpServer echo(true);
  auto outages = ParseOutages("0.3+0.5:drop");
  ASSERT_TRUE(outages.ok());
  auto em = StartLink(echo.port(), {2, 0, 0, 0}, *outages);
  int fd = Connect(em->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(PingPong(fd, 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // inside the outage
  const double t0 = MonotonicSeconds();
  ASSERT_TRUE(PingPong(fd, 10)) << "data is held, not lost";
  const double held = MonotonicSeconds() - t0;
  EXPECT_GE(held, 0.3) << "delivered during the outage";
  close(fd);
}

TEST(LinkemTest, ResetOutageResetsConnectionsAndRefusesNewOnes) {
  TcpServer echo(true);
  auto outages = ParseOutages("0.2+0.4:reset");
  ASSERT_TRUE(outages.ok());
  auto em = StartLink(echo.port(), {0, 0, 0, 0}, *outages);
  int fd = Connect(em->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(PingPong(fd, 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(PingPong(fd, 10)) << "the connection was reset";
  close(fd);
  int during = Connect(em->port());
  if (during >= 0) {  // accepted by the kernel, then reset by the emulator
    EXPECT_FALSE(PingPong(during, 10));
    close(during);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // after the outage
  int after = Connect(em->port());
  ASSERT_GE(after, 0);
  EXPECT_TRUE(PingPong(after, 10));
  close(after);
  EXPECT_GE(em->resets(), 1);
}

TEST(LinkemTest, BadSpecsAreClearErrors) {
  EXPECT_FALSE(ParseOutages("3:drop").ok());
  EXPECT_FALSE(ParseOutages("3+1:explode").ok());
  EXPECT_FALSE(ParseOutages("x+1:drop").ok());
  EXPECT_FALSE(ParseOutages("-1+1:drop").ok());
  EXPECT_FALSE(ParseSchedule("5", {}).ok());
  EXPECT_FALSE(ParseSchedule("5:bogus=1", {}).ok());
  EXPECT_FALSE(ParseSchedule("5:up-kbps=nan", {}).ok());
  EXPECT_FALSE(ParseSchedule("5:up-kbps=1;2:up-kbps=3", {}).ok()) << "times must not decrease";
  auto s = ParseSchedule("1:up-kbps=100;2:rtt-ms=9", {40, 5, 6, 0});
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[1].params.up_kbps, 100);  // carried over
  EXPECT_EQ((*s)[1].params.rtt_ms, 9);
  EXPECT_EQ((*s)[1].params.down_kbps, 6);
  LinkemOptions o;
  o.upstream = "not-an-address";
  EXPECT_TRUE(absl::IsInvalidArgument(LinkEmulator::Start(o).status()));
  o.upstream = "127.0.0.1:99999";
  EXPECT_TRUE(absl::IsInvalidArgument(LinkEmulator::Start(o).status()));
}

}  // namespace
}  // namespace tandem::linkem
