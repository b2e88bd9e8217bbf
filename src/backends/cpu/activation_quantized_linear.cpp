#include "backends/cpu/activation_quantized_linear.h"

#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "backends/cpu/format_round_trip.h"

namespace qf::cpu {

ActivationQuantizedLinear::ActivationQuantizedLinear(std::unique_ptr<LinearLayer> inner, const Format& format)
    : inner_(std::move(inner)), format_(format) {
  QF_CHECK(inner_ != nullptr, "ActivationQuantizedLinear needs a layer to wrap");
  // Activations are quantized as they arrive, a token (row) at a time: a scale shared across
  // tokens would make a token's result depend on the others in the batch.
  check_row_format(format_, inner_->in_features(), "activation");
}

void ActivationQuantizedLinear::forward(const float* x, int64_t M, float* y) const {
  const int64_t K = inner_->in_features();
  std::vector<float> xq(size_t(M * K));
  parallel_for(M, 16, [&](int64_t b, int64_t e) { round_trip_rows(x + b * K, e - b, K, format_, xq.data() + b * K); });
  inner_->forward(xq.data(), M, y);
}

std::string ActivationQuantizedLinear::describe() const {
  return inner_->describe() + " x activations " + format_.str();
}

}  // namespace qf::cpu
