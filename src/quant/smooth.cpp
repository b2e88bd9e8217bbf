#include "quant/smooth.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/gemm.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/rtn.h"

namespace qf {
namespace {

// The clamp of smoothing_scales: no channel is scaled by more than 1e5 either way.
constexpr float kMinScale = 1e-5f, kMaxScale = 1e5f;

void check_scales(const float* s, int64_t n, const char* what) {
  for (int64_t j = 0; j < n; ++j)
    QF_CHECK(std::isfinite(s[j]) && s[j] > 0, what, ": smoothing scale ", j, " is ", s[j], "; scales must be finite and > 0");
}

void check_reads(const LinearRef& l, int64_t n, const char* what) {
  QF_CHECK(l.weight != nullptr && l.cols == n, what, ": a following linear has ", l.cols,
           " input channels, the smoothed activation has ", n);
}

}  // namespace

void accumulate_column_absmax(const float* x, int64_t rows, int64_t cols, float* absmax) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) absmax[c] = std::max(absmax[c], std::abs(x[r * cols + c]));
}

std::vector<float> smoothing_scales(const float* act_absmax, const float* weight_absmax, int64_t n, float alpha) {
  QF_CHECK(alpha >= 0 && alpha <= 1, "smoothing: alpha ", alpha, " is not in [0, 1]");
  std::vector<float> s(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const double a = act_absmax[j], w = weight_absmax[j];
    QF_CHECK(std::isfinite(a) && std::isfinite(w) && a >= 0 && w >= 0, "smoothing: channel ", j, " has statistics act ",
             a, ", weight ", w, "; expected finite absolute maxima");
    if (a == 0 || w == 0) {
      s[size_t(j)] = 1.0f;
      continue;
    }
    s[size_t(j)] = std::clamp(float(std::pow(a, double(alpha)) / std::pow(w, 1.0 - double(alpha))), kMinScale, kMaxScale);
  }
  return s;
}

std::vector<float> default_alpha_grid() {
  std::vector<float> grid;
  for (int i = 0; i <= 20; ++i) grid.push_back(float(i) / 20.0f);
  return grid;
}

AlphaChoice choose_smoothing_alpha(const float* act_absmax, const float* weight_absmax, int64_t n,
                                   const std::vector<float>& alphas,
                                   const std::function<double(const std::vector<float>& scales)>& loss) {
  QF_CHECK(!alphas.empty(), "smoothing: an empty grid of alphas");
  AlphaChoice best;
  bool first = true;
  for (float alpha : alphas) {
    std::vector<float> s = smoothing_scales(act_absmax, weight_absmax, n, alpha);
    const double l = loss(s);
    QF_CHECK(!std::isnan(l), "smoothing: the loss at alpha ", alpha, " is NaN");
    if (first || l < best.loss) {
      best = {alpha, std::move(s), l};
      first = false;
    }
  }
  return best;
}

SmoothingLoss::SmoothingLoss(const float* x, int64_t m, int64_t n, std::vector<SmoothingTarget> linears)
    : x_(x), m_(m), n_(n), linears_(std::move(linears)) {
  QF_CHECK(x != nullptr && m >= 1 && n >= 1, "SmoothingLoss: no sample rows");
  for (const SmoothingTarget& t : linears_) {
    QF_CHECK(t.weight != nullptr && t.rows >= 1, "SmoothingLoss: an empty linear");
    std::vector<float> y(size_t(m * t.rows));
    cpu::linear(x, m, n, t.weight, DType::F32, t.rows, nullptr, y.data());
    reference_.push_back(std::move(y));
  }
}

double SmoothingLoss::operator()(const std::vector<float>& s) const {
  QF_CHECK(int64_t(s.size()) == n_, "SmoothingLoss: ", s.size(), " scales for ", n_, " channels");
  check_scales(s.data(), n_, "SmoothingLoss");
  std::vector<float> xs(size_t(m_ * n_)), xq(size_t(m_ * n_));
  for (int64_t r = 0; r < m_; ++r)
    for (int64_t j = 0; j < n_; ++j) xs[size_t(r * n_ + j)] = x_[r * n_ + j] / s[size_t(j)];
  double total = 0;
  std::optional<Format> rounded_to;  // xq holds xs rounded to this (q, k, v share one format)
  for (size_t i = 0; i < linears_.size(); ++i) {
    const SmoothingTarget& t = linears_[i];
    const float* in = xs.data();
    if (t.activations) {
      if (rounded_to != t.activations) {
        parallel_for(m_, 16, [&](int64_t b, int64_t e) {
          cpu::round_trip_rows(xs.data() + b * n_, e - b, n_, *t.activations, xq.data() + b * n_);
        });
        rounded_to = t.activations;
      }
      in = xq.data();
    }
    std::vector<float> ws(size_t(t.rows * n_));
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t j = 0; j < n_; ++j) ws[size_t(r * n_ + j)] = t.weight[r * n_ + j] * s[size_t(j)];
    const std::vector<float> wq = rtn_quantize(ws.data(), t.rows, n_, t.weights).dequantized;
    std::vector<float> y(size_t(m_ * t.rows));
    cpu::linear(in, m_, n_, wq.data(), DType::F32, t.rows, nullptr, y.data());
    const std::vector<float>& ref = reference_[i];
    for (size_t k = 0; k < y.size(); ++k) {
      const double d = double(y[k]) - double(ref[k]);
      total += d * d;
    }
  }
  return total;
}

std::vector<float> SmoothingLoss::weight_absmax() const {
  std::vector<float> a(size_t(n_), 0.0f);
  for (const SmoothingTarget& t : linears_) accumulate_column_absmax(t.weight, t.rows, n_, a.data());
  return a;
}

void scale_input_channels(std::span<const LinearRef> linears, const float* s, int64_t n) {
  for (const LinearRef& l : linears) {
    check_reads(l, n, "smoothing");
    parallel_for(l.rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t j = 0; j < n; ++j) l.weight[r * n + j] *= s[j];
    });
  }
}

void merge_smoothing_into_norm(float* norm_weight, int64_t n, const float* s, std::span<const LinearRef> next) {
  check_scales(s, n, "merge_smoothing_into_norm");
  for (const LinearRef& l : next) check_reads(l, n, "merge_smoothing_into_norm");
  for (int64_t j = 0; j < n; ++j) norm_weight[j] /= s[j];
  scale_input_channels(next, s, n);
}

void merge_smoothing_into_linear(const LinearRef& prev, const float* s, int64_t n, std::span<const LinearRef> next) {
  check_scales(s, n, "merge_smoothing_into_linear");
  QF_CHECK(prev.weight != nullptr && prev.rows == n, "merge_smoothing_into_linear: the producing linear has ", prev.rows,
           " output channels, the smoothed activation has ", n);
  for (const LinearRef& l : next) check_reads(l, n, "merge_smoothing_into_linear");
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < prev.cols; ++c) prev.weight[j * prev.cols + c] /= s[j];
    if (prev.bias) prev.bias[j] /= s[j];
  }
  scale_input_channels(next, s, n);
}

void merge_smoothing_into_v_o(const LinearRef& v_proj, const LinearRef& o_proj, const float* s, int64_t head_dim) {
  QF_CHECK(head_dim >= 1 && v_proj.rows % head_dim == 0 && o_proj.cols % head_dim == 0,
           "merge_smoothing_into_v_o: head_dim ", head_dim, " does not divide v_proj's ", v_proj.rows,
           " outputs and o_proj's ", o_proj.cols, " inputs");
  const int64_t kv_heads = v_proj.rows / head_dim, heads = o_proj.cols / head_dim;
  QF_CHECK(heads % kv_heads == 0, "merge_smoothing_into_v_o: ", heads, " query heads do not share ", kv_heads,
           " kv heads evenly");
  std::vector<float> expanded(static_cast<size_t>(o_proj.cols));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t d = 0; d < head_dim; ++d)
      expanded[size_t(h * head_dim + d)] = s[(h / (heads / kv_heads)) * head_dim + d];
  check_scales(s, v_proj.rows, "merge_smoothing_into_v_o");
  for (int64_t j = 0; j < v_proj.rows; ++j) {
    for (int64_t c = 0; c < v_proj.cols; ++c) v_proj.weight[j * v_proj.cols + c] /= s[j];
    if (v_proj.bias) v_proj.bias[j] /= s[j];
  }
  const LinearRef next[] = {o_proj};
  scale_input_channels(next, expanded.data(), o_proj.cols);
}

void fold_norm_weight(float* norm_weight, int64_t n, std::span<const LinearRef> next) {
  // Not merge_smoothing_into_norm with s = g: a zero g_j (a channel the norm switches off) is
  // no valid scale, but folding it is fine: column j becomes 0, which is what the norm did.
  std::vector<float> s(norm_weight, norm_weight + n);
  for (const LinearRef& l : next) check_reads(l, n, "fold_norm_weight");
  for (int64_t j = 0; j < n; ++j) QF_CHECK(std::isfinite(s[size_t(j)]), "fold_norm_weight: norm weight ", j, " is ", s[size_t(j)]);
  scale_input_channels(next, s.data(), n);
  std::fill(norm_weight, norm_weight + n, 1.0f);
}

}  // namespace qf
