// GGUF metadata writer (gguf::serialize_metadata): every value type round-trips through the
// reader unchanged, the bytes are exactly what an independent encoder (the test-only
// GgufBuilder) writes for the same pairs plus the padding to the alignment, and values that do
// not fit their declared type are refused with the key named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "gguf_builder.h"
#include "io/gguf.h"
#include "io_test_util.h"

namespace qf {
namespace {

using gguf::Metadata;
using gguf::Value;
using gguf::ValueType;
using testing::GgufBuilder;

std::shared_ptr<const gguf::File> parse(const std::string& bytes) {
  return gguf::File::parse_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "written.gguf");
}

// Every value type, scalar and array, with the edge values of each integer type (the reader
// stores them widened, so a writer that narrowed wrongly would show here), in key order so the
// builder's bytes are directly comparable with the writer's (which sorts keys).
GgufBuilder every_type() {
  GgufBuilder b;
  b.add_array<uint8_t>("a.bools", testing::kBool, {1, 0, 1});
  b.add_array<uint8_t>("a.empty_u32", testing::kU32, {});
  b.add_array<float>("a.f32", testing::kF32, {0.5f, -2.0f, 0.1f, std::numeric_limits<float>::denorm_min()});
  b.add_array<double>("a.f64", testing::kF64, {1e300, -0.1});
  b.add_array<int16_t>("a.i16", testing::kI16, {-32768, 32767});
  b.add_array<int32_t>("a.i32", testing::kI32, {-1, 2, std::numeric_limits<int32_t>::min()});
  b.add_array<int64_t>("a.i64", testing::kI64, {std::numeric_limits<int64_t>::min(), 5});
  b.add_array<int8_t>("a.i8", testing::kI8, {-128, 127});
  b.add_string_array("a.strings", {"x", "", "h\xc3\xa9llo", std::string("nul\0inside", 10)});
  b.add_array<uint16_t>("a.u16", testing::kU16, {0, 65535});
  b.add_array<uint32_t>("a.u32", testing::kU32, {4000000000u});
  b.add_array<uint64_t>("a.u64", testing::kU64, {uint64_t(1) << 40});
  b.add_array<uint8_t>("a.u8", testing::kU8, {7, 255});
  b.add_scalar<float>("f32", testing::kF32, 0.1f);
  b.add_scalar<double>("f64", testing::kF64, -1e-300);
  b.add_scalar<int16_t>("i16", testing::kI16, -30000);
  b.add_scalar<int32_t>("i32", testing::kI32, -2000000000);
  b.add_scalar<int64_t>("i64", testing::kI64, std::numeric_limits<int64_t>::min());
  b.add_scalar<int8_t>("i8", testing::kI8, -128);
  b.add_bool("no", false);
  b.add_string("s", "h\xc3\xa9llo");
  b.add_string("s.empty", "");
  b.add_scalar<uint16_t>("u16", testing::kU16, 60000);
  b.add_scalar<uint32_t>("u32", testing::kU32, 4000000000u);
  b.add_scalar<uint64_t>("u64", testing::kU64, std::numeric_limits<uint64_t>::max());
  b.add_scalar<uint8_t>("u8", testing::kU8, 255);
  b.add_bool("yes", true);
  return b;
}

void expect_same_metadata(const Metadata& a, const Metadata& b) {
  ASSERT_EQ(a.keys(), b.keys());
  for (const std::string& k : a.keys()) {
    const Value& x = *a.find(k);
    const Value& y = *b.find(k);
    EXPECT_EQ(x.type, y.type) << k;
    EXPECT_EQ(x.array_type, y.array_type) << k;
    EXPECT_TRUE(x.data == y.data) << k;  // variant equality: same storage kind and same value
  }
}

TEST(GgufWriter, EveryValueTypeRoundTripsThroughTheReader) {
  const std::vector<uint8_t> built = every_type().build();
  const auto source = gguf::File::parse_bytes(built.data(), built.size(), "built.gguf");
  ASSERT_EQ(source->metadata().keys().size(), 27u);

  const std::string written = gguf::serialize_metadata(source->metadata());
  const auto back = parse(written);
  EXPECT_EQ(back->version(), 3u);
  EXPECT_TRUE(back->tensors().empty());
  expect_same_metadata(source->metadata(), back->metadata());
  // Spot checks through the typed getters, on the values most likely to be mangled.
  const Metadata& m = back->metadata();
  EXPECT_EQ(std::get<uint64_t>(m.find("u64")->data), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(m.get_int("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(m.get_int("i8"), -128);
  EXPECT_EQ(m.get_float("f32"), double(0.1f));
  EXPECT_EQ(m.get_float("f64"), -1e-300);
  EXPECT_TRUE(m.get_bool("yes"));
  EXPECT_FALSE(m.get_bool("no"));
  EXPECT_EQ(m.get_string("s"), "h\xc3\xa9llo");
  EXPECT_EQ(m.get_string_array("a.strings")[3], std::string("nul\0inside", 10));
  EXPECT_EQ(m.get_int_array("a.i32"), (std::vector<int64_t>{-1, 2, std::numeric_limits<int32_t>::min()}));
  EXPECT_EQ(m.get_float_array("a.f32")[3], double(std::numeric_limits<float>::denorm_min()));
  EXPECT_TRUE(m.get_int_array("a.empty_u32").empty());
  EXPECT_EQ(m.find("a.empty_u32")->array_type, ValueType::UINT32);

  // Byte for byte what the independent test encoder writes, then zeros to the 32-byte
  // alignment (the spec's padding before the data section, here empty).
  ASSERT_EQ(written.size(), (built.size() + 31) / 32 * 32);
  EXPECT_EQ(std::memcmp(written.data(), built.data(), built.size()), 0);
  for (size_t i = built.size(); i < written.size(); ++i) EXPECT_EQ(written[i], '\0') << i;
  // And a fixed point: writing what was read back gives the same bytes.
  EXPECT_EQ(gguf::serialize_metadata(m), written);
}

TEST(GgufWriter, HandBuiltValuesAndTheHeader) {
  Metadata md;
  md.set("k", Value{ValueType::UINT16, ValueType::UINT8, uint64_t(513)});
  const std::string w = gguf::serialize_metadata(md);
  // magic, version 3, 0 tensors, 1 pair; key "k" (length 1), type UINT16 (2), 513 = 0x0201 LE:
  // 39 bytes, then zeros to the next multiple of 32.
  std::vector<uint8_t> expected = {'G', 'G', 'U', 'F', 3, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0,
                                   1,   0,   0,   0,   0, 0, 0, 0,  1, 0, 0, 0, 0, 0, 0, 0,
                                   'k', 2,   0,   0,   0, 1, 2};
  ASSERT_EQ(expected.size(), 39u);
  expected.resize(64, 0);
  ASSERT_EQ(w.size(), expected.size());
  EXPECT_EQ(std::memcmp(w.data(), expected.data(), w.size()), 0);

  // An empty metadata is a valid file too (header only, padded).
  const std::string empty = gguf::serialize_metadata(Metadata{});
  EXPECT_EQ(empty.size(), 32u);
  EXPECT_TRUE(parse(empty)->metadata().keys().empty());
}

TEST(GgufWriter, AlignmentKeyPadsTheFile) {
  Metadata md;
  md.set("general.alignment", Value{ValueType::UINT32, ValueType::UINT8, uint64_t(64)});
  md.set("general.architecture", Value{ValueType::STRING, ValueType::UINT8, std::string("llama")});
  const std::string w = gguf::serialize_metadata(md);
  EXPECT_EQ(w.size() % 64, 0u);
  const auto f = parse(w);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset(), w.size());
  EXPECT_EQ(f->metadata().get_string("general.architecture"), "llama");

  md.set("general.alignment", Value{ValueType::UINT32, ValueType::UINT8, uint64_t(48)});
  EXPECT_ERROR(gguf::serialize_metadata(md), "general.alignment", "power of two");
  md.set("general.alignment", Value{ValueType::UINT64, ValueType::UINT8, uint64_t(64)});
  EXPECT_ERROR(gguf::serialize_metadata(md), "general.alignment", "UINT32");
}

TEST(GgufWriter, ValuesThatDoNotFitTheirTypeAreRefusedByKey) {
  auto refuse = [](const std::string& key, Value v, std::initializer_list<std::string> fragments) {
    Metadata md;
    md.set(key, std::move(v));
    const std::string msg = testing::error_of([&] { (void)gguf::serialize_metadata(md); });
    EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << msg;
    for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "lacks " << f << ": " << msg;
  };
  refuse("u8", {ValueType::UINT8, ValueType::UINT8, uint64_t(256)}, {"256", "UINT8"});
  refuse("u32", {ValueType::UINT32, ValueType::UINT8, uint64_t(1) << 32}, {"UINT32"});
  refuse("i8", {ValueType::INT8, ValueType::UINT8, int64_t(-129)}, {"-129", "INT8"});
  refuse("i32", {ValueType::INT32, ValueType::UINT8, int64_t(1) << 31}, {"INT32"});
  refuse("f32", {ValueType::FLOAT32, ValueType::UINT8, 1e300}, {"FLOAT32"});
  refuse("kind", {ValueType::UINT32, ValueType::UINT8, std::string("7")}, {"holds data of another kind"});
  refuse("kind.i", {ValueType::INT32, ValueType::UINT8, uint64_t(7)}, {"another kind"});
  refuse("arr.u8", {ValueType::ARRAY, ValueType::UINT8, std::vector<int64_t>{1, 256}}, {"[1]", "256", "UINT8"});
  refuse("arr.u64", {ValueType::ARRAY, ValueType::UINT64, std::vector<int64_t>{-1}}, {"UINT64"});
  refuse("arr.bool", {ValueType::ARRAY, ValueType::BOOL, std::vector<uint8_t>{0, 2}}, {"[1]", "0 or 1"});
  refuse("arr.kind", {ValueType::ARRAY, ValueType::FLOAT32, std::vector<int64_t>{1}}, {"another kind"});
  refuse("arr.nested", {ValueType::ARRAY, ValueType::ARRAY, std::vector<int64_t>{}}, {"array of arrays"});
  refuse("bad.type", {ValueType(99), ValueType::UINT8, uint64_t(0)}, {"99"});
  // Non-finite floats are values like any other (the reader accepts them) and stay themselves.
  Metadata md;
  md.set("inf", {ValueType::FLOAT32, ValueType::UINT8, std::numeric_limits<double>::infinity()});
  md.set("nan", {ValueType::FLOAT64, ValueType::UINT8, std::numeric_limits<double>::quiet_NaN()});
  const auto f = parse(gguf::serialize_metadata(md));
  EXPECT_EQ(f->metadata().get_float("inf"), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(f->metadata().get_float("nan")));
}

}  // namespace
}  // namespace qf
