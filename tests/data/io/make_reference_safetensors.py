#!/usr/bin/env python3
"""Writes reference.safetensors with the `safetensors` package's own writer (pip install
safetensors numpy), an independent implementation the qforge reader is tested against
(tests/io/test_safetensors.cpp, SafetensorsReference). Values are simple formulas the test
recomputes: f32[i] = i * 0.25 - 1, f16[i] = i / 8, bf16[i] = -i * 2, i8[i] = i - 3, i64[i] = i * 10**12.

Usage: python3 make_reference_safetensors.py reference.safetensors
"""
import json
import struct
import sys

import numpy as np
from safetensors.numpy import save_file


def bf16_bits(values):
    # Exact for these small integers: BF16 is the top half of an F32.
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def main(path):
    tensors = {
        "a.f32": (np.arange(6, dtype=np.float32) * 0.25 - 1).reshape(2, 3),
        "b.f16": (np.arange(5, dtype=np.float16) / 8),
        "c.i8": (np.arange(4, dtype=np.int8) - 3).reshape(2, 2),
        "d.i64": np.arange(3, dtype=np.int64) * 10**12,
        "e.scalar": np.array(7.5, dtype=np.float32),
        "f.empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, path, metadata={"format": "pt", "note": "made by safetensors.numpy"})
    # numpy has no bfloat16: write the file again with a BF16 tensor spliced in by dtype name.
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    bf = bf16_bits([-2.0 * i for i in range(4)]).tobytes()
    header["g.bf16"] = {"dtype": "BF16", "shape": [4], "data_offsets": [len(body), len(body) + len(bf)]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + body + bf)
    # Open it with the package, whose (Rust) parser validates every entry, to be sure the
    # splice is a valid file.
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        assert sorted(f.keys()) == sorted(list(tensors) + ["g.bf16"])


if __name__ == "__main__":
    main(sys.argv[1])
