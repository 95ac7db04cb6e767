// The edge library's modes against real verifiers on loopback: draft trees over the wire and cloud
// mode give the target's text; strict spec and cloud survive a verifier restart on the same port
// and give up after their retry deadline; auto runs locally without a verifier, survives an
// outage mid-generation without losing or repeating a token, and goes local (saying so) when the
// verifier is full; refusals (TLS, bearer token, unknown model) end every mode without fallback.
#include <algorithm>
#include <thread>

#include "absl/strings/match.h"
#include "common/model/model_writer.h"
#include "common/net/auth.h"
#include "common/spec/spec_decoder.h"
#include "edge/edge_generator.h"
#include "gtest/gtest.h"
#include "tests/edge/loopback_verifier.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

using tandem::testing::LoopbackVerifier;

class EdgeModesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    target_ = std::move(*model::Model::Load(o)).release();
    // The edge's own model in the auto tests: random weights, the same vocabulary size, so its
    // text is nothing like the target's and every local token is recognizable.
    model::SyntheticModelSpec spec;
    spec.seed = 7;
    spec.max_seq_len = 512;
    const std::string path = tandem::testing::TempDir() + "/edge-local.gguf";
    ASSERT_TRUE(model::WriteSyntheticGguf(spec, model::GgmlType::kF32, path).ok());
    model::ModelLoadOptions l;
    l.path = path;
    local_ = std::move(*model::Model::Load(l)).release();
    ASSERT_EQ(local_->config().vocab_size, target_->config().vocab_size);
    ASSERT_EQ(local_->vocab().bos_id(), target_->vocab().bos_id());
  }
  static void TearDownTestSuite() {
    delete target_;
    delete local_;
  }

  // The target's first layers as the drafter (good drafts), chains or trees.
  std::unique_ptr<spec::Drafter> EarlyExit(int layers = 3) {
    spec::ModelDrafterOptions d;
    d.layers = layers;
    return std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  }

  static std::vector<int32_t> LocalAlone(const model::Model& m, const std::vector<int32_t>& prompt,
                                         int n) {
    spec::SpecOptions o;
    o.spec_tokens = 0;
    spec::SpecDecoder dec(m, nullptr, nullptr, o);
    spec::SpecStats s;
    std::vector<int32_t> out;
    EXPECT_TRUE(dec.Generate(prompt, n, [&](int32_t, int32_t t) { out.push_back(t); }, &s).ok());
    return out;
  }

  static std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                                const net::ClientTlsOptions& tls = {}) {
    auto ch = MakeVerifierChannel(target, tls);
    EXPECT_TRUE(ch.ok()) << ch.status();
    return *ch;
  }

  static EdgeOptions Options(EdgeMode mode, std::vector<std::string>* warnings) {
    EdgeOptions o;
    o.mode = mode;
    o.reply_timeout_s = 30;
    o.on_warning = [warnings](const std::string& w) { warnings->push_back(w); };
    return o;
  }

  static model::Model* target_;
  static model::Model* local_;
};
model::Model* EdgeModesTest::target_ = nullptr;
model::Model* EdgeModesTest::local_ = nullptr;

TEST_F(EdgeModesTest, DraftTreesOverTheWireGiveTheTargetText) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  auto channel = Channel(v.target());
  for (const char* shape : {"static:2,3", "dynamic:8"}) {
    for (auto [text, n] : {std::pair{"", 200}, {"Zoo", 57}}) {
      std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
      auto drafter = EarlyExit();
      std::vector<std::string> warnings;
      EdgeOptions o = Options(EdgeMode::kSpec, &warnings);
      o.tree = *spec::ParseTreeShape(shape);
      EdgeGenerator gen(*target_, drafter.get(), channel, o);
      EdgeStats stats;
      std::vector<int32_t> got;
      absl::Status s = gen.Generate(prompt, n, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, n))
          << shape << " prompt '" << text << "'";
      EXPECT_LT(stats.round_trips, stats.generated_tokens) << shape;
      EXPECT_EQ(stats.target_passes, stats.round_trips);
      EXPECT_EQ(stats.tokens_verified, stats.generated_tokens);
      EXPECT_GT(stats.accepted_tokens, 0);
      EXPECT_EQ(stats.sessions, 1);
      EXPECT_EQ(stats.reconnects, 0);
      EXPECT_TRUE(warnings.empty());
    }
  }
}

TEST_F(EdgeModesTest, AdaptiveDraftLengthGivesTheTargetText) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  auto drafter = EarlyExit();
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kSpec, &warnings);
  o.spec_tokens = 8;
  o.adaptive_spec_tokens = true;
  EdgeGenerator gen(*target_, drafter.get(), Channel(v.target()), o);
  EdgeStats stats;
  std::vector<int32_t> got;
  ASSERT_TRUE(gen.Generate(prompt, 120, [&](int32_t, int32_t t) { got.push_back(t); }, &stats).ok());
  // (How many drafts it chose depends on measured costs; the text does not.)
  EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, 120));
  EXPECT_EQ(stats.tokens_verified, 120);
}

TEST_F(EdgeModesTest, SampledSpecSendsDraftProbabilitiesTheVerifierAccepts) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  model::SamplerOptions sampling;
  sampling.temperature = 0.8f;
  sampling.top_k = 40;
  sampling.seed = 5;
  spec::ModelDrafterOptions d;
  d.layers = 3;
  d.sampler = sampling;  // sampled drafts come with the distributions they were drawn from
  auto drafter = std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kSpec, &warnings);
  o.sampler = sampling;
  EdgeGenerator gen(*target_, drafter.get(), Channel(v.target()), o);
  EdgeStats stats;
  std::vector<int32_t> got;
  absl::Status s = gen.Generate(prompt, 80, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(stats.tokens_verified, static_cast<int64_t>(got.size()));
  EXPECT_GT(stats.draft_tokens, 0);
  // Each draft went up with the top-40 distribution it was drawn from, as sparse rows: more
  // bytes than its id alone, far fewer than a vocabulary-wide row.
  EXPECT_GT(stats.bytes_up, stats.draft_tokens * 40 * 4);
  EXPECT_LT(stats.bytes_up, stats.draft_tokens * target_->config().vocab_size * 4 / 2);

  // Without top-k the rows are vocabulary wide.
  sampling.top_k = 0;
  d.sampler = sampling;
  o.sampler = sampling;
  drafter = std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  EdgeGenerator wide(*target_, drafter.get(), Channel(v.target()), o);
  EdgeStats wide_stats;
  s = wide.Generate(prompt, 80, [](int32_t, int32_t) {}, &wide_stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_GT(wide_stats.draft_tokens, 0);
  EXPECT_GT(wide_stats.bytes_up, wide_stats.draft_tokens * target_->config().vocab_size * 4);
}

TEST_F(EdgeModesTest, DraftsShrinkToTheVerifiersMessageLimit) {
  cloud::VerifierLimits small;
  small.max_message_bytes = 4096;  // two vocabulary-wide probability rows do not fit
  LoopbackVerifier v(*target_, {}, small);
  ASSERT_TRUE(v.Start());
  model::SamplerOptions sampling;
  sampling.temperature = 1.0f;
  sampling.seed = 9;
  spec::ModelDrafterOptions d;
  d.layers = 3;
  d.sampler = sampling;
  auto drafter = std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  for (EdgeMode mode : {EdgeMode::kSpec, EdgeMode::kAuto}) {
    std::vector<std::string> warnings;
    EdgeOptions o = Options(mode, &warnings);
    o.sampler = sampling;
    o.spec_tokens = 6;
    EdgeGenerator gen(*target_, drafter.get(), Channel(v.target()), o);
    EdgeStats stats;
    std::vector<int32_t> got;
    absl::Status s = gen.Generate(target_->vocab().Encode("Zoo", true), 40,
                                  [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(stats.tokens_verified, static_cast<int64_t>(got.size()));
    EXPECT_EQ(stats.fallbacks, 0);
    EXPECT_GT(stats.draft_tokens, 0);
    EXPECT_LE(stats.draft_tokens, stats.round_trips);  // one draft (one row) per round at most
  }
}

// Split mode resumes the same way: the new session gets the layer-k states of the whole prefix.
TEST_F(EdgeModesTest, StrictSpecResumesOnAVerifierRestartedOnTheSamePort) {
  for (auto [mode, tree] : {std::pair{EdgeMode::kSpec, false}, {EdgeMode::kSpec, true},
                            {EdgeMode::kSplit, false}, {EdgeMode::kSplit, true}}) {
    LoopbackVerifier v(*target_);
    ASSERT_TRUE(v.Start());
    const int port = v.port();
    std::vector<int32_t> prompt = target_->vocab().Encode("", true);
    auto drafter = EarlyExit();
    std::vector<std::string> warnings;
    EdgeOptions o = Options(mode, &warnings);
    o.split_layer = 2;
    o.retry_deadline_s = 60;  // generous: the restart below takes well under a second
    if (tree) o.tree = *spec::ParseTreeShape("static:2,3");
    EdgeGenerator gen(*target_, drafter.get(), Channel(v.target()), o);
    EdgeStats stats;
    std::vector<int32_t> got;
    std::thread restarter;
    bool restarted = false;
    absl::Status s = gen.Generate(
        prompt, 200,
        [&](int32_t, int32_t t) {
          got.push_back(t);
          if (got.size() == 40) {
            v.Stop();  // the verifier is gone now: the session is cancelled, the port closed
            restarter = std::thread([&] {
              std::this_thread::sleep_for(std::chrono::milliseconds(300));
              restarted = v.Start(port);
            });
          }
        },
        &stats);
    if (restarter.joinable()) restarter.join();
    ASSERT_TRUE(restarted);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, 200))
        << EdgeModeName(mode) << " tree " << tree;
    EXPECT_GE(stats.reconnects, 1);
    EXPECT_EQ(stats.sessions, stats.reconnects + 1);
    EXPECT_EQ(stats.tokens_verified, stats.generated_tokens);
    EXPECT_EQ(stats.tokens_local_fallback, 0);
    EXPECT_EQ(stats.fallbacks, 0);
    ASSERT_FALSE(warnings.empty());
    EXPECT_TRUE(absl::StrContains(warnings.front(), "retrying")) << warnings.front();
  }
}

TEST_F(EdgeModesTest, StrictSpecWithoutAVerifierGivesUpAfterTheRetryDeadline) {
  const int port = tandem::testing::ClosedPort(*target_);
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kSpec, &warnings);
  o.retry_deadline_s = 1;
  auto drafter = EarlyExit();
  EdgeGenerator gen(*target_, drafter.get(), Channel(absl::StrCat("127.0.0.1:", port)), o);
  EdgeStats stats;
  int emitted = 0;
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = gen.Generate(std::vector<int32_t>{1}, 20, [&](int32_t, int32_t) { ++emitted; },
                                &stats);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "unreachable")) << s;
  EXPECT_GE(waited, 0.9);  // it retried for the whole deadline (a lower bound only)
  EXPECT_EQ(emitted, 0);
  EXPECT_EQ(stats.tokens_local_fallback, 0);
  EXPECT_EQ(stats.sessions, 0);
}

TEST_F(EdgeModesTest, AutoWithoutAVerifierIsTheLocalModel) {
  const int port = tandem::testing::ClosedPort(*target_);
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kAuto, &warnings);
  auto drafter = EarlyExit();
  EdgeGenerator gen(*local_, drafter.get(), Channel(absl::StrCat("127.0.0.1:", port)), o);
  EdgeStats stats;
  std::vector<int32_t> got;
  absl::Status s = gen.Generate(prompt, 60, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, LocalAlone(*local_, prompt, 60));
  EXPECT_EQ(stats.tokens_local_fallback, stats.generated_tokens);
  EXPECT_EQ(stats.tokens_verified, 0);
  EXPECT_EQ(stats.fallbacks, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(absl::StrContains(warnings[0], "unreachable")) << warnings[0];
  EXPECT_TRUE(absl::StrContains(warnings[0], "UNAVAILABLE")) << warnings[0];
}

TEST_F(EdgeModesTest, AutoSurvivesAnOutageWithoutLosingOrRepeatingTokens) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  const int port = v.port();
  std::vector<int32_t> prompt = target_->vocab().Encode("", true);
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kAuto, &warnings);
  o.backoff_initial_s = o.backoff_max_s = 3600;  // reconnect on the token count alone:
  o.reconnect_every_tokens = 4;                  // the test decides when the verifier is back
  auto drafter = EarlyExit();
  EdgeGenerator gen(*local_, drafter.get(), Channel(v.target()), o);
  EdgeStats stats;
  std::vector<int32_t> got;
  size_t stopped_at = 0;
  const int n = 150;
  absl::Status s = gen.Generate(
      prompt, n,
      [&](int32_t, int32_t t) {
        got.push_back(t);
        if (got.size() == 30) {
          v.Stop();
          stopped_at = got.size();
        }
        if (got.size() == 45) {
          ASSERT_TRUE(v.Start(port));  // the verifier is back
        }
      },
      &stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(stats.fallbacks, 1);
  EXPECT_EQ(stats.reconnects, 1);
  EXPECT_EQ(stats.sessions, 2);
  ASSERT_GT(stats.tokens_local_fallback, 0);
  EXPECT_EQ(stats.tokens_verified + stats.tokens_local_fallback, stats.generated_tokens);
  EXPECT_EQ(stats.generated_tokens, static_cast<int64_t>(got.size()));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_TRUE(absl::StrContains(warnings[0], "continuing with the local model")) << warnings[0];
  EXPECT_TRUE(absl::StrContains(warnings[1], "resuming")) << warnings[1];

  // The text is three stretches: the target's (verified, up to a bit past the outage), the local
  // model's continuation of that, and the target's continuation of everything before it. Find
  // where the local stretch starts (the first stretch is a prefix of the target-alone text).
  const size_t local = static_cast<size_t>(stats.tokens_local_fallback);
  const std::vector<int32_t> alone = tandem::testing::GreedyTargetAlone(*target_, prompt, n);
  bool explained = false;
  for (size_t split = stopped_at; !explained && split + local <= got.size(); ++split) {
    if (split > alone.size() || !std::equal(got.begin(), got.begin() + split, alone.begin())) break;
    const std::vector<int32_t> before(got.begin(), got.begin() + split);
    const std::vector<int32_t> local_part(got.begin() + split, got.begin() + split + local);
    const std::vector<int32_t> after(got.begin() + split + local, got.end());
    const std::vector<int32_t> resumed = Concat(Concat(prompt, before), local_part);
    explained = local_part == LocalAlone(*local_, Concat(prompt, before), static_cast<int>(local)) &&
                after == tandem::testing::GreedyTargetAlone(*target_, resumed,
                                                            n - static_cast<int>(split + local));
  }
  EXPECT_TRUE(explained) << "the output is not target, then local, then target text";
  EXPECT_EQ(got.size(), static_cast<size_t>(n)) << "the target ended the text early";
}

TEST_F(EdgeModesTest, AutoGoesLocalWhenTheVerifierIsFullAndSaysSo) {
  cloud::VerifierLimits full;
  full.max_sessions = 0;  // every session is refused with RESOURCE_EXHAUSTED
  LoopbackVerifier v(*target_, {}, full);
  ASSERT_TRUE(v.Start());
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  auto drafter = EarlyExit();
  {
    std::vector<std::string> warnings;
    EdgeGenerator gen(*local_, drafter.get(), Channel(v.target()), Options(EdgeMode::kAuto, &warnings));
    EdgeStats stats;
    std::vector<int32_t> got;
    ASSERT_TRUE(gen.Generate(prompt, 40, [&](int32_t, int32_t t) { got.push_back(t); }, &stats).ok());
    EXPECT_EQ(got, LocalAlone(*local_, prompt, 40));
    EXPECT_EQ(stats.tokens_local_fallback, 40);
    ASSERT_FALSE(warnings.empty());
    EXPECT_TRUE(absl::StrContains(warnings[0], "busy")) << warnings[0];
    EXPECT_TRUE(absl::StrContains(warnings[0], "RESOURCE_EXHAUSTED")) << warnings[0];
  }
  {  // strict spec retries load like an outage, then reports it
    std::vector<std::string> warnings;
    EdgeOptions o = Options(EdgeMode::kSpec, &warnings);
    o.retry_deadline_s = 0.5;
    EdgeGenerator gen(*local_, drafter.get(), Channel(v.target()), o);
    EdgeStats stats;
    absl::Status s = gen.Generate(prompt, 40, [](int32_t, int32_t) {}, &stats);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_EQ(stats.generated_tokens, 0);
  }
}

TEST_F(EdgeModesTest, UnknownModelIsRefusedInEveryMode) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  auto drafter = EarlyExit();
  for (EdgeMode mode : {EdgeMode::kAuto, EdgeMode::kSpec}) {
    std::vector<std::string> warnings;
    EdgeOptions o = Options(mode, &warnings);
    o.model_name = "no-such-model";
    EdgeGenerator gen(*local_, drafter.get(), Channel(v.target()), o);
    EdgeStats stats;
    absl::Status s = gen.Generate(std::vector<int32_t>{1}, 10, [](int32_t, int32_t) {}, &stats);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
    EXPECT_EQ(stats.generated_tokens, 0);
    EXPECT_EQ(stats.fallbacks, 0);
  }
}

TEST_F(EdgeModesTest, CloudModeStreamsTheTargetText) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  auto channel = Channel(v.target());
  for (auto [text, n] : {std::pair{"", 200}, {"Zoo", 57}}) {
    std::vector<int32_t> prompt = target_->vocab().Encode(text, true);
    std::vector<std::string> warnings;
    // No drafter needed: the verifier decodes alone.
    EdgeGenerator gen(*local_, nullptr, channel, Options(EdgeMode::kCloud, &warnings));
    EdgeStats stats;
    std::vector<int32_t> got;
    absl::Status s = gen.Generate(prompt, n, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, n)) << "prompt '" << text << "'";
    EXPECT_EQ(stats.tokens_from_cloud, stats.generated_tokens);
    EXPECT_EQ(stats.tokens_verified + stats.tokens_local_fallback, 0);
    EXPECT_EQ(stats.round_trips, 1);
    EXPECT_EQ(stats.target_passes, stats.generated_tokens);
    EXPECT_EQ(stats.sessions, 1);
    EXPECT_GT(stats.bytes_down, 0);
    EXPECT_GT(stats.cloud_compute_seconds, 0.0);
    EXPECT_TRUE(warnings.empty());
  }
}

TEST_F(EdgeModesTest, StrictCloudResumesOnAVerifierRestartedOnTheSamePort) {
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  const int port = v.port();
  std::vector<int32_t> prompt = target_->vocab().Encode("", true);
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kCloud, &warnings);
  o.retry_deadline_s = 60;
  EdgeGenerator gen(*local_, nullptr, Channel(v.target()), o);
  EdgeStats stats;
  std::vector<int32_t> got;
  std::thread restarter;
  bool restarted = false;
  absl::Status s = gen.Generate(
      prompt, 200,
      [&](int32_t, int32_t t) {
        got.push_back(t);
        if (got.size() == 50) {
          v.Stop();
          restarter = std::thread([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            restarted = v.Start(port);
          });
        }
      },
      &stats);
  if (restarter.joinable()) restarter.join();
  ASSERT_TRUE(restarted);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, 200));
  EXPECT_GE(stats.reconnects, 1);
  EXPECT_EQ(stats.tokens_from_cloud, 200);
  EXPECT_EQ(stats.fallbacks, 0);
}

TEST_F(EdgeModesTest, StrictCloudWithoutAVerifierGivesUp) {
  std::vector<std::string> warnings;
  EdgeOptions o = Options(EdgeMode::kCloud, &warnings);
  o.retry_deadline_s = 0.5;
  EdgeGenerator gen(*local_, nullptr,
                    Channel(absl::StrCat("127.0.0.1:", tandem::testing::ClosedPort(*target_))), o);
  EdgeStats stats;
  absl::Status s = gen.Generate(std::vector<int32_t>{1}, 20, [](int32_t, int32_t) {}, &stats);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(stats.generated_tokens, 0);
}

TEST_F(EdgeModesTest, BearerTokenIsSentAndAWrongOneIsRefusedWithoutFallback) {
  auto auth = net::TokenAuthenticator::Parse("tenant-a:right-token\n");
  ASSERT_TRUE(auth.ok()) << auth.status();
  LoopbackVerifier v(*target_, {}, {},
                     std::make_shared<const net::TokenAuthenticator>(std::move(*auth)));
  ASSERT_TRUE(v.Start());
  auto channel = Channel(v.target());
  std::vector<int32_t> prompt = target_->vocab().Encode("Zoo", true);
  auto drafter = EarlyExit();
  for (EdgeMode mode : {EdgeMode::kAuto, EdgeMode::kSpec, EdgeMode::kCloud}) {
    for (const char* token : {"right-token", "wrong-token", ""}) {
      std::vector<std::string> warnings;
      EdgeOptions o = Options(mode, &warnings);
      o.auth_token = token;
      EdgeGenerator gen(*local_, drafter.get(), channel, o);
      EdgeStats stats;
      std::vector<int32_t> got;
      absl::Status s = gen.Generate(prompt, 57, [&](int32_t, int32_t t) { got.push_back(t); }, &stats);
      const std::string what = absl::StrCat(EdgeModeName(mode), " with token '", token, "'");
      if (std::string(token) == "right-token") {
        ASSERT_TRUE(s.ok()) << what << ": " << s;
        EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, prompt, 57)) << what;
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << what << ": " << s;
        EXPECT_TRUE(got.empty()) << what;
        EXPECT_EQ(stats.fallbacks, 0) << what;
        EXPECT_TRUE(warnings.empty()) << what << ": " << warnings.front();
      }
    }
  }
}

class EdgeTlsTest : public EdgeModesTest {
 protected:
  void SetUp() override { pki_ = tandem::testing::MintTestPki(tandem::testing::TempDir()); }

  // Generates 57 tokens after "Zoo" in `mode`; the status, and the tokens in `got`.
  absl::Status Run(const std::string& target, const net::ClientTlsOptions& tls, EdgeMode mode,
                   std::vector<int32_t>* got, EdgeStats* stats) {
    std::vector<std::string> warnings;
    EdgeOptions o = Options(mode, &warnings);
    o.retry_deadline_s = 2;
    auto drafter = EarlyExit();
    EdgeGenerator gen(*local_, drafter.get(), Channel(target, tls), o);
    return gen.Generate(target_->vocab().Encode("Zoo", true), 57,
                        [&](int32_t, int32_t t) { got->push_back(t); }, stats);
  }

  tandem::testing::TestPki pki_;
};

TEST_F(EdgeTlsTest, TlsVerifierWithTheRightCa) {
  LoopbackVerifier v(*target_, {pki_.server_cert, pki_.server_key, ""});
  ASSERT_TRUE(v.Start());
  std::vector<int32_t> got;
  EdgeStats stats;
  absl::Status s = Run(v.target(), {pki_.ca, "", "", ""}, EdgeMode::kAuto, &got, &stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, tandem::testing::GreedyTargetAlone(*target_, target_->vocab().Encode("Zoo", true), 57));
  EXPECT_EQ(stats.tokens_verified, 57);
}

TEST_F(EdgeTlsTest, RefusedHandshakesAreNotOutages) {
  LoopbackVerifier tls(*target_, {pki_.server_cert, pki_.server_key, ""});
  ASSERT_TRUE(tls.Start());
  LoopbackVerifier mtls(*target_, {pki_.server_cert, pki_.server_key, pki_.ca});
  ASSERT_TRUE(mtls.Start());
  struct Case {
    const char* what;
    std::string target;
    net::ClientTlsOptions tls;
  };
  for (const Case& c : {
           Case{"plaintext edge, TLS verifier", tls.target(), {}},
           Case{"wrong CA", tls.target(), {pki_.rogue_ca, "", "", ""}},
           Case{"no client certificate under mTLS", mtls.target(), {pki_.ca, "", "", ""}},
           Case{"client certificate from another CA", mtls.target(),
                {pki_.ca, pki_.rogue_client_cert, pki_.rogue_client_key, ""}},
       }) {
    for (EdgeMode mode : {EdgeMode::kAuto, EdgeMode::kSpec}) {
      std::vector<int32_t> got;
      EdgeStats stats;
      absl::Status s = Run(c.target, c.tls, mode, &got, &stats);
      EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << c.what << ": " << s;
      EXPECT_TRUE(absl::StrContains(s.message(), "handshake")) << c.what << ": " << s;
      EXPECT_TRUE(got.empty()) << c.what;
      EXPECT_EQ(stats.fallbacks, 0) << c.what;
      EXPECT_EQ(stats.tokens_local_fallback, 0) << c.what;
    }
  }
  // The right client certificate is let in.
  std::vector<int32_t> got;
  EdgeStats stats;
  absl::Status s = Run(mtls.target(), {pki_.ca, pki_.client_cert, pki_.client_key, ""},
                       EdgeMode::kSpec, &got, &stats);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.size(), 57u);
}

}  // namespace
}  // namespace tandem::edge
