// FireQ's INT4 x FP8 linear layer (issue 6): y[M,N] = x[M,K] · W'[N,K]^T with
//   W'[n,k] = e4m3(q[n,k] · sigma[n, k/128]) · t[n]      (the weight format's "lut" rule,
//                                                        formats/quantize.h: int4:g128:scale=fp8_e4m3:lut)
//   x'[m,k] = e4m3(x[m,k] / s[m]) · s[m]                 (fp8_e4m3:token, s = absmax_m / 448)
// so that y = s[m] · t[n] · sum_k e4m3(x/s) · e4m3(q·sigma): both operands are FP8 E4M3 values
// and the products run on FP8 tensor cores with FP32 accumulation; the two scales are applied
// once per output. The FP8 weight value of an INT4 code is what FireQ's per-group 16-entry
// lookup table holds; here it is computed in registers (half2 arithmetic, exact, then one
// cvt.rn.satfinite.e4m3x2.f16x2 per two weights), which gives the same bytes.
//
// Two paths behind one operand layout (the blob of prepack_w4a8_weights, weight_prepack.h):
//   * w4a8_gemv, M <= 16 (decode): reads 4.1 bits per weight straight into mma.m16n8k32 FP8
//     fragments, split-K inside the CTA, persistent grid. The design is in w4a8_gemm.cu.
//   * w4a8_dequantize_fp8 + cuBLASLt FP8 (CublasLt::linear_fp8_rowwise), any M: the weights are
//     expanded to their FP8 values once per call and cuBLASLt's Hopper FP8 GEMM applies the
//     per-token and per-row scales in its epilogue. It costs one extra write and read of N x K
//     bytes, which large M amortises (prefill).
// Activations arrive quantized: quantize_fp8_per_token makes them from BF16 (in the runtime this
// belongs fused into the kernel that produces them: RMSNorm, SwiGLU).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "formats/quantize.h"

namespace qf::cuda {

// The largest M w4a8_gemv handles: two 8-wide tensor-core tiles.
inline constexpr int64_t kW4a8GemvMaxM = 16;

// Shapes both paths run: M, N >= 1, K a positive multiple of 32 (each lane reads 16 bytes of
// codes = 32 weights per row), all below 2^30. The group size is 128 (the last group of a row
// may be shorter when 128 does not divide K).
bool w4a8_supports(int64_t m, int64_t n, int64_t k);

// xq[m, k] = e4m3(x[m, k] / s[m]), s[m] = max_k |x[m, k]| / 448 (0 for a zero row, then codes 0):
// exactly formats/quantize.h's fp8_e4m3:token (IEEE division, RNE, satfinite). x BF16, 16-byte
// aligned rows (k % 8 == 0); s F32 [m].
void quantize_fp8_per_token(const __nv_bfloat16* x, __nv_fp8_e4m3* xq, float* s, int64_t m, int64_t k,
                            cudaStream_t stream);

// y = x'·W'^T for M <= kW4a8GemvMaxM. xq and packed_w 16-byte aligned; x_scale [M] F32.
void w4a8_gemv(const __nv_fp8_e4m3* xq, const float* x_scale, const void* packed_w, __nv_bfloat16* y, int64_t m,
               int64_t n, int64_t k, cudaStream_t stream);

// The same for M <= 8 on wgmma (w4a8_gemm.cu: experimental, registered as a benchmark-only kernel).
void w4a8_gemv_wgmma(const __nv_fp8_e4m3* xq, const float* x_scale, const void* packed_w, __nv_bfloat16* y, int64_t m,
                     int64_t n, int64_t k, cudaStream_t stream);

// w8[n, k] = e4m3(q[n,k] · sigma[n, k/128]) (the FP8 weight values WITHOUT the row scale t, which
// the GEMM's epilogue applies), row-major, 16-byte aligned.
void w4a8_dequantize_fp8(const void* packed_w, __nv_fp8_e4m3* w8, int64_t n, int64_t k, cudaStream_t stream);

// The blob's row scales t[n] (F32, N values, 16-byte aligned): the GEMM's per-row epilogue scale.
const float* w4a8_row_scales(const void* packed_w, int64_t n, int64_t k);

// The CPU twin, on the host: y[i, n] (F32) = s[i] · t · sum_k e4m3val(x_codes[i,k]) · lut(n, k),
// lut = decode_e4m3(encode_e4m3(q · sigma)) recomputed here from the matrix's codes and stored
// scales through the formats' codecs, the sum in double. abs_sum (optional) receives the same
// with |products|: the scale of the FP32 accumulation error. w: an int4:g128 lut matrix with
// scale=fp8_e4m3 (tensor_scale or not); x_codes [m, K] E4M3 codes; x_scale [m].
void w4a8_linear_reference(const QuantizedMatrix& w, const uint8_t* x_codes, const float* x_scale, int64_t m,
                           float* y, float* abs_sum = nullptr);

}  // namespace qf::cuda
