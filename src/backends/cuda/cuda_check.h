// Error checking for every CUDA runtime / cuBLASLt call and after every kernel launch: a failure
// becomes a qf::Error naming the call, the error and the source location, never a silent
// wrong answer (an exit code of 0 proves nothing on a GPU).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.h"

#define QF_CUDA_CHECK(expr)                                                                   \
  do {                                                                                        \
    cudaError_t qf_err_ = (expr);                                                             \
    if (qf_err_ != cudaSuccess)                                                               \
      ::qf::fail("CUDA error: ", #expr, ": ", cudaGetErrorName(qf_err_), " (",                \
                 cudaGetErrorString(qf_err_), ") at ", __FILE__, ":", __LINE__);              \
  } while (0)

// After a <<<>>> launch: catches bad launch configurations at once (cudaGetLastError) without
// synchronising; asynchronous faults surface at the next checked call.
#define QF_CUDA_CHECK_LAUNCH() QF_CUDA_CHECK(cudaGetLastError())

#define QF_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                        \
    cublasStatus_t qf_st_ = (expr);                                                           \
    if (qf_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::qf::fail("cuBLAS error: ", #expr, ": ", cublasLtGetStatusName(qf_st_), " (status ",   \
                 static_cast<int>(qf_st_), ") at ", __FILE__, ":", __LINE__);                 \
  } while (0)

namespace qf::cuda {

// Whether p may be read and written as 16-byte vectors (uint4): the kernels' argument checks.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace qf::cuda
