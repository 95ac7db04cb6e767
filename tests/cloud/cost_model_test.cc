// The verifier's measured cost model: the start-up calibration gives positive layer and head
// terms for a real model (the head of a 32000-token vocabulary costs more than a layer of a
// 768-wide model, and is kept apart from the layers); real passes then move the layer terms
// toward what they measure, with the head's share taken out; nonsense is ignored.
#include "cloud/cost_model.h"

#include <cmath>

#include "common/model/model.h"
#include "common/model/model_writer.h"
#include "common/model/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::cloud {
namespace {

TEST(PassCostModelTest, CalibrationSeparatesLayersFromTheHead) {
  // A small model with a big vocabulary: the head dominates a pass.
  model::SyntheticModelSpec spec;
  spec.dim = 64;
  spec.hidden_dim = 128;
  spec.n_layers = 2;
  spec.n_heads = 4;
  spec.n_kv_heads = 4;
  spec.vocab_size = 32000;
  spec.max_seq_len = 64;
  const std::string path = tandem::testing::TempDir() + "/bigvocab.gguf";
  ASSERT_TRUE(model::WriteSyntheticGguf(spec, model::GgmlType::kF32, path).ok());
  model::ModelLoadOptions o;
  o.path = path;
  auto m = model::Model::Load(o);
  ASSERT_TRUE(m.ok()) << m.status();
  model::Engine engine(**m, nullptr);
  PassCostModel cost;
  ASSERT_TRUE(cost.Calibrate(engine).ok());
  v1::CostModel c;
  cost.Fill(&c);
  EXPECT_GT(c.layer_micros_base() + c.layer_micros_per_position(), 0);
  EXPECT_GT(c.head_micros_base() + c.head_micros_per_position(), 0);
  // 64 x 32000 multiply-adds per position in the head against about 64 x 64 x 4 + 3 x 64 x 128
  // per layer: the head per position is several layers' worth.
  EXPECT_GT(c.head_micros_per_position(), 2 * c.layer_micros_per_position()) << c.ShortDebugString();
  EXPECT_EQ(c.samples(), 0u);
}

TEST(PassCostModelTest, RealPassesMoveTheLayerTermsWithTheHeadTakenOut) {
  PassCostModel cost(0.5);
  // Passes of 12 layers, logits for every position: 1 ms per layer plus 0.1 ms per position per
  // layer, and (no calibration, so no head) nothing else.
  for (int i = 0; i < 40; ++i) {
    const int p = 1 + i % 9;
    cost.Observe(12, p, p, 12 * (1e-3 + p * 1e-4), 2e-4);
  }
  v1::CostModel c;
  cost.Fill(&c);
  EXPECT_NEAR(c.layer_micros_base(), 1000, 50);
  EXPECT_NEAR(c.layer_micros_per_position(), 100, 5);
  EXPECT_NEAR(c.queue_micros_mean(), 200, 20);
  EXPECT_EQ(c.samples(), 40u);
  EXPECT_NEAR(cost.LayerSeconds(5), 1.5e-3, 1e-4);
  // Nonsense changes nothing.
  cost.Observe(0, 1, 1, 1.0, 0);
  cost.Observe(12, 1, 1, NAN, 0);
  cost.Observe(12, 1, 1, -1, 0);
  cost.Observe(12, 1, -1, 1, 0);
  v1::CostModel after;
  cost.Fill(&after);
  EXPECT_EQ(after.samples(), 40u);
  EXPECT_DOUBLE_EQ(after.layer_micros_base(), c.layer_micros_base());
}

}  // namespace
}  // namespace tandem::cloud
