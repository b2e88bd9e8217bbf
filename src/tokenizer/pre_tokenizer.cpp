#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace qf {

namespace {

// The regexes below are llama.cpp's (src/llama-vocab.cpp, Feb 2025), so that the ids equal its
// ids; where HF tokenizer.json files spell a pattern differently, kHfSpellings maps it here.

// GPT-2's pattern. HF's ByteLevel adds a final "|\s+"; without it a lone whitespace before a
// non-space matches nothing and is left as its own piece, which is the piece \s+ would give.
constexpr const char* kGpt2 = R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re";
// Llama-3's pattern with its case-insensitive (?i:'s|...) group written out for ASCII, as
// llama.cpp does (it then cannot match the Unicode case-folds of s and k, as HF's could).
constexpr const char* kLlama3 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// Qwen2: Llama-3's with single digits.
constexpr const char* kQwen2 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// BLOOM's: words with their leading space, cut at whitespace and (Latin, CJK, Devanagari,
// Arabic) punctuation. ("(" and "|" are literal inside the class, as in the original.)
constexpr const char* kBloom = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";

struct Family {
  const char* name;
  std::vector<const char*> gguf_names;
  std::vector<const char*> patterns;
  bool ignores_merges = false;
  bool adds_bos_by_default = false;
};

const std::vector<Family>& families() {
  static const std::vector<Family> kFamilies = {
      {"default", {"default"}, {R"re([\p{P}\$\+<=>\^~\|]+)re", kGpt2, R"re(\p{N}+)re", "[0-9][0-9][0-9]"}},
      {"gpt2",
       {"gpt-2", "phi-2", "roberta-bpe", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de",
        "jina-v2-code", "mpt", "olmo", "jais"},
       {kGpt2}},
      {"llama3", {"llama3", "llama-v3", "llama-bpe", "falcon3"}, {kLlama3}, true, true},
      {"dbrx", {"dbrx", "smaug-bpe"}, {kLlama3}},
      {"smollm",
       {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {R"re(\p{N})re", kGpt2}},
      {"qwen2", {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}, {kQwen2}},
      {"deepseek-coder",
       {"deepseek-coder"},
       {"[\r\n]", R"re(\s?\p{L}+)re", R"re(\s?\p{P}+)re", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", R"re(\p{N})re"}},
      {"deepseek-llm",
       {"deepseek-llm"},
       {"[\r\n]",
        // DeepSeek's list of cased letters (Latin, Greek, Cyrillic, Armenian, Georgian, ...).
        "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-"
        "\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481"
        "\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B"
        "\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B"
        "\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB"
        "\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128"
        "\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4"
        "\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF"
        "\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3"
        "\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
        "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", "\\s+$",
        "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", R"re(\p{N}+)re"}},
      {"falcon",
       {"falcon"},
       {R"re([\p{P}\$\+<=>\^~\|`]+)re", kGpt2, "[0-9][0-9][0-9]"}},
      {"bloom", {"bloom", "poro-chat", "gpt3-finnish"}, {kBloom}},
      {"viking", {"viking"}, {kBloom, R"re(\p{N})re"}},
  };
  return kFamilies;
}

// HF tokenizer.json spellings of the patterns above.
struct Spelling {
  const char* hf;
  const char* llama_cpp;
};
const Spelling kHfSpellings[] = {
    {R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re", kGpt2},
    {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
     kLlama3},
    {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
     kQwen2},
};

// By a GGUF name, or by the family's own name.
const Family* find_by_gguf_name(const std::string& name) {
  for (const Family& f : families()) {
    if (name == f.name) return &f;
    for (const char* n : f.gguf_names)
      if (name == n) return &f;
  }
  return nullptr;
}


}  // namespace

std::string PreTokenizer::supported_names() {
  std::string out;
  for (const Family& f : families()) {
    for (const char* n : f.gguf_names) {
      if (!out.empty()) out += ", ";
      out += n;
    }
  }
  return out;
}

std::vector<std::string> PreTokenizer::family_patterns(const std::string& family) {
  for (const Family& f : families())
    if (family == f.name) return std::vector<std::string>(f.patterns.begin(), f.patterns.end());
  return {};
}

PreTokenizer PreTokenizer::from_gguf_name(const std::string& name, const std::string& source) {
  const Family* f = find_by_gguf_name(name);
  if (!f) fail(source, ": tokenizer.ggml.pre \"", name, "\" is not a supported pre-tokenizer (supported: ", supported_names(), ")");
  PreTokenizer p;
  p.name_ = f->name;
  p.ignores_merges_ = f->ignores_merges;
  p.adds_bos_by_default_ = f->adds_bos_by_default;
  // Families share patterns; compile once per pattern string.
  static std::mutex mu;
  static std::vector<std::shared_ptr<const SplitRegex>> compiled;
  std::lock_guard<std::mutex> lock(mu);
  for (const char* pat : f->patterns) {
    auto it = std::find_if(compiled.begin(), compiled.end(), [&](const auto& r) { return r->pattern() == pat; });
    if (it == compiled.end()) it = compiled.insert(compiled.end(), std::make_shared<const SplitRegex>(pat));
    p.regexes_.push_back(*it);
  }
  return p;
}

PreTokenizer PreTokenizer::from_patterns(const std::vector<std::string>& patterns, const std::string& source) {
  std::vector<std::string> canonical;
  for (const std::string& pat : patterns) {
    std::string c = pat;
    for (const Spelling& s : kHfSpellings)
      if (pat == s.hf) c = s.llama_cpp;
    canonical.push_back(c);
  }
  for (const Family& f : families()) {
    if (f.patterns.size() != canonical.size()) continue;
    if (std::equal(canonical.begin(), canonical.end(), f.patterns.begin())) return from_gguf_name(f.gguf_names[0], source);
  }
  std::string listed, known;
  for (const std::string& pat : patterns) listed += str(listed.empty() ? "" : ", ", "\"", pat, "\"");
  for (const Family& f : families()) known += str(known.empty() ? "" : ", ", f.name);
  fail(source, ": the pre-tokenizer regexes [", listed, "] are not those of a supported family (", known, ")");
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  const std::vector<uint32_t> cps = unicode::decode_utf8(text);
  std::vector<unicode::CharClass> classes(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) classes[i] = unicode::char_class(cps[i]);
  std::vector<size_t> pieces;
  if (!cps.empty()) pieces.push_back(cps.size());
  for (const auto& re : regexes_) pieces = re->split(cps, classes, pieces);
  std::vector<std::string> words;
  words.reserve(pieces.size());
  size_t begin = 0;
  for (size_t len : pieces) {
    std::string w;
    for (size_t i = begin; i < begin + len; ++i) unicode::append_utf8(w, cps[i]);
    words.push_back(std::move(w));
    begin += len;
  }
  return words;
}

}  // namespace qf
