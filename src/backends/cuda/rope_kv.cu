// Fused RoPE + KV-cache append (semantics in rope_kv.h). One CTA per token, as rope.cu: the
// token's (cos, sin) table in double -> float in shared memory, then one item per 8 pairs of a
// query or key head (both halves loaded as 16-byte vectors), then one item per 16-byte vector of
// a value head. The arithmetic is rope.cu's (rope_device.h).
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/rope_device.h"
#include "backends/cuda/rope_kv.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;
using rope_device::kMaxHalfDim;
constexpr int kThreads = 128;

__global__ void rope_kv_append_kernel(bf16* __restrict__ qkv, int64_t row_stride, int num_heads, int num_kv_heads,
                                      int head_dim, const int32_t* __restrict__ positions,
                                      const int32_t* __restrict__ slots, const double* __restrict__ inv_freq,
                                      double attention_factor, bf16* __restrict__ k_pool, bf16* __restrict__ v_pool,
                                      int64_t num_blocks) {
  pdl_begin();
  __shared__ float s_cos[kMaxHalfDim];
  __shared__ float s_sin[kMaxHalfDim];
  const int64_t token = blockIdx.x;
  const int half = head_dim / 2;
  rope_device::fill_table(double(positions[token]), inv_freq, half, attention_factor, s_cos, s_sin);
  const int32_t slot = slots[token];
  // As kv_cache_append: -1 is a padding token, an id past the pool a caller bug; neither is written.
  const bool cached = slot >= 0 && slot / kKvBlockTokens < num_blocks;
  const int64_t block = cached ? slot / kKvBlockTokens : 0;
  const int in_block = cached ? slot % kKvBlockTokens : 0;
  // Element offset of kv head h's row of this token in a pool.
  auto pool_row = [&](int h) { return ((block * num_kv_heads + h) * kKvBlockTokens + in_block) * head_dim; };
  bf16* row = qkv + token * row_stride;

  const int half_vecs = half / 8;
  for (int item = threadIdx.x; item < (num_heads + num_kv_heads) * half_vecs; item += blockDim.x) {
    const int head = item / half_vecs;
    const int j0 = (item % half_vecs) * 8;
    const bf16* x = row + int64_t(head) * head_dim;  // key heads follow the query heads
    uint4 lo, hi;
    rope_device::rotate8(x, half, j0, s_cos, s_sin, lo, hi);
    bf16* dst;
    if (head < num_heads) dst = row + int64_t(head) * head_dim;
    else if (cached) dst = k_pool + pool_row(head - num_heads);
    else continue;
    *reinterpret_cast<uint4*>(dst + j0) = lo;
    *reinterpret_cast<uint4*>(dst + half + j0) = hi;
  }
  if (!cached) return;
  const int head_vecs = head_dim / 8;
  const bf16* v = row + int64_t(num_heads + num_kv_heads) * head_dim;
  for (int item = threadIdx.x; item < num_kv_heads * head_vecs; item += blockDim.x) {
    const int h = item / head_vecs;
    const int vec = item % head_vecs;
    *reinterpret_cast<uint4*>(v_pool + pool_row(h) + vec * 8) =
        *reinterpret_cast<const uint4*>(v + int64_t(h) * head_dim + vec * 8);
  }
}

}  // namespace

void rope_kv_append(bf16* qkv, int64_t row_stride, int num_heads, int num_kv_heads, int head_dim,
                    const int32_t* positions, const int32_t* slots, int num_tokens, const double* inv_freq,
                    double attention_factor, const KvLayerView& layer, cudaStream_t stream) {
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
  launch_pdl(rope_kv_append_kernel, dim3(num_tokens), dim3(kThreads), 0, stream, qkv, row_stride, num_heads,
             num_kv_heads, head_dim, positions, slots, inv_freq, attention_factor, layer.k, layer.v,
             layer.num_blocks);
}

}  // namespace qf::cuda
