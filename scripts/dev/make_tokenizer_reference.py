#!/usr/bin/env python3
"""Writes tests/data/tokenizer/reference_ids.json: token ids of awkward strings and of all of
WikiText-2 test, as independent implementations produce them, for tests/tokenizer to compare
qforge's ids with:

  - llama.cpp's llama-tokenize (built elsewhere; this script only runs it), on the SmolLM2 GGUF
    and on our SentencePiece test vocabulary (tests/data/tokenizer/spm_wikitext_bpe4k.gguf);
  - HF `tokenizers` on tokenizer.json forms of both vocabularies (SmolLM2's from
    smollm2_tokenizer_skeleton.json + the GGUF's tokens and merges; the SentencePiece one
    converted as transformers' LlamaConverter does, written to spm_wikitext_bpe4k.tokenizer.json);
  - SentencePiece itself on spm_wikitext_bpe4k.model.

    pip install gguf tokenizers sentencepiece
    python3 scripts/dev/make_tokenizer_reference.py --llama-tokenize /path/to/llama.cpp/build/bin/llama-tokenize \
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf

llama-tokenize is run as: llama-tokenize -m VOCAB -f INPUT --ids --no-escape --log-disable
[--no-parse-special]; it adds BOS when the vocabulary's add_bos_token says so (SmolLM2: no;
the SentencePiece vocabulary: yes). Long id sequences (WikiText-2) are stored as their count,
the SHA-256 of the ids as int32 little-endian, SHA-256s of consecutive blocks (to locate a
difference) and the first ids.
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "tests", "data", "tokenizer")
SPM_BASE = os.path.join(DATA, "spm_wikitext_bpe4k")
WIKITEXT = os.path.join(ROOT, "..", "shared", "data", "wikitext-2-raw-test.txt")
BLOCK = 16384  # ids per block digest

# Awkward inputs: every script and category the pre-tokenizers treat differently, whitespace
# runs, digit runs, contractions, special-token texts, and the edges (empty, one space).
STRINGS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "   \n\n ", " \t \n \r\n  x", "word\n\n\n  \tnext",
    "Hello world", " Hello world", "  Hello  world  ", "Hello, world! How are you?", "hello\tworld\n",
    "I'm sure they'll say it's fine, don't you think? We've seen it. She'd go.",
    "'s 're 'll 've 'm 't 'd", "IT'S WE'VE THEY'LL I'M DON'T", "'S'RE'LL'D", "rock 'n' roll", "''quoted''",
    "1234567", "3.14159", "1,000,000", "a1b22c333d4444e55555", "12 345 6789 0", "²³ ½ Ⅻ ٣٤ ３４", "2024-02-20T10:00:00Z",
    "Café naïve résumé façade Ångström", "e\u0301 u\u0308 a\u0300\u0301 combining", "Ǆǅǆ ﬁﬂ", "Straße ẞ",
    "Россия и Україна", "Ελληνικά γράμματα", "你好，世界！这是一个测试。", "日本語のテキストとカタカナ ー",
    "한국어 텍스트입니다", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "ภาษาไทย", "ქართული", "አማርኛ",
    "😀😃😄 👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 🇺🇸🇯🇵 ❤️ ✨", "emoji😀inside", "🤖 robots 🤖",
    "\u00a0nbsp\u00a0 \u2009thin\u3000ideographic\u0085nel\u2028ls", "zero\u200bwidth\ufeffbom",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>", "<|im_end|><|im_end|>",
    "text<|endoftext|>more", "<|im_start|user", "<s>Hello</s>", "<unk> and <s> and </s>", " <s> spaced </s> ",
    "def foo(x):\n    return x ** 2  # comment\n", "if (a && b) { c[0] = d->e; }", "$100 + 200 = 300~ 50% off!",
    "https://example.com/path?q=1&r=two#frag", "user@example.com", "C:\\Windows\\System32",
    "...!!!???,,,;;;---___", "((([[[{{{}}}]]])))", "~`^|<>=+*", "ALLCAPS lowercase MiXeD",
    "a" * 40, "ab" * 20, " " * 17 + "x", "x" + "\n" * 9, "end with space ",
]
# Inputs that are not valid UTF-8 (stored as hex): llama.cpp reads each bad byte as U+FFFD.
BYTE_STRINGS = ["80", "e282", "61f8c3a962", "ff fe 41".replace(" ", "")]


def run_llama_tokenize(exe, vocab, data, parse_special):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
        path = f.name
    try:
        cmd = [exe, "-m", vocab, "-f", path, "--ids", "--no-escape", "--log-disable"]
        if not parse_special:
            cmd.append("--no-parse-special")
        out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode()
    finally:
        os.unlink(path)
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def ids_str(ids):
    return " ".join(str(i) for i in ids)


def long_sequence_record(ids):
    raw = struct.pack(f"<{len(ids)}i", *ids)
    return {
        "count": len(ids),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "block_ids": BLOCK,
        "block_sha256": [hashlib.sha256(raw[i * 4:(i + BLOCK) * 4]).hexdigest() for i in range(0, len(ids), BLOCK)],
        "first_ids": ids_str(ids[:64]),
    }


def gguf_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def smollm2_tokenizer_json(model_path):
    r = GGUFReader(model_path)
    tokens = gguf_strings(r, "tokenizer.ggml.tokens")
    merges = gguf_strings(r, "tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tj = json.load(open(os.path.join(DATA, "smollm2_tokenizer_skeleton.json")))
    del tj["comment"]
    tj["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                           "normalized": False, "special": True} for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    tj["model"]["vocab"] = {t: i for i, t in enumerate(tokens)}
    tj["model"]["merges"] = merges
    return json.dumps(tj, ensure_ascii=False)


def spm_tokenizer_json(sp):
    """tokenizer.json of a SentencePiece BPE model, as transformers' LlamaConverter writes it."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    merges = []
    for piece in sorted(vocab, key=lambda p: -scores[p]):
        local = [(piece[:k], piece[k:], scores[piece]) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    special = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for i in (sp.unk_id(), sp.bos_id(), sp.eos_id())]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [sp.bos_id()], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]},
    }
    return json.dumps(tj, ensure_ascii=False, indent=None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize", required=True)
    ap.add_argument("--model", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    args = ap.parse_args()

    import sentencepiece as spm
    import tokenizers

    sp = spm.SentencePieceProcessor(model_file=SPM_BASE + ".model")
    spm_json = spm_tokenizer_json(sp)
    with open(SPM_BASE + ".tokenizer.json", "w") as f:
        f.write(spm_json)
    hf = {"smollm2": tokenizers.Tokenizer.from_str(smollm2_tokenizer_json(args.model)),
          "spm": tokenizers.Tokenizer.from_str(spm_json)}
    vocab_files = {"smollm2": args.model, "spm": SPM_BASE + ".gguf"}

    inputs = [s.encode("utf-8") for s in STRINGS] + [bytes.fromhex(h) for h in BYTE_STRINGS]
    wikitext = open(WIKITEXT, "rb").read()

    out = {
        "generator": "scripts/dev/make_tokenizer_reference.py",
        "llama_cpp": {
            "commit": subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
                args.llama_tokenize)))), "rev-parse", "HEAD"], capture_output=True).stdout.decode().strip(),
            "command": "llama-tokenize -m VOCAB -f INPUT --ids --no-escape --log-disable [--no-parse-special]",
        },
        "hf_tokenizers_version": tokenizers.__version__,
        "sentencepiece_version": spm.__version__,
        "strings": STRINGS,
        "bytes_hex": BYTE_STRINGS,
        "vocabs": {},
    }
    for name, vocab in vocab_files.items():
        rec = {"file": os.path.basename(vocab), "sha256": hashlib.sha256(open(vocab, "rb").read()).hexdigest()}
        rec["llama_cpp_parse_special"] = [ids_str(run_llama_tokenize(args.llama_tokenize, vocab, d, True)) for d in inputs]
        rec["llama_cpp_no_parse_special"] = [ids_str(run_llama_tokenize(args.llama_tokenize, vocab, d, False)) for d in inputs]
        # HF always splits added tokens out of the text: the parse_special case.
        rec["hf_tokenizers"] = [ids_str(hf[name].encode(s).ids) for s in STRINGS]
        wiki_ids = run_llama_tokenize(args.llama_tokenize, vocab, wikitext, True)
        rec["wikitext2_test_llama_cpp"] = long_sequence_record(wiki_ids)
        hf_wiki = hf[name].encode(wikitext.decode("utf-8")).ids
        rec["wikitext2_test_hf_tokenizers"] = long_sequence_record(hf_wiki)
        if name == "spm":
            rec["sentencepiece"] = [ids_str([sp.bos_id()] + sp.encode(s)) for s in STRINGS]
            sp_wiki = [sp.bos_id()] + sp.encode(wikitext.decode("utf-8"))
            rec["wikitext2_test_sentencepiece"] = long_sequence_record(sp_wiki)
        out["vocabs"][name] = rec

        # Where the references disagree (reported, not an error).
        for other in ("hf_tokenizers", "sentencepiece"):
            if other not in rec:
                continue
            diffs = [i for i, s in enumerate(STRINGS) if rec[other][i] != rec["llama_cpp_parse_special"][i]]
            print(f"{name}: llama.cpp vs {other}: {len(diffs)} of {len(STRINGS)} strings differ: "
                  + ", ".join(repr(STRINGS[i]) for i in diffs), file=sys.stderr)
            same = rec[f"wikitext2_test_{other}"]["sha256"] == rec["wikitext2_test_llama_cpp"]["sha256"]
            print(f"{name}: WikiText-2 test, llama.cpp vs {other}: {'equal' if same else 'DIFFERENT'} "
                  f"({rec['wikitext2_test_llama_cpp']['count']} vs {rec[f'wikitext2_test_{other}']['count']} ids)",
                  file=sys.stderr)

    with open(os.path.join(DATA, "reference_ids.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
