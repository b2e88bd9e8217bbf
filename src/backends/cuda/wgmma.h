// Hopper warpgroup MMA (wgmma, sm_90a) building blocks shared by the FP8 kernels (the w4a8 GEMV's
// wgmma path, the FP8 prefill attention); include from .cu files only.
//
// wgmma.mma_async is issued by a whole warpgroup (128 threads, 4 warps), runs asynchronously, and
// is ordered by: wg_fence() before the first wgmma that reads registers written by ordinary
// instructions (accumulators, A fragments); wg_commit() to close a group of wgmmas; wg_wait<N>()
// to wait until at most N of the committed groups are still running. The compiler sees the asm as
// synchronous: a value it thinks was produced by the wgmma asm must not be read before the wait,
// so after wg_wait call fence_regs() on the accumulators (an empty asm that "rewrites" them there,
// which keeps every later read below the wait).
//
// Shared-memory operands: the no-swizzle K-major layout. A tile of R rows (M or N) x K bytes is
// cut into "core matrices" of 8 rows x 16 bytes, each stored as 128 contiguous bytes (row r of
// the core matrix at byte 16 r); core matrices adjacent along K are `lbo` = 128 bytes apart, and
// 8-row groups are `sbo` bytes apart (K bytes / 16 x 128 when a group's core matrices are packed
// along K). Byte (row, k) of such a tile: (row / 8) * sbo + (k / 16) * 128 + (row % 8) * 16 + k % 16.
// One k32 step of an E4M3 wgmma reads two core matrices along K: advance the start by 256 bytes.
//
// Register fragments (per warp w of the warpgroup, g = lane / 4, t = lane % 4):
//   D (64 x N FP32): rows 16w + g and 16w + g + 8; for each 8-column chunk i, d[4i], d[4i+1] hold
//     row 16w + g, columns 8i + 2t, 8i + 2t + 1, and d[4i+2], d[4i+3] the same columns of row +8.
//   A (64 x 32 E4M3, 4 registers): a0 row 16w + g, k 4t .. 4t+3; a1 row +8, same k; a2 row
//     16w + g, k 16 + 4t .. 16 + 4t + 3; a3 row +8, same k (lowest k in the lowest byte).
#pragma once

#include <cstdint>

namespace qf::cuda::wg {

// Matrix descriptor of a no-swizzle K-major tile at shared address `smem_addr` (16-byte
// aligned): start address, leading byte offset 128 (next core matrix along K), stride byte
// offset `sbo` (next 8-row group), all in units of 16 bytes; base offset 0, swizzle mode 0.
__device__ __forceinline__ uint64_t desc(uint32_t smem_addr, uint32_t sbo) {
  return uint64_t((smem_addr & 0x3FFFF) >> 4) | (uint64_t(128 >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Pins registers in program order (see above): no read of r moves above, no write below.
template <int kN>
__device__ __forceinline__ void fence_regs(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// Generic-proxy shared-memory writes (st.shared, cp.async) made visible to the tensor cores'
// async proxy; follow it with a barrier before another thread's wgmma reads the data.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// d (64 x 64 FP32, 32 per thread) += A (64 x 32 E4M3 from registers a0..a3) . B (32 x 64, descriptor);
// scale_d = 0: d = A . B.
__device__ __forceinline__ void wgmma_m64n64k32_e4m3(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                      uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(scale_d));
}

// d (64 x 128 FP32, 64 per thread) += A (64 x 32 E4M3 from registers a0..a3) . B (32 x 128, descriptor);
// scale_d = 0: d = A . B.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                      uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b), "r"(scale_d));
}

// d (64 x 64 FP32, 32 per thread) += A (64 x 32 E4M3, descriptor) . B (32 x 64, descriptor);
// scale_d = 0: d = A . B.
__device__ __forceinline__ void wgmma_m64n64k32_e4m3_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

}  // namespace qf::cuda::wg
