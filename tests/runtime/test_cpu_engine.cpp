// The CPU engine on tiny random models built in memory: against a double-precision reference
// forward, and the KV-cache / batching invariances the runtime relies on.
#include <gtest/gtest.h>

#include <functional>

#include <atomic>
#include <cmath>

#include "core/error.h"
#include "io/quantized_checkpoint.h"
#include "runtime/cpu_engine.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

using test::Mat;
using test::TinyOptions;
using test::tiny_checkpoint;

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % vocab);
  return t;
}

Tensor run_all(Engine& e, int slot, const std::vector<int32_t>& tokens) {
  Batch b;
  b.add_sequence(slot, int32_t(e.slot_length(slot)), tokens, Batch::Logits::All);
  return e.forward(b);
}

std::vector<float> row(const Tensor& logits, int64_t r) {
  const int64_t v = logits.dim(1);
  return std::vector<float>(logits.data<float>() + r * v, logits.data<float>() + (r + 1) * v);
}

// Logits of FP32 math vs the double reference: weights ~1/sqrt(in), O(1) activations over a
// few layers of ~50-80-term sums keep the FP32 error near 1e-6; 1e-4 absolute leaves margin
// while any real mistake (a wrong pairing, mask, head mapping or norm) moves logits by >1e-2.
void expect_matches_reference(const Checkpoint& ck, const std::vector<int32_t>& tokens) {
  CpuEngine engine(ck, 1, 256);
  const Tensor logits = run_all(engine, 0, tokens);
  const Mat ref = test::reference_forward(ck, tokens);
  ASSERT_EQ(logits.dim(0), int64_t(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int64_t j = 0; j < logits.dim(1); ++j)
      ASSERT_NEAR(logits.data<float>()[i * logits.dim(1) + j], ref[i][j], 1e-4) << "position " << i << " token " << j;
}

TEST(CpuEngine, MatchesDoubleReferenceForward) {
  const auto ck = tiny_checkpoint({});
  expect_matches_reference(ck, random_tokens(40, 61, 1));
}
TEST(CpuEngine, MatchesReferenceWithBiasTiedEmbeddingsAndBf16Weights) {
  TinyOptions o;
  o.bias = true;
  o.tied = true;
  o.bf16 = true;
  o.layers = 3;
  o.seed = 5;
  expect_matches_reference(tiny_checkpoint(o), random_tokens(33, 61, 2));
}
TEST(CpuEngine, MatchesReferenceWithoutGrouping) {
  TinyOptions o;
  o.kv_heads = o.heads;  // plain multi-head attention
  o.seed = 9;
  expect_matches_reference(tiny_checkpoint(o), random_tokens(20, 61, 3));
}

TEST(CpuEngine, IncrementalDecodingEqualsOneFullForward) {
  // Promised bit for bit (cpu_engine.h): every op computes a row independently of the others.
  const auto ck = tiny_checkpoint({});
  const auto tokens = random_tokens(50, 61, 4);
  CpuEngine full(ck, 1, 256), step(ck, 1, 256);
  const Tensor all = run_all(full, 0, tokens);
  // A 17-token prefill, then chunks of 1, 5 and 1... tokens from the cache.
  std::vector<Tensor> parts;
  int64_t done = 0;
  for (int64_t len : {17, 1, 5, 1, 1, 25}) {
    parts.push_back(run_all(step, 0, std::vector<int32_t>(tokens.begin() + done, tokens.begin() + done + len)));
    done += len;
  }
  ASSERT_EQ(done, 50);
  int64_t r = 0;
  for (const Tensor& p : parts)
    for (int64_t i = 0; i < p.dim(0); ++i, ++r) ASSERT_EQ(row(p, i), row(all, r)) << "position " << r;
  EXPECT_EQ(step.slot_length(0), 50);
}

TEST(CpuEngine, BatchOfSequencesEqualsThemOneByOne) {
  const auto ck = tiny_checkpoint({});
  const auto a = random_tokens(30, 61, 5), b = random_tokens(12, 61, 6), c = random_tokens(7, 61, 7);
  CpuEngine single(ck, 1, 256);
  const Tensor la = run_all(single, 0, a);
  single.reset(0);
  const Tensor lb = run_all(single, 0, b);
  single.reset(0);
  const Tensor lc = run_all(single, 0, c);

  // Slots 2, 0, 1 in one call, tokens interleaved, only some logits wanted.
  CpuEngine batched(ck, 3, 256);
  Batch batch;
  for (size_t i = 0; i < 30; ++i) {
    if (i < b.size()) batch.add(b[i], int32_t(i), 0, true);
    batch.add(a[i], int32_t(i), 2, i % 3 == 0);
    if (i < c.size()) batch.add(c[i], int32_t(i), 1, i + 1 == c.size());
  }
  const Tensor out = batched.forward(batch);
  int64_t r = 0;
  for (int64_t i = 0; i < batch.size(); ++i) {
    if (!batch.want_logits[i]) continue;
    const Tensor& ref = batch.slots[i] == 2 ? la : batch.slots[i] == 0 ? lb : lc;
    ASSERT_EQ(row(out, r), row(ref, batch.positions[i])) << "batch token " << i;
    ++r;
  }
  EXPECT_EQ(r, out.dim(0));
  // Then one decode step of each sequence in one call continues each correctly.
  const int32_t next_a = 3, next_b = 4;
  Batch step;
  step.add(next_b, 12, 0, true);
  step.add(next_a, 30, 2, true);
  const Tensor s = batched.forward(step);
  auto ea = a, eb = b;
  ea.push_back(next_a);
  eb.push_back(next_b);
  CpuEngine ref(ck, 1, 256);
  EXPECT_EQ(row(s, 1), row(run_all(ref, 0, ea), 30));
  ref.reset(0);
  EXPECT_EQ(row(s, 0), row(run_all(ref, 0, eb), 12));
}

TEST(CpuEngine, TruncateRewindsTheCache) {
  const auto ck = tiny_checkpoint({});
  const auto t = random_tokens(20, 61, 8);
  CpuEngine e(ck, 1, 64);
  run_all(e, 0, t);
  e.truncate(0, 10);
  EXPECT_EQ(e.slot_length(0), 10);
  auto alt = std::vector<int32_t>(t.begin() + 10, t.end());
  alt[0] = (alt[0] + 1) % 61;  // a different continuation
  const Tensor cont = run_all(e, 0, alt);
  auto full = std::vector<int32_t>(t.begin(), t.begin() + 10);
  full.insert(full.end(), alt.begin(), alt.end());
  CpuEngine ref(ck, 1, 64);
  const Tensor lr = run_all(ref, 0, full);
  for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(row(cont, i), row(lr, 10 + i));
  EXPECT_THROW(e.truncate(0, 21), Error);
}

TEST(CpuEngine, RejectsMalformedBatches) {
  const auto ck = tiny_checkpoint({});
  CpuEngine e(ck, 2, 8);
  Batch gap;
  gap.add(1, 1, 0, true);  // slot 0 is empty: the first token must be at position 0
  EXPECT_THROW(e.forward(gap), Error);
  Batch bad_slot;
  bad_slot.add(1, 0, 2, true);
  EXPECT_THROW(e.forward(bad_slot), Error);
  Batch bad_token;
  bad_token.add(61, 0, 0, true);
  EXPECT_THROW(e.forward(bad_token), Error);
  Batch full;
  full.add_sequence(1, 0, std::vector<int32_t>(9, 1), Batch::Logits::Last);
  try {
    e.forward(full);
    FAIL() << "9 tokens in an 8-token slot must throw";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("full"), std::string::npos) << err.what();
  }
  EXPECT_EQ(e.slot_length(0), 0) << "a rejected batch leaves the cache untouched";
}

TEST(CpuEngine, LinearFactoryReplacesEveryLayer) {
  // The seam quantized layers plug into: every projection (7 per layer) and the LM head.
  const auto ck = tiny_checkpoint({});
  std::atomic<int> made{0};
  std::vector<std::string> seen;
  LinearFactory factory = [&](const std::string& name, const Tensor& w, const Tensor& b) {
    ++made;
    seen.push_back(name);
    return make_dense_linear(name, w, b);
  };
  CpuEngine e(ck, 1, 16, factory);
  EXPECT_EQ(made.load(), 2 * 7 + 1);
  EXPECT_NE(std::find(seen.begin(), seen.end(), names::lm_head()), seen.end());
  EXPECT_NE(std::find(seen.begin(), seen.end(), names::layer(1, "mlp.down_proj.weight")), seen.end());
}

TEST(CpuEngine, ScaledRopeKindsRunAndDiffer) {
  // The engine feeds rope_frequencies' table to the rotation (kinds themselves are checked in
  // test_rope_frequencies): a linear factor must change the logits from position 1 on only.
  TinyOptions o;
  const auto plain = tiny_checkpoint(o);
  o.rope.type = RopeScalingType::Linear;
  o.rope.factor = 4.0;
  const auto scaled = tiny_checkpoint(o);
  const auto t = random_tokens(6, 61, 10);
  CpuEngine a(plain, 1, 16), b(scaled, 1, 16);
  const Tensor la = run_all(a, 0, t), lb = run_all(b, 0, t);
  EXPECT_EQ(row(la, 0), row(lb, 0)) << "position 0 is not rotated";
  EXPECT_NE(row(la, 3), row(lb, 3));
}

}  // namespace
}  // namespace qf

namespace qf {
namespace {

// The largest |a - b| over two F32 tensors of the same shape.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a.data<float>()[i] - b.data<float>()[i])));
  return m;
}

// A simulated rounding `round` (applied to an engine) against the exact engine on 24 tokens of
// the tiny model: it changes the logits by more than `min_diff` (it really rounds) and less than
// `max_diff`, and, being per (token, head) row, decoding the last 14 tokens one call after the
// first 10 gives the same logits as the full forward.
void expect_per_row_rounding(const std::function<void(CpuEngine&)>& round, uint64_t seed, double min_diff,
                             double max_diff) {
  const auto ck = tiny_checkpoint({});
  const auto t = random_tokens(24, 61, seed);
  CpuEngine exact(ck, 1, 32), rounded(ck, 1, 32), steps(ck, 1, 32);
  round(rounded);
  round(steps);
  const Tensor a = run_all(exact, 0, t), b = run_all(rounded, 0, t);
  const double diff = max_abs_diff(a, b);
  EXPECT_GT(diff, min_diff) << "the values must actually be rounded";
  EXPECT_LT(diff, max_diff);
  run_all(steps, 0, std::vector<int32_t>(t.begin(), t.begin() + 10));
  const Tensor rest = run_all(steps, 0, std::vector<int32_t>(t.begin() + 10, t.end()));
  for (int64_t i = 0; i < rest.dim(0); ++i) ASSERT_EQ(row(rest, i), row(b, 10 + i));
}

TEST(CpuEngine, KvCacheFormatRoundsCachedVectors) {
  // F16 keeps 11 significant bits: K/V move by ~2^-12 relative, logits by ~1e-4..1e-3.
  expect_per_row_rounding([](CpuEngine& e) { e.set_kv_cache_format(Format::parse("f16")); }, 11, 1e-6, 1e-2);
  CpuEngine exact(tiny_checkpoint({}), 1, 32);
  EXPECT_THROW(exact.set_kv_cache_format(Format::parse("int8:tensor")), Error);
}

TEST(CpuEngine, QueryFormatRoundsQueries) {
  // E4M3 keeps 4 significant bits: queries move by up to 2^-4 relative, logits by ~1e-2.
  expect_per_row_rounding([](CpuEngine& e) { e.set_query_format(Format::parse("fp8_e4m3:token")); }, 12, 1e-5, 0.5);
  CpuEngine exact(tiny_checkpoint({}), 1, 32);
  EXPECT_THROW(exact.set_query_format(Format::parse("int8:tensor")), Error);
  EXPECT_THROW(exact.set_query_format(Format::parse("int8:g5")), Error);  // 5 does not divide head_dim 8
}

// A checkpoint carrying k_post_rope_scale tensors (FireQ's post-RoPE scale): keys * s, queries
// / s after RoPE keep every score, so the unrounded model is unchanged; with an INT4 KV cache
// the scale changes what is rounded, so the logits differ (the engine really applies it).
TEST(CpuEngine, PostRopeScaleKeepsTheFunctionAndChangesTheRounding) {
  TinyOptions o;
  o.bias = true;
  const auto ck = tiny_checkpoint(o);
  const auto t = random_tokens(24, 61, 13);
  const int64_t kv_dim = ck.config.num_kv_heads * ck.config.head_dim;
  Checkpoint scaled = ck;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t l = 0; l < ck.config.num_layers; ++l) {
    Tensor s = Tensor::empty(DType::F32, {kv_dim});
    for (int64_t i = 0; i < kv_dim; ++i) s.data_mut<float>()[i] = std::exp(1.5f * nd(rng));  // ~e^{+-3}
    scaled.tensors[k_post_rope_scale_name(l)] = s;
  }
  CpuEngine plain(ck, 1, 32), with(scaled, 1, 32);
  const Tensor a = run_all(plain, 0, t), b = run_all(with, 0, t);
  double max_diff = 0, max_logit = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(a.data<float>()[i] - b.data<float>()[i])));
    max_logit = std::max(max_logit, double(std::abs(a.data<float>()[i])));
  }
  // F32 rounding of k * s and q / s (an ulp each) through two blocks: ~1e-6 of the logits;
  // a scale applied to one side only moves them by tens of percent.
  EXPECT_LT(max_diff, 1e-5 * max_logit);
  CpuEngine plain4(ck, 1, 32), with4(scaled, 1, 32);
  plain4.set_kv_cache_format(Format::parse("int4:token:scale=f16"));
  with4.set_kv_cache_format(Format::parse("int4:token:scale=f16"));
  const Tensor c = run_all(plain4, 0, t), d = run_all(with4, 0, t);
  double diff4 = 0;
  for (int64_t i = 0; i < c.numel(); ++i) diff4 = std::max(diff4, double(std::abs(c.data<float>()[i] - d.data<float>()[i])));
  EXPECT_GT(diff4, 1e-3) << "the post-RoPE scale must change what the INT4 cache rounds";
  Checkpoint bad = scaled;
  bad.tensors[k_post_rope_scale_name(1)] = Tensor::empty(DType::F32, {kv_dim - 1});
  EXPECT_THROW({ CpuEngine e(bad, 1, 32); }, Error);
  bad = scaled;
  Tensor z = Tensor::empty(DType::F32, {kv_dim});
  std::fill(z.data_mut<float>(), z.data_mut<float>() + kv_dim, 1.0f);
  z.data_mut<float>()[2] = 0.0f;
  bad.tensors[k_post_rope_scale_name(0)] = z;
  EXPECT_THROW({ CpuEngine e(bad, 1, 32); }, Error);
}

}  // namespace
}  // namespace qf
