// Linear layers through one interface: y[M,N] = x[M,K] · W[N,K]^T, row-major, BF16 output, FP32
// accumulation, whatever the storage of W and x.
//
// A LinearKernel is one implementation for one (weight format, activation format) pair. The
// LinearRegistry holds every kernel of the build: the runtime asks it for a layer's kernel by
// format pair and shape (select: the one place where the per-shape choice is made), the
// benchmark iterates it (qforge bench gemm), and the GPU tests pair each entry with its CPU twin.
// Later issues register quantized kernels here (one line in linear.cpp's kernel table).
//
// Kernels of this issue:
//   gemv_bf16           bf16 x bf16, M <= 16: our own bandwidth-bound GEMV (gemv.h)
//   cublaslt_bf16       bf16 x bf16, any shape: cuBLASLt (cublaslt.h)
//   cublaslt_fp8        fp8_e4m3:tensor x fp8_e4m3:tensor: cuBLASLt with per-tensor scales
//   cublaslt_fp8_fast   the same with fast (tensor-core only) accumulation: a benchmark baseline,
//                       never selected
// and of later issues: fpx_gemm_* / fpx_dequant_cublas_* (FP6-LLM, weight-only FPx x bf16),
// w4a8_gemv / w4a8_dequant_cublas (FireQ, int4 lut weights x fp8_e4m3:token activations; and
// w4a8_gemv_wgmma, an experimental wgmma variant, benchmark-only).
//
// Formats are qf::Format values (formats/format.h); in strings, "bf16" and "fp8_e4m3:tensor".
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"

namespace qf::cuda {

// The formats of this kernels: "bf16" and "fp8_e4m3:tensor" (FP8 E4M3 with one FP32
// scale per tensor).
const Format& bf16_format();
const Format& fp8_tensor_format();
// FireQ's pair: FP8 E4M3 activations with one F32 scale per token, and INT4 weights in groups of
// 128 with FP8 E4M3 group scales, an F32 tensor scale, and the lut rule (formats/quantize.h).
const Format& fp8_token_format();
const Format& w4a8_weight_format();

enum class Backend : uint8_t { cpu, cuda };
std::string_view backend_name(Backend b);

// What a layer is stored as, and where it runs.
struct LinearKey {
  Format weight;      // storage of W [N,K]
  Format activation;  // storage of x [M,K]
  Backend backend = Backend::cuda;
  bool operator==(const LinearKey&) const = default;
};
std::string key_str(const LinearKey& key);  // "weights bf16, activations bf16, cuda"

struct LinearShape {
  int64_t m = 0, n = 0, k = 0;
};

// One call. Device pointers; x and W in the key's formats, y BF16 [M,N], all row-major.
struct LinearArgs {
  LinearShape shape;
  const void* x = nullptr;
  const void* w = nullptr;
  void* y = nullptr;
  // Scales of x (device, 16-byte aligned) for formats that have them: one F32 for a per-tensor
  // format, M for a per-token one.
  const float* x_scale = nullptr;
  const float* w_scale = nullptr;  // per-tensor scale of W (device, 16-byte aligned), for formats that have one
  cudaStream_t stream = nullptr;
};

class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  virtual std::string_view name() const = 0;
  virtual const LinearKey& key() const = 0;
  virtual bool supports(const LinearShape& shape) const = 0;
  // Makes any first-use allocation (library handles, workspaces) now, so that run() can later be
  // captured in a CUDA graph. Optional: run() does it too.
  virtual void prepare() {}
  // Enqueues y = x · W^T on args.stream. Throws qf::Error on an unsupported shape or bad operands.
  virtual void run(const LinearArgs& args) = 0;
};

class LinearRegistry {
 public:
  // Every CUDA linear kernel of this build. Nothing is created on the GPU until a kernel runs,
  // so a registry can be built (and select() asked) on a machine without a GPU. The kernels
  // share one cuBLASLt handle and workspace: use one registry per stream.
  LinearRegistry();
  ~LinearRegistry();
  LinearRegistry(const LinearRegistry&) = delete;
  LinearRegistry& operator=(const LinearRegistry&) = delete;

  std::vector<LinearKernel*> kernels() const;
  LinearKernel* find(std::string_view name) const;  // nullptr if there is none

  // The kernel to use for this layer at this shape. Throws qf::Error naming the formats and the
  // shape when no kernel can run it.
  LinearKernel& select(const LinearKey& key, const LinearShape& shape) const;
  // select(key, args.shape).run(args)
  void run(const LinearKey& key, const LinearArgs& args) const;

 private:
  struct Entry;
  std::vector<Entry> entries_;
};

}  // namespace qf::cuda
