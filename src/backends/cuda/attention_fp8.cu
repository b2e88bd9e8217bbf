// FP8 (E4M3) causal prefill attention on Hopper wgmma: FlashAttention-3's intra-warpgroup
// pipeline and FireQ's 3-stage extension. Interface in attention_fp8.h; the design note with the
// measurements is docs/kernels/attention_fp8.md.
//
// Head dims 64 and 128 (one template; below, the sizes are those of 128).
//
// Work split. A CTA (256 threads) owns kBlockM = 128 query rows of one query head of one
// sequence: two consumer warpgroups of 64 rows each (the wgmma M). Keys stream in blocks of
// kBlockN = 64 through a ring of kRing shared-memory stages (K tile, V^T tile, 64 k and 64 v
// scales), loaded with cp.async by all 256 threads kRing - 2 blocks ahead of the block being
// multiplied; one CTA barrier per block publishes a stage and retires the one two blocks back.
// Per block and warpgroup:
//   S = Q K^T     4 x wgmma.m64n64k32 (A = Q, B = K, both from shared memory), S in 32 FP32
//                 registers per thread
//   softmax       on the registers: scales, causal mask (only blocks crossing the diagonal or
//                 the end of the keys), running max (two shuffles per row), exp2, row sums
//   O_blk = P V   2 x wgmma.m64n128k32, A = P as E4M3 straight from registers, B = V^T tile
//   O = O * c + O_blk   in FP32 registers
// Pipelines (`stages`): 2 = FlashAttention-3's: issue S(j) and O_blk(j-1), wait for S(j),
// softmax(j) while O_blk(j-1) runs, wait, fold O_blk(j-1) into O, convert P(j). 3 = FireQ's:
// issue S(j+1) and O_blk(j-1), softmax(j) while both run (S lives in two register sets).
//
// Why P needs no shuffles: the accumulator gives a thread, per 16-column group, columns 2t, 2t+1,
// 8+2t, 9+2t of its rows, while the E4M3 A operand wants k 4t .. 4t+3 in one register. The K
// tile is therefore stored with its rows permuted within each group of 16 keys (shared row n holds
// key 4((n/2)%4) + 2(n/8) + n%2), so that S column n of those four is key 4t .. 4t+3 in order:
// the thread's four P values are then exactly the A register of keys 4t .. 4t+3, and V is used
// in natural key order. The permutation costs nothing (each cp.async picks its source row).
//
// Why O is accumulated outside the tensor cores: FP8 wgmma adds into its accumulator with about
// 14 bits of precision (DeepSeek-V3 report, sec. 3.3.2; w4a8_gemm.cu measured it), so summing
// O over thousands of keys in the tensor core would drift by ~2^-13 per k32 step (a few % at
// 16k keys). Each block's product starts from zero (scale-d 0) and is added in FP32 — the same
// FFMA that applies the online-softmax rescale, so it costs nothing extra.
//
// Error bound (the kernel's only approximation, checked by tests/cuda/test_attention_fp8.cpp):
// the PV operand is w_j = p_j * v_scale_j * F rounded to E4M3, where p_j <= 1 is the probability
// relative to the running row max and F = 448 / (the largest v_scale of the keys seen so far, at
// least 1e-30), so w_j <= 448 never saturates. E4M3 rounding (round to nearest even) errs by at
// most 2^-4 |w_j| in the normal range and 2^-10 (half the subnormal spacing 2^-9) below it;
// in output units (divide by F and the row sum l >= 1):
//   |out - exact| <= 2^-4 * sum_j P_ij |v_j| + 2^-10 * max_j(v_scale_j) / 448 * sum_j |v_code_j| / l_i
// plus the tensor cores' accumulation (S: 4 k32 steps of ~2^-13 relative to sum |q k|; O_blk: 2
// steps relative to sum |w v|), FP32 rounding, and the BF16 output rounding (2^-9 relative). The
// first term is a worst case: the rounding errors of different keys are independent in sign, so
// the typical relative error of an output row is ~2^-4/sqrt(3) ~ 3.6% of the row's norm, less
// where one key dominates the row.
#include "backends/cuda/attention_fp8.h"

#include <cuda_fp8.h>

#include <cmath>
#include <type_traits>

#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/wgmma.h"
#include "core/error.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kBlockM = 128;  // query rows per CTA: 2 warpgroups x 64
constexpr int kBlockN = 64;   // keys per block
constexpr int kThreads = 256;
constexpr int kRing = 6;           // shared-memory stages of K/V blocks
constexpr int kAhead = kRing - 2;  // blocks loaded ahead (see the pipeline below)

// Sizes at head_dim D (128 or 64): shared tiles in bytes; a Q or K row of D bytes is D/16 core
// matrices, so their 8-row groups are 8 D bytes apart (the descriptors' stride byte offset);
// V^T rows hold 64 keys: 512 bytes per 8-row group whatever D.
template <int kHeadDim>
struct Fp8Tile {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head_dim 64 or 128");
  static constexpr int kChunks = kHeadDim / 16;            // 16-byte chunks per Q / K row
  static constexpr int kQBytes = kBlockM * kHeadDim;       // 16 KiB at D = 128
  static constexpr int kKBytes = kBlockN * kHeadDim;       // 8 KiB
  static constexpr int kVBytes = kHeadDim * kBlockN;       // 8 KiB
  static constexpr int kStageBytes = kKBytes + kVBytes + 2 * kBlockN * 4;  // + k and v scales
  static constexpr int kSmemBytes = kQBytes + kRing * kStageBytes;        // 117,760 bytes at D = 128
  static constexpr uint32_t kQkSbo = 8 * kHeadDim;
  static constexpr int kOut = kHeadDim / 2;  // O accumulator floats per thread (64 x D / 128)
};
constexpr float kPScale = 448.0f;  // E4M3's largest finite value: P * v_scale / max v_scale * this

struct Fp8Params {
  const uint8_t* q;
  int64_t q_row_stride;
  const float* q_scale;
  const uint8_t* k;
  const uint8_t* vt;
  const float* k_scale;
  const float* v_scale;
  int64_t kv_rows;
  bf16* out;
  int64_t out_row_stride;
  const int32_t* q_start;
  const int32_t* kv_start;
  const int32_t* kv_len;
  int num_heads;
  int group;         // query heads per KV head
  int q_blocks;      // row blocks per sequence in the grid
  float scale_log2;  // softmax_scale * log2(e): the softmax runs on exp2
};

// 16-byte cp.async of which the first `bytes` (0..16) are read, the rest zero-filled.
__device__ __forceinline__ void cp_async_partial(void* smem_dst, const void* gmem_src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(ptx::smem_addr(smem_dst)), "l"(gmem_src),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Four floats -> four E4M3 bytes (round to nearest even, saturating), a in the lowest byte.
__device__ __forceinline__ uint32_t pack_e4m3x4(float a, float b, float c, float d) {
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(c, d), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// The key held by shared K row n of a block (the permutation explained at the top).
__device__ __forceinline__ int permuted_key(int n) {
  return (n & ~15) | (((n >> 1) & 3) << 2) | (((n >> 3) & 1) << 1) | (n & 1);
}

template <int kHeadDim, int kStages>
__global__ void __launch_bounds__(kThreads, 1) prefill_attention_fp8_kernel(const Fp8Params a) {
  static_assert(kStages == 2 || kStages == 3, "pipelines: 2 or 3 stages");
  using T = Fp8Tile<kHeadDim>;
  constexpr int kQBytes = T::kQBytes, kKBytes = T::kKBytes, kVBytes = T::kVBytes, kStageBytes = T::kStageBytes;
  constexpr int kCh = T::kChunks, kOut = T::kOut;
  extern __shared__ __align__(1024) uint8_t smem[];
  const int seq = blockIdx.y;
  // Row blocks in reverse launch order: the last rows see the most keys, starting them first
  // shortens the tail of the grid. Heads vary fastest, so the query heads of one KV head run
  // together and share its K/V in L2.
  const int m_block = a.q_blocks - 1 - int(blockIdx.x) / a.num_heads;
  const int head = int(blockIdx.x) % a.num_heads;
  const int q_first = a.q_start[seq];
  const int q_len = a.q_start[seq + 1] - q_first;
  const int m0 = m_block * kBlockM;
  if (m0 >= q_len) return;
  const int kv_len = a.kv_len[seq];
  const int past = kv_len - q_len;  // position of query row 0
  const int rows = min(kBlockM, q_len - m0);
  const int last_pos = past + m0 + rows - 1;  // the last key any row of this CTA sees
  const int n_blocks = last_pos >= 0 ? last_pos / kBlockN + 1 : 0;
  const int kv_head = head / a.group;
  const int64_t kv_row0 = int64_t(kv_head) * a.kv_rows + a.kv_start[seq];
  const uint8_t* k_base = a.k + kv_row0 * kHeadDim;
  const uint8_t* v_base = a.vt + int64_t(kv_head) * kHeadDim * a.kv_rows + a.kv_start[seq];
  const float* ks_base = a.k_scale + kv_row0;
  const float* vs_base = a.v_scale + kv_row0;

  const int tid = threadIdx.x;
  const int wg = tid / 128;  // consumer warpgroup: rows 64 wg .. 64 wg + 63
  const int warp = (tid % 128) / 32;
  const int lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int row_local[2] = {64 * wg + 16 * warp + g, 64 * wg + 16 * warp + g + 8};  // in the CTA

  const uint32_t smem_base = ptx::smem_addr(smem);
  auto stage_ptr = [&](int blk) { return smem + kQBytes + (blk % kRing) * kStageBytes; };

  // ---- loads: every tile is stored in the no-swizzle K-major layout of wgmma.h, 16 bytes per
  // thread and step, thread x writing bytes 16x .. 16x + 15 (conflict-free; see load_block) ----
  {
    // Q: 128 rows x kCh chunks; chunk x is row (x/(8 kCh))*8 + x%8, 16-byte column (x/8)%kCh.
    const uint8_t* q_tile = a.q + int64_t(q_first + m0) * a.q_row_stride + int64_t(head) * kHeadDim;
#pragma unroll
    for (int u = 0; u < kQBytes / 16 / kThreads; ++u) {
      const int x = tid + u * kThreads;
      const int r = (x / (8 * kCh)) * 8 + x % 8, c = (x / 8) % kCh;
      const bool ok = m0 + r < q_len;
      ptx::cp_async_16(smem + 16 * x, ok ? q_tile + int64_t(r) * a.q_row_stride + c * 16 : a.q, ok);
    }
  }
  // Block `blk`: keys blk*64 .. +63; keys at or past kv_len are zero-filled (never read: the
  // rows past a sequence's keys may hold anything, and a NaN V code would poison O through 0 x NaN).
  auto load_block = [&](int blk) {
    uint8_t* st = stage_ptr(blk);
    const int key0 = blk * kBlockN;
#pragma unroll
    for (int u = 0; u < kKBytes / 16 / kThreads; ++u) {  // K: 64 rows x kCh chunks, rows permuted
      const int x = tid + u * kThreads;
      const int n = (x / (8 * kCh)) * 8 + x % 8, c = (x / 8) % kCh;
      const int key = key0 + permuted_key(n);
      const bool ok = key < kv_len;
      ptx::cp_async_16(st + 16 * x, ok ? k_base + int64_t(key) * kHeadDim + c * 16 : k_base, ok);
    }
#pragma unroll
    for (int u = 0; u < kVBytes / 16 / kThreads; ++u) {  // V^T: D rows (d) x 4 chunks of 16 keys
      const int x = tid + u * kThreads;
      const int d = (x / 32) * 8 + x % 8, c = (x / 8) % 4;
      const int key = key0 + 16 * c;
      const int bytes = max(0, min(16, kv_len - key));
      cp_async_partial(st + kKBytes + 16 * x, bytes > 0 ? v_base + int64_t(d) * a.kv_rows + key : v_base, bytes);
    }
    if (tid < 32) {  // scales: 16 chunks of 4 k scales, then 16 of v scales
      const int c = tid % 16;
      const int key = key0 + 4 * c;
      const int bytes = 4 * max(0, min(4, kv_len - key));
      const float* src = (tid < 16 ? ks_base : vs_base) + (bytes > 0 ? key : 0);
      cp_async_partial(st + kKBytes + kVBytes + 16 * tid, src, bytes);
    }
  };
  // Commit groups: group i holds block i (group 0 also Q); one group per loop iteration, empty
  // past the last block, so that "block b has landed" is always the same wait_group count.
#pragma unroll
  for (int b = 0; b < kAhead; ++b) {
    if (b < n_blocks) load_block(b);
    ptx::cp_async_commit();
  }

  // Per-row state (rows r = 0: row_local[0], 1: row_local[1]).
  float qs[2], m_run[2], l_run[2], c_cur[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = m0 + row_local[r];
    const float s = row < q_len ? a.q_scale[int64_t(q_first + row) * a.num_heads + head] : 0.f;
    // Kept positive so that a masked score (-inf) times it stays -inf (a zero scale, or a row past
    // the sequence, would give NaN).
    qs[r] = fmaxf(s * a.scale_log2, 1e-30f);
    m_run[r] = -INFINITY;
    l_run[r] = 0.f;
  }
  float v_run = 1e-30f;  // the largest v_scale seen so far (F = 448 / v_run)
  const int pos0 = past + m0;  // position of CTA row 0
  // The smallest position of this warpgroup's rows: blocks ending at or before it need no mask.
  const int wg_first_pos = min(pos0 + 64 * wg, kv_len - 1);

  float o[kOut], o_blk[kOut], s_a[32];
  uint32_t p8[8];
#pragma unroll
  for (int i = 0; i < kOut; ++i) o[i] = o_blk[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) s_a[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) p8[i] = 0u;

  const uint64_t q_desc = wg::desc(smem_base + wg * (kQBytes / 2), T::kQkSbo);

  // Waits until block `blk` (and Q) landed for every thread, publishes it to the tensor cores, and
  // ends the previous iteration for all threads (so the stage two blocks back may be reloaded).
  // kPending: groups allowed in flight = those committed after block blk's.
  auto sync_block = [&](auto pending_tag) {
    constexpr int kPending = decltype(pending_tag)::value;
    ptx::cp_async_wait<kPending>();
    wg::fence_proxy_async();
    __syncthreads();
  };

  // S = Q K^T of block blk (asynchronous; one commit group).
  auto issue_qk = [&](float (&s)[32], int blk) {
    const uint32_t k_addr = ptx::smem_addr(stage_ptr(blk));
    wg::fence_regs(s);
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 32; ++kk)
      wg::wgmma_m64n64k32_e4m3_ss(s, q_desc + uint64_t(kk * 16), wg::desc(k_addr + kk * 256, T::kQkSbo), kk > 0);
    wg::commit();
  };
  // O_blk = P V of block blk (asynchronous; one commit group).
  auto issue_pv = [&](int blk) {
    const uint32_t v_addr = ptx::smem_addr(stage_ptr(blk) + kKBytes);
    wg::fence_regs(p8);
    wg::fence_regs(o_blk);
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 32; ++kk) {
      const uint64_t v_desc = wg::desc(v_addr + kk * 256, 512);
      if constexpr (kHeadDim == 128)
        wg::wgmma_m64n128k32_e4m3(o_blk, p8[4 * kk], p8[4 * kk + 1], p8[4 * kk + 2], p8[4 * kk + 3], v_desc, kk > 0);
      else
        wg::wgmma_m64n64k32_e4m3(o_blk, p8[4 * kk], p8[4 * kk + 1], p8[4 * kk + 2], p8[4 * kk + 3], v_desc, kk > 0);
    }
    wg::commit();
  };

  // Online softmax of block blk on s (S in, w = p * v_scale * F out, still FP32), row sums and
  // running max updated; c_next: the factor the O accumulated so far takes when this block's
  // O_blk is added (rescale to the new max, and F's change).
  // Element e = 4i + 2r + c of s (i: 8-column chunk, r: row g / g+8, c: column 2t + c) is key
  // 16(i/2) + 4t + 2(i%2) + c of the block (the K row permutation).
  auto softmax = [&](float (&s)[32], int blk, float (&c_next)[2]) {
    const float* ks = reinterpret_cast<const float*>(stage_ptr(blk) + kKBytes + kVBytes);
    const float* vs = ks + kBlockN;
    const int key0 = blk * kBlockN;
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const float4 k4 = *reinterpret_cast<const float4*>(ks + 16 * h + 4 * t);
      const float kv[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
      for (int b = 0; b < 2; ++b)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int e = 4 * (2 * h + b) + 2 * r + c;
            s[e] *= kv[2 * b + c];  // the row's q scale comes in the exponent's FFMA below
          }
    }
    if (key0 + kBlockN - 1 > wg_first_pos) {  // the block crosses the diagonal or the keys' end
#pragma unroll
      for (int e = 0; e < 32; ++e) {
        const int i = e / 4, r = (e / 2) % 2, c = e % 2;
        const int key = key0 + 16 * (i / 2) + 4 * t + 2 * (i % 2) + c;
        if (key > pos0 + row_local[r] || key >= kv_len) s[e] = -INFINITY;
      }
    }
    float alpha[2], m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < 8; ++i) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * r], s[4 * i + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[r], mx * qs[r]);  // qs > 0: max(qs s) = qs max(s)
      // A row with no key yet (never for a real row: key 0 is in block 0) stays at -inf with
      // p = 0 instead of exp2(-inf - -inf) = NaN.
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = ex2(m_run[r] - m_use[r]);
      m_run[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      const int r = (e / 2) % 2;
      s[e] = ex2(fmaf(s[e], qs[r], -m_use[r]));  // masked: -inf * qs - m = -inf, p = 0
      sum[r] += s[e];
    }
    // v scales: F from the running max over this block too (all four lanes of a quad see the
    // block's 64 scales between them). Read twice rather than held: registers are scarce here.
    float vmax = 0.f;
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const float4 v4 = *reinterpret_cast<const float4*>(vs + 16 * h + 4 * t);
      vmax = fmaxf(fmaxf(vmax, fmaxf(v4.x, v4.y)), fmaxf(v4.z, v4.w));
    }
    vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, 1));
    vmax = fmaxf(vmax, __shfl_xor_sync(0xffffffffu, vmax, 2));
    const float v_new = fmaxf(v_run, vmax);
    const float ratio = v_run / v_new;  // <= 1: F only decreases
    v_run = v_new;
    const float f = kPScale / v_new;
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const float4 v4 = *reinterpret_cast<const float4*>(vs + 16 * h + 4 * t);
      const float vf[4] = {v4.x * f, v4.y * f, v4.z * f, v4.w * f};
#pragma unroll
      for (int b = 0; b < 2; ++b)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int c = 0; c < 2; ++c) s[4 * (2 * h + b) + 2 * r + c] *= vf[2 * b + c];
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] = l_run[r] * alpha[r] + sum[r];
      c_next[r] = alpha[r] * ratio;
    }
  };

  // w (FP32, after the wait) -> the E4M3 A fragments of O_blk = P V: k-step kk covers keys
  // 32kk .. 32kk + 31; register 4kk + 0: row g, keys 32kk + 4t .. (elements 16kk + 0, 1, 4, 5),
  // + 1: row g + 8 (2, 3, 6, 7), + 2: row g, keys 32kk + 16 + 4t .. (8, 9, 12, 13), + 3: row g + 8.
  auto pack_p = [&](float (&s)[32]) {
#pragma unroll
    for (int kk = 0; kk < 2; ++kk)
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int e = 16 * kk + 8 * half + 2 * r;
          p8[4 * kk + 2 * half + r] = pack_e4m3x4(s[e], s[e + 1], s[e + 4], s[e + 5]);
        }
  };

  // O = O * c + O_blk (after O_blk's wait); element 4i + 2r + c of o is row r.
  auto fold_o = [&]() {
#pragma unroll
    for (int i = 0; i < kOut; ++i) o[i] = fmaf(o[i], c_cur[(i / 2) % 2], o_blk[i]);
  };

  using Ahead1 = std::integral_constant<int, kAhead - 1>;
  using Ahead2 = std::integral_constant<int, kAhead - 2>;
  if constexpr (kStages == 2) {
    for (int j = 0; j < n_blocks; ++j) {
      sync_block(Ahead1{});  // block j landed
      issue_qk(s_a, j);
      // The loads go out once the GEMMs are under way (the barrier above retired their stage).
      if (j > 0) {
        issue_pv(j - 1);
        if (j + kAhead < n_blocks) load_block(j + kAhead);
        ptx::cp_async_commit();
        wg::wait<1>();  // S(j) done, O_blk(j-1) may run on
      } else {
        if (j + kAhead < n_blocks) load_block(j + kAhead);
        ptx::cp_async_commit();
        wg::wait<0>();
      }
      wg::fence_regs(s_a);
      float c_next[2];
      softmax(s_a, j, c_next);
      wg::wait<0>();
      wg::fence_regs(o_blk);
      wg::fence_regs(s_a);
      if (j > 0) fold_o();
      pack_p(s_a);
      c_cur[0] = c_next[0];
      c_cur[1] = c_next[1];
    }
  } else {
    float s_b[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) s_b[i] = 0.f;
    // One iteration: softmax of block j (in cur) under S(j+1) (into nxt) and O_blk(j-1).
    auto step = [&](float (&cur)[32], float (&nxt)[32], int j) {
      sync_block(Ahead2{});  // block j+1 landed
      // Issued even after the last block (its result unused, the stage's stale bytes harmless):
      // a conditional wgmma here makes ptxas serialize all of them (C7515).
      issue_qk(nxt, j + 1);
      if (j > 0) issue_pv(j - 1);
      if (j + kAhead < n_blocks) load_block(j + kAhead);
      ptx::cp_async_commit();
      float c_next[2];
      softmax(cur, j, c_next);
      wg::wait<0>();
      wg::fence_regs(nxt);
      wg::fence_regs(o_blk);
      wg::fence_regs(cur);
      if (j > 0) fold_o();
      pack_p(cur);
      c_cur[0] = c_next[0];
      c_cur[1] = c_next[1];
    };
    if (n_blocks > 0) {
      sync_block(Ahead1{});  // block 0 landed
      issue_qk(s_a, 0);
      wg::wait<0>();
      wg::fence_regs(s_a);
    }
    // Unrolled by two so that the S register sets swap roles at compile time.
    for (int j = 0; j < n_blocks; j += 2) {
      step(s_a, s_b, j);
      if (j + 1 < n_blocks) step(s_b, s_a, j + 1);
    }
  }
  if (n_blocks > 0) {
    issue_pv(n_blocks - 1);
    wg::wait<0>();
    wg::fence_regs(o_blk);
    fold_o();
  }
  ptx::cp_async_wait<0>();  // no copy may still target shared memory when the CTA exits

  // ---- epilogue: out = O / (F l), BF16 ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    // O holds F * sum_j p_j v_j with F = 448 / v_run.
    const float inv = l > 0.f ? v_run / (kPScale * l) : 0.f;
    const int row = m0 + row_local[r];
    if (row >= q_len) continue;
    bf16* dst = a.out + int64_t(q_first + row) * a.out_row_stride + int64_t(head) * kHeadDim + 2 * t;
#pragma unroll
    for (int i = 0; i < kHeadDim / 8; ++i)
      *reinterpret_cast<uint32_t*>(dst + 8 * i) = ptx::pack_bf16x2(o[4 * i + 2 * r] * inv, o[4 * i + 2 * r + 1] * inv);
  }
}

template <int kHeadDim, int kStages>
void launch(const Fp8Params& p, int num_seqs, cudaStream_t stream) {
  constexpr int kSmemBytes = Fp8Tile<kHeadDim>::kSmemBytes;
  static const bool smem_configured = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(prefill_attention_fp8_kernel<kHeadDim, kStages>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
    return true;
  }();
  (void)smem_configured;
  const dim3 grid(static_cast<unsigned>(p.q_blocks * p.num_heads), static_cast<unsigned>(num_seqs));
  prefill_attention_fp8_kernel<kHeadDim, kStages><<<grid, kThreads, kSmemBytes, stream>>>(p);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void prefill_attention_fp8(const Fp8PrefillAttentionArgs& args, cudaStream_t stream) {
  const AttentionShape& s = args.shape;
  QF_CHECK(s.num_heads > 0 && s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0,
           "prefill_attention_fp8: num_heads ", s.num_heads, " must be a positive multiple of num_kv_heads ",
           s.num_kv_heads);
  QF_CHECK(s.head_dim == 128 || s.head_dim == 64, "prefill_attention_fp8: head_dim ", s.head_dim,
           " is not supported (64 or 128)");
  QF_CHECK(std::isfinite(s.softmax_scale) && s.softmax_scale > 0.0f, "prefill_attention_fp8: softmax_scale ",
           s.softmax_scale, " must be positive and finite");
  QF_CHECK(args.stages == 2 || args.stages == 3, "prefill_attention_fp8: stages ", args.stages,
           " must be 2 (FlashAttention-3's pipeline) or 3 (FireQ's)");
  QF_CHECK(args.num_seqs > 0 && args.num_seqs <= 65535, "prefill_attention_fp8: num_seqs ", args.num_seqs,
           " outside [1, 65535]");
  QF_CHECK(args.max_q_len >= 0, "prefill_attention_fp8: negative max_q_len");
  if (args.max_q_len == 0) return;
  const int64_t row = int64_t(s.num_heads) * s.head_dim;
  QF_CHECK(args.q_row_stride >= row && args.q_row_stride % 16 == 0, "prefill_attention_fp8: q_row_stride ",
           args.q_row_stride, " must be a multiple of 16 bytes and at least num_heads * head_dim = ", row);
  QF_CHECK(args.out_row_stride >= row && args.out_row_stride % 8 == 0, "prefill_attention_fp8: out_row_stride ",
           args.out_row_stride, " must be a multiple of 8 elements and at least ", row);
  QF_CHECK(args.kv_rows > 0 && args.kv_rows % 128 == 0, "prefill_attention_fp8: kv_rows ", args.kv_rows,
           " must be a positive multiple of 128");
  QF_CHECK(args.q && args.k && args.vt && args.out && aligned16(args.q) && aligned16(args.k) && aligned16(args.vt) &&
               aligned16(args.out),
           "prefill_attention_fp8: q, k, vt and out must be 16-byte aligned device pointers");
  QF_CHECK(args.q_scale && args.k_scale && args.v_scale && aligned16(args.k_scale) && aligned16(args.v_scale),
           "prefill_attention_fp8: missing q/k/v scales (k_scale and v_scale 16-byte aligned)");
  QF_CHECK(args.q_start && args.kv_start && args.kv_len, "prefill_attention_fp8: missing q_start, kv_start or kv_len");
  const int q_blocks = (args.max_q_len + kBlockM - 1) / kBlockM;
  QF_CHECK(int64_t(q_blocks) * s.num_heads < (int64_t(1) << 31), "prefill_attention_fp8: grid too large");
  const Fp8Params p{args.q,        args.q_row_stride,
                    args.q_scale,  args.k,
                    args.vt,       args.k_scale,
                    args.v_scale,  args.kv_rows,
                    args.out,      args.out_row_stride,
                    args.q_start,  args.kv_start,
                    args.kv_len,   s.num_heads,
                    s.num_heads / s.num_kv_heads, q_blocks,
                    static_cast<float>(s.softmax_scale * 1.4426950408889634)};
  if (s.head_dim == 128) {
    if (args.stages == 2) launch<128, 2>(p, args.num_seqs, stream);
    else launch<128, 3>(p, args.num_seqs, stream);
  } else {
    if (args.stages == 2) launch<64, 2>(p, args.num_seqs, stream);
    else launch<64, 3>(p, args.num_seqs, stream);
  }
}

}  // namespace qf::cuda
