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
#include "backends/cuda/pdl.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

template <int kHeadDim, int kHeads>
struct DecodeTile {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kChunk = 32;  // keys per pipeline stage
  static constexpr int kStages = 3;
  static constexpr int kLanesPerKey = kHeadDim / 8;          // 16 | 8
  static constexpr int kKeysPerStep = 32 / kLanesPerKey;     // 2 | 4
  static constexpr int kKeysPerWarp = kChunk / kWarps;       // 8
  static constexpr int kSteps = kKeysPerWarp / kKeysPerStep;  // 4 | 2
  static constexpr int kStageElems = kChunk * kHeadDim;      // one of K or V, one stage
  static constexpr size_t kPipeBytes = size_t(kStages) * 2 * kStageElems * sizeof(bf16);
  // Warp merge: per warp and head, the running max, the sum and head_dim output values.
  static constexpr size_t kMergeBytes = size_t(kWarps) * kHeads * (kHeadDim + 2) * sizeof(float);
  static constexpr size_t kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static_assert(kChunk % kWarps == 0 && kKeysPerWarp % kKeysPerStep == 0, "chunk split");
};

struct DecodeKernelArgs {
  const bf16* q;
  int64_t q_row_stride;
  const int32_t* seq_lens;
  const bf16* k_pool;
  const bf16* v_pool;
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

template <int kHeadDim, int kHeads>
__global__ void __launch_bounds__(DecodeTile<kHeadDim, kHeads>::kThreads)
    decode_attention_split_kernel(const DecodeKernelArgs a) {
  pdl_begin();
  using T = DecodeTile<kHeadDim, kHeads>;
  constexpr int kChunk = T::kChunk, kStages = T::kStages, kL = T::kLanesPerKey;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);  // [kStages][kChunk][kHeadDim]
  bf16* sV = sK + kStages * T::kStageElems;  // [kStages][kChunk][kHeadDim]

  const int split = blockIdx.x;
  const int seq = blockIdx.z;
  const int kv_head = blockIdx.y / a.head_groups;
  const int head_group = blockIdx.y % a.head_groups;
  const int head0 = kv_head * a.group + head_group * kHeads;
  const int heads_here = min(kHeads, a.group - head_group * kHeads);
  const int len = a.seq_lens[seq];
  const int per_split = ((len + a.num_splits - 1) / a.num_splits + kChunk - 1) / kChunk * kChunk;
  const int begin = split * per_split;
  const int end = min(len, begin + per_split);
  // Partial-result index of (seq, head0, split); head0 + h is h * num_splits further.
  const int64_t part0 = (int64_t(seq) * a.num_heads + head0) * a.num_splits + split;
  if (begin >= end) {
    if (threadIdx.x < heads_here) a.lse_partial[part0 + int64_t(threadIdx.x) * a.num_splits] = -INFINITY;
    return;
  }

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int key_lane = lane / kL;  // which key of a step this lane works on
  const int dim_vec = lane % kL;   // which 8 dims

  const int32_t* table = a.block_table + int64_t(seq) * a.max_blocks_per_seq;
  const int n_chunks = (end - begin + kChunk - 1) / kChunk;
  auto load_chunk = [&](int stage, int chunk) {
    const int first = begin + chunk * kChunk;
    bf16* dk = sK + stage * T::kStageElems;
    bf16* dv = sV + stage * T::kStageElems;
    for (int i = tid; i < kChunk * kL; i += T::kThreads) {
      const int r = i / kL, c = i % kL;
      const int key = first + r;
      const bool ok = key < end;
      int64_t off = 0;
      if (ok) {
        const int64_t block = table[key / kKvBlockTokens];
        off = ((block * a.num_kv_heads + kv_head) * kKvBlockTokens + key % kKvBlockTokens) * kHeadDim + c * 8;
      }
      ptx::cp_async_16(dk + r * kHeadDim + c * 8, a.k_pool + off, ok);
      ptx::cp_async_16(dv + r * kHeadDim + c * 8, a.v_pool + off, ok);
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
    const bf16* cK = sK + (c % kStages) * T::kStageElems;
    const bf16* cV = sV + (c % kStages) * T::kStageElems;
    const int chunk_first = begin + c * kChunk;

    float s[T::kSteps][kHeads];
#pragma unroll
    for (int i = 0; i < T::kSteps; ++i) {
      const int key = warp * T::kKeysPerWarp + i * T::kKeysPerStep + key_lane;
      float kf[8];
      ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(cK + key * kHeadDim + dim_vec * 8), kf);
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
      ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(cV + key * kHeadDim + dim_vec * 8), vf);
#pragma unroll
      for (int h = 0; h < kHeads; ++h)
#pragma unroll
        for (int d = 0; d < 8; ++d) o[h][d] = fmaf(s[i][h], vf[d], o[h][d]);
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
  for (int i = tid; i < heads_here * kHeadDim; i += T::kThreads) {
    const int h = i / kHeadDim, d = i % kHeadDim;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < T::kWarps; ++w) mx = fmaxf(mx, s_max[w * kHeads + h]);
    // mx is finite: the split holds at least one key and some warp saw it.
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < T::kWarps; ++w) {
      const float mw = s_max[w * kHeads + h];
      if (mw == -INFINITY) continue;  // this warp saw no key of the split
      const float f = exp2f(mw - mx);
      sum += f * s_sum[w * kHeads + h];
      acc += f * s_out[(w * kHeads + h) * kHeadDim + d];
    }
    const int64_t part = part0 + int64_t(h) * a.num_splits;
    a.o_partial[part * kHeadDim + d] = acc / sum;
    if (d == 0) a.lse_partial[part] = mx + log2f(sum);
  }
}

// One CTA per (head, sequence), one thread per output dim.
__global__ void decode_attention_combine_kernel(const float* __restrict__ o_partial,
                                                const float* __restrict__ lse_partial,
                                                bf16* __restrict__ out, int64_t out_row_stride,
                                                int num_heads, int num_splits, int head_dim) {
  pdl_begin();
  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int d = threadIdx.x;
  const int64_t p0 = (int64_t(seq) * num_heads + head) * num_splits;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, lse_partial[p0 + s]);
  float result = 0.0f;  // an empty sequence (length 0) gives zeros
  if (mx != -INFINITY) {
    float sum = 0.0f, acc = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      const float lse = lse_partial[p0 + s];
      if (lse == -INFINITY) continue;  // empty split: its partial output was never written
      const float w = exp2f(lse - mx);
      sum += w;
      acc += w * o_partial[(p0 + s) * head_dim + d];
    }
    result = acc / sum;
  }
  out[int64_t(seq) * out_row_stride + int64_t(head) * head_dim + d] = __float2bfloat16_rn(result);
}

// Query heads per CTA: the group size rounded up to 1, 2, 4 or 8; larger groups use several
// CTAs per KV head (each still loading the KV rows once for its 8 heads).
int heads_per_cta(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

template <int kHeadDim, int kHeads>
void launch_split(const DecodeKernelArgs& ka, int num_seqs, cudaStream_t stream) {
  using T = DecodeTile<kHeadDim, kHeads>;
  static const bool smem_configured = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_split_kernel<kHeadDim, kHeads>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(T::kSmemBytes)));
    return true;
  }();
  (void)smem_configured;
  const dim3 grid(ka.num_splits, ka.num_kv_heads * ka.head_groups, num_seqs);
  launch_pdl(decode_attention_split_kernel<kHeadDim, kHeads>, grid, dim3(T::kThreads), T::kSmemBytes, stream, ka);
}

template <int kHeadDim>
void launch_split_dim(const DecodeKernelArgs& ka, int num_seqs, int heads, cudaStream_t stream) {
  switch (heads) {
    case 1: launch_split<kHeadDim, 1>(ka, num_seqs, stream); break;
    case 2: launch_split<kHeadDim, 2>(ka, num_seqs, stream); break;
    case 4: launch_split<kHeadDim, 4>(ka, num_seqs, stream); break;
    default: launch_split<kHeadDim, 8>(ka, num_seqs, stream); break;
  }
}

size_t partial_floats(int num_seqs, const AttentionShape& shape, int num_splits) {
  return size_t(num_seqs) * size_t(shape.num_heads) * size_t(num_splits) * size_t(shape.head_dim);
}

}  // namespace

int decode_attention_num_splits(int num_seqs, const AttentionShape& shape, int max_seq_len, int sm_count) {
  QF_CHECK(num_seqs > 0 && shape.num_kv_heads > 0 && shape.num_heads >= shape.num_kv_heads && sm_count > 0,
           "decode_attention_num_splits: bad arguments");
  const int group = shape.num_heads / shape.num_kv_heads;
  const int heads = heads_per_cta(group);
  const int64_t ctas_per_split = int64_t(num_seqs) * shape.num_kv_heads * ((group + heads - 1) / heads);
  // About two CTAs per SM: one streams while the other finishes or merges.
  const int64_t for_occupancy = (2 * int64_t(sm_count) + ctas_per_split - 1) / ctas_per_split;
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
                            args.cache.k,
                            args.cache.v,
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
  if (args.shape.head_dim == 64) launch_split_dim<64>(ka, args.num_seqs, heads, stream);
  else launch_split_dim<128>(ka, args.num_seqs, heads, stream);
  const dim3 grid(args.shape.num_heads, args.num_seqs);
  launch_pdl(decode_attention_combine_kernel, grid, dim3(args.shape.head_dim), 0, stream,
             static_cast<const float*>(o_partial), static_cast<const float*>(lse_partial), args.out,
             args.out_row_stride, args.shape.num_heads, args.num_splits, args.shape.head_dim);
}

}  // namespace qf::cuda
