#include "backends/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "backends/cpu/half.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace qf::cpu {
namespace {

// Rows per parallel task: below ~64k elements a task costs less than waking a worker.
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(dim, 1)); }

void rmsnorm_row(const float* x, int64_t dim, const float* weight, float eps, float* y) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum_sq += double(x[i]) * double(x[i]);
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / double(dim) + double(eps)));
  for (int64_t i = 0; i < dim; ++i) y[i] = (x[i] * inv_rms) * weight[i];
}

template <typename T>
void widen_row(const T* src, int64_t n, float* dst) {
  if constexpr (std::is_same_v<T, float>) std::memcpy(dst, src, size_t(n) * sizeof(float));
  else for (int64_t j = 0; j < n; ++j) dst[j] = widen_half<T>(src[j]);
}

}  // namespace

void widen_to_f32(const void* src, DType dtype, int64_t n, float* dst) {
  switch (dtype) {
    case DType::F32: return widen_row(static_cast<const float*>(src), n, dst);
    case DType::BF16: return widen_row(static_cast<const Bf16Bits*>(src), n, dst);
    case DType::F16: return widen_row(static_cast<const F16Bits*>(src), n, dst);
    default: fail("cannot widen ", dtype_name(dtype), " values to F32 (F32, BF16 or F16 expected)");
  }
}

void embedding(const void* table, DType table_dtype, int64_t vocab, int64_t dim, const int32_t* tokens,
               int64_t n_tokens, float* out) {
  for (int64_t i = 0; i < n_tokens; ++i)
    QF_CHECK(tokens[i] >= 0 && tokens[i] < vocab, "token id ", tokens[i], " (at index ", i,
             ") is outside the model's vocabulary of ", vocab, " tokens");
  const size_t row_bytes = size_t(dim) * dtype_size(table_dtype);
  for (int64_t i = 0; i < n_tokens; ++i)
    widen_to_f32(static_cast<const uint8_t*>(table) + size_t(tokens[i]) * row_bytes, table_dtype, dim, out + i * dim);
}

void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  parallel_for(rows, row_grain(dim), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) rmsnorm_row(x + r * dim, dim, weight, eps, y + r * dim);
  });
}

void add_rmsnorm(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                 float* y) {
  parallel_for(rows, row_grain(dim), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* res = residual + r * dim;
      const float* d = delta + r * dim;
      for (int64_t i = 0; i < dim; ++i) res[i] += d[i];
      rmsnorm_row(res, dim, weight, eps, y + r * dim);
    }
  });
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  parallel_for(n, 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void add_inplace(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace qf::cpu
