#include "quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/linalg.h"

namespace qf {
namespace {

struct Range {
  float lo = 0, hi = 0;
};

Range block_range(const float* x, int64_t rows, int64_t cols, int64_t ld, const Format& format) {
  Range r;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float v = x[i * ld + j];
      QF_CHECK(std::isfinite(v), "quantize ", format.str(), ": a weight is ", v, "; only finite weights can be quantized");
      r.lo = std::min(r.lo, v);
      r.hi = std::max(r.hi, v);
    }
  return r;
}

// sum_rc weight_c (x - round(x))^2 over a block.
double block_error(const Format& format, const BlockScale& scale, const float* x, int64_t rows, int64_t cols, int64_t ld,
                   const double* column_weights) {
  double err = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double e = double(x[i * ld + j]) - double(round_to_block(format, scale, x[i * ld + j]));
      err += (column_weights ? column_weights[j] : 1.0) * e * e;
    }
  return err;
}

bool same_scale(const BlockScale& a, const BlockScale& b) { return a.code == b.code && a.zero == b.zero; }

// One row's blocks chosen by coordinate descent on e^T H e (RtnOptions::hessian, full).
void descend_row_full_hessian(WeightGrid& grid, const float* w_row, int64_t row, const double* H, const ClipSearch& clip) {
  const Format& format = grid.format();
  const int64_t n = grid.cols();
  std::vector<double> e(static_cast<size_t>(n)), u(static_cast<size_t>(n));
  for (int64_t sc = 0; sc < grid.scale_cols(); ++sc) {
    const WeightGrid::Extent x = grid.block_extent(row, sc);
    const Range r = block_range(w_row + x.col_begin, 1, x.col_end - x.col_begin, 0, format);
    grid.set_block(row, sc, r.lo, r.hi);
  }
  for (int64_t j = 0; j < n; ++j) e[size_t(j)] = double(w_row[j]) - double(round_to_block(format, grid.block_of(row, j), w_row[j]));
  parallel_for(n, 64, [&](int64_t begin, int64_t end) {  // serial when called from a parallel row loop
    for (int64_t i = begin; i < end; ++i) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += H[i * n + j] * e[size_t(j)];
      u[size_t(i)] = s;
    }
  });
  std::vector<double> delta, best_delta;
  for (int64_t sc = 0; sc < grid.scale_cols(); ++sc) {
    const WeightGrid::Extent x = grid.block_extent(row, sc);
    const int64_t c0 = x.col_begin, g = x.col_end - x.col_begin;
    const Range r = block_range(w_row + c0, 1, g, 0, format);
    delta.resize(size_t(g));
    BlockScale previous = grid.block(row, sc), best = previous;
    double best_change = 0;  // change of e^T H e; the current scale (factor 1) changes nothing
    for (int k = 1; k <= clip.steps; ++k) {
      const float c = clip.factor(k);
      const BlockScale b = block_scale(format, c * r.lo, c * r.hi, grid.tensor_scale());
      if (same_scale(b, previous)) continue;
      previous = b;
      for (int64_t j = 0; j < g; ++j)
        delta[size_t(j)] = double(w_row[c0 + j]) - double(round_to_block(format, b, w_row[c0 + j])) - e[size_t(c0 + j)];
      // (e + d)^T H (e + d) - e^T H e = d^T (2 H e + H d), with only d's block non-zero.
      double change = 0;
      for (int64_t j = 0; j < g; ++j) {
        const double* h_row = H + (c0 + j) * n + c0;
        double hd = 0;
        for (int64_t l = 0; l < g; ++l) hd += h_row[l] * delta[size_t(l)];
        change += delta[size_t(j)] * (2 * u[size_t(c0 + j)] + hd);
      }
      if (change < best_change) {
        best_change = change;
        best = b;
        best_delta = delta;
      }
    }
    if (best_change < 0) {
      grid.set_block(row, sc, best);
      for (int64_t j = 0; j < g; ++j) e[size_t(c0 + j)] += best_delta[size_t(j)];
      for (int64_t i = 0; i < n; ++i) {
        const double* h_row = H + i * n + c0;
        double s = 0;
        for (int64_t j = 0; j < g; ++j) s += h_row[j] * best_delta[size_t(j)];
        u[size_t(i)] += s;
      }
    }
  }
}

}  // namespace

void HessianView::validate(int64_t cols, std::string_view what) const {
  QF_CHECK(data != nullptr, what, ": no Hessian given");
  QF_CHECK(dim == cols, what, ": the Hessian is for ", dim, " input channels but the weight has ", cols);
  const int64_t count = diagonal ? dim : dim * dim;
  for (int64_t i = 0; i < count; ++i)
    QF_CHECK(std::isfinite(data[i]), what, ": Hessian element ", i, " is ", data[i]);
  for (int64_t j = 0; j < dim; ++j) {
    const double d = diagonal ? data[j] : data[j * dim + j];
    QF_CHECK(d >= 0, what, ": Hessian diagonal element ", j, " is ", d, " < 0; H = X^T X has a non-negative diagonal");
  }
}

void ClipSearch::validate() const {
  QF_CHECK(min_factor > 0 && min_factor <= 1, "clip search: min_factor ", min_factor, " is not in (0, 1]");
  QF_CHECK(steps >= 1 && steps <= 10000, "clip search: steps ", steps, " is not in 1..10000");
}

double layer_output_error(const float* w, const float* q, int64_t rows, int64_t cols, const HessianView& h) {
  if (h.empty() || h.diagonal) {
    std::vector<double> partial(size_t(std::max<int64_t>(rows, 1)), 0.0);
    parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double s = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double e = double(w[r * cols + c]) - double(q[r * cols + c]);
          s += (h.empty() ? 1.0 : h.data[c]) * e * e;
        }
        partial[size_t(r)] = s;
      }
    });
    double total = 0;
    for (double p : partial) total += p;
    return total;
  }
  QF_CHECK(h.dim == cols, "layer_output_error: the Hessian is for ", h.dim, " input channels but the weight has ", cols);
  // sum_rc (E H)_rc E_rc, E = W - Q, a chunk of rows at a time so memory stays O(chunk * cols).
  constexpr int64_t kChunk = 256;
  std::vector<double> e, eh;
  double total = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t m = std::min(kChunk, rows - r0);
    e.resize(size_t(m * cols));
    eh.assign(size_t(m * cols), 0.0);
    for (int64_t i = 0; i < m * cols; ++i) e[size_t(i)] = double(w[r0 * cols + i]) - double(q[r0 * cols + i]);
    dgemm_add(m, cols, cols, 1.0, e.data(), cols, h.data, cols, eh.data(), cols);
    for (int64_t i = 0; i < m * cols; ++i) total += eh[size_t(i)] * e[size_t(i)];
  }
  return total;
}

BlockScale search_block_scale(const Format& format, const float* x, int64_t rows, int64_t cols, int64_t ld,
                              const double* column_weights, float tensor_scale, const ClipSearch& clip, bool saturate) {
  const Range r = block_range(x, rows, cols, ld, format);
  BlockScale best = block_scale(format, r.lo, r.hi, tensor_scale, saturate);
  if (!clip.enabled) return best;
  double best_error = block_error(format, best, x, rows, cols, ld, column_weights);
  BlockScale previous = best;
  for (int k = 1; k <= clip.steps; ++k) {
    const float c = clip.factor(k);
    const BlockScale b = block_scale(format, c * r.lo, c * r.hi, tensor_scale, saturate);
    if (same_scale(b, previous)) continue;
    previous = b;
    const double err = block_error(format, b, x, rows, cols, ld, column_weights);
    if (err < best_error) {
      best_error = err;
      best = b;
    }
  }
  return best;
}

QuantizedWeight rtn_quantize(const float* w, int64_t rows, int64_t cols, const Format& format, const RtnOptions& options) {
  WeightGrid grid(format, rows, cols);
  const std::string what = str("rtn_quantize ", format.str(), " [", rows, ", ", cols, "]");
  const ClipSearch& clip = options.clip;
  const HessianView& h = options.hessian;
  if (clip.enabled) {
    clip.validate();
    if (!h.empty()) h.validate(cols, what);
  }
  if (format.scaled()) {
    const int64_t srows = grid.scale_rows(), scols = grid.scale_cols();
    if (format.tensor_scale) {
      // t from the unclipped ranges: clipping only shrinks scales, so every candidate fits.
      std::vector<float> raw(static_cast<size_t>(srows * scols));
      parallel_for(srows, 16, [&](int64_t begin, int64_t end) {
        for (int64_t sr = begin; sr < end; ++sr)
          for (int64_t sc = 0; sc < scols; ++sc) {
            const WeightGrid::Extent x = grid.block_extent(sr, sc);
            const Range r = block_range(w + x.row_begin * cols + x.col_begin, x.row_end - x.row_begin,
                                        x.col_end - x.col_begin, cols, format);
            raw[size_t(sr * scols + sc)] = raw_block_scale(format, r.lo, r.hi);
          }
      });
      grid.set_tensor_scale_from(*std::max_element(raw.begin(), raw.end()));
    }
    if (clip.enabled && !h.empty() && !h.diagonal) {
      QF_CHECK(format.granularity != Granularity::tensor, what,
               ": a clip search against a full Hessian needs channel or group scales; pass its diagonal for per-tensor scales");
      parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) descend_row_full_hessian(grid, w + r * cols, r, h.data, clip);
      });
    } else {
      const double* diag = clip.enabled && !h.empty() ? h.data : nullptr;
      parallel_for(srows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t sr = begin; sr < end; ++sr)
          for (int64_t sc = 0; sc < scols; ++sc) {
            const WeightGrid::Extent x = grid.block_extent(sr, sc);
            grid.set_block(sr, sc,
                           search_block_scale(format, w + x.row_begin * cols + x.col_begin, x.row_end - x.row_begin,
                                              x.col_end - x.col_begin, cols, diag ? diag + x.col_begin : nullptr,
                                              grid.tensor_scale(), clip));
          }
      });
    }
  }
  QuantizedWeight out;
  out.dequantized.resize(size_t(rows * cols));
  parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = w[r * cols + c];
        QF_CHECK(std::isfinite(v), what, ": weight (", r, ", ", c, ") is ", v, "; only finite weights can be quantized");
        out.dequantized[size_t(r * cols + c)] = grid.round(r, c, v);
      }
  });
  out.q = std::move(grid).release();
  return out;
}

}  // namespace qf
