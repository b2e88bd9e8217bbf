#!/usr/bin/env python3
"""Writes tests/data/tokenizer/pre_tokenizer_splits.json: how each pre-tokenizer family splits a
set of strings, computed with Python's `regex` module (an independent regex engine with Unicode
categories; pip install regex). tests/tokenizer/test_split_regex.cpp checks qforge's own engine
against it.

The patterns are llama.cpp's (src/llama-vocab.cpp, Feb 2025) and HF tokenizer.json's spellings;
each family's list is applied in order, each regex to every piece the previous ones left, and
both the matches and the text between them become pieces (llama.cpp's unicode_regex_split and
HF's Split(behavior=Isolated)).

    python3 scripts/dev/make_pre_tokenizer_fixture.py > tests/data/tokenizer/pre_tokenizer_splits.json
"""
import json
import random
import sys

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
GPT2_HF = GPT2 + r"|\s+"
LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# Written with escapes: several of these characters are not in NFC, and an editor may normalize them.
DEEPSEEK_LETTERS = (
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-"
    "\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481"
    "\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B"
    "\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B"
    "\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB"
    "\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128"
    "\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4"
    "\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF"
    "\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3"
    "\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+")
BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"
FAMILIES = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
    "gpt2": [GPT2],
    "llama3": [LLAMA3],
    "smollm": [r"\p{N}", GPT2],
    "qwen2": [QWEN2],
    "deepseek-coder": ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", r"\p{N}"],
    "deepseek-llm": ["[\r\n]", DEEPSEEK_LETTERS, "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
                     "\\s+$", "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", r"\p{N}+"],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
    "bloom": [BLOOM],
    "viking": [BLOOM, r"\p{N}"],
}
# HF spellings that must split as the llama.cpp ones do (checked here, on every string).
HF_EQUIVALENT = {"gpt2": [GPT2_HF], "smollm": [r"\p{N}", GPT2_HF]}

POOL = (
    list("abcxyzABCXYZ0123456789") + [" "] * 8 + ["\t", "\n", "\n", "\r", "\r\n", "   ", "\n\n"]
    + list(".,;:!?'\"()[]{}<>-_/\\|~`$%^&*+=@#") + ["'s", "'S", "'ll", "'LL", "'re", "'ve", "'m", "'d", "'t", "'x"]
    + list("éèßøÅçñ") + list("αβγΩ") + list("жДЯ") + list("中文字") + list("ひらカナ") + list("한글")
    + list("مرحبا") + ["हिन्दी", "ि", "\u0301", "\u0308"] + list("ไทย") + list("שלום")
    + ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "❤️", "\u200d"]
    + ["\u00a0", "\u2009", "\u3000", "\u0085", "\u2028", "\u200b", "\ufeff", "\x1c", "\x0b", "\x0c"]
    + ["²", "Ⅻ", "٣", "３", "½", "1234567", "3.14", "1,000"]
    + ["\u0378", "\ue000", "…", "。", "，", "、", "।", "۔", "،", "！", "“", "”", "—", "€", "√"]
)

FIXED = [
    "", " ", "  ", "Hello world", " Hello", "  leading", "trailing  ", "I'm sure they'll say it's fine, don't you?",
    "IT'S WE'VE THEY'LL", "1234567", "a1b22c333d4444", "3.14159 and 1,000,000", "\t\ttabs\tand\nnewlines\r\n",
    "   \n\n ", "\n\n\n", "word\n\n  next", "Café naïve résumé", "e\u0301 combining", "你好，世界！",
    "日本語のテキスト", "한국어 텍스트", "Россия", "مرحبا بالعالم", "नमस्ते दुनिया", "😀👍🏽👨\u200d👩\u200d👧 🇺🇸",
    "<|im_start|>user\nHi<|im_end|>", "x  \u00a0 y", "tab\t\tend\t", "ends with spaces   ", "$100 + 200 = 300~",
]


def split(patterns, text):
    pieces = [text] if text else []
    for pat in patterns:
        rx = regex.compile(pat)
        out = []
        for piece in pieces:
            done = 0
            for m in rx.finditer(piece):
                if m.end() == m.start():
                    continue
                if m.start() > done:
                    out.append(piece[done:m.start()])
                out.append(piece[m.start():m.end()])
                done = m.end()
            if done < len(piece):
                out.append(piece[done:])
        pieces = out
    return pieces


def main():
    rng = random.Random(20250220)
    strings = list(FIXED)
    for _ in range(220):
        strings.append("".join(rng.choice(POOL) for _ in range(rng.randint(1, 14))))
    families = {}
    for name, patterns in FAMILIES.items():
        splits = []
        for s in strings:
            pieces = split(patterns, s)
            assert "".join(pieces) == s
            if name in HF_EQUIVALENT:
                assert split(HF_EQUIVALENT[name], s) == pieces, (name, s)
            splits.append(" ".join(str(len(p)) for p in pieces))  # lengths in code points
        families[name] = {"patterns": patterns, "splits": splits}
    json.dump({"generator": "scripts/dev/make_pre_tokenizer_fixture.py", "regex_module": regex.__version__,
               "strings": strings, "families": families}, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
