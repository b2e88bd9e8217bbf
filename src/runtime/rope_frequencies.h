// RoPE inverse frequencies of a model, for every rope_scaling kind ModelConfig describes,
// computed once per model (per context length for dynamic NTK) in double precision. Both
// backends consume the same table: the CPU's rope_cos_sin and, later, the GPU's RoPE kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"

namespace qf {

struct RopeFrequencies {
  // head_dim / 2 values: pair j of a head rotates by position * inv_freq[j] radians.
  std::vector<double> inv_freq;
  // Multiplies cos and sin (so q.k scores by its square): YaRN's attention factor, else 1.
  double attention_factor = 1.0;
};

// The frequencies for a sequence of seq_len tokens (positions 0..seq_len-1). Only dynamic NTK
// depends on seq_len; the others ignore it. Kinds, as Hugging Face transformers defines them
// (modeling_rope_utils.py), with base = rope_theta and d = head_dim:
//   none:    inv_freq[j] = base^(-2j/d)
//   linear:  inv_freq[j] / factor (position interpolation)
//   dynamic: base' = base * (factor * L / L0 - (factor - 1))^(d / (d - 2)) when the sequence
//            length L exceeds L0 = original_max_position_embeddings (else
//            max_position_embeddings); base otherwise. HF recomputes this from the largest
//            position in each forward call and keeps it; here it is a function of seq_len.
//   llama3:  wavelengths 2π/inv_freq longer than L0/low_freq_factor are divided by factor,
//            shorter than L0/high_freq_factor kept, in between interpolated smoothly.
//   yarn:    per-frequency blend of interpolated (/factor) and extrapolated frequencies with a
//            linear ramp between the correction dims of beta_fast and beta_slow rotations, and
//            attention_factor = 0.1 ln(factor) + 1 unless the config gives one.
// rope_freq_factors (GGUF's rope_freqs.weight), when present, divide the frequencies: they are
// how GGUF stores Llama-3 scaling, so with them the llama3 kind is not applied a second time.
RopeFrequencies rope_frequencies(const ModelConfig& config, int64_t seq_len);

struct Batch;
// cos/sin [tokens, head_dim / 2] of every token of `batch` at its position, in double rounded to
// float (cpu::rope_cos_sin), with `rope` (the frequencies of max_position_embeddings). Dynamic NTK:
// a slot's new tokens use the frequencies of that slot's length after the batch (HF: the largest
// position in the forward + 1); cached keys keep the rotation they were given, as in HF. What the
// FP32 engines (CPU, simulation) rotate by.
void batch_rope_tables(const ModelConfig& config, const RopeFrequencies& rope, const Batch& batch,
                       std::vector<float>& cos, std::vector<float>& sin);

}  // namespace qf
