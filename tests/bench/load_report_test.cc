// The load benchmark's report logic: percentiles, Prometheus histograms and their differences,
// the oracle drafter and the verdicts the reference predicts, the batching comparison, the
// overload criteria, JSON that python reads back; and tiny real runs of `tandem-bench load` and
// `tandem-bench overload` (stories260K, real verifier processes) whose sessions are all correct.
#include "bench/grid/load_report.h"

#include <cmath>
#include <fstream>

#include "bench/grid/grid_report.h"

#include "gtest/gtest.h"
#include "tests/cloud/http_get.h"
#include "tests/test_util.h"

namespace tandem::bench {
namespace {

TEST(LoadReportTest, Percentile) {
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({7}, 0.99), 7);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5}, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5}, 1), 5);
  std::vector<double> hundred;
  for (int i = 1; i <= 101; ++i) hundred.push_back(i);
  EXPECT_DOUBLE_EQ(Percentile(hundred, 0.99), 100);
}

constexpr char kBefore[] =
    "# TYPE tandem_engine_batch_sessions histogram\n"
    "tandem_engine_batch_sessions_bucket{le=\"1\"} 3\n"
    "tandem_engine_batch_sessions_bucket{le=\"2\"} 4\n"
    "tandem_engine_batch_sessions_bucket{le=\"+Inf\"} 4\n"
    "tandem_engine_batch_sessions_sum 5\n"
    "tandem_engine_batch_sessions_count 4\n"
    "tandem_rejections_total{reason=\"session_limit\"} 1\n"
    "tandem_rejections_total{reason=\"quota\"} 0\n"
    "tandem_generated_tokens_total{mode=\"cloud\"} 10\n"
    "tandem_generated_tokens_total{mode=\"spec\"} 5\n";
constexpr char kAfter[] =
    "tandem_engine_batch_sessions_bucket{le=\"1\"} 4\n"
    "tandem_engine_batch_sessions_bucket{le=\"2\"} 6\n"
    "tandem_engine_batch_sessions_bucket{le=\"+Inf\"} 9\n"
    "tandem_engine_batch_sessions_sum 34\n"
    "tandem_engine_batch_sessions_count 9\n"
    "tandem_generated_tokens_total{mode=\"cloud\"} 12\n"
    "tandem_generated_tokens_total{mode=\"spec\"} 25\n";

TEST(LoadReportTest, HistogramsFromMetricsText) {
  const Series before = testing::ParsePrometheusText(kBefore);
  const Series after = testing::ParsePrometheusText(kAfter);
  const Histogram b = HistogramFrom(before, "tandem_engine_batch_sessions");
  ASSERT_TRUE(b.present);
  ASSERT_EQ(b.buckets.size(), 3u);
  EXPECT_EQ(b.buckets[0].first, 1);
  EXPECT_TRUE(std::isinf(b.buckets[2].first));
  EXPECT_DOUBLE_EQ(b.Mean(), 1.25);
  const Histogram d = HistogramDiff(HistogramFrom(after, "tandem_engine_batch_sessions"), b);
  ASSERT_TRUE(d.present);
  EXPECT_DOUBLE_EQ(d.count, 5);
  EXPECT_DOUBLE_EQ(d.Mean(), 29.0 / 5);
  EXPECT_DOUBLE_EQ(d.buckets[1].second, 2);  // cumulative: 1 at le 1, 1 more at le 2
  EXPECT_EQ(HistogramJson(d),
            "{\"mean\": 5.8, \"count\": 5, \"buckets\": [{\"le\": 1, \"count\": 1}, "
            "{\"le\": 2, \"count\": 1}, {\"le\": \"+Inf\", \"count\": 3}]}");
  // A histogram the verifier does not export (yet) is absent, and so is any difference with it.
  EXPECT_FALSE(HistogramFrom(after, "tandem_engine_batch_tokens").present);
  EXPECT_FALSE(HistogramDiff(d, Histogram{}).present);
  EXPECT_EQ(HistogramJson(Histogram{}), "null");
  EXPECT_EQ(SeriesTotal(after, "tandem_generated_tokens_total"), 37);
  EXPECT_EQ(SeriesTotal(after, "tandem_engine_passes_total"), -1);
  EXPECT_EQ(SeriesTotal(before, "tandem_rejections_total"), 1);
}

TEST(LoadReportTest, OracleCorruptsDeterministicallyAtTheGivenRate) {
  std::vector<int32_t> ref(2000);
  for (size_t i = 0; i < ref.size(); ++i) ref[i] = static_cast<int32_t>(i % 500);
  OracleOptions o;
  o.corrupt = 0.25;
  o.seed = 7;
  o.vocab = 512;
  int wrong = 0;
  for (int pos = 0; pos < 2000; ++pos) {
    const int32_t t = OracleToken(ref, 3, pos, o);
    EXPECT_EQ(t, OracleToken(ref, 3, pos, o));
    EXPECT_GE(t, 0);
    EXPECT_LT(t, 512);
    wrong += t != ref[static_cast<size_t>(pos)];
  }
  EXPECT_NEAR(wrong / 2000.0, 0.25, 0.04);
  o.corrupt = 0;
  for (int pos = 0; pos < 100; ++pos) EXPECT_EQ(OracleToken(ref, 3, pos, o), ref[static_cast<size_t>(pos)]);
  o.corrupt = 1;
  for (int pos = 0; pos < 100; ++pos) EXPECT_NE(OracleToken(ref, 3, pos, o), ref[static_cast<size_t>(pos)]);
}

TEST(LoadReportTest, ExpectedVerdicts) {
  const Reference ref{{10, 11, 12, 13}, 2};  // then EOS (2)
  ExpectedVerdict e = Expect(ref, 0, {10, 11, 99});
  EXPECT_EQ(e.accepted, 2);
  EXPECT_EQ(e.next_token, 12);
  EXPECT_FALSE(e.ends);
  e = Expect(ref, 1, {11, 12});
  EXPECT_EQ(e.accepted, 2);
  EXPECT_EQ(e.next_token, 13);  // the bonus token
  e = Expect(ref, 2, {12, 13});
  EXPECT_EQ(e.accepted, 2);
  EXPECT_EQ(e.next_token, 2);
  EXPECT_TRUE(e.ends);
  e = Expect(ref, 4, {});
  EXPECT_EQ(e.next_token, 2);
  EXPECT_TRUE(e.ends);
  const Reference open{{10, 11}, -1};  // did not stop: nothing to check beyond it
  EXPECT_EQ(Expect(open, 0, {10, 11}).next_token, -1);
}

LoadRow Row(const std::string& model, int n, const std::string& batching, double tps) {
  LoadRow r;
  r.model = model;
  r.sessions = n;
  r.batching = batching;
  r.verified_tokens_per_s = tps;
  r.totals.round_ms = {1, 2, 3};
  return r;
}

TEST(LoadReportTest, BatchingComparison) {
  std::vector<LoadRow> rows = {Row("m", 1, "on", 100), Row("m", 1, "off", 100),
                               Row("m", 16, "on", 300), Row("m", 16, "off", 100),
                               Row("n", 16, "on", 50)};
  rows.push_back(Row("n", 16, "off", 80));
  rows.back().error = "verifier did not start";  // not compared
  const std::vector<BatchingComparison> c = CompareBatching(rows);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].sessions, 1);
  EXPECT_DOUBLE_EQ(c[0].speedup, 1);
  EXPECT_DOUBLE_EQ(c[1].speedup, 3);
  const std::string table = LoadTable(rows, c);
  EXPECT_NE(table.find("batching on/off: 300.0 / 100.0 tok/s = 3.00x"), std::string::npos) << table;
  EXPECT_NE(table.find("ERROR verifier did not start"), std::string::npos) << table;
}

TEST(LoadReportTest, OverloadCriteria) {
  OverloadWave w;
  w.sessions = 8;
  w.totals.admitted = 2;
  w.totals.refused = 6;
  w.totals.refusal_ms = {1, 2, 3, 4, 5, 6};
  w.rss_after_bytes = 100 << 20;
  std::vector<OverloadWave> waves = {w, w, w};
  waves[2].rss_after_bytes += 1 << 20;  // within 4 MiB
  OverloadVerdict v = JudgeOverload(waves, 2, 10);
  EXPECT_TRUE(v.admitted_exactly_capacity && v.correct && v.fast_refusals && v.rss_stable);
  EXPECT_EQ(v.rss_growth_bytes, 1 << 20);
  EXPECT_DOUBLE_EQ(v.refusal_p50_ms, 3.5);
  waves[2].rss_after_bytes += 64 << 20;
  waves[1].totals.admitted = 3;
  waves[1].totals.refused = 5;
  waves[0].totals.mismatches = 1;
  v = JudgeOverload(waves, 2, 5);
  EXPECT_FALSE(v.admitted_exactly_capacity || v.correct || v.fast_refusals || v.rss_stable);
}

bool HavePython() { return tandem::testing::RunShell("command -v python3 >/dev/null") == 0; }

bool PythonChecks(const std::string& dir, const std::string& json_path, const std::string& checks) {
  std::ofstream(dir + "/check.py") << "import json,sys; j=json.load(open(sys.argv[1])); " << checks;
  return tandem::testing::RunShell("python3 " + dir + "/check.py " + json_path) == 0;
}

TEST(LoadReportTest, RowJsonIsReadBackByPython) {
  if (!HavePython()) GTEST_SKIP() << "no python3";
  LoadRow r = Row("m", 4, "on", 123.5);
  r.peak_rss_bytes = int64_t{3} << 30;
  r.rejections = {{"session_limit", 2}};
  r.batch_sessions = HistogramFrom(testing::ParsePrometheusText(kBefore), "tandem_engine_batch_sessions");
  r.totals.first_error = "quote \" newline \n";
  const std::string dir = tandem::testing::TempDir();
  std::ofstream(dir + "/r.json") << "{\"rows\": " << JsonArrayLines({LoadRowJson(r)}) << "}";
  EXPECT_TRUE(PythonChecks(
      dir, dir + "/r.json",
      "r=j['rows'][0]; "
      "assert {'model','sessions','batching','verified_tokens_per_s','p50_round_ms','p99_round_ms',"
      "'peak_rss_bytes'} <= set(r), r; "
      "assert r['peak_rss_bytes']==3*2**30 and r['p50_round_ms']==2 and r['batching']=='on', r; "
      "assert r['rejections']=={'session_limit': 2} and r['first_error']=='quote \" newline \\n', r; "
      "assert r['batch_sessions']['buckets'][2]=={'le':'+Inf','count':0} and r['batch_sessions_mean']==1.25, r; "
      "assert r['batch_tokens'] is None and r['batch_tokens_mean']==-1, r"));
}

TEST(LoadReportTest, TinyLoadAndOverloadRunsAreCorrect) {
  if (!HavePython()) GTEST_SKIP() << "no python3";
  const std::string dir = tandem::testing::TempDir();
  const std::string bench = std::string(TANDEM_BIN_DIR) + "/tandem-bench";
  // One wave of two sessions, one of them in cloud mode, every token checked against the reference.
  ASSERT_EQ(tandem::testing::RunShell(bench + " load --quick --sessions 2 --tokens 12 --cloud-share 0.5 " +
                                      "--min-seconds 0 " +
                                      "--out " + dir + "/load.json --work " + dir + " 2>" + dir + "/err"),
            0)
      << tandem::testing::ReadFileOrDie(dir + "/err");
  EXPECT_TRUE(PythonChecks(
      dir, dir + "/load.json",
      "rows=j['rows']; assert len(rows) in (1, 2), rows; "
      "assert {r['batching'] for r in rows} in ({'on','off'}, {'default'}), rows; "
      "assert j['mismatches_total']==0 and j['errors_total']==0, j; "
      "assert all(r['model']=='stories260k' and r['sessions']==2 and r['waves']==1 and r['admitted']==2 and "
      "r['cloud_sessions']==1 and r['committed_tokens']>=12 and r['verified_tokens_per_s']>0 and "
      "r['rounds']>0 and r['p99_round_ms']>=r['p50_round_ms']>0 and r['peak_rss_bytes']>0 and "
      "r['rss_after_bytes']>0 and r['verifier_generated_tokens']>=r['committed_tokens'] for r in rows), rows"))
      << tandem::testing::ReadFileOrDie(dir + "/load.json");
  // Capacity 2, 8 sessions at once, twice: 2 served correctly, 6 refused each time.
  ASSERT_EQ(tandem::testing::RunShell(bench + " overload --model stories260k --capacity 2 --waves 2 " +
                                      "--tokens 12 --out " + dir + "/over.json --work " + dir + " 2>" +
                                      dir + "/err"),
            0)
      << tandem::testing::ReadFileOrDie(dir + "/err");
  EXPECT_TRUE(PythonChecks(
      dir, dir + "/over.json",
      "w=j['waves']; assert len(w)==2, w; "
      "assert all(x['admitted']==2 and x['refused']==6 and x['errors']==0 and x['mismatches']==0 "
      "and x['committed_tokens']>=24 and x['rss_after_bytes']>0 for x in w), w; "
      "assert j['admitted_exactly_capacity'] and j['correct'] and j['p99_refusal_ms']>0, j; "
      "assert all(x['rejections'].get('session_limit')==6 for x in w), w"))
      << tandem::testing::ReadFileOrDie(dir + "/over.json");
}

}  // namespace
}  // namespace tandem::bench
