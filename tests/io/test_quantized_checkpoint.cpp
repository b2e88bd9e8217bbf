// Quantized checkpoints (io/quantized_checkpoint.h): every storage case round-trips exactly, the
// write is atomic (a failure injected after any file leaves nothing loadable at the path, and an
// existing checkpoint intact), and loading rejects damaged tensors and configs with a message
// naming the tensor and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/fp8.h"
#include "formats/packing.h"
#include "io/gguf.h"
#include "io/io_test_util.h"
#include "io/json_text.h"
#include "io/quantized_checkpoint.h"
#include "io/safetensors.h"
#include "runtime/tiny_model.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

// One format per layer kind, covering: packed 4/3/2-bit ints, symmetric and asymmetric, BF16 /
// FP8 scales, a tensor scale, unpacked int8 and FP8 codes, FPx codes, a ragged last group
// (48 columns in groups of 20: 20, 20, 8).
const char* format_for(const std::string& name) {
  if (name.find("q_proj") != std::string::npos) return "int4:g16";
  if (name.find("k_proj") != std::string::npos) return "int3:g16:asym:scale=bf16";
  if (name.find("v_proj") != std::string::npos) return "int8:channel";
  if (name.find("o_proj") != std::string::npos) return "fp8_e4m3:channel";
  if (name.find("gate_proj") != std::string::npos) return "int4:g16:scale=fp8_e4m3:tensor_scale";
  if (name.find("up_proj") != std::string::npos) return "int2:g20:asym";
  return "fp6_e3m2:channel";  // down_proj
}

QuantizedModel tiny_quantized(uint32_t seed = 1, const char* (*format_of)(const std::string&) = format_for) {
  test::TinyOptions to;
  to.seed = seed;
  const Checkpoint ck = test::tiny_checkpoint(to);
  QuantizedModel m;
  m.config = ck.config;
  m.quantization.recipe_name = "test";
  m.quantization.recipe = {{"name", "test"}};
  m.quantization.kv_cache = Format::parse("fp8_e4m3:token");
  int i = 0;
  for (const auto& [name, t] : ck.tensors) {
    const bool linear = name.find("_proj.weight") != std::string::npos;
    if (!linear) {
      m.dense[name] = t;
      continue;
    }
    const Format f = Format::parse(format_of(name));
    ++i;
    m.weights[name] = quantize(t.data<float>(), t.dim(0), t.dim(1), f);
    LinearQuantization lq;
    lq.weights = f;
    lq.algorithm = "rtn";
    lq.relative_error = 0.01 * i;
    if (i % 3 == 0) lq.activations = Format::parse("int8:token");
    m.quantization.linears[name] = lq;
  }
  return m;
}

void expect_equal(const QuantizedModel& a, const QuantizedModel& b) {
  EXPECT_EQ(a.quantization.to_json(), b.quantization.to_json());
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (const auto& [name, q] : a.weights) {
    SCOPED_TRACE(name);
    const QuantizedMatrix& r = b.weights.at(name);
    EXPECT_EQ(r.format, q.format);
    EXPECT_EQ(r.codes, q.codes);
    EXPECT_EQ(r.scales, q.scales);
    EXPECT_EQ(r.zeros, q.zeros);
    EXPECT_EQ(r.tensor_scale, q.tensor_scale);
  }
  ASSERT_EQ(a.dense.size(), b.dense.size());
  for (const auto& [name, t] : a.dense) {
    const Tensor& r = b.dense.at(name);
    ASSERT_EQ(r.dtype(), t.dtype()) << name;
    ASSERT_EQ(r.shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << name;
  }
}

TEST(QuantizedCheckpoint, RoundTripIsExactForEveryStorageCase) {
  ScratchDir tmp;
  const std::string dir = tmp.file("q");
  const QuantizedModel m = tiny_quantized();
  write_quantized_checkpoint(dir, m, {{"tokenizer.json", "{}"}});
  EXPECT_TRUE(is_quantized_checkpoint(dir));
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.json"));
  const QuantizedModel back = read_quantized_checkpoint(dir);
  expect_equal(m, back);
  EXPECT_EQ(back.config.hidden_size, m.config.hidden_size);
  EXPECT_EQ(back.quantization.kv_cache->str(), "fp8_e4m3:token");

  // The stored layout, as docs/checkpoint.md specifies it.
  const auto file = safetensors::File::open(dir + "/model.safetensors");
  const auto* q = file->find("model.layers.0.self_attn.k_proj.weight_packed");  // int3:g16:asym, [16, 48]
  ASSERT_TRUE(q);
  EXPECT_EQ(q->dtype, safetensors::Dtype::U8);
  EXPECT_EQ(q->shape, (Shape{16, int64_t(packed_bytes(48, 3))}));
  EXPECT_EQ(file->find("model.layers.0.self_attn.k_proj.weight_scale")->dtype, safetensors::Dtype::BF16);
  EXPECT_EQ(file->find("model.layers.0.self_attn.k_proj.weight_zero_point")->shape, (Shape{16, 3}));
  EXPECT_EQ(file->find("model.layers.0.self_attn.o_proj.weight")->dtype, safetensors::Dtype::F8_E4M3);  // unpacked
  EXPECT_EQ(file->find("model.layers.0.self_attn.v_proj.weight")->dtype, safetensors::Dtype::I8);
  EXPECT_EQ(file->find("model.layers.0.mlp.up_proj.weight_scale")->shape, (Shape{80, 3}));  // ragged: 20, 20, 8
  EXPECT_TRUE(file->find("model.layers.0.mlp.gate_proj.weight_tensor_scale"));
  const nlohmann::json config = json_text::parse(json_text::read_file(dir + "/config.json", 1 << 20), "config");
  EXPECT_EQ(config["quantization_config"]["quant_method"], "qforge");
  EXPECT_EQ(config["model_type"], "llama");

  // The simulated model: exactly the dequantized values.
  const Checkpoint ck = dequantized_checkpoint(back, dir);
  for (const auto& [name, qm] : m.weights) {
    std::vector<float> expected(size_t(qm.rows * qm.cols));
    dequantize(qm, expected.data());
    const Tensor& t = ck.tensor(name);
    ASSERT_EQ(t.dtype(), DType::F32);
    EXPECT_EQ(std::memcmp(t.raw(), expected.data(), expected.size() * 4), 0) << name;
    EXPECT_EQ(ck.source_dtypes.at(name), qm.format.str());
  }
}

TEST(QuantizedCheckpoint, AFailureAtAnyPointLeavesNothingLoadable) {
  ScratchDir tmp;
  const std::string dir = tmp.file("q");
  const QuantizedModel m = tiny_quantized(1);
  const std::vector<CheckpointFile> files = {{"tokenizer.json", "{}"}, {"tokenizer_config.json", "{}"}};
  for (const char* at : {"model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"}) {
    SCOPED_TRACE(at);
    QuantizedWriteOptions o;
    o.on_file_written = [&](const std::string& f) {
      if (f == at) throw Error("injected failure after " + f);
    };
    EXPECT_ERROR(write_quantized_checkpoint(dir, m, files, o), "injected failure");
    EXPECT_FALSE(fs::exists(dir));
    EXPECT_FALSE(is_quantized_checkpoint(dir));
    // No temporary folder is left behind either.
    EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 0);
  }
  // Over an existing checkpoint: a failed write keeps the old one whole; a good one replaces it.
  write_quantized_checkpoint(dir, m, files);
  const QuantizedModel other = tiny_quantized(2);
  QuantizedWriteOptions fail_late;
  fail_late.overwrite = true;
  fail_late.on_file_written = [](const std::string& f) {
    if (f == "config.json") throw Error("injected failure");
  };
  EXPECT_ERROR(write_quantized_checkpoint(dir, other, files, fail_late), "injected failure");
  expect_equal(m, read_quantized_checkpoint(dir));
  EXPECT_ERROR(write_quantized_checkpoint(dir, other, files), "already exists");
  QuantizedWriteOptions overwrite;
  overwrite.overwrite = true;
  write_quantized_checkpoint(dir, other, files, overwrite);
  expect_equal(other, read_quantized_checkpoint(dir));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 1);
  // A folder that is not a quantized checkpoint is never replaced.
  fs::create_directory(tmp.file("plain"));
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("plain"), m, files, overwrite), "not a qforge quantized checkpoint");
}

TEST(QuantizedCheckpoint, WriteChecksTheModelFirst) {
  ScratchDir tmp;
  QuantizedModel m = tiny_quantized();
  m.dense.erase(names::final_norm());
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("a"), m, {}), "model.norm.weight", "missing");
  m = tiny_quantized();
  m.quantization.linears.erase("model.layers.1.mlp.down_proj.weight");
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("a"), m, {}), "model.layers.1.mlp.down_proj.weight",
               "no entry");
  m = tiny_quantized();
  m.quantization.linears["model.layers.0.self_attn.q_proj.weight"].weights = Format::parse("int8:channel");
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("a"), m, {}), "q_proj", "stored as int4:g16");
  EXPECT_FALSE(fs::exists(tmp.file("a")));
}

// Rewrites the checkpoint's tensor file through `edit` (a list of name -> {dtype, shape, bytes}).
struct RawTensor {
  safetensors::Dtype dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};
void edit_tensors(const std::string& dir, const std::function<void(std::map<std::string, RawTensor>&)>& edit) {
  const std::string path = dir + "/model.safetensors";
  std::map<std::string, RawTensor> all;
  {
    const auto file = safetensors::File::open(path);
    for (const auto& e : file->tensors())
      all[e.name] = {e.dtype, e.shape, std::vector<uint8_t>(e.data, e.data + e.nbytes())};
  }
  edit(all);
  std::vector<safetensors::TensorToWrite> out;
  for (const auto& [name, t] : all) out.push_back({name, t.dtype, t.shape, t.bytes.data()});
  safetensors::write_file(path, out);
}

// lut formats (FireQ's INT4 -> FP8 table): with and without a tensor scale, E4M3 and E5M2 scales,
// a ragged last group.
const char* lut_format_for(const std::string& name) {
  if (name.find("up_proj") != std::string::npos) return "int4:g20:scale=fp8_e4m3:lut";
  if (name.find("down_proj") != std::string::npos) return "int4:channel:scale=fp8_e5m2:tensor_scale:lut";
  return "int4:g16:scale=fp8_e4m3:tensor_scale:lut";
}

TEST(QuantizedCheckpoint, LutFormatsRoundTripAndDequantizeThroughTheTable) {
  ScratchDir tmp;
  const std::string dir = tmp.file("q");
  const QuantizedModel m = tiny_quantized(3, lut_format_for);
  write_quantized_checkpoint(dir, m, {});
  const QuantizedModel back = read_quantized_checkpoint(dir);
  expect_equal(m, back);
  const nlohmann::json config = json_text::parse(json_text::read_file(dir + "/config.json", 1 << 20), "config");
  const std::string gate = "model.layers.0.mlp.gate_proj";
  EXPECT_EQ(config["quantization_config"]["linears"][gate + ".weight"]["weights"], "int4:g16:scale=fp8_e4m3:tensor_scale:lut");
  const auto file = safetensors::File::open(dir + "/model.safetensors");
  EXPECT_EQ(file->find(gate + ".weight_scale")->dtype, safetensors::Dtype::F8_E4M3);
  EXPECT_TRUE(file->find(gate + ".weight_tensor_scale"));
  EXPECT_FALSE(file->find("model.layers.0.mlp.up_proj.weight_tensor_scale"));

  // The simulated weights are the table's values, round(q * sigma) * t, not q * sigma * t.
  const Checkpoint ck = dequantized_checkpoint(back, dir);
  int differs = 0;
  for (const auto& [name, qm] : m.weights) {
    std::vector<float> expected(size_t(qm.rows * qm.cols));
    dequantize(qm, expected.data());
    EXPECT_EQ(std::memcmp(ck.tensor(name).raw(), expected.data(), expected.size() * 4), 0) << name;
    EXPECT_EQ(ck.source_dtypes.at(name), qm.format.str());
    for (int64_t r = 0; r < qm.rows; ++r)
      for (int64_t c = 0; c < qm.cols; ++c) differs += expected[size_t(r * qm.cols + c)] != qm.code_value(r, c) * qm.scale_of(r, c);
  }
  EXPECT_GT(differs, 0);

  // A stored scale past 56 (here E4M3's 448) would saturate the table: refused on load.
  edit_tensors(dir, [&](auto& t) { t[gate + ".weight_scale"].bytes[4] = kE4M3MaxCode; });
  EXPECT_ERROR(read_quantized_checkpoint(dir), gate + ".weight'", "scale [1, 1] is 448, above 56");
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = json_text::parse(json_text::read_file(dir + "/config.json", 1 << 20), "config");
  edit(j);
  testing::write_text(dir + "/config.json", j.dump());
}

TEST(QuantizedCheckpoint, LoadingNamesTheTensorAndTheProblem) {
  ScratchDir tmp;
  const QuantizedModel m = tiny_quantized();
  int n = 0;
  auto fresh = [&] {
    const std::string dir = tmp.file("q" + std::to_string(n++));
    write_quantized_checkpoint(dir, m, {});
    return dir;
  };
  const std::string q = "model.layers.0.self_attn.q_proj";  // int4:g16, F32 scales
  const std::string k = "model.layers.0.self_attn.k_proj";  // int3:g16:asym, BF16 scales
  const std::string o = "model.layers.0.self_attn.o_proj";  // fp8_e4m3:channel
  std::string d = fresh();
  edit_tensors(d, [&](auto& t) {
    const float nan = NAN;
    std::memcpy(t[q + ".weight_scale"].bytes.data() + 4 * 5, &nan, 4);
  });
  EXPECT_ERROR(read_quantized_checkpoint(d), q + ".weight'", "scale [1, 2]", "finite");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t.erase(q + ".weight_packed"); });
  EXPECT_ERROR(read_quantized_checkpoint(d), q + ".weight_packed", "missing");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t["model.layers.0.extra"] = {safetensors::Dtype::F32, {1}, {0, 0, 0, 0}}; });
  EXPECT_ERROR(read_quantized_checkpoint(d), "model.layers.0.extra", "not a tensor of this model");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t[q + ".weight_scale"].shape = {24, 1}; t[q + ".weight_scale"].bytes.resize(96); });
  EXPECT_ERROR(read_quantized_checkpoint(d), q + ".weight_scale", "has shape [24, 1], expected [48, 3]");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t[q + ".weight_scale"].dtype = safetensors::Dtype::I32; });
  EXPECT_ERROR(read_quantized_checkpoint(d), q + ".weight_scale", "has dtype I32, expected F32");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t[k + ".weight_zero_point"].bytes[3] = 8; });  // int3: 0..7
  EXPECT_ERROR(read_quantized_checkpoint(d), k + ".weight'", "zero point [1, 0] is 8");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t[o + ".weight"].bytes[7] = 0x7F; });  // E4M3 NaN
  EXPECT_ERROR(read_quantized_checkpoint(d), o + ".weight'", "element (0, 7)", "0x7f");
  d = fresh();
  edit_tensors(d, [&](auto& t) { t[names::final_norm()].dtype = safetensors::Dtype::I32; });
  EXPECT_ERROR(read_quantized_checkpoint(d), "model.norm.weight", "I32", "F32, F16 or BF16");
  d = fresh();
  edit_config(d, [&](nlohmann::json& j) {
    j["quantization_config"]["linears"][q + ".weight"]["weights"] = "int8:channel";
  });
  EXPECT_ERROR(read_quantized_checkpoint(d), q + ".weight");
  d = fresh();
  edit_config(d, [&](nlohmann::json& j) { j["quantization_config"]["quant_method"] = "compressed-tensors"; });
  EXPECT_ERROR(read_quantized_checkpoint(d), "quant_method is \"compressed-tensors\"");
  d = fresh();
  edit_config(d, [&](nlohmann::json& j) {
    j["quantization_config"]["linears"][q + ".weight"]["weights"] = "int4:g1x";
  });
  EXPECT_ERROR(read_quantized_checkpoint(d), "linears[\"" + q + ".weight\"].weights");
  d = fresh();
  edit_config(d, [&](nlohmann::json& j) { j["hidden_size"] = 64; });
  EXPECT_ERROR(read_quantized_checkpoint(d), "shape");
  d = fresh();
  fs::remove(d + "/model.safetensors");
  EXPECT_ERROR(read_quantized_checkpoint(d), "model.safetensors is missing");
}

// A model quantized from a GGUF file carries its tokenizer as tokenizer.gguf: the tokenizer.*
// keys and the general.* keys the tokenizer reads, nothing else, in a binary file written
// byte-exactly by the checkpoint writer; the chat template comes from it.
TEST(QuantizedCheckpoint, CarriesAGgufTokenizerAsTokenizerGguf) {
  gguf::Metadata source;
  source.set_source("model.gguf");
  auto str_value = [](std::string s) { return gguf::Value{gguf::ValueType::STRING, gguf::ValueType::UINT8, s}; };
  source.set("general.architecture", str_value("llama"));
  source.set("general.name", str_value("Tiny"));
  source.set("general.file_type", {gguf::ValueType::UINT32, gguf::ValueType::UINT8, uint64_t(3)});
  source.set("llama.block_count", {gguf::ValueType::UINT32, gguf::ValueType::UINT8, uint64_t(2)});
  source.set("tokenizer.ggml.model", str_value("gpt2"));
  source.set("tokenizer.ggml.tokens", {gguf::ValueType::ARRAY, gguf::ValueType::STRING,
                                       std::vector<std::string>{"a", "b", "ab"}});
  source.set("tokenizer.ggml.merges", {gguf::ValueType::ARRAY, gguf::ValueType::STRING,
                                       std::vector<std::string>{"a b"}});
  source.set("tokenizer.ggml.token_type", {gguf::ValueType::ARRAY, gguf::ValueType::INT32,
                                           std::vector<int64_t>{1, 1, 1}});
  source.set("tokenizer.ggml.bos_token_id", {gguf::ValueType::UINT32, gguf::ValueType::UINT8, uint64_t(2)});
  source.set("tokenizer.ggml.add_bos_token", {gguf::ValueType::BOOL, gguf::ValueType::UINT8, false});
  source.set("tokenizer.chat_template", str_value("{% for message in messages %}<|im_start|>{% endfor %}"));

  const CheckpointFile f = tokenizer_gguf_file(source);
  EXPECT_EQ(f.name, kTokenizerGgufFile);
  ScratchDir tmp;
  const std::string dir = tmp.file("q");
  write_quantized_checkpoint(dir, tiny_quantized(), {f});
  const std::vector<uint8_t> on_disk = testing::read_bytes(dir + "/" + kTokenizerGgufFile);
  ASSERT_EQ(on_disk.size(), f.content.size());
  EXPECT_EQ(std::memcmp(on_disk.data(), f.content.data(), on_disk.size()), 0);  // binary, NULs included

  const auto carried = gguf::File::open(dir + "/" + kTokenizerGgufFile);
  EXPECT_TRUE(carried->tensors().empty());
  EXPECT_EQ(carried->metadata().keys(),
            (std::vector<std::string>{"general.architecture", "general.name", "tokenizer.chat_template",
                                      "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
                                      "tokenizer.ggml.merges", "tokenizer.ggml.model", "tokenizer.ggml.token_type",
                                      "tokenizer.ggml.tokens"}));
  for (const std::string& key : carried->metadata().keys())
    EXPECT_TRUE(carried->metadata().find(key)->data == source.find(key)->data) << key;
  EXPECT_EQ(dequantized_checkpoint(read_quantized_checkpoint(dir), dir).chat_template,
            "{% for message in messages %}<|im_start|>{% endfor %}");

  gguf::Metadata no_tokenizer;
  no_tokenizer.set_source("weights-only.gguf");
  EXPECT_ERROR(tokenizer_gguf_file(no_tokenizer), "weights-only.gguf", "tokenizer.ggml.model");
}

// A checkpoint from before tokenizer.gguf named the source GGUF by absolute path
// (quantization_config.tokenizer_gguf); it is refused with a message that says what to do.
TEST(QuantizedCheckpoint, OldCheckpointNamingTheSourceGgufIsRefusedClearly) {
  ScratchDir tmp;
  const std::string dir = tmp.file("q");
  write_quantized_checkpoint(dir, tiny_quantized(), {});
  edit_config(dir, [](nlohmann::json& j) { j["quantization_config"]["tokenizer_gguf"] = "/gone/model.gguf"; });
  EXPECT_ERROR(read_quantized_checkpoint(dir), "config.json", "tokenizer_gguf", "/gone/model.gguf",
               "quantize the model again", "tokenizer.gguf");
  // null is what it wrote for Hugging Face sources, which referenced nothing: still readable.
  edit_config(dir, [](nlohmann::json& j) { j["quantization_config"]["tokenizer_gguf"] = nullptr; });
  EXPECT_NO_THROW(read_quantized_checkpoint(dir));
}

TEST(QuantizedCheckpoint, PaddingBitsMustBeZero) {
  // hidden 36: an int3 row of 36 codes is 108 bits, 14 bytes with 4 padding bits at the end.
  test::TinyOptions to;
  to.hidden = 36;
  const Checkpoint ck = test::tiny_checkpoint(to);
  QuantizedModel m;
  m.config = ck.config;
  for (const auto& [name, t] : ck.tensors) m.dense[name] = t;
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  m.dense.erase(q);
  m.weights[q] = quantize(ck.tensor(q).data<float>(), 36, 36, Format::parse("int3:channel"));
  m.quantization.linears[q].weights = Format::parse("int3:channel");
  ScratchDir tmp;
  write_quantized_checkpoint(tmp.file("q"), m, {});
  expect_equal(m, read_quantized_checkpoint(tmp.file("q")));
  edit_tensors(tmp.file("q"), [&](auto& t) {
    auto& p = t["model.layers.0.self_attn.q_proj.weight_packed"];
    ASSERT_EQ(p.shape, (Shape{36, 14}));
    p.bytes[14 * 2 + 13] |= 0x80;  // row 2's padding
  });
  EXPECT_ERROR(read_quantized_checkpoint(tmp.file("q")), "weight_packed' row 2", "padding");
}

// FireQ's attention pieces: the query format in quantization_config and the optional per-layer
// post-RoPE key scale (F32 [kv_heads * head_dim], finite, > 0) round-trip; a wrong one is
// refused on write and on read, naming the tensor.
TEST(QuantizedCheckpoint, QueryFormatAndPostRopeScaleRoundTrip) {
  ScratchDir tmp;
  QuantizedModel m = tiny_quantized();
  m.quantization.query = Format::parse("fp8_e4m3:token");
  const int64_t kv_dim = m.config.num_kv_heads * m.config.head_dim;  // 2 x 8
  const std::string post = k_post_rope_scale_name(1);
  EXPECT_EQ(post, "model.layers.1.self_attn.k_post_rope_scale");
  Tensor s = Tensor::empty(DType::F32, {kv_dim});
  for (int64_t i = 0; i < kv_dim; ++i) s.data_mut<float>()[i] = i % 5 == 0 ? 0.25f * float(i + 1) : 1.0f;
  m.dense[post] = s;  // layer 1 only: the tensor is optional per layer
  write_quantized_checkpoint(tmp.file("q"), m, {});
  const QuantizedModel back = read_quantized_checkpoint(tmp.file("q"));
  expect_equal(m, back);
  ASSERT_TRUE(back.quantization.query);
  EXPECT_EQ(back.quantization.query->str(), "fp8_e4m3:token");
  EXPECT_FALSE(back.dense.count(k_post_rope_scale_name(0)));
  const nlohmann::json config = json_text::parse(json_text::read_file(tmp.file("q") + "/config.json", 1 << 20), "c");
  EXPECT_EQ(config["quantization_config"]["query"], "fp8_e4m3:token");
  const Checkpoint ck = dequantized_checkpoint(back, tmp.file("q"));
  ASSERT_TRUE(ck.has(post));
  EXPECT_EQ(std::memcmp(ck.tensor(post).raw(), s.raw(), s.nbytes()), 0);
  // Without the field (older checkpoints): no query rounding.
  edit_config(tmp.file("q"), [](nlohmann::json& j) { j["quantization_config"].erase("query"); });
  EXPECT_FALSE(read_quantized_checkpoint(tmp.file("q")).quantization.query);

  QuantizedModel bad = m;
  bad.dense[post] = Tensor::empty(DType::F32, {kv_dim + 1});
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("b"), bad, {}), post, "expected [16]");
  bad = m;
  Tensor zero = Tensor::empty(DType::F32, {kv_dim});  // fresh: tensors share storage when copied
  std::copy_n(s.data<float>(), kv_dim, zero.data_mut<float>());
  zero.data_mut<float>()[3] = 0.0f;
  bad.dense[post] = zero;
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("b"), bad, {}), post, "element 3", "finite and > 0");
  bad = m;
  bad.dense[k_post_rope_scale_name(2)] = s;  // the tiny model has 2 layers
  EXPECT_ERROR(write_quantized_checkpoint(tmp.file("b"), bad, {}), "model.layers.2.self_attn.k_post_rope_scale",
               "not a tensor of this architecture");
  EXPECT_FALSE(fs::exists(tmp.file("b")));
  write_quantized_checkpoint(tmp.file("r"), m, {});
  edit_tensors(tmp.file("r"), [&](auto& t) {
    const float inf = INFINITY;
    std::memcpy(t[post].bytes.data() + 4 * 7, &inf, 4);
  });
  EXPECT_ERROR(read_quantized_checkpoint(tmp.file("r")), post, "element 7", "finite and > 0");
  write_quantized_checkpoint(tmp.file("f"), m, {});
  edit_config(tmp.file("f"), [](nlohmann::json& j) { j["quantization_config"]["query"] = "fp8_e4m3:tokn"; });
  EXPECT_ERROR(read_quantized_checkpoint(tmp.file("f")), "quantization_config.query");
}

}  // namespace
}  // namespace qf
