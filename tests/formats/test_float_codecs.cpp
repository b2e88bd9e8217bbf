// Every float codec (BF16, F16, FP8 E4M3 / E5M2 in both saturation modes, every FPx eXmY)
// against the independent model in float_reference.h: every code's value, encode(decode(c)) == c,
// rounding at every midpoint and beside it, a strided walk over all F32 bit patterns, overflow,
// underflow and NaN rules. Then a few hand-written cases that read as the spec.
#include <gtest/gtest.h>

#include <functional>

#include "float_reference.h"
#include "formats/bf16.h"
#include "formats/fp16.h"
#include "formats/fp8.h"
#include "formats/fpx.h"

namespace qf {
namespace {

using test::bits_of;
using test::float_of;
using test::OnOverflow;
using test::RefEncoder;
using test::RefFormat;
using test::Specials;

struct Codec {
  std::function<uint32_t(float)> encode;
  std::function<float(uint32_t)> decode;
  // The code every NaN input must produce (the codecs' NaN rules are in their headers).
  std::function<uint32_t(float)> nan_code;
};

// Reports at most a few mismatches per check, so a broken codec does not flood the log.
constexpr int kMaxReported = 8;

void check_codec(const RefEncoder& ref, const Codec& codec) {
  const RefFormat& f = ref.format();
  SCOPED_TRACE(f.name);
  int reported = 0;
  // Every code decodes to the value the definition gives (sign of zero included), and encodes
  // back to itself.
  for (uint32_t c = 0; c < f.codes(); ++c) {
    const float got = codec.decode(c);
    if (f.is_nan(c)) {
      EXPECT_TRUE(std::isnan(got)) << "code 0x" << std::hex << c;
      continue;
    }
    const float want = float(f.value(c));
    ASSERT_EQ(double(want), f.value(c)) << "every value of a narrow format is an F32";
    if (bits_of(got) != bits_of(want) && reported++ < kMaxReported)
      ADD_FAILURE() << "decode(0x" << std::hex << c << ") = " << got << ", want " << want;
    // Infinities come back as themselves or, when the encoder saturates, as +-max.
    const uint32_t back = f.is_inf(c) ? *ref.encode(got) : c;
    if (codec.encode(got) != back && reported++ < kMaxReported)
      ADD_FAILURE() << "encode(decode(0x" << std::hex << c << ")) = 0x" << codec.encode(got) << ", want 0x" << back;
  }
  // Rounding: midpoints (ties to even), their neighbours, overflow boundary, a walk over F32.
  std::vector<float> inputs = ref.critical_inputs();
  const std::vector<float> sweep = test::sweep_inputs();
  inputs.insert(inputs.end(), sweep.begin(), sweep.end());
  int64_t mismatches = 0;
  for (float x : inputs) {
    const uint32_t want = *ref.encode(x), got = codec.encode(x);
    if (got != want) {
      ++mismatches;
      if (reported++ < kMaxReported)
        ADD_FAILURE() << "encode(" << x << " = 0x" << std::hex << bits_of(x) << ") = 0x" << got << ", want 0x" << want;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << inputs.size() << " inputs";
  for (float x : test::nan_inputs()) {
    const uint32_t got = codec.encode(x);
    EXPECT_EQ(got, codec.nan_code(x)) << "NaN 0x" << std::hex << bits_of(x);
    if (f.specials != Specials::all_finite) {
      EXPECT_TRUE(f.is_nan(got)) << "NaN 0x" << std::hex << bits_of(x);
    }
  }
}

TEST(FloatCodecs, Bf16) {
  check_codec(RefEncoder({"bf16", 8, 7, 127, Specials::ieee}, OnOverflow::to_inf),
              {[](float x) { return uint32_t(bf16_encode(x)); }, [](uint32_t c) { return bf16_decode(uint16_t(c)); },
               [](float) { return uint32_t(kBf16CanonicalNaN); }});
}

TEST(FloatCodecs, F16) {
  check_codec(RefEncoder({"f16", 5, 10, 15, Specials::ieee}, OnOverflow::to_inf),
              {[](float x) { return uint32_t(f16_encode(x)); }, [](uint32_t c) { return f16_decode(uint16_t(c)); },
               [](float) { return uint32_t(kF16CanonicalNaN); }});
}

// Every NaN, whatever its sign and payload, becomes the positive all-ones code 0x7F.
uint32_t e4m3_nan(float) { return 0x7Fu; }
uint32_t e5m2_nan(float) { return 0x7Fu; }

TEST(FloatCodecs, Fp8E4M3) {
  const RefFormat e4m3{"fp8_e4m3", 4, 3, 7, Specials::e4m3fn};
  check_codec(RefEncoder(e4m3, OnOverflow::to_max),
              {[](float x) { return uint32_t(fp8_e4m3_encode(x, Fp8Saturation::satfinite)); },
               [](uint32_t c) { return fp8_e4m3_decode(uint8_t(c)); }, e4m3_nan});
  check_codec(RefEncoder(e4m3, OnOverflow::to_nan),
              {[](float x) { return uint32_t(fp8_e4m3_encode(x, Fp8Saturation::nosat)); },
               [](uint32_t c) { return fp8_e4m3_decode(uint8_t(c)); }, e4m3_nan});
}

TEST(FloatCodecs, Fp8E5M2) {
  const RefFormat e5m2{"fp8_e5m2", 5, 2, 15, Specials::ieee};
  check_codec(RefEncoder(e5m2, OnOverflow::to_max),
              {[](float x) { return uint32_t(fp8_e5m2_encode(x, Fp8Saturation::satfinite)); },
               [](uint32_t c) { return fp8_e5m2_decode(uint8_t(c)); }, e5m2_nan});
  check_codec(RefEncoder(e5m2, OnOverflow::to_inf),
              {[](float x) { return uint32_t(fp8_e5m2_encode(x, Fp8Saturation::nosat)); },
               [](uint32_t c) { return fp8_e5m2_decode(uint8_t(c)); }, e5m2_nan});
}

TEST(FloatCodecs, EveryFpx) {
  int formats = 0;
  for (int e = 1; e <= 7; ++e)
    for (int m = 0; e + m <= 7; ++m) {
      const FpxType t{e, m};
      ASSERT_TRUE(FpxType::valid(e, m));
      const RefFormat ref{"fp" + std::to_string(1 + e + m) + "_e" + std::to_string(e) + "m" + std::to_string(m), e, m,
                          (1 << (e - 1)) - 1, Specials::all_finite};
      const RefEncoder encoder(ref, OnOverflow::to_max);
      EXPECT_EQ(double(t.max_value()), encoder.max_value()) << ref.name;
      check_codec(encoder, {[t](float x) { return uint32_t(fpx_encode(x, t)); },
                            [t](uint32_t c) { return fpx_decode(uint8_t(c), t); },
                            [t](float) { return t.max_magnitude_code(); }});
      ++formats;
    }
  EXPECT_EQ(formats, 28);  // sum over e = 1..7 of (8 - e) mantissa widths
  EXPECT_FALSE(FpxType::valid(0, 3));
  EXPECT_FALSE(FpxType::valid(4, 4));
  EXPECT_FALSE(FpxType::valid(3, -1));
}

// ---- The spec in numbers ------------------------------------------------------------------------

TEST(FloatCodecs, Bf16Cases) {
  EXPECT_EQ(bf16_encode(1.0f), 0x3F80);
  EXPECT_EQ(bf16_encode(1.0f + 0x1p-8f), 0x3F80);        // halfway to 1 + 2^-7: tie to even (down)
  EXPECT_EQ(bf16_encode(1.0f + 3 * 0x1p-8f), 0x3F82);    // halfway between 0x3F81 and 0x3F82: up to even
  EXPECT_EQ(bf16_encode(std::nextafter(1.0f + 0x1p-8f, 2.0f)), 0x3F81);
  EXPECT_EQ(bf16_encode(0x1.FFp127f), 0x7F80);           // rounds past the largest finite value -> +inf
  EXPECT_EQ(bf16_encode(-INFINITY), 0xFF80);
  EXPECT_EQ(bf16_encode(-0.0f), 0x8000);
  EXPECT_EQ(bf16_encode(0x1p-133f), 0x0001);             // smallest BF16 subnormal
  EXPECT_EQ(bf16_encode(-std::numeric_limits<float>::quiet_NaN()), 0x7FFF);
  EXPECT_EQ(bf16_decode(0x0001), 0x1p-133f);
}

TEST(FloatCodecs, F16Cases) {
  EXPECT_EQ(f16_decode(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_encode(65519.0f), 0x7BFF);
  EXPECT_EQ(f16_encode(65520.0f), 0x7C00);  // halfway to 65536; 0x7BFF is odd, so the tie overflows
  EXPECT_EQ(f16_encode(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_encode(0x1p-25f), 0x0000);  // half of it: tie to even (0)
  EXPECT_EQ(f16_encode(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(f16_encode(3 * 0x1p-25f), 0x0002);  // 1.5 subnormal ulps: tie, up to even
  EXPECT_EQ(f16_encode(-0x1p-30f), 0x8000);     // underflow keeps the sign
  EXPECT_EQ(f16_encode(0x1p-14f - 0x1p-25f), 0x0400);  // carry from the top subnormal into the smallest normal
  EXPECT_EQ(f16_decode(0x03FF), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_encode(std::numeric_limits<float>::quiet_NaN()), 0x7FFF);
  EXPECT_EQ(bits_of(f16_decode(0xFE01)), 0xFFC02000u);  // NaN keeps sign and payload
  EXPECT_EQ(bits_of(f16_decode(0x7C01)), 0x7FC02000u);  // a signalling NaN comes out quiet
}

TEST(FloatCodecs, E4M3Cases) {
  EXPECT_EQ(fp8_e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_decode(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(fp8_e4m3_decode(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_TRUE(std::isnan(fp8_e4m3_decode(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_decode(0xFF)));
  EXPECT_EQ(fp8_e4m3_decode(0x78), 256.0f);   // exponent field 15 is an ordinary binade: no inf
  for (Fp8Saturation mode : {Fp8Saturation::satfinite, Fp8Saturation::nosat}) {
    EXPECT_EQ(fp8_e4m3_encode(464.0f, mode), 0x7E);  // halfway to the missing 480: even (448) wins
    EXPECT_EQ(fp8_e4m3_encode(0x1p-10f, mode), 0x00);
    EXPECT_EQ(fp8_e4m3_encode(3 * 0x1p-10f, mode), 0x02);
    EXPECT_EQ(fp8_e4m3_encode(-1e-30f, mode), 0x80);
    EXPECT_EQ(fp8_e4m3_encode(300.0f, mode), 0x79);  // 288 (0x79) and 320 (0x7A): 300 is nearer 288
  }
  EXPECT_EQ(fp8_e4m3_encode(std::nextafter(464.0f, 1000.0f), Fp8Saturation::satfinite), 0x7E);
  EXPECT_EQ(fp8_e4m3_encode(std::nextafter(464.0f, 1000.0f), Fp8Saturation::nosat), 0x7F);
  EXPECT_EQ(fp8_e4m3_encode(INFINITY, Fp8Saturation::satfinite), 0x7E);
  EXPECT_EQ(fp8_e4m3_encode(-INFINITY, Fp8Saturation::satfinite), 0xFE);
  EXPECT_EQ(fp8_e4m3_encode(INFINITY, Fp8Saturation::nosat), 0x7F);
  EXPECT_EQ(fp8_e4m3_encode(-1e9f, Fp8Saturation::nosat), 0xFF);
}

TEST(FloatCodecs, E5M2Cases) {
  EXPECT_EQ(fp8_e5m2_decode(0x7B), 57344.0f);
  EXPECT_EQ(fp8_e5m2_decode(0x04), 0x1p-14f);
  EXPECT_EQ(fp8_e5m2_decode(0x01), 0x1p-16f);
  EXPECT_EQ(fp8_e5m2_decode(0x7C), INFINITY);
  EXPECT_EQ(fp8_e5m2_decode(0xFC), -INFINITY);
  EXPECT_EQ(fp8_e5m2_encode(61440.0f, Fp8Saturation::nosat), 0x7C);  // tie with odd 0x7B: overflows
  EXPECT_EQ(fp8_e5m2_encode(61440.0f, Fp8Saturation::satfinite), 0x7B);
  EXPECT_EQ(fp8_e5m2_encode(std::nextafter(61440.0f, 0.0f), Fp8Saturation::nosat), 0x7B);
  EXPECT_EQ(fp8_e5m2_encode(-INFINITY, Fp8Saturation::nosat), 0xFC);
  EXPECT_EQ(fp8_e5m2_encode(-INFINITY, Fp8Saturation::satfinite), 0xFB);
  EXPECT_EQ(fp8_e5m2_encode(-std::numeric_limits<float>::quiet_NaN()), 0x7F);
  EXPECT_EQ(fp8_e4m3_encode(-std::numeric_limits<float>::signaling_NaN(), Fp8Saturation::nosat), 0x7F);
}

TEST(FloatCodecs, FpxCases) {
  EXPECT_EQ(kFp6E3M2.max_value(), 28.0f);
  EXPECT_EQ(kFp6E2M3.max_value(), 7.5f);
  EXPECT_EQ(kFp5E2M2.max_value(), 7.0f);
  EXPECT_EQ(kFp4E2M1.max_value(), 6.0f);
  EXPECT_EQ(kFp6E3M2.bias(), 3);
  EXPECT_EQ(kFp6E2M3.bias(), 1);
  const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint8_t c = 0; c < 8; ++c) {
    EXPECT_EQ(fpx_decode(c, kFp4E2M1), e2m1[c]);
    EXPECT_EQ(fpx_decode(uint8_t(c | 8), kFp4E2M1), -e2m1[c]);
  }
  EXPECT_EQ(fpx_encode(5.0f, kFp4E2M1), 0x6);   // tie between 4 (0x6) and 6 (0x7): even
  EXPECT_EQ(fpx_encode(0.25f, kFp4E2M1), 0x0);  // tie between 0 and 0.5: even
  EXPECT_EQ(fpx_encode(0.75f, kFp4E2M1), 0x2);  // tie between 0.5 (0x1) and 1 (0x2): even
  EXPECT_EQ(fpx_encode(1000.0f, kFp6E3M2), 0x1F);
  EXPECT_EQ(fpx_encode(-INFINITY, kFp6E3M2), 0x3F);
  EXPECT_EQ(fpx_encode(-std::numeric_limits<float>::quiet_NaN(), kFp6E3M2), 0x1F);  // +max, as CUDA
  EXPECT_EQ(fpx_encode(-1e-9f, kFp5E2M2), 0x10);  // -0
  EXPECT_EQ(fpx_decode(0x01, kFp6E3M2), 0.0625f);
  EXPECT_EQ(fpx_decode(0x04, kFp6E3M2), 0.25f);  // smallest normal 2^(1-3)
  EXPECT_EQ(fpx_decode(0xC1, kFp6E3M2), fpx_decode(0x01, kFp6E3M2)) << "bits above the code are ignored";
}

}  // namespace
}  // namespace qf
