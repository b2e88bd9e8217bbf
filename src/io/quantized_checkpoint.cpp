#include "io/quantized_checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "formats/convert.h"
#include "formats/packing.h"
#include "io/hf_config.h"
#include "io/json_text.h"
#include "io/safetensors.h"

namespace qf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxConfigBytes = 16u << 20;
constexpr const char* kTensorFile = "model.safetensors";
// GGUF's per-frequency RoPE table (ModelConfig::rope_freq_factors), which config.json cannot
// express, travels as this F32 tensor.
constexpr const char* kRopeFreqFactors = "qforge.rope_freq_factors";

// ---- names of a quantized weight's tensors ----

std::string base_of(const std::string& weight_name) {
  QF_CHECK(weight_name.size() > 7 && weight_name.substr(weight_name.size() - 7) == ".weight", "quantized tensor '",
           weight_name, "' does not end in .weight");
  return weight_name.substr(0, weight_name.size() - 7);
}
std::string packed_name(const std::string& w) { return base_of(w) + ".weight_packed"; }
std::string scale_name(const std::string& w) { return base_of(w) + ".weight_scale"; }
std::string zero_name(const std::string& w) { return base_of(w) + ".weight_zero_point"; }
std::string tensor_scale_name(const std::string& w) { return base_of(w) + ".weight_tensor_scale"; }

// The dtype codes of `bits` == 8 are stored unpacked in; narrower codes are packed into U8.
safetensors::Dtype code_dtype(const Format& f) {
  switch (f.element.kind) {
    case ElementKind::int_: return f.asymmetric ? safetensors::Dtype::U8 : safetensors::Dtype::I8;
    case ElementKind::fp8_e4m3: return safetensors::Dtype::F8_E4M3;
    case ElementKind::fp8_e5m2: return safetensors::Dtype::F8_E5M2;
    default: return safetensors::Dtype::U8;
  }
}

safetensors::Dtype scale_dtype(const Format& f, const std::string& what) {
  switch (f.scale_type.kind) {
    case ElementKind::f32: return safetensors::Dtype::F32;
    case ElementKind::f16: return safetensors::Dtype::F16;
    case ElementKind::bf16: return safetensors::Dtype::BF16;
    case ElementKind::fp8_e4m3: return safetensors::Dtype::F8_E4M3;
    case ElementKind::fp8_e5m2: return safetensors::Dtype::F8_E5M2;
    default: break;
  }
  fail(what, ": scale type ", f.scale_type.str(), " has no safetensors dtype");
}

size_t scale_bytes(const Format& f) { return size_t((f.scale_type.bits() + 7) / 8); }

// ---- the model's consistency, checked before writing and after reading ----

// Checks one quantized matrix against its recorded format and the shape the architecture needs.
void check_matrix(const QuantizedMatrix& q, const Format& recorded, const Shape& shape, const std::string& where) {
  QF_CHECK(q.format == recorded, where, ": stored as ", q.format.str(), " but quantization_config says ",
           recorded.str());
  QF_CHECK(shape.size() == 2 && q.rows == shape[0] && q.cols == shape[1], where, ": shape [", q.rows, ", ", q.cols,
           "], the model needs ", shape_str(shape));
  QF_CHECK(int64_t(q.codes.size()) == q.rows * q.cols, where, ": ", q.codes.size(), " codes for ", q.rows * q.cols,
           " elements");
  const int64_t nscales = q.format.scaled() ? q.scale_rows() * q.scale_cols() : 0;
  QF_CHECK(int64_t(q.scales.size()) == nscales * int64_t(scale_bytes(q.format)), where, ": ", q.scales.size(),
           " scale bytes, expected ", nscales * int64_t(scale_bytes(q.format)));
  QF_CHECK(int64_t(q.zeros.size()) == (q.format.asymmetric ? nscales : 0), where, ": ", q.zeros.size(),
           " zero points, expected ", q.format.asymmetric ? nscales : 0);
}

// Every value the matrix stands for must be finite: scales finite and >= 0 (0 only for an
// all-zero block), zero points in range, float codes not NaN/Inf.
void check_values(const QuantizedMatrix& q, const std::string& where) {
  const Format& f = q.format;
  const int bits = f.element.bits();
  if (f.scaled()) {
    const int64_t sc = q.scale_cols();
    const size_t sb = scale_bytes(f);
    for (int64_t i = 0; i < q.scale_rows() * sc; ++i) {
      uint32_t code = 0;
      std::memcpy(&code, q.scales.data() + size_t(i) * sb, sb);
      const float s = decode_float_element(f.scale_type, code);
      QF_CHECK(std::isfinite(s) && s >= 0, where, ": scale [", i / sc, ", ", i % sc, "] is ", s,
               " (scales must be finite and non-negative)");
      // A lut scale past the bound would saturate its table's largest entries (formats/quantize.h).
      QF_CHECK(!f.lut || s <= max_stored_scale(f), where, ": scale [", i / sc, ", ", i % sc, "] is ", s, ", above ",
               max_stored_scale(f), ", the largest scale of ", f.str(), " whose lookup table stays in range");
    }
    if (f.asymmetric)
      for (size_t i = 0; i < q.zeros.size(); ++i)
        QF_CHECK(q.zeros[i] < (1u << bits), where, ": zero point [", int64_t(i) / sc, ", ", int64_t(i) % sc, "] is ",
                 int(q.zeros[i]), ", outside 0..", (1 << bits) - 1);
    if (f.tensor_scale)
      QF_CHECK(std::isfinite(q.tensor_scale) && q.tensor_scale > 0, where, ": tensor scale ", q.tensor_scale,
               " must be finite and positive");
  }
  if (f.element.is_float()) {
    // A float element has at most 256 codes: check each distinct one once.
    bool seen[256] = {};
    for (size_t i = 0; i < q.codes.size(); ++i) {
      const uint8_t c = q.codes[i];
      if (seen[c]) continue;
      seen[c] = true;
      const float v = decode_float_element(f.element, c);
      QF_CHECK(std::isfinite(v), where, ": element (", int64_t(i) / q.cols, ", ", int64_t(i) % q.cols, ") has code 0x",
               std::hex, int(c), std::dec, ", which is ", v, " in ", f.element.str());
    }
  }
}

// The optional post-RoPE scale of a layer: F32 [kv_dim], finite and > 0 (a zero or infinite
// scale would turn the function-preserving q / s, k * s into NaNs).
void check_post_rope_scale(const Tensor& t, const ModelConfig& c, const std::string& where) {
  QF_CHECK(t.dtype() == DType::F32, where, ": dtype ", dtype_name(t.dtype()), "; a post-RoPE scale is F32");
  QF_CHECK(t.shape() == Shape{c.num_kv_heads * c.head_dim}, where, ": shape ", shape_str(t.shape()), ", expected [",
           c.num_kv_heads * c.head_dim, "] (num_kv_heads * head_dim)");
  const float* v = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    QF_CHECK(std::isfinite(v[i]) && v[i] > 0, where, ": element ", i, " is ", v[i], "; scales must be finite and > 0");
}

void check_dense(const Tensor& t, const Shape& shape, const std::string& where) {
  QF_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16, where, ": dtype ",
           dtype_name(t.dtype()), "; unquantized tensors are F32, F16 or BF16");
  QF_CHECK(t.shape() == shape, where, ": shape ", shape_str(t.shape()), ", the model needs ", shape_str(shape));
}

// Checks that `model` is complete and consistent: every tensor the architecture needs is
// either a quantized weight recorded in the config or a dense tensor, and nothing else is there.
void check_model(const QuantizedModel& m, const std::string& where) {
  m.config.validate(where);
  std::set<std::string> needed;
  for (const auto& [name, shape] : required_tensor_shapes(m.config)) {
    needed.insert(name);
    const bool quantized = m.weights.count(name) != 0, dense = m.dense.count(name) != 0;
    QF_CHECK(!(quantized && dense), where, ": '", name, "' is both quantized and dense");
    if (quantized) {
      auto it = m.quantization.linears.find(name);
      QF_CHECK(it != m.quantization.linears.end(), where, ": '", name,
               "' is quantized but quantization_config.linears has no entry for it");
      check_matrix(m.weights.at(name), it->second.weights, shape, str(where, ": '", name, "'"));
    } else {
      QF_CHECK(dense, where, ": the model needs '", name, "' ", shape_str(shape), ", which is missing");
      QF_CHECK(m.quantization.linears.count(name) == 0, where, ": quantization_config.linears lists '", name,
               "' but it is stored unquantized");
      check_dense(m.dense.at(name), shape, str(where, ": '", name, "'"));
    }
  }
  for (const auto& [name, lq] : m.quantization.linears) {
    (void)lq;
    QF_CHECK(m.weights.count(name), where, ": quantization_config.linears lists '", name,
             "', which the model does not have quantized");
  }
  std::set<std::string> optional;
  for (int64_t l = 0; l < m.config.num_layers; ++l) optional.insert(k_post_rope_scale_name(l));
  for (const auto& [name, t] : m.dense) {
    if (optional.count(name)) {
      check_post_rope_scale(t, m.config, str(where, ": '", name, "'"));
      continue;
    }
    QF_CHECK(needed.count(name), where, ": '", name, "' is not a tensor of this architecture");
  }
  for (const auto& [name, q] : m.weights) {
    (void)q;
    QF_CHECK(needed.count(name), where, ": '", name, "' is not a tensor of this architecture");
  }
}

// ---- file system steps ----

[[noreturn]] void io_fail(const std::string& path, const std::string& what) {
  fail(path, ": ", what, " (", std::strerror(errno), ")");
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) io_fail(path, "cannot open for fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) io_fail(path, "fsync failed");
}

void write_file_bytes(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_fail(path, "cannot create");
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      io_fail(path, "write failed");
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_fail(path, "fsync failed");
  }
  if (::close(fd) != 0) io_fail(path, "close failed");
}

// A fresh name beside `target`: ".<name>.tmp-<pid>-<counter>" (a dot file, so a listing of the
// parent does not offer it as a checkpoint).
std::string temp_path_beside(const fs::path& target, const char* kind) {
  static std::atomic<uint64_t> counter{0};
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return (target.parent_path() /
          str(".", target.filename().string(), ".", kind, "-", ::getpid(), "-", now, "-", counter++))
      .string();
}

bool is_file_name(const std::string& n) {
  return !n.empty() && n.find('/') == std::string::npos && n != "." && n != ".." && n != "config.json" &&
         n != kTensorFile;
}

}  // namespace

std::string k_post_rope_scale_name(int64_t layer) { return names::layer(layer, "self_attn.k_post_rope_scale"); }

std::vector<float> read_k_post_rope_scale(const Checkpoint& ck, int64_t layer) {
  const std::string name = k_post_rope_scale_name(layer);
  if (!ck.has(name)) return {};
  const Tensor f = to_f32(ck.tensor(name));
  check_post_rope_scale(f, ck.config, str(ck.path, ": '", name, "'"));
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

// ---- QuantizationConfig ----

json QuantizationConfig::to_json() const {
  json lin = json::object();
  for (const auto& [name, q] : linears) {
    json e = {{"weights", q.weights.str()},
              {"activations", q.activations ? json(q.activations->str()) : json(nullptr)},
              {"algorithm", q.algorithm},
              {"relative_error", std::isfinite(q.relative_error) ? json(q.relative_error) : json(nullptr)},
              {"error_from_hessian", q.error_from_hessian}};
    lin[name] = e;
  }
  return {{"quant_method", kQuantMethod},
          {"version", kQuantizedCheckpointVersion},
          {"recipe_name", recipe_name},
          {"recipe", recipe},
          {"calibration", calibration},
          {"kv_cache", kv_cache ? json(kv_cache->str()) : json(nullptr)},
          {"query", query ? json(query->str()) : json(nullptr)},
          {"linears", lin}};
}

QuantizationConfig QuantizationConfig::from_json(const json& j, const std::string& source) {
  const std::string where = source + ": quantization_config";
  QF_CHECK(j.is_object(), where, " is not an object");
  const std::string method = json_text::get_string(j, "quant_method", "", source);
  QF_CHECK(method == kQuantMethod, where, ".quant_method is \"", method, "\"; qforge reads its own (\"", kQuantMethod,
           "\") checkpoints only (docs/checkpoint.md relates them to compressed-tensors and GPTQ layouts)");
  const int64_t version = json_text::get_int(j, "version", source);
  QF_CHECK(version == kQuantizedCheckpointVersion, where, ".version ", version, " is not supported (this qforge reads ",
           kQuantizedCheckpointVersion, ")");
  QuantizationConfig c;
  c.recipe_name = json_text::get_string(j, "recipe_name", "", source);
  if (auto it = j.find("recipe"); it != j.end()) c.recipe = *it;
  if (auto it = j.find("calibration"); it != j.end()) c.calibration = *it;
  auto format_of = [&](const json& v, const std::string& what) {
    QF_CHECK(v.is_string(), where, ".", what, " must be a format string");
    try {
      return Format::parse(v.get<std::string>());
    } catch (const Error& e) {
      fail(where, ".", what, ": ", e.what());
    }
  };
  if (const json* kv = json_text::find(j, "kv_cache")) c.kv_cache = format_of(*kv, "kv_cache");
  if (const json* q = json_text::find(j, "query")) c.query = format_of(*q, "query");
  // Checkpoints written before tokenizer.gguf existed pointed at the source GGUF by absolute
  // path, which broke when the file moved; they are not read (re-quantizing takes seconds for
  // RTN), and say so rather than failing later for want of a tokenizer.
  if (const json* old = json_text::find(j, "tokenizer_gguf"))
    fail(where, ".tokenizer_gguf (", old->dump(), ") is from an earlier qforge that read the tokenizer from the "
         "source GGUF file by path; quantize the model again to get a self-contained checkpoint with ",
         kTokenizerGgufFile);
  const json* lin = json_text::find(j, "linears");
  QF_CHECK(lin && lin->is_object(), where, ".linears must be an object {weight name: {weights, activations, ...}}");
  for (const auto& [name, e] : lin->items()) {
    const std::string w = "linears[\"" + name + "\"]";
    QF_CHECK(e.is_object(), where, ".", w, " is not an object");
    LinearQuantization q;
    const json* wf = json_text::find(e, "weights");
    QF_CHECK(wf, where, ".", w, ".weights is missing");
    q.weights = format_of(*wf, w + ".weights");
    QF_CHECK(q.weights.element.is_int() || q.weights.element.bits() <= 8, where, ".", w, ".weights: ",
             q.weights.str(), " is not a quantized format");
    if (const json* a = json_text::find(e, "activations")) q.activations = format_of(*a, w + ".activations");
    q.algorithm = json_text::get_string(e, "algorithm", "", source);
    if (const json* r = json_text::find(e, "relative_error")) {
      QF_CHECK(r->is_number(), where, ".", w, ".relative_error must be a number or null");
      q.relative_error = r->get<double>();
    }
    q.error_from_hessian = json_text::get_bool(e, "error_from_hessian", false, source);
    c.linears[name] = q;
  }
  return c;
}

// ---- writing ----

void write_quantized_checkpoint(const std::string& dir, const QuantizedModel& model,
                                const std::vector<CheckpointFile>& files, const QuantizedWriteOptions& options) {
  QF_CHECK(!dir.empty(), "write_quantized_checkpoint: empty output path");
  check_model(model, dir);
  for (const auto& [name, q] : model.weights) check_values(q, str(dir, ": '", name, "'"));
  for (const CheckpointFile& f : files)
    QF_CHECK(is_file_name(f.name), dir, ": \"", f.name, "\" is not a plain file name for the checkpoint");

  fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" -> "out"
  std::error_code ec;
  const bool exists = fs::exists(target, ec);
  QF_CHECK(!exists || options.overwrite, target.string(),
           " already exists; choose another output path or allow overwriting (--force)");
  QF_CHECK(!exists || is_quantized_checkpoint(target.string()), target.string(),
           " exists and is not a qforge quantized checkpoint; refusing to replace it");
  fs::create_directories(target.parent_path(), ec);
  QF_CHECK(!ec, target.parent_path().string(), ": cannot create the folder (", ec.message(), ")");

  // The tensors, in memory as the file stores them (packed codes etc.).
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(model.weights.size() * 4 + 1);
  std::vector<float> tensor_scales;
  tensor_scales.reserve(model.weights.size() + 64);
  std::vector<safetensors::TensorToWrite> tensors;
  for (const auto& [name, q] : model.weights) {
    const Format& f = q.format;
    const int bits = f.element.bits();
    if (bits == 8) {
      tensors.push_back({name, code_dtype(f), {q.rows, q.cols}, q.codes.data()});
    } else {
      const int64_t row_bytes = int64_t(packed_bytes(q.cols, bits));
      std::vector<uint8_t> packed(size_t(q.rows * row_bytes));
      for (int64_t r = 0; r < q.rows; ++r)
        pack_bits(q.codes.data() + r * q.cols, q.cols, bits, packed.data() + r * row_bytes);
      buffers.push_back(std::move(packed));
      tensors.push_back({packed_name(name), safetensors::Dtype::U8, {q.rows, row_bytes}, buffers.back().data()});
    }
    if (f.scaled()) {
      tensors.push_back({scale_name(name), scale_dtype(f, name), {q.scale_rows(), q.scale_cols()}, q.scales.data()});
      if (f.asymmetric)
        tensors.push_back({zero_name(name), safetensors::Dtype::U8, {q.scale_rows(), q.scale_cols()}, q.zeros.data()});
      if (f.tensor_scale) {
        tensor_scales.push_back(q.tensor_scale);
        tensors.push_back({tensor_scale_name(name), safetensors::Dtype::F32, {1}, &tensor_scales.back()});
      }
    }
  }
  for (const auto& [name, t] : model.dense) tensors.push_back(safetensors::TensorToWrite::from(name, t));
  if (!model.config.rope_freq_factors.empty())
    tensors.push_back({kRopeFreqFactors, safetensors::Dtype::F32,
                       {int64_t(model.config.rope_freq_factors.size())}, model.config.rope_freq_factors.data()});

  json config = hf_config_json(model.config);
  config["torch_dtype"] = "bfloat16";
  config["quantization_config"] = model.quantization.to_json();

  const std::string tmp = temp_path_beside(target, "tmp");
  try {
    QF_CHECK(fs::create_directory(tmp, ec) && !ec, tmp, ": cannot create the temporary folder (", ec.message(), ")");
    auto written = [&](const std::string& f) {
      if (options.on_file_written) options.on_file_written(f);
    };
    safetensors::write_file((fs::path(tmp) / kTensorFile).string(), tensors, {{"format", "pt"}});
    written(kTensorFile);
    for (const CheckpointFile& f : files) {
      write_file_bytes((fs::path(tmp) / f.name).string(), f.content);
      written(f.name);
    }
    // config.json last: until it exists the folder is not a checkpoint even by its own account.
    write_file_bytes((fs::path(tmp) / "config.json").string(), config.dump(2) + "\n");
    written("config.json");
    fsync_path(tmp, true);
    if (exists) {
      // Move the old checkpoint aside, the new one in, then delete the old: at every instant
      // the path holds a complete checkpoint or nothing.
      const std::string old = temp_path_beside(target, "old");
      fs::rename(target, old);
      fs::rename(tmp, target);
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, target);
    }
    fsync_path(target.parent_path().string(), true);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail(target.string(), ": writing the checkpoint failed: ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

// ---- reading ----

bool is_quantized_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::path config = fs::path(path) / "config.json";
  if (!fs::is_directory(path, ec) || !fs::is_regular_file(config, ec)) return false;
  try {
    const json j = json_text::parse(json_text::read_file(config.string(), kMaxConfigBytes), config.string());
    return j.is_object() && j.contains("quantization_config") && !j["quantization_config"].is_null();
  } catch (const Error&) {
    return false;
  }
}

QuantizedModel read_quantized_checkpoint(const std::string& dir) {
  const fs::path root(dir);
  const std::string config_path = (root / "config.json").string();
  QF_CHECK(fs::exists(config_path), dir, ": no config.json (not a checkpoint folder)");
  const json j = json_text::parse(json_text::read_file(config_path, kMaxConfigBytes), config_path);
  QuantizedModel m;
  m.config = parse_hf_config(json_text::read_file(config_path, kMaxConfigBytes), config_path);
  const json* qc = json_text::find(j, "quantization_config");
  QF_CHECK(qc, config_path, ": no quantization_config (an unquantized checkpoint: load it with load_checkpoint)");
  m.quantization = QuantizationConfig::from_json(*qc, config_path);

  const std::string file_path = (root / kTensorFile).string();
  QF_CHECK(fs::exists(file_path), dir, ": ", kTensorFile, " is missing");
  const auto file = safetensors::File::open(file_path);
  std::set<std::string> used;
  auto entry = [&](const std::string& name, const std::string& owner) -> const safetensors::TensorEntry& {
    const safetensors::TensorEntry* e = file->find(name);
    QF_CHECK(e, file_path, ": '", name, "' (of '", owner, "') is missing");
    used.insert(name);
    return *e;
  };
  auto expect = [&](const safetensors::TensorEntry& e, safetensors::Dtype dtype, const Shape& shape) {
    QF_CHECK(e.dtype == dtype, file_path, ": '", e.name, "' has dtype ", safetensors::dtype_name(e.dtype),
             ", expected ", safetensors::dtype_name(dtype));
    QF_CHECK(e.shape == shape, file_path, ": '", e.name, "' has shape ", shape_str(e.shape), ", expected ",
             shape_str(shape));
  };

  if (const safetensors::TensorEntry* rf = file->find(kRopeFreqFactors)) {
    used.insert(kRopeFreqFactors);
    QF_CHECK(rf->dtype == safetensors::Dtype::F32 && rf->shape.size() == 1, file_path, ": '", kRopeFreqFactors,
             "' must be F32 [head_dim / 2]");
    m.config.rope_freq_factors.resize(size_t(rf->shape[0]));
    std::memcpy(m.config.rope_freq_factors.data(), rf->data, rf->nbytes());
  }
  m.config.validate(config_path);

  for (const auto& [name, shape] : required_tensor_shapes(m.config)) {
    auto lq = m.quantization.linears.find(name);
    if (lq == m.quantization.linears.end()) {
      const safetensors::TensorEntry& e = entry(name, name);
      QF_CHECK(e.dtype == safetensors::Dtype::F32 || e.dtype == safetensors::Dtype::F16 ||
                   e.dtype == safetensors::Dtype::BF16,
               file_path, ": '", name, "' has dtype ", safetensors::dtype_name(e.dtype),
               "; it is not in quantization_config.linears, so it must be F32, F16 or BF16");
      QF_CHECK(e.shape == shape, file_path, ": '", name, "' has shape ", shape_str(e.shape), ", the model needs ",
               shape_str(shape));
      m.dense[name] = file->tensor(e);
      continue;
    }
    QF_CHECK(shape.size() == 2, config_path, ": quantization_config lists '", name, "', which is not a matrix");
    const Format& f = lq->second.weights;
    QuantizedMatrix q;
    q.format = f;
    q.rows = shape[0];
    q.cols = shape[1];
    const int bits = f.element.bits();
    q.codes.resize(size_t(q.rows * q.cols));
    if (bits == 8) {
      const safetensors::TensorEntry& e = entry(name, name);
      expect(e, code_dtype(f), shape);
      std::memcpy(q.codes.data(), e.data, q.codes.size());
      QF_CHECK(!file->find(packed_name(name)), file_path, ": '", name, "' is stored both unpacked and packed");
    } else {
      QF_CHECK(!file->find(name), file_path, ": '", name, "' is ", f.str(), " (", bits, "-bit codes), stored as '",
               packed_name(name), "', but an unpacked '", name, "' is present too");
      const safetensors::TensorEntry& e = entry(packed_name(name), name);
      const int64_t row_bytes = int64_t(packed_bytes(q.cols, bits));
      expect(e, safetensors::Dtype::U8, {q.rows, row_bytes});
      for (int64_t r = 0; r < q.rows; ++r) {
        const uint8_t* row = e.data + r * row_bytes;
        // Padding bits after a row's last code must be 0 (packing.h): anything else means the
        // writer disagreed about the layout.
        const int64_t used_bits = q.cols * bits;
        if (used_bits % 8 != 0)
          QF_CHECK((row[row_bytes - 1] >> (used_bits % 8)) == 0, file_path, ": '", e.name, "' row ", r,
                   " has non-zero padding bits (a different packing layout?)");
        unpack_bits(row, q.cols, bits, q.codes.data() + r * q.cols);
      }
    }
    if (f.scaled()) {
      const Shape sshape = {q.scale_rows(), q.scale_cols()};
      const safetensors::TensorEntry& s = entry(scale_name(name), name);
      expect(s, scale_dtype(f, name), sshape);
      q.scales.assign(s.data, s.data + s.nbytes());
      if (f.asymmetric) {
        const safetensors::TensorEntry& z = entry(zero_name(name), name);
        expect(z, safetensors::Dtype::U8, sshape);
        q.zeros.assign(z.data, z.data + z.nbytes());
      }
      if (f.tensor_scale) {
        const safetensors::TensorEntry& t = entry(tensor_scale_name(name), name);
        expect(t, safetensors::Dtype::F32, {1});
        std::memcpy(&q.tensor_scale, t.data, 4);
      }
    }
    check_values(q, str(file_path, ": '", name, "'"));
    m.weights[name] = std::move(q);
  }
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const std::string name = k_post_rope_scale_name(l);
    if (const safetensors::TensorEntry* e = file->find(name)) {
      used.insert(name);
      m.dense[name] = file->tensor(*e);  // checked (dtype, shape, values) by check_model below
    }
  }
  for (const safetensors::TensorEntry& e : file->tensors())
    QF_CHECK(used.count(e.name), file_path, ": '", e.name,
             "' is not a tensor of this model or of its quantization_config (a checkpoint of another model or "
             "recipe?)");
  check_model(m, dir);
  return m;
}

CheckpointFile tokenizer_gguf_file(const gguf::Metadata& source) {
  QF_CHECK(source.has("tokenizer.ggml.model"), source.source(),
           ": no tokenizer.ggml.model in the metadata, so there is no tokenizer to carry into the checkpoint");
  gguf::Metadata md;
  for (const std::string& key : source.keys())
    if (key.rfind("tokenizer.", 0) == 0 || key == "general.architecture" || key == "general.name")
      md.set(key, *source.find(key));
  return {kTokenizerGgufFile, gguf::serialize_metadata(md)};
}

Checkpoint dequantized_checkpoint(const QuantizedModel& model, const std::string& path) {
  Checkpoint ck;
  ck.format = CheckpointFormat::HFDirectory;
  ck.path = path;
  ck.config = model.config;
  for (const auto& [name, t] : model.dense) {
    ck.tensors[name] = t;
    ck.source_dtypes[name] = dtype_name(t.dtype());
  }
  for (const auto& [name, q] : model.weights) {
    Tensor t = Tensor::empty(DType::F32, {q.rows, q.cols});
    dequantize(q, t.data_mut<float>());
    ck.tensors[name] = std::move(t);
    ck.source_dtypes[name] = q.format.str();
  }
  const fs::path tokenizer_config = fs::path(path) / "tokenizer_config.json";
  const fs::path tokenizer_gguf = fs::path(path) / kTokenizerGgufFile;
  if (fs::exists(tokenizer_config))
    ck.chat_template = parse_hf_chat_template(json_text::read_file(tokenizer_config.string(), kMaxConfigBytes),
                                              tokenizer_config.string());
  else if (fs::exists(tokenizer_gguf))
    ck.chat_template = gguf::File::open(tokenizer_gguf.string())->metadata().get_string("tokenizer.chat_template", "");
  return ck;
}

uint64_t directory_size_bytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

}  // namespace qf
