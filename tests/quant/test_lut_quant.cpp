// The weight algorithms onto lut formats (FireQ's INT4 -> FP8 table, formats/quantize.h): what
// GPTQ and RTN compute as the quantized weight is exactly what the stored matrix dequantizes to,
// and both equal round_e4m3(q * sigma) * t recomputed here from the codes with the FP8 codec;
// the fireq-w4a8 recipes say what issue 6 asks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "formats/fp8.h"
#include "quant/gptq.h"
#include "quant/recipe.h"
#include "quant/rtn.h"
#include "quant_test_util.h"

namespace qf {
namespace {

using quant_test::dequantized;

// x' of every element from the stored codes, scales and tensor scale alone: e4m3(q * sigma) * t.
std::vector<float> recomputed(const QuantizedMatrix& q) {
  EXPECT_TRUE(q.format.lut && q.format.scale_type.kind == ElementKind::fp8_e4m3 && q.format.group_size > 0);
  std::vector<float> out(size_t(q.rows * q.cols));
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t c = 0; c < q.cols; ++c) {
      const float sigma = fp8_e4m3_decode(q.scales[size_t(r * q.scale_cols() + c / q.format.group_size)]);
      EXPECT_LE(sigma, 56.0f) << "a table entry would saturate";
      const int code = sign_extend(q.codes[size_t(r * q.cols + c)], 4);
      const float entry = fp8_e4m3_decode(fp8_e4m3_encode(float(code) * sigma));
      out[size_t(r * q.cols + c)] = q.format.tensor_scale ? entry * q.tensor_scale : entry;
    }
  return out;
}

struct Layer {
  int64_t rows, cols;
  std::vector<float> w;
  std::vector<double> h;
  HessianView hessian() const { return {h.data(), cols, false}; }
};

Layer random_layer(int64_t rows, int64_t cols, uint64_t seed) {
  Layer l{rows, cols, quant_test::gaussian(rows * cols, seed, 0.02f), {}};  // LLM-sized weights
  const int64_t tokens = 1024;
  l.h = quant_test::second_moment(quant_test::correlated_inputs(tokens, cols, seed + 1), tokens, cols);
  return l;
}

TEST(QuantLut, GptqStoresExactlyTheValuesItComputed) {
  const Layer l = random_layer(48, 320, 7);  // groups of 128, 128, 64
  GptqOptions recipe;  // fireq-w4a8's settings
  recipe.act_order = true;
  recipe.static_groups = true;
  for (const char* name : {"int4:g128:scale=fp8_e4m3:tensor_scale:lut", "int4:g128:scale=fp8_e4m3:lut"})
    for (bool static_groups : {true, false}) {  // lazy groups take the saturating path
      SCOPED_TRACE(std::string(name) + (static_groups ? " static groups" : " lazy groups"));
      const Format f = Format::parse(name);
      GptqOptions opt = recipe;
      opt.act_order = static_groups;
      opt.static_groups = static_groups;
      const GptqResult g = gptq_quantize(l.w.data(), l.rows, l.cols, l.hessian(), f, opt);
      EXPECT_EQ(g.weight.q.format, f);
      EXPECT_EQ(g.weight.dequantized, dequantized(g.weight.q));
      EXPECT_EQ(g.weight.dequantized, recomputed(g.weight.q));
      const double rtn = layer_output_error(l.w.data(), rtn_quantize(l.w.data(), l.rows, l.cols, f).dequantized.data(),
                                            l.rows, l.cols, l.hessian());
      const double gptq = layer_output_error(l.w.data(), g.weight.dequantized.data(), l.rows, l.cols, l.hessian());
      std::printf("  %s%s: output error GPTQ / RTN = %.3f\n", name, static_groups ? " static" : " lazy", gptq / rtn);
      EXPECT_LT(gptq, 0.8 * rtn);
    }
}

TEST(QuantLut, RtnAndItsClipSearchStoreExactlyTheValuesTheyComputed) {
  const Layer l = random_layer(32, 256, 9);
  const Format f = Format::parse("int4:g128:scale=fp8_e4m3:tensor_scale:lut");
  const QuantizedWeight plain = rtn_quantize(l.w.data(), l.rows, l.cols, f);
  const QuantizedMatrix direct = quantize(l.w.data(), l.rows, l.cols, f);
  EXPECT_EQ(plain.q.codes, direct.codes) << "RTN without a clip search is quantize()";
  EXPECT_EQ(plain.q.scales, direct.scales);
  EXPECT_EQ(plain.q.tensor_scale, direct.tensor_scale);
  EXPECT_EQ(plain.dequantized, recomputed(plain.q));
  RtnOptions clip;
  clip.clip.enabled = true;
  clip.hessian = l.hessian();
  for (ClipObjective objective : {ClipObjective::weight, ClipObjective::full}) {
    RtnOptions o = clip;
    if (objective == ClipObjective::weight) o.hessian = {};
    const QuantizedWeight c = rtn_quantize(l.w.data(), l.rows, l.cols, f, o);
    EXPECT_EQ(c.dequantized, dequantized(c.q));
    EXPECT_EQ(c.dequantized, recomputed(c.q));
    const HessianView h = objective == ClipObjective::weight ? HessianView{} : l.hessian();
    EXPECT_LE(layer_output_error(l.w.data(), c.dequantized.data(), l.rows, l.cols, h),
              layer_output_error(l.w.data(), plain.dequantized.data(), l.rows, l.cols, h))
        << "the search's objective, computed on the lut values, can only go down";
  }
}

TEST(QuantLut, FireqRecipes) {
  const Recipe r = load_recipe("fireq-w4a8");
  for (LinearKind k : kAllLinearKinds) {
    const LinearRecipe& lr = r.linear(k);
    EXPECT_EQ(lr.algorithm, WeightAlgorithm::gptq);
    EXPECT_EQ(lr.weights.str(), "int4:g128:scale=fp8_e4m3:tensor_scale:lut");
    ASSERT_TRUE(lr.activations);
    EXPECT_EQ(lr.activations->str(), "fp8_e4m3:token");
    EXPECT_EQ(lr.gptq.percdamp, 0.01);
    EXPECT_EQ(lr.gptq.block_size, 128);
    EXPECT_TRUE(lr.gptq.act_order && lr.gptq.static_groups);
  }
  const Recipe rtn = load_recipe("fireq-w4a8-rtn");
  EXPECT_EQ(rtn.linear(LinearKind::down_proj).algorithm, WeightAlgorithm::rtn);
  EXPECT_EQ(rtn.linear(LinearKind::down_proj).weights, r.linear(LinearKind::down_proj).weights);
  EXPECT_EQ(rtn.linear(LinearKind::down_proj).activations, r.linear(LinearKind::down_proj).activations);
  const Recipe no_t = load_recipe("fireq-w4a8-no-tensor-scale");
  EXPECT_EQ(no_t.linear(LinearKind::q_proj).weights.str(), "int4:g128:scale=fp8_e4m3:lut");
  EXPECT_EQ(no_t.linear(LinearKind::q_proj).algorithm, WeightAlgorithm::gptq);
  const auto names = builtin_recipe_names();
  for (const char* n : {"fireq-w4a8", "fireq-w4a8-rtn", "fireq-w4a8-no-tensor-scale"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
}

}  // namespace
}  // namespace qf
