#include "formats/packing.h"

#include <cstring>

#include "core/error.h"

namespace qf {
namespace {

void check_args(int64_t n, int bits) {
  QF_CHECK(bits >= 1 && bits <= 8, "bit packing: code width ", bits, " is not 1..8");
  QF_CHECK(n >= 0, "bit packing: negative element count ", n);
}

// One writer for both word types: element i's bits go to stream position i*bits, split over at
// most two words (bits <= 8 <= the word width).
template <typename Word>
void pack_stream(const uint8_t* codes, int64_t n, int bits, Word* out) {
  check_args(n, bits);
  constexpr int kWordBits = int(sizeof(Word) * 8);
  const size_t words = (size_t(n) * size_t(bits) + kWordBits - 1) / kWordBits;
  if (words == 0) return;  // n == 0: `out` may be null (an empty vector's data())
  std::memset(out, 0, words * sizeof(Word));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t code = codes[i];
    QF_CHECK((code >> bits) == 0, "bit packing: code ", code, " at index ", i, " does not fit in ", bits, " bits");
    const uint64_t pos = uint64_t(i) * uint64_t(bits);
    const size_t w = size_t(pos / kWordBits);
    const int offset = int(pos % kWordBits);
    out[w] = Word(out[w] | Word(code << offset));
    if (offset + bits > kWordBits) out[w + 1] = Word(out[w + 1] | Word(code >> (kWordBits - offset)));
  }
}

template <typename Word>
void unpack_stream(const Word* packed, int64_t n, int bits, uint8_t* codes) {
  check_args(n, bits);
  constexpr int kWordBits = int(sizeof(Word) * 8);
  const uint32_t mask = (1u << bits) - 1u;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t pos = uint64_t(i) * uint64_t(bits);
    const size_t w = size_t(pos / kWordBits);
    const int offset = int(pos % kWordBits);
    uint32_t v = uint32_t(packed[w]) >> offset;
    if (offset + bits > kWordBits) v |= uint32_t(packed[w + 1]) << (kWordBits - offset);
    codes[i] = uint8_t(v & mask);
  }
}

}  // namespace

size_t packed_bytes(int64_t n, int bits) {
  check_args(n, bits);
  return (size_t(n) * size_t(bits) + 7) / 8;
}

size_t packed_words(int64_t n, int bits) {
  check_args(n, bits);
  return (size_t(n) * size_t(bits) + 31) / 32;
}

void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out) { pack_stream(codes, n, bits, out); }
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint32_t* out) { pack_stream(codes, n, bits, out); }
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes) { unpack_stream(packed, n, bits, codes); }
void unpack_bits(const uint32_t* packed, int64_t n, int bits, uint8_t* codes) { unpack_stream(packed, n, bits, codes); }

std::vector<uint8_t> pack_bits(const std::vector<uint8_t>& codes, int bits) {
  std::vector<uint8_t> out(packed_bytes(int64_t(codes.size()), bits));
  pack_bits(codes.data(), int64_t(codes.size()), bits, out.data());
  return out;
}

std::vector<uint8_t> unpack_bits(const std::vector<uint8_t>& packed, int64_t n, int bits) {
  QF_CHECK(packed.size() >= packed_bytes(n, bits), "bit packing: ", packed.size(), " bytes cannot hold ", n, " codes of ",
           bits, " bits (", packed_bytes(n, bits), " needed)");
  std::vector<uint8_t> codes(static_cast<size_t>(n));
  unpack_bits(packed.data(), n, bits, codes.data());
  return codes;
}

}  // namespace qf
