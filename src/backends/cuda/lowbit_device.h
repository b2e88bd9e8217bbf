// Device-side pieces of the low-bit GEMM kernels (fpx_gemm.cu): the predicated global loads, the
// BF16 tensor-core instruction, and the split-K reduction across the warps of a CTA. Include from
// .cu files only.
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

// d = A(16x16 BF16, row) . B(16x8 BF16, col) + c, FP32 accumulate.
__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
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

}  // namespace qf::cuda::lowbit
