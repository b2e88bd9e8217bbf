#include "io/ggml_blocks.h"

#include <cstring>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/fp16.h"

namespace qf::gguf {
namespace {

constexpr int64_t kQK = 32;    // elements per block of the "legacy" quants (Q4_0 ... Q8_1)
constexpr int64_t kQK_K = 256;  // elements per K-quant super-block

// Block byte counts, summed from the field lists in ggml_blocks.h (f16 = 2 bytes).
constexpr TypeTraits kTraits[] = {
    {GGMLType::F32, "F32", 1, 4},
    {GGMLType::F16, "F16", 1, 2},
    {GGMLType::BF16, "BF16", 1, 2},
    {GGMLType::Q4_0, "Q4_0", kQK, 2 + kQK / 2},
    {GGMLType::Q4_1, "Q4_1", kQK, 2 * 2 + kQK / 2},
    {GGMLType::Q5_0, "Q5_0", kQK, 2 + 4 + kQK / 2},
    {GGMLType::Q5_1, "Q5_1", kQK, 2 * 2 + 4 + kQK / 2},
    {GGMLType::Q8_0, "Q8_0", kQK, 2 + kQK},
    {GGMLType::Q8_1, "Q8_1", kQK, 2 * 2 + kQK},
    {GGMLType::Q2_K, "Q2_K", kQK_K, kQK_K / 16 + kQK_K / 4 + 2 * 2},
    {GGMLType::Q3_K, "Q3_K", kQK_K, kQK_K / 8 + kQK_K / 4 + 12 + 2},
    {GGMLType::Q4_K, "Q4_K", kQK_K, 2 * 2 + 12 + kQK_K / 2},
    {GGMLType::Q5_K, "Q5_K", kQK_K, 2 * 2 + 12 + kQK_K / 8 + kQK_K / 2},
    {GGMLType::Q6_K, "Q6_K", kQK_K, kQK_K / 2 + kQK_K / 4 + kQK_K / 16 + 2},
    {GGMLType::Q8_K, "Q8_K", kQK_K, 4 + kQK_K + 2 * (kQK_K / 16)},
};

inline uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
inline float load_f16(const uint8_t* p) { return f16_decode(load_u16(p)); }

// The float expressions below keep ggml's evaluation order (e.g. (d * scale) * q), so that
// results agree with llama.cpp's to the last bit wherever it does not fuse multiply-adds.

// Q4_0 / Q4_1: byte j of qs holds element j (low nibble) and element j + 16 (high nibble).
void dequant_q4(const uint8_t* b, float* y, bool has_min) {
  const float d = load_f16(b);
  const float m = has_min ? load_f16(b + 2) : 0.0f;
  const uint8_t* qs = b + (has_min ? 4 : 2);
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = qs[j] & 0x0f, hi = qs[j] >> 4;
    if (has_min) {
      y[j] = lo * d + m;
      y[j + kQK / 2] = hi * d + m;
    } else {
      y[j] = (lo - 8) * d;
      y[j + kQK / 2] = (hi - 8) * d;
    }
  }
}

// Q5_0 / Q5_1: low nibbles as in Q4; the fifth bit of element i is bit i of the 32-bit qh.
void dequant_q5(const uint8_t* b, float* y, bool has_min) {
  const float d = load_f16(b);
  const float m = has_min ? load_f16(b + 2) : 0.0f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  const uint32_t qh = load_u32(p);
  const uint8_t* qs = p + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | (((qh >> (j + kQK / 2)) & 1) << 4);
    if (has_min) {
      y[j] = lo * d + m;
      y[j + kQK / 2] = hi * d + m;
    } else {
      y[j] = (lo - 16) * d;
      y[j + kQK / 2] = (hi - 16) * d;
    }
  }
}

// Q8_0 / Q8_1: one int8 per element after the f16 scale (and, for Q8_1, the f16 sum).
void dequant_q8(const uint8_t* b, float* y, size_t header_bytes) {
  const float d = load_f16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + header_bytes);
  for (int j = 0; j < kQK; ++j) y[j] = qs[j] * d;
}

// The 2-bit quants of Q2_K and Q3_K: the super-block is two halves of 128 elements; half h
// reads qs[32h .. 32h+31]; within a half, element 32s + l (s = 0..3, l = 0..31) is bits 2s..2s+1
// of qs[32h + l]. Each run of 16 elements has its own scale, numbered 8h + 2s + l/16.
inline int k_quant_2bit(const uint8_t* qs, int e) {
  const int h = e / 128, s = (e % 128) / 32, l = e % 32;
  return (qs[32 * h + l] >> (2 * s)) & 3;
}

// Q2_K: scales[i] = (min << 4) | scale, both 4 bits; x = d * scale * q - dmin * min.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + kQK_K / 16;
  const float d = load_f16(qs + kQK_K / 4);
  const float dmin = load_f16(qs + kQK_K / 4 + 2);
  for (int e = 0; e < kQK_K; ++e) {
    const uint8_t sc = scales[e / 16];
    const float dl = d * (sc & 0x0f), ml = dmin * (sc >> 4);
    y[e] = dl * k_quant_2bit(qs, e) - ml;
  }
}

// Q3_K: 16 6-bit scales packed in 12 bytes: the low 4 bits of scale i are the low (i < 8) or
// high (i >= 8) nibble of byte i % 8; its high 2 bits are bits 2*(i/4)..+1 of byte 8 + i % 4.
// The third bit of element 128h + 32s + l is bit 4h + s of hmask[l]; when that bit is clear the
// element is 4 lower: q = q2 - 4 * !hbit, in [-4, 3]. x = d * (scale - 32) * q.
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + kQK_K / 8;
  const uint8_t* packed = qs + kQK_K / 4;
  const float d = load_f16(packed + 12);
  int scale[16];
  for (int i = 0; i < 16; ++i) {
    const int low = (i < 8 ? packed[i % 8] : packed[i % 8] >> 4) & 0x0f;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scale[i] = (low | (high << 4)) - 32;
  }
  for (int e = 0; e < kQK_K; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    const bool hbit = (hmask[l] >> (4 * h + s)) & 1;
    const float dl = d * scale[e / 16];
    y[e] = dl * (k_quant_2bit(qs, e) - (hbit ? 0 : 4));
  }
}

// Q4_K / Q5_K sub-block scales and mins: 8 pairs of 6-bit values in 12 bytes. Pairs 0..3 are
// the low 6 bits of bytes j (scale) and j + 4 (min); pairs 4..7 take their low 4 bits from
// the nibbles of byte j + 4 and their high 2 bits from the top bits of bytes j - 4 (scale) and
// j (min).
inline void k_scale_min(const uint8_t* q, int j, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K: 4 chunks of 64 elements; chunk c reads qs[32c .. 32c+31]: its first 32 elements are the
// low nibbles (sub-block 2c), the next 32 the high nibbles (sub-block 2c + 1).
// Q5_K adds a fifth bit: element l of sub-block k has it in bit k of qh[l].
// x = d * scale * q - dmin * min.
void dequant_q45_k(const uint8_t* b, float* y, bool five_bit) {
  const float d = load_f16(b);
  const float dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = scales + 12;
  const uint8_t* qs = five_bit ? qh + kQK_K / 8 : qh;
  for (int k = 0; k < 8; ++k) {
    int sc, m;
    k_scale_min(scales, k, sc, m);
    const float dk = d * sc, mk = dmin * m;
    const uint8_t* q = qs + 32 * (k / 2);
    const int shift = 4 * (k % 2);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> shift) & 0x0f;
      if (five_bit) v += ((qh[l] >> k) & 1) << 4;
      y[32 * k + l] = dk * v - mk;
    }
  }
}

// Q6_K: two halves of 128; half h reads ql[64h ..], qh[32h ..] and scales[8h ..]. Element
// 32t + l of a half (t = 0..3, l = 0..31) takes its low 4 bits from ql[l + 32*(t%2)]
// (low nibble for t < 2, high for t >= 2) and its high 2 bits from bits 2t..2t+1 of qh[l];
// its scale is scales[8h + 2t + l/16]. x = d * scale * (q - 32).
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql_all = b;
  const uint8_t* qh_all = b + kQK_K / 2;
  const int8_t* sc_all = reinterpret_cast<const int8_t*>(qh_all + kQK_K / 4);
  const float d = load_f16(qh_all + kQK_K / 4 + kQK_K / 16);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = ql_all + 64 * h;
    const uint8_t* qh = qh_all + 32 * h;
    const int8_t* sc = sc_all + 8 * h;
    for (int t = 0; t < 4; ++t) {
      for (int l = 0; l < 32; ++l) {
        const int low = (ql[l + 32 * (t % 2)] >> (4 * (t / 2))) & 0x0f;
        const int high = (qh[l] >> (2 * t)) & 3;
        const int q = (low | (high << 4)) - 32;
        y[128 * h + 32 * t + l] = d * sc[2 * t + l / 16] * q;
      }
    }
  }
}

// Q8_K: an f32 scale, then one int8 per element (the bsums that follow are for dot products).
void dequant_q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, sizeof d);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int j = 0; j < kQK_K; ++j) y[j] = d * qs[j];
}

}  // namespace

const TypeTraits* find_type_traits(uint32_t raw_type) {
  for (const TypeTraits& t : kTraits)
    if (static_cast<uint32_t>(t.type) == raw_type) return &t;
  return nullptr;
}

const TypeTraits& type_traits(GGMLType t) {
  const TypeTraits* tt = find_type_traits(static_cast<uint32_t>(t));
  QF_CHECK(tt, "unknown ggml type ", static_cast<uint32_t>(t));
  return *tt;
}

const char* ggml_type_name(GGMLType t) {
  const TypeTraits* tt = find_type_traits(static_cast<uint32_t>(t));
  return tt ? tt->name : "unknown";
}

void dequantize_row(GGMLType t, const uint8_t* src, float* dst, int64_t n) {
  const TypeTraits& tt = type_traits(t);
  QF_CHECK(n % tt.block_size == 0, tt.name, ": ", n, " elements is not a multiple of the block size ", tt.block_size);
  const int64_t blocks = n / tt.block_size;
  // The switch sits outside the loop so that each loop body is one type's straight-line code.
  auto for_each_block = [&](auto&& dequant_block) {
    for (int64_t i = 0; i < blocks; ++i) dequant_block(src + i * tt.block_bytes, dst + i * tt.block_size);
  };
  switch (t) {
    case GGMLType::F32: std::memcpy(dst, src, size_t(n) * 4); break;
    case GGMLType::F16: for_each_block([](const uint8_t* b, float* y) { *y = f16_decode(load_u16(b)); }); break;
    case GGMLType::BF16: for_each_block([](const uint8_t* b, float* y) { *y = bf16_decode(load_u16(b)); }); break;
    case GGMLType::Q4_0: for_each_block([](const uint8_t* b, float* y) { dequant_q4(b, y, false); }); break;
    case GGMLType::Q4_1: for_each_block([](const uint8_t* b, float* y) { dequant_q4(b, y, true); }); break;
    case GGMLType::Q5_0: for_each_block([](const uint8_t* b, float* y) { dequant_q5(b, y, false); }); break;
    case GGMLType::Q5_1: for_each_block([](const uint8_t* b, float* y) { dequant_q5(b, y, true); }); break;
    case GGMLType::Q8_0: for_each_block([](const uint8_t* b, float* y) { dequant_q8(b, y, 2); }); break;
    case GGMLType::Q8_1: for_each_block([](const uint8_t* b, float* y) { dequant_q8(b, y, 4); }); break;
    case GGMLType::Q2_K: for_each_block(dequant_q2_k); break;
    case GGMLType::Q3_K: for_each_block(dequant_q3_k); break;
    case GGMLType::Q4_K: for_each_block([](const uint8_t* b, float* y) { dequant_q45_k(b, y, false); }); break;
    case GGMLType::Q5_K: for_each_block([](const uint8_t* b, float* y) { dequant_q45_k(b, y, true); }); break;
    case GGMLType::Q6_K: for_each_block(dequant_q6_k); break;
    case GGMLType::Q8_K: for_each_block(dequant_q8_k); break;
  }
}

}  // namespace qf::gguf
