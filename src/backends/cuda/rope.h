// Rotary position embedding on the GPU, in place on BF16 queries and keys. CPU twins:
// cpu::rope_cos_sin + cpu::rope_apply (backends/cpu/rope.h), whose semantics this follows:
// HF "rotate_half" pairing (element j with j + head_dim/2), per token position, and
//   c = (float)(cos(pos * inv_freq[j]) * attention_factor)   angle, cos, sin in double
//   s = (float)(sin(pos * inv_freq[j]) * attention_factor)
//   x[j]     <- x[j] * c - x[j + h] * s                        in float, then rounded to bf16
//   x[j + h] <- x[j + h] * c + x[j] * s
// (Either side's compiler may fuse one product and the sum into an FMA, so the float results
// may differ in the last bit: within 2^-22 (|x[j]| + |x[j + h]|) before the bf16 rounding.)
// inv_freq is the runtime's table for the model's rope_scaling kind (computed once on the host
// in double, the same table the CPU engine uses), uploaded as head_dim/2 doubles; the GPU
// never recomputes it, so every scaling kind (linear, dynamic NTK, llama3, YaRN, GGUF
// rope_freqs) is supported by construction. The angle is formed in double on the GPU too: at
// position 128k an FP32 angle would be off by up to 1/128 rad.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qf::cuda {

// Rotates, for each token i < num_tokens at position positions[i] (device array):
//   the num_heads query heads at q + i * q_row_stride + h * head_dim, and
//   the num_kv_heads key heads at k + i * k_row_stride + h * head_dim (k may be null).
// Strides are in elements, so q and k can be slices of a fused QKV projection output.
// head_dim must be a multiple of 16 (8-value vectors in each half); rows 16-byte aligned.
void rope_apply(__nv_bfloat16* q, int64_t q_row_stride, int num_heads, __nv_bfloat16* k,
                int64_t k_row_stride, int num_kv_heads, int head_dim, const int32_t* positions,
                int num_tokens, const double* inv_freq, double attention_factor, cudaStream_t stream);

}  // namespace qf::cuda
