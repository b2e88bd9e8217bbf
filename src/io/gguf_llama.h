// The Llama-family architectures of GGUF files (general.architecture "llama" or "qwen2"):
// hyper-parameters from "<arch>.*" metadata, GGUF tensor names -> canonical (HF) names, and the
// Q/K row order.
//
// Row order: llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the
// rows of each head of q_proj and k_proj (and their biases) so that RoPE rotates adjacent pairs
// (rows 2i, 2i+1) instead of HF's halves (rows i, i + head_dim/2):
//   gguf_row[h*head_dim + 2*i + j] = hf_row[h*head_dim + j*(head_dim/2) + i],  j in {0, 1}.
// Canonical qforge weights are in HF order, so loading a "llama" GGUF applies the inverse.
// "qwen2" files are converted without it (llama.cpp runs them with NEOX-style RoPE).
#pragma once

#include <optional>
#include <string>

#include "core/tensor.h"
#include "io/gguf.h"
#include "io/model_config.h"

namespace qf::gguf_llama {

// Whether `architecture` (general.architecture) is one qforge reads, and whether its Q/K rows
// are in llama.cpp's interleaved order.
bool is_supported(const std::string& architecture);
bool has_interleaved_qk(const std::string& architecture);

// Hyper-parameters from the metadata (vocab size falling back to the token list, then to the
// rows of token_embd.weight) and rope_freqs.weight, if present, as rope_freq_factors. Throws
// naming the file and key on a missing or mistyped value. Does not call validate().
ModelConfig config_from_gguf(const gguf::File& file);

// The canonical name of a GGUF tensor of this architecture, or nullopt if it is none of the
// model's (rope_freqs.weight, which goes into the config, also gives nullopt).
std::optional<std::string> canonical_name(const std::string& gguf_name);

// Reorders the rows of a [n_heads * head_dim, ...] tensor (or the elements of a bias vector)
// per head: permute_qk_rows turns HF order into GGUF order (as the converter does),
// unpermute_qk_rows undoes it. Any dtype; the result is owned.
Tensor permute_qk_rows(const Tensor& hf_order, int64_t n_heads);
Tensor unpermute_qk_rows(const Tensor& gguf_order, int64_t n_heads);

}  // namespace qf::gguf_llama
