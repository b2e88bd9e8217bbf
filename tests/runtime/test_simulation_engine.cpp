// The simulation engine (runtime/simulation_engine.h) on the CPU device against the CPU engine:
// the same ops in the same order, so every logit must be bit-equal — prefill in chunks, decode,
// several slots interleaved in one batch, truncation, with per-layer activation formats, a KV-cache
// format, a query format and FireQ's post-RoPE key scales. (On the GPU device the same engine is
// compared with bounds in tests/cuda/test_simulation_engine.cpp.)
#include <gtest/gtest.h>

#include <random>

#include "formats/convert.h"
#include "io/quantized_checkpoint.h"
#include "quant/fp32_device.h"
#include "runtime/cpu_engine.h"
#include "runtime/simulation_engine.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

void expect_equal(const Tensor& a, const Tensor& b, const char* what) {
  ASSERT_EQ(a.numel(), b.numel()) << what;
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << what << " [" << i << "]";
}

struct Case {
  const char* name;
  bool formats;
};

TEST(SimulationEngine, OnTheCpuDeviceEqualsTheCpuEngineBitForBit) {
  for (const Case& cs : {Case{"unrounded", false}, Case{"activations, KV cache, queries, post-RoPE scales", true}}) {
    SCOPED_TRACE(cs.name);
    test::TinyOptions to;
    to.bias = true;
    to.bf16 = true;  // BF16 weights as stored: the simulation engine widens them up front
    Checkpoint ck = test::tiny_checkpoint(to);
    const ModelConfig& c = ck.config;
    SimulatedFormats f;
    LinearFactory factory = make_dense_linear;
    if (cs.formats) {
      const int64_t kv_dim = c.num_kv_heads * c.head_dim;
      Tensor post = Tensor::empty(DType::F32, {kv_dim});
      for (int64_t i = 0; i < kv_dim; ++i) post.data_mut<float>()[i] = i % 5 == 0 ? 4.0f : 1.0f;
      ck.tensors[k_post_rope_scale_name(1)] = post;
      std::map<std::string, Format> per_layer = {{names::layer(0, "self_attn.q_proj.weight"), Format::parse("int8:token")},
                                                 {names::layer(1, "mlp.down_proj.weight"), Format::parse("fp8_e4m3:token")}};
      f.activations = per_layer;
      f.kv_cache = Format::parse("int4:token:scale=f16");
      f.query = Format::parse("fp8_e4m3:token");
      factory = [per_layer](const std::string& name, const Tensor& weight, const Tensor& bias) {
        auto it = per_layer.find(name);
        return it == per_layer.end() ? make_dense_linear(name, weight, bias)
                                     : activation_quantizing_factory(it->second)(name, weight, bias);
      };
    }
    CpuEngine cpu(ck, 2, 64, factory);
    if (f.kv_cache) cpu.set_kv_cache_format(*f.kv_cache);
    if (f.query) cpu.set_query_format(*f.query);
    SimulationEngine sim(ck, 2, 64, make_cpu_fp32_device(), f);

    const std::vector<int32_t> a = random_tokens(30, c.vocab_size, 1), b = random_tokens(12, c.vocab_size, 2);
    // A prefill of 20 tokens in slot 0, then 10 more with slot 1's 12 in the same batch.
    Batch b1;
    b1.add_sequence(0, 0, std::span(a).first(20), Batch::Logits::All);
    expect_equal(sim.forward(b1), cpu.forward(b1), "prefill");
    Batch b2;
    b2.add_sequence(1, 0, b, Batch::Logits::Last);
    b2.add_sequence(0, 20, std::span(a).subspan(20), Batch::Logits::All);
    expect_equal(sim.forward(b2), cpu.forward(b2), "two slots");
    // Decode: one token per slot, interleaved.
    for (int step = 0; step < 3; ++step) {
      Batch d;
      d.add(int32_t(step + 3), int32_t(30 + step), 0, true);
      d.add(int32_t(step + 7), int32_t(12 + step), 1, true);
      expect_equal(sim.forward(d), cpu.forward(d), "decode");
    }
    // Truncation rewinds the cache: rerun slot 1 from position 5.
    sim.truncate(1, 5);
    cpu.truncate(1, 5);
    EXPECT_EQ(sim.slot_length(1), 5);
    Batch r;
    r.add_sequence(1, 5, std::span(b).subspan(5), Batch::Logits::All);
    expect_equal(sim.forward(r), cpu.forward(r), "after truncate");
    // Bad batches fail with the engines' shared message.
    Batch bad;
    bad.add(1, 3, 0, true);
    EXPECT_THROW(sim.forward(bad), Error);
  }
}

}  // namespace
}  // namespace qf
