#include "quant/calibration.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "backends/cpu/format_round_trip.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/rope.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/convert.h"
#include "quant/fp32_device.h"
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

// Histograms (calibration.h): a value's bin is its float's biased exponent and top two mantissa
// bits, (bits >> 21) & 0x3FF, counting quarter-ish octaves from 0, shifted so bin 1 starts at
// 2^kHistogramMinExp2 and clamped; 0 holds 0. The devices compute it (fp32_device.h).
constexpr int kHistogramFirstQuarter = 4 * (127 + kHistogramMinExp2);

// The upper edge of bin b (b >= 1): mantissa 1 + (sub + 1) / 4 of octave (b - 1) / 4.
float histogram_bin_upper(int b) {
  const int octave = (b - 1) / 4 + kHistogramMinExp2, sub = (b - 1) % 4;
  return std::ldexp(1.0f + float(sub + 1) / 4.0f, octave);
}

// Sums one input's statistics over the chunks: the device computes each chunk's (its Gram matrix
// in F32), the host adds them up, H in double (calibration.h says why).
class StatsAccumulator {
 public:
  StatsAccumulator(Fp32Device& device, int64_t channels) : device_(device) {
    s_.channels = channels;
    s_.hessian.assign(size_t(channels * channels), 0.0);
    s_.channel_absmax.assign(size_t(channels), 0.0f);
    s_.channel_histogram.assign(size_t(channels * kHistogramBins), 0);
  }

  // x: m tokens of `channels` values, in the device's memory.
  void add(const float* x, int64_t m) {
    const int64_t c = s_.channels;
    gram_.resize(size_t(c * c));
    const size_t t0 = s_.token_min.size();
    s_.token_min.resize(t0 + size_t(m));
    s_.token_max.resize(t0 + size_t(m));
    device_.statistics(x, m, c, kHistogramFirstQuarter, kHistogramBins, gram_.data(), s_.channel_absmax.data(),
                       s_.channel_histogram.data(), s_.token_min.data() + t0, s_.token_max.data() + t0);
    parallel_for(c, 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j <= i; ++j) s_.hessian[size_t(i * c + j)] += double(gram_[size_t(i * c + j)]);
    });
    s_.tokens += m;
  }

  ActivationStats finish() && {
    const int64_t c = s_.channels;
    for (int64_t i = 0; i < c; ++i)
      for (int64_t j = i + 1; j < c; ++j) s_.hessian[size_t(i * c + j)] = s_.hessian[size_t(j * c + i)];
    return std::move(s_);
  }

 private:
  Fp32Device& device_;
  ActivationStats s_;
  std::vector<float> gram_;
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
    const BlockLinear spec = block_linear(c, l, k);
    CalibratedLinear lin;
    lin.name = spec.weight;
    lin.kind = k;
    const Tensor& w = ck.tensor(lin.name);
    QF_CHECK(w.ndim() == 2 && w.dim(0) == spec.out && w.dim(1) == spec.in, ck.path, ": ", lin.name, " has shape ",
             shape_str(w.shape()), ", expected [", spec.out, ", ", spec.in, "]");
    lin.rows = spec.out;
    lin.cols = spec.in;
    lin.weight = to_f32_vector(w);
    b.linears.push_back(std::move(lin));
    b.biases.push_back(!spec.bias.empty() && ck.has(spec.bias) ? to_f32_vector(ck.tensor(spec.bias)) : std::vector<float>());
  }
  return b;
}

// The block's parameters as the device sees them: a copy in its memory of every array of Block,
// refreshed (upload) whenever the pass or a callback changed the host's.
class DeviceBlock {
 public:
  explicit DeviceBlock(Fp32Device& device) : device_(device) {}

  void upload(const Block& b) {
    put(attn_norm_, b.attn_norm, "an RMSNorm weight");
    put(mlp_norm_, b.mlp_norm, "an RMSNorm weight");
    weights_.resize(b.linears.size());
    biases_.resize(b.linears.size());
    for (size_t i = 0; i < b.linears.size(); ++i) {
      put(weights_[i], b.linears[i].weight, "a linear weight");
      put(biases_[i], b.biases[i], "a linear bias");
    }
  }
  void upload_post_rope(const std::vector<float>& post) { put(post_rope_, post, "the post-RoPE key scale"); }

  const float* attn_norm() const { return attn_norm_.data; }
  const float* mlp_norm() const { return mlp_norm_.data; }
  const float* weight(LinearKind k) const { return weights_[size_t(k)].data; }
  const float* bias(LinearKind k) const { return biases_[size_t(k)].data; }  // null: none
  const float* post_rope() const { return post_rope_.data; }                  // null: none

 private:
  struct Array {
    float* data = nullptr;    // null while empty
    float* buffer = nullptr;  // capacity floats of device memory
    int64_t capacity = 0;
  };
  // Device buffers are never freed one by one (fp32_device.h), so each array keeps its
  // buffer and grows it only if a later layer's is larger (Llama's layers are all alike).
  void put(Array& a, const std::vector<float>& host, const std::string& what) {
    const int64_t n = int64_t(host.size());
    if (n == 0) {
      a.data = nullptr;
      return;
    }
    if (n > a.capacity) {
      a.capacity = n;
      a.buffer = device_.alloc(n, what);
    }
    a.data = a.buffer;
    device_.upload(a.data, host.data(), n);
  }
  Fp32Device& device_;
  Array attn_norm_, mlp_norm_, post_rope_;
  std::vector<Array> weights_, biases_;
};

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
  std::unique_ptr<Fp32Device> own_device;
  Fp32Device* device = options.device;
  if (!device) device = (own_device = make_cpu_fp32_device()).get();
  Fp32Device& dev = *device;
  const int64_t N = int64_t(windows.size()), T = N * L;
  const int64_t chunk_tokens = options.chunk_tokens > 0 ? options.chunk_tokens : dev.default_chunk_tokens();
  const int64_t per_chunk = std::max<int64_t>(1, chunk_tokens / L);
  const float eps = float(c.rms_norm_eps), attn_scale = 1.0f / std::sqrt(float(d));

  // The residual stream of every window, and the attention output (o_proj's input).
  float* hidden = dev.alloc(T * H, "the residual stream of the calibration windows");
  float* attn = dev.alloc(T * q_dim, "the attention output of the calibration windows");
  {
    const Tensor& table = model.embedding.defined() ? model.embedding : ck.tensor(names::embed());
    QF_CHECK(table.ndim() == 2 && table.dim(0) == c.vocab_size && table.dim(1) == H, "calibration: the embedding has shape ",
             shape_str(table.shape()), ", expected [", c.vocab_size, ", ", H, "]");
    std::vector<float> rows(size_t(L * H));
    for (int64_t w = 0; w < N; ++w) {
      cpu::embedding(table.raw(), table.dtype(), c.vocab_size, H, windows[size_t(w)].data(), L, rows.data());
      dev.upload(hidden + w * L * H, rows.data(), L * H);
    }
  }
  // RoPE tables for positions 0..L-1, the same for every window.
  float *cos_table = dev.alloc(L * half, "the RoPE table"), *sin_table = dev.alloc(L * half, "the RoPE table");
  {
    std::vector<int32_t> positions(static_cast<size_t>(L));
    for (int64_t i = 0; i < L; ++i) positions[size_t(i)] = int32_t(i);
    std::vector<float> cos_h(size_t(L * half)), sin_h(size_t(L * half));
    cpu::rope_cos_sin(positions.data(), L, model.rope_inv_freq.data(), half, model.rope_attention_factor, cos_h.data(),
                      sin_h.data());
    dev.upload(cos_table, cos_h.data(), L * half);
    dev.upload(sin_table, sin_h.data(), L * half);
  }

  // Chunk scratch.
  const int64_t M = per_chunk * L;
  const std::string scratch = "the calibration chunk's scratch";
  float *normed = dev.alloc(M * H, scratch), *q = dev.alloc(M * q_dim, scratch), *k = dev.alloc(M * kv_dim, scratch),
        *v = dev.alloc(M * kv_dim, scratch), *delta = dev.alloc(M * H, scratch), *gate = dev.alloc(M * F, scratch),
        *up = dev.alloc(M * F, scratch);
  // A linear's input rounded to its activation format (allocated when a recipe rounds one).
  float* rounded = nullptr;

  DeviceBlock db(dev);
  // y[m, out] = layer(x[m, in]) as the runtime computes it (fp32_device.h linear_as_runtime).
  auto run_linear = [&](const CalibratedLinear& lin, const float* x, int64_t m, float* y) {
    if (lin.activations && !rounded) rounded = dev.alloc(M * std::max({H, q_dim, F}), scratch);
    linear_as_runtime(dev, x, m, lin.cols, db.weight(lin.kind), lin.rows, db.bias(lin.kind), lin.activations, rounded,
                      y);
  };

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
    db.upload(block);  // later stages compute with the quantized weights
    if (options.on_stage_done) options.on_stage_done(l, input);
  };
  // The MLP's activation silu(gate(h)) * up(h) of the chunk's normed rows, into gate.
  auto mlp_activation = [&](const Block& b, int64_t m) {
    run_linear(b.linears[size_t(LinearKind::gate_proj)], normed, m, gate);
    run_linear(b.linears[size_t(LinearKind::up_proj)], normed, m, up);
    dev.silu_mul(gate, up, m * F, gate);
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
    StatsAccumulator acc(dev, H);
    sample.clear();
    for_chunks([&](int64_t w0, int64_t, int64_t m) {
      fill(w0, m);
      acc.add(normed, m);
      if (options.smooth) {
        // The chunk's rows i with (w0 * L + i) % sample_stride == 0.
        const int64_t first = (sample_stride - (w0 * L) % sample_stride) % sample_stride;
        const int64_t count = first < m ? (m - 1 - first) / sample_stride + 1 : 0;
        const size_t at = sample.size();
        sample.resize(at + size_t(count * H));
        dev.download_rows(sample.data() + at, normed, H, first, sample_stride, count);
      }
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
        db.upload(b);
        const float* norm_d = input == LinearInput::attention_in ? db.attn_norm() : db.mlp_norm();
        StatsAccumulator again(dev, H);
        for_chunks([&](int64_t w0, int64_t, int64_t m) {
          dev.rmsnorm(hidden + w0 * L * H, m, H, norm_d, eps, normed);
          again.add(normed, m);
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
    std::vector<float> k_h(size_t(M * kv_dim)), rotated_h(size_t(M * kv_dim));
    for_chunks([&](int64_t w0, int64_t nw, int64_t m) {
      dev.rmsnorm(hidden + w0 * L * H, m, H, db.attn_norm(), eps, normed);
      run_linear(b.linear(LinearKind::k_proj), normed, m, k);
      dev.download(k_h.data(), k, m * kv_dim);
      dev.rope(k, nw, L, c.num_kv_heads, d, kv_dim, cos_table, sin_table);
      dev.download(rotated_h.data(), k, m * kv_dim);
      ks.add(k_h.data(), rotated_h.data(), m, kv_dim);
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
      db.upload(b);
    }
    post_rope = std::move(s.post);
  };

  for (int64_t l = 0; l < c.num_layers; ++l) {
    Block b = load_block(ck, l);
    db.upload(b);

    // 1. attention_in: rmsnorm(x) feeds q, k, v.
    post_rope.clear();
    normed_stage(
        l, LinearInput::attention_in, b.attn_norm, b,
        [&](int64_t w0, int64_t m) { dev.rmsnorm(hidden + w0 * L * H, m, H, db.attn_norm(), eps, normed); },
        [&] {
          if (options.rope_scale) rope_scale_block(l, b);
        });
    db.upload_post_rope(post_rope);
    // 2. attention_out: attention over the quantized q, k, v feeds o.
    {
      StatsAccumulator acc(dev, q_dim);
      for_chunks([&](int64_t w0, int64_t nw, int64_t m) {
        dev.rmsnorm(hidden + w0 * L * H, m, H, db.attn_norm(), eps, normed);
        run_linear(b.linear(LinearKind::q_proj), normed, m, q);
        run_linear(b.linear(LinearKind::k_proj), normed, m, k);
        run_linear(b.linear(LinearKind::v_proj), normed, m, v);
        dev.rope(q, nw, L, c.num_heads, d, q_dim, cos_table, sin_table);
        dev.rope(k, nw, L, c.num_kv_heads, d, kv_dim, cos_table, sin_table);
        // As the engine: the post-RoPE scale, then Q rounded per (token, head) row, K and V per
        // (token, KV head) row as the engine writes its cache.
        if (db.post_rope())
          dev.post_rope_scale(q, q_dim, k, kv_dim, m, db.post_rope(), c.num_heads, c.num_kv_heads, d);
        if (model.query) dev.round_trip_rows(q, m * c.num_heads, d, *model.query);
        if (model.kv_cache) {
          dev.round_trip_rows(k, m * c.num_kv_heads, d, *model.kv_cache);
          dev.round_trip_rows(v, m * c.num_kv_heads, d, *model.kv_cache);
        }
        float* out = attn + w0 * L * q_dim;
        dev.attention(q, k, v, nw, L, /*first_position=*/0, L, c.num_heads, c.num_kv_heads, d, attn_scale, out);
        acc.add(out, m);
      });
      quantize_stage(l, LinearInput::attention_out, std::move(acc).finish(), b);
    }
    // 3. mlp_in: x += o(attention); rmsnorm(x) feeds gate and up.
    normed_stage(l, LinearInput::mlp_in, b.mlp_norm, b, [&](int64_t w0, int64_t m) {
      float* x = hidden + w0 * L * H;
      run_linear(b.linear(LinearKind::o_proj), attn + w0 * L * q_dim, m, delta);
      dev.add_rmsnorm(x, delta, m, H, db.mlp_norm(), eps, normed);
    });
    // 4. mlp_act: silu(gate(h)) * up(h) feeds down.
    {
      StatsAccumulator acc(dev, F);
      for_chunks([&](int64_t w0, int64_t, int64_t m) {
        dev.rmsnorm(hidden + w0 * L * H, m, H, db.mlp_norm(), eps, normed);
        mlp_activation(b, m);
        acc.add(gate, m);
      });
      quantize_stage(l, LinearInput::mlp_act, std::move(acc).finish(), b);
    }
    // 5. The block's output through the quantized MLP: x += down(silu(gate(h)) * up(h)). (The
    // activation is recomputed rather than kept from stage 4: [N*L, ffn] floats would be the
    // largest buffer of all, 1.6 GB for the default model.)
    for_chunks([&](int64_t w0, int64_t, int64_t m) {
      float* x = hidden + w0 * L * H;
      dev.rmsnorm(x, m, H, db.mlp_norm(), eps, normed);
      mlp_activation(b, m);
      run_linear(b.linear(LinearKind::down_proj), gate, m, delta);
      dev.add(x, delta, m * H);
    });
  }
}

}  // namespace qf
