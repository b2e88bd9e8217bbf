// Fused RoPE + KV-cache append (semantics in rope_kv.h). A CTA takes one token and a range of its
// head rows (query, key or value heads): the token's (cos, sin) table in double -> float in shared
// memory, then one warp per head row, so that a row's absmax (for the FP8 query rounding and the
// quantized cache) is a warp reduction. Lane l holds the pairs (p, p+1) with p = 2l + 64 i of the
// row, i.e. dims p, p+1 and half + p, half + p + 1: adjacent dims share a lane, so an int4 byte
// (dims 2b, 2b+1) is packed without exchanging values. The rotation is rope_device::rotate_pair,
// as in rope.cu.
//
// Few tokens (decode) split a token's rows over several CTAs: with one CTA per token, batch 1 of
// Llama-2-7B had 4 warps walk 96 rows one dependent global load after another, ~14 us per layer
// in the decode graph; with one row per warp the rows load at once (H100, 2026-11-23, same device
// call: 6.09 -> 5.65 ms per step). Many tokens (prefill) keep one CTA per token, which computes
// the table once.
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/kv_quant_device.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/rope_device.h"
#include "backends/cuda/rope_kv.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;
using rope_device::kMaxHalfDim;
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kIters = kMaxHalfDim / 64;  // pair groups per lane (head_dim up to 256)

struct RopeKvArgs {
  bf16* qkv;
  int64_t row_stride;
  int num_heads, num_kv_heads, head_dim;
  const int32_t* positions;
  const int32_t* slots;
  const double* inv_freq;
  double attention_factor;
  KvLayerView layer;
  const float* post;  // k_post_rope_scale or null
  bool q_fp8;
  int rows_per_cta;  // head rows of a token per CTA (grid.y = ceil(rows / rows_per_cta)), a multiple of kWarps
};

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

__global__ void __launch_bounds__(kThreads) rope_kv_append_kernel(const RopeKvArgs a) {
  pdl_begin();
  __shared__ float s_cos[kMaxHalfDim];
  __shared__ float s_sin[kMaxHalfDim];
  const int64_t token = blockIdx.x;
  const int d = a.head_dim, half = d / 2;
  rope_device::fill_table(double(a.positions[token]), a.inv_freq, half, a.attention_factor, s_cos, s_sin);
  const int32_t slot = a.slots[token];
  // As kv_cache_append: -1 is a padding token, an id past the pool a caller bug; neither is written.
  const bool cached = slot >= 0 && slot / kKvBlockTokens < a.layer.num_blocks;
  const int64_t block = cached ? slot / kKvBlockTokens : 0;
  const int in_block = cached ? slot % kKvBlockTokens : 0;
  bf16* row = a.qkv + token * a.row_stride;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = a.num_heads / a.num_kv_heads;
  const KvElement elem = a.layer.element;

  const int rows_end = min(a.num_heads + 2 * a.num_kv_heads, int(blockIdx.y + 1) * a.rows_per_cta);
  for (int r = int(blockIdx.y) * a.rows_per_cta + warp; r < rows_end; r += kWarps) {
    const bool is_q = r < a.num_heads, is_v = r >= a.num_heads + a.num_kv_heads;
    if (!is_q && !cached) continue;  // warp-uniform
    const int kv_head = is_q ? r / group : is_v ? r - a.num_heads - a.num_kv_heads : r - a.num_heads;
    bf16* x = row + int64_t(r) * d;
    float lo[kIters][2], hi[kIters][2];
    float absmax = 0.0f;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int p = 64 * i + 2 * lane;
      if (p >= half) continue;
      const float2 l2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(x + p));
      const float2 h2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(x + half + p));
      lo[i][0] = l2.x, lo[i][1] = l2.y, hi[i][0] = h2.x, hi[i][1] = h2.y;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (!is_v) {
          float nl, nh;
          rope_device::rotate_pair(lo[i][e], hi[i][e], s_cos[p + e], s_sin[p + e], nl, nh);
          // The BF16 path stores these; everything below starts from the stored value.
          lo[i][e] = __bfloat162float(__float2bfloat16_rn(nl));
          hi[i][e] = __bfloat162float(__float2bfloat16_rn(nh));
          if (a.post) {
            const float* ps = a.post + int64_t(kv_head) * d;
            lo[i][e] = is_q ? __fdiv_rn(lo[i][e], ps[p + e]) : __fmul_rn(lo[i][e], ps[p + e]);
            hi[i][e] = is_q ? __fdiv_rn(hi[i][e], ps[half + p + e]) : __fmul_rn(hi[i][e], ps[half + p + e]);
          }
        }
        absmax = fmaxf(absmax, fmaxf(fabsf(lo[i][e]), fabsf(hi[i][e])));
      }
    }
    const bool quantized = !is_q && elem != KvElement::bf16;
    if ((is_q && a.q_fp8) || quantized) absmax = warp_max(absmax);

    if (is_q || elem == KvElement::bf16) {
      bf16* dst = is_q ? x : static_cast<bf16*>(is_v ? a.layer.v : a.layer.k) +
                                 ((block * a.num_kv_heads + kv_head) * kKvBlockTokens + in_block) * d;
      const float qs = is_q && a.q_fp8 ? __fdiv_rn(absmax, 448.0f) : 0.0f;
#pragma unroll
      for (int i = 0; i < kIters; ++i) {
        const int p = 64 * i + 2 * lane;
        if (p >= half) continue;
        if (is_q && a.q_fp8) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            lo[i][e] = kv_quant::fp8_round(lo[i][e], qs);
            hi[i][e] = kv_quant::fp8_round(hi[i][e], qs);
          }
        }
        *reinterpret_cast<__nv_bfloat162*>(dst + p) = __floats2bfloat162_rn(lo[i][0], lo[i][1]);
        *reinterpret_cast<__nv_bfloat162*>(dst + half + p) = __floats2bfloat162_rn(hi[i][0], hi[i][1]);
      }
      continue;
    }
    // A quantized K or V row.
    const int64_t row_id = (block * a.num_kv_heads + kv_head) * kKvBlockTokens + in_block;
    uint8_t* codes = static_cast<uint8_t*>(is_v ? a.layer.v : a.layer.k) + row_id * kv_row_bytes(elem, d);
    const bool int4 = elem == KvElement::int4;
    const __half stored = kv_quant::row_scale(absmax, int4 ? 7.0f : 448.0f);
    const float s = __half2float(stored);
    if (lane == 0) (is_v ? a.layer.v_scale : a.layer.k_scale)[row_id] = stored;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int p = 64 * i + 2 * lane;
      if (p >= half) continue;
      if (int4) {
        codes[p / 2] = uint8_t(kv_quant::int4_code(lo[i][0], s) | (kv_quant::int4_code(lo[i][1], s) << 4));
        codes[(half + p) / 2] = uint8_t(kv_quant::int4_code(hi[i][0], s) | (kv_quant::int4_code(hi[i][1], s) << 4));
      } else {
        *reinterpret_cast<uint16_t*>(codes + p) =
            uint16_t(kv_quant::fp8_code(lo[i][0], s) | (kv_quant::fp8_code(lo[i][1], s) << 8));
        *reinterpret_cast<uint16_t*>(codes + half + p) =
            uint16_t(kv_quant::fp8_code(hi[i][0], s) | (kv_quant::fp8_code(hi[i][1], s) << 8));
      }
    }
  }
}

}  // namespace

void rope_kv_append(bf16* qkv, int64_t row_stride, int num_heads, int num_kv_heads, int head_dim,
                    const int32_t* positions, const int32_t* slots, int num_tokens, const double* inv_freq,
                    double attention_factor, const KvLayerView& layer, const RopeKvOptions& options,
                    cudaStream_t stream) {
  QF_CHECK(num_tokens >= 0, "rope_kv_append: negative token count ", num_tokens);
  if (num_tokens == 0) return;
  QF_CHECK(head_dim > 0 && head_dim % 16 == 0 && head_dim / 2 <= kMaxHalfDim, "rope_kv_append: head_dim ",
           head_dim, " must be a multiple of 16 and at most ", 2 * kMaxHalfDim);
  QF_CHECK(num_heads > 0 && num_kv_heads > 0 && num_heads % num_kv_heads == 0, "rope_kv_append: ", num_heads,
           " query heads and ", num_kv_heads, " KV heads");
  QF_CHECK(row_stride >= int64_t(num_heads + 2 * num_kv_heads) * head_dim && row_stride % 8 == 0,
           "rope_kv_append: row stride ", row_stride, " must be a multiple of 8 and hold q, k and v (",
           int64_t(num_heads + 2 * num_kv_heads) * head_dim, ")");
  QF_CHECK(qkv && aligned16(qkv) && positions && slots && inv_freq,
           "rope_kv_append: missing or misaligned qkv, positions, slots or inv_freq");
  QF_CHECK(layer.k && layer.v && aligned16(layer.k) && aligned16(layer.v) && layer.num_blocks > 0 &&
               layer.num_kv_heads == num_kv_heads && layer.head_dim == head_dim,
           "rope_kv_append: the cache layer (", layer.num_kv_heads, " KV heads of dim ", layer.head_dim,
           ") does not match the model (", num_kv_heads, " of dim ", head_dim, ")");
  QF_CHECK(layer.element == KvElement::bf16 || (layer.k_scale && layer.v_scale),
           "rope_kv_append: a ", kv_element_name(layer.element), " cache layer needs its scale pools");
  // Enough CTAs for ~2 per SM when tokens are few, each warp keeping at least one row.
  const int rows = num_heads + 2 * num_kv_heads;
  const int splits = std::clamp((2 * device_info().sm_count + num_tokens - 1) / num_tokens, 1,
                                (rows + kWarps - 1) / kWarps);
  const int rows_per_cta = ((rows + splits - 1) / splits + kWarps - 1) / kWarps * kWarps;
  const RopeKvArgs a{qkv,       row_stride, num_heads, num_kv_heads, head_dim, positions, slots, inv_freq, attention_factor,
                     layer,     options.k_post_rope_scale, options.q_fp8, rows_per_cta};
  launch_pdl(rope_kv_append_kernel, dim3(num_tokens, (rows + rows_per_cta - 1) / rows_per_cta), dim3(kThreads), 0,
             stream, a);
}

}  // namespace qf::cuda
