// JSON documents read from checkpoints (config.json, safetensors headers, index files): parsed
// with nlohmann::json, nesting bounded first, and any syntax error turned into a qf::Error
// naming the file. Typed accessors name the file and the key when a value is missing or of the
// wrong kind.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qf::json_text {

// Checkpoint JSON nests a few levels; 64 leaves ample room while keeping a hostile file from
// driving recursive code (nlohmann's value destruction, our walkers) deep into the stack.
constexpr int kMaxNesting = 64;

nlohmann::json parse(std::string_view text, const std::string& source);
std::string read_file(const std::string& path, size_t max_bytes);

// Accessors for an object `obj` read from `source`; `key` is named in errors.
const nlohmann::json* find(const nlohmann::json& obj, const std::string& key);  // null if absent or JSON null
int64_t get_int(const nlohmann::json& obj, const std::string& key, const std::string& source);
int64_t get_int(const nlohmann::json& obj, const std::string& key, int64_t def, const std::string& source);
double get_float(const nlohmann::json& obj, const std::string& key, const std::string& source);
double get_float(const nlohmann::json& obj, const std::string& key, double def, const std::string& source);
bool get_bool(const nlohmann::json& obj, const std::string& key, bool def, const std::string& source);
std::string get_string(const nlohmann::json& obj, const std::string& key, const std::string& source);
std::string get_string(const nlohmann::json& obj, const std::string& key, const std::string& def,
                       const std::string& source);
// An element or value as an integer / unsigned integer, `what` naming it in errors.
int64_t as_int(const nlohmann::json& v, const std::string& what, const std::string& source);
uint64_t as_uint(const nlohmann::json& v, const std::string& what, const std::string& source);

}  // namespace qf::json_text
