// Decode attention over the paged KV cache (flash-decoding). Interface in attention.h.
//
// Decode reads every cached K/V row once and does only 2 x (query heads per KV head) FLOPs per
// byte-pair, so it is bound by HBM bandwidth: the goal is to keep enough bytes in flight on
// every SM, not tensor cores.
//
// Grid: (split, KV head x head group, sequence). A sequence's keys are cut into num_splits
// ranges of equal length (rounded up to the 32-key chunk; computed on the device from the
// sequence's length, so the grid never depends on lengths). A CTA handles one range for one KV
// head and up to kHeads of the query heads that share it: each K/V row is loaded once and used
// for all of them (GQA).
//
// Inside a CTA (4 warps): the range is streamed in chunks of 32 keys through a 3-stage cp.async
// pipeline (K and V: 3 x 2 x 32 x head_dim x 2 bytes = 48 KiB at head_dim 128, i.e. 32 KiB in
// flight while one chunk is consumed). Warp w takes keys 8w .. 8w+7 of each chunk; a key's
// head_dim values are spread over head_dim/8 lanes (8 values = one 16-byte shared load each),
// so a warp works on 2 keys (head_dim 128) or 4 keys (head_dim 64) at a time. Each warp keeps
// its own online-softmax state (running max, sum, and an 8-value slice of each head's output
// per lane), updated once per chunk. At the end the 4 warps merge through shared memory and the
// CTA writes its normalised partial output and log-sum-exp (log2 domain) to the workspace.
// The combine kernel merges a sequence's splits: o = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M).
//
// Expected speed: K+V bytes = 2 x len x num_kv_heads x head_dim x 2 per layer and sequence; at
// ~3 TB/s, 4096 tokens of Llama-3-8B (8 KV heads x 128) are 16.8 MB, ~5.6 us, plus two
// launches. The partial outputs add num_heads x splits x (head_dim + 1) x 4 bytes written and
// read back, under 2% of the K/V bytes once a split holds 128 keys or more.
#include <algorithm>

#include "backends/cuda/attention.h"
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kv_quant_device.h"
#include "backends/cuda/pdl.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

// kElem: the cache's row kind (kv_element.h), bf16 or fp8_e4m3 (INT4 rows go to the tensor-core
// kernel below). FP8 rows are half the size, so they keep more chunks in flight (the same
// ~40 KiB per CTA) for the same latency hiding.
template <int kHeadDim, int kHeads, KvElement kElem>
struct DecodeTile {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kChunk = 32;  // keys per pipeline stage
  static_assert(kElem != KvElement::int4, "INT4 caches use decode_attention_int4_mma_kernel");
  static constexpr int kStages = kElem == KvElement::bf16 ? 3 : 5;
  static constexpr bool kQuantized = kElem != KvElement::bf16;
  static constexpr int kRowBytes = int(kv_row_bytes(kElem, kHeadDim));
  static constexpr int kRowGranules = kRowBytes / 16;  // 16-byte cp.async pieces per row
  // Bytes of one stage of K (or V): the rows, then (quantized) the chunk's F16 scales.
  static constexpr int kStageBytes = kChunk * kRowBytes + (kQuantized ? kChunk * 2 : 0);
  static constexpr int kLanesPerKey = kHeadDim / 8;          // 16 | 8
  static constexpr int kKeysPerStep = 32 / kLanesPerKey;     // 2 | 4
  static constexpr int kKeysPerWarp = kChunk / kWarps;       // 8
  static constexpr int kSteps = kKeysPerWarp / kKeysPerStep;  // 4 | 2
  static constexpr size_t kPipeBytes = size_t(kStages) * 2 * kStageBytes;
  // Warp merge: per warp and head, the running max, the sum and head_dim output values.
  static constexpr size_t kMergeBytes = size_t(kWarps) * kHeads * (kHeadDim + 2) * sizeof(float);
  static constexpr size_t kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static_assert(kChunk % kWarps == 0 && kKeysPerWarp % kKeysPerStep == 0, "chunk split");
  static_assert(kRowBytes % 16 == 0 && kChunk % kKvBlockTokens == 0, "16-byte rows, whole blocks per chunk");
};

struct DecodeKernelArgs {
  const bf16* q;
  int64_t q_row_stride;
  const int32_t* seq_lens;
  const uint8_t* k_pool;  // rows as kv_cache.h lays them out, for the kernel's KvElement
  const uint8_t* v_pool;
  const __half* k_scale;  // quantized kinds
  const __half* v_scale;
  const int32_t* block_table;
  int max_blocks_per_seq;
  int num_heads;
  int num_kv_heads;
  int group;        // query heads per KV head
  int head_groups;  // CTAs per KV head: ceil(group / kHeads)
  int num_splits;
  float scale_log2;  // softmax_scale * log2(e)
  float* o_partial;    // [num_seqs, num_heads, num_splits, head_dim]
  float* lse_partial;  // [num_seqs, num_heads, num_splits], log2 domain; -inf: empty split
};

// What a split CTA works on, from its block index (grid: split, KV head x head group, sequence):
// its query heads head0 .. head0 + heads - 1 and its keys begin .. end - 1 (split lengths rounded
// to the kernel's chunk, computed on the device from the sequence's length). An empty split
// writes -inf log-sum-exps for the combine and must return (empty()).
struct SplitWork {
  int seq, kv_head, head0, heads, begin, end;
  int64_t part0;  // partial-result index of (seq, head0, split); head0 + h is h * num_splits further
  __device__ SplitWork(const DecodeKernelArgs& a, int heads_per_cta, int chunk) {
    const int split = blockIdx.x;
    seq = blockIdx.z;
    kv_head = blockIdx.y / a.head_groups;
    const int head_group = blockIdx.y % a.head_groups;
    head0 = kv_head * a.group + head_group * heads_per_cta;
    heads = min(heads_per_cta, a.group - head_group * heads_per_cta);
    const int len = a.seq_lens[seq];
    const int per_split = ((len + a.num_splits - 1) / a.num_splits + chunk - 1) / chunk * chunk;
    begin = split * per_split;
    end = min(len, begin + per_split);
    part0 = (int64_t(seq) * a.num_heads + head0) * a.num_splits + split;
  }
  // True (after marking the split empty for the combine) when the split holds no key.
  __device__ bool empty(const DecodeKernelArgs& a) const {
    if (begin < end) return false;
    if (threadIdx.x < heads) a.lse_partial[part0 + int64_t(threadIdx.x) * a.num_splits] = -INFINITY;
    return true;
  }
};

// The end of a split CTA: its warps saw different keys of the split and left, per warp w and
// head row h (stride kRows), their running max s_max[w][h] (log2 domain), sum s_sum[w][h] and
// unnormalised output s_out[w][h][:]; merged here (warps that saw no key skipped) into the
// split's normalised partial output and log-sum-exp. The split holds at least one key, so the
// maximum is finite.
template <int kWarps, int kRows, int kHeadDim>
__device__ void write_merged_partials(const DecodeKernelArgs& a, const float* s_max, const float* s_sum,
                                      const float* s_out, int heads, int64_t part0) {
  for (int i = threadIdx.x; i < heads * kHeadDim; i += blockDim.x) {
    const int h = i / kHeadDim, d = i % kHeadDim;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_max[w * kRows + h]);
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = s_max[w * kRows + h];
      if (mw == -INFINITY) continue;  // this warp saw no key of the split
      const float f = exp2f(mw - mx);
      sum += f * s_sum[w * kRows + h];
      acc += f * s_out[(w * kRows + h) * kHeadDim + d];
    }
    const int64_t part = part0 + int64_t(h) * a.num_splits;
    a.o_partial[part * kHeadDim + d] = acc / sum;
    if (d == 0) a.lse_partial[part] = mx + log2f(sum);
  }
}

// This lane's 8 values of one cached row (8 dims starting at 8 * dim_vec) as floats, unscaled.
template <KvElement kElem, int kRowBytes>
__device__ __forceinline__ void load_row8(const uint8_t* rows, int key, int dim_vec, float (&out)[8]) {
  const uint8_t* p = rows + key * kRowBytes;
  if constexpr (kElem == KvElement::bf16) ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(p + dim_vec * 16), out);
  else kv_quant::fp8x8_to_float(*reinterpret_cast<const uint2*>(p + dim_vec * 8), out);
}

template <int kHeadDim, int kHeads, KvElement kElem>
__global__ void __launch_bounds__(DecodeTile<kHeadDim, kHeads, kElem>::kThreads)
    decode_attention_split_kernel(const DecodeKernelArgs a) {
  pdl_begin();
  using T = DecodeTile<kHeadDim, kHeads, kElem>;
  constexpr int kChunk = T::kChunk, kStages = T::kStages, kL = T::kLanesPerKey;
  extern __shared__ __align__(16) unsigned char smem[];
  // Stage s of K at smem + s * kStageBytes, of V kStages * kStageBytes further: kChunk rows,
  // then (quantized) kChunk F16 scales.
  uint8_t* sK = smem;
  uint8_t* sV = smem + kStages * T::kStageBytes;

  const SplitWork w(a, kHeads, kChunk);
  if (w.empty(a)) return;
  const int seq = w.seq, kv_head = w.kv_head, head0 = w.head0, heads_here = w.heads, begin = w.begin, end = w.end;
  const int64_t part0 = w.part0;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int key_lane = lane / kL;  // which key of a step this lane works on
  const int dim_vec = lane % kL;   // which 8 dims

  const int32_t* table = a.block_table + int64_t(seq) * a.max_blocks_per_seq;
  const int n_chunks = (end - begin + kChunk - 1) / kChunk;
  auto load_chunk = [&](int stage, int chunk) {
    const int first = begin + chunk * kChunk;
    uint8_t* dk = sK + stage * T::kStageBytes;
    uint8_t* dv = sV + stage * T::kStageBytes;
    for (int i = tid; i < kChunk * T::kRowGranules; i += T::kThreads) {
      const int r = i / T::kRowGranules, c = i % T::kRowGranules;
      const int key = first + r;
      const bool ok = key < end;
      int64_t off = 0;
      if (ok) {
        const int64_t block = table[key / kKvBlockTokens];
        off = ((block * a.num_kv_heads + kv_head) * kKvBlockTokens + key % kKvBlockTokens) * T::kRowBytes + c * 16;
      }
      ptx::cp_async_16(dk + r * T::kRowBytes + c * 16, a.k_pool + off, ok);
      ptx::cp_async_16(dv + r * T::kRowBytes + c * 16, a.v_pool + off, ok);
    }
    if constexpr (T::kQuantized) {
      // A block's 16 scales are 32 contiguous bytes: 2 granules per block of the chunk.
      constexpr int kScaleGranules = kChunk / kKvBlockTokens * 2;
      if (tid < kScaleGranules) {
        const int key = first + tid / 2 * kKvBlockTokens;
        const bool ok = key < end;
        int64_t row = 0;
        if (ok) row = (int64_t(table[key / kKvBlockTokens]) * a.num_kv_heads + kv_head) * kKvBlockTokens + (tid % 2) * 8;
        ptx::cp_async_16(dk + kChunk * T::kRowBytes + tid * 16, a.k_scale + row, ok);
        ptx::cp_async_16(dv + kChunk * T::kRowBytes + tid * 16, a.v_scale + row, ok);
      }
    }
  };
  // Prologue: chunks 0 .. kStages-2, one commit group each (empty groups keep the count uniform).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_chunks) load_chunk(s, s);
    ptx::cp_async_commit();
  }

  // This lane's 8 query values of each head, pre-scaled into the log2 domain.
  float q[kHeads][8];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    if (h < heads_here) {
      const uint4 raw = *reinterpret_cast<const uint4*>(a.q + int64_t(seq) * a.q_row_stride +
                                                        int64_t(head0 + h) * kHeadDim + dim_vec * 8);
      ptx::bf16x8_to_float(raw, q[h]);
#pragma unroll
      for (int d = 0; d < 8; ++d) q[h][d] *= a.scale_log2;
    } else {
#pragma unroll
      for (int d = 0; d < 8; ++d) q[h][d] = 0.0f;
    }
  }
  float m[kHeads], l[kHeads], o[kHeads][8];
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;  // sum over the keys of this lane's key group only (merged at the end)
#pragma unroll
    for (int d = 0; d < 8; ++d) o[h][d] = 0.0f;
  }

  for (int c = 0; c < n_chunks; ++c) {
    // Groups committed so far: kStages-1 + c; leaving kStages-2 in flight means chunk c landed.
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c visible to all; every warp done with chunk c-1's stage
    {
      const int next = c + kStages - 1;  // goes to the stage chunk c-1 used
      if (next < n_chunks) load_chunk(next % kStages, next);
      ptx::cp_async_commit();
    }
    const uint8_t* cK = sK + (c % kStages) * T::kStageBytes;
    const uint8_t* cV = sV + (c % kStages) * T::kStageBytes;
    const __half* cKs = reinterpret_cast<const __half*>(cK + kChunk * T::kRowBytes);
    const __half* cVs = reinterpret_cast<const __half*>(cV + kChunk * T::kRowBytes);
    const int chunk_first = begin + c * kChunk;

    float s[T::kSteps][kHeads];
#pragma unroll
    for (int i = 0; i < T::kSteps; ++i) {
      const int key = warp * T::kKeysPerWarp + i * T::kKeysPerStep + key_lane;
      float kf[8];
      load_row8<kElem, T::kRowBytes>(cK, key, dim_vec, kf);
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        float acc = 0.0f;
#pragma unroll
        for (int d = 0; d < 8; ++d) acc = fmaf(q[h][d], kf[d], acc);
        s[i][h] = acc;
      }
    }
    // Dot products: sum over the kL lanes of a key (aligned groups: xor stays inside).
#pragma unroll
    for (int off = kL / 2; off >= 1; off /= 2) {
#pragma unroll
      for (int i = 0; i < T::kSteps; ++i)
#pragma unroll
        for (int h = 0; h < kHeads; ++h) s[i][h] += __shfl_xor_sync(0xffffffffu, s[i][h], off);
    }
#pragma unroll
    for (int i = 0; i < T::kSteps; ++i) {
      if constexpr (T::kQuantized) {  // the row's scale, applied once to the reduced dot product
        const float ks = __half2float(cKs[warp * T::kKeysPerWarp + i * T::kKeysPerStep + key_lane]);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) s[i][h] *= ks;
      }
      const int key = chunk_first + warp * T::kKeysPerWarp + i * T::kKeysPerStep + key_lane;
      if (key >= end) {
#pragma unroll
        for (int h = 0; h < kHeads; ++h) s[i][h] = -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < kHeads; ++h) {
      float mx = s[0][h];
#pragma unroll
      for (int i = 1; i < T::kSteps; ++i) mx = fmaxf(mx, s[i][h]);
#pragma unroll
      for (int off = kL; off < 32; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[h], mx);
      // No valid key seen yet by this warp: keep max -inf but subtract 0 (no NaN from inf - inf).
      const float base = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m[h] - base);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int d = 0; d < 8; ++d) o[h][d] *= alpha;
#pragma unroll
      for (int i = 0; i < T::kSteps; ++i) {
        s[i][h] = exp2f(s[i][h] - base);
        l[h] += s[i][h];
      }
    }
#pragma unroll
    for (int i = 0; i < T::kSteps; ++i) {
      const int key = warp * T::kKeysPerWarp + i * T::kKeysPerStep + key_lane;
      float vf[8];
      load_row8<kElem, T::kRowBytes>(cV, key, dim_vec, vf);
      // Quantized: the value row's scale folds into the weight (p * s_v) * code.
      // (A key past the end has p = 0 but may have a garbage scale: 0 x NaN must not reach o.)
      const float vs = !T::kQuantized ? 1.0f : chunk_first + key < end ? __half2float(cVs[key]) : 0.0f;
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float w = s[i][h] * vs;
#pragma unroll
        for (int d = 0; d < 8; ++d) o[h][d] = fmaf(w, vf[d], o[h][d]);
      }
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the merge buffers

  // ---- merge the key groups of each warp (same max), then the 4 warps (different maxima) ----
  float* s_max = reinterpret_cast<float*>(smem);  // [kWarps][kHeads]
  float* s_sum = s_max + T::kWarps * kHeads;      // [kWarps][kHeads]
  float* s_out = s_sum + T::kWarps * kHeads;      // [kWarps][kHeads][kHeadDim]
#pragma unroll
  for (int h = 0; h < kHeads; ++h) {
#pragma unroll
    for (int off = kL; off < 32; off *= 2) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], off);
#pragma unroll
      for (int d = 0; d < 8; ++d) o[h][d] += __shfl_xor_sync(0xffffffffu, o[h][d], off);
    }
    if (lane == 0) {
      s_max[warp * kHeads + h] = m[h];
      s_sum[warp * kHeads + h] = l[h];
    }
    if (key_lane == 0) {
#pragma unroll
      for (int d = 0; d < 8; ++d) s_out[(warp * kHeads + h) * kHeadDim + dim_vec * 8 + d] = o[h][d];
    }
  }
  __syncthreads();
  write_merged_partials<T::kWarps, kHeads, kHeadDim>(a, s_max, s_sum, s_out, heads_here, part0);
}

// ---- INT4 caches on the tensor cores -------------------------------------------------------
// An INT4 row is 4x fewer bytes than BF16 for the same dot products, so the CUDA-core kernel
// above turns compute-bound on it (each lane spends ~4 instructions per cached value for every
// query head it serves). This variant moves the dot products to mma.sync (BF16 in, FP32
// accumulate): a CTA serves up to 16 query heads of one KV head (the M = 16 rows of an MMA, rows
// past the group zero), and each warp owns 16 keys of every 64-key chunk.
//
// The operands come straight from the packed codes in the cp.async stage, with no BF16 tile in
// between (which cost more shared-memory traffic than the codes themselves): ldmatrix reads the
// packed rows as 8x8 matrices of 16-bit units (4 codes each) and every thread turns its registers
// into BF16 MMA fragments. That fixes which dims a thread holds, so the MMAs run over permuted
// dims, which a dot product does not notice as long as both operands agree:
//   S = Q K^T   ldmatrix (non-transposed) of 8 keys x 16 bytes gives thread (g, j) = (lane / 4,
//               lane % 4) dims 32 m + 8 j .. +7 of key g (nibble i: dim + i); k-step 2 m + s takes
//               dims 32 m + 8 j + {2s, 2s + 4} (fragment slots 2j, 2j+1) and + {2s + 1, 2s + 5}
//               (slots 8+2j, 9+2j): nibbles i and i + 4 are one shift and one LOP3 away from a
//               BF16 pair (kv_quant::int4_pair_to_bf16_offset). The Q fragments are built once per
//               CTA in that order (shared memory, fragment-major).
//   O += P V    ldmatrix.trans of 8 keys x 16 bytes gives thread (g, j) keys 2j, 2j+1 x dims
//               32 m + 4 g .. +3: each of the 4 codes d is the B fragment of a "virtual" n-tile
//               (m, d) whose column g is dim 32 m + 4 g + d. The accumulators are un-permuted when
//               the warps merge.
// Conversion, ~1 instruction per 2 values (a shift and a LOP3 per pair): the nibble, offset to
// q + 8, becomes the low mantissa bits of a BF16 128.0, so a fragment holds 136 + q, never
// subtracted: S = Q.(code + 136) - 136 sum(q) with sum(q) per head, O = sum_k P'_k (code_k + 136)
// - 136 sum_k P'_k with P' the BF16-rounded P x s_v the MMA multiplied. Every product is exact in
// FP32 (8-bit x 8-bit significands), so the corrections are exact up to FP32 summation (the
// offset terms are ~20-300x the results: 5-8 of FP32's 24 bits, ~1e-5 relative).
// Error: q and the codes are exact in BF16 and S accumulates in FP32, so the scores are as exact
// as the CUDA-core kernel's; P x s_v is rounded to BF16 (2^-9 relative per term, as in prefill).
//
// Occupancy: 4 CTAs (16 warps) per SM, 128 registers a thread; the stage rows are padded by 16
// bytes so that the 8 rows of an ldmatrix phase fall in distinct bank groups.
template <int kHeadDim>
struct Int4MmaTile {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = 4;
  static constexpr int kMinBlocks = 4;
  static constexpr int kRows = 16;  // query heads per CTA (MMA M)
  static constexpr int kKeysPerWarp = 16;
  static constexpr int kChunk = kWarps * kKeysPerWarp;  // 64 keys per stage
  static constexpr int kStages = 4;
  static constexpr int kRowBytes = kHeadDim / 2;
  static constexpr int kRowStride = kRowBytes + 16;  // padded stage row (conflict-free ldmatrix)
  static constexpr int kSegs = kRowBytes / 16;        // 16-byte segments (32 dims) per row
  static constexpr int kStageBytes = kChunk * kRowStride + kChunk * 2;  // codes, then F16 scales
  static constexpr int kKTiles = kHeadDim / 16;
  static constexpr int kOTiles = kHeadDim / 8;  // virtual n-tiles (m, d): 4 per segment
  static constexpr size_t kPipeBytes = size_t(kStages) * 2 * kStageBytes;
  static constexpr size_t kMergeBytes = size_t(kWarps) * kRows * (kHeadDim + 2) * sizeof(float);
  static constexpr size_t kFirstBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static constexpr size_t kQBytes = size_t(kKTiles) * 32 * 16;  // fragment-major Q
  static constexpr size_t kSmemBytes = kFirstBytes + kQBytes;
  static_assert(kChunk % kKvBlockTokens == 0 && kRowBytes % 16 == 0 && kKTiles % 2 == 0, "layout");
};

template <int kHeadDim>
__global__ void __launch_bounds__(Int4MmaTile<kHeadDim>::kThreads, Int4MmaTile<kHeadDim>::kMinBlocks)
    decode_attention_int4_mma_kernel(const DecodeKernelArgs a) {
  pdl_begin();
  using T = Int4MmaTile<kHeadDim>;
  constexpr int kChunk = T::kChunk, kStages = T::kStages, kRS = T::kRowStride;
  constexpr float kOffset = 136.0f;  // what the fragments add to every code
  extern __shared__ __align__(16) unsigned char smem[];
  uint8_t* sK = smem;                               // [kStages] x (rows, scales)
  uint8_t* sV = smem + kStages * T::kStageBytes;   // [kStages] x (rows, scales)
  uint4* sQ = reinterpret_cast<uint4*>(smem + T::kFirstBytes);  // [kKTiles][32 lanes] A fragments
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  const int g = lane / 4, j = lane % 4;

  const SplitWork sw(a, T::kRows, kChunk);
  if (sw.empty(a)) return;
  const int seq = sw.seq, kv_head = sw.kv_head, head0 = sw.head0, heads_here = sw.heads, begin = sw.begin,
            end = sw.end;
  const int64_t part0 = sw.part0;

  const int32_t* table = a.block_table + int64_t(seq) * a.max_blocks_per_seq;
  const int n_chunks = (end - begin + kChunk - 1) / kChunk;
  // A chunk spans kBlocks cache blocks. Their table entries are read one chunk ahead of the
  // cp.async that needs them (the copies' addresses would otherwise wait a global-memory latency
  // in every iteration); every thread holds all of them (one cached line, no divergence).
  constexpr int kBlocks = kChunk / kKvBlockTokens;
  auto read_blocks = [&](int chunk, int32_t (&blk)[kBlocks]) {
    const int first_block = (begin + chunk * kChunk) / kKvBlockTokens;
#pragma unroll
    for (int b = 0; b < kBlocks; ++b) {
      const bool ok = chunk < n_chunks && (first_block + b) * kKvBlockTokens < end;
      blk[b] = ok ? table[first_block + b] : 0;
    }
  };
  // blk[b] for a b known only at run time, without indexing a register array (local memory).
  auto pick = [](const int32_t (&blk)[kBlocks], int b) {
    int32_t e = blk[0];
#pragma unroll
    for (int i = 1; i < kBlocks; ++i) e = b == i ? blk[i] : e;
    return e;
  };
  auto load_chunk = [&](int stage, int chunk, const int32_t (&blk)[kBlocks]) {
    const int first = begin + chunk * kChunk;
    uint8_t* dk = sK + stage * T::kStageBytes;
    uint8_t* dv = sV + stage * T::kStageBytes;
    // A fixed count per thread, so the loop unrolls and the divisions become shifts (written as
    // a stride loop from tid it compiled to a generic loop of ~200 instructions per chunk).
    static_assert(kChunk * T::kSegs % T::kThreads == 0, "whole copies per thread");
#pragma unroll
    for (int it = 0; it < kChunk * T::kSegs / T::kThreads; ++it) {
      const int i = tid + it * T::kThreads;
      const int r = i / T::kSegs, c = i % T::kSegs;
      const bool ok = first + r < end;
      const int64_t off = ok ? ((int64_t(pick(blk, r / kKvBlockTokens)) * a.num_kv_heads + kv_head) * kKvBlockTokens +
                                r % kKvBlockTokens) * T::kRowBytes + c * 16
                             : 0;
      ptx::cp_async_16(dk + r * kRS + c * 16, a.k_pool + off, ok);
      ptx::cp_async_16(dv + r * kRS + c * 16, a.v_pool + off, ok);
    }
    if (tid < kBlocks * 2) {  // a block's 16 F16 scales: 2 granules
      const int b = tid / 2;
      const bool ok = first + b * kKvBlockTokens < end;
      const int64_t row = ok ? (int64_t(pick(blk, b)) * a.num_kv_heads + kv_head) * kKvBlockTokens + (tid % 2) * 8 : 0;
      ptx::cp_async_16(dk + kChunk * kRS + tid * 16, a.k_scale + row, ok);
      ptx::cp_async_16(dv + kChunk * kRS + tid * 16, a.v_scale + row, ok);
    }
  };
  int32_t blk[kBlocks];
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_chunks) {
      read_blocks(s, blk);
      load_chunk(s, s, blk);
    }
    ptx::cp_async_commit();
  }
  read_blocks(kStages - 1, blk);  // the next chunk to load (kStages - 1)

  // Q's A fragments in the permuted k order (see above), built by warp 0 (rows past heads_here
  // zero), and sum(q) of rows g and g + 8 for the K offset's correction: exactly the BF16 values
  // the MMAs multiply, summed in FP32 (the 4 lanes of a row group hold all of its dims).
  const bf16* q0 = a.q + int64_t(seq) * a.q_row_stride + int64_t(head0) * kHeadDim;
  float q_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int m = 0; m < T::kSegs; ++m) {
    // Dims 32 m + 8 j .. +7 of rows g and g + 8 (16-bit units u0 .. u7 in x.lo, x.hi, y.lo, ..).
    uint4 r0 = make_uint4(0u, 0u, 0u, 0u), r1 = r0;
    const int64_t d0 = 32 * m + 8 * j;
    if (g < heads_here) r0 = *reinterpret_cast<const uint4*>(q0 + int64_t(g) * kHeadDim + d0);
    if (g + 8 < heads_here) r1 = *reinterpret_cast<const uint4*>(q0 + int64_t(g + 8) * kHeadDim + d0);
    if (warp == 0) {
      // k-step 2m + s: slots 2j, 2j+1 = dims (2s, 2s+4), slots 2j+8, 2j+9 = dims (2s+1, 2s+5).
      sQ[(2 * m) * 32 + lane] = make_uint4(__byte_perm(r0.x, r0.z, 0x5410), __byte_perm(r1.x, r1.z, 0x5410),
                                           __byte_perm(r0.x, r0.z, 0x7632), __byte_perm(r1.x, r1.z, 0x7632));
      sQ[(2 * m + 1) * 32 + lane] = make_uint4(__byte_perm(r0.y, r0.w, 0x5410), __byte_perm(r1.y, r1.w, 0x5410),
                                               __byte_perm(r0.y, r0.w, 0x7632), __byte_perm(r1.y, r1.w, 0x7632));
    }
    const uint32_t w0[4] = {r0.x, r0.y, r0.z, r0.w}, w1[4] = {r1.x, r1.y, r1.z, r1.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 a0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w0[e]));
      const float2 b0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w1[e]));
      q_sum[0] += a0.x + a0.y;
      q_sum[1] += b0.x + b0.y;
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    q_sum[r] += __shfl_xor_sync(0xffffffffu, q_sum[r], 1);
    q_sum[r] += __shfl_xor_sync(0xffffffffu, q_sum[r], 2);
    q_sum[r] *= kOffset;
  }

  float o_acc[T::kOTiles][4];
#pragma unroll
  for (int t = 0; t < T::kOTiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) o_acc[t][e] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // rows g and g + 8
  float p_sum[2] = {0.0f, 0.0f};  // sum of the BF16 P' this lane fed the PV MMAs (V offset correction)

  for (int c = 0; c < n_chunks; ++c) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c (and, the first time, sQ) visible; chunk c-1's stage free
    {
      const int next = c + kStages - 1;
      if (next < n_chunks) load_chunk(next % kStages, next, blk);
      ptx::cp_async_commit();
      read_blocks(next + 1, blk);  // lands while this chunk is computed
    }
    const uint8_t* cK = sK + (c % kStages) * T::kStageBytes;
    const uint8_t* cV = sV + (c % kStages) * T::kStageBytes;
    const __half* cKs = reinterpret_cast<const __half*>(cK + kChunk * kRS);
    const __half* cVs = reinterpret_cast<const __half*>(cV + kChunk * kRS);
    const int key0 = warp * T::kKeysPerWarp;  // this warp's first key in the chunk

    // S = Q (K + 136): per n-tile nt (keys key0 + 8 nt ..), kSegs words per thread from ldmatrix.
    float s[2][4] = {};
    uint32_t kw[2 * T::kSegs];  // [nt * kSegs + m]
#pragma unroll
    for (int q = 0; q < 2 * T::kSegs / 4; ++q) {
      const int mi = 4 * q + lane / 8, nt = mi / T::kSegs, m = mi % T::kSegs;
      uint32_t r[4];
      ptx::ldmatrix_x4(r, cK + (key0 + 8 * nt + lane % 8) * kRS + 16 * m);
#pragma unroll
      for (int e = 0; e < 4; ++e) kw[4 * q + e] = r[e];
    }
#pragma unroll
    for (int m = 0; m < T::kSegs; ++m) {
      const uint4 qa0 = sQ[(2 * m) * 32 + lane], qa1 = sQ[(2 * m + 1) * 32 + lane];
      const uint32_t qf0[4] = {qa0.x, qa0.y, qa0.z, qa0.w}, qf1[4] = {qa1.x, qa1.y, qa1.z, qa1.w};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const uint32_t w = kw[nt * T::kSegs + m];
        using kv_quant::int4_pair_to_bf16_offset;
        // k-step 2m: dims (0, 4) and (1, 5) of the thread's 8; k-step 2m+1: (2, 6) and (3, 7).
        ptx::mma_bf16_16816(s[nt], qf0, int4_pair_to_bf16_offset(w, 0), int4_pair_to_bf16_offset(w, 1));
        ptx::mma_bf16_16816(s[nt], qf1, int4_pair_to_bf16_offset(w, 2), int4_pair_to_bf16_offset(w, 3));
      }
    }

    // Offset correction, scale (softmax scale in the log2 domain x the key's F16 scale), mask.
    const int chunk_first = begin + c * kChunk;
    const int c2 = 2 * j;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + nt * 8 + c2 + (e % 2);
        s[nt][e] = chunk_first + key < end ? (s[nt][e] - q_sum[e / 2]) * a.scale_log2 * __half2float(cKs[key])
                                           : -INFINITY;
      }
    float v_scale[2][2];  // the value scale of this lane's keys (0 past the end: p = 0, scale maybe garbage)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = key0 + nt * 8 + c2 + e;
        v_scale[nt][e] = chunk_first + key < end ? __half2float(cVs[key]) : 0.0f;
      }
    uint32_t p_frag[4];
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[r], mx);
      base[r] = m_new == -INFINITY ? 0.0f : m_new;
      alpha[r] = exp2f(row_max[r] - base[r]);
      row_max[r] = m_new;
      row_sum[r] *= alpha[r];
      p_sum[r] *= alpha[r];
    }
    // Once the running maxima settle (after the first chunks of a long context) alpha is 1 for
    // every row: skip the accumulators' rescale then (warp-uniform test; 64 multiplies a chunk).
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int t = 0; t < T::kOTiles; ++t) {
        o_acc[t][0] *= alpha[0];
        o_acc[t][1] *= alpha[0];
        o_acc[t][2] *= alpha[1];
        o_acc[t][3] *= alpha[1];
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float p0 = exp2f(s[nt][2 * r] - base[r]), p1 = exp2f(s[nt][2 * r + 1] - base[r]);
        row_sum[r] += p0 + p1;
        const __nv_bfloat162 pv = __floats2bfloat162_rn(p0 * v_scale[nt][0], p1 * v_scale[nt][1]);
        const float2 pf = __bfloat1622float2(pv);  // exactly what the MMA multiplies
        p_sum[r] += pf.x + pf.y;
        p_frag[2 * nt + r] = *reinterpret_cast<const uint32_t*>(&pv);
      }
    }
    // O += P' (V + 136) over this warp's 16 keys: P' as one A fragment (k = keys). Per segment
    // pair, one ldmatrix.trans of matrices (keys 0-7, seg m), (keys 8-15, seg m), (.., m+1).
#pragma unroll
    for (int q = 0; q < T::kSegs / 2; ++q) {
      uint32_t r[4];
      const int mi = lane / 8;
      ptx::ldmatrix_x4_trans(r, cV + (key0 + 8 * (mi % 2) + lane % 8) * kRS + 16 * (2 * q + mi / 2));
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // segment m = 2q + h: registers r[2h] (keys 0-7), r[2h+1] (keys 8-15)
#pragma unroll
        for (int d = 0; d < 4; ++d) {
          const uint32_t b0 = kv_quant::int4_pair_to_bf16_offset(r[2 * h], d);
          const uint32_t b1 = kv_quant::int4_pair_to_bf16_offset(r[2 * h + 1], d);
          ptx::mma_bf16_16816(o_acc[(2 * q + h) * 4 + d], p_frag, b0, b1);
        }
      }
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the merge buffers

  // Merge the 4 warps (each saw different keys): rows g and g + 8 of each warp's state, the
  // virtual n-tiles un-permuted: tile (m, d) column 2j + e is dim 32 m + 4 (2j + e) + d.
  float* s_max = reinterpret_cast<float*>(smem);     // [kWarps][kRows]
  float* s_sum = s_max + T::kWarps * T::kRows;       // [kWarps][kRows]
  float* s_out = s_sum + T::kWarps * T::kRows;       // [kWarps][kRows][kHeadDim]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int off = 1; off <= 2; off *= 2) {
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], off);
      p_sum[r] += __shfl_xor_sync(0xffffffffu, p_sum[r], off);
    }
    const float correction = kOffset * p_sum[r];
    const int row = g + 8 * r;
    if (j == 0) {
      s_max[warp * T::kRows + row] = row_max[r];
      s_sum[warp * T::kRows + row] = row_sum[r];
    }
    float* out_row = s_out + (warp * T::kRows + row) * kHeadDim;
#pragma unroll
    for (int t = 0; t < T::kOTiles; ++t) {
      const int m = t / 4, d = t % 4;
      out_row[32 * m + 4 * (2 * j) + d] = o_acc[t][2 * r] - correction;
      out_row[32 * m + 4 * (2 * j + 1) + d] = o_acc[t][2 * r + 1] - correction;
    }
  }
  __syncthreads();
  write_merged_partials<T::kWarps, T::kRows, kHeadDim>(a, s_max, s_sum, s_out, heads_here, part0);
}

// One CTA per (head, sequence), one thread per output dim. Two global-memory round trips: warp 0
// reads the splits' log-sum-exps at once (lanes take splits l, l + 32, ..) and leaves each split's
// weight 2^(lse_s - M) in shared memory, then every thread reads its dim of all partial outputs at
// once. (Reading the log-sum-exps in two dependent loops, as the first version did, cost ~1 us
// more of a batch-1 decode step's ~14 us per layer.) Empty splits (lse -inf) weigh 0 and their
// never-written partials are not read.
__global__ void decode_attention_combine_kernel(const float* __restrict__ o_partial,
                                                const float* __restrict__ lse_partial,
                                                bf16* __restrict__ out, int64_t out_row_stride,
                                                int num_heads, int num_splits, int head_dim) {
  constexpr int kPerLane = kDecodeMaxSplits / 32;
  __shared__ float s_weight[kDecodeMaxSplits];
  __shared__ float s_sum;
  pdl_begin();
  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int d = threadIdx.x;
  const int64_t p0 = (int64_t(seq) * num_heads + head) * num_splits;
  if (threadIdx.x < 32) {
    float lse[kPerLane];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int s = threadIdx.x + 32 * i;
      lse[i] = s < num_splits ? lse_partial[p0 + s] : -INFINITY;
      mx = fmaxf(mx, lse[i]);
    }
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int s = threadIdx.x + 32 * i;
      const float w = lse[i] == -INFINITY ? 0.0f : exp2f(lse[i] - mx);
      if (s < num_splits) s_weight[s] = w;
      sum += w;
    }
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (threadIdx.x == 0) s_sum = sum;  // 0: an empty sequence (length 0), which gives zeros
  }
  __syncthreads();
  float acc = 0.0f;
#pragma unroll 8
  for (int s = 0; s < num_splits; ++s) {
    const float w = s_weight[s];
    if (w != 0.0f) acc += w * o_partial[(p0 + s) * head_dim + d];
  }
  const float sum = s_sum;
  out[int64_t(seq) * out_row_stride + int64_t(head) * head_dim + d] = __float2bfloat16_rn(sum > 0.0f ? acc / sum : 0.0f);
}

// Query heads per CTA: the group size rounded up to 1, 2, 4 or 8; larger groups use several
// CTAs per KV head (each still loading the KV rows once for its 8 heads).
int heads_per_cta(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

template <int kHeadDim, int kHeads, KvElement kElem>
void launch_split(const DecodeKernelArgs& ka, int num_seqs, cudaStream_t stream) {
  using T = DecodeTile<kHeadDim, kHeads, kElem>;
  static const bool smem_configured = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_split_kernel<kHeadDim, kHeads, kElem>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(T::kSmemBytes)));
    return true;
  }();
  (void)smem_configured;
  const dim3 grid(ka.num_splits, ka.num_kv_heads * ka.head_groups, num_seqs);
  launch_pdl(decode_attention_split_kernel<kHeadDim, kHeads, kElem>, grid, dim3(T::kThreads), T::kSmemBytes, stream, ka);
}

template <int kHeadDim, KvElement kElem>
void launch_split_heads(const DecodeKernelArgs& ka, int num_seqs, int heads, cudaStream_t stream) {
  switch (heads) {
    case 1: launch_split<kHeadDim, 1, kElem>(ka, num_seqs, stream); break;
    case 2: launch_split<kHeadDim, 2, kElem>(ka, num_seqs, stream); break;
    case 4: launch_split<kHeadDim, 4, kElem>(ka, num_seqs, stream); break;
    default: launch_split<kHeadDim, 8, kElem>(ka, num_seqs, stream); break;
  }
}

template <int kHeadDim>
void launch_int4_mma(DecodeKernelArgs ka, int num_seqs, cudaStream_t stream) {
  using T = Int4MmaTile<kHeadDim>;
  static const bool smem_configured = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_int4_mma_kernel<kHeadDim>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(T::kSmemBytes)));
    return true;
  }();
  (void)smem_configured;
  ka.head_groups = (ka.group + T::kRows - 1) / T::kRows;
  const dim3 grid(ka.num_splits, ka.num_kv_heads * ka.head_groups, num_seqs);
  launch_pdl(decode_attention_int4_mma_kernel<kHeadDim>, grid, dim3(T::kThreads), T::kSmemBytes, stream, ka);
}

template <int kHeadDim>
void launch_split_dim(const DecodeKernelArgs& ka, int num_seqs, int heads, KvElement elem, cudaStream_t stream) {
  switch (elem) {
    case KvElement::bf16: launch_split_heads<kHeadDim, KvElement::bf16>(ka, num_seqs, heads, stream); break;
    case KvElement::int4: launch_int4_mma<kHeadDim>(ka, num_seqs, stream); break;
    case KvElement::fp8_e4m3: launch_split_heads<kHeadDim, KvElement::fp8_e4m3>(ka, num_seqs, heads, stream); break;
  }
}

size_t partial_floats(int num_seqs, const AttentionShape& shape, int num_splits) {
  return size_t(num_seqs) * size_t(shape.num_heads) * size_t(num_splits) * size_t(shape.head_dim);
}

}  // namespace

int decode_attention_num_splits(int num_seqs, const AttentionShape& shape, int max_seq_len, int sm_count,
                                KvElement element) {
  QF_CHECK(num_seqs > 0 && shape.num_kv_heads > 0 && shape.num_heads >= shape.num_kv_heads && sm_count > 0,
           "decode_attention_num_splits: bad arguments");
  const int group = shape.num_heads / shape.num_kv_heads;
  const bool int4 = element == KvElement::int4;
  const int heads = int4 ? Int4MmaTile<128>::kRows : heads_per_cta(group);
  const int64_t ctas_per_split = int64_t(num_seqs) * shape.num_kv_heads * ((group + heads - 1) / heads);
  // About two CTAs per SM (one streams while the other finishes or merges); the INT4 kernel, which
  // hides latency with more warps, four.
  // The INT4 kernel's CTAs all fit at once (kMinBlocks per SM): its count is rounded to the nearest
  // whole wave rather than up, since a second, mostly empty wave costs nearly a full one.
  const int64_t per_sm = int4 ? Int4MmaTile<128>::kMinBlocks : 2;
  const int64_t slots = per_sm * int64_t(sm_count);
  const int64_t for_occupancy = int4 ? std::max<int64_t>(1, (2 * slots + ctas_per_split) / (2 * ctas_per_split))
                                     : (slots + ctas_per_split - 1) / ctas_per_split;
  // At least 128 keys per split: shorter splits spend more on the merge than they save.
  const int64_t for_length = std::max<int64_t>(1, (int64_t(max_seq_len) + 127) / 128);
  return static_cast<int>(std::clamp<int64_t>(std::min(for_occupancy, for_length), 1, kDecodeMaxSplits));
}

size_t decode_attention_workspace_bytes(int num_seqs, const AttentionShape& shape, int num_splits) {
  const size_t lse = size_t(num_seqs) * size_t(shape.num_heads) * size_t(num_splits);
  return (partial_floats(num_seqs, shape, num_splits) + lse) * sizeof(float);
}

void decode_attention(const DecodeAttentionArgs& args, cudaStream_t stream) {
  check_attention_shape(args.shape, args.cache, "decode_attention");
  QF_CHECK(args.num_seqs >= 0 && args.num_seqs <= 65535, "decode_attention: num_seqs ",
           args.num_seqs, " outside [0, 65535]");
  if (args.num_seqs == 0) return;
  QF_CHECK(args.num_splits >= 1 && args.num_splits <= kDecodeMaxSplits, "decode_attention: num_splits ",
           args.num_splits, " outside [1, ", kDecodeMaxSplits, "]");
  const int64_t row = int64_t(args.shape.num_heads) * args.shape.head_dim;
  QF_CHECK(args.q_row_stride >= row && args.out_row_stride >= row && args.q_row_stride % 8 == 0,
           "decode_attention: row strides (", args.q_row_stride, ", ", args.out_row_stride,
           ") must be at least num_heads * head_dim = ", row, " (q's a multiple of 8)");
  QF_CHECK(args.q && args.out && aligned16(args.q), "decode_attention: q must be a 16-byte aligned device pointer");
  QF_CHECK(args.seq_lens && args.block_table && args.max_blocks_per_seq > 0,
           "decode_attention: missing seq_lens or block table");
  QF_CHECK(args.workspace && aligned16(args.workspace), "decode_attention: missing or misaligned workspace (",
           decode_attention_workspace_bytes(args.num_seqs, args.shape, args.num_splits), " bytes needed)");
  const int group = args.shape.num_heads / args.shape.num_kv_heads;
  const int heads = heads_per_cta(group);
  float* o_partial = static_cast<float*>(args.workspace);
  float* lse_partial = o_partial + partial_floats(args.num_seqs, args.shape, args.num_splits);
  const DecodeKernelArgs ka{args.q,
                            args.q_row_stride,
                            args.seq_lens,
                            static_cast<const uint8_t*>(args.cache.k),
                            static_cast<const uint8_t*>(args.cache.v),
                            args.cache.k_scale,
                            args.cache.v_scale,
                            args.block_table,
                            args.max_blocks_per_seq,
                            args.shape.num_heads,
                            args.shape.num_kv_heads,
                            group,
                            (group + heads - 1) / heads,
                            args.num_splits,
                            static_cast<float>(args.shape.softmax_scale * 1.4426950408889634),
                            o_partial,
                            lse_partial};
  if (args.shape.head_dim == 64) launch_split_dim<64>(ka, args.num_seqs, heads, args.cache.element, stream);
  else launch_split_dim<128>(ka, args.num_seqs, heads, args.cache.element, stream);
  const dim3 grid(args.shape.num_heads, args.num_seqs);
  launch_pdl(decode_attention_combine_kernel, grid, dim3(args.shape.head_dim), 0, stream,
             static_cast<const float*>(o_partial), static_cast<const float*>(lse_partial), args.out,
             args.out_row_stride, args.shape.num_heads, args.num_splits, args.shape.head_dim);
}

}  // namespace qf::cuda
