// lut formats (FireQ's INT -> FP8 lookup table, formats/quantize.h): the value of every code at
// every usable stored scale against an independent model of FP8 rounding (float_reference.h),
// the bound on the stored scale (no table entry saturates, and the bound is tight), the
// nearest-code rule on random and tie inputs, the two-level scales of quantize(), and the
// underflow without a tensor scale that FireQ adds the tensor scale for.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "float_reference.h"
#include "formats/quantize.h"

namespace qf {
namespace {

using test::OnOverflow;
using test::RefEncoder;
using test::RefFormat;
using test::Specials;

// Satfinite FP8, as cvt.rn.satfinite (and encode_float_element) rounds.
const RefEncoder& ref_for(ElementKind k) {
  static const RefEncoder e4m3({"e4m3", 4, 3, 7, Specials::e4m3fn}, OnOverflow::to_max);
  static const RefEncoder e5m2({"e5m2", 5, 2, 15, Specials::ieee}, OnOverflow::to_max);
  return k == ElementKind::fp8_e4m3 ? e4m3 : e5m2;
}

// The stored scale's code in the reference model (the codes of positive values ascend with them).
uint32_t ref_scale_code(const RefEncoder& ref, double sigma) { return *ref.encode(float(sigma)); }

// x' by the definition, computed from the reference rounding: round(q * sigma) * t, q * sigma
// formed in double (exact), the last product one F32 multiplication as the kernel's epilogue does.
float ref_value(const Format& f, int q, double sigma, float t) {
  const RefEncoder& ref = ref_for(f.scale_type.kind);
  const double exact = double(q) * sigma;
  EXPECT_EQ(double(float(exact)), exact) << "q * sigma must be exact in F32";
  const float entry = float(ref.format().value(*ref.encode(float(exact))));
  return f.tensor_scale ? entry * t : entry;
}

BlockScale block(const Format& f, double sigma, float t) {
  BlockScale b;
  b.code = ref_scale_code(ref_for(f.scale_type.kind), sigma);
  b.sigma = float(sigma);
  b.tensor_scale = f.tensor_scale ? t : 1.0f;
  b.scale = f.tensor_scale ? b.sigma * t : b.sigma;
  return b;
}

TEST(Lut, LargestStoredScaleKeepsEveryTableEntryInRange) {
  EXPECT_EQ(max_stored_scale(Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale:lut")), 56.0f);  // 448 / 8
  EXPECT_EQ(max_stored_scale(Format::parse("int4:g128:scale=fp8_e4m3:lut")), 56.0f);
  EXPECT_EQ(max_stored_scale(Format::parse("int4:g128:scale=fp8_e5m2:lut")), 7168.0f);  // 57344 / 8
  EXPECT_EQ(max_stored_scale(Format::parse("int8:channel:scale=fp8_e4m3:lut")), 3.5f);  // 448 / 128
  EXPECT_EQ(max_stored_scale(Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale")), 448.0f) << "not lut: unchanged";
}

// Every code of every int width's table, at every positive finite stored scale up to the bound,
// against the reference rounding; and the next scale up would saturate (the bound is tight).
TEST(Lut, EveryCodeAtEveryUsableScaleMatchesTheReference) {
  for (const char* name : {"int4:g128:scale=fp8_e4m3:tensor_scale:lut", "int4:g128:scale=fp8_e4m3:lut",
                           "int4:g128:scale=fp8_e5m2:tensor_scale:lut", "int4:channel:scale=fp8_e5m2:lut",
                           "int2:g32:scale=fp8_e4m3:lut", "int3:g32:scale=fp8_e5m2:tensor_scale:lut",
                           "int8:g32:scale=fp8_e4m3:tensor_scale:lut"}) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const RefEncoder& ref = ref_for(f.scale_type.kind);
    const int bits = f.element.int_bits;
    const double bound = max_stored_scale(f);
    int scales = 0, rounded = 0;
    for (double sigma : ref.finite_values()) {
      if (sigma <= 0) continue;
      if (sigma > bound) {
        // The first scale past the bound: the most negative code's entry leaves the FP8 range.
        EXPECT_GT(std::ldexp(sigma, bits - 1), ref.max_value()) << "sigma " << sigma;
        break;
      }
      ++scales;
      for (float t : {1.0f, 3.0517578e-05f, 0.0123f}) {
        const BlockScale b = block(f, sigma, t);
        ASSERT_EQ(decode_float_element(f.scale_type, b.code), b.sigma);
        for (uint32_t code = 0; code < (1u << bits); ++code) {
          const int q = sign_extend(code, bits);
          const double exact = double(q) * sigma;
          ASSERT_LE(std::fabs(exact), ref.max_value()) << "entry " << q << " * " << sigma << " would saturate";
          ASSERT_EQ(lut_entry(f, code, b.sigma), *ref.encode(float(exact))) << q << " * " << sigma;
          const float want = ref_value(f, q, sigma, t);
          ASSERT_EQ(dequantized_element(f, code, b), want) << q << " * " << sigma << " * " << t;
          rounded += t == 1.0f && ref.format().value(*ref.encode(float(exact))) != exact;
        }
      }
    }
    EXPECT_GT(scales, 40) << "every positive finite scale value up to " << bound;
    // The table really rounds (else lut would be the ordinary q * sigma and the test proves little).
    if (bits >= 3) {
      EXPECT_GT(rounded, 0);
    }
  }
}

// The code quantize_element picks is the one whose x' is nearest; ties keep the rint code; and
// on random inputs the FP8 rounding does make a neighbour of the rint code nearer sometimes.
TEST(Lut, CodeIsTheNearestValueOfTheTable) {
  std::mt19937 rng(11);
  for (const char* name : {"int4:g128:scale=fp8_e4m3:tensor_scale:lut", "int4:g128:scale=fp8_e4m3:lut",
                           "int4:g128:scale=fp8_e5m2:tensor_scale:lut", "int3:g16:scale=fp8_e5m2:lut",
                           "int8:g16:scale=fp8_e4m3:tensor_scale:lut"}) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const RefEncoder& ref = ref_for(f.scale_type.kind);
    const int bits = f.element.int_bits, qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
    std::vector<double> scales;
    for (double s : ref.finite_values())
      if (s > 0 && s <= max_stored_scale(f)) scales.push_back(s);
    std::uniform_int_distribution<size_t> pick(0, scales.size() - 1);
    std::uniform_real_distribution<float> unit(-1.1f, 1.1f), log_t(-12.0f, 4.0f);
    int moved = 0, ties = 0;
    for (int trial = 0; trial < 4000; ++trial) {
      const double sigma = scales[pick(rng)];
      const float t = std::exp2(log_t(rng));
      const BlockScale b = block(f, sigma, t);
      std::vector<float> values;
      for (int q = qmin; q <= qmax; ++q) values.push_back(ref_value(f, q, sigma, t));
      std::vector<float> inputs;
      for (int k = 0; k < 8; ++k) inputs.push_back(unit(rng) * float(qmax + 1) * b.scale);  // some past the ends
      // Midpoints between neighbouring values (ties), where representable.
      const int q = qmin + int(rng() % uint32_t(qmax - qmin));
      const double mid = (double(values[size_t(q - qmin)]) + double(values[size_t(q - qmin + 1)])) / 2;
      if (double(float(mid)) == mid) inputs.push_back(float(mid));
      for (float x : inputs) {
        const uint32_t code = quantize_element(f, x, b);
        ASSERT_LT(code, 1u << bits);
        const int got = sign_extend(code, bits);
        const double err = std::fabs(double(x) - double(values[size_t(got - qmin)]));
        for (int c = qmin; c <= qmax; ++c)
          ASSERT_LE(err, std::fabs(double(x) - double(values[size_t(c - qmin)])))
              << "x " << x << " sigma " << sigma << " t " << t << ": code " << got << " but " << c << " is nearer";
        const int start = int(std::clamp(std::rint(x / b.scale), float(qmin), float(qmax)));
        const double start_err = std::fabs(double(x) - double(values[size_t(start - qmin)]));
        if (start_err == err) ASSERT_EQ(got, start) << "a tie keeps the rint code; x " << x;
        else ++moved;
        for (int c = qmin; c <= qmax; ++c)  // a real tie: another value exactly as near
          if (values[size_t(c - qmin)] != values[size_t(got - qmin)] &&
              std::fabs(double(x) - double(values[size_t(c - qmin)])) == err) {
            ++ties;
            break;
          }
        EXPECT_EQ(dequantized_element(f, code, b), values[size_t(got - qmin)]);
      }
    }
    if (bits >= 3) {
      EXPECT_GT(moved, 0) << "the neighbour search never mattered";
    }
    EXPECT_GT(ties, 0);
  }
}

std::vector<float> dequantized(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize(q, out.data());
  return out;
}

// quantize() end to end: the tensor scale maps the largest raw scale onto 56 (not 448), each
// group stores s / t rounded up, every element's code is the nearest table value, and
// dequantize (and value()) give exactly round(q * sigma) * t, which is not code * scale_of.
TEST(Lut, QuantizeUsesTheTableAndTheBound) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int rows = 12, cols = 300;  // groups of 128, 128, 44
  std::vector<float> x(size_t(rows * cols));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) x[size_t(r * cols + c)] = nd(rng) * 0.02f * std::ldexp(1.0f, -(r % 6));
  for (const char* name : {"int4:g128:scale=fp8_e4m3:tensor_scale:lut", "int4:g128:scale=fp8_e5m2:tensor_scale:lut",
                           "int4:channel:scale=fp8_e4m3:tensor_scale:lut"}) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const QuantizedMatrix q = quantize(x.data(), rows, cols, f);
    const float bound = max_stored_scale(f);
    float max_s = 0;
    for (int r = 0; r < rows; ++r)
      for (int64_t sc = 0; sc < q.scale_cols(); ++sc) {
        float absmax = 0;
        const int c0 = f.granularity == Granularity::group ? int(sc) * 128 : 0;
        const int c1 = f.granularity == Granularity::group ? std::min(c0 + 128, cols) : cols;
        for (int c = c0; c < c1; ++c) absmax = std::max(absmax, std::fabs(x[size_t(r * cols + c)]));
        const float s = absmax / 7.0f;
        max_s = std::max(max_s, s);
        const BlockScale b = q.block_of(r, c0);
        EXPECT_LE(b.sigma, bound);
        EXPECT_GE(b.sigma, s / q.tensor_scale) << "stored rounded up";
        EXPECT_EQ(b.tensor_scale, q.tensor_scale);
        EXPECT_EQ(b.scale, b.sigma * q.tensor_scale);
        EXPECT_EQ(q.scale_of(r, c0), b.scale);
      }
    EXPECT_LE(max_s / q.tensor_scale, bound);
    EXPECT_GT(max_s / q.tensor_scale, bound * 0.99999f) << "t maps max(s) onto the bound";
    const std::vector<float> y = dequantized(q);
    int differs = 0;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const size_t i = size_t(r * cols + c);
        const BlockScale b = q.block_of(r, c);
        const int code = sign_extend(q.codes[i], 4);
        ASSERT_EQ(y[i], ref_value(f, code, b.sigma, q.tensor_scale)) << r << ", " << c;
        ASSERT_EQ(q.value(r, c), y[i]);
        const double err = std::fabs(double(x[i]) - double(y[i]));
        for (int other = -8; other <= 7; ++other)
          ASSERT_LE(err, std::fabs(double(x[i]) - double(ref_value(f, other, b.sigma, q.tensor_scale)))) << r << ", " << c;
        differs += y[i] != q.code_value(r, c) * q.scale_of(r, c);
      }
    EXPECT_GT(differs, 0) << "lut values are not code * scale";
  }
}

// Without a tensor scale a group's stored scale is its raw scale rounded up in FP8 itself: small
// weights' scales fall into E4M3's subnormals (min 2^-9), coarse and rounded up a lot, and the
// error grows (FireQ's reason for t); large ones past 56 are an error.
TEST(Lut, WithoutTensorScaleSmallScalesUnderflowAndLargeOnesThrow) {
  const Format with_t = Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale:lut");
  const Format without_t = Format::parse("int4:g128:scale=fp8_e4m3:lut");
  std::mt19937 rng(3);
  // Raw scales around 2e-4, ten times below E4M3's smallest subnormal 2^-9: stored as 2^-9.
  std::normal_distribution<float> nd(0.0f, 0.0005f);
  std::vector<float> x(size_t(8 * 256));
  for (float& v : x) v = nd(rng);
  const auto mse = [&](const Format& f) {
    const std::vector<float> y = dequantized(quantize(x.data(), 8, 256, f));
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    return s / double(x.size());
  };
  const double e_with = mse(with_t), e_without = mse(without_t);
  std::printf("  weight MSE with / without the tensor scale: %.3g / %.3g\n", e_with, e_without);
  EXPECT_LT(10 * e_with, e_without);

  std::vector<float> big(128, 1.0f);
  big[5] = 7 * 56.0f;  // s = 56: fits exactly
  EXPECT_NO_THROW(quantize(big.data(), 1, 128, without_t));
  for (float s : {57.0f, 1000.0f}) {  // past 56 only, and past 448 too: both named by the lut bound
    big[5] = 7 * s;
    try {
      quantize(big.data(), 1, 128, without_t);
      ADD_FAILURE() << "a scale past 56 must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("exceeds 56"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("tensor_scale"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(quantize(big.data(), 1, 128, with_t));
  }
  big[5] = 7 * 57.0f;
  EXPECT_NO_THROW(quantize(big.data(), 1, 128, Format::parse("int4:g128:scale=fp8_e4m3"))) << "448 bounds non-lut";
  // saturate clamps to the bound, not to 448.
  const BlockScale sat = block_scale(without_t, -1000.0f, 1000.0f, 1.0f, /*saturate=*/true);
  EXPECT_EQ(sat.sigma, 56.0f);
  EXPECT_EQ(sat.scale, 56.0f);
}

TEST(Lut, ZeroBlocksAndMisuse) {
  const Format f = Format::parse("int4:g4:scale=fp8_e4m3:tensor_scale:lut");
  const float x[8] = {0, 0, 0, 0, 1.0f, -2.0f, 0.5f, 3.0f};
  const QuantizedMatrix q = quantize(x, 1, 8, f);
  EXPECT_EQ(q.block_of(0, 0).sigma, 0.0f);
  for (int c = 0; c < 4; ++c) EXPECT_EQ(q.codes[size_t(c)], 0);
  const std::vector<float> y = dequantized(q);
  for (int c = 0; c < 4; ++c) EXPECT_EQ(y[size_t(c)], 0.0f);
  // t maps s = 3/7 onto sigma = 56; the absmax's entry 7 * 56 = 392 is not an E4M3 (384, 416
  // are): x' = 384 t, 2 % low. The table's own rounding, FireQ's arithmetic.
  EXPECT_EQ(q.block_of(0, 4).sigma, 56.0f);
  EXPECT_EQ(y[7], 384.0f * q.tensor_scale);
  EXPECT_THROW(quantize_element(f, 1.0f, 0.5f, 0), Error) << "a lut code needs sigma and t, not s' alone";
  EXPECT_THROW(lut_entry(Format::parse("int4:g4:scale=fp8_e4m3"), 1, 1.0f), Error);
}

}  // namespace
}  // namespace qf
