// Paged KV cache: the device layout the attention kernels read, the kernel that appends new
// K/V rows to it, and the host-side book-keeping of which physical block holds which tokens.
//
// Layout. The cache of one layer is two pools (K and V) of `num_blocks` blocks; a block holds
// kKvBlockTokens consecutive tokens of one sequence for every KV head:
//
//   pool[block][kv_head][slot][dim]      (bf16, dim fastest; slot = position % kKvBlockTokens)
//   element offset = ((block * num_kv_heads + kv_head) * kKvBlockTokens + slot) * head_dim + dim
//
// so one head's rows of a block are contiguous (kKvBlockTokens * head_dim * 2 bytes = 4 KiB at
// head dim 128): an attention CTA, which works on one KV head, reads whole 4 KiB runs.
// All layers share block ids: sequence s's token at position p lives, in every layer, in block
// block_table[s * max_blocks_per_seq + p / kKvBlockTokens], slot p % kKvBlockTokens. Unused
// table entries hold -1.
//
// A "slot id" names one token row of the pool: block * kKvBlockTokens + slot. The append kernel
// takes one slot id per new token (built on the host from the block table), so tokens of
// several sequences at different positions are appended by one launch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backends/cuda/kv_element.h"

namespace qf::cuda {

// 16 tokens per block: small enough that a sequence wastes at most 15 rows, large enough that
// one head's block is a 2-4 KiB contiguous read; the prefill key tile (64 keys) and the decode
// chunk (32 keys) are whole multiples, so a tile gathers whole blocks.
inline constexpr int kKvBlockTokens = 16;

// Row kinds (bf16, int4, fp8_e4m3) and their bytes: kv_element.h. The quantized kinds keep one
// F16 scale per row in a parallel scale pool with the same [block][kv_head][slot] order.

// Device pointers to one layer's pools (see the layout above). k and v point at the element
// pools (bf16 rows, or codes); k_scale and v_scale at the scale pools of the quantized kinds.
struct KvLayerView {
  void* k = nullptr;
  void* v = nullptr;
  int64_t num_blocks = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  KvElement element = KvElement::bf16;
  __half* k_scale = nullptr;
  __half* v_scale = nullptr;
};

// Rows (slots x KV heads) in one pool of one layer.
inline int64_t kv_pool_rows(int64_t num_blocks, int num_kv_heads) {
  return num_blocks * num_kv_heads * kKvBlockTokens;
}
// Elements in one pool of one layer.
inline int64_t kv_pool_elements(int64_t num_blocks, int num_kv_heads, int head_dim) {
  return kv_pool_rows(num_blocks, num_kv_heads) * head_dim;
}
// Bytes of one layer's K (or V) pools: elements plus, for the quantized kinds, the scales.
inline int64_t kv_pool_bytes(KvElement e, int64_t num_blocks, int num_kv_heads, int head_dim) {
  return kv_pool_rows(num_blocks, num_kv_heads) * kv_row_bytes_with_scale(e, head_dim);
}

// Writes num_tokens new rows into the cache: for token i, head h, the K row
// k[i * k_row_stride + h * head_dim + 0 .. head_dim) goes to slot slots[i] of head h (same for V).
// Strides are in elements, so K and V can sit inside a fused QKV projection output. A slot id
// of -1 skips the token (padding rows of a batch). Requires head_dim % 8 == 0 and 16-byte
// aligned rows (checked). BF16 caches only (the quantized kinds are written by rope_kv_append).
void kv_cache_append(const __nv_bfloat16* k, int64_t k_row_stride, const __nv_bfloat16* v,
                     int64_t v_row_stride, const int32_t* slots, int num_tokens,
                     const KvLayerView& layer, cudaStream_t stream);

// Dequantizes whole blocks of a quantized layer into a BF16 layer of the same shape: block
// src_blocks[i] of `from` becomes block dst_blocks[i] of `to` (device arrays of `count` ids). The
// prefill attention kernel reads BF16; the engine stages the blocks of a prefill's sequences
// through this into a scratch pool. Exact: every code times its F16 scale is a product of an
// at most 4-bit (int4) or 4-bit-significand (E4M3) number and an 11-bit one, rounded once to BF16
// (the value the BF16 path would see for the same cached number).
void kv_cache_dequantize_blocks(const KvLayerView& from, const int32_t* src_blocks, const int32_t* dst_blocks,
                                int count, const KvLayerView& to, cudaStream_t stream);

// Stages the cached K/V of a batch of sequences for the FP8 prefill kernel (attention_fp8.h),
// from a quantized layer (int4 or fp8_e4m3): sequence s's keys 0 .. kv_len[s] - 1 (block table
// row table_rows[s], or s when table_rows is null; rows of max_blocks_per_seq) become, for every
// KV head h,
//   k8[h][kv_start[s] + p][d]   the E4M3 code of the cached value's code (an INT4 code q in
//                               [-8, 7] is exact in E4M3; an FP8 code is copied)
//   vt8[h][d][kv_start[s] + p]  the same for V, transposed (keys contiguous)
//   k_scale / v_scale[h][kv_start[s] + p]   the row's F16 scale as F32
// so value = e4m3(code) x scale, exactly the cached value. kv_rows is the row capacity (a
// multiple of 128, as are the kv_start). max_kv_len (host) sizes the grid.
struct Fp8StagedKv {
  uint8_t* k8 = nullptr;
  uint8_t* vt8 = nullptr;
  float* k_scale = nullptr;
  float* v_scale = nullptr;
  int64_t kv_rows = 0;
};
void kv_cache_stage_fp8(const KvLayerView& layer, const int32_t* block_table, int max_blocks_per_seq,
                        const int32_t* table_rows, const int32_t* kv_start, const int32_t* kv_len, int num_seqs,
                        int max_kv_len, const Fp8StagedKv& out, cudaStream_t stream);

// Queries for the FP8 prefill kernel: each (row, head) vector of head_dim BF16 values of q
// (row stride q_row_stride elements) becomes E4M3 codes q8[row][head * head_dim + d] with
// q_scale[row][head] = absmax / 448 (FP8 per token and head, "fp8_e4m3:token"; an all-zero
// vector gets scale 1 and zero codes, a scale the kernel accepts).
void quantize_queries_fp8(const __nv_bfloat16* q, int64_t q_row_stride, int rows, int num_heads, int head_dim,
                          uint8_t* q8, float* q_scale, cudaStream_t stream);

// Host-side book-keeping: a free list of physical blocks and, per sequence slot, the list of
// blocks holding its tokens. It never touches device memory; the runtime uploads the tables it
// produces (block_tables()) and the slot ids of new tokens (slot_ids()).
class KvBlockManager {
 public:
  // num_blocks physical blocks shared by up to max_seqs sequences of at most max_seq_len tokens.
  KvBlockManager(int64_t num_blocks, int max_seqs, int max_seq_len);

  int max_seqs() const { return max_seqs_; }
  int max_seq_len() const { return max_seq_len_; }
  int max_blocks_per_seq() const { return max_blocks_per_seq_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Tokens sequence `seq` holds (positions 0 .. length-1).
  int length(int seq) const;

  // Makes room for positions length(seq) .. new_length-1 (allocating blocks) and sets the
  // length to new_length. Throws qf::Error, changing nothing, if blocks run out or new_length
  // exceeds max_seq_len.
  void grow(int seq, int new_length);
  // Keeps positions 0 .. new_length-1, returning blocks no longer needed.
  void truncate(int seq, int new_length);
  void release(int seq) { truncate(seq, 0); }

  // Slot ids of positions first .. first+count-1 of `seq` (all < length(seq)), for the append.
  std::vector<int32_t> slot_ids(int seq, int first, int count) const;
  // [max_seqs, max_blocks_per_seq] row-major, -1 where no block is assigned.
  std::vector<int32_t> block_tables() const;

 private:
  void check_seq(int seq) const;

  int64_t num_blocks_;
  int max_seqs_;
  int max_seq_len_;
  int max_blocks_per_seq_;
  std::vector<int32_t> free_;                // a stack: the most recently freed block is reused first
  std::vector<std::vector<int32_t>> blocks_;  // per sequence: its blocks in position order
  std::vector<int> lengths_;
};

}  // namespace qf::cuda
