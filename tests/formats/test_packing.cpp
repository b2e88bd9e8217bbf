// The canonical bit stream: known layouts written out by hand, every stream bit checked against
// the definition (bit k of the stream = bit k % B of code k / B), byte and word packing giving the
// same memory, round trips for every width and odd lengths, and the errors.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/error.h"
#include "formats/packing.h"

namespace qf {
namespace {

TEST(Packing, Int4TwoPerByteLowNibbleFirst) {
  EXPECT_EQ(pack_bits({0x1, 0x2, 0x3}, 4), (std::vector<uint8_t>{0x21, 0x03}));
  EXPECT_EQ(pack_bits({0xF, 0x0, 0xA, 0x5}, 4), (std::vector<uint8_t>{0x0F, 0x5A}));
}

TEST(Packing, Fp6CrossesBytes) {
  // Codes a = 0b111111, b = 0b000001, c = 0b101010, d = 0b010101 occupy stream bits 0-5, 6-11,
  // 12-17, 18-23: byte 0 = b[1:0] a = 01 111111, byte 1 = c[3:0] b[5:2] = 1010 0000,
  // byte 2 = d[5:0] c[5:4] = 010101 10.
  EXPECT_EQ(pack_bits({0x3F, 0x01, 0x2A, 0x15}, 6), (std::vector<uint8_t>{0x7F, 0xA0, 0x56}));
  EXPECT_EQ(packed_bytes(4, 6), 3u);
  EXPECT_EQ(packed_bytes(5, 6), 4u);
  EXPECT_EQ(packed_bytes(5, 5), 4u);  // 25 bits
  EXPECT_EQ(packed_words(6, 6), 2u);  // 36 bits
  EXPECT_EQ(packed_bytes(0, 3), 0u);
}

std::vector<uint8_t> random_codes(std::mt19937& rng, int64_t n, int bits) {
  std::vector<uint8_t> c(static_cast<size_t>(n));
  for (uint8_t& v : c) v = uint8_t(rng() & ((1u << bits) - 1u));
  return c;
}

TEST(Packing, EveryStreamBitFollowsTheDefinition) {
  std::mt19937 rng(11);
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t n : {1, 2, 3, 7, 8, 31, 33, 67}) {
      const std::vector<uint8_t> codes = random_codes(rng, n, bits);
      const std::vector<uint8_t> packed = pack_bits(codes, bits);
      ASSERT_EQ(packed.size(), size_t((n * bits + 7) / 8));
      for (int64_t k = 0; k < int64_t(packed.size()) * 8; ++k) {
        const int stream_bit = (packed[size_t(k / 8)] >> (k % 8)) & 1;
        const int want = k < n * bits ? (codes[size_t(k / bits)] >> (k % bits)) & 1 : 0;  // padding is 0
        ASSERT_EQ(stream_bit, want) << "bits " << bits << " n " << n << " stream bit " << k;
      }
    }
}

TEST(Packing, RoundTripBytesAndWords) {
  std::mt19937 rng(5);
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t n = 0; n <= 70; ++n) {
      const std::vector<uint8_t> codes = random_codes(rng, n, bits);
      const std::vector<uint8_t> bytes = pack_bits(codes, bits);
      EXPECT_EQ(unpack_bits(bytes, n, bits), codes) << "bits " << bits << " n " << n;
      std::vector<uint32_t> words(packed_words(n, bits) + 1, 0xDEADBEEF);
      pack_bits(codes.data(), n, bits, words.data());
      EXPECT_EQ(words.back(), 0xDEADBEEF) << "wrote past packed_words";
      // Little-endian words hold the same stream as the bytes (this machine is little-endian).
      std::vector<uint8_t> word_bytes(packed_words(n, bits) * 4, 0);
      std::memcpy(word_bytes.data(), words.data(), word_bytes.size());
      std::vector<uint8_t> padded = bytes;
      padded.resize(word_bytes.size(), 0);
      EXPECT_EQ(word_bytes, padded) << "bits " << bits << " n " << n;
      std::vector<uint8_t> back(static_cast<size_t>(n));
      unpack_bits(words.data(), n, bits, back.data());
      EXPECT_EQ(back, codes);
    }
}

TEST(Packing, Errors) {
  EXPECT_THROW(pack_bits({0x10}, 4), Error);  // 16 does not fit in 4 bits
  EXPECT_THROW(pack_bits({1}, 0), Error);
  EXPECT_THROW(pack_bits({1}, 9), Error);
  EXPECT_THROW(unpack_bits(std::vector<uint8_t>{0x12}, 3, 4), Error);  // 3 nibbles need 2 bytes
  try {
    pack_bits({1, 2, 40}, 5);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("code 40 at index 2 does not fit in 5 bits"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qf
