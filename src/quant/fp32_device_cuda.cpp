// The CUDA calibration device (fp32_device.h): GPU memory, backends/cuda/fp32_ops.h
// and cuBLASLt's FP32 GEMM. Everything runs on one stream; the host waits only where it reads a
// result (downloads, statistics).
#include "quant/fp32_device.h"

#include "core/error.h"

#ifdef QF_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <deque>
#include <map>
#include <vector>

#include "backends/cpu/format_round_trip.h"
#include "backends/cuda/fp32_ops.h"
#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "core/thread_pool.h"
#endif

namespace qf {

#ifdef QF_HAVE_CUDA
namespace {

class CudaFp32Device final : public Fp32Device {
 public:
  CudaFp32Device() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    QF_CHECK(e == cudaSuccess && n > 0, "calibration on the GPU: no usable CUDA device (",
             e == cudaSuccess ? "none found" : cudaGetErrorString(e), "); use --device cpu");
    name_ = "cuda (" + cuda::device_info().name + ")";
  }

  std::string name() const override { return name_; }
  // 16 windows of 1024 or 8 of 2048: GEMMs of >= 16k rows run cuBLAS's FP32 kernels near their
  // peak, and the chunk's scratch (gate and up: 16k x intermediate floats each) stays below
  // 1.5 GB for a 70B model's 28672.
  int64_t default_chunk_tokens() const override { return 16384; }

  float* alloc(int64_t n, const std::string& what) override {
    buffers_.emplace_back(size_t(std::max<int64_t>(n, 1)) * sizeof(float), what);
    return buffers_.back().as<float>();
  }
  void upload(float* dst, const float* host, int64_t n) override {
    if (n > 0) cuda::copy_to_device(dst, host, size_t(n) * sizeof(float), stream_);
  }
  void download(float* host, const float* src, int64_t n) override {
    if (n > 0) cuda::copy_to_host(host, src, size_t(n) * sizeof(float), stream_);
  }
  void download_rows(float* host, const float* src, int64_t cols, int64_t first, int64_t stride,
                     int64_t count) override {
    if (count <= 0) return;
    const size_t row = size_t(cols) * sizeof(float);
    QF_CUDA_CHECK(cudaMemcpy2DAsync(host, row, src + first * cols, row * size_t(stride), row, size_t(count),
                                    cudaMemcpyDeviceToHost, stream_));
    stream_.synchronize();
  }
  void copy(float* dst, const float* src, int64_t n) override {
    if (dst != src && n > 0)
      QF_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }

  float* scratch(int slot, int64_t n, const std::string& what) override {
    cuda::DeviceBuffer& b = scratch_[slot];
    if (b.size() < size_t(n) * sizeof(float)) {
      b.reset();  // free first: the old contents are not kept
      b = cuda::DeviceBuffer(size_t(std::max<int64_t>(n, 1)) * sizeof(float), what);
    }
    return b.as<float>();
  }
  void download_columns(float* host, const float* src, int64_t ld, int64_t col0, int64_t rows, int64_t cols) override {
    if (rows <= 0 || cols <= 0) return;
    QF_CUDA_CHECK(cudaMemcpy2DAsync(host, size_t(cols) * sizeof(float), src + col0, size_t(ld) * sizeof(float),
                                    size_t(cols) * sizeof(float), size_t(rows), cudaMemcpyDeviceToHost, stream_));
    stream_.synchronize();
  }
  void gemm_subtract(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m, int64_t n,
                     int64_t k) override {
    blas_.gemm_subtract_f32(a, lda, b, ldb, c, ldc, m, n, k, stream_);
  }

  void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) override {
    cuda::rmsnorm_f32(x, rows, dim, weight, eps, y, stream_);
  }
  void add_rmsnorm(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight, float eps,
                   float* y) override {
    cuda::add_rmsnorm_f32(residual, delta, rows, dim, weight, eps, y, stream_);
  }
  void linear(const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y) override {
    blas_.linear_f32(x, w, y, m, n, k, stream_);
    if (bias) cuda::add_bias_f32(y, bias, m, n, stream_);
  }
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override {
    cuda::silu_mul_f32(gate, up, n, out, stream_);
  }
  void add(float* a, const float* b, int64_t n) override { cuda::add_f32(a, b, n, stream_); }
  // Rounded on the host by the CPU codec (fp32_device.h says why).
  void round_trip_rows(float* x, int64_t rows, int64_t cols, const Format& format) override {
    host_.resize(size_t(rows * cols));
    download(host_.data(), x, rows * cols);
    parallel_for(rows, 16, [&](int64_t b, int64_t e) {
      cpu::round_trip_rows(host_.data() + b * cols, e - b, cols, format, host_.data() + b * cols);
    });
    upload(x, host_.data(), rows * cols);
  }
  void rope(float* x, int64_t windows, int64_t window_len, int64_t heads, int64_t head_dim, int64_t token_stride,
            const float* cos, const float* sin) override {
    cuda::rope_windows_f32(x, windows * window_len, window_len, heads, head_dim, token_stride, cos, sin, stream_);
  }
  void post_rope_scale(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens, const float* post,
                       int64_t heads, int64_t kv_heads, int64_t head_dim) override {
    cuda::post_rope_scale_f32(q, q_stride, k, k_stride, tokens, post, heads, kv_heads, head_dim, stream_);
  }
  void attention(const float* q, const float* k, const float* v, int64_t windows, int64_t n_queries,
                 int64_t first_position, int64_t kv_window_rows, int64_t heads, int64_t kv_heads, int64_t head_dim,
                 float scale, float* out) override {
    cuda::attention_windows_f32(q, k, v, windows, n_queries, first_position, kv_window_rows, heads, kv_heads, head_dim,
                                scale, out, stream_);
  }

  void statistics(const float* x, int64_t m, int64_t c, int first_quarter, int bins, float* gram, float* absmax,
                  uint32_t* histogram, float* token_min, float* token_max) override {
    // Device scratch, grown to the largest request (the chunk size and the widest input).
    const size_t counts = size_t(c) * (1 + size_t(bins));
    if (c * c > gram_capacity_) {
      gram_d_ = cuda::DeviceBuffer(size_t(c * c) * sizeof(float), "the calibration Gram matrix");
      gram_capacity_ = c * c;
    }
    if (int64_t(counts) > counts_capacity_) {
      counts_d_ = cuda::DeviceBuffer(counts * sizeof(uint32_t) + sizeof(unsigned long long), "the calibration histograms");
      counts_capacity_ = int64_t(counts);
    }
    if (2 * m > range_capacity_) {
      range_d_ = cuda::DeviceBuffer(size_t(2 * m) * sizeof(float), "the calibration token ranges");
      range_capacity_ = 2 * m;
    }
    // [64-bit count of non-finite values][absmax bits, c][histogram, c x bins], zeroed per call.
    const size_t bytes = sizeof(unsigned long long) + counts * sizeof(uint32_t);
    auto* nonfinite = counts_d_.as<unsigned long long>();
    uint32_t* absmax_bits = reinterpret_cast<uint32_t*>(nonfinite + 1);
    uint32_t* hist = absmax_bits + c;
    QF_CUDA_CHECK(cudaMemsetAsync(counts_d_.data(), 0, bytes, stream_));
    blas_.gram_f32(x, gram_d_.as<float>(), m, c, stream_);
    cuda::channel_statistics_f32(x, m, c, first_quarter, bins, absmax_bits, hist, range_d_.as<float>(),
                                 range_d_.as<float>() + m, nonfinite, stream_);
    counts_h_.resize(2 + counts);
    cuda::copy_to_host(counts_h_.data(), counts_d_.data(), bytes, stream_);
    unsigned long long bad = 0;
    std::memcpy(&bad, counts_h_.data(), sizeof bad);
    QF_CHECK(bad == 0, "calibration: ", bad, " linear input values of a chunk of ", m, " tokens are not finite; the "
             "model's activations overflowed");
    const uint32_t* absmax_h = counts_h_.data() + 2;
    for (int64_t j = 0; j < c; ++j) absmax[j] = std::max(absmax[j], std::bit_cast<float>(absmax_h[j]));
    for (size_t i = 0; i < size_t(c) * size_t(bins); ++i) histogram[i] += absmax_h[size_t(c) + i];
    cuda::copy_to_host(gram, gram_d_.data(), size_t(c * c) * sizeof(float), stream_);
    range_h_.resize(size_t(2 * m));
    cuda::copy_to_host(range_h_.data(), range_d_.data(), size_t(2 * m) * sizeof(float), stream_);
    std::copy_n(range_h_.data(), m, token_min);
    std::copy_n(range_h_.data() + m, m, token_max);
  }

 private:
  std::string name_;
  cuda::Stream stream_;
  cuda::CublasLt blas_;
  std::deque<cuda::DeviceBuffer> buffers_;
  std::map<int, cuda::DeviceBuffer> scratch_;
  std::vector<float> host_;
  cuda::DeviceBuffer gram_d_, counts_d_, range_d_;
  int64_t gram_capacity_ = 0, counts_capacity_ = 0, range_capacity_ = 0;
  std::vector<uint32_t> counts_h_;
  std::vector<float> range_h_;
};

}  // namespace

std::unique_ptr<Fp32Device> make_cuda_fp32_device() { return std::make_unique<CudaFp32Device>(); }

#else

std::unique_ptr<Fp32Device> make_cuda_fp32_device() {
  fail("calibration on the GPU: this qforge was built without CUDA (configure with -DQF_CUDA=ON on a machine with "
       "the CUDA toolkit); use --device cpu");
}

#endif

}  // namespace qf
