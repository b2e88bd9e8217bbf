// Causal prefill attention over the paged KV cache: FlashAttention-2 on BF16 tensor cores
// (mma.sync m16n8k16), FP32 online softmax. Interface and semantics in attention.h.
//
// Work split. A CTA owns kBlockM = 128 consecutive query rows of one query head of one
// sequence; its 8 warps own 16 rows each (one MMA row tile), so no data moves between warps.
// Keys are streamed in tiles of kBlockN = 64 from key 0 up to the last key any of its rows can
// see (past + last row); only the tiles that straddle the causal diagonal or the end of the
// keys pay for masking.
//
// Per tile, per warp (S = Q K^T is 16 x 64, O is 16 x head_dim):
//   S  = Q K^T      head_dim/16 k-steps x 8 n-tiles of MMAs, Q fragments kept in registers
//   online softmax  row max / exp2 / row sum on the S fragments in registers (a row's 64 values
//                   live in the 4 lanes of a quad: two shuffles reduce it)
//   O += P V        P re-packed to BF16 A fragments straight from the S registers; V read
//                   with ldmatrix.trans
// Memory pipeline: K and V tiles are double-buffered in shared memory with cp.async; the next
// K tile is in flight during the softmax and PV of the current one, the next V tile during the
// next QK^T. Shared rows are padded by 16 bytes (row stride head_dim + 8 elements) so that the
// 8 rows an ldmatrix phase reads start in 8 different 4-bank groups: conflict-free.
//
// Shared memory: (128 Q rows + 2 x 64 K rows + 2 x 64 V rows) x (head_dim + 8) x 2 bytes =
// 104,448 bytes at head_dim 128 (one CTA of 8 warps per SM with ~150 registers per thread),
// 55,296 bytes at head_dim 64.
//
// Expected speed. Causal FLOPs = 4 * sum_i(keys seen by row i) * head_dim per head. The MMA
// work per tile is 16x64x(2 x head_dim) per warp; at one CTA of 8 warps per SM the legacy
// mma.sync path reaches roughly half of the 740 TFLOP/s dense wgmma peak on H100 in the best
// FA2 implementations (~350 TFLOP/s causal at head_dim 128); this simpler kernel (no
// warp specialisation, exp2 on the MUFU, padded instead of swizzled tiles) should land at
// 200-300 TFLOP/s at long sequences, less at short ones where the diagonal tiles dominate.
#include <cmath>

#include "backends/cuda/attention.h"
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

template <int kHeadDim>
struct PrefillTile {
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 64;
  static constexpr int kWarps = kBlockM / 16;
  static constexpr int kThreads = kWarps * 32;
  // CTAs per SM the register budget is capped for: at head_dim 64 two CTAs (<= 128 registers
  // a thread, 55 KiB of shared memory each) fit without spills; at 128 one (~200 registers).
  static constexpr int kMinBlocks = kHeadDim == 64 ? 2 : 1;
  static constexpr int kStride = kHeadDim + 8;  // padded shared row, elements (see above)
  static constexpr int kRowVecs = kHeadDim / 8;  // 16-byte vectors per row
  static constexpr int kKTiles = kHeadDim / 16;  // MMA k-steps of S = Q K^T
  static constexpr int kNTiles = kBlockN / 8;    // MMA n-tiles of S
  static constexpr int kPTiles = kBlockN / 16;   // MMA k-steps of O += P V
  static constexpr int kOTiles = kHeadDim / 8;   // MMA n-tiles of O
  static constexpr size_t kSmemBytes = size_t(kBlockM + 4 * kBlockN) * kStride * sizeof(bf16);
};

struct PrefillKernelArgs {
  const bf16* q;
  int64_t q_row_stride;
  bf16* out;
  int64_t out_row_stride;
  const int32_t* q_start;
  const int32_t* kv_past;
  const bf16* k_pool;
  const bf16* v_pool;
  const int32_t* block_table;
  int max_blocks_per_seq;
  int num_kv_heads;
  int group;           // query heads per KV head
  float scale_log2;    // softmax_scale * log2(e): the softmax runs on exp2
};

template <int kHeadDim>
__global__ void __launch_bounds__(PrefillTile<kHeadDim>::kThreads, PrefillTile<kHeadDim>::kMinBlocks)
    prefill_attention_kernel(const PrefillKernelArgs a) {
  using T = PrefillTile<kHeadDim>;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kStride = T::kStride;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // [kBlockM][kStride]
  bf16* sK = sQ + kBlockM * kStride;         // [2][kBlockN][kStride]
  bf16* sV = sK + 2 * kBlockN * kStride;     // [2][kBlockN][kStride]

  const int seq = blockIdx.z;
  const int head = blockIdx.y;
  // Row tiles in reverse launch order: the last tiles of a sequence see the most keys, so
  // starting them first shortens the tail of the grid.
  const int m_tile = gridDim.x - 1 - blockIdx.x;
  const int q_first = a.q_start[seq];
  const int q_len = a.q_start[seq + 1] - q_first;
  const int m_start = m_tile * kBlockM;
  if (m_start >= q_len) return;
  const int rows = min(kBlockM, q_len - m_start);
  const int past = a.kv_past[seq];
  const int kv_len = past + q_len;
  const int kv_head = head / a.group;
  // Keys 0 .. past + m_start + rows - 1 are visible to at least one row of this tile.
  const int n_tiles = (past + m_start + rows + kBlockN - 1) / kBlockN;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // ---- async loads: Q tile (rows past the sequence zero-filled), K/V tiles from the pages ----
  const bf16* q_tile = a.q + int64_t(q_first + m_start) * a.q_row_stride + int64_t(head) * kHeadDim;
  for (int i = tid; i < kBlockM * T::kRowVecs; i += T::kThreads) {
    const int r = i / T::kRowVecs, c = i % T::kRowVecs;
    const bool ok = r < rows;
    ptx::cp_async_16(sQ + r * kStride + c * 8, ok ? q_tile + int64_t(r) * a.q_row_stride + c * 8 : a.q, ok);
  }
  const int32_t* table = a.block_table + int64_t(seq) * a.max_blocks_per_seq;
  auto load_kv_tile = [&](bf16* dst, const bf16* pool, int n_start) {
    for (int i = tid; i < kBlockN * T::kRowVecs; i += T::kThreads) {
      const int r = i / T::kRowVecs, c = i % T::kRowVecs;
      const int key = n_start + r;
      const bool ok = key < kv_len;
      const bf16* src = pool;
      if (ok) {
        const int64_t block = table[key / kKvBlockTokens];
        src = pool + ((block * a.num_kv_heads + kv_head) * kKvBlockTokens + key % kKvBlockTokens) * kHeadDim + c * 8;
      }
      ptx::cp_async_16(dst + r * kStride + c * 8, src, ok);
    }
  };
  // Commit groups, in order: {Q, K0}, {V0}, then per tile j: {K j+1}, {V j+1} (possibly empty).
  // Each wait below leaves exactly the most recent group in flight.
  load_kv_tile(sK, a.k_pool, 0);
  ptx::cp_async_commit();
  load_kv_tile(sV, a.v_pool, 0);
  ptx::cp_async_commit();

  const int g = lane / 4;  // fragment row (and row + 8)
  const int t4 = lane % 4;  // fragment column pair
  const int qpos0 = past + m_start + warp * 16 + g;  // positions of this lane's rows: qpos0, qpos0 + 8

  uint32_t q_frag[T::kKTiles][4];
  float o_acc[T::kOTiles][4];
#pragma unroll
  for (int i = 0; i < T::kOTiles; ++i) o_acc[i][0] = o_acc[i][1] = o_acc[i][2] = o_acc[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // lane-partial: this lane's 16 columns of each tile

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    const bf16* cK = sK + buf * kBlockN * kStride;
    const bf16* cV = sV + buf * kBlockN * kStride;
    ptx::cp_async_wait<1>();  // K j (and Q) landed
    __syncthreads();          // ... for every thread; and every warp is done with tile j-1
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < T::kKTiles; ++kk)
        ptx::ldmatrix_x4(q_frag[kk], sQ + (warp * 16 + lane % 16) * kStride + kk * 16 + (lane / 16) * 8);
    }

    // ---- S = Q K^T ----
    float s[T::kNTiles][4];
#pragma unroll
    for (int i = 0; i < T::kNTiles; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < T::kKTiles; ++kk) {
#pragma unroll
      for (int np = 0; np < T::kNTiles / 2; ++np) {
        // Matrices: keys np*16 + 0..7 / + 8..15 x dims kk*16 + 0..7 / + 8..15, ordered
        // (keys lo, dims lo), (keys lo, dims hi), (keys hi, dims lo), (keys hi, dims hi):
        // registers {0,1} are the B fragment of n-tile 2np, {2,3} of n-tile 2np+1.
        uint32_t kb[4];
        ptx::ldmatrix_x4(kb, cK + (np * 16 + lane % 8 + (lane / 16) * 8) * kStride + kk * 16 + ((lane / 8) % 2) * 8);
        ptx::mma_bf16_16816(s[2 * np], q_frag[kk], kb[0], kb[1]);
        ptx::mma_bf16_16816(s[2 * np + 1], q_frag[kk], kb[2], kb[3]);
      }
    }
    if (j + 1 < n_tiles) load_kv_tile(sK + (buf ^ 1) * kBlockN * kStride, a.k_pool, (j + 1) * kBlockN);
    ptx::cp_async_commit();

    // ---- online softmax (log2 domain) ----
    const int n_start = j * kBlockN;
    // Uniform over the CTA: does any key of this tile lie past the diagonal of the tile's
    // first row, or past the end of the keys?
    const bool need_mask = n_start + kBlockN - 1 > past + m_start || n_start + kBlockN > kv_len;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int qpos = qpos0 + 8 * r;
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < T::kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = s[nt][2 * r + e] * a.scale_log2;
          if (need_mask) {
            const int key = n_start + nt * 8 + t4 * 2 + e;
            if (key > qpos || key >= kv_len) x = -INFINITY;
          }
          s[nt][2 * r + e] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[r], mx);
      // A row with no visible key yet keeps max -inf; subtract 0 instead so that exp2 gives 0,
      // never (-inf) - (-inf) = NaN. (Tile 0 always holds key 0, visible to every row, so this
      // is a guard, not a path taken.)
      const float base = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(row_max[r] - base);
      row_max[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < T::kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(s[nt][2 * r + e] - base);
          s[nt][2 * r + e] = p;
          sum += p;
        }
      }
      row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < T::kOTiles; ++dt) {
        o_acc[dt][2 * r] *= alpha;
        o_acc[dt][2 * r + 1] *= alpha;
      }
    }
    // P as BF16 A fragments: k-step kk covers S n-tiles 2kk (cols 0-7) and 2kk+1 (cols 8-15).
    uint32_t p_frag[T::kPTiles][4];
#pragma unroll
    for (int kk = 0; kk < T::kPTiles; ++kk) {
      p_frag[kk][0] = ptx::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
      p_frag[kk][1] = ptx::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
      p_frag[kk][2] = ptx::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      p_frag[kk][3] = ptx::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }

    // ---- O += P V ----
    ptx::cp_async_wait<1>();  // V j landed (K j+1 may still be in flight)
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < T::kPTiles; ++kk) {
#pragma unroll
      for (int dp = 0; dp < T::kOTiles / 2; ++dp) {
        // Matrices (transposed on load): keys kk*16 + 0..7 / + 8..15 x dims dp*16 + 0..7 /
        // + 8..15, ordered (keys lo, dims lo), (keys hi, dims lo), (keys lo, dims hi),
        // (keys hi, dims hi): registers {0,1} are the B fragment of dim tile 2dp, {2,3} of 2dp+1.
        uint32_t vb[4];
        ptx::ldmatrix_x4_trans(vb, cV + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + dp * 16 + (lane / 16) * 8);
        ptx::mma_bf16_16816(o_acc[2 * dp], p_frag[kk], vb[0], vb[1]);
        ptx::mma_bf16_16816(o_acc[2 * dp + 1], p_frag[kk], vb[2], vb[3]);
      }
    }
    if (j + 1 < n_tiles) load_kv_tile(sV + (buf ^ 1) * kBlockN * kStride, a.v_pool, (j + 1) * kBlockN);
    ptx::cp_async_commit();
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: normalise, stage the warp's 16 rows in its own rows of sQ (read only at
  // j == 0, by this warp), then write them with 16-byte stores ----
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.0f ? 1.0f / l : 0.0f;
  }
#pragma unroll
  for (int dt = 0; dt < T::kOTiles; ++dt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<uint32_t*>(sQ + (warp * 16 + g + 8 * r) * kStride + dt * 8 + t4 * 2) =
          ptx::pack_bf16x2(o_acc[dt][2 * r] * inv[r], o_acc[dt][2 * r + 1] * inv[r]);
    }
  }
  __syncwarp();
  bf16* out_tile = a.out + int64_t(q_first + m_start) * a.out_row_stride + int64_t(head) * kHeadDim;
  for (int i = lane; i < 16 * T::kRowVecs; i += 32) {
    const int row = warp * 16 + i / T::kRowVecs;
    const int c = i % T::kRowVecs;
    if (row < rows)
      *reinterpret_cast<uint4*>(out_tile + int64_t(row) * a.out_row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(sQ + row * kStride + c * 8);
  }
}

template <int kHeadDim>
void launch_prefill(const PrefillAttentionArgs& args, cudaStream_t stream) {
  using T = PrefillTile<kHeadDim>;
  // More than 48 KiB of dynamic shared memory needs an explicit opt-in, once per process.
  static const bool smem_configured = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(prefill_attention_kernel<kHeadDim>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(T::kSmemBytes)));
    return true;
  }();
  (void)smem_configured;
  const PrefillKernelArgs ka{args.q,
                             args.q_row_stride,
                             args.out,
                             args.out_row_stride,
                             args.q_start,
                             args.kv_past,
                             static_cast<const bf16*>(args.cache.k),
                             static_cast<const bf16*>(args.cache.v),
                             args.block_table,
                             args.max_blocks_per_seq,
                             args.shape.num_kv_heads,
                             args.shape.num_heads / args.shape.num_kv_heads,
                             static_cast<float>(args.shape.softmax_scale * 1.4426950408889634)};
  const dim3 grid((args.max_q_len + T::kBlockM - 1) / T::kBlockM, args.shape.num_heads, args.num_seqs);
  prefill_attention_kernel<kHeadDim><<<grid, T::kThreads, T::kSmemBytes, stream>>>(ka);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void check_attention_shape(const AttentionShape& s, const KvLayerView& cache, const char* who) {
  QF_CHECK(s.num_heads > 0 && s.num_kv_heads > 0 && s.num_heads % s.num_kv_heads == 0, who,
           ": num_heads ", s.num_heads, " must be a positive multiple of num_kv_heads ", s.num_kv_heads);
  QF_CHECK(s.head_dim == 64 || s.head_dim == 128, who, ": head_dim ", s.head_dim,
           " is not supported (64 or 128)");
  QF_CHECK(std::isfinite(s.softmax_scale) && s.softmax_scale > 0.0f, who, ": softmax_scale ",
           s.softmax_scale, " must be positive and finite");
  QF_CHECK(cache.k && cache.v && cache.num_blocks > 0, who, ": empty KV cache layer");
  QF_CHECK(cache.num_kv_heads == s.num_kv_heads && cache.head_dim == s.head_dim, who,
           ": KV cache holds ", cache.num_kv_heads, " heads of ", cache.head_dim,
           " dims, attention expects ", s.num_kv_heads, " of ", s.head_dim);
  QF_CHECK(aligned16(cache.k) && aligned16(cache.v), who, ": KV pools must be 16-byte aligned");
  QF_CHECK(cache.element == KvElement::bf16 || (cache.k_scale && cache.v_scale && aligned16(cache.k_scale) &&
                                                aligned16(cache.v_scale)),
           who, ": a ", kv_element_name(cache.element), " cache needs 16-byte aligned scale pools");
}

void prefill_attention(const PrefillAttentionArgs& args, cudaStream_t stream) {
  check_attention_shape(args.shape, args.cache, "prefill_attention");
  QF_CHECK(args.cache.element == KvElement::bf16, "prefill_attention: reads a BF16 cache; stage a ",
           kv_element_name(args.cache.element), " one through kv_cache_dequantize_blocks first");
  QF_CHECK(args.num_seqs > 0 && args.num_seqs <= 65535, "prefill_attention: num_seqs ",
           args.num_seqs, " outside [1, 65535]");
  QF_CHECK(args.max_q_len >= 0, "prefill_attention: negative max_q_len");
  if (args.max_q_len == 0) return;
  const int64_t row = int64_t(args.shape.num_heads) * args.shape.head_dim;
  QF_CHECK(args.q_row_stride >= row && args.out_row_stride >= row && args.q_row_stride % 8 == 0 &&
               args.out_row_stride % 8 == 0,
           "prefill_attention: row strides (", args.q_row_stride, ", ", args.out_row_stride,
           ") must be multiples of 8 and at least num_heads * head_dim = ", row);
  QF_CHECK(args.q && args.out && aligned16(args.q) && aligned16(args.out),
           "prefill_attention: q and out must be 16-byte aligned device pointers");
  QF_CHECK(args.q_start && args.kv_past && args.block_table && args.max_blocks_per_seq > 0,
           "prefill_attention: missing q_start, kv_past or block table");
  if (args.shape.head_dim == 64) launch_prefill<64>(args, stream);
  else launch_prefill<128>(args, stream);
}

}  // namespace qf::cuda
