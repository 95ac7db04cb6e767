// The scheduler's cost model and decision (see scheduler.h).
#include "edge/scheduler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace tandem::edge {

std::string RunModeName(RunMode mode) {
  switch (mode) {
    case RunMode::kLocal:
      return "local";
    case RunMode::kSpec:
      return "spec";
    case RunMode::kSplit:
      return "split";
    case RunMode::kCloud:
      return "cloud";
  }
  return "?";
}

std::string RunConfig::Name() const {
  switch (mode) {
    case RunMode::kSpec:
      return absl::StrCat("spec g", gamma);
    case RunMode::kSplit:
      return absl::StrCat("split k", split_layer, " ", codec::CodecSpecName(codec), " g", gamma);
    default:
      return RunModeName(mode);
  }
}

double ExpectedTokens(const std::vector<double>& acceptance, int gamma) {
  double expected = 1.0, reach = 1.0;
  for (int i = 0; i < gamma; ++i) {
    reach *= i < static_cast<int>(acceptance.size()) ? std::clamp(acceptance[i], 0.0, 1.0) : 0.0;
    expected += reach;
  }
  return expected;
}

Scheduler::Scheduler(const SchedulerPolicy& policy) : policy_(policy) {}

Prediction Scheduler::Predict(const RunConfig& c, const Measurements& m) const {
  Prediction p;
  p.config = c;
  auto cloud = [&](int layers, int positions) {
    return layers * (m.cloud_layer_s_base + positions * m.cloud_layer_s_per_position) +
           m.cloud_head_s_base + positions * m.cloud_head_s_per_position + m.cloud_pass_overhead_s;
  };
  const double up_bps = std::max(m.up_bps, 1.0), down_bps = std::max(m.down_bps, 1.0);
  switch (c.mode) {
    case RunMode::kLocal:
      p.tokens_per_s = 1.0 / std::max(m.local_s_per_token, 1e-9);
      return p;
    case RunMode::kCloud: {
      const double t = cloud(m.n_layers, 1);
      p.tokens_per_s = 1.0 / std::max(t + m.rtt_s / std::max(1, m.remaining_tokens), 1e-9);
      p.cloud_s_per_token = t;
      p.up_bytes_per_token = 0;  // the prompt, once
      return p;
    }
    case RunMode::kSpec:
    case RunMode::kSplit: {
      const int positions = c.gamma + 1;
      const double e = ExpectedTokens(m.acceptance, c.gamma);
      double up = m.up_overhead_bytes + c.gamma * m.bytes_per_draft_id;
      double t = c.gamma * m.draft_s_per_token + m.rtt_s;
      double cloud_s = 0;
      if (c.mode == RunMode::kSpec) {
        cloud_s = cloud(m.n_layers, positions);
      } else {
        const size_t row = codec::RawPayloadBytes(c.codec.kind, 1, std::max(1, m.dim)).value_or(0);
        up += positions * static_cast<double>(row) * (c.codec.zstd ? m.zstd_ratio : 1.0);
        t += c.split_layer * (m.edge_layer_s_base + positions * m.edge_layer_s_per_position);
        cloud_s = cloud(m.n_layers - c.split_layer, positions);
      }
      t += up * 8.0 / up_bps + m.down_overhead_bytes * 8.0 / down_bps + cloud_s;
      p.tokens_per_s = e / t;
      p.cloud_s_per_token = cloud_s / e;
      p.up_bytes_per_token = up / e;
      return p;
    }
  }
  return p;
}

std::vector<Prediction> Scheduler::PredictAll(const Measurements& m) const {
  std::vector<Prediction> out;
  auto allowed = [&](RunMode mode) {
    return std::find(policy_.allowed.begin(), policy_.allowed.end(), mode) != policy_.allowed.end();
  };
  for (RunMode mode : policy_.allowed) {
    RunConfig c;
    c.mode = mode;
    if (mode == RunMode::kLocal || mode == RunMode::kCloud) {
      c.gamma = 0;
      out.push_back(Predict(c, m));
    }
  }
  if (allowed(RunMode::kSpec)) {
    for (int g = 0; g <= policy_.max_gamma; ++g) {
      out.push_back(Predict({RunMode::kSpec, g, 0, {}}, m));
    }
  }
  if (allowed(RunMode::kSplit)) {
    const int max_k = std::min(m.n_layers - 1, policy_.max_edge_layers);
    for (int k = std::max(1, policy_.min_split_layer); k <= max_k; ++k) {
      for (const codec::CodecSpec& codec : policy_.codecs) {
        for (int g = 0; g <= policy_.max_gamma; ++g) {
          out.push_back(Predict({RunMode::kSplit, g, k, codec}, m));
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<RunMode>> ParseRunModes(const std::string& list) {
  std::vector<RunMode> out;
  for (const std::string& name : std::vector<std::string>(absl::StrSplit(list, ','))) {
    bool found = false;
    for (RunMode m : {RunMode::kLocal, RunMode::kSpec, RunMode::kSplit, RunMode::kCloud}) {
      if (name == RunModeName(m)) {
        if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown mode '", name, "' (expected spec, cloud, split or local)"));
    }
  }
  return out;
}

bool SameSession(const RunConfig& a, const RunConfig& b) {
  return a.mode == b.mode && (a.mode != RunMode::kSplit || a.split_layer == b.split_layer);
}

double Scheduler::SwitchSeconds(const RunConfig& to, const Measurements& m) const {
  const int n = std::max(1, m.context_tokens);
  const double up_bps = std::max(m.up_bps, 1.0);
  double up = m.up_overhead_bytes + n * 3.0;  // ids
  double t = m.rtt_s;
  int cloud_layers = m.n_layers;
  switch (to.mode) {
    case RunMode::kLocal:
      return 0;
    case RunMode::kSplit: {
      const size_t row = codec::RawPayloadBytes(to.codec.kind, 1, std::max(1, m.dim)).value_or(0);
      up = m.up_overhead_bytes + n * static_cast<double>(row) * (to.codec.zstd ? m.zstd_ratio : 1.0);
      t += to.split_layer * (m.edge_layer_s_base + n * m.edge_layer_s_per_position);
      cloud_layers -= to.split_layer;
      break;
    }
    default:
      break;
  }
  t += up * 8.0 / up_bps + cloud_layers * (m.cloud_layer_s_base + n * m.cloud_layer_s_per_position);
  return t;
}

RunConfig Scheduler::Decide(const Measurements& m, std::string* why) {
  if (why != nullptr) why->clear();
  std::vector<Prediction> all = PredictAll(m);
  if (all.empty()) return current_;
  // Exactness first: lossy configurations compete only if they clearly beat the exact ones.
  auto lossy = [](const Prediction& p) {
    return p.config.mode == RunMode::kSplit && p.config.codec.kind != codec::CodecKind::kF32;
  };
  double fastest_exact = 0, fastest_lossy = 0;
  for (const Prediction& p : all) {
    double& fastest = lossy(p) ? fastest_lossy : fastest_exact;
    fastest = std::max(fastest, p.tokens_per_s);
  }
  if (fastest_exact > 0 && fastest_lossy < fastest_exact * (1.0 + policy_.lossy_min_gain)) {
    std::erase_if(all, lossy);
  }
  double fastest = 0;
  for (const Prediction& p : all) fastest = std::max(fastest, p.tokens_per_s);
  const double remaining = std::max(1, m.remaining_tokens);
  // The objective's score, higher is better. Latency: minus the predicted time to finish,
  // including the switch to a new session. Cloud cost: (within the slack of the fastest) the
  // least cloud compute per token.
  auto score = [&](const Prediction& p) {
    if (policy_.objective == Objective::kLatency) {
      const double sw = have_current_ && !SameSession(current_, p.config) ? SwitchSeconds(p.config, m) : 0;
      return -(remaining / std::max(p.tokens_per_s, 1e-9) + sw);
    }
    if (p.tokens_per_s < fastest * (1.0 - policy_.cost_slack)) return -1.0 / (1.0 + p.cloud_s_per_token);
    return 1.0 / (1e-6 + p.cloud_s_per_token);
  };
  const Prediction* best = &all[0];
  for (const Prediction& p : all) {
    if (score(p) > score(*best)) best = &p;
  }
  if (have_current_) {
    const Prediction now = Predict(current_, m);
    // Hysteresis: stay unless the best is clearly better (scores may be negative: compare by sign).
    const double s_now = score(now), s_best = score(*best);
    const double margin = std::fabs(s_now) * policy_.hysteresis;
    const bool still_allowed =
        std::any_of(all.begin(), all.end(), [&](const Prediction& p) { return p.config == current_; });
    if (still_allowed && s_best <= s_now + margin) return current_;
    if (why != nullptr) {
      *why = absl::StrFormat(
          "scheduler: %s -> %s: %.1f -> %.1f tok/s predicted%s (rtt %.1f ms, up %.2f Mbit/s, down "
          "%.2f Mbit/s, a0 %.2f, cloud %.2f ms/token, %d tokens to go)",
          current_.Name(), best->config.Name(), now.tokens_per_s, best->tokens_per_s,
          SameSession(current_, best->config)
              ? ""
              : absl::StrFormat(", new session %.1f ms", SwitchSeconds(best->config, m) * 1e3),
          m.rtt_s * 1e3, m.up_bps / 1e6, m.down_bps / 1e6,
          m.acceptance.empty() ? 0.0 : m.acceptance[0], best->cloud_s_per_token * 1e3,
          m.remaining_tokens);
    }
  } else if (why != nullptr) {
    *why = absl::StrFormat(
        "scheduler: start with %s: %.1f tok/s predicted (rtt %.1f ms, up %.2f Mbit/s, a0 %.2f, "
        "cloud %.2f ms/token)",
        best->config.Name(), best->tokens_per_s, m.rtt_s * 1e3, m.up_bps / 1e6,
        m.acceptance.empty() ? 0.0 : m.acceptance[0], best->cloud_s_per_token * 1e3);
  }
  current_ = best->config;
  have_current_ = true;
  ++changes_;
  return current_;
}

}  // namespace tandem::edge
