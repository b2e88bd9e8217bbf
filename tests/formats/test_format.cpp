// Format strings: parse/print round trips (canonical strings print back unchanged, every
// constructed format parses back equal), option order, the meaning of each field, the error
// messages, and hashing for registry keys.
#include <gtest/gtest.h>

#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "formats/format.h"

namespace qf {
namespace {

TEST(Format, CanonicalStringsRoundTrip) {
  for (const char* s : {"f32", "f16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3:token", "fp8_e4m3:tensor",
                        "fp6_e3m2:channel", "fp6_e2m3:g32", "fp5_e2m2:channel", "fp4_e2m1:g16:scale=fp8_e4m3",
                        "int4:g128", "int4:g128:asym", "int4:g128:scale=fp8_e4m3:tensor_scale", "int8:channel",
                        "int8:token", "int3:g64:asym:scale=bf16", "int2:tensor:scale=f16", "fp7_e1m5", "fp8_e3m4:g8",
                        "int4:channel:scale=fp8_e5m2:tensor_scale", "int4:g128:scale=fp8_e4m3:tensor_scale:lut",
                        "int4:g128:scale=fp8_e4m3:lut", "int8:channel:scale=fp8_e5m2:lut", "int2:tensor:scale=fp8_e4m3:lut"}) {
    const Format f = Format::parse(s);
    EXPECT_EQ(f.str(), s);
    EXPECT_EQ(Format::parse(f.str()), f) << s;
  }
}

TEST(Format, FieldsMeanWhatTheStringSays) {
  const Format f = Format::parse("int4:g128:asym:scale=fp8_e4m3:tensor_scale");
  EXPECT_EQ(f.element, ElementType::integer(4));
  EXPECT_EQ(f.granularity, Granularity::group);
  EXPECT_EQ(f.group_size, 128);
  EXPECT_TRUE(f.asymmetric);
  EXPECT_EQ(f.scale_type, ElementType::of(ElementKind::fp8_e4m3));
  EXPECT_TRUE(f.tensor_scale);
  const Format g = Format::parse("fp6_e3m2:channel");
  EXPECT_EQ(g.element, ElementType::fpx(kFp6E3M2));
  EXPECT_EQ(g.element.bits(), 6);
  EXPECT_EQ(g.element.max_value(), 28.0f);
  EXPECT_EQ(g.scale_type, ElementType::of(ElementKind::f32));
  EXPECT_EQ(Format::parse("bf16").element.bits(), 16);
  EXPECT_FALSE(Format::parse("fp8_e4m3").scaled());
  EXPECT_EQ(Format::parse("fp8_e5m2").element.max_value(), 57344.0f);
}

TEST(Format, OptionsInAnyOrderPrintCanonically) {
  EXPECT_EQ(Format::parse("int4:tensor_scale:scale=fp8_e4m3:asym:g64").str(), "int4:g64:asym:scale=fp8_e4m3:tensor_scale");
  EXPECT_EQ(Format::parse("int4:g64:scale=f32").str(), "int4:g64") << "the default scale type is not printed";
  EXPECT_EQ(Format::parse("int4:lut:tensor_scale:g128:scale=fp8_e4m3").str(), "int4:g128:scale=fp8_e4m3:tensor_scale:lut");
  EXPECT_EQ(Format::parse("int4:lut:scale=fp8_e5m2:channel").str(), "int4:channel:scale=fp8_e5m2:lut");
}

TEST(Format, LutIsItsOwnFormat) {
  const Format f = Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale:lut");
  EXPECT_TRUE(f.lut);
  EXPECT_FALSE(Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale").lut);
  const Format plain = Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale");
  EXPECT_NE(f, plain) << "lut changes what the codes mean";
  EXPECT_NE(std::hash<Format>{}(f), std::hash<Format>{}(plain));
  std::unordered_map<Format, int> registry{{f, 1}, {plain, 2}};
  EXPECT_EQ(registry.at(Format::parse("int4:lut:g128:tensor_scale:scale=fp8_e4m3")), 1);
  EXPECT_EQ(registry.at(plain), 2);
}

TEST(Format, EveryConstructedFormatRoundTrips) {
  std::vector<ElementType> elements = {ElementType::of(ElementKind::fp8_e4m3), ElementType::of(ElementKind::fp8_e5m2)};
  for (int b = 2; b <= 8; ++b) elements.push_back(ElementType::integer(b));
  for (int e = 1; e <= 7; ++e)
    for (int m = 0; e + m <= 7; ++m)
      if (!(e + m == 7 && (e == 4 || e == 5))) elements.push_back(ElementType::fpx({e, m}));
  int n = 0, n_lut = 0;
  std::unordered_set<Format> seen;
  for (const ElementType& e : elements)
    for (Granularity g : {Granularity::none, Granularity::tensor, Granularity::channel, Granularity::token, Granularity::group})
      for (bool asym : {false, true})
        for (ElementKind sk : {ElementKind::f32, ElementKind::bf16, ElementKind::fp8_e4m3})
          for (bool ts : {false, true})
            for (bool lut : {false, true}) {
            Format f{e, g, g == Granularity::group ? 32 : 0, asym, ElementType::of(sk), ts, lut};
            bool valid = true;
            try {
              f.validate();
            } catch (const Error&) {
              valid = false;
            }
            if (!valid) continue;
            EXPECT_EQ(Format::parse(f.str()), f) << f.str();
            EXPECT_TRUE(seen.insert(f).second) << f.str();
            EXPECT_TRUE(!lut || (e.is_int() && !asym && sk == ElementKind::fp8_e4m3 && g != Granularity::none)) << f.str();
            n += 1;
            n_lut += lut;
          }
  EXPECT_GT(n, 300);
  // int2..int8, symmetric, scale=fp8_e4m3: 4 granularities without tensor_scale, 3 with (not tensor).
  EXPECT_EQ(n_lut, 7 * (4 + 3));
}

std::string parse_error(const char* s) {
  try {
    Format::parse(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Format, ErrorsSayWhatWasExpected) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "empty element type"},
      {"int9:g128", "expected int<B> with B = 2..8"},
      {"int4", "needs a scale granularity"},
      {"int4:g0", "is not a group size"},
      {"int4:gx", "unknown option \"gx\""},
      {"int4:g128:channel", "more than one scale granularity"},
      {"int4:perchannel", "unknown option \"perchannel\"; expected tensor, channel, token, g<G>, asym, scale=<element>, tensor_scale or lut"},
      {"int4:g128:lut", "lut needs an FP8 scale type (scale=fp8_e4m3 or scale=fp8_e5m2)"},
      {"int4:g128:scale=bf16:tensor_scale:lut", "got scale=bf16"},
      {"int4:g128:asym:scale=fp8_e4m3:lut", "needs a symmetric int element"},
      {"fp8_e4m3:g128:scale=fp8_e4m3:lut", "needs a symmetric int element"},
      {"fp6_e3m2:channel:scale=fp8_e4m3:lut", "not fp6_e3m2"},
      {"int4:scale=fp8_e4m3:lut", "needs a scale granularity"},
      {"bf16:lut", "bf16 is stored as is and takes no options"},
      {"int4:g128:scale=fp8_e4m3:lut:lut", "lut given twice"},
      {"fp6_e3m3", "not 6; write fp7_e3m3"},
      {"fp6_e0m5", "at least one exponent bit"},
      {"fp9_e4m4", "at most 7 exponent + mantissa bits"},
      {"fp8_e4m3:asym", "asym (zero points) applies to int elements only"},
      {"bf16:tensor", "bf16 is stored as is and takes no options"},
      {"int4:g128:tensor_scale", "tensor_scale is for narrow scale types"},
      {"int4:tensor:scale=bf16:tensor_scale", "not tensor"},
      {"fp8_e4m3:scale=bf16", "scale= needs a scale granularity"},
      {"int4:g128:scale=int8", "scale type int8 is not one of"},
      {"int4:g128:scale=fp6_e3m2", "scale type fp6_e3m2 is not one of"},
      {"int4:g128:asym:asym", "asym given twice"},
      {"float8", "unknown element type \"float8\""},
      {"int4:g128:", "unknown option \"\""},
  };
  for (const auto& [text, want] : cases) {
    const std::string got = parse_error(text);
    EXPECT_NE(got.find(want), std::string::npos) << "parse(\"" << text << "\") said: " << got;
    if (*text) {
      EXPECT_NE(got.find(std::string("\"") + text + "\""), std::string::npos) << "names the string: " << got;
    }
  }
}

TEST(Format, FpxE4M3AndE5M2AreNotFp8) {
  // An all-finite e4m3 would print as "fp8_e4m3", the FP8 format with NaN: not representable.
  Format f;
  f.element = ElementType::fpx({4, 3});
  EXPECT_THROW(f.validate(), Error);
  EXPECT_EQ(Format::parse("fp8_e4m3").element.kind, ElementKind::fp8_e4m3);
}

TEST(Format, KeysARegistry) {
  std::unordered_map<Format, int> registry;
  registry[Format::parse("int4:g128")] = 1;
  registry[Format::parse("int4:g128:asym")] = 2;
  registry[Format::parse("fp8_e4m3:token")] = 3;
  EXPECT_EQ(registry.at(Format::parse("int4:g128")), 1);
  EXPECT_EQ(registry.at(Format::parse("int4:asym:g128")), 2);
  EXPECT_EQ(registry.count(Format::parse("int4:g64")), 0u);
  EXPECT_EQ(std::hash<Format>{}(Format::parse("int8:channel")), std::hash<Format>{}(Format::parse("int8:channel")));
  EXPECT_NE(Format::parse("int8:channel"), Format::parse("int8:token"));
}

TEST(Format, FloatElementCodecDispatch) {
  EXPECT_EQ(encode_float_element(ElementType::of(ElementKind::bf16), 1.0f), 0x3F80u);
  EXPECT_EQ(encode_float_element(ElementType::fpx(kFp4E2M1), 6.0f), 0x7u);
  EXPECT_EQ(decode_float_element(ElementType::of(ElementKind::fp8_e4m3), 0x7E), 448.0f);
  EXPECT_EQ(decode_float_element(ElementType::of(ElementKind::f16), 0x3C00), 1.0f);
  EXPECT_THROW(encode_float_element(ElementType::integer(4), 1.0f), Error);
}

}  // namespace
}  // namespace qf
