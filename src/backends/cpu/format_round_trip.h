// Simulated storage: the values a row of floats takes after being stored in a Format and read
// back. The CPU engine uses it to simulate quantized activations and quantized KV caches with
// FP32 arithmetic everywhere else.
#pragma once

#include <cstdint>
#include <string>

#include "formats/format.h"

namespace qf::cpu {

// Throws qf::Error, naming `what`, unless rows of `cols` values can be stored in `format` one
// row at a time: no scale shared across rows (per-tensor granularity or a tensor scale) and,
// for groups, a group size dividing cols.
void check_row_format(const Format& format, int64_t cols, const std::string& what);

// out[r, :] = dequantize(quantize(x[r, :], format)) for r < rows (formats/quantize.h); for the
// plain F32/F16/BF16 types, the value rounded to that type (formats/convert.h). out may alias x.
void round_trip_rows(const float* x, int64_t rows, int64_t cols, const Format& format, float* out);

}  // namespace qf::cpu
