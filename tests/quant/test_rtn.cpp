#include "quant/rtn.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "quant_test_util.h"

namespace qf {
namespace {

using quant_test::dequantized;

// Every kind of grid the weight algorithms must handle (task: INT2..INT8 sym/asym, FPx, FP8,
// channel or group scales, FP8 scales with a tensor scale on top).
const char* const kFormats[] = {
    "int2:g32",          "int3:g64:asym",     "int4:g128",         "int4:g32:asym",
    "int4:channel",      "int8:channel",      "int8:g64:asym",     "fp6_e3m2:channel",
    "fp6_e2m3:g32",      "fp5_e2m2:g64",      "fp4_e2m1:g32",      "fp8_e4m3:channel",
    "int4:g128:scale=fp8_e4m3:tensor_scale",  "int4:g32:asym:scale=bf16",
    "fp4_e2m1:g32:scale=fp8_e4m3:tensor_scale", "int8:tensor",     "fp8_e4m3",
};

float scale_at(const QuantizedMatrix& q, int64_t row, int64_t col) { return q.scale_of(row, col); }

TEST(QuantRtn, HandComputedSymmetricInt4Groups) {
  // Group of 4, absmax 7 -> s = 7/7 = 1; group absmax 3.5 -> s = 0.5. Codes rint(x/s), ties to
  // even: 3.5 -> 4, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
  const std::vector<float> w = {1, -2, 3.5f, 7, /**/ 0.25f, 0.75f, -3.5f, 1.25f};
  const QuantizedWeight r = rtn_quantize(w.data(), 1, 8, Format::parse("int4:g4"));
  const std::vector<uint8_t> codes = {1, 0xE /*-2*/, 4, 7, 0, 2, 0x9 /*-7*/, 2};
  EXPECT_EQ(r.q.codes, codes);
  EXPECT_EQ(scale_at(r.q, 0, 0), 1.0f);
  EXPECT_EQ(scale_at(r.q, 0, 4), 0.5f);
  const std::vector<float> values = {1, -2, 4, 7, 0, 1, -3.5f, 1};
  EXPECT_EQ(r.dequantized, values);
}

TEST(QuantRtn, HandComputedAsymmetricInt4Channel) {
  // Range [-3, 27]: s = 30 / 15 = 2, z = rint(3 / 2) = 2 (1.5 to even). q = rint(x/2) + 2:
  // -3 -> -2 + 2 = 0; 1.2 -> 1 + 2 = 3; 4.4 -> 2 + 2 = 4; 27 -> 14 + 2 = 16, clamped to 15.
  const std::vector<float> w = {-3, 1.2f, 4.4f, 27};
  const QuantizedWeight r = rtn_quantize(w.data(), 1, 4, Format::parse("int4:channel:asym"));
  EXPECT_EQ(r.q.codes, (std::vector<uint8_t>{0, 3, 4, 15}));
  EXPECT_EQ(r.q.zeros, (std::vector<uint8_t>{2}));
  EXPECT_EQ(scale_at(r.q, 0, 0), 2.0f);
  EXPECT_EQ(r.dequantized, (std::vector<float>{-4, 2, 4, 26}));
}

TEST(QuantRtn, HandComputedFp4Channel) {
  // absmax 12, s = 12 / 6 = 2; x/s = 0.15 -> 0, -6 -> -6 (code 0xF), 2.5 -> tie between 2 (code
  // 0b0100) and 3 (0b0101), to even: 2; 0.55 -> 0.5 (code 1).
  const std::vector<float> w = {0.3f, -12, 5, 1.1f};
  const QuantizedWeight r = rtn_quantize(w.data(), 1, 4, Format::parse("fp4_e2m1:channel"));
  EXPECT_EQ(r.q.codes, (std::vector<uint8_t>{0, 0xF, 4, 1}));
  EXPECT_EQ(r.dequantized, (std::vector<float>{0, -12, 4, 1}));
}

TEST(QuantRtn, HandComputedTwoLevelFp8Scales) {
  // FireQ's two-level scale: int8 per channel, FP8 E4M3 channel scales under an F32 tensor scale.
  // Row 0: absmax 127 * 448 -> s0 = 448, the largest raw scale, so t = 448 / 448 = 1 and s0 is
  // stored exactly (E4M3 0x7E). Row 1: s1 = 419.1 / 127 = 3.3 lies between the E4M3 values 3.25
  // and 3.5 and is rounded up to 3.5 (0x46), so nothing clips: 419.1 / 3.5 -> 120 (420),
  // -100 / 3.5 = -28.6 -> -29 (-101.5), 1.75 / 3.5 = 0.5 -> 0 (tie to even).
  const std::vector<float> w = {127 * 448.0f, 1000, -3, /**/ 419.1f, -100, 1.75f};
  const QuantizedWeight r = rtn_quantize(w.data(), 2, 3, Format::parse("int8:channel:scale=fp8_e4m3:tensor_scale"));
  EXPECT_EQ(r.q.tensor_scale, 1.0f);
  EXPECT_EQ(r.q.scales, (std::vector<uint8_t>{0x7E, 0x46}));
  EXPECT_EQ(r.q.codes, (std::vector<uint8_t>{127, 2, 0, 120, uint8_t(-29), 0}));
  EXPECT_EQ(r.dequantized, (std::vector<float>{127 * 448.0f, 896, 0, 420, -101.5f, 0}));
}

TEST(QuantGrid, StoresWhatItRoundsTo) {
  const Format f = Format::parse("int4:g4:asym");
  WeightGrid grid(f, 2, 8);
  EXPECT_EQ(grid.scale_rows(), 2);
  EXPECT_EQ(grid.scale_cols(), 2);
  const WeightGrid::Extent e = grid.block_extent(1, 1);
  EXPECT_EQ(e.row_begin, 1);
  EXPECT_EQ(e.col_begin, 4);
  EXPECT_EQ(e.col_end, 8);
  const std::vector<float> w = quant_test::gaussian(16, 3);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t sc = 0; sc < 2; ++sc) grid.set_block(r, sc, -1.0f - float(r), 2.0f + float(sc));
  std::vector<float> values(16);
  for (int64_t i = 0; i < 16; ++i) values[size_t(i)] = grid.round(i / 8, i % 8, w[size_t(i)]);
  EXPECT_EQ(values, dequantized(grid.quantized()));
  WeightGrid unscaled(Format::parse("fp8_e4m3"), 1, 4);
  EXPECT_THROW(unscaled.set_block(0, 0, -1, 1), Error);
  EXPECT_EQ(unscaled.round(0, 0, 3.3f), 3.25f);  // E4M3 neighbours 3.25 and 3.5
}

TEST(QuantGrid, SaturatingScalesClipInsteadOfThrowing) {
  // FP8 scales under a tensor scale fixed for a range of 1: a block that grew to 1000 (as GPTQ's
  // updated weights may) cannot be represented. Without saturate that is an error; with it the
  // largest FP8 scale (448 t) is stored and the block's large elements clip to the grid's end.
  const Format f = Format::parse("int4:g4:scale=fp8_e4m3:tensor_scale");
  WeightGrid grid(f, 1, 8);
  grid.set_tensor_scale_from(raw_block_scale(f, -1, 1));
  EXPECT_THROW(grid.set_block(0, 0, -1000, 1000), Error);
  grid.set_block(0, 0, -1000, 1000, /*saturate=*/true);
  grid.set_block(0, 1, -1, 1);
  EXPECT_EQ(grid.block(0, 0).code, 0x7Eu);  // 448
  const float top = grid.round(0, 0, 1000.0f);
  EXPECT_EQ(top, 7 * grid.block(0, 0).scale);
  EXPECT_LT(top, 2.0f);
  for (int64_t c = 1; c < 8; ++c) grid.round(0, c, 0.1f * float(c));
  const std::vector<float> deq = dequantized(grid.quantized());
  EXPECT_EQ(deq[0], top);
}

TEST(QuantRtn, WithoutClippingEqualsTheFormatsQuantizer) {
  const int64_t rows = 24, cols = 256;
  const std::vector<float> w = quant_test::heavy_tailed(rows * cols, 7);
  for (const char* name : kFormats) {
    SCOPED_TRACE(name);
    const Format f = Format::parse(name);
    const QuantizedWeight r = rtn_quantize(w.data(), rows, cols, f);
    const QuantizedMatrix ref = quantize(w.data(), rows, cols, f);
    EXPECT_EQ(r.q.codes, ref.codes);
    EXPECT_EQ(r.q.scales, ref.scales);
    EXPECT_EQ(r.q.zeros, ref.zeros);
    EXPECT_EQ(r.q.tensor_scale, ref.tensor_scale);
    EXPECT_EQ(r.dequantized, dequantized(r.q));
  }
}

// The clip search's objective for every block, summed: what it promises not to increase.
double objective(const std::vector<float>& w, const std::vector<float>& q, int64_t rows, int64_t cols, const HessianView& h) {
  return layer_output_error(w.data(), q.data(), rows, cols, h);
}

TEST(QuantRtn, ClipSearchNeverIncreasesItsObjectiveAndHelpsHeavyTails) {
  const int64_t rows = 16, cols = 256, tokens = 512;
  const std::vector<float> w = quant_test::heavy_tailed(rows * cols, 11);
  const std::vector<float> x = quant_test::correlated_inputs(tokens, cols, 12);
  const std::vector<double> h = quant_test::second_moment(x, tokens, cols);
  std::vector<double> diag(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) diag[size_t(j)] = h[size_t(j * cols + j)];
  const HessianView objectives[] = {{}, {diag.data(), cols, true}, {h.data(), cols, false}};
  const char* const objective_names[] = {"weight mse", "diagonal H", "full H"};
  for (const char* name : kFormats) {
    const Format f = Format::parse(name);
    for (int o = 0; o < 3; ++o) {
      if (o == 2 && f.granularity == Granularity::tensor) continue;  // rejected, tested below
      if (!f.scaled()) continue;                                       // nothing to clip
      SCOPED_TRACE(std::string(name) + ", " + objective_names[o]);
      RtnOptions opt;
      opt.hessian = objectives[o];
      const QuantizedWeight plain = rtn_quantize(w.data(), rows, cols, f, opt);
      opt.clip.enabled = true;
      const QuantizedWeight clipped = rtn_quantize(w.data(), rows, cols, f, opt);
      EXPECT_EQ(clipped.dequantized, dequantized(clipped.q));
      const double before = objective(w, plain.dequantized, rows, cols, objectives[o]);
      const double after = objective(w, clipped.dequantized, rows, cols, objectives[o]);
      EXPECT_LE(after, before * (1 + 1e-12));
      // Heavy-tailed weights at 2..4 bits: clipping the rare large values pays clearly.
      if (f.element.is_int() && f.element.int_bits <= 4) {
        EXPECT_LT(after, 0.97 * before);
      }
    }
  }
}

TEST(QuantRtn, ClipSearchFactorsAreTheDocumentedGrid) {
  ClipSearch c;
  EXPECT_EQ(c.factor(0), 1.0f);
  EXPECT_NEAR(c.factor(1), 0.99f, 1e-7);
  EXPECT_NEAR(c.factor(c.steps), 0.5f, 1e-7);
}

TEST(QuantRtn, BadInputsAreReportedClearly) {
  const std::vector<float> w(3 * 100, 1.0f);
  try {
    rtn_quantize(w.data(), 3, 100, Format::parse("bf16"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stored as is"), std::string::npos) << e.what();
  }
  std::vector<float> bad = w;
  bad[5] = NAN;
  EXPECT_THROW(rtn_quantize(bad.data(), 3, 100, Format::parse("int4:channel")), Error);
  std::vector<double> h(50 * 50, 0.0);
  RtnOptions opt;
  opt.clip.enabled = true;
  opt.hessian = {h.data(), 50, false};
  try {
    rtn_quantize(w.data(), 3, 100, Format::parse("int4:channel"), opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50 input channels"), std::string::npos) << e.what();
  }
  std::vector<double> h100(100 * 100, 0.0);
  opt.hessian = {h100.data(), 100, false};
  EXPECT_THROW(rtn_quantize(w.data(), 3, 100, Format::parse("int8:tensor"), opt), Error);
}

TEST(QuantRtn, LayerOutputErrorMatchesTheOutputs) {
  // tr((W-Q) H (W-Q)^T) with H = X^T X is ||X W^T - X Q^T||^2.
  const int64_t rows = 8, cols = 40, tokens = 64;
  const std::vector<float> w = quant_test::gaussian(rows * cols, 1), q = quant_test::gaussian(rows * cols, 2);
  const std::vector<float> x = quant_test::correlated_inputs(tokens, cols, 3);
  const std::vector<double> h = quant_test::second_moment(x, tokens, cols);
  const std::vector<double> yw = quant_test::linear_ref(x, w, tokens, cols, rows), yq = quant_test::linear_ref(x, q, tokens, cols, rows);
  double direct = 0;
  for (size_t i = 0; i < yw.size(); ++i) direct += (yw[i] - yq[i]) * (yw[i] - yq[i]);
  EXPECT_NEAR(layer_output_error(w.data(), q.data(), rows, cols, {h.data(), cols, false}), direct, 1e-9 * direct);
}

}  // namespace
}  // namespace qf
