#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/cpu/gemm.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/linalg.h"

namespace qf {
namespace {

// Columns of the deferred update computed per GEMM call: the temporary [rows x kUpdateTile]
// product stays in L2 (64 rows x 512 x 4 bytes = 128 KiB) while it is subtracted.
constexpr int64_t kUpdateTile = 512;

// The lazy-batch width actually used. With lazy group scales, a group's scale is taken from
// its current weights when the group starts; those are current only if no deferred update is
// pending for any column of the group, i.e. the group lies inside one batch (G divides the
// batch) or starts where a batch starts (the batch divides G). Otherwise round the batch to
// a multiple of G. The batch width changes only the order of rounding, not the algorithm.
int64_t batch_width(int64_t block_size, int64_t lazy_group) {
  if (lazy_group == 0) return block_size;
  if (lazy_group <= block_size) return (block_size / lazy_group) * lazy_group;
  return lazy_group % block_size == 0 ? block_size : lazy_group;
}

}  // namespace

GptqResult gptq_quantize(const float* w, int64_t rows, int64_t cols, const HessianView& hessian, const Format& format,
                         const GptqOptions& options) {
  const std::string what = str("gptq ", format.str(), " [", rows, ", ", cols, "]");
  WeightGrid grid(format, rows, cols);  // validates the format against the shape
  QF_CHECK(!hessian.diagonal, what, ": GPTQ needs the full Hessian X^T X, not its diagonal");
  hessian.validate(cols, what);
  QF_CHECK(std::isfinite(options.percdamp) && options.percdamp >= 0, what, ": percdamp ", options.percdamp,
           " must be finite and >= 0");
  QF_CHECK(options.block_size >= 1, what, ": block_size ", options.block_size, " must be >= 1");
  if (options.clip.enabled) options.clip.validate();
  const bool grouped = format.granularity == Granularity::group;
  QF_CHECK(!(options.act_order && grouped && !options.static_groups), what,
           ": act_order with per-group scales needs static_groups, so that group g keeps the original columns "
           "g*G..g*G+G-1 (otherwise groups would be formed in the permuted order and the layout would change)");
  const bool lazy_groups = grouped && !options.static_groups;
  const int64_t n = cols;

  GptqResult result;
  std::vector<float> w0(w, w + rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i)
    QF_CHECK(std::isfinite(w0[size_t(i)]), what, ": weight (", i / cols, ", ", i % cols, ") is ", w0[size_t(i)],
             "; only finite weights can be quantized");

  // Dead columns, then dampening.
  std::vector<double> h(hessian.data, hessian.data + n * n);
  for (int64_t j = 0; j < n; ++j) {
    if (h[size_t(j * n + j)] != 0) continue;
    h[size_t(j * n + j)] = 1;
    for (int64_t r = 0; r < rows; ++r) w0[size_t(r * cols + j)] = 0;
    ++result.dead_columns;
  }
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) mean_diag += h[size_t(j * n + j)];
  mean_diag /= double(std::max<int64_t>(n, 1));

  // Processing order (stable, so ties keep the original order and runs are reproducible).
  result.order.resize(size_t(n));
  std::iota(result.order.begin(), result.order.end(), 0);
  if (options.act_order)
    std::stable_sort(result.order.begin(), result.order.end(),
                     [&](int64_t a, int64_t b) { return h[size_t(a * n + a)] > h[size_t(b * n + b)]; });
  const std::vector<int64_t>& order = result.order;

  result.damping = options.percdamp * mean_diag;
  std::vector<double> hp(static_cast<size_t>(n * n));  // the dampened Hessian in processing order
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      hp[size_t(i * n + j)] = h[size_t(order[size_t(i)] * n + order[size_t(j)])] + (i == j ? result.damping : 0.0);
  h.clear();
  h.shrink_to_fit();
  std::vector<float> u;  // U, the upper Cholesky factor of the inverse, rounded to F32 for the sweep
  {
    const std::vector<double> ud =
        inverse_cholesky_upper(hp.data(), n, what + "'s dampened Hessian (raise percdamp if it is singular)");
    hp.clear();
    hp.shrink_to_fit();
    u.assign(ud.begin(), ud.end());
  }

  // Scales that do not depend on the updates: from the original weights, before the sweep.
  if (format.scaled()) {
    const int64_t srows = grid.scale_rows(), scols = grid.scale_cols();
    if (format.tensor_scale) {
      float max_raw = 0;
      for (int64_t sr = 0; sr < srows; ++sr)
        for (int64_t sc = 0; sc < scols; ++sc) {
          const WeightGrid::Extent x = grid.block_extent(sr, sc);
          float lo = 0, hi = 0;
          for (int64_t r = x.row_begin; r < x.row_end; ++r)
            for (int64_t c = x.col_begin; c < x.col_end; ++c) {
              lo = std::min(lo, w0[size_t(r * cols + c)]);
              hi = std::max(hi, w0[size_t(r * cols + c)]);
            }
          max_raw = std::max(max_raw, raw_block_scale(format, lo, hi));
        }
      grid.set_tensor_scale_from(max_raw);
    }
    if (!lazy_groups) {
      parallel_for(srows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t sr = begin; sr < end; ++sr)
          for (int64_t sc = 0; sc < scols; ++sc) {
            const WeightGrid::Extent x = grid.block_extent(sr, sc);
            grid.set_block(sr, sc,
                           search_block_scale(format, w0.data() + x.row_begin * cols + x.col_begin, x.row_end - x.row_begin,
                                              x.col_end - x.col_begin, cols, nullptr, grid.tensor_scale(), options.clip));
          }
      });
    }
  }

  const int64_t group = lazy_groups ? format.group_size : 0;
  const int64_t batch = batch_width(options.block_size, group);
  result.weight.dequantized.resize(size_t(rows * cols));
  float* q_out = result.weight.dequantized.data();
  std::vector<double> row_loss(size_t(rows), 0.0);

  // Quantizes processing columns [i1, i2) of the m rows from r0: element (r, i) of their current
  // weights is w[r * ld + i - base] (held up to the batch's end, and to the end of a lazy group
  // starting in it); the in-batch updates go into w, the errors (w - q) / U_ii into
  // errors[r * batch + i - i1].
  auto round_batch = [&](int64_t r0, int64_t m, float* w, int64_t ld, int64_t base, int64_t i1, int64_t i2,
                         float* errors) {
    for (int64_t i = i1; i < i2; ++i) {
      if (group != 0 && i % group == 0) {  // a lazy group starts: its scale from the current weights
        // A tensor scale was fixed from the original weights, which the updates may outgrow:
        // saturate then (the clipped part is error like any other and is fed back).
        for (int64_t r = 0; r < m; ++r)
          grid.set_block(r0 + r, i / group,
                         search_block_scale(format, w + r * ld + i - base, 1, std::min(group, n - i), ld, nullptr,
                                            grid.tensor_scale(), options.clip, /*saturate=*/true));
      }
      const float d = u[size_t(i * n + i)];
      const float* u_row = u.data() + i * n;
      const int64_t col = order[size_t(i)];
      for (int64_t r = 0; r < m; ++r) {
        float* w_row = w + r * ld - base;
        const float x = w_row[i];
        const float q = grid.round(r0 + r, col, x);
        q_out[(r0 + r) * cols + col] = q;
        const float err = (x - q) / d;
        row_loss[size_t(r0 + r)] += double(err) * double(err);
        errors[size_t(r * batch + (i - i1))] = err;
        for (int64_t k = i + 1; k < i2; ++k) w_row[k] -= err * u_row[k];
      }
    }
  };

  if (options.device) {
    // The weights and U live on the device, which applies each batch's deferred update to every
    // row at once as one GEMM (the O(rows x cols^2) part); the host fetches a batch's columns,
    // rounds them onto the grid (formats' codecs) and sends the errors back.
    Fp32Device& dev = *options.device;
    float* w_d = dev.scratch(0, rows * n, "GPTQ's weights");
    float* u_d = dev.scratch(1, n * n, "GPTQ's inverse Hessian factor");
    float* e_d = dev.scratch(2, rows * batch, "GPTQ's batch errors");
    {
      std::vector<float> wp(static_cast<size_t>(rows * n));
      parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t p = 0; p < n; ++p) wp[size_t(r * n + p)] = w0[size_t(r * cols + order[size_t(p)])];
      });
      dev.upload(w_d, wp.data(), rows * n);
    }
    dev.upload(u_d, u.data(), n * n);
    const int64_t span = std::max(batch, group);
    std::vector<float> wb(static_cast<size_t>(rows * span)), errors(static_cast<size_t>(rows * batch));
    for (int64_t i1 = 0; i1 < n; i1 += batch) {
      const int64_t i2 = std::min(i1 + batch, n), width = std::min(n, i1 + span) - i1;
      dev.download_columns(wb.data(), w_d, n, i1, rows, width);
      parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
        round_batch(r0, r1 - r0, wb.data() + r0 * width, width, i1, i1, i2, errors.data() + r0 * batch);
      });
      if (i2 < n) {
        dev.upload(e_d, errors.data(), rows * batch);
        dev.gemm_subtract(e_d, batch, u_d + i1 * n + i2, n, w_d + i2, n, rows, n - i2, i2 - i1);
      }
    }
  } else {
    // The sweep, over independent chunks of rows. wp holds a chunk's weights in processing order.
    parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
      const int64_t m = r1 - r0;
      std::vector<float> wp(static_cast<size_t>(m * n)), errors(static_cast<size_t>(m * batch)),
          product(static_cast<size_t>(m * kUpdateTile));
      for (int64_t r = 0; r < m; ++r)
        for (int64_t p = 0; p < n; ++p) wp[size_t(r * n + p)] = w0[size_t((r0 + r) * cols + order[size_t(p)])];
      for (int64_t i1 = 0; i1 < n; i1 += batch) {
        const int64_t i2 = std::min(i1 + batch, n);
        round_batch(r0, m, wp.data(), n, 0, i1, i2, errors.data());
        // The deferred update of the columns after the batch: wp[:, i2:] -= E · U[i1:i2, i2:].
        for (int64_t c0 = i2; c0 < n; c0 += kUpdateTile) {
          const int64_t width = std::min(kUpdateTile, n - c0);
          cpu::gemm(m, width, i2 - i1, errors.data(), batch, u.data() + i1 * n + c0, DType::F32, n, cpu::BLayout::KN,
                    product.data(), width, /*parallel=*/false);
          for (int64_t r = 0; r < m; ++r) {
            float* w_row = wp.data() + r * n + c0;
            const float* p_row = product.data() + r * width;
            for (int64_t c = 0; c < width; ++c) w_row[c] -= p_row[c];
          }
        }
      }
    });
  }

  for (double l : row_loss) result.loss += l;
  result.weight.q = std::move(grid).release();
  return result;
}

}  // namespace qf
