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

std::vector<std::vector<int32_t>> windows_for(const ModelConfig& c, int64_t n, int64_t len, uint64_t seed) {
  std::vector<int32_t> text(400);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (auto& t : text) t = int32_t(rng() % uint32_t(c.vocab_size));
  return draw_calibration_windows(text, n, len, seed);
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
  for (const auto& [name, w] : quantized) {
    Tensor t = Tensor::empty(DType::F32, ck.tensor(name).shape());
    std::copy(w.begin(), w.end(), t.data_mut<float>());
    qck.tensors[name] = t;
  }
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
  for (const auto& [name, h] : calibrated) {
    SCOPED_TRACE(name);
    const std::vector<double>& p = plain.at(name);
    ASSERT_EQ(p.size(), h.size());
    const int64_t n = int64_t(std::sqrt(double(h.size())));
    // The activations are bit-identical (same ops, same order); only the accumulation differs
    // (F32 GEMM per chunk of <= 48 tokens vs double here): relative error ~ 48 * 2^-24 ~ 3e-6 of
    // sqrt(H_ii H_jj) (Cauchy-Schwarz bounds |H_ij| by it). 1e-5 leaves margin; a wrong
    // activation (unquantized q, a missed rounding) changes entries by percent.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const double tol = 1e-5 * std::sqrt(p[size_t(i * n + i)] * p[size_t(j * n + j)]) + 1e-12;
        ASSERT_NEAR(h[size_t(i * n + j)], p[size_t(i * n + j)], tol) << "H[" << i << ", " << j << "]";
      }
  }
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
  Model model;
  model.checkpoint = dequantized_checkpoint(back, dir);
  model.quantization = back.quantization;
  EngineOptions eo;
  eo.slot_capacity = L;
  auto engine = create_engine(model, eo);
  Batch b;
  b.add_sequence(0, 0, o.windows[0], Batch::Logits::All);
  const Tensor logits = engine->forward(b);
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
  ASSERT_EQ(logits.numel(), expected.numel());
  for (int64_t i = 0; i < logits.numel(); ++i) ASSERT_EQ(logits.data<float>()[i], expected.data<float>()[i]) << i;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qf
