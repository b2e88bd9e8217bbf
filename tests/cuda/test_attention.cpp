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

struct HeadShape {
  const char* name;
  int heads, kv_heads, head_dim;
};
constexpr HeadShape kLlama2_7B{"llama2-7b", 32, 32, 128};
constexpr HeadShape kLlama3_8B{"llama3-8b", 32, 8, 128};
constexpr HeadShape kSmolLM2{"smollm2-135m", 9, 3, 64};

cuda::AttentionShape attention_shape(const HeadShape& m) {
  return {m.heads, m.kv_heads, m.head_dim, 1.0f / std::sqrt(float(m.head_dim))};
}

// A paged cache holding random K/V for several sequences, filled through kv_cache_append (from
// rows with padding between them, as a fused QKV output has), with blocks assigned in a random
// permutation so that every tile read goes through the table. The pools start poisoned: a
// kernel reading a row nobody appended gets NaN.
struct TestCache {
  HeadShape m;
  std::vector<int> lens;
  std::vector<std::vector<bf16>> k, v;  // per sequence [len][kv_heads * head_dim]
  int max_blocks_per_seq = 0;
  std::vector<int32_t> table;  // [num_seqs][max_blocks_per_seq], -1 where unused
  int64_t num_blocks = 0;
  DeviceArray<bf16> k_pool, v_pool;
  DeviceArray<int32_t> d_table;

  TestCache(const HeadShape& shape, std::vector<int> seq_lens, std::mt19937_64& rng, cudaStream_t stream)
      : m(shape), lens(std::move(seq_lens)) {
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
      cuda::kv_cache_append(dk.get(), stride, dv.get(), stride, dslots.get(), int(slots.size()), view(), stream);
      QF_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
  }

  cuda::KvLayerView view() const { return {k_pool.get(), v_pool.get(), num_blocks, m.kv_heads, m.head_dim}; }

  // Sequence s's keys or values in the CPU twin's layout: [kv_heads][len][head_dim] floats.
  std::vector<float> cpu_layout(const std::vector<bf16>& rows, int s) const {
    const int len = lens[size_t(s)], d = m.head_dim, row = m.kv_heads * d;
    std::vector<float> out(static_cast<size_t>(m.kv_heads) * len * d);
    for (int h = 0; h < m.kv_heads; ++h)
      for (int p = 0; p < len; ++p)
        for (int j = 0; j < d; ++j)
          out[(size_t(h) * len + p) * d + j] = bf16_to_float(rows[size_t(p) * row + size_t(h) * d + j]);
    return out;
  }
};

// The CPU twin's output for queries q_rows ([n][q_stride] floats, heads first) of sequence s
// at positions first_pos .. first_pos + n - 1.
std::vector<float> cpu_attention(const TestCache& c, int s, const std::vector<float>& q_rows, int64_t q_stride,
                                 int n, int first_pos) {
  const HeadShape& m = c.m;
  const auto kc = c.cpu_layout(c.k[size_t(s)], s), vc = c.cpu_layout(c.v[size_t(s)], s);
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
  cuda::prefill_attention(a, stream);
  return d_out.download(stream);
}

// Queries as a fused QKV projection output holds them: rows of (heads + 2 kv_heads) * head_dim;
// outputs with 8 padding columns per row that must stay untouched.
int64_t fused_qkv_stride(const HeadShape& m) { return int64_t(m.heads + 2 * m.kv_heads) * m.head_dim; }
int64_t padded_out_stride(const HeadShape& m) { return int64_t(m.heads) * m.head_dim + 8; }

// One varlen prefill launch over `chunks` (one sequence each) on fresh random data, compared
// per sequence with the CPU twin.
void run_prefill(const HeadShape& m, const std::vector<ChunkSpec>& chunks, float q_stddev, uint64_t seed) {
  SCOPED_TRACE(std::string(m.name) + " seed " + std::to_string(seed));
  cuda::Stream stream;
  std::mt19937_64 rng(seed);
  std::vector<int> lens;
  int total = 0;
  for (const auto& c : chunks) {
    lens.push_back(c.past + c.new_tokens);
    total += c.new_tokens;
  }
  const TestCache cache(m, lens, rng, stream);
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
void run_decode(const HeadShape& m, const std::vector<int>& lens, const std::vector<int>& splits, uint64_t seed) {
  SCOPED_TRACE(std::string(m.name) + " seed " + std::to_string(seed));
  cuda::Stream stream;
  std::mt19937_64 rng(seed);
  TestCache cache(m, lens, rng, stream);
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
                                         : cuda::decode_attention_num_splits(n, shape, max_len, cuda::device_info().sm_count);
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
  ASSERT_EQ(r.rows.size(), size_t(3));
  for (const auto& row : r.rows) {
    EXPECT_GT(row.median_us, 0.0) << row.kind;
    EXPECT_GT(row.flops, 0.0);
  }
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
