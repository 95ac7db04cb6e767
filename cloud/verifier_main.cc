// tandem-verifier: serves speculative verification for edge sessions over gRPC.
//
//   tandem-verifier --model M [--tokenizer T] [--listen 127.0.0.1:50051] [--threads N]
//                   [--max-sessions N] [--max-draft-tokens N] [--max-tree-nodes N]
//                   [--max-tokens-per-session N] [--max-message-bytes N] [--grace-s S]
//                   [--port-file F]
//
// SIGTERM or SIGINT: health goes NOT_SERVING, new sessions are refused, running ones get
// --grace-s seconds to finish, then the process exits 0.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "cloud/verifier_service.h"
#include "common/util/flags.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-verifier: error: %s\n", std::string(s.message()).c_str());
  return absl::IsInvalidArgument(s) ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = Flags::Parse(args, {"model", "tokenizer", "listen", "threads", "max-sessions",
                                   "max-draft-tokens", "max-tree-nodes", "max-tokens-per-session",
                                   "max-message-bytes", "grace-s", "port-file", "name"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("model")) return Fail(absl::InvalidArgumentError("--model FILE is required"));
  cloud::VerifierLimits limits;
  struct IntFlag {
    const char* name;
    int* out;
    int64_t lo, hi;
  };
  int threads = 1;
  for (IntFlag f : {IntFlag{"threads", &threads, 1, 256},
                    IntFlag{"max-sessions", &limits.max_sessions, 1, 1 << 20},
                    IntFlag{"max-draft-tokens", &limits.max_draft_tokens, 0, 1024},
                    IntFlag{"max-tree-nodes", &limits.max_tree_nodes, 0, 4096},
                    IntFlag{"max-tokens-per-session", &limits.max_tokens_per_session, 1, 1 << 24},
                    IntFlag{"max-message-bytes", &limits.max_message_bytes, 1024, 1 << 30}}) {
    absl::StatusOr<int64_t> v = flags->Int(f.name, *f.out, f.lo, f.hi);
    if (!v.ok()) return Fail(v.status());
    *f.out = static_cast<int>(*v);
  }
  absl::StatusOr<double> grace = flags->Double("grace-s", 10.0);
  if (!grace.ok() || *grace < 0) return Fail(absl::InvalidArgumentError("--grace-s must be >= 0"));

  model::ModelLoadOptions mo;
  mo.path = flags->String("model");
  mo.tokenizer_path = flags->String("tokenizer");
  auto model = model::Model::Load(mo);
  if (!model.ok()) return Fail(model.status());
  const std::string name =
      flags->String("name", std::filesystem::path(mo.path).stem().string());

  // Signals are taken by sigwait on this thread; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  cloud::EngineWorker worker(**model, threads);
  cloud::VerifierService service(**model, name, &worker, limits);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = flags->String("listen", "127.0.0.1:50051");
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(limits.max_message_bytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", listen)));
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  std::fprintf(stderr, "tandem-verifier: serving %s on port %d (%d engine threads)\n",
               name.c_str(), port, threads);
  if (flags->Has("port-file")) {
    std::ofstream(flags->String("port-file")) << port << "\n";
  }

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "tandem-verifier: signal %d: draining (%.1f s grace, %d active sessions)\n",
               sig, *grace, service.active_sessions());
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(*grace * 1000)));
  server->Wait();
  std::fprintf(stderr, "tandem-verifier: stopped after %lld verification passes\n",
               static_cast<long long>(service.verify_passes()));
  return 0;
}
