// The verifier's side of the edge's `uncertain` policy, over real gRPC on loopback: a draft
// round's context ids are committed unchecked and the drafts after them verified in the same
// single pass (the KV cache stays right across rejections), counted in tandem_context_tokens_total
// and never in tandem_spec_decode_*; context in a tree round, in a split session, outside the
// vocabulary or past the session's token limit is INVALID_ARGUMENT (reason bad_context) and the
// verifier keeps serving.
#include <thread>

#include <grpcpp/grpcpp.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"

namespace tandem::cloud {
namespace {

using ::testing::HasSubstr;
using tandem::testing::GreedyTargetAlone;
using tandem::testing::Stream;
using tandem::testing::VerifierHarness;

class VerifierContextTest : public tandem::testing::Stories260KTest {
 protected:
  static VerifierLimits Limits(int max_tokens = 4096) {
    VerifierLimits l;
    l.max_draft_tokens = 8;
    l.max_tree_nodes = 16;
    l.max_tokens_per_session = max_tokens;
    return l;
  }
  static int Vocab() { return target_->config().vocab_size; }
};

// A spec session driven by hand.
class Session {
 public:
  explicit Session(VerifierHarness& h, v1::Mode mode = v1::MODE_SPEC) : stub_(h.Stub()) {
    stream_ = stub_->Session(&ctx_);
    v1::EdgeMessage open = tandem::testing::OpenMsg(mode);
    if (mode == v1::MODE_SPLIT) open.mutable_open()->set_split_layer(2);
    v1::VerifierMessage reply;
    ok_ = stream_->Write(open) && stream_->Read(&reply) && reply.has_opened();
  }
  bool ok() const { return ok_; }
  bool Write(const v1::EdgeMessage& m) { return stream_->Write(m); }
  bool Read(v1::VerifierMessage* m) { return stream_->Read(m); }
  // Sends a draft round; false when no verdict came back.
  bool Round(uint64_t round, size_t committed, const std::vector<int32_t>& context,
             const std::vector<int32_t>& drafts, v1::Verdict* verdict,
             const std::vector<int32_t>& parents = {}) {
    v1::EdgeMessage m;
    v1::DraftRound* d = m.mutable_draft();
    d->set_round(round);
    d->set_committed_length(static_cast<uint32_t>(committed));
    d->mutable_context_ids()->Add(context.begin(), context.end());
    d->mutable_token_ids()->Add(drafts.begin(), drafts.end());
    d->mutable_parents()->Add(parents.begin(), parents.end());
    v1::VerifierMessage reply;
    if (!stream_->Write(m) || !stream_->Read(&reply) || !reply.has_verdict()) return false;
    *verdict = reply.verdict();
    return true;
  }
  grpc::Status Finish() {
    stream_->WritesDone();
    v1::VerifierMessage reply;
    while (stream_->Read(&reply)) {
    }
    return stream_->Finish();
  }

 private:
  std::unique_ptr<v1::Verifier::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<Stream> stream_;
  bool ok_ = false;
};

// Every round: two tokens of "context" the target would not write (committed unchecked), then
// four drafts: the target's own continuation of everything so far with the third one wrong. The
// verdict must be what the target alone says after the whole prefix, context included: two drafts
// accepted, then the target's third token. One verify pass per round.
TEST_F(VerifierContextTest, ContextIsCommittedAndTheDraftsAfterItVerifiedInOnePass) {
  VerifierHarness h(*target_, Limits());
  Session s(h);
  ASSERT_TRUE(s.ok());
  std::vector<int32_t> committed = target_->vocab().Encode("Once upon a time", true);
  ASSERT_TRUE(s.Write(tandem::testing::PromptMsg(committed)));
  int context_sent = 0, drafts_sent = 0, accepted = 0;
  const int rounds = 12;
  for (int r = 1; r <= rounds; ++r) {
    const std::vector<int32_t> context = {static_cast<int32_t>((37 * r) % Vocab()),
                                          static_cast<int32_t>((91 * r + 5) % Vocab())};
    std::vector<int32_t> after = committed;
    after.insert(after.end(), context.begin(), context.end());
    const std::vector<int32_t> want = GreedyTargetAlone(*target_, after, 4);
    ASSERT_EQ(want.size(), 4u) << "round " << r;
    std::vector<int32_t> drafts = want;
    drafts[2] = (drafts[2] + 1) % Vocab();
    v1::Verdict v;
    ASSERT_TRUE(s.Round(r, after.size(), context, drafts, &v)) << "round " << r;
    EXPECT_EQ(v.accepted(), 2u) << "round " << r;
    EXPECT_EQ(v.next_token(), want[2]) << "round " << r;
    committed = after;
    committed.insert(committed.end(), want.begin(), want.begin() + 3);
    context_sent += 2;
    drafts_sent += 4;
    accepted += static_cast<int>(v.accepted());
  }
  // A round of context alone (no drafts) gets the next token after it.
  v1::Verdict v;
  std::vector<int32_t> after = committed;
  after.push_back(7);
  ASSERT_TRUE(s.Round(rounds + 1, after.size(), {7}, {}, &v));
  EXPECT_EQ(v.accepted(), 0u);
  EXPECT_EQ(v.next_token(), GreedyTargetAlone(*target_, after, 1).at(0));
  context_sent += 1;
  EXPECT_TRUE(s.Finish().ok());

  EXPECT_EQ(h.service().verify_passes(), rounds + 1);
  EXPECT_EQ(h.Metric("tandem_context_tokens_total"), context_sent);
  EXPECT_EQ(h.Metric("tandem_spec_decode_num_draft_tokens_total"), drafts_sent);
  EXPECT_EQ(h.Metric("tandem_spec_decode_num_accepted_tokens_total"), accepted);
  EXPECT_EQ(h.Metric("tandem_verify_passes_total"), rounds + 1);
  // Each pass held the root, the context and the drafts.
  EXPECT_EQ(h.Metric("tandem_verify_batch_tokens_sum"), rounds + 1 + context_sent + drafts_sent);
  EXPECT_EQ(h.Metric("tandem_generated_tokens_total", {{"mode", "spec"}}), accepted + rounds + 1);
}

TEST_F(VerifierContextTest, BadContextIsInvalidArgumentCountedAndTheVerifierKeepsServing) {
  VerifierHarness h(*target_, Limits(/*max_tokens=*/32));
  const std::vector<int32_t> prompt = {1, 403, 261};
  using C = grpc::StatusCode;
  auto refused = [&](const std::vector<int32_t>& context, const std::vector<int32_t>& drafts,
                     const std::vector<int32_t>& parents, size_t committed, C code,
                     const char* text) {
    Session s(h);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(s.Write(tandem::testing::PromptMsg(prompt)));
    v1::Verdict v;
    EXPECT_FALSE(s.Round(1, committed, context, drafts, &v, parents));
    grpc::Status st = s.Finish();
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(text));
  };
  const size_t n = prompt.size();
  refused({5, Vocab()}, {6}, {}, n + 2, C::INVALID_ARGUMENT, "context token id 512 at index 1");
  refused({-1}, {}, {}, n + 1, C::INVALID_ARGUMENT, "context token id -1");
  refused({5}, {6, 7}, {-1, -1}, n + 1, C::INVALID_ARGUMENT, "chain drafts only");
  // 32 positions: 3 committed, the next token, and 29 context tokens do not fit.
  refused(std::vector<int32_t>(29, 5), {}, {}, n + 29, C::INVALID_ARGUMENT, "overflows the session");
  // The edge must count the context in committed_length.
  refused({5, 6}, {7}, {}, n, C::FAILED_PRECONDITION, "and 2 context tokens");
  // Context that fits exactly leaves no room for drafts: a draft more is the usual context_full.
  refused(std::vector<int32_t>(28, 5), {6}, {}, n + 28, C::RESOURCE_EXHAUSTED, "context full");
  {
    // A split session's ids stay on the edge: context ids have no place there.
    Session s(h, v1::MODE_SPLIT);
    ASSERT_TRUE(s.ok());
    const int dim = target_->config().dim;
    v1::EdgeMessage p;
    v1::HiddenStates* hs = p.mutable_prompt()->mutable_hidden();
    hs->set_layer(2);
    hs->set_rows(2);
    hs->set_dim(dim);
    hs->set_codec(v1::CODEC_F32);
    hs->set_data(std::string(2 * dim * sizeof(float), '\0'));
    ASSERT_TRUE(s.Write(p));
    v1::EdgeMessage m;
    v1::DraftRound* d = m.mutable_draft();
    d->set_round(1);
    d->set_committed_length(4);
    d->add_context_ids(5);
    d->add_token_ids(6);
    *d->mutable_hidden() = *hs;
    ASSERT_TRUE(s.Write(m));
    grpc::Status st = s.Finish();
    EXPECT_EQ(st.error_code(), C::INVALID_ARGUMENT) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("not for split mode"));
  }
  // The verifier still serves: a context that fits exactly (28 = 32 - 3 - 1) is taken.
  {
    Session s(h);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(s.Write(tandem::testing::PromptMsg(prompt)));
    std::vector<int32_t> context(28, 5);
    v1::Verdict v;
    ASSERT_TRUE(s.Round(1, n + 28, context, {}, &v));
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), context.begin(), context.end());
    EXPECT_EQ(v.next_token(), GreedyTargetAlone(*target_, all, 1).at(0));
    EXPECT_TRUE(s.Finish().ok());
  }
  EXPECT_TRUE(h.WaitIdle());
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "bad_context"}}), 5);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "committed_mismatch"}}), 1);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "context_full"}}), 1);
  EXPECT_EQ(h.Metric("tandem_rejections_total", {{"reason", "other"}}), 0);
  EXPECT_EQ(h.Metric("tandem_context_tokens_total"), 28);
}

}  // namespace
}  // namespace tandem::cloud
