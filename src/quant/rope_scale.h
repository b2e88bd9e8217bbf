// FireQ's RoPE-aware scaling of keys and queries (arXiv 2505.20839; recipe transform
// "rope_scale", quant/recipe.h). Attention only needs q.k, so any per-channel scale s with
// k' = k s and q' = q / s leaves the scores, hence the model, unchanged; what it changes is how
// well K (cached in INT4, one scale per token and KV head) and Q (FP8 per token and head)
// quantize, by flattening the keys' channel outliers.
//
// RoPE rotates channels j and j + d/2 of every head (HF "rotate_half"), so a scale applied
// before RoPE must be equal within each pair to commute with the rotation; then it can be merged
// into the q_proj/k_proj rows and costs nothing at run time:
//   pre-RoPE   per KV head h and pair j: m_hj = max over calibration tokens of the pair's norm
//              sqrt(k_j^2 + k_{j+d/2}^2) in the k_proj output (RoPE keeps each pair's norm),
//              s_hj = alpha / m_hj for both channels; k_proj rows *= s, the rows of every query
//              head reading KV head h /= s.
//   post-RoPE  per KV head, the top_k channels by max |k| after RoPE, and their pair partners,
//              get k *= beta / max|k_c| (each channel its own max) and q /= the same. It follows
//              RoPE, so it is a run-time vector per layer (the checkpoint's k_post_rope_scale,
//              io/quantized_checkpoint.h), 1 elsewhere. With both parts, the pre-RoPE scale of
//              those pairs is reset to 1 (so their post-RoPE maxima, measured on unscaled keys,
//              are the ones the scale divides by). Without the pre-RoPE part (post only), the
//              chosen channels are brought to beta / alpha x the head's level, the largest
//              pair max norm among its other pairs (what alpha stands for after the pre-RoPE
//              scale): an absolute beta = 1 on unscaled keys shrank the outliers far below the
//              other channels and the INT4 cache rounded them away (ppl 300+ on the default
//              model, docs/accuracy.md).
// With per-token scales for K and Q, alpha and beta matter only through beta / alpha (a common
// factor on a token's row is absorbed by its scale), hence FireQ's alpha = beta = 1.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/recipe.h"

namespace qf {

// The key statistics of one block over the calibration tokens.
struct KeyStatistics {
  int64_t num_kv_heads = 0, head_dim = 0, tokens = 0;
  std::vector<float> pair_norm_max;   // [num_kv_heads * head_dim/2]: max of the pair norm before RoPE
  std::vector<float> rotated_absmax;  // [num_kv_heads * head_dim]: max |k| after RoPE

  KeyStatistics(int64_t kv_heads, int64_t head_dim);
  // k_pre / k_post: `tokens` rows of num_kv_heads * head_dim keys (row stride `stride`), the
  // k_proj output and the same keys after RoPE.
  void add(const float* k_pre, const float* k_post, int64_t tokens, int64_t stride);
};

struct RopeScales {
  std::vector<float> pre;   // [num_kv_heads * head_dim], equal within each pair; empty: none
  std::vector<float> post;  // [num_kv_heads * head_dim], 1 except the chosen channels; empty: none
};

// The scales `t` asks for, from `stats` (channels with a zero or non-finite maximum keep 1).
RopeScales rope_aware_scales(const KeyStatistics& stats, const RopeScaleTransform& t);

// Merges a pre-RoPE scale into row-major q [num_heads * head_dim, cols] and k
// [num_kv_heads * head_dim, cols] (weights, or biases with cols = 1): k row (h, j) *= pre[h, j],
// q row (qh, j) /= pre[qh / (num_heads / num_kv_heads), j].
void merge_pre_rope_scale(float* q, float* k, int64_t cols, const std::vector<float>& pre, int64_t num_heads,
                          int64_t num_kv_heads, int64_t head_dim);

// The run-time half of the post-RoPE scale, after RoPE, on `tokens` rows: key channel (h, c)
// *= post[h * head_dim + c]; query channel (qh, c) /= post[(qh / (num_heads / num_kv_heads)) *
// head_dim + c]. The CPU engine and the calibration pass both call it.
void apply_post_rope_scale(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                           int64_t num_heads, int64_t num_kv_heads, int64_t head_dim);

}  // namespace qf
