// What every Fp32Device computes the same way, from its ops.
#include "quant/fp32_device.h"

namespace qf {

void linear_as_runtime(Fp32Device& device, const float* x, int64_t m, int64_t k, const float* w, int64_t n,
                       const float* bias, const std::optional<Format>& activations, float* scratch, float* y) {
  const float* in = x;
  if (activations) {
    device.copy(scratch, x, m * k);
    device.round_trip_rows(scratch, m, k, *activations);
    in = scratch;
  }
  device.linear(in, m, k, w, n, bias, y);
}

}  // namespace qf
