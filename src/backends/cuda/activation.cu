// SiLU(gate) * up kernel (layout in activation.h). Memory bound: 6 bytes moved per output
// element (two bf16 in, one out); a grid-stride loop over 16-byte vectors, sized to a few
// waves of the SMs.
#include <algorithm>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/pdl.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;

// out may alias gate or up (each vector is read before the same thread writes it): no __restrict__.
__global__ void silu_mul_kernel(const bf16* gate, const bf16* up, int64_t in_row_stride, bf16* out,
                                int64_t out_row_stride, int64_t row_vecs, int64_t total_vecs) {
  pdl_begin();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total_vecs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / row_vecs;
    const int64_t col = (i % row_vecs) * 8;
    float g[8], u[8], o[8];
    ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(gate + row * in_row_stride + col), g);
    ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(up + row * in_row_stride + col), u);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = __fmul_rn(__fdiv_rn(g[e], __fadd_rn(1.0f, expf(-g[e]))), u[e]);
    *reinterpret_cast<uint4*>(out + row * out_row_stride + col) = ptx::float_to_bf16x8(o);
  }
}

}  // namespace

void silu_mul(const bf16* gate, const bf16* up, int64_t in_row_stride, bf16* out, int64_t out_row_stride,
              int64_t rows, int64_t n, cudaStream_t stream) {
  QF_CHECK(rows >= 0 && n >= 0, "silu_mul: negative size (", rows, " x ", n, ")");
  if (rows == 0 || n == 0) return;
  QF_CHECK(n % 8 == 0 && in_row_stride % 8 == 0 && out_row_stride % 8 == 0 && in_row_stride >= n &&
               out_row_stride >= n,
           "silu_mul: n ", n, " and the row strides (", in_row_stride, ", ", out_row_stride,
           ") must be multiples of 8, strides >= n");
  QF_CHECK(gate && up && out && aligned16(gate) && aligned16(up) && aligned16(out),
           "silu_mul: gate, up and out must be non-null and 16-byte aligned");
  const int64_t row_vecs = n / 8;
  const int64_t total = rows * row_vecs;
  constexpr int kThreads = 256;
  // Enough CTAs for every SM to hold several (132 SMs x 8 resident CTAs of 256 threads), no more:
  // the loop covers the rest.
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 132 * 8);
  launch_pdl(silu_mul_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, gate, up, in_row_stride,
             out, out_row_stride, row_vecs, total);
}

}  // namespace qf::cuda
