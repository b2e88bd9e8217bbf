// The fused RoPE + KV append (rope_kv.h) against the two kernels it replaces, rope_apply then
// kv_cache_append, on the same fused q/k/v rows at real head shapes, with the cache pools
// poisoned first: the rotated queries, the cached keys and values must equal the unfused path's
// (the arithmetic is the same expression; we allow one BF16 unit in the last place in case the
// compiler contracts a product into an FMA differently in the two kernels), and every pool row
// the unfused path leaves poisoned (unused slots, the padding token's) must stay poisoned.
//
// FireQ's quantized attention inputs (QuantizedCacheAndFp8Queries): the same pass with
// post-RoPE key scales, FP8 queries and an INT4 / FP8 cache must equal, bit for bit, the CPU
// twin applied to the BF16 pass's output: queries divided by the scale and rounded through
// formats::quantize("fp8_e4m3:token") per head, then to BF16; keys multiplied by the scale and
// values as they are, quantized per (token, KV head) by formats::quantize of the cache's format
// (codes and F16 scales). Exactness holds because both sides start from the same BF16 values and
// do the same IEEE operations (kv_quant_device.h); a wrong scale, nibble order, pair mapping or
// rounding mode changes most rows.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/kv_cache.h"
#include "backends/cuda/rope.h"
#include "backends/cuda/rope_kv.h"
#include "formats/quantize.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

struct Case {
  const char* name;
  int heads, kv_heads, head_dim;
};

const Case kCases[] = {{"llama3-8b", 32, 8, 128}, {"llama2-7b", 32, 32, 128}, {"smollm2", 9, 3, 64}};

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
  // 37 tokens: several CTAs per token, each a range of head rows; 1 and 2 (decode): one row per warp.
  for (const Case& c : kCases)
  for (const int T : {37, 2, 1}) {
    SCOPED_TRACE(std::string(c.name) + ", " + std::to_string(T) + " tokens");
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
    const int padding = T > 5 ? 1 : 0;
    if (padding) slots[5] = -1;
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
                         d_freq.get(), factor, view(kb, vb), {}, stream);
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
    // Both paths wrote the non-padding tokens' rows of each KV head; the rest is still poison.
    const int64_t written = int64_t(T - padding) * c.kv_heads * c.head_dim;
    EXPECT_EQ(count_poisoned(kbh, 0, kbh.size()), int64_t(pool) - written);
    EXPECT_EQ(count_poisoned(vbh, 0, vbh.size()), int64_t(pool) - written);
  }
}

TEST(RopeKvAppend, QuantizedCacheAndFp8Queries) {
  QF_REQUIRE_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const int T = 41, d = c.head_dim, group = c.heads / c.kv_heads;
    const int64_t stride = int64_t(c.heads + 2 * c.kv_heads) * d + 8;
    std::vector<bf16> qkv = random_bf16(size_t(T * stride), rng);
    // Outlier channels in some keys and a tiny value row, as real K/V have.
    for (int i = 0; i < T; ++i) qkv[size_t(i * stride + int64_t(c.heads) * d + 3)] = float_to_bf16(40.0f + float(i));
    for (int e = 0; e < d; ++e) qkv[size_t(2 * stride + int64_t(c.heads + c.kv_heads) * d + e)] = float_to_bf16(1e-3f * float(e % 7));
    cuda::KvBlockManager mgr(12, 1, 12 * cuda::kKvBlockTokens);
    mgr.grow(0, 150);
    std::vector<int32_t> pos(T), slots = mgr.slot_ids(0, 100, T);
    for (int i = 0; i < T; ++i) pos[size_t(i)] = 100 + i;
    slots[7] = -1;  // a padding token: rotated and rounded, not cached
    std::vector<double> inv_freq(size_t(d / 2));
    for (size_t j = 0; j < inv_freq.size(); ++j) inv_freq[j] = std::pow(500000.0, -2.0 * double(j) / d);
    std::uniform_real_distribution<float> scale_dist(0.25f, 4.0f);
    std::vector<float> post(size_t(c.kv_heads * d));
    for (float& x : post) x = scale_dist(rng);
    DeviceArray<int32_t> d_pos(pos, stream), d_slots(slots, stream);
    DeviceArray<double> d_freq(inv_freq, stream);
    DeviceArray<float> d_post(post, stream);
    const int64_t rows = cuda::kv_pool_rows(12, c.kv_heads);

    // The BF16 pass, no options: the twin's input.
    DeviceArray<bf16> base(qkv, stream), kb(static_cast<size_t>(rows * d)), vb(static_cast<size_t>(rows * d));
    cuda::rope_kv_append(base.get(), stride, c.heads, c.kv_heads, d, d_pos.get(), d_slots.get(), T, d_freq.get(), 1.0,
                         cuda::KvLayerView{kb.get(), vb.get(), 12, c.kv_heads, d}, {}, stream);
    const auto q_bf16 = base.download(stream), k_bf16 = kb.download(stream), v_bf16 = vb.download(stream);

    for (cuda::KvElement elem : {cuda::KvElement::int4, cuda::KvElement::fp8_e4m3}) {
      SCOPED_TRACE(cuda::kv_element_name(elem));
      const Format fmt = Format::parse(cuda::kv_element_name(elem));
      const int64_t rb = cuda::kv_row_bytes(elem, d);
      DeviceArray<bf16> run(qkv, stream);
      DeviceArray<uint8_t> kc(static_cast<size_t>(rows * rb)), vc(static_cast<size_t>(rows * rb));
      DeviceArray<uint16_t> ks(static_cast<size_t>(rows)), vs(static_cast<size_t>(rows));
      for (auto* p : {&kc, &vc}) p->poison(stream);
      for (auto* p : {&ks, &vs}) p->poison(stream);
      cuda::KvLayerView view{kc.get(), vc.get(), 12, c.kv_heads, d, elem, reinterpret_cast<__half*>(ks.get()),
                             reinterpret_cast<__half*>(vs.get())};
      cuda::RopeKvOptions opt;
      opt.k_post_rope_scale = d_post.get();
      opt.q_fp8 = true;
      cuda::rope_kv_append(run.get(), stride, c.heads, c.kv_heads, d, d_pos.get(), d_slots.get(), T, d_freq.get(), 1.0,
                           view, opt, stream);
      const auto q_got = run.download(stream);
      const auto kc_h = kc.download(stream), vc_h = vc.download(stream);
      const auto ks_h = ks.download(stream), vs_h = vs.download(stream);

      int64_t q_bad = 0, code_bad = 0, scale_bad = 0, rows_written = 0;
      std::vector<float> x(static_cast<size_t>(d)), deq(static_cast<size_t>(d));
      for (int i = 0; i < T; ++i) {
        for (int h = 0; h < c.heads; ++h) {  // queries: / scale, FP8 per head, BF16
          const size_t at = size_t(i * stride + int64_t(h) * d);
          for (int e = 0; e < d; ++e) x[size_t(e)] = bf16_to_float(q_bf16[at + e]) / post[size_t((h / group) * d + e)];
          dequantize(quantize(x.data(), 1, d, Format::parse("fp8_e4m3:token")), deq.data());
          for (int e = 0; e < d; ++e) q_bad += bf16_bits(q_got[at + e]) != bf16_bits(float_to_bf16(deq[size_t(e)]));
        }
        if (slots[size_t(i)] < 0) continue;
        for (int h = 0; h < c.kv_heads; ++h) {
          const int64_t row = (int64_t(slots[size_t(i)] / cuda::kKvBlockTokens) * c.kv_heads + h) * cuda::kKvBlockTokens +
                              slots[size_t(i)] % cuda::kKvBlockTokens;
          ++rows_written;
          for (int kv = 0; kv < 2; ++kv) {
            const auto& src = kv == 0 ? k_bf16 : v_bf16;
            for (int e = 0; e < d; ++e) {
              x[size_t(e)] = bf16_to_float(src[size_t(row * d + e)]);
              if (kv == 0) x[size_t(e)] *= post[size_t(h * d + e)];
            }
            const QuantizedMatrix want = quantize(x.data(), 1, d, fmt);
            const auto& codes = kv == 0 ? kc_h : vc_h;
            for (int e = 0; e < d; ++e) {
              const uint32_t got = elem == cuda::KvElement::int4
                                       ? (codes[size_t(row * rb + e / 2)] >> (4 * (e % 2))) & 0xFu
                                       : codes[size_t(row * rb + e)];
              code_bad += got != want.codes[size_t(e)];
            }
            uint16_t want_scale;
            std::memcpy(&want_scale, want.scales.data(), 2);
            scale_bad += (kv == 0 ? ks_h : vs_h)[size_t(row)] != want_scale;
          }
        }
      }
      EXPECT_EQ(q_bad, 0) << "query elements differing from the FP8 twin";
      EXPECT_EQ(code_bad, 0) << "cache codes differing from formats::quantize";
      EXPECT_EQ(scale_bad, 0) << "row scales differing from formats::quantize";
      // Only the cached tokens' rows were written: every other scale is still poison.
      EXPECT_EQ(count_poisoned(ks_h, 0, ks_h.size()), rows - rows_written);
      EXPECT_EQ(count_poisoned(vs_h, 0, vs_h.size()), rows - rows_written);
    }
  }
}

}  // namespace
}  // namespace qf::testing
