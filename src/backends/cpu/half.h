// 16-bit float storage as the CPU kernels read it: distinct types for the BF16 and F16 bit
// patterns (both are uint16_t in memory, so the type says which one it is), widened to F32 by
// src/formats' decoders (the spec of each format; every BF16 and F16 value is a float).
#pragma once

#include <cstdint>

#include "formats/bf16.h"
#include "formats/fp16.h"

namespace qf::cpu {

struct Bf16Bits { uint16_t bits; };
struct F16Bits { uint16_t bits; };
static_assert(sizeof(Bf16Bits) == 2 && sizeof(F16Bits) == 2);

template <typename T>
inline float widen_half(T v);
template <>
inline float widen_half<Bf16Bits>(Bf16Bits v) { return bf16_decode(v.bits); }
template <>
inline float widen_half<F16Bits>(F16Bits v) { return f16_decode(v.bits); }

}  // namespace qf::cpu
