// The quantized KV-cache rows on the device (kinds and layout in kv_cache.h): the scale and code
// of a row element as formats/quantize.h defines them for "int4:token:scale=f16" and
// "fp8_e4m3:token:scale=f16", and the unpacking the attention readers use. The writer
// (rope_kv.cu) and every reader include this one header, so a row is encoded and decoded one way.
//
// Exactness against formats::quantize (the CPU twin): s = absmax / qmax is an IEEE division
// (__fdiv_rn, never a multiplication by a reciprocal), the stored scale is the smallest F16 >= s
// (__float2half_ru), codes come from x / s' (again __fdiv_rn) rounded half to even
// (__float2int_rn; E4M3 by cvt.rn.satfinite), so the GPU's codes and scales equal quantize()'s
// bit for bit (tests/cuda/test_rope_kv.cpp checks it on every row).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace qf::cuda::kv_quant {

// The stored F16 scale of a row with this absmax: absmax / qmax rounded up (qmax 7 for int4,
// 448 for E4M3). Zero for an all-zero row.
__device__ __forceinline__ __half row_scale(float absmax, float qmax) {
  return __float2half_ru(__fdiv_rn(absmax, qmax));
}

// The int4 code (two's complement in the low 4 bits) of x under scale s (s' as a float).
__device__ __forceinline__ uint32_t int4_code(float x, float s) {
  if (s == 0.0f) return 0u;
  const int q = min(7, max(-8, __float2int_rn(__fdiv_rn(x, s))));
  return uint32_t(q) & 0xFu;
}

// The E4M3 code of x under scale s.
__device__ __forceinline__ uint32_t fp8_code(float x, float s) {
  if (s == 0.0f) return 0u;
  return uint32_t(__nv_cvt_float_to_fp8(__fdiv_rn(x, s), __NV_SATFINITE, __NV_E4M3));
}

// A value rounded through per-row FP8 E4M3 with an F32 scale ("fp8_e4m3:token", the query
// format): s = absmax / 448 (F32, not rounded further), x' = e4m3(x / s) * s.
__device__ __forceinline__ float fp8_round(float x, float s) {
  if (s == 0.0f) return 0.0f;
  const __nv_fp8_storage_t c = __nv_cvt_float_to_fp8(__fdiv_rn(x, s), __NV_SATFINITE, __NV_E4M3);
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3))) * s;
}

// 8 int4 codes (4 bytes, dims 2b / 2b+1 in the low / high nibble of byte b) as floats q in
// [-8, 7]: each nibble, offset by 8, becomes the low mantissa bits of 2^23, minus 2^23 + 8.
__device__ __forceinline__ void int4x8_to_float(uint32_t w, float (&out)[8]) {
  const uint32_t u = w ^ 0x88888888u;  // two's complement -> offset binary (q + 8)
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const uint32_t byte = (u >> (8 * b)) & 0xFFu;
    out[2 * b] = __uint_as_float(0x4B000000u | (byte & 0xFu)) - 8388616.0f;
    out[2 * b + 1] = __uint_as_float(0x4B000000u | (byte >> 4)) - 8388616.0f;
  }
}

// 8 E4M3 codes (8 bytes, dim order) as floats.
__device__ __forceinline__ void fp8x8_to_float(uint2 w, float (&out)[8]) {
  const uint32_t words[2] = {w.x, w.y};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(words[i] >> (16 * j)), __NV_E4M3);
      const float2 f = __half22float2(__half2(h));
      out[4 * i + 2 * j] = f.x;
      out[4 * i + 2 * j + 1] = f.y;
    }
  }
}

// For tensor-core readers: a BF16 pair whose low mantissa bits hold two offset-binary nibbles
// (q + 8 in 0..15) on top of 128.0 is exactly (136 + q_lo, 136 + q_hi); the reader removes the
// offset after its MMAs (attention_decode.cu).
//
// Nibbles i and i + 4 of a word of 8 two's-complement codes as such a pair (low half: nibble i):
// ((w >> 4i) & 0x000F000F) ^ 0x43084308. The AND leaves each nibble alone in its half; the XOR
// writes 128.0's exponent bits (0x4300: zero in the masked value, so XOR sets them as OR would)
// and flips the nibble's sign bit, which turns q into q + 8. One LOP3 per pair (plus the shift);
// written as PTX because the compiler splits an AND and an XOR with two immediate constants
// into two instructions (the decode kernel converts every cached value, so this is its hot loop).
__device__ __forceinline__ uint32_t int4_pair_to_bf16_offset(uint32_t w, int i) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0x6a;" : "=r"(r) : "r"(w >> (4 * i)), "r"(0x000F000Fu), "r"(0x43084308u));
  return r;
}

}  // namespace qf::cuda::kv_quant
