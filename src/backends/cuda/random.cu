#include "backends/cuda/random.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/cuda/cuda_check.h"

namespace qf::cuda {

namespace {

// splitmix64's output function (Steele, Lea, Flood 2014): a bijection on 64 bits whose outputs
// for consecutive inputs spaced by the golden-ratio increment pass BigCrush.
__host__ __device__ inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Step `index + 1` of the splitmix64 sequence whose state starts at `state` (= mix64(seed), so
// that nearby seeds give unrelated sequences).
__host__ __device__ inline uint64_t counter_bits(uint64_t index, uint64_t state) {
  return mix64(state + (index + 1) * 0x9E3779B97F4A7C15ull);
}

// x * y + z with the product and the sum each rounded once, also on the device where nvcc would
// otherwise fuse them into an FMA (one rounding): the host twin must see the same arithmetic.
__host__ __device__ inline double mul_add_unfused(double x, double y, double z) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(__dmul_rn(x, y), z);
#else
  const double p = x * y;
  return p + z;
#endif
}

__host__ __device__ inline float value_from_bits(uint64_t bits, RandomSpec spec) {
  constexpr double kTwoToMinus24 = 1.0 / 16777216.0;
  if (spec.kind == RandomSpec::uniform) {
    const double u = static_cast<double>(bits >> 40) * kTwoToMinus24;  // [0, 1), 24 bits
    const double span = static_cast<double>(spec.b) - static_cast<double>(spec.a);
    return static_cast<float>(mul_add_unfused(span, u, static_cast<double>(spec.a)));
  }
  // Box-Muller on two independent 24-bit uniforms from the same 64 random bits.
  const double u1 = static_cast<double>((bits >> 40) + 1) * kTwoToMinus24;  // (0, 1]: log finite
  const double u2 = static_cast<double>((bits >> 16) & 0xFFFFFFu) * kTwoToMinus24;  // [0, 1)
  const double radius = sqrt(-2.0 * log(u1));
  const double z = radius * cos(6.283185307179586 * u2);
  return static_cast<float>(mul_add_unfused(static_cast<double>(spec.b), z, static_cast<double>(spec.a)));
}

template <RandomType kType>
__host__ __device__ inline uint32_t encode_value(float v) {
  if constexpr (kType == RandomType::f32) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return u;
#endif
  } else if constexpr (kType == RandomType::bf16) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  } else {
    return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  }
}

template <RandomType kType>
__global__ void fill_random_kernel(void* dst, size_t count, RandomSpec spec, uint64_t state) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += stride) {
    const uint32_t bits = encode_value<kType>(value_from_bits(counter_bits(i, state), spec));
    if constexpr (kType == RandomType::f32) static_cast<uint32_t*>(dst)[i] = bits;
    else if constexpr (kType == RandomType::bf16) static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(bits);
    else static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(bits);
  }
}

template <RandomType kType>
void launch_fill(void* dst, size_t count, RandomSpec spec, uint64_t state, cudaStream_t stream) {
  const int threads = 256;
  // 8 blocks of 256 threads per SM on a 132-SM H100 is ~1000 blocks; 4096 fills any current GPU
  // several times over, and the grid-stride loop covers the rest.
  const size_t blocks = std::min<size_t>((count + threads - 1) / threads, 4096);
  fill_random_kernel<kType><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(dst, count, spec, state);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t random_type_size(RandomType type) {
  switch (type) {
    case RandomType::f32: return 4;
    case RandomType::bf16: return 2;
    case RandomType::fp8_e4m3: return 1;
  }
  return 0;
}

void fill_random(void* dst, RandomType type, size_t count, RandomSpec spec, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return;
  QF_CHECK(dst != nullptr, "fill_random: null destination for ", count, " elements");
  QF_CHECK(spec.kind != RandomSpec::uniform || spec.a < spec.b, "fill_random: empty uniform range [", spec.a, ", ", spec.b, ")");
  QF_CHECK(spec.kind != RandomSpec::normal || spec.b > 0.f, "fill_random: normal standard deviation ", spec.b, " is not positive");
  const uint64_t state = mix64(seed);
  switch (type) {
    case RandomType::f32: launch_fill<RandomType::f32>(dst, count, spec, state, stream); break;
    case RandomType::bf16: launch_fill<RandomType::bf16>(dst, count, spec, state, stream); break;
    case RandomType::fp8_e4m3: launch_fill<RandomType::fp8_e4m3>(dst, count, spec, state, stream); break;
  }
}

float random_value(uint64_t index, RandomSpec spec, uint64_t seed) {
  return value_from_bits(counter_bits(index, mix64(seed)), spec);
}

uint32_t random_bits(uint64_t index, RandomType type, RandomSpec spec, uint64_t seed) {
  const float v = random_value(index, spec, seed);
  switch (type) {
    case RandomType::f32: return encode_value<RandomType::f32>(v);
    case RandomType::bf16: return encode_value<RandomType::bf16>(v);
    case RandomType::fp8_e4m3: return encode_value<RandomType::fp8_e4m3>(v);
  }
  return 0;
}

}  // namespace qf::cuda
