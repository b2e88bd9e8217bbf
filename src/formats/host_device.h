// What the codec headers need to be callable from host C++ and, later, from CUDA device code
// unchanged: a host/device marker and constexpr float <-> bits casts (std::bit_cast, which device
// code may call under nvcc's --expt-relaxed-constexpr, set by the CUDA build). Nothing here
// includes a CUDA header, so the CPU build does not depend on the toolkit.
#pragma once

#include <bit>
#include <cstdint>

#if defined(__CUDACC__)
#define QF_HOST_DEVICE __host__ __device__
#else
#define QF_HOST_DEVICE
#endif

namespace qf {

QF_HOST_DEVICE constexpr uint32_t f32_bits(float x) { return std::bit_cast<uint32_t>(x); }
QF_HOST_DEVICE constexpr float f32_from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

}  // namespace qf
