// RMSNorm kernels (interface and formula in norm.h).
//
// Memory bound: per row, read dim bf16 (plus the residual, read and written, in the fused form)
// and write dim bf16. One CTA per row with dim/32 threads rounded up to a warp (each thread
// keeps its <= 4 vectors of 8 values in registers between the sum of squares and the scaling),
// 16-byte loads and stores, a warp-shuffle + shared-memory reduction.
#include <type_traits>

#include "backends/cuda/attention_ptx.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fp8_token_device.h"
#include "backends/cuda/pdl.h"
#include "backends/cuda/norm.h"

namespace qf::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kVecsPerThread = 4;
constexpr int kMaxThreads = 1024;
constexpr int64_t kMaxDim = int64_t(kVecsPerThread) * 8 * kMaxThreads;  // 32768

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  if (warps == 1) return v;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += warp_sums[w];  // same order in every thread
  return total;
}

// Residual: void (plain rmsnorm), bf16 or float (fused residual add). kFp8: the output is the
// FP8 per-token quantization of the FP32 result (yq codes, ys scales; fp8_token_device.h) instead
// of BF16 y: the input of a w4a8 linear, rounded once from FP32 as the simulation rounds it.
// x and y may alias (each thread reads its vectors before writing the same ones): no __restrict__.
template <typename Residual, bool kFp8 = false>
__global__ void rmsnorm_kernel(const bf16* x, Residual* __restrict__ residual,
                               const float* __restrict__ weight, float eps, bf16* y, int dim,
                               uint8_t* __restrict__ yq, float* __restrict__ ys) {
  pdl_trigger();
  const int64_t row = blockIdx.x;
  const int vecs = dim / 8;
  // The norm weights are constant: loaded before the wait for the kernel before (pdl.h), they
  // take one global-memory round trip off a chain that at decode is the whole kernel.
  float w[kVecsPerThread][8];
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < vecs) {
      const float4 w0 = reinterpret_cast<const float4*>(weight)[2 * i];
      const float4 w1 = reinterpret_cast<const float4*>(weight)[2 * i + 1];
      w[k][0] = w0.x, w[k][1] = w0.y, w[k][2] = w0.z, w[k][3] = w0.w;
      w[k][4] = w1.x, w[k][5] = w1.y, w[k][6] = w1.z, w[k][7] = w1.w;
    }
  }
  pdl_wait();
  float v[kVecsPerThread][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < vecs) {
      const int64_t off = row * dim + int64_t(i) * 8;
      ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(x + off), v[k]);
      if constexpr (std::is_same_v<Residual, bf16>) {
        float r[8];
        ptx::bf16x8_to_float(*reinterpret_cast<const uint4*>(residual + off), r);
#pragma unroll
        for (int e = 0; e < 8; ++e) r[e] += v[k][e];
        const uint4 packed = ptx::float_to_bf16x8(r);
        *reinterpret_cast<uint4*>(residual + off) = packed;
        ptx::bf16x8_to_float(packed, v[k]);  // normalise the rounded sum, as stored
      } else if constexpr (std::is_same_v<Residual, float>) {
        float4* r = reinterpret_cast<float4*>(residual + off);
        float4 r0 = r[0], r1 = r[1];
        r0.x += v[k][0]; r0.y += v[k][1]; r0.z += v[k][2]; r0.w += v[k][3];
        r1.x += v[k][4]; r1.y += v[k][5]; r1.z += v[k][6]; r1.w += v[k][7];
        r[0] = r0;
        r[1] = r1;
        v[k][0] = r0.x; v[k][1] = r0.y; v[k][2] = r0.z; v[k][3] = r0.w;
        v[k][4] = r1.x; v[k][5] = r1.y; v[k][6] = r1.z; v[k][7] = r1.w;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) sum_sq = fmaf(v[k][e], v[k][e], sum_sq);
    }
  }
  sum_sq = block_sum(sum_sq);
  // As the CPU twin: the inverse root in double, rounded to float once.
  const float inv_rms = static_cast<float>(1.0 / sqrt(double(sum_sq) / double(dim) + double(eps)));
  float amax = 0.f;
#pragma unroll
  for (int k = 0; k < kVecsPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < vecs) {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k][e] = __fmul_rn(__fmul_rn(v[k][e], inv_rms), w[k][e]);
      if constexpr (kFp8) {
#pragma unroll
        for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(v[k][e]));
      } else {
        *reinterpret_cast<uint4*>(y + row * dim + int64_t(i) * 8) = ptx::float_to_bf16x8(v[k]);
      }
    }
  }
  if constexpr (kFp8) {
    const float s = fp8_token::scale_of(fp8_token::block_max(amax));
    if (threadIdx.x == 0) ys[row] = s;
#pragma unroll
    for (int k = 0; k < kVecsPerThread; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      if (i < vecs) *reinterpret_cast<uint2*>(yq + row * dim + int64_t(i) * 8) = fp8_token::quantize8(v[k], s);
    }
  }
}

// Checks and launches rmsnorm_kernel: BF16 output y, or with kFp8 per-token FP8 codes yq and
// scales ys instead.
template <typename Residual, bool kFp8 = false>
void launch(const bf16* x, Residual* residual, int64_t rows, int64_t dim, const float* weight, float eps,
            bf16* y, uint8_t* yq, float* ys, cudaStream_t stream, const char* who) {
  QF_CHECK(rows >= 0, who, ": negative row count ", rows);
  if (rows == 0) return;
  QF_CHECK(dim > 0 && dim % 8 == 0 && dim <= kMaxDim, who, ": dim ", dim,
           " must be a positive multiple of 8 and at most ", kMaxDim);
  QF_CHECK(rows <= 0x7fffffff, who, ": ", rows, " rows exceed one launch");
  const bool out_ok = kFp8 ? yq && ys && aligned16(yq) : y && aligned16(y);
  QF_CHECK(x && weight && out_ok && aligned16(x) && aligned16(weight) && (residual == nullptr || aligned16(residual)),
           who, ": pointers must be non-null and 16-byte aligned");
  const int vecs = static_cast<int>(dim / 8);
  const int per_thread = (vecs + kVecsPerThread - 1) / kVecsPerThread;
  const int threads = (per_thread + 31) / 32 * 32;
  launch_pdl(rmsnorm_kernel<Residual, kFp8>, dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream, x, residual,
             weight, eps, y, static_cast<int>(dim), yq, ys);
}

}  // namespace

void add_rmsnorm_fp8(float* residual, const bf16* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                     __nv_fp8_e4m3* yq, float* ys, cudaStream_t stream) {
  QF_CHECK(residual != nullptr, "add_rmsnorm_fp8: no residual");
  launch<float, true>(delta, residual, rows, dim, weight, eps, nullptr, reinterpret_cast<uint8_t*>(yq), ys, stream,
                      "add_rmsnorm_fp8");
}

void rmsnorm(const bf16* x, int64_t rows, int64_t dim, const float* weight, float eps, bf16* y,
             cudaStream_t stream) {
  launch<void>(x, nullptr, rows, dim, weight, eps, y, nullptr, nullptr, stream, "rmsnorm");
}

void add_rmsnorm(bf16* residual, const bf16* delta, int64_t rows, int64_t dim, const float* weight,
                 float eps, bf16* y, cudaStream_t stream) {
  QF_CHECK(residual != nullptr, "add_rmsnorm: no residual");
  launch<bf16>(delta, residual, rows, dim, weight, eps, y, nullptr, nullptr, stream, "add_rmsnorm");
}

void add_rmsnorm(float* residual, const bf16* delta, int64_t rows, int64_t dim, const float* weight,
                 float eps, bf16* y, cudaStream_t stream) {
  QF_CHECK(residual != nullptr, "add_rmsnorm: no residual");
  launch<float>(delta, residual, rows, dim, weight, eps, y, nullptr, nullptr, stream, "add_rmsnorm");
}

}  // namespace qf::cuda
