// The wire protocol builds and round-trips: session messages, chain and tree drafts with
// probabilities, verdicts, and the generated gRPC service types. Garbage bytes parse to an error,
// never a crash.
#include <random>
#include <type_traits>

#include "gtest/gtest.h"
#include "tandem/v1/verifier.grpc.pb.h"
#include "tandem/v1/verifier.pb.h"

namespace tandem {
namespace {

static_assert(std::is_base_of_v<grpc::Service, v1::Verifier::CallbackService>,
              "the verifier is served with the gRPC callback API");

TEST(VerifierProtoTest, DraftRoundRoundTrips) {
  v1::EdgeMessage msg;
  v1::DraftRound* d = msg.mutable_draft();
  d->set_round(7);
  d->set_committed_length(42);
  for (int t : {5, 9, 11}) d->add_token_ids(t);
  for (int p : {-1, 0, 0}) d->add_parents(p);
  v1::SparseRow* row = d->mutable_probs()->add_sparse();
  row->add_token_ids(5);
  row->add_probs(0.75f);
  std::string bytes;
  ASSERT_TRUE(msg.SerializeToString(&bytes));
  v1::EdgeMessage back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  ASSERT_EQ(back.kind_case(), v1::EdgeMessage::kDraft);
  EXPECT_EQ(back.draft().round(), 7u);
  EXPECT_EQ(back.draft().token_ids_size(), 3);
  EXPECT_EQ(back.draft().parents(0), -1);
  EXPECT_FLOAT_EQ(back.draft().probs().sparse(0).probs(0), 0.75f);
}

TEST(VerifierProtoTest, VerdictAndSessionMessages) {
  v1::VerifierMessage msg;
  v1::Verdict* v = msg.mutable_verdict();
  v->set_round(3);
  v->set_accepted(2);
  v->set_next_token(17);
  v->set_compute_micros(1234);
  std::string bytes = msg.SerializeAsString();
  v1::VerifierMessage back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  EXPECT_EQ(back.verdict().next_token(), 17);
  v1::EdgeMessage open;
  open.mutable_open()->set_mode(v1::MODE_SPEC);
  open.mutable_open()->mutable_sampling()->set_temperature(0.8f);
  EXPECT_EQ(open.open().mode(), v1::MODE_SPEC);
}

TEST(VerifierProtoTest, GarbageIsRejectedNotFatal) {
  std::mt19937 rng(1);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    v1::EdgeMessage msg;
    parsed += msg.ParseFromString(junk) ? 1 : 0;  // either way, no crash
  }
  EXPECT_LT(parsed, 20000);  // most random strings are not valid messages
}

}  // namespace
}  // namespace tandem
