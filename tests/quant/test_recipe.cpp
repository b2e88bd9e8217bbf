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

}  // namespace
}  // namespace qf
