// Append kernel of the paged KV cache (layout in kv_cache.h).
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kv_cache.h"

namespace qf::cuda {
namespace {

constexpr int kVec = 8;  // bf16 per 16-byte vector

// One CTA per new token; its threads copy the token's K and V rows of every KV head, one
// 16-byte vector each (head_dim / 8 vectors per head row).
__global__ void kv_cache_append_kernel(const uint4* __restrict__ k, int64_t k_row_vecs,
                                       const uint4* __restrict__ v, int64_t v_row_vecs,
                                       const int32_t* __restrict__ slots, uint4* __restrict__ k_pool,
                                       uint4* __restrict__ v_pool, int64_t num_blocks,
                                       int num_kv_heads, int head_vecs) {
  const int token = blockIdx.x;
  const int32_t slot = slots[token];
  // -1 marks a padding token. An id past the pool is a caller bug; it is skipped rather than
  // written out of bounds (KvBlockManager only produces valid ids).
  if (slot < 0 || slot / kKvBlockTokens >= num_blocks) return;
  const int64_t block = slot / kKvBlockTokens;
  const int in_block = slot % kKvBlockTokens;
  const int row_vecs = num_kv_heads * head_vecs;
  for (int i = threadIdx.x; i < row_vecs; i += blockDim.x) {
    const int head = i / head_vecs;
    const int vec = i % head_vecs;
    const int64_t dst = ((block * num_kv_heads + head) * kKvBlockTokens + in_block) * head_vecs + vec;
    k_pool[dst] = k[token * k_row_vecs + i];
    v_pool[dst] = v[token * v_row_vecs + i];
  }
}

}  // namespace

void kv_cache_append(const __nv_bfloat16* k, int64_t k_row_stride, const __nv_bfloat16* v,
                     int64_t v_row_stride, const int32_t* slots, int num_tokens,
                     const KvLayerView& layer, cudaStream_t stream) {
  QF_CHECK(num_tokens >= 0, "kv_cache_append: negative token count ", num_tokens);
  if (num_tokens == 0) return;
  QF_CHECK(layer.k && layer.v && layer.num_blocks > 0 && layer.num_kv_heads > 0,
           "kv_cache_append: empty cache layer");
  QF_CHECK(layer.head_dim > 0 && layer.head_dim % kVec == 0, "kv_cache_append: head_dim ",
           layer.head_dim, " must be a positive multiple of ", kVec);
  const int64_t row = static_cast<int64_t>(layer.num_kv_heads) * layer.head_dim;
  QF_CHECK(k_row_stride >= row && v_row_stride >= row && k_row_stride % kVec == 0 &&
               v_row_stride % kVec == 0,
           "kv_cache_append: row strides (", k_row_stride, ", ", v_row_stride,
           ") must be multiples of 8 and at least num_kv_heads * head_dim = ", row);
  QF_CHECK(aligned16(k) && aligned16(v) && aligned16(layer.k) && aligned16(layer.v),
           "kv_cache_append: K/V and the pools must be 16-byte aligned");
  QF_CHECK(slots != nullptr, "kv_cache_append: no slot ids");
  const int head_vecs = layer.head_dim / kVec;
  const int row_vecs = layer.num_kv_heads * head_vecs;
  const int threads = row_vecs >= 256 ? 256 : ((row_vecs + 31) / 32) * 32;
  kv_cache_append_kernel<<<num_tokens, threads, 0, stream>>>(
      reinterpret_cast<const uint4*>(k), k_row_stride / kVec, reinterpret_cast<const uint4*>(v),
      v_row_stride / kVec, slots, reinterpret_cast<uint4*>(layer.k), reinterpret_cast<uint4*>(layer.v),
      layer.num_blocks, layer.num_kv_heads, head_vecs);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace qf::cuda
