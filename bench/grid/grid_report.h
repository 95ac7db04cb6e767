// The benchmark grid's results and their summary, independent of how they were measured (so the
// summary logic is unit-tested without a network): one GridRow per (model, link cell,
// configuration), one CellSummary per (model, link cell) comparing `auto` with the best fixed
// configuration, and a small JSON writer for both.
// Thread-safety: plain values and pure functions.
#ifndef TANDEM_BENCH_GRID_GRID_REPORT_H_
#define TANDEM_BENCH_GRID_GRID_REPORT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::bench {

// One (model, cell, configuration): R measured generations after one unmeasured warm-up.
struct GridRow {
  std::string model;
  double rtt_ms = 0;
  double uplink_kbps = 0, downlink_kbps = 0;
  std::string config;   // "cloud", "spec g4", "split k2 int8", "auto"
  std::string mode;     // "cloud", "spec", "split", "auto"
  int gamma = 0;        // drafts per round (spec, split); 0 otherwise
  int split_layer = 0;  // split only
  std::string codec;    // split only ("f32", "int8"); empty otherwise
  std::vector<double> tokens_per_s;  // each measured run
  double tokens_per_s_median = 0;
  int64_t generated_tokens = 0;      // over the measured runs
  double bytes_up_per_token = 0, bytes_down_per_token = 0;
  double target_passes_per_token = 0;
  double seconds = 0;                // wall time of the measured runs together
  // auto: what the scheduler settled on at the end of the last measured run, and how often it
  // changed its mind / opened a new session over the measured runs.
  std::string final_config;
  int64_t config_changes = 0, session_switches = 0;
  std::string error;  // non-empty when a generation failed (the row then has no speed)
};

// Per (model, cell): the fastest fixed configuration against auto.
struct CellSummary {
  std::string model;
  double rtt_ms = 0, uplink_kbps = 0;
  std::string best_config;
  double best_tokens_per_s = 0;
  double auto_tokens_per_s = 0;
  double auto_ratio = 0;  // auto / best; 0 when either is missing
  std::string auto_config;
};

double Median(std::vector<double> v);  // 0 for an empty vector

// One summary per (model, rtt, uplink) in order of first appearance; rows with an error never
// count as the best.
std::vector<CellSummary> Summarize(const std::vector<GridRow>& rows);

// The share of cells (those with a measured fixed configuration; a cell without an auto row is a
// miss) whose auto_ratio is at least `threshold`; 0 if there are none.
double ShareAtLeast(const std::vector<CellSummary>& cells, double threshold);

// JSON text: a string literal with escapes, a finite number (non-finite numbers become null).
std::string JsonQuote(std::string_view s);
std::string JsonNumber(double v);

// An object written in insertion order on one line: {"a": 1, "b": "x"}.
class JsonObject {
 public:
  JsonObject& Add(std::string_view key, std::string_view value);  // a string
  JsonObject& Add(std::string_view key, const char* value) { return Add(key, std::string_view(value)); }
  JsonObject& Add(std::string_view key, double value);
  JsonObject& Add(std::string_view key, int64_t value);
  JsonObject& Add(std::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonObject& Add(std::string_view key, bool value);
  JsonObject& Add(std::string_view key, const std::vector<double>& values);
  JsonObject& AddRaw(std::string_view key, std::string raw_json);  // already JSON
  std::string Str() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// "[\n  a,\n  b\n]" with one element per line, each indented by `indent` spaces.
std::string JsonArrayLines(const std::vector<std::string>& elements, int indent = 4);

std::string RowJson(const GridRow& row);
std::string SummaryJson(const CellSummary& cell);

// The uplink-drop run: one point per round (from edge::EdgeOptions::on_round).
struct TimelinePoint {
  double t_s = 0;  // end of the round, since Generate began
  std::string config;
  int tokens = 0;
  int64_t bytes_up = 0, bytes_down = 0;
  double est_up_bps = 0, est_rtt_s = 0;
};

struct DropAnalysis {
  std::string config_before;  // in use by the last round before the drop
  std::string config_final;   // of the last round
  int rounds_before = 0, rounds_after = 0;
  // Rounds ending after the drop, counted from 1, until the first one that ran another
  // configuration / whose uplink estimate was within `tolerance` of the new rate; -1: never.
  int rounds_to_change = -1, rounds_to_estimate = -1;
  double seconds_to_change = -1, seconds_to_estimate = -1;  // from the drop to that round's end
  double tokens_per_s_before = 0, tokens_per_s_after = 0;
};
DropAnalysis AnalyzeDrop(const std::vector<TimelinePoint>& timeline, double drop_t_s,
                         double new_up_bps, double tolerance = 0.3);
std::string TimelinePointJson(const TimelinePoint& p);

}  // namespace tandem::bench

#endif  // TANDEM_BENCH_GRID_GRID_REPORT_H_
