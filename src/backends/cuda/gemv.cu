// BF16 GEMV / skinny GEMM for M = 1..16 (decode): y[M,N] = x[M,K] · W[N,K]^T.
//
// Design (numbers for an H100 SXM: 132 SMs, ~3.0 TB/s, 50 MB L2)
// -----------------------------------------------------------------------------------------
// The kernel must stream W (N·K·2 bytes) at full HBM bandwidth; everything else is small.
//
// 1. Tensor cores do the arithmetic. A CTA owns a tile of 16 weight rows; each warp multiplies
//    it with the activations using mma.sync.m16n8k16 (BF16 in, FP32 accumulate) with W as the
//    16x16 A operand and x^T as the 16x8 B operand (the 8 columns are the batch rows m; rows
//    m >= M are zeros). The FLOPs are free (2·8·N·K per 8-wide tile: ~1 µs of tensor-core time
//    for a 7B qkv layer whose bytes take ~33 µs), but doing them as FMAs would not be: at
//    M = 8 an FMA version needs ~90 instructions per 16 weight bytes, over half the issue rate
//    of an SM that must also keep ~23 GB/s of loads going. With MMA it is 1 instruction per
//    16 weight bytes, and the BF16 values go to the tensor cores without conversion.
//
// 2. Weights are loaded straight from global memory into the MMA fragments, 16 bytes per lane,
//    with no shared-memory staging. This works because a dot product does not care about the
//    order of k: lane (g = lane/4, t = lane%4) loads 8 consecutive k of weight rows g and g+8,
//    and the same 8 k of activation row g, and the four 32-bit words of each load feed two
//    MMAs. For the first MMA, words 0 and 1 hold physical k = 8c+{0,1} and 8c+{2,3} (c = the
//    lane's 16-byte chunk), which the MMA calls logical k = {2t, 2t+1} and {2t+8, 2t+9}; the
//    same words of the activation load are the B fragment for the same logical k (B's k index
//    depends on t only, exactly like A's column index), so A and B agree on the permutation of
//    k and the product is right. Words 2 and 3 feed the second MMA. (PTX ISA, "Matrix fragments
//    for mma.m16n8k16": A row = g or g+8, A col = 2t+{0,1} or 2t+8+{0,1}; B row = 2t+{0,1} or
//    2t+8+{0,1}, B col = g; C/D: c0,c1 = (g, 2t+{0,1}), c2,c3 = (g+8, 2t+{0,1}).)
//    One warp-wide load instruction reads 8 rows x 64 contiguous bytes; the kUnroll loads of a
//    group read 8 rows x 256 contiguous bytes, all issued before the first MMA.
//
// 3. Split-K inside the CTA, no atomics: the 8 warps of a CTA take interleaved groups of k
//    (warp w: groups w, w+8, ...; a group is kUnroll steps of 32 k), accumulate a 16x8 (or 16x16)
//    FP32 tile in 4 (8) registers per lane, then sum the 8 partial tiles through 4 KB of shared
//    memory. Results are deterministic (a fixed summation order) and each output is written once.
//
// 4. Enough bytes in flight. Little's law: 3.0 TB/s x ~0.7 µs of loaded latency = ~2 MB in
//    flight across the chip, ~16 KB per SM. A warp has kUnroll x 2 x 512 B = 4 KB of weight loads
//    outstanding per group; 256-thread CTAs at up to 3 per SM (the register budget below) give
//    up to 24 warps and ~96 KB per SM, several times the need, so HBM latency is covered even
//    when CTAs start and finish unevenly. The grid is ceil(N/16) CTAs: 256 for N = 4096 (two per
//    SM), 768 for a 7B qkv (N = 12288), 3584 for a 70B gate/up; every CTA does the same work,
//    and the hardware scheduler backfills SMs as CTAs finish.
//
// 5. Caching: weights are read once, so their loads skip L1 (L1::no_allocate, keeping L1 for x)
//    and ask L2 to fetch 256-byte blocks (L2::256B), which matches the 256 contiguous bytes per
//    row a group reads. x (at most 16 x K x 2 bytes, 0.9 MB for K = 28672) is re-read by every
//    CTA and stays in L1/L2; it adds M/16 of the weight bytes in L2 traffic.
//
// Expected: ~90% of the measured copy bandwidth on the large 7B/8B/70B layers at M = 1..8 (the
// remainder is the launch, the ramp-up and the tail of the grid: a few µs on the small o_proj);
// the time is nearly independent of M up to 16 because the weight bytes dominate.
//
// Shape limits: K a multiple of 8 (16-byte rows); any N (rows past N load zeros and are not
// stored); any K past the last full group is handled by per-chunk predicates (zeros contribute
// nothing to the sums).
#include "backends/cuda/gemv.h"

#include "backends/cuda/activation_device.h"

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/lowbit_device.h"
#include "backends/cuda/pdl.h"

#include <algorithm>

namespace qf::cuda {

namespace {

using lowbit::kThreads;                        // 8 warps of a CTA; they split K
using lowbit::kWarps;
constexpr int kRowsPerCta = 16;               // the M side of mma.m16n8k16 holds weight rows
constexpr int kChunksPerStep = 4;             // 16-byte chunks per row per warp step (t = 0..3)
constexpr int kKPerStep = kChunksPerStep * 8; // 32 k per step
constexpr int kUnroll = 4;                    // steps per group: 4 x 64 B = 256 B per row

// Weights streamed (not allocated in L1, 256-byte L2 fetches), activations cached in L1: every
// warp re-reads them (lowbit_device.h).
__device__ __forceinline__ uint4 load_weights16(const uint4* p, bool pred) { return lowbit::load_streaming_16(p, pred); }
__device__ __forceinline__ uint4 load_activations16(const uint4* p, bool pred) { return lowbit::load_cached_16(p, pred); }
using lowbit::mma_bf16_m16n8k16;

// The MMAs of one group: kUnroll steps of 32 k, each two m16n8k16 per batch tile. Words 0,1 of a
// lane's 16-byte loads hold physical k 8c+{0,1}, 8c+{2,3}; words 2,3 hold 8c+{4,5}, 8c+{6,7}.
template <int kMTiles>
__device__ __forceinline__ void mma_group(float (&acc)[kMTiles][4], const uint4 (&wl)[kUnroll], const uint4 (&wh)[kUnroll],
                                          const uint4 (&xv)[kUnroll][kMTiles]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      mma_bf16_m16n8k16(acc[mt], wl[u].x, wh[u].x, wl[u].y, wh[u].y, xv[u][mt].x, xv[u][mt].y);
      mma_bf16_m16n8k16(acc[mt], wl[u].z, wh[u].z, wl[u].w, wh[u].w, xv[u][mt].z, xv[u][mt].w);
    }
  }
}

// kMTiles = 1 for M <= 8, 2 for M <= 16 (each tile is 8 batch rows).
// Register budget: 3 CTAs of 256 threads per SM (<= 85 registers) for one tile, 2 for two.
template <int kMTiles>
__global__ void __launch_bounds__(kThreads, kMTiles == 1 ? 3 : 2)
gemv_bf16_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                 __nv_bfloat16* __restrict__ y, int m_rows, int64_t n_rows, int k) {
  pdl_trigger();  // pdl.h; the wait comes after the weight prefetch below
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;  // MMA group: weight rows g and g+8, batch row g (+8 per tile)
  const int t = lane % 4;  // which 16-byte chunk of the step this lane loads

  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerCta;
  const bool lo_ok = row0 + g < n_rows;
  const bool hi_ok = row0 + g + 8 < n_rows;
  // Row pointers in 16-byte chunks. A pointer of a row past N is formed but never dereferenced.
  const int64_t chunks_per_row = k / 8;
  const uint4* w_lo = reinterpret_cast<const uint4*>(w) + (row0 + g) * chunks_per_row;
  const uint4* w_hi = reinterpret_cast<const uint4*>(w) + (row0 + g + 8) * chunks_per_row;
  const uint4* x_row[kMTiles];
  bool x_ok[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = mt * 8 + g;
    x_ok[mt] = m < m_rows;
    x_row[mt] = reinterpret_cast<const uint4*>(x) + static_cast<int64_t>(m) * chunks_per_row;
  }

  // Launched programmatically (pdl.h), this CTA may be resident while the previous kernel (a
  // norm, an attention) still finishes: W is constant, so its first group is fetched into L2 now
  // and the main loop starts on L2 hits instead of a cold HBM ramp. x and y wait for pdl_wait().
  // (W must therefore not be written by the kernel just before; no kernel of the runtime does.)
  {
    const int n_chunks0 = static_cast<int>(chunks_per_row);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = (warp * kUnroll + u) * kChunksPerStep + t;
      if (chunk < n_chunks0) {
        if (lo_ok) asm volatile("prefetch.global.L2 [%0];" ::"l"(w_lo + chunk));
        if (hi_ok) asm volatile("prefetch.global.L2 [%0];" ::"l"(w_hi + chunk));
      }
    }
  }
  pdl_wait();

  float acc[kMTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[mt][j] = 0.f;

  const int n_chunks = static_cast<int>(chunks_per_row);
  const int n_steps = (k + kKPerStep - 1) / kKPerStep;
  for (int step0 = warp * kUnroll; step0 < n_steps; step0 += kWarps * kUnroll) {
    uint4 wl[kUnroll], wh[kUnroll], xv[kUnroll][kMTiles];
    // All loads of the group first, so kUnroll x (2 + kMTiles) 16-byte loads are in flight.
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = (step0 + u) * kChunksPerStep + t;
      const bool in_k = chunk < n_chunks;
      wl[u] = load_weights16(w_lo + chunk, in_k && lo_ok);
      wh[u] = load_weights16(w_hi + chunk, in_k && hi_ok);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) xv[u][mt] = load_activations16(x_row[mt] + chunk, in_k && x_ok[mt]);
    }
    mma_group<kMTiles>(acc, wl, wh, xv);
  }

  // Sum the kWarps partial tiles (lowbit_device.h); one output per thread.
  __shared__ float partial[kWarps][kMTiles * 8][kRowsPerCta];
  lowbit::store_split_k_tile<kMTiles>(acc, partial, [&](int m, int r, float sum) {
    if (m < m_rows && row0 + r < n_rows) y[static_cast<int64_t>(m) * n_rows + row0 + r] = __float2bfloat16_rn(sum);
  });
}

// ---- gemv_bf16_v2: the same MMA tile and split-K, software-pipelined and persistent ---------
// v1 issues a group's loads, waits for all of them, multiplies, and only then issues the next
// group: each warp's bytes in flight drop to zero once per group (4 times per CTA at K = 4096),
// and again at every CTA boundary (the reduction, the exit, the next CTA's start), where the
// grid's waves also start in lockstep. v2 keeps the HBM queue full instead:
//  - register double buffering: a warp issues the loads of its next group before it multiplies
//    the current one, so each warp always has one group (4 KB) outstanding while it computes;
//  - a persistent grid (as many CTAs as fit on the GPU, each taking row tiles blockIdx.x,
//    + gridDim.x, ...), and the next group may belong to the CTA's next row tile: the first loads
//    of tile i+1 are in flight during tile i's shared-memory reduction and store.
// Bytes in flight per SM: 2 CTAs x 8 warps x 4-8 KB = 64-128 KB, 4-8x Little's ~16 KB.
// Summation order is fixed (the same per-warp groups and shared-memory sum as v1): deterministic.
//
// kSwiGlu (gemv_bf16_swiglu): W is [gate; up], n_rows / 2 rows each (a multiple of 16), and the
// output is SwiGLU's product act[m, c] = silu(gate[m, c]) * up[m, c] instead of y. A CTA takes
// gate tile p and then up tile p (for pairs p = blockIdx.x, + gridDim.x, ..); the thread that
// stores output (m, r) of a tile keeps the gate value in a register and, after the up tile, writes
// the product. Each value is rounded to BF16 where the unfused pair (this GEMV, then silu_mul)
// stores it, so the result is the same bits, without the SiLU kernel and its round trip (a decode
// step's ~2 us per layer).
template <int kMTiles, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads, 2)
gemv_bf16_v2_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                    __nv_bfloat16* __restrict__ y, int m_rows, int64_t n_rows, int k) {
  static_assert(kMTiles * 8 * kRowsPerCta <= kThreads, "a thread stores at most one output of a tile");
  pdl_trigger();
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const int64_t chunks_per_row = k / 8;
  const int n_chunks = static_cast<int>(chunks_per_row);
  const int n_steps = (k + kKPerStep - 1) / kKPerStep;
  const int n_groups = (n_steps + kUnroll - 1) / kUnroll;
  const int64_t row_tiles = (n_rows + kRowsPerCta - 1) / kRowsPerCta;
  // The CTA's j-th row tile; row_tiles (or more) once it has none left.
  auto tile_of = [&](int64_t j) -> int64_t {
    if constexpr (kSwiGlu) {
      const int64_t half = row_tiles / 2, pair = blockIdx.x + (j / 2) * gridDim.x;
      return pair < half ? pair + (j % 2) * half : row_tiles;
    } else {
      return blockIdx.x + j * gridDim.x;
    }
  };

  struct Stage {
    uint4 wl[kUnroll], wh[kUnroll];
  };
  // Weights of group `group` of row tile `tile` (all zeros, no access, if tile >= row_tiles).
  auto load_stage = [&](int64_t tile, int group, Stage& st) {
    const int64_t row = tile * kRowsPerCta + g;
    const bool lo_ok = tile < row_tiles && row < n_rows;
    const bool hi_ok = tile < row_tiles && row + 8 < n_rows;
    const uint4* w_lo = reinterpret_cast<const uint4*>(w) + (lo_ok ? row : 0) * chunks_per_row;
    const uint4* w_hi = reinterpret_cast<const uint4*>(w) + (hi_ok ? row + 8 : 0) * chunks_per_row;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = (group * kUnroll + u) * kChunksPerStep + t;
      const bool in_k = chunk < n_chunks;
      st.wl[u] = load_weights16(w_lo + chunk, in_k && lo_ok);
      st.wh[u] = load_weights16(w_hi + chunk, in_k && hi_ok);
    }
  };

  const uint4* x_row[kMTiles];
  bool x_ok[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = mt * 8 + g;
    x_ok[mt] = m < m_rows;
    x_row[mt] = reinterpret_cast<const uint4*>(x) + static_cast<int64_t>(x_ok[mt] ? m : 0) * chunks_per_row;
  }

  // W is constant: its first group loads before pdl_wait() (see v1); x and y wait.
  Stage cur;
  load_stage(tile_of(0), warp, cur);
  pdl_wait();

  __shared__ float partial[kWarps][kMTiles * 8][kRowsPerCta];
  float gate = 0.f;  // kSwiGlu: the gate value of the output this thread stores
  for (int64_t j = 0;; ++j) {
    const int64_t tile = tile_of(j);
    if (tile >= row_tiles) break;
    float acc[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mt][j] = 0.f;

    for (int group = warp; group < n_groups; group += kWarps) {
      // The next group: this tile's, or the first of the next tile once this one is done.
      Stage nxt;
      if (group + kWarps < n_groups) load_stage(tile, group + kWarps, nxt);
      else load_stage(tile_of(j + 1), warp, nxt);
      uint4 xv[kUnroll][kMTiles];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = (group * kUnroll + u) * kChunksPerStep + t;
        const bool in_k = chunk < n_chunks;
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) xv[u][mt] = load_activations16(x_row[mt] + chunk, in_k && x_ok[mt]);
      }
      mma_group<kMTiles>(acc, cur.wl, cur.wh, xv);
      cur = nxt;
    }
    // (A warp with no group (K < 8 groups of 128 k) keeps `cur` all zeros: its loads are all
    // past K, so predicated off.)

    const int64_t row0 = tile * kRowsPerCta;
    if constexpr (kSwiGlu) {
      const int64_t f = n_rows / 2;
      const bool up = j % 2 == 1;
      lowbit::store_split_k_tile<kMTiles>(acc, partial, [&](int m, int r, float sum) {
        const float v = __bfloat162float(__float2bfloat16_rn(sum));  // as the unfused GEMV stores it
        if (!up) gate = v;
        else if (m < m_rows) y[static_cast<int64_t>(m) * f + (row0 - f) + r] = __float2bfloat16_rn(silu_times(gate, v));
      });
    } else {
      lowbit::store_split_k_tile<kMTiles>(acc, partial, [&](int m, int r, float sum) {
        if (m < m_rows && row0 + r < n_rows) y[static_cast<int64_t>(m) * n_rows + row0 + r] = __float2bfloat16_rn(sum);
      });
    }
  }
}

// The persistent grid: one CTA per row tile (kSwiGlu: per gate/up pair), at most what fits at once.
template <bool kSwiGlu>
void launch_v2(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n, int64_t k,
               cudaStream_t stream) {
  const int64_t row_tiles = (n + kRowsPerCta - 1) / kRowsPerCta;
  const int64_t work = kSwiGlu ? row_tiles / 2 : row_tiles;
  if (m <= 8) {
    constexpr auto kernel = gemv_bf16_v2_kernel<1, kSwiGlu>;
    const auto blocks = static_cast<unsigned>(std::min(work, resident_ctas<kernel>(kThreads)));
    launch_pdl(kernel, dim3(blocks), dim3(kThreads), 0, stream, x, w, y, static_cast<int>(m), n, static_cast<int>(k));
  } else {
    constexpr auto kernel = gemv_bf16_v2_kernel<2, kSwiGlu>;
    const auto blocks = static_cast<unsigned>(std::min(work, resident_ctas<kernel>(kThreads)));
    launch_pdl(kernel, dim3(blocks), dim3(kThreads), 0, stream, x, w, y, static_cast<int>(m), n, static_cast<int>(k));
  }
}

}  // namespace

bool gemv_bf16_supports(int64_t m, int64_t n, int64_t k) {
  // k < 2^31 keeps the chunk and step counters in 32-bit ints; n < 2^31 / 16 keeps the grid in
  // range. Both are far beyond any model.
  return m >= 1 && m <= kGemvMaxM && n >= 1 && n <= (int64_t{1} << 31) - 1 && k >= 8 && k % 8 == 0 &&
         k <= (int64_t{1} << 30);
}

void gemv_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
               int64_t k, cudaStream_t stream) {
  QF_CHECK(gemv_bf16_supports(m, n, k), "gemv_bf16: unsupported shape M=", m, " N=", n, " K=", k,
           " (needs 1 <= M <= ", kGemvMaxM, " and K a positive multiple of 8)");
  QF_CHECK(aligned16(x) && aligned16(w), "gemv_bf16: x and W must be 16-byte aligned (x=",
           static_cast<const void*>(x), ", W=", static_cast<const void*>(w), ")");
  QF_CHECK(y != nullptr, "gemv_bf16: null output");
  const int64_t blocks = (n + kRowsPerCta - 1) / kRowsPerCta;
  if (m <= 8) {
    launch_pdl(gemv_bf16_kernel<1>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, x, w, y,
               static_cast<int>(m), n, static_cast<int>(k));
  } else {
    launch_pdl(gemv_bf16_kernel<2>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, x, w, y,
               static_cast<int>(m), n, static_cast<int>(k));
  }
}

void gemv_bf16_v2(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, int64_t m, int64_t n,
                  int64_t k, cudaStream_t stream) {
  QF_CHECK(gemv_bf16_supports(m, n, k), "gemv_bf16_v2: unsupported shape M=", m, " N=", n, " K=", k,
           " (needs 1 <= M <= ", kGemvMaxM, " and K a positive multiple of 8)");
  QF_CHECK(aligned16(x) && aligned16(w), "gemv_bf16_v2: x and W must be 16-byte aligned (x=",
           static_cast<const void*>(x), ", W=", static_cast<const void*>(w), ")");
  QF_CHECK(y != nullptr, "gemv_bf16_v2: null output");
  launch_v2<false>(x, w, y, m, n, k, stream);
}

void gemv_bf16_swiglu(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* act, int64_t m, int64_t f,
                      int64_t k, cudaStream_t stream) {
  QF_CHECK(f > 0 && f % kRowsPerCta == 0 && gemv_bf16_supports(m, 2 * f, k), "gemv_bf16_swiglu: unsupported shape M=",
           m, " F=", f, " K=", k, " (needs 1 <= M <= ", kGemvMaxM, ", F a positive multiple of ", kRowsPerCta,
           " and K a positive multiple of 8)");
  QF_CHECK(aligned16(x) && aligned16(w), "gemv_bf16_swiglu: x and W must be 16-byte aligned (x=",
           static_cast<const void*>(x), ", W=", static_cast<const void*>(w), ")");
  QF_CHECK(act != nullptr, "gemv_bf16_swiglu: null output");
  launch_v2<true>(x, w, act, m, 2 * f, k, stream);
}

}  // namespace qf::cuda
