// Storage types of plain (unquantized) tensors as files and memory hold them. Quantized
// encodings are described by src/formats, not here: a DType is one element, one width.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace qf {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, U8, I16, I32, I64, U32 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: case DType::U32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U32: return "U32";
  }
  return "?";
}

}  // namespace qf
