// tandem-bench: end-to-end benchmarks of the edge's configurations through an emulated link.
//
//   tandem-bench grid --out FILE.json [--quick] [--models stories260k,synth110m] [--tokens N]
//                     [--runs R] [--verifier-bin PATH] [--work DIR] [--rtts-ms 5,20,50,100]
//                     [--uplinks-kbps 500,2000,10000,100000] [--downlink-kbps 50000]
//                     [--split-layers 1,2,3] [--verifier-threads 1] [--verbose]
//   tandem-bench drop --out FILE.json [--tokens 256] [--rtt-ms 20] [--up-kbps 10000]
//                     [--drop-factor 10] [--downlink-kbps 50000] [--verifier-bin PATH] [--work DIR]
//                     [--verbose]
//   tandem-bench load --out FILE.json [--quick] [--models stories260k,synth110m]
//                     [--sessions 1,4,16,64,128] [--batching on,off] [--repeats 2] [--tokens N] [--gamma 4]
//                     [--corrupt 0.25] [--cloud-share 0] [--seed 1] [--rtt-ms 0] [--min-seconds 3]
//                     [--verifier-threads 2] [--verifier-args "ARGS"] [--verifier-bin PATH]
//                     [--work DIR]
//   tandem-bench overload --out FILE.json [--model synth110m] [--capacity 8] [--factor 4]
//                     [--waves 3] [--tokens 32] [--batching on|off] [--fast-ms 100] (and the
//                     oracle and verifier flags of load)
// --verbose prints the scheduler's decisions (EdgeOptions::on_debug) of the auto runs.
//
// grid: for every model, RTT and uplink, every configuration (cloud; spec with gamma 2, 4, 8;
// split with each layer and codec f32/int8; auto with the scheduler) generates greedily through a
// tandem_linkem emulator in front of a real tandem-verifier process: one warm-up generation,
// then R measured ones; tokens/s = generated tokens / wall time of Generate. The JSON holds one
// row per (model, cell, configuration), one summary per (model, cell) with auto against the best
// fixed configuration, and the share of cells where auto reaches 85% of the best. The file is
// rewritten after every cell, so an interrupted run leaves what it measured.
//
// drop: the synthetic 110M model in auto mode, once with the scheduler restricted to split
// (f32/int8) and once with the grid's auto policy; halfway through the generation (timed by a
// calibration run on the same link) the emulator's schedule divides the uplink by
// --drop-factor. The JSON holds each round's configuration and link estimates, and how many
// rounds after the drop the configuration changed and the uplink estimate came within 30%.
//
// load: the verifier's capacity. For every model, session count N and batching mode, a fresh
// tandem-verifier process serves a warm-up wave, then N sessions started at once by N threads of
// this process that draft with an oracle (bench/grid/load_runner.h): verified tokens/s, round
// latency percentiles, the verifier's batch sizes (its /metrics, before and after), peak and
// after-the-fact RSS, and every session's text checked against the target's own greedy
// continuation. Rows are rewritten to the JSON after each configuration.
//
// overload: a verifier with --max-sessions C gets waves of factor x C sessions at once: how fast
// the excess is refused (RESOURCE_EXHAUSTED), that the admitted ones are served correctly, and
// the verifier's RSS after each wave.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <sys/resource.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/grid/grid_report.h"
#include "bench/grid/grid_runner.h"
#include "bench/grid/load_report.h"
#include "bench/grid/load_runner.h"
#include "common/util/clock.h"
#include "common/util/flags.h"

namespace tandem::bench {
namespace {

constexpr char kUsage[] =
    "usage: tandem-bench grid --out FILE.json [--quick] [--models stories260k,synth110m]\n"
    "                         [--tokens N] [--runs R] [--verifier-bin PATH] [--work DIR]\n"
    "                         [--rtts-ms LIST] [--uplinks-kbps LIST] [--downlink-kbps K]\n"
    "                         [--split-layers LIST] [--verifier-threads T] [--verbose]\n"
    "       tandem-bench drop --out FILE.json [--tokens N] [--rtt-ms MS] [--up-kbps K]\n"
    "                         [--drop-factor F] [--downlink-kbps K] [--verifier-bin PATH] [--work DIR]\n"
    "                         [--verbose]\n"
    "       tandem-bench load --out FILE.json [--quick] [--models stories260k,synth110m]\n"
    "                         [--sessions 1,4,16,64,128] [--batching on,off] [--repeats R] [--tokens N] [--gamma G]\n"
    "                         [--corrupt P] [--cloud-share S] [--seed S] [--rtt-ms MS] [--min-seconds S]\n"
    "                         [--verifier-threads T] [--verifier-args \"ARGS\"] [--verifier-bin PATH]\n"
    "                         [--work DIR]\n"
    "       tandem-bench overload --out FILE.json [--model synth110m] [--capacity C] [--factor F]\n"
    "                         [--waves W] [--tokens N] [--batching on|off] [--fast-ms MS] (and the\n"
    "                         oracle and verifier flags of load)\n";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tandem-bench: error: %s\n", s.ToString().c_str());
  return 1;
}

// "5,20,50" -> {5, 20, 50}.
absl::StatusOr<std::vector<double>> ParseList(const Flags& flags, const std::string& name,
                                              const std::vector<double>& def) {
  if (!flags.Has(name)) return def;
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(flags.String(name), ',')) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": bad number '", std::string(part), "'"));
    }
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<double> PositiveNumber(const Flags& flags, const std::string& name, double def) {
  absl::StatusOr<std::vector<double>> v = ParseList(flags, name, {def});
  if (!v.ok()) return v.status();
  if (v->size() != 1) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes one number"));
  return v->front();
}

std::string SelfDir() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// Flags shared by both commands.
struct Common {
  std::string out, verifier_bin, work;
  int verifier_threads = 1;
  bool verbose = false;
};

// --verbose: the scheduler's one-line explanations on stderr.
void MaybeVerbose(const Common& c, edge::EdgeOptions* o) {
  if (!c.verbose) return;
  o->on_debug = [](const std::string& line) { std::fprintf(stderr, "tandem-bench:   %s\n", line.c_str()); };
}

absl::StatusOr<Common> ParseCommon(const Flags& flags) {
  Common c;
  if (!flags.Has("out")) return absl::InvalidArgumentError("--out FILE.json is required");
  c.out = flags.String("out");
  c.verifier_bin = flags.String("verifier-bin", SelfDir() + "/tandem-verifier");
  c.work = flags.String("work", "/tmp/tandem-bench-work");
  absl::StatusOr<int64_t> t = flags.Int("verifier-threads", 1, 1, 64);
  if (!t.ok()) return t.status();
  c.verifier_threads = static_cast<int>(*t);
  c.verbose = flags.Has("verbose");
  std::error_code ec;
  std::filesystem::create_directories(c.work, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", c.work, ": ", ec.message()));
  return c;
}

std::string JoinNumbers(const std::vector<double>& v) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(JsonNumber(x));
  return "[" + absl::StrJoin(parts, ", ") + "]";
}

std::string IntList(const std::vector<int>& v) { return "[" + absl::StrJoin(v, ", ") + "]"; }

std::string PolicyJson(const edge::SchedulerPolicy& p) {
  std::vector<std::string> modes, codecs;
  for (edge::RunMode m : p.allowed) modes.push_back(JsonQuote(edge::RunModeName(m)));
  for (const codec::CodecSpec& c : p.codecs) codecs.push_back(JsonQuote(codec::CodecSpecName(c)));
  JsonObject o;
  o.AddRaw("allowed", "[" + absl::StrJoin(modes, ", ") + "]")
      .AddRaw("codecs", "[" + absl::StrJoin(codecs, ", ") + "]")
      .Add("max_gamma", p.max_gamma).Add("min_split_layer", p.min_split_layer)
      .Add("hysteresis", p.hysteresis);
  return o.Str();
}

int Grid(const Flags& flags) {
  absl::StatusOr<Common> common = ParseCommon(flags);
  if (!common.ok()) return Fail(common.status());
  const bool quick = flags.Has("quick");
  auto rtts = ParseList(flags, "rtts-ms", quick ? std::vector<double>{5, 50} : std::vector<double>{5, 20, 50, 100});
  auto ups = ParseList(flags, "uplinks-kbps",
                       quick ? std::vector<double>{500, 10000} : std::vector<double>{500, 2000, 10000, 100000});
  auto down = PositiveNumber(flags, "downlink-kbps", 50000);
  for (const absl::Status& s : {rtts.status(), ups.status(), down.status()}) {
    if (!s.ok()) return Fail(s);
  }
  auto tokens = flags.Int("tokens", 0, 1, 1000);
  auto runs = flags.Int("runs", 0, 1, 100);
  for (const absl::Status& s : {tokens.status(), runs.status()}) {
    if (!s.ok()) return Fail(s);
  }
  std::vector<std::string> model_names =
      absl::StrSplit(flags.String("models", quick ? "stories260k" : "stories260k,synth110m"), ',');
  constexpr int kSplitGamma = 4;

  const double t_start = MonotonicSeconds();
  std::vector<GridRow> rows;
  std::vector<std::string> model_meta;
  for (const std::string& name : model_names) {
    absl::StatusOr<BenchModel> m = LoadBenchModel(name, common->work);
    if (!m.ok()) return Fail(m.status());
    if (quick) {
      m->tokens = 24;
      m->runs = 1;
      m->split_layers = {1, m->model->config().n_layers - 1};
    }
    if (*tokens > 0) m->tokens = static_cast<int>(*tokens);
    if (*runs > 0) m->runs = static_cast<int>(*runs);
    if (flags.Has("split-layers")) {
      m->split_layers.clear();
      for (absl::string_view part : absl::StrSplit(flags.String("split-layers"), ',')) {
        int k = 0;
        if (!absl::SimpleAtoi(part, &k) || k < 1 || k >= m->model->config().n_layers) {
          return Fail(absl::InvalidArgumentError(absl::StrCat("--split-layers: bad layer '", std::string(part), "'")));
        }
        m->split_layers.push_back(k);
      }
    }
    std::vector<EdgeConfig> configs = GridConfigs(m->split_layers, kSplitGamma);
    for (EdgeConfig& c : configs) MaybeVerbose(*common, &c.options);
    std::vector<std::string> prompts;
    for (const std::string& p : m->prompts) prompts.push_back(JsonQuote(p));
    model_meta.push_back(JsonObject()
                             .Add("name", m->name)
                             .Add("file", std::filesystem::path(m->path).filename().string())
                             .Add("layers", m->model->config().n_layers)
                             .Add("dim", m->model->config().dim)
                             .Add("vocab", m->model->config().vocab_size)
                             .Add("draft", absl::StrCat("early-exit:", m->draft_layers))
                             .AddRaw("split_layers", IntList(m->split_layers))
                             .Add("tokens", m->tokens)
                             .Add("runs", m->runs)
                             .AddRaw("prompts", "[" + absl::StrJoin(prompts, ", ") + "]")
                             .Str());

    auto verifier = VerifierProcess::Start(common->verifier_bin, m->path, common->verifier_threads,
                                           common->work, common->work + "/verifier-" + name + ".log");
    if (!verifier.ok()) return Fail(verifier.status());
    std::fprintf(stderr, "tandem-bench: %s: %zu cells x %zu configurations, %d+%d generations of %d tokens each\n",
                 name.c_str(), rtts->size() * ups->size(), configs.size(), 1, m->runs, m->tokens);
    for (double rtt : *rtts) {
      for (double up : *ups) {
        linkem::LinkParams lp;
        lp.rtt_ms = rtt;
        lp.up_kbps = up;
        lp.down_kbps = *down;
        auto link = StartLink((*verifier)->port(), lp);
        if (!link.ok()) return Fail(link.status());
        for (const EdgeConfig& c : configs) {
          GridRow row = MeasureConfig(*m, c, link->channel);
          row.rtt_ms = rtt;
          row.uplink_kbps = up;
          row.downlink_kbps = *down;
          std::fprintf(stderr, "tandem-bench: %s rtt %g ms up %g kbps  %-16s %9.1f tok/s %s%s%s\n",
                       name.c_str(), rtt, up, c.name.c_str(), row.tokens_per_s_median,
                       row.final_config.empty() ? "" : ("-> " + row.final_config).c_str(),
                       row.error.empty() ? "" : " ERROR ", row.error.c_str());
          rows.push_back(std::move(row));
        }
        link->linkem->Stop();

        // Rewritten after every cell: an interrupted run keeps what it measured.
        const std::vector<CellSummary> cells = Summarize(rows);
        std::vector<std::string> row_json, cell_json;
        for (const GridRow& r : rows) row_json.push_back(RowJson(r));
        for (const CellSummary& c : cells) cell_json.push_back(SummaryJson(c));
        int n_good = 0, n_cells = 0;
        for (const CellSummary& c : cells) {
          if (c.best_tokens_per_s <= 0) continue;
          ++n_cells;
          if (c.auto_ratio >= 0.85) ++n_good;
        }
        const std::string json = absl::StrCat(
            "{\n  \"bench\": \"grid\",\n  \"quick\": ", quick ? "true" : "false",
            ",\n  \"host_cpus\": ", std::thread::hardware_concurrency(),
            ",\n  \"rtts_ms\": ", JoinNumbers(*rtts), ",\n  \"uplinks_kbps\": ", JoinNumbers(*ups),
            ",\n  \"downlink_kbps\": ", JsonNumber(*down),
            ",\n  \"verifier_threads\": ", common->verifier_threads,
            ",\n  \"edge_threads\": 1,\n  \"sampling\": \"greedy\",\n  \"split_gamma\": ", kSplitGamma,
            ",\n  \"spec_gammas\": [2, 4, 8],\n  \"auto_policy\": ", PolicyJson(GridAutoPolicy()),
            ",\n  \"models\": ", JsonArrayLines(model_meta, 4),
            ",\n  \"wall_s\": ", JsonNumber(MonotonicSeconds() - t_start),
            ",\n  \"cells\": ", n_cells, ",\n  \"cells_auto_at_least_85pct\": ", n_good,
            ",\n  \"share_auto_at_least_85pct\": ", JsonNumber(ShareAtLeast(cells, 0.85)),
            ",\n  \"target_share\": 0.9",
            ",\n  \"summary\": ", JsonArrayLines(cell_json, 4),
            ",\n  \"rows\": ", JsonArrayLines(row_json, 4), "\n}\n");
        if (absl::Status s = WriteFileAtomically(common->out, json); !s.ok()) return Fail(s);
      }
    }
  }
  const std::vector<CellSummary> cells = Summarize(rows);
  for (const CellSummary& c : cells) {
    std::fprintf(stderr, "tandem-bench: %-12s rtt %5g ms up %7g kbps  best %-16s %9.1f  auto %9.1f (%5.1f%%) %s\n",
                 c.model.c_str(), c.rtt_ms, c.uplink_kbps, c.best_config.c_str(), c.best_tokens_per_s,
                 c.auto_tokens_per_s, 100 * c.auto_ratio, c.auto_config.c_str());
  }
  std::fprintf(stderr, "tandem-bench: auto >= 85%% of the best in %.0f%% of %zu cells; %.0f s; wrote %s\n",
               100 * ShareAtLeast(cells, 0.85), cells.size(), MonotonicSeconds() - t_start,
               common->out.c_str());
  return 0;
}

// One drop run: a calibration generation on the steady link (its duration places the drop), then
// a fresh edge on a fresh emulator whose schedule divides the uplink halfway through.
absl::StatusOr<std::string> DropRun(const Common& common, const BenchModel& m, int port,
                                    const std::string& name, const edge::SchedulerPolicy& policy,
                                    const linkem::LinkParams& lp, double factor) {
  const std::vector<int32_t> prompt = m.model->vocab().Encode(m.prompts[0], true);
  edge::EdgeOptions o = AutoOptions(policy);
  MaybeVerbose(common, &o);
  double calibration_s = 0;
  edge::EdgeStats calibration;
  {
    auto link = StartLink(port, lp);
    if (!link.ok()) return link.status();
    auto drafter = MakeDrafter(m);
    if (!drafter.ok()) return drafter.status();
    edge::EdgeGenerator gen(*m.model, drafter->get(), link->channel, o);
    const double t0 = MonotonicSeconds();
    absl::Status s = gen.Generate(prompt, m.tokens, [](int32_t, int32_t) {}, &calibration);
    if (!s.ok()) return s;
    calibration_s = MonotonicSeconds() - t0;
  }
  linkem::LinkChange change;
  change.at_s = calibration_s / 2;
  change.params = lp;
  change.params.up_kbps = lp.up_kbps / factor;
  std::vector<TimelinePoint> timeline;
  o.on_round = [&](const edge::RoundTrace& r) {
    timeline.push_back({r.t_s, r.config.Name(), r.tokens, r.bytes_up, r.bytes_down, r.est_up_bps, r.est_rtt_s});
  };
  auto link = StartLink(port, lp, {change});
  if (!link.ok()) return link.status();
  auto drafter = MakeDrafter(m);
  if (!drafter.ok()) return drafter.status();
  edge::EdgeGenerator gen(*m.model, drafter->get(), link->channel, o);
  edge::EdgeStats stats;
  const double t0 = MonotonicSeconds();
  absl::Status s = gen.Generate(prompt, m.tokens, [](int32_t, int32_t) {}, &stats);
  const double seconds = MonotonicSeconds() - t0;
  if (!s.ok()) return s;
  const double drop_t = link->started_at + change.at_s - t0;  // since Generate began
  const DropAnalysis a = AnalyzeDrop(timeline, drop_t, change.params.up_kbps * 1e3);
  std::fprintf(stderr,
               "tandem-bench: drop %-10s %lld tokens in %.2f s (calibration %.2f s), drop at %.2f s: "
               "%s -> %s, changed after %d rounds (%.2f s), estimate within 30%% after %d rounds "
               "(%.2f s); %.1f -> %.1f tok/s\n",
               name.c_str(), static_cast<long long>(stats.generated_tokens), seconds, calibration_s,
               drop_t, a.config_before.c_str(), a.config_final.c_str(), a.rounds_to_change,
               a.seconds_to_change, a.rounds_to_estimate, a.seconds_to_estimate,
               a.tokens_per_s_before, a.tokens_per_s_after);
  std::vector<std::string> points;
  for (const TimelinePoint& p : timeline) points.push_back(TimelinePointJson(p));
  return JsonObject()
             .Add("policy", name)
             .AddRaw("scheduler_policy", PolicyJson(policy))
             .Add("calibration_seconds", calibration_s)
             .Add("calibration_tokens_per_s",
                  calibration_s > 0 ? static_cast<double>(calibration.generated_tokens) / calibration_s : 0.0)
             .Add("calibration_final_config", calibration.final_config)
             .Add("generated_tokens", stats.generated_tokens)
             .Add("seconds", seconds)
             .Add("tokens_per_s", seconds > 0 ? static_cast<double>(stats.generated_tokens) / seconds : 0.0)
             .Add("drop_at_s", drop_t)
             .Add("up_kbps_after_drop", change.params.up_kbps)
             .Add("rounds", static_cast<int64_t>(timeline.size()))
             .Add("rounds_before_drop", a.rounds_before)
             .Add("config_before_drop", a.config_before)
             .Add("final_config", a.config_final)
             .Add("config_changes", stats.config_changes)
             .Add("session_switches", stats.session_switches)
             .Add("probes", stats.probes)
             .Add("rounds_to_config_change", a.rounds_to_change)
             .Add("seconds_to_config_change", a.seconds_to_change)
             .Add("rounds_to_estimate_within_30pct", a.rounds_to_estimate)
             .Add("seconds_to_estimate_within_30pct", a.seconds_to_estimate)
             .Add("tokens_per_s_before_drop", a.tokens_per_s_before)
             .Add("tokens_per_s_after_drop", a.tokens_per_s_after)
             .AddRaw("timeline", JsonArrayLines(points, 8))
             .Str();
}

int Drop(const Flags& flags) {
  absl::StatusOr<Common> common = ParseCommon(flags);
  if (!common.ok()) return Fail(common.status());
  auto tokens = flags.Int("tokens", 256, 8, 900);
  auto rtt = PositiveNumber(flags, "rtt-ms", 20);
  auto up = PositiveNumber(flags, "up-kbps", 10000);
  auto factor = PositiveNumber(flags, "drop-factor", 10);
  auto down = PositiveNumber(flags, "downlink-kbps", 50000);
  for (const absl::Status& s : {tokens.status(), rtt.status(), up.status(), factor.status(), down.status()}) {
    if (!s.ok()) return Fail(s);
  }
  absl::StatusOr<BenchModel> m = LoadBenchModel("synth110m", common->work);
  if (!m.ok()) return Fail(m.status());
  m->tokens = static_cast<int>(*tokens);
  auto verifier = VerifierProcess::Start(common->verifier_bin, m->path, common->verifier_threads,
                                         common->work, common->work + "/verifier-drop.log");
  if (!verifier.ok()) return Fail(verifier.status());
  linkem::LinkParams lp;
  lp.rtt_ms = *rtt;
  lp.up_kbps = *up;
  lp.down_kbps = *down;
  edge::SchedulerPolicy split_only = GridAutoPolicy();
  split_only.allowed = {edge::RunMode::kSplit};
  std::vector<std::string> runs;
  for (const auto& [name, policy] :
       std::vector<std::pair<std::string, edge::SchedulerPolicy>>{{"split-only", split_only},
                                                                  {"auto", GridAutoPolicy()}}) {
    absl::StatusOr<std::string> run = DropRun(*common, *m, (*verifier)->port(), name, policy, lp, *factor);
    if (!run.ok()) return Fail(run.status());
    runs.push_back(*run);
  }
  const std::string json = absl::StrCat(
      "{\n  \"bench\": \"drop\",\n  \"model\": \"synth110m\",\n  \"draft\": ",
      JsonQuote(absl::StrCat("early-exit:", m->draft_layers)), ",\n  \"tokens\": ", m->tokens,
      ",\n  \"prompt\": ", JsonQuote(m->prompts[0]), ",\n  \"rtt_ms\": ", JsonNumber(*rtt),
      ",\n  \"up_kbps\": ", JsonNumber(*up), ",\n  \"drop_factor\": ", JsonNumber(*factor),
      ",\n  \"downlink_kbps\": ", JsonNumber(*down),
      ",\n  \"verifier_threads\": ", common->verifier_threads, ",\n  \"edge_threads\": 1",
      ",\n  \"runs\": ", JsonArrayLines(runs, 4), "\n}\n");
  if (absl::Status s = WriteFileAtomically(common->out, json); !s.ok()) return Fail(s);
  return 0;
}

// A number in [lo, hi] (default `def`).
absl::StatusOr<double> NumberIn(const Flags& flags, const std::string& name, double def, double lo,
                                double hi) {
  if (!flags.Has(name)) return def;
  double v = 0;
  if (!absl::SimpleAtod(flags.String(name), &v) || !(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number in [", lo, ", ", hi, "], got '", flags.String(name), "'"));
  }
  return v;
}

// The oracle, session and verifier flags of load and overload.
absl::StatusOr<LoadSettings> ParseLoadSettings(const Flags& flags, const Common& common,
                                               int default_tokens) {
  LoadSettings s;
  s.verifier_bin = common.verifier_bin;
  s.work = common.work;
  // The edges are cheap threads here: the verifier gets both cores unless told otherwise.
  s.verifier_threads = flags.Has("verifier-threads") ? common.verifier_threads : 2;
  auto tokens = flags.Int("tokens", default_tokens, 1, 4000);
  auto gamma = flags.Int("gamma", 4, 0, 16);
  auto seed = flags.Uint64("seed", 1);
  auto corrupt = NumberIn(flags, "corrupt", 0.25, 0, 1);
  auto cloud = NumberIn(flags, "cloud-share", 0, 0, 1);
  auto rtt = NumberIn(flags, "rtt-ms", 0, 0, 10000);
  auto min_seconds = NumberIn(flags, "min-seconds", 3, 0, 3600);
  for (const absl::Status& st : {tokens.status(), gamma.status(), seed.status(), corrupt.status(),
                                 cloud.status(), rtt.status(), min_seconds.status()}) {
    if (!st.ok()) return st;
  }
  s.tokens = static_cast<int>(*tokens);
  s.gamma = static_cast<int>(*gamma);
  s.seed = *seed;
  s.corrupt = *corrupt;
  s.cloud_share = *cloud;
  s.rtt_ms = *rtt;
  s.min_seconds = *min_seconds;
  s.verifier_args = absl::StrSplit(flags.String("verifier-args"), ' ', absl::SkipEmpty());
  s.batching_flag = VerifierProcess::KnowsFlag(s.verifier_bin, "batching", s.work);
  if (!s.batching_flag) {
    std::fprintf(stderr, "tandem-bench: %s has no --batching flag: one mode only (\"default\")\n",
                 s.verifier_bin.c_str());
  }
  return s;
}

std::string StringList(const std::vector<std::string>& v) {
  std::vector<std::string> quoted;
  for (const std::string& x : v) quoted.push_back(JsonQuote(x));
  return "[" + absl::StrJoin(quoted, ", ") + "]";
}

std::string SettingsJson(const LoadSettings& s) {
  return JsonObject()
      .Add("verifier_threads", s.verifier_threads)
      .Add("verifier_batching_flag", s.batching_flag)
      .AddRaw("verifier_args", StringList(s.verifier_args))
      .Add("tokens_per_session", s.tokens)
      .Add("gamma", s.gamma)
      .Add("corrupt", s.corrupt)
      .Add("cloud_share", s.cloud_share)
      .Add("seed", static_cast<int64_t>(s.seed))
      .Add("rtt_ms", s.rtt_ms)
      .Add("min_seconds", s.min_seconds)
      .Add("warmup_sessions", s.warmup_sessions)
      .Add("warmup_tokens", s.warmup_tokens)
      .Str();
}

std::string ReferencesJson(const BenchModel& m, const LoadReferences& r) {
  std::vector<std::string> lengths;
  for (const Reference& ref : r.references) lengths.push_back(std::to_string(ref.tokens.size()));
  return JsonObject()
      .Add("name", m.name)
      .Add("file", std::filesystem::path(m.path).filename().string())
      .Add("layers", m.model->config().n_layers)
      .Add("dim", m.model->config().dim)
      .Add("vocab", m.model->config().vocab_size)
      .AddRaw("prompts", StringList(r.texts))
      .AddRaw("reference_tokens", "[" + absl::StrJoin(lengths, ", ") + "]")
      .Add("reference_seconds", r.seconds)
      .Add("max_tokens_per_session", r.context)
      .Str();
}

int64_t SelfPeakRss() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

int Load(const Flags& flags) {
  absl::StatusOr<Common> common = ParseCommon(flags);
  if (!common.ok()) return Fail(common.status());
  const bool quick = flags.Has("quick");
  absl::StatusOr<LoadSettings> s = ParseLoadSettings(flags, *common, quick ? 16 : 64);
  if (!s.ok()) return Fail(s.status());
  if (quick) {
    s->warmup_sessions = 2;
    s->warmup_tokens = 8;
    if (!flags.Has("min-seconds")) s->min_seconds = 0.2;
  }
  auto sessions = ParseList(flags, "sessions", quick ? std::vector<double>{1, 4}
                                                     : std::vector<double>{1, 4, 16, 64, 128});
  if (!sessions.ok()) return Fail(sessions.status());
  std::vector<std::string> modes = absl::StrSplit(flags.String("batching", "on,off"), ',');
  for (const std::string& mode : modes) {
    if (mode != "on" && mode != "off") {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--batching: '", mode, "' is not on or off")));
    }
  }
  if (!s->batching_flag) modes = {"default"};
  absl::StatusOr<int64_t> repeats_flag = flags.Int("repeats", quick ? 1 : 2, 1, 10);
  if (!repeats_flag.ok()) return Fail(repeats_flag.status());
  const int repeats = static_cast<int>(*repeats_flag);
  const std::vector<std::string> model_names =
      absl::StrSplit(flags.String("models", quick ? "stories260k" : "stories260k,synth110m"), ',');

  const double t_start = MonotonicSeconds();
  std::vector<LoadRow> rows;
  std::vector<std::string> model_meta;
  auto write = [&]() {
    const std::vector<BatchingComparison> comparisons = CompareBatching(rows);
    std::vector<std::string> row_json, cmp_json;
    for (const LoadRow& r : rows) row_json.push_back(LoadRowJson(r));
    double min_speedup = 0, min_speedup_110m_16 = 0;
    bool any = false, any_110m_16 = false;
    for (const BatchingComparison& c : comparisons) {
      cmp_json.push_back(ComparisonJson(c));
      min_speedup = any ? std::min(min_speedup, c.speedup) : c.speedup;
      any = true;
      if (c.model == "synth110m" && c.sessions >= 16) {
        min_speedup_110m_16 = any_110m_16 ? std::min(min_speedup_110m_16, c.speedup) : c.speedup;
        any_110m_16 = true;
      }
    }
    int64_t mismatches = 0, errors = 0;
    for (const LoadRow& r : rows) {
      mismatches += r.totals.mismatches + r.warmup_mismatches;
      errors += r.totals.errors + (r.error.empty() ? 0 : 1);
    }
    const std::string json = absl::StrCat(
        "{\n  \"bench\": \"load\",\n  \"quick\": ", quick ? "true" : "false",
        ",\n  \"host_cpus\": ", std::thread::hardware_concurrency(),
        ",\n  \"settings\": ", SettingsJson(*s),
        ",\n  \"models\": ", JsonArrayLines(model_meta, 4),
        ",\n  \"wall_s\": ", JsonNumber(MonotonicSeconds() - t_start),
        ",\n  \"bench_peak_rss_bytes\": ", SelfPeakRss(),
        ",\n  \"mismatches_total\": ", mismatches, ",\n  \"errors_total\": ", errors,
        ",\n  \"min_speedup\": ", any ? JsonNumber(min_speedup) : "null",
        ",\n  \"batching_never_loses\": ", any ? (min_speedup >= 0.95 ? "true" : "false") : "null",
        ",\n  \"min_speedup_synth110m_16plus\": ", any_110m_16 ? JsonNumber(min_speedup_110m_16) : "null",
        ",\n  \"batching_doubles_synth110m_16plus\": ",
        any_110m_16 ? (min_speedup_110m_16 >= 2 ? "true" : "false") : "null",
        ",\n  \"comparisons\": ", JsonArrayLines(cmp_json, 4),
        ",\n  \"rows\": ", JsonArrayLines(row_json, 4), "\n}\n");
    return WriteFileAtomically(common->out, json);
  };
  for (const std::string& name : model_names) {
    absl::StatusOr<BenchModel> m = LoadBenchModel(name, common->work);
    if (!m.ok()) return Fail(m.status());
    absl::StatusOr<LoadReferences> refs = MakeReferences(*m, *s);
    if (!refs.ok()) return Fail(refs.status());
    model_meta.push_back(ReferencesJson(*m, *refs));
    std::fprintf(stderr, "tandem-bench: %s: %zu prompts, references in %.1f s; %zu x %zu configurations\n",
                 name.c_str(), refs->prompts.size(), refs->seconds, sessions->size(), modes.size());
    for (double n : *sessions) {
      // Each mode `repeats` times, in alternating order (on, off, off, on, ...), so that a drift
      // of the machine's speed does not favour either.
      std::vector<std::string> order;
      for (int rep = 0; rep < repeats; ++rep) {
        if (rep % 2 == 0) {
          order.insert(order.end(), modes.begin(), modes.end());
        } else {
          order.insert(order.end(), modes.rbegin(), modes.rend());
        }
      }
      for (const std::string& mode : order) {
        LoadRow row = MeasureLoad(*m, *refs, static_cast<int>(n), mode, *s);
        std::fprintf(stderr,
                     "tandem-bench: %-12s N %4d batching %-7s %9.1f tok/s  round p50 %7.2f p99 %7.2f ms"
                     "  %d mismatches, %d errors%s%s\n",
                     name.c_str(), row.sessions, mode.c_str(), row.verified_tokens_per_s,
                     Percentile(row.totals.round_ms, 0.5), Percentile(row.totals.round_ms, 0.99),
                     row.totals.mismatches, row.totals.errors, row.error.empty() ? "" : " ERROR ", row.error.c_str());
        rows.push_back(std::move(row));
        if (absl::Status st = write(); !st.ok()) return Fail(st);
      }
    }
  }
  std::fputs(LoadTable(rows, CompareBatching(rows)).c_str(), stderr);
  std::fprintf(stderr, "tandem-bench: %.0f s; wrote %s\n", MonotonicSeconds() - t_start, common->out.c_str());
  return 0;
}

int Overload(const Flags& flags) {
  absl::StatusOr<Common> common = ParseCommon(flags);
  if (!common.ok()) return Fail(common.status());
  absl::StatusOr<LoadSettings> s = ParseLoadSettings(flags, *common, 32);
  if (!s.ok()) return Fail(s.status());
  auto capacity = flags.Int("capacity", 8, 1, 1024);
  auto factor = flags.Int("factor", 4, 2, 64);
  auto waves = flags.Int("waves", 3, 1, 100);
  auto fast_ms = PositiveNumber(flags, "fast-ms", 100);
  for (const absl::Status& st : {capacity.status(), factor.status(), waves.status(), fast_ms.status()}) {
    if (!st.ok()) return Fail(st);
  }
  const std::string batching = flags.String("batching", s->batching_flag ? "on" : "default");
  if (s->batching_flag ? (batching != "on" && batching != "off") : batching != "default") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--batching: '", batching, "' is not ",
                                                        s->batching_flag ? "on or off" : "available")));
  }
  s->warmup_sessions = static_cast<int>(*factor * *capacity);  // a wave like the measured ones
  s->warmup_tokens = s->tokens;
  const std::string name = flags.String("model", "synth110m");
  absl::StatusOr<BenchModel> m = LoadBenchModel(name, common->work);
  if (!m.ok()) return Fail(m.status());
  absl::StatusOr<LoadReferences> refs = MakeReferences(*m, *s);
  if (!refs.ok()) return Fail(refs.status());
  const double t_start = MonotonicSeconds();
  absl::StatusOr<OverloadRun> run = MeasureOverload(*m, *refs, static_cast<int>(*capacity),
                                                    static_cast<int>(*factor), static_cast<int>(*waves),
                                                    batching, *s);
  if (!run.ok()) return Fail(run.status());
  const OverloadVerdict v = JudgeOverload(run->waves, static_cast<int>(*capacity), *fast_ms);
  std::vector<std::string> wave_json;
  for (size_t i = 0; i < run->waves.size(); ++i) {
    const OverloadWave& w = run->waves[i];
    const SessionTotals& t = w.totals;
    wave_json.push_back(OverloadWaveJson(w));
    std::fprintf(stderr,
                 "tandem-bench: wave %zu: %d sessions, %d admitted, %d refused (p50 %.2f ms, p99 %.2f ms),"
                 " %d errors, %d mismatches, %.2f s, verifier RSS after %.1f MiB%s%s\n",
                 i + 1, w.sessions, t.admitted, t.refused, Percentile(t.refusal_ms, 0.5),
                 Percentile(t.refusal_ms, 0.99), t.errors, t.mismatches, w.wall_s,
                 static_cast<double>(w.rss_after_bytes) / (1 << 20),
                 t.first_error.empty() ? "" : "; first error: ", t.first_error.c_str());
  }
  std::fprintf(stderr,
               "tandem-bench: overload: exactly %lld admitted per wave: %s; correct: %s; refusals p99 "
               "%.2f ms <= %g ms: %s; RSS growth over the waves %+.1f MiB: %s\n",
               static_cast<long long>(*capacity), v.admitted_exactly_capacity ? "yes" : "NO",
               v.correct ? "yes" : "NO", v.refusal_p99_ms, *fast_ms, v.fast_refusals ? "yes" : "NO",
               static_cast<double>(v.rss_growth_bytes) / (1 << 20), v.rss_stable ? "stable" : "GROWS");
  const std::string json = absl::StrCat(
      "{\n  \"bench\": \"overload\",\n  \"host_cpus\": ", std::thread::hardware_concurrency(),
      ",\n  \"settings\": ", SettingsJson(*s), ",\n  \"model\": ", ReferencesJson(*m, *refs),
      ",\n  \"batching\": ", JsonQuote(batching), ",\n  \"capacity\": ", *capacity,
      ",\n  \"factor\": ", *factor, ",\n  \"fast_ms\": ", JsonNumber(*fast_ms),
      ",\n  \"wall_s\": ", JsonNumber(MonotonicSeconds() - t_start),
      ",\n  \"rss_after_warmup_bytes\": ", run->rss_after_warmup_bytes,
      ",\n  \"peak_rss_bytes\": ", run->peak_rss_bytes,
      ",\n  \"admitted_exactly_capacity\": ", v.admitted_exactly_capacity ? "true" : "false",
      ",\n  \"correct\": ", v.correct ? "true" : "false",
      ",\n  \"p50_refusal_ms\": ", JsonNumber(v.refusal_p50_ms),
      ",\n  \"p99_refusal_ms\": ", JsonNumber(v.refusal_p99_ms),
      ",\n  \"fast_refusals\": ", v.fast_refusals ? "true" : "false",
      ",\n  \"rss_growth_bytes\": ", v.rss_growth_bytes,
      ",\n  \"rss_stable\": ", v.rss_stable ? "true" : "false",
      ",\n  \"waves\": ", JsonArrayLines(wave_json, 4), "\n}\n");
  if (absl::Status st = WriteFileAtomically(common->out, json); !st.ok()) return Fail(st);
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  using namespace tandem;
  const std::string cmd = argc < 2 ? "" : argv[1];
  // The oracle, session and verifier flags of load and overload.
  const std::set<std::string> load_flags = {"out",  "tokens", "gamma", "corrupt", "cloud-share",
                                            "seed", "rtt-ms", "verifier-threads", "verifier-args",
                                            "verifier-bin", "work", "batching"};
  std::set<std::string> known, boolean;
  if (cmd == "grid") {
    known = {"out", "models", "tokens", "runs", "verifier-bin", "work", "rtts-ms",
             "uplinks-kbps", "downlink-kbps", "split-layers", "verifier-threads"};
    boolean = {"quick", "verbose"};
  } else if (cmd == "drop") {
    known = {"out", "tokens", "rtt-ms", "up-kbps", "drop-factor", "downlink-kbps", "verifier-bin",
             "work", "verifier-threads"};
    boolean = {"verbose"};
  } else if (cmd == "load") {
    known = load_flags;
    known.insert({"models", "sessions", "min-seconds", "repeats"});
    boolean = {"quick"};
  } else if (cmd == "overload") {
    known = load_flags;
    known.insert({"model", "capacity", "factor", "waves", "fast-ms"});
  } else {
    std::fputs(bench::kUsage, stderr);
    return 2;
  }
  auto flags = Flags::Parse(std::vector<std::string>(argv + 2, argv + argc), known, boolean);
  if (!flags.ok()) {
    std::fprintf(stderr, "tandem-bench: %s\n%s", flags.status().ToString().c_str(), bench::kUsage);
    return 2;
  }
  if (cmd == "grid") return bench::Grid(*flags);
  if (cmd == "drop") return bench::Drop(*flags);
  if (cmd == "load") return bench::Load(*flags);
  return bench::Overload(*flags);
}
