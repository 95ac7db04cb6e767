// Tests for the GGUF reader and writer: facts about the real files in ../shared/models (counts,
// offsets, keys, tensor types and shapes), the typed getters, and writer -> reader round trips.
#include "common/model/gguf.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model/ggml_types.h"
#include "common/model/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::model {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// A real model file held in memory with its parse.
struct Loaded {
  std::string bytes;
  std::unique_ptr<GgufFile> gguf;
};

Loaded LoadReal(const std::string& name) {
  Loaded l;
  l.bytes = testing::ReadFileOrDie(testing::ModelPath(name));
  absl::StatusOr<std::unique_ptr<GgufFile>> g = GgufFile::Parse(AsBytes(l.bytes));
  EXPECT_TRUE(g.ok()) << name << ": " << g.status();
  if (g.ok()) l.gguf = *std::move(g);
  return l;
}

// Checks what every well-formed file must satisfy: tensors lie inside the data section, in
// order, aligned, without overlap.
void ExpectTensorsInsideFile(const GgufFile& g, std::span<const uint8_t> bytes) {
  const uint8_t* base = bytes.data();
  uint64_t prev_end = 0;
  for (const GgufTensorInfo& t : g.tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.offset % g.alignment(), 0u);
    EXPECT_GE(t.offset, prev_end);
    EXPECT_EQ(t.data, base + g.data_offset() + t.offset);
    EXPECT_LE(g.data_offset() + t.offset + t.bytes, bytes.size());
    EXPECT_EQ(t.bytes, RowBytes(t.type, t.dims[0]) * (t.elements() / t.dims[0]));
    prev_end = t.offset + t.bytes;
  }
}

uint64_t EndOfLastTensor(const GgufFile& g) {
  uint64_t end = 0;
  for (const GgufTensorInfo& t : g.tensors()) end = std::max(end, g.data_offset() + t.offset + t.bytes);
  return end;
}

// ------------------------------------------------------------------------------------------
// stories260K.gguf

TEST(GgufRealFiles, Stories260KHeader) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(l.bytes.size(), 1185376u);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);  // no general.alignment key: the default
  EXPECT_EQ(g.Find("general.alignment"), nullptr);
  EXPECT_EQ(g.metadata().size(), 19u);
  EXPECT_EQ(g.tensors().size(), 48u);
  EXPECT_EQ(g.data_offset(), 14176u);
  EXPECT_EQ(EndOfLastTensor(g), l.bytes.size());
  ExpectTensorsInsideFile(g, AsBytes(l.bytes));
}

TEST(GgufRealFiles, Stories260KKeysInFileOrder) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  std::vector<std::string> keys;
  for (const auto& [k, v] : l.gguf->metadata()) keys.push_back(k);
  EXPECT_THAT(keys, ElementsAre("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                "tokenizer.ggml.token_type", "tokenizer.ggml.model",
                                "general.architecture", "general.name",
                                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.seperator_token_id",
                                "tokenizer.ggml.padding_token_id", "llama.context_length",
                                "llama.embedding_length", "llama.feed_forward_length",
                                "llama.attention.head_count", "llama.attention.head_count_kv",
                                "llama.block_count", "llama.rope.dimension_count",
                                "llama.attention.layer_norm_rms_epsilon"));
}

TEST(GgufRealFiles, Stories260KValues) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(g.GetString("tokenizer.ggml.model").value(), "llama");
  EXPECT_EQ(g.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(g.GetString("general.name").value(), "llama");
  EXPECT_EQ(g.GetInt("tokenizer.ggml.unknown_token_id").value(), 0);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.bos_token_id").value(), 1);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.eos_token_id").value(), 2);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.seperator_token_id").value(), 4294967295);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.padding_token_id").value(), 4294967295);
  EXPECT_EQ(g.Find("tokenizer.ggml.padding_token_id")->type, GgufType::kUint32);
  EXPECT_EQ(g.GetInt("llama.context_length").value(), 2048);
  EXPECT_EQ(g.GetInt("llama.embedding_length").value(), 64);
  EXPECT_EQ(g.GetInt("llama.feed_forward_length").value(), 172);
  EXPECT_EQ(g.GetInt("llama.attention.head_count").value(), 8);
  EXPECT_EQ(g.GetInt("llama.attention.head_count_kv").value(), 4);
  EXPECT_EQ(g.GetInt("llama.block_count").value(), 5);
  EXPECT_EQ(g.GetInt("llama.rope.dimension_count").value(), 8);
  const GgufValue* eps = g.Find("llama.attention.layer_norm_rms_epsilon");
  ASSERT_NE(eps, nullptr);
  EXPECT_EQ(eps->type, GgufType::kFloat32);
  EXPECT_FLOAT_EQ(static_cast<float>(g.GetFloat("llama.attention.layer_norm_rms_epsilon").value()),
                  1e-5f);
  EXPECT_EQ(g.Find("general.file_type"), nullptr);
  EXPECT_EQ(g.Find("tokenizer.ggml.add_bos_token"), nullptr);

  std::vector<std::string> tokens = g.GetStringArray("tokenizer.ggml.tokens").value();
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[258], "<0xFF>");
  std::vector<float> scores = g.GetFloatArray("tokenizer.ggml.scores").value();
  EXPECT_EQ(scores.size(), 512u);
  EXPECT_EQ(g.Find("tokenizer.ggml.scores")->array_type, GgufType::kFloat32);
  std::vector<int64_t> types = g.GetIntArray("tokenizer.ggml.token_type").value();
  ASSERT_EQ(types.size(), 512u);
  EXPECT_EQ(g.Find("tokenizer.ggml.token_type")->array_type, GgufType::kInt32);
  for (int i = 0; i < 512; ++i) {
    const int64_t want = i == 0 ? 2 : i <= 2 ? 3 : i <= 258 ? 6 : 1;
    EXPECT_EQ(types[i], want) << "token " << i;
  }
}

TEST(GgufRealFiles, Stories260KTensors) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  struct Want {
    std::string name;
    std::vector<int64_t> dims;
  };
  std::vector<Want> want = {{"token_embd.weight", {64, 512}},
                            {"output_norm.weight", {64}},
                            {"output.weight", {64, 512}}};
  for (int b = 0; b < 5; ++b) {
    const std::string p = absl::StrCat("blk.", b, ".");
    for (const Want& w : std::vector<Want>{{"attn_q.weight", {64, 64}},
                                           {"attn_k.weight", {64, 32}},
                                           {"attn_v.weight", {64, 32}},
                                           {"attn_output.weight", {64, 64}},
                                           {"attn_norm.weight", {64}},
                                           {"ffn_gate.weight", {64, 172}},
                                           {"ffn_down.weight", {172, 64}},
                                           {"ffn_up.weight", {64, 172}},
                                           {"ffn_norm.weight", {64}}}) {
      want.push_back({p + w.name, w.dims});
    }
  }
  ASSERT_EQ(g.tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(t.name, want[i].name) << i;
    EXPECT_EQ(t.dims, want[i].dims) << t.name;
    EXPECT_EQ(t.type, GgmlType::kF32) << t.name;
    EXPECT_EQ(g.FindTensor(want[i].name), &t);
  }
  EXPECT_EQ(g.FindTensor("blk.5.attn_q.weight"), nullptr);
  EXPECT_EQ(g.FindTensor("token_embd.weight")->offset, 0u);
  EXPECT_EQ(g.FindTensor("token_embd.weight")->elements(), 64 * 512);
  EXPECT_EQ(g.FindTensor("token_embd.weight")->bytes, 64u * 512 * 4);
}

TEST(GgufRealFiles, Stories260KTensorsMatchLlama2cCheckpoint) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const std::string bin = testing::ReadFileOrDie(testing::ModelPath("stories260K.bin"));
  // llama2.c layout: 28-byte header, then token_embedding[512][64], rms_att[5][64], wq[5][64][64].
  const GgufTensorInfo* embd = l.gguf->FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(std::memcmp(embd->data, bin.data() + 28, embd->bytes), 0);
  const GgufTensorInfo* out = l.gguf->FindTensor("output.weight");
  EXPECT_EQ(std::memcmp(out->data, embd->data, embd->bytes), 0);
  const size_t rms_att = 28 + 512 * 64 * 4;
  const size_t wq = rms_att + 5 * 64 * 4;
  const GgufTensorInfo* norm2 = l.gguf->FindTensor("blk.2.attn_norm.weight");
  EXPECT_EQ(std::memcmp(norm2->data, bin.data() + rms_att + 2 * 64 * 4, norm2->bytes), 0);
  const GgufTensorInfo* q3 = l.gguf->FindTensor("blk.3.attn_q.weight");
  EXPECT_EQ(std::memcmp(q3->data, bin.data() + wq + 3 * 64 * 64 * 4, q3->bytes), 0);
}

// ------------------------------------------------------------------------------------------
// llama-2-tiny-random.gguf and the vocab-only files

TEST(GgufRealFiles, Llama2TinyRandom) {
  Loaded l = LoadReal("llama-2-tiny-random.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.metadata().size(), 18u);
  EXPECT_EQ(g.tensors().size(), 12u);
  EXPECT_EQ(g.data_offset(), 724416u);
  EXPECT_EQ(EndOfLastTensor(g), l.bytes.size());
  ExpectTensorsInsideFile(g, AsBytes(l.bytes));
  EXPECT_EQ(g.GetString("general.name").value(), "LLaMA v2");
  EXPECT_EQ(g.GetInt("general.file_type").value(), 1);
  EXPECT_EQ(g.GetInt("llama.context_length").value(), 4096);
  EXPECT_EQ(g.GetInt("llama.embedding_length").value(), 8);
  EXPECT_EQ(g.GetInt("llama.block_count").value(), 1);
  EXPECT_EQ(g.GetInt("llama.feed_forward_length").value(), 32);
  EXPECT_EQ(g.GetInt("llama.attention.head_count").value(), 2);
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens").value().size(), 32000u);
  int f16 = 0, f32 = 0;
  for (const GgufTensorInfo& t : g.tensors()) {
    if (t.type == GgmlType::kF16) ++f16;
    if (t.type == GgmlType::kF32) {
      ++f32;
      EXPECT_EQ(t.dims, std::vector<int64_t>{8}) << t.name;
    }
  }
  EXPECT_EQ(f16, 9);
  EXPECT_EQ(f32, 3);
  const GgufTensorInfo* embd = g.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, GgmlType::kF16);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{8, 32000}));
  EXPECT_EQ(embd->bytes, 8u * 32000 * 2);
  EXPECT_EQ(g.FindTensor("blk.0.ffn_down.weight")->dims, (std::vector<int64_t>{32, 8}));
}

TEST(GgufRealFiles, VocabOnlyLlamaSpmEndsUnpadded) {
  Loaded l = LoadReal("ggml-vocab-llama-spm.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(l.bytes.size(), 723869u);
  EXPECT_NE(l.bytes.size() % 32, 0u);  // not padded: a reader must not demand a data section
  EXPECT_EQ(g.metadata().size(), 22u);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.GetString("general.name").value(), "llama-spm");
  EXPECT_EQ(g.GetString("tokenizer.ggml.pre").value(), "default");
  EXPECT_EQ(g.GetInt("llama.block_count").value(), 32);
  EXPECT_EQ(g.GetInt("llama.embedding_length").value(), 4096);
  EXPECT_EQ(g.GetInt("llama.vocab_size").value(), 32000);
  EXPECT_TRUE(g.GetBool("tokenizer.ggml.add_bos_token").value());
  EXPECT_FALSE(g.GetBool("tokenizer.ggml.add_eos_token").value());
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens").value().size(), 32000u);
  EXPECT_EQ(g.GetFloatArray("tokenizer.ggml.scores").value().size(), 32000u);
  // The data section would start past the end of the file; that is fine without tensors.
  EXPECT_GE(g.data_offset(), l.bytes.size());
}

TEST(GgufRealFiles, VocabOnlyGpt2) {
  Loaded l = LoadReal("ggml-vocab-gpt-2.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(g.metadata().size(), 16u);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.GetString("general.architecture").value(), "gpt2");
  EXPECT_EQ(g.GetString("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ(g.GetString("tokenizer.ggml.pre").value(), "gpt-2");
  EXPECT_EQ(g.GetInt("gpt2.block_count").value(), 12);
  std::vector<std::string> tokens = g.GetStringArray("tokenizer.ggml.tokens").value();
  ASSERT_EQ(tokens.size(), 50257u);
  EXPECT_EQ(tokens[50256], "<|endoftext|>");
  std::vector<std::string> merges = g.GetStringArray("tokenizer.ggml.merges").value();
  ASSERT_EQ(merges.size(), 50000u);
  EXPECT_EQ(merges[0], "\xC4\xA0 t");  // "Ġ t"
  std::vector<int64_t> types = g.GetIntArray("tokenizer.ggml.token_type").value();
  ASSERT_EQ(types.size(), 50257u);
  EXPECT_EQ(types[50256], 3);
  EXPECT_EQ(types[100], 1);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.bos_token_id").value(), 50256);
  EXPECT_EQ(g.GetInt("tokenizer.ggml.eos_token_id").value(), 50256);
  EXPECT_TRUE(absl::IsNotFound(g.GetFloatArray("tokenizer.ggml.scores").status()));
}

TEST(GgufRealFiles, ParseFromMappedFileMatchesParseFromCopy) {
  absl::StatusOr<std::unique_ptr<MappedFile>> f =
      MappedFile::Open(testing::ModelPath("stories260K.gguf"));
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> g = GgufFile::Parse((*f)->bytes());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->tensors().size(), 48u);
  EXPECT_EQ((*g)->tensors().back().data + (*g)->tensors().back().bytes,
            (*f)->bytes().data() + (*f)->bytes().size());
}

// ------------------------------------------------------------------------------------------
// Typed getters

TEST(GgufGetters, MissingKeyIsNotFound) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  const std::string key = "no.such.key";
  EXPECT_EQ(g.Find(key), nullptr);
  for (absl::Status s : {g.GetString(key).status(), g.GetInt(key).status(),
                         g.GetFloat(key).status(), g.GetBool(key).status(),
                         g.GetStringArray(key).status(), g.GetFloatArray(key).status(),
                         g.GetIntArray(key).status()}) {
    EXPECT_TRUE(absl::IsNotFound(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(key));
  }
}

TEST(GgufGetters, WrongTypeIsInvalidArgument) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  auto expect_wrong = [](const absl::Status& s, const std::string& key) {
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << key << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(key));
    EXPECT_THAT(std::string(s.message()), HasSubstr("expected"));
  };
  expect_wrong(g.GetString("llama.block_count").status(), "llama.block_count");
  expect_wrong(g.GetString("tokenizer.ggml.tokens").status(), "tokenizer.ggml.tokens");
  expect_wrong(g.GetInt("general.name").status(), "general.name");
  expect_wrong(g.GetInt("llama.attention.layer_norm_rms_epsilon").status(),
               "llama.attention.layer_norm_rms_epsilon");
  expect_wrong(g.GetInt("tokenizer.ggml.token_type").status(), "tokenizer.ggml.token_type");
  expect_wrong(g.GetFloat("general.name").status(), "general.name");
  expect_wrong(g.GetFloat("tokenizer.ggml.scores").status(), "tokenizer.ggml.scores");
  expect_wrong(g.GetBool("general.name").status(), "general.name");
  expect_wrong(g.GetStringArray("tokenizer.ggml.scores").status(), "tokenizer.ggml.scores");
  expect_wrong(g.GetStringArray("general.name").status(), "general.name");
  expect_wrong(g.GetFloatArray("tokenizer.ggml.tokens").status(), "tokenizer.ggml.tokens");
  expect_wrong(g.GetFloatArray("llama.block_count").status(), "llama.block_count");
  expect_wrong(g.GetIntArray("tokenizer.ggml.scores").status(), "tokenizer.ggml.scores");
  expect_wrong(g.GetIntArray("tokenizer.ggml.tokens").status(), "tokenizer.ggml.tokens");
  // The message names the stored type.
  EXPECT_THAT(std::string(g.GetIntArray("tokenizer.ggml.scores").status().message()),
              HasSubstr("arr of f32"));
}

TEST(GgufGetters, NumericConversions) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  EXPECT_EQ(g.GetFloat("llama.block_count").value(), 5.0);       // integer read as a number
  EXPECT_TRUE(g.GetBool("llama.block_count").value());            // integer read as a bool
  std::vector<float> types = g.GetFloatArray("tokenizer.ggml.token_type").value();
  EXPECT_EQ(types[0], 2.0f);  // integer array read as floats
}

// ------------------------------------------------------------------------------------------
// Writer round trips

std::vector<uint8_t> F32Bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(GgufWriterTest, RoundTripScalarsArraysAndTensors) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("empty", "");
  w.SetString("binary", std::string("a\0b\xff", 4));
  w.SetUint32("u32", 4294967295u);
  w.SetInt32("i32", -7);
  w.SetInt32("i32.min", INT32_MIN);
  w.SetFloat32("f32", 0.25f);
  w.SetBool("yes", true);
  w.SetBool("no", false);
  w.SetStringArray("strs", {"", "x", std::string("\0\1", 2), "\xE2\x96\x81hello"});
  w.SetStringArray("strs.empty", {});
  w.SetFloat32Array("floats", {1.5f, -0.0f, INFINITY, 3e38f});
  w.SetFloat32Array("floats.empty", {});
  w.SetInt32Array("ints", {0, -1, INT32_MAX, INT32_MIN});
  w.SetInt32Array("ints.empty", {});

  std::vector<float> a = {1, 2, 3, 4, 5, 6};  // [3, 2]
  std::vector<float> row32(32 * 2);
  for (size_t i = 0; i < row32.size(); ++i) row32[i] = static_cast<float>(i) * 0.5f - 7.0f;
  std::vector<uint8_t> f16(row32.size() * 2), q8(RowBytes(GgmlType::kQ8_0, 32) * 2),
      q4(RowBytes(GgmlType::kQ4_0, 32) * 2);
  for (int r = 0; r < 2; ++r) {
    QuantizeRow(GgmlType::kF16, row32.data() + r * 32, f16.data() + r * 64, 32);
    QuantizeRow(GgmlType::kQ8_0, row32.data() + r * 32, q8.data() + r * 34, 32);
    QuantizeRow(GgmlType::kQ4_0, row32.data() + r * 32, q4.data() + r * 18, 32);
  }
  w.AddTensor("a", {3, 2}, GgmlType::kF32, F32Bytes(a));
  w.AddTensor("h", {32, 2}, GgmlType::kF16, f16);
  w.AddTensor("q8", {32, 2}, GgmlType::kQ8_0, q8);
  w.AddTensor("q4", {32, 1, 2}, GgmlType::kQ4_0, q4);
  w.AddTensor("scalar", {1}, GgmlType::kF32, F32Bytes({42.0f}));

  const std::vector<uint8_t> bytes = w.Serialize();
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed = GgufFile::Parse(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const GgufFile& g = **parsed;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.metadata().size(), 15u);
  EXPECT_EQ(g.metadata()[0].first, "general.architecture");  // order kept
  EXPECT_EQ(g.metadata()[14].first, "ints.empty");

  EXPECT_EQ(g.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(g.GetString("empty").value(), "");
  EXPECT_EQ(g.GetString("binary").value(), std::string("a\0b\xff", 4));
  EXPECT_EQ(g.GetInt("u32").value(), 4294967295);
  EXPECT_EQ(g.Find("u32")->type, GgufType::kUint32);
  EXPECT_EQ(g.GetInt("i32").value(), -7);
  EXPECT_EQ(g.GetInt("i32.min").value(), INT32_MIN);
  EXPECT_EQ(g.Find("i32")->type, GgufType::kInt32);
  EXPECT_EQ(g.GetFloat("f32").value(), 0.25);
  EXPECT_EQ(g.Find("f32")->type, GgufType::kFloat32);
  EXPECT_TRUE(g.GetBool("yes").value());
  EXPECT_FALSE(g.GetBool("no").value());
  EXPECT_EQ(g.Find("no")->type, GgufType::kBool);
  EXPECT_THAT(g.GetStringArray("strs").value(),
              ElementsAre("", "x", std::string("\0\1", 2), "\xE2\x96\x81hello"));
  EXPECT_TRUE(g.GetStringArray("strs.empty").value().empty());
  EXPECT_EQ(g.Find("strs.empty")->array_type, GgufType::kString);
  std::vector<float> floats = g.GetFloatArray("floats").value();
  ASSERT_EQ(floats.size(), 4u);
  EXPECT_EQ(floats[0], 1.5f);
  EXPECT_TRUE(std::signbit(floats[1]));
  EXPECT_TRUE(std::isinf(floats[2]));
  EXPECT_EQ(floats[3], 3e38f);
  EXPECT_TRUE(g.GetFloatArray("floats.empty").value().empty());
  EXPECT_EQ(g.Find("floats.empty")->array_type, GgufType::kFloat32);
  EXPECT_THAT(g.GetIntArray("ints").value(), ElementsAre(0, -1, INT32_MAX, INT32_MIN));
  EXPECT_TRUE(g.GetIntArray("ints.empty").value().empty());
  EXPECT_EQ(g.Find("ints.empty")->array_type, GgufType::kInt32);

  ASSERT_EQ(g.tensors().size(), 5u);
  ExpectTensorsInsideFile(g, bytes);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  const GgufTensorInfo* ta = g.FindTensor("a");
  EXPECT_EQ(ta->dims, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ta->type, GgmlType::kF32);
  EXPECT_EQ(ta->bytes, 24u);
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  EXPECT_EQ(g.FindTensor("h")->type, GgmlType::kF16);
  EXPECT_EQ(g.FindTensor("h")->bytes, f16.size());
  EXPECT_EQ(std::memcmp(g.FindTensor("h")->data, f16.data(), f16.size()), 0);
  EXPECT_EQ(g.FindTensor("q8")->type, GgmlType::kQ8_0);
  EXPECT_EQ(g.FindTensor("q8")->bytes, q8.size());
  EXPECT_EQ(std::memcmp(g.FindTensor("q8")->data, q8.data(), q8.size()), 0);
  EXPECT_EQ(g.FindTensor("q4")->type, GgmlType::kQ4_0);
  EXPECT_EQ(g.FindTensor("q4")->dims, (std::vector<int64_t>{32, 1, 2}));
  EXPECT_EQ(g.FindTensor("q4")->bytes, q4.size());
  EXPECT_EQ(std::memcmp(g.FindTensor("q4")->data, q4.data(), q4.size()), 0);
  float scalar;
  std::memcpy(&scalar, g.FindTensor("scalar")->data, 4);
  EXPECT_EQ(scalar, 42.0f);
  // Q8_0 decodes back close to the source.
  std::vector<float> back(32);
  DequantizeRow(GgmlType::kQ8_0, g.FindTensor("q8")->data, back.data(), 32);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(back[i], row32[i], 0.1f);
}

TEST(GgufWriterTest, Alignment64) {
  GgufWriter w;
  w.SetAlignment(64);
  w.SetString("general.architecture", "llama");
  w.AddTensor("t0", {3}, GgmlType::kF32, F32Bytes({1, 2, 3}));        // 12 bytes -> padded to 64
  w.AddTensor("t1", {17}, GgmlType::kF32, F32Bytes(std::vector<float>(17, 9.0f)));
  w.AddTensor("t2", {1}, GgmlType::kF32, F32Bytes({-1}));
  const std::vector<uint8_t> bytes = w.Serialize();
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed = GgufFile::Parse(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const GgufFile& g = **parsed;
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.GetInt("general.alignment").value(), 64);
  EXPECT_EQ(g.Find("general.alignment")->type, GgufType::kUint32);
  EXPECT_EQ(g.data_offset() % 64, 0u);
  ASSERT_EQ(g.tensors().size(), 3u);
  EXPECT_EQ(g.tensors()[0].offset, 0u);
  EXPECT_EQ(g.tensors()[1].offset, 64u);
  EXPECT_EQ(g.tensors()[2].offset, 192u);  // 64 + 68 rounded up to 128 -> 192
  EXPECT_EQ(bytes.size() % 64, 0u);
  ExpectTensorsInsideFile(g, bytes);
  float x;
  std::memcpy(&x, g.tensors()[2].data, 4);
  EXPECT_EQ(x, -1.0f);

  // The data section is where the alignment says: one byte less in front of it breaks the
  // file, since every tensor offset is then off by one.
  std::vector<uint8_t> shifted = bytes;
  shifted.erase(shifted.begin() + static_cast<std::ptrdiff_t>(g.data_offset()) - 1);
  absl::StatusOr<std::unique_ptr<GgufFile>> reparsed = GgufFile::Parse(shifted);
  if (reparsed.ok()) {
    EXPECT_NE(std::memcmp((*reparsed)->tensors()[2].data, &x, 4), 0);
  }
}

TEST(GgufWriterTest, ZeroTensorFileIsNotPadded) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("k", "abc");  // 4+4+8+8 header, then 8+20+4+8+5 and 8+1+4+8+3 -> odd size
  const std::vector<uint8_t> bytes = w.Serialize();
  const size_t want = 24 + (8 + 20 + 4 + 8 + 5) + (8 + 1 + 4 + 8 + 3);
  EXPECT_EQ(bytes.size(), want);
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed = GgufFile::Parse(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE((*parsed)->tensors().empty());
  EXPECT_EQ((*parsed)->metadata().size(), 2u);
  EXPECT_EQ((*parsed)->GetString("k").value(), "abc");

  GgufWriter empty;
  const std::vector<uint8_t> header_only = empty.Serialize();
  EXPECT_EQ(header_only.size(), 24u);
  absl::StatusOr<std::unique_ptr<GgufFile>> e = GgufFile::Parse(header_only);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->metadata().empty());
  EXPECT_TRUE((*e)->tensors().empty());
}

TEST(GgufWriterTest, WriteFileMatchesSerialize) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetInt32Array("ints", {1, 2, 3});
  w.AddTensor("t", {4}, GgmlType::kF32, F32Bytes({1, 2, 3, 4}));
  const std::string path = testing::TempDir() + "/w.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  const std::string on_disk = testing::ReadFileOrDie(path);
  const std::vector<uint8_t> bytes = w.Serialize();
  EXPECT_EQ(on_disk, std::string(bytes.begin(), bytes.end()));
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed = GgufFile::Parse(AsBytes(on_disk));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT((*parsed)->GetIntArray("ints").value(), ElementsAreArray({1, 2, 3}));

  absl::Status bad = w.WriteFile(testing::TempDir() + "/no/such/dir/w.gguf");
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.message()), HasSubstr("no/such/dir"));
}

// The real files survive a read -> write -> read cycle of their metadata and tensors.
TEST(GgufWriterTest, RewriteStories260KKeepsEverything) {
  Loaded l = LoadReal("stories260K.gguf");
  ASSERT_NE(l.gguf, nullptr);
  const GgufFile& g = *l.gguf;
  GgufWriter w;
  for (const auto& [key, v] : g.metadata()) {
    switch (v.type) {
      case GgufType::kString: w.SetString(key, std::string(v.str)); break;
      case GgufType::kUint32: w.SetUint32(key, static_cast<uint32_t>(v.i)); break;
      case GgufType::kInt32: w.SetInt32(key, static_cast<int32_t>(v.i)); break;
      case GgufType::kFloat32: w.SetFloat32(key, static_cast<float>(v.f)); break;
      case GgufType::kArray:
        if (v.array_type == GgufType::kString) {
          w.SetStringArray(key, g.GetStringArray(key).value());
        } else if (v.array_type == GgufType::kFloat32) {
          w.SetFloat32Array(key, g.GetFloatArray(key).value());
        } else {
          const std::vector<int64_t> wide = g.GetIntArray(key).value();
          std::vector<int32_t> ints(wide.begin(), wide.end());
          w.SetInt32Array(key, ints);
        }
        break;
      default: ADD_FAILURE() << key << " has unexpected type " << GgufTypeName(v.type);
    }
  }
  for (const GgufTensorInfo& t : g.tensors()) {
    w.AddTensor(t.name, t.dims, t.type, {t.data, t.bytes});
  }
  const std::vector<uint8_t> bytes = w.Serialize();
  // Same layout, so the same bytes.
  EXPECT_EQ(bytes.size(), l.bytes.size());
  size_t first_diff = 0;
  while (first_diff < bytes.size() && bytes[first_diff] == static_cast<uint8_t>(l.bytes[first_diff])) {
    ++first_diff;
  }
  EXPECT_EQ(first_diff, bytes.size()) << "first difference at byte " << first_diff << ": "
      << int(bytes[first_diff]) << " vs " << int(static_cast<uint8_t>(l.bytes[first_diff]));
}

}  // namespace
}  // namespace tandem::model
