// The llama forward pass over a layer range and a batch (see engine.h). Matrix products go
// through MatMul, which reads each weight once for the whole batch; the rest (norms, RoPE,
// attention, SwiGLU) is plain float code that follows llama2.c's arithmetic.
#include "common/model/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/model/vec_ops.h"

namespace tandem::model {
namespace {

void Resize(std::vector<float>* v, size_t n) {
  if (v->size() < n) v->resize(n);
}

}  // namespace

Engine::Engine(const Model& model, ThreadPool* pool) : model_(model), pool_(pool) {
  const ModelConfig& c = model_.config();
  // Inverse RoPE frequencies, computed as llama2.c does: 1 / theta^(i / rope_dim), i even.
  inv_freq_.resize(c.rope_dim / 2);
  for (int p = 0; p < c.rope_dim / 2; ++p) {
    inv_freq_[p] = 1.0f / powf(c.rope_theta, static_cast<float>(2 * p) / static_cast<float>(c.rope_dim));
  }
  scores_.resize(pool_ ? pool_->size() : 1);
}

void Engine::RmsNorm(const float* x, const float* weight, int T, float* out) const {
  const int dim = model_.config().dim;
  const float eps = model_.config().norm_eps;
  for (int t = 0; t < T; ++t) {
    const float* xi = x + static_cast<size_t>(t) * dim;
    float* o = out + static_cast<size_t>(t) * dim;
    float ss = 0.0f;
    for (int j = 0; j < dim; ++j) ss += xi[j] * xi[j];
    ss /= static_cast<float>(dim);
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < dim; ++j) o[j] = weight[j] * (ss * xi[j]);
  }
}

void Engine::Rope(float* vec, int n_heads, int T) const {
  const ModelConfig& c = model_.config();
  const int half = c.rope_dim / 2;
  for (int t = 0; t < T; ++t) {
    const float* cs = rope_cos_.data() + static_cast<size_t>(t) * half;
    const float* sn = rope_sin_.data() + static_cast<size_t>(t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = vec + (static_cast<size_t>(t) * n_heads + h) * c.head_dim;
      // Adjacent pairs (v[2p], v[2p+1]) rotate by pos * inv_freq[p], as in llama2.c and
      // llama.cpp's "normal" RoPE for the llama architecture.
      for (int p = 0; p < half; ++p) {
        float v0 = v[2 * p], v1 = v[2 * p + 1];
        v[2 * p] = v0 * cs[p] - v1 * sn[p];
        v[2 * p + 1] = v0 * sn[p] + v1 * cs[p];
      }
    }
  }
}

void Engine::Attention(int layer, std::span<BatchItem> items, int n_plans) {
  const ModelConfig& c = model_.config();
  const int hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  int rows = 0, longest = 0;
  int64_t work = 0;
  for (int p = 0; p < n_plans; ++p) {
    const Plan& plan = plans_[p];
    rows += plan.T;
    longest = std::max(longest, plan.base + plan.T);
    work += static_cast<int64_t>(plan.T) * (plan.base + plan.T);
  }
  for (auto& s : scores_) Resize(&s, static_cast<size_t>(longest));

  const VecOps& ops = ActiveVecOps();
  auto task = [&](int64_t job, int thread) {
    const int row = static_cast<int>(job / c.n_heads);
    const int h = static_cast<int>(job % c.n_heads);
    const Plan& plan = plans_[row_plan_[row]];
    const KvCache& cache = *items[plan.item].cache;
    const int base = plan.base;
    const int i = row - plan.row0;  // the row's index in its sequence's batch
    const int kvh = h / group;
    const float* q = q_.data() + (static_cast<size_t>(row) * c.n_heads + h) * hd;
    float* out = att_.data() + (static_cast<size_t>(row) * c.n_heads + h) * hd;
    float* sc = scores_[thread].data();
    // Visible slots: the whole cached prefix, then the row's ancestors in its batch.
    const int n_batch = plan.chain ? i + 1 : static_cast<int>(plan.visible[i].size());
    const int n = base + n_batch;
    auto slot_of = [&](int s) {
      return s < base ? s : base + (plan.chain ? s - base : plan.visible[i][s - base]);
    };
    float max_score = -INFINITY;
    for (int s = 0; s < n; ++s) {
      sc[s] = ops.dot(q, cache.Key(layer, slot_of(s)) + kvh * hd, hd) * scale;
      max_score = std::max(max_score, sc[s]);
    }
    const float inv = 1.0f / ops.exp_shift_sum(sc, max_score, n);
    std::fill(out, out + hd, 0.0f);
    for (int s = 0; s < n; ++s) {
      ops.axpy(sc[s] * inv, cache.Value(layer, slot_of(s)) + kvh * hd, out, hd);
    }
  };
  // Each job reads about (base + T) keys and values of hd floats; thread only when the work
  // outweighs a pool dispatch (a few microseconds).
  const int64_t jobs = static_cast<int64_t>(rows) * c.n_heads;
  work *= static_cast<int64_t>(c.n_heads) * hd;
  if (pool_ != nullptr && pool_->size() > 1 && jobs > 1 && work > (1 << 16)) {
    pool_->ParallelFor(jobs, task);
  } else {
    for (int64_t j = 0; j < jobs; ++j) task(j, 0);
  }
}

void Engine::Head(const float* hidden, int T, float* logits, std::span<const int32_t> segments) {
  const ModelConfig& c = model_.config();
  Resize(&xb_, static_cast<size_t>(T) * c.dim);
  RmsNorm(hidden, model_.output_norm(), T, xb_.data());
  MatMul(model_.classifier(), xb_.data(), T, logits, pool_, segments);
}

absl::Status Engine::MakePlan(const BatchItem& item, int row0, Plan* plan) {
  const ModelConfig& c = model_.config();
  const ForwardRequest& req = item.request;
  const KvCache* cache = item.cache;
  const int a = req.layer_begin;
  const int b = req.layer_end < 0 ? c.n_layers : req.layer_end;
  if (cache == nullptr || item.result == nullptr) {
    return absl::InvalidArgumentError("a batch item needs a cache and a result");
  }
  if (a < 0 || b > c.n_layers || a >= b) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer range [", a, ", ", b, ") is not inside [0, ", c.n_layers, ")"));
  }
  if (cache->layer_begin() != a || cache->layer_end() != b) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache holds layers [", cache->layer_begin(), ", ", cache->layer_end(),
        ") but the request runs [", a, ", ", b, ")"));
  }
  // Batch size and input.
  int T = 0;
  if (a == 0) {
    if (!req.hidden.empty()) return absl::InvalidArgumentError("layer 0 takes token ids, not hidden states");
    T = static_cast<int>(req.tokens.size());
    for (int i = 0; i < T; ++i) {
      if (req.tokens[i] < 0 || req.tokens[i] >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", req.tokens[i], " at batch index ",
                                                       i, " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
    }
  } else {
    if (!req.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("layer ", a, " takes hidden states, not token ids"));
    if (req.hidden.size() % c.dim != 0) {
      return absl::InvalidArgumentError(absl::StrCat("hidden states hold ", req.hidden.size(),
                                                     " floats, not a multiple of dim ", c.dim));
    }
    T = static_cast<int>(req.hidden.size() / c.dim);
    for (size_t j = 0; j < req.hidden.size(); ++j) {
      if (!std::isfinite(req.hidden[j])) {
        return absl::InvalidArgumentError(absl::StrCat("hidden state value ", j, " of row ",
                                                       j / c.dim, " is not finite"));
      }
    }
  }
  if (T == 0) return absl::InvalidArgumentError("empty batch");
  const int base = cache->length();
  if (T > cache->capacity() - base) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", base, " of ",
                                                     cache->capacity(), " positions used, ", T,
                                                     " more requested"));
  }
  // Mask and positions.
  bool chain = true;
  if (!req.parents.empty()) {
    if (static_cast<int>(req.parents.size()) != T) {
      return absl::InvalidArgumentError(absl::StrCat("parents has ", req.parents.size(),
                                                     " entries for a batch of ", T));
    }
    for (int i = 0; i < T; ++i) {
      int p = req.parents[i];
      if (p < -1 || p >= i) {
        return absl::InvalidArgumentError(absl::StrCat("parents[", i, "] = ", p,
                                                       " must be -1 or an earlier batch index"));
      }
      if (p != i - 1) chain = false;
    }
  }
  plan->begin = a;
  plan->T = T;
  plan->row0 = row0;
  plan->base = base;
  plan->chain = chain;
  const bool head = (b == c.n_layers || req.early_exit) && req.logits != LogitsMode::kNone;
  plan->head_rows = !head ? 0 : req.logits == LogitsMode::kLast ? 1 : T;
  if (positions_.size() < static_cast<size_t>(row0 + T)) positions_.resize(row0 + T);
  int32_t* positions = positions_.data() + row0;
  if (chain) {
    for (int i = 0; i < T; ++i) positions[i] = base + i;
  } else {
    if (plan->visible.size() < static_cast<size_t>(T)) plan->visible.resize(T);
    for (int i = 0; i < T; ++i) {
      int p = req.parents[i];
      std::vector<int32_t>& vis = plan->visible[i];
      vis.clear();
      if (p >= 0) vis = plan->visible[p];  // ancestors of the parent, ascending
      vis.push_back(i);
      positions[i] = base + static_cast<int>(vis.size()) - 1;
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::Forward(const ForwardRequest& req, KvCache* cache, ForwardResult* result) {
  BatchItem item{req, cache, result, absl::OkStatus()};
  ForwardBatch(std::span<BatchItem>(&item, 1));
  return item.status;
}

void Engine::ForwardBatch(std::span<BatchItem> items) {
  const ModelConfig& c = model_.config();
  // Plans for the valid items, rows assigned in item order for now.
  int n_plans = 0, rows = 0, end = -1;
  for (size_t k = 0; k < items.size(); ++k) {
    BatchItem& item = items[k];
    if (plans_.size() <= static_cast<size_t>(n_plans)) plans_.resize(n_plans + 1);
    Plan& plan = plans_[n_plans];
    item.status = MakePlan(item, rows, &plan);
    if (!item.status.ok()) continue;
    const int b = item.request.layer_end < 0 ? c.n_layers : item.request.layer_end;
    if (end >= 0 && b != end) {
      item.status = absl::InvalidArgumentError(absl::StrCat(
          "a batch ends at one layer: this item ends at ", b, ", the batch at ", end));
      continue;
    }
    end = b;
    plan.item = static_cast<int>(k);
    rows += plan.T;
    ++n_plans;
  }
  if (n_plans == 0) return;
  // Items that enter later come last, so the rows active at each layer are a prefix. Positions
  // move with their rows.
  bool sorted = true;
  for (int p = 1; p < n_plans; ++p) sorted = sorted && plans_[p - 1].begin <= plans_[p].begin;
  if (!sorted) {
    std::vector<int32_t> positions(positions_.begin(), positions_.begin() + rows);
    std::stable_sort(plans_.begin(), plans_.begin() + n_plans,
                     [](const Plan& x, const Plan& y) { return x.begin < y.begin; });
    int row = 0;
    for (int p = 0; p < n_plans; ++p) {
      std::copy(positions.begin() + plans_[p].row0, positions.begin() + plans_[p].row0 + plans_[p].T,
                positions_.begin() + row);
      plans_[p].row0 = row;
      row += plans_[p].T;
    }
  }
  row_plan_.resize(rows);
  segments_.resize(n_plans);
  for (int p = 0; p < n_plans; ++p) {
    segments_[p] = plans_[p].T;
    std::fill(row_plan_.begin() + plans_[p].row0, row_plan_.begin() + plans_[p].row0 + plans_[p].T, p);
  }

  // RoPE tables for the batch's positions.
  const int half = c.rope_dim / 2;
  Resize(&rope_cos_, static_cast<size_t>(rows) * half);
  Resize(&rope_sin_, static_cast<size_t>(rows) * half);
  for (int i = 0; i < rows; ++i) {
    for (int p = 0; p < half; ++p) {
      float angle = static_cast<float>(positions_[i]) * inv_freq_[p];
      rope_cos_[static_cast<size_t>(i) * half + p] = cosf(angle);
      rope_sin_[static_cast<size_t>(i) * half + p] = sinf(angle);
    }
  }

  const size_t Td = static_cast<size_t>(rows);
  Resize(&x_, Td * c.dim);
  Resize(&xb_, Td * std::max(c.dim, c.q_dim()));
  Resize(&q_, Td * c.q_dim());
  Resize(&k_, Td * c.kv_dim());
  Resize(&v_, Td * c.kv_dim());
  Resize(&att_, Td * c.q_dim());
  Resize(&hb_, Td * c.hidden_dim);
  Resize(&hb2_, Td * c.hidden_dim);
  float* x = x_.data();
  for (int p = 0; p < n_plans; ++p) {
    const Plan& plan = plans_[p];
    const ForwardRequest& req = items[plan.item].request;
    float* xp = x + static_cast<size_t>(plan.row0) * c.dim;
    if (plan.begin == 0) {
      const MatView& emb = model_.token_embedding();
      const size_t row_bytes = RowBytes(emb.type, c.dim);
      for (int i = 0; i < plan.T; ++i) {
        DequantizeRow(emb.type, static_cast<const uint8_t*>(emb.data) + row_bytes * req.tokens[i],
                      xp + static_cast<size_t>(i) * c.dim, c.dim);
      }
    } else {
      std::memcpy(xp, req.hidden.data(), static_cast<size_t>(plan.T) * c.dim * sizeof(float));
    }
  }

  int active = 0;  // plans whose rows run at this layer: a prefix
  for (int l = plans_[0].begin; l < end; ++l) {
    while (active < n_plans && plans_[active].begin <= l) ++active;
    const int T = plans_[active - 1].row0 + plans_[active - 1].T;
    const size_t Tn = static_cast<size_t>(T);
    const std::span<const int32_t> segs(segments_.data(), active);
    const LayerWeights& w = model_.layer(l);
    // Attention block: x += Wo · attn(RoPE(Wq·n(x)), RoPE(Wk·n(x)), Wv·n(x)).
    RmsNorm(x, w.attn_norm, T, xb_.data());
    // Q, K and V share their input: one fused MatMulMany quantizes it once and dispatches once.
    const MatView qkv[] = {w.wq, w.wk, w.wv};
    float* const qkv_out[] = {q_.data(), k_.data(), v_.data()};
    MatMulMany(qkv, xb_.data(), T, qkv_out, pool_, segs);
    Rope(q_.data(), c.n_heads, T);
    Rope(k_.data(), c.n_kv_heads, T);
    for (int p = 0; p < active; ++p) {
      const Plan& plan = plans_[p];
      KvCache* cache = items[plan.item].cache;
      for (int i = 0; i < plan.T; ++i) {
        const size_t row = static_cast<size_t>(plan.row0 + i);
        std::memcpy(cache->Key(l, plan.base + i), k_.data() + row * c.kv_dim(),
                    c.kv_dim() * sizeof(float));
        std::memcpy(cache->Value(l, plan.base + i), v_.data() + row * c.kv_dim(),
                    c.kv_dim() * sizeof(float));
      }
    }
    Attention(l, items, active);
    MatMul(w.wo, att_.data(), T, xb_.data(), pool_, segs);
    for (size_t j = 0; j < Tn * c.dim; ++j) x[j] += xb_[j];

    // Feed-forward block: x += W2 · (silu(W1·n(x)) * W3·n(x)).
    RmsNorm(x, w.ffn_norm, T, xb_.data());
    const MatView up[] = {w.w1, w.w3};
    float* const up_out[] = {hb_.data(), hb2_.data()};
    MatMulMany(up, xb_.data(), T, up_out, pool_, segs);
    ActiveVecOps().swiglu(hb_.data(), hb2_.data(), static_cast<int64_t>(Tn) * c.hidden_dim);
    MatMul(w.w2, hb_.data(), T, xb_.data(), pool_, segs);
    for (size_t j = 0; j < Tn * c.dim; ++j) x[j] += xb_[j];
  }

  // Results. The head runs once over every row that wants logits.
  int head_rows = 0;
  head_segments_.clear();
  for (int p = 0; p < n_plans; ++p) {
    const Plan& plan = plans_[p];
    BatchItem& item = items[plan.item];
    item.cache->Extend(plan.T);
    const float* xp = x + static_cast<size_t>(plan.row0) * c.dim;
    ForwardResult* result = item.result;
    result->is_logits = plan.head_rows > 0;
    if (plan.head_rows > 0 && item.request.return_hidden) {
      result->hidden.assign(xp, xp + static_cast<size_t>(plan.T) * c.dim);
    } else {
      result->hidden.clear();
    }
    if (plan.head_rows == 0) {
      result->rows = plan.T;
      result->cols = c.dim;
      result->data.assign(xp, xp + static_cast<size_t>(plan.T) * c.dim);
      continue;
    }
    result->rows = plan.head_rows;
    result->cols = c.vocab_size;
    head_rows += plan.head_rows;
    head_segments_.push_back(plan.head_rows);
  }
  if (head_rows == 0) return;
  if (head_segments_.size() == 1) {  // one sequence: straight into its result
    for (int p = 0; p < n_plans; ++p) {
      const Plan& plan = plans_[p];
      if (plan.head_rows == 0) continue;
      ForwardResult* result = items[plan.item].result;
      result->data.resize(static_cast<size_t>(plan.head_rows) * c.vocab_size);
      Head(x + static_cast<size_t>(plan.row0 + plan.T - plan.head_rows) * c.dim, plan.head_rows,
           result->data.data());
    }
    return;
  }
  Resize(&head_x_, static_cast<size_t>(head_rows) * c.dim);
  int r = 0;
  for (int p = 0; p < n_plans; ++p) {
    const Plan& plan = plans_[p];
    if (plan.head_rows == 0) continue;
    const float* xp = x + static_cast<size_t>(plan.row0 + plan.T - plan.head_rows) * c.dim;
    std::copy(xp, xp + static_cast<size_t>(plan.head_rows) * c.dim,
              head_x_.begin() + static_cast<size_t>(r) * c.dim);
    r += plan.head_rows;
  }
  Resize(&logits_, static_cast<size_t>(head_rows) * c.vocab_size);
  Head(head_x_.data(), head_rows, logits_.data(), head_segments_);
  r = 0;
  for (int p = 0; p < n_plans; ++p) {
    const Plan& plan = plans_[p];
    if (plan.head_rows == 0) continue;
    const float* lp = logits_.data() + static_cast<size_t>(r) * c.vocab_size;
    items[plan.item].result->data.assign(lp, lp + static_cast<size_t>(plan.head_rows) * c.vocab_size);
    r += plan.head_rows;
  }
}

}  // namespace tandem::model
