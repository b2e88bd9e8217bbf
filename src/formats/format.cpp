#include "formats/format.h"

#include <charconv>
#include <limits>
#include <vector>

#include "core/error.h"
#include "formats/bf16.h"
#include "formats/fp16.h"
#include "formats/fp8.h"

namespace qf {
namespace {

constexpr std::string_view kElementGrammar =
    "f32, f16, bf16, fp8_e4m3, fp8_e5m2, fp<N>_e<E>m<M> (N = 1+E+M, E >= 1, E+M <= 7, e.g. fp6_e3m2) "
    "or int<B> (B = 2..8)";
constexpr std::string_view kOptionGrammar =
    "tensor, channel, token, g<G>, asym, scale=<element>, tensor_scale or lut";
// Group sizes beyond this are certainly typos (a row of a 70B model has 28672 elements).
constexpr int64_t kMaxGroupSize = 1 << 20;

// A non-negative decimal integer filling all of `s`, or -1.
int64_t parse_count(std::string_view s) {
  if (s.empty() || s.size() > 9) return -1;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return -1;
  return v;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::string_view granularity_name(Granularity g) {
  switch (g) {
    case Granularity::none: return "none";
    case Granularity::tensor: return "tensor";
    case Granularity::channel: return "channel";
    case Granularity::token: return "token";
    case Granularity::group: return "group";
  }
  return "?";
}

}  // namespace

int ElementType::bits() const {
  switch (kind) {
    case ElementKind::f32: return 32;
    case ElementKind::f16: case ElementKind::bf16: return 16;
    case ElementKind::fp8_e4m3: case ElementKind::fp8_e5m2: return 8;
    case ElementKind::fpx: return fpx_type().bits();
    case ElementKind::int_: return int_bits;
  }
  return 0;
}

float ElementType::max_value() const {
  switch (kind) {
    case ElementKind::f32: return std::numeric_limits<float>::max();
    case ElementKind::f16: return f16_decode(kF16Inf - 1);
    case ElementKind::bf16: return bf16_decode(0x7F7F);  // exponent 254, mantissa all ones
    case ElementKind::fp8_e4m3: return kE4M3Max;
    case ElementKind::fp8_e5m2: return kE5M2Max;
    case ElementKind::fpx: return fpx_type().max_value();
    case ElementKind::int_: break;
  }
  fail("max_value: ", str(), " is not a float element type");
}

std::string ElementType::str() const {
  switch (kind) {
    case ElementKind::f32: return "f32";
    case ElementKind::f16: return "f16";
    case ElementKind::bf16: return "bf16";
    case ElementKind::fp8_e4m3: return "fp8_e4m3";
    case ElementKind::fp8_e5m2: return "fp8_e5m2";
    case ElementKind::fpx: return qf::str("fp", bits(), "_e", int(exp_bits), "m", int(man_bits));
    case ElementKind::int_: return qf::str("int", int(int_bits));
  }
  return "?";
}

ElementType ElementType::parse(std::string_view text, std::string_view what) {
  for (ElementKind k : {ElementKind::f32, ElementKind::f16, ElementKind::bf16, ElementKind::fp8_e4m3, ElementKind::fp8_e5m2})
    if (text == of(k).str()) return of(k);
  if (starts_with(text, "int")) {
    const int64_t bits = parse_count(text.substr(3));
    QF_CHECK(bits >= 2 && bits <= 8, "format \"", what, "\": \"", text, "\" is not an integer element; expected int<B> with B = 2..8");
    return integer(int(bits));
  }
  if (starts_with(text, "fp")) {
    // fp<N>_e<E>m<M>
    const size_t underscore = text.find("_e");
    const size_t m_pos = text.find('m', underscore == std::string_view::npos ? 0 : underscore);
    QF_CHECK(underscore != std::string_view::npos && m_pos != std::string_view::npos,
             "format \"", what, "\": element \"", text, "\" is not one of ", kElementGrammar);
    const int64_t n = parse_count(text.substr(2, underscore - 2));
    const int64_t e = parse_count(text.substr(underscore + 2, m_pos - underscore - 2));
    const int64_t m = parse_count(text.substr(m_pos + 1));
    QF_CHECK(n >= 0 && e >= 0 && m >= 0, "format \"", what, "\": element \"", text, "\" is not one of ", kElementGrammar);
    QF_CHECK(FpxType::valid(int(e), int(m)), "format \"", what, "\": ", text,
             " needs at least one exponent bit and at most 7 exponent + mantissa bits (E >= 1, E + M <= 7)");
    QF_CHECK(n == 1 + e + m, "format \"", what, "\": ", text, " has 1 sign + ", e, " exponent + ", m,
             " mantissa bits = ", 1 + e + m, " bits, not ", n, "; write fp", 1 + e + m, "_e", e, "m", m);
    // fp8_e4m3 / fp8_e5m2 were matched above as the FP8 formats (with NaN / inf); their all-finite
    // namesakes would print the same, so they cannot be FPx.
    return fpx(FpxType{int(e), int(m)});
  }
  fail("format \"", what, "\": unknown element type \"", text, "\"; expected ", kElementGrammar);
}

uint32_t encode_float_element(ElementType type, float x) {
  switch (type.kind) {
    case ElementKind::f32: return f32_bits(x);
    case ElementKind::f16: return f16_encode(x);
    case ElementKind::bf16: return bf16_encode(x);
    case ElementKind::fp8_e4m3: return fp8_e4m3_encode(x);
    case ElementKind::fp8_e5m2: return fp8_e5m2_encode(x);
    case ElementKind::fpx: return fpx_encode(x, type.fpx_type());
    case ElementKind::int_: break;
  }
  fail("encode_float_element: ", type.str(), " is not a float element type");
}

float decode_float_element(ElementType type, uint32_t code) {
  switch (type.kind) {
    case ElementKind::f32: return f32_from_bits(code);
    case ElementKind::f16: return f16_decode(uint16_t(code));
    case ElementKind::bf16: return bf16_decode(uint16_t(code));
    case ElementKind::fp8_e4m3: return fp8_e4m3_decode(uint8_t(code));
    case ElementKind::fp8_e5m2: return fp8_e5m2_decode(uint8_t(code));
    case ElementKind::fpx: return fpx_decode(uint8_t(code), type.fpx_type());
    case ElementKind::int_: break;
  }
  fail("decode_float_element: ", type.str(), " is not a float element type");
}

namespace {

// The checks of Format::validate, naming the format as `name` (what the user wrote, when parsed).
void check_valid(const Format& f, std::string_view name) {
  const auto& [element, granularity, group_size, asymmetric, scale_type, tensor_scale, lut] = f;
  const auto scaled = [&] { return f.scaled(); };
  const std::string elem = element.str();
  if (element.kind == ElementKind::fpx) {
    QF_CHECK(FpxType::valid(element.exp_bits, element.man_bits), "format \"", name,
             "\": invalid FPx exponent/mantissa split (need E >= 1, E + M <= 7)");
    // An all-finite e4m3 or e5m2 would print as fp8_e4m3 / fp8_e5m2, the FP8 formats with NaN/inf.
    QF_CHECK(element.bits() != 8 || (element.exp_bits != 4 && element.exp_bits != 5), "format \"", name,
             "\": an FPx e4m3/e5m2 would be confused with FP8 fp8_e4m3/fp8_e5m2; use the FP8 element");
  }
  if (element.is_int())
    QF_CHECK(element.int_bits >= 2 && element.int_bits <= 8, "format \"", name, "\": integer width must be 2..8 bits");
  const bool plain = element.kind == ElementKind::f32 || element.kind == ElementKind::f16 || element.kind == ElementKind::bf16;
  if (plain) {
    QF_CHECK(granularity == Granularity::none && !asymmetric && scale_type == ElementType{} && !tensor_scale && !lut,
             "format \"", name, "\": ", elem, " is stored as is and takes no options");
    return;
  }
  if (element.is_int())
    QF_CHECK(scaled(), "format \"", name, "\": ", elem, " needs a scale granularity; add :tensor, :channel, :token or :g<G> (e.g. ",
             elem, ":g128)");
  if (granularity == Granularity::group)
    QF_CHECK(group_size >= 1 && group_size <= kMaxGroupSize, "format \"", name, "\": group size must be 1..", kMaxGroupSize);
  else
    QF_CHECK(group_size == 0, "format \"", name, "\": group_size is set but the granularity is ", granularity_name(granularity));
  QF_CHECK(!asymmetric || element.is_int(), "format \"", name, "\": asym (zero points) applies to int elements only, not ", elem);
  QF_CHECK(scaled() || scale_type == ElementType{}, "format \"", name, "\": scale= needs a scale granularity (tensor, channel, token or g<G>)");
  QF_CHECK(scale_type.is_float() && scale_type.kind != ElementKind::fpx, "format \"", name, "\": scale type ", scale_type.str(),
           " is not one of f32, f16, bf16, fp8_e4m3, fp8_e5m2");
  if (tensor_scale) {
    QF_CHECK(granularity == Granularity::channel || granularity == Granularity::token || granularity == Granularity::group,
             "format \"", name, "\": tensor_scale goes on top of channel, token or group scales, not ",
             granularity_name(granularity));
    QF_CHECK(scale_type.kind != ElementKind::f32, "format \"", name,
             "\": tensor_scale is for narrow scale types (scale=bf16, f16, fp8_e4m3 or fp8_e5m2); F32 scales need none");
  }
  if (lut) {
    // The table holds q * sigma rounded to the scale type, which must be the FP8 the tensor cores
    // take; q must be a signed integer so that the table is q * sigma for q = -2^(B-1)..2^(B-1)-1.
    QF_CHECK(element.is_int() && !asymmetric, "format \"", name,
             "\": lut (FireQ's INT -> FP8 lookup table) needs a symmetric int element (e.g. int4:g128:scale=fp8_e4m3:lut), not ",
             asymmetric ? elem + ":asym" : elem);
    QF_CHECK(scaled(), "format \"", name, "\": lut needs a scale granularity (e.g. :g128)");
    QF_CHECK(scale_type.kind == ElementKind::fp8_e4m3 || scale_type.kind == ElementKind::fp8_e5m2, "format \"", name,
             "\": lut needs an FP8 scale type (scale=fp8_e4m3 or scale=fp8_e5m2): the table entries are q * scale in that "
             "type; got scale=", scale_type.str());
  }
}

}  // namespace

void Format::validate() const { check_valid(*this, str()); }

std::string Format::str() const {
  std::string s = element.str();
  switch (granularity) {
    case Granularity::none: break;
    case Granularity::tensor: s += ":tensor"; break;
    case Granularity::channel: s += ":channel"; break;
    case Granularity::token: s += ":token"; break;
    case Granularity::group: s += qf::str(":g", group_size); break;
  }
  if (asymmetric) s += ":asym";
  if (scale_type != ElementType{}) s += ":scale=" + scale_type.str();
  if (tensor_scale) s += ":tensor_scale";
  if (lut) s += ":lut";
  return s;
}

Format Format::parse(std::string_view text) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  QF_CHECK(!parts[0].empty(), "format \"", text, "\": empty element type; expected ", kElementGrammar);
  Format f;
  f.element = ElementType::parse(parts[0], text);
  bool seen_scale = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string_view opt = parts[i];
    const auto set_granularity = [&](Granularity g) {
      QF_CHECK(f.granularity == Granularity::none, "format \"", text, "\": more than one scale granularity (",
               granularity_name(f.granularity), " and ", opt, ")");
      f.granularity = g;
    };
    if (opt == "tensor") set_granularity(Granularity::tensor);
    else if (opt == "channel") set_granularity(Granularity::channel);
    else if (opt == "token") set_granularity(Granularity::token);
    else if (opt.size() > 1 && opt[0] == 'g' && opt[1] >= '0' && opt[1] <= '9') {
      const int64_t g = parse_count(opt.substr(1));
      QF_CHECK(g >= 1 && g <= kMaxGroupSize, "format \"", text, "\": \"", opt, "\" is not a group size; expected g<G> with G = 1..",
               kMaxGroupSize, " (e.g. g128)");
      set_granularity(Granularity::group);
      f.group_size = int32_t(g);
    } else if (opt == "asym") {
      QF_CHECK(!f.asymmetric, "format \"", text, "\": asym given twice");
      f.asymmetric = true;
    } else if (starts_with(opt, "scale=")) {
      QF_CHECK(!seen_scale, "format \"", text, "\": scale= given twice");
      seen_scale = true;
      f.scale_type = ElementType::parse(opt.substr(6), text);
    } else if (opt == "tensor_scale") {
      QF_CHECK(!f.tensor_scale, "format \"", text, "\": tensor_scale given twice");
      f.tensor_scale = true;
    } else if (opt == "lut") {
      QF_CHECK(!f.lut, "format \"", text, "\": lut given twice");
      f.lut = true;
    } else {
      fail("format \"", text, "\": unknown option \"", opt, "\"; expected ", kOptionGrammar);
    }
  }
  check_valid(f, text);
  return f;
}

}  // namespace qf

size_t std::hash<qf::Format>::operator()(const qf::Format& f) const noexcept {
  // Every field fits in a few bits; pack them into one word and mix it (splitmix64 finaliser),
  // so equal formats hash equally and distinct ones essentially never collide.
  const auto elem = [](const qf::ElementType& e) {
    return uint64_t(e.kind) | uint64_t(e.exp_bits) << 4 | uint64_t(e.man_bits) << 8 | uint64_t(e.int_bits) << 12;
  };
  uint64_t z = elem(f.element) | elem(f.scale_type) << 16 | uint64_t(f.granularity) << 32 | uint64_t(f.asymmetric) << 35 |
               uint64_t(f.tensor_scale) << 36 | uint64_t(f.lut) << 37 | uint64_t(uint32_t(f.group_size)) << 38;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return size_t(z ^ (z >> 31));
}
