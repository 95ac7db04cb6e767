// tandem-bench: end-to-end benchmarks of the edge's configurations through an emulated link.
//
//   tandem-bench grid --out FILE.json [--quick] [--models stories260k,synth110m] [--tokens N]
//                     [--runs R] [--verifier-bin PATH] [--work DIR] [--rtts-ms 5,20,50,100]
//                     [--uplinks-kbps 500,2000,10000,100000] [--downlink-kbps 50000]
//                     [--split-layers 1,2,3] [--verifier-threads 1] [--verbose]
//   tandem-bench drop --out FILE.json [--tokens 256] [--rtt-ms 20] [--up-kbps 10000]
//                     [--drop-factor 10] [--downlink-kbps 50000] [--verifier-bin PATH] [--work DIR]
//                     [--verbose]
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
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/grid/grid_report.h"
#include "bench/grid/grid_runner.h"
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
    "                         [--verbose]\n";

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

std::string ModelsDir() {
  const char* env = std::getenv("TANDEM_MODELS_DIR");
  return env != nullptr && *env != '\0' ? env : TANDEM_DEFAULT_MODELS_DIR;
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

// Loads `name` ("stories260k" or "synth110m", the latter created in `work` on first use) with its
// drafter depth, split layers, prompts and default sizes.
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

absl::Status WriteFile(const std::string& path, const std::string& text) {
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
        if (absl::Status s = WriteFile(common->out, json); !s.ok()) return Fail(s);
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
  if (absl::Status s = WriteFile(common->out, json); !s.ok()) return Fail(s);
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  using namespace tandem;
  if (argc < 2 || (std::string(argv[1]) != "grid" && std::string(argv[1]) != "drop")) {
    std::fputs(bench::kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  auto flags = cmd == "grid"
                   ? Flags::Parse(args,
                                  {"out", "models", "tokens", "runs", "verifier-bin", "work", "rtts-ms",
                                   "uplinks-kbps", "downlink-kbps", "split-layers", "verifier-threads"},
                                  {"quick", "verbose"})
                   : Flags::Parse(args, {"out", "tokens", "rtt-ms", "up-kbps", "drop-factor",
                                         "downlink-kbps", "verifier-bin", "work", "verifier-threads"},
                                  {"verbose"});
  if (!flags.ok()) {
    std::fprintf(stderr, "tandem-bench: %s\n%s", flags.status().ToString().c_str(), bench::kUsage);
    return 2;
  }
  return cmd == "grid" ? bench::Grid(*flags) : bench::Drop(*flags);
}
