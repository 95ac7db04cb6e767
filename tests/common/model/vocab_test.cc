// Tests for the SPM and GPT-2 tokenizers: llama.cpp's tokenizer test vectors, the llama2.c
// tokenizer.bin reader (including hostile images), decoding and round-trip properties.
#include "common/model/vocab.h"

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/model/gguf.h"
#include "common/model/gguf_vocab.h"
#include "common/model/vocab_internal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kSeparator[] = "\n__ggml_vocab_test__\n";

struct TestVector {
  std::string input;
  std::vector<int32_t> expected;
};

// Reads llama.cpp's test-tokenizer-0 files: <file>.inp holds the inputs, each followed by the
// separator; <file>.out one line of space-separated ids per input.
std::vector<TestVector> ReadVectors(const std::string& gguf_name) {
  const std::string inp = testing::ReadFileOrDie(testing::ModelPath(gguf_name + ".inp"));
  const std::string out = testing::ReadFileOrDie(testing::ModelPath(gguf_name + ".out"));
  std::vector<std::string> inputs;
  size_t pos = 0;
  while (pos < inp.size()) {
    size_t sep = inp.find(kSeparator, pos);
    if (sep == std::string::npos) break;
    inputs.push_back(inp.substr(pos, sep - pos));
    pos = sep + std::strlen(kSeparator);
  }
  std::vector<std::string> lines = absl::StrSplit(out, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  EXPECT_EQ(inputs.size(), lines.size()) << gguf_name;
  std::vector<TestVector> vectors;
  for (size_t i = 0; i < inputs.size() && i < lines.size(); ++i) {
    TestVector v;
    v.input = inputs[i];
    for (absl::string_view field : absl::StrSplit(lines[i], ' ', absl::SkipEmpty())) {
      int32_t id;
      EXPECT_TRUE(absl::SimpleAtoi(field, &id)) << field;
      v.expected.push_back(id);
    }
    vectors.push_back(std::move(v));
  }
  return vectors;
}

// Encodes every vector without BOS; returns how many matched and reports each mismatch.
int CheckVectors(const Vocab& vocab, const std::vector<TestVector>& vectors) {
  int passed = 0;
  for (size_t i = 0; i < vectors.size(); ++i) {
    std::vector<int32_t> got = vocab.Encode(vectors[i].input, /*add_bos=*/false);
    EXPECT_EQ(got, vectors[i].expected) << "vector " << i << ": '" << vectors[i].input << "'";
    if (got == vectors[i].expected) ++passed;
    EXPECT_EQ(vocab.Decode(got), vectors[i].input) << "vector " << i;
  }
  return passed;
}

Vocab LoadBin(const std::string& name, int32_t vocab_size) {
  absl::StatusOr<Vocab> vocab = Vocab::LoadLlama2cTokenizer(testing::ModelPath(name), vocab_size);
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  return *std::move(vocab);
}

Vocab LoadGguf(const std::string& name) {
  absl::StatusOr<Vocab> vocab = LoadVocabFromGguf(testing::ModelPath(name));
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  return *std::move(vocab);
}

// The vocabularies are large; load each once for the whole test program.
const Vocab& Llama2Bin() {
  static const Vocab* v = new Vocab(LoadBin("tokenizer.bin", 32000));
  return *v;
}
const Vocab& Tok512() {
  static const Vocab* v = new Vocab(LoadBin("tok512.bin", 512));
  return *v;
}
const Vocab& Gpt2() {
  static const Vocab* v = new Vocab(LoadGguf("ggml-vocab-gpt-2.gguf"));
  return *v;
}

// --- llama.cpp test vectors ---------------------------------------------------------------

TEST(VocabVectors, LlamaSpmFromTokenizerBin) {
  const auto vectors = ReadVectors("ggml-vocab-llama-spm.gguf");
  ASSERT_EQ(vectors.size(), 46u);
  EXPECT_EQ(CheckVectors(Llama2Bin(), vectors), 46);
}

TEST(VocabVectors, LlamaSpmFromGguf) {
  const auto vectors = ReadVectors("ggml-vocab-llama-spm.gguf");
  ASSERT_EQ(vectors.size(), 46u);
  Vocab vocab = LoadGguf("ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(vocab.kind(), TokenizerKind::kSpm);
  EXPECT_EQ(vocab.size(), 32000);
  EXPECT_EQ(CheckVectors(vocab, vectors), 46);
}

TEST(VocabVectors, Gpt2FromGguf) {
  const auto vectors = ReadVectors("ggml-vocab-gpt-2.gguf");
  ASSERT_EQ(vectors.size(), 46u);
  EXPECT_EQ(Gpt2().kind(), TokenizerKind::kGpt2);
  EXPECT_EQ(Gpt2().size(), 50257);
  EXPECT_EQ(CheckVectors(Gpt2(), vectors), 46);
}

TEST(VocabVectors, TinyLlamaGgufsAgreeWithTheirBinFiles) {
  Vocab tiny = LoadGguf("llama-2-tiny-random.gguf");
  Vocab stories = LoadGguf("stories260K.gguf");
  const std::string text = "Once upon a time, Lily saw a big 🐶 in the park.\n\"Hi!\" she said.";
  EXPECT_EQ(tiny.Encode(text, true), Llama2Bin().Encode(text, true));
  EXPECT_EQ(stories.Encode(text, true), Tok512().Encode(text, true));
  EXPECT_THAT(stories.Encode("Zoo", true), ElementsAre(1, 410, 469, 347));
}

// --- SPM specifics ------------------------------------------------------------------------

TEST(VocabSpm, Tok512Zoo) {
  const Vocab& v = Tok512();
  EXPECT_EQ(v.size(), 512);
  EXPECT_EQ(v.bos_id(), 1);
  EXPECT_EQ(v.eos_id(), 2);
  EXPECT_EQ(v.unk_id(), 0);
  EXPECT_THAT(v.Encode("Zoo", true), ElementsAre(1, 410, 469, 347));
  EXPECT_THAT(v.Encode("Zoo", false), ElementsAre(410, 469, 347));
  EXPECT_THAT(v.Encode("", true), ElementsAre(1));
  EXPECT_THAT(v.Encode("", false), IsEmpty());
}

TEST(VocabSpm, InferredTypesForLlama2cFiles) {
  const Vocab& v = Tok512();
  EXPECT_EQ(v.Type(0), TokenType::kUnknown);
  EXPECT_EQ(v.Type(1), TokenType::kControl);
  EXPECT_EQ(v.Type(2), TokenType::kControl);
  EXPECT_EQ(v.Type(3), TokenType::kByte);
  EXPECT_EQ(v.Type(258), TokenType::kByte);
  EXPECT_EQ(v.Type(259), TokenType::kNormal);
  EXPECT_EQ(v.TokenText(1), "\n<s>\n");
  EXPECT_EQ(v.TokenBytes(1), "");  // control
  EXPECT_EQ(v.TokenBytes(3), std::string(1, '\0'));
  EXPECT_EQ(v.TokenBytes(3 + 'A'), "A");
  EXPECT_EQ(v.TokenBytes(-1), "");
  EXPECT_EQ(v.TokenBytes(512), "");
}

TEST(VocabSpm, SpecialTokenTextIsNeverMerged) {
  // tok512's BOS is literally "\n<s>\n"; neither it nor "<0x41>" may come out of plain text.
  // (The newline itself has no piece, so it is the byte token <0x0A>.)
  for (const Vocab* v : {&Tok512(), &Llama2Bin()}) {
    for (const char* text : {"\n<s>\n", "<s></s><unk>", "<0x41><0x0A>", "a\n<s>\nb"}) {
      for (int32_t id : v->Encode(text, false)) {
        EXPECT_TRUE(v->Type(id) == TokenType::kNormal || id == 3 + '\n') << text << " -> " << id;
      }
      EXPECT_EQ(v->Decode(v->Encode(text, true)), text);
    }
  }
}

TEST(VocabSpm, ByteFallback) {
  const Vocab& v = Llama2Bin();
  // U+1F680 has no piece: its four UTF-8 bytes become <0xF0><0x9F><0x9A><0x80> (byte + 3).
  EXPECT_THAT(v.Encode("🚀", false), ElementsAre(29871, 0xF0 + 3, 0x9F + 3, 0x9A + 3, 0x80 + 3));
  EXPECT_EQ(v.TokenBytes(0xF0 + 3), "\xF0");
  // Invalid UTF-8: stray bytes fall back one by one, and decode back exactly.
  const std::string bad = "a\xFF\xC3(\xE2\x82";
  std::vector<int32_t> ids = v.Encode(bad, false);
  EXPECT_THAT(ids, ::testing::Contains(0xFF + 3));
  EXPECT_THAT(ids, ::testing::Contains(0xC3 + 3));
  EXPECT_EQ(v.Decode(ids), bad);
}

TEST(VocabSpm, UnknownWithoutByteTokens) {
  VocabData data;
  data.tokens = {"<unk>", "<s>", "</s>", "▁", "a", "▁a"};
  data.scores = {0, 0, 0, -1, -2, -0.5};
  Vocab v = *Vocab::Create(data);
  EXPECT_THAT(v.Encode("a", true), ElementsAre(1, 5));
  EXPECT_THAT(v.Encode("aé", false), ElementsAre(5, 0));  // 'é' is one unknown character
  EXPECT_THAT(v.Encode("\xFF", false), ElementsAre(3, 0));
  EXPECT_EQ(v.TokenBytes(0), "<unk>");
}

TEST(VocabSpm, MergesHighestScoreThenLeftmost) {
  VocabData data;
  data.tokens = {"<unk>", "<s>", "</s>", " ", "a", "b", "ab", "ba", " a", "aba"};
  data.scores = {0, 0, 0, -10, -10, -10, -1, -1, -5, -0.5};
  Vocab v = *Vocab::Create(data);
  // " abab": ab/ba/ab tie at -1 -> leftmost "ab" first, then "aba" (-0.5) beats the second "ab".
  EXPECT_THAT(v.Encode("abab", false), ElementsAre(3, 9, 5));
  // " bab": "ba" and "ab" tie; the leftmost wins.
  EXPECT_THAT(v.Encode("bab", false), ElementsAre(3, 7, 5));
  // " aba": "ab" (-1) then "aba" (-0.5) beats " a".
  EXPECT_THAT(v.Encode("aba", false), ElementsAre(3, 9));
  EXPECT_THAT(v.Encode("ba", false), ElementsAre(3, 7));
}

TEST(VocabSpm, DecodeNextDropsDummySpaceAfterBos) {
  const Vocab& v = Tok512();
  std::vector<int32_t> ids = v.Encode("Zoo is big", true);
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) streamed += v.DecodeNext(ids[i - 1], ids[i]);
  EXPECT_EQ(streamed, "Zoo is big");
  // Not after BOS the space is kept, as llama2.c prints it.
  EXPECT_EQ(v.DecodeNext(410, ids[1]), v.TokenBytes(ids[1]));
  EXPECT_EQ(v.TokenBytes(ids[1])[0], ' ');
  EXPECT_EQ(v.DecodeNext(1, 1), "");
  EXPECT_EQ(v.DecodeNext(1, 99999), "");
  const Vocab& big = Llama2Bin();
  EXPECT_EQ(big.DecodeNext(1, 15043), "Hello");  // "▁Hello"
  EXPECT_EQ(big.DecodeNext(3186, 15043), " Hello");
}

TEST(VocabSpm, DecodeSkipsControlTokens) {
  const Vocab& v = Llama2Bin();
  std::vector<int32_t> ids = v.Encode(" Hello world", true);
  ids.push_back(v.eos_id());
  EXPECT_EQ(v.Decode(ids), " Hello world");
}

// --- GPT-2 specifics ----------------------------------------------------------------------

TEST(VocabGpt2, ByteToUnicodeIsABijection) {
  std::vector<bool> seen(400, false);
  for (int b = 0; b < 256; ++b) {
    char32_t cp = vocab_internal::Gpt2ByteToCodePoint(static_cast<uint8_t>(b));
    ASSERT_LT(cp, 400u);
    EXPECT_FALSE(seen[cp]);
    seen[cp] = true;
    EXPECT_EQ(vocab_internal::Gpt2CodePointToByte(cp), b);
  }
  EXPECT_EQ(vocab_internal::Gpt2ByteToCodePoint(' '), 0x120u);  // 'Ġ'
  EXPECT_EQ(vocab_internal::Gpt2ByteToCodePoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(vocab_internal::Gpt2ByteToCodePoint('A'), static_cast<char32_t>('A'));
  EXPECT_EQ(vocab_internal::Gpt2CodePointToByte(0x2581), -1);
}

TEST(VocabGpt2, PreTokenizer) {
  using vocab_internal::Gpt2PreTokenize;
  EXPECT_THAT(Gpt2PreTokenize("Hello, y'all! I'm 42yo  ok\n\n"),
              ElementsAre("Hello", ",", " y", "'", "all", "!", " I", "'m", " 42", "yo", " ",
                          " ok", "\n\n"));
  EXPECT_THAT(Gpt2PreTokenize("a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Gpt2PreTokenize("a\n\tb"), ElementsAre("a", "\n", "\t", "b"));
  EXPECT_THAT(Gpt2PreTokenize(" \xFF\xFEx"), ElementsAre(" \xFF\xFE", "x"));
  EXPECT_THAT(Gpt2PreTokenize(""), IsEmpty());
}

TEST(VocabGpt2, SpecialsAndDecode) {
  const Vocab& v = Gpt2();
  EXPECT_EQ(v.bos_id(), 50256);
  EXPECT_EQ(v.eos_id(), 50256);
  EXPECT_EQ(v.unk_id(), -1);
  EXPECT_FALSE(v.add_bos());
  EXPECT_EQ(v.Type(50256), TokenType::kControl);
  EXPECT_EQ(v.TokenBytes(50256), "");
  EXPECT_THAT(v.Encode("<|endoftext|>", false), ::testing::Not(::testing::Contains(50256)));
  std::vector<int32_t> ids = v.Encode(" Hello world", true);
  EXPECT_EQ(ids.front(), 50256);
  EXPECT_EQ(v.Decode(ids), " Hello world");
  EXPECT_EQ(v.DecodeNext(50256, ids[1]), " Hello");  // no dummy prefix to drop in GPT-2
}

// --- Round trips --------------------------------------------------------------------------

std::string RandomBytes(std::mt19937& rng, size_t max_len) {
  std::uniform_int_distribution<size_t> len_dist(0, max_len);
  std::uniform_int_distribution<int> byte_dist(0, 255);
  std::string s(len_dist(rng), '\0');
  for (char& c : s) c = static_cast<char>(byte_dist(rng));
  return s;
}

std::string RandomUtf8(std::mt19937& rng, size_t max_chars) {
  // Mostly text-like: ASCII, spaces and newlines, Latin-1, Cyrillic, CJK, combining marks, emoji.
  static const std::pair<char32_t, char32_t> kRanges[] = {
      {'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {' ', ' '},     {'\n', '\n'},    {'\t', '\t'},
      {'!', '/'}, {0xA0, 0xFF}, {0x400, 0x4FF}, {0x300, 0x36F}, {0x4E00, 0x9FFF}, {0x1780, 0x17FF},
      {0x1F600, 0x1F64F}, {0x2000, 0x206F}, {0x10000, 0x10FFFF}};
  std::uniform_int_distribution<size_t> len_dist(0, max_chars);
  std::uniform_int_distribution<size_t> range_dist(0, std::size(kRanges) - 1);
  std::string s;
  const size_t n = len_dist(rng);
  for (size_t i = 0; i < n; ++i) {
    const auto& [lo, hi] = kRanges[range_dist(rng)];
    char32_t cp = std::uniform_int_distribution<char32_t>(lo, hi)(rng);
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    vocab_internal::AppendUtf8(cp, &s);
  }
  return s;
}

void CheckRoundTrips(const Vocab& v, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int i = 0; i < 1000; ++i) {
    const std::string s = i % 2 == 0 ? RandomBytes(rng, 64) : RandomUtf8(rng, 64);
    for (bool bos : {false, true}) {
      std::vector<int32_t> ids = v.Encode(s, bos);
      ASSERT_EQ(v.Decode(ids), s) << "seed " << seed << " case " << i;
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < v.size());
      if (bos && v.bos_id() >= 0) {
        ASSERT_EQ(ids.front(), v.bos_id());
      }
    }
  }
}

TEST(VocabRoundTrip, Llama2Bin) { CheckRoundTrips(Llama2Bin(), 1); }
TEST(VocabRoundTrip, Tok512) { CheckRoundTrips(Tok512(), 2); }
TEST(VocabRoundTrip, Gpt2) { CheckRoundTrips(Gpt2(), 3); }

TEST(VocabRoundTrip, StreamingMatchesDecodeAfterBos) {
  std::mt19937 rng(4);
  for (const Vocab* v : {&Tok512(), &Llama2Bin()}) {
    for (int i = 0; i < 100; ++i) {
      const std::string s = RandomUtf8(rng, 30);
      std::vector<int32_t> ids = v->Encode(s, true);
      std::string streamed;
      for (size_t k = 1; k < ids.size(); ++k) streamed += v->DecodeNext(ids[k - 1], ids[k]);
      ASSERT_EQ(streamed, s);
    }
  }
}

TEST(VocabPerformance, LongInputsAreFast) {
  std::mt19937 rng(5);
  std::string text;
  while (text.size() < 100 * 1024) text += RandomUtf8(rng, 50) + " the quick brown fox. ";
  const std::string same(100 * 1024, 'a');  // worst case for merges: one long run
  for (const Vocab* v : {&Llama2Bin(), &Gpt2(), &Tok512()}) {
    for (const std::string* s : std::initializer_list<const std::string*>{&text, &same}) {
      auto start = std::chrono::steady_clock::now();
      std::vector<int32_t> ids = v->Encode(*s, true);
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(seconds, 2.0);
      EXPECT_EQ(v->Decode(ids), *s);
    }
  }
}

// --- tokenizer.bin parsing ----------------------------------------------------------------

void AppendI32(std::string* s, int32_t v) { s->append(reinterpret_cast<const char*>(&v), 4); }
void AppendF32(std::string* s, float v) { s->append(reinterpret_cast<const char*>(&v), 4); }

// A valid 6-token image: <unk>, <s>, </s>, " ", "a", " a".
std::string SmallTokenizerBin() {
  std::string s;
  AppendI32(&s, 5);
  const std::pair<const char*, float> tokens[] = {
      {"<unk>", 0}, {"<s>", 0}, {"</s>", 0}, {" ", -1}, {"a", -2}, {" a", -0.5}};
  for (const auto& [text, score] : tokens) {
    AppendF32(&s, score);
    AppendI32(&s, static_cast<int32_t>(std::strlen(text)));
    s += text;
  }
  return s;
}

absl::StatusOr<Vocab> Parse(const std::string& image, int32_t vocab_size) {
  return Vocab::FromLlama2cTokenizer(
      std::span(reinterpret_cast<const uint8_t*>(image.data()), image.size()), vocab_size);
}

TEST(VocabLlama2cFile, SmallValidImage) {
  absl::StatusOr<Vocab> v = Parse(SmallTokenizerBin(), 6);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_THAT(v->Encode("aa", true), ElementsAre(1, 5, 4));
  EXPECT_EQ(v->Score(5), -0.5f);
}

TEST(VocabLlama2cFile, EveryTruncationFails) {
  const std::string image = SmallTokenizerBin();
  for (size_t len = 0; len < image.size(); ++len) {
    absl::StatusOr<Vocab> v = Parse(image.substr(0, len), 6);
    EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << len << ": " << v.status();
  }
}

TEST(VocabLlama2cFile, WrongVocabSize) {
  const std::string image = SmallTokenizerBin();
  EXPECT_THAT(Parse(image, 5).status().message(), HasSubstr("trailing"));
  EXPECT_FALSE(Parse(image, 7).ok());
  EXPECT_FALSE(Parse(image, 0).ok());
  EXPECT_FALSE(Parse(image, -1).ok());
  EXPECT_FALSE(Parse(image, 1 << 30).ok());
  EXPECT_FALSE(Parse(image + "x", 6).ok());
  const std::string tok512 = testing::ReadFileOrDie(testing::ModelPath("tok512.bin"));
  EXPECT_FALSE(Parse(tok512, 511).ok());
  EXPECT_FALSE(Parse(tok512, 513).ok());
  EXPECT_TRUE(Parse(tok512, 512).ok());
  EXPECT_TRUE(absl::IsNotFound(Vocab::LoadLlama2cTokenizer("/nonexistent/tok.bin", 5).status()));
}

TEST(VocabLlama2cFile, BadLengths) {
  const std::string good = SmallTokenizerBin();
  // Offset 8 is the length of token 0 (after max_token_length and its score).
  for (int32_t bad : {-1, -100, 6, 1 << 30, INT32_MAX, INT32_MIN}) {
    std::string image = good;
    std::memcpy(image.data() + 8, &bad, 4);
    absl::StatusOr<Vocab> v = Parse(image, 6);
    EXPECT_TRUE(absl::IsInvalidArgument(v.status())) << bad;
    EXPECT_THAT(v.status().message(), HasSubstr("token 0")) << v.status();
  }
  for (int32_t bad_max : {0, -5}) {
    std::string image = good;
    std::memcpy(image.data(), &bad_max, 4);
    EXPECT_FALSE(Parse(image, 6).ok());
  }
}

TEST(VocabLlama2cFile, RandomCorruptionNeverCrashes) {
  const std::string good = SmallTokenizerBin();
  std::mt19937 rng(6);
  for (int i = 0; i < 2000; ++i) {
    std::string image = good;
    for (int k = 0; k < 3; ++k) {
      image[rng() % image.size()] = static_cast<char>(rng());
    }
    absl::StatusOr<Vocab> v = Parse(image, 6);
    if (v.ok()) v->Decode(v->Encode("a a\xFF", true));  // whatever it parsed must be usable
  }
}

// --- Create validation --------------------------------------------------------------------

VocabData TinyGpt2Data() {
  VocabData d;
  d.kind = TokenizerKind::kGpt2;
  d.tokens = {"a", "b", "ab", "Ġ", "Ġab", "<|endoftext|>"};
  d.types = {1, 1, 1, 1, 1, 3};
  d.merges = {"a b", "Ġ ab"};
  d.bos_id = d.eos_id = 5;
  d.unk_id = -1;
  d.add_bos = false;
  return d;
}

TEST(VocabCreate, TinyGpt2) {
  absl::StatusOr<Vocab> v = Vocab::Create(TinyGpt2Data());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_THAT(v->Encode(" ab", false), ElementsAre(4));
  EXPECT_THAT(v->Encode("ba", false), ElementsAre(1, 0));
  EXPECT_THAT(v->Encode("c", false), IsEmpty());  // no token for 'c' and no unknown token
}

TEST(VocabCreate, RejectsInconsistentData) {
  VocabData empty;
  EXPECT_FALSE(Vocab::Create(empty).ok());

  VocabData d = TinyGpt2Data();
  d.scores = {1, 2};
  EXPECT_THAT(Vocab::Create(d).status().message(), HasSubstr("scores"));
  d = TinyGpt2Data();
  d.types = {1};
  EXPECT_FALSE(Vocab::Create(d).ok());
  d = TinyGpt2Data();
  d.types[0] = 7;
  EXPECT_FALSE(Vocab::Create(d).ok());
  d = TinyGpt2Data();
  d.bos_id = 6;
  EXPECT_FALSE(Vocab::Create(d).ok());
  d = TinyGpt2Data();
  d.unk_id = -2;
  EXPECT_FALSE(Vocab::Create(d).ok());
  for (const char* bad : {"ab", "a c", "", " ", "a ", "a b b", "b a"}) {
    d = TinyGpt2Data();
    d.merges.push_back(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(Vocab::Create(d).status())) << bad;
  }
  VocabData spm;
  spm.tokens = {"<unk>", "<s>", "</s>", "<0xZZ>"};
  spm.types = {2, 3, 3, 6};
  EXPECT_THAT(Vocab::Create(spm).status().message(), HasSubstr("BYTE"));
  spm.types.clear();
  spm.scores = {0, 0, 0, std::nanf("")};
  EXPECT_THAT(Vocab::Create(spm).status().message(), HasSubstr("NaN"));
}

// --- GGUF conversion ----------------------------------------------------------------------

Vocab ThroughGguf(const Vocab& v) {
  GgufWriter writer;
  WriteVocabToGguf(v, &writer);
  std::vector<uint8_t> bytes = writer.Serialize();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Parse(bytes);
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<VocabData> data = VocabDataFromGguf(**gguf);
  EXPECT_TRUE(data.ok()) << data.status();
  absl::StatusOr<Vocab> back = Vocab::Create(*std::move(data));
  EXPECT_TRUE(back.ok()) << back.status();
  return *std::move(back);
}

TEST(VocabGguf, RoundTripThroughWriter) {
  const std::string text = "Hello, y'all! 🚀 Ünïcödé\n\n\t 3333 \xFF";
  for (const Vocab* v : {&Tok512(), &Llama2Bin(), &Gpt2()}) {
    Vocab back = ThroughGguf(*v);
    EXPECT_EQ(back.kind(), v->kind());
    EXPECT_EQ(back.size(), v->size());
    EXPECT_EQ(back.bos_id(), v->bos_id());
    EXPECT_EQ(back.eos_id(), v->eos_id());
    EXPECT_EQ(back.unk_id(), v->unk_id());
    EXPECT_EQ(back.add_bos(), v->add_bos());
    EXPECT_EQ(back.merges(), v->merges());
    for (int32_t id = 0; id < v->size(); ++id) {
      ASSERT_EQ(back.Type(id), v->Type(id)) << id;
      ASSERT_EQ(back.Score(id), v->Score(id)) << id;
      ASSERT_EQ(back.TokenBytes(id), v->TokenBytes(id)) << id;
    }
    EXPECT_EQ(back.Encode(text, true), v->Encode(text, true));
  }
  // SPM pieces are stored the llama.cpp way.
  EXPECT_EQ(ThroughGguf(Llama2Bin()).TokenText(15043), "▁Hello");
}

TEST(VocabGguf, MatchesTokenizerBinExactly) {
  Vocab gguf = LoadGguf("ggml-vocab-llama-spm.gguf");
  const Vocab& bin = Llama2Bin();
  ASSERT_EQ(gguf.size(), bin.size());
  for (int32_t id = 3; id < bin.size(); ++id) {
    ASSERT_EQ(gguf.TokenBytes(id), bin.TokenBytes(id)) << id;
    ASSERT_EQ(gguf.Score(id), bin.Score(id)) << id;
    ASSERT_EQ(gguf.Type(id), bin.Type(id)) << id;
  }
  EXPECT_TRUE(gguf.add_bos());
}

TEST(VocabGguf, MissingTokenizerIsNotFound) {
  GgufWriter writer;
  writer.SetString("general.architecture", "llama");
  std::vector<uint8_t> bytes = writer.Serialize();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Parse(bytes);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_TRUE(absl::IsNotFound(VocabDataFromGguf(**gguf).status()));

  GgufWriter other;
  other.SetString("tokenizer.ggml.model", "bert");
  bytes = other.Serialize();
  gguf = GgufFile::Parse(bytes);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  EXPECT_TRUE(absl::IsUnimplemented(VocabDataFromGguf(**gguf).status()));
}

}  // namespace
}  // namespace tandem::model

namespace tandem::model {
namespace {

TEST(PrintablePieceTest, DropsLoneControlBytesOnly) {
  EXPECT_TRUE(IsPrintablePiece("a"));
  EXPECT_TRUE(IsPrintablePiece("\n"));
  EXPECT_TRUE(IsPrintablePiece(" the"));
  EXPECT_TRUE(IsPrintablePiece("\xE2"));  // part of a UTF-8 character
  EXPECT_FALSE(IsPrintablePiece(""));
  EXPECT_FALSE(IsPrintablePiece(std::string(1, '\0')));
  EXPECT_FALSE(IsPrintablePiece("\x07"));
  EXPECT_FALSE(IsPrintablePiece("\x7f"));
}

}  // namespace
}  // namespace tandem::model
