#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>
#include <iterator>

namespace qf::unicode {

namespace {

struct ClassRange {
  uint32_t first;  // the class holds from here to the next range's first
  CharClass cls;
};

constexpr ClassRange kClassRanges[] = {
#include "tokenizer/unicode_tables.inc"
};

// ASCII is most of the text: look it up directly.
constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> out{};
  size_t r = 0;
  for (uint32_t cp = 0; cp < 128; ++cp) {
    while (r + 1 < std::size(kClassRanges) && kClassRanges[r + 1].first <= cp) ++r;
    out[cp] = kClassRanges[r].cls;
  }
  return out;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

struct ByteLevelAlphabet {
  uint32_t to_cp[256];
  // Alphabet code points are < 0x144 (256 + 68), so a flat table inverts the mapping.
  int16_t to_byte[0x144];
  ByteLevelAlphabet() {
    std::fill(std::begin(to_byte), std::end(to_byte), int16_t(-1));
    // Printable bytes map to themselves: '!'..'~', '¡'..'¬', '®'..'ÿ' (GPT-2's bytes_to_unicode).
    auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      to_cp[b] = printable(b) ? uint32_t(b) : uint32_t(next++);
      to_byte[to_cp[b]] = int16_t(b);
    }
  }
};
const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

}  // namespace

CharClass char_class(uint32_t cp) {
  if (cp < 128) return kAsciiClasses[cp];
  if (cp > 0x10FFFF) return CharClass(Category::Unassigned);
  auto it = std::upper_bound(std::begin(kClassRanges), std::end(kClassRanges), cp,
                             [](uint32_t v, const ClassRange& r) { return v < r.first; });
  return std::prev(it)->cls;
}

const char* unicode_version() { return QF_UNICODE_VERSION; }

std::vector<uint32_t> decode_utf8(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  auto continuation = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < n) {
    const uint8_t b = s[i];
    uint32_t cp = kReplacementChar;
    size_t len = 1;
    if (b < 0x80) {
      cp = b;
    } else if ((b & 0xE0) == 0xC0) {
      if (continuation(i + 1)) cp = (uint32_t(b & 0x1F) << 6) | (s[i + 1] & 0x3F), len = 2;
    } else if ((b & 0xF0) == 0xE0) {
      if (continuation(i + 1) && continuation(i + 2))
        cp = (uint32_t(b & 0x0F) << 12) | (uint32_t(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F), len = 3;
    } else if ((b & 0xF8) == 0xF0) {
      if (continuation(i + 1) && continuation(i + 2) && continuation(i + 3)) {
        cp = (uint32_t(b & 0x07) << 18) | (uint32_t(s[i + 1] & 0x3F) << 12) | (uint32_t(s[i + 2] & 0x3F) << 6) |
             (s[i + 3] & 0x3F);
        len = 4;
        // Beyond U+10FFFF has no UTF-8 encoding to write back; treat it as malformed.
        if (cp > 0x10FFFF) cp = kReplacementChar, len = 1;
      }
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) append_utf8(out, cp);
  return out;
}

uint32_t byte_to_code_point(uint8_t byte) { return alphabet().to_cp[byte]; }

int code_point_to_byte(uint32_t cp) { return cp < std::size(alphabet().to_byte) ? alphabet().to_byte[cp] : -1; }

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(out, byte_to_code_point(uint8_t(c)));
  return out;
}

std::string byte_level_to_bytes(std::string_view mapped) {
  std::string out;
  out.reserve(mapped.size());
  for (uint32_t cp : decode_utf8(mapped)) {
    const int b = code_point_to_byte(cp);
    if (b >= 0) {
      out.push_back(char(b));
    } else {
      append_utf8(out, cp);
    }
  }
  return out;
}

}  // namespace qf::unicode
