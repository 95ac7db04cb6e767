// The lossy hidden-state codec report (issue 5): for split mode at layer k with each codec (f32,
// f16, bf16, int8, int4, each with and without zstd) it measures
//   - uplink bytes: the HiddenStates payload per decoded token (one row per round) and the whole
//     serialized EdgeMessage, plus the payload per row in 4-row rounds (a gamma-3 chain) and in
//     the prompt message;
//   - greedy agreement with exact decoding: a greedy split generation (the real SplitRunner for
//     layers [0, k), the wire's Encode, the verifier's Decode, a split TargetVerifier for [k, N))
//     against the target alone: identical continuations and the first divergence;
//   - teacher-forced top-1 agreement: over the exact continuation, the share of positions whose
//     final-logit argmax from codec-round-tripped layer-k states equals the exact argmax, with the
//     max and mean absolute logit error.
// The codecs are row-wise (a per-row scale for int8, per-row groups of 32 for int4), so decoded
// values do not depend on how rows are grouped into messages; the report checks that, and checks
// that zstd decodes to the same floats. Greedy split decoding is therefore independent of the
// drafter: the verifier's argmax at each position sees the same decoded states whatever the
// drafts were, so the report runs one row per round and no drafts.
// Thread-safety: free functions; each call uses its own engines and pools.
#ifndef TANDEM_BENCH_CODEC_REPORT_CODEC_REPORT_H_
#define TANDEM_BENCH_CODEC_REPORT_CODEC_REPORT_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/codec.h"
#include "common/model/model.h"
#include "tandem/v1/verifier.pb.h"

namespace tandem::codec_report {

inline constexpr codec::CodecKind kAllKinds[] = {codec::CodecKind::kF32, codec::CodecKind::kF16,
                                                 codec::CodecKind::kBf16, codec::CodecKind::kInt8,
                                                 codec::CodecKind::kInt4};

// The index of the first of the `n` positions where `got` differs from `exact`; a sequence that
// stops (BOS/EOS) where the other goes on differs there. `n` when both agree on all n positions
// (or stop at the same place).
int FirstDivergence(std::span<const int32_t> exact, std::span<const int32_t> got, int n);

struct Agreement {
  int prompts = 0;
  int identical = 0;                           // first divergence == n
  double mean_first_divergence = 0;            // over all prompts (identical ones count as n)
  double mean_first_divergence_diverging = 0;  // over diverging prompts only; NaN when none
};
// Summarizes the first divergences (as FirstDivergence returns them) of several prompts.
Agreement Summarize(std::span<const int> first_divergences, int n);

// Decodes a HiddenStates message the way the verifier does (its codec and zstd fields, the
// shape it declares) into rows x dim floats.
absl::Status DecodeHiddenStates(const v1::HiddenStates& h, std::vector<float>* out);

// The wire grouping of a split sequence's states (rows x dim, one row per position): the prompt
// message holds rows [0, prompt_rows), then one message per `rows_per_round` rows. Builds each
// HiddenStates exactly as SplitRunner does.
absl::StatusOr<std::vector<v1::HiddenStates>> GroupStates(const codec::CodecSpec& spec, int layer,
                                                          std::span<const float> states, int rows,
                                                          int dim, int prompt_rows,
                                                          int rows_per_round);

// The serialized size of the DraftRound message that carries `hidden` (round number and
// committed length as a session in progress has them; no draft tokens).
size_t RoundMessageBytes(const v1::HiddenStates& hidden, uint64_t round, uint32_t committed_length);

// The target alone, greedy, one position per pass, stopping before BOS/EOS.
absl::StatusOr<std::vector<int32_t>> GreedyExact(const model::Model& m,
                                                 std::span<const int32_t> prompt, int n,
                                                 int threads);

// Bytes a split generation sent: payloads and whole EdgeMessages.
struct WireBytes {
  int64_t messages = 0;
  int64_t rows = 0;
  int64_t payload_bytes = 0;
  int64_t message_bytes = 0;
  void Add(const v1::HiddenStates& h, size_t message_size);
};

struct SplitGeneration {
  std::vector<int32_t> tokens;
  WireBytes rounds, rounds_zstd;  // the decode rounds (one row each)
  WireBytes prompt, prompt_zstd;  // the prompt message
};

// A greedy split generation at layer k with `kind`: SplitRunner (layers [0, k)) encodes, the
// states are decoded as the verifier decodes them, and a split TargetVerifier runs [k, N) and
// picks each token. A second SplitRunner with zstd runs alongside for its byte counts; its
// decoded states must equal the plain ones (Internal otherwise).
absl::StatusOr<SplitGeneration> GreedySplit(const model::Model& m, std::span<const int32_t> prompt,
                                            int n, int k, codec::CodecKind kind, int threads);

struct ReportOptions {
  int tokens = 64;                  // continuation length
  std::vector<int> greedy_layers;   // split layers for the greedy runs (the top-1 runs use all)
  std::vector<codec::CodecKind> kinds{std::begin(kAllKinds), std::end(kAllKinds)};
  int threads = 1;
  std::function<void(const std::string&)> progress;  // optional progress lines
};

struct ReportRow {
  std::string model;
  int k = 0;
  std::string codec;  // "int8"
  bool zstd = false;
  // Uplink, teacher-forced over the exact continuations of all prompts.
  double bytes_per_token = 0;          // HiddenStates payload per one-row round
  double message_bytes_per_token = 0;  // serialized EdgeMessage per one-row round
  double bytes_per_row_4 = 0;          // payload per row in 4-row rounds
  double prompt_bytes_per_row = 0;     // payload per row of the prompt message
  // Greedy agreement (only for k in greedy_layers).
  bool greedy = false;
  int prompts = 0;
  int identical = 0;
  double identical_share = 0;
  double mean_first_divergence = 0;
  double mean_first_divergence_diverging = 0;  // NaN when no prompt diverges
  double greedy_bytes_per_token = 0;           // payload per round of the greedy runs
  // Teacher-forced top-1.
  int top1_positions = 0;
  double top1_agreement = 0;
  double max_abs_logit_err = 0;
  double mean_abs_logit_err = 0;
  // The exact layer-k states (prompts and continuations): largest magnitude and RMS.
  double state_absmax = 0;
  double state_rms = 0;
  // The exact logits at those positions (the same for every row of a model): the mean gap
  // between the largest and the second largest, and the RMS over the vocabulary.
  double exact_top1_margin = 0;
  double exact_logit_rms = 0;
};

struct ModelReport {
  std::string model;
  std::vector<std::vector<int32_t>> prompts, references;  // ids, exact continuations
  std::vector<ReportRow> rows;  // by k, then codec (kinds order), plain before zstd
};

// Runs the report for one model over `prompts` (ids, BOS first).
absl::StatusOr<ModelReport> RunReport(const model::Model& m, const std::string& name,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const ReportOptions& options);

// One JSON object per row, in a JSON array (NaN as null).
std::string RowsToJson(std::span<const ReportRow> rows);
// A readable table of the rows.
std::string RowsToTable(std::span<const ReportRow> rows);

}  // namespace tandem::codec_report

#endif  // TANDEM_BENCH_CODEC_REPORT_CODEC_REPORT_H_
