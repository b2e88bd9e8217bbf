// FPx x BF16 GEMM for small and medium M: y[M,N] = x[M,K] · (decode(W) s)^T.
//
// Design (H100 SXM: 132 SMs, ~3.0 TB/s HBM, 50 MB L2, 256 KB L1/shared per SM)
// -----------------------------------------------------------------------------------------
// It is gemv.cu's design with FPx weights: the weights are the A operand of mma.m16n8k16 and go
// from global memory straight into registers with aligned 16-byte loads (no shared-memory staging:
// each weight is used by exactly one warp), are dequantized in registers (lowbit_dequant.h) and
// multiplied with the activations, which are the B operand (batch rows = MMA columns).
//
// 1. Layout (weight_prepack.h, lowbit_dequant.h). A tile is 16 rows x 64 k = 4 MMAs per lane.
//    Per tile, lane l reads 16 bytes of nibbles (one load; a warp reads the 512 contiguous bytes
//    of the nibble segment) and 4r bytes of high parts (one 8- or 4-byte load; 128 r contiguous
//    bytes per warp): 16 + 4r bytes = 32 codes x 6 (or 5) bits. Every load is aligned and fully
//    used; nothing goes through shared memory, so there are no bank conflicts to avoid.
// 2. Dequantization: 3 ALU instructions build a byte-form word (4 codes), about 4 turn it into two
//    BF16x2 registers, and one mul.bf16x2 by 2^(127-bias) per register makes them exact FPx values
//    (lowbit_dequant.h says why that is exact, subnormals included): ~3 instructions per weight.
//    Budget at the HBM rate: 3.0 TB/s / 0.75 B = 4.0e12 weights/s against 132 SMs x 4 schedulers
//    x 32 lanes x ~1.75 GHz = 3.0e13 lane-instructions/s, i.e. ~7 per weight: dequantization uses
//    less than half, so the kernel stays memory-bound at small M.
// 3. The channel scale is applied in FP32 to each finished sum (the epilogue), not to the
//    weights: decode(code) x s is not a BF16 number, and the spec says W' = decode(code) x s.
// 4. Split-K inside the CTA: the 8 warps take interleaved groups of kUnroll tiles; their FP32
//    tiles are summed by a fixed binary tree through shared memory (lowbit_device.h), so results
//    are deterministic and each output is written once, with no atomics or workspace.
// 5. Bytes in flight: each warp loads the weights of its next group while it dequantizes and
//    multiplies the current one (register double buffering). A group is kUnroll x kRowTiles
//    tiles: 4 x 768 B or 2 x 2 x 768 B = 3 KB per warp of FP6 in flight beyond the one being used;
//    2 CTAs x 8 warps per SM give ~48 KB per SM, three times Little's law's ~16 KB (3.0 TB/s x
//    ~0.7 us loaded latency / 132 SMs). Launched programmatically (pdl.h), a CTA issues its first
//    group's loads before it waits for the kernel before it, as gemv.cu does: in the FP6 decode
//    step of Llama-2-7B that and the RoPE fix (rope_kv.cu) took 3.85 -> 3.47 ms (H100, 2026-11-23).
// 6. M buckets (a CTA covers kRowTiles x 16 rows and kMTiles x 8 batch rows):
//      M <= 8:   1 row tile,  1 batch tile, 4 tiles per group
//      M <= 16:  2 row tiles, 2 batch tiles, 2 per group
//      M <= 32:  2 row tiles, 4 batch tiles, 1 per group
//      M >  32:  2 row tiles, 8 batch tiles, 1 per group; grid.y = ceil(M / 64) blocks of x;
//                4 row tiles instead when that still gives >= 2 waves of CTAs (the wide q/k/v and
//                gate/up shapes): x's L2 traffic halves, measured 10-22% faster at M = 64-128 on
//                those shapes (H100, 2026-11-23: llama3-8b gate_up M = 128 197 -> 162 us), with
//                32-40 bytes of register spills; narrower shapes would leave SMs idle
//    Why two row tiles from M = 9 on: every CTA reads the whole of x for its rows, so x traffic
//    (L1/L2) is (N / rows per CTA) x M x K x 2 bytes against 0.75 N K bytes of FP6 weights: a ratio
//    of 2.67 M / rows. With 16 rows it would be 2.7 at M = 16; with 32, 1.3 at M = 16 and 5.3 at
//    M = 64 (x is L2-resident; L2 delivers roughly twice HBM's rate). For M > 64 the blocks of x
//    for the same rows are adjacent in the grid (blockIdx.y varies slowest, so block (nt, 0) and
//    (nt, 1) run together) and the second read of each weight tile comes from L2.
//
// Expected (H100, weights from HBM at ~90% of the measured copy rate, as gemv.cu): M = 1..16 at
// ~0.75/2 = 0.375 of gemv_bf16's time, i.e. 2.4-2.6x cuBLAS BF16 (which reads 2 bytes per weight
// at ~70-80% of the bandwidth at these M); the ideal is 16/6 = 2.67x from bytes alone. M = 64:
// tensor-core and L1 bound (~2 x 64 x 16 FLOP per 12 weight bytes per lane step; mma.sync reaches
// ~60% of wgmma's BF16 rate), ~1.5-2x cuBLAS. M = 128: two 64-row blocks, ~1.3-1.6x.
//
// Shape limits: K a multiple of 8 (x rows in 16-byte chunks, each entirely inside or outside K);
// any N (rows past N are zero codes in the blob and are not stored); any K past the last full
// tile is zero codes in the blob, and its activation chunks are predicated off.
#include "backends/cuda/fpx_gemm.h"

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/lowbit_dequant.h"
#include "backends/cuda/lowbit_device.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/weight_prepack.h"

namespace qf::cuda {

namespace {

using lowbit::kThreads;
using lowbit::kWarps;

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The high-part words of one tile for one lane: r of them.
template <int R>
__device__ __forceinline__ void load_hi_words(const uint8_t* tile, int lane, bool pred, uint32_t (&hi)[R]) {
  const uint8_t* p = tile + fpx_lane_hi_offset(lane, R);
  if constexpr (R == 2) {
    const uint2 v = lowbit::load_streaming_8(p, pred);
    hi[0] = v.x;
    hi[1] = v.y;
  } else {
    hi[0] = lowbit::load_streaming_4(p, pred);
  }
}

template <int kExp, int kMan, int kRowTiles, int kMTiles, int kUnroll, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
fpx_gemm_kernel(const __nv_bfloat16* __restrict__ x, const uint8_t* __restrict__ tiles, const float* __restrict__ scales,
                __nv_bfloat16* __restrict__ y, int m_rows, int n_rows, int k, int row_tiles, int k_tiles) {
  using Codec = FpxCodec<kExp, kMan>;
  constexpr int kHi = Codec::kHiBits;
  constexpr int kTileBytes = fpx_tile_bytes(Codec::kBits);
  constexpr int kAcc = kRowTiles * kMTiles * 4;
  pdl_trigger();  // pdl.h; the wait comes after the first weight loads below

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;  // rows g, g+8 of each row tile; batch row g of each batch tile
  const int t = lane % 4;  // k 16t .. 16t+15 of each tile

  const int nt0 = blockIdx.x * kRowTiles;
  const int m0 = blockIdx.y * kMTiles * 8;

  const uint8_t* row_tile[kRowTiles];
  bool row_tile_ok[kRowTiles];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
    row_tile_ok[rt] = nt0 + rt < row_tiles;
    row_tile[rt] = tiles + static_cast<int64_t>(nt0 + rt) * k_tiles * kTileBytes;
  }
  const __nv_bfloat16* x_row[kMTiles];
  bool x_row_ok[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = m0 + mt * 8 + g;
    x_row_ok[mt] = m < m_rows;
    x_row[mt] = x + static_cast<int64_t>(x_row_ok[mt] ? m : 0) * k;
  }

  float acc[kRowTiles][kMTiles][4];
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt)
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[rt][mt][c] = 0.f;

  // The weights of one group of kUnroll tiles (per row tile), as this lane loads them.
  struct Stage {
    uint4 nibbles[kUnroll][kRowTiles];
    uint32_t hi[kUnroll][kRowTiles][kHi];
  };
  auto load_stage = [&](int group, Stage& s) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int kt = group * kUnroll + u;
      const bool in_k = kt < k_tiles;
#pragma unroll
      for (int rt = 0; rt < kRowTiles; ++rt) {
        const uint8_t* tile = row_tile[rt] + static_cast<int64_t>(in_k ? kt : 0) * kTileBytes;
        const bool ok = in_k && row_tile_ok[rt];
        s.nibbles[u][rt] = lowbit::load_streaming_16(tile + fpx_lane_nibble_offset(lane), ok);
        load_hi_words<kHi>(tile, lane, ok, s.hi[u][rt]);
      }
    }
  };

  const int groups = (k_tiles + kUnroll - 1) / kUnroll;
  // The blob is constant: the first group loads before pdl_wait() (gemv.cu explains); x and y wait.
  Stage current;
  load_stage(warp, current);
  pdl_wait();
  for (int group = warp; group < groups; group += kWarps) {
    Stage next;
    load_stage(group + kWarps, next);  // all loads predicated off past the last group
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int kt = group * kUnroll + u;
      if (kt >= k_tiles) break;  // uniform across the warp
      const int k_lane = kt * kFpxTileK + 16 * t;
#pragma unroll
      for (int q = 0; q < 2; ++q) {  // the lane's two 16-byte activation chunks: MMAs 2q, 2q+1
        const bool in_k = k_lane + 8 * q < k;
        uint4 xv[kMTiles];
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) xv[mt] = lowbit::load_cached_16(x_row[mt] + k_lane + 8 * q, in_k && x_row_ok[mt]);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const int j = 2 * q + jj;
#pragma unroll
          for (int rt = 0; rt < kRowTiles; ++rt) {
            uint32_t a[4];
            fpx_a_fragment<Codec>(word_of(current.nibbles[u][rt], j), current.hi[u][rt], j, a);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt)
              lowbit::mma_bf16_m16n8k16(acc[rt][mt], a, word_of(xv[mt], 2 * jj), word_of(xv[mt], 2 * jj + 1));
          }
        }
      }
    }
    current = next;
  }

  __shared__ float reduce_smem[lowbit::kReduceSmemBytes<kAcc> / 4];
  lowbit::reduce_to_warp0<kAcc>(reinterpret_cast<float(&)[kAcc]>(acc), reduce_smem);
  if (warp != 0) return;

  // Epilogue: C fragment c0, c1 = (weight row g, batch rows 2t, 2t+1), c2, c3 = (row g+8, same).
#pragma unroll
  for (int rt = 0; rt < kRowTiles; ++rt) {
    const int n_lo = (nt0 + rt) * kFpxTileRows + g;
    const int n_hi = n_lo + 8;
    const float s_lo = n_lo < n_rows ? scales[n_lo] : 0.f;
    const float s_hi = n_hi < n_rows ? scales[n_hi] : 0.f;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = c < 2 ? n_lo : n_hi;
        const int m = m0 + mt * 8 + 2 * t + (c & 1);
        if (n < n_rows && m < m_rows)
          y[static_cast<int64_t>(m) * n_rows + n] = __float2bfloat16_rn(acc[rt][mt][c] * (c < 2 ? s_lo : s_hi));
      }
    }
  }
}

struct LaunchShape {
  int m, n, k, row_tiles, k_tiles;
};

template <int kExp, int kMan, int kRowTiles, int kMTiles, int kUnroll, int kMinBlocks>
void launch(const __nv_bfloat16* x, const uint8_t* blob, size_t scale_offset, __nv_bfloat16* y, const LaunchShape& s,
            cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.row_tiles + kRowTiles - 1) / kRowTiles),
                  static_cast<unsigned>((s.m + kMTiles * 8 - 1) / (kMTiles * 8)));
  launch_pdl(fpx_gemm_kernel<kExp, kMan, kRowTiles, kMTiles, kUnroll, kMinBlocks>, grid, dim3(kThreads), 0, stream,
             x, blob, reinterpret_cast<const float*>(blob + scale_offset), y, s.m, s.n, s.k, s.row_tiles, s.k_tiles);
}

// The M buckets of the design notes (6.).
template <int kExp, int kMan>
void launch_for_m(const __nv_bfloat16* x, const uint8_t* blob, size_t scale_offset, __nv_bfloat16* y,
                  const LaunchShape& s, cudaStream_t stream) {
  if (s.m <= 8) launch<kExp, kMan, 1, 1, 4, 2>(x, blob, scale_offset, y, s, stream);
  else if (s.m <= 16) launch<kExp, kMan, 2, 2, 2, 2>(x, blob, scale_offset, y, s, stream);
  else if (s.m <= 32) launch<kExp, kMan, 2, 4, 1, 2>(x, blob, scale_offset, y, s, stream);
  else if (int64_t((s.row_tiles + 3) / 4) * ((s.m + 63) / 64) >= 2 * device_info().sm_count)
    launch<kExp, kMan, 4, 8, 1, 1>(x, blob, scale_offset, y, s, stream);  // design note 6: x's L2 traffic halved
  else launch<kExp, kMan, 2, 8, 1, 1>(x, blob, scale_offset, y, s, stream);
}

// ---- dequantize + cuBLAS (large M) -----------------------------------------------------------
// A plain streaming kernel: read 0.75 (or 0.625) bytes per weight, write 2, at HBM bandwidth.
// Each warp expands kDequantTilesPerWarp consecutive tiles (blob order: k tiles of a row tile, then
// the next row tile), loading all of them first (4 x 24 B per lane, ~3 KB per warp in flight; with
// 18 KB of shared memory per CTA up to 8 CTAs fit on an SM, far above Little's ~16 KB per SM).
// A lane dequantizes its 16 + 4r bytes exactly as the GEMM does (so the GPU test of this kernel
// also checks the GEMM's A fragments): fragment j gives row g the weights k0..k0+3 ({a0, a2}) and
// row g+8 the same k ({a1, a3}), k0 = 16t + 4j. Stored straight to global memory these would be
// 8-byte pieces 32 bytes apart (the first version did that and ran at ~0.9 TB/s of total traffic,
// ~190 GB/s of blob bytes); instead the tile goes through a per-warp 16 x 64 staging tile in shared
// memory and leaves as 16-byte stores, one warp instruction writing 4 whole 128-byte row segments.
// K % 8 == 0 keeps every 8-weight chunk wholly inside or outside K and 16-byte aligned.
constexpr int kDequantTilesPerWarp = 4;
// Staging row pitch: 64 BF16 + 16 bytes of padding, so rows stay 16-byte aligned for the uint4
// reads and the 8-byte fragment writes of lanes g = 0..3 (one half-warp phase) spread over the
// banks with at most 2-way conflicts (a 128-byte pitch would put all 8 rows g on the same banks).
constexpr int kDequantPitch = kFpxTileK * 2 + 16;

template <int kExp, int kMan>
__global__ void __launch_bounds__(kThreads)
fpx_dequantize_kernel(const uint8_t* __restrict__ tiles, __nv_bfloat16* __restrict__ w, int n_rows, int k,
                      int64_t tile_count, int k_tiles) {
  using Codec = FpxCodec<kExp, kMan>;
  constexpr int kHi = Codec::kHiBits;
  constexpr int kTileBytes = fpx_tile_bytes(Codec::kBits);
  __shared__ __align__(16) uint8_t staging[kWarps][kFpxTileRows * kDequantPitch];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kDequantTilesPerWarp;
  if (first >= tile_count) return;  // whole warps; only __syncwarp below

  uint4 nibbles[kDequantTilesPerWarp];
  uint32_t hi[kDequantTilesPerWarp][kHi];
#pragma unroll
  for (int u = 0; u < kDequantTilesPerWarp; ++u) {
    const bool ok = first + u < tile_count;
    const uint8_t* tile = tiles + (ok ? first + u : first) * kTileBytes;
    nibbles[u] = lowbit::load_streaming_16(tile + fpx_lane_nibble_offset(lane), ok);
    load_hi_words<kHi>(tile, lane, ok, hi[u]);
  }

  uint8_t* stage = staging[warp];
#pragma unroll
  for (int u = 0; u < kDequantTilesPerWarp; ++u) {
    const int64_t tile_index = first + u;
    if (tile_index >= tile_count) break;  // uniform across the warp
    const int64_t nt = tile_index / k_tiles;
    const int kt = static_cast<int>(tile_index % k_tiles);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t a[4];
      fpx_a_fragment<Codec>(word_of(nibbles[u], j), hi[u], j, a);
      const int k0 = 16 * t + 4 * j;
      *reinterpret_cast<uint2*>(stage + g * kDequantPitch + 2 * k0) = make_uint2(a[0], a[2]);
      *reinterpret_cast<uint2*>(stage + (g + 8) * kDequantPitch + 2 * k0) = make_uint2(a[1], a[3]);
    }
    __syncwarp();
    // 16 rows x 8 chunks of 8 weights: lane + 32 i -> row (lane + 32 i) / 8, chunk lane % 8.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = (lane + 32 * i) / 8;
      const int c = lane % 8;
      const uint4 v = *reinterpret_cast<const uint4*>(stage + r * kDequantPitch + 16 * c);
      const int64_t row = nt * kFpxTileRows + r;
      const int kk = kt * kFpxTileK + 8 * c;
      if (row < n_rows && kk < k) *reinterpret_cast<uint4*>(w + row * k + kk) = v;
    }
    __syncwarp();  // the next tile overwrites the staging tile
  }
}

// y[i, c] *= s[c]. Memory-bound (4 bytes of y traffic per element): 8 elements per thread with
// 16-byte accesses when N % 8 == 0 (then 8 consecutive elements share a row), else one.
template <int kVec>
__global__ void fpx_scale_columns_kernel(__nv_bfloat16* __restrict__ y, const float* __restrict__ scales, int64_t m,
                                         int64_t n) {
  const int64_t total = m * n / kVec;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c0 = (i * kVec) % n;
    if constexpr (kVec == 8) {
      uint4 v = reinterpret_cast<const uint4*>(y)[i];
      auto* h = reinterpret_cast<__nv_bfloat16*>(&v);
#pragma unroll
      for (int e = 0; e < 8; ++e) h[e] = __float2bfloat16_rn(__bfloat162float(h[e]) * scales[c0 + e]);
      reinterpret_cast<uint4*>(y)[i] = v;
    } else {
      y[i] = __float2bfloat16_rn(__bfloat162float(y[i]) * scales[c0]);
    }
  }
}

constexpr int64_t kMaxDim = int64_t{1} << 30;
// grid.y = ceil(M / 64) must stay within CUDA's 65535.
constexpr int64_t kMaxM = int64_t{65535} * 64;

}  // namespace

bool fpx_gemm_has_kernel(FpxType type) { return type == kFp6E3M2 || type == kFp6E2M3 || type == kFp5E2M2; }

bool fpx_gemm_supports(FpxType type, int64_t m, int64_t n, int64_t k) {
  return fpx_gemm_has_kernel(type) && m >= 1 && m <= kMaxM && n >= 1 && n < kMaxDim && k >= 8 && k % 8 == 0 &&
         k < kMaxDim;
}

void fpx_gemm(FpxType type, const __nv_bfloat16* x, const void* packed_w, __nv_bfloat16* y, int64_t m, int64_t n,
              int64_t k, cudaStream_t stream) {
  QF_CHECK(fpx_gemm_supports(type, m, n, k), "fpx_gemm: unsupported fp", type.bits(), "_e", type.exp_bits, "m",
           type.man_bits, " GEMM M=", m, " N=", n, " K=", k,
           " (compiled types: fp6_e3m2, fp6_e2m3, fp5_e2m2; K must be a positive multiple of 8)");
  QF_CHECK(aligned16(x) && aligned16(packed_w), "fpx_gemm: x and the packed weights must be 16-byte aligned (x=",
           static_cast<const void*>(x), ", W=", packed_w, ")");
  QF_CHECK(y != nullptr, "fpx_gemm: null output");
  const FpxPackedLayout layout = fpx_packed_layout(type, n, k);
  const LaunchShape s{static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                      static_cast<int>(layout.row_tiles()), static_cast<int>(layout.k_tiles())};
  const auto* blob = static_cast<const uint8_t*>(packed_w);
  if (type == kFp6E3M2) launch_for_m<3, 2>(x, blob, layout.scale_offset(), y, s, stream);
  else if (type == kFp6E2M3) launch_for_m<2, 3>(x, blob, layout.scale_offset(), y, s, stream);
  else launch_for_m<2, 2>(x, blob, layout.scale_offset(), y, s, stream);
}

void fpx_dequantize_codes(FpxType type, const void* packed_w, __nv_bfloat16* w, int64_t n, int64_t k,
                          cudaStream_t stream) {
  QF_CHECK(fpx_gemm_supports(type, 1, n, k), "fpx_dequantize_codes: unsupported fp", type.bits(), "_e",
           type.exp_bits, "m", type.man_bits, " weight [", n, ", ", k,
           "] (compiled types: fp6_e3m2, fp6_e2m3, fp5_e2m2; K must be a positive multiple of 8)");
  QF_CHECK(aligned16(packed_w) && aligned16(w), "fpx_dequantize_codes: the blob and the output must be 16-byte aligned");
  const FpxPackedLayout layout = fpx_packed_layout(type, n, k);
  const int64_t tiles = layout.row_tiles() * layout.k_tiles();
  const int64_t tiles_per_cta = int64_t{kWarps} * kDequantTilesPerWarp;
  const dim3 grid(static_cast<unsigned>((tiles + tiles_per_cta - 1) / tiles_per_cta));
  const auto* blob = static_cast<const uint8_t*>(packed_w);
  const int kt = static_cast<int>(layout.k_tiles());
  if (type == kFp6E3M2)
    fpx_dequantize_kernel<3, 2><<<grid, kThreads, 0, stream>>>(blob, w, static_cast<int>(n), static_cast<int>(k), tiles, kt);
  else if (type == kFp6E2M3)
    fpx_dequantize_kernel<2, 3><<<grid, kThreads, 0, stream>>>(blob, w, static_cast<int>(n), static_cast<int>(k), tiles, kt);
  else
    fpx_dequantize_kernel<2, 2><<<grid, kThreads, 0, stream>>>(blob, w, static_cast<int>(n), static_cast<int>(k), tiles, kt);
  QF_CUDA_CHECK_LAUNCH();
}

void fpx_scale_columns(FpxType type, const void* packed_w, __nv_bfloat16* y, int64_t m, int64_t n, int64_t k,
                       cudaStream_t stream) {
  QF_CHECK(fpx_gemm_supports(type, m, n, k) && y != nullptr, "fpx_scale_columns: bad call (M=", m, " N=", n, " K=", k, ")");
  const FpxPackedLayout layout = fpx_packed_layout(type, n, k);
  const auto* scales = reinterpret_cast<const float*>(static_cast<const uint8_t*>(packed_w) + layout.scale_offset());
  // y from cuBLASLt is 16-byte aligned (a fresh allocation or a row-aligned slice in practice);
  // check rather than assume before taking the vector path.
  const bool vec = n % 8 == 0 && aligned16(y);
  const int64_t items = vec ? m * n / 8 : m * n;
  const int64_t blocks = std::min<int64_t>((items + 255) / 256, int64_t{132} * 16);  // grid-stride past that
  if (vec) fpx_scale_columns_kernel<8><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(y, scales, m, n);
  else fpx_scale_columns_kernel<1><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(y, scales, m, n);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace qf::cuda
