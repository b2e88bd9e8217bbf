// Device memory (buffers, the arena, fills) and the on-GPU random generator against its host
// twin. The host-twin statistics tests run without a GPU; the rest skip without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/random.h"
#include "core/error.h"
#include "gpu_test.h"

namespace qf::cuda {
namespace {

float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- the host twin (no GPU needed) --------------------------------------------------------

TEST(RandomHostTwin, NormalHasTheRequestedMeanAndStd) {
  const RandomSpec spec = RandomSpec::normal_with(0.5f, 2.0f);
  const int n = 1 << 20;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const double v = random_value(i, spec, 42);
    ASSERT_TRUE(std::isfinite(v)) << "element " << i;
    sum += v;
    sum2 += v * v;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  // Standard errors: mean 2/sqrt(n) = 0.002; variance 4*sqrt(2/n) = 0.0055. 5 sigma bounds.
  EXPECT_NEAR(mean, 0.5, 0.01);
  EXPECT_NEAR(var, 4.0, 0.03);
}

TEST(RandomHostTwin, UniformStaysInRangeAndFillsIt) {
  const RandomSpec spec = RandomSpec::uniform_in(-3.f, 5.f);
  const int n = 1 << 20;
  double sum = 0;
  float lo = 1e9f, hi = -1e9f;
  for (int i = 0; i < n; ++i) {
    const float v = random_value(i, spec, 7);
    ASSERT_GE(v, -3.f);
    ASSERT_LE(v, 5.f);  // [lo, hi) before the rounding to float, which may reach hi
    sum += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_NEAR(sum / n, 1.0, 0.03);  // std of the mean: 8/sqrt(12 n) = 0.0023
  EXPECT_LT(lo, -2.99f);
  EXPECT_GT(hi, 4.99f);
}

TEST(RandomHostTwin, SeedsGiveDifferentStreamsAndTheSameSeedTheSameOne) {
  const RandomSpec spec = RandomSpec::normal_with(0.f, 1.f);
  int same = 0;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(random_value(i, spec, 3), random_value(i, spec, 3));
    same += random_value(i, spec, 3) == random_value(i, spec, 4);
  }
  EXPECT_LT(same, 5);
  // Neighbouring elements are not equal either (the counter is mixed).
  int equal_neighbours = 0;
  for (int i = 0; i < 1000; ++i) equal_neighbours += random_value(i, spec, 3) == random_value(i + 1, spec, 3);
  EXPECT_LT(equal_neighbours, 5);
}

// ---- on the GPU ---------------------------------------------------------------------------

// Distance in representable steps between two codes of the same type (sign-magnitude codes).
int64_t code_distance(uint32_t a, uint32_t b, RandomType type) {
  const int bits = 8 * static_cast<int>(random_type_size(type));
  const uint32_t sign = 1u << (bits - 1);
  auto ordered = [&](uint32_t c) -> int64_t {
    return (c & sign) ? -static_cast<int64_t>(c & (sign - 1)) : static_cast<int64_t>(c);
  };
  return std::llabs(ordered(a) - ordered(b));
}

std::vector<uint32_t> download_codes(const DeviceBuffer& buf, RandomType type, size_t count, cudaStream_t stream) {
  const size_t es = random_type_size(type);
  std::vector<uint8_t> raw(count * es);
  copy_to_host(raw.data(), buf.data(), raw.size(), stream);
  std::vector<uint32_t> codes(count);
  for (size_t i = 0; i < count; ++i) {
    uint32_t c = 0;
    std::memcpy(&c, raw.data() + i * es, es);
    codes[i] = c;
  }
  return codes;
}

struct FillCase {
  RandomType type;
  RandomSpec spec;
  const char* name;
};

TEST(RandomFill, EveryElementMatchesTheHostTwinAndNothingPastTheEndIsWritten) {
  QF_REQUIRE_GPU();
  Stream stream;
  // Odd count: the grid-stride loop's tail is exercised; 2^20 elements exceed one grid pass.
  const size_t count = (size_t{1} << 21) + 17;
  const size_t guard_bytes = 64;
  const FillCase cases[] = {
      {RandomType::f32, RandomSpec::uniform_in(-1.f, 1.f), "f32 uniform"},
      {RandomType::bf16, RandomSpec::uniform_in(-0.5f, 2.f), "bf16 uniform"},
      {RandomType::fp8_e4m3, RandomSpec::uniform_in(-448.f, 448.f), "fp8 uniform"},
      {RandomType::f32, RandomSpec::normal_with(0.f, 1.f), "f32 normal"},
      {RandomType::bf16, RandomSpec::normal_with(0.1f, 0.02f), "bf16 normal"},
      {RandomType::fp8_e4m3, RandomSpec::normal_with(0.f, 100.f), "fp8 normal (saturating tails)"},
  };
  for (const FillCase& c : cases) {
    SCOPED_TRACE(c.name);
    const size_t es = random_type_size(c.type);
    DeviceBuffer buf(count * es + guard_bytes, "test fill");
    QF_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0xA5, buf.size(), stream));
    const uint64_t seed = 0x1234 + static_cast<uint64_t>(c.type);
    fill_random(buf.data(), c.type, count, c.spec, seed, stream);
    const std::vector<uint32_t> dev = download_codes(buf, c.type, count, stream);

    std::vector<uint8_t> guard(guard_bytes);
    copy_to_host(guard.data(), buf.as<uint8_t>() + count * es, guard_bytes, stream);
    for (size_t i = 0; i < guard_bytes; ++i) ASSERT_EQ(guard[i], 0xA5) << "byte " << i << " past the end was written";

    const bool exact = c.spec.kind == RandomSpec::uniform;
    size_t zeros = 0, mismatches = 0;
    for (size_t i = 0; i < count; ++i) {
      const uint32_t host = random_bits(i, c.type, c.spec, seed);
      const int64_t d = code_distance(dev[i], host, c.type);
      // Uniform: exact arithmetic, bit-identical. Normal: the device's double log/cos may differ
      // from the host's in the last bit, which can move the rounded value by one step.
      if (exact ? d != 0 : d > 1) {
        if (++mismatches < 5)
          ADD_FAILURE() << "element " << i << ": device code 0x" << std::hex << dev[i] << ", host 0x" << host
                        << std::dec;
      }
      zeros += (dev[i] & ~(1u << (8 * es - 1))) == 0;
      if (c.type == RandomType::f32) {
        ASSERT_TRUE(std::isfinite(bits_to_f32(dev[i]))) << "element " << i;
      }
    }
    EXPECT_EQ(mismatches, 0u);
    EXPECT_LT(zeros, count / 100) << "a random fill must not be (mostly) zeros";
  }
}

TEST(RandomFill, DifferentSeedsGiveDifferentData) {
  QF_REQUIRE_GPU();
  Stream stream;
  const size_t n = 4096;
  DeviceBuffer a(n * 2, "a"), b(n * 2, "b");
  fill_random(a.data(), RandomType::bf16, n, RandomSpec::normal_with(0.f, 1.f), 1, stream);
  fill_random(b.data(), RandomType::bf16, n, RandomSpec::normal_with(0.f, 1.f), 2, stream);
  std::vector<uint16_t> ha(n), hb(n);
  copy_to_host(ha.data(), a.data(), n * 2, stream);
  copy_to_host(hb.data(), b.data(), n * 2, stream);
  size_t equal = 0;
  for (size_t i = 0; i < n; ++i) equal += ha[i] == hb[i];
  EXPECT_LT(equal, n / 50);  // two normal bf16 values coincide with probability ~1%
}

TEST(RandomFill, RejectsBadSpecs) {
  // Checked on the host before any launch: runs without a GPU.
  int dummy = 0;
  EXPECT_THROW(fill_random(&dummy, RandomType::f32, 1, RandomSpec::uniform_in(1.f, 1.f), 0, nullptr), Error);
  EXPECT_THROW(fill_random(&dummy, RandomType::f32, 1, RandomSpec::normal_with(0.f, 0.f), 0, nullptr), Error);
  EXPECT_THROW(fill_random(nullptr, RandomType::f32, 1, RandomSpec::normal_with(0.f, 1.f), 0, nullptr), Error);
}

TEST(FillU16, WritesExactlyCountElements) {
  QF_REQUIRE_GPU();
  Stream stream;
  const size_t count = 100003;
  DeviceBuffer buf((count + 8) * 2, "poison test");
  QF_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0, buf.size(), stream));
  fill_u16(buf.data(), 0x7FC1, count, stream);
  std::vector<uint16_t> h(count + 8);
  copy_to_host(h.data(), buf.data(), h.size() * 2, stream);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(h[i], 0x7FC1) << i;
  for (size_t i = count; i < count + 8; ++i) ASSERT_EQ(h[i], 0) << i;
}

TEST(DeviceBuffer, RoundTripsAndMoves) {
  QF_REQUIRE_GPU();
  Stream stream;
  std::vector<float> in(1000), out(1000, -1.f);
  for (int i = 0; i < 1000; ++i) in[i] = 0.5f * i - 7.f;
  DeviceBuffer a(in.size() * 4, "round trip");
  copy_to_device(a.data(), in.data(), in.size() * 4, stream);
  DeviceBuffer b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  ASSERT_EQ(b.size(), in.size() * 4);
  copy_to_host(out.data(), b.data(), out.size() * 4, stream);
  EXPECT_EQ(in, out);
}

TEST(DeviceBuffer, TooLargeAllocationSaysWhatWasNeededAndWhatIsFree) {
  QF_REQUIRE_GPU();
  const size_t huge = size_t{1} << 50;  // 1 PiB
  try {
    DeviceBuffer b(huge, "the test's giant tensor");
    FAIL() << "a 1 PiB allocation succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("the test's giant tensor"), std::string::npos) << msg;
    EXPECT_NE(msg.find("needs 1048576.00 GiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("free of"), std::string::npos) << msg;
  }
  // The failed allocation left no error behind for the next call.
  DeviceBuffer ok(1024, "after the failure");
  EXPECT_NE(ok.data(), nullptr);
  QF_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_THROW(require_device_memory(huge, "a model"), Error);
  EXPECT_NO_THROW(require_device_memory(1024, "a tiny model"));
}

TEST(DeviceArena, AlignsBumpsReleasesAndReportsOverflow) {
  QF_REQUIRE_GPU();
  const size_t cap = size_t{1} << 20;
  DeviceArena arena(cap, "test arena");
  EXPECT_EQ(arena.capacity(), cap);
  char* a = static_cast<char*>(arena.alloc(3, "a"));
  char* b = static_cast<char*>(arena.alloc(100, "b"));
  char* c = static_cast<char*>(arena.alloc(10, "c", 16));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 256, 0u);
  EXPECT_EQ(b - a, 256);  // 3 bytes, rounded up to the next 256-byte boundary
  EXPECT_EQ(c - b, 112);  // 100 bytes, rounded up to 16
  EXPECT_EQ(arena.used(), 256u + 112u + 10u);

  const size_t mark = arena.mark();
  char* d = static_cast<char*>(arena.alloc(1000, "scratch"));
  EXPECT_EQ(d - a, 512);
  EXPECT_EQ(arena.peak(), 512u + 1000u);
  arena.release_to(mark);
  EXPECT_EQ(arena.used(), mark);
  EXPECT_EQ(static_cast<char*>(arena.alloc(1, "again")), d);  // the released space is reused
  EXPECT_THROW(arena.alloc(1, "bad alignment", 3), Error);
  EXPECT_THROW(arena.release_to(cap + 1), Error);

  try {
    arena.alloc(cap, "the KV cache");
    FAIL() << "an allocation larger than the arena succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("arena 'test arena' cannot fit the KV cache"), std::string::npos) << msg;
    EXPECT_NE(msg.find("needs 1.00 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("left of"), std::string::npos) << msg;
  }
  // Memory written through arena pointers is real device memory.
  QF_CUDA_CHECK(cudaMemset(a, 0x11, 256));
  QF_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace qf::cuda
