// Helpers shared by the CPU op tests: seeded random data and 16-bit float encodings made by
// truncation/rounding written here, independent of the code under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace qf::cpu_test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// BF16 bits of a float by truncation (any BF16 value is fine as a test weight); the value it
// stands for is exactly the float with the low 16 bits cleared.
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}
inline double bf16_value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// F16 values for tests: a random sign, a mantissa and an exponent in the normal range
// [-8, 3], built from the bit fields so the expected value is sign * 2^e * (1 + m/1024).
struct F16Sample {
  uint16_t bits;
  double value;
};
inline F16Sample random_f16(std::mt19937& rng) {
  const uint16_t sign = rng() & 1, mant = rng() % 1024;
  const int e = int(rng() % 12) - 8;
  F16Sample s;
  s.bits = uint16_t((sign << 15) | ((e + 15) << 10) | mant);
  s.value = (sign ? -1.0 : 1.0) * std::ldexp(1.0 + mant / 1024.0, e);
  return s;
}

}  // namespace qf::cpu_test
