#include "tokenizer/split_regex.h"

#include <algorithm>
#include <functional>

#include "core/error.h"

namespace qf {

namespace {

// Parse tree of a pattern; compiled into the backtracking program below.
struct Node {
  enum class Kind { Set, Seq, Alt, Repeat, Look, End } kind;
  int32_t set = -1;              // Set: index into sets_
  std::vector<Node> kids;        // Seq, Alt; Repeat and Look have one
  int32_t min = 0, max = 0;      // Repeat; max < 0: unbounded
  bool negated = false;          // Look
};

constexpr uint16_t category_bit(unicode::Category c) { return uint16_t(1u << unsigned(c)); }
constexpr uint16_t kAllCategories = 0xFF;

// Whether a node can match without consuming input (a loop over such a body would not end).
bool nullable(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Set: return false;
    case Node::Kind::Seq: return std::all_of(n.kids.begin(), n.kids.end(), nullable);
    case Node::Kind::Alt: return std::any_of(n.kids.begin(), n.kids.end(), nullable);
    case Node::Kind::Repeat: return n.min == 0 || nullable(n.kids[0]);
    case Node::Kind::Look: case Node::Kind::End: return true;
  }
  return true;
}

}  // namespace

bool SplitRegex::CharSet::matches(uint32_t cp, unicode::CharClass cls) const {
  bool in = ((class_bits >> (cls & unicode::kCategoryMask)) & 1) != 0;
  if (!in && (class_bits & (kSpaceBit | kNonSpaceBit))) {
    const bool space = (cls & unicode::kWhiteSpace) != 0;
    in = space ? (class_bits & kSpaceBit) != 0 : (class_bits & kNonSpaceBit) != 0;
  }
  if (!in) {
    for (const auto& [lo, hi] : ranges) {
      if (lo <= cp && cp <= hi) {
        in = true;
        break;
      }
    }
  }
  return in != negated;
}

struct SplitRegex::Parser {
  SplitRegex& re;
  std::vector<uint32_t> p;  // the pattern's code points
  size_t i = 0;

  [[noreturn]] void error(const std::string& what) const {
    fail("pre-tokenizer regex \"", re.pattern_, "\": ", what, " at character ", i);
  }
  bool at_end() const { return i >= p.size(); }
  uint32_t peek() const { return at_end() ? 0 : p[i]; }
  bool eat(uint32_t c) {
    if (!at_end() && p[i] == c) {
      ++i;
      return true;
    }
    return false;
  }

  int32_t add_set(CharSet s) {
    re.sets_.push_back(std::move(s));
    return int32_t(re.sets_.size() - 1);
  }
  Node set_node(CharSet s) { return Node{Node::Kind::Set, add_set(std::move(s)), {}, 0, 0, false}; }
  static CharSet single(uint32_t cp) {
    CharSet s;
    s.ranges.push_back({cp, cp});
    return s;
  }

  Node parse_alt() {
    Node alt{Node::Kind::Alt, -1, {}, 0, 0, false};
    alt.kids.push_back(parse_seq());
    while (eat('|')) alt.kids.push_back(parse_seq());
    return alt.kids.size() == 1 ? std::move(alt.kids[0]) : alt;
  }

  Node parse_seq() {
    Node seq{Node::Kind::Seq, -1, {}, 0, 0, false};
    while (!at_end() && peek() != '|' && peek() != ')') {
      Node atom = parse_atom();
      seq.kids.push_back(parse_quantifier(std::move(atom)));
    }
    return seq;
  }

  int32_t parse_int() {
    if (at_end() || peek() < '0' || peek() > '9') error("expected a number in {}");
    int64_t v = 0;
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + (p[i++] - '0');
      if (v > 1000) error("repetition count above 1000");
    }
    return int32_t(v);
  }

  Node parse_quantifier(Node atom) {
    int32_t min = 0, max = 0;
    if (eat('?')) {
      min = 0, max = 1;
    } else if (eat('*')) {
      min = 0, max = -1;
    } else if (eat('+')) {
      min = 1, max = -1;
    } else if (eat('{')) {
      min = parse_int();
      max = min;
      if (eat(',')) max = peek() == '}' ? -1 : parse_int();
      if (!eat('}')) error("expected '}'");
      if (max >= 0 && max < min) error("{n,m} with m < n");
    } else {
      return atom;
    }
    if (peek() == '?' || peek() == '+') error("lazy and possessive quantifiers are not supported");
    if (atom.kind == Node::Kind::Look || atom.kind == Node::Kind::End) error("quantified assertion");
    if (max < 0 && nullable(atom)) error("unbounded repetition of something that can match nothing");
    if (!at_end() && (peek() == '*' || peek() == '{')) error("quantifier after a quantifier");
    Node rep{Node::Kind::Repeat, -1, {}, min, max, false};
    rep.kids.push_back(std::move(atom));
    return rep;
  }

  Node parse_atom() {
    const uint32_t c = p[i++];
    switch (c) {
      case '(': {
        Node inner;
        if (eat('?')) {
          if (eat(':')) {
            inner = parse_alt();
          } else if (peek() == '=' || peek() == '!') {
            const bool negated = p[i++] == '!';
            inner = Node{Node::Kind::Look, -1, {}, 0, 0, negated};
            inner.kids.push_back(parse_alt());
          } else {
            error("unsupported group (only (?:...), (?=...) and (?!...))");
          }
        } else {
          inner = parse_alt();  // capturing groups only group: nothing is extracted
        }
        if (!eat(')')) error("expected ')'");
        return inner;
      }
      case '[': return set_node(parse_class());
      case '\\': return set_node(parse_escape());
      case '$': return Node{Node::Kind::End, -1, {}, 0, 0, false};
      case '.': case '^': error("'.' and '^' are not supported");
      case ')': case '?': case '*': case '+': case '{': error("unexpected character");
      default: return set_node(single(c));
    }
  }

  // After the backslash.
  CharSet parse_escape() {
    if (at_end()) error("pattern ends in a backslash");
    const uint32_t c = p[i++];
    CharSet s;
    switch (c) {
      case 'r': return single('\r');
      case 'n': return single('\n');
      case 't': return single('\t');
      case 'f': return single('\f');
      case 'v': return single('\v');
      case 's': s.class_bits = kSpaceBit; return s;
      case 'S': s.class_bits = kNonSpaceBit; return s;
      case 'x': {
        uint32_t v = 0;
        for (int k = 0; k < 2; ++k) {
          const uint32_t h = at_end() ? 0 : p[i++];
          int d = (h >= '0' && h <= '9') ? int(h - '0') : (h >= 'a' && h <= 'f') ? int(h - 'a' + 10)
                : (h >= 'A' && h <= 'F') ? int(h - 'A' + 10) : -1;
          if (d < 0) error("\\x needs two hex digits");
          v = v * 16 + uint32_t(d);
        }
        return single(v);
      }
      case 'p': case 'P': {
        if (!eat('{') || at_end()) error("expected \\p{X}");
        const uint32_t name = p[i++];
        if (!eat('}')) error("only one-letter categories \\p{L}, \\p{N}, \\p{P}, \\p{S}, \\p{M}, \\p{Z}, \\p{C}");
        uint16_t bits = 0;
        switch (name) {
          case 'L': bits = category_bit(unicode::Category::Letter); break;
          case 'N': bits = category_bit(unicode::Category::Number); break;
          case 'P': bits = category_bit(unicode::Category::Punctuation); break;
          case 'S': bits = category_bit(unicode::Category::Symbol); break;
          case 'M': bits = category_bit(unicode::Category::Mark); break;
          case 'Z': bits = category_bit(unicode::Category::Separator); break;
          // \p{C} includes unassigned code points (Cn), as in Unicode's definition.
          case 'C': bits = category_bit(unicode::Category::Other) | category_bit(unicode::Category::Unassigned); break;
          default: error("unknown category");
        }
        // The categories partition the code points, so \P{X} is the other categories.
        s.class_bits = c == 'P' ? uint16_t(kAllCategories & ~bits) : bits;
        return s;
      }
      default:
        // An escaped punctuation character is itself; letters and digits would be classes or
        // backreferences we do not implement.
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
          error(str("unsupported escape \\", char(c)));
        return single(c);
    }
  }

  // After '['.
  CharSet parse_class() {
    CharSet s;
    s.negated = eat('^');
    bool first = true;
    while (true) {
      if (at_end()) error("unterminated class");
      if (peek() == ']' && !first) {
        ++i;
        break;
      }
      first = false;
      CharSet item;
      uint32_t lo = 0;
      bool single_cp = false;
      if (eat('\\')) {
        item = parse_escape();
        single_cp = item.class_bits == 0 && item.ranges.size() == 1;
        if (single_cp) lo = item.ranges[0].first;
      } else {
        if (peek() == '[') error("nested classes are not supported");
        lo = p[i++];
        single_cp = true;
      }
      if (single_cp && peek() == '-' && i + 1 < p.size() && p[i + 1] != ']') {
        ++i;  // '-'
        uint32_t hi;
        if (eat('\\')) {
          CharSet e = parse_escape();
          if (e.class_bits != 0 || e.ranges.size() != 1) error("class range ends in a class");
          hi = e.ranges[0].first;
        } else {
          hi = p[i++];
        }
        if (hi < lo) error("class range out of order");
        s.ranges.push_back({lo, hi});
      } else if (single_cp) {
        s.ranges.push_back({lo, lo});
      } else {
        s.class_bits |= item.class_bits;
        s.ranges.insert(s.ranges.end(), item.ranges.begin(), item.ranges.end());
      }
    }
    return s;
  }
};

SplitRegex::SplitRegex(std::string_view pattern) : pattern_(pattern) {
  Parser parser{*this, unicode::decode_utf8(pattern)};
  if (parser.p.empty()) fail("pre-tokenizer regex is empty");
  Node root = parser.parse_alt();
  if (!parser.at_end()) parser.error("unbalanced ')'");

  // Compile to a backtracking program: Split tries its first branch and remembers the second.
  std::vector<Inst>& prog = program_;
  // Counted repetition copies its body; bound the program so that nested counts cannot make
  // it huge (the patterns in use compile to a few hundred instructions).
  constexpr size_t kMaxProgram = size_t(1) << 16;
  auto emit = [&](Op op, int32_t arg = 0, int32_t alt = 0, bool negated = false) {
    if (prog.size() >= kMaxProgram) parser.error(str("compiles to more than ", kMaxProgram, " instructions"));
    prog.push_back(Inst{op, negated, arg, alt});
    return int32_t(prog.size() - 1);
  };
  auto here = [&] { return int32_t(prog.size()); };
  std::function<void(const Node&)> compile = [&](const Node& n) {
    switch (n.kind) {
      case Node::Kind::Set: emit(Op::Char, n.set); break;
      case Node::Kind::Seq: for (const Node& k : n.kids) compile(k); break;
      case Node::Kind::End: emit(Op::AssertEnd); break;
      case Node::Kind::Alt: {
        std::vector<int32_t> jumps_to_end;
        for (size_t k = 0; k < n.kids.size(); ++k) {
          int32_t split = -1;
          if (k + 1 < n.kids.size()) split = emit(Op::Split);
          if (split >= 0) prog[size_t(split)].arg = here();
          compile(n.kids[k]);
          if (k + 1 < n.kids.size()) {
            jumps_to_end.push_back(emit(Op::Jump));
            prog[size_t(split)].alt = here();
          }
        }
        for (int32_t j : jumps_to_end) prog[size_t(j)].arg = here();
        break;
      }
      case Node::Kind::Repeat: {
        const Node& body = n.kids[0];
        for (int32_t k = 0; k < n.min; ++k) compile(body);
        if (n.max < 0) {
          const int32_t loop = emit(Op::Split);  // greedy: another round first
          prog[size_t(loop)].arg = here();
          compile(body);
          emit(Op::Jump, loop);
          prog[size_t(loop)].alt = here();
        } else {
          std::vector<int32_t> splits;
          for (int32_t k = n.min; k < n.max; ++k) {
            const int32_t split = emit(Op::Split);
            prog[size_t(split)].arg = here();
            splits.push_back(split);
            compile(body);
          }
          for (int32_t s : splits) prog[size_t(s)].alt = here();
        }
        break;
      }
      case Node::Kind::Look: {
        const int32_t look = emit(Op::Look, 0, 0, n.negated);
        compile(n.kids[0]);
        emit(Op::LookEnd);
        prog[size_t(look)].arg = here();
        break;
      }
    }
  };
  compile(root);
  emit(Op::Match);
}

bool SplitRegex::run(int32_t start_pc, std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes,
                     size_t start_pos, size_t end, std::vector<Choice>& stack, size_t& match_end) const {
  // Depth-first over the choice points: the first path to reach Match is the leftmost-first
  // match. The patterns have no nested unbounded repetition, so this is linear per attempt in
  // practice. A lookahead runs its sub-program on top of the same stack.
  const size_t base = stack.size();
  stack.push_back({start_pc, start_pos});
  while (stack.size() > base) {
    auto [pc, pos] = stack.back();
    stack.pop_back();
    while (true) {
      const Inst& in = program_[size_t(pc)];
      bool ok = true;
      switch (in.op) {
        case Op::Char:
          ok = pos < end && sets_[size_t(in.arg)].matches(cps[pos], classes[pos]);
          if (ok) ++pos, ++pc;
          break;
        case Op::Split:
          stack.push_back({in.alt, pos});
          pc = in.arg;
          break;
        case Op::Jump: pc = in.arg; break;
        case Op::AssertEnd:
          ok = pos == end;
          ++pc;
          break;
        case Op::Look: {
          size_t ignored;
          const bool matched = run(pc + 1, cps, classes, pos, end, stack, ignored);
          ok = matched != in.negated;
          pc = in.arg;
          break;
        }
        case Op::LookEnd:
        case Op::Match:
          match_end = pos;
          stack.resize(base);
          return true;
      }
      if (!ok) break;
    }
  }
  return false;
}

int64_t SplitRegex::match_at(std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes, size_t pos,
                             size_t end) const {
  std::vector<Choice> stack;
  size_t match_end = 0;
  return run(0, cps, classes, pos, end, stack, match_end) ? int64_t(match_end) : -1;
}

std::vector<size_t> SplitRegex::split(std::span<const uint32_t> cps, std::span<const unicode::CharClass> classes,
                                      std::span<const size_t> piece_lengths) const {
  std::vector<size_t> out;
  out.reserve(piece_lengths.size() * 2);
  std::vector<Choice> stack;
  size_t begin = 0;
  for (size_t len : piece_lengths) {
    const size_t end = begin + len;
    size_t done = begin;  // everything before this is emitted
    for (size_t pos = begin; pos < end;) {
      size_t match_end = 0;
      if (run(0, cps, classes, pos, end, stack, match_end) && match_end > pos) {
        if (pos > done) out.push_back(pos - done);
        out.push_back(match_end - pos);
        done = pos = match_end;
      } else {
        ++pos;
      }
    }
    if (end > done) out.push_back(end - done);
    begin = end;
  }
  return out;
}

}  // namespace qf
