// Device-side pieces of the small-batch GEMM kernels (gemv.cu, fpx_gemm.cu, w4a8_gemm.cu): the
// predicated global loads, the mma.sync instructions they use, and the split-K reductions across
// the warps of a CTA. Include from .cu files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda::lowbit {

// Every low-bit GEMM kernel runs 8 warps per CTA; they split K and their partial tiles are summed by
// reduce_to_warp0.
inline constexpr int kWarps = 8;
inline constexpr int kThreads = kWarps * 32;

// ---- loads: zeros where `pred` is false (and then no memory access) --------------------------
// Weights are read exactly once: not allocated in L1 (keeping L1 for the activations, which every
// CTA re-reads) and fetched from HBM into L2 in 256-byte blocks (a warp reads >= 256 contiguous
// bytes per load instruction). Activations: the read-only path, cached in L1.

__device__ __forceinline__ uint4 load_streaming_16(const void* p, bool pred) {
  uint4 v;
  asm("{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @p ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"(static_cast<int>(pred)));
  return v;
}

__device__ __forceinline__ uint2 load_streaming_8(const void* p, bool pred) {
  uint2 v;
  asm("{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %3, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  @p ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];\n"
      "}\n"
      : "=r"(v.x), "=r"(v.y)
      : "l"(p), "r"(static_cast<int>(pred)));
  return v;
}

__device__ __forceinline__ uint32_t load_streaming_4(const void* p, bool pred) {
  uint32_t v;
  asm("{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %2, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  @p ld.global.nc.L1::no_allocate.L2::256B.u32 %0, [%1];\n"
      "}\n"
      : "=r"(v)
      : "l"(p), "r"(static_cast<int>(pred)));
  return v;
}

__device__ __forceinline__ uint4 load_cached_16(const void* p, bool pred) {
  uint4 v;
  asm("{\n"
      "  .reg .pred p;\n"
      "  setp.ne.b32 p, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @p ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"(static_cast<int>(pred)));
  return v;
}

// ---- tensor cores ---------------------------------------------------------------------------

// d += A(16 x K, row) . B(K x 8, col), FP32 accumulate, for one m16n8kK shape and operand type.
// Fragments (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k32"), g = lane / 4, t = lane % 4:
// a0/a2 hold row g, a1/a3 row g+8; a0/a1 the first half of the lane's k, a2/a3 the second; b0/b1
// the same k of column g; d0,d1 = (g, 2t+{0,1}), d2,d3 = (g+8, 2t+{0,1}). 16-bit types: 2 values
// per register, k 2t.. and 2t+8..; 8-bit: 4 values, k 4t.. and 16+4t...
#define QF_LOWBIT_MMA(NAME, SHAPE_AND_TYPES)                                                                 \
  __device__ __forceinline__ void NAME(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,    \
                                       uint32_t b0, uint32_t b1) {                                          \
    asm("mma.sync.aligned." SHAPE_AND_TYPES " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                     \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));                                              \
  }
QF_LOWBIT_MMA(mma_bf16_m16n8k16, "m16n8k16.row.col.f32.bf16.bf16.f32")
QF_LOWBIT_MMA(mma_f16_m16n8k16, "m16n8k16.row.col.f32.f16.f16.f32")
// Hopper has no FP8 mma.sync: ptxas lowers this to two FP16 HMMAs after converting every operand
// byte (F2FP), which is slow; w4a8_gemm.cu says what that costs.
QF_LOWBIT_MMA(mma_e4m3_m16n8k32, "m16n8k32.row.col.f32.e4m3.e4m3.f32")
#undef QF_LOWBIT_MMA

__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma_bf16_m16n8k16(d, a[0], a[1], a[2], a[3], b0, b1);
}

// ---- split-K across the warps of a CTA -------------------------------------------------------

// Bytes of shared memory reduce_to_warp0<R> needs: the partial tiles of half the warps.
template <int R>
inline constexpr int kReduceSmemBytes = (kWarps / 2) * 32 * R * 4;

// Sums each lane's R accumulators over the 8 warps into warp 0's registers, as a fixed binary
// tree (warps 4-7 into 0-3, 2-3 into 0-1, 1 into 0): deterministic, and only half the warps' tiles
// in shared memory at once. smem: kReduceSmemBytes<R> bytes, laid out [slot][r][lane] so that a
// warp's 32 lanes touch 32 consecutive words (no bank conflicts). Every thread of the CTA must call
// it; on return only warp 0's acc holds the sums.
template <int R>
__device__ __forceinline__ void reduce_to_warp0(float (&acc)[R], float* smem) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = kWarps / 2; half >= 1; half /= 2) {
    if (warp >= half && warp < 2 * half) {
      float* slot = smem + (warp - half) * 32 * R;
#pragma unroll
      for (int r = 0; r < R; ++r) slot[r * 32 + lane] = acc[r];
    }
    __syncthreads();
    if (warp < half) {
      const float* slot = smem + warp * 32 * R;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] += slot[r * 32 + lane];
    }
    __syncthreads();
  }
}

// The epilogue of the GEMV-shaped kernels (gemv.cu, w4a8_gemm.cu): a CTA's kWarps warps each hold
// an mma C tile per 8-token slice (acc[mt], the layout above) of the same kRows = 16 weight rows
// over their share of K. Sums the warps' tiles through `partial` (shared memory,
// [kWarps][kMTiles * 8][16]) in a fixed order (deterministic) and calls store(m, r, sum) once per
// (token m, tile row r), consecutive threads on consecutive r. Every thread of the CTA must call
// it; it begins with a barrier, so `partial` may be reused tile after tile.
template <int kMTiles, typename Store>
__device__ __forceinline__ void store_split_k_tile(const float (&acc)[kMTiles][4], float (*partial)[kMTiles * 8][16],
                                                   Store&& store) {
  constexpr int kRows = 16;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  __syncthreads();  // the previous tile's sums are read
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    partial[warp][mt * 8 + 2 * t][g] = acc[mt][0];
    partial[warp][mt * 8 + 2 * t + 1][g] = acc[mt][1];
    partial[warp][mt * 8 + 2 * t][g + 8] = acc[mt][2];
    partial[warp][mt * 8 + 2 * t + 1][g + 8] = acc[mt][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kMTiles * 8 * kRows; i += kThreads) {
    const int m = i / kRows;
    const int r = i % kRows;
    float sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) sum += partial[wi][m][r];
    store(m, r, sum);
  }
}

}  // namespace qf::cuda::lowbit
