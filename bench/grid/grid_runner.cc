#include "bench/grid/grid_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/model/model_writer.h"
#include "common/util/clock.h"
#include "edge/connection.h"

extern char** environ;

namespace tandem::bench {
namespace {

// Starts `args` (args[0] the binary) with stdout to /dev/null and stderr to `log_file`; -1 when
// it cannot.
pid_t Spawn(std::vector<std::string> args, const std::string& log_file) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

std::string ModelsDir() {
  const char* env = std::getenv("TANDEM_MODELS_DIR");
  return env != nullptr && *env != '\0' ? env : TANDEM_DEFAULT_MODELS_DIR;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VerifierProcess>> VerifierProcess::Start(
    const std::string& binary, const std::string& model_path, int threads,
    const std::string& work_dir, const std::string& log_file,
    const std::vector<std::string>& extra_args) {
  const std::string port_file = work_dir + "/verifier.port";
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {binary,        "--model",     model_path,
                                   "--listen",    "127.0.0.1:0", "--port-file",
                                   port_file,     "--threads",   std::to_string(threads),
                                   "--log-level", "warn"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  const pid_t pid = Spawn(args, log_file);
  if (pid < 0) return absl::InternalError(absl::StrCat("cannot start ", binary));
  std::unique_ptr<VerifierProcess> v(new VerifierProcess);
  v->pid_ = pid;
  const double deadline = MonotonicSeconds() + 60;  // a 110M model loads in well under that
  while (MonotonicSeconds() < deadline) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port && port > 0) {
      v->port_ = port;
      in >> v->metrics_port_;  // line 2: the metrics port, or 0
      return v;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      v->pid_ = -1;
      return absl::InternalError(absl::StrCat("tandem-verifier exited early; see ", log_file));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("tandem-verifier did not serve; see ", log_file));
}

bool VerifierProcess::KnowsFlag(const std::string& binary, const std::string& flag,
                                const std::string& work_dir) {
  const std::string log = work_dir + "/verifier-flag-probe.log";
  std::vector<std::string> args = {binary, "--" + flag, "on"};
  const pid_t pid = Spawn(args, log);
  if (pid < 0) return false;
  waitpid(pid, nullptr, 0);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("unknown flag --" + flag) == std::string::npos;
}

VerifierProcess::~VerifierProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

absl::Status EnsureSynth110m(const std::string& path) {
  if (std::filesystem::exists(path)) return absl::OkStatus();
  // The same model as `tandem-model synth OUT --type q8_0 --seed 110` (bench/run_engine_bench.sh).
  const model::SyntheticModelSpec s{.dim = 768, .hidden_dim = 2048, .n_layers = 12, .n_heads = 12,
                                    .n_kv_heads = 12, .vocab_size = 32000, .max_seq_len = 1024,
                                    .seed = 110};
  const std::string tmp = path + ".tmp";
  if (absl::Status st = model::WriteSyntheticGguf(s, model::GgmlType::kQ8_0, tmp); !st.ok()) return st;
  std::filesystem::rename(tmp, path);
  return absl::OkStatus();
}

absl::StatusOr<BenchModel> LoadBenchModel(const std::string& name, const std::string& work) {
  BenchModel m;
  m.name = name;
  if (name == "stories260k") {
    m.path = ModelsDir() + "/stories260K.bin";
    // Early exit after 4 of 5 layers: tau ~2 at gamma 4 (bench/results/spec-stories260K.json);
    // after 3 layers tau is 1.28, after 1-2 layers drafts are almost never accepted.
    m.draft_layers = 4;
    m.prompts = {"Once upon a time", "The little dog", "Lily and Tom went to the park"};
    m.tokens = 64;
    m.runs = 3;
  } else if (name == "synth110m") {
    m.path = work + "/synthetic-110m-q8_0.gguf";
    if (absl::Status s = EnsureSynth110m(m.path); !s.ok()) return s;
    // Random weights: no draft depth is good; 2 of 12 layers keeps drafting cheap.
    m.draft_layers = 2;
    m.prompts = {"Once upon a time", "The little dog", "Lily and Tom went to the park"};
    m.tokens = 32;
    m.runs = 2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown model '", name, "' (stories260k, synth110m)"));
  }
  model::ModelLoadOptions lo;
  lo.path = m.path;
  auto loaded = model::Model::Load(lo);
  if (!loaded.ok()) return loaded.status();
  m.model = std::move(*loaded);
  const int n = m.model->config().n_layers;
  if (name == "stories260k") {
    for (int k = 1; k < n; ++k) m.split_layers.push_back(k);
  } else {
    // Every k costs the same bytes (the states are dim wide at any depth) and, with edge and
    // verifier on the same CPU, nearly the same compute: a spread of k keeps the grid's time down.
    m.split_layers = {1, n / 4, n / 2, n - 1};
  }
  return m;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  return absl::OkStatus();
}

edge::SchedulerPolicy GridAutoPolicy() {
  edge::SchedulerPolicy p;
  p.allowed = {edge::RunMode::kSpec, edge::RunMode::kSplit, edge::RunMode::kCloud};
  p.codecs = {{codec::CodecKind::kF32, false}, {codec::CodecKind::kInt8, false}};
  p.max_gamma = 8;
  return p;
}

namespace {

edge::EdgeOptions BaseOptions(edge::EdgeMode mode) {
  edge::EdgeOptions o;
  o.mode = mode;  // greedy sampling by default
  o.reply_timeout_s = 60;
  o.retry_deadline_s = 30;
  o.on_warning = [](const std::string& w) { std::fprintf(stderr, "tandem-bench: edge: %s\n", w.c_str()); };
  return o;
}

}  // namespace

edge::EdgeOptions AutoOptions(const edge::SchedulerPolicy& policy) {
  edge::EdgeOptions o = BaseOptions(edge::EdgeMode::kAuto);
  o.scheduler = policy;
  o.spec_tokens = policy.max_gamma;
  return o;
}

std::vector<EdgeConfig> GridConfigs(const std::vector<int>& split_layers, int split_gamma) {
  std::vector<EdgeConfig> out;
  out.push_back({"cloud", BaseOptions(edge::EdgeMode::kCloud)});
  for (int g : {2, 4, 8}) {
    EdgeConfig c{absl::StrCat("spec g", g), BaseOptions(edge::EdgeMode::kSpec)};
    c.options.spec_tokens = g;
    out.push_back(c);
  }
  for (int k : split_layers) {
    for (codec::CodecKind kind : {codec::CodecKind::kF32, codec::CodecKind::kInt8}) {
      EdgeConfig c{absl::StrCat("split k", k, " ", std::string(codec::CodecName(kind))),
                   BaseOptions(edge::EdgeMode::kSplit)};
      c.options.split_layer = k;
      c.options.codec = {kind, false};
      c.options.spec_tokens = split_gamma;
      out.push_back(c);
    }
  }
  out.push_back({"auto", AutoOptions(GridAutoPolicy())});
  return out;
}

absl::StatusOr<EmulatedLink> StartLink(int upstream_port, const linkem::LinkParams& params,
                                       const std::vector<linkem::LinkChange>& schedule) {
  linkem::LinkemOptions lo;
  lo.upstream = absl::StrCat("127.0.0.1:", upstream_port);
  lo.link = params;
  lo.schedule = schedule;
  EmulatedLink link;
  auto em = linkem::LinkEmulator::Start(lo);
  if (!em.ok()) return em.status();
  link.started_at = MonotonicSeconds();
  link.linkem = std::move(*em);
  auto ch = edge::MakeVerifierChannel(absl::StrCat("127.0.0.1:", link.linkem->port()));
  if (!ch.ok()) return ch.status();
  link.channel = *ch;
  return link;
}

absl::StatusOr<std::unique_ptr<spec::Drafter>> MakeDrafter(const BenchModel& m) {
  return spec::CreateDrafterFromSpec(absl::StrCat("early-exit:", m.draft_layers), *m.model,
                                     nullptr, {});
}

GridRow MeasureConfig(const BenchModel& m, const EdgeConfig& config,
                      std::shared_ptr<grpc::Channel> channel) {
  const edge::EdgeOptions& o = config.options;
  GridRow row;
  row.model = m.name;
  row.config = config.name;
  row.mode = edge::EdgeModeName(o.mode);
  if (o.mode == edge::EdgeMode::kSpec || o.mode == edge::EdgeMode::kSplit) row.gamma = o.spec_tokens;
  if (o.mode == edge::EdgeMode::kSplit) {
    row.split_layer = o.split_layer;
    row.codec = codec::CodecSpecName(o.codec);
  }
  std::unique_ptr<spec::Drafter> drafter;
  if (o.mode != edge::EdgeMode::kCloud) {
    auto d = MakeDrafter(m);
    if (!d.ok()) {
      row.error = d.status().ToString();
      return row;
    }
    drafter = std::move(*d);
  }
  edge::EdgeGenerator gen(*m.model, drafter.get(), channel, o);
  auto generate = [&](int prompt_index, edge::EdgeStats* stats, double* seconds) {
    const std::vector<int32_t> prompt =
        m.model->vocab().Encode(m.prompts[static_cast<size_t>(prompt_index) % m.prompts.size()], true);
    const double t0 = MonotonicSeconds();
    absl::Status s = gen.Generate(prompt, m.tokens, [](int32_t, int32_t) {}, stats);
    *seconds = MonotonicSeconds() - t0;
    return s;
  };
  edge::EdgeStats warm;
  double warm_s = 0;
  if (absl::Status s = generate(0, &warm, &warm_s); !s.ok()) {
    row.error = absl::StrCat("warm-up: ", s.ToString());
    return row;
  }
  int64_t up = 0, down = 0, passes = 0;
  for (int r = 0; r < m.runs; ++r) {
    edge::EdgeStats st;
    double seconds = 0;
    if (absl::Status s = generate(r, &st, &seconds); !s.ok()) {
      row.error = absl::StrCat("run ", r, ": ", s.ToString());
      return row;
    }
    row.tokens_per_s.push_back(seconds > 0 ? static_cast<double>(st.generated_tokens) / seconds : 0);
    row.generated_tokens += st.generated_tokens;
    row.seconds += seconds;
    up += st.bytes_up;
    down += st.bytes_down;
    passes += st.target_passes;
    row.final_config = st.final_config;
    row.config_changes += st.config_changes;
    row.session_switches += st.session_switches;
  }
  row.tokens_per_s_median = Median(row.tokens_per_s);
  if (row.generated_tokens > 0) {
    const double n = static_cast<double>(row.generated_tokens);
    row.bytes_up_per_token = static_cast<double>(up) / n;
    row.bytes_down_per_token = static_cast<double>(down) / n;
    row.target_passes_per_token = static_cast<double>(passes) / n;
  }
  return row;
}

}  // namespace tandem::bench
