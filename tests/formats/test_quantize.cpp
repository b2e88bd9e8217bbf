// quantize / dequantize: hand-computed codes, scales and zero points on small matrices (ties
// included), the scale-storage rules (rounded up, two-level with tensor_scale), the error bound
// |x - x'| <= s'/2 for ints on random matrices of every width, granularity and scale type, and
// the errors a caller can provoke.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "float_reference.h"
#include "formats/bf16.h"
#include "formats/fp8.h"
#include "formats/fpx.h"
#include "formats/quantize.h"

namespace qf {
namespace {

std::vector<float> dequantized(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize(q, out.data());
  return out;
}

std::vector<int> signed_codes(const QuantizedMatrix& q) {
  std::vector<int> v;
  for (uint8_t c : q.codes) v.push_back(sign_extend(c, q.format.element.int_bits));
  return v;
}

TEST(Quantize, SignExtend) {
  EXPECT_EQ(sign_extend(0x7, 4), 7);
  EXPECT_EQ(sign_extend(0x8, 4), -8);
  EXPECT_EQ(sign_extend(0xF, 4), -1);
  EXPECT_EQ(sign_extend(0x80, 8), -128);
  EXPECT_EQ(sign_extend(0x2, 2), -2);
  EXPECT_EQ(sign_extend(0x1F, 4), -1) << "bits above the field are ignored";
}

TEST(Quantize, SymmetricInt4PerChannelByHand) {
  // Row 0: absmax 7 -> s = 7/7 = 1, so the codes are rint(x): 3.5 -> 4 and 2.5 -> 2 (ties to
  // even), -0.5 -> -0 -> 0, -7 -> -7. Row 1: absmax 14 -> s = 2: 5 -> rint(2.5) = 2, -3 -> rint(-1.5)
  // = -2, 14 -> 7, 1 -> rint(0.5) = 0.
  const float x[] = {3.5f, 2.5f, -0.5f, -7.0f, 5.0f, -3.0f, 14.0f, 1.0f};
  const QuantizedMatrix q = quantize(x, 2, 4, Format::parse("int4:channel"));
  EXPECT_EQ(signed_codes(q), (std::vector<int>{4, 2, 0, -7, 2, -2, 7, 0}));
  EXPECT_EQ(q.scale_rows(), 2);
  EXPECT_EQ(q.scale_cols(), 1);
  ASSERT_EQ(q.scales.size(), 8u);  // two F32 scales
  EXPECT_EQ(q.scale_of(0, 3), 1.0f);
  EXPECT_EQ(q.scale_of(1, 0), 2.0f);
  EXPECT_EQ(q.codes[3], 0x9) << "-7 as a 4-bit two's complement field";
  EXPECT_EQ(dequantized(q), (std::vector<float>{4, 2, 0, -7, 4, -4, 14, 0}));
}

TEST(Quantize, SymmetricInt8PerTensorByHand) {
  // absmax 254 -> s = 254/127 = 2; codes rint(x/2), 3 -> rint(1.5) = 2, 5 -> rint(2.5) = 2.
  const float x[] = {254.0f, -254.0f, 3.0f, 5.0f, 0.0f, -1.0f};
  const QuantizedMatrix q = quantize(x, 3, 2, Format::parse("int8:tensor"));
  EXPECT_EQ(signed_codes(q), (std::vector<int>{127, -127, 2, 2, 0, 0}));
  EXPECT_EQ(q.scale_rows() * q.scale_cols(), 1);
  EXPECT_EQ(q.scale_of(2, 1), 2.0f);
}

TEST(Quantize, AsymmetricInt4PerGroupByHand) {
  // Group size 4, one row, two groups.
  // Group 0 {-1, 0, 2, 14}: lo = -1, hi = 14, s = 15/15 = 1, z = rint(1) = 1, q = rint(x) + 1.
  // Group 1 {2, 4, 6, 30}: the range is widened to include 0: lo = 0, hi = 30, s = 2, z = 0,
  // q = rint(x / 2) = {1, 2, 3, 15}.
  const float x[] = {-1.0f, 0.0f, 2.0f, 14.0f, 2.0f, 4.0f, 6.0f, 30.0f};
  const QuantizedMatrix q = quantize(x, 1, 8, Format::parse("int4:g4:asym"));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0, 1, 3, 15, 1, 2, 3, 15}));
  EXPECT_EQ(q.zeros, (std::vector<uint8_t>{1, 0}));
  EXPECT_EQ(q.scale_of(0, 0), 1.0f);
  EXPECT_EQ(q.scale_of(0, 7), 2.0f);
  EXPECT_EQ(q.code_value(0, 0), -1.0f);
  EXPECT_EQ(dequantized(q), std::vector<float>(x, x + 8));
}

TEST(Quantize, AsymmetricTiesAndZeroPoint) {
  // {-3, 0.5, 1.5, 12}, int4: s = 15/15 = 1, z = rint(3) = 3; x/s = 0.5 -> 0 and 1.5 -> 2 (even),
  // so q = {0, 3, 5, 15} and x' = {-3, 0, 2, 12}.
  const float x[] = {-3.0f, 0.5f, 1.5f, 12.0f};
  const QuantizedMatrix q = quantize(x, 1, 4, Format::parse("int4:tensor:asym"));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0, 3, 5, 15}));
  EXPECT_EQ(q.zeros, (std::vector<uint8_t>{3}));
  EXPECT_EQ(dequantized(q), (std::vector<float>{-3, 0, 2, 12}));
}

TEST(Quantize, GroupLayoutIsRowMajor) {
  // 2 rows x 8 cols, g4 -> scales [2][2]; block (r, g) has absmax 7 * (1 + 2r + g), so s = 1 + 2r + g.
  std::vector<float> x(16);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 8; ++c) x[size_t(r * 8 + c)] = (c % 4 == 0 ? 7.0f : 1.0f) * float(1 + 2 * r + c / 4);
  const QuantizedMatrix q = quantize(x.data(), 2, 8, Format::parse("int4:g4"));
  ASSERT_EQ(q.scale_rows(), 2);
  ASSERT_EQ(q.scale_cols(), 2);
  for (int r = 0; r < 2; ++r)
    for (int g = 0; g < 2; ++g) {
      float stored;
      std::memcpy(&stored, &q.scales[size_t((r * 2 + g) * 4)], 4);
      EXPECT_EQ(stored, float(1 + 2 * r + g));
      EXPECT_EQ(q.scale_of(r, g * 4 + 3), stored);
    }
  EXPECT_EQ(dequantized(q), x);
}

TEST(Quantize, RaggedLastGroupByHand) {
  // 1 x 6 with g4: groups are columns 0..3 and 4..5 (the last one short), ceil(6/4) = 2 scales.
  // Group 0 {7, 1, -3.5, 0}: s = 7/7 = 1, codes rint(x) = {7, 1, -4 (tie to even), 0}.
  // Group 1 {2, -1}: s = 2/7 stored as F32 s' = 0.28571430 (rounded up from 2/7), so
  // -1 / s' = -3.4999999, not a tie: codes {7, -3}, x' = {7 s', -3 s'}.
  const float x[] = {7.0f, 1.0f, -3.5f, 0.0f, 2.0f, -1.0f};
  const QuantizedMatrix q = quantize(x, 1, 6, Format::parse("int4:g4"));
  ASSERT_EQ(q.scale_cols(), 2);
  ASSERT_EQ(q.scales.size(), 8u);
  EXPECT_EQ(signed_codes(q), (std::vector<int>{7, 1, -4, 0, 7, -3}));
  EXPECT_EQ(q.scale_of(0, 3), 1.0f);
  const float s1 = 2.0f / 7.0f;  // an F32 scale is stored as computed
  EXPECT_EQ(q.scale_of(0, 4), s1);
  EXPECT_EQ(q.scale_of(0, 5), s1);
  EXPECT_EQ(dequantized(q), (std::vector<float>{7, 1, -4, 0, 7 * s1, -3 * s1}));
}

TEST(Quantize, RaggedGroupsEqualQuantizingEachGroupAlone) {
  // SmolLM2's shape: 576 columns in groups of 128 -> 4 full groups and one of 64. Each group's
  // codes and scale must be exactly those of quantizing that group as its own 1-row matrix
  // with per-channel scales, asymmetric and with FP8 scales too.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t rows = 3, cols = 576, G = 128;
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = nd(rng);
  for (const char* text : {"int4:g128", "int3:g128:asym", "int4:g128:scale=fp8_e4m3"}) {
    const Format f = Format::parse(text);
    const QuantizedMatrix q = quantize(x.data(), rows, cols, f);
    ASSERT_EQ(q.scale_cols(), 5) << text;
    Format per_row = f;
    per_row.granularity = Granularity::channel;
    per_row.group_size = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < 5; ++g) {
        const int64_t c0 = g * G, width = std::min(G, cols - c0);
        EXPECT_EQ(width, g < 4 ? 128 : 64);
        const QuantizedMatrix alone = quantize(x.data() + r * cols + c0, 1, width, per_row);
        EXPECT_EQ(q.scale_of(r, c0), alone.scale_of(0, 0)) << text << " row " << r << " group " << g;
        for (int64_t c = 0; c < width; ++c) {
          ASSERT_EQ(q.codes[size_t(r * cols + c0 + c)], alone.codes[size_t(c)]) << text;
          ASSERT_EQ(q.code_value(r, c0 + c), alone.code_value(0, c)) << text;
        }
      }
  }
}

TEST(Quantize, Bf16ScaleIsRoundedUp) {
  // absmax 1 -> s = 1/7 = 0x3E124925 in F32; BF16 neighbours 0x3E12 (below) and 0x3E13 (above).
  // Round-to-nearest would pick 0x3E12 (< s, so 1/s' > 7 and 1 would clip); qforge stores 0x3E13.
  const float x[] = {1.0f, -0.5f, 0.25f, 0.0f};
  const QuantizedMatrix q = quantize(x, 1, 4, Format::parse("int4:tensor:scale=bf16"));
  const float s = 1.0f / 7.0f;
  ASSERT_EQ(q.scales.size(), 2u);
  const uint16_t stored = uint16_t(q.scales[0] | q.scales[1] << 8);
  EXPECT_EQ(bf16_encode(s), 0x3E12) << "the nearest BF16 is below s";
  EXPECT_EQ(stored, 0x3E13);
  EXPECT_GE(bf16_decode(stored), s);
  EXPECT_LT(bf16_decode(uint16_t(stored - 1)), s);
  const float sp = bf16_decode(stored);
  EXPECT_EQ(q.scale_of(0, 0), sp);
  const std::vector<float> y = dequantized(q);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[size_t(i)], float(sign_extend(q.codes[size_t(i)], 4)) * sp) << "x' = code * decode(stored scale), exactly";
    EXPECT_EQ(sign_extend(q.codes[size_t(i)], 4), int(std::rint(x[i] / sp)));
  }
}

TEST(Quantize, TwoLevelFp8Scales) {
  // Per-row int4 with FP8 E4M3 scales under one F32 tensor scale t (FireQ): the largest row scale
  // maps to 448, so t = max_s / 448 (up to a nudge), and each row stores s / t rounded up in E4M3.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int rows = 16, cols = 64;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) x[size_t(r * cols + c)] = u(rng) * std::ldexp(1.0f, -r);  // scales over 2^16
  const QuantizedMatrix q = quantize(x.data(), rows, cols, Format::parse("int4:channel:scale=fp8_e4m3:tensor_scale"));
  ASSERT_EQ(q.scales.size(), size_t(rows));
  float max_s = 0;
  for (int r = 0; r < rows; ++r) {
    float absmax = 0;
    for (int c = 0; c < cols; ++c) absmax = std::max(absmax, std::fabs(x[size_t(r * cols + c)]));
    max_s = std::max(max_s, absmax / 7.0f);
  }
  EXPECT_LE(max_s / q.tensor_scale, 448.0f);
  EXPECT_GT(max_s / q.tensor_scale, 447.99f);
  EXPECT_EQ(q.scales[0], kE4M3MaxCode) << "row 0 has the largest scale";
  const std::vector<float> y = dequantized(q);
  for (int r = 0; r < rows; ++r) {
    const float stored = fp8_e4m3_decode(q.scales[size_t(r)]);
    const float sp = stored * q.tensor_scale;
    EXPECT_EQ(q.scale_of(r, 0), sp);
    for (int c = 0; c < cols; ++c) {
      const size_t i = size_t(r * cols + c);
      EXPECT_EQ(y[i], float(sign_extend(q.codes[i], 4)) * sp);
    }
  }
}

TEST(Quantize, Fp8PerTokenByHand) {
  // Row absmax 896 -> s = 896/448 = 2; codes are fp8_e4m3(x / 2). Row 1 is all zeros: s' = 0.
  const float x[] = {896.0f, -3.0f, 1.0f, 600.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  const QuantizedMatrix q = quantize(x, 2, 4, Format::parse("fp8_e4m3:token"));
  EXPECT_EQ(q.scale_of(0, 0), 2.0f);
  EXPECT_EQ(q.scale_of(1, 0), 0.0f);
  for (int c = 0; c < 4; ++c) EXPECT_EQ(q.codes[size_t(c)], fp8_e4m3_encode(x[c] / 2.0f));
  const std::vector<float> y = dequantized(q);
  EXPECT_EQ(y[0], 896.0f);
  EXPECT_EQ(y[3], 2.0f * fp8_e4m3_decode(fp8_e4m3_encode(300.0f)));  // 288 * 2
  for (int c = 4; c < 8; ++c) EXPECT_EQ(y[size_t(c)], 0.0f);
}

TEST(Quantize, UnscaledFloatElements) {
  const float x[] = {1.0f, 100.0f, -1000.0f, 0.3f};
  const QuantizedMatrix q = quantize(x, 2, 2, Format::parse("fp6_e3m2"));
  EXPECT_TRUE(q.scales.empty());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.codes[size_t(i)], fpx_encode(x[i], kFp6E3M2));
  EXPECT_EQ(dequantized(q)[2], -28.0f) << "saturates to the largest FP6 e3m2";
}

TEST(Quantize, ZeroBlocksDequantizeToZero) {
  const float x[8] = {};
  for (const char* f : {"int4:g4", "int4:g4:asym", "int8:channel:scale=fp8_e4m3:tensor_scale", "fp8_e5m2:tensor"}) {
    const QuantizedMatrix q = quantize(x, 2, 4, Format::parse(f));
    EXPECT_EQ(dequantized(q), std::vector<float>(8, 0.0f)) << f;
  }
}

// Random matrices through every int width, symmetry, granularity and scale type: x' uses the
// stored scale exactly, and |x - x'| <= s'/2 (up to the F32 rounding of x/s' and q*s').
TEST(Quantize, IntErrorBoundedByHalfScale) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int rows = 6, cols = 128;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * (1.0f + float(i / cols)) + (i % 3 == 0 ? 0.5f : 0.0f);
  int checked = 0;
  for (int bits = 2; bits <= 8; ++bits)
    for (const char* gran : {"tensor", "channel", "token", "g32", "g64", "g128"})
      for (const char* sym : {"", ":asym"})
        for (const char* scale : {"", ":scale=bf16", ":scale=f16", ":scale=fp8_e4m3:tensor_scale",
                                  ":scale=fp8_e5m2:tensor_scale", ":scale=bf16:tensor_scale"}) {
          const std::string name = "int" + std::to_string(bits) + ":" + gran + sym + scale;
          if (std::string(gran) == "tensor" && std::string(scale).find("tensor_scale") != std::string::npos) continue;
          const QuantizedMatrix q = quantize(x.data(), rows, cols, Format::parse(name));
          const std::vector<float> y = dequantized(q);
          for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c) {
              const size_t i = size_t(r * cols + c);
              const float sp = q.scale_of(r, c);
              ASSERT_EQ(y[i], q.code_value(r, c) * sp) << name;
              ASSERT_LE(std::fabs(x[i] - y[i]), sp * 0.5f * (1 + 1e-5f)) << name << " at (" << r << ", " << c << ")";
              const float cv = q.code_value(r, c);
              if (q.format.asymmetric) {
                ASSERT_LT(q.codes[i], 1u << bits);
              } else {
                ASSERT_TRUE(cv >= -float(1 << (bits - 1)) && cv <= float((1 << (bits - 1)) - 1));
              }
            }
          ++checked;
        }
  EXPECT_GT(checked, 400);
}

TEST(Quantize, FloatElementErrorIsRelative) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(4 * 64);
  for (float& v : x) v = normal(rng);
  for (const char* f : {"fp8_e4m3:token", "fp8_e5m2:channel", "fp6_e3m2:channel", "fp6_e2m3:g32", "fp5_e2m2:g64",
                        "fp4_e2m1:g32:scale=fp8_e4m3:tensor_scale"}) {
    const QuantizedMatrix q = quantize(x.data(), 4, 64, Format::parse(f));
    const std::vector<float> y = dequantized(q);
    const ElementType e = q.format.element;
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 64; ++c) {
        const size_t i = size_t(r * 64 + c);
        const float sp = q.scale_of(r, c);
        // The element's code is the codec applied to x / s'; nothing saturates since s' >= absmax / max.
        ASSERT_EQ(q.codes[i], encode_float_element(e, x[i] / sp)) << f;
        ASSERT_LE(std::fabs(x[i] / sp), e.max_value() * (1 + 1e-6f)) << f;
      }
  }
}

TEST(Quantize, Errors) {
  const float x[6] = {1, 2, 3, 4, 5, 6};
  const auto message = [&](const char* format, int64_t rows, int64_t cols, const float* data) {
    try {
      quantize(data, rows, cols, Format::parse(format));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("bf16", 1, 6, x).find("stored as is"), std::string::npos);
  const float big[2] = {1e6f, 1.0f};
  EXPECT_NE(message("int8:tensor:scale=fp8_e4m3", 1, 2, big).find("exceeds the largest fp8_e4m3"), std::string::npos);
  const float bad[2] = {1.0f, NAN};
  EXPECT_NE(message("int8:tensor", 1, 2, bad).find("element (0, 1)"), std::string::npos);
}

}  // namespace
}  // namespace qf
