// SiLU(gate) * up kernel (layout in activation.h). Memory bound: 6 bytes moved per output
// element (two bf16 in, one out); a grid-stride loop over 16-byte vectors, sized to a few
// waves of the SMs.
#include <algorithm>

#include "backends/cuda/activation.h"
#include "backends/cuda/activation_device.h"
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fp8_token_device.h"
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
    for (int e = 0; e < 8; ++e) o[e] = silu_times(g[e], u[e]);
    *reinterpret_cast<uint4*>(out + row * out_row_stride + col) = ptx::float_to_bf16x8(o);
  }
}

// One CTA per row: the row's absmax over silu(g) * u first, then the values recomputed (the
// row's gate/up come from L1/L2 the second time) and quantized.
constexpr int kFp8Threads = 1024;  // one CTA per row: at decode (a handful of rows) the row is the parallelism
__global__ void __launch_bounds__(kFp8Threads)
silu_mul_fp8_kernel(const bf16* __restrict__ gate, const bf16* __restrict__ up, int64_t in_row_stride,
                    uint8_t* __restrict__ out, float* __restrict__ scales, int64_t n) {
  pdl_begin();
  const int64_t row = blockIdx.x;
  const int64_t vecs = n / 8;
  auto value8 = [&](int64_t v, float (&o)[8]) {
    float g[8], u[8];
    ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(gate + row * in_row_stride + v * 8), g);
    ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(up + row * in_row_stride + v * 8), u);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = silu_times(g[e], u[e]);
  };
  float amax = 0.f;
  for (int64_t v = threadIdx.x; v < vecs; v += kFp8Threads) {
    float o[8];
    value8(v, o);
#pragma unroll
    for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(o[e]));
  }
  const float s = fp8_token::scale_of(fp8_token::block_max(amax));
  if (threadIdx.x == 0) scales[row] = s;
  for (int64_t v = threadIdx.x; v < vecs; v += kFp8Threads) {
    float o[8];
    value8(v, o);
    *reinterpret_cast<uint2*>(out + row * n + v * 8) = fp8_token::quantize8(o, s);
  }
}

}  // namespace

void silu_mul_fp8(const bf16* gate, const bf16* up, int64_t in_row_stride, __nv_fp8_e4m3* out, float* scales,
                  int64_t rows, int64_t n, cudaStream_t stream) {
  QF_CHECK(rows >= 0 && n >= 0, "silu_mul_fp8: negative size (", rows, " x ", n, ")");
  if (rows == 0 || n == 0) return;
  QF_CHECK(rows <= 0x7fffffff && n % 8 == 0 && in_row_stride % 8 == 0 && in_row_stride >= n,
           "silu_mul_fp8: n ", n, " and the row stride ", in_row_stride, " must be multiples of 8, stride >= n");
  QF_CHECK(gate && up && out && scales && aligned16(gate) && aligned16(up) && aligned16(out),
           "silu_mul_fp8: gate, up, out and scales must be non-null, the first three 16-byte aligned");
  launch_pdl(silu_mul_fp8_kernel, dim3(static_cast<unsigned>(rows)), dim3(kFp8Threads), 0, stream, gate, up,
             in_row_stride, reinterpret_cast<uint8_t*>(out), scales, n);
}

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
