// A real verifier (cloud::VerifierService on its own engine worker) served on 127.0.0.1 for edge
// tests, that a test can stop abruptly (in-flight calls cancelled, port closed) and start again on
// the same port, plaintext or TLS.
#ifndef TANDEM_TESTS_EDGE_LOOPBACK_VERIFIER_H_
#define TANDEM_TESTS_EDGE_LOOPBACK_VERIFIER_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "cloud/verifier_service.h"
#include "common/net/tls.h"
#include "common/obs/metrics.h"
#include "gtest/gtest.h"

namespace tandem::testing {

class LoopbackVerifier {
 public:
  // `auth`: bearer tokens the verifier accepts; null = authentication off.
  explicit LoopbackVerifier(const model::Model& target, net::ServerTlsOptions tls = {},
                            cloud::VerifierLimits limits = {},
                            std::shared_ptr<const net::TokenAuthenticator> auth = nullptr,
                            cloud::BatchingOptions batching = {})
      : target_(target),
        tls_(std::move(tls)),
        limits_(limits),
        auth_(std::move(auth)),
        batching_(batching) {}
  ~LoopbackVerifier() { Stop(); }

  // Serves on `port` (0: any free port; the port is kept for restarts). False if it cannot bind.
  bool Start(int port = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    worker_ = std::make_unique<cloud::EngineWorker>(target_, 1, batching_);
    service_ = std::make_unique<cloud::VerifierService>(target_, "stories260K", worker_.get(),
                                                        limits_, auth_);
    auto creds = net::MakeServerCredentials(tls_);
    EXPECT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder b;
    int bound = 0;
    b.AddListeningPort(absl::StrCat("127.0.0.1:", port), *creds, &bound);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    if (server_ == nullptr || bound == 0) return false;
    port_ = bound;
    return true;
  }

  // Goes away at once: open sessions are cancelled and the port is closed.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
    server_.reset();
    service_.reset();  // after the server, as the service requires
    worker_.reset();
  }

  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  int64_t verify_passes() {
    std::lock_guard<std::mutex> lock(mu_);
    return service_ ? service_->verify_passes() : 0;
  }
  // The service's metrics in the Prometheus text format (empty when stopped).
  std::string MetricsText() {
    std::lock_guard<std::mutex> lock(mu_);
    return service_ ? obs::RenderText(*service_->metrics().registry()) : std::string();
  }

 private:
  const model::Model& target_;
  net::ServerTlsOptions tls_;
  cloud::VerifierLimits limits_;
  std::shared_ptr<const net::TokenAuthenticator> auth_;
  cloud::BatchingOptions batching_;
  std::mutex mu_;
  std::unique_ptr<cloud::EngineWorker> worker_;
  std::unique_ptr<cloud::VerifierService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// A loopback port where nobody listens (bound once, then released).
inline int ClosedPort(const model::Model& target) {
  LoopbackVerifier v(target);
  EXPECT_TRUE(v.Start());
  v.Stop();
  return v.port();
}

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_EDGE_LOOPBACK_VERIFIER_H_
