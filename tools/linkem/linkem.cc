// The link emulator's relay loop (see linkem.h).
#include "tools/linkem/linkem.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <list>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/util/clock.h"

namespace tandem::linkem {
namespace {

constexpr size_t kPacketBytes = 1460;

absl::Status ParseHostPort(const std::string& s, uint32_t* addr, uint16_t* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(absl::StrCat("'", s, "' is not HOST:PORT"));
  std::string host = s.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  int p = 0;
  if (!absl::SimpleAtoi(s.substr(colon + 1), &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in '", s, "'"));
  }
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("'", host, "' is not a numeric IPv4 address"));
  }
  *addr = a.s_addr;
  *port = htons(static_cast<uint16_t>(p));
  return absl::OkStatus();
}

// Closes with RST instead of FIN.
void ResetClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

absl::StatusOr<double> ParseNumber(const std::string& s, const char* what) {
  double v = 0;
  if (!absl::SimpleAtod(s, &v) || !std::isfinite(v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", s, "' is not a number >= 0"));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::vector<Outage>> ParseOutages(const std::string& spec) {
  std::vector<Outage> out;
  if (spec.empty()) return out;
  for (const std::string& item : std::vector<std::string>(absl::StrSplit(spec, ','))) {
    std::vector<std::string> kind = absl::StrSplit(item, ':');
    std::vector<std::string> times = absl::StrSplit(kind[0], '+');
    if (kind.size() != 2 || times.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("outage '", item, "' is not START+DURATION:drop|reset"));
    }
    Outage o;
    auto start = ParseNumber(times[0], "outage start");
    if (!start.ok()) return start.status();
    auto duration = ParseNumber(times[1], "outage duration");
    if (!duration.ok()) return duration.status();
    o.start_s = *start;
    o.duration_s = *duration;
    if (kind[1] == "drop") {
      o.kind = OutageKind::kDrop;
    } else if (kind[1] == "reset") {
      o.kind = OutageKind::kReset;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("outage kind '", kind[1], "' is not drop or reset"));
    }
    out.push_back(o);
  }
  return out;
}

absl::StatusOr<std::vector<LinkChange>> ParseSchedule(const std::string& spec, const LinkParams& base) {
  std::vector<LinkChange> out;
  if (spec.empty()) return out;
  LinkParams current = base;
  double last_at = -1;
  for (const std::string& step : std::vector<std::string>(absl::StrSplit(spec, ';'))) {
    size_t colon = step.find(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("schedule step '", step, "' is not SECONDS:key=value,..."));
    }
    LinkChange c;
    auto at = ParseNumber(step.substr(0, colon), "schedule time");
    if (!at.ok()) return at.status();
    if (*at < last_at) return absl::InvalidArgumentError("schedule times must not decrease");
    last_at = *at;
    c.at_s = *at;
    for (const std::string& kv : std::vector<std::string>(absl::StrSplit(step.substr(colon + 1), ','))) {
      std::vector<std::string> p = absl::StrSplit(kv, '=');
      if (p.size() != 2) return absl::InvalidArgumentError(absl::StrCat("'", kv, "' is not key=value"));
      auto v = ParseNumber(p[1], p[0].c_str());
      if (!v.ok()) return v.status();
      if (p[0] == "rtt-ms") {
        current.rtt_ms = *v;
      } else if (p[0] == "up-kbps") {
        current.up_kbps = *v;
      } else if (p[0] == "down-kbps") {
        current.down_kbps = *v;
      } else if (p[0] == "jitter-ms") {
        current.jitter_ms = *v;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown link key '", p[0], "' (rtt-ms, up-kbps, down-kbps, jitter-ms)"));
      }
    }
    c.params = current;
    out.push_back(c);
  }
  return out;
}

struct LinkEmulator::Pipe {
  struct Packet {
    double deliver_at;
    std::string data;
    size_t offset = 0;
  };
  int src = -1, dst = -1;
  bool up = true;
  std::deque<Packet> queue;
  int64_t queued = 0;
  double last_departure = 0, last_delivery = 0;
  bool src_eof = false, dst_shut = false, dst_blocked = false;
};

struct LinkEmulator::Conn {
  int client = -1, upstream = -1;
  bool connecting = true;
  bool dead = false;
  Pipe up, down;
};

absl::StatusOr<std::unique_ptr<LinkEmulator>> LinkEmulator::Start(const LinkemOptions& options) {
  std::unique_ptr<LinkEmulator> em(new LinkEmulator(options));
  em->link_ = options.link;
  uint32_t addr = 0;
  uint16_t port = 0;
  if (absl::Status s = ParseHostPort(options.listen, &addr, &port); !s.ok()) return s;
  if (absl::Status s = ParseHostPort(options.upstream, &em->upstream_addr_, &em->upstream_port_); !s.ok()) {
    return s;
  }
  em->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(em->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = addr;
  sa.sin_port = port;
  if (bind(em->listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      listen(em->listen_fd_, 128) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen, ": ", strerror(errno)));
  }
  socklen_t len = sizeof(sa);
  getsockname(em->listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  em->port_ = ntohs(sa.sin_port);
  em->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  em->thread_ = std::thread([e = em.get()] { e->Loop(); });
  return em;
}

LinkEmulator::~LinkEmulator() { Stop(); }

void LinkEmulator::Stop() {
  if (stopped_) return;
  stopped_ = true;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
  }
  if (thread_.joinable()) thread_.join();
  close(wake_fd_);
  close(listen_fd_);
}

void LinkEmulator::SetLink(const LinkParams& params) {
  std::lock_guard<std::mutex> lock(mu_);
  link_ = params;
}

LinkParams LinkEmulator::link() const {
  std::lock_guard<std::mutex> lock(mu_);
  return link_;
}

void LinkEmulator::Loop() {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  // epoll data: nullptr = listener, &wake_fd_ = wake; else a tagged Conn pointer (bit 0: upstream).
  auto add = [&](int fd, uint64_t tag, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  add(listen_fd_, 0, EPOLLIN);
  add(wake_fd_, 1, EPOLLIN);
  std::list<Conn> conns;
  std::mt19937_64 rng(options_.seed);
  const double t0 = MonotonicSeconds();
  size_t next_change = 0;
  std::vector<bool> reset_done(options_.outages.size(), false);
  std::vector<char> buf(64 << 10);

  auto kill_conn = [&](Conn& c) {
    if (c.dead) return;
    c.dead = true;
    ResetClose(c.client);
    ResetClose(c.upstream);
    resets_++;
  };

  while (true) {
    const double now = MonotonicSeconds();
    const double t = now - t0;
    while (next_change < options_.schedule.size() && options_.schedule[next_change].at_s <= t) {
      SetLink(options_.schedule[next_change++].params);
    }
    bool drop = false, reset = false;
    double next_boundary = next_change < options_.schedule.size()
                               ? options_.schedule[next_change].at_s
                               : INFINITY;
    for (size_t i = 0; i < options_.outages.size(); ++i) {
      const Outage& o = options_.outages[i];
      const double end = o.start_s + o.duration_s;
      if (t >= o.start_s && t < end) {
        (o.kind == OutageKind::kDrop ? drop : reset) = true;
        if (o.kind == OutageKind::kReset && !reset_done[i]) {
          reset_done[i] = true;
          for (Conn& c : conns) kill_conn(c);
        }
        next_boundary = std::min(next_boundary, end);
      } else if (t < o.start_s) {
        next_boundary = std::min(next_boundary, o.start_s);
      }
    }

    // Deliver what is due.
    double next_due = INFINITY;
    for (Conn& c : conns) {
      if (c.dead || c.connecting) continue;
      for (Pipe* p : {&c.up, &c.down}) {
        while (!drop && !p->queue.empty() && p->queue.front().deliver_at <= now) {
          Pipe::Packet& pk = p->queue.front();
          ssize_t n = send(p->dst, pk.data.data() + pk.offset, pk.data.size() - pk.offset, MSG_NOSIGNAL);
          if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
              p->dst_blocked = true;
            } else {
              kill_conn(c);
            }
            break;
          }
          p->dst_blocked = false;
          if (p->up) {
            bytes_up_ += n;
          } else {
            bytes_down_ += n;
          }
          pk.offset += static_cast<size_t>(n);
          p->queued -= n;
          if (pk.offset == pk.data.size()) p->queue.pop_front();
        }
        if (c.dead) break;
        if (p->queue.empty() && p->src_eof && !p->dst_shut) {
          shutdown(p->dst, SHUT_WR);
          p->dst_shut = true;
        }
        if (!p->queue.empty() && !p->dst_blocked) next_due = std::min(next_due, p->queue.front().deliver_at);
      }
    }
    // Drop finished connections; set each socket's interest.
    for (auto it = conns.begin(); it != conns.end();) {
      Conn& c = *it;
      if (!c.dead && c.up.dst_shut && c.down.dst_shut) {
        close(c.client);
        close(c.upstream);
        c.dead = true;
      }
      if (c.dead) {  // closing removes the fds from epoll
        it = conns.erase(it);
        continue;
      }
      auto interest = [&](int fd, Pipe& reading, Pipe& writing, uint64_t tag) {
        uint32_t ev = 0;
        if (!drop && !reading.src_eof && reading.queued < options_.max_queue_bytes) ev |= EPOLLIN;
        if (writing.dst_blocked) ev |= EPOLLOUT;
        epoll_event e{};
        e.events = ev;
        e.data.u64 = tag;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
      };
      const uint64_t tag = reinterpret_cast<uint64_t>(&c);
      if (c.connecting) {
        epoll_event e{};
        e.events = EPOLLOUT;
        e.data.u64 = tag | 2;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.upstream, &e);
        e.events = 0;
        e.data.u64 = tag;
        epoll_ctl(ep, EPOLL_CTL_MOD, c.client, &e);
      } else {
        interest(c.client, c.up, c.down, tag);
        interest(c.upstream, c.down, c.up, tag | 2);
      }
      ++it;
    }
    // The listener: during a drop outage, connections wait in the kernel's backlog.
    {
      epoll_event e{};
      e.events = drop ? 0u : static_cast<uint32_t>(EPOLLIN);
      e.data.u64 = 0;
      epoll_ctl(ep, EPOLL_CTL_MOD, listen_fd_, &e);
    }

    double wake_at = std::min(drop ? INFINITY : next_due, t0 + next_boundary);
    timespec ts{};
    timespec* timeout = nullptr;
    if (std::isfinite(wake_at)) {
      double wait = std::max(0.0, wake_at - MonotonicSeconds());
      ts.tv_sec = static_cast<time_t>(wait);
      ts.tv_nsec = static_cast<long>((wait - static_cast<double>(ts.tv_sec)) * 1e9);
      timeout = &ts;
    }
    epoll_event events[64];
    int n = epoll_pwait2(ep, events, 64, timeout, nullptr);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == 1) {  // Stop()
        for (Conn& c : conns) {
          if (!c.dead) {
            close(c.client);
            close(c.upstream);
          }
        }
        close(ep);
        return;
      }
      if (tag == 0) {
        while (true) {
          int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          if (reset) {
            ResetClose(fd);
            resets_++;
            continue;
          }
          int up = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          sockaddr_in sa{};
          sa.sin_family = AF_INET;
          sa.sin_addr.s_addr = upstream_addr_;
          sa.sin_port = upstream_port_;
          int rc = connect(up, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
          if (rc != 0 && errno != EINPROGRESS) {
            ResetClose(fd);
            close(up);
            continue;
          }
          conns.emplace_back();
          Conn& c = conns.back();
          c.client = fd;
          c.upstream = up;
          c.up.src = fd;
          c.up.dst = up;
          c.up.up = true;
          c.down.src = up;
          c.down.dst = fd;
          c.down.up = false;
          connections_++;
          const uint64_t ctag = reinterpret_cast<uint64_t>(&c);
          add(fd, ctag, 0);
          add(up, ctag | 2, EPOLLOUT);
        }
        continue;
      }
      Conn& c = *reinterpret_cast<Conn*>(tag & ~uint64_t{3});
      if (c.dead) continue;
      const bool is_upstream = (tag & 2) != 0;
      if (c.connecting) {
        if (!is_upstream) continue;
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c.upstream, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          kill_conn(c);
          continue;
        }
        c.connecting = false;
        continue;
      }
      Pipe& reading = is_upstream ? c.down : c.up;
      Pipe& writing = is_upstream ? c.up : c.down;
      if (events[i].events & EPOLLOUT) writing.dst_blocked = false;
      if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !reading.src_eof && !drop) {
        ssize_t got = recv(reading.src, buf.data(), buf.size(), 0);
        if (got == 0) {
          reading.src_eof = true;
        } else if (got < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK) kill_conn(c);
        } else {
          const LinkParams lp = link();
          const double kbps = reading.up ? lp.up_kbps : lp.down_kbps;
          const double delay = lp.rtt_ms * 0.5e-3;
          const double at = MonotonicSeconds();
          std::uniform_real_distribution<double> jitter(0.0, lp.jitter_ms * 1e-3);
          for (ssize_t off = 0; off < got; off += kPacketBytes) {
            const size_t len = std::min<size_t>(kPacketBytes, static_cast<size_t>(got - off));
            double departure = at;
            if (kbps > 0) {
              departure = std::max(at, reading.last_departure) + len * 8.0 / (kbps * 1000.0);
            }
            reading.last_departure = departure;
            double deliver = departure + delay + (lp.jitter_ms > 0 ? jitter(rng) : 0.0);
            deliver = std::max(deliver, reading.last_delivery);
            reading.last_delivery = deliver;
            reading.queue.push_back({deliver, std::string(buf.data() + off, len), 0});
            reading.queued += static_cast<int64_t>(len);
          }
        }
      }
    }
  }
}

}  // namespace tandem::linkem
