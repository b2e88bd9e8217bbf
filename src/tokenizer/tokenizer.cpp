// Tokenizer: special-token partition, byte-level BPE and SentencePiece-style BPE, following
// llama.cpp's llama-vocab.cpp (Feb 2025) step by step where its choices decide the ids.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace qf {

namespace {

// Hashing std::string and std::string_view alike lets lookups take a view (no allocation).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

int32_t find_id(const StringToId& map, std::string_view s) {
  auto it = map.find(s);
  return it == map.end() ? -1 : it->second;
}

// "▁" (U+2581): SentencePiece's visible space.
constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

// Texts of tokens that end a turn, hence generation, whatever id they have (llama.cpp's list;
// it also makes them control tokens).
constexpr std::string_view kEndOfTurnTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                                "<|endoftext|>", "<|eom_id|>", "<EOT>"};
// Llama-2's end of sequence ends generation too, by text, but keeps its type (Phi-3 has it as a
// user-defined token, which llama.cpp splits out of text even without parse_special).
constexpr std::string_view kEndOfSequenceText = "</s>";

// One piece of the input after special tokens are split out: a token, or text to tokenize.
struct Fragment {
  int32_t token = -1;     // >= 0: this special token
  std::string_view text;  // else: raw text
};

}  // namespace

struct Tokenizer::Impl {
  Vocab v;
  StringToId token_to_id;
  int64_t n_tokens = 0;

  // Special tokens in the order the partition tries them: longest text first, so that a token
  // whose text contains another's is found whole.
  std::vector<int32_t> special_order;
  std::vector<uint8_t> is_eog;

  // ---- byte-level BPE ----
  std::optional<PreTokenizer> pre;
  bool ignore_merges = false;
  // Merges act on symbols: every token text and every string a merge names, interned; a
  // token's symbol id is its token id, other strings get ids from n_tokens up.
  StringToId symbol_id;
  struct MergeRule {
    int32_t rank;
    int32_t result;  // symbol id of left+right
  };
  std::unordered_map<uint64_t, MergeRule> merge_rules;  // (left << 32 | right) -> rule

  // ---- SentencePiece ----
  int32_t byte_token[256];  // <0xXX> (else the byte itself as a token), -1 if neither

  ChatTemplate chat;

  TokenType type(int32_t id) const { return v.types[size_t(id)]; }
  void check_id(int32_t id) const {
    QF_CHECK(id >= 0 && id < n_tokens, v.source, ": token id ", id, " is out of range (vocabulary of ", n_tokens,
             " tokens)");
  }

  void build();
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  void bpe_encode(std::string_view text, std::vector<int32_t>& out,
                  std::unordered_map<std::string, std::vector<int32_t>>& cache) const;
  void bpe_encode_word(std::string_view mapped, std::vector<int32_t>& out) const;
  void spm_encode(std::string_view text, std::vector<int32_t>& out) const;
  void push_byte(uint8_t b, std::vector<int32_t>& out) const;
  std::string piece(int32_t id) const;
};

// ---- construction -----------------------------------------------------------------------------

void Tokenizer::Impl::build() {
  const std::string& src = v.source;
  n_tokens = int64_t(v.tokens.size());
  QF_CHECK(n_tokens > 0, src, ": the vocabulary is empty");
  QF_CHECK(n_tokens < (int64_t(1) << 31), src, ": the vocabulary has too many tokens (", n_tokens, ")");
  QF_CHECK(v.types.empty() || v.types.size() == v.tokens.size(), src, ": ", v.types.size(), " token types for ",
           v.tokens.size(), " tokens");
  if (v.types.empty()) v.types.assign(v.tokens.size(), TokenType::Normal);
  for (int32_t id : {v.bos, v.eos, v.unk, v.eot})
    QF_CHECK(id >= -1 && id < n_tokens, src, ": special token id ", id, " is out of range (", n_tokens, " tokens)");
  QF_CHECK(!v.add_bos || v.bos >= 0, src, ": the tokenizer adds BOS but names no BOS token");

  token_to_id.reserve(v.tokens.size());
  // A text that occurs twice maps to its last id, as in llama.cpp.
  for (int32_t id = 0; id < int32_t(n_tokens); ++id) token_to_id[v.tokens[size_t(id)]] = id;

  // End of generation: EOS, the declared end-of-turn, and end-of-turn tokens found by text.
  is_eog.assign(size_t(n_tokens), 0);
  for (int32_t id : {v.eos, v.eot})
    if (id >= 0) is_eog[size_t(id)] = 1;
  for (std::string_view t : kEndOfTurnTexts)
    if (int32_t id = find_id(token_to_id, t); id >= 0) {
      is_eog[size_t(id)] = 1;
      // llama.cpp treats these as control tokens even when the file says otherwise, so that
      // "<|im_end|>" in text is parsed as the token.
      v.types[size_t(id)] = TokenType::Control;
    }
  if (int32_t id = find_id(token_to_id, kEndOfSequenceText); id >= 0) is_eog[size_t(id)] = 1;
  QF_CHECK(v.strip.empty() || v.strip.size() == v.tokens.size(), src, ": ", v.strip.size(), " strip flags for ",
           v.tokens.size(), " tokens");
  if (v.strip.empty()) v.strip.assign(v.tokens.size(), 0);

  // Partition order: longest first; equal lengths by id (llama.cpp's order there is unspecified).
  for (int32_t id = 0; id < int32_t(n_tokens); ++id) {
    const TokenType t = type(id);
    if ((t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) && !v.tokens[size_t(id)].empty())
      special_order.push_back(id);
  }
  std::stable_sort(special_order.begin(), special_order.end(),
                   [&](int32_t a, int32_t b) { return v.tokens[size_t(a)].size() > v.tokens[size_t(b)].size(); });

  if (v.kind == VocabKind::ByteLevelBpe) {
    pre = PreTokenizer::from_gguf_name(v.pre, src);
    ignore_merges = v.ignore_merges;
    symbol_id = token_to_id;
    int32_t next_symbol = int32_t(n_tokens);
    auto intern = [&](std::string s) {
      auto [it, inserted] = symbol_id.try_emplace(std::move(s), next_symbol);
      if (inserted) ++next_symbol;
      return it->second;
    };
    merge_rules.reserve(v.merges.size());
    for (size_t rank = 0; rank < v.merges.size(); ++rank) {
      const std::string& m = v.merges[rank];
      // Split at the first space after the first character, as llama.cpp does.
      const size_t sp = m.find(' ', 1);
      QF_CHECK(sp != std::string::npos, src, ": merge ", rank, " (\"", m, "\") is not \"left right\"");
      std::string left = m.substr(0, sp), right = m.substr(sp + 1);
      const int32_t l = intern(left), r = intern(right);
      const int32_t result = intern(left + right);
      const uint64_t key = (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
      merge_rules.try_emplace(key, MergeRule{int32_t(rank), result});  // a repeated pair keeps its best rank
    }
  } else {
    QF_CHECK(v.scores.size() == v.tokens.size(), src, ": ", v.scores.size(), " token scores for ", v.tokens.size(),
             " tokens (SentencePiece merges by score)");
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
      int32_t id = find_id(token_to_id, std::string_view(name, sizeof(name)));
      if (id < 0) id = find_id(token_to_id, std::string_view(reinterpret_cast<const char*>(&b), 1));
      byte_token[b] = id;
    }
  }
  chat = ChatTemplate::detect(v.chat_template);
}

Tokenizer Tokenizer::from_vocab(Vocab vocab) {
  Tokenizer t;
  t.impl_->v = std::move(vocab);
  t.impl_->build();
  return t;
}

Tokenizer Tokenizer::from_gguf(const gguf::Metadata& md, const std::string& source) {
  Vocab v;
  v.source = source;
  const std::string model = md.get_string("tokenizer.ggml.model");
  v.tokens = md.get_string_array("tokenizer.ggml.tokens");
  if (md.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = md.get_int_array("tokenizer.ggml.token_type");
    QF_CHECK(types.size() == v.tokens.size(), source, ": tokenizer.ggml.token_type has ", types.size(),
             " entries for ", v.tokens.size(), " tokens");
    v.types.reserve(types.size());
    for (int64_t t : types) v.types.push_back(t >= 0 && t <= 6 ? TokenType(t) : TokenType::Undefined);
  }
  if (md.has("tokenizer.ggml.scores")) {
    const std::vector<double> scores = md.get_float_array("tokenizer.ggml.scores");
    QF_CHECK(scores.size() == v.tokens.size(), source, ": tokenizer.ggml.scores has ", scores.size(),
             " entries for ", v.tokens.size(), " tokens");
    v.scores.assign(scores.begin(), scores.end());
  }
  auto id_key = [&](const char* key, int64_t def) {
    const int64_t id = md.get_int(key, def);
    // llama.cpp ignores an out-of-range id and keeps its default; a file with one is broken.
    QF_CHECK(id >= -1 && id < int64_t(v.tokens.size()), source, ": ", key, " = ", id, " is not a token id (",
             v.tokens.size(), " tokens)");
    return int32_t(id);
  };
  if (model == "gpt2") {
    v.kind = VocabKind::ByteLevelBpe;
    // llama.cpp uses "default" when the key is absent (and warns that quality suffers).
    v.pre = md.get_string("tokenizer.ggml.pre", "default");
    v.merges = md.get_string_array("tokenizer.ggml.merges");
    const PreTokenizer pre = PreTokenizer::from_gguf_name(v.pre, source);
    v.ignore_merges = pre.ignores_merges();
    v.add_bos = md.get_bool("tokenizer.ggml.add_bos_token", pre.adds_bos_by_default());
    v.bos = id_key("tokenizer.ggml.bos_token_id", -1);
    v.eos = id_key("tokenizer.ggml.eos_token_id", -1);
    v.unk = id_key("tokenizer.ggml.unknown_token_id", -1);
  } else if (model == "llama") {
    v.kind = VocabKind::SentencePiece;
    QF_CHECK(md.has("tokenizer.ggml.scores"), source, ": a \"llama\" (SentencePiece) tokenizer needs tokenizer.ggml.scores");
    // Llama-2's conventions are llama.cpp's defaults: <unk> 0, <s> 1, </s> 2, BOS added, a
    // space before the text.
    v.add_bos = md.get_bool("tokenizer.ggml.add_bos_token", true);
    v.add_space_prefix = md.get_bool("tokenizer.ggml.add_space_prefix", true);
    v.bos = id_key("tokenizer.ggml.bos_token_id", 1);
    v.eos = id_key("tokenizer.ggml.eos_token_id", 2);
    v.unk = id_key("tokenizer.ggml.unknown_token_id", 0);
  } else {
    fail(source, ": tokenizer.ggml.model \"", model, "\" is not supported (supported: gpt2, llama)");
  }
  // llama.cpp gives Phi-3's special tokens RSTRIP by model name (the files do not record it):
  // whitespace after them in the text is dropped, except after <unk>, <s>, <|endoftext|>.
  std::string name = md.get_string("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    v.strip.assign(v.tokens.size(), 0);
    for (size_t id = 0; id < v.tokens.size(); ++id) {
      const TokenType t = v.types.empty() ? TokenType::Normal : v.types[id];
      const std::string& s = v.tokens[id];
      const bool special = t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown;
      if ((special || s == "</s>") && s != "<unk>" && s != "<s>" && s != "<|endoftext|>") v.strip[id] = kStripRight;
    }
  }
  v.add_eos = md.get_bool("tokenizer.ggml.add_eos_token", false);
  v.eot = id_key("tokenizer.ggml.eot_token_id", -1);
  v.chat_template = md.get_string("tokenizer.chat_template", "");
  return from_vocab(std::move(v));
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

// ---- special tokens ---------------------------------------------------------------------------

// Splits every occurrence of a special token out of the text, token by token in special_order,
// each over the text fragments the previous ones left (llama.cpp's tokenizer_st_partition).
// Control and unknown tokens count only when parse_special; user-defined ones always do.
std::vector<Fragment> Tokenizer::Impl::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, text});
  std::vector<Fragment> next;
  for (int32_t id : special_order) {
    const TokenType t = type(id);
    if (!parse_special && t != TokenType::UserDefined) continue;
    const std::string& tok = v.tokens[size_t(id)];
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view rest = f.text;
      auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
      for (size_t hit; (hit = rest.find(tok)) != std::string_view::npos;) {
        std::string_view left = rest.substr(0, hit);
        if (v.strip[size_t(id)] & kStripLeft)
          while (!left.empty() && space(left.back())) left.remove_suffix(1);
        if (!left.empty()) next.push_back({-1, left});
        next.push_back({id, {}});
        rest.remove_prefix(hit + tok.size());
        if (v.strip[size_t(id)] & kStripRight)
          while (!rest.empty() && space(rest.front())) rest.remove_prefix(1);
      }
      if (!rest.empty()) next.push_back({-1, rest});
    }
    frags.swap(next);
  }
  return frags;
}

// ---- byte-level BPE -----------------------------------------------------------------------------

void Tokenizer::Impl::bpe_encode(std::string_view text, std::vector<int32_t>& out,
                                 std::unordered_map<std::string, std::vector<int32_t>>& cache) const {
  for (const std::string& word : pre->split(text)) {
    std::string mapped = unicode::bytes_to_byte_level(word);
    auto it = cache.find(mapped);
    if (it == cache.end()) {
      std::vector<int32_t> ids;
      const int32_t whole = ignore_merges ? find_id(token_to_id, mapped) : -1;
      if (whole >= 0) {
        ids.push_back(whole);
      } else {
        bpe_encode_word(mapped, ids);
      }
      it = cache.emplace(std::move(mapped), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

// Merges the symbols of one word, lowest rank first and leftmost first among equal ranks,
// until no adjacent pair has a merge (llama.cpp's llm_tokenizer_bpe_session, with symbols as
// interned ids rather than strings).
void Tokenizer::Impl::bpe_encode_word(std::string_view mapped, std::vector<int32_t>& out) const {
  struct Symbol {
    uint32_t begin, size;  // bytes of `mapped`; size 0 once merged into its left neighbour
    int32_t id;            // symbol id, -1 if the text is in no token and no merge
    int32_t prev, next;
  };
  std::vector<Symbol> syms;
  for (size_t i = 0; i < mapped.size();) {
    const size_t n = std::min(unicode::utf8_sequence_length(uint8_t(mapped[i])), mapped.size() - i);
    const int32_t index = int32_t(syms.size());
    syms.push_back({uint32_t(i), uint32_t(n), find_id(symbol_id, mapped.substr(i, n)), index - 1,
                    i + n == mapped.size() ? -1 : index + 1});
    i += n;
  }

  struct Bigram {
    int32_t rank, left, right, left_id, right_id, result;
  };
  auto later = [](const Bigram& a, const Bigram& b) { return a.rank > b.rank || (a.rank == b.rank && a.left > b.left); };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(later)> queue(later);
  auto add_bigram = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || syms[size_t(l)].id < 0 || syms[size_t(r)].id < 0) return;
    const uint64_t key = (uint64_t(uint32_t(syms[size_t(l)].id)) << 32) | uint32_t(syms[size_t(r)].id);
    auto it = merge_rules.find(key);
    if (it != merge_rules.end())
      queue.push({it->second.rank, l, r, syms[size_t(l)].id, syms[size_t(r)].id, it->second.result});
  };
  for (int32_t i = 1; i < int32_t(syms.size()); ++i) add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = syms[size_t(b.left)];
    Symbol& r = syms[size_t(b.right)];
    // Stale: one side was merged away or grew since the pair was queued.
    if (l.size == 0 || r.size == 0 || l.id != b.left_id || r.id != b.right_id) continue;
    l.id = b.result;
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) syms[size_t(r.next)].prev = b.left;
    add_bigram(l.prev, b.left);
    add_bigram(b.left, l.next);
  }

  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[size_t(i)].next) {
    const Symbol& s = syms[size_t(i)];
    if (s.id >= 0 && s.id < n_tokens) {
      out.push_back(s.id);
      continue;
    }
    // Not a token: each byte of the text that is a token on its own, else nothing (llama.cpp
    // drops what it cannot map; full byte-level vocabularies never get here).
    for (size_t k = s.begin; k < s.begin + s.size; ++k)
      if (int32_t id = find_id(token_to_id, mapped.substr(k, 1)); id >= 0) out.push_back(id);
  }
}

// ---- SentencePiece ----------------------------------------------------------------------------------

void Tokenizer::Impl::push_byte(uint8_t b, std::vector<int32_t>& out) const {
  int32_t id = byte_token[b];
  if (id < 0) id = v.unk;
  QF_CHECK(id >= 0, v.source, ": byte 0x", std::hex, int(b), " has no <0xXX> token and there is no unknown token");
  out.push_back(id);
}

// Merges adjacent symbols whose concatenation is a token, highest score first and leftmost
// first among equal scores, then writes each symbol as its token or as byte tokens
// (llama.cpp's llm_tokenizer_spm_session). `text` already has "▁" for spaces.
void Tokenizer::Impl::spm_encode(std::string_view text, std::vector<int32_t>& out) const {
  struct Symbol {
    uint32_t begin, size;
    int32_t prev, next;
  };
  std::vector<Symbol> syms;
  for (size_t i = 0; i < text.size();) {
    // A malformed sequence is cut where its lead byte says, as llama.cpp does.
    const size_t n = std::min(unicode::utf8_sequence_length(uint8_t(text[i])), text.size() - i);
    const int32_t index = int32_t(syms.size());
    syms.push_back({uint32_t(i), uint32_t(n), index - 1, i + n == text.size() ? -1 : index + 1});
    i += n;
  }
  struct Bigram {
    float score;
    int32_t left, right;
    uint32_t size;
  };
  auto later = [](const Bigram& a, const Bigram& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(later)> queue(later);
  auto add_bigram = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const Symbol& a = syms[size_t(l)];
    const Symbol& b = syms[size_t(r)];
    const int32_t id = find_id(token_to_id, text.substr(a.begin, a.size + b.size));
    // -inf marks pieces no merge makes (vocabularies from HF merge lists, hf_tokenizer.cpp);
    // SentencePiece files have finite scores.
    if (id < 0 || v.scores[size_t(id)] == -std::numeric_limits<float>::infinity()) return;
    queue.push({v.scores[size_t(id)], l, r, a.size + b.size});
  };
  for (int32_t i = 1; i < int32_t(syms.size()); ++i) add_bigram(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = syms[size_t(b.left)];
    Symbol& r = syms[size_t(b.right)];
    if (l.size == 0 || r.size == 0 || l.size + r.size != b.size) continue;
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) syms[size_t(r.next)].prev = b.left;
    add_bigram(l.prev, b.left);
    add_bigram(b.left, l.next);
  }
  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[size_t(i)].next) {
    const Symbol& s = syms[size_t(i)];
    const std::string_view piece = text.substr(s.begin, s.size);
    if (int32_t id = find_id(token_to_id, piece); id >= 0) {
      out.push_back(id);
    } else {
      for (char c : piece) push_byte(uint8_t(c), out);
    }
  }
}

// ---- encode / decode ---------------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  const Impl& m = *impl_;
  QF_CHECK(m.n_tokens > 0, "encode on an empty tokenizer (default-constructed, never loaded)");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && m.v.add_bos) out.push_back(m.v.bos);
  const std::vector<Fragment> frags = m.partition(text, parse_special);
  if (m.v.kind == VocabKind::ByteLevelBpe) {
    std::unordered_map<std::string, std::vector<int32_t>> cache;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        m.bpe_encode(f.text, out, cache);
      }
    }
  } else {
    // The space prefix goes before the text and before any text that follows a special token
    // (llama.cpp's rule; SentencePiece itself knows no special tokens).
    bool after_special = true;
    std::string escaped;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        after_special = true;
        continue;
      }
      escaped.clear();
      if (m.v.add_space_prefix && after_special) escaped += kSpmSpace;
      for (char c : f.text) {
        if (c == ' ') {
          escaped += kSpmSpace;
        } else {
          escaped += c;
        }
      }
      m.spm_encode(escaped, out);
      after_special = false;
    }
  }
  return out;
}

std::string Tokenizer::Impl::piece(int32_t id) const {
  check_id(id);
  const std::string& text = v.tokens[size_t(id)];
  const TokenType t = type(id);
  if (t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) return text;
  if (v.kind == VocabKind::ByteLevelBpe) {
    // Only normal tokens stand for bytes; llama.cpp prints nothing for the other types.
    return t == TokenType::Normal ? unicode::byte_level_to_bytes(text) : std::string();
  }
  if (t == TokenType::Byte) {
    // <0xXX>
    QF_CHECK(text.size() == 6 && text.compare(0, 3, "<0x") == 0, v.source, ": byte token ", id, " is \"", text,
             "\", not <0xXX>");
    return std::string(1, char(std::stoi(text.substr(3, 2), nullptr, 16)));
  }
  if (t != TokenType::Normal) return {};
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, kSpmSpace.size(), kSpmSpace) == 0) {
      out += ' ';
      i += kSpmSpace.size();
    } else {
      out += text[i++];
    }
  }
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const { return impl_->piece(id); }

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const Impl& m = *impl_;
  std::string out;
  // SentencePiece: encode put a space before the text and after each special token; take it
  // back so that decode(encode(s)) == s.
  bool strip_space = m.v.kind == VocabKind::SentencePiece && m.v.add_space_prefix;
  bool at_text_start = true;
  for (int32_t id : ids) {
    std::string p = m.piece(id);
    const TokenType t = m.type(id);
    const bool special = t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown;
    if (strip_space && at_text_start && !special && !p.empty()) {
      if (p[0] == ' ') p.erase(0, 1);
      at_text_start = false;
    }
    if (special) at_text_start = true;
    out += p;
  }
  return out;
}

// ---- properties ---------------------------------------------------------------------------------

int64_t Tokenizer::vocab_size() const { return impl_->n_tokens; }
int32_t Tokenizer::bos_id() const { return impl_->v.bos; }
int32_t Tokenizer::eos_id() const { return impl_->v.eos; }
bool Tokenizer::adds_bos() const { return impl_->v.add_bos; }

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return id >= 0 && id < impl_->n_tokens && impl_->is_eog[size_t(id)] != 0;
}

std::string Tokenizer::kind() const {
  const Impl& m = *impl_;
  if (m.v.kind == VocabKind::SentencePiece) return "spm";
  return str("bpe (", m.pre->name(), ")");
}

int32_t Tokenizer::token_id(std::string_view text) const { return find_id(impl_->token_to_id, text); }

void Tokenizer::set_chat_template(std::string jinja_text) {
  impl_->v.chat_template = std::move(jinja_text);
  impl_->chat = ChatTemplate::detect(impl_->v.chat_template);
}

const ChatTemplate& Tokenizer::chat_template() const { return impl_->chat; }

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return impl_->chat.apply(messages, add_generation_prompt);
}

}  // namespace qf
