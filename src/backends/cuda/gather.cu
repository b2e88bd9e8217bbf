#include "backends/cuda/gather.h"

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/pdl.h"

namespace qf::cuda {
namespace {

// One CTA per output row, 16-byte vectors.
__global__ void gather_rows_kernel(const uint4* __restrict__ src, int64_t vecs, const int32_t* __restrict__ rows,
                                   uint4* __restrict__ dst) {
  pdl_begin();
  const int64_t r = blockIdx.x;
  const int64_t s = rows[r];
  for (int64_t i = threadIdx.x; i < vecs; i += blockDim.x) dst[r * vecs + i] = src[s * vecs + i];
}

}  // namespace

void gather_rows(const __nv_bfloat16* src, int64_t dim, const int32_t* rows, int64_t num_rows, __nv_bfloat16* dst,
                 cudaStream_t stream) {
  QF_CHECK(dim > 0 && dim % 8 == 0, "gather_rows: dim ", dim, " must be a positive multiple of 8");
  QF_CHECK(reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0,
           "gather_rows: src and dst must be 16-byte aligned");
  if (num_rows == 0) return;
  QF_CHECK(num_rows <= 0x7fffffff, "gather_rows: too many rows (", num_rows, ")");
  launch_pdl(gather_rows_kernel, dim3(unsigned(num_rows)), dim3(128), 0, stream, reinterpret_cast<const uint4*>(src),
             dim / 8, rows, reinterpret_cast<uint4*>(dst));
}

}  // namespace qf::cuda
