#include "common/model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tandem::model {

uint64_t KvCache::BytesFor(const ModelConfig& config, int n_layers, int capacity) {
  return 2ull * n_layers * static_cast<uint64_t>(capacity) * config.kv_dim() * sizeof(float);
}

absl::StatusOr<KvCache> KvCache::Create(const ModelConfig& config, int layer_begin, int layer_end,
                                        int capacity, uint64_t max_bytes) {
  if (layer_begin < 0 || layer_end > config.n_layers || layer_begin >= layer_end) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache layer range [", layer_begin, ", ",
                                                   layer_end, ") is not inside [0, ",
                                                   config.n_layers, ")"));
  }
  if (capacity <= 0) capacity = config.max_seq_len;
  uint64_t bytes = BytesFor(config, layer_end - layer_begin, capacity);
  if (max_bytes > 0 && bytes > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache for ", capacity, " positions needs ",
                                                     bytes, " bytes, over the limit ", max_bytes));
  }
  KvCache c;
  c.layer_begin_ = layer_begin;
  c.layer_end_ = layer_end;
  c.capacity_ = capacity;
  c.kv_dim_ = config.kv_dim();
  size_t n = static_cast<size_t>(layer_end - layer_begin) * capacity * c.kv_dim_;
  c.keys_.assign(n, 0.0f);
  c.values_.assign(n, 0.0f);
  return c;
}

absl::Status KvCache::Truncate(int length) {
  if (length < 0 || length > length_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot truncate a KV cache of length ", length_, " to ", length));
  }
  length_ = length;
  return absl::OkStatus();
}

absl::Status KvCache::KeepSlots(std::span<const int32_t> slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || slots[i] >= length_ || (i > 0 && slots[i] <= slots[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KeepSlots: slot ", slots[i], " at index ", i,
          " is out of order or outside the cache length ", length_));
    }
  }
  const size_t row = static_cast<size_t>(kv_dim_) * sizeof(float);
  for (int layer = layer_begin_; layer < layer_end_; ++layer) {
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i] == static_cast<int32_t>(i)) continue;  // increasing => never overwrites a source
      std::memcpy(Key(layer, static_cast<int>(i)), Key(layer, slots[i]), row);
      std::memcpy(Value(layer, static_cast<int>(i)), Value(layer, slots[i]), row);
    }
  }
  length_ = static_cast<int>(slots.size());
  return absl::OkStatus();
}

absl::Status KvCache::KeepPath(int base, std::span<const int32_t> path) {
  if (base < 0 || base >= length_) {
    return absl::InvalidArgumentError(absl::StrCat("KeepPath: root slot ", base,
                                                   " is outside the cache length ", length_));
  }
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] < 1 || base + path[i] >= length_ || (i > 0 && path[i] <= path[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KeepPath: node ", path[i], " at index ", i, " is out of order or outside the cache"));
    }
  }
  const size_t row = static_cast<size_t>(kv_dim_) * sizeof(float);
  for (int layer = layer_begin_; layer < layer_end_; ++layer) {
    for (size_t i = 0; i < path.size(); ++i) {
      const int to = base + 1 + static_cast<int>(i), from = base + path[i];
      if (to == from) continue;  // increasing => never overwrites a source
      std::memcpy(Key(layer, to), Key(layer, from), row);
      std::memcpy(Value(layer, to), Value(layer, from), row);
    }
  }
  length_ = base + 1 + static_cast<int>(path.size());
  return absl::OkStatus();
}

}  // namespace tandem::model
