#include "runtime/rope_frequencies.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>

#include "backends/cpu/rope.h"
#include "core/error.h"
#include "runtime/engine.h"

namespace qf {
namespace {

std::vector<double> base_inv_freq(double base, int64_t head_dim) {
  std::vector<double> f(size_t(head_dim / 2));
  for (int64_t j = 0; j < head_dim / 2; ++j) f[j] = std::pow(base, -2.0 * double(j) / double(head_dim));
  return f;
}

int64_t original_context(const ModelConfig& c) {
  return c.rope_scaling.original_max_position_embeddings > 0 ? c.rope_scaling.original_max_position_embeddings
                                                              : c.max_position_embeddings;
}

void apply_llama3(const RopeScaling& s, int64_t old_context, std::vector<double>& inv_freq) {
  const double low_freq_wavelen = double(old_context) / s.low_freq_factor;
  const double high_freq_wavelen = double(old_context) / s.high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f = f / s.factor;
    } else if (wavelen >= high_freq_wavelen) {  // the medium band: blend
      const double smooth = (double(old_context) / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
  }
}

// YaRN (Peng et al. 2023), as transformers' _compute_yarn_parameters with truncate = true.
void apply_yarn(const RopeScaling& s, double base, int64_t head_dim, int64_t old_context,
                std::vector<double>& inv_freq, double& attention_factor) {
  const double d = double(head_dim);
  // The dimension index whose wavelength completes `rotations` turns over the old context.
  auto correction_dim = [&](double rotations) {
    return d * std::log(double(old_context) / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
  };
  double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(s.beta_slow)), d - 1.0);
  if (low == high) high += 0.001;  // avoid a division by zero in the ramp, as HF does
  for (size_t j = 0; j < inv_freq.size(); ++j) {
    const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);
    const double extrapolation_weight = 1.0 - ramp;
    const double extrapolated = inv_freq[j], interpolated = inv_freq[j] / s.factor;
    inv_freq[j] = interpolated * (1.0 - extrapolation_weight) + extrapolated * extrapolation_weight;
  }
  attention_factor = s.attention_factor > 0.0 ? s.attention_factor
                     : s.factor <= 1.0        ? 1.0
                                              : 0.1 * std::log(s.factor) + 1.0;
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& c, int64_t seq_len) {
  QF_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "RoPE needs an even head_dim, the model has ", c.head_dim);
  QF_CHECK(c.rope_theta > 1.0, "rope_theta must be > 1, the model has ", c.rope_theta);
  const RopeScaling& s = c.rope_scaling;
  if (s.type != RopeScalingType::None)
    QF_CHECK(s.factor > 0.0, "rope_scaling.factor must be positive, the model has ", s.factor);
  RopeFrequencies r;
  double base = c.rope_theta;
  if (s.type == RopeScalingType::Dynamic) {
    const int64_t l0 = original_context(c);
    QF_CHECK(l0 > 0, "dynamic RoPE scaling needs max_position_embeddings");
    if (seq_len > l0)
      base *= std::pow(s.factor * double(seq_len) / double(l0) - (s.factor - 1.0),
                       double(c.head_dim) / double(c.head_dim - 2));
  }
  r.inv_freq = base_inv_freq(base, c.head_dim);
  switch (s.type) {
    case RopeScalingType::None:
    case RopeScalingType::Dynamic: break;
    case RopeScalingType::Linear:
      for (double& f : r.inv_freq) f /= s.factor;
      break;
    case RopeScalingType::Llama3:
      if (c.rope_freq_factors.empty()) {
        QF_CHECK(original_context(c) > 0 && s.high_freq_factor > s.low_freq_factor,
                 "llama3 RoPE scaling needs original_max_position_embeddings and high_freq_factor > "
                 "low_freq_factor");
        apply_llama3(s, original_context(c), r.inv_freq);
      }
      break;
    case RopeScalingType::Yarn:
      QF_CHECK(original_context(c) > 0, "YaRN RoPE scaling needs original_max_position_embeddings");
      apply_yarn(s, c.rope_theta, c.head_dim, original_context(c), r.inv_freq, r.attention_factor);
      break;
  }
  if (!c.rope_freq_factors.empty()) {
    QF_CHECK(int64_t(c.rope_freq_factors.size()) * 2 == c.head_dim, "rope_freq_factors has ",
             c.rope_freq_factors.size(), " values, head_dim / 2 = ", c.head_dim / 2, " expected");
    for (size_t j = 0; j < r.inv_freq.size(); ++j) {
      QF_CHECK(c.rope_freq_factors[j] > 0.0f, "rope_freq_factors[", j, "] = ", c.rope_freq_factors[j],
               " is not positive");
      r.inv_freq[j] /= double(c.rope_freq_factors[j]);
    }
  }
  return r;
}

void batch_rope_tables(const ModelConfig& config, const RopeFrequencies& rope, const Batch& batch,
                       std::vector<float>& cos, std::vector<float>& sin) {
  const int64_t half = config.head_dim / 2, n = batch.size();
  cos.resize(size_t(n * half));
  sin.resize(size_t(n * half));
  if (config.rope_scaling.type != RopeScalingType::Dynamic) {
    cpu::rope_cos_sin(batch.positions.data(), n, rope.inv_freq.data(), half, rope.attention_factor, cos.data(),
                      sin.data());
    return;
  }
  // Dynamic NTK: the frequencies of a slot's new tokens follow that slot's length after the
  // batch (HF: the largest position in the forward + 1). Cached keys keep the rotation they
  // were given, as in HF.
  std::map<int32_t, int64_t> seq_len;
  for (int64_t i = 0; i < n; ++i) {
    int64_t& len = seq_len[batch.slots[i]];
    len = std::max<int64_t>(len, batch.positions[i] + 1);
  }
  for (int64_t i = 0; i < n; ++i) {
    const RopeFrequencies f = rope_frequencies(config, seq_len[batch.slots[i]]);
    cpu::rope_cos_sin(&batch.positions[i], 1, f.inv_freq.data(), half, f.attention_factor, cos.data() + i * half,
                      sin.data() + i * half);
  }
}

}  // namespace qf
