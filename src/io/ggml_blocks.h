// ggml's tensor storage types as GGUF files hold them: for each type, how many elements one
// block encodes and how many bytes the block takes, and a dequantizer from blocks to float.
//
// The block layouts (ggml-common.h) in brief; all multi-byte fields little-endian, "f16" an
// IEEE half, QK_K = 256 elements per K-quant super-block:
//   Q4_0  {f16 d; u8 qs[16]}                 x = d * (q - 8),       q: 4 bits
//   Q4_1  {f16 d, m; u8 qs[16]}              x = d * q + m
//   Q5_0  {f16 d; u8 qh[4]; u8 qs[16]}       x = d * (q - 16),      q: 4 low bits + 1 high bit
//   Q5_1  {f16 d, m; u8 qh[4]; u8 qs[16]}    x = d * q + m
//   Q8_0  {f16 d; i8 qs[32]}                 x = d * q
//   Q8_1  {f16 d, s; i8 qs[32]}              x = d * q              (s = d * sum(q), unused here)
//   Q2_K  {u8 scales[16]; u8 qs[64]; f16 d, dmin}        16 groups of 16: x = d*sc*q - dmin*m
//   Q3_K  {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d} 16 groups of 16: x = d*(sc-32)*(q-4*!h)
//   Q4_K  {f16 d, dmin; u8 scales[12]; u8 qs[128]}        8 groups of 32: x = d*sc*q - dmin*m
//   Q5_K  {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}  as Q4_K with a 5th bit
//   Q6_K  {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}   16 groups of 16: x = d*sc*(q-32)
//   Q8_K  {f32 d; i8 qs[256]; i16 bsums[16]}              x = d * q
// Where each element's bits sit inside qs/qh is documented next to each dequantizer in
// ggml_blocks.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "io/gguf.h"

namespace qf::gguf {

struct TypeTraits {
  GGMLType type;
  const char* name;
  int64_t block_size;  // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
};

// Traits of a raw ggml type number as read from a file; nullptr if qforge does not know it.
const TypeTraits* find_type_traits(uint32_t raw_type);
const TypeTraits& type_traits(GGMLType t);

// Dequantizes `n` elements (a multiple of the type's block size) starting at `src` into `dst`.
// Reads exactly n / block_size * block_bytes bytes; `src` need not be aligned.
void dequantize_row(GGMLType t, const uint8_t* src, float* dst, int64_t n);

}  // namespace qf::gguf
