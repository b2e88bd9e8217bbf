// GGUF reader: metadata of every value type, tensor infos and data, and one test per kind of
// bad input (the file name and the field at fault must be in the error).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "gguf_builder.h"
#include "io/gguf.h"
#include "io_test_util.h"

namespace qf {
namespace {

using gguf::File;
using testing::GgufBuilder;

constexpr char kName[] = "test.gguf";

std::shared_ptr<const File> parse(const std::vector<uint8_t>& bytes) {
  return File::parse_bytes(bytes.data(), bytes.size(), kName);
}

std::vector<float> iota_floats(size_t n, float start = 0.5f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + float(i);
  return v;
}

// A small valid file: a few metadata values and two F32 tensors.
GgufBuilder small_file() {
  GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.add_u32("llama.block_count", 2);
  b.add_string_array("tokenizer.ggml.tokens", {"a", "b", "c"});
  b.add_f32_tensor("first", {4, 3}, iota_floats(12));
  b.add_f32_tensor("second", {8}, iota_floats(8, 100.0f));
  return b;
}

TEST(Gguf, ReadsHeaderTensorsAndData) {
  GgufBuilder b = small_file();
  auto f = parse(b.build());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->path(), kName);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset(), b.layout().data_begin);
  ASSERT_EQ(f->tensors().size(), 2u);
  const gguf::TensorInfo* first = f->find("first");
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->shape(), (Shape{3, 4}));  // ne reversed: rows first
  EXPECT_EQ(first->nbytes, 48u);
  EXPECT_EQ(f->find("missing"), nullptr);
  Tensor t = f->to_f32(*first);
  EXPECT_EQ(t.shape(), (Shape{3, 4}));
  EXPECT_FALSE(t.owns_data());  // aligned F32 is borrowed from the file
  EXPECT_EQ(t.data<float>()[0], 0.5f);
  EXPECT_EQ(t.data<float>()[11], 11.5f);
  Tensor s = f->to_f32(*f->find("second"));
  EXPECT_EQ(s.data<float>()[7], 107.0f);
  EXPECT_EQ(f->find("second")->offset, 64u);  // 48 bytes of "first", padded to 32
}

TEST(Gguf, Version2IsAccepted) {
  GgufBuilder b = small_file();
  b.version = 2;
  EXPECT_EQ(parse(b.build())->version(), 2u);
}

TEST(Gguf, OpensFromDisk) {
  testing::ScratchDir dir;
  GgufBuilder b = small_file();
  testing::write_bytes(dir.file("m.gguf"), b.build());
  auto f = File::open(dir.file("m.gguf"));
  EXPECT_EQ(f->path(), dir.file("m.gguf"));
  // The tensor keeps the mapping alive after the File is gone.
  Tensor t = f->to_f32(*f->find("second"));
  f.reset();
  EXPECT_EQ(t.data<float>()[1], 101.0f);
}

TEST(Gguf, MetadataOfEveryValueType) {
  GgufBuilder b;
  b.add_scalar<uint8_t>("u8", testing::kU8, 200);
  b.add_scalar<int8_t>("i8", testing::kI8, -100);
  b.add_scalar<uint16_t>("u16", testing::kU16, 60000);
  b.add_scalar<int16_t>("i16", testing::kI16, -30000);
  b.add_scalar<uint32_t>("u32", testing::kU32, 4000000000u);
  b.add_scalar<int32_t>("i32", testing::kI32, -2000000000);
  b.add_scalar<uint64_t>("u64", testing::kU64, uint64_t(1) << 62);
  b.add_scalar<int64_t>("i64", testing::kI64, -(int64_t(1) << 62));
  b.add_scalar<float>("f32", testing::kF32, 0.1f);
  b.add_scalar<double>("f64", testing::kF64, 0.1);
  b.add_bool("yes", true);
  b.add_bool("no", false);
  b.add_string("s", "h\xc3\xa9llo");
  b.add_string("empty", "");
  b.add_string_array("strings", {"x", "", "zz"});
  b.add_array<int32_t>("i32s", testing::kI32, {-1, 2, -3});
  b.add_array<uint8_t>("u8s", testing::kU8, {7, 255});
  b.add_array<uint64_t>("u64s", testing::kU64, {uint64_t(1) << 40});
  b.add_array<float>("f32s", testing::kF32, {0.5f, -2.0f});
  b.add_array<double>("f64s", testing::kF64, {1e300});
  b.add_array<uint8_t>("bools", testing::kBool, {1, 0, 1});
  b.add_scalar<uint64_t>("huge", testing::kU64, std::numeric_limits<uint64_t>::max());
  auto f = parse(b.build());
  const gguf::Metadata& m = f->metadata();
  EXPECT_EQ(m.get_int("u8"), 200);
  EXPECT_EQ(m.get_int("i8"), -100);
  EXPECT_EQ(m.get_int("u16"), 60000);
  EXPECT_EQ(m.get_int("i16"), -30000);
  EXPECT_EQ(m.get_int("u32"), 4000000000LL);
  EXPECT_EQ(m.get_int("i32"), -2000000000);
  EXPECT_EQ(m.get_int("u64"), int64_t(1) << 62);
  EXPECT_EQ(m.get_int("i64"), -(int64_t(1) << 62));
  EXPECT_EQ(m.get_float("f32"), double(0.1f));
  EXPECT_EQ(m.get_float("f64"), 0.1);
  EXPECT_EQ(m.get_float("u32"), 4e9);  // integers read as floats too
  EXPECT_TRUE(m.get_bool("yes"));
  EXPECT_FALSE(m.get_bool("no"));
  EXPECT_EQ(m.get_string("s"), "h\xc3\xa9llo");
  EXPECT_EQ(m.get_string("empty"), "");
  EXPECT_EQ(m.get_string_array("strings"), (std::vector<std::string>{"x", "", "zz"}));
  EXPECT_EQ(m.get_int_array("i32s"), (std::vector<int64_t>{-1, 2, -3}));
  EXPECT_EQ(m.get_int_array("u8s"), (std::vector<int64_t>{7, 255}));
  EXPECT_EQ(m.get_int_array("u64s"), (std::vector<int64_t>{int64_t(1) << 40}));
  EXPECT_EQ(m.get_float_array("f32s"), (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(m.get_float_array("f64s"), (std::vector<double>{1e300}));
  EXPECT_EQ(m.get_float_array("i32s"), (std::vector<double>{-1, 2, -3}));
  EXPECT_EQ(m.find("bools")->array_type, gguf::ValueType::BOOL);
  EXPECT_EQ(std::get<std::vector<uint8_t>>(m.find("bools")->data), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(m.keys().size(), 22u);
  // Defaults apply only when the key is absent.
  EXPECT_EQ(m.get_int("absent", 7), 7);
  EXPECT_EQ(m.get_int("u8", 7), 200);
  EXPECT_EQ(m.get_string("absent", "d"), "d");
  EXPECT_EQ(m.get_float("absent", 1.5), 1.5);
  EXPECT_TRUE(m.get_bool("absent", true));
  // A UINT64 beyond int64 is reported, not wrapped.
  EXPECT_ERROR(m.get_int("huge"), kName, "'huge'", "too large");
}

TEST(Gguf, MetadataWrongTypeOrMissingKeyIsNamed) {
  auto f = parse(small_file().build());
  const gguf::Metadata& m = f->metadata();
  EXPECT_ERROR(m.get_int("general.architecture"), kName, "'general.architecture'", "STRING", "integer");
  EXPECT_ERROR(m.get_string("llama.block_count"), kName, "'llama.block_count'", "UINT32");
  EXPECT_ERROR(m.get_bool("llama.block_count"), "'llama.block_count'", "BOOL");
  EXPECT_ERROR(m.get_float("general.architecture"), "'general.architecture'", "number");
  EXPECT_ERROR(m.get_int_array("tokenizer.ggml.tokens"), "'tokenizer.ggml.tokens'", "ARRAY of STRING");
  EXPECT_ERROR(m.get_string_array("llama.block_count"), "'llama.block_count'");
  EXPECT_ERROR(m.get_float_array("tokenizer.ggml.tokens"), "'tokenizer.ggml.tokens'");
  EXPECT_ERROR(m.get_int("nope"), kName, "'nope'", "missing");
  // A default does not hide a wrong type.
  EXPECT_ERROR(m.get_int("general.architecture", 3), "'general.architecture'");
}

TEST(Gguf, AlignmentKeyIsHonoured) {
  GgufBuilder b = small_file();
  b.alignment = 64;
  b.add_u32("general.alignment", 64);
  auto f = parse(b.build());
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->find("second")->offset, 64u);
  EXPECT_EQ(f->to_f32(*f->find("second")).data<float>()[0], 100.0f);
}

TEST(Gguf, MisalignedF32IsCopiedNotBorrowed) {
  GgufBuilder b;
  b.alignment = 1;
  b.add_u32("general.alignment", 1);
  b.add_f32_tensor("t", {3}, {1.0f, 2.0f, 3.0f});
  std::vector<uint8_t> bytes = b.build();
  // Put the file at an odd address so the tensor's bytes are not 4-byte aligned.
  for (size_t shift = 0; shift < 4; ++shift) {
    std::vector<uint8_t> padded(shift, 0);
    padded.insert(padded.end(), bytes.begin(), bytes.end());
    auto f = File::parse_bytes(padded.data() + shift, bytes.size(), kName);
    Tensor t = f->to_f32(*f->find("t"));
    EXPECT_EQ(t.data<float>()[2], 3.0f);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  }
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(GgufBadInput, EveryTruncationIsAnError) {
  GgufBuilder b = small_file();
  const std::vector<uint8_t> bytes = b.build();
  ASSERT_NO_THROW(parse(bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    SCOPED_TRACE(n);
    EXPECT_ERROR(parse(cut), kName);
  }
  // Cuts in specific places say where. (Cut early, the counts alone no longer fit: that is
  // reported first, see AbsurdCounts.)
  EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + 6}), "truncated", "version");
  EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + b.layout().infos_begin - 1}), "truncated",
               "metadata 'tokenizer.ggml.tokens'");
  EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + b.layout().infos_end - 1}), "truncated", "tensor 'second' offset");
  EXPECT_ERROR(parse({bytes.begin(), bytes.end() - 1}), "'second'", "past the end");
}

TEST(GgufBadInput, BadMagic) {
  std::vector<uint8_t> bytes = small_file().build();
  bytes[0] = 'X';
  EXPECT_ERROR(parse(bytes), kName, "not a GGUF file");
}

TEST(GgufBadInput, Version1IsRejectedClearly) {
  GgufBuilder b = small_file();
  b.version = 1;
  EXPECT_ERROR(parse(b.build()), kName, "version 1 is not supported");
}

TEST(GgufBadInput, UnknownVersion) {
  GgufBuilder b = small_file();
  b.version = 4;
  EXPECT_ERROR(parse(b.build()), kName, "unsupported GGUF version 4");
}

TEST(GgufBadInput, BigEndianFile) {
  GgufBuilder b = small_file();
  b.version = 0x03000000;  // 3, byte-swapped
  EXPECT_ERROR(parse(b.build()), kName, "big-endian");
}

TEST(GgufBadInput, AbsurdCounts) {
  GgufBuilder b = small_file();
  b.n_kv_override = uint64_t(1) << 60;
  EXPECT_ERROR(parse(b.build()), kName, "metadata count", "cannot fit");
  b = small_file();
  b.n_tensors_override = uint64_t(1) << 60;
  EXPECT_ERROR(parse(b.build()), kName, "tensor count", "cannot fit");
}

TEST(GgufBadInput, AbsurdArrayCountAndStringLength) {
  GgufBuilder b;
  testing::ByteWriter w;
  w.put<uint32_t>(testing::kU32);
  w.put<uint64_t>(uint64_t(1) << 60);
  b.add_raw("big.array", testing::kArray, w.bytes);
  EXPECT_ERROR(parse(b.build()), kName, "'big.array'", "claims 1152921504606846976 elements");

  GgufBuilder s;
  testing::ByteWriter sw;
  sw.put<uint32_t>(testing::kString);
  sw.put<uint64_t>(1000);  // 1000 strings need at least 8000 bytes
  sw.put<uint64_t>(0);
  s.add_raw("strings", testing::kArray, sw.bytes);
  EXPECT_ERROR(parse(s.build()), "'strings'", "claims 1000 elements");

  GgufBuilder l;
  testing::ByteWriter lw;
  lw.put<uint64_t>(uint64_t(1) << 60);
  l.add_raw("long.string", testing::kString, lw.bytes);
  EXPECT_ERROR(parse(l.build()), "'long.string'", "truncated");
}

TEST(GgufBadInput, NestedArray) {
  GgufBuilder b;
  testing::ByteWriter w;
  w.put<uint32_t>(testing::kArray);
  w.put<uint64_t>(1);
  b.add_raw("nested", testing::kArray, w.bytes);
  EXPECT_ERROR(parse(b.build()), kName, "'nested'", "array of arrays");
}

TEST(GgufBadInput, UnknownValueType) {
  GgufBuilder b;
  b.add_raw("odd", 13, {0, 0, 0, 0});
  EXPECT_ERROR(parse(b.build()), kName, "'odd'", "not a GGUF value type");
}

TEST(GgufBadInput, BoolOtherThanZeroOrOne) {
  GgufBuilder b;
  b.add_scalar<uint8_t>("flag", testing::kBool, 2);
  EXPECT_ERROR(parse(b.build()), "'flag'", "bool");
}

TEST(GgufBadInput, DuplicateKeyOrTensor) {
  GgufBuilder b = small_file();
  b.add_u32("llama.block_count", 3);
  EXPECT_ERROR(parse(b.build()), "'llama.block_count' appears twice");
  GgufBuilder t = small_file();
  t.add_f32_tensor("first", {4}, iota_floats(4));
  EXPECT_ERROR(parse(t.build()), "'first' appears twice");
}

TEST(GgufBadInput, AlignmentNotAPowerOfTwoOrWrongType) {
  GgufBuilder b = small_file();
  b.add_u32("general.alignment", 48);
  EXPECT_ERROR(parse(b.build()), kName, "general.alignment = 48", "power of two");
  GgufBuilder z = small_file();
  z.add_u32("general.alignment", 0);
  EXPECT_ERROR(parse(z.build()), "general.alignment = 0");
  GgufBuilder s = small_file();
  s.add_string("general.alignment", "32");
  EXPECT_ERROR(parse(s.build()), kName, "'general.alignment'", "STRING", "UINT32");
}

TEST(GgufBadInput, TensorDims) {
  for (std::vector<uint64_t> ne : {std::vector<uint64_t>{}, {1, 1, 1, 1, 1}}) {
    GgufBuilder b;
    b.add_tensor("t", ne, 0, std::vector<uint8_t>(4));
    EXPECT_ERROR(parse(b.build()), kName, "'t'", "dimensions (must be 1 to 4)");
  }
  GgufBuilder zero;
  zero.add_tensor("t", {4, 0}, 0, {});
  EXPECT_ERROR(parse(zero.build()), "'t' ne[1] = 0", "not a positive size");
  GgufBuilder negative;
  negative.add_tensor("t", {uint64_t(-4)}, 0, {});
  EXPECT_ERROR(parse(negative.build()), "'t' ne[0]", "not a positive size");
  GgufBuilder overflow;
  overflow.add_tensor("t", {uint64_t(1) << 32, uint64_t(1) << 32}, 0, {});
  EXPECT_ERROR(parse(overflow.build()), kName, "'t'", "overflows");
  GgufBuilder huge;  // product fits 64 bits, bytes do not fit the file
  huge.add_tensor("t", {uint64_t(1) << 20, uint64_t(1) << 20}, 0, {});
  EXPECT_ERROR(parse(huge.build()), kName, "'t'", "more bytes than the whole file");
}

TEST(GgufBadInput, NameTooLongOrEmpty) {
  GgufBuilder b;
  b.add_f32_tensor(std::string(300, 'n'), {1}, {1.0f});
  EXPECT_ERROR(parse(b.build()), kName, "name of tensor #0", "length 300");
  GgufBuilder e;
  e.add_f32_tensor("", {1}, {1.0f});
  EXPECT_ERROR(parse(e.build()), "tensor #0 has an empty name");
}

TEST(GgufBadInput, UnknownTensorType) {
  for (uint32_t type : {4u, 16u /* IQ2_XXS */, 99u}) {
    GgufBuilder b;
    b.add_tensor("t", {32}, type, std::vector<uint8_t>(64));
    EXPECT_ERROR(parse(b.build()), kName, "'t'", "ggml type " + std::to_string(type), "cannot read");
  }
}

TEST(GgufBadInput, RowNotAMultipleOfTheBlock) {
  GgufBuilder b;
  b.add_tensor("q", {48, 2}, 2 /* Q4_0, blocks of 32 */, std::vector<uint8_t>(54));
  EXPECT_ERROR(parse(b.build()), kName, "'q'", "ne[0] = 48", "Q4_0", "block size 32");
}

TEST(GgufBadInput, TensorPastTheEnd) {
  GgufBuilder b = small_file();
  b.tensor(1).offset_override = 1024;  // aligned, but the data section is 96 bytes
  std::vector<uint8_t> bytes = b.build();
  bytes.resize(b.layout().data_begin + 96);
  EXPECT_ERROR(parse(bytes), kName, "'second'", "past the end");
  // An offset whose sum with the size overflows 64 bits: patch the last tensor's offset field,
  // the last 8 bytes of the tensor infos.
  GgufBuilder o = small_file();
  std::vector<uint8_t> patched = o.build();
  const uint64_t wrap = uint64_t(-32);
  std::memcpy(patched.data() + o.layout().infos_end - 8, &wrap, 8);
  EXPECT_ERROR(parse(patched), kName, "'second'", "past the end");
}

TEST(GgufBadInput, MisalignedTensor) {
  GgufBuilder b = small_file();
  b.tensor(1).offset_override = 48;  // right after "first", not a multiple of 32
  EXPECT_ERROR(parse(b.build()), kName, "'second' offset 48", "alignment 32");
}

TEST(GgufBadInput, OverlappingTensors) {
  GgufBuilder b = small_file();
  b.tensor(1).offset_override = 32;  // aligned, but "first" spans bytes 0..48
  EXPECT_ERROR(parse(b.build()), kName, "'first'", "'second'", "overlap");
  GgufBuilder same = small_file();
  same.tensor(1).offset_override = 0;
  EXPECT_ERROR(parse(same.build()), "overlap");
}

TEST(GgufBadInput, DataSectionStartsPastTheEnd) {
  GgufBuilder b;
  b.add_tensor("t", {1}, 0, {});  // 4 bytes declared, none written
  std::vector<uint8_t> bytes = b.build();
  ASSERT_LT(b.layout().infos_end, b.layout().data_begin);  // some alignment padding to cut
  bytes.resize(b.layout().data_begin - 1);
  EXPECT_ERROR(parse(bytes), kName, "data section");
}

}  // namespace
}  // namespace qf
