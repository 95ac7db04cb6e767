// The load benchmark's results and the pure logic behind them (unit-tested without a verifier):
// percentiles, Prometheus histograms read from /metrics text and their differences, the oracle
// drafter's deterministic corruption and the verdict the reference predicts, the per-configuration
// row with its JSON, the batching on/off comparison, the printed table, and the overload waves.
// Thread-safety: plain values and pure functions.
#ifndef TANDEM_BENCH_GRID_LOAD_REPORT_H_
#define TANDEM_BENCH_GRID_LOAD_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tandem::bench {

// The q-quantile (0 <= q <= 1) with linear interpolation between order statistics; 0 when empty.
double Percentile(std::vector<double> v, double q);

// Prometheus series as "name" or "name{label=\"v\"}" -> value (tests/cloud/http_get.h's
// ParsePrometheusText reads them from /metrics text).
using Series = std::map<std::string, double>;

// One Prometheus histogram: cumulative counts per upper bound (the last bound is +inf).
struct Histogram {
  bool present = false;  // the series exists in the scrape
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count), ascending le
  double sum = 0, count = 0;
  double Mean() const { return count > 0 ? sum / count : 0; }
};
Histogram HistogramFrom(const Series& series, const std::string& name);
// after - before, bucket by bucket (absent when either is absent or the bounds differ).
Histogram HistogramDiff(const Histogram& after, const Histogram& before);
// {"mean": m, "count": n, "buckets": [{"le": 1, "count": c}, ..., {"le": "+Inf", "count": c}]}
// with per-bucket (not cumulative) counts; null when absent.
std::string HistogramJson(const Histogram& h);
// The sum of every series of `name` (all label values) in `series`; -1 when there is none.
double SeriesTotal(const Series& series, const std::string& name);

// The oracle drafter: the reference continuation, each draft token replaced by another id with
// probability `corrupt`, decided by a hash of (seed, session, position) so that a run repeats.
struct OracleOptions {
  double corrupt = 0.25;
  uint64_t seed = 1;
  int vocab = 0;
};
// The draft token for generated position `position` (0 = the first token after the prompt) of
// session `session`: reference[position], or with probability corrupt another id in [0, vocab).
int32_t OracleToken(const std::vector<int32_t>& reference, int session, int position,
                    const OracleOptions& o);

// A prompt's greedy continuation: the target's tokens, and the BOS/EOS the target chose after
// the last of them when it stopped there (-1 when it did not stop).
struct Reference {
  std::vector<int32_t> tokens;
  int32_t end_token = -1;
};

// What the verifier must answer to a chain draft of `draft` at generated position `gen`.
struct ExpectedVerdict {
  int accepted = 0;
  int32_t next_token = -1;  // -1: beyond the reference (not checkable)
  bool ends = false;        // next_token is the end token: the generation is over
};
ExpectedVerdict Expect(const Reference& ref, int gen, const std::vector<int32_t>& draft);

// What the sessions of one wave did, summed.
struct SessionTotals {
  int admitted = 0, refused = 0, errors = 0, mismatches = 0;  // mismatches: sessions whose
                                                              // committed text is not the reference
  std::string first_error;  // of the first session that failed (other than by a refusal)
  int64_t committed_tokens = 0;  // by the verifier, checked against the reference
  int64_t rounds = 0, drafted = 0, accepted = 0;
  std::vector<double> round_ms;    // every spec round, DraftRound sent -> Verdict received
  std::vector<double> first_round_ms;  // the first round of every spec session (also in round_ms)
  std::vector<double> open_ms;     // every admitted session: call start -> SessionOpened
  std::vector<double> refusal_ms;  // every refused session: call start -> RESOURCE_EXHAUSTED
};

// One configuration (model x sessions x batching) of `tandem-bench load`.
struct LoadRow {
  std::string model;
  int sessions = 0;
  std::string batching;  // "on", "off", or "default" (a verifier without --batching)
  int cloud_sessions = 0;
  int tokens_per_session = 0, gamma = 0;
  double corrupt = 0;
  // Measured phase: waves of `sessions` sessions started at once, each until its last session
  // ended; wall time of the waves together.
  int waves = 0;
  double wall_s = 0;
  SessionTotals totals;
  double verified_tokens_per_s = 0;  // totals.committed_tokens / wall_s
  int warmup_mismatches = 0;
  // The verifier process (/proc/PID/status): VmHWM at the end of the measured phase, VmRSS before
  // it (after the warm-up) and after every session ended.
  int64_t peak_rss_bytes = 0, rss_before_bytes = 0, rss_after_bytes = 0;
  // From the verifier's /metrics, differences over the measured phase.
  Histogram batch_sessions, batch_tokens, verify_batch_tokens;
  double engine_passes = -1, verify_passes = -1, generated_metric = -1;
  // CPU seconds (user + system) over the measured phase: the verifier process, and this one (the
  // edges' threads and gRPC's).
  double verifier_cpu_s = 0, bench_cpu_s = 0;
  std::map<std::string, double> rejections;  // reason -> count, non-zero only
  std::string error;  // the configuration could not run (verifier start, scrape)
};
std::string LoadRowJson(const LoadRow& row);

// Batching on against off for one (model, sessions).
struct BatchingComparison {
  std::string model;
  int sessions = 0;
  double on_tokens_per_s = 0, off_tokens_per_s = 0;
  double speedup = 0;  // on / off (means over the repeats); 0 when either is missing
  int repeats = 1;      // measurements of each mode
};
std::vector<BatchingComparison> CompareBatching(const std::vector<LoadRow>& rows);
std::string ComparisonJson(const BatchingComparison& c);

// The printed summary: one line per row, then one per comparison.
std::string LoadTable(const std::vector<LoadRow>& rows,
                      const std::vector<BatchingComparison>& comparisons);

// `tandem-bench overload`: waves of `factor` x capacity sessions started at once.
struct OverloadWave {
  int sessions = 0;
  SessionTotals totals;
  double wall_s = 0;
  int64_t rss_after_bytes = 0;  // verifier VmRSS once every session of the wave ended
  std::map<std::string, double> rejections;
};
std::string OverloadWaveJson(const OverloadWave& w);
// The overload criteria: exactly `capacity` admitted and the rest refused in every wave, no
// errors or mismatches, refusals' p99 under `fast_ms`, and RSS after the last wave within
// `rss_slack` (relative, or 4 MiB if larger) of the RSS after the first.
struct OverloadVerdict {
  bool admitted_exactly_capacity = false, correct = false, fast_refusals = false, rss_stable = false;
  double refusal_p50_ms = 0, refusal_p99_ms = 0;
  int64_t rss_growth_bytes = 0;
};
OverloadVerdict JudgeOverload(const std::vector<OverloadWave>& waves, int capacity, double fast_ms,
                              double rss_slack = 0.02);

}  // namespace tandem::bench

#endif  // TANDEM_BENCH_GRID_LOAD_REPORT_H_
