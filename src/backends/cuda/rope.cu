// RoPE kernel (semantics in rope.h).
//
// One CTA per token: its threads first compute the token's head_dim/2 (cos, sin) pairs in
// double into shared memory (once per token, shared by all its heads), then rotate every query
// and key head, 8 pairs per thread with 16-byte loads of both halves. Memory bound: the q and k
// rows are read and written once; the double-precision sincos (head_dim/2 per token) is a few
// thousand FP64 operations per token, far below the H100's FP64 rate at these sizes.
#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/rope.h"
#include "backends/cuda/rope_device.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;
using rope_device::kMaxHalfDim;
constexpr int kThreads = 128;

__global__ void rope_kernel(bf16* __restrict__ q, int64_t q_row_stride, int num_heads, bf16* __restrict__ k,
                            int64_t k_row_stride, int num_kv_heads, int head_dim,
                            const int32_t* __restrict__ positions, const double* __restrict__ inv_freq,
                            double attention_factor) {
  __shared__ float s_cos[kMaxHalfDim];
  __shared__ float s_sin[kMaxHalfDim];
  const int64_t token = blockIdx.x;
  const int half = head_dim / 2;
  rope_device::fill_table(double(positions[token]), inv_freq, half, attention_factor, s_cos, s_sin);
  const int half_vecs = half / 8;
  const int heads = num_heads + (k ? num_kv_heads : 0);
  for (int item = threadIdx.x; item < heads * half_vecs; item += blockDim.x) {
    const int head = item / half_vecs;
    const int j0 = (item % half_vecs) * 8;
    bf16* x = head < num_heads ? q + token * q_row_stride + int64_t(head) * head_dim
                               : k + token * k_row_stride + int64_t(head - num_heads) * head_dim;
    uint4 lo, hi;
    rope_device::rotate8(x, half, j0, s_cos, s_sin, lo, hi);
    *reinterpret_cast<uint4*>(x + j0) = lo;
    *reinterpret_cast<uint4*>(x + half + j0) = hi;
  }
}

}  // namespace

void rope_apply(bf16* q, int64_t q_row_stride, int num_heads, bf16* k, int64_t k_row_stride, int num_kv_heads,
                int head_dim, const int32_t* positions, int num_tokens, const double* inv_freq,
                double attention_factor, cudaStream_t stream) {
  QF_CHECK(num_tokens >= 0, "rope_apply: negative token count ", num_tokens);
  if (num_tokens == 0) return;
  QF_CHECK(head_dim > 0 && head_dim % 16 == 0 && head_dim / 2 <= kMaxHalfDim, "rope_apply: head_dim ",
           head_dim, " must be a multiple of 16 and at most ", 2 * kMaxHalfDim);
  QF_CHECK(q && num_heads > 0 && q_row_stride >= int64_t(num_heads) * head_dim && q_row_stride % 8 == 0 &&
               aligned16(q),
           "rope_apply: q needs num_heads > 0, a 16-byte aligned base and a row stride >= num_heads * head_dim "
           "that is a multiple of 8 (got ", num_heads, " heads, stride ", q_row_stride, ")");
  QF_CHECK(!k || (num_kv_heads > 0 && k_row_stride >= int64_t(num_kv_heads) * head_dim && k_row_stride % 8 == 0 &&
                  aligned16(k)),
           "rope_apply: k needs num_kv_heads > 0, a 16-byte aligned base and a row stride >= num_kv_heads * "
           "head_dim that is a multiple of 8 (got ", num_kv_heads, " heads, stride ", k_row_stride, ")");
  QF_CHECK(positions && inv_freq, "rope_apply: missing positions or inv_freq");
  rope_kernel<<<num_tokens, kThreads, 0, stream>>>(q, q_row_stride, num_heads, k, k_row_stride, num_kv_heads,
                                                   head_dim, positions, inv_freq, attention_factor);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace qf::cuda
