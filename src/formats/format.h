// Format: a value describing how a tensor is stored (DESIGN.md) — the element type, how the
// elements are scaled (granularity, scale element type, zero points, a per-tensor scale on top).
// It is what recipes name, what checkpoints record and what the kernel registry is keyed by, so
// it has a compact string form that parses and prints back unchanged:
//
//   format  := element { ":" option }
//   element := "f32" | "f16" | "bf16" | "fp8_e4m3" | "fp8_e5m2"
//            | "fp" N "_e" E "m" M            FPx, N = 1 + E + M (fp6_e3m2, fp5_e2m2, fp4_e2m1)
//            | "int" B                        B = 2..8
//   option  := "tensor" | "channel" | "token" | "g" G     scale granularity (at most one)
//            | "asym"                                     zero points, unsigned codes (int only)
//            | "scale=" element                           scale element type (default f32)
//            | "tensor_scale"                             an F32 scale over all scales
//            | "lut"                                      FireQ's lookup-table values (below)
//
// Printing writes the options in the order above and leaves defaults out, e.g.
// "int4:g128:asym:scale=fp8_e4m3:tensor_scale" or "int4:g128:scale=fp8_e4m3:tensor_scale:lut".
// Parsing accepts the options in any order.
//
// lut (FireQ, arXiv 2505.20839): a symmetric int<B> element with an 8-bit float scale type
// (scale=fp8_e4m3 or fp8_e5m2) and a scale granularity, where a code q stands for the product
// q * sigma (sigma the stored block scale) rounded to the scale type, times the tensor scale:
// the values of the 16-entry FP8 table FireQ's kernel builds per group and feeds to the FP8
// tensor cores. quantize.h gives the exact arithmetic.
// What each combination means numerically is defined by formats/quantize.h; the element
// codecs are bf16.h, fp16.h, fp8.h, fpx.h. docs/formats.md has the whole picture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "formats/fpx.h"

namespace qf {

enum class ElementKind : uint8_t { f32, f16, bf16, fp8_e4m3, fp8_e5m2, fpx, int_ };

struct ElementType {
  ElementKind kind = ElementKind::f32;
  uint8_t exp_bits = 0;  // fpx only
  uint8_t man_bits = 0;  // fpx only
  uint8_t int_bits = 0;  // int only

  static constexpr ElementType of(ElementKind k) { return {k, 0, 0, 0}; }
  static constexpr ElementType fpx(FpxType t) { return {ElementKind::fpx, uint8_t(t.exp_bits), uint8_t(t.man_bits), 0}; }
  static constexpr ElementType integer(int bits) { return {ElementKind::int_, 0, 0, uint8_t(bits)}; }

  int bits() const;
  bool is_int() const { return kind == ElementKind::int_; }
  // Every element type except int is a float format with encode/decode below.
  bool is_float() const { return !is_int(); }
  FpxType fpx_type() const { return {exp_bits, man_bits}; }
  // Largest finite value (float kinds).
  float max_value() const;

  std::string str() const;
  // Throws qf::Error naming `what` (e.g. the whole format string) and what was expected.
  static ElementType parse(std::string_view text, std::string_view what);

  friend bool operator==(const ElementType&, const ElementType&) = default;
};

// Encode/decode one value of a float element type (f32, f16, bf16, fp8 satfinite, fpx) through
// its codec; the code is returned in the low bits. Int types throw.
uint32_t encode_float_element(ElementType type, float x);
float decode_float_element(ElementType type, uint32_t code);

// How many elements share one scale. For a [rows, cols] matrix: tensor = all of it; channel and
// token = one row (a weight's output channel, an activation's token: the same arithmetic, two
// names because one is fixed offline and the other computed per forward pass); group = G
// consecutive elements of a row.
enum class Granularity : uint8_t { none, tensor, channel, token, group };

struct Format {
  ElementType element;
  Granularity granularity = Granularity::none;
  int32_t group_size = 0;  // group only
  bool asymmetric = false;
  ElementType scale_type;  // f32 unless scale= says otherwise
  bool tensor_scale = false;
  bool lut = false;  // code values are round_scale_type(q * sigma) (FireQ; see above)

  bool scaled() const { return granularity != Granularity::none; }
  // Throws qf::Error if the fields do not describe a format (parse calls it).
  void validate() const;

  std::string str() const;
  static Format parse(std::string_view text);

  friend bool operator==(const Format&, const Format&) = default;
};

}  // namespace qf

template <>
struct std::hash<qf::Format> {
  size_t operator()(const qf::Format& f) const noexcept;
};
