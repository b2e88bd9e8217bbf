// Recipe: how a model is quantized, as data (DESIGN.md: "recipes are data, not code paths").
// A recipe is a JSON document; the built-in ones are the files in recipes/ (embedded into the
// binary at build time), and any file of the same form can be passed with --recipe FILE.json:
//
//   {
//     "name": "gptq-w4g128",
//     "description": "free text",
//     "transforms": [],                      // function-preserving transforms, in order (below)
//     "linear": {                            // every linear layer of every block ...
//       "algorithm": "gptq",                 //   rtn | gptq
//       "weights": "int4:g128",              //   a Format (formats/format.h)
//       "activations": null,                 //   a Format the layer's input is rounded to, or null
//       "gptq": {"percdamp": 0.01, "block_size": 128, "act_order": true, "static_groups": true},
//       "rtn": {"clip": null}                //   or {"min_factor": 0.5, "steps": 50, "objective": "diagonal"}
//     },
//     "overrides": {"down_proj": {"weights": "int8:channel"}},   // ... except these kinds
//     "kv_cache": null,                      // a Format for the KV cache, or null (unquantized)
//     "query": null,                         // a Format each query row is rounded to, or null
//     "keep": {"embed_tokens": "bf16", "lm_head": "bf16"}        // stored unquantized, in this type
//   }
//
// Layer kinds are the Llama block's seven linears (q_proj ... down_proj); an override names a
// kind and sets any of the "linear" fields. Omitted fields take the defaults shown in
// LinearRecipe / GptqOptions / ClipSearch. Unknown keys are errors (a typo must not silently
// fall back to a default). RMSNorm weights are always kept in F32 (a few KB).
//
// Transforms (each at most once):
//   "smooth"    FireQ's / SmoothQuant's channel-wise smoothing (quant/smooth.h) of the linear
//               inputs that follow an RMSNorm: attention_in (q, k, v) and mlp_in (gate, up). Per
//               block and input, s = smoothing_scales(activation absmax, weight absmax, alpha) is
//               chosen by the calibration loss (smooth.h SmoothingLoss: the quantized layers'
//               output error on a sample of the stage's input rows) over default_alpha_grid() and
//               "no smoothing" (s = 1); then the norm weight g /= s and the linears' columns *= s
//               before the weights are quantized. Needs calibration even with RTN. o_proj and
//               down_proj inputs are not smoothed (no merge into v / up yet).
//   "smooth:A"  the same with the fixed alpha A in [0, 1] (no search; normalised to %g).
//   "rope_scale"       FireQ's RoPE-aware scaling of keys and queries (quant/rope_scale.h), both
//                      parts: per KV head and RoPE pair (channels j, j + head_dim/2) the pre-RoPE
//                      scale s = alpha / (max over calibration tokens of the pair's norm in the
//                      k_proj output), merged into the weights (k_proj rows *= s, the rows of every
//                      q_proj head reading that KV head /= s), then the post-RoPE scale: per KV head
//                      the top_k channels by max |k| after RoPE, and their pair partners, get
//                      k *= beta / max|k_c| and q /= it at run time (the checkpoint's
//                      k_post_rope_scale tensors, io/quantized_checkpoint.h); their pre-RoPE scale
//                      is reset to 1. FireQ's defaults alpha = beta = 1, top_k = 3 (RopeScaleTransform).
//                      Needs calibration. q.k, hence the full-precision model, is unchanged.
//   "rope_scale:pre"   the pre-RoPE part only (no runtime tensor).
//   "rope_scale:post"  the post-RoPE part only (the chosen channels brought to beta / alpha x
//                      the largest max pair norm of the head's other pairs, rope_scale.h).
// "query" rounds every (token, query head) row of head_dim values after RoPE and the post-RoPE
// scaling, as a kernel that quantizes Q for an FP8 attention does ("fp8_e4m3:token": FireQ).
// "kv_cache" rounds every (token, KV head) row as it is written to the cache; FireQ's is
// "int4:token:scale=f16" (one scale per token and head; F16, not FP8 E4M3, because an E4M3 scale
// underflows for the small value vectors of some heads).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"
#include "io/model_config.h"
#include "quant/gptq.h"
#include "quant/rtn.h"

namespace qf {

enum class LinearKind : uint8_t { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
inline constexpr int kLinearKinds = 7;
inline constexpr std::array<LinearKind, kLinearKinds> kAllLinearKinds = {
    LinearKind::q_proj, LinearKind::k_proj,  LinearKind::v_proj,   LinearKind::o_proj,
    LinearKind::gate_proj, LinearKind::up_proj, LinearKind::down_proj};
// "q_proj", ...; and the canonical leaf ("self_attn.q_proj.weight", "mlp.down_proj.weight").
const char* linear_kind_name(LinearKind k);
std::string linear_kind_leaf(LinearKind k);
std::optional<LinearKind> parse_linear_kind(std::string_view name);

// Block `layer`'s linear of kind k in a model of config c: its weight's canonical name, its bias's
// (empty: the config has none for it; only q/k/v carry one, with attention_bias), and its shape
// [out, in]. What every engine and the calibration pass load.
struct BlockLinear {
  std::string weight, bias;
  int64_t out = 0, in = 0;
};
BlockLinear block_linear(const ModelConfig& c, int64_t layer, LinearKind k);

enum class WeightAlgorithm : uint8_t { rtn, gptq };
const char* weight_algorithm_name(WeightAlgorithm a);

// The objective of RTN's clipping search (rtn.h RtnOptions::hessian): the weight MSE, the
// diagonal of the calibration Hessian, or the full Hessian.
enum class ClipObjective : uint8_t { weight, diagonal, full };

struct LinearRecipe {
  WeightAlgorithm algorithm = WeightAlgorithm::rtn;
  Format weights;                     // must be a scaled or 8-bit-or-narrower format
  std::optional<Format> activations;  // per-token (row) formats only: a kernel rounds each token alone
  GptqOptions gptq;                   // algorithm gptq
  ClipSearch rtn_clip;                // algorithm rtn (enabled = false: plain round to nearest)
  ClipObjective rtn_clip_objective = ClipObjective::weight;

  // Whether quantizing this layer needs calibration statistics (GPTQ, or a Hessian-weighted clip).
  bool needs_hessian() const;
};

// What an unquantized tensor (embedding, LM head) is stored as.
enum class KeepType : uint8_t { f32, bf16 };

// The "smooth" transform's settings (see the header comment).
struct SmoothTransform {
  std::optional<float> alpha;  // fixed; none: searched by the calibration loss
};

// The "rope_scale" transform's settings (see the header comment; quant/rope_scale.h).
struct RopeScaleTransform {
  bool pre = true, post = true;
  float alpha = 1.0f;  // pre-RoPE: each pair's max norm becomes alpha
  float beta = 1.0f;   // post-RoPE: each chosen channel's max |k| becomes beta
  int top_k = 3;       // post-RoPE: channels chosen per KV head (plus their pair partners)
};

struct Recipe {
  std::string name;
  std::string description;
  std::vector<std::string> transforms;
  std::array<LinearRecipe, kLinearKinds> linears;  // indexed by LinearKind
  std::optional<Format> kv_cache;
  std::optional<Format> query;  // per (token, query head) row, after RoPE
  KeepType embed_tokens = KeepType::bf16;
  KeepType lm_head = KeepType::bf16;

  const LinearRecipe& linear(LinearKind k) const { return linears[size_t(k)]; }
  bool needs_calibration() const;
  // The "smooth" transform if the recipe lists it.
  std::optional<SmoothTransform> smoothing() const;
  // The "rope_scale" transform if the recipe lists it.
  std::optional<RopeScaleTransform> rope_scaling() const;

  // Parses a recipe document; `source` (a file name, "built-in recipe X") is named in errors.
  static Recipe parse(std::string_view json_text, const std::string& source);
  // The normalised document: every field explicit; "linear" holds q_proj's settings and
  // "overrides" every kind whose settings differ, in full. parse(to_json().dump()) gives back
  // an equal recipe; checkpoints record it so a run can be reproduced from the checkpoint.
  nlohmann::json to_json() const;
};

bool operator==(const LinearRecipe& a, const LinearRecipe& b);
bool operator==(const Recipe& a, const Recipe& b);

// The recipes embedded from recipes/*.json, by name (the file name without .json).
std::vector<std::string> builtin_recipe_names();
// The embedded JSON text of a built-in recipe; throws listing the names when unknown.
std::string_view builtin_recipe_text(const std::string& name);
// A built-in name, or a path to a .json file.
Recipe load_recipe(const std::string& name_or_path);

}  // namespace qf
