// Programmatic dependent launch (Hopper, CUDA 12.3+), for the chains of small kernels of a decode
// step. Normally a kernel starts only after the previous one in the stream has finished and its
// launch has been processed: ~1-2 us of idle GPU per boundary, ~10 boundaries per Llama block,
// which at batch 1 is 5-10% of a step whose weights take ~140 us per block to read. A kernel
// launched with launch_pdl may be scheduled while the previous kernel still runs; it calls
// pdl_begin() first thing, which (a) lets the kernel after it be scheduled likewise and (b) waits
// until the previous kernel has completed and its memory is visible. So the data dependencies are
// exactly those of ordinary stream order; only the launch latency overlaps.
//
// Rules: pdl_begin() must come before the kernel's first global memory access (read or write);
// a kernel without it must not be launched with launch_pdl. Launching with launch_pdl after any
// other stream operation (a memcpy, a memset, a cuBLAS kernel) is safe: the programmatic edge
// applies only to a predecessor kernel that triggers, any other predecessor completes first.
// CUDA graphs capture the programmatic edges.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <utility>

#include "backends/cuda/cuda_check.h"

namespace qf::cuda {

// The two halves of pdl_begin, for a kernel that does useful work between them that touches no
// memory an earlier kernel writes (the GEMV prefetches its constant weights there).
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_begin() {
  pdl_trigger();
  pdl_wait();
}

template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  QF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(std::forward<Args>(args))...));
}

// CTAs of `kernel` (launched with `threads` threads and `smem_bytes` of dynamic shared memory) that fit on the
// current device at once: the grid of a persistent kernel. Cached per kernel and device; atomic
// because engines on several host threads may launch at once (a racing first call computes the
// same value twice, harmlessly).
template <auto kKernel>
int64_t resident_ctas(int threads, size_t smem_bytes = 0) {
  static std::atomic<int> cached[64] = {};
  int dev = 0;
  QF_CUDA_CHECK(cudaGetDevice(&dev));
  std::atomic<int>& slot = cached[dev & 63];
  int c = slot.load(std::memory_order_relaxed);
  if (c == 0) {
    int sms = 0, per_sm = 0;
    QF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    QF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kKernel, threads, smem_bytes));
    c = sms * (per_sm > 0 ? per_sm : 1);
    slot.store(c, std::memory_order_relaxed);
  }
  return c;
}

}  // namespace qf::cuda
