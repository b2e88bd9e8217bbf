// Causal grouped-query prefill attention on FP8 (E4M3) tensor cores, sm_90a (wgmma). The
// engine stages a sequence's cached K/V (INT4 codes -8..7 or FP8, one scale per token and KV
// head) into contiguous E4M3 tiles and calls this; it does not read the paged cache.
//
// Semantics, per sequence s, query row i (0 .. T_s - 1, T_s = q_start[s+1] - q_start[s]), query
// head h, its KV head kvh = h / (num_heads / num_kv_heads), at position p_i = kv_len[s] - T_s + i:
//   S[i, j] = softmax_scale * q_scale[i, h] * k_scale[kvh, j] * sum_d q_code[i, d] * k_code[j, d]
//   P = softmax over the keys j = 0 .. p_i (causal)
//   out[i, d] = sum_j P[i, j] * v_scale[kvh, j] * v_code[j, d]          (stored as BF16)
// with codes decoded as E4M3 (the codes 0x7F / 0xFF are NaN and must not occur). The kernel's
// one approximation is rounding P * v_scale (times a per-row-block constant) to E4M3 for the PV
// product; attention_fp8.cu states the resulting error bound. Needs T_s <= kv_len[s].
//
// Design and measurements: docs/kernels/attention_fp8.md.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/attention.h"

namespace qf::cuda {

struct Fp8PrefillAttentionArgs {
  AttentionShape shape;  // head_dim 64 or 128
  // E4M3 codes [q rows][num_heads * head_dim]; row stride in bytes (a multiple of 16).
  const uint8_t* q = nullptr;
  int64_t q_row_stride = 0;
  const float* q_scale = nullptr;  // [q rows][num_heads]: q value = e4m3(code) * q_scale (> 0)
  const uint8_t* k = nullptr;      // E4M3 codes [num_kv_heads][kv_rows][head_dim]
  // E4M3 codes [num_kv_heads][head_dim][kv_rows]: V transposed (keys contiguous), so that PV's
  // B operand is K-major as wgmma requires for 8-bit types.
  const uint8_t* vt = nullptr;
  const float* k_scale = nullptr;  // [num_kv_heads][kv_rows]
  const float* v_scale = nullptr;  // [num_kv_heads][kv_rows]
  int64_t kv_rows = 0;             // row capacity of k / vt / scales, a multiple of 128
  __nv_bfloat16* out = nullptr;    // [q rows][out_row_stride] elements (stride a multiple of 8)
  int64_t out_row_stride = 0;
  int num_seqs = 0;
  // Device arrays. Sequence s: query rows q_start[s] .. q_start[s+1] - 1 ([num_seqs + 1]); keys
  // at kv rows kv_start[s] .. kv_start[s] + kv_len[s] - 1 (kv_start[s] % 128 == 0); its queries
  // are the last T_s of its kv_len[s] positions. Rows past a sequence's own counts are never
  // read or written.
  const int32_t* q_start = nullptr;
  const int32_t* kv_start = nullptr;
  const int32_t* kv_len = nullptr;
  int max_q_len = 0;  // host: the largest T_s (sizes the grid)
  // Software pipeline of each consumer warpgroup (docs/kernels/attention_fp8.md):
  // 2: FlashAttention-3's (QK^T of block j, then PV of block j-1 under softmax(j));
  // 3: FireQ's (softmax(j) under both QK^T(j+1) and PV(j-1)).
  int stages = 3;
};

// The first launch of each `stages` variant raises its dynamic shared-memory limit (once per
// process): make it outside CUDA graph capture.
void prefill_attention_fp8(const Fp8PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace qf::cuda
