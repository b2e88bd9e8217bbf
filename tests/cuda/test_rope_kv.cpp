// The fused RoPE + KV append (rope_kv.h) against the two kernels it replaces, rope_apply then
// kv_cache_append, on the same fused q/k/v rows at real head shapes, with the cache pools
// poisoned first: the rotated queries, the cached keys and values must equal the unfused path's
// (the arithmetic is the same expression; we allow one BF16 unit in the last place in case the
// compiler contracts a product into an FMA differently in the two kernels), and every pool row
// the unfused path leaves poisoned (unused slots, the padding token's) must stay poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/kv_cache.h"
#include "backends/cuda/rope.h"
#include "backends/cuda/rope_kv.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

struct Case {
  const char* name;
  int heads, kv_heads, head_dim;
};

// Mismatches beyond one BF16 ulp between two arrays of bf16 (poison must match poison).
int64_t count_mismatch(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (bf16_bits(a[i]) == bf16_bits(b[i])) continue;
    const float x = bf16_to_float(a[i]), y = bf16_to_float(b[i]);
    if (!(std::isfinite(x) && std::isfinite(y)) || std::fabs(x - y) > std::ldexp(std::fabs(x), -7)) ++bad;
  }
  return bad;
}

TEST(RopeKvAppend, EqualsRopeThenAppend) {
  QF_REQUIRE_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  for (const Case& c : {Case{"llama3-8b", 32, 8, 128}, Case{"llama2-7b", 32, 32, 128}, Case{"smollm2", 9, 3, 64}}) {
    SCOPED_TRACE(c.name);
    const int T = 37;
    const int64_t stride = int64_t(c.heads + 2 * c.kv_heads) * c.head_dim + 8;  // padded rows
    const std::vector<bf16> qkv = random_bf16(size_t(T * stride), rng);
    // Two sequences' blocks; positions continue a cache of some length; token 5 is padding.
    cuda::KvBlockManager mgr(12, 2, 12 * cuda::kKvBlockTokens);
    mgr.grow(0, 60);
    mgr.grow(1, 70);
    std::vector<int32_t> pos(T), slots(T);
    const auto s0 = mgr.slot_ids(0, 40, 20), s1 = mgr.slot_ids(1, 53, 17);
    for (int i = 0; i < T; ++i) {
      pos[size_t(i)] = i < 20 ? 40 + i : 53 + (i - 20) + 3000 * (i % 2);  // large positions too
      slots[size_t(i)] = i < 20 ? s0[size_t(i)] : s1[size_t(i - 20)];
    }
    slots[5] = -1;
    std::vector<double> inv_freq(size_t(c.head_dim / 2));
    for (size_t j = 0; j < inv_freq.size(); ++j) inv_freq[j] = std::pow(10000.0, -2.0 * double(j) / c.head_dim);

    DeviceArray<bf16> a(qkv, stream), b(qkv, stream);
    DeviceArray<int32_t> d_pos(pos, stream), d_slots(slots, stream);
    DeviceArray<double> d_freq(inv_freq, stream);
    const int64_t pool = cuda::kv_pool_elements(12, c.kv_heads, c.head_dim);
    const size_t n = static_cast<size_t>(pool);
    DeviceArray<bf16> ka(n), va(n), kb(n), vb(n);
    for (auto* p : {&ka, &va, &kb, &vb}) p->poison(stream);
    auto view = [&](DeviceArray<bf16>& k, DeviceArray<bf16>& v) {
      return cuda::KvLayerView{k.get(), v.get(), 12, c.kv_heads, c.head_dim};
    };
    const double factor = 1.0;
    bf16* qa = a.get();
    bf16* ka_row = qa + int64_t(c.heads) * c.head_dim;
    cuda::rope_apply(qa, stride, c.heads, ka_row, stride, c.kv_heads, c.head_dim, d_pos.get(), T, d_freq.get(),
                     factor, stream);
    cuda::kv_cache_append(ka_row, stride, ka_row + int64_t(c.kv_heads) * c.head_dim, stride, d_slots.get(), T,
                          view(ka, va), stream);
    cuda::rope_kv_append(b.get(), stride, c.heads, c.kv_heads, c.head_dim, d_pos.get(), d_slots.get(), T,
                         d_freq.get(), factor, view(kb, vb), stream);
    const auto ha = a.download(stream), hb = b.download(stream);
    // Queries: rotated in place, equal. (Keys in the rows differ by design: only the cache holds
    // the rotated keys in the fused path.)
    std::vector<bf16> qa_h, qb_h;
    for (int i = 0; i < T; ++i)
      for (int e = 0; e < c.heads * c.head_dim; ++e) {
        qa_h.push_back(ha[size_t(i * stride + e)]);
        qb_h.push_back(hb[size_t(i * stride + e)]);
      }
    EXPECT_EQ(count_mismatch(qa_h, qb_h), 0);
    const auto kah = ka.download(stream), kbh = kb.download(stream), vah = va.download(stream),
               vbh = vb.download(stream);
    EXPECT_EQ(count_mismatch(kah, kbh), 0);
    EXPECT_EQ(count_mismatch(vah, vbh), 0);
    // The unfused path wrote T - 1 rows per KV head in each pool; the rest is still poison in both.
    const int64_t written = int64_t(T - 1) * c.kv_heads * c.head_dim;
    EXPECT_EQ(count_poisoned(kbh, 0, kbh.size()), int64_t(pool) - written);
    EXPECT_EQ(count_poisoned(vbh, 0, vbh.size()), int64_t(pool) - written);
  }
}

}  // namespace
}  // namespace qf::testing
