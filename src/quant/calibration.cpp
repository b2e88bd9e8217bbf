#include "quant/calibration.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "backends/cpu/attention.h"
#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/rope.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/convert.h"
#include "quant/smooth.h"

namespace qf {

// ---- windows -----------------------------------------------------------------------------------

std::vector<std::vector<int32_t>> draw_calibration_windows(std::span<const int32_t> tokens, int64_t samples,
                                                           int64_t seqlen, uint64_t seed) {
  QF_CHECK(samples >= 1, "calibration: the number of samples must be >= 1, got ", samples);
  QF_CHECK(seqlen >= 1, "calibration: the window length must be >= 1 token, got ", seqlen);
  const int64_t n = int64_t(tokens.size());
  QF_CHECK(n >= seqlen, "calibration: the text has ", n, " tokens, fewer than one window of ", seqlen,
           "; use a longer text or a shorter --seqlen");
  std::mt19937_64 rng(seed);
  const uint64_t starts = uint64_t(n - seqlen + 1);
  std::vector<std::vector<int32_t>> windows;
  windows.reserve(size_t(samples));
  for (int64_t i = 0; i < samples; ++i) {
    const int64_t start = int64_t(rng() % starts);
    windows.emplace_back(tokens.begin() + start, tokens.begin() + start + seqlen);
  }
  return windows;
}

// ---- linear inputs -----------------------------------------------------------------------------

const char* linear_input_name(LinearInput input) {
  switch (input) {
    case LinearInput::attention_in: return "attention_in";
    case LinearInput::attention_out: return "attention_out";
    case LinearInput::mlp_in: return "mlp_in";
    case LinearInput::mlp_act: return "mlp_act";
  }
  return "?";
}

LinearInput input_of(LinearKind kind) {
  switch (kind) {
    case LinearKind::q_proj: case LinearKind::k_proj: case LinearKind::v_proj: return LinearInput::attention_in;
    case LinearKind::o_proj: return LinearInput::attention_out;
    case LinearKind::gate_proj: case LinearKind::up_proj: return LinearInput::mlp_in;
    case LinearKind::down_proj: return LinearInput::mlp_act;
  }
  QF_ASSERT(false);
}

std::vector<LinearKind> linears_reading(LinearInput input) {
  std::vector<LinearKind> out;
  for (LinearKind k : kAllLinearKinds)
    if (input_of(k) == input) out.push_back(k);
  return out;
}

// ---- statistics --------------------------------------------------------------------------------

namespace {

// Histogram bin of |x| (see calibration.h): the float's biased exponent and top two mantissa
// bits, (bits >> 21) & 0x3FF, counts quarter-ish octaves from 0; shift it so bin 1 starts at
// 2^kHistogramMinExp2 and clamp.
int histogram_bin(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x) & 0x7FFFFFFFu;
  if (bits == 0) return 0;
  const int quarter = int(bits >> 21);  // 4 * biased exponent + top two mantissa bits
  const int first = 4 * (127 + kHistogramMinExp2);
  return std::clamp(quarter - first + 1, 0, kHistogramBins - 1);
}

// The upper edge of bin b (b >= 1): mantissa 1 + (sub + 1) / 4 of octave (b - 1) / 4.
float histogram_bin_upper(int b) {
  const int octave = (b - 1) / 4 + kHistogramMinExp2, sub = (b - 1) % 4;
  return std::ldexp(1.0f + float(sub + 1) / 4.0f, octave);
}

// Rows of H per task of the lower-triangle GEMM.
constexpr int64_t kHessianRowBlock = 32;

class StatsAccumulator {
 public:
  explicit StatsAccumulator(int64_t channels) {
    s_.channels = channels;
    s_.hessian.assign(size_t(channels * channels), 0.0);
    s_.channel_absmax.assign(size_t(channels), 0.0f);
    s_.channel_histogram.assign(size_t(channels * kHistogramBins), 0);
  }

  // x: m tokens of `channels` values.
  void add(const float* x, int64_t m) {
    const int64_t c = s_.channels;
    for (int64_t i = 0; i < m * c; ++i)
      QF_CHECK(std::isfinite(x[i]), "calibration: a linear input value is ", x[i], " (token ", s_.tokens + i / c,
               ", channel ", i % c, "); the model's activations overflowed");
    add_hessian(x, m);
    // Per channel: absmax and histogram, a block of channels per task (each task owns its
    // channels' counters, so no merging is needed).
    parallel_for(c, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t t = 0; t < m; ++t) {
        const float* row = x + t * c;
        for (int64_t j = c0; j < c1; ++j) {
          const float v = std::fabs(row[j]);
          s_.channel_absmax[size_t(j)] = std::max(s_.channel_absmax[size_t(j)], v);
          ++s_.channel_histogram[size_t(j * kHistogramBins + histogram_bin(v))];
        }
      }
    });
    for (int64_t t = 0; t < m; ++t) {
      const float* row = x + t * c;
      const auto [lo, hi] = std::minmax_element(row, row + c);
      s_.token_min.push_back(*lo);
      s_.token_max.push_back(*hi);
    }
    s_.tokens += m;
  }

  ActivationStats finish() && {
    const int64_t c = s_.channels;
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = i + 1; j < c; ++j) s_.hessian[size_t(i * c + j)] = s_.hessian[size_t(j * c + i)];
    return std::move(s_);
  }

 private:
  // H[i, j] += sum_t x[t, i] x[t, j] for j <= i: an F32 GEMM of the transposed chunk with itself,
  // a block of rows of H at a time, added into the double H.
  void add_hessian(const float* x, int64_t m) {
    const int64_t c = s_.channels;
    std::vector<float> xt(size_t(c * m));
    for (int64_t t = 0; t < m; ++t)
      for (int64_t j = 0; j < c; ++j) xt[size_t(j * m + t)] = x[t * c + j];
    const int64_t blocks = (c + kHessianRowBlock - 1) / kHessianRowBlock;
    // Task k takes block (blocks - 1 - k): the largest rows of the triangle are handed out first,
    // so the pool's dynamic scheduling balances them.
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> tile;
      for (int64_t k = b0; k < b1; ++k) {
        const int64_t block = blocks - 1 - k;
        const int64_t i0 = block * kHessianRowBlock, i1 = std::min(c, i0 + kHessianRowBlock);
        tile.resize(size_t((i1 - i0) * i1));
        cpu::gemm(i1 - i0, i1, m, xt.data() + i0 * m, m, xt.data(), DType::F32, m, cpu::BLayout::NK, tile.data(), i1,
                  /*parallel=*/false);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = 0; j <= i; ++j) s_.hessian[size_t(i * c + j)] += double(tile[size_t((i - i0) * i1 + j)]);
      }
    });
  }

  ActivationStats s_;
};

}  // namespace

float ActivationStats::channel_percentile(int64_t channel, double q) const {
  QF_CHECK(channel >= 0 && channel < channels, "channel_percentile: channel ", channel, " of ", channels);
  QF_CHECK(q >= 0 && q <= 1, "channel_percentile: q = ", q, " is not in [0, 1]");
  if (tokens == 0) return 0;
  const uint32_t* h = channel_histogram.data() + channel * kHistogramBins;
  // The smallest bin whose cumulative count reaches ceil(q * tokens) (at least 1).
  const uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(tokens))));
  uint64_t seen = 0;
  for (int b = 0; b < kHistogramBins; ++b) {
    seen += h[b];
    if (seen >= rank) return b == 0 ? 0.0f : std::min(histogram_bin_upper(b), channel_absmax[size_t(channel)]);
  }
  return channel_absmax[size_t(channel)];
}

float ActivationStats::token_absmax_percentile(double q) const {
  QF_CHECK(q >= 0 && q <= 1, "token_absmax_percentile: q = ", q, " is not in [0, 1]");
  if (token_min.empty()) return 0;
  std::vector<float> a(token_min.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::max(-token_min[i], token_max[i]);
  // The nearest-rank quantile: the ceil(q n)-th smallest (the smallest for q = 0).
  const size_t rank = std::max<size_t>(1, size_t(std::ceil(q * double(a.size()))));
  std::nth_element(a.begin(), a.begin() + long(rank - 1), a.end());
  return a[rank - 1];
}

// ---- the sequential pass -------------------------------------------------------------------------

namespace {

std::vector<float> to_f32_vector(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  cpu::widen_to_f32(t.raw(), t.dtype(), t.numel(), v.data());
  return v;
}

// One block's parameters in F32, the linears in kAllLinearKinds order.
struct Block {
  std::vector<float> attn_norm, mlp_norm;
  std::vector<CalibratedLinear> linears;
  std::vector<std::vector<float>> biases;  // per linear; empty when it has none

  CalibratedLinear& linear(LinearKind k) { return linears[size_t(k)]; }
  const std::vector<float>& bias(LinearKind k) const { return biases[size_t(k)]; }
};

Block load_block(const Checkpoint& ck, int64_t l) {
  const ModelConfig& c = ck.config;
  Block b;
  b.attn_norm = to_f32_vector(ck.tensor(names::layer(l, "input_layernorm.weight")));
  b.mlp_norm = to_f32_vector(ck.tensor(names::layer(l, "post_attention_layernorm.weight")));
  for (LinearKind k : kAllLinearKinds) {
    CalibratedLinear lin;
    lin.name = names::layer(l, linear_kind_leaf(k));
    lin.kind = k;
    const Tensor& w = ck.tensor(lin.name);
    QF_CHECK(w.ndim() == 2, ck.path, ": ", lin.name, " is not a matrix");
    lin.rows = w.dim(0);
    lin.cols = w.dim(1);
    lin.weight = to_f32_vector(w);
    b.linears.push_back(std::move(lin));
    const bool has_bias = c.attention_bias && (k == LinearKind::q_proj || k == LinearKind::k_proj || k == LinearKind::v_proj);
    const std::string bias_name = names::layer(l, str("self_attn.", linear_kind_name(k), ".bias"));
    b.biases.push_back(has_bias && ck.has(bias_name) ? to_f32_vector(ck.tensor(bias_name)) : std::vector<float>());
  }
  return b;
}

// y[m, out] = layer(x[m, in]) as the runtime computes it: the input rounded to the layer's
// activation format if it has one, then x W^T (+ b) through cpu::linear, as cpu::DenseLinear
// and cpu::ActivationQuantizedLinear do.
void run_linear(const CalibratedLinear& lin, const std::vector<float>& bias, const float* x, int64_t m, float* y) {
  const float* in = x;
  std::vector<float> rounded;
  if (lin.activations) {
    rounded.resize(size_t(m * lin.cols));
    parallel_for(m, 16, [&](int64_t b, int64_t e) {
      cpu::round_trip_rows(x + b * lin.cols, e - b, lin.cols, *lin.activations, rounded.data() + b * lin.cols);
    });
    in = rounded.data();
  }
  cpu::linear(in, m, lin.cols, lin.weight.data(), DType::F32, lin.rows, bias.empty() ? nullptr : bias.data(), y);
}

}  // namespace

void calibrate_sequentially(const CalibrationModel& model, const std::vector<std::vector<int32_t>>& windows,
                            const QuantizeLinears& quantize, const CalibrationOptions& options) {
  QF_CHECK(model.checkpoint != nullptr, "calibration: no checkpoint");
  const Checkpoint& ck = *model.checkpoint;
  const ModelConfig& c = ck.config;
  c.validate(ck.path);
  QF_CHECK(!windows.empty(), "calibration: no windows");
  const int64_t L = int64_t(windows.front().size());
  for (const auto& w : windows)
    QF_CHECK(int64_t(w.size()) == L, "calibration: windows must all have the same length (", L, " and ", w.size(), ")");
  QF_CHECK(L >= 1 && L <= c.max_position_embeddings, "calibration: windows of ", L,
           " tokens do not fit the model's context of ", c.max_position_embeddings);
  const int64_t H = c.hidden_size, F = c.intermediate_size, d = c.head_dim, half = d / 2;
  const int64_t q_dim = c.num_heads * d, kv_dim = c.num_kv_heads * d;
  QF_CHECK(int64_t(model.rope_inv_freq.size()) == half, "calibration: ", model.rope_inv_freq.size(),
           " RoPE frequencies for head_dim ", d, " (expected ", half, ")");
  if (model.kv_cache) cpu::check_row_format(*model.kv_cache, d, "KV cache");
  if (model.query) cpu::check_row_format(*model.query, d, "query");
  const int64_t N = int64_t(windows.size()), T = N * L;
  const int64_t per_chunk = std::max<int64_t>(1, options.chunk_tokens / L);
  const float eps = float(c.rms_norm_eps), attn_scale = 1.0f / std::sqrt(float(d));

  // The residual stream of every window, and the attention output (o_proj's input).
  std::vector<float> hidden(size_t(T * H)), attn(size_t(T * q_dim));
  {
    const Tensor& table = model.embedding.defined() ? model.embedding : ck.tensor(names::embed());
    QF_CHECK(table.ndim() == 2 && table.dim(0) == c.vocab_size && table.dim(1) == H, "calibration: the embedding has shape ",
             shape_str(table.shape()), ", expected [", c.vocab_size, ", ", H, "]");
    for (int64_t w = 0; w < N; ++w)
      cpu::embedding(table.raw(), table.dtype(), c.vocab_size, H, windows[size_t(w)].data(), L, hidden.data() + w * L * H);
  }
  // RoPE tables for positions 0..L-1, the same for every window.
  std::vector<int32_t> positions(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) positions[size_t(i)] = int32_t(i);
  std::vector<float> cos_table(size_t(L * half)), sin_table(size_t(L * half));
  cpu::rope_cos_sin(positions.data(), L, model.rope_inv_freq.data(), half, model.rope_attention_factor,
                    cos_table.data(), sin_table.data());

  // Chunk scratch.
  const int64_t M = per_chunk * L;
  std::vector<float> normed(size_t(M * H)), q(size_t(M * q_dim)), k(size_t(M * kv_dim)), v(size_t(M * kv_dim)),
      delta(size_t(M * H)), gate(size_t(M * F)), up(size_t(M * F)), k_cache(size_t(kv_dim * L)),
      v_cache(size_t(kv_dim * L));

  // Calls fn(first window, windows, tokens) over the chunks.
  auto for_chunks = [&](const std::function<void(int64_t, int64_t, int64_t)>& fn) {
    for (int64_t w0 = 0; w0 < N; w0 += per_chunk) {
      const int64_t nw = std::min(per_chunk, N - w0);
      fn(w0, nw, nw * L);
    }
  };
  auto quantize_stage = [&](int64_t l, LinearInput input, const ActivationStats& stats, Block& block) {
    std::vector<CalibratedLinear> group;
    for (LinearKind kind : linears_reading(input)) group.push_back(std::move(block.linear(kind)));
    quantize(l, input, stats, group);
    for (CalibratedLinear& lin : group) {
      QF_CHECK(int64_t(lin.weight.size()) == lin.rows * lin.cols, "calibration: the quantizer changed the size of ",
               lin.name);
      const LinearKind kind = lin.kind;
      block.linear(kind) = std::move(lin);
    }
    if (options.on_stage_done) options.on_stage_done(l, input);
  };
  // The MLP's activation silu(gate(h)) * up(h) of the chunk's normed rows.
  auto mlp_activation = [&](const Block& b, int64_t m) {
    run_linear(b.linears[size_t(LinearKind::gate_proj)], b.bias(LinearKind::gate_proj), normed.data(), m, gate.data());
    run_linear(b.linears[size_t(LinearKind::up_proj)], b.bias(LinearKind::up_proj), normed.data(), m, up.data());
    cpu::silu_mul(gate.data(), up.data(), m * F, gate.data());
  };

  // The smoothing sample: every stride-th token of the pass, at most smooth_sample_rows of them.
  const int64_t max_rows = std::max<int64_t>(1, options.smooth_sample_rows);
  const int64_t sample_stride = (T + max_rows - 1) / max_rows;
  std::vector<float> sample;
  // A stage whose input is rmsnorm(x) * g (attention_in, mlp_in): `fill` computes the chunk's
  // normed rows. With smoothing, the scales are chosen on their statistics and sample, merged
  // into g and the stage's linears, and the statistics recomputed with the new g (x, the
  // residual stream, is final for this stage by then), so `quantize` sees the smoothed input.
  // before_quantize: a last change of the stage's linears (the RoPE-aware scaling of q and k).
  auto normed_stage = [&](int64_t l, LinearInput input, std::vector<float>& norm, Block& b,
                          const std::function<void(int64_t, int64_t)>& fill,
                          const std::function<void()>& before_quantize = {}) {
    StatsAccumulator acc(H);
    sample.clear();
    for_chunks([&](int64_t w0, int64_t, int64_t m) {
      fill(w0, m);
      acc.add(normed.data(), m);
      if (options.smooth)
        for (int64_t i = 0; i < m; ++i)
          if ((w0 * L + i) % sample_stride == 0) sample.insert(sample.end(), normed.data() + i * H, normed.data() + (i + 1) * H);
    });
    ActivationStats stats = std::move(acc).finish();
    if (options.smooth) {
      const std::vector<LinearKind> kinds = linears_reading(input);
      const size_t first = size_t(kinds.front());  // q/k/v and gate/up are consecutive kinds
      const std::span<const CalibratedLinear> group(b.linears.data() + first, kinds.size());
      const std::vector<float> s = options.smooth(l, input, stats, group, sample.data(), int64_t(sample.size()) / H);
      if (!s.empty()) {
        QF_CHECK(int64_t(s.size()) == H, "calibration: the smoothing of layer ", l, " ", linear_input_name(input), " has ",
                 s.size(), " scales for ", H, " channels");
        std::vector<LinearRef> refs;
        for (LinearKind k : kinds) {
          CalibratedLinear& lin = b.linear(k);
          refs.push_back({lin.weight.data(), lin.rows, lin.cols, nullptr});
        }
        merge_smoothing_into_norm(norm.data(), H, s.data(), refs);
        if (options.on_norm_changed) options.on_norm_changed(l, input, norm);
        StatsAccumulator again(H);
        for_chunks([&](int64_t w0, int64_t, int64_t m) {
          cpu::rmsnorm(hidden.data() + w0 * L * H, m, H, norm.data(), eps, normed.data());
          again.add(normed.data(), m);
        });
        stats = std::move(again).finish();
      }
    }
    if (before_quantize) before_quantize();
    quantize_stage(l, input, stats, b);
  };

  // The block's post-RoPE key scale (empty: none), set by the RoPE-aware scaling.
  std::vector<float> post_rope;
  // RoPE-aware scaling of block b: the key statistics over all tokens, the scales, the pre-RoPE
  // part merged into q_proj / k_proj (rows, and biases), the post-RoPE part kept for attention.
  auto rope_scale_block = [&](int64_t l, Block& b) {
    KeyStatistics ks(c.num_kv_heads, d);
    std::vector<float> rotated(size_t(M * kv_dim));
    for_chunks([&](int64_t w0, int64_t nw, int64_t m) {
      cpu::rmsnorm(hidden.data() + w0 * L * H, m, H, b.attn_norm.data(), eps, normed.data());
      run_linear(b.linear(LinearKind::k_proj), b.bias(LinearKind::k_proj), normed.data(), m, k.data());
      std::copy_n(k.data(), m * kv_dim, rotated.data());
      for (int64_t w = 0; w < nw; ++w)
        cpu::rope_apply(rotated.data() + w * L * kv_dim, L, c.num_kv_heads, d, kv_dim, cos_table.data(),
                        sin_table.data());
      ks.add(k.data(), rotated.data(), m, kv_dim);
    });
    RopeScales s = options.rope_scale(l, ks);
    for (const std::vector<float>* v : {&s.pre, &s.post})
      QF_CHECK(v->empty() || int64_t(v->size()) == kv_dim, "calibration: the RoPE-aware scaling of layer ", l, " has ",
               v->size(), " scales for ", kv_dim, " key channels");
    for (float v : s.post) QF_CHECK(std::isfinite(v) && v > 0, "calibration: a post-RoPE scale of layer ", l, " is ", v);
    if (!s.pre.empty()) {
      CalibratedLinear& q_lin = b.linear(LinearKind::q_proj);
      CalibratedLinear& k_lin = b.linear(LinearKind::k_proj);
      merge_pre_rope_scale(q_lin.weight.data(), k_lin.weight.data(), H, s.pre, c.num_heads, c.num_kv_heads, d);
      std::vector<float>& qb = b.biases[size_t(LinearKind::q_proj)];
      std::vector<float>& kb = b.biases[size_t(LinearKind::k_proj)];
      QF_CHECK(qb.empty() == kb.empty(), "calibration: layer ", l, " has a bias on only one of q_proj and k_proj");
      if (!qb.empty()) merge_pre_rope_scale(qb.data(), kb.data(), 1, s.pre, c.num_heads, c.num_kv_heads, d);
    }
    post_rope = std::move(s.post);
  };

  for (int64_t l = 0; l < c.num_layers; ++l) {
    Block b = load_block(ck, l);

    // 1. attention_in: rmsnorm(x) feeds q, k, v.
    post_rope.clear();
    normed_stage(
        l, LinearInput::attention_in, b.attn_norm, b,
        [&](int64_t w0, int64_t m) {
          cpu::rmsnorm(hidden.data() + w0 * L * H, m, H, b.attn_norm.data(), eps, normed.data());
        },
        [&] {
          if (options.rope_scale) rope_scale_block(l, b);
        });
    // 2. attention_out: attention over the quantized q, k, v feeds o.
    {
      StatsAccumulator acc(q_dim);
      for_chunks([&](int64_t w0, int64_t nw, int64_t m) {
        cpu::rmsnorm(hidden.data() + w0 * L * H, m, H, b.attn_norm.data(), eps, normed.data());
        run_linear(b.linear(LinearKind::q_proj), b.bias(LinearKind::q_proj), normed.data(), m, q.data());
        run_linear(b.linear(LinearKind::k_proj), b.bias(LinearKind::k_proj), normed.data(), m, k.data());
        run_linear(b.linear(LinearKind::v_proj), b.bias(LinearKind::v_proj), normed.data(), m, v.data());
        for (int64_t w = 0; w < nw; ++w) {
          float* qw = q.data() + w * L * q_dim;
          float* kw = k.data() + w * L * kv_dim;
          const float* vw = v.data() + w * L * kv_dim;
          cpu::rope_apply(qw, L, c.num_heads, d, q_dim, cos_table.data(), sin_table.data());
          cpu::rope_apply(kw, L, c.num_kv_heads, d, kv_dim, cos_table.data(), sin_table.data());
          // As the engine: the post-RoPE scale, then Q rounded per (token, head) row.
          if (!post_rope.empty())
            apply_post_rope_scale(qw, q_dim, kw, kv_dim, L, post_rope.data(), c.num_heads, c.num_kv_heads, d);
          if (model.query) cpu::round_trip_rows(qw, L * c.num_heads, d, *model.query, qw);
          // The window's cache, [kv_head][position][head_dim] as the engine lays it out.
          for (int64_t t = 0; t < L; ++t)
            for (int64_t h = 0; h < c.num_kv_heads; ++h) {
              float* kc = k_cache.data() + (h * L + t) * d;
              float* vc = v_cache.data() + (h * L + t) * d;
              std::copy_n(kw + t * kv_dim + h * d, d, kc);
              std::copy_n(vw + t * kv_dim + h * d, d, vc);
              if (model.kv_cache) {
                cpu::round_trip_rows(kc, 1, d, *model.kv_cache, kc);
                cpu::round_trip_rows(vc, 1, d, *model.kv_cache, vc);
              }
            }
          cpu::attention(qw, q_dim, L, positions.data(), k_cache.data(), v_cache.data(), L * d, c.num_heads,
                         c.num_kv_heads, d, attn_scale, attn.data() + (w0 + w) * L * q_dim, q_dim);
        }
        acc.add(attn.data() + w0 * L * q_dim, m);
      });
      quantize_stage(l, LinearInput::attention_out, std::move(acc).finish(), b);
    }
    // 3. mlp_in: x += o(attention); rmsnorm(x) feeds gate and up.
    normed_stage(l, LinearInput::mlp_in, b.mlp_norm, b, [&](int64_t w0, int64_t m) {
      float* x = hidden.data() + w0 * L * H;
      run_linear(b.linear(LinearKind::o_proj), b.bias(LinearKind::o_proj), attn.data() + w0 * L * q_dim, m, delta.data());
      cpu::add_rmsnorm(x, delta.data(), m, H, b.mlp_norm.data(), eps, normed.data());
    });
    // 4. mlp_act: silu(gate(h)) * up(h) feeds down.
    {
      StatsAccumulator acc(F);
      for_chunks([&](int64_t w0, int64_t, int64_t m) {
        cpu::rmsnorm(hidden.data() + w0 * L * H, m, H, b.mlp_norm.data(), eps, normed.data());
        mlp_activation(b, m);
        acc.add(gate.data(), m);
      });
      quantize_stage(l, LinearInput::mlp_act, std::move(acc).finish(), b);
    }
    // 5. The block's output through the quantized MLP: x += down(silu(gate(h)) * up(h)). (The
    // activation is recomputed rather than kept from stage 4: [N*L, ffn] floats would be the
    // largest buffer of all, 1.6 GB for the default model.)
    for_chunks([&](int64_t w0, int64_t, int64_t m) {
      float* x = hidden.data() + w0 * L * H;
      cpu::rmsnorm(x, m, H, b.mlp_norm.data(), eps, normed.data());
      mlp_activation(b, m);
      run_linear(b.linear(LinearKind::down_proj), b.bias(LinearKind::down_proj), gate.data(), m, delta.data());
      cpu::add_inplace(x, delta.data(), m * H);
    });
  }
}

}  // namespace qf
