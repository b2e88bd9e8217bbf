// A linear layer as the CPU engine sees it: y[M, out] = f(x[M, in]). The engine only calls
// forward(), so a quantized or simulated-quantization layer (DESIGN.md's QLinear, chosen from
// the LinearKernel registry by weight and activation format) plugs in without the engine
// knowing how its weights are stored.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace qf::cpu {

class LinearLayer {
 public:
  virtual ~LinearLayer() = default;
  // y[M, out_features()] = layer(x[M, in_features()]); rows are independent.
  virtual void forward(const float* x, int64_t M, float* y) const = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // For logs and `info`: "dense BF16", "int4:g128 x fp8_e4m3:token", ...
  virtual std::string describe() const = 0;
};

// The unquantized layer: y = x W^T (+ b) through cpu::linear, W [out, in] in F32, BF16 or F16
// (kept as stored: a memory-mapped BF16 checkpoint is read in place), bias F32 or absent.
class DenseLinear final : public LinearLayer {
 public:
  // `name` (the tensor name) appears in errors about shapes and dtypes.
  DenseLinear(Tensor weight, Tensor bias, const std::string& name);
  void forward(const float* x, int64_t M, float* y) const override;
  int64_t in_features() const override { return weight_.dim(1); }
  int64_t out_features() const override { return weight_.dim(0); }
  std::string describe() const override;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_, bias_;
};

}  // namespace qf::cpu
