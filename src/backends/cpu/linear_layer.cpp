#include "backends/cpu/linear_layer.h"

#include "backends/cpu/gemm.h"
#include "core/error.h"

namespace qf::cpu {

DenseLinear::DenseLinear(Tensor weight, Tensor bias, const std::string& name)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  QF_CHECK(weight_.ndim() == 2, name, ": a linear weight must be a matrix [out, in], got shape ",
           shape_str(weight_.shape()));
  const DType t = weight_.dtype();
  QF_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16, name, ": weight dtype ", dtype_name(t),
           " is not supported by the dense CPU layer (F32, BF16 or F16)");
  if (bias_.defined()) {
    QF_CHECK(bias_.dtype() == DType::F32 && bias_.numel() == weight_.dim(0), name, ": bias must be F32 with ",
             weight_.dim(0), " values, got ", dtype_name(bias_.dtype()), " ", shape_str(bias_.shape()));
  }
}

void DenseLinear::forward(const float* x, int64_t M, float* y) const {
  linear(x, M, weight_.dim(1), weight_.raw(), weight_.dtype(), weight_.dim(0),
         bias_.defined() ? bias_.data<float>() : nullptr, y);
}

std::string DenseLinear::describe() const {
  return str("dense ", dtype_name(weight_.dtype()), bias_.defined() ? " + bias" : "");
}

}  // namespace qf::cpu
