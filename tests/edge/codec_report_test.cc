// The codec report (bench/codec_report): its divergence arithmetic on constructed cases, its wire
// grouping against SplitRunner's messages, and its figures on stories260K: f32 exact at every
// split layer, payload sizes ordered by codec, int8 close to exact.
#include "bench/codec_report/codec_report.h"

#include <cmath>

#include "edge/split_runner.h"
#include "gtest/gtest.h"
#include "tests/cloud/verifier_harness.h"
#include "tests/greedy_reference.h"

namespace tandem::codec_report {
namespace {

using codec::CodecKind;

TEST(CodecReportLogicTest, FirstDivergence) {
  const std::vector<int32_t> exact = {5, 6, 7, 8};
  EXPECT_EQ(FirstDivergence(exact, std::vector<int32_t>{5, 6, 7, 8}, 4), 4);
  EXPECT_EQ(FirstDivergence(exact, std::vector<int32_t>{9, 6, 7, 8}, 4), 0);
  EXPECT_EQ(FirstDivergence(exact, std::vector<int32_t>{5, 6, 9, 8}, 4), 2);
  EXPECT_EQ(FirstDivergence(exact, std::vector<int32_t>{5, 6, 7, 9}, 3), 3) << "only n count";
  // A continuation that stops (EOS) where the other goes on diverges there.
  EXPECT_EQ(FirstDivergence(exact, std::vector<int32_t>{5, 6}, 4), 2);
  EXPECT_EQ(FirstDivergence(std::vector<int32_t>{5}, exact, 4), 1);
  // Both stop at the same place: identical.
  EXPECT_EQ(FirstDivergence(std::vector<int32_t>{5, 6}, std::vector<int32_t>{5, 6}, 4), 4);
  EXPECT_EQ(FirstDivergence({}, {}, 4), 4);
}

TEST(CodecReportLogicTest, Summarize) {
  const std::vector<int> d = {64, 10, 64, 20, 0};
  Agreement a = Summarize(d, 64);
  EXPECT_EQ(a.prompts, 5);
  EXPECT_EQ(a.identical, 2);
  EXPECT_DOUBLE_EQ(a.mean_first_divergence, (64 + 10 + 64 + 20 + 0) / 5.0);
  EXPECT_DOUBLE_EQ(a.mean_first_divergence_diverging, 10.0);
  a = Summarize(std::vector<int>{64, 64}, 64);
  EXPECT_EQ(a.identical, 2);
  EXPECT_DOUBLE_EQ(a.mean_first_divergence, 64.0);
  EXPECT_TRUE(std::isnan(a.mean_first_divergence_diverging));
}

TEST(CodecReportLogicTest, DecodeRejectsAnUnknownCodec) {
  v1::HiddenStates h;
  h.set_rows(1);
  h.set_dim(4);
  h.set_codec(static_cast<v1::Codec>(77));
  h.set_data(std::string(16, '\0'));
  std::vector<float> out;
  EXPECT_FALSE(DecodeHiddenStates(h, &out).ok());
}

class CodecReportTest : public tandem::testing::Stories260KTest {};

// The report's grouping builds the same messages SplitRunner sends (prompt message, then one row
// per round), and its decoding gives what codec::Decode gives.
TEST_F(CodecReportTest, GroupingMatchesSplitRunner) {
  const model::Model& m = *target_;
  const std::vector<int32_t> seq = m.vocab().Encode("Once upon a time there was", true);
  const int prompt_len = 3, k = 2, dim = m.config().dim;
  for (CodecKind kind : {CodecKind::kF32, CodecKind::kInt8, CodecKind::kInt4}) {
    for (bool zstd : {false, true}) {
      const codec::CodecSpec spec{kind, zstd};
      auto runner = edge::SplitRunner::Create(m, k, 64, spec);
      ASSERT_TRUE(runner.ok());
      std::vector<v1::HiddenStates> sent(1);
      ASSERT_TRUE((*runner)->Prompt(std::span(seq).first(prompt_len), &sent[0]).ok());
      for (size_t i = prompt_len - 1; i < seq.size(); ++i) {
        ASSERT_TRUE((*runner)->Round(seq[i], {}, {}, &sent.emplace_back()).ok());
        ASSERT_TRUE((*runner)->Accept({}).ok());
      }
      // The same states computed as SplitRunner does (the prompt rows in one pass, then one
      // position per pass: the engine is not bitwise batch-invariant).
      model::Engine engine(m, nullptr);
      auto cache = model::KvCache::Create(m.config(), 0, k, 64);
      ASSERT_TRUE(cache.ok());
      std::vector<float> states;
      model::ForwardRequest req;
      req.layer_end = k;
      req.logits = model::LogitsMode::kNone;
      model::ForwardResult out;
      for (size_t begin = 0; begin < seq.size(); begin = std::max<size_t>(begin + 1, prompt_len - 1)) {
        req.tokens = std::span(seq).subspan(begin, begin == 0 ? prompt_len - 1 : 1);
        ASSERT_TRUE(engine.Forward(req, &*cache, &out).ok());
        states.insert(states.end(), out.data.begin(), out.data.end());
      }
      const int rows = static_cast<int>(seq.size());
      auto groups = GroupStates(spec, k, states, rows, dim, prompt_len - 1, 1);
      ASSERT_TRUE(groups.ok());
      ASSERT_EQ(groups->size(), sent.size());
      for (size_t i = 0; i < sent.size(); ++i) {
        EXPECT_EQ((*groups)[i].SerializeAsString(), sent[i].SerializeAsString())
            << codec::CodecSpecName(spec) << " message " << i;
        std::vector<float> ours, theirs(static_cast<size_t>(sent[i].rows()) * dim);
        ASSERT_TRUE(DecodeHiddenStates(sent[i], &ours).ok());
        if (sent[i].rows() > 0) {
          ASSERT_TRUE(codec::Decode(spec, sent[i].data(), sent[i].rows(), dim, theirs).ok());
        }
        EXPECT_EQ(ours, theirs);
      }
    }
  }
}

TEST_F(CodecReportTest, ExactReferenceIsTheTargetAlone) {
  const std::vector<int32_t> prompt = target_->vocab().Encode("The little dog", true);
  auto ours = GreedyExact(*target_, prompt, 64, 1);
  ASSERT_TRUE(ours.ok());
  EXPECT_EQ(*ours, tandem::testing::GreedyTargetAlone(*target_, prompt, 64));
}

TEST_F(CodecReportTest, FiguresOnStories260K) {
  const model::Model& m = *target_;
  const int n_layers = m.config().n_layers, dim = m.config().dim;
  std::vector<std::vector<int32_t>> prompts;
  for (const char* text : {"Once upon a time", "Zoo", "The little dog", "Lily wanted to"}) {
    prompts.push_back(m.vocab().Encode(text, true));
  }
  ReportOptions options;
  options.tokens = 64;
  for (int k = 1; k < n_layers; ++k) options.greedy_layers.push_back(k);
  auto rep = RunReport(m, "stories260K", prompts, options);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_EQ(rep->rows.size(), static_cast<size_t>((n_layers - 1) * 5 * 2));
  const size_t P = prompts.size();
  double int8_top1_min = 1, int4_top1_min = 1, int4_err_max = 0;
  for (const ReportRow& r : rep->rows) {
    SCOPED_TRACE(::testing::Message() << "k=" << r.k << " " << r.codec << (r.zstd ? "+zstd" : ""));
    ASSERT_TRUE(r.greedy);
    EXPECT_EQ(r.prompts, static_cast<int>(P));
    EXPECT_GT(r.top1_positions, static_cast<int>(P) * 32);
    EXPECT_GT(r.message_bytes_per_token, r.bytes_per_token);
    if (r.codec == "f32") {
      EXPECT_EQ(r.identical, static_cast<int>(P));
      EXPECT_DOUBLE_EQ(r.mean_first_divergence, 64.0);
      EXPECT_DOUBLE_EQ(r.top1_agreement, 1.0);
      EXPECT_EQ(r.max_abs_logit_err, 0.0);
    }
    if (r.codec == "int8") int8_top1_min = std::min(int8_top1_min, r.top1_agreement);
    if (r.codec == "int4") {
      int4_top1_min = std::min(int4_top1_min, r.top1_agreement);
      int4_err_max = std::max(int4_err_max, r.max_abs_logit_err);
    }
  }
  // Teacher-forced argmaxes kept at the worst k, measured on these prompts: int8 0.996, int4 0.92.
  EXPECT_GE(int8_top1_min, 0.98);
  EXPECT_GE(int4_top1_min, 0.85);
  EXPECT_LE(int4_top1_min, int8_top1_min);
  EXPECT_GT(int4_err_max, 0.0) << "int4 is lossy";
  // Payload per one-row round, plain: f32 > f16 = bf16 > int8 > int4, with the documented sizes.
  for (int k = 1; k < n_layers; ++k) {
    auto bytes = [&](const char* codec, bool zstd) {
      for (const ReportRow& r : rep->rows) {
        if (r.k == k && r.codec == codec && r.zstd == zstd) return r.bytes_per_token;
      }
      ADD_FAILURE() << "no row " << codec;
      return 0.0;
    };
    EXPECT_EQ(bytes("f32", false), 4.0 * dim);
    EXPECT_EQ(bytes("f16", false), 2.0 * dim);
    EXPECT_EQ(bytes("bf16", false), 2.0 * dim);
    EXPECT_EQ(bytes("int8", false), 4.0 + dim);
    EXPECT_EQ(bytes("int4", false), 2.0 * ((dim + 31) / 32) + (dim + 1) / 2);
    EXPECT_GT(bytes("f32", false), bytes("f16", false));
    EXPECT_GT(bytes("int8", false), bytes("int4", false));
  }
  // zstd changes bytes, never the decoded values: the same agreement as plain.
  for (size_t i = 0; i + 1 < rep->rows.size(); i += 2) {
    const ReportRow &plain = rep->rows[i], &zstd = rep->rows[i + 1];
    ASSERT_FALSE(plain.zstd);
    ASSERT_TRUE(zstd.zstd);
    EXPECT_EQ(plain.identical, zstd.identical);
    EXPECT_EQ(plain.top1_agreement, zstd.top1_agreement);
  }
}

}  // namespace
}  // namespace tandem::codec_report
