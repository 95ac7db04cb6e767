// tandem-verifier's configuration: one struct, loaded from a YAML file (--config FILE), then
// overridden by command-line flags. Every value is checked (type and range); an unknown key, a
// wrong type or an out-of-range value is an InvalidArgument naming the file, line and key, and the
// binary exits 2 on it. See configs/verifier.yaml for an annotated example.
//
// YAML schema (every key optional except `model`, which may come from --model instead):
//   listen: HOST:PORT             gRPC address (port 0: any free port)       --listen
//   model: FILE                   GGUF or llama2.c model                       --model
//   tokenizer: FILE               llama2.c tokenizer (tok512.bin)              --tokenizer
//   name: NAME                    served model name (default: model file stem) --name
//   threads: N                    engine threads [1, 256]                     --threads
//   metrics_listen: HOST:PORT     Prometheus /metrics endpoint; empty = off   --metrics-listen
//   port_file: FILE               written once serving: gRPC port on line 1, metrics port (or 0)
//                                 on line 2                                    --port-file
//   metrics_port_file: FILE       written once serving: the metrics port      --metrics-port-file
//   grace_s: S                    drain time on SIGTERM [0, 3600]             --grace-s
//   drain_handback_delay_s: S     on SIGTERM, running sessions are handed back to their edges
//                                 (to resume on another replica) after S [0, 3600]; at or
//                                 above grace_s never                 --drain-handback-delay-s
//   log_level: LEVEL              trace|debug|info|warn|error|critical|off     --log-level
//   tls: {cert: FILE, key: FILE, client_ca: FILE}
//                                 server certificate and key (TLS); client_ca turns on mutual TLS
//                                                      --tls-cert --tls-key --tls-client-ca
//   auth: {tokens_file: FILE}     bearer tokens (`tenant:token` lines); absent = auth off, every
//                                 call is tenant "default"                     --auth-tokens-file
//   limits:
//     max_sessions: N             concurrent sessions [1, 2^20]               --max-sessions
//     max_sessions_per_tenant: N  concurrent sessions of one tenant [1, 2^20]  --max-sessions-per-tenant
//     max_tokens_per_session: N   context positions per session [1, 2^24]     --max-tokens-per-session
//     max_draft_tokens: N         drafts per chain round [0, 1024]            --max-draft-tokens
//     max_tree_nodes: N           nodes per tree round [0, 4096]              --max-tree-nodes
//     max_message_bytes: N        largest message from an edge [1024, 2^30]   --max-message-bytes
//     idle_ttl_s: S               a session silent this long is ended (0.01 .. 604800) --idle-ttl-s
//     kv_budget_mb: N             KV cache memory of all sessions [0, 2^24]; 0: max_sessions
//                                 full-context sessions, at most half the RAM --kv-budget-mb
//     max_queue_delay_s: S        refuse new sessions (overloaded) while the engine queue wait
//                                 is above this; 0 = off [0, 3600]           --max-queue-delay-s
//   batching:                     the engine worker (cloud/engine_worker.h)
//     mode: on|off                batch sessions' passes into one forward     --batching
//     max_batch_tokens: N         positions per batched pass [1, 65536]      --max-batch-tokens
//     window_ms: MS               longest wait for more sessions' work [0, 1000] --batch-window-ms
//     prefill_chunk: N            prompt positions per pass [1, 65536]       --prefill-chunk
//   tenants:                      per-tenant overrides (names as in the tokens file)
//     NAME: {max_sessions: N}     [0, 2^20]; 0 disables the tenant (PERMISSION_DENIED)
//
// Relative paths in the YAML file are taken relative to the file's directory; relative paths in
// flags relative to the working directory.
#ifndef TANDEM_CLOUD_VERIFIER_CONFIG_H_
#define TANDEM_CLOUD_VERIFIER_CONFIG_H_

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cloud/verifier_service.h"
#include "common/util/flags.h"

namespace tandem::cloud {

struct VerifierConfig {
  std::string listen = "127.0.0.1:50051";
  std::string model;
  std::string tokenizer;
  std::string name;  // empty: the model file's stem
  int threads = 1;
  std::string metrics_listen;  // empty: no metrics endpoint
  std::string port_file;
  std::string metrics_port_file;
  double grace_s = 10.0;
  std::string log_level = "info";
  std::string tls_cert, tls_key, tls_client_ca;
  std::string auth_tokens_file;  // empty: auth off
  VerifierLimits limits;         // limits and per-tenant quotas
  int kv_budget_mb = 0;          // into limits.kv_budget_bytes by Limits()
  std::string batching_mode = "on";
  BatchingOptions batching;
  double batch_window_ms = 1.0;

  // The worker's and the service's settings, units resolved.
  BatchingOptions Batching() const;
  VerifierLimits Limits() const;
  // On SIGTERM, this long after the health signals go down (long enough for a load balancer's
  // checks to take the replica out), running sessions are handed back: ended with UNAVAILABLE so
  // that their edges resume on another replica. At or above grace_s: never; sessions run until
  // the grace ends.
  double drain_handback_delay_s = 1.0;
};

// Parses YAML text; `source` names it in errors, `base_dir` anchors relative paths.
absl::StatusOr<VerifierConfig> ParseVerifierConfigYaml(std::string_view text,
                                                       const std::string& source,
                                                       const std::string& base_dir);
absl::StatusOr<VerifierConfig> LoadVerifierConfigFile(const std::string& path);

// The flags tandem-verifier knows ("config" included).
std::set<std::string> VerifierFlagNames();
// Overrides `config` with the flags that are given.
absl::Status ApplyVerifierFlags(const Flags& flags, VerifierConfig* config);
// Cross-field checks: a model is named, TLS cert and key go together, ranges hold.
absl::Status ValidateVerifierConfig(const VerifierConfig& config);

// The whole command line: --config FILE (if given) loaded first, then the other flags applied,
// then validated. Every error is InvalidArgument (exit 2).
absl::StatusOr<VerifierConfig> VerifierConfigFromArgs(const std::vector<std::string>& args);

}  // namespace tandem::cloud

#endif  // TANDEM_CLOUD_VERIFIER_CONFIG_H_
