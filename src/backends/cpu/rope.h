// Rotary position embedding (RoPE) on the CPU, HF "rotate_half" pairing: in each head of
// head_dim values, element j (j < head_dim/2) is paired with element j + head_dim/2 and the
// pair is rotated by the angle position * inv_freq[j].
//
// The angles are computed in double precision: positions reach 128k (Llama 3.1) and the
// fastest frequency is 1 rad/token, so the angle reaches ~1.3e5 rad, where an FP32 value is
// only known to within 2^17 * 2^-24 = 1/128 rad — a rotation error far above the FP32
// rounding of the rotated values themselves. In double the error stays below 1e-11 rad.
// (inv_freq comes from the runtime, which derives it from the model's rope_scaling.)
#pragma once

#include <cstdint>

namespace qf::cpu {

// cos_out/sin_out [n_tokens, half_dim]: cos and sin of positions[i] * inv_freq[j], computed in
// double, times attention_factor (YaRN's scaling of q and k; 1 otherwise), rounded to float.
void rope_cos_sin(const int32_t* positions, int64_t n_tokens, const double* inv_freq, int64_t half_dim,
                  double attention_factor, float* cos_out, float* sin_out);

// Rotates x in place: x holds n_tokens rows of token_stride floats, each starting with n_heads
// heads of head_dim values. With h = head_dim/2, c = cos[i, j], s = sin[i, j]:
//   x[j]     <- x[j] * c - x[j + h] * s
//   x[j + h] <- x[j + h] * c + x[j] * s
void rope_apply(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride,
                const float* cos, const float* sin);

}  // namespace qf::cpu
