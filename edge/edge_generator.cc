// Generation on the edge: spec, cloud, local and auto modes with reconnection (see
// edge_generator.h).
#include "edge/edge_generator.h"


#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/net/status.h"
#include "common/spec/adaptive.h"
#include "common/spec/spec_decoder.h"
#include "common/util/clock.h"
#include "common/util/status_macros.h"
#include "edge/split_runner.h"
#include "edge/uncertain.h"
#include "edge/verifier_stream.h"

namespace tandem::edge {

const char* EdgeModeName(EdgeMode mode) {
  switch (mode) {
    case EdgeMode::kAuto:
      return "auto";
    case EdgeMode::kSpec:
      return "spec";
    case EdgeMode::kCloud:
      return "cloud";
    case EdgeMode::kLocal:
      return "local";
    case EdgeMode::kSplit:
      return "split";
  }
  return "?";
}

namespace {

std::string Describe(const absl::Status& s) {
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
}

// The distributions the drafts were drawn from, `n` rows of `vocab`: sparse rows (the nonzero
// entries) when top-k/top-p left few enough that they take fewer bytes, else full rows. Both are
// exact: the verifier renormalizes sparse rows, and the omitted entries are zero.
void AddDraftProbs(std::span<const float> rows, int n, int vocab, v1::DraftProbs* out) {
  size_t nonzero = 0;
  for (float p : rows) nonzero += p > 0.0f;
  if (nonzero * 2 >= rows.size()) {  // (id, prob) pairs would not be smaller
    out->mutable_full()->Add(rows.begin(), rows.end());
    return;
  }
  for (int i = 0; i < n; ++i) {
    v1::SparseRow* row = out->add_sparse();
    for (int t = 0; t < vocab; ++t) {
      const float p = rows[static_cast<size_t>(i) * vocab + t];
      if (p > 0.0f) {
        row->add_token_ids(t);
        row->add_probs(p);
      }
    }
  }
}

// Brings `channel` to READY: true once there, false at a connection failure or the deadline.
bool WaitReady(grpc::Channel* channel, double timeout_s) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
  grpc_connectivity_state state = channel->GetState(true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) return false;
    if (!channel->WaitForStateChange(state, deadline)) return false;
    state = channel->GetState(true);
  }
  return true;
}

}  // namespace

// In cloud sessions the scheduler re-decides after this many streamed tokens.
constexpr int kCloudRedecideTokens = 8;

// One Generate call: the committed tokens, the current session stream (if any), and the outage
// bookkeeping. Every committed token goes through Commit, so none is emitted twice.
class EdgeGenerator::Run {
 public:
  Run(EdgeGenerator& g, std::span<const int32_t> prompt, int max_new_tokens,
      const std::function<void(int32_t, int32_t)>& emit, EdgeStats* stats)
      : g_(g),
        o_(g.options_),
        committed_(prompt.begin(), prompt.end()),
        max_new_(max_new_tokens),
        emit_(emit),
        stats_(stats),
        backoff_(o_.backoff_initial_s, o_.backoff_max_s,
                 static_cast<uint64_t>(MonotonicSeconds() * 1e9)),
        adaptive_(std::max(0, o_.spec_tokens)),
        live_(g.live_.get()),
        scheduled_(g.scheduler_ != nullptr),
        gen_start_(MonotonicSeconds()) {
    if (scheduled_) cfg_ = g.scheduler_->current();
    synced_ = *stats;
  }

  ~Run() {
    stream_.reset();
    stats_->bytes_up += counters_.bytes_up;
    stats_->bytes_down += counters_.bytes_down;
    if (scheduled_) stats_->final_config = cfg_.Name();
    SyncMetrics();
  }

  absl::Status Go();

 private:
  bool Done() const { return ended_ || generated_ >= max_new_; }
  // Emits `token` unless it ends the text; counts it in `source`. False when generation is over.
  bool Commit(int32_t token, int64_t* source);
  void Warn(const std::string& message) const;

  // Opens a session stream and replays the committed prefix.
  absl::Status Connect();
  // Before a reconnection attempt: makes gRPC try the connection now.
  void PrepareChannel(double timeout);
  // Decides what a failed connection or round means: OK to go on (retry later, maybe locally),
  // or the status that ends the generation.
  // `in_session`: the session was open (RESOURCE_EXHAUSTED then means the context is full or a
  // message too large, not load).
  absl::Status OnFailure(const absl::Status& failure, bool in_session);
  // One spec round / one batch of cloud tokens. The result is fatal; a failure of the stream is
  // put in `*network` instead.
  absl::Status SpecStep(absl::Status* network);
  absl::Status CloudStep(absl::Status* network);
  // One token from the local model (auto mode while the verifier is away).
  absl::Status LocalStep();
  // Context positions the session has left for drafts (the verifier's limit).
  int Room() const;

  // The mode the next session opens in: the scheduler's choice, else the user's.
  EdgeMode WantedMode() const;
  bool Splitting() const { return split_ != nullptr && session_mode_ == EdgeMode::kSplit; }
  // Scheduled runs: asks the scheduler again; in a session, a change of mode or split layer
  // leaves the session (the loop opens the new one at once).
  void Redecide(bool in_session);
  // Scheduled runs, before the first decision of a generator: one GetInfo call gives the
  // verifier's cost model and a round-trip sample, so the first session opens in a mode chosen
  // from measurements rather than priors. Failures are left to the session open to report.
  void LearnVerifier();
  // Leaves the current session without waiting for the verifier: a streaming cloud session is
  // cancelled, any other is sent Close and finished later.
  void Retire();
  void Debug(const std::string& line) const {
    if (o_.on_debug) o_.on_debug(line);
  }
  void Trace(int tokens, int64_t up, int64_t down);
  // The configuration in use (the scheduler's, else the options').
  RunConfig CurrentConfig() const;
  // Brings EdgeOptions::metrics up to date (counters by what changed since the last call).
  void SyncMetrics();

  EdgeGenerator& g_;
  const EdgeOptions& o_;
  std::vector<int32_t> committed_;
  const int max_new_;
  const std::function<void(int32_t, int32_t)>& emit_;
  EdgeStats* stats_;
  int generated_ = 0;
  bool ended_ = false;  // BOS/EOS, or the context is full

  StreamCounters counters_;
  std::unique_ptr<VerifierStream> stream_;
  EdgeMode session_mode_ = EdgeMode::kSpec;  // of stream_
  v1::SessionOpened opened_;
  uint64_t round_ = 0;           // rounds in this session
  double session_start_ = 0;     // when the prompt went up (cloud RTT)
  bool first_tokens_ = true;     // cloud: no tokens yet in this session

  Backoff backoff_;
  double outage_since_ = -1;  // when the current outage began; < 0: none
  double next_attempt_ = 0;   // no reconnection attempt before this
  int handshake_closed_ = 0;  // consecutive connections closed during the handshake
  bool failed_before_ = false;
  bool warned_outage_ = false;
  bool local_active_ = false;  // auto: generating locally until the verifier is back
  int64_t local_run_ = 0;      // tokens in the current local stretch
  int64_t local_since_attempt_ = 0;

  std::unique_ptr<spec::ModelDrafter> local_step_;
  spec::AdaptiveGamma adaptive_;
  std::unique_ptr<SplitRunner> split_;  // kSplit: layers [0, k) on the edge

  LiveMeasurements* live_;  // null in unscheduled runs
  const bool scheduled_;
  RunConfig cfg_;           // scheduled: the configuration in use (or for the next session)
  const double gen_start_;
  int decided_at_ = 0;         // generated_ at the last in-session decision
  EdgeStats synced_;           // what the metrics have counted so far (SyncMetrics)
  int64_t counted_up_ = 0, counted_down_ = 0;  // of counters_, in the metrics
  std::optional<RunConfig> metrics_config_;  // the configuration the metrics show
};

void EdgeGenerator::Run::SyncMetrics() {
  EdgeMetrics* metrics = o_.metrics.get();
  if (metrics == nullptr) return;
  EdgeStats now = *stats_;
  // This run's bytes reach the stats only when it ends: count them from the stream counters.
  now.bytes_up = synced_.bytes_up + (counters_.bytes_up - counted_up_);
  now.bytes_down = synced_.bytes_down + (counters_.bytes_down - counted_down_);
  counted_up_ = counters_.bytes_up;
  counted_down_ = counters_.bytes_down;
  metrics->AddStats(synced_, now);
  synced_ = now;
  if (live_ == nullptr) return;
  const Measurements m = live_->Snapshot(max_new_ - generated_, static_cast<int>(committed_.size()));
  metrics->SetMeasurements(m);
  std::optional<RunConfig> config;
  if (!local_active_) config = CurrentConfig();
  if (config != metrics_config_) {
    metrics_config_ = config;
    const double predicted =
        config && g_.scheduler_ != nullptr ? g_.scheduler_->Predict(*config, m).tokens_per_s : 0.0;
    metrics->SetConfig(config ? &*config : nullptr, predicted);
  }
}

EdgeMode EdgeGenerator::Run::WantedMode() const {
  if (!scheduled_) return o_.mode == EdgeMode::kAuto ? EdgeMode::kSpec : o_.mode;
  switch (cfg_.mode) {
    case RunMode::kCloud:
      return EdgeMode::kCloud;
    case RunMode::kSplit:
      return EdgeMode::kSplit;
    case RunMode::kLocal:
      return EdgeMode::kLocal;
    case RunMode::kSpec:
      break;
  }
  return EdgeMode::kSpec;
}

void EdgeGenerator::Run::LearnVerifier() {
  if (!WaitReady(g_.channel_.get(), std::min(o_.connect_timeout_s, o_.reply_timeout_s))) return;
  grpc::ClientContext context;
  if (!o_.auth_token.empty()) context.AddMetadata("authorization", "Bearer " + o_.auth_token);
  // Behind a load balancer, what is learned here is about the replica the sessions will go to.
  if (!o_.affinity_key.empty()) context.AddMetadata(kAffinityMetadata, o_.affinity_key);
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(o_.reply_timeout_s * 1e6)));
  v1::GetInfoRequest request;
  v1::ServerInfo info;
  const double t0 = MonotonicSeconds();
  if (!g_.stub_->GetInfo(&context, request, &info).ok()) return;  // the session open will say why
  const double wall = MonotonicSeconds() - t0;
  for (const v1::ModelInfo& m : info.models()) {
    if (o_.model_name.empty() || m.name() == o_.model_name) {
      live_->ObserveRound(static_cast<int64_t>(request.ByteSizeLong()) + 16,
                          static_cast<int64_t>(info.ByteSizeLong()), wall, 0.0);
      live_->ObserveVerifier(m);
      return;
    }
  }
}

void EdgeGenerator::Run::Redecide(bool in_session) {
  const Measurements m = live_->Snapshot(max_new_ - generated_, static_cast<int>(committed_.size()));
  std::string why;
  const RunConfig before = cfg_;
  cfg_ = g_.scheduler_->Decide(m, &why);


  if (!why.empty()) {
    stats_->config_changes++;
    Debug(why);
  }
  if (in_session && stream_ != nullptr && !SameSession(before, cfg_)) {
    Retire();
    stats_->session_switches++;
    next_attempt_ = 0;
  }
}

void EdgeGenerator::Run::Retire() {
  if (stream_ == nullptr) return;
  if (session_mode_ == EdgeMode::kCloud && !ended_ && generated_ < max_new_) {
    stream_.reset();  // the verifier is still decoding for it: cancel
    return;
  }
  stream_->BeginClose();
  g_.closing_.push_back(std::move(stream_));
}

RunConfig EdgeGenerator::Run::CurrentConfig() const {
  if (scheduled_) return cfg_;
  RunConfig c;
  c.mode = session_mode_ == EdgeMode::kCloud   ? RunMode::kCloud
           : session_mode_ == EdgeMode::kSplit ? RunMode::kSplit
                                               : RunMode::kSpec;
  c.gamma = c.mode == RunMode::kCloud ? 0 : o_.spec_tokens;
  c.split_layer = c.mode == RunMode::kSplit ? o_.split_layer : 0;
  c.codec = o_.codec;
  return c;
}

void EdgeGenerator::Run::Trace(int tokens, int64_t up, int64_t down) {
  SyncMetrics();
  if (!o_.on_round) return;
  RoundTrace t;
  t.t_s = MonotonicSeconds() - gen_start_;
  t.config = CurrentConfig();
  t.tokens = tokens;
  t.bytes_up = up;
  t.bytes_down = down;
  if (live_ != nullptr) {
    t.est_rtt_s = live_->link().rtt_s();
    t.est_up_bps = live_->link().up_bps();
    t.est_down_bps = live_->link().down_bps();
  }
  o_.on_round(t);
}

bool EdgeGenerator::Run::Commit(int32_t token, int64_t* source) {
  const model::Vocab& vocab = g_.local_.vocab();
  if (token == vocab.bos_id() || token == vocab.eos_id()) {
    ended_ = true;
    return false;
  }
  const int32_t prev = committed_.back();
  committed_.push_back(token);
  emit_(prev, token);
  ++generated_;
  stats_->generated_tokens++;
  (*source)++;
  return generated_ < max_new_;
}

void EdgeGenerator::Run::Warn(const std::string& message) const {
  if (o_.on_warning) {
    o_.on_warning(message);
  } else {
    std::fprintf(stderr, "tandem-edge: warning: %s\n", message.c_str());
  }
}

int EdgeGenerator::Run::Room() const {
  int capacity = 1 << 30;
  if (opened_.model().max_context() > 0) capacity = static_cast<int>(opened_.model().max_context());
  if (opened_.limits().max_tokens_per_session() > 0) {
    capacity = std::min(capacity, static_cast<int>(opened_.limits().max_tokens_per_session()));
  }
  return capacity - static_cast<int>(committed_.size()) - 1;
}

absl::Status EdgeGenerator::Run::Go() {
  if (scheduled_ && !live_->verifier_known()) LearnVerifier();
  while (!Done()) {
    if (stream_ == nullptr) {
      if (scheduled_ && !local_active_) {
        Redecide(false);
        if (cfg_.mode == RunMode::kLocal) {
          RETURN_IF_ERROR(LocalStep());
          continue;
        }
      }
      const double now = MonotonicSeconds();
      const bool tokens_due = local_active_ && o_.reconnect_every_tokens > 0 &&
                              local_since_attempt_ >= o_.reconnect_every_tokens;
      if (now < next_attempt_ && !tokens_due) {
        if (local_active_) {
          RETURN_IF_ERROR(LocalStep());
        } else {
          std::this_thread::sleep_for(std::chrono::duration<double>(next_attempt_ - now));
        }
        continue;
      }
      local_since_attempt_ = 0;
      if (absl::Status s = Connect(); !s.ok()) RETURN_IF_ERROR(OnFailure(s, false));
      continue;
    }
    absl::Status network;
    RETURN_IF_ERROR(session_mode_ == EdgeMode::kCloud ? CloudStep(&network) : SpecStep(&network));
    if (!network.ok()) {
      stream_.reset();
      RETURN_IF_ERROR(OnFailure(network, true));
    } else if (scheduled_ && !Done() &&
               (session_mode_ != EdgeMode::kCloud || generated_ - decided_at_ >= kCloudRedecideTokens)) {
      // Streamed cloud tokens come fast and change little: re-decide every few of them.
      decided_at_ = generated_;
      Redecide(true);
    }
  }
  Retire();  // the text is complete: the session's end is collected later
  return absl::OkStatus();
}

void EdgeGenerator::Run::PrepareChannel(double timeout) {
  if (!failed_before_) return;
  // gRPC keeps failing calls fast while its own reconnection backoff runs; the edge has its own
  // schedule, so the channel tries now. The reset takes effect asynchronously: wait (briefly)
  // until the channel has left TRANSIENT_FAILURE, so the call below sees a fresh attempt.
  grpc::Channel* channel = g_.channel_.get();
  grpc::experimental::ChannelResetConnectionBackoff(channel);
  if (channel->GetState(true) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
    channel->WaitForStateChange(
        GRPC_CHANNEL_TRANSIENT_FAILURE,
        std::chrono::system_clock::now() +
            std::chrono::microseconds(static_cast<int64_t>(std::min(timeout, 0.2) * 1e6)));
  }
}

absl::Status EdgeGenerator::Run::Connect() {
  double timeout = o_.reply_timeout_s;
  if (o_.mode == EdgeMode::kAuto) {
    timeout = std::min(timeout, o_.connect_timeout_s);
  } else if (outage_since_ >= 0) {
    const double left = outage_since_ + o_.retry_deadline_s - MonotonicSeconds();
    timeout = std::max(0.05, std::min(left, timeout));  // the last attempt gets a chance too
  }
  PrepareChannel(timeout);
  auto stream = std::make_unique<VerifierStream>(g_.stub_.get(), o_.auth_token, o_.affinity_key,
                                                 o_.reply_timeout_s, g_.watchdog_.get(), &counters_);
  const EdgeMode mode = WantedMode();
  const int split_layer = scheduled_ ? cfg_.split_layer : o_.split_layer;
  const codec::CodecSpec& codec = scheduled_ ? cfg_.codec : o_.codec;
  v1::OpenSession open;
  open.set_mode(mode == EdgeMode::kCloud   ? v1::MODE_CLOUD
                : mode == EdgeMode::kSplit ? v1::MODE_SPLIT
                                           : v1::MODE_SPEC);
  open.set_model(o_.model_name);
  open.set_client("tandem-edge/0.2");
  open.mutable_sampling()->set_temperature(o_.sampler.temperature);
  open.mutable_sampling()->set_top_k(o_.sampler.top_k);
  open.mutable_sampling()->set_top_p(o_.sampler.top_p);
  open.mutable_sampling()->set_seed(o_.sampler.seed);
  // Cloud mode stops there; every mode lets the verifier size the session's KV cache by it.
  open.set_max_new_tokens(static_cast<uint32_t>(max_new_ - generated_));
  v1::SessionOpened opened;
  v1::HiddenStates prompt_states;
  if (mode == EdgeMode::kSplit) {
    open.set_split_layer(static_cast<uint32_t>(split_layer));
    if (split_ == nullptr || split_->k() != split_layer) {
      ASSIGN_OR_RETURN(split_, SplitRunner::Create(g_.local_, split_layer,
                                                   g_.local_.config().max_seq_len, codec));
    }
    split_->set_codec(codec);
    // A new session (or a resumed one) starts from the whole committed prefix.
    const double t0 = MonotonicSeconds();
    RETURN_IF_ERROR(split_->Prompt(committed_, &prompt_states));
    if (live_ != nullptr && committed_.size() > 1) {
      live_->ObserveEdgeLayers(split_layer, static_cast<int>(committed_.size()) - 1,
                               MonotonicSeconds() - t0);
    }
  }
  // The connection first (TCP, HTTP/2, TLS: several round trips on a new channel), so that the
  // open below times one round trip. A refused or failing connection falls through to Open,
  // which reports it.
  const bool ready = WaitReady(g_.channel_.get(), timeout);
  const int64_t down0 = counters_.bytes_down;
  const double open_start = MonotonicSeconds();
  RETURN_IF_ERROR(stream->Open(open, committed_, timeout, &opened,
                               mode == EdgeMode::kSplit ? &prompt_states : nullptr));
  if (live_ != nullptr && ready) {
    // The open's round trip (the prompt that follows it is not waited for).
    live_->ObserveRound(static_cast<int64_t>(open.ByteSizeLong()) + 3, counters_.bytes_down - down0,
                        MonotonicSeconds() - open_start, opened.setup_micros() * 1e-6);
    live_->ObserveVerifier(opened.model());
  }
  const v1::ModelInfo& info = opened.model();
  if (static_cast<int>(info.vocab_size()) != g_.local_.config().vocab_size ||
      static_cast<int>(info.bos_id()) != g_.local_.vocab().bos_id()) {
    stream->Close(1.0).IgnoreError();
    return absl::FailedPreconditionError(absl::StrCat(
        "the verifier's model '", info.name(), "' has a ", info.vocab_size(),
        "-token vocabulary (BOS ", info.bos_id(), "); the edge model has ",
        g_.local_.config().vocab_size, " (BOS ", g_.local_.vocab().bos_id(), ")"));
  }
  opened_ = opened;
  stream_ = std::move(stream);
  session_mode_ = mode;
  stats_->sessions++;
  round_ = 0;
  session_start_ = open_start;
  first_tokens_ = true;
  if (failed_before_) {
    stats_->reconnects++;
    if (local_active_) {
      Warn(absl::StrCat("the verifier is back: resuming ", EdgeModeName(EdgeMode::kSpec),
                        " mode after ", local_run_, " local tokens (", committed_.size(),
                        "-token prefix replayed)"));
    } else {
      Warn(absl::StrCat("reconnected to the verifier (", committed_.size(),
                        "-token prefix replayed)"));
    }
  }
  backoff_.Reset();
  outage_since_ = -1;
  handshake_closed_ = 0;
  warned_outage_ = false;
  local_active_ = false;
  local_run_ = 0;
  return absl::OkStatus();
}

absl::Status EdgeGenerator::Run::OnFailure(const absl::Status& failure, bool in_session) {
  if (in_session && net::IsHandBack(failure)) {
    // Not an outage: a draining verifier ended the session so that it resumes elsewhere (through
    // the load balancer, on another replica). Reconnect now, in every mode, without going local;
    // should that fail, it is an outage like any other.
    failed_before_ = true;
    next_attempt_ = 0;
    Warn("the verifier handed the session back (draining); resuming on another replica");
    return absl::OkStatus();
  }
  const FailureKind kind = ClassifyFailure(failure);
  if (kind == FailureKind::kRefused) return ExplainRefusal(failure, kind);
  if (kind == FailureKind::kOverload && in_session) return failure;
  if (kind == FailureKind::kHandshakeClosed) {
    // Deterministic for a TLS/plaintext mismatch or a rejected client certificate; a verifier
    // shutting down at that very moment does it once.
    if (++handshake_closed_ >= 3) return ExplainRefusal(failure, kind);
  } else {
    handshake_closed_ = 0;
  }
  const double now = MonotonicSeconds();
  failed_before_ = true;
  if (outage_since_ < 0) outage_since_ = now;
  const double wait = backoff_.Next();
  if (o_.mode != EdgeMode::kAuto) {
    if (now - outage_since_ >= o_.retry_deadline_s) {
      return absl::Status(failure.code(),
                          absl::StrFormat("the verifier stayed unreachable for %.1f s (retry "
                                          "deadline %.1f s, %d attempts); last error: %s",
                                          now - outage_since_, o_.retry_deadline_s,
                                          backoff_.attempts(), failure.message()));
    }
    next_attempt_ = std::min(now + wait, outage_since_ + o_.retry_deadline_s);
    if (!warned_outage_ && kind != FailureKind::kHandshakeClosed) {
      warned_outage_ = true;
      Warn(absl::StrFormat("verifier unavailable (%s); retrying for up to %.1f s",
                           Describe(failure), o_.retry_deadline_s));
    }
    return absl::OkStatus();
  }
  next_attempt_ = now + wait;
  if (kind != FailureKind::kHandshakeClosed && !local_active_) {
    local_active_ = true;
    local_run_ = 0;
    stats_->fallbacks++;
    Warn(absl::StrCat(kind == FailureKind::kOverload ? "the verifier is busy ("
                                                      : "the verifier is unreachable (",
                      Describe(failure),
                      "); continuing with the local model and reconnecting in the background"));
  }
  return absl::OkStatus();
}

absl::Status EdgeGenerator::Run::LocalStep() {
  if (local_step_ == nullptr) {
    spec::ModelDrafterOptions lo;
    lo.sampler = o_.sampler;
    ASSIGN_OR_RETURN(local_step_, spec::ModelDrafter::Create(g_.local_, nullptr, lo));
  }
  spec::Draft next;
  RETURN_IF_ERROR(local_step_->Propose(committed_, 1, &next));
  if (next.tokens.empty()) {  // the local model's context is full
    ended_ = true;
    return absl::OkStatus();
  }
  local_run_++;
  local_since_attempt_++;
  Commit(next.tokens[0], &stats_->tokens_local_fallback);
  SyncMetrics();
  return absl::OkStatus();
}

absl::Status EdgeGenerator::Run::SpecStep(absl::Status* network) {
  // The uncertain policy (edge/uncertain.h): confident drafts are committed now, unverified, and
  // go up as this round's context. Here the verifier holds exactly committed_[0, verified_end).
  const size_t verified_end = committed_.size();
  if (UncertainApplies(o_, g_.drafter_, Splitting())) {
    RETURN_IF_ERROR(CommitConfidentDrafts(
                        *g_.drafter_, committed_, o_.uncertain_threshold,
                        std::min(UnverifiedRunLimit(o_), Room()),
                        [&](int32_t t) { return Commit(t, &stats_->tokens_unverified); },
                        &stats_->draft_seconds)
                        .status());
    if (Done()) return absl::OkStatus();  // the unsent context is needed by no verdict
  }
  const int room = Room();
  if (room < 0) {  // the verifier's context is full
    ended_ = true;
    return absl::OkStatus();
  }
  const int remaining = max_new_ - generated_;
  const int vocab = g_.local_.config().vocab_size;
  const bool tree = o_.tree.has_value() && g_.drafter_ != nullptr;
  spec::DraftTree nodes;  // nodes[0] = the last committed token
  spec::Draft chain;
  std::optional<v1::HiddenStates> self_states;  // split self-drafting: the round's states, pending
  double t0 = MonotonicSeconds();
  if (tree) {
    int limit = std::min(room, remaining - 1);
    if (opened_.limits().max_tree_nodes() > 0) {
      limit = std::min(limit, static_cast<int>(opened_.limits().max_tree_nodes()));
    }
    if (limit > 0) {
      RETURN_IF_ERROR(g_.drafter_->ProposeTree(committed_, *o_.tree, &nodes));
      if (nodes.tokens.empty() || nodes.tokens[0] != committed_.back() ||
          nodes.parents.size() != nodes.tokens.size()) {
        return absl::InternalError("the drafter returned a tree without the context's last token");
      }
      // Nodes come parents first, so a prefix of the list is still a tree.
      if (static_cast<int>(nodes.tokens.size()) - 1 > limit) {
        nodes.tokens.resize(limit + 1);
        nodes.parents.resize(limit + 1);
      }
    } else {
      nodes = spec::DraftTree::Chain(committed_.back(), {});
    }
  } else {
    int gamma = scheduled_ ? cfg_.gamma : o_.spec_tokens;
    if (o_.adaptive_spec_tokens && !scheduled_) {
      gamma = adaptive_.Choose();
      // Now and then probe one draft, so a draft that became good again is noticed.
      if (gamma == 0 && stats_->round_trips % 16 == 15) gamma = 1;
    }
    gamma = std::min({gamma, remaining - 1, room});
    if (opened_.limits().max_draft_tokens() > 0) {
      gamma = std::min(gamma, static_cast<int>(opened_.limits().max_draft_tokens()));
    }
    if (Splitting() && o_.split_self_draft && o_.sampler.temperature <= 0) {
      // The drafts come from the layer-k states this round sends anyway (early exit), so their
      // layers [0, k) run once.
      split_->set_codec(scheduled_ ? cfg_.codec : o_.codec);
      self_states.emplace();
      RETURN_IF_ERROR(split_->DraftRound(committed_.back(), std::max(0, gamma), &chain.tokens,
                                         &*self_states));
    } else if (g_.drafter_ != nullptr && gamma > 0) {
      RETURN_IF_ERROR(g_.drafter_->Propose(committed_, gamma, &chain));
      if (static_cast<int>(chain.tokens.size()) > gamma) chain.tokens.resize(gamma);
    }
    nodes = spec::DraftTree::Chain(committed_.back(), chain.tokens);
  }
  const double draft_seconds = MonotonicSeconds() - t0;
  stats_->draft_seconds += draft_seconds;

  // The round's message with the first `k` draft nodes (a prefix of a tree is a tree).
  v1::EdgeMessage out;
  auto build = [&](int k) {
    out.Clear();
    v1::DraftRound* d = out.mutable_draft();
    d->set_round(round_ + 1);
    d->set_committed_length(static_cast<uint32_t>(committed_.size()));
    d->mutable_context_ids()->Add(committed_.begin() + verified_end, committed_.end());
    d->mutable_token_ids()->Add(nodes.tokens.begin() + 1, nodes.tokens.begin() + 1 + k);
    if (tree) {
      for (int i = 1; i <= k; ++i) d->add_parents(nodes.parents[i] - 1);  // root -> -1
    } else if (!chain.probs.empty() &&
               chain.probs.size() >= static_cast<size_t>(k) * static_cast<size_t>(vocab)) {
      AddDraftProbs(std::span<const float>(chain.probs.data(), static_cast<size_t>(k) * vocab), k,
                    vocab, d->mutable_probs());
    }
  };
  // Split mode: the states of the root and the first k nodes, from layers [0, split) run here.
  double edge_seconds = 0;
  auto attach = [&](int k) -> absl::Status {
    if (!Splitting()) return absl::OkStatus();
    if (self_states.has_value()) {  // DraftRound ran this round already
      *out.mutable_draft()->mutable_hidden() = std::move(*self_states);
      self_states.reset();
      return absl::OkStatus();
    }
    const double a0 = MonotonicSeconds();
    absl::Cleanup timed = [&] { edge_seconds += MonotonicSeconds() - a0; };
    std::vector<int32_t> parents;
    if (tree) {
      for (int i = 1; i <= k; ++i) parents.push_back(nodes.parents[i] - 1);
    }
    return split_->Round(committed_.back(),
                         std::span<const int32_t>(nodes.tokens.data() + 1, static_cast<size_t>(k)),
                         parents, out.mutable_draft()->mutable_hidden());
  };
  if (Splitting()) split_->set_codec(scheduled_ ? cfg_.codec : o_.codec);
  const int64_t raw0 = Splitting() ? split_->raw_bytes() : 0;
  const int64_t wire0 = Splitting() ? split_->wire_bytes() : 0;
  int n = static_cast<int>(nodes.tokens.size()) - 1;
  build(n);
  RETURN_IF_ERROR(attach(n));
  // Stay under the verifier's message limit: fewer drafts rather than a refused round.
  const size_t max_bytes = opened_.limits().max_message_bytes();
  while (max_bytes > 0 && n > 0 && out.ByteSizeLong() > max_bytes) {
    if (Splitting()) RETURN_IF_ERROR(split_->Accept({}));  // undo the states' round
    build(n /= 2);
    RETURN_IF_ERROR(attach(n));
  }
  nodes.tokens.resize(n + 1);
  nodes.parents.resize(n + 1);
  // A link probe: when recent rounds were all about the same size (after a detected change of
  // link, or now and then), filler makes this one clearly larger, so that the estimator can tell
  // the uplink's bandwidth from the round trip.
  if (scheduled_ && live_->link().WantsProbe()) {
    // Big enough to stand out (about half a round trip's worth at the estimated rate), small
    // enough to cost little if the estimate is far too high.
    const double worth = 0.5 * live_->link().rtt_s() * std::min(live_->link().up_bps(), 1e8) / 8;
    const size_t least = 2 * out.ByteSizeLong() + 256;
    size_t pad = std::clamp<size_t>(static_cast<size_t>(worth), least, std::max<size_t>(least, 4096));
    if (max_bytes > 0) pad = std::min(pad, max_bytes > out.ByteSizeLong() + 64 ? max_bytes - out.ByteSizeLong() - 64 : 0);
    out.mutable_draft()->mutable_padding()->assign(pad, '\0');
    stats_->probes += pad > 0;
  }
  ++round_;
  const int64_t up0 = counters_.bytes_up, down0 = counters_.bytes_down;
  t0 = MonotonicSeconds();
  v1::VerifierMessage in;
  if (*network = stream_->Send(out); !network->ok()) return absl::OkStatus();
  if (*network = stream_->Receive(o_.reply_timeout_s, &in); !network->ok()) return absl::OkStatus();
  const double wall = MonotonicSeconds() - t0;

  // The verdict is untrusted: it must answer this round and name drafts that exist.
  const v1::Verdict& v = in.verdict();
  bool valid = in.kind_case() == v1::VerifierMessage::kVerdict && v.round() == round_ &&
               static_cast<int>(v.accepted()) <= n && v.next_token() >= 0 &&
               v.next_token() < vocab;
  std::vector<int32_t> emitted;
  if (valid && tree) {
    valid = v.accepted_nodes_size() == static_cast<int>(v.accepted());
    int parent = -1;
    for (int i = 0; valid && i < v.accepted_nodes_size(); ++i) {
      const int node = v.accepted_nodes(i);
      valid = node >= 0 && node < n && nodes.parents[node + 1] - 1 == parent;
      if (valid) emitted.push_back(nodes.tokens[node + 1]);
      parent = node;
    }
  } else if (valid) {
    emitted.assign(nodes.tokens.begin() + 1, nodes.tokens.begin() + 1 + v.accepted());
  }
  if (!valid) {
    return absl::DataLossError(absl::StrCat("malformed verdict for round ", round_, ": ",
                                            in.ShortDebugString()));
  }
  if (Splitting()) {  // keep the edge's layers [0, k) in step with the verifier's cache
    std::vector<int32_t> kept;
    if (tree) {
      kept.assign(v.accepted_nodes().begin(), v.accepted_nodes().end());
    } else {
      for (uint32_t i = 0; i < v.accepted(); ++i) kept.push_back(static_cast<int32_t>(i));
    }
    RETURN_IF_ERROR(split_->Accept(kept));
  }
  emitted.push_back(v.next_token());
  const double compute = v.compute_micros() * 1e-6;
  stats_->round_trips++;
  stats_->target_passes++;
  stats_->rtt_samples++;
  stats_->rtt_seconds += std::max(0.0, wall - compute);
  stats_->cloud_compute_seconds += compute;
  stats_->draft_tokens += n;
  stats_->accepted_tokens += v.accepted();
  if (o_.adaptive_spec_tokens && !tree) {
    adaptive_.ObserveRound(n, static_cast<int>(v.accepted()));
    adaptive_.ObserveCosts(n, draft_seconds, compute);
    adaptive_.SetNetwork(stats_->MeanRttSeconds(), 0.0);
  }
  const int64_t up = counters_.bytes_up - up0, down = counters_.bytes_down - down0;
  if (live_ != nullptr) {
    live_->ObserveRound(up, down, wall, compute);
    const int k = Splitting() ? split_->k() : 0;
    live_->ObserveCloudPass(static_cast<int>(opened_.model().n_layers()) - k, n + 1, n + 1, compute);
    if (!tree) live_->ObserveAcceptance(n, static_cast<int>(v.accepted()));
    if (n > 0 && g_.drafter_ != nullptr) live_->ObserveDraft(n, draft_seconds);
    if (k > 0) {
      live_->ObserveEdgeLayers(k, n + 1, edge_seconds);
      live_->ObserveZstdRatio(split_->raw_bytes() - raw0, split_->wire_bytes() - wire0);
    }
  }
  const int64_t before = generated_;
  for (int32_t token : emitted) {
    if (!Commit(token, &stats_->tokens_verified)) break;
  }
  Trace(static_cast<int>(generated_ - before), up, down);
  return absl::OkStatus();
}

absl::Status EdgeGenerator::Run::CloudStep(absl::Status* network) {
  v1::VerifierMessage in;
  if (*network = stream_->Receive(o_.reply_timeout_s, &in); !network->ok()) return absl::OkStatus();
  if (in.kind_case() != v1::VerifierMessage::kTokens) {
    return absl::DataLossError(
        absl::StrCat("expected cloud tokens from the verifier, got ", in.ShortDebugString()));
  }
  const v1::CloudTokens& t = in.tokens();
  const int vocab = g_.local_.config().vocab_size;
  for (int32_t token : t.token_ids()) {
    if (token < 0 || token >= vocab) {
      return absl::DataLossError(absl::StrCat("the verifier streamed token ", token,
                                              " outside the ", vocab, "-token vocabulary"));
    }
  }
  const double compute = t.compute_micros() * 1e-6;
  stats_->cloud_compute_seconds += compute;
  stats_->target_passes += t.token_ids_size();  // the verifier decodes one token per pass
  if (first_tokens_) {
    first_tokens_ = false;
    stats_->round_trips++;
    stats_->rtt_samples++;
    stats_->rtt_seconds += std::max(0.0, MonotonicSeconds() - session_start_ - compute);
  }
  if (live_ != nullptr && t.token_ids_size() > 0) {
    live_->ObserveCloudPass(static_cast<int>(opened_.model().n_layers()), 1, 1,
                            compute / t.token_ids_size());
  }
  const int64_t before = generated_;
  for (int32_t token : t.token_ids()) {
    if (!Commit(token, &stats_->tokens_from_cloud)) break;
  }
  if (t.done()) ended_ = true;  // the verifier has nothing more to give
  Trace(static_cast<int>(generated_ - before), 0, static_cast<int64_t>(in.ByteSizeLong()));
  return absl::OkStatus();
}

EdgeGenerator::EdgeGenerator(const model::Model& local, spec::Drafter* drafter,
                             std::shared_ptr<grpc::Channel> channel, const EdgeOptions& options)
    : local_(local), drafter_(drafter), channel_(std::move(channel)), options_(options) {}

EdgeGenerator::~EdgeGenerator() { CollectClosed(1.0); }

void EdgeGenerator::CollectClosed(double timeout_s) {
  for (std::unique_ptr<VerifierStream>& stream : closing_) stream->Close(timeout_s).IgnoreError();
  closing_.clear();
}

absl::Status EdgeGenerator::Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                     const std::function<void(int32_t, int32_t)>& emit,
                                     EdgeStats* stats) {
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt (it needs at least BOS)");
  if (max_new_tokens <= 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckUncertainOptions(options_));
  const EdgeMode mode = options_.mode;
  if (mode == EdgeMode::kLocal || (mode == EdgeMode::kAuto && channel_ == nullptr)) {
    spec::SpecOptions o;
    o.spec_tokens = 0;
    o.sampler = options_.sampler;
    spec::SpecDecoder decoder(local_, nullptr, nullptr, o);
    spec::SpecStats s;
    absl::Status status = decoder.Generate(prompt, max_new_tokens, emit, &s);
    stats->generated_tokens += s.generated_tokens;
    stats->tokens_local_fallback += s.generated_tokens;
    return status;
  }
  if (channel_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(EdgeModeName(mode), " mode needs a verifier channel"));
  }
  if (options_.tree.has_value() && drafter_ == nullptr && mode != EdgeMode::kCloud) {
    return absl::InvalidArgumentError("draft trees need a drafter");
  }
  const int n_layers = local_.config().n_layers;
  const bool split_auto = mode == EdgeMode::kSplit && options_.split_layer == 0;
  if (mode == EdgeMode::kSplit && !split_auto &&
      (options_.split_layer < 1 || options_.split_layer >= n_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("split layer ", options_.split_layer,
                                                   " is outside [1, ", n_layers,
                                                   ") for the edge's model"));
  }
  const bool scheduled = split_auto || (mode == EdgeMode::kAuto && options_.scheduler.has_value());
  if (scheduled && scheduler_ == nullptr) {
    SchedulerPolicy policy = options_.scheduler.value_or(SchedulerPolicy{});
    if (split_auto) {
      policy.allowed = {RunMode::kSplit};
      if (!options_.scheduler.has_value()) policy.codecs = {options_.codec};
    }
    if (policy.allowed.empty()) return absl::InvalidArgumentError("the scheduler allows no mode");
    if (policy.codecs.empty()) policy.codecs = {options_.codec};
    const bool split_allowed = std::find(policy.allowed.begin(), policy.allowed.end(),
                                         RunMode::kSplit) != policy.allowed.end();
    if (split_allowed && std::max(1, policy.min_split_layer) > std::min(n_layers - 1, policy.max_edge_layers)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no split layer satisfies min_split_layer ", policy.min_split_layer,
          " and max_edge_layers ", policy.max_edge_layers, " for a ", n_layers, "-layer model"));
    }
    scheduler_ = std::make_unique<Scheduler>(policy);
  }
  if (live_ == nullptr) {
    live_ = std::make_unique<LiveMeasurements>(local_, options_.prior_acceptance);
  }
  if (scheduled) live_->CalibrateEdge();
  if (stub_ == nullptr) stub_ = v1::Verifier::NewStub(channel_);
  if (watchdog_ == nullptr) watchdog_ = std::make_unique<ReplyWatchdog>();
  CollectClosed(0.5);
  Run run(*this, prompt, max_new_tokens, emit, stats);
  return run.Go();
}

}  // namespace tandem::edge
