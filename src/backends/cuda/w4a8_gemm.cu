// FireQ INT4 x FP8 linear layer: the per-token FP8 quantizer, the decode GEMV, and the weight
// expansion of the large-M path (w4a8_gemm.h).
//
// Turning a code into its FP8 weight (all paths)
// -------------------------------------------------------------------------------------------
// The value is e4m3(q · sigma), q in [-8, 7], sigma an E4M3 group scale <= 56 (the lut format's
// bound, so |q·sigma| <= 448 never saturates). As in FireQ, a 16-entry table per (row, group)
// holds the 16 FP8 bytes; the codes are stored offset-binary (n = q + 8), and byte permutes look
// four nibbles up at once (lut_lookup). The table costs 8 FP32 multiplies and 8 two-way
// conversions per group and row; in the GEMV the four lanes that share a row and group compute
// a quarter each and exchange them by shuffles. Measured on the H100 (2026-11-23), the first
// version, which converted every weight with half2 arithmetic (exact too, one
// cvt.rn.satfinite.e4m3x2.f16x2 per two weights), was bound by those conversions: 1.0-1.7 TB/s
// of code bytes whatever the pipelining.
//
// The decode GEMV (M <= 16)
// -------------------------------------------------------------------------------------------
// The layout of gemv_bf16_v2 (gemv.cu) with FP8 operands: a CTA owns 16 weight rows, each of
// its 8 warps multiplies them with the activations by mma.m16n8k32 (E4M3 x E4M3 -> FP32), W as
// the 16x32 A operand and x^T as the 32x8 B operand; warps split K, the partial tiles are summed
// in shared memory, and the grid is persistent with each warp's next loads in flight while it
// computes (pipeline below). A step is one scale group: lane (g, t) loads 16 bytes (32 codes, k = 32t .. 32t + 31
// of the group) of rows g and g + 8, the two group scales, and the same 32 k of activation row g
// (two 16-byte loads). Each code word (8 k) becomes two fragment words: A's a0/a2 (row g) and
// a1/a3 (row g+8) hold k 0..3 and 4..7, B's b0/b1 the activations of the same k (the MMA's k
// index depends on t only on both sides, so any per-lane permutation of k that A and B share is
// harmless: the same argument as gemv.cu's). Bytes: 0.5 per weight plus 1/128 for the scale.
// At ~3 TB/s an SM must turn ~25 weights per clock into FP8: ~40 integer lane-instructions per
// clock of the 64 its integer pipe issues.
#include "backends/cuda/w4a8_gemm.h"

#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fp8_token_device.h"
#include "backends/cuda/lowbit_device.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/weight_prepack.h"
#include "backends/cuda/wgmma.h"
#include "core/error.h"

namespace qf::cuda {

namespace {

using lowbit::kThreads;
using lowbit::kWarps;

constexpr int kRowsPerCta = 16;
constexpr int kChunksPerStep = 4;        // 16-byte code chunks per row per step (lanes t = 0..3)

// ---- code -> FP8 ----------------------------------------------------------------------------

// prmt.b32 (PTX): byte i of the result is byte c.nibble[i] & 7 of {b, a} (a = bytes 0-3), or, when
// bit 3 of that selector nibble is set, that byte's sign bit replicated over 8 bits. (CUDA's
// __byte_perm has no sign mode, which the mask below needs.)
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Word i (0..3) of the lookup table of a group whose scale has E4M3 code `sigma_code`: entries
// 4i .. 4i+3, entry n = e4m3((n - 8) sigma) (n = q + 8, the offset-binary code). q sigma is exact
// in FP32 (<= 7 significant bits) and the conversion rounds to nearest even with saturation,
// like the formats' codec.
__device__ __forceinline__ uint32_t lut_word(uint32_t sigma_code, int i) {
  const float sigma = __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(sigma_code), __NV_E4M3)));
  const float q0 = float(4 * i - 8);
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(q0 * sigma, (q0 + 1.f) * sigma), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi =
      __nv_cvt_float2_to_fp8x2(make_float2((q0 + 2.f) * sigma, (q0 + 3.f) * sigma), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// One code word (8 offset-binary nibbles, nibble i = k i) -> the FP8 weights of k 0..3 (lo) and
// 4..7 (hi), from the 16-byte table t[0..3]. Two byte permutes look a nibble's low 3 bits up in
// entries 0-7 and 8-15; a third, in sign mode, turns each nibble's bit 3 into a byte mask (the
// nibble's bit 3 is the sign bit of a byte of w (odd nibbles) or of w << 4 (even ones)), and one
// LOP3 picks. 12 integer instructions per 8 weights, no conversions.
__device__ __forceinline__ void lut_lookup(uint32_t w, const uint32_t (&t)[4], uint32_t& lo, uint32_t& hi) {
  const uint32_t w4 = w << 4;
  const uint32_t sel0 = w & 0x7777u;
  const uint32_t sel1 = (w >> 16) & 0x7777u;
  const uint32_t m0 = prmt(w4, w, 0xD9C8u);  // nibbles 0,1,2,3: bytes 0 of w4, 4 = 0 of w, 1 of w4, 5
  const uint32_t m1 = prmt(w4, w, 0xFBEAu);  // nibbles 4..7
  lo = (prmt(t[2], t[3], sel0) & m0) | (prmt(t[0], t[1], sel0) & ~m0);
  hi = (prmt(t[2], t[3], sel1) & m1) | (prmt(t[0], t[1], sel1) & ~m1);
}

// Four E4M3 bytes (k 0..3) -> two FP16 pairs (k 0, 1) and (k 2, 3): every E4M3 value is an
// FP16 number, so this is exact.
__device__ __forceinline__ void fp8x4_to_f16(uint32_t x, uint32_t& p0, uint32_t& p1) {
  const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(x & 0xFFFFu), __NV_E4M3);
  const __half2_raw b = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(x >> 16), __NV_E4M3);
  p0 = uint32_t(a.x) | (uint32_t(a.y) << 16);
  p1 = uint32_t(b.x) | (uint32_t(b.y) << 16);
}

using lowbit::mma_e4m3_m16n8k32;
using lowbit::mma_f16_m16n8k16;

// ---- the GEMV ---------------------------------------------------------------------------------

struct BlobView {
  const uint8_t* codes;
  const uint8_t* scales;
  const float* row_scales;
  int64_t row_bytes;  // K / 2
  int scale_cols;     // groups per row
  int scale_stride;   // bytes per row of scales (scale_cols padded to a multiple of 4)
};

// The pipeline: every lane streams its own bytes (16 B of codes of rows g and g+8 per step, and
// a 4-byte word of each row's group scales) through a ring of kStages stages of shared memory
// with cp.async, kStages - 1 work items ahead of the one it multiplies. A lane reads back only
// what it copied itself, so cp.async.wait_group alone orders it (no barrier). A work item is
// kUnroll steps of one row tile; a warp's items run over its k-groups of one tile, then of the
// CTA's next tile, so the stream does not stop at tile boundaries (the reduction runs while the
// next tile's bytes arrive). Why not registers: a register stage can only be waited on whole,
// and the dequantization work per byte (~4x the BF16 GEMV's) made a warp alternate between
// waiting for its one stage in flight and computing: 1.2-1.7 TB/s measured on the H100
// (2026-11-23) with 1-2 stages in registers, whatever the tile and unroll.
//
// The multiplication: Hopper has no FP8 mma.sync (its FP8 tensor-core path is wgmma); ptxas
// lowers mma.m16n8k32.e4m3 to two FP16 HMMAs after converting every operand byte of every lane
// with F2FP (12 conversions per lane and MMA), and F2FP issues at a fraction of the integer rate:
// that bound the kernel (~16 weights per clock per SM, counted from the SASS and measured). So
// where the activations fit in shared memory (kXSmem: M x K x 2 bytes <= kXSmemMaxBytes), the
// CTA converts them to FP16 once, and
// the weights go from the FP8 table to FP16 with 0.5 conversions per weight into FP16 MMAs;
// otherwise the FP8 MMA as written.
constexpr int kUnroll = 2;  // steps (scale groups) per work item: 2 x 128 k
// Per warp and stage: codes [row g / g+8][u][lane] 16 B, then scales [row][lane] 4 B. Lanes
// consecutive in each array: conflict-free 16-byte and 4-byte accesses.
constexpr int kStageCodeBytes = 2 * kUnroll * 32 * 16;
constexpr int kStageBytes = kStageCodeBytes + 2 * 32 * 4;
constexpr int ring_bytes(int stages) { return kWarps * stages * kStageBytes; }
// 24576 FP16 values: batch 1 at every Llama width but Llama-2-70B's down_proj input (28672), batch
// 2 up to K = 12288, 3 up to 8192.
constexpr int kXSmemMaxBytes = 49152;
// Stages: 4 (73,728 B; 3 CTAs per SM by memory, 2 by registers), 3 with the FP16 activations
// (55,296 + up to 49,152 B + 4 KB static: still 2 CTAs in an SM's 228 KB).
constexpr int stages_for(bool x_smem) { return x_smem ? 3 : 4; }

template <int kMTiles, bool kXSmem>
__global__ void __launch_bounds__(kThreads, 2)
w4a8_gemv_kernel(const uint8_t* __restrict__ xq, const float* __restrict__ x_scale, BlobView wv,
                 __nv_bfloat16* __restrict__ y, int m_rows, int64_t n_rows, int k) {
  static_assert(!kXSmem || kMTiles == 1, "FP16 activations in shared memory: M <= 8 only");
  constexpr int kStages = stages_for(kXSmem);
  extern __shared__ __align__(16) uint8_t smem[];
  pdl_trigger();
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const int n_chunks = k / 32;  // 16-byte code chunks per row
  const int n_steps = wv.scale_cols;
  const int n_groups = (n_steps + kUnroll - 1) / kUnroll;
  const int64_t row_tiles = (n_rows + kRowsPerCta - 1) / kRowsPerCta;
  // This warp's work: its k-groups (warp, warp + 8, ...) of each of the CTA's tiles.
  const int my_groups = n_groups > warp ? (n_groups - warp + kWarps - 1) / kWarps : 0;
  const int64_t my_tiles = row_tiles > blockIdx.x ? (row_tiles - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const int64_t my_items = my_tiles * my_groups;
  uint8_t* ring = smem + warp * (kStages * kStageBytes);

  // The producer's cursor: the next work item to copy (its tile, its k-group and its stage),
  // advanced by increments (a division per item would cost more than the copy).
  int64_t p_tile = blockIdx.x;
  int p_gi = 0, p_stage = 0;
  // Copies the cursor's item into its stage and advances the cursor.
  auto issue = [&]() {
    uint8_t* st = ring + p_stage * kStageBytes;
    const int64_t tile = p_tile;
    const int group = warp + p_gi * kWarps;
    p_stage = p_stage + 1 == kStages ? 0 : p_stage + 1;
    if (++p_gi == my_groups) {
      p_gi = 0;
      p_tile += gridDim.x;
    }
    const int step0 = group * kUnroll;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = tile * kRowsPerCta + g + 8 * h;
      const bool ok = row < n_rows;
      const int64_t r = ok ? row : 0;
      const uint8_t* codes = wv.codes + r * wv.row_bytes;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = (step0 + u) * kChunksPerStep + t;
        ptx::cp_async_16_stream(st + ((h * kUnroll + u) * 32 + lane) * 16, codes + int64_t(chunk) * 16,
                                ok && chunk < n_chunks);
      }
      // The aligned 4 scale bytes holding steps step0, step0 + 1 (kUnroll = 2 divides 4).
      ptx::cp_async_4(st + kStageCodeBytes + (h * 32 + lane) * 4, wv.scales + r * wv.scale_stride + (step0 & ~3),
                      ok && step0 < n_steps);
    }
  };

  const uint8_t* x_row[kMTiles];
  bool x_ok[kMTiles];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    const int m = mt * 8 + g;
    x_ok[mt] = m < m_rows;
    x_row[mt] = xq + static_cast<int64_t>(x_ok[mt] ? m : 0) * k;
  }

  // W is constant: the first stages go out before pdl_wait() (gemv.cu explains); x and y wait.
  int64_t next = 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (next < my_items) issue();
    ptx::cp_async_commit();  // an empty group keeps the count uniform
    ++next;
  }
  pdl_wait();

  // kXSmem: x as FP16, [m][k], after the rings.
  const __half* xs = reinterpret_cast<const __half*>(smem + ring_bytes(kStages));
  if constexpr (kXSmem) {
    auto* dst = reinterpret_cast<uint2*>(smem + ring_bytes(kStages));
    const auto* src = reinterpret_cast<const uint32_t*>(xq);
    for (int i = threadIdx.x; i < m_rows * k / 4; i += kThreads) {
      uint2 v;
      fp8x4_to_f16(__ldg(src + i), v.x, v.y);
      dst[i] = v;
    }
    __syncthreads();
  }

  __shared__ float partial[kWarps][kMTiles * 8][kRowsPerCta];
  int c_stage = 0;  // the consumer's stage
  for (int64_t ti = 0; ti < my_tiles; ++ti) {
    const int64_t tile = blockIdx.x + ti * gridDim.x;
    // Two accumulator sets (even and odd code words) halve the chain of dependent MMAs.
    float acc2[2][kMTiles][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc2[a][mt][j] = 0.f;

    for (int gi = 0; gi < my_groups; ++gi) {
      if (next < my_items) issue();
      ptx::cp_async_commit();
      ++next;
      const int group = warp + gi * kWarps;
      uint4 xv[kUnroll][kMTiles][2];  // FP8 path: the lane's 32 activation bytes of each step
      if constexpr (!kXSmem) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int chunk = (group * kUnroll + u) * kChunksPerStep + t;
          const bool in_k = chunk < n_chunks;
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            xv[u][mt][0] = lowbit::load_cached_16(x_row[mt] + int64_t(chunk) * 32, in_k && x_ok[mt]);
            xv[u][mt][1] = lowbit::load_cached_16(x_row[mt] + int64_t(chunk) * 32 + 16, in_k && x_ok[mt]);
          }
        }
      }
      ptx::cp_async_wait<kStages - 1>();  // item `item` has landed
      const uint8_t* st = ring + c_stage * kStageBytes;
      c_stage = c_stage + 1 == kStages ? 0 : c_stage + 1;
      const int step0 = group * kUnroll;
      const uint32_t sw[2] = {*reinterpret_cast<const uint32_t*>(st + kStageCodeBytes + lane * 4),
                              *reinterpret_cast<const uint32_t*>(st + kStageCodeBytes + (32 + lane) * 4)};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        // Steps past K (a last item of kUnroll steps covering fewer) read the scale row's zero
        // padding or the next steps: force 0 so that nothing but zeros meets the zero-filled codes.
        const bool live = step0 + u < n_steps;
        const int shift = 8 * ((step0 & 3) + u);
        // The tables of rows g and g+8: lane t of the four lanes sharing the rows computes word t,
        // the others fetch it (2 conversions and 4 shuffles per row per 32 weights of each lane).
        const uint32_t my_lo = lut_word(live ? (sw[0] >> shift) & 0xFFu : 0u, t);
        const uint32_t my_hi = lut_word(live ? (sw[1] >> shift) & 0xFFu : 0u, t);
        uint32_t tl[4], th[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          tl[i] = __shfl_sync(0xffffffffu, my_lo, (lane & ~3) | i);
          th[i] = __shfl_sync(0xffffffffu, my_hi, (lane & ~3) | i);
        }
        const uint4 wl = *reinterpret_cast<const uint4*>(st + ((0 * kUnroll + u) * 32 + lane) * 16);
        const uint4 wh = *reinterpret_cast<const uint4*>(st + ((1 * kUnroll + u) * 32 + lane) * 16);
        const uint32_t wlw[4] = {wl.x, wl.y, wl.z, wl.w};
        const uint32_t whw[4] = {wh.x, wh.y, wh.z, wh.w};
        if constexpr (kXSmem) {
          // The lane's 32 k of activation row g as FP16 (zeros for rows past M or k past K).
          const int chunk = (step0 + u) * kChunksPerStep + t;
          const bool ok = x_ok[0] && chunk < n_chunks;
          const uint4* xp = reinterpret_cast<const uint4*>(xs + int64_t(ok ? g : 0) * k + int64_t(ok ? chunk : 0) * 32);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const uint4 xh = ok ? xp[j] : make_uint4(0u, 0u, 0u, 0u);  // k 8j .. 8j+7: pairs
            uint32_t a_lo, a_hi, b_lo, b_hi, a[4], b[4];
            lut_lookup(wlw[j], tl, a_lo, a_hi);
            lut_lookup(whw[j], th, b_lo, b_hi);
            fp8x4_to_f16(a_lo, a[0], a[1]);
            fp8x4_to_f16(a_hi, a[2], a[3]);
            fp8x4_to_f16(b_lo, b[0], b[1]);
            fp8x4_to_f16(b_hi, b[2], b[3]);
            // A's columns 2t, 2t+1 / 2t+8, 2t+9 and B's rows of the same numbers hold the same k.
            mma_f16_m16n8k16(acc2[0][0], a[0], b[0], a[1], b[1], xh.x, xh.y);
            mma_f16_m16n8k16(acc2[1][0], a[2], b[2], a[3], b[3], xh.z, xh.w);
          }
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            uint32_t a_lo, a_hi, b_lo, b_hi;
            lut_lookup(wlw[j], tl, a_lo, a_hi);
            lut_lookup(whw[j], th, b_lo, b_hi);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              const uint4& xa = xv[u][mt][j / 2];
              const uint32_t x0 = (j % 2 == 0) ? xa.x : xa.z;  // k 8j .. 8j+3 of the lane's 32
              const uint32_t x1 = (j % 2 == 0) ? xa.y : xa.w;  // k 8j+4 .. 8j+7
              mma_e4m3_m16n8k32(acc2[j % 2][mt], a_lo, b_lo, a_hi, b_hi, x0, x1);
            }
          }
        }
      }
    }
    float acc[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[mt][j] = acc2[0][mt][j] + acc2[1][mt][j];

    const int64_t row0 = tile * kRowsPerCta;
    lowbit::store_split_k_tile<kMTiles>(acc, partial, [&](int m, int r, float sum) {
      if (m < m_rows && row0 + r < n_rows)
        y[static_cast<int64_t>(m) * n_rows + row0 + r] = __float2bfloat16_rn(sum * (x_scale[m] * wv.row_scales[row0 + r]));
    });
  }
  ptx::cp_async_wait<0>();  // nothing may be in flight into shared memory at exit
}

template <int kMTiles, bool kXSmem>
void launch_gemv(const uint8_t* x8, const float* x_scale, const BlobView& wv, __nv_bfloat16* y, int64_t m, int64_t n,
                 int64_t k, cudaStream_t stream) {
  constexpr auto kernel = w4a8_gemv_kernel<kMTiles, kXSmem>;
  constexpr int kMaxSmem = ring_bytes(stages_for(kXSmem)) + (kXSmem ? kXSmemMaxBytes : 0);
  static const bool opted_in = [] {
    QF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
    return true;
  }();
  (void)opted_in;
  const size_t smem = size_t(ring_bytes(stages_for(kXSmem))) + (kXSmem ? size_t(m * k * 2) : 0);
  const int64_t row_tiles = (n + kRowsPerCta - 1) / kRowsPerCta;
  const auto blocks = static_cast<unsigned>(std::min(row_tiles, resident_ctas<kernel>(kThreads, kMaxSmem)));
  launch_pdl(kernel, dim3(blocks), dim3(kThreads), smem, stream, x8, x_scale, wv, y, static_cast<int>(m), n,
             static_cast<int>(k));
}

// ---- the GEMV on wgmma (experimental, benchmark-only: "w4a8_gemv_wgmma") ----------------------
// Hopper's FP8 tensor cores are reached only through wgmma, so this variant feeds them the table's
// FP8 bytes with no conversion at all: the weights are the B operand (N = 64 weight rows of a CTA
// tile), written by the CTA's threads into shared memory in wgmma's canonical K-major layout
// (core matrices of 8 rows x 16 bytes: LBO = 128 B between core matrices along K, SBO = 1024 B
// between groups of 8 rows), and the activations are the A operand in registers (64 token rows, of
// which warp 0's rows g < M are real, the rest zeros). A CTA of kWgGroups warpgroups per 64-row
// tile, persistent; the warpgroups split K (steps of 128 k, interleaved) and sum through shared
// memory at the end; a step's codes are loaded one step ahead, and its dequantization overlaps
// the previous step's wgmmas. Measured on the H100 (2026-11-23) at M = 1: 1.00-1.91x cuBLAS
// BF16, against w4a8_gemv's 1.45-2.68x (the first version, one warpgroup per CTA with no prefetch:
// 0.45-2.1x): the conversions are gone, the latency is not hidden yet (one step of registers in
// flight per thread; TMA or a cp.async ring would fix that).
constexpr int kWgRows = 64;
constexpr int kWgThreads = 128;
constexpr int kWgGroups = 4;  // warpgroups of a CTA: they split K
constexpr int kWgTileBytes = kWgRows * kW4a8GroupSize;  // one step (128 k) of the tile in FP8

// The wgmma building blocks (descriptor, fence/commit/wait, the m64n64k32 E4M3 MMA): wgmma.h.
// B tile: 64 rows x 128 k, 8-row groups of 8 core matrices (1024 bytes) apart.
__device__ __forceinline__ uint64_t wg_desc(uint32_t smem_addr) { return wg::desc(smem_addr, 1024); }
using wg::wgmma_m64n64k32_e4m3;
__device__ __forceinline__ void wg_fence() { wg::fence(); }
__device__ __forceinline__ void wg_commit() { wg::commit(); }
template <int kPending>
__device__ __forceinline__ void wg_wait() {
  wg::wait<kPending>();
}

__global__ void __launch_bounds__(kWgThreads * kWgGroups, 1)
w4a8_gemv_wgmma_kernel(const uint8_t* __restrict__ xq, const float* __restrict__ x_scale, BlobView wv,
                       __nv_bfloat16* __restrict__ y, int m_rows, int64_t n_rows, int k) {
  __shared__ __align__(128) uint8_t btile[kWgGroups][kWgTileBytes];  // one B tile per warpgroup
  __shared__ float partial[kWgGroups - 1][32][16];                    // warp 0's sums of groups 1..
  pdl_begin();
  const int wg = threadIdx.x / kWgThreads;  // warpgroup: takes steps wg, wg + kWgGroups, ...
  const int tid = threadIdx.x % kWgThreads;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  // Loader role: row lr of the tile, 16-byte code chunks lc and lc + 1 of each step (k 32 lc ..).
  const int lr = tid / 2, lc = (tid % 2) * 2;
  const int n_steps = wv.scale_cols;
  const int n_chunks = k / 32;
  const int64_t row_tiles = (n_rows + kWgRows - 1) / kWgRows;
  const bool x_row = warp == 0 && g < m_rows;  // this thread's A rows g (token g) are real
  const uint8_t* xr = xq + int64_t(x_row ? g : 0) * k;
  uint8_t* bt = btile[wg];
  const uint32_t bt_addr = static_cast<uint32_t>(__cvta_generic_to_shared(bt));

  for (int64_t tile = blockIdx.x; tile < row_tiles; tile += gridDim.x) {
    const int64_t row = tile * kWgRows + lr;
    const bool row_ok = row < n_rows;
    const uint8_t* codes = wv.codes + (row_ok ? row : 0) * wv.row_bytes;
    // This thread's codes and group scale of step s (zeros past K or N).
    auto load_step = [&](int s, uint4 (&c)[2], uint32_t& sigma) {
      const bool live = s < n_steps;
#pragma unroll
      for (int cc = 0; cc < 2; ++cc) {
        const int chunk = s * kChunksPerStep + lc + cc;
        c[cc] = lowbit::load_streaming_16(codes + int64_t(chunk) * 16, live && row_ok && chunk < n_chunks);
      }
      sigma = live && row_ok ? __ldg(wv.scales + row * wv.scale_stride + s) : 0u;
    };
    // acc: the tile's sums in FP32 registers; d: one step's (128 k) from the tensor cores, whose FP8
    // accumulation keeps only ~14 bits relative to the running sum (DeepSeek-V3 report, sec. 3.3.2;
    // measured here: errors of 2^-11 of the absolute sum at K = 11008 without this), so each step's
    // sum is promoted into acc (DeepGEMM's remedy).
    float acc[32], d[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc[i] = d[i] = 0.f;
    uint4 cur[2];
    uint32_t cur_sigma;
    load_step(wg, cur, cur_sigma);
    bool pending = false;
    for (int s = wg; s < n_steps; s += kWgGroups) {
      uint4 nxt[2];
      uint32_t nxt_sigma;
      load_step(s + kWgGroups, nxt, nxt_sigma);  // in flight while this step computes
      // The 4 table words of the row: this thread makes words lc and lc+1, its partner the others.
      const uint32_t mine0 = lut_word(cur_sigma, lc), mine1 = lut_word(cur_sigma, lc + 1);
      const uint32_t oth0 = __shfl_xor_sync(0xffffffffu, mine0, 1), oth1 = __shfl_xor_sync(0xffffffffu, mine1, 1);
      const uint32_t tab[4] = {lc == 0 ? mine0 : oth0, lc == 0 ? mine1 : oth1, lc == 0 ? oth0 : mine0,
                               lc == 0 ? oth1 : mine1};
      uint4 fp8[2][2];  // [chunk][k 0..15 / 16..31]
#pragma unroll
      for (int cc = 0; cc < 2; ++cc) {
        lut_lookup(cur[cc].x, tab, fp8[cc][0].x, fp8[cc][0].y);
        lut_lookup(cur[cc].y, tab, fp8[cc][0].z, fp8[cc][0].w);
        lut_lookup(cur[cc].z, tab, fp8[cc][1].x, fp8[cc][1].y);
        lut_lookup(cur[cc].w, tab, fp8[cc][1].z, fp8[cc][1].w);
      }
      // The previous step's wgmmas read the B tile and the A registers rewritten below
      // (asynchronously: the compiler cannot see it): they must be done, and their sums promoted.
      if (pending) {
        wg_wait<0>();
#pragma unroll
        for (int i = 0; i < 32; ++i) acc[i] += d[i];
      }
      // This warpgroup's threads all past the wait before anyone overwrites the tile.
      asm volatile("bar.sync %0, %1;\n" ::"r"(1 + wg), "n"(kWgThreads) : "memory");
#pragma unroll
      for (int cc = 0; cc < 2; ++cc) {
        const int kc = 2 * (lc + cc);  // core matrix column (16 k each)
        uint8_t* base = bt + (lr / 8) * 1024 + (lr % 8) * 16;
        *reinterpret_cast<uint4*>(base + kc * 128) = fp8[cc][0];
        *reinterpret_cast<uint4*>(base + (kc + 1) * 128) = fp8[cc][1];
      }
      // A: the activations of k 32j + 4t .. and 32j + 16 + 4t .. of this step, token g.
      uint32_t a[4][2];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t k0 = int64_t(s) * 128 + 32 * j + 4 * t;
        a[j][0] = (x_row && k0 < k) ? __ldg(reinterpret_cast<const uint32_t*>(xr + k0)) : 0u;
        a[j][1] = (x_row && k0 + 16 < k) ? __ldg(reinterpret_cast<const uint32_t*>(xr + k0 + 16)) : 0u;
      }
      // Make the generic-proxy stores visible to the tensor cores, and the group's stores done.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      asm volatile("bar.sync %0, %1;\n" ::"r"(1 + wg), "n"(kWgThreads) : "memory");
      wg_fence();
#pragma unroll
      for (int j = 0; j < 4; ++j)
        wgmma_m64n64k32_e4m3(d, a[j][0], 0u, a[j][1], 0u, wg_desc(bt_addr + j * 2 * 128), j > 0 ? 1 : 0);
      wg_commit();
      pending = true;
      cur[0] = nxt[0];
      cur[1] = nxt[1];
      cur_sigma = nxt_sigma;
    }
    if (pending) {
      wg_wait<0>();
#pragma unroll
      for (int i = 0; i < 32; ++i) acc[i] += d[i];
    }
    // Split-K: warp 0 of each warpgroup holds its share for tokens g (acc[4nb], acc[4nb + 1]:
    // weight rows 8nb + 2t, + 1); groups 1.. hand theirs to group 0 through shared memory.
    if (wg > 0 && warp == 0)
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
        partial[wg - 1][lane][2 * nb] = acc[4 * nb];
        partial[wg - 1][lane][2 * nb + 1] = acc[4 * nb + 1];
      }
    __syncthreads();
    if (wg == 0 && x_row) {
      const int64_t row0 = tile * kWgRows;
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float sum = acc[4 * nb + e];
#pragma unroll
          for (int o = 0; o < kWgGroups - 1; ++o) sum += partial[o][lane][2 * nb + e];
          const int64_t r = row0 + 8 * nb + 2 * t + e;
          if (r < n_rows) y[int64_t(g) * n_rows + r] = __float2bfloat16_rn(sum * (x_scale[g] * wv.row_scales[r]));
        }
    }
    __syncthreads();  // partial is read before the next tile writes it
  }
}

// ---- weight expansion (large M) -----------------------------------------------------------------
// One thread per 16-byte code chunk (32 weights): 32 FP8 bytes out.
__global__ void w4a8_dequantize_kernel(BlobView wv, uint8_t* __restrict__ w8, int64_t n_rows, int k) {
  pdl_begin();
  const int chunks_per_row = k / 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_rows * chunks_per_row) return;
  const int64_t row = i / chunks_per_row;
  const int chunk = static_cast<int>(i % chunks_per_row);
  const uint4 c = lowbit::load_streaming_16(wv.codes + row * wv.row_bytes + int64_t(chunk) * 16, true);
  const uint32_t sigma = __ldg(wv.scales + row * wv.scale_stride + chunk / kChunksPerStep);
  const uint32_t t[4] = {lut_word(sigma, 0), lut_word(sigma, 1), lut_word(sigma, 2), lut_word(sigma, 3)};
  uint4 out[2];
  lut_lookup(c.x, t, out[0].x, out[0].y);
  lut_lookup(c.y, t, out[0].z, out[0].w);
  lut_lookup(c.z, t, out[1].x, out[1].y);
  lut_lookup(c.w, t, out[1].z, out[1].w);
  uint4* dst = reinterpret_cast<uint4*>(w8 + row * k + int64_t(chunk) * 32);
  dst[0] = out[0];
  dst[1] = out[1];
}

// ---- per-token FP8 quantization -----------------------------------------------------------------
// One CTA per token row: the row's absmax, then every element divided by s and rounded.
constexpr int kQuantThreads = 256;

__global__ void __launch_bounds__(kQuantThreads)
quantize_fp8_per_token_kernel(const __nv_bfloat16* __restrict__ x, uint8_t* __restrict__ xq, float* __restrict__ s_out,
                              int k) {
  pdl_begin();
  const int64_t row = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * k);
  const int chunks = k / 8;
  float amax = 0.f;
  for (int c = threadIdx.x; c < chunks; c += kQuantThreads) {
    float v[8];
    ptx::bf16x8_to_float(xr[c], v);
#pragma unroll
    for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
  }
  const float s = fp8_token::scale_of(fp8_token::block_max(amax));
  if (threadIdx.x == 0) s_out[row] = s;
  uint2* qr = reinterpret_cast<uint2*>(xq + row * k);
  for (int c = threadIdx.x; c < chunks; c += kQuantThreads) {
    float v[8];
    ptx::bf16x8_to_float(xr[c], v);
    qr[c] = fp8_token::quantize8(v, s);
  }
}

BlobView blob_view(const void* packed_w, int64_t n, int64_t k) {
  const W4a8PackedLayout l = w4a8_packed_layout(n, k);
  const auto* b = static_cast<const uint8_t*>(packed_w);
  return BlobView{b, b + l.scale_offset(), reinterpret_cast<const float*>(b + l.row_scale_offset()), k / 2,
                  static_cast<int>(l.scale_cols()), static_cast<int>(l.scale_stride())};
}

}  // namespace

bool w4a8_supports(int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  return m >= 1 && n >= 1 && k >= 32 && k % 32 == 0 && m < kLimit && n < kLimit && k < kLimit;
}

void quantize_fp8_per_token(const __nv_bfloat16* x, __nv_fp8_e4m3* xq, float* s, int64_t m, int64_t k,
                            cudaStream_t stream) {
  QF_CHECK(m >= 1 && k >= 8 && k % 8 == 0 && m < (int64_t{1} << 31) && k < (int64_t{1} << 30),
           "quantize_fp8_per_token: unsupported shape M=", m, " K=", k, " (K must be a positive multiple of 8)");
  QF_CHECK(aligned16(x) && aligned16(xq) && s, "quantize_fp8_per_token: x and xq must be 16-byte aligned, s non-null");
  launch_pdl(quantize_fp8_per_token_kernel, dim3(static_cast<unsigned>(m)), dim3(kQuantThreads), 0, stream, x,
             reinterpret_cast<uint8_t*>(xq), s, static_cast<int>(k));
}

void w4a8_gemv(const __nv_fp8_e4m3* xq, const float* x_scale, const void* packed_w, __nv_bfloat16* y, int64_t m,
               int64_t n, int64_t k, cudaStream_t stream) {
  QF_CHECK(w4a8_supports(m, n, k) && m <= kW4a8GemvMaxM, "w4a8_gemv: unsupported shape M=", m, " N=", n, " K=", k,
           " (needs 1 <= M <= ", kW4a8GemvMaxM, " and K a positive multiple of 32)");
  QF_CHECK(aligned16(xq) && aligned16(packed_w), "w4a8_gemv: x and the weight blob must be 16-byte aligned");
  QF_CHECK(x_scale && y, "w4a8_gemv: null x_scale or output");
  const BlobView wv = blob_view(packed_w, n, k);
  const auto* x8 = reinterpret_cast<const uint8_t*>(xq);
  if (m <= 8 && m * k * 2 <= kXSmemMaxBytes) launch_gemv<1, true>(x8, x_scale, wv, y, m, n, k, stream);
  else if (m <= 8) launch_gemv<1, false>(x8, x_scale, wv, y, m, n, k, stream);
  else launch_gemv<2, false>(x8, x_scale, wv, y, m, n, k, stream);
}

void w4a8_gemv_wgmma(const __nv_fp8_e4m3* xq, const float* x_scale, const void* packed_w, __nv_bfloat16* y, int64_t m,
                     int64_t n, int64_t k, cudaStream_t stream) {
  QF_CHECK(w4a8_supports(m, n, k) && m <= 8, "w4a8_gemv_wgmma: unsupported shape M=", m, " N=", n, " K=", k,
           " (needs 1 <= M <= 8 and K a positive multiple of 32)");
  QF_CHECK(aligned16(xq) && aligned16(packed_w) && x_scale && y, "w4a8_gemv_wgmma: bad operands");
  const BlobView wv = blob_view(packed_w, n, k);
  const int64_t row_tiles = (n + kWgRows - 1) / kWgRows;
  const auto blocks =
      static_cast<unsigned>(std::min(row_tiles, resident_ctas<w4a8_gemv_wgmma_kernel>(kWgThreads * kWgGroups)));
  launch_pdl(w4a8_gemv_wgmma_kernel, dim3(blocks), dim3(kWgThreads * kWgGroups), 0, stream, reinterpret_cast<const uint8_t*>(xq),
             x_scale, wv, y, static_cast<int>(m), n, static_cast<int>(k));
}

void w4a8_dequantize_fp8(const void* packed_w, __nv_fp8_e4m3* w8, int64_t n, int64_t k, cudaStream_t stream) {
  QF_CHECK(w4a8_supports(1, n, k), "w4a8_dequantize_fp8: unsupported shape N=", n, " K=", k);
  QF_CHECK(aligned16(packed_w) && aligned16(w8), "w4a8_dequantize_fp8: the blob and w8 must be 16-byte aligned");
  const BlobView wv = blob_view(packed_w, n, k);
  const int64_t threads = n * (k / 32);
  constexpr int kBlock = 256;
  launch_pdl(w4a8_dequantize_kernel, dim3(static_cast<unsigned>((threads + kBlock - 1) / kBlock)), dim3(kBlock), 0,
             stream, wv, reinterpret_cast<uint8_t*>(w8), n, static_cast<int>(k));
}

const float* w4a8_row_scales(const void* packed_w, int64_t n, int64_t k) { return blob_view(packed_w, n, k).row_scales; }

}  // namespace qf::cuda
