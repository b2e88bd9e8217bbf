// Causal grouped-query attention over the paged KV cache (kv_cache.h), BF16 in and out, FP32
// softmax and accumulation. Two kernels:
//
// * prefill_attention: a chunk of T_s new query tokens per sequence s, at positions
//   past_s .. past_s + T_s - 1; query i attends to keys 0 .. past_s + i (causal). Its K/V must
//   already be in the cache (rope, then kv_cache_append, then this), so the same kernel serves a
//   first prompt (past 0), a chunked long prompt (past > 0) and a batch of prompts of different
//   lengths. FlashAttention-2 style: a CTA owns 128 query rows of one head and streams 64-key
//   tiles of K and V through shared memory (cp.async, double buffered) into BF16 tensor-core
//   MMAs with an online softmax in registers. (attention_prefill.cu)
// * decode_attention: one query token per sequence, each sequence with its own length, split
//   along the keys (flash-decoding) so that batch 1 at long context fills the GPU; one CTA
//   loads each K/V row of its split once for all query heads of its KV head (GQA), then a
//   combine kernel merges the splits. The grid depends only on (batch, heads, splits), never on
//   the lengths (read on the device), so a decode step can be captured in a CUDA graph.
//   Quantized caches (kv_element.h) are read as they are stored: FP8 rows by the same CUDA-core
//   kernel, INT4 rows by a tensor-core variant (the dot products would make the CUDA cores the
//   bottleneck at a quarter of the bytes). (attention_decode.cu)
// prefill_attention reads BF16 caches only: the engine stages a quantized cache's blocks into
// BF16 first (kv_cache_dequantize_blocks).
//
// Queries: row r of the query matrix holds head h at q[r * q_row_stride + h * head_dim ..]; the
// output is laid out the same way with out_row_stride. Strides are in elements, so queries can
// be read straight from a fused QKV projection output. Query head h reads KV head
// h / (num_heads / num_kv_heads). Scores are softmax_scale * q.k (usually 1/sqrt(head_dim)).
// Supported head dims: 64 and 128.
//
// The first launch of each kernel variant (head dim x heads per CTA) raises its dynamic
// shared-memory limit (cudaFuncSetAttribute, once per process): make that first call outside
// CUDA graph capture (a warm-up step), as usual before capturing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/kv_cache.h"

namespace qf::cuda {

struct AttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float softmax_scale = 0.0f;
};

struct PrefillAttentionArgs {
  AttentionShape shape;
  const __nv_bfloat16* q = nullptr;  // [total query rows, q_row_stride]
  int64_t q_row_stride = 0;
  __nv_bfloat16* out = nullptr;  // [total query rows, out_row_stride]
  int64_t out_row_stride = 0;
  int num_seqs = 0;
  // Device arrays. Query rows of sequence s are q_start[s] .. q_start[s+1]-1 ([num_seqs + 1],
  // non-decreasing); kv_past[s] ([num_seqs]) is the number of cached tokens before them.
  const int32_t* q_start = nullptr;
  const int32_t* kv_past = nullptr;
  // Host value: the largest q_start[s+1] - q_start[s] (sizes the grid; rows past a sequence's
  // own count are never read or written).
  int max_q_len = 0;
  KvLayerView cache;
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks_per_seq] (kv_cache.h)
  int max_blocks_per_seq = 0;
};

void prefill_attention(const PrefillAttentionArgs& args, cudaStream_t stream);

struct DecodeAttentionArgs {
  AttentionShape shape;
  const __nv_bfloat16* q = nullptr;  // [num_seqs, q_row_stride]
  int64_t q_row_stride = 0;
  __nv_bfloat16* out = nullptr;  // [num_seqs, out_row_stride]
  int64_t out_row_stride = 0;
  int num_seqs = 0;
  // Device array [num_seqs]: tokens in the cache for each sequence, the current one included
  // (it is appended before this call). A length of 0 (a padding row of a captured batch)
  // gives an output row of zeros.
  const int32_t* seq_lens = nullptr;
  KvLayerView cache;
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  // From decode_attention_num_splits; the workspace holds decode_attention_workspace_bytes.
  int num_splits = 1;
  void* workspace = nullptr;
};

// The most splits one sequence's keys are cut into (bounds the combine kernel's work).
inline constexpr int kDecodeMaxSplits = 128;

// Splits per sequence so that num_seqs x KV heads x splits CTAs give every SM about two (the
// INT4 kernel: four, its resident count), but no split is shorter than 128 keys at max_seq_len
// (longer splits amortise the combine).
int decode_attention_num_splits(int num_seqs, const AttentionShape& shape, int max_seq_len, int sm_count,
                                KvElement element = KvElement::bf16);
size_t decode_attention_workspace_bytes(int num_seqs, const AttentionShape& shape, int num_splits);

void decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream);

// Shared by both launchers: shape checks with clear messages.
void check_attention_shape(const AttentionShape& shape, const KvLayerView& cache, const char* who);

}  // namespace qf::cuda
