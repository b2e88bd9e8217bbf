// An independent model of binary float formats for the codec tests: values from the bit fields
// with std::ldexp, and a brute-force round-to-nearest-even encoder over a sorted table of every
// finite value, in double precision. It shares no code with src/formats on purpose.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace qf::test {

inline uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
inline float float_of(uint32_t b) { return std::bit_cast<float>(b); }

// What codes with an all-ones exponent mean, and what overflow becomes.
enum class Specials {
  ieee,        // all-ones exponent: mantissa 0 = inf, else NaN (F16, BF16, E5M2)
  e4m3fn,      // only S.1111.111 is NaN; the rest of the top binade is finite
  all_finite,  // every code is a number (FPx)
};
enum class OnOverflow { to_inf, to_nan, to_max };

struct RefFormat {
  std::string name;
  int exp_bits, man_bits, bias;
  Specials specials;

  int bits() const { return 1 + exp_bits + man_bits; }
  uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
  uint32_t codes() const { return 1u << bits(); }
  bool is_nan(uint32_t code) const {
    const uint32_t mag = code & (sign_bit() - 1), exp = mag >> man_bits, man = mag & ((1u << man_bits) - 1);
    const uint32_t top = (1u << exp_bits) - 1;
    if (specials == Specials::ieee) return exp == top && man != 0;
    if (specials == Specials::e4m3fn) return mag == sign_bit() - 1;
    return false;
  }
  bool is_inf(uint32_t code) const {
    const uint32_t mag = code & (sign_bit() - 1);
    return specials == Specials::ieee && mag == ((1u << exp_bits) - 1) << man_bits;
  }
  // The value the format's definition gives the code: (-1)^s * 2^(E-bias) * (1 + f/2^m) for
  // E >= 1, (-1)^s * 2^(1-bias) * f/2^m for E = 0.
  double value(uint32_t code) const {
    const bool neg = (code & sign_bit()) != 0;
    if (is_nan(code)) return std::numeric_limits<double>::quiet_NaN();
    if (is_inf(code)) return neg ? -INFINITY : INFINITY;
    const uint32_t mag = code & (sign_bit() - 1), exp = mag >> man_bits, man = mag & ((1u << man_bits) - 1);
    const double v = exp == 0 ? std::ldexp(double(man), 1 - bias - man_bits)
                              : std::ldexp(double((1u << man_bits) + man), int(exp) - bias - man_bits);
    return neg ? -v : v;
  }
};

// Round-to-nearest-even over an explicit table of the format's finite non-negative values.
class RefEncoder {
 public:
  RefEncoder(RefFormat f, OnOverflow overflow) : f_(std::move(f)), overflow_(overflow) {
    for (uint32_t c = 0; c < f_.sign_bit(); ++c) {
      const double v = f_.value(c);
      if (std::isfinite(v)) table_.push_back({v, c});
    }
    std::sort(table_.begin(), table_.end(), [](const Entry& a, const Entry& b) { return a.value < b.value; });
    // Spacing above the largest finite value, as if the exponent went on: the top binade's ulp.
    const Entry& top = table_.back();
    const Entry& below = table_[table_.size() - 2];
    overflow_midpoint_ = top.value + (top.value - below.value) / 2;
  }
  const RefFormat& format() const { return f_; }
  double max_value() const { return table_.back().value; }
  // Finite non-negative values, ascending.
  std::vector<double> finite_values() const {
    std::vector<double> v;
    for (const Entry& e : table_) v.push_back(e.value);
    return v;
  }

  // The code for x, or nullopt when x is a NaN (each codec's NaN rule is tested on its own).
  std::optional<uint32_t> encode(float x) const {
    if (std::isnan(x)) return std::nullopt;
    const double a = std::fabs(double(x));
    const uint32_t sign = std::signbit(x) ? f_.sign_bit() : 0u;
    const Entry& top = table_.back();
    if (a > top.value) {
      const bool overflows = a > overflow_midpoint_ || (a == overflow_midpoint_ && (top.code & 1u));
      if (!overflows || overflow_ == OnOverflow::to_max) return sign | top.code;
      if (overflow_ == OnOverflow::to_inf) return sign | (((1u << f_.exp_bits) - 1) << f_.man_bits);
      return sign | (f_.sign_bit() - 1);  // the NaN code of a format without inf
    }
    // First entry >= a; compare with its predecessor.
    auto hi = std::lower_bound(table_.begin(), table_.end(), a, [](const Entry& e, double v) { return e.value < v; });
    if (hi->value == a || hi == table_.begin()) return sign | hi->code;
    auto lo = hi - 1;
    const double dlo = a - lo->value, dhi = hi->value - a;
    if (dlo < dhi) return sign | lo->code;
    if (dhi < dlo) return sign | hi->code;
    return sign | ((lo->code & 1u) == 0 ? lo->code : hi->code);  // tie: even mantissa
  }

  // Inputs that probe every rounding decision: each value, each midpoint between neighbours and
  // the floats just beside them, both signs, plus the overflow boundary.
  std::vector<float> critical_inputs() const {
    std::vector<double> points;
    for (size_t i = 0; i < table_.size(); ++i) {
      points.push_back(table_[i].value);
      if (i + 1 < table_.size()) points.push_back((table_[i].value + table_[i + 1].value) / 2);
    }
    points.push_back(overflow_midpoint_);
    points.push_back(overflow_midpoint_ * 2);
    std::vector<float> out;
    for (double p : points) {
      const float f = float(p);
      if (double(f) != p) continue;  // midpoints of F32-wide formats only (none here) are not floats
      for (float v : {f, std::nextafter(f, 0.0f), std::nextafter(f, INFINITY)}) {
        out.push_back(v);
        out.push_back(-v);
      }
    }
    return out;
  }

 private:
  struct Entry {
    double value;
    uint32_t code;
  };
  RefFormat f_;
  OnOverflow overflow_;
  std::vector<Entry> table_;
  double overflow_midpoint_ = 0;
};

// Floats worth trying on any codec: zeros, infinities, extremes, a strided walk over every bit
// pattern (both signs, all exponents) and random values.
inline std::vector<float> sweep_inputs(uint32_t stride = 4093) {
  std::vector<float> v = {0.0f, -0.0f, INFINITY, -INFINITY, std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min()};
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += stride) {
    const float f = float_of(uint32_t(b));
    if (!std::isnan(f)) v.push_back(f);
  }
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < 100000; ++i) v.push_back(normal(rng) * std::ldexp(1.0f, int(rng() % 40) - 20));
  return v;
}

// NaNs with both signs, quiet and signalling, various payloads.
inline std::vector<float> nan_inputs() {
  std::vector<float> v;
  for (uint32_t payload : {0x400000u, 0x000001u, 0x200000u, 0x600000u, 0x7FFFFFu, 0x1FFFFFu, 0x3FFFFFu})
    for (uint32_t sign : {0u, 0x80000000u}) v.push_back(float_of(sign | 0x7F800000u | payload));
  return v;
}

}  // namespace qf::test
