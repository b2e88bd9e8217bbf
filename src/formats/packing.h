// The canonical storage packing of B-bit codes (B = 1..8): one little-endian bit stream.
// Element i occupies stream bits [i*B, (i+1)*B), its least significant bit first; stream bit k is
// bit k%8 of byte k/8 — equivalently bit k%32 of little-endian 32-bit word k/32, so packing into
// bytes and into words gives the same memory. Codes cross byte (and word) boundaries when B does
// not divide 8 (FP6, FP5, INT3): for B = 6, element 1 is bits 6..7 of byte 0 and 0..3 of byte 1.
// INT4 / FP4: two per byte, element 2i in the low nibble. Padding bits after the last element
// are 0.
//
// This is the layout checkpoints store; kernels that want another arrangement (interleaved,
// tiled for tensor cores) repack from it, and their layouts are documented next to them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qf {

// Bytes / 32-bit words holding n codes of `bits` bits.
size_t packed_bytes(int64_t n, int bits);
size_t packed_words(int64_t n, int bits);

// codes[i] must fit in `bits` bits (qf::Error naming the index otherwise).
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint8_t* out);      // packed_bytes(n, bits)
void pack_bits(const uint8_t* codes, int64_t n, int bits, uint32_t* out);     // packed_words(n, bits)
void unpack_bits(const uint8_t* packed, int64_t n, int bits, uint8_t* codes);
void unpack_bits(const uint32_t* packed, int64_t n, int bits, uint8_t* codes);

std::vector<uint8_t> pack_bits(const std::vector<uint8_t>& codes, int bits);
std::vector<uint8_t> unpack_bits(const std::vector<uint8_t>& packed, int64_t n, int bits);

}  // namespace qf
