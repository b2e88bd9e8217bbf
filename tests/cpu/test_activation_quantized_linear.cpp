// ActivationQuantizedLinear: the wrapped layer sees the activations quantized to the format,
// here int8 per group of 32 with F32 scales, whose rounding is written out independently.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cpu/activation_quantized_linear.h"
#include "core/error.h"
#include "cpu/cpu_test_util.h"

namespace qf::cpu {
namespace {

// A layer that records its input (and returns its first out values).
class RecordingLayer final : public LinearLayer {
 public:
  RecordingLayer(int64_t in, int64_t out) : in_(in), out_(out) {}
  void forward(const float* x, int64_t M, float* y) const override {
    seen.assign(x, x + M * in_);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < out_; ++n) y[m * out_ + n] = x[m * in_ + n % in_];
  }
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  std::string describe() const override { return "recording"; }
  mutable std::vector<float> seen;

 private:
  int64_t in_, out_;
};

TEST(ActivationQuantizedLinear, Int8Groups) {
  const int64_t M = 7, K = 96, N = 5;
  auto x = cpu_test::random_floats(M * K, 1, 3.0f);
  auto inner = std::make_unique<RecordingLayer>(K, N);
  const RecordingLayer* rec = inner.get();
  ActivationQuantizedLinear layer(std::move(inner), Format::parse("int8:g32"));
  std::vector<float> y(M * N);
  layer.forward(x.data(), M, y.data());
  ASSERT_EQ(rec->seen.size(), x.size());
  int changed = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < K / 32; ++g) {
      const float* blk = x.data() + m * K + g * 32;
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(blk[i]));
      const float s = amax / 127.0f;
      for (int i = 0; i < 32; ++i) {
        const float expected = std::nearbyint(blk[i] / s) * s;
        ASSERT_FLOAT_EQ(rec->seen[m * K + g * 32 + i], expected) << "row " << m << " element " << g * 32 + i;
        changed += rec->seen[m * K + g * 32 + i] != blk[i];
      }
    }
  EXPECT_GT(changed, M * K / 2) << "most activations move onto the 8-bit grid";
  EXPECT_EQ(y[0], rec->seen[0]);
  EXPECT_NE(layer.describe().find("int8:g32"), std::string::npos);
}

TEST(ActivationQuantizedLinear, RejectsScalesAcrossTokensAndBadGroups) {
  EXPECT_THROW(ActivationQuantizedLinear(std::make_unique<RecordingLayer>(64, 4), Format::parse("int8:tensor")), Error);
  EXPECT_THROW(ActivationQuantizedLinear(std::make_unique<RecordingLayer>(48, 4), Format::parse("int8:g32")), Error);
}

}  // namespace
}  // namespace qf::cpu
