// The verifier's metric set (see verifier_metrics.h).
#include "cloud/verifier_metrics.h"

#include "absl/strings/str_cat.h"

namespace tandem::cloud {

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kCancelled: return "cancelled";
    case Outcome::kError: return "error";
    case Outcome::kIdleTimeout: return "idle_timeout";
    case Outcome::kDeadline: return "deadline";
    case Outcome::kHandedBack: return "handed_back";
    default: return "unknown";
  }
}

VerifierMetrics::VerifierMetrics(int max_positions, const std::vector<std::string>& tenants)
    : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto counter = [&](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
  };
  draft_tokens_ = counter("tandem_spec_decode_num_draft_tokens_total",
                          "Draft tokens received for verification.");
  accepted_tokens_ = counter("tandem_spec_decode_num_accepted_tokens_total",
                             "Draft tokens accepted by verification.");
  context_tokens_ = counter("tandem_context_tokens_total",
                            "Uncertain policy: tokens the edge committed without a verdict, "
                            "received as context.");
  verify_passes_ = counter("tandem_verify_passes_total", "Target forward passes that verified a draft.");
  auto& per_pos = BuildCounter()
                      .Name("tandem_spec_decode_num_accepted_tokens_per_pos_total")
                      .Help("Accepted draft tokens by draft position (0 = first draft token).")
                      .Register(*registry_);
  for (int i = 0; i < max_positions; ++i) per_pos_.push_back(&per_pos.Add({{"position", absl::StrCat(i)}}));

  const std::vector<double> seconds = obs::ExponentialBuckets(0.0001, 2.0, 18);  // 0.1 ms .. 13 s
  verify_duration_ = &BuildHistogram().Name("tandem_verify_duration_seconds")
                          .Help("Engine time of one verify pass.").Register(*registry_)
                          .Add({}, seconds);
  batch_tokens_ = &BuildHistogram().Name("tandem_verify_batch_tokens")
                       .Help("Positions in one verify pass (the last committed token, any context and the drafts).")
                       .Register(*registry_)
                       .Add({}, obs::ExponentialBuckets(1, 2, 10));
  queue_wait_ = &BuildHistogram().Name("tandem_queue_wait_seconds")
                     .Help("Time a task waited for the engine worker.").Register(*registry_)
                     .Add({}, seconds);
  engine_passes_ = counter("tandem_engine_passes_total",
                           "Forward passes of the engine worker (a batch of sessions is one).");
  engine_batch_sessions_ = &BuildHistogram().Name("tandem_engine_batch_sessions")
                                .Help("Sessions in one forward pass of the engine worker.")
                                .Register(*registry_)
                                .Add({}, obs::ExponentialBuckets(1, 2, 10));
  engine_batch_tokens_ = &BuildHistogram().Name("tandem_engine_batch_tokens")
                              .Help("Positions in one forward pass of the engine worker.")
                              .Register(*registry_)
                              .Add({}, obs::ExponentialBuckets(1, 2, 12));
  kv_budget_ = &BuildGauge().Name("tandem_kv_budget_bytes")
                    .Help("KV cache memory all sessions together may reserve.")
                    .Register(*registry_).Add({});
  kv_reserved_ = &BuildGauge().Name("tandem_kv_reserved_bytes")
                      .Help("KV cache memory reserved by open sessions.")
                      .Register(*registry_).Add({});
  ttft_ = &BuildHistogram().Name("tandem_time_to_first_token_seconds")
               .Help("Cloud mode: from the prompt's arrival to the first token sent.")
               .Register(*registry_).Add({}, seconds);
  tpot_ = &BuildHistogram().Name("tandem_time_per_output_token_seconds")
               .Help("Cloud mode: time between successive generated tokens.")
               .Register(*registry_).Add({}, seconds);
  auto& gen = BuildCounter().Name("tandem_generated_tokens_total")
                  .Help("Tokens committed by the verifier (accepted drafts plus its own tokens).")
                  .Register(*registry_);
  gen_spec_ = &gen.Add({{"mode", "spec"}});
  gen_cloud_ = &gen.Add({{"mode", "cloud"}});

  auto& bytes = BuildCounter().Name("tandem_bytes_total")
                    .Help("Serialized message bytes by direction (up = from the edge) and kind.")
                    .Register(*registry_);
  const char* kinds[] = {"prompt", "draft", "verdict", "tokens", "control"};
  for (int d = 0; d < 2; ++d) {
    for (int k = 0; k < static_cast<int>(MsgKind::kCount); ++k) {
      bytes_[d][k] = &bytes.Add({{"direction", d == 0 ? "up" : "down"}, {"kind", kinds[k]}});
    }
  }
  sessions_active_ = &BuildGauge().Name("tandem_sessions_active").Help("Open sessions.")
                          .Register(*registry_).Add({});
  auto& tenant_active = BuildGauge().Name("tandem_tenant_sessions_active")
                            .Help("Open sessions per tenant (tenants from the tokens file).")
                            .Register(*registry_);
  for (const std::string& t : tenants) tenant_active_[t] = &tenant_active.Add({{"tenant", t}});
  if (!tenant_active_.count("default")) tenant_active_["default"] = &tenant_active.Add({{"tenant", "default"}});
  auto& total = BuildCounter().Name("tandem_sessions_total").Help("Ended sessions by outcome.")
                    .Register(*registry_);
  for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
    sessions_total_[o] = &total.Add({{"outcome", OutcomeName(static_cast<Outcome>(o))}});
  }
  auto& rej = BuildCounter().Name("tandem_rejections_total")
                  .Help("Refused calls and messages by reason.").Register(*registry_);
  for (const char* r : kRejectionReasons) rejections_[r] = &rej.Add({{"reason", r}});
  rejections_["other"] = &rej.Add({{"reason", "other"}});
  // The help text must not read "tandem_serving 1": load balancers look for that string.
  health_registry_ = std::make_shared<prometheus::Registry>();
  serving_ = &BuildGauge().Name("tandem_serving")
                  .Help("Whether this verifier takes new sessions (0 once draining).")
                  .Register(*health_registry_).Add({});
  serving_->Set(1);
}

void VerifierMetrics::CountVerify(int drafts, int accepted, double engine_seconds, int batch_tokens) {
  verify_passes_->Increment();
  draft_tokens_->Increment(drafts);
  accepted_tokens_->Increment(accepted);
  for (int i = 0; i < accepted && i < static_cast<int>(per_pos_.size()); ++i) per_pos_[i]->Increment();
  verify_duration_->Observe(engine_seconds);
  batch_tokens_->Observe(batch_tokens);
}

void VerifierMetrics::ObserveBatch(int sessions, int tokens) {
  engine_passes_->Increment();
  engine_batch_sessions_->Observe(sessions);
  engine_batch_tokens_->Observe(tokens);
}

void VerifierMetrics::CountBytes(Direction d, MsgKind k, size_t bytes) {
  bytes_[static_cast<int>(d)][static_cast<int>(k)]->Increment(static_cast<double>(bytes));
}

prometheus::Gauge* VerifierMetrics::TenantGauge(const std::string& tenant) {
  auto it = tenant_active_.find(tenant);
  return it == tenant_active_.end() ? nullptr : it->second;
}

void VerifierMetrics::SessionStarted(const std::string& tenant) {
  sessions_active_->Increment();
  if (prometheus::Gauge* g = TenantGauge(tenant)) g->Increment();
}

void VerifierMetrics::SessionEnded(const std::string& tenant, Outcome outcome) {
  sessions_active_->Decrement();
  if (prometheus::Gauge* g = TenantGauge(tenant)) g->Decrement();
  sessions_total_[static_cast<int>(outcome)]->Increment();
}

void VerifierMetrics::CountRejection(const std::string& reason) {
  auto it = rejections_.find(reason);
  (it == rejections_.end() ? rejections_.at("other") : it->second)->Increment();
}

}  // namespace tandem::cloud
