#include "backends/cuda/linear.h"

#include <limits>

#include "backends/cuda/cublaslt.h"
#include "backends/cuda/gemv.h"
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
  // Decode: our GEMV reads W at close to HBM bandwidth where cuBLAS leaves ~30% unused. It runs
  // up to M = 16, but is preferred only up to 8 until the benchmark shows it winning at 16.
  constexpr int64_t kGemvPreferredMaxM = 8;
  entries_.push_back({std::make_unique<GemvBf16Kernel>(), kGemvPreferredMaxM});
  entries_.push_back({std::make_unique<CublasLtBf16Kernel>(lt), kAnyM});
  entries_.push_back({std::make_unique<CublasLtFp8Kernel>(lt, /*fast_accum=*/false), kAnyM});
  entries_.push_back({std::make_unique<CublasLtFp8Kernel>(lt, /*fast_accum=*/true), 0});
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
