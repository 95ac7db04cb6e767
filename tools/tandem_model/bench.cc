// `bench`: decode speed at batch 1 against the memory-bandwidth bound, the cost of one forward
// pass over T positions relative to T = 1 (what a verification round costs), and prefill speed.
// Results go to a JSON file; a summary goes to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/engine.h"
#include "common/model/sampler.h"
#include "tools/tandem_model/commands.h"

namespace tandem::tools {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int BenchCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(args, {"model", "tokenizer", "json", "threads", "seconds"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("json")) return Fail(absl::InvalidArgumentError("bench needs --json FILE"));
  absl::StatusOr<int64_t> threads = flags->Int("threads", 1, 1, 256);
  if (!threads.ok()) return Fail(threads.status());
  absl::StatusOr<double> budget = flags->Double("seconds", 1.0);
  if (!budget.ok() || *budget <= 0 || *budget > 600) {
    return Fail(absl::InvalidArgumentError("--seconds must be in (0, 600]"));
  }
  auto loaded = LoadModelFromFlags(*flags);
  if (!loaded.ok()) return Fail(loaded.status());
  const model::Model& m = **loaded;
  const model::ModelConfig& c = m.config();

  model::ThreadPool pool(static_cast<int>(*threads));
  model::Engine engine(m, &pool);
  const int capacity = std::min(c.max_seq_len, 512);
  auto cache_or = model::KvCache::Create(c, 0, c.n_layers, capacity);
  if (!cache_or.ok()) return Fail(cache_or.status());
  model::KvCache& cache = *cache_or;
  model::Rng rng(42);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = static_cast<int32_t>(rng.Next() % c.vocab_size);
    return t;
  };
  model::ForwardResult out;
  auto run = [&](const std::vector<int32_t>& tokens, model::LogitsMode mode) {
    model::ForwardRequest req;
    req.tokens = tokens;
    req.logits = mode;
    absl::Status s = engine.Forward(req, &cache, &out);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      std::exit(1);
    }
  };

  std::fprintf(stderr, "measuring memory read bandwidth...\n");
  const double bandwidth = model::MeasureReadBandwidth(&pool, std::min(*budget, 2.0));
  const double bytes_per_token = static_cast<double>(m.BytesPerDecodedToken());
  const double bound_tps = bandwidth / bytes_per_token;

  // Decode at batch 1 over a fixed context window: positions [base, base + window), then roll
  // back and repeat, so the figure does not drift with the context length. Warm up first so the
  // weights are resident.
  const int base = std::min(32, capacity / 4);
  const int window = std::min(64, capacity - base - 1);
  cache.Clear();
  run(random_tokens(base), model::LogitsMode::kLast);
  for (int i = 0; i < 2; ++i) run(random_tokens(1), model::LogitsMode::kLast);
  std::vector<double> step_times;
  const double decode_start = Now();
  while (Now() - decode_start < *budget || step_times.size() < 8) {
    if (cache.length() >= base + window) (void)cache.Truncate(base);
    double t = Now();
    run(random_tokens(1), model::LogitsMode::kLast);
    step_times.push_back(Now() - t);
  }
  const double decode_tps = 1.0 / Median(step_times);

  // Forward cost over T positions after `base` positions of context (a verification pass:
  // logits for every position).
  const std::vector<int> batch_sizes = {1, 2, 4, 5, 8, 16};
  std::vector<double> batch_seconds;
  for (int T : batch_sizes) {
    if (base + T > capacity) break;
    std::vector<double> times;
    const double start = Now();
    while ((Now() - start < *budget / 2 || times.size() < 5) && times.size() < 1000) {
      std::vector<int32_t> toks = random_tokens(T);
      (void)cache.Truncate(base);
      double t = Now();
      run(toks, model::LogitsMode::kAll);
      times.push_back(Now() - t);
    }
    batch_seconds.push_back(Median(times));
  }

  // Prefill: one chain pass over a prompt, logits for the last position only.
  const int prefill_len = std::min(128, capacity);
  std::vector<double> prefill_times;
  const double prefill_start = Now();
  while (Now() - prefill_start < *budget || prefill_times.size() < 2) {
    std::vector<int32_t> toks = random_tokens(prefill_len);
    cache.Clear();
    double t = Now();
    run(toks, model::LogitsMode::kLast);
    prefill_times.push_back(Now() - t);
    if (prefill_times.size() >= 50) break;
  }
  const double prefill_tps = prefill_len / Median(prefill_times);

  std::vector<std::string> batch_json;
  for (size_t i = 0; i < batch_seconds.size(); ++i) {
    batch_json.push_back(absl::StrFormat(
        "    {\"positions\": %d, \"seconds\": %.6e, \"relative_to_1\": %.4f}", batch_sizes[i],
        batch_seconds[i], batch_seconds[i] / batch_seconds[0]));
  }
  const std::string weight_type(model::GgmlTypeName(m.layer(0).wq.type));
  std::string json = absl::StrFormat(
      "{\n  \"model\": %s,\n  \"weight_type\": \"%s\",\n  \"parameters\": %d,\n"
      "  \"bytes_per_token\": %d,\n  \"threads\": %d,\n  \"simd\": \"%s\",\n"
      "  \"decode_context_positions\": [%d, %d],\n"
      "  \"memory_read_bandwidth_bytes_per_second\": %.6e,\n"
      "  \"bandwidth_bound_tokens_per_second\": %.3f,\n"
      "  \"decode_tokens_per_second\": %.3f,\n"
      "  \"decode_fraction_of_bound\": %.4f,\n"
      "  \"forward_cost\": [\n%s\n  ],\n"
      "  \"prefill_positions\": %d,\n  \"prefill_tokens_per_second\": %.3f\n}\n",
      JsonString(m.path()), weight_type, m.ParameterCount(), m.BytesPerDecodedToken(), pool.size(),
      std::string(model::SimdLevelName(model::ActiveSimdLevel())), base, base + window, bandwidth, bound_tps,
      decode_tps, decode_tps / bound_tps, absl::StrJoin(batch_json, ",\n"), prefill_len,
      prefill_tps);
  std::ofstream js(flags->String("json"), std::ios::trunc);
  js << json;
  if (!js) return Fail(absl::PermissionDeniedError("cannot write " + flags->String("json")));
  std::fputs(json.c_str(), stderr);
  return 0;
}

}  // namespace tandem::tools
