// The edge library against a real verifier on loopback: spec mode reproduces the target-alone
// text with fewer round trips than tokens and reports its traffic; local mode runs offline; a
// mismatched verifier or an unreachable one is a clear error.
#include "edge/edge_generator.h"

#include <grpcpp/grpcpp.h>

#include "cloud/verifier_service.h"
#include "common/model/model_writer.h"
#include "common/spec/spec_decoder.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

class EdgeGeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    target_ = std::move(*model::Model::Load(o)).release();
    std::string path = tandem::testing::TempDir() + "/edge-q8.gguf";
    ASSERT_TRUE(model::ConvertToGguf(*target_, model::GgmlType::kQ8_0, path).ok());
    model::ModelLoadOptions d;
    d.path = path;
    edge_model_ = std::move(*model::Model::Load(d)).release();
  }
  static void TearDownTestSuite() {
    delete target_;
    delete edge_model_;
  }
  void SetUp() override {
    worker_ = std::make_unique<cloud::EngineWorker>(*target_, 1);
    service_ = std::make_unique<cloud::VerifierService>(*target_, "stories260K", worker_.get(),
                                                        cloud::VerifierLimits{});
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    server_->Shutdown();
    server_.reset();
    service_.reset();
    worker_.reset();
  }

  static std::vector<int32_t> Alone(const model::Model& m, const std::vector<int32_t>& prompt, int n) {
    spec::SpecDecoder dec(m, nullptr, nullptr, spec::SpecOptions{});
    spec::SpecStats s;
    std::vector<int32_t> out;
    EXPECT_TRUE(dec.Generate(prompt, n, [&](int32_t, int32_t t) { out.push_back(t); }, &s).ok());
    return out;
  }

  static model::Model* target_;
  static model::Model* edge_model_;
  std::unique_ptr<cloud::EngineWorker> worker_;
  std::unique_ptr<cloud::VerifierService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  int port_ = 0;
};
model::Model* EdgeGeneratorTest::target_ = nullptr;
model::Model* EdgeGeneratorTest::edge_model_ = nullptr;

TEST_F(EdgeGeneratorTest, SpecModeGivesTheTargetTextInFewerRoundTrips) {
  for (auto [text, n] : {std::pair{"", 200}, {"Zoo", 57}}) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    auto drafter = std::move(*spec::ModelDrafter::Create(*edge_model_, nullptr, {}));
    EdgeOptions o;
    o.mode = EdgeMode::kSpec;
    o.spec_tokens = 4;
    EdgeGenerator gen(*edge_model_, drafter.get(), channel_, o);
    EdgeStats stats;
    std::vector<int32_t> got;
    absl::Status s = gen.Generate(prompt, n, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(got, Alone(*target_, prompt, n)) << "prompt '" << text << "'";
    EXPECT_LT(stats.round_trips, stats.generated_tokens);
    EXPECT_EQ(stats.tokens_verified, stats.generated_tokens);
    EXPECT_GT(stats.bytes_up, 0);
    EXPECT_GT(stats.bytes_down, 0);
    EXPECT_GE(stats.rtt_seconds, 0.0);
  }
}

TEST_F(EdgeGeneratorTest, LocalModeRunsTheEdgeModelAlone) {
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  EdgeOptions o;
  o.mode = EdgeMode::kLocal;
  EdgeGenerator gen(*edge_model_, nullptr, nullptr, o);
  EdgeStats stats;
  std::vector<int32_t> got;
  ASSERT_TRUE(gen.Generate(prompt, 40, [&](int32_t, int32_t t) { got.push_back(t); }, &stats).ok());
  EXPECT_EQ(got, Alone(*edge_model_, prompt, 40));
  EXPECT_EQ(stats.tokens_local_fallback, stats.generated_tokens);
}

TEST_F(EdgeGeneratorTest, MismatchedOrUnreachableVerifierIsAClearError) {
  model::ModelLoadOptions o;
  o.path = tandem::testing::ModelPath("llama-2-tiny-random.gguf");
  auto other = model::Model::Load(o);
  ASSERT_TRUE(other.ok());
  EdgeStats stats;
  std::vector<int32_t> prompt = {1, 15043};
  for (EdgeMode mode : {EdgeMode::kSpec, EdgeMode::kAuto}) {  // a mismatch is no outage
    EdgeOptions mo;
    mo.mode = mode;
    EdgeGenerator gen(**other, nullptr, channel_, mo);
    int emitted = 0;
    absl::Status s = gen.Generate(prompt, 5, [&](int32_t, int32_t) { ++emitted; }, &stats);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(std::string(s.message()).find("vocabulary"), std::string::npos);
    EXPECT_EQ(emitted, 0);
  }
  EXPECT_EQ(stats.fallbacks, 0);

  server_->Shutdown();  // nobody listens any more
  EdgeOptions eo;
  eo.mode = EdgeMode::kSpec;
  eo.reply_timeout_s = 2;
  eo.retry_deadline_s = 0.5;
  EdgeGenerator gone(*edge_model_, nullptr, channel_, eo);
  absl::Status s = gone.Generate(std::vector<int32_t>{1}, 5, [](int32_t, int32_t) {}, &stats);
  EXPECT_TRUE(s.code() == absl::StatusCode::kUnavailable ||
              s.code() == absl::StatusCode::kDeadlineExceeded) << s;
}

}  // namespace
}  // namespace tandem::edge
