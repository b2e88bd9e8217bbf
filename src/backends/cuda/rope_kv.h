// RoPE and the KV-cache append in one pass, for the decoder block: the fused q/k/v projection
// output of each new token is read once; its query heads are rotated in place, its key heads
// rotated and written straight into the paged cache, its value heads copied there. Equal to
// rope_apply (rope.h) on q and k followed by kv_cache_append (kv_cache.h), same formulas and
// rounding (the GPU test checks it against the two); one launch instead of two and no write
// and re-read of the rotated keys, which matters most at decode, where each launch is ~2 us of a
// ~140 us block.
//
// Layout: token i's row is qkv[i * row_stride ..]: num_heads query heads, then num_kv_heads key
// heads, then num_kv_heads value heads, head_dim each. positions[i] and slots[i] (device arrays)
// as in rope_apply and kv_cache_append (slot -1: the token is rotated but not cached).
// head_dim a multiple of 16, at most 256; row_stride a multiple of 8; 16-byte aligned rows.
//
// FireQ's attention quantization (arXiv 2505.20839) rides on the same pass (RopeKvOptions):
// * k_post_rope_scale ([num_kv_heads * head_dim] F32, or null): after RoPE, key channel (h, d) is
//   multiplied by it and query channel (qh, d) divided by the entry of qh's KV head, so q.k is
//   unchanged while the keys' outlier channels shrink before quantization.
// * q_fp8: each query head row is rounded through FP8 E4M3 with its own F32 scale
//   ("fp8_e4m3:token": s = absmax / 448), as FireQ feeds queries to FP8 attention.
// * the cache's element kind (kv_cache.h): a quantized cache gets each K/V row quantized here.
// Every value passes through BF16 where the BF16 path stores it: a rotated q or k is rounded to
// BF16 first, then scaled (one IEEE multiply or divide), then rounded to the query format and
// stored as BF16 (queries) or quantized (keys); values are quantized from their BF16 input. So
// each quantized row equals formats::quantize() of (BF16 path's row) x scale, bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kv_cache.h"

namespace qf::cuda {

struct RopeKvOptions {
  const float* k_post_rope_scale = nullptr;  // device, [num_kv_heads * head_dim], or null
  bool q_fp8 = false;
};

void rope_kv_append(__nv_bfloat16* qkv, int64_t row_stride, int num_heads, int num_kv_heads, int head_dim,
                    const int32_t* positions, const int32_t* slots, int num_tokens, const double* inv_freq,
                    double attention_factor, const KvLayerView& layer, const RopeKvOptions& options,
                    cudaStream_t stream);

}  // namespace qf::cuda
