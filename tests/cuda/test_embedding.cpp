// Embedding gather against the CPU twin cpu::embedding (SmolLM2's table shape): a copy, so the
// result must be bit-exact; out-of-range ids give NaN rows instead of out-of-bounds reads.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/cuda/device.h"
#include "backends/cuda/embedding.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

TEST(Embedding, MatchesCpuTwinBitForBit) {
  QF_REQUIRE_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  for (const int64_t dim : {int64_t(576), int64_t(4096), int64_t(8)}) {
    const int64_t vocab = dim == 8 ? 3 : 49152;
    const auto table = random_bf16(size_t(vocab * dim), rng);
    std::vector<int32_t> tokens{0, int32_t(vocab - 1), 1, 1};  // ends, a repeat
    std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab - 1));
    for (int i = 0; i < 200; ++i) tokens.push_back(pick(rng));
    DeviceArray<bf16> dt(table, stream), dout(tokens.size() * dim);
    DeviceArray<int32_t> dtok(tokens, stream);
    dout.poison(stream);
    cuda::embedding(dt.get(), vocab, dim, dtok.get(), int64_t(tokens.size()), dout.get(), stream);
    const auto out = dout.download(stream);
    std::vector<float> ref(out.size());
    cpu::embedding(table.data(), DType::BF16, vocab, dim, tokens.data(), int64_t(tokens.size()), ref.data());
    int64_t mismatches = 0;
    for (size_t i = 0; i < out.size(); ++i) mismatches += bf16_bits(out[i]) != bf16_bits(float_to_bf16(ref[i]));
    EXPECT_EQ(mismatches, 0) << "dim " << dim;
  }
}

TEST(Embedding, OutOfRangeIdsGiveNaNRows) {
  QF_REQUIRE_GPU();
  cuda::Stream stream;
  std::mt19937_64 rng(fresh_seed());
  const int64_t vocab = 100, dim = 64;
  const auto table = random_bf16(size_t(vocab * dim), rng);
  const std::vector<int32_t> tokens{5, -1, int32_t(vocab), 7};
  DeviceArray<bf16> dt(table, stream), dout(tokens.size() * dim);
  DeviceArray<int32_t> dtok(tokens, stream);
  dout.poison(stream);
  cuda::embedding(dt.get(), vocab, dim, dtok.get(), int64_t(tokens.size()), dout.get(), stream);
  const auto out = dout.download(stream);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t j = 0; j < dim; ++j) {
      const bf16 g = out[t * dim + size_t(j)];
      if (t == 1 || t == 2) EXPECT_EQ(bf16_bits(g), 0x7fc0) << "token " << t;
      else EXPECT_EQ(bf16_bits(g), bf16_bits(table[size_t(tokens[t] * dim + j)])) << "token " << t;
    }
}

}  // namespace
}  // namespace qf::testing
