// The verifier's Prometheus metrics, scraped over real HTTP from its endpoint after real gRPC
// sessions on loopback: the counters agree with what the client saw.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

using tandem::testing::SeriesKey;

class VerifierMetricsTest : public tandem::testing::Stories260KTest {
 protected:
};

TEST_F(VerifierMetricsTest, EndpointServesPrometheusTextWithEverySeries) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  ASSERT_GT(h.metrics_port(), 0);
  tandem::testing::HttpResponse r = tandem::testing::HttpGet(h.metrics_port(), h.metrics_path());
  ASSERT_EQ(r.status, 200);
  EXPECT_THAT(r.headers, ::testing::HasSubstr("text/plain"));
  for (const char* name :
       {"tandem_spec_decode_num_draft_tokens_total", "tandem_spec_decode_num_accepted_tokens_total",
        "tandem_verify_passes_total", "tandem_verify_duration_seconds", "tandem_verify_batch_tokens",
        "tandem_queue_wait_seconds", "tandem_sessions_active", "tandem_time_to_first_token_seconds",
        "tandem_time_per_output_token_seconds"}) {
    EXPECT_THAT(r.body, ::testing::HasSubstr(std::string("# TYPE ") + name)) << name;
  }
  auto m = tandem::testing::ParsePrometheusText(r.body);
  EXPECT_EQ(m.at(SeriesKey("tandem_sessions_total", {{"outcome", "idle_timeout"}})), 0);
  EXPECT_EQ(m.at(SeriesKey("tandem_rejections_total", {{"reason", "bad_token"}})), 0);
  EXPECT_EQ(m.at(SeriesKey("tandem_bytes_total", {{"direction", "up"}, {"kind", "draft"}})), 0);
  EXPECT_EQ(m.at(SeriesKey("tandem_spec_decode_num_accepted_tokens_per_pos_total", {{"position", "15"}})), 0);
  EXPECT_EQ(m.at(SeriesKey("tandem_generated_tokens_total", {{"mode", "cloud"}})), 0);
  EXPECT_EQ(tandem::testing::HttpGet(h.metrics_port(), "/nothing-here").status, 404);
}

TEST_F(VerifierMetricsTest, CountersMatchTheClientsViewOfAGreedySpecSession) {
  VerifierLimits limits;
  limits.max_draft_tokens = 6;
  tandem::testing::VerifierHarness h(*target_, limits);
  auto stub = h.Stub();
  const std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  const int n = 57, gamma = 5;
  const std::vector<int32_t> ref = tandem::testing::GreedyTargetAlone(*target_, prompt, n + gamma + 1);
  grpc::ClientContext ctx;
  tandem::testing::SpecRun run = tandem::testing::RunScriptedSpec(
      stub.get(), prompt, ref, n, gamma, target_->config().vocab_size, &ctx);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(run.generated, std::vector<int32_t>(ref.begin(), ref.begin() + n));
  ASSERT_TRUE(h.WaitIdle());

  auto m = h.Metrics();
  auto at = [&](const std::string& name, std::map<std::string, std::string> labels = {}) {
    auto it = m.find(SeriesKey(name, labels));
    EXPECT_NE(it, m.end()) << SeriesKey(name, labels);
    return it == m.end() ? -1.0 : it->second;
  };
  EXPECT_EQ(at("tandem_verify_passes_total"), run.rounds);
  EXPECT_LT(at("tandem_verify_passes_total"), static_cast<double>(run.generated.size()));
  EXPECT_EQ(at("tandem_spec_decode_num_draft_tokens_total"), run.drafts);
  EXPECT_EQ(at("tandem_spec_decode_num_accepted_tokens_total"), run.accepted);
  EXPECT_LT(run.accepted, run.drafts);  // the planted errors were rejected
  double per_pos_sum = 0;
  for (int i = 0; i < limits.max_draft_tokens; ++i) {
    const double v = at("tandem_spec_decode_num_accepted_tokens_per_pos_total",
                        {{"position", std::to_string(i)}});
    EXPECT_EQ(v, i < gamma ? run.accepted_at[i] : 0) << "position " << i;
    per_pos_sum += v;
  }
  EXPECT_EQ(per_pos_sum, run.accepted);
  EXPECT_EQ(at("tandem_generated_tokens_total", {{"mode", "spec"}}), run.committed_growth);
  EXPECT_EQ(at("tandem_verify_duration_seconds_count"), run.rounds);
  EXPECT_EQ(at("tandem_verify_batch_tokens_count"), run.rounds);
  EXPECT_EQ(at("tandem_verify_batch_tokens_sum"), run.drafts + run.rounds);
  EXPECT_EQ(at("tandem_queue_wait_seconds_count"), run.rounds + 1);  // the prompt, then rounds
  for (const char* kind : {"prompt", "draft", "control"}) {
    EXPECT_GT(at("tandem_bytes_total", {{"direction", "up"}, {"kind", kind}}), 0) << kind;
  }
  for (const char* kind : {"verdict", "control"}) {
    EXPECT_GT(at("tandem_bytes_total", {{"direction", "down"}, {"kind", kind}}), 0) << kind;
  }
  EXPECT_EQ(at("tandem_bytes_total", {{"direction", "down"}, {"kind", "tokens"}}), 0);
  EXPECT_EQ(at("tandem_sessions_active"), 0);
  EXPECT_EQ(at("tandem_tenant_sessions_active", {{"tenant", "default"}}), 0);
  EXPECT_EQ(at("tandem_sessions_total", {{"outcome", "ok"}}), 1);
  EXPECT_EQ(at("tandem_sessions_total", {{"outcome", "error"}}), 0);
  // The accessors tests and the binary use agree with the exported counters.
  EXPECT_EQ(h.service().verify_passes(), run.rounds);
  EXPECT_EQ(h.service().draft_tokens(), run.drafts);
  EXPECT_EQ(h.service().accepted_tokens(), run.accepted);
}

TEST_F(VerifierMetricsTest, ActiveSessionsGaugeFollowsOpenSessions) {
  tandem::testing::VerifierHarness h(*target_, VerifierLimits{});
  auto stub = h.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::VerifierMessage reply;
  ASSERT_TRUE(stream->Write(tandem::testing::OpenMsg(v1::MODE_SPEC)));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(h.Metric("tandem_sessions_active"), 1);
  EXPECT_EQ(h.Metric("tandem_tenant_sessions_active", {{"tenant", "default"}}), 1);
  ASSERT_TRUE(stream->Write(tandem::testing::CloseMsg()));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_sessions_total", {{"outcome", "ok"}}), 1);
}

TEST(MetricsEndpointTest, ServesRegistriesOnSlashMetrics) {
  auto endpoint = obs::MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("tandem_test_total").Help("t").Register(*registry).Add({}).Increment(3);
  (*endpoint)->Register(registry);
  tandem::testing::HttpResponse r = tandem::testing::HttpGet((*endpoint)->port(), "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(tandem::testing::ParsePrometheusText(r.body).at("tandem_test_total"), 3);
  EXPECT_THAT(obs::RenderText(*registry), ::testing::HasSubstr("tandem_test_total 3"));
}

TEST(MetricsEndpointTest, BadAddressesAreErrors) {
  EXPECT_TRUE(absl::IsInvalidArgument(obs::MetricsEndpoint::Start("nohostport").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(obs::MetricsEndpoint::Start("127.0.0.1:99999").status()));
  auto first = obs::MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = obs::MetricsEndpoint::Start(absl::StrCat("127.0.0.1:", (*first)->port()));
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
}

}  // namespace
}  // namespace tandem::cloud
