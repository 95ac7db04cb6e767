// Engine::ForwardBatch (batching across sessions): every sequence in a batched pass gets exactly
// the bits Forward gives it alone (logits, hidden states and the keys/values it writes), whatever
// else shares the pass: chains, trees, single decode steps, prefill chunks without a head, split
// sequences entering at a later layer, and invalid items, which fail alone. Uses the real
// stories260K model, whose F32 weights take the kernels' most batch-sensitive path.
#include <cstring>
#include <memory>
#include <vector>

#include "common/model/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::model {
namespace {

using ::testing::HasSubstr;

class EngineBatchTest : public ::testing::Test {
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

  // A cache for layers [a, N) holding `prompt` (run by `engine`; for a > 0 the states entering
  // layer a come from a [0, a) pass).
  KvCache Prefilled(Engine& engine, const std::string& prompt, int a = 0) {
    const ModelConfig& c = model_->config();
    std::vector<int32_t> ids = model_->vocab().Encode(prompt, true);
    auto cache = KvCache::Create(c, a, c.n_layers, 96);
    EXPECT_TRUE(cache.ok());
    ForwardRequest r;
    r.logits = LogitsMode::kNone;
    ForwardResult out;
    std::vector<float> states;
    if (a == 0) {
      r.tokens = ids;
    } else {
      states = StatesAt(engine, ids, a);
      r.layer_begin = a;
      r.hidden = states;
    }
    EXPECT_TRUE(engine.Forward(r, &*cache, &out).ok());
    return *std::move(cache);
  }

  // The states entering layer a for `ids` at positions from 0 (a fresh [0, a) pass).
  std::vector<float> StatesAt(Engine& engine, const std::vector<int32_t>& ids, int a, int start = 0,
                              const std::vector<int32_t>& context = {}) {
    auto front = KvCache::Create(model_->config(), 0, a, 96);
    EXPECT_TRUE(front.ok());
    ForwardResult out;
    ForwardRequest r;
    r.layer_end = a;
    if (start > 0) {
      r.tokens = context;
      EXPECT_TRUE(engine.Forward(r, &*front, &out).ok());
    }
    r.tokens = ids;
    EXPECT_TRUE(engine.Forward(r, &*front, &out).ok());
    return out.data;
  }

  static void ExpectSameBits(const ForwardResult& want, const ForwardResult& got) {
    EXPECT_EQ(want.is_logits, got.is_logits);
    EXPECT_EQ(want.rows, got.rows);
    EXPECT_EQ(want.cols, got.cols);
    ASSERT_EQ(want.data.size(), got.data.size());
    EXPECT_EQ(0, std::memcmp(want.data.data(), got.data.data(), want.data.size() * sizeof(float)));
    ASSERT_EQ(want.hidden.size(), got.hidden.size());
    EXPECT_EQ(0, std::memcmp(want.hidden.data(), got.hidden.data(), want.hidden.size() * sizeof(float)));
  }

  static void ExpectSameCache(const KvCache& want, const KvCache& got) {
    ASSERT_EQ(want.length(), got.length());
    for (int l = want.layer_begin(); l < want.layer_end(); ++l) {
      for (int s = 0; s < want.length(); ++s) {
        const size_t n = model_->config().kv_dim() * sizeof(float);
        ASSERT_EQ(0, std::memcmp(want.Key(l, s), got.Key(l, s), n)) << "layer " << l << " slot " << s;
        ASSERT_EQ(0, std::memcmp(want.Value(l, s), got.Value(l, s), n)) << "layer " << l << " slot " << s;
      }
    }
  }

  static Model* model_;
};

Model* EngineBatchTest::model_ = nullptr;

TEST_F(EngineBatchTest, EverySequenceGetsTheBitsItGetsAlone) {
  for (int threads : {1, 2}) {
    for (bool split_first : {false, true}) {
      SCOPED_TRACE(::testing::Message() << threads << " threads, split item first: " << split_first);
      ThreadPool pool(threads);
      Engine engine(*model_, threads > 1 ? &pool : nullptr);
      const int n = model_->config().n_layers;
      const int k = 2;  // the split sequence's layer
      const std::vector<std::string> prompts = {"Once upon a time", "The little dog ran",
                                                "Lily and Tom", "A big red ball", "Sam was sad",
                                                "One day", "The cat"};
      std::vector<KvCache> caches;
      for (int i = 0; i < 6; ++i) caches.push_back(Prefilled(engine, prompts[i]));
      caches.push_back(Prefilled(engine, prompts[6], k));
      std::vector<KvCache> alone = caches;

      const std::vector<int32_t> chain = {300, 12, 77, 401, 9};
      const std::vector<int32_t> tree = {50, 60, 70, 80, 90, 100};
      const std::vector<int32_t> parents = {-1, 0, 0, 1, -1, 4};
      const std::vector<int32_t> step = {42};
      std::vector<int32_t> chunk;
      for (int i = 0; i < 20; ++i) chunk.push_back(30 + 7 * i);
      const std::vector<int32_t> bad = {5, model_->config().vocab_size + 3};
      const std::vector<int32_t> split_ids = {33, 44, 55};
      const std::vector<int32_t> pair = {17, 18};
      const std::vector<int32_t> split_context = model_->vocab().Encode(prompts[6], true);
      const std::vector<float> split_states =
          StatesAt(engine, split_ids, k, static_cast<int>(split_context.size()), split_context);

      std::vector<ForwardRequest> reqs(7);
      reqs[0].tokens = chain;                                    // chain verification
      reqs[1].tokens = tree;                                     // tree verification
      reqs[1].parents = parents;
      reqs[1].return_hidden = true;
      reqs[2].tokens = step;                                     // a cloud decode step
      reqs[2].logits = LogitsMode::kLast;
      reqs[3].tokens = chunk;                                    // a prefill chunk
      reqs[3].logits = LogitsMode::kNone;
      reqs[4].tokens = bad;                                      // refused alone
      reqs[5].tokens = pair;
      reqs[5].logits = LogitsMode::kLast;
      reqs[6].layer_begin = k;                                   // split: enters at layer k
      reqs[6].hidden = split_states;

      std::vector<ForwardResult> want(7), got(7);
      std::vector<absl::Status> want_status(7);
      for (int i = 0; i < 7; ++i) want_status[i] = engine.Forward(reqs[i], &alone[i], &want[i]);
      EXPECT_FALSE(want_status[4].ok());

      std::vector<BatchItem> items;
      std::vector<int> order = {0, 1, 2, 3, 4, 5, 6};
      if (split_first) order = {6, 2, 0, 4, 1, 5, 3};
      for (int i : order) items.push_back(BatchItem{reqs[i], &caches[i], &got[i], {}});
      engine.ForwardBatch(std::span<BatchItem>(items));
      for (size_t j = 0; j < items.size(); ++j) {
        const int i = order[j];
        SCOPED_TRACE(::testing::Message() << "item " << i);
        EXPECT_EQ(want_status[i].code(), items[j].status.code()) << items[j].status;
        ExpectSameCache(alone[i], caches[i]);
        if (want_status[i].ok()) ExpectSameBits(want[i], got[i]);
      }
      EXPECT_THAT(items[split_first ? 3 : 4].status.message(), HasSubstr("outside the vocabulary"));
      EXPECT_EQ(n, caches[6].layer_end());
    }
  }
}

TEST_F(EngineBatchTest, ItemsMustEndAtTheSameLayer) {
  Engine engine(*model_, nullptr);
  const ModelConfig& c = model_->config();
  auto full = KvCache::Create(c, 0, c.n_layers, 32);
  auto front = KvCache::Create(c, 0, 2, 32);
  ASSERT_TRUE(full.ok() && front.ok());
  const std::vector<int32_t> ids = {1, 20, 30};
  ForwardRequest a, b;
  a.tokens = ids;
  b.tokens = ids;
  b.layer_end = 2;
  ForwardResult ra, rb;
  std::vector<BatchItem> items = {{a, &*full, &ra, {}}, {b, &*front, &rb, {}}};
  engine.ForwardBatch(std::span<BatchItem>(items));
  EXPECT_TRUE(items[0].status.ok()) << items[0].status;
  EXPECT_TRUE(absl::IsInvalidArgument(items[1].status));
  EXPECT_THAT(items[1].status.message(), HasSubstr("one layer"));
  EXPECT_EQ(3, full->length());
  EXPECT_EQ(0, front->length());
  // An item without a cache is refused, not dereferenced.
  std::vector<BatchItem> broken = {{a, nullptr, &ra, {}}};
  engine.ForwardBatch(std::span<BatchItem>(broken));
  EXPECT_TRUE(absl::IsInvalidArgument(broken[0].status));
}

}  // namespace
}  // namespace tandem::model
