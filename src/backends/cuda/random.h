// Random fills ON THE GPU, for synthetic weights and activations (the benchmark, synthetic
// models, tests): a 1 GB weight is generated in about a millisecond instead of being made on the
// host and copied. Never zeros: zeros hide unwritten outputs and wrong indexing, and run faster
// than real data on tensor cores.
//
// The generator is counter based: element i of a fill with seed s is a pure function of (i, s)
// (the splitmix64 sequence of state mix64(s), read at step i + 1), so any element can be
// recomputed on the host (random_value below) and a fill is the same whatever the launch shape.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qf::cuda {

// Element types a fill can produce. FP8 E4M3 is the "fn" variant (finite only, max 448), encoded
// with round-to-nearest-even and saturation to +-448 (CUDA's __NV_SATFINITE).
enum class RandomType : uint8_t { f32, bf16, fp8_e4m3 };

struct RandomSpec {
  enum Kind : uint8_t { uniform, normal } kind = normal;
  float a = 0.f;  // uniform: low end;  normal: mean
  float b = 1.f;  // uniform: high end; normal: standard deviation

  static RandomSpec uniform_in(float lo, float hi) { return {uniform, lo, hi}; }
  static RandomSpec normal_with(float mean, float stddev) { return {normal, mean, stddev}; }
};

// Fills `count` elements of `type` at `dst`: uniform in [a, b) or normal(a, b), then rounded to
// the element type (RNE; FP8 saturates).
void fill_random(void* dst, RandomType type, size_t count, RandomSpec spec, uint64_t seed,
                 cudaStream_t stream);

// The value, before rounding to the element type, that fill_random gives element `index`: the host
// twin of the kernel. Uniform values are bit-identical on host and device (the arithmetic is
// exact in double up to the final rounding); normal values (Box-Muller in double) may differ in
// the last bit of the double, so after rounding to the element type they agree to one unit in
// the last place.
float random_value(uint64_t index, RandomSpec spec, uint64_t seed);

// The bits fill_random stores for element `index` (f32: 4 bytes, bf16: 2, fp8: 1, in the low
// bytes), computed on the host with the same rounding as the device.
uint32_t random_bits(uint64_t index, RandomType type, RandomSpec spec, uint64_t seed);

size_t random_type_size(RandomType type);

}  // namespace qf::cuda
