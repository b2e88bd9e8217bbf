// All 2^32 F32 inputs through the 16-bit encoders, each against an implementation that shares
// nothing with it: F16 against the CPU's own F16C conversion (vcvtps2ph, round to nearest even;
// only NaNs differ, by documented choice), BF16 (an add-and-shift) against the generic
// shift-compare rounder of minifloat.h that FP8 and FPx use. Runs on the thread pool in chunks
// through the vectorised convert.h loops, so the loops are checked too.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "core/thread_pool.h"
#include "float_reference.h"
#include "formats/bf16.h"
#include "formats/convert.h"
#include "formats/fp16.h"
#include "formats/minifloat.h"

namespace qf {
namespace {

constexpr int64_t kChunk = int64_t(1) << 20;
constexpr int64_t kChunks = (int64_t(1) << 32) / kChunk;

// Calls check(first_bits, converted, count) on every chunk of the F32 bit patterns, converted by
// `convert` (one of convert.h's loops); returns the number of mismatches check counted.
template <typename Convert, typename Check>
int64_t for_all_floats(Convert convert, Check check) {
  std::atomic<int64_t> mismatches{0};
  parallel_for(kChunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> in(kChunk);
    std::vector<uint16_t> out(kChunk);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const uint32_t first = uint32_t(chunk * kChunk);
      for (int64_t i = 0; i < kChunk; ++i) in[size_t(i)] = test::float_of(first + uint32_t(i));
      convert(in.data(), out.data(), kChunk);
      mismatches += check(first, in.data(), out.data());
    }
  });
  return mismatches;
}

TEST(ExhaustiveF32, Bf16MatchesGenericRounder) {
  const int64_t mismatches = for_all_floats(
      [](const float* in, uint16_t* out, int64_t n) { f32_to_bf16(in, out, n); },
      [](uint32_t first, const float*, const uint16_t* out) {
        // The reference first, in a loop of its own (it vectorises), then the comparison.
        std::vector<uint16_t> want(kChunk);
        for (int64_t i = 0; i < kChunk; ++i) {
          const uint32_t bits = first + uint32_t(i);
          uint32_t magnitude = round_to_minifloat(bits & 0x7FFFFFFFu, 7, 127);
          if (magnitude > 0x7F80u) magnitude = 0x7F80u;  // past the largest finite: inf
          want[size_t(i)] = f32_is_nan(bits) ? kBf16CanonicalNaN : uint16_t(((bits >> 16) & 0x8000u) | magnitude);
        }
        int64_t bad = 0;
        for (int64_t i = 0; i < kChunk; ++i)
          if (out[i] != want[size_t(i)] && bad++ < 4)
            ADD_FAILURE() << std::hex << "bf16 of 0x" << first + uint32_t(i) << ": 0x" << out[i] << ", generic rounder 0x"
                          << want[size_t(i)];
        return bad;
      });
  EXPECT_EQ(mismatches, 0);
}

#if defined(__F16C__)
TEST(ExhaustiveF32, F16MatchesF16C) {
  const int64_t mismatches = for_all_floats(
      [](const float* in, uint16_t* out, int64_t n) { f32_to_f16(in, out, n); },
      [](uint32_t first, const float* in, const uint16_t* out) {
        int64_t bad = 0;
        for (int64_t i = 0; i < kChunk; i += 8) {
          alignas(16) uint16_t hw[8];
          _mm_store_si128(reinterpret_cast<__m128i*>(hw),
                          _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
          for (int j = 0; j < 8; ++j) {
            const uint32_t bits = first + uint32_t(i + j);
            // F16C keeps a NaN's sign and payload; qforge (like CUDA) writes the canonical 0x7FFF.
            const uint16_t want = f32_is_nan(bits) ? kF16CanonicalNaN : hw[j];
            if (out[i + j] != want && bad++ < 4)
              ADD_FAILURE() << std::hex << "f16 of 0x" << bits << ": 0x" << out[i + j] << ", F16C 0x" << want;
          }
        }
        return bad;
      });
  EXPECT_EQ(mismatches, 0);
}

TEST(ExhaustiveF16, DecodeMatchesF16C) {
  for (uint32_t c = 0; c < 0x10000; ++c) {
    const float hw = _cvtsh_ss(uint16_t(c));
    const float got = f16_decode(uint16_t(c));
    ASSERT_EQ(test::bits_of(got), test::bits_of(hw)) << std::hex << "code 0x" << c;  // NaN payloads included
  }
}
#else
TEST(ExhaustiveF32, F16MatchesF16C) { GTEST_SKIP() << "built without F16C (-march below x86-64-v3)"; }
#endif

}  // namespace
}  // namespace qf
