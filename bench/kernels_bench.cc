// Micro-benchmark of MatMul on the shapes of a 110M-parameter llama (dim 768, hidden 2048,
// 12 layers, vocab 32000) for every weight type and batch sizes T = 1..80. Reports time per call,
// achieved weight bandwidth at T=1 against the measured read bandwidth, and the cost of T rows
// relative to one. Weights are replicated past the L3 size so every call streams from DRAM, as
// in a real forward pass. Single-threaded driver; the ThreadPool does the parallel work.
//
// Usage: kernels_bench [--threads N] [--seconds S] [--json FILE] [--types f32,q8_0,...]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/model/ggml_types.h"
#include "common/model/kernels.h"
#include "common/model/thread_pool.h"

namespace tandem::model {
namespace {

struct Options {
  int threads = 2;          // pool size, including the calling thread
  double seconds = 0.25;    // measuring time per (shape, type, T)
  double bw_seconds = 1.0;  // measuring time for the read bandwidth
  std::string json_path;    // empty: no JSON
  std::vector<GgmlType> types = {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_0};
};

constexpr int kBatchSizes[] = {1, 2, 4, 5, 8, 16, 32, 80};
// Replicas of a matrix fill at least this much memory, 6x the 32 MiB L3 of the target machine.
constexpr size_t kMinStreamBytes = size_t{192} << 20;

struct Shape {
  const char* name;
  int64_t rows;
  int64_t cols;
};

// One matrix of the model, or the whole per-token sequence ("model": every MatMul of a decode
// step over distinct weights, 12 layers plus the classifier).
struct Workload {
  std::string name;
  std::vector<MatView> mats;  // called in order, one pass = one "call"
  size_t bytes_per_pass = 0;
  int64_t max_cols = 0;
  int64_t max_rows = 0;
};

struct Result {
  std::string workload;
  GgmlType type;
  size_t bytes_per_pass;
  double us[std::size(kBatchSizes)];
};

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Quantized random rows for a rows x cols matrix of type t (values ~ N(0, 0.05), like weights).
std::vector<uint8_t> RandomMatrix(GgmlType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> row(cols);
  const size_t row_bytes = RowBytes(t, cols);
  std::vector<uint8_t> out(row_bytes * rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = dist(rng);
    QuantizeRow(t, row.data(), out.data() + r * row_bytes, cols);
  }
  return out;
}

// Times `pass(T)`; returns the median seconds per pass.
template <typename F>
double TimePasses(F&& pass, double seconds, int passes_per_sample) {
  std::vector<double> samples;
  pass();  // warm-up
  const double deadline = NowSeconds() + seconds;
  do {
    const double t0 = NowSeconds();
    for (int i = 0; i < passes_per_sample; ++i) pass();
    samples.push_back((NowSeconds() - t0) / passes_per_sample);
  } while (NowSeconds() < deadline || samples.size() < 5);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

void Usage() {
  std::fprintf(stderr,
               "usage: kernels_bench [--threads N] [--seconds S] [--bw-seconds S] "
               "[--json FILE] [--types f32,f16,q8_0,q4_0]\n");
  std::exit(2);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads = std::max(1, std::atoi(value().c_str()));
    } else if (a == "--seconds") {
      o.seconds = std::atof(value().c_str());
    } else if (a == "--bw-seconds") {
      o.bw_seconds = std::atof(value().c_str());
    } else if (a == "--json") {
      o.json_path = value();
    } else if (a == "--types") {
      o.types.clear();
      std::string list = value();
      size_t start = 0;
      while (start <= list.size()) {
        const size_t end = std::min(list.find(',', start), list.size());
        const auto t = GgmlTypeFromName(list.substr(start, end - start));
        if (!t) Usage();
        o.types.push_back(*t);
        start = end + 1;
      }
    } else {
      Usage();
    }
  }
  return o;
}

int Run(const Options& opt) {
  ThreadPool pool(opt.threads);
  const double bandwidth = MeasureReadBandwidth(&pool, opt.bw_seconds);
  std::printf("simd=%s threads=%d read_bandwidth=%.2f GB/s\n",
              std::string(SimdLevelName(ActiveSimdLevel())).c_str(), opt.threads, bandwidth / 1e9);

  const Shape shapes[] = {{"768x768", 768, 768},
                          {"2048x768", 2048, 768},
                          {"768x2048", 768, 2048},
                          {"32000x768", 32000, 768}};
  std::vector<Result> results;
  for (GgmlType type : opt.types) {
    // Storage for this type: per shape, one random matrix replicated past kMinStreamBytes.
    std::vector<std::vector<uint8_t>> storage;
    std::vector<Workload> workloads;
    Workload model{"model", {}, 0, 0, 0};
    uint32_t seed = 1;
    for (const Shape& s : shapes) {
      std::vector<uint8_t> one = RandomMatrix(type, s.rows, s.cols, seed++);
      const size_t copies = std::max<size_t>(1, (kMinStreamBytes + one.size() - 1) / one.size());
      std::vector<uint8_t> many(one.size() * copies);
      for (size_t c = 0; c < copies; ++c)
        std::memcpy(many.data() + c * one.size(), one.data(), one.size());
      storage.push_back(std::move(many));
      const uint8_t* base = storage.back().data();
      Workload w{s.name, {}, one.size(), s.cols, s.rows};
      // Each pass uses the next replica; the workload's `mats` lists them all and a pass
      // picks one (see below), so successive calls never hit a cache-warm matrix.
      for (size_t c = 0; c < copies; ++c)
        w.mats.push_back({type, base + c * one.size(), s.rows, s.cols});
      workloads.push_back(std::move(w));
    }
    // The decode step: per layer wq, wk, wv, wo (768x768), w1, w3 (2048x768), w2 (768x2048),
    // then the classifier (32000x768). Distinct replicas stand in for the 12 layers' weights.
    for (int layer = 0; layer < 12; ++layer) {
      for (int k = 0; k < 4; ++k)
        model.mats.push_back(workloads[0].mats[(layer * 4 + k) % workloads[0].mats.size()]);
      for (int k = 0; k < 2; ++k)
        model.mats.push_back(workloads[1].mats[(layer * 2 + k) % workloads[1].mats.size()]);
      model.mats.push_back(workloads[2].mats[layer % workloads[2].mats.size()]);
    }
    model.mats.push_back(workloads[3].mats[0]);
    for (const MatView& m : model.mats) model.bytes_per_pass += RowBytes(m.type, m.cols) * m.rows;
    model.max_cols = 2048;
    model.max_rows = 32000;
    workloads.push_back(std::move(model));

    for (const Workload& wl : workloads) {
      const bool is_model = wl.name == "model";
      constexpr int kMaxT = *std::max_element(std::begin(kBatchSizes), std::end(kBatchSizes));
      std::vector<float> x(kMaxT * wl.max_cols), y(kMaxT * wl.max_rows);
      std::mt19937 rng(7);
      std::normal_distribution<float> dist(0.0f, 1.0f);
      for (float& v : x) v = dist(rng);
      Result res{wl.name, type, wl.bytes_per_pass, {}};
      for (size_t bi = 0; bi < std::size(kBatchSizes); ++bi) {
        const int T = kBatchSizes[bi];
        size_t next = 0;
        auto pass = [&] {
          if (is_model) {
            for (const MatView& m : wl.mats) MatMul(m, x.data(), T, y.data(), &pool);
          } else {
            MatMul(wl.mats[next], x.data(), T, y.data(), &pool);
            next = (next + 1) % wl.mats.size();
          }
        };
        const int per_sample = is_model ? 1 : 20;
        res.us[bi] = TimePasses(pass, opt.seconds, per_sample) * 1e6;
      }
      const double gbs = wl.bytes_per_pass / (res.us[0] * 1e-6) / 1e9;
      std::printf("%-5s %-10s bytes=%10zu  T1 %9.1f us %6.2f GB/s (%5.1f%% of bw)  T/T1:",
                  std::string(GgmlTypeName(type)).c_str(), wl.name.c_str(), wl.bytes_per_pass,
                  res.us[0], gbs, 100.0 * gbs * 1e9 / bandwidth);
      for (size_t bi = 1; bi < std::size(kBatchSizes); ++bi) {
        std::printf(" T%d %.2f", kBatchSizes[bi], res.us[bi] / res.us[0]);
      }
      std::printf("\n");
      std::fflush(stdout);
      results.push_back(res);
    }
  }

  if (!opt.json_path.empty()) {
    FILE* f = std::fopen(opt.json_path.c_str(), "w");
    if (f == nullptr) {
      std::perror(opt.json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"simd\": \"%s\",\n  \"threads\": %d,\n",
                 std::string(SimdLevelName(ActiveSimdLevel())).c_str(), opt.threads);
    std::fprintf(f, "  \"read_bandwidth_bytes_per_s\": %.0f,\n  \"results\": [\n", bandwidth);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      const double gbs = r.bytes_per_pass / (r.us[0] * 1e-6) / 1e9;
      std::fprintf(f,
                   "    {\"workload\": \"%s\", \"type\": \"%s\", \"weight_bytes\": %zu, "
                   "\"t1_gb_per_s\": %.3f, \"t1_fraction_of_bandwidth\": %.4f,\n     \"us\": {",
                   r.workload.c_str(), std::string(GgmlTypeName(r.type)).c_str(), r.bytes_per_pass,
                   gbs, gbs * 1e9 / bandwidth);
      for (size_t bi = 0; bi < std::size(kBatchSizes); ++bi) {
        std::fprintf(f, "%s\"%d\": %.2f", bi ? ", " : "", kBatchSizes[bi], r.us[bi]);
      }
      std::fprintf(f, "},\n     \"ratio_to_t1\": {");
      for (size_t bi = 0; bi < std::size(kBatchSizes); ++bi) {
        std::fprintf(f, "%s\"%d\": %.3f", bi ? ", " : "", kBatchSizes[bi], r.us[bi] / r.us[0]);
      }
      std::fprintf(f, "}}%s\n", i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace tandem::model

int main(int argc, char** argv) {
  return tandem::model::Run(tandem::model::ParseFlags(argc, argv));
}
