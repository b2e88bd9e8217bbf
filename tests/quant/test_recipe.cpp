// Recipes: the built-in ones parse, normalise to a document that parses back equal, and typos
// or impossible combinations fail with a message naming the key.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "quant/recipe.h"

namespace qf {
namespace {

std::string error_of(const std::string& text) {
  try {
    (void)Recipe::parse(text, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(QuantRecipe, BuiltinsParseAndNormaliseToAFixedPoint) {
  const auto names = builtin_recipe_names();
  for (const char* needed : {"rtn-w8", "rtn-w4g128", "rtn-w3g128", "gptq-w4g128", "gptq-w3g128", "gptq-w4", "w8a8-fp8"})
    EXPECT_NE(std::find(names.begin(), names.end(), needed), names.end()) << needed;
  for (const std::string& n : names) {
    SCOPED_TRACE(n);
    const Recipe r = load_recipe(n);
    EXPECT_EQ(r.name, n);
    const nlohmann::json j = r.to_json();
    const Recipe back = Recipe::parse(j.dump(), "normalised " + n);
    EXPECT_TRUE(back == r);
    EXPECT_EQ(back.to_json(), j);  // normalising twice changes nothing
  }
}

TEST(QuantRecipe, BuiltinSettingsAreWhatTheirNamesSay) {
  const Recipe g = load_recipe("gptq-w4g128");
  for (LinearKind k : kAllLinearKinds) {
    EXPECT_EQ(g.linear(k).algorithm, WeightAlgorithm::gptq);
    EXPECT_EQ(g.linear(k).weights.str(), "int4:g128");
    EXPECT_FALSE(g.linear(k).activations);
    EXPECT_TRUE(g.linear(k).gptq.act_order && g.linear(k).gptq.static_groups);
  }
  EXPECT_TRUE(g.needs_calibration());
  const Recipe f = load_recipe("w8a8-fp8");
  EXPECT_FALSE(f.needs_calibration());
  EXPECT_EQ(f.linear(LinearKind::down_proj).weights.str(), "fp8_e4m3:channel");
  ASSERT_TRUE(f.linear(LinearKind::down_proj).activations);
  EXPECT_EQ(f.linear(LinearKind::down_proj).activations->str(), "fp8_e4m3:token");
  EXPECT_EQ(load_recipe("rtn-w8").linear(LinearKind::q_proj).weights.str(), "int8:channel");
  EXPECT_EQ(load_recipe("gptq-w4").linear(LinearKind::q_proj).weights.str(), "int4:channel");
}

TEST(QuantRecipe, DefaultsOverridesAndNormalisation) {
  const Recipe r = Recipe::parse(R"({"name": "mix", "linear": {"algorithm": "gptq", "weights": "int4:g64"},
      "overrides": {"down_proj": {"weights": "int8:channel", "activations": "int8:token"}},
      "kv_cache": "fp8_e4m3:token", "keep": {"lm_head": "f32"}})",
                                 "mix.json");
  EXPECT_EQ(r.linear(LinearKind::q_proj).gptq.percdamp, 0.01);  // GptqOptions' default
  EXPECT_EQ(r.linear(LinearKind::q_proj).gptq.block_size, 128);
  EXPECT_EQ(r.linear(LinearKind::down_proj).algorithm, WeightAlgorithm::gptq);  // inherited from "linear"
  EXPECT_EQ(r.linear(LinearKind::down_proj).weights.str(), "int8:channel");
  EXPECT_EQ(r.linear(LinearKind::down_proj).activations->str(), "int8:token");
  EXPECT_FALSE(r.linear(LinearKind::up_proj).activations);
  EXPECT_EQ(r.embed_tokens, KeepType::bf16);
  EXPECT_EQ(r.lm_head, KeepType::f32);
  const nlohmann::json j = r.to_json();
  // The normalised form: "linear" holds q_proj's settings in full, "overrides" only the kinds
  // that differ, in full.
  EXPECT_EQ(j["linear"]["weights"], "int4:g64");
  EXPECT_EQ(j["linear"]["gptq"]["percdamp"], 0.01);
  ASSERT_EQ(j["overrides"].size(), 1u);
  EXPECT_EQ(j["overrides"]["down_proj"]["algorithm"], "gptq");
  EXPECT_EQ(j["kv_cache"], "fp8_e4m3:token");
  EXPECT_TRUE(Recipe::parse(j.dump(), "normalised") == r);
}

TEST(QuantRecipe, UnknownKeysAndBadValuesAreErrorsNamingTheKey) {
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128"}, "kvcache": null})")
                .find("unknown key \"kvcache\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128", "gptq": {"perc_damp": 0.1}}})")
                .find("linear.gptq: unknown key \"perc_damp\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128"}, "overrides": {"qproj": {}}})")
                .find("\"qproj\" is not a layer kind"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128", "algorithm": "awq"}})")
                .find("\"awq\" is not a weight algorithm"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g1x"}})").find("linear.weights"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {}})").find("linear.weights (the weight format) is required"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"linear": {"weights": "int4:g128"}})").find("needs a \"name\""), std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "bf16"}})").find("is not a quantized format"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:token"}})").find("write :channel"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128", "activations": "fp8_e4m3:tensor"}})")
                .find("shares a scale across tokens"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128", "algorithm": "gptq",
                         "gptq": {"act_order": true, "static_groups": false}}})")
                .find("needs static_groups"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "transforms": ["hadamard"], "linear": {"weights": "int4:g128"}})")
                .find("not applied"),
            std::string::npos);
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  try {
    (void)load_recipe("gptq-w5");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gptq-w4g128"), std::string::npos) << e.what();  // lists the names
  }
}


TEST(QuantRecipe, SmoothTransformParsesNormalisesAndCalibrates) {
  const Recipe r = Recipe::parse(R"({"name": "s", "transforms": ["smooth"], "linear": {"weights": "int4:g128"}})", "s.json");
  ASSERT_TRUE(r.smoothing());
  EXPECT_FALSE(r.smoothing()->alpha);
  EXPECT_EQ(r.linear(LinearKind::q_proj).algorithm, WeightAlgorithm::rtn);
  EXPECT_TRUE(r.needs_calibration());  // RTN, but the scales come from the activations
  const Recipe f = Recipe::parse(R"({"name": "s", "transforms": ["smooth:0.50"], "linear": {"weights": "int4:g128"}})",
                                 "s.json");
  ASSERT_TRUE(f.smoothing() && f.smoothing()->alpha);
  EXPECT_EQ(*f.smoothing()->alpha, 0.5f);
  EXPECT_EQ(f.transforms, std::vector<std::string>{"smooth:0.5"});
  EXPECT_TRUE(Recipe::parse(f.to_json().dump(), "normalised") == f);
  EXPECT_FALSE(Recipe::parse(R"({"name": "s", "linear": {"weights": "int4:g128"}})", "s.json").smoothing());
  for (const char* bad : {"smooth:1.5", "smooth:", "smooth:x", "smooth:-0.1", "smooth:0.5x"})
    EXPECT_NE(error_of(str(R"({"name": "x", "transforms": [")", bad, R"("], "linear": {"weights": "int4:g128"}})"))
                  .find("alpha must be a number in [0, 1]"),
              std::string::npos)
        << bad;
  // The FireQ recipes: smoothing in the full recipe and its RTN / no-tensor-scale ablations, not
  // in the no-smooth ablation, which is otherwise the full recipe; the RTN x FP8 baseline.
  const Recipe fireq = load_recipe("fireq-w4a8"), no_smooth = load_recipe("fireq-w4a8-no-smooth");
  EXPECT_TRUE(fireq.smoothing() && !fireq.smoothing()->alpha);
  EXPECT_TRUE(load_recipe("fireq-w4a8-rtn").smoothing());
  EXPECT_TRUE(load_recipe("fireq-w4a8-no-tensor-scale").smoothing());
  EXPECT_FALSE(no_smooth.smoothing());
  EXPECT_TRUE(no_smooth.linears == fireq.linears);
  const Recipe base = load_recipe("rtn-w4g128-fp8");
  EXPECT_FALSE(base.smoothing() || base.needs_calibration());
  EXPECT_EQ(base.linear(LinearKind::gate_proj).weights.str(), "int4:g128");
  EXPECT_EQ(base.linear(LinearKind::gate_proj).activations->str(), "fp8_e4m3:token");
  EXPECT_NE(error_of(R"({"name": "x", "transforms": ["smooth", "smooth:0.5"], "linear": {"weights": "int4:g128"}})")
                .find("listed twice"),
            std::string::npos);
}

TEST(QuantRecipe, RopeScaleTransformAndQueryFormat) {
  auto parse = [](const std::string& transforms, const std::string& extra = "") {
    return Recipe::parse(str(R"({"name": "r", "transforms": [)", transforms,
                             R"(], "linear": {"weights": "int4:g128"})", extra, "}"),
                         "r.json");
  };
  const Recipe both = parse(R"("rope_scale")", R"(, "kv_cache": "int4:token:scale=f16", "query": "fp8_e4m3:token")");
  ASSERT_TRUE(both.rope_scaling());
  EXPECT_TRUE(both.rope_scaling()->pre && both.rope_scaling()->post);
  EXPECT_EQ(both.rope_scaling()->alpha, 1.0f);  // FireQ's defaults
  EXPECT_EQ(both.rope_scaling()->beta, 1.0f);
  EXPECT_EQ(both.rope_scaling()->top_k, 3);
  EXPECT_TRUE(both.needs_calibration());  // RTN, but the scales come from the keys
  EXPECT_FALSE(both.smoothing());
  ASSERT_TRUE(both.query);
  EXPECT_EQ(both.query->str(), "fp8_e4m3:token");
  EXPECT_EQ(both.kv_cache->str(), "int4:token:scale=f16");
  const nlohmann::json j = both.to_json();
  EXPECT_EQ(j["query"], "fp8_e4m3:token");
  EXPECT_TRUE(Recipe::parse(j.dump(), "normalised") == both);
  EXPECT_FALSE(Recipe::parse(j.dump(), "normalised") == parse(R"("rope_scale")"));  // query compared
  EXPECT_TRUE(parse(R"("rope_scale")").to_json()["query"].is_null());
  const Recipe pre = parse(R"("smooth", "rope_scale:pre")");
  EXPECT_TRUE(pre.rope_scaling()->pre && !pre.rope_scaling()->post);
  EXPECT_TRUE(pre.smoothing());
  const Recipe post = parse(R"("rope_scale:post")");
  EXPECT_TRUE(!post.rope_scaling()->pre && post.rope_scaling()->post);
  EXPECT_EQ(post.transforms, std::vector<std::string>{"rope_scale:post"});
  EXPECT_TRUE(Recipe::parse(post.to_json().dump(), "normalised") == post);
  EXPECT_FALSE(parse(R"("smooth")").rope_scaling());
  for (const char* bad : {"rope_scale:", "rope_scale:both", "rope_scale:0.5", "rope_scaling", "rope_scale:PRE"})
    EXPECT_NE(error_of(str(R"({"name": "x", "transforms": [")", bad, R"("], "linear": {"weights": "int4:g128"}})"))
                  .find("\"rope_scale:pre\""),
              std::string::npos)
        << bad;
  EXPECT_NE(error_of(R"({"name": "x", "transforms": ["rope_scale", "rope_scale:pre"], "linear": {"weights": "int4:g128"}})")
                .find("listed twice"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128"}, "query": "fp8_e4m3:tensor"})")
                .find("query fp8_e4m3:tensor: each query row"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"name": "x", "linear": {"weights": "int4:g128"}, "query": "fp8_e4m3:tokn"})").find("query"),
            std::string::npos);
}

// The FireQ family: fireq-w4a8 covers attention (INT4 KV, FP8 Q, both scalings); the linear-only
// recipe of issue 6 is fireq-w4a8-linear; the ablations differ from the full recipe in one thing.
TEST(QuantRecipe, FireqAttentionRecipes) {
  const Recipe full = load_recipe("fireq-w4a8"), linear = load_recipe("fireq-w4a8-linear");
  EXPECT_EQ(full.transforms, (std::vector<std::string>{"smooth", "rope_scale"}));
  EXPECT_EQ(full.kv_cache->str(), "int4:token:scale=f16");
  EXPECT_EQ(full.query->str(), "fp8_e4m3:token");
  EXPECT_TRUE(linear.linears == full.linears);
  EXPECT_EQ(linear.transforms, std::vector<std::string>{"smooth"});
  EXPECT_FALSE(linear.kv_cache || linear.query);
  auto same_but = [&](const char* name, std::vector<std::string> transforms, const char* kv) {
    SCOPED_TRACE(name);
    const Recipe r = load_recipe(name);
    EXPECT_TRUE(r.linears == full.linears);
    EXPECT_EQ(r.transforms, transforms);
    EXPECT_EQ(r.kv_cache->str(), kv);
    EXPECT_EQ(r.query, full.query);
  };
  same_but("fireq-w4a8-no-rope-scale", {"smooth"}, "int4:token:scale=f16");
  same_but("fireq-w4a8-pre-rope", {"smooth", "rope_scale:pre"}, "int4:token:scale=f16");
  same_but("fireq-w4a8-post-rope", {"smooth", "rope_scale:post"}, "int4:token:scale=f16");
  same_but("fireq-w4a8-kv-fp8", {"smooth", "rope_scale"}, "fp8_e4m3:token:scale=f16");
  same_but("fireq-w4a8-kv-bf16", {"smooth", "rope_scale"}, "bf16");
}

}  // namespace
}  // namespace qf
