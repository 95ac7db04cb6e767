// MatMul dispatch (CPU feature detection, row splitting over the thread pool, per-call
// activation quantization), the portable scalar kernels, and the memory bandwidth probe.
// Compiled for baseline x86-64: ISA-specific code lives only in kernels_avx2.cc/_avx512.cc.
// Thread-safety: MatMul is reentrant; ForceSimdLevel must not race with MatMul.
#include "common/model/kernels.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "common/model/kernels_internal.h"

namespace tandem::model {
namespace ki = kernels_internal;
namespace {

// --- Portable scalar kernels -------------------------------------------------------------------

float DotF32(const float* a, const float* b, int64_t n) {
  // Four partial sums: the compiler can keep them in registers and the loop is not one long
  // dependency chain, which matters even without SIMD.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void RowsF32Scalar(const MatView& w, const float* x, const ki::QuantizedActs&, int T, ki::Segments,
                    float* y,
                   int64_t r0, int64_t r1) {
  const auto* base = static_cast<const float*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = base + r * w.cols;
    for (int t = 0; t < T; ++t) y[t * w.rows + r] = DotF32(row, x + t * w.cols, w.cols);
  }
}

void RowsF16Scalar(const MatView& w, const float* x, const ki::QuantizedActs&, int T, ki::Segments,
                    float* y,
                   int64_t r0, int64_t r1) {
  const auto* base = static_cast<const uint16_t*>(w.data);
  std::vector<float> row(w.cols);
  for (int64_t r = r0; r < r1; ++r) {
    // Convert the row once and reuse it for all T activation rows.
    for (int64_t c = 0; c < w.cols; ++c) row[c] = Fp16ToFp32(base[r * w.cols + c]);
    for (int t = 0; t < T; ++t) y[t * w.rows + r] = DotF32(row.data(), x + t * w.cols, w.cols);
  }
}

void RowsQ8_0Scalar(const MatView& w, const float* x, const ki::QuantizedActs& a, int T, ki::Segments,
                    float* y,
                    int64_t r0, int64_t r1) {
  const auto* base = static_cast<const BlockQ8_0*>(w.data);
  const int64_t nb = a.n_blocks;
  const int64_t pb = a.padded_blocks;
  for (int64_t r = r0; r < r1; ++r) {
    const BlockQ8_0* row = base + r * nb;
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = a.qs + t * pb * kQK;
      const float* xd = a.d + t * pb;
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < kQK; ++j) isum += row[b].qs[j] * xq[b * kQK + j];
        sum += Fp16ToFp32(row[b].d) * xd[b] * static_cast<float>(isum);
      }
      y[t * w.rows + r] = sum;
    }
  }
}

void RowsQ4_0Scalar(const MatView& w, const float* x, const ki::QuantizedActs& a, int T, ki::Segments,
                    float* y,
                    int64_t r0, int64_t r1) {
  const auto* base = static_cast<const BlockQ4_0*>(w.data);
  const int64_t nb = a.n_blocks;
  const int64_t pb = a.padded_blocks;
  for (int64_t r = r0; r < r1; ++r) {
    const BlockQ4_0* row = base + r * nb;
    for (int t = 0; t < T; ++t) {
      const int8_t* xq = a.qs + t * pb * kQK;
      const float* xd = a.d + t * pb;
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const int8_t* xb = xq + b * kQK;
        int32_t isum = 0;
        for (int j = 0; j < kQK / 2; ++j) {
          isum += ((row[b].qs[j] & 0x0f) - 8) * xb[j];
          isum += ((row[b].qs[j] >> 4) - 8) * xb[j + kQK / 2];
        }
        sum += Fp16ToFp32(row[b].d) * xd[b] * static_cast<float>(isum);
      }
      y[t * w.rows + r] = sum;
    }
  }
}

uint64_t StreamReadScalar(const void* data, size_t bytes, int streams) {
  streams = streams >= 4 ? 4 : (streams == 2 ? 2 : 1);
  const auto* base = static_cast<const uint8_t*>(data);
  const size_t len = bytes / streams;
  uint64_t acc[4] = {0, 0, 0, 0};
  for (size_t off = 0; off + 256 <= len; off += 256) {
    for (int k = 0; k < streams; ++k) {
      const auto* p = reinterpret_cast<const uint64_t*>(base + k * len + off);
      for (int i = 0; i < 32; i += 4) acc[k] += p[i] + p[i + 1] + p[i + 2] + p[i + 3];
    }
  }
  return acc[0] ^ acc[1] ^ acc[2] ^ acc[3];
}

// --- Dispatch ------------------------------------------------------------------------------------

SimdLevel DetectSimdLevel() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return SimdLevel::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return SimdLevel::kAvx2;
  }
#endif
  return SimdLevel::kScalar;
}

std::atomic<SimdLevel>& ActiveLevelStorage() {
  static std::atomic<SimdLevel> level{DetectedSimdLevel()};
  return level;
}

const ki::KernelSet& KernelsFor(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512:
      return ki::Avx512Kernels();
    case SimdLevel::kAvx2:
      return ki::Avx2Kernels();
    case SimdLevel::kScalar:
      break;
  }
  return ki::ScalarKernels();
}

// Scratch for quantized activations, one per calling thread. MatMul runs on the thread that owns
// the forward pass, workers only read the buffer during that call, so no locking is needed.
struct AlignedBuffer {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data;
  size_t size = 0;

  void* Get(size_t bytes) {
    if (bytes > size) {
      const size_t rounded = (bytes + 4095) & ~size_t{4095};
      data.reset(std::aligned_alloc(64, rounded));
      assert(data != nullptr);
      size = rounded;
    }
    return data.get();
  }
};

// Rows per task: enough that one task streams tens of KiB (dispatch is amortized and the
// hardware prefetcher gets long runs), yet ~4 tasks per thread so a slow thread (the machine is
// shared) does not hold everyone up.
constexpr int64_t kMinRowsPerTask = 16;
constexpr int kTasksPerThread = 4;
// Below this much weight data the whole MatMul takes about as long as waking the pool.
constexpr size_t kMinParallelBytes = 32 * 1024;

}  // namespace

namespace kernels_internal {

namespace {
size_t Align64(size_t n) { return (n + 63) & ~size_t{63}; }
int64_t PaddedBlocks(int64_t n_blocks) {
  return (n_blocks + kGroupBlocks - 1) / kGroupBlocks * kGroupBlocks;
}
}  // namespace

size_t QuantizedActsBytes(int T, int64_t n_blocks) {
  const size_t n = static_cast<size_t>(T) * PaddedBlocks(n_blocks);  // blocks in all rows
  return 2 * Align64(n * kQK) + Align64(n * sizeof(float)) + Align64(n * 8 * sizeof(int32_t)) +
         Align64(n * 2 * sizeof(int32_t)) + Align64(n * 2 * sizeof(float));
}

QuantizedActs LayoutQuantizedActs(void* scratch, int T, int64_t n_blocks) {
  QuantizedActs a;
  a.n_blocks = n_blocks;
  a.padded_blocks = PaddedBlocks(n_blocks);
  const size_t n = static_cast<size_t>(T) * a.padded_blocks;
  auto* p = static_cast<uint8_t*>(scratch);
  auto take = [&p](size_t bytes) {
    uint8_t* q = p;
    p += Align64(bytes);
    return q;
  };
  a.qs = reinterpret_cast<int8_t*>(take(n * kQK));
  a.d = reinterpret_cast<float*>(take(n * sizeof(float)));
  a.corr = reinterpret_cast<int32_t*>(take(n * 8 * sizeof(int32_t)));
  a.xt = reinterpret_cast<int8_t*>(take(n * kQK));
  a.xt_corr = reinterpret_cast<int32_t*>(take(n * 2 * sizeof(int32_t)));
  a.xt_d = reinterpret_cast<float*>(take(n * 2 * sizeof(float)));
  return a;
}

void QuantizeActsScalar(const float* x, int T, int offset, QuantizedActs* a) {
  const int64_t nb = a->n_blocks;
  const int64_t pb = a->padded_blocks;
  for (int t = 0; t < T; ++t) {
    for (int64_t b = 0; b < pb; ++b) {
      BlockQ8_0 blk{};
      if (b < nb) QuantizeRow(GgmlType::kQ8_0, x + (t * nb + b) * kQK, &blk, kQK);
      const int64_t i = t * pb + b;
      std::memcpy(a->qs + i * kQK, blk.qs, kQK);
      a->d[i] = Fp16ToFp32(blk.d);
      for (int g = 0; g < 8; ++g) {
        const int8_t* q = blk.qs + 4 * g;
        a->corr[i * 8 + g] = -offset * (q[0] + q[1] + q[2] + q[3]);
      }
    }
  }
}

const KernelSet& ScalarKernels() {
  static const KernelSet kSet = {RowsF32Scalar,  RowsF16Scalar,      RowsQ8_0Scalar,
                                 RowsQ4_0Scalar, QuantizeActsScalar, StreamReadScalar};
  return kSet;
}

}  // namespace kernels_internal

SimdLevel DetectedSimdLevel() {
  static const SimdLevel kLevel = DetectSimdLevel();
  return kLevel;
}

std::string_view SimdLevelName(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "scalar";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

void ForceSimdLevel(SimdLevel level) {
  ActiveLevelStorage().store(std::min(level, DetectedSimdLevel()));
}

SimdLevel ActiveSimdLevel() { return ActiveLevelStorage().load(std::memory_order_relaxed); }

void MatMul(const MatView& w, const float* x, int T, float* y, ThreadPool* pool,
            std::span<const int32_t> segments) {
  MatMulMany(std::span<const MatView>(&w, 1), x, T, std::span<float* const>(&y, 1), pool,
             segments);
}

void MatMulMany(std::span<const MatView> ws, const float* x, int T, std::span<float* const> ys,
                ThreadPool* pool, std::span<const int32_t> segments) {
  assert(T >= 1);
  // A single segment is the whole batch.
  const ki::Segments segs{segments.data(),
                          segments.size() > 1 ? static_cast<int>(segments.size()) : 0};
  assert(ws.size() == ys.size());
  const ki::KernelSet& k = KernelsFor(ActiveSimdLevel());

  // Activations quantized once per weight encoding they meet: index 0 for Q8_0, 1 for Q4_0.
  // Scratch is per calling thread; workers only read it during this call.
  thread_local AlignedBuffer scratch[2];
  ki::QuantizedActs acts[2];
  bool quantized[2] = {false, false};
  // One unit of parallel work: rows [r0, r1) of product `m`. The lists are reused across calls;
  // workers must see the caller's lists, hence the references (a thread_local named inside the
  // lambda would be the worker's own).
  struct Task {
    int m;
    int64_t r0, r1;
  };
  struct Product {
    ki::RowsFn rows_fn;
    const ki::QuantizedActs* acts;
  };
  thread_local std::vector<Task> task_storage;
  thread_local std::vector<Product> product_storage;
  std::vector<Task>& tasks = task_storage;
  std::vector<Product>& products = product_storage;
  tasks.clear();
  products.assign(ws.size(), Product{});

  const int n_threads = pool != nullptr ? pool->size() : 1;
  size_t total_bytes = 0;
  for (const MatView& w : ws) total_bytes += RowBytes(w.type, w.cols) * static_cast<size_t>(w.rows);
  // Bytes per task: the set split into about kTasksPerThread tasks per thread.
  const size_t task_bytes = total_bytes / (static_cast<size_t>(n_threads) * kTasksPerThread) + 1;
  const bool parallel = n_threads > 1 && total_bytes >= kMinParallelBytes;

  for (size_t i = 0; i < ws.size(); ++i) {
    const MatView& w = ws[i];
    assert(w.cols == ws[0].cols);
    assert(w.cols % BlockElements(w.type) == 0);
    if (w.rows <= 0) continue;  // no tasks, so products[i] is never read
    ki::QuantizedActs* a = &acts[0];  // unused for F32 / F16
    switch (w.type) {
      case GgmlType::kF32:
        products[i].rows_fn = k.f32;
        break;
      case GgmlType::kF16:
        products[i].rows_fn = k.f16;
        break;
      case GgmlType::kQ8_0:
      case GgmlType::kQ4_0: {
        const bool q8 = w.type == GgmlType::kQ8_0;
        products[i].rows_fn = q8 ? k.q8_0 : k.q4_0;
        const int slot = q8 ? 0 : 1;
        a = &acts[slot];
        if (!quantized[slot]) {
          const int64_t nb = w.cols / kQK;
          *a = ki::LayoutQuantizedActs(scratch[slot].Get(ki::QuantizedActsBytes(T, nb)), T, nb);
          k.quantize_acts(x, T, q8 ? ki::kQ8_0Offset : ki::kQ4_0Offset, a);
          quantized[slot] = true;
        }
        break;
      }
    }
    products[i].acts = a;
    if (!parallel || w.rows < 2 * kMinRowsPerTask) {
      tasks.push_back({static_cast<int>(i), 0, w.rows});
      continue;
    }
    // Whole multiples of 4 rows (the kernels work on row pairs), at least kMinRowsPerTask.
    const size_t row_bytes = RowBytes(w.type, w.cols);
    int64_t rows_per_task = static_cast<int64_t>((task_bytes + row_bytes - 1) / row_bytes);
    rows_per_task = std::max(kMinRowsPerTask, (rows_per_task + 3) & ~int64_t{3});
    for (int64_t r0 = 0; r0 < w.rows; r0 += rows_per_task) {
      tasks.push_back({static_cast<int>(i), r0, std::min(w.rows, r0 + rows_per_task)});
    }
  }

  auto run = [&](int64_t task, int) {
    const Task& t = tasks[task];
    products[t.m].rows_fn(ws[t.m], x, *products[t.m].acts, T, segs, ys[t.m], t.r0, t.r1);
  };
  if (!parallel || tasks.size() == 1) {
    for (size_t i = 0; i < tasks.size(); ++i) run(static_cast<int64_t>(i), 0);
    return;
  }
  pool->ParallelFor(static_cast<int64_t>(tasks.size()), run);
}

double MeasureReadBandwidth(ThreadPool* pool, double seconds) {
  // 256 MiB: eight times the L3 of the machines we target, so caches cannot help.
  constexpr size_t kBytes = size_t{256} << 20;
  const int n_threads = pool != nullptr ? pool->size() : 1;
  const ki::StreamReadFn read = KernelsFor(ActiveSimdLevel()).stream_read;
  std::unique_ptr<void, AlignedBuffer::Free> buf(std::aligned_alloc(4096, kBytes));
  if (buf == nullptr) return 0.0;
  // Fault the pages in with real data (untouched pages would all map the shared zero page).
  std::memset(buf.get(), 1, kBytes);

  const size_t slice = (kBytes / n_threads) & ~size_t{1023};  // 4 streams x 256 bytes
  std::atomic<uint64_t> sink{0};
  int streams = 1;
  auto pass = [&] {
    auto body = [&](int64_t task, int) {
      const uint8_t* p = static_cast<const uint8_t*>(buf.get()) + task * slice;
      sink.fetch_xor(read(p, slice, streams), std::memory_order_relaxed);
    };
    if (pool != nullptr) {
      pool->ParallelFor(n_threads, body);
    } else {
      body(0, 0);
    }
  };
  pass();  // warm-up: TLB, page tables, wake the workers
  double best = 0.0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(std::max(seconds, 0.0));
  // Try 1, 2 and 4 concurrent streams per thread in turn and keep the best: the bound must be
  // what the memory system can deliver, and kernels that walk several rows at once get more
  // than a single stream per core does.
  constexpr int kStreams[] = {1, 2, 4};
  int runs = 0;
  do {
    streams = kStreams[runs % 3];
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(slice) * n_threads / dt);
    ++runs;
  } while (runs < 6 || std::chrono::steady_clock::now() < deadline);
  if (sink.load() == 0x5eed) best += 1e-9;  // keeps `sink` observable
  return best;
}

}  // namespace tandem::model
