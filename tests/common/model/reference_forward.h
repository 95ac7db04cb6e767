// An independent, deliberately naive llama forward pass for tests: it dequantizes every weight
// to float and recomputes one position at a time in double precision, sharing no code with the
// engine beyond the weight views. Slow; use tiny models only.
#ifndef TANDEM_TESTS_COMMON_MODEL_REFERENCE_FORWARD_H_
#define TANDEM_TESTS_COMMON_MODEL_REFERENCE_FORWARD_H_

#include <cmath>
#include <vector>

#include "common/model/ggml_types.h"
#include "common/model/model.h"

namespace tandem::testing {

class ReferenceForward {
 public:
  explicit ReferenceForward(const model::Model& m) : m_(m), c_(m.config()) {
    keys_.resize(c_.n_layers);
    values_.resize(c_.n_layers);
  }

  // Appends `token` at the next position and returns its logits.
  std::vector<float> Step(int token) {
    const int pos = static_cast<int>(keys_[0].size());
    std::vector<double> x = Row(m_.token_embedding(), token);
    for (int l = 0; l < c_.n_layers; ++l) {
      const model::LayerWeights& w = m_.layer(l);
      std::vector<double> xb = Norm(x, w.attn_norm);
      std::vector<double> q = MatVec(w.wq, xb), k = MatVec(w.wk, xb), v = MatVec(w.wv, xb);
      Rope(&q, c_.n_heads, pos);
      Rope(&k, c_.n_kv_heads, pos);
      keys_[l].push_back(k);
      values_[l].push_back(v);
      std::vector<double> att(c_.q_dim(), 0.0);
      const int hd = c_.head_dim;
      for (int h = 0; h < c_.n_heads; ++h) {
        const int kvh = h / (c_.n_heads / c_.n_kv_heads);
        std::vector<double> s(pos + 1);
        double mx = -1e300;
        for (int t = 0; t <= pos; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * keys_[l][t][kvh * hd + i];
          s[t] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[t]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int t = 0; t <= pos; ++t) {
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[t] / sum * values_[l][t][kvh * hd + i];
        }
      }
      std::vector<double> o = MatVec(w.wo, att);
      for (int i = 0; i < c_.dim; ++i) x[i] += o[i];
      xb = Norm(x, w.ffn_norm);
      std::vector<double> g = MatVec(w.w1, xb), u = MatVec(w.w3, xb);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      o = MatVec(w.w2, g);
      for (int i = 0; i < c_.dim; ++i) x[i] += o[i];
    }
    std::vector<double> logits = MatVec(m_.classifier(), Norm(x, m_.output_norm()));
    return std::vector<float>(logits.begin(), logits.end());
  }

 private:
  std::vector<double> Row(const model::MatView& m, int r) const {
    std::vector<float> f(m.cols);
    model::DequantizeRow(m.type, static_cast<const uint8_t*>(m.data) + r * model::RowBytes(m.type, m.cols),
                         f.data(), m.cols);
    return std::vector<double>(f.begin(), f.end());
  }
  std::vector<double> MatVec(const model::MatView& m, const std::vector<double>& x) const {
    std::vector<double> y(m.rows);
    for (int64_t r = 0; r < m.rows; ++r) {
      std::vector<double> row = Row(m, static_cast<int>(r));
      double acc = 0;
      for (int64_t i = 0; i < m.cols; ++i) acc += row[i] * x[i];
      y[r] = acc;
    }
    return y;
  }
  std::vector<double> Norm(const std::vector<double>& x, const float* w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    double inv = 1.0 / std::sqrt(ss / x.size() + c_.norm_eps);
    std::vector<double> o(x.size());
    for (size_t i = 0; i < x.size(); ++i) o[i] = w[i] * x[i] * inv;
    return o;
  }
  void Rope(std::vector<double>* v, int heads, int pos) const {
    for (int h = 0; h < heads; ++h) {
      for (int p = 0; p < c_.rope_dim / 2; ++p) {
        double freq = std::pow(static_cast<double>(c_.rope_theta), -2.0 * p / c_.rope_dim);
        double a = pos * freq, cs = std::cos(a), sn = std::sin(a);
        double& x0 = (*v)[h * c_.head_dim + 2 * p];
        double& x1 = (*v)[h * c_.head_dim + 2 * p + 1];
        double r0 = x0 * cs - x1 * sn, r1 = x0 * sn + x1 * cs;
        x0 = r0;
        x1 = r1;
      }
    }
  }

  const model::Model& m_;
  const model::ModelConfig& c_;
  std::vector<std::vector<std::vector<double>>> keys_, values_;  // [layer][pos][kv_dim]
};

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_COMMON_MODEL_REFERENCE_FORWARD_H_
