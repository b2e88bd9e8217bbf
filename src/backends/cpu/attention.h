// Causal grouped-query attention on the CPU, reading a KV cache: the reference for the GPU's
// prefill (FlashAttention-style) and decode (paged) kernels.
#pragma once

#include <cstdint>

namespace qf::cpu {

// Attention of n_tokens queries of ONE sequence over that sequence's cached keys and values.
//   q:        n_tokens rows of q_stride floats; row i holds n_heads heads of head_dim values.
//   positions: query i sits at position positions[i] and attends to cache positions
//             0..positions[i] inclusive (causal mask); those must already be in the cache.
//   k_cache, v_cache: per KV head a [capacity, head_dim] block; KV head h starts at
//             k_cache + h * kv_head_stride (likewise v_cache).
//   out:      n_tokens rows of out_stride floats, same head layout as q.
// Query head j reads KV head j / (n_heads / n_kv_heads) (GQA; n_heads % n_kv_heads == 0).
// For each query row and head, in FP32:
//   s_t = (q · k_t) * scale        (the dot product summed over head_dim in order, by fma)
//   e_t = exp(s_t - max_t' s_t'),  p_t = e_t * (1 / sum_t' e_t')   for t, t' <= position
//                                  (the sum in order of t, in FP32)
//   out = sum_t p_t v_t            (summed over t in order, by fma)
// A query's result depends only on its own row, its position and the cache — not on which
// other queries are in the call — so chunked prefill and token-by-token decode agree bitwise.
void attention(const float* q, int64_t q_stride, int64_t n_tokens, const int32_t* positions, const float* k_cache,
               const float* v_cache, int64_t kv_head_stride, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
               float scale, float* out, int64_t out_stride);

}  // namespace qf::cpu
