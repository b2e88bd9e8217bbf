// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) through load_checkpoint: its config,
// its 272 tensors under canonical names, and dequantized rows equal to the Python `gguf`
// package's (tests/data/io/smollm2_rows.bin; see the README there). Skips when the model is
// absent (scripts/setup.sh fetches it); $QF_MODELS_DIR overrides the models folder.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io_test_util.h"

namespace qf {
namespace {

std::string model_path() {
  const char* env = std::getenv("QF_MODELS_DIR");
  const std::string dir = env && *env ? env : QF_TEST_MODELS_DIR;
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

#define REQUIRE_MODEL()                                                                              \
  if (!std::filesystem::exists(model_path()))                                                        \
    GTEST_SKIP() << "default model not found at " << model_path() << " (run scripts/setup.sh)";      \
  ASSERT_NE(checkpoint_, nullptr) << "loading failed: " << load_error_

struct RowRecord {
  std::string tensor;
  int64_t row_len = 0;
  std::vector<std::pair<int64_t, std::vector<float>>> rows;
};

std::vector<RowRecord> read_rows(const std::string& path) {
  const std::vector<uint8_t> f = testing::read_bytes(path);
  size_t pos = 0;
  bool ok = true;
  auto u32 = [&] {
    uint32_t v = 0;
    if (pos + 4 > f.size()) ok = false;
    else std::memcpy(&v, f.data() + pos, 4);
    pos += 4;
    return v;
  };
  std::vector<RowRecord> out;
  if (f.size() < 12 || std::memcmp(f.data(), "QFGR", 4) != 0) return out;
  pos = 4;
  if (u32() != 1) return out;
  const uint32_t n = u32();
  for (uint32_t i = 0; i < n && ok; ++i) {
    RowRecord r;
    const uint32_t name_len = u32();
    if (pos + name_len > f.size()) return {};
    r.tensor.assign(reinterpret_cast<const char*>(f.data() + pos), name_len);
    pos += name_len;
    r.row_len = u32();
    const uint32_t n_rows = u32();
    for (uint32_t k = 0; k < n_rows && ok; ++k) {
      const int64_t index = u32();
      if (pos + 4 * size_t(r.row_len) > f.size()) return {};
      std::vector<float> v(r.row_len);
      std::memcpy(v.data(), f.data() + pos, 4 * size_t(r.row_len));
      pos += 4 * size_t(r.row_len);
      r.rows.push_back({index, std::move(v)});
    }
    out.push_back(std::move(r));
  }
  return ok ? out : std::vector<RowRecord>{};
}

class IoDefaultModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(model_path())) return;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      checkpoint_ = new Checkpoint(load_checkpoint(model_path()));
    } catch (const std::exception& e) {
      load_error_ = e.what();
    }
    load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
  }
  static Checkpoint* checkpoint_;
  static std::string load_error_;
  static double load_seconds_;
};
Checkpoint* IoDefaultModel::checkpoint_ = nullptr;
std::string IoDefaultModel::load_error_;
double IoDefaultModel::load_seconds_ = 0;

TEST_F(IoDefaultModel, Config) {
  REQUIRE_MODEL();
  const ModelConfig& c = checkpoint_->config;
  std::cout << "loaded " << model_path() << " in " << load_seconds_ << " s\n";
  EXPECT_EQ(checkpoint_->format, CheckpointFormat::GGUF);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rms_norm_eps, double(1e-5f));
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_TRUE(c.rope_freq_factors.empty());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.parameter_count(), 134515008);  // the element count of the file's 272 tensors
  EXPECT_NE(checkpoint_->chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(checkpoint_->gguf->metadata().get_string("tokenizer.ggml.pre"), "smollm");
}

TEST_F(IoDefaultModel, TensorsUnderCanonicalNames) {
  REQUIRE_MODEL();
  const auto required = required_tensor_shapes(checkpoint_->config);
  EXPECT_EQ(required.size(), 272u);
  EXPECT_EQ(checkpoint_->tensors.size(), 272u);
  for (const auto& [name, shape] : required) {
    ASSERT_TRUE(checkpoint_->has(name)) << name;
    EXPECT_EQ(checkpoint_->tensor(name).shape(), shape) << name;
    EXPECT_EQ(checkpoint_->tensor(name).dtype(), DType::F32) << name;
  }
  std::map<std::string, int> by_type;
  for (const auto& [name, type] : checkpoint_->source_dtypes) ++by_type[type];
  EXPECT_EQ(by_type["Q4_1"], 210);
  EXPECT_EQ(by_type["F32"], 61);
  EXPECT_EQ(by_type["Q8_0"], 1);
  EXPECT_EQ(checkpoint_->source_dtypes.at(names::embed()), "Q8_0");
}

// Canonical (HF) row of a GGUF q/k row: within a head, GGUF row 2i + j is HF row j * d/2 + i.
int64_t hf_row_of_gguf_row(int64_t gguf_row, int64_t head_dim) {
  const int64_t h = gguf_row / head_dim, r = gguf_row % head_dim;
  return h * head_dim + (r % 2) * (head_dim / 2) + r / 2;
}

TEST_F(IoDefaultModel, DequantizedRowsEqualPythonGguf) {
  REQUIRE_MODEL();
  const auto records = read_rows(QF_TEST_DATA_DIR "/io/smollm2_rows.bin");
  ASSERT_EQ(records.size(), 6u) << "missing or malformed tests/data/io/smollm2_rows.bin";
  const gguf::File& file = *checkpoint_->gguf;
  const std::map<std::string, std::string> canonical = {
      {"token_embd.weight", names::embed()},
      {"blk.0.attn_q.weight", names::layer(0, "self_attn.q_proj.weight")},
      {"blk.17.attn_k.weight", names::layer(17, "self_attn.k_proj.weight")},
      {"blk.29.ffn_down.weight", names::layer(29, "mlp.down_proj.weight")},
      {"output_norm.weight", names::final_norm()},
      {"blk.3.ffn_norm.weight", names::layer(3, "post_attention_layernorm.weight")}};
  for (const RowRecord& r : records) {
    SCOPED_TRACE(r.tensor);
    const gguf::TensorInfo* info = file.find(r.tensor);
    ASSERT_NE(info, nullptr);
    const Tensor raw = file.to_f32(*info);  // GGUF row order
    const Tensor& loaded = checkpoint_->tensor(canonical.at(r.tensor));
    const bool permuted = r.tensor.find("attn_q") != std::string::npos || r.tensor.find("attn_k") != std::string::npos;
    ASSERT_EQ(raw.dim(-1), r.row_len);
    for (const auto& [index, expected] : r.rows) {
      // Same arithmetic as numpy's float32 (no fused multiply-add): bit-identical.
      EXPECT_EQ(0, std::memcmp(raw.data<float>() + index * r.row_len, expected.data(), 4 * expected.size()))
          << "GGUF row " << index;
      const int64_t canonical_row = permuted ? hf_row_of_gguf_row(index, 64) : index;
      EXPECT_EQ(0, std::memcmp(loaded.data<float>() + canonical_row * r.row_len, expected.data(), 4 * expected.size()))
          << "canonical row " << canonical_row;
    }
  }
}

}  // namespace
}  // namespace qf
