#include "backends/cpu/rope.h"

#include <cmath>

#include "core/error.h"

namespace qf::cpu {

void rope_cos_sin(const int32_t* positions, int64_t n_tokens, const double* inv_freq, int64_t half_dim,
                  double attention_factor, float* cos_out, float* sin_out) {
  for (int64_t i = 0; i < n_tokens; ++i) {
    QF_CHECK(positions[i] >= 0, "RoPE: negative position ", positions[i], " at index ", i);
    for (int64_t j = 0; j < half_dim; ++j) {
      const double angle = double(positions[i]) * inv_freq[j];
      cos_out[i * half_dim + j] = static_cast<float>(std::cos(angle) * attention_factor);
      sin_out[i * half_dim + j] = static_cast<float>(std::sin(angle) * attention_factor);
    }
  }
}

void rope_apply(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t token_stride,
                const float* cos, const float* sin) {
  QF_CHECK(head_dim % 2 == 0, "RoPE needs an even head_dim, got ", head_dim);
  const int64_t h = head_dim / 2;
  for (int64_t i = 0; i < n_tokens; ++i) {
    const float* c = cos + i * h;
    const float* s = sin + i * h;
    for (int64_t head = 0; head < n_heads; ++head) {
      float* v = x + i * token_stride + head * head_dim;
      for (int64_t j = 0; j < h; ++j) {
        const float lo = v[j], hi = v[j + h];
        v[j] = lo * c[j] - hi * s[j];
        v[j + h] = hi * c[j] + lo * s[j];
      }
    }
  }
}

}  // namespace qf::cpu
