// How the CUDA engine's paged KV cache stores a row (one token of one KV head, head_dim values).
// Free of CUDA headers: the runtime (which builds without CUDA too) chooses the kind from a
// checkpoint's recorded kv_cache Format; kv_cache.h lays the rows out and the kernels read them.
//
// The quantized kinds keep one F16 scale per row beside the codes and are exactly the formats'
// quantize() of that row (formats/quantize.h), i.e. the CPU engine's KV-cache simulation:
//   bf16      head_dim x 2 bytes (the recipe's kv_cache null or "bf16").
//   int4      "int4:token:scale=f16" (FireQ's INT4 KV, one scale per token and head):
//             s = absmax / 7 stored as the smallest F16 >= s, q = clamp(rint(x / s'), -8, 7);
//             head_dim / 2 bytes, byte b holding dim 2b in its low nibble and dim 2b + 1 in its
//             high nibble (two's complement). The codes are exact in E4M3, so an FP8 attention
//             kernel can take them as they are and fold s' in.
//   fp8_e4m3  "fp8_e4m3:token:scale=f16": s = absmax / 448 rounded up to F16,
//             code = e4m3(x / s') (satfinite); head_dim bytes.
// F16 scales rather than FireQ's FP8 ones: value rows of small models have absmax around 1e-2,
// whose s = absmax / 7 lies below E4M3's smallest normal (2^-6) and would lose most of its bits.
#pragma once

#include <cstdint>
#include <optional>

#include "formats/format.h"

namespace qf::cuda {

enum class KvElement : uint8_t { bf16, int4, fp8_e4m3 };
inline constexpr KvElement kAllKvElements[] = {KvElement::bf16, KvElement::int4, KvElement::fp8_e4m3};

// The Format string of each kind (what a recipe's "kv_cache" names).
inline const char* kv_element_name(KvElement e) {
  switch (e) {
    case KvElement::int4: return "int4:token:scale=f16";
    case KvElement::fp8_e4m3: return "fp8_e4m3:token:scale=f16";
    default: return "bf16";
  }
}

// The kind storing `format` exactly, or nothing (a KV format only the CPU engine simulates).
inline std::optional<KvElement> kv_element_for(const Format& format) {
  for (KvElement e : kAllKvElements)
    if (format == Format::parse(kv_element_name(e))) return e;
  return std::nullopt;
}

// Bytes of one row's elements (not its scale).
constexpr int64_t kv_row_bytes(KvElement e, int head_dim) {
  return e == KvElement::bf16 ? int64_t(head_dim) * 2 : e == KvElement::int4 ? head_dim / 2 : head_dim;
}
// Bytes of one row with its scale: what a cached token costs per KV head, for K or V.
constexpr int64_t kv_row_bytes_with_scale(KvElement e, int head_dim) {
  return kv_row_bytes(e, head_dim) + (e == KvElement::bf16 ? 0 : 2);
}

}  // namespace qf::cuda
