// The edge's `uncertain` policy (edge/uncertain.h) against a real verifier on loopback:
//   - off (threshold 0), or nothing confident (threshold > 1): the target's text, every token
//     verified;
//   - with the target itself drafting (every draft agrees), confident tokens are committed
//     unverified, in fewer round trips, and the text is still the target's; the verifier counts
//     the context tokens apart from the verified drafts;
//   - with weaker drafters the text drifts from exact decoding: measured (identical share, first
//     divergence, token agreement) and recorded as test properties, with only what must hold
//     asserted (every token the target did not choose was committed unverified);
//   - kAuto's spec rounds, sampling, a session token limit, a verifier restart mid-generation (the resumed session
//     replays the unverified tokens too), bad options, and the CLI's flag and stats.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "edge/edge_generator.h"
#include "edge/uncertain.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/edge/loopback_verifier.h"
#include "tests/greedy_reference.h"
#include "tests/test_util.h"

namespace tandem::edge {
namespace {

using tandem::testing::GreedyTargetAlone;
using tandem::testing::LoopbackVerifier;
using tandem::testing::VerifierHarness;

const char* const kPrompts[] = {"Once upon a time", "Lily and Tom", "The little dog", "One day",
                                "She was very happy"};

struct Result {
  absl::Status status;
  std::vector<int32_t> tokens;
  EdgeStats stats;
};

class UncertainTest : public tandem::testing::Stories260KTest {
 protected:
  // The target's first `layers` layers as the drafter; -1: the whole target.
  static std::unique_ptr<spec::Drafter> Drafter(int layers, float temperature = 0) {
    spec::ModelDrafterOptions d;
    d.layers = layers;
    d.sampler.temperature = temperature;
    d.sampler.seed = 99;
    return std::move(*spec::ModelDrafter::Create(*target_, nullptr, d));
  }

  static EdgeOptions Options(double threshold) {
    EdgeOptions o;
    o.mode = EdgeMode::kSpec;
    o.spec_tokens = 4;
    o.uncertain_threshold = threshold;
    o.on_warning = [](const std::string&) {};
    return o;
  }

  static Result Generate(std::shared_ptr<grpc::Channel> channel, spec::Drafter* drafter,
                         const EdgeOptions& o, const std::vector<int32_t>& prompt, int n,
                         const std::function<void(size_t)>& on_token = nullptr) {
    Result r;
    EdgeGenerator gen(*target_, drafter, std::move(channel), o);
    r.status = gen.Generate(
        prompt, n,
        [&](int32_t, int32_t t) {
          r.tokens.push_back(t);
          if (on_token) on_token(r.tokens.size());
        },
        &r.stats);
    return r;
  }

  static std::vector<int32_t> Prompt(const char* text) {
    return target_->vocab().Encode(text, true);
  }

  // Tokens of `out` that the target, decoding greedily after the same prefix (prompt and the
  // tokens of `out` before it), would not have chosen.
  static int TargetDisagreements(const std::vector<int32_t>& prompt,
                                 const std::vector<int32_t>& out) {
    int wrong = 0;
    std::vector<int32_t> prefix = prompt;
    for (int32_t t : out) {
      const std::vector<int32_t> choice = GreedyTargetAlone(*target_, prefix, 1);
      wrong += choice.empty() || choice[0] != t;  // empty: the target would have ended the text
      prefix.push_back(t);
    }
    return wrong;
  }
};

// How far a run's text is from exact decoding, summed over prompts.
struct Agreement {
  int prompts = 0, identical = 0;
  double first_divergence = 0;   // summed: the first index that differs (the length if none)
  int64_t positions = 0, same_position = 0;  // token i equals exact token i
  int64_t tokens = 0, target_choice = 0;     // the target would have chosen the token
  int64_t verified = 0, unverified = 0, round_trips = 0;

  void Add(const std::vector<int32_t>& exact, const Result& r, int disagreements) {
    prompts++;
    size_t first = 0;
    while (first < exact.size() && first < r.tokens.size() && exact[first] == r.tokens[first]) ++first;
    identical += r.tokens == exact;
    first_divergence += static_cast<double>(first);
    const size_t n = std::max(exact.size(), r.tokens.size());
    positions += static_cast<int64_t>(n);
    for (size_t i = 0; i < std::min(exact.size(), r.tokens.size()); ++i) {
      same_position += exact[i] == r.tokens[i];
    }
    tokens += static_cast<int64_t>(r.tokens.size());
    target_choice += static_cast<int64_t>(r.tokens.size()) - disagreements;
    verified += r.stats.tokens_verified;
    unverified += r.stats.tokens_unverified;
    round_trips += r.stats.round_trips;
  }
  double IdenticalShare() const { return prompts ? static_cast<double>(identical) / prompts : 0; }
  double MeanFirstDivergence() const { return prompts ? first_divergence / prompts : 0; }
  double PositionAgreement() const {
    return positions ? static_cast<double>(same_position) / static_cast<double>(positions) : 0;
  }
  double TargetAgreement() const {
    return tokens ? static_cast<double>(target_choice) / static_cast<double>(tokens) : 0;
  }
};

TEST_F(UncertainTest, OffOrNothingConfidentGivesTheTargetText) {
  VerifierHarness h(*target_, {});
  for (double threshold : {0.0, 1.01, 2.0}) {
    for (const char* text : kPrompts) {
      const std::vector<int32_t> prompt = Prompt(text);
      auto drafter = Drafter(2);
      Result r = Generate(h.channel(), drafter.get(), Options(threshold), prompt, 64);
      ASSERT_TRUE(r.status.ok()) << r.status;
      EXPECT_EQ(r.tokens, GreedyTargetAlone(*target_, prompt, 64)) << threshold << " '" << text << "'";
      EXPECT_EQ(r.stats.tokens_unverified, 0);
      EXPECT_EQ(r.stats.tokens_verified, r.stats.generated_tokens);
    }
  }
  EXPECT_EQ(h.Metric("tandem_context_tokens_total"), 0);
}

// The target drafting for itself: every draft is what the target would say, so the confident ones
// can be committed unverified without changing the text, and the rounds they save show.
TEST_F(UncertainTest, TheTargetAsDrafterCommitsUnverifiedInFewerRoundTripsAndTheSameText) {
  VerifierHarness h(*target_, {});
  int64_t unverified = 0, draft_tokens = 0, accepted = 0, rounds = 0;
  for (int i = 0; i < static_cast<int>(std::size(kPrompts)); ++i) {
    const char* text = kPrompts[i];
    const std::vector<int32_t> prompt = Prompt(text);
    auto off_drafter = Drafter(-1);
    Result off = Generate(h.channel(), off_drafter.get(), Options(0), prompt, 64);
    ASSERT_TRUE(off.status.ok()) << off.status;
    const double before = h.Metric("tandem_context_tokens_total");
    auto drafter = Drafter(-1);
    Result on = Generate(h.channel(), drafter.get(), Options(0.5), prompt, 64);
    ASSERT_TRUE(on.status.ok()) << on.status;
    EXPECT_EQ(on.tokens, GreedyTargetAlone(*target_, prompt, 64)) << "'" << text << "'";
    EXPECT_GT(on.stats.tokens_unverified, 0) << "'" << text << "'";
    EXPECT_EQ(on.stats.tokens_verified + on.stats.tokens_unverified, on.stats.generated_tokens);
    EXPECT_LT(on.stats.round_trips, off.stats.round_trips) << "'" << text << "'";
    // The verifier received the unverified tokens as context, except those committed after the
    // last round (never sent: the text was complete).
    const double context = h.Metric("tandem_context_tokens_total") - before;
    EXPECT_GT(context, 0);
    EXPECT_LE(context, on.stats.tokens_unverified);
    unverified += on.stats.tokens_unverified;
    draft_tokens += off.stats.draft_tokens + on.stats.draft_tokens;
    accepted += off.stats.accepted_tokens + on.stats.accepted_tokens;
    rounds += off.stats.round_trips + on.stats.round_trips;
    RecordProperty(absl::StrCat("target_t0.5_p", i, "_round_trips_off"), off.stats.round_trips);
    RecordProperty(absl::StrCat("target_t0.5_p", i, "_round_trips_on"), on.stats.round_trips);
    RecordProperty(absl::StrCat("target_t0.5_p", i, "_unverified"), on.stats.tokens_unverified);
  }
  // Only the verified drafts count as drafts; one pass per round.
  EXPECT_EQ(h.Metric("tandem_spec_decode_num_draft_tokens_total"), draft_tokens);
  EXPECT_EQ(h.Metric("tandem_spec_decode_num_accepted_tokens_total"), accepted);
  EXPECT_EQ(h.Metric("tandem_verify_passes_total"), rounds);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "bad_context"}}), 0);
}

// kAuto runs spec rounds while the verifier answers: the policy applies to them as well.
TEST_F(UncertainTest, AutoModeSpecRoundsUseThePolicyToo) {
  VerifierHarness h(*target_, {});
  const std::vector<int32_t> prompt = Prompt("The little dog");
  EdgeOptions o = Options(0.5);
  o.mode = EdgeMode::kAuto;
  auto drafter = Drafter(-1);
  Result r = Generate(h.channel(), drafter.get(), o, prompt, 64);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens, GreedyTargetAlone(*target_, prompt, 64));
  EXPECT_GT(r.stats.tokens_unverified, 0);
  EXPECT_EQ(r.stats.tokens_verified + r.stats.tokens_unverified, r.stats.generated_tokens);
  EXPECT_EQ(r.stats.tokens_local_fallback, 0);
  EXPECT_GT(h.Metric("tandem_context_tokens_total"), 0);
}

// Weaker drafters: confident tokens the target would not have written stand. Every token the
// target would not have chosen must be an unverified one (the verified ones are its own choices).
TEST_F(UncertainTest, AgreementWithExactDecodingIsMeasured) {
  VerifierHarness h(*target_, {});
  const int n = 64;
  std::map<std::string, Agreement> table;
  std::printf("%-13s %5s %9s %10s %11s %10s %15s %11s %11s\n", "drafter", "thr", "verified",
              "unverified", "round_trips", "identical", "first_diverge", "pos_agree",
              "tgt_agree");
  for (int layers : {1, 2, 4}) {
    for (double threshold : {0.0, 0.5, 0.7, 0.9}) {
      Agreement a;
      for (const char* text : kPrompts) {
        const std::vector<int32_t> prompt = Prompt(text);
        const std::vector<int32_t> exact = GreedyTargetAlone(*target_, prompt, n);
        auto drafter = Drafter(layers);
        Result r = Generate(h.channel(), drafter.get(), Options(threshold), prompt, n);
        ASSERT_TRUE(r.status.ok()) << r.status;
        EXPECT_EQ(r.stats.tokens_verified + r.stats.tokens_unverified, r.stats.generated_tokens);
        EXPECT_EQ(r.stats.generated_tokens, static_cast<int64_t>(r.tokens.size()));
        const int wrong = TargetDisagreements(prompt, r.tokens);
        EXPECT_LE(wrong, r.stats.tokens_unverified) << layers << " " << threshold << " '" << text << "'";
        if (threshold == 0) {
          EXPECT_EQ(r.tokens, exact);
        }
        a.Add(exact, r, wrong);
      }
      const std::string key = absl::StrFormat("ee%d_t%.1f", layers, threshold);
      table[key] = a;
      RecordProperty(key + "_verified", static_cast<int>(a.verified));
      RecordProperty(key + "_unverified", static_cast<int>(a.unverified));
      RecordProperty(key + "_round_trips", static_cast<int>(a.round_trips));
      RecordProperty(key + "_identical_share", absl::StrFormat("%.2f", a.IdenticalShare()));
      RecordProperty(key + "_mean_first_divergence", absl::StrFormat("%.1f", a.MeanFirstDivergence()));
      RecordProperty(key + "_position_agreement", absl::StrFormat("%.3f", a.PositionAgreement()));
      RecordProperty(key + "_target_agreement", absl::StrFormat("%.3f", a.TargetAgreement()));
      std::printf("early-exit:%d  %5.1f %9lld %10lld %11lld %10.2f %15.1f %11.3f %11.3f\n", layers,
                  threshold, static_cast<long long>(a.verified), static_cast<long long>(a.unverified),
                  static_cast<long long>(a.round_trips), a.IdenticalShare(), a.MeanFirstDivergence(),
                  a.PositionAgreement(), a.TargetAgreement());
    }
  }
  // With the policy off the text is exact.
  for (int layers : {1, 2, 4}) {
    const Agreement& off = table[absl::StrFormat("ee%d_t0.0", layers)];
    EXPECT_EQ(off.identical, off.prompts);
    EXPECT_EQ(off.unverified, 0);
  }
  // A good drafter is often confident: the policy does commit tokens unverified and saves rounds.
  const Agreement& ee4 = table["ee4_t0.7"];
  EXPECT_GT(ee4.unverified, 0);
  EXPECT_LT(ee4.round_trips, table["ee4_t0.0"].round_trips);
}

TEST_F(UncertainTest, SamplingCommitsConfidentDraftsToo) {
  VerifierHarness h(*target_, {});
  const std::vector<int32_t> prompt = Prompt("Once upon a time");
  EdgeOptions o = Options(0.5);
  o.sampler.temperature = 0.8f;
  o.sampler.seed = 5;
  auto drafter = Drafter(4, 0.8f);
  Result r = Generate(h.channel(), drafter.get(), o, prompt, 96);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.stats.tokens_unverified, 0);
  EXPECT_GT(r.stats.tokens_verified, 0);
  EXPECT_EQ(r.stats.tokens_verified + r.stats.tokens_unverified, r.stats.generated_tokens);
  EXPECT_GT(h.Metric("tandem_context_tokens_total"), 0);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "other"}}), 0);
}

// The edge never sends more context than the session holds: a full session ends the text.
TEST_F(UncertainTest, TheSessionTokenLimitIsRespected) {
  cloud::VerifierLimits limits;
  limits.max_tokens_per_session = 40;
  VerifierHarness h(*target_, limits);
  const std::vector<int32_t> prompt = Prompt("Once upon a time");
  auto drafter = Drafter(-1);
  Result r = Generate(h.channel(), drafter.get(), Options(0.3), prompt, 200);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.stats.tokens_unverified, 0);
  EXPECT_LE(prompt.size() + r.tokens.size(), 40u);
  EXPECT_EQ(r.tokens, GreedyTargetAlone(*target_, prompt, static_cast<int>(r.tokens.size())));
  EXPECT_TRUE(h.WaitIdle());
  for (const char* reason : {"bad_context", "context_full", "other"}) {
    EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", reason}}), 0) << reason;
  }
}

// A restart mid-generation: the resumed session's prompt is the whole committed prefix, the
// unverified tokens included, so the text is the one an uninterrupted run gives.
TEST_F(UncertainTest, ResumptionReplaysTheUnverifiedTokensToo) {
  const std::vector<int32_t> prompt = Prompt("Lily and Tom");
  LoopbackVerifier v(*target_);
  ASSERT_TRUE(v.Start());
  const int port = v.port();
  auto channel = *MakeVerifierChannel(v.target(), {});
  EdgeOptions o = Options(0.7);
  o.retry_deadline_s = 60;
  auto first = Drafter(4);
  Result whole = Generate(channel, first.get(), o, prompt, 160);
  ASSERT_TRUE(whole.status.ok()) << whole.status;
  ASSERT_GT(whole.stats.tokens_unverified, 0);
  for (size_t stop_at : {size_t{30}, size_t{75}}) {
    std::thread restarter;
    bool restarted = false;
    auto drafter = Drafter(4);
    Result r = Generate(channel, drafter.get(), o, prompt, 160, [&](size_t emitted) {
      if (emitted != stop_at) return;
      v.Stop();
      restarter = std::thread([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        restarted = v.Start(port);
      });
    });
    if (restarter.joinable()) restarter.join();
    ASSERT_TRUE(restarted);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.tokens, whole.tokens) << "stopped at " << stop_at;
    EXPECT_GE(r.stats.reconnects, 1);
    EXPECT_EQ(r.stats.tokens_verified + r.stats.tokens_unverified, r.stats.generated_tokens);
  }
}

TEST_F(UncertainTest, BadOptionsAreRefused) {
  VerifierHarness h(*target_, {});
  const std::vector<int32_t> prompt = Prompt("One day");
  auto drafter = Drafter(2);
  auto refused = [&](EdgeOptions o, const char* text) {
    Result r = Generate(h.channel(), drafter.get(), o, prompt, 8);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
    EXPECT_TRUE(absl::StrContains(r.status.message(), text)) << r.status;
    EXPECT_TRUE(r.tokens.empty());
  };
  refused(Options(-0.5), "threshold");
  refused(Options(std::nan("")), "threshold");
  EdgeOptions tree = Options(0.5);
  tree.tree = *spec::ParseTreeShape("static:2,2");
  refused(tree, "chains");
  EdgeOptions cloud = Options(0.5);
  cloud.mode = EdgeMode::kCloud;
  refused(cloud, "cloud");
  EdgeOptions split = Options(0.5);
  split.mode = EdgeMode::kSplit;
  split.split_layer = 2;
  refused(split, "split");
}

TEST_F(UncertainTest, TheCliTakesTheThresholdAndReportsUnverifiedTokens) {
  VerifierHarness h(*target_, {});
  const std::string dir = tandem::testing::TempDir();
  const std::string stats = dir + "/stats.json";
  const std::string cmd = absl::StrCat(
      TANDEM_BIN_DIR, "/tandem-edge generate --verifier 127.0.0.1:", h.port(), " --mode spec --model ",
      tandem::testing::ModelPath("stories260K.bin"), " --tokenizer ",
      tandem::testing::ModelPath("tok512.bin"),
      " --draft early-exit:4 --uncertain-threshold 0.6 --prompt 'Once upon a time' "
      "--max-tokens 64 --stats-json ",
      stats, " > ", dir, "/out.txt 2> ", dir, "/err.txt");
  ASSERT_EQ(tandem::testing::RunShell(cmd), 0) << tandem::testing::ReadFileOrDie(dir + "/err.txt");
  const std::string json = tandem::testing::ReadFileOrDie(stats);
  auto field = [&](const std::string& name) {
    const size_t at = json.find("\"" + name + "\": ");
    EXPECT_NE(at, std::string::npos) << name << " in " << json;
    return at == std::string::npos ? -1 : std::atoll(json.c_str() + at + name.size() + 4);
  };
  EXPECT_GT(field("tokens_unverified"), 0);
  EXPECT_EQ(field("tokens_verified") + field("tokens_unverified"), field("generated_tokens"));
  EXPECT_TRUE(absl::StrContains(tandem::testing::ReadFileOrDie(dir + "/err.txt"), "unverified"));
  const std::string bad = absl::StrCat(
      TANDEM_BIN_DIR, "/tandem-edge generate --verifier 127.0.0.1:", h.port(), " --mode cloud --model ",
      tandem::testing::ModelPath("stories260K.bin"), " --uncertain-threshold 0.6 2> ", dir,
      "/bad.txt");
  EXPECT_EQ(tandem::testing::RunShell(bad), 2);
  EXPECT_TRUE(absl::StrContains(tandem::testing::ReadFileOrDie(dir + "/bad.txt"), "uncertain"));
}

}  // namespace
}  // namespace tandem::edge
