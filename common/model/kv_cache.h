// Per-sequence key/value cache for a range of layers. Memory is allocated once for a fixed
// capacity (so it is bounded and known up front) and slots are filled in order by the forward
// pass. Slot s of a chain holds position s. After a draft is rejected, Truncate rolls back; after
// a tree is verified, KeepSlots compacts the accepted path so the cache is a chain again.
// Thread-safety: not thread-safe; one sequence is owned by one engine call at a time.
#ifndef TANDEM_COMMON_MODEL_KV_CACHE_H_
#define TANDEM_COMMON_MODEL_KV_CACHE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/model.h"

namespace tandem::model {

class KvCache {
 public:
  // Holds layers [layer_begin, layer_end) of a model with `config`, for up to `capacity`
  // positions. capacity <= 0 means config.max_seq_len. InvalidArgument on a bad range,
  // ResourceExhausted when the buffer would exceed `max_bytes` (0 = no limit).
  static absl::StatusOr<KvCache> Create(const ModelConfig& config, int layer_begin, int layer_end,
                                        int capacity, uint64_t max_bytes = 0);
  // Bytes a cache with these parameters would take.
  static uint64_t BytesFor(const ModelConfig& config, int n_layers, int capacity);

  int length() const { return length_; }
  int capacity() const { return capacity_; }
  int layer_begin() const { return layer_begin_; }
  int layer_end() const { return layer_end_; }
  uint64_t MemoryBytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

  // Drops every slot at or after `length`. InvalidArgument when length > this->length() or < 0.
  absl::Status Truncate(int length);
  // Keeps only `slots` (strictly increasing, each < length()), moved down to 0..n-1, in order.
  absl::Status KeepSlots(std::span<const int32_t> slots);
  // After a pass over a tree whose root (node 0) sits at slot `base`: keeps slots [0, base] and
  // base + path[i] (node indices, strictly increasing, each >= 1), so the cache is the chain of
  // the accepted path. A path 1, 2, ..., n (a chain's prefix) moves nothing.
  absl::Status KeepPath(int base, std::span<const int32_t> path);
  void Clear() { length_ = 0; }

  // Row of kv_dim floats for absolute model layer `layer` and `slot`.
  // REQUIRES: layer_begin() <= layer < layer_end(), 0 <= slot < capacity().
  float* Key(int layer, int slot) { return keys_.data() + Offset(layer, slot); }
  float* Value(int layer, int slot) { return values_.data() + Offset(layer, slot); }
  const float* Key(int layer, int slot) const { return keys_.data() + Offset(layer, slot); }
  const float* Value(int layer, int slot) const { return values_.data() + Offset(layer, slot); }

  // Used by the forward pass after it has written `n` new slots in every layer.
  void Extend(int n) { length_ += n; }

 private:
  KvCache() = default;
  size_t Offset(int layer, int slot) const {
    return (static_cast<size_t>(layer - layer_begin_) * capacity_ + slot) * kv_dim_;
  }

  int layer_begin_ = 0;
  int layer_end_ = 0;
  int capacity_ = 0;
  int kv_dim_ = 0;
  int length_ = 0;
  std::vector<float> keys_;    // (layers, capacity, kv_dim)
  std::vector<float> values_;  // (layers, capacity, kv_dim)
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_KV_CACHE_H_
