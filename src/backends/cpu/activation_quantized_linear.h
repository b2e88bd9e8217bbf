// A linear layer whose input is quantized first: y = layer(dequantize(quantize(x))), each row of
// x quantized to an activation Format (formats/quantize.h defines the rounding and scales). On
// the CPU this simulates, exactly in the activations and in FP32 otherwise, what a kernel that
// consumes quantized activations computes: FP8 per-token (FireQ), INT4 (QUIK), or ggml's 8-bit
// blocks of 32 with F16 scales (llama.cpp's CPU dot products, int8:g32:scale=f16).
#pragma once

#include <memory>

#include "backends/cpu/linear_layer.h"
#include "formats/format.h"

namespace qf::cpu {

class ActivationQuantizedLinear final : public LinearLayer {
 public:
  // Throws qf::Error if the format cannot quantize rows of inner->in_features() values (a group
  // size that does not divide it).
  ActivationQuantizedLinear(std::unique_ptr<LinearLayer> inner, const Format& activation_format);
  void forward(const float* x, int64_t M, float* y) const override;
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  std::string describe() const override;

 private:
  std::unique_ptr<LinearLayer> inner_;
  Format format_;
};

}  // namespace qf::cpu
