// The lossy hidden-state codec report (see codec_report.h).
#include "bench/codec_report/codec_report.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/engine.h"
#include "common/model/kv_cache.h"
#include "common/model/sampler.h"
#include "common/spec/target_verifier.h"
#include "common/util/status_macros.h"
#include "edge/split_runner.h"

namespace tandem::codec_report {
namespace {

bool IsStop(const model::Model& m, int32_t t) {
  return t == m.vocab().bos_id() || t == m.vocab().eos_id();
}

// Decodes every message of `messages` in order into one rows x dim buffer.
absl::StatusOr<std::vector<float>> DecodeAll(std::span<const v1::HiddenStates> messages) {
  std::vector<float> all, one;
  for (const v1::HiddenStates& h : messages) {
    RETURN_IF_ERROR(DecodeHiddenStates(h, &one));
    all.insert(all.end(), one.begin(), one.end());
  }
  return all;
}

absl::Status SameFloats(std::span<const float> a, std::span<const float> b, const char* what) {
  if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) {
    return absl::InternalError(absl::StrCat(what, " decode to different values"));
  }
  return absl::OkStatus();
}

// Per (k, codec) sums over the prompts' teacher-forced runs.
struct TopAcc {
  WireBytes rounds, rounds_zstd, four, four_zstd, prompt, prompt_zstd;
  int64_t positions = 0, agree = 0, err_count = 0;
  double max_err = 0, sum_err = 0;
  double state_absmax = 0, state_square_sum = 0;  // the exact layer-k states
  int64_t state_count = 0;
};

// The exact logits at the predicting positions: how far apart the top two are, and their scale.
struct ExactStats {
  int64_t positions = 0, logits = 0;
  double margin_sum = 0, square_sum = 0;
};

double PerRow(const WireBytes& w) {
  return w.rows > 0 ? static_cast<double>(w.payload_bytes) / static_cast<double>(w.rows) : 0.0;
}
double PerMessage(int64_t bytes, int64_t messages) {
  return messages > 0 ? static_cast<double>(bytes) / static_cast<double>(messages) : 0.0;
}

// Adds the messages of a grouped sequence (the first is the prompt message) to the byte counts;
// the rounds' message sizes use round numbers 1, 2, ... and the committed length before each.
void CountGroups(std::span<const v1::HiddenStates> groups, uint32_t prompt_length, WireBytes* prompt,
                 WireBytes* rounds) {
  prompt->Add(groups[0], 0);
  uint32_t committed = prompt_length;
  for (size_t i = 1; i < groups.size(); ++i) {
    const v1::HiddenStates& h = groups[i];
    rounds->Add(h, RoundMessageBytes(h, i, committed));
    committed += h.rows();
  }
}

// The teacher-forced pass for one prompt: exact states after every layer over the prompt and the
// exact continuation, then for every k and codec the wire round trip and layers [k, N).
absl::Status TeacherForced(const model::Model& m, std::span<const int32_t> prompt,
                           std::span<const int32_t> reference, int n,
                           std::span<const codec::CodecKind> kinds, model::Engine& engine,
                           std::vector<std::vector<TopAcc>>* acc, ExactStats* exact) {
  const model::ModelConfig& cfg = m.config();
  const int n_layers = cfg.n_layers, dim = cfg.dim, vocab = cfg.vocab_size;
  // The positions that predict the continuation: n tokens, or the ones before a stop plus the
  // position that predicted the stop.
  const int predictions = std::min(static_cast<int>(reference.size()) + 1, n);
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  seq.insert(seq.end(), reference.begin(), reference.begin() + (predictions - 1));
  const int T = static_cast<int>(seq.size());
  const int prompt_rows = static_cast<int>(prompt.size()) - 1;
  const int first = T - predictions;  // == prompt_rows

  std::vector<std::vector<float>> states(n_layers);  // states[l]: entering layer l (l >= 1)
  std::vector<float> exact_logits;
  model::ForwardResult out;
  for (int l = 0; l < n_layers; ++l) {
    ASSIGN_OR_RETURN(model::KvCache cache, model::KvCache::Create(cfg, l, l + 1, T));
    model::ForwardRequest req;
    req.layer_begin = l;
    req.layer_end = l + 1;
    if (l == 0) {
      req.tokens = seq;
    } else {
      req.hidden = states[l];
    }
    req.logits = l + 1 == n_layers ? model::LogitsMode::kAll : model::LogitsMode::kNone;
    RETURN_IF_ERROR(engine.Forward(req, &cache, &out));
    if (l + 1 < n_layers) {
      states[l + 1] = std::move(out.data);
    } else {
      exact_logits = std::move(out.data);
    }
  }

  for (int p = first; p < T; ++p) {
    const float* row = exact_logits.data() + static_cast<size_t>(p) * vocab;
    float top = -INFINITY, second = -INFINITY;
    for (int v = 0; v < vocab; ++v) {
      exact->square_sum += static_cast<double>(row[v]) * row[v];
      if (row[v] > top) {
        second = top;
        top = row[v];
      } else if (row[v] > second) {
        second = row[v];
      }
    }
    exact->margin_sum += static_cast<double>(top) - second;
    exact->positions += 1;
    exact->logits += vocab;
  }

  for (int k = 1; k < n_layers; ++k) {
    for (size_t c = 0; c < kinds.size(); ++c) {
      TopAcc& a = (*acc)[k][c];
      for (float x : states[k]) {
        a.state_absmax = std::max(a.state_absmax, std::fabs(static_cast<double>(x)));
        a.state_square_sum += static_cast<double>(x) * x;
      }
      a.state_count += static_cast<int64_t>(states[k].size());
      const codec::CodecSpec plain{kinds[c], false}, zstd{kinds[c], true};
      ASSIGN_OR_RETURN(auto g1, GroupStates(plain, k, states[k], T, dim, prompt_rows, 1));
      ASSIGN_OR_RETURN(auto g1z, GroupStates(zstd, k, states[k], T, dim, prompt_rows, 1));
      ASSIGN_OR_RETURN(auto g4, GroupStates(plain, k, states[k], T, dim, prompt_rows, 4));
      ASSIGN_OR_RETURN(auto g4z, GroupStates(zstd, k, states[k], T, dim, prompt_rows, 4));
      ASSIGN_OR_RETURN(std::vector<float> decoded, DecodeAll(g1));
      ASSIGN_OR_RETURN(std::vector<float> decoded_z, DecodeAll(g1z));
      ASSIGN_OR_RETURN(std::vector<float> decoded_4, DecodeAll(g4));
      ASSIGN_OR_RETURN(std::vector<float> decoded_4z, DecodeAll(g4z));
      RETURN_IF_ERROR(SameFloats(decoded, decoded_z, "the plain and zstd payloads"));
      RETURN_IF_ERROR(SameFloats(decoded, decoded_4, "one-row and four-row rounds"));
      RETURN_IF_ERROR(SameFloats(decoded, decoded_4z, "one-row and four-row zstd rounds"));
      const uint32_t plen = static_cast<uint32_t>(prompt.size());
      CountGroups(g1, plen, &a.prompt, &a.rounds);
      CountGroups(g1z, plen, &a.prompt_zstd, &a.rounds_zstd);
      WireBytes unused;
      CountGroups(g4, plen, &unused, &a.four);
      CountGroups(g4z, plen, &unused, &a.four_zstd);

      ASSIGN_OR_RETURN(model::KvCache cache, model::KvCache::Create(cfg, k, n_layers, T));
      model::ForwardRequest req;
      req.layer_begin = k;
      req.hidden = decoded;
      req.logits = model::LogitsMode::kAll;
      RETURN_IF_ERROR(engine.Forward(req, &cache, &out));
      for (int p = first; p < T; ++p) {
        const std::span<const float> want(exact_logits.data() + static_cast<size_t>(p) * vocab,
                                          static_cast<size_t>(vocab));
        const std::span<const float> got = out.Row(p);
        a.positions += 1;
        a.agree += model::Argmax(want) == model::Argmax(got);
        for (int v = 0; v < vocab; ++v) {
          const double e = std::fabs(static_cast<double>(got[v]) - want[v]);
          a.max_err = std::max(a.max_err, e);
          a.sum_err += e;
        }
        a.err_count += vocab;
      }
    }
  }
  return absl::OkStatus();
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.6g", v);
}

}  // namespace

int FirstDivergence(std::span<const int32_t> exact, std::span<const int32_t> got, int n) {
  const int a = std::min(static_cast<int>(exact.size()), n);
  const int b = std::min(static_cast<int>(got.size()), n);
  for (int i = 0; i < std::min(a, b); ++i) {
    if (exact[i] != got[i]) return i;
  }
  return a == b ? n : std::min(a, b);
}

Agreement Summarize(std::span<const int> first_divergences, int n) {
  Agreement s;
  s.prompts = static_cast<int>(first_divergences.size());
  double all = 0, diverging = 0;
  int n_diverging = 0;
  for (int d : first_divergences) {
    all += d;
    if (d >= n) {
      ++s.identical;
    } else {
      diverging += d;
      ++n_diverging;
    }
  }
  s.mean_first_divergence = s.prompts > 0 ? all / s.prompts : 0.0;
  s.mean_first_divergence_diverging =
      n_diverging > 0 ? diverging / n_diverging : std::numeric_limits<double>::quiet_NaN();
  return s;
}

absl::Status DecodeHiddenStates(const v1::HiddenStates& h, std::vector<float>* out) {
  // The proto's enum names are CODEC_<codec name>.
  std::string name = absl::AsciiStrToLower(v1::Codec_Name(h.codec()));
  if (name.rfind("codec_", 0) != 0) return absl::InvalidArgumentError("unknown codec");
  ASSIGN_OR_RETURN(codec::CodecSpec spec, codec::ParseCodec(name.substr(6)));
  spec.zstd = h.zstd();
  const int rows = static_cast<int>(h.rows()), dim = static_cast<int>(h.dim());
  out->resize(static_cast<size_t>(rows) * dim);
  if (rows == 0) return absl::OkStatus();
  return codec::Decode(spec, h.data(), rows, dim, *out);
}

absl::StatusOr<std::vector<v1::HiddenStates>> GroupStates(const codec::CodecSpec& spec, int layer,
                                                          std::span<const float> states, int rows,
                                                          int dim, int prompt_rows,
                                                          int rows_per_round) {
  if (prompt_rows < 0 || prompt_rows > rows || rows_per_round < 1 ||
      states.size() != static_cast<size_t>(rows) * dim) {
    return absl::InvalidArgumentError("bad grouping");
  }
  std::vector<v1::HiddenStates> groups;
  int begin = 0;
  while (groups.empty() || begin < rows) {
    const int end = groups.empty() ? prompt_rows : std::min(rows, begin + rows_per_round);
    v1::HiddenStates& h = groups.emplace_back();
    h.set_layer(static_cast<uint32_t>(layer));
    h.set_rows(static_cast<uint32_t>(end - begin));
    h.set_dim(static_cast<uint32_t>(dim));
    h.set_codec(edge::ToProtoCodec(spec.kind));
    h.set_zstd(spec.zstd);
    if (end > begin) {
      ASSIGN_OR_RETURN(std::string data,
                       codec::Encode(spec, states.subspan(static_cast<size_t>(begin) * dim,
                                                          static_cast<size_t>(end - begin) * dim),
                                     end - begin, dim));
      h.set_data(std::move(data));
    }
    begin = end;
  }
  return groups;
}

size_t RoundMessageBytes(const v1::HiddenStates& hidden, uint64_t round,
                         uint32_t committed_length) {
  v1::EdgeMessage m;
  v1::DraftRound* r = m.mutable_draft();
  r->set_round(round);
  r->set_committed_length(committed_length);
  *r->mutable_hidden() = hidden;
  return m.ByteSizeLong();
}

void WireBytes::Add(const v1::HiddenStates& h, size_t message_size) {
  messages += 1;
  rows += h.rows();
  payload_bytes += static_cast<int64_t>(h.data().size());
  message_bytes += static_cast<int64_t>(message_size);
}

absl::StatusOr<std::vector<int32_t>> GreedyExact(const model::Model& m,
                                                 std::span<const int32_t> prompt, int n,
                                                 int threads) {
  model::ThreadPool pool(threads);
  model::Engine engine(m, &pool);
  ASSIGN_OR_RETURN(auto verifier,
                   spec::TargetVerifier::Create(m, static_cast<int>(prompt.size()) + n + 1, {}));
  RETURN_IF_ERROR(verifier->Commit(engine, prompt));
  std::vector<int32_t> gen;
  while (static_cast<int>(gen.size()) < n) {
    ASSIGN_OR_RETURN(spec::VerifyResult r, verifier->VerifyRound(engine, {}, {}, {}));
    if (IsStop(m, r.next_token)) break;
    gen.push_back(r.next_token);
  }
  return gen;
}

absl::StatusOr<SplitGeneration> GreedySplit(const model::Model& m, std::span<const int32_t> prompt,
                                            int n, int k, codec::CodecKind kind, int threads) {
  const int capacity = static_cast<int>(prompt.size()) + n + 1;
  ASSIGN_OR_RETURN(auto edge, edge::SplitRunner::Create(m, k, capacity, {kind, false}, threads));
  ASSIGN_OR_RETURN(auto edge_zstd, edge::SplitRunner::Create(m, k, capacity, {kind, true}, threads));
  ASSIGN_OR_RETURN(auto verifier, spec::TargetVerifier::Create(m, capacity, {}, k));
  model::ThreadPool pool(threads);
  model::Engine engine(m, &pool);
  SplitGeneration g;
  v1::HiddenStates h, hz;
  std::vector<float> states, states_zstd;
  // Decodes both payloads as the verifier would; they must agree.
  auto decode = [&]() -> absl::Status {
    RETURN_IF_ERROR(DecodeHiddenStates(h, &states));
    RETURN_IF_ERROR(DecodeHiddenStates(hz, &states_zstd));
    return SameFloats(states, states_zstd, "the plain and zstd payloads");
  };
  RETURN_IF_ERROR(edge->Prompt(prompt, &h));
  RETURN_IF_ERROR(edge_zstd->Prompt(prompt, &hz));
  g.prompt.Add(h, 0);
  g.prompt_zstd.Add(hz, 0);
  RETURN_IF_ERROR(decode());
  RETURN_IF_ERROR(verifier->CommitStates(engine, states, static_cast<int>(h.rows())));
  std::vector<int32_t> committed(prompt.begin(), prompt.end());
  for (uint64_t round = 1; static_cast<int>(g.tokens.size()) < n; ++round) {
    RETURN_IF_ERROR(edge->Round(committed.back(), {}, {}, &h));
    RETURN_IF_ERROR(edge_zstd->Round(committed.back(), {}, {}, &hz));
    const uint32_t length = static_cast<uint32_t>(committed.size());
    g.rounds.Add(h, RoundMessageBytes(h, round, length));
    g.rounds_zstd.Add(hz, RoundMessageBytes(hz, round, length));
    RETURN_IF_ERROR(decode());
    ASSIGN_OR_RETURN(spec::VerifyResult r,
                     verifier->VerifyRound(engine, {}, {}, {}, nullptr, states));
    RETURN_IF_ERROR(edge->Accept({}));
    RETURN_IF_ERROR(edge_zstd->Accept({}));
    if (IsStop(m, r.next_token)) break;
    g.tokens.push_back(r.next_token);
    committed.push_back(r.next_token);
  }
  return g;
}

absl::StatusOr<ModelReport> RunReport(const model::Model& m, const std::string& name,
                                      const std::vector<std::vector<int32_t>>& prompts,
                                      const ReportOptions& options) {
  const int n_layers = m.config().n_layers, n = options.tokens;
  auto progress = [&](const std::string& line) {
    if (options.progress) options.progress(absl::StrCat(name, ": ", line));
  };
  for (int k : options.greedy_layers) {
    if (k < 1 || k >= n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("split layer ", k, " outside [1, ", n_layers, ")"));
    }
  }
  for (const auto& p : prompts) {
    if (p.empty()) return absl::InvalidArgumentError("empty prompt");
  }
  ModelReport rep;
  rep.model = name;
  rep.prompts = prompts;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSIGN_OR_RETURN(std::vector<int32_t> ref, GreedyExact(m, prompts[i], n, options.threads));
    rep.references.push_back(std::move(ref));
  }
  progress(absl::StrCat("exact continuations of ", prompts.size(), " prompts"));

  const size_t nk = options.kinds.size();
  std::vector<std::vector<TopAcc>> acc(n_layers, std::vector<TopAcc>(nk));
  ExactStats exact;
  {
    model::ThreadPool pool(options.threads);
    model::Engine engine(m, &pool);
    for (size_t i = 0; i < prompts.size(); ++i) {
      RETURN_IF_ERROR(TeacherForced(m, prompts[i], rep.references[i], n, options.kinds, engine, &acc,
                                    &exact));
      progress(absl::StrCat("teacher-forced top-1, prompt ", i + 1, "/", prompts.size()));
    }
  }

  for (int k = 1; k < n_layers; ++k) {
    const bool greedy = std::find(options.greedy_layers.begin(), options.greedy_layers.end(), k) !=
                        options.greedy_layers.end();
    for (size_t c = 0; c < nk; ++c) {
      const TopAcc& a = acc[k][c];
      Agreement agreement;
      WireBytes greedy_bytes, greedy_bytes_zstd;
      if (greedy) {
        std::vector<int> divergences;
        for (size_t i = 0; i < prompts.size(); ++i) {
          ASSIGN_OR_RETURN(SplitGeneration g,
                           GreedySplit(m, prompts[i], n, k, options.kinds[c], options.threads));
          divergences.push_back(FirstDivergence(rep.references[i], g.tokens, n));
          greedy_bytes.payload_bytes += g.rounds.payload_bytes;
          greedy_bytes.rows += g.rounds.rows;
          greedy_bytes_zstd.payload_bytes += g.rounds_zstd.payload_bytes;
          greedy_bytes_zstd.rows += g.rounds_zstd.rows;
        }
        agreement = Summarize(divergences, n);
        progress(absl::StrCat("greedy k=", k, " ", std::string(codec::CodecName(options.kinds[c])), ": ",
                              agreement.identical, "/", agreement.prompts, " identical"));
      }
      for (bool zstd : {false, true}) {
        ReportRow& r = rep.rows.emplace_back();
        r.model = name;
        r.k = k;
        r.codec = std::string(codec::CodecName(options.kinds[c]));
        r.zstd = zstd;
        const WireBytes& rounds = zstd ? a.rounds_zstd : a.rounds;
        r.bytes_per_token = PerMessage(rounds.payload_bytes, rounds.messages);
        r.message_bytes_per_token = PerMessage(rounds.message_bytes, rounds.messages);
        r.bytes_per_row_4 = PerRow(zstd ? a.four_zstd : a.four);
        r.prompt_bytes_per_row = PerRow(zstd ? a.prompt_zstd : a.prompt);
        r.greedy = greedy;
        if (greedy) {
          r.prompts = agreement.prompts;
          r.identical = agreement.identical;
          r.identical_share = agreement.prompts > 0
                                  ? static_cast<double>(agreement.identical) / agreement.prompts
                                  : 0.0;
          r.mean_first_divergence = agreement.mean_first_divergence;
          r.mean_first_divergence_diverging = agreement.mean_first_divergence_diverging;
          r.greedy_bytes_per_token = PerRow(zstd ? greedy_bytes_zstd : greedy_bytes);
        }
        r.top1_positions = static_cast<int>(a.positions);
        r.top1_agreement = a.positions > 0 ? static_cast<double>(a.agree) / a.positions : 0.0;
        r.max_abs_logit_err = a.max_err;
        r.mean_abs_logit_err = a.err_count > 0 ? a.sum_err / a.err_count : 0.0;
        r.state_absmax = a.state_absmax;
        r.state_rms = a.state_count > 0 ? std::sqrt(a.state_square_sum / a.state_count) : 0.0;
        r.exact_top1_margin = exact.positions > 0 ? exact.margin_sum / exact.positions : 0.0;
        r.exact_logit_rms = exact.logits > 0 ? std::sqrt(exact.square_sum / exact.logits) : 0.0;
      }
    }
  }
  return rep;
}

std::string RowsToJson(std::span<const ReportRow> rows) {
  std::vector<std::string> objects;
  for (const ReportRow& r : rows) {
    std::string o = absl::StrCat(
        "{\"model\": \"", r.model, "\", \"k\": ", r.k, ", \"codec\": \"", r.codec,
        "\", \"zstd\": ", r.zstd ? "true" : "false", ", \"bytes_per_token\": ", Num(r.bytes_per_token),
        ", \"message_bytes_per_token\": ", Num(r.message_bytes_per_token),
        ", \"bytes_per_row_4row_rounds\": ", Num(r.bytes_per_row_4),
        ", \"prompt_bytes_per_row\": ", Num(r.prompt_bytes_per_row));
    if (r.greedy) {
      absl::StrAppend(&o, ", \"prompts\": ", r.prompts, ", \"identical\": ", r.identical,
                      ", \"identical_share\": ", Num(r.identical_share),
                      ", \"mean_first_divergence\": ", Num(r.mean_first_divergence),
                      ", \"mean_first_divergence_diverging\": ",
                      Num(r.mean_first_divergence_diverging),
                      ", \"greedy_bytes_per_token\": ", Num(r.greedy_bytes_per_token));
    }
    absl::StrAppend(&o, ", \"top1_positions\": ", r.top1_positions,
                    ", \"top1_agreement\": ", Num(r.top1_agreement),
                    ", \"max_abs_logit_err\": ", Num(r.max_abs_logit_err),
                    ", \"mean_abs_logit_err\": ", Num(r.mean_abs_logit_err),
                    ", \"state_absmax\": ", Num(r.state_absmax),
                    ", \"state_rms\": ", Num(r.state_rms),
                    ", \"exact_top1_margin\": ", Num(r.exact_top1_margin),
                    ", \"exact_logit_rms\": ", Num(r.exact_logit_rms), "}");
    objects.push_back(std::move(o));
  }
  return absl::StrCat("[\n  ", absl::StrJoin(objects, ",\n  "), "\n]");
}

std::string RowsToTable(std::span<const ReportRow> rows) {
  std::string t = absl::StrFormat("%-22s %3s %-10s %8s %8s %8s %10s %9s %9s %8s %10s\n", "model",
                                  "k", "codec", "B/tok", "msgB/tok", "B/row@4", "identical",
                                  "mean-div", "div-only", "top-1", "max|dlogit|");
  for (const ReportRow& r : rows) {
    const std::string codec = absl::StrCat(r.codec, r.zstd ? "+zstd" : "");
    std::string identical = "-", mean = "-", diverging = "-";
    if (r.greedy) {
      identical = absl::StrCat(r.identical, "/", r.prompts);
      mean = absl::StrFormat("%.1f", r.mean_first_divergence);
      diverging = std::isfinite(r.mean_first_divergence_diverging)
                      ? absl::StrFormat("%.1f", r.mean_first_divergence_diverging)
                      : "-";
    }
    absl::StrAppend(&t, absl::StrFormat("%-22s %3d %-10s %8.1f %8.1f %8.1f %10s %9s %9s %8.4f %10.4g\n",
                                        r.model, r.k, codec, r.bytes_per_token,
                                        r.message_bytes_per_token, r.bytes_per_row_4, identical,
                                        mean, diverging, r.top1_agreement, r.max_abs_logit_err));
  }
  return t;
}

}  // namespace tandem::codec_report
