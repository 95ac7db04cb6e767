// The forward pass: one entry point that runs layers [a, b) of a model over a batch of T
// positions, for every use Tandem has. Decoding is T = 1; prefill is a chain of T prompt tokens;
// chain verification is a chain of draft tokens; tree verification passes parent indices; the
// edge/cloud split runs [0, k) on one side (tokens in, hidden states out) and [k, N) on the other
// (hidden states in, logits out); an early-exit draft runs [0, k) and applies the final head.
//
// Attention mask: batch item i sees every slot already in the cache plus its own ancestors in the
// batch (itself, parents[i], parents[parents[i]], ...). Item i sits at position
// cache.length() + depth(i). New keys/values go to slots cache.length() + i.
//
// Thread-safety: an Engine holds scratch buffers and is used by one thread at a time. Several
// Engines may share one const Model. The ThreadPool must not be used by anyone else during a call.
#ifndef TANDEM_COMMON_MODEL_ENGINE_H_
#define TANDEM_COMMON_MODEL_ENGINE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/model/kv_cache.h"
#include "common/model/model.h"
#include "common/model/thread_pool.h"

namespace tandem::model {

enum class LogitsMode {
  kAll,   // logits for every batch row (verification)
  kLast,  // logits for the last row only (prefill, decoding)
  kNone,  // no head: return the final hidden states (pre-norm) even after the last layer
};

struct ForwardRequest {
  int layer_begin = 0;
  int layer_end = -1;  // -1: the model's last layer
  // Input: token ids when layer_begin == 0 ...
  std::span<const int32_t> tokens;
  // ... or hidden states, T rows of config.dim floats, when layer_begin > 0.
  std::span<const float> hidden;
  // Empty: a causal chain. Otherwise parents[i] in [-1, i); -1 attaches item i to the cache.
  std::span<const int32_t> parents;
  // What to return when the pass ends at the last layer (or early_exit is set).
  LogitsMode logits = LogitsMode::kAll;
  // Apply the final norm and classifier after layer_end even when it is not the last layer
  // (the early-exit draft).
  bool early_exit = false;
  // Also return the hidden states after layer_end (pre-norm, all T rows) in
  // ForwardResult::hidden when the result is logits: what an EAGLE-style draft head reads.
  bool return_hidden = false;
};

struct ForwardResult {
  bool is_logits = false;  // logits (cols = vocab) or hidden states (cols = dim)
  int rows = 0;
  int cols = 0;
  std::vector<float> data;  // rows x cols, row-major
  std::vector<float> hidden;  // with return_hidden and logits: T x dim, else empty
  std::span<const float> Row(int r) const {
    return {data.data() + static_cast<size_t>(r) * cols, static_cast<size_t>(cols)};
  }
};

// One sequence's share of a batched pass (Engine::ForwardBatch).
struct BatchItem {
  ForwardRequest request;
  KvCache* cache = nullptr;
  ForwardResult* result = nullptr;
  absl::Status status;  // set by ForwardBatch: whether this item ran
};

class Engine {
 public:
  // `model` must outlive the engine; `pool` may be null (one thread).
  Engine(const Model& model, ThreadPool* pool);

  // Runs the request against `cache`, which must hold exactly the layers the request runs, and
  // appends T slots to it. Errors (nothing is modified): InvalidArgument for token ids outside
  // the vocabulary, a malformed parent list, hidden states of the wrong size or not finite, or a
  // cache for other layers; ResourceExhausted when the cache lacks room for T more positions.
  absl::Status Forward(const ForwardRequest& request, KvCache* cache, ForwardResult* result);

  // Several sequences in one pass (batching across sessions): their rows go through each matrix
  // together, so every weight is read once for all of them, while each keeps its own cache,
  // positions and mask (chain or tree). Each item gets exactly the result, bit for bit, that
  // Forward would give it alone. Items may enter at different layers (a split session at its
  // layer k) but must end at the same one. An item that Forward would refuse gets that error in
  // its status, changes nothing, and does not affect the others; an item ending at another layer
  // than the first valid one gets InvalidArgument.
  void ForwardBatch(std::span<BatchItem> items);

  // Final RMSNorm + classifier over T rows of hidden states (dim wide) into T x vocab logits.
  // `segments` as in MatMul (rows of separate sequences, each as if alone).
  void Head(const float* hidden, int T, float* logits, std::span<const int32_t> segments = {});

  const Model& model() const { return model_; }
  ThreadPool* pool() const { return pool_; }

 private:
  void RmsNorm(const float* x, const float* weight, int T, float* out) const;
  // A valid item of the batch being run.
  struct Plan {
    int item = 0;      // index in the caller's span
    int begin = 0;     // first layer
    int T = 0;         // rows
    int row0 = 0;      // first row in the batch
    int base = 0;      // cache length before the pass
    bool chain = true;
    int head_rows = 0;  // rows that get logits
    std::vector<std::vector<int32_t>> visible;  // tree only: batch ancestors of each row
  };
  // Checks `item` as Forward documents and fills `plan` (rows, mask) and positions_ from row
  // `row0`.
  absl::Status MakePlan(const BatchItem& item, int row0, Plan* plan);
  void Rope(float* vec, int n_heads, int T) const;  // uses rope_cos_/rope_sin_
  // Attention for the rows of plans_[0, n_plans) at `layer`.
  void Attention(int layer, std::span<BatchItem> items, int n_plans);

  const Model& model_;
  ThreadPool* pool_;
  // Scratch, reused across calls.
  std::vector<float> x_, xb_, q_, k_, v_, att_, hb_, hb2_;
  std::vector<int32_t> positions_;
  std::vector<float> rope_cos_, rope_sin_, inv_freq_;
  std::vector<Plan> plans_;           // valid items, by first layer; reused across calls
  std::vector<int32_t> row_plan_;     // plan of each row
  std::vector<int32_t> segments_;     // rows per plan
  std::vector<int32_t> head_segments_;
  std::vector<float> head_x_, logits_;
  std::vector<std::vector<float>> scores_;     // per pool thread
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_ENGINE_H_
