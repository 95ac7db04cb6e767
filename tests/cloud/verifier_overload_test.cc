// Admission control under overload, over real gRPC on loopback: four times the configured
// capacity in sessions at once gets RESOURCE_EXHAUSTED for the excess at once (counted by reason)
// while the admitted sessions get exactly the target's text, wave after wave, with no growth in
// memory after they end; the KV budget refuses sessions whose caches do not fit (and sizes a
// session by its max_new_tokens); a long engine queue refuses new sessions as overloaded until it
// drains.
#include <fstream>
#include <latch>
#include <thread>

#include <malloc.h>

#include "common/model/model_writer.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"

namespace tandem::cloud {
namespace {

using tandem::testing::CloseMsg;
using tandem::testing::GreedyTargetAlone;
using tandem::testing::OpenMsg;
using tandem::testing::PromptMsg;
using tandem::testing::VerifierHarness;
using tandem::testing::WaitFor;

constexpr int kTokens = 24;

class VerifierOverloadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // KV caches large enough to see in RSS: 4 layers x 1024 positions x 512 wide x K and V
    // = 16 MiB per full-context session.
    model::SyntheticModelSpec spec;
    spec.dim = 512;
    spec.hidden_dim = 1024;
    spec.n_layers = 4;
    spec.n_heads = 8;
    spec.n_kv_heads = 8;
    spec.max_seq_len = 1024;
    spec.seed = 11;
    const std::string path = tandem::testing::TempDir() + "/overload-model.gguf";
    ASSERT_TRUE(model::WriteSyntheticGguf(spec, model::GgmlType::kQ8_0, path).ok());
    model::ModelLoadOptions o;
    o.path = path;
    target_ = std::move(*model::Model::Load(o)).release();
    // As tandem-verifier does: caches come from mmap and go back to the system when freed.
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
  }
  static void TearDownTestSuite() { delete target_; }

  static uint64_t SessionKvBytes() {
    const model::ModelConfig& c = target_->config();
    return model::KvCache::BytesFor(c, c.n_layers, c.max_seq_len);
  }

  static int64_t RssBytes() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    }
    return -1;
  }

  std::vector<int32_t> Prompt(int i) {
    return {target_->vocab().bos_id(), 300 + i, 301 + 2 * i, 302 + 3 * i};
  }

  struct Outcome {
    grpc::Status status;
    bool admitted = false;
    std::vector<int32_t> tokens;
  };

  // A cloud-mode client: opens (full-context session: no max_new_tokens), waits at `opened` until
  // every client of its wave has its answer, then reads kTokens tokens and closes.
  Outcome CloudClient(VerifierHarness& h, int i, std::latch* opened, uint32_t max_new = 0) {
    Outcome out;
    auto stub = h.Stub();
    grpc::ClientContext ctx;
    auto stream = stub->Session(&ctx);
    v1::VerifierMessage reply;
    const bool ok = stream->Write(OpenMsg(v1::MODE_CLOUD, max_new)) && stream->Read(&reply);
    out.admitted = ok && reply.has_opened();
    if (opened != nullptr) opened->count_down();
    if (!out.admitted) {
      out.status = stream->Finish();
      return out;
    }
    if (opened != nullptr) opened->wait();
    if (stream->Write(PromptMsg(Prompt(i)))) {
      while (static_cast<int>(out.tokens.size()) < kTokens && stream->Read(&reply)) {
        for (int32_t t : reply.tokens().token_ids()) out.tokens.push_back(t);
        if (reply.tokens().done()) break;
      }
      stream->Write(CloseMsg());
    }
    stream->WritesDone();
    while (stream->Read(&reply)) {
    }  // tokens sent before the Close arrived
    out.status = stream->Finish();
    if (out.tokens.size() > kTokens) out.tokens.resize(kTokens);  // messages carry several
    return out;
  }

  static model::Model* target_;
};
model::Model* VerifierOverloadTest::target_ = nullptr;

TEST_F(VerifierOverloadTest, ExcessSessionsAreRefusedAtOnceAndMemoryDoesNotGrow) {
  constexpr int kCapacity = 4;
  VerifierLimits limits;
  limits.max_sessions = kCapacity;
  VerifierHarness h(*target_, limits);
  std::vector<int64_t> rss_after;
  for (int wave = 0; wave < 3; ++wave) {
    SCOPED_TRACE(::testing::Message() << "wave " << wave);
    std::latch opened(4 * kCapacity);
    std::vector<Outcome> outcomes(4 * kCapacity);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4 * kCapacity; ++i) {
      threads.emplace_back([&, i] { outcomes[i] = CloudClient(h, i, &opened); });
    }
    for (auto& t : threads) t.join();
    int admitted = 0;
    for (int i = 0; i < 4 * kCapacity; ++i) {
      const Outcome& o = outcomes[i];
      if (o.admitted) {
        ++admitted;
        EXPECT_TRUE(o.status.ok()) << o.status.error_message();
        EXPECT_EQ(o.tokens, GreedyTargetAlone(*target_, Prompt(i), kTokens)) << "session " << i;
      } else {
        EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << i;
        EXPECT_NE(o.status.error_message().find("session limit"), std::string::npos)
            << o.status.error_message();
      }
    }
    EXPECT_EQ(admitted, kCapacity);
    ASSERT_TRUE(h.WaitIdle());
    EXPECT_EQ(h.service().kv_reserved_bytes(), 0u);
    rss_after.push_back(RssBytes());
  }
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "session_limit"}}), 3 * 3 * kCapacity);
  EXPECT_EQ(h.Metric("tandem_kv_reserved_bytes"), 0);
  // Each wave reserved kCapacity full caches (64 MiB in all); after the waves end the process is
  // no bigger than after the first one, give or take less than one session's cache.
  EXPECT_LT(rss_after[2], rss_after[0] + static_cast<int64_t>(SessionKvBytes()))
      << rss_after[0] << " then " << rss_after[1] << " then " << rss_after[2];
}

TEST_F(VerifierOverloadTest, KvBudgetRefusesCachesThatDoNotFit) {
  VerifierLimits limits;
  limits.max_sessions = 8;
  limits.kv_budget_bytes = SessionKvBytes() * 5 / 2;  // two full-context sessions and a half
  VerifierHarness h(*target_, limits);
  EXPECT_EQ(h.Metric("tandem_kv_budget_bytes"), static_cast<double>(limits.kv_budget_bytes));
  std::latch opened(4);
  std::vector<Outcome> outcomes(4);
  std::vector<std::thread> threads;
  // Four full-context sessions: all are admitted at open, but only two caches fit.
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { outcomes[i] = CloudClient(h, i, &opened); });
  for (auto& t : threads) t.join();
  int served = 0, refused = 0;
  for (int i = 0; i < 4; ++i) {
    if (outcomes[i].status.ok()) {
      ++served;
      EXPECT_EQ(outcomes[i].tokens, GreedyTargetAlone(*target_, Prompt(i), kTokens));
    } else {
      ++refused;
      EXPECT_EQ(outcomes[i].status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_NE(outcomes[i].status.error_message().find("KV budget"), std::string::npos)
          << outcomes[i].status.error_message();
    }
  }
  // Two caches fit at once; a refused session may also have found room after one ended.
  EXPECT_GE(served, 2);
  EXPECT_EQ(served + refused, 4);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "kv_budget"}}), refused);
  ASSERT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.service().kv_reserved_bytes(), 0u);

  // A session that says how long it will be reserves only that: with two full sessions holding
  // their caches, a third full one is refused but a short one fits in the half left.
  std::latch hold(1);
  std::vector<std::thread> holders;
  std::vector<Outcome> held(2);
  std::latch both_opened(2);
  for (int i = 0; i < 2; ++i) {
    holders.emplace_back([&, i] {
      auto stub = h.Stub();
      grpc::ClientContext ctx;
      auto stream = stub->Session(&ctx);
      v1::VerifierMessage reply;
      // The cache is reserved with the prompt; a spec session then waits for drafts.
      held[i].admitted = stream->Write(OpenMsg(v1::MODE_SPEC)) && stream->Read(&reply) &&
                         reply.has_opened() && stream->Write(PromptMsg(Prompt(i)));
      both_opened.count_down();
      hold.wait();
      stream->WritesDone();
      while (stream->Read(&reply)) {
      }
      held[i].status = stream->Finish();
    });
  }
  both_opened.wait();
  ASSERT_TRUE(WaitFor([&] { return h.service().kv_reserved_bytes() == 2 * SessionKvBytes(); }));
  Outcome full = CloudClient(h, 5, nullptr);
  EXPECT_EQ(full.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  Outcome short_one = CloudClient(h, 6, nullptr, /*max_new=*/kTokens);
  EXPECT_TRUE(short_one.status.ok()) << short_one.status.error_message();
  EXPECT_EQ(short_one.tokens, GreedyTargetAlone(*target_, Prompt(6), kTokens));
  hold.count_down();
  for (auto& t : holders) t.join();
  for (const Outcome& o : held) EXPECT_TRUE(o.admitted && o.status.ok()) << o.status.error_message();
}

TEST_F(VerifierOverloadTest, ALongEngineQueueRefusesNewSessionsUntilItDrains) {
  VerifierLimits limits;
  limits.max_queue_delay_s = 0.05;
  VerifierHarness h(*target_, limits);
  // The engine is held while a session's prompt waits behind it: the queue grows old.
  Outcome first;
  {
    tandem::testing::EngineHold hold(h.worker());
    ASSERT_TRUE(hold.held());
    std::thread t([&] { first = CloudClient(h, 0, nullptr); });
    ASSERT_TRUE(WaitFor([&] { return h.worker().queued() > 0; }));
    ASSERT_TRUE(WaitFor([&] { return h.worker().QueueDelay() > 0.05; }));
    Outcome refused = CloudClient(h, 1, nullptr);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(refused.status.error_message().find("overloaded"), std::string::npos)
        << refused.status.error_message();
    hold.Release();
    t.join();
  }
  EXPECT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.tokens, GreedyTargetAlone(*target_, Prompt(0), kTokens));
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "overloaded"}}), 1);
  // Once passes flow without waiting (and a second after the slow ones), sessions are admitted.
  ASSERT_TRUE(WaitFor([&] { return h.worker().QueueDelay() <= 0.05; }));
  Outcome later = CloudClient(h, 2, nullptr);
  EXPECT_TRUE(later.status.ok()) << later.status.error_message();
}

}  // namespace
}  // namespace tandem::cloud
