// Attention as two GEMMs per block of queries (S = Q·K^T, then O = P·V), so the CPU reference
// runs at GEMM speed rather than one dot product at a time: a long-context perplexity run
// spends about a fifth of its FLOPs here (at 2048 tokens, 2 * 2 * 1024 * head_dim per head and
// token against ~2 * params for the linear layers).
//
// A task is one KV head and a block of kQueryBlock consecutive query tokens; its rows are the
// (token, query head) pairs of that KV head's group, so the keys and values of the head are
// read once for group * kQueryBlock rows. Keys past the block's last position are never
// touched; inside the block, scores past a row's own position are masked to probability 0
// (adding 0 * v leaves the fma sums unchanged, which keeps results independent of the block).
#include "backends/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/gemm.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace qf::cpu {
namespace {
constexpr int64_t kQueryBlock = 16;
}

void attention(const float* q, int64_t q_stride, int64_t n_tokens, const int32_t* positions, const float* k_cache,
               const float* v_cache, int64_t kv_head_stride, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
               float scale, float* out, int64_t out_stride) {
  QF_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "attention: ", n_heads, " query heads cannot share ",
           n_kv_heads, " KV heads evenly");
  for (int64_t i = 0; i < n_tokens; ++i)
    QF_CHECK(positions[i] >= 0 && positions[i] < kv_head_stride / std::max<int64_t>(head_dim, 1),
             "attention: position ", positions[i], " of query ", i, " is outside the KV cache");
  const int64_t group = n_heads / n_kv_heads;
  const int64_t n_blocks = (n_tokens + kQueryBlock - 1) / kQueryBlock;

  parallel_for(n_kv_heads * n_blocks, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> q_rows, scores, o_rows;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t kv_head = task / n_blocks, block = task % n_blocks;
      const int64_t t0 = block * kQueryBlock, t1 = std::min(n_tokens, t0 + kQueryBlock);
      const int64_t rows = (t1 - t0) * group;
      int64_t n_keys = 0;
      for (int64_t i = t0; i < t1; ++i) n_keys = std::max<int64_t>(n_keys, positions[i] + 1);

      // Gather the group's query rows: row (i - t0) * group + g is token i, head kv_head*group+g.
      q_rows.resize(size_t(rows * head_dim));
      for (int64_t i = t0; i < t1; ++i)
        for (int64_t g = 0; g < group; ++g)
          std::copy_n(q + i * q_stride + (kv_head * group + g) * head_dim, head_dim,
                      q_rows.data() + ((i - t0) * group + g) * head_dim);

      const float* keys = k_cache + kv_head * kv_head_stride;
      const float* values = v_cache + kv_head * kv_head_stride;
      scores.resize(size_t(rows * n_keys));
      gemm(rows, n_keys, head_dim, q_rows.data(), head_dim, keys, DType::F32, head_dim, BLayout::NK, scores.data(),
           n_keys, /*parallel=*/false);

      for (int64_t r = 0; r < rows; ++r) {
        float* s = scores.data() + r * n_keys;
        const int64_t visible = positions[t0 + r / group] + 1;
        float max_s = -INFINITY;
        for (int64_t t = 0; t < visible; ++t) {
          s[t] *= scale;
          max_s = std::max(max_s, s[t]);
        }
        float sum = 0.0f;
        for (int64_t t = 0; t < visible; ++t) {
          s[t] = std::exp(s[t] - max_s);
          sum += s[t];
        }
        const float inv_sum = 1.0f / sum;
        for (int64_t t = 0; t < visible; ++t) s[t] *= inv_sum;
        std::fill(s + visible, s + n_keys, 0.0f);
      }

      o_rows.resize(size_t(rows * head_dim));
      gemm(rows, head_dim, n_keys, scores.data(), n_keys, values, DType::F32, head_dim, BLayout::KN, o_rows.data(),
           head_dim, /*parallel=*/false);
      for (int64_t i = t0; i < t1; ++i)
        for (int64_t g = 0; g < group; ++g)
          std::copy_n(o_rows.data() + ((i - t0) * group + g) * head_dim, head_dim,
                      out + i * out_stride + (kv_head * group + g) * head_dim);
    }
  });
}

}  // namespace qf::cpu
