// Calibration (quant/calibration.h) and the whole-model pipeline (quant/quantize_model.h) on a
// tiny random model:
//  * the sequential pass hands each linear input's statistics to the quantizer in forward
//    order, and the Hessian it collects for every layer equals X^T X of that layer's input in a
//    plain forward pass (the CPU engine) of the finished quantized model, activation and KV
//    cache rounding included;
//  * quantize_model's checkpoint, written and read back, runs in the engine to the same logits
//    as the weights the calibration pass computed with.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>

#include "backends/cpu/activation_quantized_linear.h"
#include "formats/convert.h"
#include "io/quantized_checkpoint.h"
#include "quant/calibration.h"
#include "quant/quantize_model.h"
#include "quant/rtn.h"
#include "quant/smooth.h"
#include "runtime/cpu_engine.h"
#include "runtime/model.h"
#include "runtime/rope_frequencies.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

using Hessians = std::map<std::string, std::vector<double>>;

// Wraps a layer and adds X^T X of every input it sees (before any rounding the inner layer
// does) into hessians[name], in double.
class RecordingLinear final : public cpu::LinearLayer {
 public:
  RecordingLinear(std::unique_ptr<cpu::LinearLayer> inner, std::string name, Hessians* out)
      : inner_(std::move(inner)), name_(std::move(name)), out_(out) {}
  void forward(const float* x, int64_t M, float* y) const override {
    const int64_t n = in_features();
    std::vector<double>& h = (*out_)[name_];
    h.resize(size_t(n * n), 0.0);
    for (int64_t t = 0; t < M; ++t)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) h[size_t(i * n + j)] += double(x[t * n + i]) * double(x[t * n + j]);
    inner_->forward(x, M, y);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<cpu::LinearLayer> inner_;
  std::string name_;
  Hessians* out_;
};

std::vector<float> quant_test_gaussian(int64_t n, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// Sets ck's tensor `name` to the F32 values v of shape `shape`.
void set_f32(Checkpoint& ck, const std::string& name, const std::vector<float>& v, Shape shape) {
  Tensor t = Tensor::empty(DType::F32, std::move(shape));
  std::copy(v.begin(), v.end(), t.data_mut<float>());
  ck.tensors[name] = std::move(t);
}

// A calibration callback that records every linear's Hessian and leaves its weight unquantized
// (the function must be kept), keeping the weight as the pass handed it over.
auto keep_unquantized(Hessians& hessians, std::map<std::string, std::vector<float>>& weights) {
  return [&hessians, &weights](int64_t, LinearInput, const ActivationStats& st, std::span<CalibratedLinear> lins) {
    for (CalibratedLinear& lin : lins) {
      hessians[lin.name] = st.hessian;
      weights[lin.name] = lin.weight;
    }
  };
}

// The largest |logit difference| of two engines over the windows (every position's logits, each
// window from an empty slot 0), and the largest |logit| of `reference`.
std::pair<double, double> max_logit_difference(CpuEngine& engine, CpuEngine& reference,
                                               const std::vector<std::vector<int32_t>>& windows) {
  double max_diff = 0, max_logit = 0;
  for (const auto& w : windows) {
    engine.reset(0);
    reference.reset(0);
    Batch b;
    b.add_sequence(0, 0, w, Batch::Logits::All);
    const Tensor y = engine.forward(b), y0 = reference.forward(b);
    for (int64_t i = 0; i < y.numel(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(y.data<float>()[i] - y0.data<float>()[i])));
      max_logit = std::max(max_logit, double(std::fabs(y0.data<float>()[i])));
    }
  }
  return {max_diff, max_logit};
}

std::vector<std::vector<int32_t>> windows_for(const ModelConfig& c, int64_t n, int64_t len, uint64_t seed) {
  std::vector<int32_t> text(400);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (auto& t : text) t = int32_t(rng() % uint32_t(c.vocab_size));
  return draw_calibration_windows(text, n, len, seed);
}

// Every calibrated Hessian equals the one of a plain forward pass. The activations are
// bit-identical (same ops, same order); only the accumulation differs (F32 GEMM per chunk of <= 48
// tokens vs double there): relative error ~ 48 * 2^-24 ~ 3e-6 of sqrt(H_ii H_jj) (Cauchy-Schwarz
// bounds |H_ij| by it). 1e-5 leaves margin; a wrong activation (unquantized q, a missed rounding,
// a stale norm) changes entries by percent.
void expect_hessians_match(const Hessians& calibrated, const Hessians& plain) {
  for (const auto& [name, h] : calibrated) {
    SCOPED_TRACE(name);
    const std::vector<double>& p = plain.at(name);
    ASSERT_EQ(p.size(), h.size());
    const int64_t n = int64_t(std::sqrt(double(h.size())));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double tol = 1e-5 * std::sqrt(p[size_t(i * n + i)] * p[size_t(j * n + j)]) + 1e-12;
        ASSERT_NEAR(h[size_t(i * n + j)], p[size_t(i * n + j)], tol) << "H[" << i << ", " << j << "]";
      }
  }
}

// The logits of a checkpoint read back from `dir`, run as ppl and generate run it: the engine
// create_engine makes, with the recorded per-layer activation and KV formats.
Tensor checkpoint_logits(const QuantizedModel& back, const std::string& dir, int64_t slot_capacity, const Batch& b) {
  Model model;
  model.checkpoint = dequantized_checkpoint(back, dir);
  model.quantization = back.quantization;
  EngineOptions eo;
  eo.slot_capacity = slot_capacity;
  return create_engine(model, eo)->forward(b);
}

// Bit-equal and finite.
void expect_same_finite_logits(const Tensor& logits, const Tensor& expected) {
  ASSERT_EQ(logits.numel(), expected.numel());
  for (int64_t i = 0; i < logits.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(logits.data<float>()[i])) << i;
    ASSERT_EQ(logits.data<float>()[i], expected.data<float>()[i]) << i;
  }
}

TEST(QuantCalibration, WindowsAreSeededAndInRange) {
  std::vector<int32_t> text(100);
  for (int i = 0; i < 100; ++i) text[size_t(i)] = i;
  const auto a = draw_calibration_windows(text, 5, 10, 42), b = draw_calibration_windows(text, 5, 10, 42),
             c = draw_calibration_windows(text, 5, 10, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (const auto& w : a) {
    ASSERT_EQ(w.size(), 10u);
    for (size_t i = 1; i < w.size(); ++i) EXPECT_EQ(w[i], w[i - 1] + 1);  // consecutive text
    EXPECT_LE(w.back(), 99);
  }
  EXPECT_THROW(draw_calibration_windows(text, 1, 101, 0), Error);
}

TEST(QuantCalibration, HessiansEqualXtXOfTheQuantizedModelsPlainForward) {
  test::TinyOptions to;
  to.layers = 2;
  to.bias = true;  // q/k/v biases go through the pass too
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  const int64_t L = 24;
  const auto windows = windows_for(c, 5, L, 7);
  const Format weights = Format::parse("int4:g16");
  const Format down_act = Format::parse("int8:token"), kv = Format::parse("int8:token");

  CalibrationModel cm;
  cm.checkpoint = &ck;
  const RopeFrequencies rope = rope_frequencies(c, L);
  cm.rope_inv_freq = rope.inv_freq;
  cm.kv_cache = kv;
  Hessians calibrated;
  std::map<std::string, std::vector<float>> quantized;  // the weights the model ends with
  std::vector<std::pair<int64_t, LinearInput>> stages;
  CalibrationOptions co;
  co.chunk_tokens = 2 * L;  // three chunks (2 + 2 + 1 windows): chunking must not matter
  calibrate_sequentially(
      cm, windows,
      [&](int64_t layer, LinearInput input, const ActivationStats& s, std::span<CalibratedLinear> lins) {
        stages.emplace_back(layer, input);
        EXPECT_EQ(s.tokens, 5 * L);
        for (CalibratedLinear& lin : lins) {
          EXPECT_EQ(input_of(lin.kind), input);
          calibrated[lin.name] = s.hessian;
          lin.weight = rtn_quantize(lin.weight.data(), lin.rows, lin.cols, weights).dequantized;
          if (lin.kind == LinearKind::down_proj) lin.activations = down_act;
          quantized[lin.name] = lin.weight;
        }
      },
      co);
  ASSERT_EQ(stages.size(), size_t(4 * c.num_layers));
  for (size_t i = 0; i < stages.size(); ++i) {
    EXPECT_EQ(stages[i].first, int64_t(i / 4));
    EXPECT_EQ(stages[i].second, kLinearInputs[i % 4]);
  }

  // The quantized model, run plainly by the engine with the same rounding.
  Checkpoint qck = ck;
  for (const auto& [name, w] : quantized) set_f32(qck, name, w, ck.tensor(name).shape());
  Hessians plain;
  CpuEngine engine(qck, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& b) {
    std::unique_ptr<cpu::LinearLayer> inner = make_dense_linear(name, w, b);
    if (name.find("down_proj") != std::string::npos)
      inner = std::make_unique<cpu::ActivationQuantizedLinear>(std::move(inner), down_act);
    return std::unique_ptr<cpu::LinearLayer>(new RecordingLinear(std::move(inner), name, &plain));
  });
  engine.set_kv_cache_format(kv);
  for (const auto& w : windows) {
    engine.reset(0);
    Batch b;
    b.add_sequence(0, 0, w, Batch::Logits::None);
    (void)engine.forward(b);
  }
  ASSERT_EQ(calibrated.size(), size_t(7 * c.num_layers));
  expect_hessians_match(calibrated, plain);
}

TEST(QuantCalibration, QuantizedModelRoundTripsAndRunsAsCalibrated) {
  test::TinyOptions to;
  to.layers = 2;
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  const int64_t L = 16;
  const Recipe recipe = Recipe::parse(R"({"name": "t", "linear": {"algorithm": "gptq", "weights": "int4:g16",
      "gptq": {"act_order": true, "static_groups": true}},
      "overrides": {"down_proj": {"algorithm": "rtn", "weights": "int3:g16:asym:scale=bf16",
                                  "activations": "int8:token"}},
      "kv_cache": "int8:token", "keep": {"embed_tokens": "bf16", "lm_head": "f32"}})",
                                      "t.json");
  QuantizeModelOptions o;
  o.windows = windows_for(c, 4, L, 3);
  o.rope_inv_freq = rope_frequencies(c, L).inv_freq;
  o.calibration_info = {{"samples", 4}};
  int64_t blocks = 0;
  o.on_block_done = [&](int64_t done, int64_t total) {
    EXPECT_EQ(done, ++blocks);
    EXPECT_EQ(total, c.num_layers);
  };
  const QuantizedModel q = quantize_model(ck, recipe, o);
  EXPECT_EQ(blocks, c.num_layers);
  ASSERT_EQ(q.weights.size(), size_t(7 * c.num_layers));
  for (const auto& [name, lq] : q.quantization.linears) {
    EXPECT_TRUE(lq.error_from_hessian);
    EXPECT_GT(lq.relative_error, 0.0) << name;
    EXPECT_LT(lq.relative_error, 0.2) << name;  // 3-4 bit on Gaussian weights: a few percent
  }
  EXPECT_EQ(q.dense.at(names::embed()).dtype(), DType::BF16);
  EXPECT_EQ(q.dense.at(names::lm_head()).dtype(), DType::F32);

  const std::string dir = (std::filesystem::temp_directory_path() / "qf_test_quantize_model").string();
  std::filesystem::remove_all(dir);
  write_quantized_checkpoint(dir, q, {});
  const QuantizedModel back = read_quantized_checkpoint(dir);
  EXPECT_EQ(back.quantization.to_json(), q.quantization.to_json());
  for (const auto& [name, m] : q.weights) {
    EXPECT_EQ(back.weights.at(name).codes, m.codes) << name;
    EXPECT_EQ(back.weights.at(name).scales, m.scales) << name;
    EXPECT_EQ(back.weights.at(name).zeros, m.zeros) << name;
  }
  // The engine on the dequantized checkpoint, with the recorded per-layer activation format and
  // KV format (create_engine reads them from Model::quantization).
  Batch b;
  b.add_sequence(0, 0, o.windows[0], Batch::Logits::All);
  const Tensor logits = checkpoint_logits(back, dir, L, b);
  // The same model built by hand: the in-memory weights, down_proj's input rounded, int8 KV.
  Checkpoint hand = dequantized_checkpoint(q, dir);
  CpuEngine ref(hand, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& bias) {
    std::unique_ptr<cpu::LinearLayer> inner = make_dense_linear(name, w, bias);
    if (name.find("down_proj") != std::string::npos)
      inner = std::make_unique<cpu::ActivationQuantizedLinear>(std::move(inner), Format::parse("int8:token"));
    return inner;
  });
  ref.set_kv_cache_format(Format::parse("int8:token"));
  const Tensor expected = ref.forward(b);
  expect_same_finite_logits(logits, expected);
  std::filesystem::remove_all(dir);
}


// Smoothing inside the pass (CalibrationOptions::smooth, the recipe transform "smooth"): with
// the weights left unquantized, the smoothed model computes the original function (g /= s and
// W's columns *= s cancel up to rounding), and the statistics the pass hands to `quantize` are
// still X^T X of a plain forward of the model it ends with (the smoothed norms and weights).
TEST(QuantCalibration, SmoothingKeepsTheFunctionAndThePlainForwardStatistics) {
  test::TinyOptions to;
  to.layers = 2;
  to.bias = true;
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  const int64_t L = 24, H = c.hidden_size;
  const auto windows = windows_for(c, 5, L, 9);
  CalibrationModel cm;
  cm.checkpoint = &ck;
  cm.rope_inv_freq = rope_frequencies(c, L).inv_freq;
  Hessians calibrated;
  std::map<std::string, std::vector<float>> final_weights, norms;
  std::vector<std::pair<int64_t, LinearInput>> smoothed;
  CalibrationOptions co;
  co.chunk_tokens = 2 * L;
  co.smooth_sample_rows = 50;  // 120 tokens: every 3rd, 40 rows
  co.smooth = [&](int64_t layer, LinearInput input, const ActivationStats& st, std::span<const CalibratedLinear> lins,
                  const float* sample, int64_t rows) {
    smoothed.emplace_back(layer, input);
    EXPECT_EQ(rows, 40);
    EXPECT_EQ(lins.size(), input == LinearInput::attention_in ? 3u : 2u);
    for (const CalibratedLinear& lin : lins) EXPECT_EQ(input_of(lin.kind), input);
    // The sample rows are stage input rows: within the statistics' per-channel absmax.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < H; ++j) EXPECT_LE(std::fabs(sample[r * H + j]), st.channel_absmax[size_t(j)]);
    std::vector<float> s = quant_test_gaussian(H, uint64_t(10 * layer + int(input)), 0.7f);
    for (float& v : s) v = std::exp(v);  // scales within ~e^{+-2}
    return s;
  };
  co.on_norm_changed = [&](int64_t layer, LinearInput input, std::span<const float> g) {
    norms[names::layer(layer, input == LinearInput::attention_in ? "input_layernorm.weight"
                                                                 : "post_attention_layernorm.weight")] =
        std::vector<float>(g.begin(), g.end());
  };
  calibrate_sequentially(cm, windows, keep_unquantized(calibrated, final_weights), co);
  ASSERT_EQ(smoothed.size(), size_t(2 * c.num_layers));
  for (size_t i = 0; i < smoothed.size(); ++i)
    EXPECT_EQ(smoothed[i].second, i % 2 ? LinearInput::mlp_in : LinearInput::attention_in);
  ASSERT_EQ(norms.size(), size_t(2 * c.num_layers));

  Checkpoint sck = ck;  // the smoothed model
  for (const auto& [name, w] : final_weights) set_f32(sck, name, w, ck.tensor(name).shape());
  for (const auto& [name, g] : norms) set_f32(sck, name, g, ck.tensor(name).shape());
  // The smoothing really changed the model's tensors (so the checks below can fail).
  const std::string q0 = names::layer(0, "self_attn.q_proj.weight");
  const Tensor orig_q = convert(ck.tensor(q0), DType::F32);
  double changed = 0;
  for (int64_t i = 0; i < orig_q.numel(); ++i)
    changed = std::max(changed, double(std::fabs(orig_q.data<float>()[i] - final_weights.at(q0)[size_t(i)])));
  EXPECT_GT(changed, 0.1);

  Hessians plain;
  CpuEngine engine(sck, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& b) {
    return std::unique_ptr<cpu::LinearLayer>(new RecordingLinear(make_dense_linear(name, w, b), name, &plain));
  });
  CpuEngine original(ck, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& b) {
    return make_dense_linear(name, w, b);
  });
  const auto [max_diff, max_logit] = max_logit_difference(engine, original, windows);
  // F32 rounding of g / s and W s (one ulp each, ~6e-8 relative) through two blocks: ~1e-6 of
  // the logits' scale; an unmerged or doubly applied s changes them by tens of percent.
  EXPECT_LT(max_diff, 1e-5 * max_logit) << "smoothing changed the function";
  expect_hessians_match(calibrated, plain);
}

// quantize_model with "transforms": ["smooth"] (alpha searched) and ["smooth:0.5"]: the search
// never picks a loss above "no smoothing", the smoothed norms are in the checkpoint, and the
// checkpoint read back runs in the engine (the ppl path) to the logits of the model the pass
// calibrated, FP8 activation rounding included.
TEST(QuantCalibration, SmoothedRecipeWritesItsNormsAndRunsAsCalibrated) {
  test::TinyOptions to;
  to.layers = 2;
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  const int64_t L = 16;
  QuantizeModelOptions o;
  o.windows = windows_for(c, 4, L, 5);
  o.rope_inv_freq = rope_frequencies(c, L).inv_freq;
  o.calibration_info = {{"samples", 4}};
  auto recipe = [](const std::string& transform) {
    return Recipe::parse(str(R"({"name": "t", "transforms": [")", transform,
                             R"("], "linear": {"algorithm": "rtn", "weights": "int4:g16", "activations": "fp8_e4m3:token"}})"),
                         "t.json");
  };
  ASSERT_TRUE(recipe("smooth").needs_calibration());  // RTN, but smoothing needs activations
  {
    const QuantizedModel q = quantize_model(ck, recipe("smooth"), o);
    const nlohmann::json& log = q.quantization.calibration.at("smoothing");
    ASSERT_EQ(log.size(), size_t(2 * c.num_layers));
    const std::vector<float> grid = default_alpha_grid();
    for (const auto& e : log) {
      SCOPED_TRACE(e.dump());
      EXPECT_LE(e.at("loss").get<double>(), e.at("loss_unsmoothed").get<double>());
      const std::string norm = names::layer(e.at("layer").get<int64_t>(), e.at("input") == "attention_in"
                                                                               ? "input_layernorm.weight"
                                                                               : "post_attention_layernorm.weight");
      const Tensor g0 = convert(ck.tensor(norm), DType::F32);
      const Tensor& g = q.dense.at(norm);
      const bool same = std::equal(g0.data<float>(), g0.data<float>() + g0.numel(), g.data<float>());
      if (e.at("alpha").is_null()) {
        EXPECT_TRUE(same);
      } else {
        EXPECT_FALSE(same);
        EXPECT_NE(std::find(grid.begin(), grid.end(), e.at("alpha").get<float>()), grid.end());
      }
    }
  }
  const QuantizedModel q = quantize_model(ck, recipe("smooth:0.50"), o);
  EXPECT_EQ(q.quantization.recipe["transforms"], nlohmann::json::array({"smooth:0.5"}));
  const std::string dir = (std::filesystem::temp_directory_path() / "qf_test_smoothed_model").string();
  std::filesystem::remove_all(dir);
  write_quantized_checkpoint(dir, q, {});
  const QuantizedModel back = read_quantized_checkpoint(dir);
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const char* leaf : {"input_layernorm.weight", "post_attention_layernorm.weight"}) {
      const std::string name = names::layer(l, leaf);
      const Tensor g0 = convert(ck.tensor(name), DType::F32);
      const Tensor& g = back.dense.at(name);
      ASSERT_EQ(g.numel(), g0.numel());
      EXPECT_FALSE(std::equal(g0.data<float>(), g0.data<float>() + g0.numel(), g.data<float>())) << name;
      EXPECT_TRUE(std::equal(g.data<float>(), g.data<float>() + g.numel(), q.dense.at(name).data<float>())) << name;
    }
  Batch b;
  b.add_sequence(0, 0, o.windows[0], Batch::Logits::All);
  const Tensor logits = checkpoint_logits(back, dir, L, b);
  Checkpoint hand = dequantized_checkpoint(q, dir);
  CpuEngine ref(hand, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& bias) {
    std::unique_ptr<cpu::LinearLayer> inner = make_dense_linear(name, w, bias);
    if (name.find(".layers.") == std::string::npos) return inner;  // the LM head reads unrounded input
    return std::unique_ptr<cpu::LinearLayer>(
        std::make_unique<cpu::ActivationQuantizedLinear>(std::move(inner), Format::parse("fp8_e4m3:token")));
  });
  const Tensor expected = ref.forward(b);
  expect_same_finite_logits(logits, expected);
  std::filesystem::remove_all(dir);
}

// FireQ's RoPE-aware scaling inside the pass (CalibrationOptions::rope_scale, the recipe
// transform "rope_scale"), with q/k biases, an INT4 KV cache and FP8 queries simulated: the
// pre-RoPE scale reaches the q/k rows and biases pair-equal, the model carrying the merged
// weights and the post-RoPE tensors computes the original function when nothing is rounded, and
// with the rounding on, the statistics the pass collected are X^T X of a plain forward of that
// model (so the pass applies the post scale, rounds Q and K/V, and merges the biases as the
// engine does).
TEST(QuantCalibration, RopeScaleKeepsTheFunctionAndThePlainForwardStatistics) {
  test::TinyOptions to;
  to.layers = 2;
  to.bias = true;
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  const int64_t L = 24, d = c.head_dim, kv_dim = c.num_kv_heads * d, half = d / 2;
  const auto windows = windows_for(c, 5, L, 21);
  CalibrationModel cm;
  cm.checkpoint = &ck;
  cm.rope_inv_freq = rope_frequencies(c, L).inv_freq;
  cm.kv_cache = Format::parse("int4:token:scale=f16");
  cm.query = Format::parse("fp8_e4m3:token");
  Hessians calibrated;
  std::map<std::string, std::vector<float>> final_weights;
  std::vector<RopeScales> scales;
  CalibrationOptions co;
  co.chunk_tokens = 2 * L;
  co.rope_scale = [&](int64_t layer, const KeyStatistics& st) {
    EXPECT_EQ(layer, int64_t(scales.size()));
    EXPECT_EQ(st.tokens, int64_t(windows.size()) * L);
    RopeScaleTransform t;
    t.top_k = 1;  // head_dim is 8 here: leave most pairs to the pre-RoPE scale
    scales.push_back(rope_aware_scales(st, t));
    return scales.back();
  };
  calibrate_sequentially(cm, windows, keep_unquantized(calibrated, final_weights), co);
  ASSERT_EQ(scales.size(), size_t(c.num_layers));

  Checkpoint sck = ck;  // the scaled model
  for (const auto& [name, w] : final_weights) set_f32(sck, name, w, ck.tensor(name).shape());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const RopeScales& s = scales[size_t(l)];
    ASSERT_EQ(s.pre.size(), size_t(kv_dim));
    ASSERT_EQ(s.post.size(), size_t(kv_dim));
    int moved_pre = 0, moved_post = 0;
    for (int64_t i = 0; i < kv_dim; ++i) {
      EXPECT_EQ(s.pre[size_t(i)], s.pre[size_t((i % d < half) ? i + half : i - half)]) << "pair of channel " << i;
      moved_pre += s.pre[size_t(i)] != 1.0f;
      moved_post += s.post[size_t(i)] != 1.0f;
      if (s.post[size_t(i)] != 1.0f) {
        EXPECT_EQ(s.pre[size_t(i)], 1.0f) << "a post-scaled channel keeps pre = 1";
      }
    }
    EXPECT_GE(moved_pre, kv_dim / 2);  // all but the post-scaled pair of each head, unless a max is exactly 1
    EXPECT_GT(moved_post, 0);
    // The k_proj rows the pass quantizes are the original rows times the pair's scale.
    const std::string kn = names::layer(l, "self_attn.k_proj.weight");
    const Tensor k0 = convert(ck.tensor(kn), DType::F32);
    for (int64_t r = 0; r < kv_dim; ++r)
      for (int64_t j = 0; j < c.hidden_size; ++j)
        ASSERT_NEAR(final_weights.at(kn)[size_t(r * c.hidden_size + j)],
                    k0.data<float>()[r * c.hidden_size + j] * s.pre[size_t(r)],
                    1e-6 * std::fabs(k0.data<float>()[r * c.hidden_size + j] * s.pre[size_t(r)]))
            << kn << " row " << r;
    // The biases as the checkpoint would carry them (quantize_model merges them the same way).
    std::vector<float> qb(static_cast<size_t>(c.num_heads * d)), kb(static_cast<size_t>(kv_dim));
    const Tensor qb0 = convert(ck.tensor(names::layer(l, "self_attn.q_proj.bias")), DType::F32);
    const Tensor kb0 = convert(ck.tensor(names::layer(l, "self_attn.k_proj.bias")), DType::F32);
    std::copy_n(qb0.data<float>(), qb.size(), qb.data());
    std::copy_n(kb0.data<float>(), kb.size(), kb.data());
    merge_pre_rope_scale(qb.data(), kb.data(), 1, s.pre, c.num_heads, c.num_kv_heads, d);
    set_f32(sck, names::layer(l, "self_attn.q_proj.bias"), qb, {int64_t(qb.size())});
    set_f32(sck, names::layer(l, "self_attn.k_proj.bias"), kb, {int64_t(kb.size())});
    set_f32(sck, k_post_rope_scale_name(l), s.post, {kv_dim});
  }

  // Nothing rounded: the scaled model is the original one.
  {
    CpuEngine scaled(sck, 1, L), original(ck, 1, L);
    const auto [max_diff, max_logit] = max_logit_difference(scaled, original, windows);
    // F32 rounding of W s, q / s, k * s (an ulp or two each, ~1e-7 relative) through two blocks:
    // ~1e-6 of the logits' scale; a scale applied on one side only (or a bias left unscaled)
    // changes the scores, hence the logits, by tens of percent.
    EXPECT_LT(max_diff, 1e-5 * max_logit) << "the RoPE-aware scaling changed the function";
  }
  // Rounding on: the pass's statistics are the plain forward's.
  Hessians plain;
  CpuEngine engine(sck, 1, L, [&](const std::string& name, const Tensor& w, const Tensor& b) {
    return std::unique_ptr<cpu::LinearLayer>(new RecordingLinear(make_dense_linear(name, w, b), name, &plain));
  });
  engine.set_kv_cache_format(*cm.kv_cache);
  engine.set_query_format(*cm.query);
  for (const auto& w : windows) {
    engine.reset(0);
    Batch b;
    b.add_sequence(0, 0, w, Batch::Logits::All);
    (void)engine.forward(b);
  }
  expect_hessians_match(calibrated, plain);
}

// quantize_model with "rope_scale": per-channel INT8 RTN absorbs a row scale exactly (the codes
// are the same, the row's scale is multiplied), so the checkpoint with the transform, biases
// merged and the post-RoPE tensors stored, runs (nothing rounded) to the logits of the
// checkpoint without it. With "kv_cache" and "query" recorded, the checkpoint read back runs
// (create_engine: the ppl path) bit-equal to a hand-built engine with those formats, and the
// query rounding is really applied.
TEST(QuantCalibration, RopeScaledRecipeWritesItsTensorsAndRunsAsCalibrated) {
  test::TinyOptions to;
  to.layers = 2;
  to.bias = true;
  Checkpoint ck = test::tiny_checkpoint(to);
  ck.config.architecture = "qwen2";  // q/k/v biases: what a checkpoint's config.json can say
  const ModelConfig& c = ck.config;
  const int64_t L = 16, kv_dim = c.num_kv_heads * c.head_dim;
  QuantizeModelOptions o;
  o.windows = windows_for(c, 4, L, 6);
  o.rope_inv_freq = rope_frequencies(c, L).inv_freq;
  o.calibration_info = {{"samples", 4}};
  auto recipe = [](const std::string& transforms, const std::string& extra) {
    return Recipe::parse(str(R"({"name": "t", "transforms": [)", transforms,
                             R"(], "linear": {"algorithm": "rtn", "weights": "int8:channel"})", extra, "}"),
                         "t.json");
  };
  const QuantizedModel plain = quantize_model(ck, recipe("", ""), o);
  const QuantizedModel scaled = quantize_model(ck, recipe(R"("rope_scale")", ""), o);
  const nlohmann::json& log = scaled.quantization.calibration.at("rope_scale");
  EXPECT_EQ(log.at("top_k"), 3);
  ASSERT_EQ(log.at("layers").size(), size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    ASSERT_TRUE(scaled.dense.count(k_post_rope_scale_name(l))) << l;
    EXPECT_EQ(scaled.dense.at(k_post_rope_scale_name(l)).numel(), kv_dim);
    EXPECT_FALSE(plain.dense.count(k_post_rope_scale_name(l)));
    const std::string kb = names::layer(l, "self_attn.k_proj.bias");
    EXPECT_FALSE(std::equal(plain.dense.at(kb).data<float>(), plain.dense.at(kb).data<float>() + kv_dim,
                            scaled.dense.at(kb).data<float>()))
        << "the pre-RoPE scale must reach the k bias";
  }
  const std::string dir = (std::filesystem::temp_directory_path() / "qf_test_rope_scaled_model").string();
  const std::string dir0 = dir + "-plain";
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir0);
  write_quantized_checkpoint(dir, scaled, {});
  write_quantized_checkpoint(dir0, plain, {});
  Batch b;
  b.add_sequence(0, 0, o.windows[1], Batch::Logits::All);
  {
    const Tensor y = checkpoint_logits(read_quantized_checkpoint(dir), dir, L, b);
    const Tensor y0 = checkpoint_logits(read_quantized_checkpoint(dir0), dir0, L, b);
    double max_diff = 0, max_logit = 0;
    for (int64_t i = 0; i < y.numel(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(y.data<float>()[i] - y0.data<float>()[i])));
      max_logit = std::max(max_logit, double(std::fabs(y0.data<float>()[i])));
    }
    // F32 rounding of the scaled rows may flip a code at a rounding tie (rare; one code step
    // is 1/127 of a row's max, ~1e-4 of the logits); an unscaled bias or a missing post scale
    // moves them by tens of percent.
    EXPECT_LT(max_diff, 1e-3 * max_logit);
  }

  const QuantizedModel q = quantize_model(
      ck, recipe(R"("rope_scale")", R"(, "kv_cache": "int4:token:scale=f16", "query": "fp8_e4m3:token")"), o);
  ASSERT_TRUE(q.quantization.query);
  QuantizedWriteOptions wo;
  wo.overwrite = true;
  write_quantized_checkpoint(dir, q, {}, wo);
  const QuantizedModel back = read_quantized_checkpoint(dir);
  EXPECT_EQ(back.quantization.to_json(), q.quantization.to_json());
  EXPECT_EQ(back.quantization.query->str(), "fp8_e4m3:token");
  EXPECT_EQ(back.quantization.kv_cache->str(), "int4:token:scale=f16");
  const Tensor logits = checkpoint_logits(back, dir, L, b);
  Checkpoint hand = dequantized_checkpoint(q, dir);
  ASSERT_TRUE(hand.has(k_post_rope_scale_name(0)));
  CpuEngine ref(hand, 1, L), no_query(hand, 1, L);
  ref.set_kv_cache_format(Format::parse("int4:token:scale=f16"));
  ref.set_query_format(Format::parse("fp8_e4m3:token"));
  no_query.set_kv_cache_format(Format::parse("int4:token:scale=f16"));
  expect_same_finite_logits(logits, ref.forward(b));
  const Tensor unrounded_q = no_query.forward(b);
  double diff = 0;
  for (int64_t i = 0; i < logits.numel(); ++i)
    diff = std::max(diff, double(std::fabs(logits.data<float>()[i] - unrounded_q.data<float>()[i])));
  EXPECT_GT(diff, 1e-5) << "the checkpoint's query format must be applied";
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir0);
}

}  // namespace
}  // namespace qf
