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
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

void silu_mul(const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t in_row_stride, __nv_bfloat16* out,
              int64_t out_row_stride, int64_t rows, int64_t n, cudaStream_t stream);

}  // namespace qf::cuda
