// Measuring edge configurations for tandem-bench: a real tandem-verifier child process, an
// in-process link emulator (tandem_linkem) in front of it, and the edge library
// (edge::EdgeGenerator) in this process, so that every byte crosses the emulated link.
// Thread-safety: single-threaded use from main().
#ifndef TANDEM_BENCH_GRID_GRID_RUNNER_H_
#define TANDEM_BENCH_GRID_GRID_RUNNER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/grid/grid_report.h"
#include "common/model/model.h"
#include "edge/edge_generator.h"
#include "tools/linkem/linkem.h"

namespace tandem::bench {

// A tandem-verifier child on 127.0.0.1 (a free port, read from its --port-file), killed on
// destruction. Its stderr goes to `log_file`. `extra_args` are appended to its command line; with
// "--metrics-listen 127.0.0.1:0" among them, metrics_port() is the /metrics port.
class VerifierProcess {
 public:
  static absl::StatusOr<std::unique_ptr<VerifierProcess>> Start(
      const std::string& binary, const std::string& model_path, int threads,
      const std::string& work_dir, const std::string& log_file,
      const std::vector<std::string>& extra_args = {});
  // Whether `binary` accepts --`flag` (it is run once with that flag alone and exits at once,
  // complaining of an unknown flag or of the missing model).
  static bool KnowsFlag(const std::string& binary, const std::string& flag,
                        const std::string& work_dir);
  ~VerifierProcess();
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  int pid() const { return pid_; }

 private:
  VerifierProcess() = default;
  int pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
};

// A model under test: loaded once, served by the verifier and used by the edge (the edge needs
// the target's first layers for split, and drafts with an early exit of it).
struct BenchModel {
  std::string name;  // "stories260k", "synth110m"
  std::string path;
  std::unique_ptr<model::Model> model;
  int draft_layers = 0;  // early-exit drafter after this many layers
  std::vector<int> split_layers;
  std::vector<std::string> prompts;
  int tokens = 64;  // per generation
  int runs = 3;     // measured generations per configuration
};

// Loads `name` ("stories260k" from the models directory: $TANDEM_MODELS_DIR or the build's
// default; "synth110m", created in `work` on first use) with its drafter depth, split layers,
// prompts and default sizes.
absl::StatusOr<BenchModel> LoadBenchModel(const std::string& name, const std::string& work);

// Writes `text` to `path` through a temporary file.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

// Creates the synthetic 110M model (dim 768, hidden 2048, 12 layers, 12 heads, vocab 32000,
// seq-len 1024, q8_0, seed 110) at `path` unless it exists.
absl::Status EnsureSynth110m(const std::string& path);

// One configuration of the edge: a name for the tables and the options it runs with.
struct EdgeConfig {
  std::string name;
  edge::EdgeOptions options;
};

// The auto mode's scheduler policy in the grid: spec, split (f32/int8) and cloud, gamma <= 8.
edge::SchedulerPolicy GridAutoPolicy();

// Scheduled auto mode under `policy`, the edge's own drafts up to policy.max_gamma per round.
edge::EdgeOptions AutoOptions(const edge::SchedulerPolicy& policy);

// cloud; spec with gamma 2, 4, 8; split k for each of `split_layers` x {f32, int8} (gamma
// `split_gamma`); auto (scheduled with GridAutoPolicy).
std::vector<EdgeConfig> GridConfigs(const std::vector<int>& split_layers, int split_gamma);

// A link emulator in front of 127.0.0.1:`upstream_port` and a channel through it.
struct EmulatedLink {
  std::unique_ptr<linkem::LinkEmulator> linkem;
  std::shared_ptr<grpc::Channel> channel;
  double started_at = 0;  // MonotonicSeconds() when the emulator started
};
absl::StatusOr<EmulatedLink> StartLink(int upstream_port, const linkem::LinkParams& params,
                                       const std::vector<linkem::LinkChange>& schedule = {});

// Runs one configuration over `channel`: one unmeasured warm-up generation, then `m.runs`
// measured ones, all with the same EdgeGenerator (auto keeps what it learned). The row's link
// fields are left for the caller.
GridRow MeasureConfig(const BenchModel& m, const EdgeConfig& config,
                      std::shared_ptr<grpc::Channel> channel);

// A fresh greedy early-exit drafter for `m` (after m.draft_layers layers of the target).
absl::StatusOr<std::unique_ptr<spec::Drafter>> MakeDrafter(const BenchModel& m);

}  // namespace tandem::bench

#endif  // TANDEM_BENCH_GRID_GRID_RUNNER_H_
