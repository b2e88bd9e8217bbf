// ggml block dequantizers, two ways:
//  1. hand-built blocks: codes and scales chosen here, packed into the documented layout, and
//     the expected values computed from each format's formula (scales are small dyadic
//     numbers, so every product is exact and the comparison is exact);
//  2. llama.cpp's own dequantization of random blocks (tests/data/io/ggml_dequant_reference.bin,
//     see the README there).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "core/thread_pool.h"
#include "gguf_builder.h"
#include "io/ggml_blocks.h"
#include "io/gguf.h"
#include "io_test_util.h"

namespace qf {
namespace {

using gguf::GGMLType;

// The F16 bit pattern of `v`, which must be exactly representable as a normal F16.
uint16_t exact_f16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t sign = (bits >> 16) & 0x8000, exponent = (bits >> 23) & 0xff, mantissa = bits & 0x7fffff;
  EXPECT_EQ(mantissa & 0x1fff, 0u) << v << " has more mantissa bits than F16";
  EXPECT_TRUE(exponent >= 127 - 14 && exponent <= 127 + 15) << v << " is outside F16's normal range";
  return uint16_t(sign | ((exponent - 127 + 15) << 10) | (mantissa >> 13));
}

void put_f16(std::vector<uint8_t>& b, size_t at, float v) {
  const uint16_t h = exact_f16(v);
  b[at] = uint8_t(h & 0xff);
  b[at + 1] = uint8_t(h >> 8);
}

std::vector<float> dequant(GGMLType t, const std::vector<uint8_t>& block) {
  const auto& tt = gguf::type_traits(t);
  EXPECT_EQ(block.size() % tt.block_bytes, 0u);
  const int64_t n = int64_t(block.size() / tt.block_bytes) * tt.block_size;
  std::vector<float> y(n);
  gguf::dequantize_row(t, block.data(), y.data(), n);
  return y;
}

struct Rng {
  std::mt19937 gen{1234};
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }
};

TEST(GgmlBlocks, BlockSizesMatchGgml) {
  // ggml-common.h's static_asserts, restated: sizeof(block_*) for each type.
  const std::pair<GGMLType, size_t> sizes[] = {
      {GGMLType::Q4_0, 18}, {GGMLType::Q4_1, 20}, {GGMLType::Q5_0, 22},  {GGMLType::Q5_1, 24},
      {GGMLType::Q8_0, 34}, {GGMLType::Q8_1, 36}, {GGMLType::Q2_K, 84},  {GGMLType::Q3_K, 110},
      {GGMLType::Q4_K, 144}, {GGMLType::Q5_K, 176}, {GGMLType::Q6_K, 210}, {GGMLType::Q8_K, 292},
      {GGMLType::F32, 4},   {GGMLType::F16, 2},   {GGMLType::BF16, 2}};
  for (auto [t, bytes] : sizes) EXPECT_EQ(gguf::type_traits(t).block_bytes, bytes) << gguf::ggml_type_name(t);
  EXPECT_STREQ(gguf::ggml_type_name(GGMLType::Q6_K), "Q6_K");
  EXPECT_EQ(gguf::find_type_traits(16), nullptr);  // IQ2_XXS: not read by qforge
}

TEST(GgmlBlocks, F16EveryCode) {
  for (uint32_t code = 0; code < 65536; ++code) {
    const uint8_t bytes[2] = {uint8_t(code & 0xff), uint8_t(code >> 8)};
    float y;
    gguf::dequantize_row(GGMLType::F16, bytes, &y, 1);
    const int sign = (code >> 15) ? -1 : 1, exponent = (code >> 10) & 0x1f, mantissa = code & 0x3ff;
    if (exponent == 31) {
      if (mantissa == 0) EXPECT_EQ(y, sign * INFINITY) << code;
      else EXPECT_TRUE(std::isnan(y)) << code;
      continue;
    }
    const double expected = exponent == 0 ? sign * std::ldexp(double(mantissa), -24)
                                          : sign * std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
    EXPECT_EQ(double(y), expected) << code;
    EXPECT_EQ(std::signbit(y), sign < 0) << code;  // -0 stays -0
  }
}

TEST(GgmlBlocks, BF16EveryCode) {
  for (uint32_t code = 0; code < 65536; ++code) {
    const uint8_t bytes[2] = {uint8_t(code & 0xff), uint8_t(code >> 8)};
    float y;
    gguf::dequantize_row(GGMLType::BF16, bytes, &y, 1);
    const int sign = (code >> 15) ? -1 : 1, exponent = (code >> 7) & 0xff, mantissa = code & 0x7f;
    if (exponent == 255) {
      if (mantissa == 0) EXPECT_EQ(y, sign * INFINITY) << code;
      else EXPECT_TRUE(std::isnan(y)) << code;
      continue;
    }
    const double expected = exponent == 0 ? sign * std::ldexp(double(mantissa), -133)
                                          : sign * std::ldexp(1.0 + mantissa / 128.0, exponent - 127);
    EXPECT_EQ(double(y), expected) << code;
  }
}

// Q4_0 / Q4_1 / Q5_0 / Q5_1: 32 codes; byte j of qs holds codes j (low nibble) and j + 16 (high);
// Q5's fifth bits form the 32-bit qh, bit i for code i.
void check_legacy(GGMLType t, int bits, bool has_min) {
  Rng rng;
  const float d = -0.375f, m = 1.25f;
  const size_t header = has_min ? 4 : 2, qh_bytes = bits == 5 ? 4 : 0;
  std::vector<uint8_t> b(header + qh_bytes + 16, 0);
  put_f16(b, 0, d);
  if (has_min) put_f16(b, 2, m);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = rng.uniform(0, (1 << bits) - 1);
  for (int j = 0; j < 16; ++j) b[header + qh_bytes + j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
  if (bits == 5) {
    uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= uint32_t(q[i] >> 4) << i;
    for (int k = 0; k < 4; ++k) b[header + k] = uint8_t(qh >> (8 * k));
  }
  const std::vector<float> y = dequant(t, b);
  const int offset = 1 << (bits - 1);  // symmetric types centre the codes: q - 8, q - 16
  for (int i = 0; i < 32; ++i) {
    const float expected = has_min ? d * q[i] + m : d * (q[i] - offset);
    EXPECT_EQ(y[i], expected) << gguf::ggml_type_name(t) << " element " << i;
  }
}

TEST(GgmlBlocks, Q4_0HandBuilt) { check_legacy(GGMLType::Q4_0, 4, false); }
TEST(GgmlBlocks, Q4_1HandBuilt) { check_legacy(GGMLType::Q4_1, 4, true); }
TEST(GgmlBlocks, Q5_0HandBuilt) { check_legacy(GGMLType::Q5_0, 5, false); }
TEST(GgmlBlocks, Q5_1HandBuilt) { check_legacy(GGMLType::Q5_1, 5, true); }

void check_q8(GGMLType t) {
  Rng rng;
  const size_t header = t == GGMLType::Q8_1 ? 4 : 2;
  std::vector<uint8_t> b(header + 32, 0);
  put_f16(b, 0, 0.0625f);
  if (t == GGMLType::Q8_1) put_f16(b, 2, 99.0f);  // the precomputed sum plays no part
  int q[32];
  for (int i = 0; i < 32; ++i) {
    q[i] = rng.uniform(-128, 127);
    b[header + i] = uint8_t(int8_t(q[i]));
  }
  const std::vector<float> y = dequant(t, b);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.0625f * q[i]) << i;
}

TEST(GgmlBlocks, Q8_0HandBuilt) { check_q8(GGMLType::Q8_0); }
TEST(GgmlBlocks, Q8_1HandBuilt) { check_q8(GGMLType::Q8_1); }

TEST(GgmlBlocks, Q8_KHandBuilt) {
  Rng rng;
  std::vector<uint8_t> b(292, 0xee);  // bsums left as garbage: unused
  const float d = -0.03125f;
  std::memcpy(b.data(), &d, 4);
  int q[256];
  for (int i = 0; i < 256; ++i) {
    q[i] = rng.uniform(-128, 127);
    b[4 + i] = uint8_t(int8_t(q[i]));
  }
  const std::vector<float> y = dequant(GGMLType::Q8_K, b);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], d * q[i]) << i;
}

// K-quants' 2-bit fields (Q2_K, Q3_K): element e = 128h + 32s + l sits in bits 2s..2s+1 of
// qs[32h + l].
void pack_2bit(uint8_t* qs, const int* q2) {
  for (int e = 0; e < 256; ++e) qs[32 * (e / 128) + e % 32] |= uint8_t(q2[e] << (2 * ((e % 128) / 32)));
}

TEST(GgmlBlocks, Q2_KHandBuilt) {
  Rng rng;
  std::vector<uint8_t> b(84, 0);  // scales[16], qs[64], d, dmin
  const float d = 0.5f, dmin = 0.125f;
  put_f16(b, 80, d);
  put_f16(b, 82, dmin);
  int scale[16], min[16], q[256];
  for (int g = 0; g < 16; ++g) {
    scale[g] = rng.uniform(0, 15);
    min[g] = rng.uniform(0, 15);
    b[g] = uint8_t(scale[g] | (min[g] << 4));
  }
  for (int e = 0; e < 256; ++e) q[e] = rng.uniform(0, 3);
  pack_2bit(b.data() + 16, q);
  const std::vector<float> y = dequant(GGMLType::Q2_K, b);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], d * scale[e / 16] * q[e] - dmin * min[e / 16]) << e;
}

TEST(GgmlBlocks, Q3_KHandBuilt) {
  Rng rng;
  std::vector<uint8_t> b(110, 0);  // hmask[32], qs[64], scales[12], d
  const float d = -0.25f;
  put_f16(b, 108, d);
  int scale[16], q[256], q2[256];
  uint8_t* packed = b.data() + 96;
  for (int i = 0; i < 16; ++i) {
    scale[i] = rng.uniform(0, 63);  // stored with a bias of 32
    // Low 4 bits: nibble i / 8 of byte i % 8; high 2 bits: bits 2*(i/4) of byte 8 + i % 4.
    packed[i % 8] |= uint8_t((scale[i] & 15) << (4 * (i / 8)));
    packed[8 + i % 4] |= uint8_t((scale[i] >> 4) << (2 * (i / 4)));
  }
  for (int e = 0; e < 256; ++e) {
    q[e] = rng.uniform(-4, 3);
    // Stored as 2 low bits plus a "high" bit that is set for q >= 0 (clear means q2 - 4).
    const bool high = q[e] >= 0;
    q2[e] = high ? q[e] : q[e] + 4;
    if (high) b[e % 32] |= uint8_t(1 << (4 * (e / 128) + (e % 128) / 32));
  }
  pack_2bit(b.data() + 32, q2);
  const std::vector<float> y = dequant(GGMLType::Q3_K, b);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], d * (scale[e / 16] - 32) * q[e]) << e;
}

// Q4_K / Q5_K: 8 (scale, min) pairs of 6 bits in 12 bytes; element 32k + l's low 4 bits are
// nibble k % 2 of qs[32*(k/2) + l]; Q5_K's fifth bit is bit k of qh[l].
void check_q45_k(bool five_bit) {
  Rng rng;
  const size_t qh_bytes = five_bit ? 32 : 0;
  std::vector<uint8_t> b(4 + 12 + qh_bytes + 128, 0);
  const float d = 0.25f, dmin = -0.5f;
  put_f16(b, 0, d);
  put_f16(b, 2, dmin);
  uint8_t* sm = b.data() + 4;
  int scale[8], min[8], q[256];
  for (int k = 0; k < 8; ++k) {
    scale[k] = rng.uniform(0, 63);
    min[k] = rng.uniform(0, 63);
    if (k < 4) {
      sm[k] |= uint8_t(scale[k]);
      sm[k + 4] |= uint8_t(min[k]);
    } else {
      sm[k + 4] = uint8_t((scale[k] & 15) | ((min[k] & 15) << 4));
      sm[k - 4] |= uint8_t((scale[k] >> 4) << 6);
      sm[k] |= uint8_t((min[k] >> 4) << 6);
    }
  }
  uint8_t* qh = b.data() + 16;
  uint8_t* qs = qh + qh_bytes;
  for (int e = 0; e < 256; ++e) {
    const int k = e / 32, l = e % 32;
    q[e] = rng.uniform(0, five_bit ? 31 : 15);
    qs[32 * (k / 2) + l] |= uint8_t((q[e] & 15) << (4 * (k % 2)));
    if (five_bit) qh[l] |= uint8_t((q[e] >> 4) << k);
  }
  const std::vector<float> y = dequant(five_bit ? GGMLType::Q5_K : GGMLType::Q4_K, b);
  for (int e = 0; e < 256; ++e) EXPECT_EQ(y[e], d * scale[e / 32] * q[e] - dmin * min[e / 32]) << e;
}

TEST(GgmlBlocks, Q4_KHandBuilt) { check_q45_k(false); }
TEST(GgmlBlocks, Q5_KHandBuilt) { check_q45_k(true); }

TEST(GgmlBlocks, Q6_KHandBuilt) {
  Rng rng;
  std::vector<uint8_t> b(210, 0);  // ql[128], qh[64], scales[16] (int8), d
  const float d = 0.125f;
  put_f16(b, 208, d);
  int scale[16], q[256];
  for (int i = 0; i < 16; ++i) {
    scale[i] = rng.uniform(-128, 127);
    b[192 + i] = uint8_t(int8_t(scale[i]));
  }
  // Element 128h + 32t + l: low 4 bits in nibble t / 2 of ql[64h + 32*(t%2) + l], high 2 bits in
  // bits 2t of qh[32h + l], scale 8h + 2t + l / 16.
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, t = (e % 128) / 32, l = e % 32;
    q[e] = rng.uniform(0, 63);
    b[64 * h + 32 * (t % 2) + l] |= uint8_t((q[e] & 15) << (4 * (t / 2)));
    b[128 + 32 * h + l] |= uint8_t((q[e] >> 4) << (2 * t));
  }
  const std::vector<float> y = dequant(GGMLType::Q6_K, b);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, t = (e % 128) / 32, l = e % 32;
    EXPECT_EQ(y[e], d * scale[8 * h + 2 * t + l / 16] * (q[e] - 32)) << e;
  }
}

// ---- against llama.cpp ---------------------------------------------------------------------------

struct ReferenceRecord {
  uint32_t type;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

std::vector<ReferenceRecord> read_reference(const std::string& path) {
  const std::vector<uint8_t> file = testing::read_bytes(path);
  size_t pos = 0;
  auto u32 = [&] {
    uint32_t v = 0;
    if (pos + 4 <= file.size()) std::memcpy(&v, file.data() + pos, 4);
    pos += 4;
    return v;
  };
  std::vector<ReferenceRecord> out;
  if (file.size() < 12 || std::memcmp(file.data(), "QFDQ", 4) != 0) return out;
  pos = 4;
  if (u32() != 1) return out;
  const uint32_t n = u32();
  for (uint32_t i = 0; i < n && pos < file.size(); ++i) {
    ReferenceRecord r;
    r.type = u32();
    const uint32_t elems = u32(), bytes = u32();
    if (pos + bytes + 4ull * elems > file.size()) break;
    r.bytes.assign(file.begin() + pos, file.begin() + pos + bytes);
    pos += bytes;
    r.values.resize(elems);
    std::memcpy(r.values.data(), file.data() + pos, 4ull * elems);
    pos += 4ull * elems;
    out.push_back(std::move(r));
  }
  return out;
}

TEST(GgmlBlocks, MatchesLlamaCppDequantization) {
  const auto records = read_reference(QF_TEST_DATA_DIR "/io/ggml_dequant_reference.bin");
  // Every type llama.cpp can dequantize that qforge reads (ggml has no dequantizer for Q8_1).
  ASSERT_EQ(records.size(), 13u) << "missing or malformed tests/data/io/ggml_dequant_reference.bin";
  for (const ReferenceRecord& r : records) {
    const gguf::TypeTraits* tt = gguf::find_type_traits(r.type);
    ASSERT_NE(tt, nullptr) << r.type;
    SCOPED_TRACE(tt->name);
    ASSERT_EQ(r.bytes.size(), r.values.size() / tt->block_size * tt->block_bytes);
    std::vector<float> y(r.values.size());
    gguf::dequantize_row(tt->type, r.bytes.data(), y.data(), int64_t(y.size()));
    // Equal up to float rounding: llama.cpp may fuse x*d + m into one FMA where qforge rounds
    // twice, a difference of an ulp or so of the block's largest term. A wrong bit position or
    // scale would be off by whole quantization steps.
    for (size_t blk = 0; blk < y.size(); blk += tt->block_size) {
      float magnitude = 0;
      for (int64_t i = 0; i < tt->block_size; ++i) magnitude = std::max(magnitude, std::fabs(r.values[blk + i]));
      for (int64_t i = 0; i < tt->block_size; ++i)
        EXPECT_NEAR(y[blk + i], r.values[blk + i], 4e-7f * magnitude) << "element " << blk + i;
    }
  }
}

// ---- File::to_f32 over many rows, in parallel ------------------------------------------------

TEST(GgmlBlocks, ToF32DequantizesEveryRowInPlace) {
  // 37 rows of two Q4_K super-blocks each, random bytes (valid for every field except the F16
  // scales, which are set to finite values).
  constexpr int rows = 37, row_len = 512;
  Rng rng;
  std::vector<uint8_t> data(size_t(rows) * 2 * 144);
  for (auto& x : data) x = uint8_t(rng.uniform(0, 255));
  for (size_t blk = 0; blk < data.size(); blk += 144) {
    put_f16(data, blk, 0.5f + float(rng.uniform(0, 7)) / 8);
    put_f16(data, blk + 2, 0.25f);
  }
  testing::GgufBuilder b;
  b.add_tensor("w", {row_len, rows}, uint32_t(GGMLType::Q4_K), data);
  const std::vector<uint8_t> bytes = b.build();
  auto f = gguf::File::parse_bytes(bytes.data(), bytes.size(), "q4k.gguf");
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    const Tensor t = f->to_f32(*f->find("w"));
    ASSERT_EQ(t.shape(), (Shape{rows, row_len}));
    EXPECT_TRUE(t.owns_data());
    std::vector<float> row(row_len);
    for (int r = 0; r < rows; ++r) {
      gguf::dequantize_row(GGMLType::Q4_K, data.data() + size_t(r) * 2 * 144, row.data(), row_len);
      ASSERT_EQ(0, std::memcmp(row.data(), t.data<float>() + size_t(r) * row_len, row_len * 4)) << "row " << r;
    }
  }
  set_num_threads(0);
}

TEST(GgmlBlocks, RowLengthMustBeWholeBlocks) {
  std::vector<uint8_t> b(18);
  float y[48];
  EXPECT_ERROR(gguf::dequantize_row(GGMLType::Q4_0, b.data(), y, 48), "Q4_0", "48", "block size 32");
}

}  // namespace
}  // namespace qf
