// Bit-parallel dequantization of FPx weights in registers, and the FPx tile layout's index maps,
// shared by the kernels (fpx_gemm.cu), the host pre-packing (weight_prepack.cpp) and the tests.
// Everything here compiles for the host too (QF_HOST_DEVICE, no CUDA header): the CPU tests run
// these very functions over every code. docs/kernels/fpx_gemm.md has the diagrams.
//
// ---- FPx (1 + E + M = 4 + r bits, r = 1 or 2) -> BF16 -------------------------------------
// The packed layout (weight_prepack.h) stores each code as its low 4 bits (a nibble) and its top r
// bits (the "high part", sign first) in separate, 16-byte aligned segments (FP6-LLM's bit-level
// pre-packing), so every load is an aligned 16- or 8-byte word. In registers the two parts are
// merged into the BYTE FORM: one code per byte, left-aligned,
//
//     byte bit   7      6 ..                  (8-B)   (7-B) .. 0
//                sign   exponent (E) mantissa (M)      don't care          (B = 1 + E + M)
//
// with one shift of the nibble word (nibbles land on byte bits 8-B .. 11-B) and one shift of a high
// word (its r bits land on byte bits 8-r .. 7), joined by a bit-select: 3 ALU instructions per four
// codes. From a byte-form word b (bytes b0 b1 b2 b3) two BF16x2 registers follow by masks and
// shifts: the odd bytes b1, b3 already sit in the top byte of each 16-bit half, so
//
//     odd  = (b & 0x80008000) | ((b & magnitude bits of b1, b3) >> (8 - E))
//     even = the same on (b << 8)          (b0 -> low half, b2 -> high half)
//
// put the sign on BF16's sign bit, the E exponent bits on the low E bits of BF16's exponent field
// (bits 7 .. 6+E) and the M mantissa bits on the top of BF16's mantissa (bits 6 .. 7-M). That BF16
// number reads the FPx fields with BF16's bias 127 instead of the FPx bias b = 2^(E-1) - 1, so
//   normal FPx (exponent field e >= 1):   (1 + f/2^M) * 2^(e - 127)   (a BF16 normal)
//   subnormal FPx (e = 0):                  f/2^M   * 2^(-126)        (a BF16 subnormal)
// and ONE multiply by 2^(127 - b) turns both into the FPx value: (1 + f/2^M) 2^(e-b) and
// f/2^M 2^(1-b). The multiply is exact: 2^(127-b) is a power of two (<= 2^127, a BF16 normal), and
// every FPx value is a BF16 normal (at least 2^(1-b-M) >= 2^-69, at most 2^(2^E-1-b+1) < 2^65, with
// at most 4 significant bits of BF16's 8), so the exact product is representable and no rounding
// mode can change it. This needs the BF16 multiply to take subnormal inputs as they are (no flush
// to zero): PTX's mul.rn.bf16x2 (sm_90) has no .ftz form and supports subnormals; the GPU test
// FpxDequant.DeviceMatchesTheFormatForEveryCode checks it on the hardware code by code.
//
// The per-channel scale is NOT folded into that multiply (FP6-LLM folds it, in FP16): decode(code)
// times an FP32 scale is generally not a BF16 number, so folding would round every weight to 8
// significant bits. The kernels apply the scale in FP32 to the finished K-sum of each output
// channel (one multiply per output), which is the spec's value (formats/quantize.h) up to FP32
// rounding.
#pragma once

#include <cstdint>

#include "formats/bf16.h"
#include "formats/host_device.h"

namespace qf::cuda {

// ---- small bit helpers ------------------------------------------------------------------------

QF_HOST_DEVICE constexpr uint32_t replicate_byte(uint32_t byte) { return byte * 0x01010101u; }
QF_HOST_DEVICE constexpr uint32_t replicate_half(uint32_t half) { return half * 0x00010001u; }

// d = a * b on two BF16 lanes, rounded to nearest even (PTX mul.rn.bf16x2). On the host: the
// product of two BF16 numbers (8-bit significands) is exact in FP32, so one bf16_encode of it is
// the same single rounding the instruction makes (subnormal inputs included).
QF_HOST_DEVICE inline uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
#else
  const uint32_t lo = bf16_encode(bf16_decode(uint16_t(a)) * bf16_decode(uint16_t(b)));
  const uint32_t hi = bf16_encode(bf16_decode(uint16_t(a >> 16)) * bf16_decode(uint16_t(b >> 16)));
  return lo | hi << 16;
#endif
}


// ---- FPx ----------------------------------------------------------------------------------------

// Everything fixed by the element type eXmY, for E + M + 1 = 5 or 6 bits.
template <int E, int M>
struct FpxCodec {
  static constexpr int kExpBits = E;
  static constexpr int kManBits = M;
  static constexpr int kBits = 1 + E + M;
  static constexpr int kHiBits = kBits - 4;  // r: bits of each code stored in the high segment
  static_assert(E >= 1 && (kHiBits == 1 || kHiBits == 2), "the split layout holds 5- and 6-bit codes");
  static constexpr int kBias = (1 << (E - 1)) - 1;
  // Byte-form words one 32-bit high-part word feeds: it holds 32 / r high parts, 4 per byte-form word.
  static constexpr int kByteWordsPerHiWord = 8 / kHiBits;
  // The high part's place in a byte-form byte: bits 8-r .. 7.
  static constexpr uint32_t kHiByteMask = replicate_byte((0xFFu << (8 - kHiBits)) & 0xFFu);
  // Shifts that move a nibble word's high / low nibbles onto byte bits 8-B .. 11-B.
  static constexpr int kHighNibbleShiftRight = kHiBits;    // bits 4..7 -> 4-r .. 7-r
  static constexpr int kLowNibbleShiftLeft = 4 - kHiBits;  // bits 0..3 -> 4-r .. 7-r
  // Exponent + mantissa bits of the codes in bytes 1 and 3 of a byte-form word.
  static constexpr uint32_t kMagnitudeInByte = ((1u << (E + M)) - 1u) << (8 - kBits);
  static constexpr uint32_t kOddMagnitude = kMagnitudeInByte << 8 | kMagnitudeInByte << 24;
  static constexpr uint32_t kSigns = 0x80008000u;
  // Byte bit 6 (the exponent's top bit) must land on BF16 bit 6 + E.
  static constexpr int kToBf16Shift = 8 - E;
  // 2^(127 - bias) in both BF16 lanes: biased exponent 127 + (127 - bias), mantissa 0.
  static constexpr uint32_t kBiasCorrection = replicate_half(uint32_t(254 - kBias) << 7);
};

// A byte-form word from a nibble word and a high-part word, each already shifted into place
// (nibbles on byte bits 8-B .. 11-B, high parts on bits 8-r .. 7). Bits the masks leave to the
// nibble word below the code are garbage that the BF16 conversion masks off.
template <class Codec>
QF_HOST_DEVICE constexpr uint32_t fpx_byte_form(uint32_t nibbles_in_place, uint32_t hi_in_place) {
  return (hi_in_place & Codec::kHiByteMask) | (nibbles_in_place & ~Codec::kHiByteMask);
}

// Codes of bytes 1 and 3 (odd) or 0 and 2 (even) of a byte-form word -> BF16x2 holding their exact
// values (lower byte in the low half).
template <class Codec>
QF_HOST_DEVICE inline uint32_t fpx_odd_bytes_to_bf16x2(uint32_t byte_form) {
  const uint32_t placed = (byte_form & Codec::kSigns) | ((byte_form & Codec::kOddMagnitude) >> Codec::kToBf16Shift);
  return bf16x2_mul(placed, Codec::kBiasCorrection);
}
template <class Codec>
QF_HOST_DEVICE inline uint32_t fpx_even_bytes_to_bf16x2(uint32_t byte_form) {
  return fpx_odd_bytes_to_bf16x2<Codec>(byte_form << 8);
}

// One code (its value as BF16 bits) through the same instructions, for the exhaustive tests: the
// code is placed as byte 1 of a byte form built from its nibble and high part exactly as the kernel
// builds it (the nibble as a high nibble of a nibble word, the high part at shift 0).
template <class Codec>
QF_HOST_DEVICE inline uint16_t fpx_code_to_bf16(uint32_t code) {
  const uint32_t nibble_word = (code & 0xFu) << 12;                       // high nibble of byte 1
  const uint32_t hi_word = (code >> 4) << (8 - Codec::kHiBits) << 8;      // top of byte 1
  const uint32_t b = fpx_byte_form<Codec>(nibble_word >> Codec::kHighNibbleShiftRight, hi_word);
  return uint16_t(fpx_odd_bytes_to_bf16x2<Codec>(b));
}

// ---- the FPx tile layout (weight_prepack.h) -------------------------------------------------------
// A tile is 16 weight rows x 64 k, the A operand of four mma.m16n8k16 (j = 0..3) for the 32 lanes of
// a warp. Lane l = 4g + t owns rows g and g+8 and the 16 consecutive k 16t .. 16t+15 of the tile:
// MMA j takes k 16t + 4j .. 16t + 4j + 3 from it, so that the lane's activations are 32 contiguous
// bytes (two 16-byte loads) whose words 2j, 2j+1 are MMA j's B fragment (b0: k +0,+1; b1: k +2,+3).
// A fragment of MMA j: a0 = (row g, k +0,+1), a1 = (row g+8, k +0,+1), a2 = (row g, k +2,+3),
// a3 = (row g+8, k +2,+3), the low BF16 half holding the smaller k. (PTX ISA, "Matrix fragments for
// mma.m16n8k16": a0/a1 hold A columns 2t, 2t+1 and a2/a3 columns 2t+8, 2t+9, as do b0/b1's rows;
// the physical k behind a logical column may be any bijection shared by A and B.)
//
// Bytes of a tile (B = 4 + r bits per code, 16 * 64 * B / 8 = 128 B bytes):
//   [0, 512):           nibble segment, lane l's 16 bytes at 16 l: nibble word j (j = 0..3) =
//                       bytes 4j .. 4j+3; byte i of it holds k = 16t + 4j + kFpxBytePosition[i],
//                       row g in the high nibble and row g+8 in the low nibble
//   [512, 512 + 128 r): high segment, lane l's 4r bytes at 512 + 4 r l: r words; byte-form word
//                       f = 2j + h (h = 0: row g, 1: row g+8) takes its high parts from word
//                       f / (8/r), bits 8-r-r s .. 7-r s of each byte, s = f % (8/r)
// Byte i = 0, 1, 2, 3 of a byte-form word converts to (even: bytes 0, 2 -> a0/a1; odd: bytes 1, 3
// -> a2/a3), so the k offsets of the bytes are +0, +2, +1, +3.
inline constexpr int kFpxTileRows = 16;
inline constexpr int kFpxTileK = 64;
inline constexpr int kFpxNibbleSegmentBytes = 512;  // 32 lanes x 16 bytes
QF_HOST_DEVICE constexpr int fpx_byte_position(int i) { return i == 1 ? 2 : i == 2 ? 1 : i; }
QF_HOST_DEVICE constexpr int fpx_tile_k(int t, int j, int i) { return 16 * t + 4 * j + fpx_byte_position(i); }
QF_HOST_DEVICE constexpr int fpx_tile_bytes(int bits) { return kFpxTileRows * kFpxTileK * bits / 8; }
QF_HOST_DEVICE constexpr int fpx_lane_nibble_offset(int lane) { return 16 * lane; }
QF_HOST_DEVICE constexpr int fpx_lane_hi_offset(int lane, int hi_bits) { return kFpxNibbleSegmentBytes + 4 * hi_bits * lane; }

// The A fragment of MMA j from the lane's nibble word j and its r high-part words. `j` is a
// compile-time constant in the kernels (unrolled loops), so the indexing stays in registers.
template <class Codec>
QF_HOST_DEVICE inline void fpx_a_fragment(uint32_t nibble_word, const uint32_t* hi_words, int j, uint32_t (&a)[4]) {
  constexpr int kPer = Codec::kByteWordsPerHiWord;
  const int f_lo = 2 * j, f_hi = 2 * j + 1;  // byte-form words of rows g and g+8
  const uint32_t hi_lo = hi_words[f_lo / kPer] << (Codec::kHiBits * (f_lo % kPer));
  const uint32_t hi_hi = hi_words[f_hi / kPer] << (Codec::kHiBits * (f_hi % kPer));
  const uint32_t row_g = fpx_byte_form<Codec>(nibble_word >> Codec::kHighNibbleShiftRight, hi_lo);
  const uint32_t row_g8 = fpx_byte_form<Codec>(nibble_word << Codec::kLowNibbleShiftLeft, hi_hi);
  a[0] = fpx_even_bytes_to_bf16x2<Codec>(row_g);
  a[1] = fpx_even_bytes_to_bf16x2<Codec>(row_g8);
  a[2] = fpx_odd_bytes_to_bf16x2<Codec>(row_g);
  a[3] = fpx_odd_bytes_to_bf16x2<Codec>(row_g8);
}

}  // namespace qf::cuda
