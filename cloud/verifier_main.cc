// tandem-verifier: serves speculative verification and cloud decoding for edge sessions over gRPC.
//
//   tandem-verifier [--config verifier.yaml] [--model M] [--tokenizer T] [--name NAME]
//                   [--listen 127.0.0.1:50051] [--threads N] [--metrics-listen HOST:PORT]
//                   [--tls-cert F --tls-key F [--tls-client-ca F]] [--auth-tokens-file F]
//                   [--max-sessions N] [--max-sessions-per-tenant N] [--max-tokens-per-session N]
//                   [--max-draft-tokens N] [--max-tree-nodes N] [--max-message-bytes N]
//                   [--kv-budget-mb N] [--max-queue-delay-s S]
//                   [--batching on|off] [--max-batch-tokens N] [--batch-window-ms MS]
//                   [--prefill-chunk N]
//                   [--idle-ttl-s S] [--grace-s S] [--drain-handback-delay-s S] [--log-level L]
//                   [--port-file F] [--metrics-port-file F]
//
// The YAML file is read first and flags override it (schema: cloud/verifier_config.h, example:
// configs/verifier.yaml). Configuration errors exit 2 with a message; start-up failures (model,
// address in use) exit 1.
//
// Ports: with port 0 in --listen or --metrics-listen the system picks free ports. Once serving,
// --port-file gets the gRPC port on line 1 and the metrics port on line 2 (0 without metrics);
// --metrics-port-file gets the metrics port alone. Both are also in the start-up log line.
//
// Health for load balancers: GET /healthz on the metrics listener serves the gauge
// `tandem_serving` alone (1, then 0 once draining); /metrics has it too. The gRPC health service
// (grpc.health.v1) says the same.
//
// SIGTERM or SIGINT: health goes NOT_SERVING (tandem_serving 0) and the gRPC listener closes, so
// new sessions go elsewhere. After --drain-handback-delay-s (default 1; long enough for a load
// balancer's health check to notice) the running sessions are handed back: ended with
// UNAVAILABLE "verifier draining: resume on another replica", and their edges resume on another
// replica by replaying their prefix. The process exits 0 once no session is left, or when
// --grace-s has passed (the sessions still running are then cancelled).
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "cloud/verifier_config.h"
#include "cloud/verifier_service.h"
#include "common/net/auth.h"
#include "common/net/tls.h"
#include "common/obs/logging.h"
#include "common/obs/metrics.h"

namespace {

int Fail(const absl::Status& s, int code) {
  std::fprintf(stderr, "tandem-verifier: error: %s\n", std::string(s.message()).c_str());
  return code;
}

// Writes `text` to `path` through a temporary file, so readers never see half of it.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<cloud::VerifierConfig> config = cloud::VerifierConfigFromArgs(args);
  if (!config.ok()) return Fail(config.status(), 2);
  const cloud::VerifierConfig& c = *config;
  if (absl::Status s = obs::SetUpLogging("tandem-verifier", c.log_level); !s.ok()) return Fail(s, 2);

  std::shared_ptr<const net::TokenAuthenticator> auth;
  if (!c.auth_tokens_file.empty()) {
    auto a = net::TokenAuthenticator::LoadFile(c.auth_tokens_file);
    if (!a.ok()) return Fail(a.status(), 2);
    if (a->size() == 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("the auth tokens file '", c.auth_tokens_file,
                                                          "' holds no tokens")), 2);
    }
    auth = std::make_shared<const net::TokenAuthenticator>(std::move(*a));
  }
  auto creds = net::MakeServerCredentials({c.tls_cert, c.tls_key, c.tls_client_ca});
  if (!creds.ok()) return Fail(creds.status(), 2);

  model::ModelLoadOptions mo;
  mo.path = c.model;
  mo.tokenizer_path = c.tokenizer;
  auto model = model::Model::Load(mo);
  if (!model.ok()) return Fail(model.status(), 1);
  const std::string name =
      c.name.empty() ? std::filesystem::path(mo.path).stem().string() : c.name;

  // Signals are taken by sigwait on this thread; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // KV caches are large and come and go with sessions: serve them from mmap so that memory
  // returns to the system when a session ends (glibc would otherwise raise its mmap threshold
  // after the first free and keep later caches on the heap).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  cloud::EngineWorker worker(**model, c.threads, c.Batching());
  cloud::VerifierService service(**model, name, &worker, c.Limits(), auth);
  std::unique_ptr<obs::MetricsEndpoint> metrics;
  if (!c.metrics_listen.empty()) {
    auto m = obs::MetricsEndpoint::Start(c.metrics_listen);
    if (!m.ok()) return Fail(m.status(), absl::IsInvalidArgument(m.status()) ? 2 : 1);
    metrics = std::move(*m);
    metrics->Register(service.metrics().registry());
    metrics->Register(service.metrics().health_registry());
    metrics->Register(service.metrics().health_registry(), "/healthz");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(c.listen, *creds, &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(service.transport_max_message_bytes());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", c.listen)), 1);
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  const int metrics_port = metrics ? metrics->port() : 0;
  const char* tls = c.tls_cert.empty() ? "off" : c.tls_client_ca.empty() ? "on" : "mutual";
  spdlog::info(
      "serving {} on port {} ({} engine threads, tls {}, auth {}, metrics {}, max {} sessions, "
      "{} per tenant, idle ttl {} s, batching {} (max {} tokens, window {} ms), KV budget {} MiB)",
      name, port, c.threads, tls,
      auth ? absl::StrCat(auth->tenants().size(), " tenants") : std::string("off"),
      metrics ? absl::StrCat("on port ", metrics_port, " /metrics") : std::string("off"),
      c.limits.max_sessions, c.limits.max_sessions_per_tenant, c.limits.idle_ttl_s,
      c.batching_mode, c.batching.max_batch_tokens, c.batch_window_ms,
      service.kv_budget_bytes() >> 20);
  if (!c.port_file.empty()) {
    if (absl::Status s = WriteFileAtomically(c.port_file, absl::StrCat(port, "\n", metrics_port, "\n"));
        !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
    }
  }
  if (!c.metrics_port_file.empty()) {
    if (absl::Status s = WriteFileAtomically(c.metrics_port_file, absl::StrCat(metrics_port, "\n"));
        !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
    }
  }

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: draining ({:.1f} s grace, {} active sessions, hand-back after {:.1f} s)",
               sig, c.grace_s, service.active_sessions(), c.drain_handback_delay_s);
  server->GetHealthCheckService()->SetServingStatus(false);
  service.StartDrain();
  // The hand-back runs beside Shutdown, which returns as soon as the last session has ended.
  std::mutex drain_mu;
  std::condition_variable drain_cv;
  bool stopped = false;
  std::thread hand_back;
  if (c.drain_handback_delay_s < c.grace_s) {
    hand_back = std::thread([&] {
      std::unique_lock<std::mutex> lock(drain_mu);
      if (drain_cv.wait_for(lock, std::chrono::duration<double>(c.drain_handback_delay_s),
                            [&] { return stopped; })) {
        return;
      }
      const int n = service.HandBackSessions();
      if (n > 0) spdlog::info("handing back {} sessions: their edges resume on another replica", n);
    });
  }
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(c.grace_s * 1000)));
  server->Wait();
  {
    std::lock_guard<std::mutex> lock(drain_mu);
    stopped = true;
  }
  drain_cv.notify_all();
  if (hand_back.joinable()) hand_back.join();
  spdlog::info("stopped after {} verification passes", service.verify_passes());
  return 0;
}
