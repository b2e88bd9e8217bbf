// The simulation engine (runtime/simulation_engine.h) on the GPU against the CPU engine it
// simulates: the same FP32 ops in other summation orders (cuBLAS, a tiled online softmax), so
// logits agree to FP32 rounding compounded through the layers, and perplexities to ~1e-5; with
// rounding formats, a value that sits within that rounding of a format's rounding boundary takes
// the neighbouring code on one side, so the bounds there are a code step's effect (stated below).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "cuda/gpu_test.h"
#include "io/quantized_checkpoint.h"
#include "quant/fp32_device.h"
#include "runtime/cpu_engine.h"
#include "runtime/model.h"
#include "runtime/paths.h"
#include "runtime/perplexity.h"
#include "runtime/simulation_engine.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

// max |a - b| over max |b|, and whether every value of a is finite.
std::pair<double, bool> max_relative_difference(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  bool finite = true;
  for (int64_t i = 0; i < a.numel(); ++i) {
    finite = finite && std::isfinite(a.data<float>()[i]);
    diff = std::max(diff, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
    scale = std::max(scale, double(std::fabs(b.data<float>()[i])));
  }
  return {diff / std::max(scale, 1e-30), finite};
}

TEST(SimulationEngineGpu, LogitsMatchTheCpuEngineOnARandomModel) {
  QF_REQUIRE_GPU();
  test::TinyOptions to;
  to.hidden = 384;
  to.heads = 6;  // head_dim 64: the GPU attention's
  to.kv_heads = 2;
  to.ffn = 512;
  to.layers = 3;
  to.bias = true;
  const Checkpoint ck = test::tiny_checkpoint(to);
  const ModelConfig& c = ck.config;
  std::mt19937 rng(5);
  std::vector<int32_t> a(100), b(40);
  for (int32_t& t : a) t = int32_t(rng() % uint32_t(c.vocab_size));
  for (int32_t& t : b) t = int32_t(rng() % uint32_t(c.vocab_size));
  CpuEngine cpu(ck, 2, 160);
  SimulationEngine gpu(ck, 2, 160, make_cuda_fp32_device(), {});
  // Prefill in two chunks with a second slot in the second batch, then decode steps.
  Batch b1, b2;
  b1.add_sequence(0, 0, std::span(a).first(60), Batch::Logits::All);
  b2.add_sequence(1, 0, b, Batch::Logits::All);
  b2.add_sequence(0, 60, std::span(a).subspan(60), Batch::Logits::All);
  // Unrounded, 3 layers of FP32 ops in different orders: relative differences ~1e-6 per op; 1e-4
  // of the largest logit leaves margin, while a wrong position, cache row or head is off by O(1).
  for (Batch* batch : {&b1, &b2}) {
    const auto [rel, finite] = max_relative_difference(gpu.forward(*batch), cpu.forward(*batch));
    std::printf("  prefill batch of %lld tokens: max |GPU - CPU| / max |CPU logit| = %.3g\n",
                static_cast<long long>(batch->size()), rel);
    EXPECT_TRUE(finite);
    EXPECT_LT(rel, 1e-4);
  }
  for (int step = 0; step < 4; ++step) {
    Batch d;
    d.add(int32_t(step), int32_t(100 + step), 0, true);
    d.add(int32_t(step + 9), int32_t(40 + step), 1, true);
    const auto [rel, finite] = max_relative_difference(gpu.forward(d), cpu.forward(d));
    EXPECT_TRUE(finite);
    EXPECT_LT(rel, 1e-4) << "decode step " << step;
  }
}

std::string wikitext_or_empty() {
  std::string path;
  try {
    path = shared_data_file("wikitext-2-raw-test.txt");
  } catch (const Error&) {
    return {};
  }
  std::ifstream f(path);
  if (!f) return {};
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str().substr(0, 200000);
}

TEST(SimulationEngineGpu, PerplexityMatchesTheCpuSimulationOnTheDefaultModel) {
  QF_REQUIRE_GPU();
  std::unique_ptr<Model> model;
  try {
    model = std::make_unique<Model>(load_model(default_model_path()));
  } catch (const Error&) {
    GTEST_SKIP() << "model test skipped: the default model is absent (set QF_MODEL)";
  }
  const std::string text = wikitext_or_empty();
  if (text.empty()) GTEST_SKIP() << "WikiText-2 test text absent (set QF_SHARED_DIR)";
  const std::vector<int32_t> tokens = model->tokenizer.encode(text, false, false);
  PerplexityOptions po;
  po.ctx = 512;
  po.max_windows = 4;
  ASSERT_GE(int64_t(tokens.size()), po.ctx * po.max_windows);
  struct Case {
    const char* name;
    std::string activations, kv, query;
    double bound;
  };
  // Unrounded: 1e-4 (FP32 summation orders; measured 2e-7 on the H100, 2026-11-23). FireQ's
  // roundings (every linear input to FP8 per token, the INT4 KV cache, FP8 queries) make the two
  // runs different draws rather than the same numbers: FP32-order differences are relative to a
  // dot product's sum of |terms|, so on this model's outlier channels the small outputs differ by
  // up to ~1e-3 relative, and a value that close to a rounding boundary takes the neighbouring code
  // — a step of absmax/7 in the INT4 cache. The CPU twin of this engine is bit-equal to the CPU
  // engine (tests/runtime/test_simulation_engine.cpp), so what is left is that noise: measured
  // +2.2% over these 2044 tokens, +0.25% over WikiText-2's 32,752 for the fireq-w4a8 checkpoint
  // (docs/accuracy.md). Bound 5%: a wrong rounding (a format skipped, applied twice, on the wrong
  // rows) moves this configuration's perplexity by 10% or more (FireQ's attention costs +12%).
  for (const Case& cs : {Case{"unrounded", "", "", "", 1e-4},
                         Case{"fp8 activations, int4 KV, fp8 queries", "fp8_e4m3:token", "int4:token:scale=f16",
                              "fp8_e4m3:token", 5e-2}}) {
    SCOPED_TRACE(cs.name);
    EngineOptions o;
    o.slot_capacity = po.ctx;
    o.activation_format = cs.activations;
    o.kv_cache_format = cs.kv;
    o.query_format = cs.query;
    o.device = Device::Cpu;
    const PerplexityResult c = perplexity_of_tokens(*create_engine(*model, o), tokens, -1, po);
    o.device = Device::Cuda;
    o.simulate = true;
    const std::unique_ptr<Engine> gpu_engine = create_engine(*model, o);
    EXPECT_NE(gpu_engine->describe().find("simulation"), std::string::npos) << gpu_engine->describe();
    const PerplexityResult g = perplexity_of_tokens(*gpu_engine, tokens, -1, po);
    std::printf("[ model    ] %s: perplexity over %lld tokens: GPU simulation %.5f (%.1f s), CPU %.5f (%.1f s), %+.5f%%\n",
                cs.name, static_cast<long long>(c.tokens_scored), g.ppl, g.seconds, c.ppl, c.seconds,
                100 * (g.ppl / c.ppl - 1));
    EXPECT_LT(std::fabs(g.ppl / c.ppl - 1), cs.bound);
  }
}

}  // namespace
}  // namespace qf
