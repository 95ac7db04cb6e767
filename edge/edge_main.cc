// tandem-edge: generate text on the edge, with a remote tandem-verifier when there is one.
//
//   tandem-edge generate --verifier HOST:PORT --model M [--tokenizer T] [--prompt P]
//       [--max-tokens N] [--temperature X] [--top-k K] [--top-p P] [--seed S]
//       [--mode auto|spec|cloud|local|split]                (default auto)
//       [--split-layer K|auto] [--codec f32|f16|bf16|int8|int4[+zstd]]   (split mode)
//       [--split-self-draft]      (split rounds draft by early exit on the edge's layer-K states)
//       [--allowed-modes spec,cloud,split,local] [--min-split-layer K] [--max-edge-layers L]
//       [--objective latency|cloud-cost] [--codecs f32,int8] [--max-spec-tokens G]
//       [--prior-acceptance P] [--verbose]                   (the scheduler: auto mode)
//       [--draft-model F | --draft early-exit:K | --draft ngram:N]
//       [--spec-tokens G|auto] [--tree static:K,D|dynamic:N] [--uncertain-threshold P]
//       [--tls-ca F [--tls-cert F --tls-key F] [--tls-server-name NAME]]
//       [--auth-token-file F] [--retry-deadline-s S] [--timeout-s S] [--connect-timeout-s S]
//       [--affinity-key KEY]
//       [--stats-json F] [--metrics-listen HOST:PORT [--metrics-port-file F]] [--metrics-file F]
//
// Modes (see edge/edge_generator.h):
//   spec   the edge drafts (chains, or trees with --tree), the verifier verifies; exact.
//   cloud  the verifier decodes alone and streams tokens; exact.
//   local  the edge model alone (--model); no verifier needed.
//   split  as spec, but the edge runs the target's layers [0, K) (--model must be the target) and
//          sends their states, encoded with --codec (default f32: exact), not the prompt's ids.
//   auto   the scheduler picks the mode among --allowed-modes (default spec,cloud; add split
//          when --model is the target), the draft length, and for split the layer and codec
//          (--codecs), every round from live measurements of the link, both sides' compute and
//          the drafts' acceptance; --verbose prints a line per change with its reason. When the
//          verifier is unreachable: the edge model, with a warning, reconnecting in the
//          background and resuming when the verifier is back.
//   split with --split-layer auto: the scheduler picks the layer (min/max from
//          --min-split-layer, --max-edge-layers) and the codec among --codecs (default --codec).
// --uncertain-threshold P (spec/auto, chains; default 0 = off): drafts whose draft probability is
// at least P are committed without waiting for a verdict and reach the verifier later as context.
// Lossy: the text may differ from the target's (see edge/uncertain.h).
// In spec, split and cloud, an outage is retried (backoff, resumed on a new session) for up to
// --retry-deadline-s (default 10), then the run fails. Refused credentials (UNAUTHENTICATED,
// PERMISSION_DENIED, TLS/certificate failures), a model or vocabulary mismatch and bad requests
// end every mode at once, never with a fallback. --timeout-s (default 30) is the longest wait
// for one reply. --auth-token-file holds the bearer token alone (whitespace trimmed).
// --affinity-key (default: a random id per process; 1-64 of [A-Za-z0-9._-]) is sent with every
// session as metadata "x-tandem-affinity": behind a load balancer (deploy/haproxy) the sessions
// of one key, reconnections included, stay on one verifier replica while it is up. A session that
// a draining replica hands back resumes at once on another one.
//
// Prints like `tandem-model generate`: the prompt, then the text as it is committed, on stdout;
// warnings and errors (`tandem-edge: error: CODE: message`) on stderr. Exit 0 on success, 2 for
// bad flags, 1 for any other error.
#include <cstdio>
#include <fstream>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/obs/metrics.h"
#include "common/util/flags.h"
#include "edge/edge_generator.h"
#include "edge/uncertain.h"

namespace {

using namespace tandem;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-edge: error: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  return absl::IsInvalidArgument(s) ? 2 : 1;
}

void PrintPiece(const std::string& piece) {
  if (!model::IsPrintablePiece(piece)) return;
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

absl::StatusOr<edge::EdgeMode> ParseMode(const std::string& mode) {
  for (edge::EdgeMode m : {edge::EdgeMode::kAuto, edge::EdgeMode::kSpec, edge::EdgeMode::kCloud,
                           edge::EdgeMode::kLocal, edge::EdgeMode::kSplit}) {
    if (mode == edge::EdgeModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--mode must be auto, spec, cloud, local or split, got '", mode, "'"));
}

void WriteStatsJson(const std::string& path, edge::EdgeMode mode, size_t prompt_tokens,
                    const edge::EdgeStats& s) {
  std::ofstream js(path, std::ios::trunc);
  js << absl::StrFormat(
      "{\n  \"mode\": \"%s\",\n  \"prompt_tokens\": %d,\n  \"generated_tokens\": %d,\n"
      "  \"tokens_verified\": %d,\n  \"tokens_unverified\": %d,\n  \"tokens_from_cloud\": %d,\n"
      "  \"tokens_local_fallback\": %d,\n  \"round_trips\": %d,\n  \"target_passes\": %d,\n"
      "  \"sessions\": %d,\n  \"reconnects\": %d,\n  \"fallbacks\": %d,\n"
      "  \"bytes_up\": %d,\n  \"bytes_down\": %d,\n"
      "  \"rtt_mean_seconds\": %.6f,\n  \"rtt_total_seconds\": %.6f,\n"
      "  \"cloud_compute_seconds\": %.6f,\n  \"draft_seconds\": %.6f,\n"
      "  \"draft_tokens\": %d,\n  \"accepted_tokens\": %d,\n"
      "  \"config_changes\": %d,\n  \"session_switches\": %d,\n  \"final_config\": \"%s\"\n}\n",
      edge::EdgeModeName(mode), prompt_tokens, s.generated_tokens, s.tokens_verified,
      s.tokens_unverified, s.tokens_from_cloud, s.tokens_local_fallback, s.round_trips, s.target_passes, s.sessions,
      s.reconnects, s.fallbacks, s.bytes_up, s.bytes_down, s.MeanRttSeconds(), s.rtt_seconds,
      s.cloud_compute_seconds, s.draft_seconds, s.draft_tokens, s.accepted_tokens,
      s.config_changes, s.session_switches, s.final_config);
}

// --affinity-key: as given (checked: it goes into an HTTP/2 header and a load balancer's stick
// table), else a random id, so that each edge process keeps to its own replica.
absl::StatusOr<std::string> AffinityKey(const Flags& flags) {
  if (!flags.Has("affinity-key")) {
    std::random_device rd;
    return absl::StrFormat("%08x%08x", rd(), rd());
  }
  const std::string key = flags.String("affinity-key");
  bool ok = !key.empty() && key.size() <= 64;
  for (char c : key) ok = ok && (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-');
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("--affinity-key must be 1 to 64 of [A-Za-z0-9._-], got '", key, "'"));
  }
  return key;
}

int Generate(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(
      args, {"verifier", "model", "tokenizer", "prompt", "max-tokens", "temperature", "top-k",
             "top-p", "seed", "mode", "draft-model", "draft", "spec-tokens", "tree", "stats-json",
             "timeout-s", "connect-timeout-s", "retry-deadline-s", "tls-ca", "tls-cert",
             "tls-key", "tls-server-name", "auth-token-file", "split-layer", "codec",
             "allowed-modes", "min-split-layer", "max-edge-layers", "objective", "codecs",
             "max-spec-tokens", "prior-acceptance", "uncertain-threshold", "metrics-listen",
             "metrics-port-file", "metrics-file", "affinity-key"},
      {"verbose", "split-self-draft"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("model")) return Fail(absl::InvalidArgumentError("--model FILE is required"));
  if (flags->Has("draft-model") && flags->Has("draft")) {
    return Fail(absl::InvalidArgumentError("give either --draft-model or --draft, not both"));
  }
  edge::EdgeOptions o;
  absl::StatusOr<edge::EdgeMode> mode = ParseMode(flags->String("mode", "auto"));
  if (!mode.ok()) return Fail(mode.status());
  o.mode = *mode;
  if ((o.mode == edge::EdgeMode::kSpec || o.mode == edge::EdgeMode::kCloud ||
       o.mode == edge::EdgeMode::kSplit) &&
      !flags->Has("verifier")) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(edge::EdgeModeName(o.mode), " mode needs --verifier HOST:PORT")));
  }
  o.adaptive_spec_tokens = flags->String("spec-tokens") == "auto";
  auto max_tokens = flags->Int("max-tokens", 256, 0, 1 << 24);
  auto gamma = o.adaptive_spec_tokens ? absl::StatusOr<int64_t>(8)
                                      : flags->Int("spec-tokens", 4, 0, 64);
  auto top_k = flags->Int("top-k", 0, 0, 1 << 24);
  auto temperature = flags->Double("temperature", 0.0);
  auto top_p = flags->Double("top-p", 1.0);
  auto seed = flags->Uint64("seed", 0);
  auto timeout = flags->Double("timeout-s", 30.0);
  auto connect_timeout = flags->Double("connect-timeout-s", 1.0);
  auto retry_deadline = flags->Double("retry-deadline-s", 10.0);
  auto uncertain = flags->Double("uncertain-threshold", 0.0);
  for (const absl::Status& s :
       {max_tokens.status(), gamma.status(), top_k.status(), temperature.status(),
        top_p.status(), seed.status(), timeout.status(), connect_timeout.status(),
        retry_deadline.status(), uncertain.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*timeout <= 0 || *connect_timeout <= 0 || *retry_deadline < 0) {
    return Fail(absl::InvalidArgumentError(
        "--timeout-s and --connect-timeout-s must be > 0, --retry-deadline-s >= 0"));
  }
  o.spec_tokens = static_cast<int>(*gamma);
  o.sampler.temperature = static_cast<float>(*temperature);
  o.sampler.top_k = static_cast<int>(*top_k);
  o.sampler.top_p = static_cast<float>(*top_p);
  o.sampler.seed = *seed;
  o.reply_timeout_s = *timeout;
  o.connect_timeout_s = *connect_timeout;
  o.retry_deadline_s = *retry_deadline;
  o.uncertain_threshold = *uncertain;
  if (absl::Status s = model::ValidateSamplerOptions(o.sampler); !s.ok()) return Fail(s);
  if (o.mode == edge::EdgeMode::kSplit) {
    if (!flags->Has("split-layer")) {
      return Fail(absl::InvalidArgumentError(
          "split mode needs --split-layer K (1 <= K < layers) or --split-layer auto"));
    }
    if (flags->String("split-layer") != "auto") {
      auto k = flags->Int("split-layer", 0, 1, 1 << 16);
      if (!k.ok()) return Fail(k.status());
      o.split_layer = static_cast<int>(*k);
    }
    absl::StatusOr<codec::CodecSpec> c = codec::ParseCodec(flags->String("codec", "f32"));
    if (!c.ok()) return Fail(c.status());
    o.codec = *c;
  } else if (flags->Has("split-layer") || flags->Has("codec")) {
    return Fail(absl::InvalidArgumentError("--split-layer and --codec are for --mode split"));
  }
  // The scheduler: auto mode, and split mode with --split-layer auto.
  const bool scheduled = o.mode == edge::EdgeMode::kAuto ||
                         (o.mode == edge::EdgeMode::kSplit && o.split_layer == 0);
  if (scheduled) {
    edge::SchedulerPolicy policy;
    absl::StatusOr<std::vector<edge::RunMode>> allowed =
        edge::ParseRunModes(flags->String("allowed-modes", "spec,cloud"));
    if (!allowed.ok()) return Fail(allowed.status());
    policy.allowed = *allowed;
    if (o.mode == edge::EdgeMode::kSplit) policy.allowed = {edge::RunMode::kSplit};
    auto min_k = flags->Int("min-split-layer", 1, 1, 1 << 16);
    auto max_edge = flags->Int("max-edge-layers", 1 << 16, 1, 1 << 16);
    auto max_gamma = flags->Int("max-spec-tokens", 8, 0, 64);
    auto prior = flags->Double("prior-acceptance", 0.9);
    for (const absl::Status& st : {min_k.status(), max_edge.status(), max_gamma.status(), prior.status()}) {
      if (!st.ok()) return Fail(st);
    }
    if (*prior < 0 || *prior > 1) {
      return Fail(absl::InvalidArgumentError("--prior-acceptance must be in [0, 1]"));
    }
    policy.min_split_layer = static_cast<int>(*min_k);
    policy.max_edge_layers = static_cast<int>(*max_edge);
    policy.max_gamma = static_cast<int>(*max_gamma);
    o.prior_acceptance = *prior;
    const std::string objective = flags->String("objective", "latency");
    if (objective == "cloud-cost") {
      policy.objective = edge::Objective::kCloudCost;
    } else if (objective != "latency") {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--objective must be latency or cloud-cost, got '", objective, "'")));
    }
    policy.codecs.clear();
    const std::string codecs = flags->Has("codecs") ? flags->String("codecs")
                               : o.mode == edge::EdgeMode::kSplit ? codec::CodecSpecName(o.codec)
                                                                  : std::string("f32,int8");
    for (const std::string& name : std::vector<std::string>(absl::StrSplit(codecs, ','))) {
      absl::StatusOr<codec::CodecSpec> c = codec::ParseCodec(name);
      if (!c.ok()) return Fail(c.status());
      policy.codecs.push_back(*c);
    }
    o.scheduler = policy;
    if (flags->Has("verbose")) {
      o.on_debug = [](const std::string& line) {
        std::fprintf(stderr, "tandem-edge: %s\n", line.c_str());
      };
    }
  } else {
    for (const char* f : {"allowed-modes", "min-split-layer", "max-edge-layers", "objective",
                          "codecs", "max-spec-tokens", "prior-acceptance"}) {
      if (flags->Has(f)) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "--", f, " is for the scheduler (--mode auto, or --mode split --split-layer auto)")));
      }
    }
  }
  if (flags->Has("split-self-draft")) {
    if (o.mode != edge::EdgeMode::kSplit && o.mode != edge::EdgeMode::kAuto) {
      return Fail(absl::InvalidArgumentError("--split-self-draft is for --mode split or auto"));
    }
    o.split_self_draft = true;
  }
  if (flags->Has("tree")) {
    absl::StatusOr<spec::TreeShape> tree = spec::ParseTreeShape(flags->String("tree"));
    if (!tree.ok()) return Fail(tree.status());
    o.tree = *tree;
  }
  if (absl::Status s = edge::CheckUncertainOptions(o); !s.ok()) return Fail(s);
  if (flags->Has("auth-token-file")) {
    absl::StatusOr<std::string> token = edge::ReadAuthTokenFile(flags->String("auth-token-file"));
    if (!token.ok()) return Fail(token.status());
    o.auth_token = *token;
  }
  absl::StatusOr<std::string> affinity = AffinityKey(*flags);
  if (!affinity.ok()) return Fail(affinity.status());
  o.affinity_key = *affinity;
  // The channel is made (and the TLS files read) before the models load: bad flags fail fast.
  std::shared_ptr<grpc::Channel> channel;
  if (o.mode != edge::EdgeMode::kLocal && flags->Has("verifier")) {
    net::ClientTlsOptions tls;
    tls.ca_file = flags->String("tls-ca");
    tls.cert_file = flags->String("tls-cert");
    tls.key_file = flags->String("tls-key");
    tls.server_name_override = flags->String("tls-server-name");
    auto ch = edge::MakeVerifierChannel(flags->String("verifier"), tls);
    if (!ch.ok()) return Fail(ch.status());
    channel = *ch;
  } else if (o.mode == edge::EdgeMode::kAuto) {
    std::fprintf(stderr, "tandem-edge: warning: no --verifier: generating with the local model\n");
  }

  model::ModelLoadOptions mo;
  mo.path = flags->String("model");
  mo.tokenizer_path = flags->String("tokenizer");
  auto local = model::Model::Load(mo);
  if (!local.ok()) return Fail(local.status());
  // The drafter: a separate draft model, the local model's first layers, n-gram, or the whole
  // local model.
  spec::ModelDrafterOptions dopt;
  dopt.sampler = o.sampler;
  dopt.sampler.seed = o.sampler.seed ^ 0x9e3779b97f4a7c15ull;
  std::unique_ptr<model::Model> draft_model;
  std::unique_ptr<spec::Drafter> drafter;
  if (flags->Has("draft-model")) {
    model::ModelLoadOptions d;
    d.path = flags->String("draft-model");
    auto dm = model::Model::Load(d);
    if (!dm.ok()) return Fail(dm.status());
    draft_model = std::move(*dm);
    if (absl::Status s = spec::CheckDraftVocabulary(*draft_model, **local); !s.ok()) return Fail(s);
    auto dr = spec::ModelDrafter::Create(*draft_model, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  } else if (flags->Has("draft")) {
    auto dr = spec::CreateDrafterFromSpec(flags->String("draft"), **local, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  } else {
    auto dr = spec::ModelDrafter::Create(**local, nullptr, dopt);
    if (!dr.ok()) return Fail(dr.status());
    drafter = std::move(*dr);
  }
  // Edge metrics: served while generating (--metrics-listen), written at the end (--metrics-file).
  std::unique_ptr<obs::MetricsEndpoint> endpoint;
  if (flags->Has("metrics-listen") || flags->Has("metrics-file")) {
    o.metrics = std::make_shared<edge::EdgeMetrics>();
  }
  if (flags->Has("metrics-listen")) {
    auto ep = obs::MetricsEndpoint::Start(flags->String("metrics-listen"));
    if (!ep.ok()) return Fail(ep.status());
    endpoint = std::move(*ep);
    endpoint->Register(o.metrics->registry());
    if (flags->Has("metrics-port-file")) {
      std::ofstream pf(flags->String("metrics-port-file"), std::ios::trunc);
      pf << endpoint->port() << "\n";
    }
  }
  edge::EdgeGenerator gen(**local, drafter.get(), channel, o);
  const model::Vocab& vocab = (*local)->vocab();
  std::vector<int32_t> prompt = vocab.Encode(flags->String("prompt"), true);
  if (prompt.empty()) prompt.push_back(vocab.bos_id() >= 0 ? vocab.bos_id() : 0);
  for (size_t i = 1; i < prompt.size(); ++i) PrintPiece(vocab.DecodeNext(prompt[i - 1], prompt[i]));
  edge::EdgeStats stats;
  absl::Status s = gen.Generate(prompt, static_cast<int>(*max_tokens),
                                [&](int32_t prev, int32_t t) { PrintPiece(vocab.DecodeNext(prev, t)); },
                                &stats);
  std::printf("\n");
  std::fflush(stdout);
  if (flags->Has("metrics-file")) {
    std::ofstream mf(flags->String("metrics-file"), std::ios::trunc);
    mf << obs::RenderText(*o.metrics->registry());
  }
  if (flags->Has("stats-json")) WriteStatsJson(flags->String("stats-json"), o.mode, prompt.size(), stats);
  if (!s.ok()) return Fail(s);
  std::fprintf(stderr,
               "tandem-edge: %lld tokens (%lld verified, %lld unverified, %lld from the cloud, %lld "
               "local), %lld round trips, %lld reconnects, %lld bytes up, %lld down\n",
               static_cast<long long>(stats.generated_tokens),
               static_cast<long long>(stats.tokens_verified),
               static_cast<long long>(stats.tokens_unverified),
               static_cast<long long>(stats.tokens_from_cloud),
               static_cast<long long>(stats.tokens_local_fallback),
               static_cast<long long>(stats.round_trips), static_cast<long long>(stats.reconnects),
               static_cast<long long>(stats.bytes_up), static_cast<long long>(stats.bytes_down));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "generate") {
    std::fprintf(stderr, "usage: tandem-edge generate --verifier HOST:PORT --model M [flags]\n");
    return 2;
  }
  return Generate(std::vector<std::string>(argv + 2, argv + argc));
}
