#include "bench/grid/load_runner.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <latch>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "common/util/clock.h"
#include "edge/connection.h"
#include "tandem/v1/verifier.grpc.pb.h"
#include "tests/cloud/http_get.h"  // HttpGet, ParsePrometheusText (header-only)

namespace tandem::bench {
namespace {

// Prompts beyond the model's own (BenchModel::prompts); sessions cycle through all of them.
constexpr const char* kMorePrompts[] = {
    "One day a girl found a shiny stone", "Tim had a red ball", "The sun was hot and the cat",
    "Mom said it was time to sleep", "There was a big tree in the garden"};

// The target alone, greedy, one position per pass, stopping before BOS/EOS (as the verifier's
// cloud mode and `tandem-model generate` do): the continuation every session is checked against.
absl::StatusOr<Reference> Greedy(model::Engine& engine, const std::vector<int32_t>& prompt, int n) {
  const model::Model& m = engine.model();
  auto cache = model::KvCache::Create(m.config(), 0, m.config().n_layers,
                                      static_cast<int>(prompt.size()) + n + 1);
  if (!cache.ok()) return cache.status();
  model::ForwardRequest r;
  r.tokens = prompt;
  r.logits = model::LogitsMode::kLast;
  model::ForwardResult out;
  Reference ref;
  while (static_cast<int>(ref.tokens.size()) < n) {
    if (absl::Status s = engine.Forward(r, &*cache, &out); !s.ok()) return s;
    const int32_t next = model::Argmax(out.Row(0));
    if (next == m.vocab().bos_id() || next == m.vocab().eos_id()) {
      ref.end_token = next;
      break;
    }
    ref.tokens.push_back(next);
    r.tokens = std::span<const int32_t>(&ref.tokens.back(), 1);
  }
  return ref;
}

// What one session did.
struct SessionOutcome {
  bool admitted = false, refused = false, mismatch = false;
  bool finished = false;  // the call's status has been collected
  std::string error;      // a failure other than a refusal
  double answer_ms = 0;  // call start -> SessionOpened, or -> the refusal
  int64_t committed = 0, rounds = 0, drafted = 0, accepted = 0;
  std::vector<double> round_ms;
};

// Whether session i of a wave is in cloud mode: when the running share of cloud sessions falls
// behind `share`.
bool IsCloud(int i, double share) { return std::floor((i + 1) * share) > std::floor(i * share); }

struct SessionSpec {
  int index = 0;  // seeds the oracle's corruption
  bool cloud = false;
  const std::vector<int32_t>* prompt = nullptr;
  const Reference* ref = nullptr;
  int tokens = 0;
};

using Stream = grpc::ClientReaderWriter<v1::EdgeMessage, v1::VerifierMessage>;

// The call's end after a failed read or write: RESOURCE_EXHAUSTED is a refusal, the rest errors.
void Failed(Stream* stream, const char* during, SessionOutcome* o) {
  const grpc::Status s = stream->Finish();
  o->finished = true;
  if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && !o->admitted) {
    o->refused = true;
    return;
  }
  o->error = s.ok() ? absl::StrCat("the verifier ended the session during ", during)
                    : absl::StrCat(during, ": ", static_cast<int>(s.error_code()), " ",
                                   s.error_message());
}

// Spec mode: oracle draft rounds until `tokens` are committed or the target ends; every verdict
// checked against the reference. Stops at the first failure (o->error) or mismatch.
void SpecRounds(Stream* stream, const SessionSpec& spec, const LoadSettings& s, int vocab,
                SessionOutcome* o) {
  const Reference& ref = *spec.ref;
  const OracleOptions oracle{s.corrupt, s.seed, vocab};
  const int ref_len = static_cast<int>(ref.tokens.size());
  int gen = 0;
  uint64_t round = 0;
  std::vector<int32_t> draft;
  v1::EdgeMessage out;
  v1::VerifierMessage in;
  while (gen < spec.tokens) {
    const int g = std::max(0, std::min({s.gamma, spec.tokens - gen, ref_len - gen}));
    draft.clear();
    for (int i = 0; i < g; ++i) draft.push_back(OracleToken(ref.tokens, spec.index, gen + i, oracle));
    const ExpectedVerdict want = Expect(ref, gen, draft);
    out.Clear();
    v1::DraftRound* d = out.mutable_draft();
    d->set_round(++round);
    d->set_committed_length(static_cast<uint32_t>(spec.prompt->size() + gen));
    d->mutable_token_ids()->Add(draft.begin(), draft.end());
    const double t0 = MonotonicSeconds();
    if (!stream->Write(out) || !stream->Read(&in)) {
      Failed(stream, "a draft round", o);
      return;
    }
    o->round_ms.push_back(1e3 * (MonotonicSeconds() - t0));
    if (in.kind_case() != v1::VerifierMessage::kVerdict || in.verdict().round() != round) {
      o->error = "the verifier answered a draft round with something else";
      return;
    }
    const v1::Verdict& v = in.verdict();
    o->rounds++;
    o->drafted += g;
    o->accepted += v.accepted();
    if (static_cast<int>(v.accepted()) != want.accepted || v.next_token() != want.next_token) {
      o->mismatch = true;
      return;
    }
    if (want.ends) {  // the target's BOS/EOS: the generation is over, the end token is no text
      o->committed += want.accepted;
      return;
    }
    gen += want.accepted + 1;
    o->committed += want.accepted + 1;
  }
}

// Cloud mode: the verifier streams the continuation, which must be the reference's.
void CloudTokens(Stream* stream, const SessionSpec& spec, SessionOutcome* o) {
  const Reference& ref = *spec.ref;
  const size_t expected = std::min(ref.tokens.size(), static_cast<size_t>(spec.tokens));
  v1::VerifierMessage in;
  size_t got = 0;
  while (true) {
    if (!stream->Read(&in)) {
      Failed(stream, "cloud decoding", o);
      return;
    }
    if (in.kind_case() != v1::VerifierMessage::kTokens) {
      o->error = "the verifier sent something else than tokens in cloud mode";
      return;
    }
    for (int32_t t : in.tokens().token_ids()) {
      if (got >= expected || t != ref.tokens[got]) o->mismatch = true;
      ++got;
    }
    if (in.tokens().done()) break;
  }
  o->committed += static_cast<int64_t>(std::min(got, expected));
  if (got != expected) o->mismatch = true;
}

// One session from open to close. `answered` counts down once the open has its answer; with
// `hold`, an admitted session then waits until every session of its wave has been answered.
void RunSession(v1::Verifier::Stub* stub, const SessionSpec& spec, const LoadSettings& s, int vocab,
                std::latch* start, std::latch* answered, bool hold, SessionOutcome* o) {
  start->wait();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(s.session_timeout_s * 1e3)));
  const double t0 = MonotonicSeconds();
  std::unique_ptr<Stream> stream = stub->Session(&context);
  v1::EdgeMessage out;
  v1::OpenSession* open = out.mutable_open();
  open->set_mode(spec.cloud ? v1::MODE_CLOUD : v1::MODE_SPEC);
  open->set_client("tandem-bench/load");
  if (spec.cloud) open->set_max_new_tokens(static_cast<uint32_t>(spec.tokens));
  bool ok = stream->Write(out);
  if (ok) {
    out.Clear();
    out.mutable_prompt()->mutable_token_ids()->Add(spec.prompt->begin(), spec.prompt->end());
    ok = stream->Write(out);
  }
  v1::VerifierMessage in;
  ok = ok && stream->Read(&in);
  o->answer_ms = 1e3 * (MonotonicSeconds() - t0);
  answered->count_down();
  if (!ok) {
    Failed(stream.get(), "the session's open", o);
    return;
  }
  if (in.kind_case() != v1::VerifierMessage::kOpened) {
    o->error = "the verifier answered the open with something else";
  } else {
    o->admitted = true;
    if (hold) answered->wait();
    if (spec.cloud) {
      CloudTokens(stream.get(), spec, o);
    } else {
      SpecRounds(stream.get(), spec, s, vocab, o);
    }
  }
  if (!o->error.empty()) {  // a protocol error: end the call unless it is over already
    if (!o->finished) {
      context.TryCancel();
      stream->Finish();
    }
    return;
  }
  if (!spec.cloud) {
    out.Clear();
    out.mutable_close();
    stream->Write(out);
  }
  stream->WritesDone();
  while (stream->Read(&in)) {
  }
  const grpc::Status end = stream->Finish();
  if (!end.ok() && !o->mismatch) {
    o->error = absl::StrCat("close: ", static_cast<int>(end.error_code()), " ", end.error_message());
  }
}

struct Wave {
  std::vector<SessionOutcome> outcomes;
  double wall_s = 0;
};

// `n` sessions started at once (threads wait on one latch): session i of the wave is number
// first + i for the oracle, uses prompt (first + i) mod P, and is in cloud mode when the running
// share of cloud sessions falls behind s.cloud_share.
Wave RunWave(v1::Verifier::Stub* stub, const LoadReferences& refs, int first, int n, int tokens,
             const LoadSettings& s, int vocab, bool hold) {
  Wave w;
  w.outcomes.resize(static_cast<size_t>(n));
  std::vector<SessionSpec> specs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    SessionSpec& spec = specs[static_cast<size_t>(i)];
    spec.index = first + i;
    spec.cloud = IsCloud(i, s.cloud_share);
    const size_t p = static_cast<size_t>(first + i) % refs.prompts.size();
    spec.prompt = &refs.prompts[p];
    spec.ref = &refs.references[p];
    spec.tokens = tokens;
  }
  std::latch start(1), answered(n);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back(RunSession, stub, std::cref(specs[static_cast<size_t>(i)]), std::cref(s),
                         vocab, &start, &answered, hold, &w.outcomes[static_cast<size_t>(i)]);
  }
  const double t0 = MonotonicSeconds();
  start.count_down();
  for (std::thread& t : threads) t.join();
  w.wall_s = MonotonicSeconds() - t0;
  return w;
}

absl::StatusOr<Series> Scrape(int port) {
  const testing::HttpResponse r = testing::HttpGet(port, "/metrics");
  if (r.status != 200) {
    return absl::UnavailableError(absl::StrCat("GET /metrics on port ", port, ": status ", r.status));
  }
  return testing::ParsePrometheusText(r.body);
}

// Waits (up to 10 s) until the verifier reports no open session; with `settle`, 100 ms more so
// that what they held is freed before the RSS is read.
void WaitIdle(int metrics_port, bool settle = true) {
  const double deadline = MonotonicSeconds() + 10;
  while (MonotonicSeconds() < deadline) {
    absl::StatusOr<Series> m = Scrape(metrics_port);
    if (m.ok() && SeriesTotal(*m, "tandem_sessions_active") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (settle) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

// Non-zero differences of tandem_rejections_total by reason.
std::map<std::string, double> Rejections(const Series& after, const Series& before) {
  std::map<std::string, double> out;
  const std::string prefix = "tandem_rejections_total{reason=\"";
  for (auto it = after.lower_bound(prefix); it != after.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    auto b = before.find(it->first);
    const double d = it->second - (b == before.end() ? 0 : b->second);
    if (d != 0) out[it->first.substr(prefix.size(), it->first.size() - prefix.size() - 2)] = d;
  }
  return out;
}

double Diff(const Series& after, const Series& before, const std::string& name) {
  const double a = SeriesTotal(after, name), b = SeriesTotal(before, name);
  return a < 0 || b < 0 ? -1 : a - b;
}

// A verifier for `max_sessions` concurrent sessions with metrics, and a stub to it (through a link
// emulator when s.rtt_ms > 0).
struct Served {
  std::unique_ptr<VerifierProcess> process;
  EmulatedLink link;
  std::unique_ptr<v1::Verifier::Stub> stub;
};

absl::StatusOr<Served> Serve(const BenchModel& m, const LoadReferences& refs, int max_sessions,
                             int per_tenant, const std::string& batching, const LoadSettings& s,
                             const std::string& log_name) {
  std::vector<std::string> args = {"--max-sessions", std::to_string(max_sessions),
                                   "--max-sessions-per-tenant", std::to_string(per_tenant),
                                   "--max-tokens-per-session", std::to_string(refs.context),
                                   "--metrics-listen", "127.0.0.1:0"};
  if (batching == "on" || batching == "off") {
    args.push_back("--batching");
    args.push_back(batching);
  }
  args.insert(args.end(), s.verifier_args.begin(), s.verifier_args.end());
  Served out;
  auto v = VerifierProcess::Start(s.verifier_bin, m.path, s.verifier_threads, s.work,
                                  s.work + "/" + log_name, args);
  if (!v.ok()) return v.status();
  out.process = std::move(*v);
  if (out.process->metrics_port() <= 0) return absl::InternalError("the verifier serves no metrics");
  std::shared_ptr<grpc::Channel> channel;
  if (s.rtt_ms > 0) {
    linkem::LinkParams lp;
    lp.rtt_ms = s.rtt_ms;
    auto link = StartLink(out.process->port(), lp);
    if (!link.ok()) return link.status();
    out.link = std::move(*link);
    channel = out.link.channel;
  } else {
    auto ch = edge::MakeVerifierChannel(absl::StrCat("127.0.0.1:", out.process->port()));
    if (!ch.ok()) return ch.status();
    channel = *ch;
  }
  out.stub = v1::Verifier::NewStub(channel);
  return out;
}

// Sums a wave's outcomes.
SessionTotals Totals(const Wave& w) {
  SessionTotals t;
  for (const SessionOutcome& o : w.outcomes) {
    if (o.admitted) {
      ++t.admitted;
      t.open_ms.push_back(o.answer_ms);
    }
    if (o.refused) {
      ++t.refused;
      t.refusal_ms.push_back(o.answer_ms);
    }
    if (!o.error.empty()) {
      ++t.errors;
      if (t.first_error.empty()) t.first_error = o.error;
    }
    if (o.mismatch) ++t.mismatches;
    t.committed_tokens += o.committed;
    t.rounds += o.rounds;
    t.drafted += o.drafted;
    t.accepted += o.accepted;
    t.round_ms.insert(t.round_ms.end(), o.round_ms.begin(), o.round_ms.end());
    if (!o.round_ms.empty()) t.first_round_ms.push_back(o.round_ms.front());
  }
  return t;
}

}  // namespace

double ProcCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;  // state .. cmajflt (fields 3-13)
  int64_t utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int64_t ProcStatusBytes(int pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(field.size() + 1));
    int64_t kb = 0;
    fields >> kb;
    return kb * 1024;
  }
  return 0;
}

absl::StatusOr<LoadReferences> MakeReferences(const BenchModel& m, const LoadSettings& s) {
  const double t0 = MonotonicSeconds();
  LoadReferences r;
  r.texts = m.prompts;
  for (const char* p : kMorePrompts) r.texts.push_back(p);
  model::ThreadPool pool(s.verifier_threads);
  model::Engine engine(*m.model, &pool);
  size_t longest = 0;
  for (const std::string& text : r.texts) {
    r.prompts.push_back(m.model->vocab().Encode(text, true));
    longest = std::max(longest, r.prompts.back().size());
    // gamma + 1 beyond the session's tokens: a last round's drafts and bonus token are checked too.
    absl::StatusOr<Reference> ref = Greedy(engine, r.prompts.back(), s.tokens + s.gamma + 1);
    if (!ref.ok()) return ref.status();
    r.references.push_back(std::move(*ref));
  }
  r.context = static_cast<int>(longest) + s.tokens + s.gamma + 2;
  r.seconds = MonotonicSeconds() - t0;
  return r;
}

LoadRow MeasureLoad(const BenchModel& m, const LoadReferences& refs, int sessions,
                    const std::string& batching, const LoadSettings& s) {
  LoadRow row;
  row.model = m.name;
  row.sessions = sessions;
  row.batching = batching;
  row.tokens_per_session = s.tokens;
  row.gamma = s.gamma;
  row.corrupt = s.corrupt;
  const int warm_n = std::min(sessions, s.warmup_sessions);
  absl::StatusOr<Served> served =
      Serve(m, refs, std::max(sessions, warm_n), std::max(sessions, warm_n), batching, s,
            absl::StrCat("verifier-load-", m.name, "-", sessions, "-", batching, ".log"));
  if (!served.ok()) {
    row.error = served.status().ToString();
    return row;
  }
  const int vocab = m.model->config().vocab_size;
  const int port = served->process->metrics_port();
  const int pid = served->process->pid();
  const Wave warm = RunWave(served->stub.get(), refs, 1000000, warm_n,
                            std::min(s.tokens, s.warmup_tokens), s, vocab, false);
  const SessionTotals wt = Totals(warm);
  row.warmup_mismatches = wt.mismatches;
  if (wt.errors > 0 || wt.refused > 0) {
    row.error = absl::StrCat("warm-up: ", wt.errors, " errors, ", wt.refused, " refused; ", wt.first_error);
    return row;
  }
  WaitIdle(port);
  absl::StatusOr<Series> before = Scrape(port);
  if (!before.ok()) {
    row.error = before.status().ToString();
    return row;
  }
  row.rss_before_bytes = ProcStatusBytes(pid, "VmRSS");
  const double verifier_cpu0 = ProcCpuSeconds(pid), bench_cpu0 = ProcCpuSeconds(getpid());

  // Waves of N sessions until s.min_seconds of them (a wave ends with its last session; the
  // verifier has released every session before the next wave starts).
  Wave wave;
  do {
    if (row.waves > 0) WaitIdle(port, false);
    Wave w = RunWave(served->stub.get(), refs, row.waves * sessions, sessions, s.tokens, s, vocab, false);
    wave.wall_s += w.wall_s;
    for (SessionOutcome& o : w.outcomes) wave.outcomes.push_back(std::move(o));
    ++row.waves;
  } while (wave.wall_s < s.min_seconds && row.waves < s.max_waves);
  absl::StatusOr<Series> after = Scrape(port);
  row.verifier_cpu_s = ProcCpuSeconds(pid) - verifier_cpu0;
  row.bench_cpu_s = ProcCpuSeconds(getpid()) - bench_cpu0;
  row.peak_rss_bytes = ProcStatusBytes(pid, "VmHWM");
  WaitIdle(port);
  row.rss_after_bytes = ProcStatusBytes(pid, "VmRSS");
  if (!after.ok()) {
    row.error = after.status().ToString();
    return row;
  }

  for (int i = 0; i < sessions; ++i) row.cloud_sessions += IsCloud(i, s.cloud_share) ? 1 : 0;
  row.wall_s = wave.wall_s;
  row.totals = Totals(wave);
  row.verified_tokens_per_s =
      wave.wall_s > 0 ? static_cast<double>(row.totals.committed_tokens) / wave.wall_s : 0;
  row.batch_sessions = HistogramDiff(HistogramFrom(*after, "tandem_engine_batch_sessions"),
                                     HistogramFrom(*before, "tandem_engine_batch_sessions"));
  row.batch_tokens = HistogramDiff(HistogramFrom(*after, "tandem_engine_batch_tokens"),
                                   HistogramFrom(*before, "tandem_engine_batch_tokens"));
  row.verify_batch_tokens = HistogramDiff(HistogramFrom(*after, "tandem_verify_batch_tokens"),
                                          HistogramFrom(*before, "tandem_verify_batch_tokens"));
  row.engine_passes = Diff(*after, *before, "tandem_engine_passes_total");
  row.verify_passes = Diff(*after, *before, "tandem_verify_passes_total");
  row.generated_metric = Diff(*after, *before, "tandem_generated_tokens_total");
  row.rejections = Rejections(*after, *before);
  return row;
}

absl::StatusOr<OverloadRun> MeasureOverload(const BenchModel& m, const LoadReferences& refs,
                                            int capacity, int factor, int waves,
                                            const std::string& batching, const LoadSettings& s) {
  // Only the global limit binds: the one tenant's quota is above the wave.
  absl::StatusOr<Served> served = Serve(m, refs, capacity, factor * capacity, batching, s,
                                        absl::StrCat("verifier-overload-", m.name, ".log"));
  if (!served.ok()) return served.status();
  const int vocab = m.model->config().vocab_size;
  const int port = served->process->metrics_port();
  const int pid = served->process->pid();
  OverloadRun run;
  // The warm-up is a wave like the measured ones (the allocator's per-thread arenas fill up
  // over the first waves of sessions created on gRPC's threads; a leak grows on and on).
  const SessionTotals warm = Totals(RunWave(served->stub.get(), refs, 1000000, factor * capacity,
                                            s.tokens, s, vocab, true));
  if (warm.errors > 0 || warm.mismatches > 0) {
    return absl::InternalError(absl::StrCat("warm-up: ", warm.errors, " errors, ", warm.mismatches,
                                            " mismatches; ", warm.first_error));
  }
  WaitIdle(port);
  run.rss_after_warmup_bytes = ProcStatusBytes(pid, "VmRSS");
  for (int w = 0; w < waves; ++w) {
    absl::StatusOr<Series> before = Scrape(port);
    if (!before.ok()) return before.status();
    const Wave wave = RunWave(served->stub.get(), refs, (w + 1) * 100000, factor * capacity,
                              s.tokens, s, vocab, true);
    WaitIdle(port);
    absl::StatusOr<Series> after = Scrape(port);
    if (!after.ok()) return after.status();
    OverloadWave ow;
    ow.sessions = factor * capacity;
    ow.totals = Totals(wave);
    ow.wall_s = wave.wall_s;
    ow.rss_after_bytes = ProcStatusBytes(pid, "VmRSS");
    ow.rejections = Rejections(*after, *before);
    run.waves.push_back(std::move(ow));
  }
  run.peak_rss_bytes = ProcStatusBytes(pid, "VmHWM");
  return run;
}

}  // namespace tandem::bench
