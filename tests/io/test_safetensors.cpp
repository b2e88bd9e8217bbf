// safetensors: reading a file the reference implementation wrote, the writer (round trip,
// alignment, atomicity), and one test per kind of bad input.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace qf {
namespace {

namespace st = safetensors;
constexpr char kName[] = "test.safetensors";

std::shared_ptr<const st::File> parse(const std::vector<uint8_t>& bytes) {
  return st::File::parse_bytes(bytes.data(), bytes.size(), kName);
}

// A file from a header text and a data region (the length prefix computed here).
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

TEST(Safetensors, ReadsTheReferenceImplementationsFile) {
  // Written by the `safetensors` Python package; see tests/data/io/make_reference_safetensors.py.
  auto f = st::File::open(QF_TEST_DATA_DIR "/io/reference.safetensors");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "made by safetensors.numpy");
  EXPECT_EQ(f->tensors().size(), 7u);

  const Tensor a = f->tensor("a.f32");
  EXPECT_EQ(a.dtype(), DType::F32);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_FALSE(a.owns_data());  // borrowed from the mapping
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.data<float>()[i], i * 0.25f - 1) << i;

  const Tensor b = f->tensor("b.f16");
  EXPECT_EQ(b.dtype(), DType::F16);
  // i / 8 in F16: exponent and mantissa of small dyadic numbers, e.g. 0.5 = 0x3800.
  EXPECT_EQ(b.data<uint16_t>()[0], 0x0000);
  EXPECT_EQ(b.data<uint16_t>()[4], 0x3800);

  const Tensor c = f->tensor("c.i8");
  EXPECT_EQ(c.dtype(), DType::I8);
  EXPECT_EQ(c.data<int8_t>()[0], -3);
  EXPECT_EQ(f->tensor("d.i64").data<int64_t>()[2], 2000000000000);
  EXPECT_EQ(f->tensor("e.scalar").shape(), Shape{});
  EXPECT_EQ(f->tensor("e.scalar").data<float>()[0], 7.5f);
  EXPECT_EQ(f->tensor("f.empty").numel(), 0);
  const Tensor g = f->tensor("g.bf16");
  EXPECT_EQ(g.dtype(), DType::BF16);
  EXPECT_EQ(g.data<uint16_t>()[3], 0xc0c0);  // -6.0f = 0xc0c00000
  EXPECT_ERROR(f->tensor("nope"), "reference.safetensors", "no tensor named 'nope'");
}

TEST(Safetensors, WriteThenReadRoundTrip) {
  testing::ScratchDir dir;
  Tensor f32 = Tensor::empty(DType::F32, {3, 5});
  for (int i = 0; i < 15; ++i) f32.data_mut<float>()[i] = std::sin(float(i));
  Tensor bf16 = Tensor::empty(DType::BF16, {7});
  for (int i = 0; i < 7; ++i) bf16.data_mut<uint16_t>()[i] = uint16_t(0x3f80 + i);
  Tensor i8 = Tensor::empty(DType::I8, {3});
  for (int i = 0; i < 3; ++i) i8.data_mut<int8_t>()[i] = int8_t(-i);
  Tensor f64 = Tensor::empty(DType::F64, {2});
  f64.data_mut<double>()[0] = 1e300;
  f64.data_mut<double>()[1] = -0.0;
  const std::vector<uint8_t> fp8_codes = {0x38, 0x40, 0xb8};
  // In an order that would misalign the wider types if written as given.
  const std::vector<st::TensorToWrite> tensors = {
      st::TensorToWrite::from("i8", i8), st::TensorToWrite::from("bf16", bf16),
      st::TensorToWrite{"fp8", st::Dtype::F8_E4M3, {3}, fp8_codes.data()}, st::TensorToWrite::from("f32", f32),
      st::TensorToWrite::from("f64", f64)};
  const std::string path = dir.file("out.safetensors");
  st::write_file(path, tensors, {{"format", "qforge"}, {"recipe", "{\"a\": 1}"}});
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"out.safetensors"});  // no temporary left
  struct stat sb {};
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0644u);

  auto f = st::File::open(path);
  EXPECT_EQ(f->metadata().at("recipe"), "{\"a\": 1}");
  EXPECT_EQ(f->tensors().size(), 5u);
  const std::vector<uint8_t> bytes = testing::read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);  // the data region starts 8-aligned
  for (const st::TensorEntry& e : f->tensors())  // and each tensor at a multiple of its element size
    EXPECT_EQ(e.begin % st::dtype_size(e.dtype), 0u) << e.name;
  EXPECT_EQ(0, std::memcmp(f->tensor("f32").raw(), f32.raw(), f32.nbytes()));
  EXPECT_FALSE(f->tensor("f32").owns_data());
  EXPECT_EQ(0, std::memcmp(f->tensor("bf16").raw(), bf16.raw(), bf16.nbytes()));
  EXPECT_EQ(0, std::memcmp(f->tensor("i8").raw(), i8.raw(), i8.nbytes()));
  EXPECT_EQ(0, std::memcmp(f->tensor("f64").raw(), f64.raw(), f64.nbytes()));
  const st::TensorEntry* fp8 = f->find("fp8");
  ASSERT_NE(fp8, nullptr);
  EXPECT_EQ(fp8->dtype, st::Dtype::F8_E4M3);
  EXPECT_EQ(std::vector<uint8_t>(fp8->data, fp8->data + fp8->nbytes()), fp8_codes);
  EXPECT_ERROR(f->tensor(*fp8), "'fp8'", "F8_E4M3", "cannot hold");

  // Overwriting replaces the file.
  st::write_file(path, {st::TensorToWrite::from("only", i8)});
  EXPECT_EQ(st::File::open(path)->tensors().size(), 1u);
}

TEST(Safetensors, FailureMidWriteLeavesNoFile) {
  testing::ScratchDir dir;
  Tensor a = Tensor::zeros(DType::F32, {16});
  Tensor b = Tensor::zeros(DType::F32, {16});
  const std::vector<st::TensorToWrite> tensors = {st::TensorToWrite::from("a", a), st::TensorToWrite::from("b", b)};
  st::WriteOptions fail_after_first;
  fail_after_first.on_tensor_written = [](size_t written, size_t total) {
    EXPECT_EQ(total, 2u);
    if (written == 1) throw Error("simulated failure after the first tensor");
  };
  const std::string path = dir.file("ckpt.safetensors");
  EXPECT_ERROR(st::write_file(path, tensors, {}, fail_after_first), "simulated failure");
  EXPECT_TRUE(files_in(dir.path()).empty()) << "no file at the path and no temporary left";

  // An existing file at the path survives a failed write untouched.
  st::write_file(path, {st::TensorToWrite::from("old", a)});
  const std::vector<uint8_t> before = testing::read_bytes(path);
  EXPECT_ERROR(st::write_file(path, tensors, {}, fail_after_first), "simulated failure");
  EXPECT_EQ(testing::read_bytes(path), before);
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"ckpt.safetensors"});
}

TEST(Safetensors, WriterRejectsBadRequests) {
  testing::ScratchDir dir;
  Tensor a = Tensor::zeros(DType::F32, {2});
  EXPECT_ERROR(st::write_file(dir.file("x"), {st::TensorToWrite::from("a", a), st::TensorToWrite::from("a", a)}),
               "'a' given twice");
  EXPECT_ERROR(st::write_file(dir.file("x"), {st::TensorToWrite::from("__metadata__", a)}), "invalid tensor name");
  EXPECT_ERROR(st::write_file(dir.file("no/such/dir/x.safetensors"), {st::TensorToWrite::from("a", a)}),
               "no/such/dir/x.safetensors", "temporary file");
  EXPECT_TRUE(files_in(dir.path()).empty());
}

// ---- bad input ---------------------------------------------------------------------------------

const std::string kGoodHeader =
    R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}})";

TEST(SafetensorsBadInput, TheGoodFileParses) {
  auto f = parse(make_file(kGoodHeader, 24));
  EXPECT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(SafetensorsBadInput, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = make_file(kGoodHeader, 24);
  for (size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + n}), kName);
  }
  EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + 5}), "too short for the 8-byte");
  EXPECT_ERROR(parse({bytes.begin(), bytes.begin() + 20}), "header length", "larger than the rest of the file");
  EXPECT_ERROR(parse({bytes.begin(), bytes.end() - 1}), "'b'", "past the end of the data region");
}

TEST(SafetensorsBadInput, HeaderLengthBeyondTheCap) {
  // A sparse file larger than the cap whose header claims more than the cap.
  testing::ScratchDir dir;
  const std::string path = dir.file("big.safetensors");
  {
    std::vector<uint8_t> head(8);
    const uint64_t n = st::kMaxHeaderBytes + 8;
    for (int i = 0; i < 8; ++i) head[i] = uint8_t(n >> (8 * i));
    testing::write_bytes(path, head);
  }
  ASSERT_EQ(::truncate(path.c_str(), off_t(st::kMaxHeaderBytes + 64)), 0);
  EXPECT_ERROR(st::File::open(path), "big.safetensors", "exceeds the", "limit");
}

TEST(SafetensorsBadInput, InvalidJson) {
  EXPECT_ERROR(parse(make_file(R"({"a": )", 0)), kName, "invalid JSON");
  EXPECT_ERROR(parse(make_file(R"([1, 2])", 0)), kName, "not a JSON object");
  EXPECT_ERROR(parse(make_file(std::string(100, '[') + std::string(100, ']'), 0)), kName, "nests 100 levels");
  EXPECT_ERROR(parse(make_file("{\"a\":\"\xff\"}", 0)), kName, "invalid JSON");  // not UTF-8
}

TEST(SafetensorsBadInput, UnknownDtype) {
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1)), kName, "'a'",
               "unknown dtype \"F4\"");
}

TEST(SafetensorsBadInput, ShapeDoesNotMatchTheBytes) {
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16)), kName, "'a'",
               "[2, 3]", "needs 24 bytes", "span 16");
}

TEST(SafetensorsBadInput, OffsetsOutsideTheDataOrReversed) {
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})", 10)), kName, "'a'",
               "past the end of the data region");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 10)), "'a'",
               "begin after end");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 10)), "'a'",
               "data_offsets[0]", "non-negative integer");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 10)), "'a'",
               "data_offsets");
}

TEST(SafetensorsBadInput, OverlappingTensors) {
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               12)),
               kName, "'a'", "'b'", "overlap");
}

TEST(SafetensorsBadInput, AbsurdShapes) {
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8)),
               "'a'", "overflows");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)), "'a'",
               "dimension", "non-negative integer");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", 8)), "'a'",
               "non-negative integer");
  EXPECT_ERROR(parse(make_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8)), "'a'", "no \"shape\"");
}

TEST(SafetensorsBadInput, MalformedEntriesAndMetadata) {
  EXPECT_ERROR(parse(make_file(R"({"a":3})", 0)), "'a'", "not described by a JSON object");
  EXPECT_ERROR(parse(make_file(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)), "'a'", "missing key \"dtype\"");
  EXPECT_ERROR(parse(make_file(R"({"__metadata__":{"k":1}})", 0)), kName, "__metadata__[\"k\"] is not a string");
  EXPECT_ERROR(parse(make_file(R"({"__metadata__":[]})", 0)), kName, "__metadata__ is not an object");
}

}  // namespace
}  // namespace qf
