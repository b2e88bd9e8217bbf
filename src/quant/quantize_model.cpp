#include "quant/quantize_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <span>

#include "backends/cpu/ops.h"
#include "core/error.h"
#include "formats/convert.h"
#include "quant/calibration.h"
#include "quant/gptq.h"
#include "quant/rope_scale.h"
#include "quant/rtn.h"
#include "quant/smooth.h"

namespace qf {
namespace {

struct LayerResult {
  QuantizedWeight weight;
  double relative_error = std::numeric_limits<double>::quiet_NaN();
  bool from_hessian = false;
};

// Quantizes one weight w [rows, cols] by the layer's recipe; `h` is its input's full Hessian
// (empty without calibration); GPTQ's updates run on `device` when there is one.
LayerResult quantize_layer(const std::string& name, const float* w, int64_t rows, int64_t cols, const LinearRecipe& r,
                           const HessianView& h, Fp32Device* device) {
  LayerResult out;
  if (r.algorithm == WeightAlgorithm::gptq) {
    QF_CHECK(!h.empty(), name, ": GPTQ needs calibration statistics");
    GptqOptions o = r.gptq;
    o.device = device;
    out.weight = gptq_quantize(w, rows, cols, h, r.weights, o).weight;
  } else {
    RtnOptions o;
    o.clip = r.rtn_clip;
    std::vector<double> diag;
    if (r.rtn_clip.enabled && r.rtn_clip_objective != ClipObjective::weight) {
      QF_CHECK(!h.empty(), name, ": a Hessian-weighted clip search needs calibration statistics");
      if (r.rtn_clip_objective == ClipObjective::full) {
        o.hessian = h;
      } else {
        diag.resize(size_t(cols));
        for (int64_t j = 0; j < cols; ++j) diag[size_t(j)] = h.data[j * cols + j];
        o.hessian = {diag.data(), cols, true};
      }
    }
    out.weight = rtn_quantize(w, rows, cols, r.weights, o);
  }
  // The error relative to the layer's output energy on the same inputs (or the weight's).
  const std::vector<float> zeros(size_t(rows * cols), 0.0f);
  const double err = layer_output_error(w, out.weight.dequantized.data(), rows, cols, h);
  const double ref = layer_output_error(w, zeros.data(), rows, cols, h);
  out.relative_error = ref > 0 ? err / ref : 0.0;
  out.from_hessian = !h.empty();
  return out;
}

// An alpha as the checkpoint records it: 0.55, not the float's 0.550000011920929 (the grid's
// values are multiples of 0.05; float(recorded) is the alpha used).
double as_recorded(float alpha) { return std::round(double(alpha) * 1e6) / 1e6; }

Tensor keep_as(const Tensor& t, KeepType k) { return convert(t, k == KeepType::bf16 ? DType::BF16 : DType::F32); }

}  // namespace

QuantizedModel quantize_model(const Checkpoint& ck, const Recipe& recipe, const QuantizeModelOptions& options) {
  const ModelConfig& c = ck.config;
  c.validate(ck.path);
  QuantizedModel m;
  m.config = c;
  m.quantization.recipe_name = recipe.name;
  m.quantization.recipe = recipe.to_json();
  m.quantization.kv_cache = recipe.kv_cache;
  m.quantization.query = recipe.query;
  m.quantization.calibration = recipe.needs_calibration() ? options.calibration_info : nlohmann::json(nullptr);

  // Everything that is not a block linear: norms in F32, embedding / LM head as the recipe keeps them.
  std::vector<std::string> linear_names;
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (LinearKind k : kAllLinearKinds) linear_names.push_back(names::layer(l, linear_kind_leaf(k)));
  for (const auto& [name, shape] : required_tensor_shapes(c)) {
    (void)shape;
    if (std::find(linear_names.begin(), linear_names.end(), name) != linear_names.end()) continue;
    const Tensor& t = ck.tensor(name);
    if (name == names::embed()) m.dense[name] = keep_as(t, recipe.embed_tokens);
    else if (name == names::lm_head()) m.dense[name] = keep_as(t, recipe.lm_head);
    else m.dense[name] = convert(t, DType::F32);
  }

  double algorithm_seconds = 0;
  auto timed_quantize = [&](const std::string& name, const float* w, int64_t rows, int64_t cols, const LinearRecipe& lr,
                            const HessianView& h) {
    const auto t0 = std::chrono::steady_clock::now();
    LayerResult r = quantize_layer(name, w, rows, cols, lr, h, options.device);
    algorithm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  };
  auto record = [&](const std::string& name, LinearKind kind, LayerResult&& r) {
    const LinearRecipe& lr = recipe.linear(kind);
    LinearQuantization q;
    q.weights = lr.weights;
    q.activations = lr.activations;
    q.algorithm = weight_algorithm_name(lr.algorithm);
    q.relative_error = r.relative_error;
    q.error_from_hessian = r.from_hessian;
    m.quantization.linears[name] = q;
    m.weights[name] = std::move(r.weight.q);
  };

  if (recipe.needs_calibration()) {
    QF_CHECK(!options.windows.empty(), "quantize ", recipe.name, ": the recipe needs calibration windows");
    CalibrationModel cm;
    cm.checkpoint = &ck;
    // The embedding the quantized model will run with, so block 0 is calibrated on it.
    cm.embedding = m.dense.at(names::embed());
    cm.rope_inv_freq = options.rope_inv_freq;
    cm.rope_attention_factor = options.rope_attention_factor;
    cm.kv_cache = recipe.kv_cache;
    cm.query = recipe.query;
    CalibrationOptions co;
    co.device = options.device;
    if (options.device) m.quantization.calibration["device"] = options.device->name();
    if (const std::optional<RopeScaleTransform> rs = recipe.rope_scaling()) {
      // FireQ's RoPE-aware scaling: the pre-RoPE scale goes into q_proj / k_proj (the pass merges
      // it into the weights; the biases, stored dense, are merged here), the post-RoPE scale into
      // the checkpoint's k_post_rope_scale tensor of the layer. Logged per layer in
      // quantization_config.calibration.rope_scale.
      nlohmann::json& log = m.quantization.calibration["rope_scale"];
      log = {{"pre", rs->pre}, {"post", rs->post}, {"alpha", as_recorded(rs->alpha)}, {"beta", as_recorded(rs->beta)},
             {"top_k", rs->top_k}, {"layers", nlohmann::json::array()}};
      co.rope_scale = [&, rs](int64_t layer, const KeyStatistics& stats) {
        RopeScales s = rope_aware_scales(stats, *rs);
        const int64_t d = c.head_dim, kv_dim = c.num_kv_heads * d;
        nlohmann::json entry = {{"layer", layer}};
        if (!s.pre.empty()) {
          const auto [lo, hi] = std::minmax_element(s.pre.begin(), s.pre.end());
          entry["pre_min"] = *lo;
          entry["pre_max"] = *hi;
          const std::string qb = names::layer(layer, "self_attn.q_proj.bias");
          const std::string kb = names::layer(layer, "self_attn.k_proj.bias");
          if (m.dense.count(qb) && m.dense.count(kb)) {
            // Fresh tensors: the F32 biases may share their storage with the source checkpoint.
            Tensor q_bias = Tensor::empty(DType::F32, m.dense.at(qb).shape());
            Tensor k_bias = Tensor::empty(DType::F32, m.dense.at(kb).shape());
            std::copy_n(m.dense.at(qb).data<float>(), q_bias.numel(), q_bias.data_mut<float>());
            std::copy_n(m.dense.at(kb).data<float>(), k_bias.numel(), k_bias.data_mut<float>());
            merge_pre_rope_scale(q_bias.data_mut<float>(), k_bias.data_mut<float>(), 1, s.pre, c.num_heads,
                                 c.num_kv_heads, d);
            m.dense[qb] = std::move(q_bias);
            m.dense[kb] = std::move(k_bias);
          }
        }
        if (!s.post.empty()) {
          Tensor t = Tensor::empty(DType::F32, {kv_dim});
          std::copy(s.post.begin(), s.post.end(), t.data_mut<float>());
          m.dense[k_post_rope_scale_name(layer)] = std::move(t);
          nlohmann::json chosen = nlohmann::json::array();
          for (int64_t i = 0; i < kv_dim; ++i)
            if (s.post[size_t(i)] != 1.0f) chosen.push_back({{"head", i / d}, {"channel", i % d}, {"scale", s.post[size_t(i)]}});
          entry["post"] = chosen;
        }
        log["layers"].push_back(entry);
        return s;
      };
    }
    if (const std::optional<SmoothTransform> sm = recipe.smoothing()) {
      // FireQ's smoothing of the inputs after the norms: alpha by the calibration loss (or fixed),
      // recorded per stage in quantization_config.calibration.smoothing.
      nlohmann::json& log = m.quantization.calibration["smoothing"];
      log = nlohmann::json::array();
      co.smooth = [&, sm](int64_t layer, LinearInput input, const ActivationStats& stats,
                          std::span<const CalibratedLinear> linears, const float* sample, int64_t rows) {
        std::vector<SmoothingTarget> targets;
        for (const CalibratedLinear& lin : linears) {
          const LinearRecipe& lr = recipe.linear(lin.kind);
          targets.push_back({lin.weight.data(), lin.rows, lr.weights, lr.activations});
        }
        const int64_t n = stats.channels;
        const SmoothingLoss loss(sample, rows, n, std::move(targets));
        const std::vector<float> wmax = loss.weight_absmax();
        const double unsmoothed = loss(std::vector<float>(size_t(n), 1.0f));
        nlohmann::json entry = {{"layer", layer}, {"input", linear_input_name(input)}, {"loss_unsmoothed", unsmoothed}};
        std::vector<float> s;
        if (sm->alpha) {
          s = smoothing_scales(stats.channel_absmax.data(), wmax.data(), n, *sm->alpha);
          entry["alpha"] = as_recorded(*sm->alpha);
          entry["loss"] = loss(s);
        } else {
          // The grid, and "no smoothing" (s = 1; not on the grid: alpha 0 gives s = 1 / max|W|):
          // smoothing is applied only where it lowers the loss.
          AlphaChoice best = choose_smoothing_alpha(stats.channel_absmax.data(), wmax.data(), n, default_alpha_grid(),
                                                    [&](const std::vector<float>& scales) { return loss(scales); });
          if (best.loss < unsmoothed) {
            s = std::move(best.scales);
            entry["alpha"] = as_recorded(best.alpha);
          } else {
            entry["alpha"] = nullptr;
          }
          entry["loss"] = std::min(best.loss, unsmoothed);
        }
        log.push_back(entry);
        return s;
      };
      co.on_norm_changed = [&](int64_t layer, LinearInput input, std::span<const float> g) {
        const std::string name =
            names::layer(layer, input == LinearInput::attention_in ? "input_layernorm.weight" : "post_attention_layernorm.weight");
        Tensor t = Tensor::empty(DType::F32, {int64_t(g.size())});
        std::copy(g.begin(), g.end(), t.data_mut<float>());
        QF_CHECK(m.dense.at(name).shape() == t.shape(), "smoothing: ", name, " changed shape");
        m.dense[name] = std::move(t);
      };
    }
    co.on_stage_done = [&](int64_t layer, LinearInput input) {
      if (input == LinearInput::mlp_act && options.on_block_done) options.on_block_done(layer + 1, c.num_layers);
    };
    calibrate_sequentially(
        cm, options.windows,
        [&](int64_t, LinearInput, const ActivationStats& stats, std::span<CalibratedLinear> linears) {
          for (CalibratedLinear& lin : linears) {
            const LinearRecipe& lr = recipe.linear(lin.kind);
            // Every layer gets the full Hessian for its error report; RTN ignores it otherwise.
            LayerResult r = timed_quantize(lin.name, lin.weight.data(), lin.rows, lin.cols, lr, stats.hessian_view());
            lin.weight = r.weight.dequantized;
            lin.activations = lr.activations;
            record(lin.name, lin.kind, std::move(r));
          }
        },
        co);
  } else {
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (LinearKind k : kAllLinearKinds) {
        const std::string name = names::layer(l, linear_kind_leaf(k));
        const Tensor w = convert(ck.tensor(name), DType::F32);
        QF_CHECK(w.ndim() == 2, ck.path, ": ", name, " is not a matrix");
        record(name, k, timed_quantize(name, w.data<float>(), w.dim(0), w.dim(1), recipe.linear(k), HessianView{}));
      }
      if (options.on_block_done) options.on_block_done(l + 1, c.num_layers);
    }
  }
  if (options.algorithm_seconds) *options.algorithm_seconds = algorithm_seconds;
  return m;
}

}  // namespace qf
