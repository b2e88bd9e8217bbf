#include "io/json_text.h"

#include <fstream>
#include <limits>

#include "core/error.h"

namespace qf::json_text {

namespace {

// Deepest bracket nesting outside string literals.
int max_nesting(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

const char* kind(const nlohmann::json& v) { return v.type_name(); }

// A value for an error message: at most ~60 characters, invalid UTF-8 replaced (a strict
// dump() would throw on it).
std::string brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

nlohmann::json parse(std::string_view text, const std::string& source) {
  const int nesting = max_nesting(text);
  QF_CHECK(nesting <= kMaxNesting, source, ": JSON nests ", nesting, " levels deep (limit ", kMaxNesting, ")");
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": invalid JSON: ", e.what());
  }
}

std::string read_file(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  QF_CHECK(in, path, ": cannot open");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  QF_CHECK(size >= 0, path, ": cannot read its size");
  QF_CHECK(uint64_t(size) <= max_bytes, path, ": ", size, " bytes is larger than the ", max_bytes, "-byte limit for this file");
  in.seekg(0);
  std::string text(size_t(size), '\0');
  in.read(text.data(), size);
  QF_CHECK(in.gcount() == size, path, ": short read");
  return text;
}

const nlohmann::json* find(const nlohmann::json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t as_int(const nlohmann::json& v, const std::string& what, const std::string& source) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    QF_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), source, ": ", what, " = ", u, " is too large");
    return int64_t(u);
  }
  QF_CHECK(v.is_number_integer(), source, ": ", what, " must be an integer, got ", kind(v), " ", brief(v));
  return v.get<int64_t>();
}

uint64_t as_uint(const nlohmann::json& v, const std::string& what, const std::string& source) {
  QF_CHECK(v.is_number_unsigned(), source, ": ", what, " must be a non-negative integer, got ", kind(v), " ", brief(v));
  return v.get<uint64_t>();
}

int64_t get_int(const nlohmann::json& obj, const std::string& key, const std::string& source) {
  const nlohmann::json* v = find(obj, key);
  QF_CHECK(v, source, ": missing key \"", key, "\"");
  return as_int(*v, str("\"", key, "\""), source);
}
int64_t get_int(const nlohmann::json& obj, const std::string& key, int64_t def, const std::string& source) {
  return find(obj, key) ? get_int(obj, key, source) : def;
}

double get_float(const nlohmann::json& obj, const std::string& key, const std::string& source) {
  const nlohmann::json* v = find(obj, key);
  QF_CHECK(v, source, ": missing key \"", key, "\"");
  QF_CHECK(v->is_number(), source, ": \"", key, "\" must be a number, got ", kind(*v), " ", brief(*v));
  return v->get<double>();
}
double get_float(const nlohmann::json& obj, const std::string& key, double def, const std::string& source) {
  return find(obj, key) ? get_float(obj, key, source) : def;
}

bool get_bool(const nlohmann::json& obj, const std::string& key, bool def, const std::string& source) {
  const nlohmann::json* v = find(obj, key);
  if (!v) return def;
  QF_CHECK(v->is_boolean(), source, ": \"", key, "\" must be true or false, got ", kind(*v), " ", brief(*v));
  return v->get<bool>();
}

std::string get_string(const nlohmann::json& obj, const std::string& key, const std::string& source) {
  const nlohmann::json* v = find(obj, key);
  QF_CHECK(v, source, ": missing key \"", key, "\"");
  QF_CHECK(v->is_string(), source, ": \"", key, "\" must be a string, got ", kind(*v), " ", brief(*v));
  return v->get<std::string>();
}
std::string get_string(const nlohmann::json& obj, const std::string& key, const std::string& def,
                       const std::string& source) {
  return find(obj, key) ? get_string(obj, key, source) : def;
}

}  // namespace qf::json_text
