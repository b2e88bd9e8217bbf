// GPU tests run only where a CUDA device is present; elsewhere (CI, the build machine) they
// skip and say why, so a green run without a GPU is visibly a run without GPU coverage.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>

namespace qf::testing {

// Empty string if a usable device exists, else the reason there is none.
inline std::string gpu_unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
  if (n == 0) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "cannot query device 0";
  if (p.major != 9) return std::string("device 0 is ") + p.name + " (sm_" + std::to_string(p.major * 10 + p.minor) + "); the kernels are built for sm_90a (Hopper)";
  return "";
}

}  // namespace qf::testing

#define QF_REQUIRE_GPU()                                                        \
  do {                                                                          \
    static const std::string qf_reason_ = ::qf::testing::gpu_unavailable_reason(); \
    if (!qf_reason_.empty()) GTEST_SKIP() << "GPU test skipped: " << qf_reason_; \
  } while (0)
