// The CPU calibration device: host memory and the CPU engine's kernels (fp32_device.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <vector>

#include "backends/cpu/attention.h"
#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/rope.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/fp32_device.h"
#include "quant/rope_scale.h"

namespace qf {
namespace {

// Rows of the Gram matrix per task of the lower-triangle GEMM.
constexpr int64_t kGramRowBlock = 32;
// Columns per product in gemm_subtract: the [rows x 512] temporary stays in L2 (gptq.cpp's
// kUpdateTile, the same tiling).
constexpr int64_t kGemmSubtractTile = 512;

class CpuFp32Device final : public Fp32Device {
 public:
  std::string name() const override { return "cpu"; }
  int64_t default_chunk_tokens() const override { return 2048; }

  float* alloc(int64_t n, const std::string&) override {
    buffers_.emplace_back(size_t(std::max<int64_t>(n, 1)));
    return buffers_.back().data();
  }
  void upload(float* dst, const float* host, int64_t n) override { copy(dst, host, n); }
  void download(float* host, const float* src, int64_t n) override { copy(host, src, n); }
  void download_rows(float* host, const float* src, int64_t cols, int64_t first, int64_t stride,
                     int64_t count) override {
    for (int64_t i = 0; i < count; ++i) std::memcpy(host + i * cols, src + (first + i * stride) * cols, size_t(cols) * 4);
  }
  void copy(float* dst, const float* src, int64_t n) override {
    if (dst != src && n > 0) std::memmove(dst, src, size_t(n) * sizeof(float));
  }

  float* scratch(int slot, int64_t n, const std::string&) override {
    std::vector<float>& b = scratch_[slot];
    if (int64_t(b.size()) < n) b.resize(size_t(n));
    return b.data();
  }
  void download_columns(float* host, const float* src, int64_t ld, int64_t col0, int64_t rows, int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(host + r * cols, src + r * ld + col0, size_t(cols) * sizeof(float));
  }
  // In tiles of columns, a product per tile then the subtraction: the same cpu::gemm calls as
  // gptq.cpp's CPU sweep makes, so both give the same bits.
  void gemm_subtract(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m, int64_t n,
                     int64_t k) override {
    parallel_for(m, 8, [&](int64_t r0, int64_t r1) {
      std::vector<float> product(size_t((r1 - r0) * kGemmSubtractTile));
      for (int64_t c0 = 0; c0 < n; c0 += kGemmSubtractTile) {
        const int64_t width = std::min(kGemmSubtractTile, n - c0);
        cpu::gemm(r1 - r0, width, k, a + r0 * lda, lda, b + c0, DType::F32, ldb, cpu::BLayout::KN, product.data(), width,
                  /*parallel=*/false);
        for (int64_t r = r0; r < r1; ++r) {
          float* c_row = c + r * ldc + c0;
          const float* p_row = product.data() + (r - r0) * width;
          for (int64_t j = 0; j < width; ++j) c_row[j] -= p_row[j];
        }
      }
    });
  }

  void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) override {
    cpu::rmsnorm(x, rows, dim, weight, eps, y);
  }
  void add_rmsnorm(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                   float* y) override {
    cpu::add_rmsnorm(residual, delta, rows, dim, weight, eps, y);
  }
  void linear(const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y) override {
    cpu::linear(x, m, k, w, DType::F32, n, bias, y);
  }
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override { cpu::silu_mul(gate, up, n, out); }
  void add(float* a, const float* b, int64_t n) override { cpu::add_inplace(a, b, n); }
  void round_trip_rows(float* x, int64_t rows, int64_t cols, const Format& format) override {
    parallel_for(rows, 16, [&](int64_t b, int64_t e) {
      cpu::round_trip_rows(x + b * cols, e - b, cols, format, x + b * cols);
    });
  }
  void rope(float* x, int64_t windows, int64_t window_len, int64_t heads, int64_t head_dim, int64_t token_stride,
            const float* cos, const float* sin) override {
    for (int64_t w = 0; w < windows; ++w)
      cpu::rope_apply(x + w * window_len * token_stride, window_len, heads, head_dim, token_stride, cos, sin);
  }
  void post_rope_scale(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                       int64_t heads, int64_t kv_heads, int64_t head_dim) override {
    apply_post_rope_scale(q, q_stride, k, k_stride, tokens, post, heads, kv_heads, head_dim);
  }
  void attention(const float* q, const float* k, const float* v, int64_t windows, int64_t n_queries,
                 int64_t first_position, int64_t kv_window_rows, int64_t heads, int64_t kv_heads, int64_t head_dim,
                 float scale, float* out) override {
    const int64_t d = head_dim, q_dim = heads * d, kv_dim = kv_heads * d, keys = first_position + n_queries;
    positions_.resize(size_t(n_queries));
    for (int64_t i = 0; i < n_queries; ++i) positions_[size_t(i)] = int32_t(first_position + i);
    k_cache_.resize(size_t(kv_dim * keys));
    v_cache_.resize(size_t(kv_dim * keys));
    for (int64_t w = 0; w < windows; ++w) {
      // The window's cache, [kv_head][position][head_dim] as the engine lays it out.
      const float* kw = k + w * kv_window_rows * kv_dim;
      const float* vw = v + w * kv_window_rows * kv_dim;
      for (int64_t t = 0; t < keys; ++t)
        for (int64_t h = 0; h < kv_heads; ++h) {
          std::copy_n(kw + t * kv_dim + h * d, d, k_cache_.data() + (h * keys + t) * d);
          std::copy_n(vw + t * kv_dim + h * d, d, v_cache_.data() + (h * keys + t) * d);
        }
      cpu::attention(q + w * n_queries * q_dim, q_dim, n_queries, positions_.data(), k_cache_.data(), v_cache_.data(),
                     keys * d, heads, kv_heads, d, scale, out + w * n_queries * q_dim, q_dim);
    }
  }

  void statistics(const float* x, int64_t m, int64_t c, int first_quarter, int bins, float* gram, float* absmax,
                  uint32_t* histogram, float* token_min, float* token_max) override {
    for (int64_t i = 0; i < m * c; ++i)
      QF_CHECK(std::isfinite(x[i]), "calibration: a linear input value is ", x[i], " (row ", i / c, " of the chunk, channel ",
               i % c, "); the model's activations overflowed");
    gram_lower(x, m, c, gram);
    // Per channel: absmax and histogram, a block of channels per task (each task owns its
    // channels' counters, so no merging is needed).
    parallel_for(c, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t t = 0; t < m; ++t) {
        const float* row = x + t * c;
        for (int64_t j = c0; j < c1; ++j) {
          const float v = std::fabs(row[j]);
          absmax[j] = std::max(absmax[j], v);
          const uint32_t bits = std::bit_cast<uint32_t>(v);
          const int bin = bits == 0 ? 0 : std::clamp(int(bits >> 21) - first_quarter + 1, 0, bins - 1);
          ++histogram[j * bins + bin];
        }
      }
    });
    for (int64_t t = 0; t < m; ++t) {
      const float* row = x + t * c;
      const auto [lo, hi] = std::minmax_element(row, row + c);
      token_min[t] = *lo;
      token_max[t] = *hi;
    }
  }

 private:
  // gram[i, j] = sum_t x[t, i] x[t, j] for j <= i: an F32 GEMM of the transposed chunk with itself,
  // a block of rows at a time.
  void gram_lower(const float* x, int64_t m, int64_t c, float* gram) {
    std::vector<float> xt(size_t(c * m));
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < c; ++j) xt[size_t(j * m + t)] = x[t * c + j];
    const int64_t blocks = (c + kGramRowBlock - 1) / kGramRowBlock;
    // Task k takes block (blocks - 1 - k): the largest rows of the triangle are handed out first,
    // so the pool's dynamic scheduling balances them.
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> tile;
      for (int64_t k = b0; k < b1; ++k) {
        const int64_t block = blocks - 1 - k;
        const int64_t i0 = block * kGramRowBlock, i1 = std::min(c, i0 + kGramRowBlock);
        tile.resize(size_t((i1 - i0) * i1));
        cpu::gemm(i1 - i0, i1, m, xt.data() + i0 * m, m, xt.data(), DType::F32, m, cpu::BLayout::NK, tile.data(), i1,
                  /*parallel=*/false);
        for (int64_t i = i0; i < i1; ++i) std::copy_n(tile.data() + (i - i0) * i1, i + 1, gram + i * c);
      }
    });
  }

  std::deque<std::vector<float>> buffers_;  // a deque: growing it never moves the buffers handed out
  std::map<int, std::vector<float>> scratch_;
  std::vector<int32_t> positions_;
  std::vector<float> k_cache_, v_cache_;
};

}  // namespace

std::unique_ptr<Fp32Device> make_cpu_fp32_device() { return std::make_unique<CpuFp32Device>(); }

}  // namespace qf
