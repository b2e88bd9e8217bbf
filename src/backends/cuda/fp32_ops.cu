// F32 kernels of the calibration pass (interface and CPU twins in fp32_ops.h).
//
// These run once per quantization, over at most a few GB of activations per block: plain,
// readable kernels (one CTA per row for the norms, grid-stride loops for the elementwise ops)
// are fast enough — the pass's time goes to cuBLASLt's FP32 GEMMs and to attention.
#include <cfloat>

#include "backends/cuda/fp32_ops.h"
#include "backends/cuda/cuda_check.h"
#include "core/error.h"

namespace qf::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return unsigned(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8));
}

// ---- RMSNorm ------------------------------------------------------------------------------------

// One CTA per row. The sum of squares in double, as cpu::rmsnorm (the order differs: a tree
// over the CTA instead of left to right, invisible after rounding to float in all but rare ties).
template <bool kResidual>
__global__ void rmsnorm_f32_kernel(float* x, const float* __restrict__ delta, const float* __restrict__ weight,
                                   float eps, float* y, int dim) {
  __shared__ double partial[kThreads / 32];
  const int64_t row = blockIdx.x;
  float* xr = x + row * dim;
  double sum_sq = 0.0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if constexpr (kResidual) {
      v += delta[row * dim + i];
      xr[i] = v;
    }
    sum_sq += double(v) * double(v);
  }
  for (int off = 16; off >= 1; off /= 2) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum_sq;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += partial[w];
  const float inv_rms = float(1.0 / sqrt(total / double(dim) + double(eps)));
  for (int i = threadIdx.x; i < dim; i += blockDim.x) y[row * dim + i] = (xr[i] * inv_rms) * weight[i];
}

// ---- elementwise ----------------------------------------------------------------------------------

__global__ void silu_mul_f32_kernel(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_f32_kernel(float* a, const float* __restrict__ b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] += b[i];
}

__global__ void add_bias_f32_kernel(float* y, const float* __restrict__ bias, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % cols];
}

// One thread per (token, head, pair); the products rounded as the CPU's (lo*c - hi*s with the
// two products rounded separately: no contraction into an FMA).
__global__ void rope_windows_f32_kernel(float* x, int64_t tokens, int64_t window_len, int heads, int head_dim,
                                        int64_t token_stride, const float* __restrict__ cos,
                                        const float* __restrict__ sin) {
  const int half = head_dim / 2;
  const int64_t n = tokens * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int j = int(i % half);
    const int64_t th = i / half;
    const int head = int(th % heads);
    const int64_t t = th / heads;
    const int64_t pos = t % window_len;
    float* v = x + t * token_stride + int64_t(head) * head_dim;
    const float c = cos[pos * half + j], s = sin[pos * half + j];
    const float lo = v[j], hi = v[j + half];
    v[j] = __fsub_rn(__fmul_rn(lo, c), __fmul_rn(hi, s));
    v[j + half] = __fadd_rn(__fmul_rn(hi, c), __fmul_rn(lo, s));
  }
}

__global__ void post_rope_scale_f32_kernel(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens,
                                           const float* __restrict__ post, int heads, int kv_heads, int head_dim) {
  const int group = heads / kv_heads;
  const int64_t qn = tokens * heads * head_dim, kn = tokens * kv_heads * head_dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < qn + kn; i += int64_t(gridDim.x) * blockDim.x) {
    if (i < qn) {
      const int c = int(i % head_dim);
      const int64_t th = i / head_dim;
      const int head = int(th % heads);
      const int64_t t = th / heads;
      q[t * q_stride + int64_t(head) * head_dim + c] /= post[(head / group) * head_dim + c];
    } else {
      const int64_t e = i - qn;
      const int c = int(e % head_dim);
      const int64_t th = e / head_dim;
      const int head = int(th % kv_heads);
      const int64_t t = th / kv_heads;
      k[t * k_stride + int64_t(head) * head_dim + c] *= post[head * head_dim + c];
    }
  }
}

// ---- attention ------------------------------------------------------------------------------------

// A CTA of 128 threads takes 32 queries of one (window, head); 4 threads per query, thread p
// owning dimensions p, p+4, p+8, ... (so the 4 threads of a query read 4 consecutive shared
// words: no bank conflicts, and the 8 queries of a warp read the same words: broadcasts). Keys
// and values in tiles of 32 through shared memory; per tile the 32 scores are reduced over the 4
// threads by shuffles, then one online-softmax rescale per tile.
constexpr int kAttnQueries = 32, kAttnKeys = 32, kAttnThreads = kAttnQueries * 4;

template <int D>
__global__ void __launch_bounds__(kAttnThreads) attention_windows_f32_kernel(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, int64_t n_queries,
    int64_t first_position, int64_t kv_window_rows, int heads, int kv_heads, float scale, float* __restrict__ out) {
  constexpr int P = D / 4;  // dimensions per thread
  __shared__ float ks[kAttnKeys][D], vs[kAttnKeys][D];
  const int head = blockIdx.y, kv_head = head / (heads / kv_heads);
  const int64_t window = blockIdx.z;
  const int64_t q_stride = int64_t(heads) * D, kv_stride = int64_t(kv_heads) * D;
  const int part = threadIdx.x % 4;
  const int64_t qi = int64_t(blockIdx.x) * kAttnQueries + threadIdx.x / 4;  // query index in the window
  const bool active = qi < n_queries;
  const int64_t pos = first_position + qi;  // its position: it sees keys 0 .. pos
  const int64_t q_row0 = window * n_queries, kv_row0 = window * kv_window_rows;

  float qr[P], acc[P];
#pragma unroll
  for (int t = 0; t < P; ++t) {
    qr[t] = active ? q[(q_row0 + qi) * q_stride + int64_t(head) * D + 4 * t + part] : 0.0f;
    acc[t] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  // Keys up to the CTA's last query's position.
  const int64_t keys = first_position + std::min<int64_t>(int64_t(blockIdx.x + 1) * kAttnQueries, n_queries);
  for (int64_t k0 = 0; k0 < keys; k0 += kAttnKeys) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < kAttnKeys * D; e += kAttnThreads) {
      const int j = e / D, c = e % D;
      const int64_t key = k0 + j;
      const bool in = key < keys;
      ks[j][c] = in ? k[(kv_row0 + key) * kv_stride + int64_t(kv_head) * D + c] : 0.0f;
      vs[j][c] = in ? v[(kv_row0 + key) * kv_stride + int64_t(kv_head) * D + c] : 0.0f;
    }
    __syncthreads();
    float s[kAttnKeys];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kAttnKeys; ++j) {
      float dot = 0.0f;
#pragma unroll
      for (int t = 0; t < P; ++t) dot = fmaf(qr[t], ks[j][4 * t + part], dot);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      s[j] = (k0 + j <= pos) ? dot * scale : -INFINITY;  // causal (and past the keys' end)
      tile_max = fmaxf(tile_max, s[j]);
    }
    if (tile_max == -INFINITY) continue;  // every key of the tile is masked for this query
    const float m_new = fmaxf(m, tile_max);
    const float correction = expf(m - m_new);  // 0 on the first tile (m = -inf)
    l *= correction;
#pragma unroll
    for (int t = 0; t < P; ++t) acc[t] *= correction;
#pragma unroll
    for (int j = 0; j < kAttnKeys; ++j) {
      const float p = expf(s[j] - m_new);
      l += p;
#pragma unroll
      for (int t = 0; t < P; ++t) acc[t] = fmaf(p, vs[j][4 * t + part], acc[t]);
    }
    m = m_new;
  }
  if (active) {
    const float inv = 1.0f / l;
#pragma unroll
    for (int t = 0; t < P; ++t) out[(q_row0 + qi) * q_stride + int64_t(head) * D + 4 * t + part] = acc[t] * inv;
  }
}

// ---- statistics -----------------------------------------------------------------------------------

// The twin of calibration.cpp's histogram_bin.
__device__ __forceinline__ int histogram_bin(uint32_t abs_bits, int first_quarter, int bins) {
  if (abs_bits == 0) return 0;
  return min(max(int(abs_bits >> 21) - first_quarter + 1, 0), bins - 1);
}

// A CTA per (tile of kStatRows rows, tile of 256 channels): thread = channel (coalesced reads
// along a row), its absmax kept in a register over the tile's rows and merged once.
constexpr int kStatRows = 256;

__global__ void channel_statistics_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, int first_quarter,
                                          int bins, uint32_t* absmax_bits, uint32_t* histogram) {
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = int64_t(blockIdx.x) * kStatRows, r1 = std::min<int64_t>(rows, r0 + kStatRows);
  uint32_t amax = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint32_t bits = __float_as_uint(x[r * cols + c]) & 0x7FFFFFFFu;
    if (bits <= 0x7F800000u) amax = max(amax, bits);  // NaNs are counted by the token kernel
    atomicAdd(&histogram[c * bins + histogram_bin(bits, first_quarter, bins)], 1u);
  }
  atomicMax(&absmax_bits[c], amax);
}

// A warp per row: its min and max, and the count of non-finite values.
__global__ void token_range_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, float* token_min,
                                   float* token_max, unsigned long long* nonfinite) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float lo = FLT_MAX, hi = -FLT_MAX;
  unsigned bad = 0;
  for (int64_t c = lane; c < cols; c += 32) {
    const float v = x[row * cols + c];
    if (!isfinite(v)) ++bad;
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  for (int off = 16; off >= 1; off /= 2) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
    bad += __shfl_xor_sync(0xffffffffu, bad, off);
  }
  if (lane == 0) {
    token_min[row] = lo;
    token_max[row] = hi;
    if (bad) atomicAdd(nonfinite, (unsigned long long)bad);
  }
}

}  // namespace

void rmsnorm_f32(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y,
                 cudaStream_t stream) {
  QF_CHECK(rows >= 0 && dim >= 1, "rmsnorm_f32: bad shape ", rows, " x ", dim);
  if (rows == 0) return;
  // Without a residual the input is only read (the kernel's x is non-const for the fused form).
  rmsnorm_f32_kernel<false><<<unsigned(rows), kThreads, 0, stream>>>(const_cast<float*>(x), nullptr, weight, eps, y,
                                                                    int(dim));
  QF_CUDA_CHECK_LAUNCH();
}

void add_rmsnorm_f32(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                     float* y, cudaStream_t stream) {
  QF_CHECK(rows >= 0 && dim >= 1, "add_rmsnorm_f32: bad shape ", rows, " x ", dim);
  if (rows == 0) return;
  rmsnorm_f32_kernel<true><<<unsigned(rows), kThreads, 0, stream>>>(residual, delta, weight, eps, y, int(dim));
  QF_CUDA_CHECK_LAUNCH();
}

void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n, out);
  QF_CUDA_CHECK_LAUNCH();
}

void add_f32(float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(a, b, n);
  QF_CUDA_CHECK_LAUNCH();
}

void add_bias_f32(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  add_bias_f32_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(y, bias, rows * cols, cols);
  QF_CUDA_CHECK_LAUNCH();
}

void rope_windows_f32(float* x, int64_t tokens, int64_t window_len, int64_t heads, int64_t head_dim,
                      int64_t token_stride, const float* cos, const float* sin, cudaStream_t stream) {
  QF_CHECK(head_dim % 2 == 0 && window_len >= 1, "rope_windows_f32: head_dim ", head_dim, ", window ", window_len);
  const int64_t n = tokens * heads * (head_dim / 2);
  if (n <= 0) return;
  rope_windows_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, tokens, window_len, int(heads), int(head_dim),
                                                                token_stride, cos, sin);
  QF_CUDA_CHECK_LAUNCH();
}

void post_rope_scale_f32(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                         int64_t heads, int64_t kv_heads, int64_t head_dim, cudaStream_t stream) {
  QF_CHECK(kv_heads >= 1 && heads % kv_heads == 0, "post_rope_scale_f32: ", heads, " heads over ", kv_heads, " KV heads");
  const int64_t n = tokens * (heads + kv_heads) * head_dim;
  if (n <= 0) return;
  post_rope_scale_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(q, q_stride, k, k_stride, tokens, post, int(heads),
                                                                   int(kv_heads), int(head_dim));
  QF_CUDA_CHECK_LAUNCH();
}

void attention_windows_f32(const float* q, const float* k, const float* v, int64_t windows, int64_t n_queries,
                           int64_t first_position, int64_t kv_window_rows, int64_t heads, int64_t kv_heads,
                           int64_t head_dim, float scale, float* out, cudaStream_t stream) {
  QF_CHECK(kv_heads >= 1 && heads % kv_heads == 0, "attention_windows_f32: ", heads, " heads over ", kv_heads,
           " KV heads");
  QF_CHECK(windows <= 65535 && heads <= 65535, "attention_windows_f32: ", windows, " windows x ", heads,
           " heads exceed the grid");
  QF_CHECK(first_position >= 0 && (windows <= 1 || kv_window_rows >= first_position + n_queries),
           "attention_windows_f32: windows of ", kv_window_rows, " key rows cannot hold positions up to ",
           first_position + n_queries - 1);
  if (windows * n_queries == 0) return;
  const dim3 grid(unsigned((n_queries + kAttnQueries - 1) / kAttnQueries), unsigned(heads), unsigned(windows));
  switch (head_dim) {
    case 64:
      attention_windows_f32_kernel<64><<<grid, kAttnThreads, 0, stream>>>(
          q, k, v, n_queries, first_position, kv_window_rows, int(heads), int(kv_heads), scale, out);
      break;
    case 128:
      attention_windows_f32_kernel<128><<<grid, kAttnThreads, 0, stream>>>(
          q, k, v, n_queries, first_position, kv_window_rows, int(heads), int(kv_heads), scale, out);
      break;
    default: fail("attention_windows_f32: head_dim ", head_dim, " (the FP32 GPU device supports 64 and 128)");
  }
  QF_CUDA_CHECK_LAUNCH();
}

void channel_statistics_f32(const float* x, int64_t rows, int64_t cols, int first_quarter, int bins,
                            uint32_t* absmax_bits, uint32_t* histogram, float* token_min, float* token_max,
                            unsigned long long* nonfinite, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const dim3 grid(unsigned((rows + kStatRows - 1) / kStatRows), unsigned((cols + kThreads - 1) / kThreads));
  QF_CHECK(grid.x <= 0x7FFFFFFFu && grid.y <= 65535, "channel_statistics_f32: ", rows, " x ", cols, " is too large");
  channel_statistics_kernel<<<grid, kThreads, 0, stream>>>(x, rows, cols, first_quarter, bins, absmax_bits, histogram);
  QF_CUDA_CHECK_LAUNCH();
  const int64_t range_blocks = (rows * 32 + kThreads - 1) / kThreads;  // a warp per row, no grid-stride loop
  QF_CHECK(range_blocks <= 0x7FFFFFFF, "channel_statistics_f32: ", rows, " rows are too many for one launch");
  token_range_kernel<<<unsigned(range_blocks), kThreads, 0, stream>>>(x, rows, cols, token_min, token_max, nonfinite);
  QF_CUDA_CHECK_LAUNCH();
}

}  // namespace qf::cuda
