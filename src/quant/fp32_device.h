// The FP32 reference ops (the CPU engine's numerics) on a device: where the calibration pass
// (calibration.h), GPTQ's deferred updates (gptq.h) and the simulation engine
// (runtime/simulation_engine.h: a quantized model evaluated exactly as simulated) compute.
//
// The calibration pass's control flow — the stages in forward order, the callbacks, the
// statistics it hands out — is one piece of code (calibration.cpp), and so is the simulation
// engine's forward. Every operation on activations goes through an Fp32Device, and every buffer
// they work on lives in the device's memory:
//   * the CPU device: host memory and the CPU engine's own kernels (backends/cpu), so the pass's
//     activations are bit-identical to the CPU engine's forward (tests/quant/test_calibration.cpp
//     checks the Hessians against it exactly);
//   * the CUDA device: GPU memory, the FP32 kernels of backends/cuda/fp32_ops.h and
//     cuBLASLt's FP32 GEMM. The residual stream of every window stays on the GPU; only the
//     statistics (Hessians, histograms), the weights and the callbacks' samples cross PCIe.
//     Equal to the CPU device up to FP32 summation order (tests/cuda/test_fp32_device.cpp).
// Formats the GPU cannot round (activation, KV-cache and query simulations) are rounded on the
// host by the CPU codec: the rows are copied down, rounded, and copied back, so every recipe runs
// on both devices, the rare rounding ones at PCIe speed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "formats/format.h"

namespace qf {

class Fp32Device {
 public:
  virtual ~Fp32Device() = default;

  // "cpu", or "cuda (<GPU name>)": for progress lines and the checkpoint's calibration record.
  virtual std::string name() const = 0;
  // Tokens per chunk of windows when the pass's options leave it to the device: the CPU keeps
  // chunks small (its scratch is per chunk), the GPU wants enough rows per GEMM to fill the chip.
  virtual int64_t default_chunk_tokens() const = 0;

  // n floats of device memory, alive as long as the device; `what` names it in the error when it
  // does not fit.
  virtual float* alloc(int64_t n, const std::string& what) = 0;
  virtual void upload(float* dst, const float* host, int64_t n) = 0;
  virtual void download(float* host, const float* src, int64_t n) = 0;
  // Rows first, first + stride, ... (count of them) of src [*, cols] into host [count, cols].
  virtual void download_rows(float* host, const float* src, int64_t cols, int64_t first, int64_t stride,
                             int64_t count) = 0;
  virtual void copy(float* dst, const float* src, int64_t n) = 0;
  // A reusable buffer of at least n floats per slot (grown when too small; its contents are not
  // kept across calls): scratch that per-layer work like GPTQ takes again for every layer.
  virtual float* scratch(int slot, int64_t n, const std::string& what) = 0;
  // Columns [col0, col0 + cols) of `rows` rows of src (row stride ld) into host [rows, cols].
  virtual void download_columns(float* host, const float* src, int64_t ld, int64_t col0, int64_t rows,
                                int64_t cols) = 0;

  // The ops, with the CPU backend's semantics (backends/cpu/ops.h, gemm.h, rope.h, attention.h).
  virtual void rmsnorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) = 0;
  virtual void add_rmsnorm(float* residual, const float* delta, int64_t rows, int64_t dim, const float* weight,
                           float eps, float* y) = 0;
  // y[m, n] = x[m, k] · W[n, k]^T (+ bias[n] when bias is not null).
  virtual void linear(const float* x, int64_t m, int64_t k, const float* w, int64_t n, const float* bias, float* y) = 0;
  virtual void silu_mul(const float* gate, const float* up, int64_t n, float* out) = 0;
  virtual void add(float* a, const float* b, int64_t n) = 0;
  // Each row of `cols` values stored in `format` and read back, in place (cpu/format_round_trip.h).
  virtual void round_trip_rows(float* x, int64_t rows, int64_t cols, const Format& format) = 0;
  // RoPE of windows * window_len rows (row stride token_stride, `heads` heads of head_dim), the
  // t-th row of a window at position t; cos/sin [window_len, head_dim / 2] in device memory.
  virtual void rope(float* x, int64_t windows, int64_t window_len, int64_t heads, int64_t head_dim,
                    int64_t token_stride, const float* cos, const float* sin) = 0;
  // quant/rope_scale.h apply_post_rope_scale; post in device memory.
  virtual void post_rope_scale(float* q, int64_t q_stride, float* k, int64_t k_stride, int64_t tokens,
                               const float* post, int64_t heads, int64_t kv_heads, int64_t head_dim) = 0;
  // Causal attention of `windows` independent sequences: in window w, query i (row
  // w * n_queries + i of q and out, [*, heads * head_dim]) sits at position first_position + i and
  // attends to positions 0 .. its own, rows w * kv_window_rows + 0 .. of k and v ([*, kv_heads *
  // head_dim]: the rows an engine writes to its KV cache, token by token).
  virtual void attention(const float* q, const float* k, const float* v, int64_t windows, int64_t n_queries,
                         int64_t first_position, int64_t kv_window_rows, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, float scale, float* out) = 0;

  // c[m, n] -= a[m, k] · b[k, n], row-major with row strides lda, ldb, ldc: GPTQ's deferred
  // update of the columns after a batch (gptq.h), in FP32.
  virtual void gemm_subtract(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                             int64_t m, int64_t n, int64_t k) = 0;

  // The statistics of x [rows, cols] (calibration.h ActivationStats), into host memory:
  //   gram [cols, cols]: x^T x in F32, at least the lower triangle (j <= i) written;
  //   absmax [cols]: max-merged with max_r |x[r, c]|;
  //   histogram [cols, bins]: counts added, bin(v) = clamp((bits(v) >> 21) - first_quarter + 1,
  //     0, bins - 1), 0 for v == 0;
  //   token_min / token_max [rows]: written.
  // Throws qf::Error when x holds a non-finite value (the model's activations overflowed).
  virtual void statistics(const float* x, int64_t rows, int64_t cols, int first_quarter, int bins, float* gram,
                          float* absmax, uint32_t* histogram, float* token_min, float* token_max) = 0;
};

// y[m, n] = x[m, k] · W[n, k]^T (+ bias) as the runtime computes a linear layer: with
// `activations`, x is first rounded to that format row by row into `scratch` (m * k floats of
// device memory; x itself is unchanged), as cpu::ActivationQuantizedLinear does.
void linear_as_runtime(Fp32Device& device, const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                       const float* bias, const std::optional<Format>& activations, float* scratch, float* y);

std::unique_ptr<Fp32Device> make_cpu_fp32_device();
// Throws qf::Error when qforge was built without CUDA or no CUDA GPU is present.
std::unique_ptr<Fp32Device> make_cuda_fp32_device();

}  // namespace qf
