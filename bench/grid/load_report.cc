#include "bench/grid/load_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/grid/grid_report.h"

namespace tandem::bench {

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

Histogram HistogramFrom(const Series& series, const std::string& name) {
  Histogram h;
  std::map<double, double> cumulative;
  const std::string bucket = name + "_bucket{";
  for (auto it = series.lower_bound(bucket); it != series.end() && it->first.rfind(bucket, 0) == 0;
       ++it) {
    const size_t le = it->first.find("le=\"", bucket.size() - 1);
    if (le == std::string::npos) continue;
    cumulative[std::strtod(it->first.c_str() + le + 4, nullptr)] += it->second;  // "+Inf" -> inf
  }
  for (const auto& [key, value] : series) {
    if (key == name + "_sum" || key.rfind(name + "_sum{", 0) == 0) h.sum += value;
    if (key == name + "_count" || key.rfind(name + "_count{", 0) == 0) h.count += value;
  }
  h.present = !cumulative.empty();
  h.buckets.assign(cumulative.begin(), cumulative.end());
  return h;
}

Histogram HistogramDiff(const Histogram& after, const Histogram& before) {
  Histogram d;
  if (!after.present || !before.present || after.buckets.size() != before.buckets.size()) return d;
  for (size_t i = 0; i < after.buckets.size(); ++i) {
    if (after.buckets[i].first != before.buckets[i].first) return Histogram{};
    d.buckets.push_back({after.buckets[i].first, after.buckets[i].second - before.buckets[i].second});
  }
  d.present = true;
  d.sum = after.sum - before.sum;
  d.count = after.count - before.count;
  return d;
}

std::string HistogramJson(const Histogram& h) {
  if (!h.present) return "null";
  std::vector<std::string> buckets;
  double below = 0;
  for (const auto& [le, cumulative] : h.buckets) {
    buckets.push_back(JsonObject()
                          .AddRaw("le", std::isinf(le) ? JsonQuote("+Inf") : JsonNumber(le))
                          .Add("count", cumulative - below)
                          .Str());
    below = cumulative;
  }
  return JsonObject()
      .Add("mean", h.Mean())
      .Add("count", h.count)
      .AddRaw("buckets", "[" + absl::StrJoin(buckets, ", ") + "]")
      .Str();
}

double SeriesTotal(const Series& series, const std::string& name) {
  double total = 0;
  bool found = false;
  for (auto it = series.lower_bound(name); it != series.end() && it->first.rfind(name, 0) == 0; ++it) {
    if (it->first.size() == name.size() || it->first[name.size()] == '{') {
      total += it->second;
      found = true;
    }
  }
  return found ? total : -1;
}

namespace {

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

int32_t OracleToken(const std::vector<int32_t>& reference, int session, int position,
                    const OracleOptions& o) {
  const int32_t want = reference[static_cast<size_t>(position)];
  const uint64_t h = Mix(Mix(Mix(o.seed) ^ static_cast<uint64_t>(session)) ^ static_cast<uint64_t>(position));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  if (u >= o.corrupt || o.vocab < 2) return want;
  // Another id: want + [1, vocab) modulo vocab.
  const uint64_t shift = 1 + Mix(h) % static_cast<uint64_t>(o.vocab - 1);
  return static_cast<int32_t>((static_cast<uint64_t>(want) + shift) % static_cast<uint64_t>(o.vocab));
}

ExpectedVerdict Expect(const Reference& ref, int gen, const std::vector<int32_t>& draft) {
  ExpectedVerdict e;
  const int n = static_cast<int>(ref.tokens.size());
  while (e.accepted < static_cast<int>(draft.size()) && gen + e.accepted < n &&
         draft[static_cast<size_t>(e.accepted)] == ref.tokens[static_cast<size_t>(gen + e.accepted)]) {
    ++e.accepted;
  }
  const int at = gen + e.accepted;
  if (at < n) {
    e.next_token = ref.tokens[static_cast<size_t>(at)];
  } else if (at == n && ref.end_token >= 0) {
    e.next_token = ref.end_token;
    e.ends = true;
  }
  return e;
}

std::string CountsJson(const std::map<std::string, double>& counts) {
  std::vector<std::string> fields;
  for (const auto& [name, n] : counts) fields.push_back(JsonQuote(name) + ": " + JsonNumber(n));
  return "{" + absl::StrJoin(fields, ", ") + "}";
}

double Max(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

void AddTotals(const SessionTotals& t, JsonObject* o) {
  o->Add("p50_round_ms", Percentile(t.round_ms, 0.5))
      .Add("p90_round_ms", Percentile(t.round_ms, 0.9))
      .Add("p99_round_ms", Percentile(t.round_ms, 0.99))
      .Add("mean_round_ms", Mean(t.round_ms))
      .Add("max_round_ms", Max(t.round_ms))
      .Add("p50_first_round_ms", Percentile(t.first_round_ms, 0.5))
      .Add("p99_first_round_ms", Percentile(t.first_round_ms, 0.99))
      .Add("p50_open_ms", Percentile(t.open_ms, 0.5))
      .Add("p99_open_ms", Percentile(t.open_ms, 0.99))
      .Add("p50_refusal_ms", Percentile(t.refusal_ms, 0.5))
      .Add("p99_refusal_ms", Percentile(t.refusal_ms, 0.99))
      .Add("max_refusal_ms", Max(t.refusal_ms))
      .Add("committed_tokens", t.committed_tokens)
      .Add("rounds", t.rounds)
      .Add("drafted_tokens", t.drafted)
      .Add("accepted_tokens", t.accepted)
      .Add("acceptance_rate", t.drafted > 0 ? static_cast<double>(t.accepted) / static_cast<double>(t.drafted) : 0.0)
      .Add("tokens_per_round",
           t.rounds > 0 ? static_cast<double>(t.accepted + t.rounds) / static_cast<double>(t.rounds) : 0.0)
      .Add("admitted", t.admitted)
      .Add("refused", t.refused)
      .Add("errors", t.errors)
      .Add("mismatches", t.mismatches);
  if (!t.first_error.empty()) o->Add("first_error", t.first_error);
}

std::string LoadRowJson(const LoadRow& r) {
  JsonObject o;
  o.Add("model", r.model).Add("sessions", r.sessions).Add("batching", r.batching)
      .Add("verified_tokens_per_s", r.verified_tokens_per_s)
      .Add("peak_rss_bytes", r.peak_rss_bytes)
      .Add("rss_before_bytes", r.rss_before_bytes)
      .Add("rss_after_bytes", r.rss_after_bytes)
      .Add("batch_sessions_mean", r.batch_sessions.present ? r.batch_sessions.Mean() : -1.0)
      .Add("batch_tokens_mean", r.batch_tokens.present ? r.batch_tokens.Mean() : -1.0)
      .AddRaw("batch_sessions", HistogramJson(r.batch_sessions))
      .AddRaw("batch_tokens", HistogramJson(r.batch_tokens))
      .AddRaw("verify_batch_tokens", HistogramJson(r.verify_batch_tokens))
      .Add("engine_passes", r.engine_passes)
      .Add("verify_passes", r.verify_passes)
      .Add("verifier_generated_tokens", r.generated_metric)
      .Add("engine_positions_per_s",
           r.batch_tokens.present && r.wall_s > 0 ? r.batch_tokens.sum / r.wall_s : -1.0)
      .Add("verifier_cpu_s", r.verifier_cpu_s)
      .Add("bench_cpu_s", r.bench_cpu_s)
      .Add("verifier_cores", r.wall_s > 0 ? r.verifier_cpu_s / r.wall_s : 0.0)
      .AddRaw("rejections", CountsJson(r.rejections))
      .Add("waves", r.waves)
      .Add("wall_s", r.wall_s)
      .Add("cloud_sessions", r.cloud_sessions)
      .Add("tokens_per_session", r.tokens_per_session)
      .Add("gamma", r.gamma)
      .Add("corrupt", r.corrupt)
      .Add("warmup_mismatches", r.warmup_mismatches);
  AddTotals(r.totals, &o);
  if (!r.error.empty()) o.Add("error", r.error);
  return o.Str();
}

std::vector<BatchingComparison> CompareBatching(const std::vector<LoadRow>& rows) {
  // Per (model, N): the mean of each mode's repeats (run in alternating order).
  std::vector<BatchingComparison> out;
  for (const LoadRow& first : rows) {
    if (first.batching != "on" || !first.error.empty()) continue;
    bool seen = false;
    for (const BatchingComparison& c : out) seen = seen || (c.model == first.model && c.sessions == first.sessions);
    if (seen) continue;
    double on = 0, off = 0;
    int n_on = 0, n_off = 0;
    for (const LoadRow& r : rows) {
      if (r.model != first.model || r.sessions != first.sessions || !r.error.empty()) continue;
      if (r.batching == "on") {
        on += r.verified_tokens_per_s;
        ++n_on;
      } else if (r.batching == "off") {
        off += r.verified_tokens_per_s;
        ++n_off;
      }
    }
    if (n_off == 0) continue;
    BatchingComparison c;
    c.model = first.model;
    c.sessions = first.sessions;
    c.repeats = std::min(n_on, n_off);
    c.on_tokens_per_s = on / n_on;
    c.off_tokens_per_s = off / n_off;
    c.speedup = c.off_tokens_per_s > 0 ? c.on_tokens_per_s / c.off_tokens_per_s : 0;
    out.push_back(c);
  }
  return out;
}

std::string ComparisonJson(const BatchingComparison& c) {
  return JsonObject()
      .Add("model", c.model)
      .Add("sessions", c.sessions)
      .Add("on_tokens_per_s", c.on_tokens_per_s)
      .Add("off_tokens_per_s", c.off_tokens_per_s)
      .Add("speedup", c.speedup)
      .Add("repeats", c.repeats)
      .Str();
}

std::string LoadTable(const std::vector<LoadRow>& rows,
                      const std::vector<BatchingComparison>& comparisons) {
  std::string out = absl::StrFormat("%-12s %5s %-8s %10s %8s %8s %8s %6s %7s %9s %9s %5s %4s %4s\n",
                                    "model", "N", "batching", "tok/s", "p50 ms", "p99 ms", "1st p99",
                                    "sess/p", "pos/p", "peak MB", "after MB", "miss", "err", "ref");
  for (const LoadRow& r : rows) {
    if (!r.error.empty()) {
      absl::StrAppendFormat(&out, "%-12s %5d %-8s ERROR %s\n", r.model, r.sessions, r.batching, r.error);
      continue;
    }
    absl::StrAppendFormat(
        &out, "%-12s %5d %-8s %10.1f %8.2f %8.2f %8.2f %6.2f %7.1f %9.1f %9.1f %5d %4d %4d\n",
        r.model, r.sessions, r.batching, r.verified_tokens_per_s, Percentile(r.totals.round_ms, 0.5),
        Percentile(r.totals.round_ms, 0.99), Percentile(r.totals.first_round_ms, 0.99), r.batch_sessions.present ? r.batch_sessions.Mean() : 0.0,
        r.batch_tokens.present ? r.batch_tokens.Mean() : r.verify_batch_tokens.Mean(),
        static_cast<double>(r.peak_rss_bytes) / (1 << 20),
        static_cast<double>(r.rss_after_bytes) / (1 << 20), r.totals.mismatches, r.totals.errors,
        r.totals.refused);
  }
  for (const BatchingComparison& c : comparisons) {
    absl::StrAppendFormat(&out, "%-12s %5d batching on/off: %.1f / %.1f tok/s = %.2fx\n", c.model,
                          c.sessions, c.on_tokens_per_s, c.off_tokens_per_s, c.speedup);
  }
  return out;
}

std::string OverloadWaveJson(const OverloadWave& w) {
  JsonObject o;
  o.Add("sessions", w.sessions)
      .Add("wall_s", w.wall_s)
      .Add("rss_after_bytes", w.rss_after_bytes)
      .AddRaw("rejections", CountsJson(w.rejections));
  AddTotals(w.totals, &o);
  return o.Str();
}

OverloadVerdict JudgeOverload(const std::vector<OverloadWave>& waves, int capacity, double fast_ms,
                              double rss_slack) {
  OverloadVerdict v;
  if (waves.empty()) return v;
  std::vector<double> refusals;
  v.admitted_exactly_capacity = v.correct = true;
  for (const OverloadWave& w : waves) {
    const SessionTotals& t = w.totals;
    refusals.insert(refusals.end(), t.refusal_ms.begin(), t.refusal_ms.end());
    if (t.admitted != capacity || t.refused != w.sessions - capacity) v.admitted_exactly_capacity = false;
    if (t.errors > 0 || t.mismatches > 0) v.correct = false;
  }
  v.refusal_p50_ms = Percentile(refusals, 0.5);
  v.refusal_p99_ms = Percentile(refusals, 0.99);
  v.fast_refusals = !refusals.empty() && v.refusal_p99_ms <= fast_ms;
  v.rss_growth_bytes = waves.back().rss_after_bytes - waves.front().rss_after_bytes;
  const double allowed = std::max(4.0 * (1 << 20), rss_slack * static_cast<double>(waves.front().rss_after_bytes));
  v.rss_stable = waves.front().rss_after_bytes > 0 && static_cast<double>(v.rss_growth_bytes) <= allowed;
  return v;
}

}  // namespace tandem::bench
