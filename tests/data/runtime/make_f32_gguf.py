#!/usr/bin/env python3
"""Writes a copy of a GGUF file with every tensor dequantized to F32 (metadata unchanged but
general.file_type = 0), with the `gguf` Python package (pip install gguf).

qforge dequantizes GGUF block types to F32 on load and computes in FP32; llama.cpp run on this
copy (with -ctk f32 -ctv f32) therefore computes the same function as qforge, which is how
llama_cpp_perplexity_c512.txt's `dequantized_f32` line was produced.

usage: make_f32_gguf.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf


def field_value(field):
    """The Python value of a metadata field as GGUFWriter.add_key_value takes it."""
    t = field.types[0]
    if t == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if t == gguf.GGUFValueType.ARRAY:
        sub = field.types[1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    return field.parts[field.data[0]].tolist()[0]


def main(src, dst):
    reader = gguf.GGUFReader(src)
    arch = field_value(reader.fields["general.architecture"])
    writer = gguf.GGUFWriter(dst, arch=arch)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = 0 if field.name == "general.file_type" else field_value(field)
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, values.reshape([int(n) for n in reversed(t.shape)]),
                          raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
