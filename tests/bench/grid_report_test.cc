// The benchmark grid's report logic: medians, the per-cell summary (auto against the best fixed
// configuration, failed rows never best), the share of cells where auto reaches 85%, the
// uplink-drop analysis, and JSON text that python's json module reads back; and a one-cell run of
// tandem-bench itself (a real verifier behind the link emulator) whose JSON has every row.
#include "bench/grid/grid_report.h"

#include <cstdio>
#include <fstream>
#include <limits>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::bench {
namespace {

GridRow Row(const std::string& model, double rtt, double up, const std::string& config, double tps,
            const std::string& error = "") {
  GridRow r;
  r.model = model;
  r.rtt_ms = rtt;
  r.uplink_kbps = up;
  r.config = config;
  r.mode = config.substr(0, config.find(' '));
  r.tokens_per_s = {tps};
  r.tokens_per_s_median = tps;
  r.error = error;
  if (r.mode == "auto") r.final_config = "spec g4";
  return r;
}

TEST(GridReportTest, Median) {
  EXPECT_EQ(Median({}), 0);
  EXPECT_EQ(Median({3, 1, 2}), 2);
  EXPECT_EQ(Median({4, 1, 3, 2}), 2.5);
}

TEST(GridReportTest, SummaryComparesAutoWithTheBestFixedConfiguration) {
  const std::vector<GridRow> rows = {
      Row("m", 5, 500, "cloud", 100),       Row("m", 5, 500, "spec g4", 150),
      Row("m", 5, 500, "split k1 f32", 900, "run 0: UNAVAILABLE"),  // failed: never the best
      Row("m", 5, 500, "auto", 140),        Row("m", 5, 2000, "cloud", 100),
      Row("m", 5, 2000, "auto", 50),        Row("n", 5, 500, "cloud", 10),  // no auto row
  };
  const std::vector<CellSummary> cells = Summarize(rows);
  ASSERT_EQ(cells.size(), 3u);
  EXPECT_EQ(cells[0].best_config, "spec g4");
  EXPECT_DOUBLE_EQ(cells[0].best_tokens_per_s, 150);
  EXPECT_DOUBLE_EQ(cells[0].auto_tokens_per_s, 140);
  EXPECT_NEAR(cells[0].auto_ratio, 140.0 / 150, 1e-12);
  EXPECT_EQ(cells[0].auto_config, "spec g4");
  EXPECT_EQ(cells[1].uplink_kbps, 2000);
  EXPECT_DOUBLE_EQ(cells[1].auto_ratio, 0.5);
  EXPECT_EQ(cells[2].model, "n");
  EXPECT_EQ(cells[2].auto_ratio, 0);
  // 1 of 3 cells reaches 85%: the cell without auto counts as a miss.
  EXPECT_NEAR(ShareAtLeast(cells, 0.85), 1.0 / 3, 1e-12);
  EXPECT_EQ(ShareAtLeast({}, 0.85), 0);
}

TEST(GridReportTest, DropAnalysisCountsRoundsAfterTheDrop) {
  std::vector<TimelinePoint> t;
  for (int i = 1; i <= 10; ++i) {
    TimelinePoint p;
    p.t_s = i;
    p.tokens = 2;
    p.config = i <= 7 ? "split k3 f32 g4" : "split k3 int8 g4";
    // The estimate follows the drop (10 -> 1 Mbit/s at t = 4.5) over a few rounds.
    p.est_up_bps = i <= 4 ? 10e6 : (i == 5 ? 5e6 : (i == 6 ? 1.5e6 : 1.2e6));
    t.push_back(p);
  }
  const DropAnalysis a = AnalyzeDrop(t, 4.5, 1e6);
  EXPECT_EQ(a.rounds_before, 4);
  EXPECT_EQ(a.rounds_after, 6);
  EXPECT_EQ(a.config_before, "split k3 f32 g4");
  EXPECT_EQ(a.config_final, "split k3 int8 g4");
  EXPECT_EQ(a.rounds_to_change, 4);  // t = 8
  EXPECT_DOUBLE_EQ(a.seconds_to_change, 3.5);
  EXPECT_EQ(a.rounds_to_estimate, 3);  // 1.2e6 is within 30% of 1e6, 1.5e6 is not
  EXPECT_DOUBLE_EQ(a.tokens_per_s_before, 2.0);
  EXPECT_DOUBLE_EQ(a.tokens_per_s_after, 2.0);

  const DropAnalysis never = AnalyzeDrop(t, 4.5, 100e6);
  EXPECT_EQ(never.rounds_to_estimate, -1);
  EXPECT_EQ(never.seconds_to_estimate, -1);
}

bool HavePython() { return tandem::testing::RunShell("command -v python3 >/dev/null") == 0; }

// Runs the python `checks` (asserts on `j`, the JSON in `json_path`): true when they all pass.
bool PythonChecks(const std::string& dir, const std::string& json_path, const std::string& checks) {
  std::ofstream(dir + "/check.py") << "import json,sys; j=json.load(open(sys.argv[1])); " << checks;
  return tandem::testing::RunShell("python3 " + dir + "/check.py " + json_path) == 0;
}

TEST(GridReportTest, JsonIsReadBackByPython) {
  if (!HavePython()) GTEST_SKIP() << "no python3";
  GridRow r = Row("m", 20, 500, "auto", 123.5);
  r.tokens_per_s = {120.25, 123.5, 130};
  const CellSummary cell = Summarize({r})[0];
  r.error = "quote \" backslash \\ newline \n tab \t bell \x07";
  JsonObject top;
  top.Add("n", 3).Add("x", 0.1).Add("inf", std::numeric_limits<double>::infinity()).Add("ok", true)
      .AddRaw("rows", JsonArrayLines({RowJson(r), SummaryJson(cell)}, 4));
  const std::string dir = tandem::testing::TempDir();
  std::ofstream(dir + "/g.json") << top.Str();
  EXPECT_TRUE(PythonChecks(
      dir, dir + "/g.json",
      "r=j['rows'][0]; "
      "assert j['n']==3 and j['x']==0.1 and j['inf'] is None and j['ok'] is True; "
      "assert r['error']=='quote \" backslash \\\\ newline \\n tab \\t bell \\x07', r['error']; "
      "assert r['tokens_per_s_runs']==[120.25,123.5,130] and r['final_config']=='spec g4'; "
      "assert j['rows'][1]['auto_tokens_per_s']==123.5"));
}

TEST(GridReportTest, OneCellOfTheGridEndToEnd) {
  if (!HavePython()) GTEST_SKIP() << "no python3";
  const std::string dir = tandem::testing::TempDir();
  const std::string bench = std::string(TANDEM_BIN_DIR) + "/tandem-bench";
  ASSERT_EQ(tandem::testing::RunShell(
                bench + " grid --quick --rtts-ms 5 --uplinks-kbps 10000 --tokens 8 --runs 1 " +
                "--split-layers 2 --out " + dir + "/grid.json --work " + dir + " 2>" + dir + "/err"),
            0)
      << tandem::testing::ReadFileOrDie(dir + "/err");
  // cloud, spec g2/g4/g8, split k2 f32/int8, auto: all measured, one summary cell.
  EXPECT_TRUE(PythonChecks(
      dir, dir + "/grid.json",
      "rows=j['rows']; "
      "assert [r['config'] for r in rows]==['cloud','spec g2','spec g4','spec g8','split k2 f32',"
      "'split k2 int8','auto'], rows; "
      "assert all(not r.get('error') and r['tokens_per_s']>0 and r['generated_tokens']>0 for r in rows), rows; "
      "assert all(r['bytes_up_per_token']>0 and r['target_passes_per_token']>0 for r in rows), rows; "
      "assert rows[4]['bytes_up_per_token']>rows[5]['bytes_up_per_token'], 'int8 sends less than f32'; "
      "s=j['summary']; assert len(s)==1 and s[0]['best_tokens_per_s']>0 and s[0]['auto_ratio']>0, s; "
      "assert j['cells']==1 and j['downlink_kbps']==50000"));
}

}  // namespace
}  // namespace tandem::bench
