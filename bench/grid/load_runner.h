// The verifier under load for tandem-bench load / overload: a real tandem-verifier child process
// per configuration, and N cheap edges in this process, one thread each, speaking the
// tandem.v1 Verifier.Session protocol directly (OpenSession, Prompt, then DraftRound/Verdict, or
// cloud mode's CloudTokens). The edges draft with an oracle: the target's greedy continuation of
// their prompt, computed once here, each draft token corrupted with a fixed, deterministic chance,
// so that acceptance is realistic and every verdict can be checked against the reference. The
// edges cost little CPU next to the verifier, whose capacity is what is measured.
// Thread-safety: MeasureLoad and MeasureOverload are called from one thread; they start and join
// their own session threads.
#ifndef TANDEM_BENCH_GRID_LOAD_RUNNER_H_
#define TANDEM_BENCH_GRID_LOAD_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/grid/grid_runner.h"
#include "bench/grid/load_report.h"

namespace tandem::bench {

struct LoadSettings {
  std::string verifier_bin, work;
  int verifier_threads = 2;
  int tokens = 64;           // generated per session (the oracle stops there)
  int gamma = 4;             // drafts per round
  double corrupt = 0.25;     // chance that a draft token is wrong
  double cloud_share = 0;    // share of the sessions in cloud mode
  uint64_t seed = 1;
  double min_seconds = 3;    // the measured phase: waves of N sessions until this long ...
  int max_waves = 100;       // ... or this many waves
  int warmup_sessions = 4;   // the warm-up wave: min(N, this) sessions ...
  int warmup_tokens = 16;    // ... of this many tokens
  double session_timeout_s = 300;
  double rtt_ms = 0;         // > 0: the sessions go through a tandem_linkem emulator
  bool batching_flag = true;  // the verifier knows --batching (else rows say "default")
  std::vector<std::string> verifier_args;  // appended to every verifier's command line
};

// A model's prompts (several; sessions cycle through them) and their greedy continuations.
struct LoadReferences {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Reference> references;  // tokens + gamma + 1 long unless the target stops first
  int context = 0;                    // positions a session needs: longest prompt + tokens + gamma + 2
  double seconds = 0;                 // time it took
};
absl::StatusOr<LoadReferences> MakeReferences(const BenchModel& m, const LoadSettings& s);

// One configuration: a fresh verifier (batching "on", "off", or "default": no --batching flag)
// for `sessions` concurrent sessions, a warm-up wave, then waves of all `sessions` at once until
// s.min_seconds (tokens/s over the waves' wall time together). Errors end up in the row.
LoadRow MeasureLoad(const BenchModel& m, const LoadReferences& refs, int sessions,
                    const std::string& batching, const LoadSettings& s);

// Overload: a verifier with --max-sessions `capacity`, then 1 + `waves` waves (the first one
// unmeasured) of `factor` x `capacity` sessions started at once; the admitted ones hold until
// every session of the wave has its answer (so exactly `capacity` are admitted), then generate.
struct OverloadRun {
  std::vector<OverloadWave> waves;
  int64_t rss_after_warmup_bytes = 0, peak_rss_bytes = 0;
};
absl::StatusOr<OverloadRun> MeasureOverload(const BenchModel& m, const LoadReferences& refs,
                                            int capacity, int factor, int waves,
                                            const std::string& batching, const LoadSettings& s);

// CPU seconds (user + system) a process used so far (/proc/PID/stat); 0 when unreadable.
double ProcCpuSeconds(int pid);

// Bytes of a /proc/PID/status field given in kB ("VmHWM", "VmRSS"); 0 when unreadable.
int64_t ProcStatusBytes(int pid, const std::string& field);

}  // namespace tandem::bench

#endif  // TANDEM_BENCH_GRID_LOAD_RUNNER_H_
