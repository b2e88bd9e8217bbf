// Prefill and decode attention over the paged KV cache against the CPU twin cpu::attention, at
// the head shapes of Llama-2-7B (32 x 128, 32 KV heads), Llama-3-8B (32 x 128, 8 KV heads) and
// SmolLM2-135M (9 x 64, 3 KV heads), on fresh random inputs.
//
// Error bound. Q, K and V are BF16 values, exact in FP32, and the CPU twin computes in FP32, so
// the reference is as good as exact here. The GPU's S = Q K^T is exact products summed in FP32
// (~1e-6 relative); the softmax is FP32; the probabilities P are rounded to BF16 for the PV
// tensor-core product (relative error <= 2^-9 each, random in sign, so the output row errs by
// about 2^-9 / sqrt(3) ~ 1.1e-3 of its norm), and the output is rounded to BF16 (another
// ~1.1e-3 RMS). Expected ||gpu - cpu|| / ||cpu|| ~ 1.6e-3: the bounds are 1e-2 over the
// whole output and 2e-2 for every single (token, head) row — a wrong mask by one key, a
// wrong page or a missed rescale breaks the row bound by far (e.g. a row of 2 keys instead of
// 1 errs by ~70%).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backends/cpu/attention.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/attention_bench.h"
#include "backends/cuda/device.h"
#include "backends/cuda/kv_cache.h"
#include "gpu_test.h"
#include "kernel_test_util.h"

namespace qf::testing {
namespace {

using cuda::kKvBlockTokens;


cuda::AttentionShape attention_shape(const HeadShape& m) {
  return {m.heads, m.kv_heads, m.head_dim, 1.0f / std::sqrt(float(m.head_dim))};
}

// A paged cache holding random K/V for several sequences, filled through kv_cache_append (from
// rows with padding between them, as a fused QKV output has), with blocks assigned in a random
// permutation so that every tile read goes through the table. The pools start poisoned: a
// kernel reading a row nobody appended gets NaN.
//
// With a quantized element kind (decode only) the same rows are also quantized on the CPU by
// formats::quantize per (token, KV head) and written into code and scale pools in the cache's
// layout (the scale pools poisoned first: a row nobody wrote has a NaN scale); kq / vq then hold
// the dequantized values the reference attends over.
struct TestCache {
  HeadShape m;
  std::vector<int> lens;
  std::vector<std::vector<bf16>> k, v;  // per sequence [len][kv_heads * head_dim]
  cuda::KvElement elem = cuda::KvElement::bf16;
  std::vector<std::vector<float>> kq, vq;  // quantized kinds: the dequantized k, v
  DeviceArray<uint8_t> k_codes, v_codes;
  DeviceArray<uint16_t> k_scales, v_scales;
  int max_blocks_per_seq = 0;
  std::vector<int32_t> table;  // [num_seqs][max_blocks_per_seq], -1 where unused
  int64_t num_blocks = 0;
  DeviceArray<bf16> k_pool, v_pool;
  DeviceArray<int32_t> d_table;

  TestCache(const HeadShape& shape, std::vector<int> seq_lens, std::mt19937_64& rng, cudaStream_t stream,
            cuda::KvElement element = cuda::KvElement::bf16)
      : m(shape), lens(std::move(seq_lens)), elem(element) {
    const int row = m.kv_heads * m.head_dim;
    std::vector<int> blocks_of(lens.size());
    int max_len = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      blocks_of[s] = (lens[s] + kKvBlockTokens - 1) / kKvBlockTokens;
      num_blocks += blocks_of[s];
      max_len = std::max(max_len, lens[s]);
      k.push_back(random_bf16(size_t(lens[s]) * row, rng));
      v.push_back(random_bf16(size_t(lens[s]) * row, rng));
    }
    num_blocks += 5;  // spare blocks nobody owns (left poisoned)
    // One spare table column (-1): a kernel reading past a sequence's blocks would fault or
    // read poison, not silently a neighbour.
    max_blocks_per_seq = (max_len + kKvBlockTokens - 1) / kKvBlockTokens + 1;
    std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(lens.size() * size_t(max_blocks_per_seq), -1);
    size_t next = 0;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int b = 0; b < blocks_of[s]; ++b) table[s * max_blocks_per_seq + b] = perm[next++];

    const size_t pool = size_t(cuda::kv_pool_elements(num_blocks, m.kv_heads, m.head_dim));
    k_pool = DeviceArray<bf16>(pool, "test K pool");
    v_pool = DeviceArray<bf16>(pool, "test V pool");
    k_pool.poison(stream);
    v_pool.poison(stream);
    d_table = DeviceArray<int32_t>(table, stream, "test block table");

    // Append every token of every sequence in one call, from rows of stride row + 16.
    const int64_t stride = row + 16;
    std::vector<bf16> k_rows, v_rows;
    std::vector<int32_t> slots;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int p = 0; p < lens[s]; ++p) {
        const size_t at = k_rows.size();
        k_rows.resize(at + size_t(stride), float_to_bf16(0.0f));
        v_rows.resize(at + size_t(stride), float_to_bf16(0.0f));
        std::copy_n(k[s].begin() + size_t(p) * row, row, k_rows.begin() + at);
        std::copy_n(v[s].begin() + size_t(p) * row, row, v_rows.begin() + at);
        slots.push_back(table[s * max_blocks_per_seq + p / kKvBlockTokens] * kKvBlockTokens + p % kKvBlockTokens);
      }
    if (!slots.empty()) {
      DeviceArray<bf16> dk(k_rows, stream), dv(v_rows, stream);
      DeviceArray<int32_t> dslots(slots, stream);
      cuda::kv_cache_append(dk.get(), stride, dv.get(), stride, dslots.get(), int(slots.size()), bf16_view(), stream);
      QF_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    if (elem != cuda::KvElement::bf16) quantize_rows(stream);
  }

  void quantize_rows(cudaStream_t stream) {
    const Format fmt = Format::parse(cuda::kv_element_name(elem));
    const int d = m.head_dim, row = m.kv_heads * d;
    const int64_t rows = cuda::kv_pool_rows(num_blocks, m.kv_heads), rb = cuda::kv_row_bytes(elem, d);
    std::vector<uint8_t> kc(size_t(rows * rb), 0xA5), vc(size_t(rows * rb), 0xA5);
    std::vector<uint16_t> ksc(size_t(rows), kPoisonBits), vsc(size_t(rows), kPoisonBits);
    std::vector<float> x(static_cast<size_t>(d)), deq(static_cast<size_t>(d));
    for (size_t s = 0; s < lens.size(); ++s) {
      kq.emplace_back(size_t(lens[s]) * row);
      vq.emplace_back(size_t(lens[s]) * row);
      for (int p = 0; p < lens[s]; ++p)
        for (int h = 0; h < m.kv_heads; ++h) {
          const int64_t pool_row = (int64_t(table[s * max_blocks_per_seq + p / kKvBlockTokens]) * m.kv_heads + h) *
                                       kKvBlockTokens + p % kKvBlockTokens;
          for (int kv = 0; kv < 2; ++kv) {
            const auto& src = kv == 0 ? k[s] : v[s];
            for (int e = 0; e < d; ++e) x[size_t(e)] = bf16_to_float(src[size_t(p) * row + size_t(h) * d + e]);
            const QuantizedMatrix qm = quantize(x.data(), 1, d, fmt);
            dequantize(qm, deq.data());
            std::copy(deq.begin(), deq.end(), (kv == 0 ? kq : vq)[s].begin() + size_t(p) * row + size_t(h) * d);
            auto& codes = kv == 0 ? kc : vc;
            for (int e = 0; e < d; ++e) {
              if (elem == cuda::KvElement::int4) {
                uint8_t& byte = codes[size_t(pool_row * rb + e / 2)];
                if (e % 2 == 0) byte = 0;
                byte |= uint8_t(qm.codes[size_t(e)] << (4 * (e % 2)));
              } else {
                codes[size_t(pool_row * rb + e)] = qm.codes[size_t(e)];
              }
            }
            std::memcpy(&(kv == 0 ? ksc : vsc)[size_t(pool_row)], qm.scales.data(), 2);
          }
        }
    }
    k_codes = DeviceArray<uint8_t>(kc, stream);
    v_codes = DeviceArray<uint8_t>(vc, stream);
    k_scales = DeviceArray<uint16_t>(ksc, stream);
    v_scales = DeviceArray<uint16_t>(vsc, stream);
    QF_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  cuda::KvLayerView bf16_view() const { return {k_pool.get(), v_pool.get(), num_blocks, m.kv_heads, m.head_dim}; }
  cuda::KvLayerView view() const {
    if (elem == cuda::KvElement::bf16) return bf16_view();
    return {k_codes.get(), v_codes.get(), num_blocks, m.kv_heads, m.head_dim, elem,
            reinterpret_cast<__half*>(k_scales.get()), reinterpret_cast<__half*>(v_scales.get())};
  }

  // Sequence s's keys (kv 0) or values (kv 1) as the cache holds them, in the CPU twin's
  // layout: [kv_heads][len][head_dim] floats.
  std::vector<float> cpu_layout(int kv, int s) const {
    const int len = lens[size_t(s)], d = m.head_dim, row = m.kv_heads * d;
    const bool q = elem != cuda::KvElement::bf16;
    std::vector<float> out(static_cast<size_t>(m.kv_heads) * len * d);
    for (int h = 0; h < m.kv_heads; ++h)
      for (int p = 0; p < len; ++p)
        for (int j = 0; j < d; ++j) {
          const size_t at = size_t(p) * row + size_t(h) * d + j;
          out[(size_t(h) * len + p) * d + j] =
              q ? (kv == 0 ? kq : vq)[size_t(s)][at] : bf16_to_float((kv == 0 ? k : v)[size_t(s)][at]);
        }
    return out;
  }
};

// The CPU twin's output for queries q_rows ([n][q_stride] floats, heads first) of sequence s
// at positions first_pos .. first_pos + n - 1.
std::vector<float> cpu_attention(const TestCache& c, int s, const std::vector<float>& q_rows, int64_t q_stride,
                                 int n, int first_pos) {
  const HeadShape& m = c.m;
  const auto kc = c.cpu_layout(0, s), vc = c.cpu_layout(1, s);
  std::vector<int32_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), first_pos);
  std::vector<float> out(static_cast<size_t>(n) * m.heads * m.head_dim);
  cpu::attention(q_rows.data(), q_stride, n, pos.data(), kc.data(), vc.data(), int64_t(c.lens[size_t(s)]) * m.head_dim,
                 m.heads, m.kv_heads, m.head_dim, attention_shape(m).softmax_scale, out.data(),
                 int64_t(m.heads) * m.head_dim);
  return out;
}

// Checks GPU output rows (stride got_stride, bf16) against the CPU rows: no unwritten or
// non-finite element, whole-output and per-(token, head) relative errors within the bounds
// above, and the padding columns past heads * head_dim still poisoned (never written).
void expect_close(const std::vector<bf16>& got, int64_t got_stride, size_t got_first_row, const std::vector<float>& ref,
                  const HeadShape& m, int n, const std::string& what) {
  SCOPED_TRACE(what);
  const int64_t width = int64_t(m.heads) * m.head_dim;
  std::vector<float> g(static_cast<size_t>(n) * width);
  for (int i = 0; i < n; ++i)
    for (int64_t j = 0; j < width; ++j) g[size_t(i * width + j)] = bf16_to_float(got[(got_first_row + i) * got_stride + j]);
  const ErrorStats all = compare(g, ref);
  EXPECT_EQ(all.non_finite, 0) << describe(all);
  EXPECT_LT(all.rel_fro, 1e-2) << describe(all);
  double worst = 0.0;
  int worst_row = -1, worst_head = -1;
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < m.heads; ++h) {
      double d2 = 0, r2 = 0;
      for (int j = 0; j < m.head_dim; ++j) {
        const size_t at = size_t(i * width + h * m.head_dim + j);
        d2 += double(g[at] - ref[at]) * double(g[at] - ref[at]);
        r2 += double(ref[at]) * double(ref[at]);
      }
      const double rel = std::sqrt(d2 / std::max(r2, 1e-30));
      if (!(rel <= worst)) {
        worst = rel;
        worst_row = i;
        worst_head = h;
      }
    }
  EXPECT_LT(worst, 2e-2) << "worst (token, head) row: token " << worst_row << ", head " << worst_head;
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(count_poisoned(got, (got_first_row + i) * got_stride + width, (got_first_row + i + 1) * got_stride),
              got_stride - width)
        << "padding of output row " << i << " was written";
}

struct ChunkSpec {
  int past;        // tokens already in the cache before the chunk
  int new_tokens;  // query rows of the chunk
};

// One prefill launch: chunk s is sequence s of `cache` (its keys 0 .. past + new_tokens - 1
// must be there), its query rows are the next new_tokens rows of q (row stride q_stride).
// Returns the output rows, row stride out_stride, poisoned before the launch.
std::vector<bf16> launch_prefill(const TestCache& cache, const std::vector<ChunkSpec>& chunks, const std::vector<bf16>& q,
                                 int64_t q_stride, int64_t out_stride, cudaStream_t stream) {
  std::vector<int32_t> q_start{0}, past;
  int max_q_len = 0;
  for (const auto& c : chunks) {
    q_start.push_back(q_start.back() + c.new_tokens);
    past.push_back(c.past);
    max_q_len = std::max(max_q_len, c.new_tokens);
  }
  EXPECT_EQ(q.size(), size_t(q_start.back()) * q_stride);
  DeviceArray<bf16> d_q(q, stream), d_out(size_t(q_start.back()) * out_stride);
  DeviceArray<int32_t> d_q_start(q_start, stream), d_past(past, stream);
  d_out.poison(stream);
  cuda::PrefillAttentionArgs a;
  a.shape = attention_shape(cache.m);
  a.q = d_q.get();
  a.q_row_stride = q_stride;
  a.out = d_out.get();
  a.out_row_stride = out_stride;
  a.num_seqs = int(chunks.size());
  a.q_start = d_q_start.get();
  a.kv_past = d_past.get();
  a.max_q_len = max_q_len;
  a.cache = cache.view();
  a.block_table = cache.d_table.get();
  a.max_blocks_per_seq = cache.max_blocks_per_seq;
  // A quantized cache is read through the engine's staging: its sequences' blocks dequantized
  // into a BF16 pool with the same block ids (kv_cache_dequantize_blocks), which must hold
  // exactly BF16(code x scale) in every staged row and poison everywhere else.
  DeviceArray<bf16> staged_k, staged_v;
  if (cache.elem != cuda::KvElement::bf16) {
    std::vector<int32_t> ids;
    for (int32_t id : cache.table)
      if (id >= 0) ids.push_back(id);
    const size_t n = size_t(cuda::kv_pool_elements(cache.num_blocks, cache.m.kv_heads, cache.m.head_dim));
    staged_k = DeviceArray<bf16>(n);
    staged_v = DeviceArray<bf16>(n);
    staged_k.poison(stream);
    staged_v.poison(stream);
    DeviceArray<int32_t> d_ids(ids, stream);
    const cuda::KvLayerView to{staged_k.get(), staged_v.get(), cache.num_blocks, cache.m.kv_heads, cache.m.head_dim};
    cuda::kv_cache_dequantize_blocks(cache.view(), d_ids.get(), d_ids.get(), int(ids.size()), to, stream);
    a.cache = to;
    const auto hk = staged_k.download(stream), hv = staged_v.download(stream);
    const int d = cache.m.head_dim, row = cache.m.kv_heads * d;
    int64_t bad = 0;
    for (size_t s = 0; s < cache.lens.size(); ++s)
      for (int p = 0; p < cache.lens[s]; ++p)
        for (int h = 0; h < cache.m.kv_heads; ++h) {
          const int64_t pool_row = (int64_t(cache.table[s * cache.max_blocks_per_seq + p / kKvBlockTokens]) *
                                        cache.m.kv_heads + h) * kKvBlockTokens + p % kKvBlockTokens;
          for (int e = 0; e < d; ++e) {
            const size_t at = size_t(p) * row + size_t(h) * d + e;
            bad += bf16_bits(hk[size_t(pool_row * d + e)]) != bf16_bits(float_to_bf16(cache.kq[s][at]));
            bad += bf16_bits(hv[size_t(pool_row * d + e)]) != bf16_bits(float_to_bf16(cache.vq[s][at]));
          }
        }
    EXPECT_EQ(bad, 0) << "staged BF16 rows differing from BF16(code x scale)";
    // Staged: whole blocks (the slots past a sequence's end dequantize poison codes with their
    // poison-NaN scales, which no query reads); untouched blocks stay poison.
    const int64_t staged = int64_t(ids.size()) * kKvBlockTokens * row;
    EXPECT_EQ(count_poisoned(hk, 0, hk.size()), int64_t(n) - staged);
  }
  cuda::prefill_attention(a, stream);
  return d_out.download(stream);
}

// Queries as a fused QKV projection output holds them: rows of (heads + 2 kv_heads) * head_dim;
// outputs with 8 padding columns per row that must stay untouched.
int64_t fused_qkv_stride(const HeadShape& m) { return int64_t(m.heads + 2 * m.kv_heads) * m.head_dim; }
int64_t padded_out_stride(const HeadShape& m) { return int64_t(m.heads) * m.head_dim + 8; }

// One varlen prefill launch over `chunks` (one sequence each) on fresh random data, compared
// per sequence with the CPU twin.
void run_prefill(const HeadShape& m, const std::vector<ChunkSpec>& chunks, float q_stddev, uint64_t seed,
                 cuda::KvElement elem = cuda::KvElement::bf16) {
  SCOPED_TRACE(std::string(m.name) + " " + cuda::kv_element_name(elem) + " seed " + std::to_string(seed));
  cuda::Stream stream;
  std::mt19937_64 rng(seed);
  std::vector<int> lens;
  int total = 0;
  for (const auto& c : chunks) {
    lens.push_back(c.past + c.new_tokens);
    total += c.new_tokens;
  }
  const TestCache cache(m, lens, rng, stream, elem);
  const int64_t q_stride = fused_qkv_stride(m), out_stride = padded_out_stride(m);
  const std::vector<bf16> q = random_bf16(size_t(total) * q_stride, rng, q_stddev);
  const std::vector<bf16> out = launch_prefill(cache, chunks, q, q_stride, out_stride, stream);

  const auto qf = to_float(q);
  size_t first = 0;
  for (size_t s = 0; s < chunks.size(); ++s) {
    const int n = chunks[s].new_tokens;
    if (n > 0) {
      std::vector<float> q_rows(qf.begin() + first * q_stride, qf.begin() + (first + n) * q_stride);
      const auto ref = cpu_attention(cache, int(s), q_rows, q_stride, n, chunks[s].past);
      expect_close(out, out_stride, first, ref, m, n,
                   "sequence " + std::to_string(s) + " (past " + std::to_string(chunks[s].past) + ", " +
                       std::to_string(n) + " queries)");
    }
    first += size_t(n);
  }
}

// Sequence lengths around and between tiles (64 keys, 128 query rows): 1, 17, 255, 1000, 2048,
// all in one varlen launch.
const std::vector<ChunkSpec> kPromptLengths{{0, 1}, {0, 17}, {0, 255}, {0, 1000}, {0, 2048}};

TEST(PrefillAttention, Llama2_7B_PromptLengths) {
  QF_REQUIRE_GPU();
  run_prefill(kLlama2_7B, kPromptLengths, 1.0f, fresh_seed());
}

TEST(PrefillAttention, Llama3_8B_PromptLengths) {
  QF_REQUIRE_GPU();
  run_prefill(kLlama3_8B, kPromptLengths, 1.0f, fresh_seed());
}

TEST(PrefillAttention, SmolLM2_PromptLengths) {
  QF_REQUIRE_GPU();
  run_prefill(kSmolLM2, kPromptLengths, 1.0f, fresh_seed());
}

// Chunks at an offset into a longer cache: past not a multiple of the tiles, chunks shorter
// and longer than a row tile, a single-token chunk, a chunk of exactly one row tile.
TEST(PrefillAttention, ChunkedAtOffset) {
  QF_REQUIRE_GPU();
  const std::vector<ChunkSpec> chunks{{700, 300}, {2048, 17}, {5, 1}, {64, 128}, {0, 129}, {1000, 0}};
  run_prefill(kLlama3_8B, chunks, 1.0f, fresh_seed());
  run_prefill(kSmolLM2, chunks, 1.0f, fresh_seed());
}

// Peaked softmax (q ~ N(0, 64): scores q.k / sqrt(head_dim) with standard deviation ~8): the
// running max changes between key tiles, so a missed or wrong rescale of the accumulators shows.
// A quantized cache staged to BF16 (the engine's prefill path): the reference attends over the
// dequantized values in FP32; the staging rounds them to BF16 once more (2^-9 relative per
// element, the same order as the P rounding above), so the bounds above hold.
TEST(PrefillAttention, StagedQuantizedCaches) {
  QF_REQUIRE_GPU();
  for (cuda::KvElement e : {cuda::KvElement::int4, cuda::KvElement::fp8_e4m3}) {
    run_prefill(kLlama3_8B, {{0, 700}, {300, 45}}, 1.0f, fresh_seed(), e);
    run_prefill(kSmolLM2, {{0, 129}, {17, 200}}, 1.0f, fresh_seed(), e);
  }
}

// The FP8 prefill's staging (kv_cache.h kv_cache_stage_fp8, quantize_queries_fp8) against the
// CPU: every staged K byte and V^T byte is the E4M3 code of the cached code (INT4: the integer
// q exactly; FP8: the code itself), every scale the row's F16 scale as F32, each sequence in its
// own 128-aligned region, nothing else written; queries equal formats::quantize of
// "fp8_e4m3:token" per (row, head) code for code and scale for scale. All exact.
TEST(PrefillAttention, Fp8Staging) {
  QF_REQUIRE_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  cuda::Stream stream;
  for (cuda::KvElement e : {cuda::KvElement::int4, cuda::KvElement::fp8_e4m3})
    for (const HeadShape& m : {kLlama3_8B, kSmolLM2}) {
      SCOPED_TRACE(std::string(m.name) + " " + cuda::kv_element_name(e));
      const std::vector<int> lens{300, 1, 129};
      const TestCache cache(m, lens, rng, stream, e);
      const int d = m.head_dim;
      // Regions 128-aligned, in reverse order, with a gap, through an explicit table-row map.
      const std::vector<int32_t> rows_of{2, 0, 1}, starts{0, 256, 640}, klen{129, 300, 1};
      const int64_t kv_rows = 768;
      DeviceArray<uint8_t> k8(size_t(m.kv_heads * kv_rows * d)), vt8(size_t(m.kv_heads * kv_rows * d));
      DeviceArray<float> ks(size_t(m.kv_heads * kv_rows)), vs(size_t(m.kv_heads * kv_rows));
      for (auto* p : {&k8, &vt8}) p->poison(stream);
      for (auto* p : {&ks, &vs}) p->poison(stream);
      DeviceArray<int32_t> d_rows(rows_of, stream), d_start(starts, stream), d_len(klen, stream);
      cuda::kv_cache_stage_fp8(cache.view(), cache.d_table.get(), cache.max_blocks_per_seq, d_rows.get(), d_start.get(),
                               d_len.get(), 3, 300, {k8.get(), vt8.get(), ks.get(), vs.get(), kv_rows}, stream);
      const auto hk = k8.download(stream), hv = vt8.download(stream);
      const auto hks = ks.download(stream), hvs = vs.download(stream);
      const Format fmt = Format::parse(cuda::kv_element_name(e));
      const ElementType e4m3 = ElementType::of(ElementKind::fp8_e4m3);
      int64_t bad = 0, written = 0;
      std::vector<float> x(static_cast<size_t>(d));
      for (int i = 0; i < 3; ++i) {
        const int s = rows_of[size_t(i)], row = m.kv_heads * d;
        for (int p = 0; p < klen[size_t(i)]; ++p)
          for (int h = 0; h < m.kv_heads; ++h)
            for (int kv = 0; kv < 2; ++kv) {
              const auto& src = kv == 0 ? cache.k[size_t(s)] : cache.v[size_t(s)];
              for (int j = 0; j < d; ++j) x[size_t(j)] = bf16_to_float(src[size_t(p) * row + size_t(h) * d + j]);
              const QuantizedMatrix q = quantize(x.data(), 1, d, fmt);
              const int64_t r = starts[size_t(i)] + p;
              for (int j = 0; j < d; ++j) {
                const uint32_t want = e == cuda::KvElement::int4
                                          ? encode_float_element(e4m3, float(sign_extend(q.codes[size_t(j)], 4)))
                                          : q.codes[size_t(j)];
                const uint8_t got = kv == 0 ? hk[size_t((h * kv_rows + r) * d + j)] : hv[size_t((h * d + j) * kv_rows + r)];
                bad += got != want;
              }
              uint16_t sb;
              std::memcpy(&sb, q.scales.data(), 2);
              bad += (kv == 0 ? hks : hvs)[size_t(h * kv_rows + r)] != float(__half(__half_raw{sb}));
              ++written;
            }
      }
      EXPECT_EQ(bad, 0) << "staged codes or scales differing from the cache's";
      EXPECT_EQ(count_poisoned(hks, 0, hks.size()), 2 * (int64_t(hks.size()) - written / 2));
    }
  // Queries.
  const HeadShape m = kLlama3_8B;
  const int rows = 37;
  const int64_t stride = fused_qkv_stride(m);
  std::vector<bf16> q = random_bf16(size_t(rows) * stride, rng, 3.0f);
  DeviceArray<bf16> d_q(q, stream);
  DeviceArray<uint8_t> q8(size_t(rows * m.heads * m.head_dim));
  DeviceArray<float> qs(size_t(rows * m.heads));
  cuda::quantize_queries_fp8(d_q.get(), stride, rows, m.heads, m.head_dim, q8.get(), qs.get(), stream);
  const auto h8 = q8.download(stream);
  const auto hs = qs.download(stream);
  int64_t bad = 0;
  std::vector<float> x(static_cast<size_t>(m.head_dim));
  for (int r = 0; r < rows; ++r)
    for (int h = 0; h < m.heads; ++h) {
      for (int j = 0; j < m.head_dim; ++j) x[size_t(j)] = bf16_to_float(q[size_t(r * stride + h * m.head_dim + j)]);
      const QuantizedMatrix want = quantize(x.data(), 1, m.head_dim, Format::parse("fp8_e4m3:token"));
      float want_scale;
      std::memcpy(&want_scale, want.scales.data(), 4);
      bad += hs[size_t(r * m.heads + h)] != want_scale;
      for (int j = 0; j < m.head_dim; ++j) bad += h8[size_t((r * m.heads + h) * m.head_dim + j)] != want.codes[size_t(j)];
    }
  EXPECT_EQ(bad, 0) << "query codes or scales differing from formats::quantize";
}

TEST(PrefillAttention, PeakedScores) {
  QF_REQUIRE_GPU();
  run_prefill(kLlama3_8B, {{0, 1000}, {300, 400}}, 8.0f, fresh_seed());
}

// More query heads per KV head than a decode CTA holds (16 for 1 KV head: multi-query).
TEST(PrefillAttention, MultiQuery) {
  QF_REQUIRE_GPU();
  run_prefill({"mqa-16x64", 16, 1, 64}, {{0, 300}, {77, 50}}, 1.0f, fresh_seed());
}

// A query row's result must not depend on how the prompt was chunked (each row runs the same
// key tiles in the same order; tiles and keys past its diagonal add exact zeros): a 600-token
// prompt run as chunks 0-199, 200-455, 456-599 equals the one-shot run bit for bit.
TEST(PrefillAttention, ChunkingDoesNotChangeResults) {
  QF_REQUIRE_GPU();
  const HeadShape m = kLlama3_8B;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  cuda::Stream stream;
  std::mt19937_64 rng(seed);
  const TestCache cache(m, {600}, rng, stream);
  const int64_t q_stride = fused_qkv_stride(m), out_stride = padded_out_stride(m);
  const std::vector<bf16> q = random_bf16(size_t(600) * q_stride, rng);
  const auto whole = launch_prefill(cache, {{0, 600}}, q, q_stride, out_stride, stream);
  const int cuts[] = {0, 200, 456, 600};
  for (int c = 0; c < 3; ++c) {
    SCOPED_TRACE("chunk " + std::to_string(c));
    const int n = cuts[c + 1] - cuts[c];
    // The cache holds all 600 tokens; the chunk's key count is past + n, so later keys are
    // never read for it.
    const std::vector<bf16> q_chunk(q.begin() + size_t(cuts[c]) * q_stride, q.begin() + size_t(cuts[c + 1]) * q_stride);
    const auto part = launch_prefill(cache, {{cuts[c], n}}, q_chunk, q_stride, out_stride, stream);
    int64_t mismatches = 0;
    for (int i = 0; i < n; ++i)
      for (int64_t j = 0; j < int64_t(m.heads) * m.head_dim; ++j)
        mismatches += bf16_bits(part[size_t(i) * out_stride + j]) != bf16_bits(whole[size_t(cuts[c] + i) * out_stride + j]);
    EXPECT_EQ(mismatches, 0);
  }
}

// ---- decode ----------------------------------------------------------------------------------

// One decode launch: sequence s holds lens[s] tokens and its query sits at position lens[s]-1.
// Runs with each split count in `splits` (0: decode_attention_num_splits' choice).
void run_decode(const HeadShape& m, const std::vector<int>& lens, const std::vector<int>& splits, uint64_t seed,
                cuda::KvElement elem = cuda::KvElement::bf16) {
  SCOPED_TRACE(std::string(m.name) + " " + cuda::kv_element_name(elem) + " seed " + std::to_string(seed));
  cuda::Stream stream;
  std::mt19937_64 rng(seed);
  TestCache cache(m, lens, rng, stream, elem);
  const int n = int(lens.size());
  const int64_t q_stride = fused_qkv_stride(m), out_stride = padded_out_stride(m);
  const std::vector<bf16> q = random_bf16(size_t(n) * q_stride, rng);
  DeviceArray<bf16> d_q(q, stream), d_out(size_t(n) * out_stride);
  DeviceArray<int32_t> d_lens(std::vector<int32_t>(lens.begin(), lens.end()), stream);
  const auto qf = to_float(q);
  const int max_len = *std::max_element(lens.begin(), lens.end());

  for (int requested : splits) {
    const auto shape = attention_shape(m);
    const int num_splits = requested > 0 ? requested
                                         : cuda::decode_attention_num_splits(n, shape, max_len, cuda::device_info().sm_count, elem);
    SCOPED_TRACE("num_splits " + std::to_string(num_splits));
    cuda::DeviceBuffer workspace(cuda::decode_attention_workspace_bytes(n, shape, num_splits), "decode workspace");
    cuda::fill_u16(workspace.data(), kPoisonBits, workspace.size() / 2, stream);
    d_out.poison(stream);
    cuda::DecodeAttentionArgs a;
    a.shape = shape;
    a.q = d_q.get();
    a.q_row_stride = q_stride;
    a.out = d_out.get();
    a.out_row_stride = out_stride;
    a.num_seqs = n;
    a.seq_lens = d_lens.get();
    a.cache = cache.view();
    a.block_table = cache.d_table.get();
    a.max_blocks_per_seq = cache.max_blocks_per_seq;
    a.num_splits = num_splits;
    a.workspace = workspace.data();
    cuda::decode_attention(a, stream);
    const auto out = d_out.download(stream);
    for (int s = 0; s < n; ++s) {
      const int64_t width = int64_t(m.heads) * m.head_dim;
      if (lens[size_t(s)] == 0) {
        int64_t nonzero = 0;
        for (int64_t j = 0; j < width; ++j) nonzero += bf16_to_float(out[size_t(s) * out_stride + j]) != 0.0f;
        EXPECT_EQ(nonzero, 0) << "an empty sequence must give a zero row";
        continue;
      }
      std::vector<float> q_row(qf.begin() + size_t(s) * q_stride, qf.begin() + size_t(s + 1) * q_stride);
      const auto ref = cpu_attention(cache, s, q_row, q_stride, 1, lens[size_t(s)] - 1);
      expect_close(out, out_stride, size_t(s), ref, m, 1, "sequence " + std::to_string(s) + " of length " +
                                                             std::to_string(lens[size_t(s)]));
    }
  }
}

// Lengths 1 (one key), 33 (two chunks and one key), 4097 (one key past a power of two), a length
// inside one block, and an empty padding row; split counts 1, the heuristic's, and the maximum
// (most splits then hold no key at all for the short sequences).
const std::vector<int> kDecodeLengths{1, 33, 4097, 7, 0, 1000};
const std::vector<int> kDecodeSplits{1, 0, cuda::kDecodeMaxSplits};

TEST(DecodeAttention, Llama2_7B) {
  QF_REQUIRE_GPU();
  run_decode(kLlama2_7B, kDecodeLengths, kDecodeSplits, fresh_seed());
}

TEST(DecodeAttention, Llama3_8B) {
  QF_REQUIRE_GPU();
  run_decode(kLlama3_8B, kDecodeLengths, kDecodeSplits, fresh_seed());
}

TEST(DecodeAttention, SmolLM2) {
  QF_REQUIRE_GPU();
  run_decode(kSmolLM2, kDecodeLengths, kDecodeSplits, fresh_seed());
}

// Group of 16 query heads per KV head: two CTAs per KV head, 8 heads each.
TEST(DecodeAttention, MultiQuery) {
  QF_REQUIRE_GPU();
  run_decode({"mqa-16x64", 16, 1, 64}, {1, 500, 129}, {1, 0, 7}, fresh_seed());
}

// The quantized caches (kv_element.h): the kernel against the CPU twin over the dequantized rows
// (formats::quantize per token and KV head). The reference is exact in FP32 on those values and
// the kernel's decode arithmetic is FP32 throughout (code x scale folded into the dot product and
// the probability), so the bounds above (set by the BF16 output rounding) apply unchanged; a
// wrong nibble order, scale or page breaks them by far.
TEST(DecodeAttention, Int4Cache) {
  QF_REQUIRE_GPU();
  for (const HeadShape& m : {kLlama2_7B, kLlama3_8B, kSmolLM2})
    run_decode(m, kDecodeLengths, kDecodeSplits, fresh_seed(), cuda::KvElement::int4);
  run_decode({"mqa-16x64", 16, 1, 64}, {1, 500, 129}, {1, 0, 7}, fresh_seed(), cuda::KvElement::int4);
}

TEST(DecodeAttention, Fp8Cache) {
  QF_REQUIRE_GPU();
  for (const HeadShape& m : {kLlama2_7B, kLlama3_8B, kSmolLM2})
    run_decode(m, kDecodeLengths, kDecodeSplits, fresh_seed(), cuda::KvElement::fp8_e4m3);
}

// Batch 1 at long context, where the split is what fills the GPU.
TEST(DecodeAttention, LongContextBatchOne) {
  QF_REQUIRE_GPU();
  run_decode(kLlama3_8B, {16384}, {0}, fresh_seed());
}

TEST(DecodeAttention, SplitHeuristic) {
  const cuda::AttentionShape llama3{32, 8, 128, 0.088f};
  // Batch 1 x 8 KV heads on 132 SMs: ceil(264 / 8) = 33 splits when the context allows it.
  EXPECT_EQ(cuda::decode_attention_num_splits(1, llama3, 8192, 132), 33);
  // ... but never splits under 128 keys: 4096 keys give at most 32, 1000 keys at most 8.
  EXPECT_EQ(cuda::decode_attention_num_splits(1, llama3, 4096, 132), 32);
  EXPECT_EQ(cuda::decode_attention_num_splits(1, llama3, 1000, 132), 8);
  // A batch that fills the GPU on its own is not split.
  EXPECT_EQ(cuda::decode_attention_num_splits(64, llama3, 4096, 132), 1);
  // Capped at kDecodeMaxSplits.
  const cuda::AttentionShape mqa{8, 1, 128, 0.088f};
  EXPECT_EQ(cuda::decode_attention_num_splits(1, mqa, 1 << 20, 132), cuda::kDecodeMaxSplits);
}

// The benchmark runs end to end on small cases (its numbers are for `qforge bench attention`).
TEST(AttentionBench, RunsSmallCases) {
  QF_REQUIRE_GPU();
  cuda::AttentionBenchOptions o;
  o.models = {"smollm2-135m"};
  o.prefill = {{2, 300, 0}, {1, 100, 200}};
  o.decode = {{3, 1000}};
  o.target_ms = 1.0;
  o.min_reps = 2;
  o.max_reps = 5;
  const auto r = cuda::run_attention_bench(o);
  EXPECT_TRUE(r.errors.empty()) << (r.errors.empty() ? std::string() : r.errors.front());
  // Each prefill case in BF16 and FP8 (2 and 3 stages), the decode case over bf16, int4 and fp8 caches.
  ASSERT_EQ(r.rows.size(), size_t(9));
  for (const auto& row : r.rows) {
    EXPECT_GT(row.median_us, 0.0) << row.kind;
    EXPECT_GT(row.flops, 0.0);
  }
  EXPECT_EQ(r.rows[1].kind, "prefill-fp8-2st");
  EXPECT_EQ(r.rows[7].kind, "decode-int4");
  EXPECT_EQ(r.rows[8].kind, "decode-fp8");
  // The quantized rows count their own bytes: INT4 (32 + 2 bytes a row) against BF16 (128).
  EXPECT_NEAR(r.rows[7].bytes / r.rows[6].bytes, 34.0 / 128.0, 0.02);
  EXPECT_GT(r.rows[7].vs_bf16, 0.0);
  // 2 sequences x (300 * 301 / 2 pairs) x 9 heads x 4 x 64 FLOPs.
  EXPECT_DOUBLE_EQ(r.rows[0].flops, 2.0 * 300 * 301 / 2 * 9 * 4 * 64);
  EXPECT_FALSE(cuda::attention_bench_table(r).empty());
  EXPECT_NE(cuda::attention_bench_json(r).find("\"decode\""), std::string::npos);
}

TEST(AttentionArgs, RejectsBadShapes) {
  // Checked before anything touches the device, so this runs without a GPU too.
  cuda::KvLayerView cache{reinterpret_cast<bf16*>(256), reinterpret_cast<bf16*>(512), 4, 8, 128};
  cuda::AttentionShape shape{32, 8, 96, 0.1f};
  EXPECT_THROW(cuda::check_attention_shape(shape, cache, "test"), Error);  // head_dim 96
  shape = {30, 8, 128, 0.1f};
  EXPECT_THROW(cuda::check_attention_shape(shape, cache, "test"), Error);  // 30 % 8 != 0
  shape = {32, 4, 128, 0.1f};
  EXPECT_THROW(cuda::check_attention_shape(shape, cache, "test"), Error);  // cache has 8 KV heads
  shape = {32, 8, 128, 0.1f};
  EXPECT_NO_THROW(cuda::check_attention_shape(shape, cache, "test"));
}

}  // namespace
}  // namespace qf::testing
