// Consistency of the single forward entry point across its uses: batched vs one position at a
// time, split layer ranges, tree masks vs chains, KV rollback and compaction, early exit, and
// rejection of bad requests. Uses the real stories260K model.
#include "common/model/engine.h"

#include <cmath>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::model {
namespace {

using ::testing::HasSubstr;

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ModelLoadOptions o;
    o.path = tandem::testing::ModelPath("stories260K.bin");
    o.tokenizer_path = tandem::testing::ModelPath("tok512.bin");
    auto m = Model::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m).release();
  }
  static void TearDownTestSuite() { delete model_; }

  KvCache NewCache(int a = 0, int b = -1, int capacity = 128) {
    auto c = KvCache::Create(model_->config(), a, b < 0 ? model_->config().n_layers : b, capacity);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  }

  // Runs tokens through the whole model and returns all logits rows.
  ForwardResult Run(Engine& e, KvCache& cache, std::vector<int32_t> tokens,
                    std::vector<int32_t> parents = {}) {
    ForwardRequest r;
    r.tokens = tokens;
    r.parents = parents;
    ForwardResult out;
    absl::Status s = e.Forward(r, &cache, &out);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  static float MaxDiff(std::span<const float> a, std::span<const float> b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
  }

  std::vector<int32_t> Prompt() {
    return model_->vocab().Encode("Once upon a time, there was a dog", /*add_bos=*/true);
  }

  static Model* model_;
};
Model* EngineTest::model_ = nullptr;

constexpr float kTol = 2e-4f;

TEST_F(EngineTest, BatchedEqualsOnePositionAtATime) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    Engine e(*model_, &pool);
    std::vector<int32_t> toks = Prompt();
    KvCache batched = NewCache();
    ForwardResult all = Run(e, batched, toks);
    ASSERT_EQ(all.rows, static_cast<int>(toks.size()));
    ASSERT_TRUE(all.is_logits);
    KvCache single = NewCache();
    for (size_t i = 0; i < toks.size(); ++i) {
      ForwardResult one = Run(e, single, {toks[i]});
      ASSERT_EQ(one.rows, 1);
      EXPECT_LT(MaxDiff(one.Row(0), all.Row(static_cast<int>(i))), kTol) << "position " << i;
    }
    EXPECT_EQ(batched.length(), single.length());
  }
}

TEST_F(EngineTest, SplitLayerRangesEqualFullPass) {
  Engine e(*model_, nullptr);
  const int N = model_->config().n_layers;
  std::vector<int32_t> toks = Prompt();
  KvCache full = NewCache();
  ForwardResult want = Run(e, full, toks);
  for (int k = 1; k < N; ++k) {
    KvCache front = NewCache(0, k), back = NewCache(k, N);
    ForwardRequest r1;
    r1.layer_end = k;
    r1.tokens = toks;
    ForwardResult hidden;
    ASSERT_TRUE(e.Forward(r1, &front, &hidden).ok());
    EXPECT_FALSE(hidden.is_logits);
    ASSERT_EQ(hidden.cols, model_->config().dim);
    ForwardRequest r2;
    r2.layer_begin = k;
    r2.hidden = hidden.data;
    ForwardResult got;
    ASSERT_TRUE(e.Forward(r2, &back, &got).ok());
    ASSERT_TRUE(got.is_logits);
    for (int i = 0; i < got.rows; ++i) EXPECT_EQ(MaxDiff(got.Row(i), want.Row(i)), 0.0f) << k;
    // Keep decoding through the split: the two halves' caches stay in step.
    KvCache full2 = full;
    for (int32_t t : {42, 7, 300}) {
      ForwardResult w = Run(e, full2, {t});
      r1.tokens = std::span<const int32_t>(&t, 1);
      ASSERT_TRUE(e.Forward(r1, &front, &hidden).ok());
      r2.hidden = hidden.data;
      ASSERT_TRUE(e.Forward(r2, &back, &got).ok());
      EXPECT_EQ(MaxDiff(got.Row(0), w.Row(0)), 0.0f);
    }
  }
}

TEST_F(EngineTest, TreeMaskEqualsSeparateChains) {
  Engine e(*model_, nullptr);
  std::vector<int32_t> prefix = Prompt();
  KvCache base = NewCache();
  Run(e, base, prefix);
  // Tree (node: parent): 0: root, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2. Two levels, three leaves.
  std::vector<int32_t> toks = {300, 301, 302, 303, 304, 305};
  std::vector<int32_t> parents = {-1, 0, 0, 1, 1, 2};
  KvCache tree = base;
  ForwardResult got = Run(e, tree, toks, parents);
  ASSERT_EQ(got.rows, 6);
  EXPECT_EQ(tree.length(), base.length() + 6);
  for (int node = 0; node < 6; ++node) {
    std::vector<int32_t> path;
    for (int n = node; n >= 0; n = parents[n]) path.insert(path.begin(), toks[n]);
    KvCache chain = base;
    ForwardResult want = Run(e, chain, path);
    EXPECT_LT(MaxDiff(got.Row(node), want.Row(want.rows - 1)), kTol) << "node " << node;
  }
}

TEST_F(EngineTest, KeepSlotsAfterTreeEqualsChainOfAcceptedPath) {
  Engine e(*model_, nullptr);
  std::vector<int32_t> prefix = Prompt();
  const int L = static_cast<int>(prefix.size());
  KvCache tree = NewCache();
  Run(e, tree, prefix);
  std::vector<int32_t> toks = {300, 301, 302, 303, 304};
  std::vector<int32_t> parents = {-1, 0, 0, 2, 1};
  Run(e, tree, toks, parents);
  // Accept the path 0 -> 2 -> 3 and continue from it.
  std::vector<int32_t> keep;
  for (int i = 0; i < L; ++i) keep.push_back(i);
  for (int n : {0, 2, 3}) keep.push_back(L + n);
  ASSERT_TRUE(tree.KeepSlots(keep).ok());
  EXPECT_EQ(tree.length(), L + 3);
  ForwardResult got = Run(e, tree, {77, 78});

  std::vector<int32_t> chain_tokens = prefix;
  for (int32_t t : {300, 302, 303, 77, 78}) chain_tokens.push_back(t);
  KvCache chain = NewCache();
  ForwardResult want = Run(e, chain, chain_tokens);
  EXPECT_LT(MaxDiff(got.Row(0), want.Row(want.rows - 2)), kTol);
  EXPECT_LT(MaxDiff(got.Row(1), want.Row(want.rows - 1)), kTol);

  // KeepPath says the same relative to the root (the last prefix slot, node 0).
  KvCache by_path = NewCache();
  Run(e, by_path, prefix);
  Run(e, by_path, toks, parents);
  const std::vector<int32_t> path = {1, 3, 4};
  ASSERT_TRUE(by_path.KeepPath(L - 1, path).ok());
  EXPECT_EQ(by_path.length(), L + 3);
  ForwardResult got_path = Run(e, by_path, {77, 78});
  EXPECT_EQ(MaxDiff(got_path.Row(0), got.Row(0)), 0.0f);
  EXPECT_EQ(MaxDiff(got_path.Row(1), got.Row(1)), 0.0f);
}

TEST_F(EngineTest, TruncateThenRedecodeEqualsFreshDecode) {
  Engine e(*model_, nullptr);
  std::vector<int32_t> prefix = Prompt();
  KvCache c = NewCache();
  Run(e, c, prefix);
  const int keep = c.length();
  Run(e, c, {10, 11, 12, 13});  // a rejected draft
  ASSERT_TRUE(c.Truncate(keep).ok());
  ForwardResult got = Run(e, c, {20, 21});

  std::vector<int32_t> fresh_tokens = prefix;
  fresh_tokens.push_back(20);
  fresh_tokens.push_back(21);
  KvCache fresh = NewCache();
  ForwardResult want = Run(e, fresh, fresh_tokens);
  EXPECT_LT(MaxDiff(got.Row(1), want.Row(want.rows - 1)), kTol);
  EXPECT_LT(MaxDiff(got.Row(0), want.Row(want.rows - 2)), kTol);
}

TEST_F(EngineTest, EarlyExitAppliesTheHeadAfterLayerK) {
  Engine e(*model_, nullptr);
  std::vector<int32_t> toks = Prompt();
  const int k = 2;
  KvCache c1 = NewCache(0, k), c2 = NewCache(0, k);
  ForwardRequest r;
  r.layer_end = k;
  r.tokens = toks;
  ForwardResult hidden, logits;
  ASSERT_TRUE(e.Forward(r, &c1, &hidden).ok());
  r.early_exit = true;
  r.logits = LogitsMode::kLast;
  ASSERT_TRUE(e.Forward(r, &c2, &logits).ok());
  ASSERT_TRUE(logits.is_logits);
  ASSERT_EQ(logits.rows, 1);
  std::vector<float> want(model_->config().vocab_size);
  e.Head(hidden.Row(hidden.rows - 1).data(), 1, want.data());
  EXPECT_EQ(MaxDiff(logits.Row(0), want), 0.0f);
}

TEST_F(EngineTest, LogitsModes) {
  Engine e(*model_, nullptr);
  std::vector<int32_t> toks = Prompt();
  KvCache a = NewCache(), b = NewCache(), c = NewCache();
  ForwardResult all = Run(e, a, toks);
  ForwardRequest r;
  r.tokens = toks;
  r.logits = LogitsMode::kLast;
  ForwardResult last, none;
  ASSERT_TRUE(e.Forward(r, &b, &last).ok());
  EXPECT_EQ(last.rows, 1);
  EXPECT_LT(MaxDiff(last.Row(0), all.Row(all.rows - 1)), kTol);
  r.logits = LogitsMode::kNone;
  ASSERT_TRUE(e.Forward(r, &c, &none).ok());
  EXPECT_FALSE(none.is_logits);
  EXPECT_EQ(none.cols, model_->config().dim);
  EXPECT_EQ(none.rows, static_cast<int>(toks.size()));
}

TEST_F(EngineTest, BadRequestsAreRejectedAndLeaveTheCacheAlone) {
  Engine e(*model_, nullptr);
  KvCache c = NewCache(0, -1, 8);
  Run(e, c, {1, 2, 3});
  const int len = c.length();
  ForwardResult out;
  auto expect_error = [&](const ForwardRequest& r, absl::StatusCode code, const char* text) {
    absl::Status s = e.Forward(r, &c, &out);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(text));
    EXPECT_EQ(c.length(), len);
  };
  std::vector<int32_t> bad_id = {5, 512};
  std::vector<int32_t> neg_id = {-1};
  std::vector<int32_t> two = {5, 6};
  std::vector<int32_t> six = {5, 6, 7, 8, 9, 10};
  std::vector<int32_t> self_parent = {-1, 1};
  std::vector<int32_t> short_parents = {-1};
  std::vector<float> hidden(64, 0.5f);
  ForwardRequest r;
  r.tokens = bad_id;
  expect_error(r, absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  r.tokens = neg_id;
  expect_error(r, absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  r.tokens = {};
  expect_error(r, absl::StatusCode::kInvalidArgument, "empty batch");
  r.tokens = two;
  r.parents = self_parent;
  expect_error(r, absl::StatusCode::kInvalidArgument, "parents[1]");
  r.parents = short_parents;
  expect_error(r, absl::StatusCode::kInvalidArgument, "parents has 1 entries");
  r.parents = {};
  r.tokens = six;
  expect_error(r, absl::StatusCode::kResourceExhausted, "KV cache full");
  r.tokens = {};
  r.hidden = hidden;
  expect_error(r, absl::StatusCode::kInvalidArgument, "token ids, not hidden states");
  r.layer_begin = 1;
  expect_error(r, absl::StatusCode::kInvalidArgument, "KV cache holds layers [0, 5)");
  KvCache back = NewCache(1, 5);
  hidden[3] = NAN;
  absl::Status s = e.Forward(r, &back, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not finite"));
  hidden.resize(63);
  r.hidden = hidden;
  s = e.Forward(r, &back, &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a multiple of dim"));
  EXPECT_EQ(back.length(), 0);
  r.layer_begin = 0;
  r.layer_end = 9;
  r.hidden = {};
  r.tokens = two;
  expect_error(r, absl::StatusCode::kInvalidArgument, "layer range");
}

TEST_F(EngineTest, KvCacheMemoryIsBoundedAndReported) {
  const ModelConfig& c = model_->config();
  KvCache cache = NewCache(0, -1, 100);
  EXPECT_EQ(cache.MemoryBytes(), 2ull * c.n_layers * 100 * c.kv_dim() * sizeof(float));
  EXPECT_EQ(cache.MemoryBytes(), KvCache::BytesFor(c, c.n_layers, 100));
  auto too_big = KvCache::Create(c, 0, c.n_layers, 100, /*max_bytes=*/1000);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(KvCache::Create(c, 3, 2, 10).ok());
  EXPECT_FALSE(KvCache::Create(c, 0, 6, 10).ok());
  EXPECT_FALSE(cache.Truncate(1).ok());  // longer than the cache
  Engine e(*model_, nullptr);
  Run(e, cache, {1, 2, 3, 4});
  std::vector<int32_t> unordered = {2, 1};
  std::vector<int32_t> outside = {0, 4};
  EXPECT_FALSE(cache.KeepSlots(unordered).ok());
  EXPECT_FALSE(cache.KeepSlots(outside).ok());
  const std::vector<int32_t> root_in_path = {0, 1}, past_end = {1, 3}, backwards = {2, 1};
  EXPECT_FALSE(cache.KeepPath(1, root_in_path).ok());
  EXPECT_FALSE(cache.KeepPath(1, past_end).ok());
  EXPECT_FALSE(cache.KeepPath(0, backwards).ok());
  EXPECT_FALSE(cache.KeepPath(4, {}).ok());
  EXPECT_EQ(cache.length(), 4);
  EXPECT_TRUE(cache.Truncate(2).ok());
  EXPECT_EQ(cache.length(), 2);
}

}  // namespace
}  // namespace tandem::model
