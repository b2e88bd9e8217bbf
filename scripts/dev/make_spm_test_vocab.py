#!/usr/bin/env python3
"""Trains the small SentencePiece BPE model the SentencePiece-style tokenizer is tested with, and
writes it as a vocab-only GGUF (tokenizer.ggml.model = "llama", as convert_hf_to_gguf.py writes
Llama-2's). Our own data: trained here on WikiText-2 validation.

    pip install sentencepiece gguf
    python3 scripts/dev/make_spm_test_vocab.py [--data ../shared/data/wikitext-2-valid-tokens.txt]

writes tests/data/tokenizer/spm_wikitext_bpe4k.model (SentencePiece's own file, used by
make_tokenizer_reference.py to encode with SentencePiece itself) and
tests/data/tokenizer/spm_wikitext_bpe4k.gguf.

The trainer settings are Llama-2's tokenizer.model settings (identity normalization, no
whitespace collapsing, dummy prefix, split digits, byte fallback), so the model exercises what a
Llama-2 vocabulary does: "▁" pieces, <0xXX> byte tokens for characters outside the vocabulary.
"""
import argparse
import os

import gguf
import sentencepiece as spm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer", "spm_wikitext_bpe4k")
VOCAB_SIZE = 4000

# sentencepiece piece types -> GGUF token types (= SentencePiece's ModelProto.SentencePiece.Type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "wikitext-2-valid-tokens.txt"))
    args = ap.parse_args()

    spm.SentencePieceTrainer.train(
        input=args.data, model_prefix=OUT, model_type="bpe", vocab_size=VOCAB_SIZE,
        character_coverage=0.9995, byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
    os.remove(OUT + ".vocab")

    sp = spm.SentencePieceProcessor(model_file=OUT + ".model")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else
                     UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL)

    w = gguf.GGUFWriter(OUT + ".gguf", "llama")
    w.add_name("qforge SentencePiece BPE test vocabulary (WikiText-2 valid, 4k)")
    # A vocab-only file still names Llama hyper-parameters: llama.cpp reads them before the vocab.
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT}.model and {OUT}.gguf ({len(tokens)} tokens)")


if __name__ == "__main__":
    main()
