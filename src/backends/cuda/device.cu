// The device-side helpers of device.h: a 16-bit pattern fill and a timed spin.
#include <cuda_runtime.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"

namespace qf::cuda {

namespace {

__global__ void fill_u16_kernel(uint16_t* dst, uint16_t pattern, size_t count) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = pattern;
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void sleep_kernel(uint64_t ns) {
  const uint64_t start = global_timer_ns();
  while (global_timer_ns() - start < ns) __nanosleep(1000);
}

}  // namespace

void fill_u16(void* dst, uint16_t pattern, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  const int threads = 256;
  // Enough blocks to fill any current GPU several times over; the grid-stride loop does the rest.
  const size_t blocks = std::min<size_t>((count + threads - 1) / threads, 4096);
  fill_u16_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<uint16_t*>(dst), pattern, count);
  QF_CUDA_CHECK_LAUNCH();
}

void device_sleep(cudaStream_t stream, uint64_t ns) {
  sleep_kernel<<<1, 1, 0, stream>>>(ns);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace qf::cuda
