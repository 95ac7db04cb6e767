// The edge's metric set (see edge_metrics.h).
#include "edge/edge_metrics.h"

#include "absl/strings/str_cat.h"
#include "edge/edge_generator.h"

namespace tandem::edge {

EdgeMetrics::EdgeMetrics(int max_positions) : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  };
  auto counter = [&](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
  };
  rtt_ = gauge("tandem_edge_link_rtt_seconds",
               "Round-trip time estimated from the rounds, the verifier's compute subtracted.");
  auto& bw = BuildGauge()
                 .Name("tandem_edge_link_bandwidth_bits_per_second")
                 .Help("Bandwidth estimated from message sizes and timings.")
                 .Register(*registry_);
  up_bps_ = &bw.Add({{"direction", "up"}});
  down_bps_ = &bw.Add({{"direction", "down"}});
  draft_s_ = gauge("tandem_edge_draft_seconds_per_token", "Edge time to draft one token.");
  local_s_ = gauge("tandem_edge_local_seconds_per_token", "Edge time for one token of its whole model.");
  auto& layer = BuildGauge()
                    .Name("tandem_edge_layer_seconds")
                    .Help("One target layer over P positions costs base + P * per_position seconds "
                          "(side=cloud: as seen by the edge, queueing included; plus the head "
                          "over H positions, head_base + H * head_per_position).")
                    .Register(*registry_);
  edge_base_ = &layer.Add({{"side", "edge"}, {"term", "base"}});
  edge_per_pos_ = &layer.Add({{"side", "edge"}, {"term", "per_position"}});
  cloud_base_ = &layer.Add({{"side", "cloud"}, {"term", "base"}});
  cloud_per_pos_ = &layer.Add({{"side", "cloud"}, {"term", "per_position"}});
  cloud_head_base_ = &layer.Add({{"side", "cloud"}, {"term", "head_base"}});
  cloud_head_per_pos_ = &layer.Add({{"side", "cloud"}, {"term", "head_per_position"}});
  auto& acc = BuildGauge()
                  .Name("tandem_edge_acceptance")
                  .Help("Estimated acceptance of draft position i, given the earlier ones were "
                        "accepted (measured, with the prior where unmeasured).")
                  .Register(*registry_);
  for (int i = 0; i < max_positions; ++i) acceptance_.push_back(&acc.Add({{"position", absl::StrCat(i)}}));
  predicted_tps_ = gauge("tandem_edge_predicted_tokens_per_second",
                         "The scheduler's predicted tokens/s of the configuration in use.");
  config_family_ = &BuildGauge()
                        .Name("tandem_edge_config")
                        .Help("1 for the configuration in use (mode, split layer, codec, draft length).")
                        .Register(*registry_);
  auto& tokens = BuildCounter().Name("tandem_edge_tokens_total").Help("Generated tokens by source.").Register(*registry_);
  tokens_verified_ = &tokens.Add({{"source", "verified"}});
  tokens_cloud_ = &tokens.Add({{"source", "cloud"}});
  tokens_local_ = &tokens.Add({{"source", "local"}});
  tokens_unverified_ = &tokens.Add({{"source", "unverified"}});
  auto& bytes = BuildCounter().Name("tandem_edge_bytes_total").Help("Protobuf payload bytes.").Register(*registry_);
  bytes_up_ = &bytes.Add({{"direction", "up"}});
  bytes_down_ = &bytes.Add({{"direction", "down"}});
  round_trips_ = counter("tandem_edge_round_trips_total", "Verdicts received, and cloud sessions that streamed.");
  sessions_ = counter("tandem_edge_sessions_total", "Session streams opened.");
  reconnects_ = counter("tandem_edge_reconnects_total", "Sessions opened again after a failure.");
  fallbacks_ = counter("tandem_edge_fallbacks_total", "Switches to the local model while the verifier was away.");
  config_changes_ = counter("tandem_edge_scheduler_changes_total", "Configuration changes by the scheduler.");
  session_switches_ = counter("tandem_edge_session_switches_total",
                              "New sessions opened for a change of mode or split layer.");
  probes_ = counter("tandem_edge_link_probes_total", "Rounds padded as link probes.");
}

void EdgeMetrics::SetMeasurements(const Measurements& m) {
  rtt_->Set(m.rtt_s);
  up_bps_->Set(m.up_bps);
  down_bps_->Set(m.down_bps);
  draft_s_->Set(m.draft_s_per_token);
  local_s_->Set(m.local_s_per_token);
  edge_base_->Set(m.edge_layer_s_base);
  edge_per_pos_->Set(m.edge_layer_s_per_position);
  cloud_base_->Set(m.cloud_layer_s_base);
  cloud_per_pos_->Set(m.cloud_layer_s_per_position);
  cloud_head_base_->Set(m.cloud_head_s_base);
  cloud_head_per_pos_->Set(m.cloud_head_s_per_position);
  for (size_t i = 0; i < acceptance_.size() && i < m.acceptance.size(); ++i) {
    acceptance_[i]->Set(m.acceptance[i]);
  }
}

void EdgeMetrics::SetConfig(const RunConfig* config, double predicted_tokens_per_s) {
  if (config_ != nullptr) {
    config_family_->Remove(config_);
    config_ = nullptr;
  }
  predicted_tps_->Set(predicted_tokens_per_s);
  if (config == nullptr) return;
  config_ = &config_family_->Add({{"mode", RunModeName(config->mode)},
                                  {"split_layer", absl::StrCat(config->split_layer)},
                                  {"codec", config->mode == RunMode::kSplit
                                                ? codec::CodecSpecName(config->codec)
                                                : std::string("none")},
                                  {"gamma", absl::StrCat(config->gamma)}});
  config_->Set(1);
}

void EdgeMetrics::AddStats(const EdgeStats& a, const EdgeStats& b) {
  auto add = [](prometheus::Counter* c, int64_t before, int64_t now) {
    if (now > before) c->Increment(static_cast<double>(now - before));
  };
  add(tokens_verified_, a.tokens_verified, b.tokens_verified);
  add(tokens_cloud_, a.tokens_from_cloud, b.tokens_from_cloud);
  add(tokens_local_, a.tokens_local_fallback, b.tokens_local_fallback);
  add(tokens_unverified_, a.tokens_unverified, b.tokens_unverified);
  add(bytes_up_, a.bytes_up, b.bytes_up);
  add(bytes_down_, a.bytes_down, b.bytes_down);
  add(round_trips_, a.round_trips, b.round_trips);
  add(sessions_, a.sessions, b.sessions);
  add(reconnects_, a.reconnects, b.reconnects);
  add(fallbacks_, a.fallbacks, b.fallbacks);
  add(config_changes_, a.config_changes, b.config_changes);
  add(session_switches_, a.session_switches, b.session_switches);
  add(probes_, a.probes, b.probes);
}

}  // namespace tandem::edge
