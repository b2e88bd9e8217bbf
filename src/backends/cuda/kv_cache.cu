// Append kernel of the paged KV cache (layout in kv_cache.h).
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kv_cache.h"
#include "backends/cuda/kv_quant_device.h"

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

// One CTA per (block pair, KV head); thread t handles slot t / vecs, dims 8 (t % vecs) .. +7 of
// that slot's K and V rows.
template <KvElement kElem>
__global__ void kv_dequantize_blocks_kernel(const uint8_t* __restrict__ k_codes, const uint8_t* __restrict__ v_codes,
                                            const __half* __restrict__ k_scale, const __half* __restrict__ v_scale,
                                            const int32_t* __restrict__ src_blocks,
                                            const int32_t* __restrict__ dst_blocks, __nv_bfloat16* __restrict__ k_out,
                                            __nv_bfloat16* __restrict__ v_out, int num_kv_heads, int head_dim) {
  const int i = blockIdx.x / num_kv_heads, head = blockIdx.x % num_kv_heads;
  const int64_t src_row0 = (int64_t(src_blocks[i]) * num_kv_heads + head) * kKvBlockTokens;
  const int64_t dst_row0 = (int64_t(dst_blocks[i]) * num_kv_heads + head) * kKvBlockTokens;
  const int vecs = head_dim / 8;
  const int64_t row_bytes = kv_row_bytes(kElem, head_dim);
  for (int t = threadIdx.x; t < kKvBlockTokens * vecs; t += blockDim.x) {
    const int slot = t / vecs, vec = t % vecs;
    const int64_t src = src_row0 + slot, dst = dst_row0 + slot;
    float kf[8], vf[8];
    if constexpr (kElem == KvElement::int4) {
      kv_quant::int4x8_to_float(*reinterpret_cast<const uint32_t*>(k_codes + src * row_bytes + vec * 4), kf);
      kv_quant::int4x8_to_float(*reinterpret_cast<const uint32_t*>(v_codes + src * row_bytes + vec * 4), vf);
    } else {
      kv_quant::fp8x8_to_float(*reinterpret_cast<const uint2*>(k_codes + src * row_bytes + vec * 8), kf);
      kv_quant::fp8x8_to_float(*reinterpret_cast<const uint2*>(v_codes + src * row_bytes + vec * 8), vf);
    }
    const float ks = __half2float(k_scale[src]), vs = __half2float(v_scale[src]);
    __align__(16) __nv_bfloat16 ko[8], vo[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      ko[e] = __float2bfloat16_rn(kf[e] * ks);
      vo[e] = __float2bfloat16_rn(vf[e] * vs);
    }
    *reinterpret_cast<uint4*>(k_out + dst * head_dim + vec * 8) = *reinterpret_cast<const uint4*>(ko);
    *reinterpret_cast<uint4*>(v_out + dst * head_dim + vec * 8) = *reinterpret_cast<const uint4*>(vo);
  }
}

// One CTA per (64-key tile, KV head, sequence): the tile's K rows are converted and written as
// they are; its V rows go through shared memory so that the transposed writes are whole 64-byte
// runs of one dim.
template <KvElement kElem>
__global__ void kv_stage_fp8_kernel(const uint8_t* __restrict__ k_codes, const uint8_t* __restrict__ v_codes,
                                    const __half* __restrict__ k_scale, const __half* __restrict__ v_scale,
                                    const int32_t* __restrict__ block_table, int max_blocks_per_seq,
                                    const int32_t* __restrict__ table_rows, const int32_t* __restrict__ kv_start, const int32_t* __restrict__ kv_len,
                                    int num_kv_heads, int head_dim, Fp8StagedKv out) {
  constexpr int kTile = 64;
  __shared__ uint8_t s_v[kTile * 256];  // [key][dim], head_dim <= 256
  const int tile = blockIdx.x, head = blockIdx.y, seq = blockIdx.z;
  const int len = kv_len[seq];
  const int key0 = tile * kTile;
  if (key0 >= len) return;
  const int keys = min(kTile, len - key0);
  const int64_t base = kv_start[seq];
  const int32_t* table = block_table + int64_t(table_rows ? table_rows[seq] : seq) * max_blocks_per_seq;
  const int row_bytes = int(kv_row_bytes(kElem, head_dim));
  // Each thread converts 4 dims of one key at a time.
  const int quads = head_dim / 4;
  for (int i = threadIdx.x; i < keys * quads; i += blockDim.x) {
    const int r = i / quads, dq = i % quads, key = key0 + r;
    const int64_t row = (int64_t(table[key / kKvBlockTokens]) * num_kv_heads + head) * kKvBlockTokens +
                        key % kKvBlockTokens;
    uint32_t kc, vc;  // 4 E4M3 codes, dims 4 dq .. +3
    if constexpr (kElem == KvElement::int4) {
      const uint16_t kw = *reinterpret_cast<const uint16_t*>(k_codes + row * row_bytes + dq * 2);
      const uint16_t vw = *reinterpret_cast<const uint16_t*>(v_codes + row * row_bytes + dq * 2);
      kc = vc = 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kq = int((kw >> (4 * e)) & 0xF) - (((kw >> (4 * e)) & 0x8) ? 16 : 0);
        const int vq = int((vw >> (4 * e)) & 0xF) - (((vw >> (4 * e)) & 0x8) ? 16 : 0);
        kc |= uint32_t(__nv_cvt_float_to_fp8(float(kq), __NV_SATFINITE, __NV_E4M3)) << (8 * e);
        vc |= uint32_t(__nv_cvt_float_to_fp8(float(vq), __NV_SATFINITE, __NV_E4M3)) << (8 * e);
      }
    } else {
      kc = *reinterpret_cast<const uint32_t*>(k_codes + row * row_bytes + dq * 4);
      vc = *reinterpret_cast<const uint32_t*>(v_codes + row * row_bytes + dq * 4);
    }
    const int64_t at = (int64_t(head) * out.kv_rows + base + key) * head_dim + dq * 4;
    *reinterpret_cast<uint32_t*>(out.k8 + at) = kc;
    *reinterpret_cast<uint32_t*>(s_v + r * head_dim + dq * 4) = vc;
    if (dq == 0) {
      out.k_scale[int64_t(head) * out.kv_rows + base + key] = __half2float(k_scale[row]);
      out.v_scale[int64_t(head) * out.kv_rows + base + key] = __half2float(v_scale[row]);
    }
  }
  __syncthreads();
  // V^T: dim d's run of keys key0 .. key0 + keys - 1.
  for (int i = threadIdx.x; i < head_dim * keys; i += blockDim.x) {
    const int d = i / keys, r = i % keys;
    out.vt8[(int64_t(head) * head_dim + d) * out.kv_rows + base + key0 + r] = s_v[r * head_dim + d];
  }
}

// One warp per (row, head): absmax over the head's values, then E4M3 codes of x / s.
__global__ void quantize_queries_fp8_kernel(const __nv_bfloat16* __restrict__ q, int64_t q_row_stride, int rows,
                                            int num_heads, int head_dim, uint8_t* __restrict__ q8,
                                            float* __restrict__ q_scale) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (warp >= rows * num_heads) return;
  const int row = warp / num_heads, head = warp % num_heads;
  const __nv_bfloat16* x = q + int64_t(row) * q_row_stride + int64_t(head) * head_dim;
  float absmax = 0.0f;
  for (int d = lane; d < head_dim; d += 32) absmax = fmaxf(absmax, fabsf(__bfloat162float(x[d])));
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) absmax = fmaxf(absmax, __shfl_xor_sync(0xffffffffu, absmax, off));
  const float s = absmax > 0.0f ? __fdiv_rn(absmax, 448.0f) : 1.0f;
  uint8_t* dst = q8 + int64_t(row) * num_heads * head_dim + int64_t(head) * head_dim;
  for (int d = lane; d < head_dim; d += 32)
    dst[d] = uint8_t(__nv_cvt_float_to_fp8(__fdiv_rn(__bfloat162float(x[d]), s), __NV_SATFINITE, __NV_E4M3));
  if (lane == 0) q_scale[int64_t(row) * num_heads + head] = s;
}

}  // namespace

void kv_cache_dequantize_blocks(const KvLayerView& from, const int32_t* src_blocks, const int32_t* dst_blocks,
                                int count, const KvLayerView& to, cudaStream_t stream) {
  QF_CHECK(count >= 0, "kv_cache_dequantize_blocks: negative block count ", count);
  if (count == 0) return;
  QF_CHECK(from.element != KvElement::bf16 && to.element == KvElement::bf16,
           "kv_cache_dequantize_blocks: from a quantized layer to a BF16 one (got ", kv_element_name(from.element),
           " -> ", kv_element_name(to.element), ")");
  QF_CHECK(from.num_kv_heads == to.num_kv_heads && from.head_dim == to.head_dim && from.head_dim % 8 == 0,
           "kv_cache_dequantize_blocks: layers of different shapes (", from.num_kv_heads, " x ", from.head_dim,
           " vs ", to.num_kv_heads, " x ", to.head_dim, ")");
  QF_CHECK(from.k && from.v && from.k_scale && from.v_scale && to.k && to.v && src_blocks && dst_blocks &&
               aligned16(to.k) && aligned16(to.v),
           "kv_cache_dequantize_blocks: missing or misaligned pools or block lists");
  QF_CHECK(int64_t(count) * from.num_kv_heads < (int64_t(1) << 31), "kv_cache_dequantize_blocks: too many blocks");
  const dim3 grid(unsigned(count * from.num_kv_heads));
  const int threads = kKvBlockTokens * from.head_dim / 8 >= 256 ? 256 : 128;
  auto kernel = from.element == KvElement::int4 ? kv_dequantize_blocks_kernel<KvElement::int4>
                                                : kv_dequantize_blocks_kernel<KvElement::fp8_e4m3>;
  kernel<<<grid, threads, 0, stream>>>(static_cast<const uint8_t*>(from.k), static_cast<const uint8_t*>(from.v),
                                       from.k_scale, from.v_scale, src_blocks, dst_blocks,
                                       static_cast<__nv_bfloat16*>(to.k), static_cast<__nv_bfloat16*>(to.v),
                                       from.num_kv_heads, from.head_dim);
  QF_CUDA_CHECK_LAUNCH();
}

void kv_cache_stage_fp8(const KvLayerView& layer, const int32_t* block_table, int max_blocks_per_seq,
                        const int32_t* table_rows, const int32_t* kv_start, const int32_t* kv_len, int num_seqs,
                        int max_kv_len, const Fp8StagedKv& out, cudaStream_t stream) {
  QF_CHECK(num_seqs >= 0 && max_kv_len >= 0, "kv_cache_stage_fp8: negative sizes");
  if (num_seqs == 0 || max_kv_len == 0) return;
  QF_CHECK(layer.element != KvElement::bf16, "kv_cache_stage_fp8: stages a quantized cache (int4 or fp8), not bf16");
  QF_CHECK(layer.head_dim % 16 == 0 && layer.head_dim <= 256, "kv_cache_stage_fp8: head_dim ", layer.head_dim);
  QF_CHECK(out.k8 && out.vt8 && out.k_scale && out.v_scale && out.kv_rows % 128 == 0 && block_table && kv_start &&
               kv_len && layer.k_scale && layer.v_scale,
           "kv_cache_stage_fp8: missing buffers or a row capacity not a multiple of 128");
  const dim3 grid(unsigned((max_kv_len + 63) / 64), unsigned(layer.num_kv_heads), unsigned(num_seqs));
  auto kernel = layer.element == KvElement::int4 ? kv_stage_fp8_kernel<KvElement::int4>
                                                 : kv_stage_fp8_kernel<KvElement::fp8_e4m3>;
  kernel<<<grid, 256, 0, stream>>>(static_cast<const uint8_t*>(layer.k), static_cast<const uint8_t*>(layer.v),
                                   layer.k_scale, layer.v_scale, block_table, max_blocks_per_seq, table_rows, kv_start, kv_len,
                                   layer.num_kv_heads, layer.head_dim, out);
  QF_CUDA_CHECK_LAUNCH();
}

void quantize_queries_fp8(const __nv_bfloat16* q, int64_t q_row_stride, int rows, int num_heads, int head_dim,
                          uint8_t* q8, float* q_scale, cudaStream_t stream) {
  QF_CHECK(rows >= 0 && num_heads > 0 && head_dim > 0 && q_row_stride >= int64_t(num_heads) * head_dim,
           "quantize_queries_fp8: bad shape");
  if (rows == 0) return;
  const int64_t warps = int64_t(rows) * num_heads;
  quantize_queries_fp8_kernel<<<unsigned((warps + 7) / 8), 256, 0, stream>>>(q, q_row_stride, rows, num_heads,
                                                                             head_dim, q8, q_scale);
  QF_CUDA_CHECK_LAUNCH();
}

void kv_cache_append(const __nv_bfloat16* k, int64_t k_row_stride, const __nv_bfloat16* v,
                     int64_t v_row_stride, const int32_t* slots, int num_tokens,
                     const KvLayerView& layer, cudaStream_t stream) {
  QF_CHECK(num_tokens >= 0, "kv_cache_append: negative token count ", num_tokens);
  if (num_tokens == 0) return;
  QF_CHECK(layer.k && layer.v && layer.num_blocks > 0 && layer.num_kv_heads > 0,
           "kv_cache_append: empty cache layer");
  QF_CHECK(layer.element == KvElement::bf16, "kv_cache_append: copies BF16 rows into a BF16 cache; a ",
           kv_element_name(layer.element), " cache is written by rope_kv_append");
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
