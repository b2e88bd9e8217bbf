// Helpers of the GPU kernel tests (attention, KV cache, norm, RoPE, activation, embedding,
// sampling): random BF16 host data, typed device arrays, output poisoning and error measures.
// Every test compares a kernel with its CPU twin (src/backends/cpu) on the same inputs.
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "formats/format.h"
#include "formats/quantize.h"

namespace qf::testing {

using bf16 = __nv_bfloat16;

// Attention head shapes of the real models the attention tests run at.
struct HeadShape {
  const char* name;
  int heads, kv_heads, head_dim;
};
inline constexpr HeadShape kLlama2_7B{"llama2-7b", 32, 32, 128};
inline constexpr HeadShape kLlama3_8B{"llama3-8b", 32, 8, 128};
inline constexpr HeadShape kSmolLM2{"smollm2-135m", 9, 3, 64};

// A bf16 NaN that no kernel produces (the canonical quiet NaN is 0x7fc0): an output element
// still holding it was never written.
inline constexpr uint16_t kPoisonBits = 0x7fa5;

inline uint16_t bf16_bits(bf16 v) {
  uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}
inline float bf16_to_float(bf16 v) {
  const uint32_t u = uint32_t(bf16_bits(v)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even (CUDA's host conversion, the same rounding the kernels use).
inline bf16 float_to_bf16(float f) { return __float2bfloat16_rn(f); }

// A fresh seed per call, printed with any failure of the test that uses it, so each run draws
// new inputs and a failing draw can still be replayed.
inline uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

inline std::vector<bf16> random_bf16(size_t n, std::mt19937_64& rng, float stddev = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> nd(mean, stddev);
  std::vector<bf16> v(n);
  for (auto& x : v) x = float_to_bf16(nd(rng));
  return v;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf16_to_float(v[i]);
  return f;
}

// A typed device array on one DeviceBuffer.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n, const char* what = "test array")
      : buf_(std::max<size_t>(n, 1) * sizeof(T), what), n_(n) {}
  DeviceArray(const std::vector<T>& host, cudaStream_t stream, const char* what = "test array")
      : DeviceArray(host.size(), what) {
    upload(host, stream);
  }
  T* get() const { return buf_.as<T>(); }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host, cudaStream_t stream) {
    EXPECT_EQ(host.size(), n_);
    if (n_) cuda::copy_to_device(get(), host.data(), n_ * sizeof(T), stream);
  }
  std::vector<T> download(cudaStream_t stream) const {
    std::vector<T> host(n_);
    if (n_) cuda::copy_to_host(host.data(), get(), n_ * sizeof(T), stream);
    return host;
  }
  // Fills every 16-bit half-word with the poison NaN (T of any size: bf16, float, int).
  void poison(cudaStream_t stream) { cuda::fill_u16(get(), kPoisonBits, n_ * sizeof(T) / 2, stream); }

 private:
  cuda::DeviceBuffer buf_;
  size_t n_ = 0;
};

struct ErrorStats {
  double rel_fro = 0.0;  // ||got - ref||_2 / ||ref||_2
  double max_abs = 0.0;
  double ref_max_abs = 0.0;
  int64_t non_finite = 0;  // NaN / inf in `got` (an unwritten poisoned element counts here)
  int64_t count = 0;
};

// Compares got[i * stride + offset + j] with ref[i * ref_stride + j] for i < rows, j < cols.
inline ErrorStats compare(const std::vector<float>& got, const std::vector<float>& ref, int64_t rows, int64_t cols,
                          int64_t got_stride, int64_t ref_stride, int64_t got_offset = 0) {
  ErrorStats e;
  double diff2 = 0.0, ref2 = 0.0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double g = got[size_t(i * got_stride + got_offset + j)];
      const double r = ref[size_t(i * ref_stride + j)];
      ++e.count;
      if (!std::isfinite(g)) {
        ++e.non_finite;
        continue;
      }
      diff2 += (g - r) * (g - r);
      ref2 += r * r;
      e.max_abs = std::max(e.max_abs, std::fabs(g - r));
      e.ref_max_abs = std::max(e.ref_max_abs, std::fabs(r));
    }
  e.rel_fro = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return e;
}

inline ErrorStats compare(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  return compare(got, ref, 1, int64_t(std::min(got.size(), ref.size())), 0, 0);
}

inline std::string describe(const ErrorStats& e) {
  return "rel_fro=" + std::to_string(e.rel_fro) + " max_abs=" + std::to_string(e.max_abs) +
         " (ref max " + std::to_string(e.ref_max_abs) + ") non_finite=" + std::to_string(e.non_finite) + "/" +
         std::to_string(e.count);
}

// Count of 16-bit words in [begin, end) of `v` that still hold the poison pattern.
template <typename T>
int64_t count_poisoned(const std::vector<T>& v, size_t begin, size_t end) {
  int64_t n = 0;
  for (size_t i = begin; i < end; ++i) {
    uint16_t w[sizeof(T) / 2];
    std::memcpy(w, &v[i], sizeof(T));
    for (uint16_t x : w) n += x == kPoisonBits;
  }
  return n;
}

// A kernel's FP8 per-token output (codes [rows, n], scales [rows]) against formats/quantize.h's
// fp8_e4m3:token of the CPU twin's FP32 values `ref`. The values both sides quantize agree to
// ~1e-6 relative (the FP32 formula in another summation order, expf's last ulp), so the scales
// agree to 1e-5 relative, and a code may differ only where a value sits within ~1e-6 of a
// rounding boundary: by one FP8 step, in a tiny fraction of the elements (allowed: 0.1 %; a wrong
// scale, index or rounding mode changes most codes). Zero codes/poison: the caller poisons the
// output with bytes no quantizer writes for these inputs (0x7F, FP8 NaN).
inline void expect_fp8_token_rows(const std::vector<uint8_t>& codes, const std::vector<float>& scales,
                                  const std::vector<float>& ref, int64_t rows, int64_t n) {
  ASSERT_EQ(codes.size(), size_t(rows * n));
  ASSERT_EQ(scales.size(), size_t(rows));
  const QuantizedMatrix want = quantize(ref.data(), rows, n, Format::parse("fp8_e4m3:token"));
  const ElementType e4m3 = ElementType::of(ElementKind::fp8_e4m3);
  int64_t differ = 0, far = 0, nan = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float ws = want.scale_of(r, 0);
    EXPECT_NEAR(scales[size_t(r)], ws, 1e-5 * std::fabs(ws)) << "row " << r;
    for (int64_t j = 0; j < n; ++j) {
      const size_t i = size_t(r * n + j);
      const float g = decode_float_element(e4m3, codes[i]), w = decode_float_element(e4m3, want.codes[i]);
      if (std::isnan(g)) ++nan;
      else if (g != w) {
        ++differ;
        // One FP8 step: at most 2^-3 of the larger magnitude, or the subnormal quantum 2^-9.
        if (std::fabs(g - w) > std::max(std::ldexp(std::max(std::fabs(g), std::fabs(w)), -3), std::ldexp(1.f, -9)) * 1.0001f)
          ++far;
      }
    }
  }
  EXPECT_EQ(nan, 0) << "codes left unwritten (poison) or NaN";
  EXPECT_EQ(far, 0) << "codes more than one FP8 step from the reference";
  EXPECT_LE(double(differ), 1e-3 * double(rows * n) + 1) << differ << " of " << rows * n << " codes differ by one step";
}

// The output channels a big GEMM test compares against its (slow) CPU twin: the first and last 48
// (tile edges, padding) and 160 random ones, sorted, without repeats.
inline std::vector<int64_t> sampled_channels(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < n; ++r)
    if (r < 48 || r >= n - 48) rows.push_back(r);
  std::uniform_int_distribution<int64_t> pick(0, n - 1);
  for (int i = 0; i < 160; ++i) rows.push_back(pick(rng));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

}  // namespace qf::testing
