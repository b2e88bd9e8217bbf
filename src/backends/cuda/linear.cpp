#include "backends/cuda/linear.h"

#include <limits>

#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/fpx_gemm.h"
#include "backends/cuda/gemv.h"
#include "backends/cuda/w4a8_gemm.h"
#include "core/error.h"

namespace qf::cuda {

std::string_view backend_name(Backend b) { return b == Backend::cpu ? "cpu" : "cuda"; }

const Format& bf16_format() {
  static const Format f = Format::parse("bf16");
  return f;
}

const Format& fp8_tensor_format() {
  static const Format f = Format::parse("fp8_e4m3:tensor");
  return f;
}

const Format& fp8_token_format() {
  static const Format f = Format::parse("fp8_e4m3:token");
  return f;
}

const Format& w4a8_weight_format() {
  static const Format f = Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale:lut");
  return f;
}

std::string key_str(const LinearKey& key) {
  return str("weights ", key.weight.str(), ", activations ", key.activation.str(), ", ", backend_name(key.backend));
}

namespace {

void check_operands(std::string_view kernel, const LinearArgs& a) {
  QF_CHECK(a.x && a.w && a.y, kernel, ": null operand (x=", a.x, ", W=", a.w, ", y=", a.y, ")");
}

class GemvBf16Kernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "gemv_bf16"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return gemv_bf16_supports(s.m, s.n, s.k); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    gemv_bf16(static_cast<const __nv_bfloat16*>(a.x), static_cast<const __nv_bfloat16*>(a.w),
              static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  LinearKey key_{bf16_format(), bf16_format(), Backend::cuda};
};

// gemv_bf16's pipelined, persistent-grid variant (gemv.cu), benchmarked beside it.
class GemvBf16V2Kernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "gemv_bf16_v2"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return gemv_bf16_supports(s.m, s.n, s.k); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    gemv_bf16_v2(static_cast<const __nv_bfloat16*>(a.x), static_cast<const __nv_bfloat16*>(a.w),
                 static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  LinearKey key_{bf16_format(), bf16_format(), Backend::cuda};
};

class CublasLtBf16Kernel final : public LinearKernel {
 public:
  explicit CublasLtBf16Kernel(std::shared_ptr<CublasLt> lt) : lt_(std::move(lt)) {}
  std::string_view name() const override { return "cublaslt_bf16"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return s.m >= 1 && s.n >= 1 && s.k >= 1; }
  void prepare() override { lt_->prepare(); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    lt_->linear_bf16(static_cast<const __nv_bfloat16*>(a.x), static_cast<const __nv_bfloat16*>(a.w),
                     static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  std::shared_ptr<CublasLt> lt_;
  LinearKey key_{bf16_format(), bf16_format(), Backend::cuda};
};

class CublasLtFp8Kernel final : public LinearKernel {
 public:
  CublasLtFp8Kernel(std::shared_ptr<CublasLt> lt, bool fast_accum) : lt_(std::move(lt)), fast_accum_(fast_accum) {}
  std::string_view name() const override { return fast_accum_ ? "cublaslt_fp8_fast" : "cublaslt_fp8"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return CublasLt::fp8_supports(s.m, s.n, s.k); }
  void prepare() override { lt_->prepare(); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    lt_->linear_fp8(static_cast<const __nv_fp8_e4m3*>(a.x), a.x_scale, static_cast<const __nv_fp8_e4m3*>(a.w),
                    a.w_scale, static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, fast_accum_,
                    a.stream);
  }

 private:
  std::shared_ptr<CublasLt> lt_;
  bool fast_accum_;
  LinearKey key_{fp8_tensor_format(), fp8_tensor_format(), Backend::cuda};
};

// FP6-LLM-style weight-only FPx x BF16 (fpx_gemm.h). w: the prepack_fpx_weights blob
// (weight_prepack.h), which carries the per-channel scales; x and y BF16.
class FpxGemmKernel final : public LinearKernel {
 public:
  explicit FpxGemmKernel(const char* weight_format)
      : key_{Format::parse(weight_format), bf16_format(), Backend::cuda},
        name_(str("fpx_gemm_", key_.weight.element.str())) {}
  std::string_view name() const override { return name_; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override {
    return fpx_gemm_supports(key_.weight.element.fpx_type(), s.m, s.n, s.k);
  }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    fpx_gemm(key_.weight.element.fpx_type(), static_cast<const __nv_bfloat16*>(a.x), a.w,
             static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  LinearKey key_;
  std::string name_;
};

// The same operands as FpxGemmKernel through cuBLASLt, for large M where a GEMM is tensor-core
// bound and cuBLAS's wgmma kernels beat fpx_gemm's mma.sync: the blob's codes are expanded to
// exact BF16 values in a workspace (N x K x 2 bytes, grown on first use of a larger layer: 940 MB
// for Llama-2-70B's gate_up), multiplied by cuBLASLt, and the channel scales applied to y in
// place. Cost over cuBLAS BF16: writing and re-reading 2 bytes per weight plus one pass over y,
// so it approaches cuBLAS BF16's time only as M grows. y is rounded to BF16 twice (the unscaled
// product, then the scaled one).
class FpxDequantCublasKernel final : public LinearKernel {
 public:
  FpxDequantCublasKernel(std::shared_ptr<CublasLt> lt, const char* weight_format)
      : lt_(std::move(lt)),
        key_{Format::parse(weight_format), bf16_format(), Backend::cuda},
        name_(str("fpx_dequant_cublas_", key_.weight.element.str())) {}
  std::string_view name() const override { return name_; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override {
    return fpx_gemm_supports(key_.weight.element.fpx_type(), s.m, s.n, s.k);
  }
  void prepare() override { lt_->prepare(); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    const FpxType type = key_.weight.element.fpx_type();
    const size_t bytes = static_cast<size_t>(a.shape.n) * static_cast<size_t>(a.shape.k) * 2;
    if (workspace_.size() < bytes) {
      // The stream may still be using the old workspace: freeing it under a running kernel is a
      // use after free, so wait for it first (only when a larger layer arrives).
      QF_CUDA_CHECK(cudaStreamSynchronize(a.stream));
      workspace_ = DeviceBuffer(bytes, str(name_, " dequantized weights [", a.shape.n, ", ", a.shape.k, "]"));
    }
    auto* w = workspace_.as<__nv_bfloat16>();
    fpx_dequantize_codes(type, a.w, w, a.shape.n, a.shape.k, a.stream);
    lt_->linear_bf16(static_cast<const __nv_bfloat16*>(a.x), w, static_cast<__nv_bfloat16*>(a.y), a.shape.m,
                     a.shape.n, a.shape.k, a.stream);
    fpx_scale_columns(type, a.w, static_cast<__nv_bfloat16*>(a.y), a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  std::shared_ptr<CublasLt> lt_;
  LinearKey key_;
  std::string name_;
  DeviceBuffer workspace_;
};

// FireQ's INT4 x FP8 (w4a8_gemm.h), decode: w is the prepack_w4a8_weights blob, x the FP8 codes
// and x_scale the per-token scales (quantize_fp8_per_token makes both).
class W4a8GemvKernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "w4a8_gemv"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return w4a8_supports(s.m, s.n, s.k) && s.m <= kW4a8GemvMaxM; }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    w4a8_gemv(static_cast<const __nv_fp8_e4m3*>(a.x), a.x_scale, a.w, static_cast<__nv_bfloat16*>(a.y), a.shape.m,
              a.shape.n, a.shape.k, a.stream);
  }

 private:
  LinearKey key_{w4a8_weight_format(), fp8_token_format(), Backend::cuda};
};

// The same operands and contract on wgmma (w4a8_gemm.cu), M <= 8: benchmarked beside w4a8_gemv.
class W4a8GemvWgmmaKernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "w4a8_gemv_wgmma"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override { return w4a8_supports(s.m, s.n, s.k) && s.m <= 8; }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    w4a8_gemv_wgmma(static_cast<const __nv_fp8_e4m3*>(a.x), a.x_scale, a.w, static_cast<__nv_bfloat16*>(a.y),
                    a.shape.m, a.shape.n, a.shape.k, a.stream);
  }

 private:
  LinearKey key_{w4a8_weight_format(), fp8_token_format(), Backend::cuda};
};

// The same operands for large M: the weights expanded to their FP8 values (N x K bytes of
// workspace, grown on first use of a larger layer) and cuBLASLt's FP8 GEMM with the per-token and
// per-row scales in its epilogue. Extra cost over cuBLAS FP8 (W8A8): writing and re-reading one
// byte per weight, ~1.5 bytes per weight at ~2.5-3 TB/s (e.g. ~20 us for a 7B gate/up).
class W4a8DequantCublasKernel final : public LinearKernel {
 public:
  explicit W4a8DequantCublasKernel(std::shared_ptr<CublasLt> lt) : lt_(std::move(lt)) {}
  std::string_view name() const override { return "w4a8_dequant_cublas"; }
  const LinearKey& key() const override { return key_; }
  bool supports(const LinearShape& s) const override {
    return w4a8_supports(s.m, s.n, s.k) && CublasLt::fp8_supports(s.m, s.n, s.k);
  }
  void prepare() override { lt_->prepare(); }
  void run(const LinearArgs& a) override {
    check_operands(name(), a);
    QF_CHECK(a.x_scale, name(), ": the per-token scales are required");
    const size_t bytes = static_cast<size_t>(a.shape.n) * static_cast<size_t>(a.shape.k);
    if (workspace_.size() < bytes) {
      QF_CUDA_CHECK(cudaStreamSynchronize(a.stream));  // the old workspace may still be in use
      workspace_ = DeviceBuffer(bytes, str(name(), " FP8 weights [", a.shape.n, ", ", a.shape.k, "]"));
    }
    auto* w8 = workspace_.as<__nv_fp8_e4m3>();
    w4a8_dequantize_fp8(a.w, w8, a.shape.n, a.shape.k, a.stream);
    lt_->linear_fp8_rowwise(static_cast<const __nv_fp8_e4m3*>(a.x), a.x_scale, w8,
                            w4a8_row_scales(a.w, a.shape.n, a.shape.k), static_cast<__nv_bfloat16*>(a.y), a.shape.m,
                            a.shape.n, a.shape.k, a.stream);
  }

 private:
  std::shared_ptr<CublasLt> lt_;
  LinearKey key_{w4a8_weight_format(), fp8_token_format(), Backend::cuda};
  DeviceBuffer workspace_;
};

}  // namespace

// A kernel and the batch sizes at which select() prefers it.
struct LinearRegistry::Entry {
  std::unique_ptr<LinearKernel> kernel;
  // select() picks, for a key, the first entry (in table order) that supports the shape and has
  // M <= preferred_max_m. 0 marks a benchmark baseline that is never selected.
  int64_t preferred_max_m;
};

// THE kernel table, in order of preference. This is where the per-shape choice lives.
LinearRegistry::LinearRegistry() {
  auto lt = std::make_shared<CublasLt>();
  constexpr int64_t kAnyM = std::numeric_limits<int64_t>::max();
  // Decode: gemv_bf16_v2 (pipelined loads, persistent grid) measured on the H100 on 2026-11-23
  // at M = 1..8: 2050-3020 GB/s, faster than cuBLASLt BF16 on 11 of the 12 7B/8B/70B shapes
  // (llama2-7b down: equal within 1%) and than gemv_bf16 (its first version, 1810-2620 GB/s,
  // kept as a benchmark baseline) everywhere. At M = 16 it and cuBLAS trade places, so cuBLAS
  // takes M > 8. docs/benchmarks.md has the table.
  constexpr int64_t kGemvPreferredMaxM = 8;
  entries_.push_back({std::make_unique<GemvBf16V2Kernel>(), kGemvPreferredMaxM});
  entries_.push_back({std::make_unique<GemvBf16Kernel>(), 0});
  entries_.push_back({std::make_unique<CublasLtBf16Kernel>(lt), kAnyM});
  entries_.push_back({std::make_unique<CublasLtFp8Kernel>(lt, /*fast_accum=*/false), kAnyM});
  entries_.push_back({std::make_unique<CublasLtFp8Kernel>(lt, /*fast_accum=*/true), 0});
  // Weight-only FPx x BF16 (FP6-LLM, issue 5), keyed (fpx:channel weights, bf16 activations).
  // fpx_gemm reads 5-6 bits per weight and wins while the layer is bound by weight bytes; past
  // kFpxGemmPreferredMaxM the dequantize + cuBLASLt fallback takes over (a GEMM that is
  // tensor-core bound there, where cuBLAS's wgmma beats fpx_gemm's mma.sync). From the H100 run of
  // 2026-11-23 (notes/bench_gemm_1221.txt, 7B shapes): fpx_gemm is 0.9-1.1x cuBLAS BF16 at M = 64,
  // 0.5-0.64x at 128, 0.27-0.40x at 256 (e.g. qkv 12288x4096: 45 / 86 / 171 us against cuBLAS
  // 41 / 42 / 46 us). The fallback costs cuBLAS BF16 plus one dequantize pass (2.75 B per weight
  // at ~2.5 TB/s once that kernel streams: ~55 us for that qkv, ~18 us for o 4096x4096), so it
  // wins from M ~ 128-256: ~95 us at M = 128 for the qkv (fpx_gemm 86), ~100 at 256 (fpx_gemm
  // 171). 128 until a bench with the streaming dequantize kernel moves it.
  constexpr int64_t kFpxGemmPreferredMaxM = 128;
  for (const char* format : {"fp6_e3m2:channel", "fp6_e2m3:channel", "fp5_e2m2:channel"}) {
    entries_.push_back({std::make_unique<FpxGemmKernel>(format), kFpxGemmPreferredMaxM});
    entries_.push_back({std::make_unique<FpxDequantCublasKernel>(lt, format), kAnyM});
  }
  // FireQ INT4 x FP8 (issue 6), keyed (int4:g128:scale=fp8_e4m3:tensor_scale:lut, fp8_e4m3:token).
  // The GEMV up to its 16-row limit; the expand + cuBLASLt FP8 path beyond (first estimate, to be
  // moved by the bench: at M = 16 the GEMV still reads only the 4-bit weights).
  entries_.push_back({std::make_unique<W4a8GemvKernel>(), kW4a8GemvMaxM});
  entries_.push_back({std::make_unique<W4a8GemvWgmmaKernel>(), 0});  // benchmark-only (experimental)
  entries_.push_back({std::make_unique<W4a8DequantCublasKernel>(lt), kAnyM});
}

LinearRegistry::~LinearRegistry() = default;

std::vector<LinearKernel*> LinearRegistry::kernels() const {
  std::vector<LinearKernel*> out;
  for (const Entry& e : entries_) out.push_back(e.kernel.get());
  return out;
}

LinearKernel* LinearRegistry::find(std::string_view name) const {
  for (const Entry& e : entries_)
    if (e.kernel->name() == name) return e.kernel.get();
  return nullptr;
}

LinearKernel& LinearRegistry::select(const LinearKey& key, const LinearShape& shape) const {
  const Entry* fallback = nullptr;  // a selectable kernel that runs the shape, outside its preferred M
  for (const Entry& e : entries_) {
    if (!(e.kernel->key() == key) || e.preferred_max_m == 0 || !e.kernel->supports(shape)) continue;
    if (shape.m <= e.preferred_max_m) return *e.kernel;
    if (!fallback) fallback = &e;
  }
  if (fallback) return *fallback->kernel;
  std::string names;
  for (const Entry& e : entries_) names += str(names.empty() ? "" : "; ", e.kernel->name(), " (", key_str(e.kernel->key()), ")");
  fail("no linear kernel for ", key_str(key), " at M=", shape.m, " N=", shape.n, " K=", shape.k,
       "; registered: ", names);
}

void LinearRegistry::run(const LinearKey& key, const LinearArgs& args) const { select(key, args.shape).run(args); }

}  // namespace qf::cuda
