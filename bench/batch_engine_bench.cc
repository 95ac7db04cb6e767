// The engine alone: what batching across sessions can give on this CPU. N sessions, each with a
// prefilled context, verify a chain of `rows` positions (the last committed token and gamma
// drafts) per round; the rounds run either one session per forward pass (Engine::Forward, as
// unbatched verification does) or all N in one Engine::ForwardBatch. Positions per second of both,
// same process, same caches, interleaved repetitions:
//
//   batch_engine_bench --model FILE [--threads 2] [--sessions 1,4,16,64] [--rows 5]
//                      [--context 64] [--reps 5] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/model/engine.h"
#include "common/model/model.h"

namespace {

using tandem::model::BatchItem;
using tandem::model::Engine;
using tandem::model::ForwardRequest;
using tandem::model::ForwardResult;
using tandem::model::KvCache;
using tandem::model::Model;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string Arg(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return def;
}

int IntArg(int argc, char** argv, const std::string& name, int def) {
  int v = def;
  const std::string s = Arg(argc, argv, name, "");
  if (!s.empty() && (!absl::SimpleAtoi(s, &v) || v < 1)) {
    std::fprintf(stderr, "--%s must be a positive integer, got '%s'\n", name.c_str(), s.c_str());
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = Arg(argc, argv, "model", "");
  if (path.empty()) {
    std::fprintf(stderr, "usage: batch_engine_bench --model FILE [--threads N] [--sessions 1,4,16] "
                         "[--rows 5] [--context 64] [--reps 5] [--json FILE]\n");
    return 2;
  }
  const int threads = IntArg(argc, argv, "threads", 2);
  const int rows = IntArg(argc, argv, "rows", 5);
  const int context = IntArg(argc, argv, "context", 64);
  const int reps = IntArg(argc, argv, "reps", 5);
  std::vector<int> sessions_list;
  for (absl::string_view s : absl::StrSplit(Arg(argc, argv, "sessions", "1,4,16,64"), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1) {
      std::fprintf(stderr, "--sessions takes positive integers separated by commas\n");
      return 2;
    }
    sessions_list.push_back(n);
  }
  tandem::model::ModelLoadOptions lo;
  lo.path = path;
  auto model = Model::Load(lo);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const auto& c = (*model)->config();
  if (context + rows > c.max_seq_len) {
    std::fprintf(stderr, "--context + --rows exceed the model's %d positions\n", c.max_seq_len);
    return 2;
  }
  tandem::model::ThreadPool pool(threads);
  Engine engine(**model, &pool);
  std::string json = "{\"model\": \"" + path + "\", \"threads\": " + std::to_string(threads) +
                     ", \"rows_per_session\": " + std::to_string(rows) + ", \"rows\": [";
  std::printf("%8s %14s %14s %8s\n", "sessions", "alone pos/s", "batched pos/s", "speedup");
  for (size_t si = 0; si < sessions_list.size(); ++si) {
    const int n = sessions_list[si];
    std::vector<KvCache> caches;
    std::vector<int32_t> prompt(context), round(rows);
    for (int i = 0; i < n; ++i) {
      caches.push_back(*KvCache::Create(c, 0, c.n_layers, context + rows));
      for (int t = 0; t < context; ++t) prompt[t] = (7 * t + 13 * i + 1) % c.vocab_size;
      ForwardRequest r;
      r.tokens = prompt;
      r.logits = tandem::model::LogitsMode::kNone;
      ForwardResult out;
      if (!engine.Forward(r, &caches.back(), &out).ok()) return 1;
    }
    for (int t = 0; t < rows; ++t) round[t] = (31 * t + 5) % c.vocab_size;
    std::vector<ForwardResult> results(n);
    std::vector<BatchItem> items(n);
    for (int i = 0; i < n; ++i) {
      items[i].request.tokens = round;
      items[i].cache = &caches[i];
      items[i].result = &results[i];
    }
    double best_alone = 1e30, best_batched = 1e30;
    for (int rep = 0; rep < reps; ++rep) {
      double t0 = Now();
      for (int i = 0; i < n; ++i) {
        if (!engine.Forward(items[i].request, &caches[i], &results[i]).ok()) return 1;
        (void)caches[i].Truncate(context);
      }
      best_alone = std::min(best_alone, Now() - t0);
      t0 = Now();
      engine.ForwardBatch(items);
      best_batched = std::min(best_batched, Now() - t0);
      for (int i = 0; i < n; ++i) {
        if (!items[i].status.ok()) return 1;
        (void)caches[i].Truncate(context);
      }
    }
    const double positions = static_cast<double>(n) * rows;
    const double alone = positions / best_alone, batched = positions / best_batched;
    std::printf("%8d %14.0f %14.0f %8.2f\n", n, alone, batched, batched / alone);
    json += std::string(si ? ", " : "") + "{\"sessions\": " + std::to_string(n) +
            ", \"alone_positions_per_s\": " + std::to_string(alone) +
            ", \"batched_positions_per_s\": " + std::to_string(batched) +
            ", \"alone_pass_ms\": " + std::to_string(best_alone * 1e3 / n) +
            ", \"batched_pass_ms\": " + std::to_string(best_batched * 1e3) + "}";
  }
  json += "]}\n";
  const std::string out = Arg(argc, argv, "json", "");
  if (!out.empty()) std::ofstream(out) << json;
  return 0;
}
