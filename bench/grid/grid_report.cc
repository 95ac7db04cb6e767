#include "bench/grid/grid_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>

namespace tandem::bench {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<CellSummary> Summarize(const std::vector<GridRow>& rows) {
  using Key = std::tuple<std::string, double, double>;
  std::map<Key, size_t> index;  // cell -> position in `cells`
  std::vector<CellSummary> cells;
  std::vector<bool> has_auto;
  for (const GridRow& r : rows) {
    const Key key{r.model, r.rtt_ms, r.uplink_kbps};
    auto [it, fresh] = index.emplace(key, cells.size());
    if (fresh) {
      CellSummary c;
      c.model = r.model;
      c.rtt_ms = r.rtt_ms;
      c.uplink_kbps = r.uplink_kbps;
      cells.push_back(c);
      has_auto.push_back(false);
    }
    CellSummary& c = cells[it->second];
    if (!r.error.empty()) continue;
    if (r.mode == "auto") {
      c.auto_tokens_per_s = r.tokens_per_s_median;
      c.auto_config = r.final_config;
      has_auto[it->second] = true;
    } else if (r.tokens_per_s_median > c.best_tokens_per_s) {
      c.best_tokens_per_s = r.tokens_per_s_median;
      c.best_config = r.config;
    }
  }
  for (size_t i = 0; i < cells.size(); ++i) {
    CellSummary& c = cells[i];
    c.auto_ratio = has_auto[i] && c.best_tokens_per_s > 0 ? c.auto_tokens_per_s / c.best_tokens_per_s : 0;
  }
  return cells;
}

double ShareAtLeast(const std::vector<CellSummary>& cells, double threshold) {
  int with_auto = 0, good = 0;
  for (const CellSummary& c : cells) {
    if (c.best_tokens_per_s <= 0) continue;
    ++with_auto;
    if (c.auto_ratio >= threshold) ++good;
  }
  return with_auto == 0 ? 0 : static_cast<double>(good) / with_auto;
}

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

JsonObject& JsonObject::Add(std::string_view key, std::string_view value) {
  return AddRaw(key, JsonQuote(value));
}
JsonObject& JsonObject::Add(std::string_view key, double value) { return AddRaw(key, JsonNumber(value)); }
JsonObject& JsonObject::Add(std::string_view key, int64_t value) {
  return AddRaw(key, std::to_string(value));
}
JsonObject& JsonObject::Add(std::string_view key, bool value) { return AddRaw(key, value ? "true" : "false"); }
JsonObject& JsonObject::Add(std::string_view key, const std::vector<double>& values) {
  std::string raw = "[";
  for (size_t i = 0; i < values.size(); ++i) raw += (i ? ", " : "") + JsonNumber(values[i]);
  return AddRaw(key, raw + "]");
}
JsonObject& JsonObject::AddRaw(std::string_view key, std::string raw_json) {
  fields_.emplace_back(std::string(key), std::move(raw_json));
  return *this;
}

std::string JsonObject::Str() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (i) out += ", ";
    out += JsonQuote(fields_[i].first) + ": " + fields_[i].second;
  }
  return out + "}";
}

std::string JsonArrayLines(const std::vector<std::string>& elements, int indent) {
  if (elements.empty()) return "[]";
  const std::string pad(static_cast<size_t>(indent), ' ');
  std::string out = "[\n";
  for (size_t i = 0; i < elements.size(); ++i) {
    out += pad + elements[i] + (i + 1 < elements.size() ? ",\n" : "\n");
  }
  return out + std::string(static_cast<size_t>(std::max(0, indent - 2)), ' ') + "]";
}

std::string RowJson(const GridRow& r) {
  JsonObject o;
  o.Add("model", r.model).Add("rtt_ms", r.rtt_ms).Add("uplink_kbps", r.uplink_kbps)
      .Add("downlink_kbps", r.downlink_kbps).Add("config", r.config).Add("mode", r.mode)
      .Add("gamma", r.gamma).Add("split_layer", r.split_layer).Add("codec", r.codec)
      .Add("tokens_per_s", r.tokens_per_s_median).Add("tokens_per_s_runs", r.tokens_per_s)
      .Add("generated_tokens", r.generated_tokens).Add("seconds", r.seconds)
      .Add("bytes_up_per_token", r.bytes_up_per_token)
      .Add("bytes_down_per_token", r.bytes_down_per_token)
      .Add("target_passes_per_token", r.target_passes_per_token);
  if (r.mode == "auto") {
    o.Add("final_config", r.final_config).Add("config_changes", r.config_changes)
        .Add("session_switches", r.session_switches);
  }
  if (!r.error.empty()) o.Add("error", r.error);
  return o.Str();
}

std::string SummaryJson(const CellSummary& c) {
  JsonObject o;
  o.Add("model", c.model).Add("rtt_ms", c.rtt_ms).Add("uplink_kbps", c.uplink_kbps)
      .Add("best_config", c.best_config).Add("best_tokens_per_s", c.best_tokens_per_s)
      .Add("auto_tokens_per_s", c.auto_tokens_per_s).Add("auto_ratio", c.auto_ratio)
      .Add("auto_config", c.auto_config);
  return o.Str();
}

DropAnalysis AnalyzeDrop(const std::vector<TimelinePoint>& timeline, double drop_t_s,
                         double new_up_bps, double tolerance) {
  DropAnalysis a;
  int tokens_before = 0, tokens_after = 0;
  double last_before_t = 0;
  for (const TimelinePoint& p : timeline) {
    if (p.t_s <= drop_t_s) {
      ++a.rounds_before;
      tokens_before += p.tokens;
      a.config_before = p.config;
      last_before_t = p.t_s;
      continue;
    }
    ++a.rounds_after;
    tokens_after += p.tokens;
    if (a.rounds_to_change < 0 && a.rounds_before > 0 && p.config != a.config_before) {
      a.rounds_to_change = a.rounds_after;
      a.seconds_to_change = p.t_s - drop_t_s;
    }
    if (a.rounds_to_estimate < 0 && std::fabs(p.est_up_bps - new_up_bps) <= tolerance * new_up_bps) {
      a.rounds_to_estimate = a.rounds_after;
      a.seconds_to_estimate = p.t_s - drop_t_s;
    }
  }
  if (!timeline.empty()) a.config_final = timeline.back().config;
  if (last_before_t > 0) a.tokens_per_s_before = tokens_before / last_before_t;
  if (a.rounds_after > 0) {
    // From the end of the last round before the drop: that round's successor straddles it.
    const double span = timeline.back().t_s - last_before_t;
    if (span > 0) a.tokens_per_s_after = tokens_after / span;
  }
  return a;
}

std::string TimelinePointJson(const TimelinePoint& p) {
  JsonObject o;
  o.Add("t_s", p.t_s).Add("config", p.config).Add("tokens", p.tokens).Add("bytes_up", p.bytes_up)
      .Add("bytes_down", p.bytes_down).Add("est_up_kbps", p.est_up_bps / 1e3)
      .Add("est_rtt_ms", p.est_rtt_s * 1e3);
  return o.Str();
}

}  // namespace tandem::bench
