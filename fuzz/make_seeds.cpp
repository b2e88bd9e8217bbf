// Writes seed corpora for the fuzzers: small valid GGUF files (llama metadata, F32 and
// quantized tensors), safetensors files (from qforge's writer) and config.json texts.
//   fuzz_make_seeds OUT_DIR   -> OUT_DIR/{gguf,safetensors,hf_config}/seed-*
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gguf_builder.h"  // tests/io: the test-only GGUF writer
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<uint8_t> random_bytes(std::mt19937& gen, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(gen());
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const fs::path out = argv[1];
  for (const char* d : {"gguf", "safetensors", "hf_config"}) fs::create_directories(out / d);
  std::mt19937 gen(42);

  // GGUF: llama metadata plus one tensor of each type the reader knows (block sizes/bytes).
  const std::pair<uint32_t, std::pair<uint64_t, size_t>> types[] = {
      {0, {1, 4}},      {1, {1, 2}},       {30, {1, 2}},      {2, {32, 18}},    {3, {32, 20}},
      {6, {32, 22}},    {7, {32, 24}},     {8, {32, 34}},     {9, {32, 36}},    {10, {256, 84}},
      {11, {256, 110}}, {12, {256, 144}},  {13, {256, 176}},  {14, {256, 210}}, {15, {256, 292}}};
  int n = 0;
  for (const auto& [type, size] : types) {
    qf::testing::GgufBuilder b;
    b.add_string("general.architecture", "llama");
    b.add_u32("llama.block_count", 1);
    b.add_u32("llama.context_length", 64);
    b.add_u32("llama.embedding_length", 8);
    b.add_u32("llama.feed_forward_length", 16);
    b.add_u32("llama.attention.head_count", 2);
    b.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    b.add_string_array("tokenizer.ggml.tokens", {"a", "b"});
    b.add_array<int32_t>("tokenizer.ggml.token_type", qf::testing::kI32, {1, 1});
    const uint64_t row = size.first == 1 ? 8 : size.first;
    b.add_tensor("blk.0.attn_q.weight", {row, 2}, type, random_bytes(gen, 2 * row / size.first * size.second));
    b.add_f32_tensor("output_norm.weight", {8}, std::vector<float>(8, 1.0f));
    write(out / "gguf" / ("seed-" + std::to_string(n++)), b.build());
  }

  // safetensors: a few dtypes and metadata, written by qforge's writer.
  const std::vector<uint8_t> raw = random_bytes(gen, 64);
  const std::vector<qf::safetensors::TensorToWrite> tensors = {
      {"a", qf::safetensors::Dtype::F32, {2, 3}, raw.data()},
      {"b", qf::safetensors::Dtype::BF16, {4}, raw.data()},
      {"c", qf::safetensors::Dtype::F8_E4M3, {5}, raw.data()},
      {"d", qf::safetensors::Dtype::I64, {1}, raw.data()}};
  qf::safetensors::write_file((out / "safetensors" / "seed-0").string(), tensors, {{"format", "pt"}});
  qf::safetensors::write_file((out / "safetensors" / "seed-1").string(), {tensors[1]});

  // config.json texts.
  const char* configs[] = {
      R"({"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,)"
      R"("num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":131072,)"
      R"("rms_norm_eps":1e-05,"rope_theta":500000.0,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,)"
      R"("high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},"tie_word_embeddings":false})",
      R"({"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,)"
      R"("num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,"max_position_embeddings":32768,)"
      R"("rms_norm_eps":1e-06,"sliding_window":32768,"use_sliding_window":false,"tie_word_embeddings":true})",
      R"({"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,)"
      R"("num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":32768,)"
      R"("max_position_embeddings":32768,"rms_norm_eps":1e-05,"sliding_window":null,)"
      R"("rope_scaling":{"type":"yarn","factor":4.0,"beta_fast":32}})",
      R"({"chat_template":[{"name":"default","template":"{{ messages }}"}]})",
  };
  n = 0;
  for (const char* c : configs) {
    const std::string s(c);
    write(out / "hf_config" / ("seed-" + std::to_string(n++)), std::vector<uint8_t>(s.begin(), s.end()));
  }
  return 0;
}
