// SwiGLU's elementwise half on the GPU: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)),
// BF16 in and out, FP32 math. CPU twin: cpu::silu_mul (backends/cpu/ops.h), same formula
// (g / (1 + expf(-g)) * up, in that order; expf, not the fast approximation).
//
// Layout. Row r of gate is gate[r * in_row_stride + 0 .. n), of up likewise, of out
// out[r * out_row_stride + 0 .. n). The fused gate/up projection writes [rows, 2 * n] with the
// gate in columns 0 .. n-1 and up in columns n .. 2n-1 of each row (its weight is the gate
// weight's rows followed by the up weight's rows): pass gate = gu, up = gu + n,
// in_row_stride = 2 * n. Separate buffers: in_row_stride = n.
// n and the strides must be multiples of 8, pointers 16-byte aligned (16-byte vectors).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

void silu_mul(const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t in_row_stride, __nv_bfloat16* out,
              int64_t out_row_stride, int64_t rows, int64_t n, cudaStream_t stream);

// The same values written as the input of a w4a8 linear (w4a8_gemm.h): FP8 E4M3 codes out
// [rows, n] (row stride n) and one F32 scale per row, the per-token quantization (fp8_e4m3:token)
// of the FP32 products, never rounded to BF16 first (FireQ's fused SwiGLU + quantize).
void silu_mul_fp8(const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t in_row_stride, __nv_fp8_e4m3* out,
                  float* scales, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace qf::cuda
