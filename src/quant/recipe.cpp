#include "quant/recipe.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace qf {
namespace {

using nlohmann::json;

// The built-in recipes: {name, JSON text} pairs generated from recipes/*.json at build time
// (cmake/embed_recipes.cmake).
struct EmbeddedRecipe {
  const char* name;
  const char* text;
};
constexpr EmbeddedRecipe kEmbedded[] = {
#include "builtin_recipes.inc"
};

// Every key of `obj` must be one of `allowed`: a misspelt option must not fall back to a default.
void check_keys(const json& obj, std::initializer_list<std::string_view> allowed, const std::string& where) {
  QF_CHECK(obj.is_object(), where, " must be a JSON object");
  for (const auto& [key, value] : obj.items()) {
    (void)value;
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) list += str(list.empty() ? "" : ", ", a);
    fail(where, ": unknown key \"", key, "\" (expected one of: ", list, ")");
  }
}

const json* member(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string string_of(const json& v, const std::string& where) {
  QF_CHECK(v.is_string(), where, " must be a string");
  return v.get<std::string>();
}
bool bool_of(const json& v, const std::string& where) {
  QF_CHECK(v.is_boolean(), where, " must be true or false");
  return v.get<bool>();
}
double number_of(const json& v, const std::string& where) {
  QF_CHECK(v.is_number(), where, " must be a number");
  return v.get<double>();
}
int64_t int_of(const json& v, const std::string& where) {
  QF_CHECK(v.is_number_integer(), where, " must be an integer");
  return v.get<int64_t>();
}

Format format_of(const json& v, const std::string& where) {
  const std::string text = string_of(v, where);
  try {
    return Format::parse(text);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
}

KeepType keep_type_of(const json& v, const std::string& where) {
  const std::string t = string_of(v, where);
  if (t == "bf16") return KeepType::bf16;
  if (t == "f32") return KeepType::f32;
  fail(where, ": \"", t, "\" is not a type to keep a tensor in (bf16 or f32)");
}
// A transform of the recipe's "transforms" list, validated and normalised ("smooth:0.50" ->
// "smooth:0.5"). The other building blocks (rotation.h, hadamard.h) exist but the pipeline does
// not apply them yet: a recipe asking for one must fail, not quantize without it.
std::string parse_transform(const std::string& t, const std::string& source) {
  if (t == "smooth") return t;
  if (t.rfind("smooth:", 0) == 0) {
    const std::string a = t.substr(7);
    char* end = nullptr;
    const double alpha = a.empty() ? -1.0 : std::strtod(a.c_str(), &end);
    QF_CHECK(!a.empty() && end && *end == '\0' && alpha >= 0 && alpha <= 1, source, ": transform \"", t,
             "\": the smoothing alpha must be a number in [0, 1] (e.g. smooth:0.5), or write \"smooth\" to choose it by "
             "the calibration loss");
    char buf[32];
    std::snprintf(buf, sizeof buf, "smooth:%g", float(alpha));
    return buf;
  }
  if (t == "rope_scale" || t == "rope_scale:pre" || t == "rope_scale:post") return t;
  QF_CHECK(t.rfind("rope_scale", 0) != 0, source, ": transform \"", t,
           "\": the RoPE-aware scaling is \"rope_scale\" (pre- and post-RoPE), \"rope_scale:pre\" or "
           "\"rope_scale:post\"");
  fail(source, ": transform \"", t, "\" is not applied by this version of the quantization pipeline (known: "
       "\"smooth\", \"smooth:ALPHA\", \"rope_scale\", \"rope_scale:pre\", \"rope_scale:post\")");
}

const char* keep_type_name(KeepType t) { return t == KeepType::bf16 ? "bf16" : "f32"; }

const char* clip_objective_name(ClipObjective o) {
  switch (o) {
    case ClipObjective::weight: return "weight";
    case ClipObjective::diagonal: return "diagonal";
    case ClipObjective::full: return "full";
  }
  return "?";
}

ClipSearch clip_of(const json& v, const std::string& where, ClipObjective* objective) {
  check_keys(v, {"min_factor", "steps", "objective"}, where);
  ClipSearch c;
  c.enabled = true;
  if (const json* m = member(v, "min_factor")) c.min_factor = float(number_of(*m, where + ".min_factor"));
  if (const json* s = member(v, "steps")) c.steps = int(int_of(*s, where + ".steps"));
  if (objective) {
    if (const json* o = member(v, "objective")) {
      const std::string name = string_of(*o, where + ".objective");
      if (name == "weight") *objective = ClipObjective::weight;
      else if (name == "diagonal") *objective = ClipObjective::diagonal;
      else if (name == "full") *objective = ClipObjective::full;
      else fail(where, ".objective: \"", name, "\" is not weight, diagonal or full");
    }
  } else {
    QF_CHECK(!member(v, "objective"), where, ": GPTQ's clip search minimises the weight MSE; it takes no objective");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return c;
}

json clip_json(const ClipSearch& c, const ClipObjective* objective) {
  if (!c.enabled) return nullptr;
  json j = {{"min_factor", c.min_factor}, {"steps", c.steps}};
  if (objective) j["objective"] = clip_objective_name(*objective);
  return j;
}

// Applies the fields present in `v` to `r` (the defaults, or the base settings for an override).
void apply_linear_fields(const json& v, LinearRecipe& r, const std::string& where) {
  check_keys(v, {"algorithm", "weights", "activations", "gptq", "rtn"}, where);
  if (const json* a = member(v, "algorithm")) {
    const std::string name = string_of(*a, where + ".algorithm");
    if (name == "rtn") r.algorithm = WeightAlgorithm::rtn;
    else if (name == "gptq") r.algorithm = WeightAlgorithm::gptq;
    else fail(where, ".algorithm: \"", name, "\" is not a weight algorithm (rtn or gptq)");
  }
  if (const json* w = member(v, "weights")) r.weights = format_of(*w, where + ".weights");
  if (auto it = v.find("activations"); it != v.end())
    r.activations = it->is_null() ? std::nullopt : std::optional<Format>(format_of(*it, where + ".activations"));
  if (const json* g = member(v, "gptq")) {
    const std::string gw = where + ".gptq";
    check_keys(*g, {"percdamp", "block_size", "act_order", "static_groups", "clip"}, gw);
    if (const json* x = member(*g, "percdamp")) r.gptq.percdamp = number_of(*x, gw + ".percdamp");
    if (const json* x = member(*g, "block_size")) r.gptq.block_size = int_of(*x, gw + ".block_size");
    if (const json* x = member(*g, "act_order")) r.gptq.act_order = bool_of(*x, gw + ".act_order");
    if (const json* x = member(*g, "static_groups")) r.gptq.static_groups = bool_of(*x, gw + ".static_groups");
    if (auto it = g->find("clip"); it != g->end())
      r.gptq.clip = it->is_null() ? ClipSearch{} : clip_of(*it, gw + ".clip", nullptr);
  }
  if (const json* t = member(v, "rtn")) {
    const std::string rw = where + ".rtn";
    check_keys(*t, {"clip"}, rw);
    if (auto it = t->find("clip"); it != t->end()) {
      r.rtn_clip = ClipSearch{};
      r.rtn_clip_objective = ClipObjective::weight;
      if (!it->is_null()) r.rtn_clip = clip_of(*it, rw + ".clip", &r.rtn_clip_objective);
    }
  }
}

// The checks that need the whole layer's settings.
void validate_linear(const LinearRecipe& r, const std::string& where) {
  const Format& w = r.weights;
  QF_CHECK(w.element.is_int() || w.element.bits() <= 8, where, ".weights: ", w.str(),
           " is not a quantized format (keep a layer unquantized by leaving it to a bf16 recipe, not per layer)");
  QF_CHECK(w.scaled() || !w.element.is_int(), where, ".weights: integer weights need a scale granularity");
  QF_CHECK(w.granularity != Granularity::token, where, ".weights: ", w.str(),
           " has per-token scales; a weight's rows are output channels: write :channel");
  if (r.activations) {
    const Format& a = *r.activations;
    // The runtime rounds each token's activation row alone (cpu/format_round_trip.h), as a
    // kernel that quantizes on the fly does: no scale may span tokens.
    QF_CHECK(a.granularity != Granularity::tensor && a.granularity != Granularity::channel && !a.tensor_scale, where,
             ".activations: ", a.str(),
             " shares a scale across tokens; activations are quantized per token (:token), per group of a token "
             "(:g<G>) or unscaled");
  }
  if (r.algorithm == WeightAlgorithm::gptq) {
    const std::string gw = where + ".gptq";
    QF_CHECK(r.gptq.percdamp >= 0 && r.gptq.percdamp < 1, gw, ".percdamp ", r.gptq.percdamp, " is not in [0, 1)");
    QF_CHECK(r.gptq.block_size >= 1, gw, ".block_size ", r.gptq.block_size, " must be >= 1");
    QF_CHECK(!(r.gptq.act_order && w.granularity == Granularity::group && !r.gptq.static_groups), gw,
             ": act_order with per-group scales needs static_groups (the stored group layout must not change)");
  }
}

json linear_json(const LinearRecipe& r) {
  json gptq = {{"percdamp", r.gptq.percdamp},
               {"block_size", r.gptq.block_size},
               {"act_order", r.gptq.act_order},
               {"static_groups", r.gptq.static_groups},
               {"clip", clip_json(r.gptq.clip, nullptr)}};
  return {{"algorithm", weight_algorithm_name(r.algorithm)},
          {"weights", r.weights.str()},
          {"activations", r.activations ? json(r.activations->str()) : json(nullptr)},
          {"gptq", gptq},
          {"rtn", {{"clip", clip_json(r.rtn_clip, &r.rtn_clip_objective)}}}};
}

bool same_clip(const ClipSearch& a, const ClipSearch& b) {
  return a.enabled == b.enabled && (!a.enabled || (a.min_factor == b.min_factor && a.steps == b.steps));
}

}  // namespace

const char* linear_kind_name(LinearKind k) {
  switch (k) {
    case LinearKind::q_proj: return "q_proj";
    case LinearKind::k_proj: return "k_proj";
    case LinearKind::v_proj: return "v_proj";
    case LinearKind::o_proj: return "o_proj";
    case LinearKind::gate_proj: return "gate_proj";
    case LinearKind::up_proj: return "up_proj";
    case LinearKind::down_proj: return "down_proj";
  }
  return "?";
}

std::string linear_kind_leaf(LinearKind k) {
  const bool attention = k == LinearKind::q_proj || k == LinearKind::k_proj || k == LinearKind::v_proj ||
                         k == LinearKind::o_proj;
  return str(attention ? "self_attn." : "mlp.", linear_kind_name(k), ".weight");
}

BlockLinear block_linear(const ModelConfig& c, int64_t layer, LinearKind k) {
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  BlockLinear b;
  b.weight = names::layer(layer, linear_kind_leaf(k));
  const bool qkv = k == LinearKind::q_proj || k == LinearKind::k_proj || k == LinearKind::v_proj;
  if (qkv && c.attention_bias) b.bias = names::layer(layer, str("self_attn.", linear_kind_name(k), ".bias"));
  switch (k) {
    case LinearKind::q_proj: b.out = q_dim, b.in = c.hidden_size; break;
    case LinearKind::k_proj: case LinearKind::v_proj: b.out = kv_dim, b.in = c.hidden_size; break;
    case LinearKind::o_proj: b.out = c.hidden_size, b.in = q_dim; break;
    case LinearKind::gate_proj: case LinearKind::up_proj: b.out = c.intermediate_size, b.in = c.hidden_size; break;
    case LinearKind::down_proj: b.out = c.hidden_size, b.in = c.intermediate_size; break;
  }
  return b;
}

std::optional<LinearKind> parse_linear_kind(std::string_view name) {
  for (LinearKind k : kAllLinearKinds)
    if (name == linear_kind_name(k)) return k;
  return std::nullopt;
}

const char* weight_algorithm_name(WeightAlgorithm a) { return a == WeightAlgorithm::gptq ? "gptq" : "rtn"; }

bool LinearRecipe::needs_hessian() const {
  return algorithm == WeightAlgorithm::gptq || (rtn_clip.enabled && rtn_clip_objective != ClipObjective::weight);
}

std::optional<SmoothTransform> Recipe::smoothing() const {
  for (const std::string& t : transforms) {
    if (t == "smooth") return SmoothTransform{};
    if (t.rfind("smooth:", 0) == 0) return SmoothTransform{std::stof(t.substr(7))};  // validated by parse
  }
  return std::nullopt;
}

std::optional<RopeScaleTransform> Recipe::rope_scaling() const {
  for (const std::string& t : transforms) {
    if (t.rfind("rope_scale", 0) != 0) continue;
    RopeScaleTransform r;
    r.pre = t != "rope_scale:post";
    r.post = t != "rope_scale:pre";
    return r;
  }
  return std::nullopt;
}

bool Recipe::needs_calibration() const {
  // Smoothing and the RoPE-aware scaling choose their scales from the activations, so they
  // calibrate even with RTN.
  if (smoothing() || rope_scaling()) return true;
  return std::any_of(linears.begin(), linears.end(), [](const LinearRecipe& r) { return r.needs_hessian(); });
}

Recipe Recipe::parse(std::string_view text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  check_keys(j, {"name", "description", "transforms", "linear", "overrides", "kv_cache", "query", "keep"}, source);
  Recipe r;
  const json* name = member(j, "name");
  QF_CHECK(name, source, ": a recipe needs a \"name\"");
  r.name = string_of(*name, source + ": name");
  QF_CHECK(!r.name.empty() && r.name.find_first_of(" /\\\"") == std::string::npos, source, ": name \"", r.name,
           "\" must be non-empty, without spaces, slashes or quotes");
  if (const json* d = member(j, "description")) r.description = string_of(*d, source + ": description");
  if (const json* t = member(j, "transforms")) {
    QF_CHECK(t->is_array(), source, ": transforms must be a list");
    for (const json& x : *t) r.transforms.push_back(parse_transform(string_of(x, source + ": a transform"), source));
    std::set<std::string> seen;
    for (const std::string& x : r.transforms)
      QF_CHECK(seen.insert(x.substr(0, x.find(':'))).second, source, ": transform \"", x.substr(0, x.find(':')),
               "\" is listed twice");
  }
  const json* base = member(j, "linear");
  QF_CHECK(base, source, ": a recipe needs \"linear\" (the settings of every linear layer)");
  LinearRecipe defaults;
  QF_CHECK(member(*base, "weights"), source, ": linear.weights (the weight format) is required");
  apply_linear_fields(*base, defaults, source + ": linear");
  r.linears.fill(defaults);
  if (const json* o = member(j, "overrides")) {
    QF_CHECK(o->is_object(), source, ": overrides must be an object {kind: settings}");
    for (const auto& [kind_name, fields] : o->items()) {
      const std::optional<LinearKind> kind = parse_linear_kind(kind_name);
      QF_CHECK(kind, source, ": overrides: \"", kind_name,
               "\" is not a layer kind (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
      apply_linear_fields(fields, r.linears[size_t(*kind)], source + ": overrides." + kind_name);
    }
  }
  for (LinearKind k : kAllLinearKinds)
    validate_linear(r.linear(k), source + (r.linear(k) == defaults ? ": linear" : str(": overrides.", linear_kind_name(k))));
  if (const json* kv = member(j, "kv_cache")) {
    r.kv_cache = format_of(*kv, source + ": kv_cache");
    QF_CHECK(r.kv_cache->granularity != Granularity::tensor && r.kv_cache->granularity != Granularity::channel &&
                 !r.kv_cache->tensor_scale,
             source, ": kv_cache ", r.kv_cache->str(), ": the cache is written a token (and head) at a time, so its "
             "scales must be per token, per group or absent");
  }
  if (const json* qr = member(j, "query")) {
    r.query = format_of(*qr, source + ": query");
    QF_CHECK(r.query->granularity != Granularity::tensor && r.query->granularity != Granularity::channel &&
                 !r.query->tensor_scale,
             source, ": query ", r.query->str(), ": each query row (one token, one head) is rounded alone, so its "
             "scales must be per token, per group or absent");
  }
  if (const json* k = member(j, "keep")) {
    check_keys(*k, {"embed_tokens", "lm_head"}, source + ": keep");
    if (const json* e = member(*k, "embed_tokens")) r.embed_tokens = keep_type_of(*e, source + ": keep.embed_tokens");
    if (const json* h = member(*k, "lm_head")) r.lm_head = keep_type_of(*h, source + ": keep.lm_head");
  }
  return r;
}

json Recipe::to_json() const {
  json j;
  j["name"] = name;
  j["description"] = description;
  j["transforms"] = transforms;
  const LinearRecipe& base = linear(LinearKind::q_proj);
  j["linear"] = linear_json(base);
  json overrides = json::object();
  for (LinearKind k : kAllLinearKinds)
    if (!(linear(k) == base)) overrides[linear_kind_name(k)] = linear_json(linear(k));
  j["overrides"] = overrides;
  j["kv_cache"] = kv_cache ? json(kv_cache->str()) : json(nullptr);
  j["query"] = query ? json(query->str()) : json(nullptr);
  j["keep"] = {{"embed_tokens", keep_type_name(embed_tokens)}, {"lm_head", keep_type_name(lm_head)}};
  return j;
}

bool operator==(const LinearRecipe& a, const LinearRecipe& b) {
  return a.algorithm == b.algorithm && a.weights == b.weights && a.activations == b.activations &&
         a.gptq.percdamp == b.gptq.percdamp && a.gptq.block_size == b.gptq.block_size &&
         a.gptq.act_order == b.gptq.act_order && a.gptq.static_groups == b.gptq.static_groups &&
         same_clip(a.gptq.clip, b.gptq.clip) && same_clip(a.rtn_clip, b.rtn_clip) &&
         (!a.rtn_clip.enabled || a.rtn_clip_objective == b.rtn_clip_objective);
}

bool operator==(const Recipe& a, const Recipe& b) {
  return a.name == b.name && a.description == b.description && a.transforms == b.transforms &&
         a.linears == b.linears && a.kv_cache == b.kv_cache && a.query == b.query && a.embed_tokens == b.embed_tokens &&
         a.lm_head == b.lm_head;
}

std::vector<std::string> builtin_recipe_names() {
  std::vector<std::string> names;
  for (const EmbeddedRecipe& e : kEmbedded) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  return names;
}

std::string_view builtin_recipe_text(const std::string& name) {
  for (const EmbeddedRecipe& e : kEmbedded)
    if (name == e.name) return e.text;
  std::string list;
  for (const std::string& n : builtin_recipe_names()) list += str(list.empty() ? "" : ", ", n);
  fail("no built-in recipe named \"", name, "\" (built in: ", list, "; or pass a recipe file, NAME.json)");
}

Recipe load_recipe(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  const bool is_file = name_or_path.size() > 5 && name_or_path.substr(name_or_path.size() - 5) == ".json";
  if (!is_file) return Recipe::parse(builtin_recipe_text(name_or_path), "built-in recipe " + name_or_path);
  std::ifstream f(name_or_path, std::ios::binary);
  QF_CHECK(f && fs::is_regular_file(name_or_path), "cannot open the recipe file ", name_or_path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return Recipe::parse(ss.str(), name_or_path);
}

}  // namespace qf
