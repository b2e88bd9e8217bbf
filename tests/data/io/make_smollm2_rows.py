#!/usr/bin/env python3
"""Writes smollm2_rows.bin: a few rows of some tensors of the default model, dequantized by the
Python `gguf` package (pip install gguf), as reference values for tests/io/test_default_model.cpp.

Usage: python3 make_smollm2_rows.py MODEL.gguf smollm2_rows.bin

Format (little-endian): b"QFGR", u32 version = 1, u32 n_records; each record: u32 name length,
name (UTF-8, GGUF tensor name), u32 row length, u32 n_rows, n_rows x (u32 row index,
row length x f32). Rows are in GGUF storage order (no Q/K un-permutation).
"""
import struct
import sys

import gguf
from gguf.quants import dequantize

# One tensor of each type the file holds (Q8_0, Q4_1, F32), first/last/inner rows.
PICKS = {
    "token_embd.weight": [0, 1, 12345, 49151],
    "blk.0.attn_q.weight": [0, 1, 63, 64, 575],
    "blk.17.attn_k.weight": [0, 100, 191],
    "blk.29.ffn_down.weight": [0, 575],
    "output_norm.weight": [0],
    "blk.3.ffn_norm.weight": [0],
}


def main(model, out_path):
    reader = gguf.GGUFReader(model)
    tensors = {t.name: t for t in reader.tensors}
    with open(out_path, "wb") as out:
        out.write(b"QFGR" + struct.pack("<II", 1, len(PICKS)))
        for name, rows in PICKS.items():
            t = tensors[name]
            values = dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))
            name_bytes = name.encode()
            out.write(struct.pack("<I", len(name_bytes)) + name_bytes)
            out.write(struct.pack("<II", values.shape[1], len(rows)))
            for r in rows:
                out.write(struct.pack("<I", r))
                out.write(values[r].astype("<f4").tobytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
