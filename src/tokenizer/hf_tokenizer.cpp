#include "tokenizer/hf_tokenizer.h"

#include <filesystem>
#include <limits>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/json_text.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace qf {

namespace {

using nlohmann::json;

// HF's ByteLevel pre-tokenizer splits with GPT-2's pattern when use_regex is on.
constexpr const char* kByteLevelPattern =
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re";
constexpr const char* kSpmSpace = "\xE2\x96\x81";  // "▁"

std::string type_of(const json* node) { return node && node->is_object() && node->contains("type") && (*node)["type"].is_string() ? (*node)["type"].get<std::string>() : ""; }

// The steps of a pre_tokenizer or normalizer: a Sequence's list, else the node itself.
std::vector<const json*> steps(const json* node, const char* list_key) {
  std::vector<const json*> out;
  if (!node) return out;
  if (type_of(node) == "Sequence") {
    const json* list = json_text::find(*node, list_key);
    if (list && list->is_array())
      for (const json& s : *list) out.push_back(&s);
  } else {
    out.push_back(node);
  }
  return out;
}

// A token named in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::string token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

Vocab parse_hf_tokenizer(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                         const std::string& source) {
  const json j = json_text::parse(tokenizer_json, source);
  QF_CHECK(j.is_object(), source, ": not a JSON object");
  const json* model = json_text::find(j, "model");
  QF_CHECK(model && model->is_object(), source, ": no \"model\" object");
  const std::string model_type = json_text::get_string(*model, "type", "BPE", source + " model");
  QF_CHECK(model_type == "BPE", source, ": model.type \"", model_type, "\" is not supported (only BPE)");

  Vocab v;
  v.source = source;

  // ---- tokens: model.vocab, then added_tokens (which may extend it) ----
  std::map<int64_t, std::string> by_id;
  const json* vocab = json_text::find(*model, "vocab");
  QF_CHECK(vocab && vocab->is_object(), source, ": model.vocab is not an object of token -> id");
  for (const auto& [text, id] : vocab->items()) {
    const int64_t i = json_text::as_int(id, "model.vocab[\"" + text + "\"]", source);
    QF_CHECK(i >= 0 && i < (int64_t(1) << 31), source, ": model.vocab[\"", text, "\"] = ", i, " is not a token id");
    QF_CHECK(by_id.emplace(i, text).second, source, ": model.vocab gives id ", i, " to two tokens");
  }
  struct Added {
    int64_t id;
    bool special;
    uint8_t strip;
  };
  std::vector<Added> added;
  if (const json* list = json_text::find(j, "added_tokens")) {
    QF_CHECK(list->is_array(), source, ": added_tokens is not a list");
    for (const json& t : *list) {
      const int64_t id = json_text::get_int(t, "id", source + " added_tokens entry");
      QF_CHECK(id >= 0 && id < (int64_t(1) << 31), source, ": added token id ", id, " is out of range");
      by_id[id] = json_text::get_string(t, "content", source + " added_tokens entry");
      const std::string where = source + " added_tokens entry";
      const uint8_t strip = uint8_t((json_text::get_bool(t, "lstrip", false, where) ? kStripLeft : 0) |
                                    (json_text::get_bool(t, "rstrip", false, where) ? kStripRight : 0));
      added.push_back({id, json_text::get_bool(t, "special", false, where), strip});
    }
  }
  QF_CHECK(!by_id.empty(), source, ": the vocabulary is empty");
  const int64_t n = by_id.rbegin()->first + 1;
  QF_CHECK(int64_t(by_id.size()) == n, source, ": token ids are not contiguous (", by_id.size(), " tokens, largest id ",
           n - 1, ")");
  v.tokens.reserve(size_t(n));
  for (auto& [id, text] : by_id) v.tokens.push_back(std::move(text));
  v.types.assign(size_t(n), TokenType::Normal);
  v.strip.assign(size_t(n), 0);
  for (const Added& a : added) {
    v.types[size_t(a.id)] = a.special ? TokenType::Control : TokenType::UserDefined;
    v.strip[size_t(a.id)] = a.strip;
  }

  // ---- merges ----
  if (const json* merges = json_text::find(*model, "merges")) {
    QF_CHECK(merges->is_array(), source, ": model.merges is not a list");
    v.merges.reserve(merges->size());
    for (size_t i = 0; i < merges->size(); ++i) {
      const json& m = (*merges)[i];
      if (m.is_string()) {
        v.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        fail(source, ": model.merges[", i, "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  v.ignore_merges = json_text::get_bool(*model, "ignore_merges", false, source + " model");
  const bool byte_fallback = json_text::get_bool(*model, "byte_fallback", false, source + " model");

  // ---- which kind: byte-level (ByteLevel pre-tokenizer) or SentencePiece-style (▁) ----
  const json* pre = json_text::find(j, "pre_tokenizer");
  const json* norm = json_text::find(j, "normalizer");
  bool byte_level = false, metaspace = false, prepend_space = false, replace_space = false;
  std::vector<std::string> patterns;
  for (const json* step : steps(pre, "pretokenizers")) {
    const std::string t = type_of(step);
    if (t == "ByteLevel") {
      QF_CHECK(!json_text::get_bool(*step, "add_prefix_space", false, source + " pre_tokenizer"), source,
               ": ByteLevel with add_prefix_space is not supported");
      byte_level = true;
      if (json_text::get_bool(*step, "use_regex", true, source + " pre_tokenizer")) patterns.push_back(kByteLevelPattern);
    } else if (t == "Split") {
      const json* pat = json_text::find(*step, "pattern");
      QF_CHECK(pat && pat->is_object() && pat->contains("Regex") && (*pat)["Regex"].is_string(), source,
               ": pre_tokenizer Split needs {\"Regex\": ...} (string patterns are not supported)");
      const std::string behavior = json_text::get_string(*step, "behavior", "Isolated", source + " pre_tokenizer");
      QF_CHECK(behavior == "Isolated" && !json_text::get_bool(*step, "invert", false, source + " pre_tokenizer"), source,
               ": pre_tokenizer Split with behavior \"", behavior, "\" or invert is not supported (only Isolated)");
      patterns.push_back((*pat)["Regex"].get<std::string>());
    } else if (t == "Digits") {
      // Rust's char::is_numeric, i.e. \p{N} (for the Unicode version llama.cpp uses).
      patterns.push_back(json_text::get_bool(*step, "individual_digits", false, source + " pre_tokenizer") ? "\\p{N}"
                                                                                                       : "\\p{N}+");
    } else if (t == "Metaspace") {
      metaspace = true;
      const std::string replacement = json_text::get_string(*step, "replacement", kSpmSpace, source + " pre_tokenizer");
      QF_CHECK(replacement == kSpmSpace, source, ": Metaspace replacement \"", replacement, "\" is not \"▁\"");
      const std::string scheme = json_text::get_string(*step, "prepend_scheme", "", source + " pre_tokenizer");
      prepend_space = scheme.empty() ? json_text::get_bool(*step, "add_prefix_space", true, source + " pre_tokenizer")
                                     : scheme != "never";
      QF_CHECK(!json_text::get_bool(*step, "split", false, source + " pre_tokenizer"), source,
               ": Metaspace with split=true is not supported");
    } else {
      fail(source, ": pre_tokenizer \"", t, "\" is not supported (ByteLevel, Split, Digits, Metaspace)");
    }
  }
  for (const json* step : steps(norm, "normalizers")) {
    const std::string t = type_of(step);
    if (t == "Prepend" && json_text::get_string(*step, "prepend", "", source + " normalizer") == kSpmSpace) {
      prepend_space = true;
    } else if (t == "Replace") {
      const json* pat = json_text::find(*step, "pattern");
      const bool space_to_meta = pat && pat->is_object() && pat->contains("String") && (*pat)["String"] == " " &&
                                 json_text::get_string(*step, "content", "", source + " normalizer") == kSpmSpace;
      QF_CHECK(space_to_meta, source, ": normalizer Replace other than \" \" -> \"▁\" is not supported");
      replace_space = true;
    } else if (t == "NFC") {
      // Qwen2 declares NFC; llama.cpp does not apply it either (ids equal llama.cpp's on any
      // input, and HF's on NFC input).
    } else {
      fail(source, ": normalizer \"", t, "\" is not supported");
    }
  }

  if (byte_level) {
    QF_CHECK(!metaspace && !replace_space, source, ": mixes ByteLevel with \"▁\" spaces");
    v.kind = VocabKind::ByteLevelBpe;
    v.pre = PreTokenizer::from_patterns(patterns, source).name();
  } else if (metaspace || replace_space) {
    QF_CHECK(patterns.empty(), source, ": Split/Digits pre-tokenizers with SentencePiece-style spaces are not supported");
    QF_CHECK(byte_fallback, source, ": SentencePiece-style BPE without byte_fallback is not supported");
    v.kind = VocabKind::SentencePiece;
    v.add_space_prefix = prepend_space;
    // HF merges by merge rank; the SentencePiece engine merges by the score of the merged
    // piece. A piece's score is minus the rank of the first merge that makes it; pieces no
    // merge makes are never merged into (-inf). This reproduces HF when, as in files
    // converted from SentencePiece, every split of a piece into two pieces is a merge.
    v.scores.assign(v.tokens.size(), -std::numeric_limits<float>::infinity());
    std::unordered_map<std::string, int32_t> id_of;
    for (int32_t id = 0; id < int32_t(v.tokens.size()); ++id) id_of[v.tokens[size_t(id)]] = id;
    for (size_t rank = 0; rank < v.merges.size(); ++rank) {
      const std::string& m = v.merges[rank];
      const size_t sp = m.find(' ', 1);
      QF_CHECK(sp != std::string::npos, source, ": merge ", rank, " (\"", m, "\") is not \"left right\"");
      auto it = id_of.find(m.substr(0, sp) + m.substr(sp + 1));
      if (it != id_of.end() && v.scores[size_t(it->second)] == -std::numeric_limits<float>::infinity())
        v.scores[size_t(it->second)] = -float(rank);
    }
    v.merges.clear();
    // Byte-fallback pieces.
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      const std::string& t = v.tokens[id];
      if (v.types[id] == TokenType::Normal && t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>')
        v.types[id] = TokenType::Byte;
    }
  } else {
    fail(source, ": neither byte-level BPE (a ByteLevel pre_tokenizer) nor SentencePiece-style BPE (Metaspace, or a "
                 "Prepend+Replace \"▁\" normalizer)");
  }

  auto id_of_text = [&](const std::string& text, const char* what) -> int32_t {
    if (text.empty()) return -1;
    for (int32_t id = 0; id < int32_t(v.tokens.size()); ++id)
      if (v.tokens[size_t(id)] == text) return id;
    fail(source, ": ", what, " \"", text, "\" is not in the vocabulary");
  };
  if (const json* unk = json_text::find(*model, "unk_token"); unk && unk->is_string()) {
    v.unk = id_of_text(unk->get<std::string>(), "model.unk_token");
    v.types[size_t(v.unk)] = TokenType::Unknown;
  }

  // ---- BOS: the post-processor's template says whether a token goes first ----
  int32_t template_bos = -1;
  if (const json* post = json_text::find(j, "post_processor"); post && type_of(post) == "TemplateProcessing") {
    const json* single = json_text::find(*post, "single");
    if (single && single->is_array() && !single->empty() && (*single)[0].contains("SpecialToken")) {
      const std::string name = json_text::get_string((*single)[0]["SpecialToken"], "id", source + " post_processor");
      template_bos = id_of_text(name, "post_processor special token");
    }
  }
  v.bos = template_bos;
  v.add_bos = template_bos >= 0;
  if (!tokenizer_config_json.empty()) {
    const std::string cfg_source = source + " (tokenizer_config.json)";
    const json c = json_text::parse(tokenizer_config_json, cfg_source);
    QF_CHECK(c.is_object(), cfg_source, ": not a JSON object");
    if (const json* b = json_text::find(c, "bos_token")) v.bos = id_of_text(token_text(*b), "bos_token");
    if (const json* e = json_text::find(c, "eos_token")) v.eos = id_of_text(token_text(*e), "eos_token");
    if (const json* u = json_text::find(c, "unk_token"); u && v.unk < 0) v.unk = id_of_text(token_text(*u), "unk_token");
    v.add_bos = json_text::get_bool(c, "add_bos_token", v.add_bos, cfg_source);
    v.add_eos = json_text::get_bool(c, "add_eos_token", false, cfg_source);
    v.chat_template = parse_hf_chat_template(tokenizer_config_json, cfg_source);
  }
  QF_CHECK(!v.add_bos || v.bos >= 0, source, ": BOS is to be added but no bos_token is named");
  return v;
}

Tokenizer Tokenizer::from_hf_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string tj = (fs::path(dir) / "tokenizer.json").string();
  QF_CHECK(fs::exists(tj), dir, ": no tokenizer.json (qforge reads HF tokenizers from tokenizer.json)");
  // Large vocabularies (Llama-3, Qwen2) are 7-9 MB; 256 MB bounds a hostile file.
  constexpr size_t kMaxJsonBytes = size_t(256) << 20;
  const std::string text = json_text::read_file(tj, kMaxJsonBytes);
  const std::string cj = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string config = fs::exists(cj) ? json_text::read_file(cj, kMaxJsonBytes) : std::string();
  return from_vocab(parse_hf_tokenizer(text, config, tj));
}

}  // namespace qf
