// qforge bench: benchmarks, one subcommand each.
//   bench gemm        every registered linear kernel at real layer shapes, next to cuBLAS BF16/FP8
//   bench attention   causal prefill and paged decode attention at real head shapes
//   bench model       whole-model prefill/decode throughput of the CUDA engine (a model file or a
//                     synthetic model of real shape), with the cuBLAS GEMM sum and the weight-read floor
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "core/error.h"

#ifdef QF_HAVE_CUDA
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <random>

#include "backends/cuda/attention_bench.h"
#include "backends/cuda/bench_timing.h"
#include "backends/cuda/cublaslt.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"
#include "backends/cuda/linear_bench.h"
#include "backends/cuda/random.h"
#include "runtime/cuda_engine.h"
#endif

namespace qf::cli {

namespace {

struct GemmFlags {
  bool json = false;
  std::string json_file;
  std::vector<std::string> models;
  std::vector<int64_t> batches;
  std::vector<std::string> kernels;
  double target_ms = 100.0;
  int min_reps = 20;
  int max_reps = 400;
  bool no_ceilings = false;
  uint64_t seed = 1;
};

struct AttentionFlags {
  bool json = false;
  std::string json_file;
  std::vector<std::string> models;
  double target_ms = 50.0;
  double peak_tflops = 740.0;
  double copy_gb_s = 3000.0;
  uint64_t seed = 1;
  std::vector<std::string> prefill;  // BATCHxTOKENS[+PAST]; empty: the defaults
  bool no_decode = false;
  bool no_fp8 = false;
};

struct ModelFlags {
  std::string model;      // a model file/directory, or empty
  std::string synthetic;  // a synthetic model name, or empty
  std::string weights = "bf16";  // synthetic: how the linears run (bf16, w4a8, fp6, fp6-e2m3, fp5)
  std::string kv;                // the KV cache: bf16, int4, fp8 (empty: the model's own, else bf16)
  bool fp8_queries = false;      // round queries to FP8 (FireQ)
  bool json = false;
  std::string json_file;
  std::vector<std::string> prefill = {"1x512", "1x2048", "4x2048"};
  std::vector<int> decode_batches = {1, 8, 32, 128};
  int context = 1024;
  int decode_steps = 32;
  int reps = 5;
  int64_t chunk = 2048;
  double copy_gb_s = 0;  // 0: measure
  uint64_t seed = 1;
  bool no_breakdown = false;
};

#ifdef QF_HAVE_CUDA

// ---- bench model ------------------------------------------------------------------------------

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

size_t device_used_bytes() {
  const cuda::MemoryInfo m = cuda::device_memory();
  return m.total_bytes - m.free_bytes;
}

bool all_finite(const Tensor& t) {
  const float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

struct GemmSum {
  int64_t m = 0;
  double block_us = 0;  // one decoder block's four GEMMs
  double total_us = 0;  // all blocks + the LM head on the rows whose logits prefill returns
  std::vector<std::pair<std::string, double>> layers;
};

// cuBLASLt BF16 at the linear-layer shapes of a prefill of m tokens: the GEMM time the engine's
// prefill is compared with (issue 3: the whole prefill within 1.2x of it).
GemmSum cublas_gemm_sum(const ModelConfig& c, int64_t m, int64_t head_rows, cudaStream_t stream) {
  const int64_t H = c.hidden_size, F = c.intermediate_size, q = c.num_heads * c.head_dim,
                kv = c.num_kv_heads * c.head_dim;
  struct Shape {
    const char* name;
    int64_t m, n, k;
  };
  const Shape shapes[] = {{"qkv", m, q + 2 * kv, H}, {"o", m, H, q}, {"gate_up", m, 2 * F, H},
                          {"down", m, H, F},        {"lm_head", head_rows, c.vocab_size, H}};
  cuda::CublasLt lt;
  GemmSum r;
  r.m = m;
  uint64_t seed = 11;
  for (const Shape& s : shapes) {
    cuda::DeviceBuffer x(size_t(s.m * s.k) * 2, "GEMM input"), w(size_t(s.n * s.k) * 2, "GEMM weight"),
        y(size_t(s.m * s.n) * 2, "GEMM output");
    cuda::fill_random(x.data(), cuda::RandomType::bf16, size_t(s.m * s.k), cuda::RandomSpec::normal_with(0, 1), ++seed,
                      stream);
    cuda::fill_random(w.data(), cuda::RandomType::bf16, size_t(s.n * s.k),
                      cuda::RandomSpec::normal_with(0, float(1 / std::sqrt(double(s.k)))), ++seed, stream);
    cuda::Event e0, e1;
    std::vector<double> t;
    for (int i = 0; i < 13; ++i) {
      e0.record(stream);
      lt.linear_bf16(x.as<__nv_bfloat16>(), w.as<__nv_bfloat16>(), y.as<__nv_bfloat16>(), s.m, s.n, s.k, stream);
      e1.record(stream);
      e1.synchronize();
      if (i >= 3) t.push_back(1e3 * e1.elapsed_ms_since(e0));
    }
    const double us = median_of(t);
    r.layers.push_back({s.name, us});
    if (std::string(s.name) == "lm_head") r.total_us += us;
    else r.block_us += us;
  }
  r.total_us += r.block_us * double(c.num_layers);
  return r;
}

struct PrefillRow {
  int batch = 0, prompt = 0;
  double ms = 0, tokens_per_s = 0;
  std::string error;
};
struct DecodeRow {
  int batch = 0, context = 0;
  double ms_per_step = 0, tokens_per_s = 0;
  int graphs = 0, replays = 0;
  std::string error;
};

void run_model_bench(const ModelFlags& f) {
  QF_CHECK(f.model.empty() || f.synthetic.empty(), "bench model: give a MODEL or --synthetic NAME, not both");
  require_device(Device::Cuda);
  auto say = [](const std::string& line) { std::fprintf(stderr, "[bench model] %s\n", line.c_str()); };
  std::unique_ptr<Model> model;
  ModelConfig config;
  std::string label;
  CudaLinearMode linears;
  if (!f.synthetic.empty()) {
    config = synthetic_model_config(f.synthetic);
    const std::map<std::string, CudaLinearMode> modes = {
        {"bf16", {}},
        {"w4a8", {CudaLinears::w4a8, {}}},
        {"fp6", {CudaLinears::fpx, kFp6E3M2}},
        {"fp6-e2m3", {CudaLinears::fpx, kFp6E2M3}},
        {"fp5", {CudaLinears::fpx, kFp5E2M2}}};
    auto it = modes.find(f.weights);
    QF_CHECK(it != modes.end(), "bench model: --weights is bf16, w4a8, fp6, fp6-e2m3 or fp5, got \"", f.weights, "\"");
    linears = it->second;
    label = "synthetic " + f.synthetic + " (random " +
            (linears.kind == CudaLinears::w4a8 ? std::string("INT4 lut weights x FP8 activations, FireQ w4a8")
             : linears.kind == CudaLinears::fpx ? cuda_linears_name(linears) + " weights x BF16 activations, FP6-LLM"
                                                : std::string("BF16 weights")) +
            ", generated on the GPU)";
  } else {
    QF_CHECK(f.weights == "bf16", "bench model: --weights applies to --synthetic models (a checkpoint runs as it is "
                                  "quantized)");
    const std::string path = resolve_model_path(f.model);
    say("loading " + path);
    model = std::make_unique<Model>(load_model(path));
    config = model->config();
    if (model->quantization) {
      const std::optional<CudaLinearMode> l = cuda_linears_for(*model->quantization);
      QF_CHECK(l.has_value(), "bench model: ", path, " rounds activations or the KV cache in a way only the CPU engine "
                              "simulates; the CUDA engine cannot run it");
      linears = *l;
    }
    label = path + (linears.kind == CudaLinears::bf16 ? std::string(" (weights as BF16)")
                                                      : " (" + cuda_linears_name(linears) + " linears)");
  }
  CudaAttentionMode attention;
  if (model && model->quantization) {
    const std::optional<CudaAttentionMode> a = cuda_attention_for(model->quantization->kv_cache, model->quantization->query);
    QF_CHECK(a.has_value(), "bench model: the checkpoint's KV-cache or query format runs on the CPU engine only");
    attention = *a;
  }
  if (!f.kv.empty()) {
    const std::map<std::string, cuda::KvElement> kinds = {
        {"bf16", cuda::KvElement::bf16}, {"int4", cuda::KvElement::int4}, {"fp8", cuda::KvElement::fp8_e4m3}};
    auto it = kinds.find(f.kv);
    QF_CHECK(it != kinds.end(), "bench model: --kv is bf16, int4 or fp8, got \"", f.kv, "\"");
    attention.kv = it->second;
  }
  if (f.fp8_queries) attention.q_fp8 = true;
  if (attention != CudaAttentionMode{}) label += ", " + cuda_attention_name(attention);
  // K and V of one token in every layer: what the cache spends per token.
  auto kv_token_bytes = [&](cuda::KvElement e) {
    return 2 * config.num_layers * config.num_kv_heads * cuda::kv_row_bytes_with_scale(e, int(config.head_dim));
  };
  // chunk: tokens per prefill pass (the decode cases prefill their context untimed, in passes of
  // at most 2048 tokens, so that a larger --chunk does not cost the KV cache of batch 128 room).
  auto make_engine = [&](int slots, int64_t capacity, int64_t chunk) {
    CudaEngineOptions o;
    o.num_slots = slots;
    o.slot_capacity = capacity;
    o.max_chunk_tokens = chunk;
    o.linears = linears;
    o.attention = attention;
    if (model) return std::make_unique<CudaEngine>(model->checkpoint, o, &model->quantized_weights);
    return std::make_unique<CudaEngine>(config, o, f.seed);
  };
  std::mt19937_64 rng(f.seed);
  std::uniform_int_distribution<int32_t> token(0, int32_t(config.vocab_size - 1));
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = token(rng);
    return t;
  };

  const cuda::DeviceInfo& info = cuda::device_info();
  size_t peak_used = 0, weight_bytes = 0, decode_read_bytes = 0;
  std::vector<PrefillRow> prefill;
  std::vector<DecodeRow> decode;
  // Per-op GPU time of one prefill (the largest case) and of one decode step at batch 1.
  using Breakdown = std::vector<std::pair<std::string, double>>;
  Breakdown prefill_ops, decode_ops;
  int64_t prefill_ops_tokens = 0;

  for (const std::string& spec : f.prefill) {
    PrefillRow row;
    QF_CHECK(std::sscanf(spec.c_str(), "%dx%d", &row.batch, &row.prompt) == 2 && row.batch > 0 && row.prompt > 0,
             "bench model: --prefill entries are BATCHxPROMPT, e.g. 4x2048; got \"", spec, "\"");
    say(str("prefill ", row.batch, " x ", row.prompt));
    try {
      auto engine = make_engine(row.batch, row.prompt, f.chunk);
      weight_bytes = engine->weight_bytes();
      decode_read_bytes = engine->decode_read_bytes();
      Batch b;
      for (int s = 0; s < row.batch; ++s) b.add_sequence(s, 0, random_tokens(row.prompt), Batch::Logits::Last);
      std::vector<double> t;
      for (int r = 0; r < f.reps + 1; ++r) {
        for (int s = 0; s < row.batch; ++s) engine->reset(s);
        const double t0 = now_ms();
        const Tensor logits = engine->forward(b);
        const double t1 = now_ms();
        QF_CHECK(all_finite(logits), "bench model: non-finite logits after prefill ", spec);
        if (r > 0) t.push_back(t1 - t0);  // the first run is the warm-up (cuBLASLt plans, kernel attributes)
      }
      row.ms = median_of(t);
      row.tokens_per_s = double(row.batch) * row.prompt / (row.ms * 1e-3);
      if (!f.no_breakdown && int64_t(row.batch) * row.prompt > prefill_ops_tokens) {
        for (int s = 0; s < row.batch; ++s) engine->reset(s);
        engine->set_profiling(true);
        engine->forward(b);
        prefill_ops = engine->profile_ms();
        engine->set_profiling(false);
        prefill_ops_tokens = int64_t(row.batch) * row.prompt;
      }
      peak_used = std::max(peak_used, device_used_bytes());
    } catch (const Error& e) {
      // A model whose weights alone exceed the GPU (llama2-70b in BF16 on one 80 GB H100) fails
      // every case the same way: say it once.
      if (std::string(e.what()).find("weights alone do not fit") != std::string::npos) throw;
      row.error = e.what();
      say("  failed: " + row.error);
    }
    prefill.push_back(row);
  }

  for (int bs : f.decode_batches) {
    DecodeRow row;
    row.batch = bs;
    row.context = f.context;
    say(str("decode batch ", bs, " at ", f.context, " tokens of context"));
    try {
      QF_CHECK(f.context > f.decode_steps + 2, "bench model: --context must exceed --decode-steps + 2");
      // The steps end at position context-1, so the cache holds exactly `context` tokens per
      // slot at the end (at batch 128 the 7B KV cache then fills most of an 80 GB H100).
      const bool profile = bs == 1 && !f.no_breakdown;
      auto engine = make_engine(bs, f.context + (profile ? 8 : 0), std::min<int64_t>(f.chunk, 2048));
      const int warm = 2, prompt = f.context - f.decode_steps - warm;
      Batch b;
      for (int s = 0; s < bs; ++s) b.add_sequence(s, 0, random_tokens(prompt), Batch::Logits::None);
      engine->forward(b);
      std::vector<double> t;
      for (int step = 0; step < warm + f.decode_steps; ++step) {
        b.clear();
        const std::vector<int32_t> next = random_tokens(bs);
        for (int s = 0; s < bs; ++s) b.add(next[size_t(s)], int32_t(engine->slot_length(s)), s, true);
        const double t0 = now_ms();
        const Tensor logits = engine->forward(b);
        const double t1 = now_ms();
        if (step == 0 || step + 1 == warm + f.decode_steps)
          QF_CHECK(all_finite(logits), "bench model: non-finite logits at decode batch ", bs);
        if (step >= warm) t.push_back(t1 - t0);
      }
      row.ms_per_step = median_of(t);
      row.tokens_per_s = bs / (row.ms_per_step * 1e-3);
      if (profile) {  // 4 more steps, eager, with an event after every op
        engine->set_profiling(true);
        for (int step = 0; step < 4; ++step) {
          b.clear();
          b.add(token(rng), int32_t(engine->slot_length(0)), 0, true);
          engine->forward(b);
        }
        decode_ops = engine->profile_ms();
        for (auto& [name, ms] : decode_ops) ms /= 4;
        engine->set_profiling(false);
      }
      row.graphs = engine->graphs_captured();
      row.replays = engine->graph_replays();
      weight_bytes = engine->weight_bytes();
      decode_read_bytes = engine->decode_read_bytes();
      peak_used = std::max(peak_used, device_used_bytes());
    } catch (const Error& e) {
      row.error = e.what();
      say("  failed: " + row.error);
    }
    decode.push_back(row);
  }

  cuda::Stream stream;
  double copy_gb_s = f.copy_gb_s;
  bool copy_measured = false;
  if (copy_gb_s <= 0) {
    copy_gb_s = cuda::measure_copy_gb_s(stream, 7);
    copy_measured = true;
  }
  // The GEMM sum at the largest prefill of the list (by tokens).
  const PrefillRow* big = nullptr;
  for (const PrefillRow& p : prefill)
    if (p.error.empty() && (!big || int64_t(p.batch) * p.prompt > int64_t(big->batch) * big->prompt)) big = &p;
  GemmSum gemm;
  if (big) {
    say(str("cuBLAS BF16 GEMMs at M = ", big->batch * big->prompt));
    gemm = cublas_gemm_sum(config, int64_t(big->batch) * big->prompt, big->batch, stream);
  }
  // The floor of issue 3's decode target is the weight bytes at 3.0 TB/s (what bench gemm's copy
  // measures on an H100); this 1 GiB copy has come out lower here (2585 GB/s on 2026-11-23, with
  // the model resident), which would flatter the ratio, so the larger of the two is the floor.
  const double floor_gb_s = std::max(copy_gb_s, 3000.0);
  const double floor_ms = decode_read_bytes / (floor_gb_s * 1e6);
  const DecodeRow* d1 = nullptr;
  for (const DecodeRow& d : decode)
    if (d.batch == 1 && d.error.empty()) d1 = &d;

  const std::string date = cuda::utc_now();
  nlohmann::json j;
  j["date_utc"] = date;
  j["device"] = info.name;
  j["model"] = label;
  j["config"] = {{"hidden", config.hidden_size}, {"intermediate", config.intermediate_size},
                 {"layers", config.num_layers},  {"heads", config.num_heads},
                 {"kv_heads", config.num_kv_heads}, {"head_dim", config.head_dim},
                 {"vocab", config.vocab_size}};
  j["weight_bytes"] = weight_bytes;
  j["decode_read_bytes"] = decode_read_bytes;
  j["kv_cache"] = {{"format", cuda::kv_element_name(attention.kv)},
                   {"bytes_per_token", kv_token_bytes(attention.kv)},
                   {"bf16_bytes_per_token", kv_token_bytes(cuda::KvElement::bf16)},
                   {"q_fp8", attention.q_fp8}};
  j["peak_gpu_bytes"] = peak_used;
  j["copy_gb_s"] = copy_gb_s;
  j["copy_measured"] = copy_measured;
  j["chunk_tokens"] = f.chunk;
  j["prefill"] = nlohmann::json::array();
  for (const PrefillRow& p : prefill)
    j["prefill"].push_back({{"batch", p.batch}, {"prompt", p.prompt}, {"ms", p.ms}, {"ttft_ms", p.ms},
                            {"tokens_per_s", p.tokens_per_s}, {"error", p.error}});
  j["decode"] = nlohmann::json::array();
  for (const DecodeRow& d : decode)
    j["decode"].push_back({{"batch", d.batch}, {"context", d.context}, {"ms_per_step", d.ms_per_step},
                           {"tokens_per_s", d.tokens_per_s}, {"graphs", d.graphs}, {"graph_replays", d.replays},
                           {"error", d.error}});
  if (big) {
    nlohmann::json layers = nlohmann::json::object();
    for (const auto& [name, us] : gemm.layers) layers[name] = us;
    j["cublas_gemm"] = {{"m", gemm.m}, {"layer_us", layers}, {"block_us", gemm.block_us}, {"total_ms", gemm.total_us / 1e3},
                        {"prefill_batch", big->batch}, {"prefill_prompt", big->prompt}, {"prefill_ms", big->ms},
                        {"ratio", big->ms / (gemm.total_us / 1e3)}, {"target", 1.2}};
  }
  auto ops_json = [](const Breakdown& ops) {
    nlohmann::json o = nlohmann::json::array();
    for (const auto& [name, ms] : ops) o.push_back({{"op", name}, {"ms", ms}});
    return o;
  };
  j["prefill_breakdown"] = {{"tokens", prefill_ops_tokens}, {"ops", ops_json(prefill_ops)}};
  j["decode_b1_breakdown"] = {{"ops", ops_json(decode_ops)}};
  j["decode_floor"] = {{"floor_ms", floor_ms},
                       {"floor_gb_s", floor_gb_s},
                       {"floor_ms_at_3000_gb_s", decode_read_bytes / 3.0e9},
                       {"b1_ms", d1 ? d1->ms_per_step : 0.0},
                       {"ratio", d1 ? d1->ms_per_step / floor_ms : 0.0},
                       {"target", 1.25}};

  if (!f.json_file.empty()) {
    std::ofstream out(f.json_file);
    QF_CHECK(out, "bench model: cannot write ", f.json_file);
    out << j.dump(1) << "\n";
    QF_CHECK(out.good(), "bench model: error writing ", f.json_file);
  }
  if (f.json) {
    std::cout << j.dump(1) << std::endl;
    return;
  }
  std::printf("qforge bench model  %s  %s\nmodel: %s\n", date.c_str(), info.name.c_str(), label.c_str());
  std::printf("weights %s on the GPU (a decode step reads %s); peak GPU memory in use %s; prefill passes of %lld tokens\n",
              cuda::size_str(weight_bytes).c_str(), cuda::size_str(decode_read_bytes).c_str(),
              cuda::size_str(peak_used).c_str(), static_cast<long long>(f.chunk));
  std::printf("KV cache: %s, %lld bytes per token (BF16: %lld, %.2fx the tokens in the same memory)\n",
              cuda::kv_element_name(attention.kv), static_cast<long long>(kv_token_bytes(attention.kv)),
              static_cast<long long>(kv_token_bytes(cuda::KvElement::bf16)),
              double(kv_token_bytes(cuda::KvElement::bf16)) / double(kv_token_bytes(attention.kv)));
  std::printf("\nprefill (batch x prompt; TTFT = the whole prefill, first token of every sequence)\n");
  std::printf("%6s %7s %12s %14s\n", "batch", "prompt", "TTFT ms", "tokens/s");
  for (const PrefillRow& p : prefill) {
    if (!p.error.empty()) std::printf("%6d %7d  failed: %s\n", p.batch, p.prompt, p.error.c_str());
    else std::printf("%6d %7d %12.2f %14.0f\n", p.batch, p.prompt, p.ms, p.tokens_per_s);
  }
  std::printf("\ndecode (one token per sequence per step, context %d; median step incl. the logits copy)\n", f.context);
  std::printf("%6s %12s %14s %8s\n", "batch", "ms/step", "tokens/s", "graph");
  for (const DecodeRow& d : decode) {
    if (!d.error.empty()) std::printf("%6d  failed: %s\n", d.batch, d.error.c_str());
    else std::printf("%6d %12.3f %14.0f %8s\n", d.batch, d.ms_per_step, d.tokens_per_s, d.replays > 0 ? "yes" : "no");
  }
  if (!prefill_ops.empty() || !decode_ops.empty()) {
    // Op names in order of first appearance in either breakdown.
    std::vector<std::string> names;
    for (const Breakdown* ops : {&prefill_ops, &decode_ops})
      for (const auto& [name, ms] : *ops)
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    auto total = [](const Breakdown& ops) {
      double t = 0;
      for (const auto& [name, ms] : ops) t += ms;
      return t;
    };
    auto find = [](const Breakdown& ops, const std::string& n) {
      for (const auto& [name, ms] : ops)
        if (name == n) return ms;
      return 0.0;
    };
    const double tp = total(prefill_ops), td = total(decode_ops);
    std::printf("\nGPU time per op (CUDA events after every op, eager: a breakdown, not a total)\n");
    std::printf("%-22s %12s %7s %14s %7s\n", "op", "prefill ms", "%", "decode b1 us", "%");
    for (const std::string& n : names) {
      const double p = find(prefill_ops, n), d = find(decode_ops, n);
      std::printf("%-22s %12.2f %6.1f%% %14.1f %6.1f%%\n", n.c_str(), p, tp > 0 ? 100 * p / tp : 0.0, 1e3 * d,
                  td > 0 ? 100 * d / td : 0.0);
    }
    std::printf("%-22s %12.2f %7s %14.1f\n", "total", tp, "", 1e3 * td);
    std::printf("(prefill: %lld tokens)\n", static_cast<long long>(prefill_ops_tokens));
  }
  std::printf("\ntargets (issue 3)\n");
  if (big)
    std::printf("  prefill %dx%d: %.2f ms; cuBLAS BF16 GEMMs of its linear layers at M=%lld: %.2f ms (block %.1f us x %lld + LM head); ratio %.3f (target <= 1.2)\n",
                big->batch, big->prompt, big->ms, static_cast<long long>(gemm.m), gemm.total_us / 1e3, gemm.block_us,
                static_cast<long long>(config.num_layers), big->ms / (gemm.total_us / 1e3));
  std::printf("  decode b1: %.3f ms/step; weight-read floor %.3f ms (%s at %.0f GB/s: the larger of 3000 and the %s %.0f GB/s); ratio %.3f (target <= 1.25)\n",
              d1 ? d1->ms_per_step : 0.0, floor_ms, cuda::size_str(decode_read_bytes).c_str(), floor_gb_s,
              copy_measured ? "measured copy bandwidth" : "given", copy_gb_s, d1 ? d1->ms_per_step / floor_ms : 0.0);
  std::fflush(stdout);
}

nlohmann::json to_json(const cuda::GemmBenchReport& r) {
  nlohmann::json j;
  j["date_utc"] = r.date_utc;
  j["device"] = r.device;
  j["sm_count"] = r.sm_count;
  j["l2_mb"] = r.l2_mb;
  j["memory_gb"] = r.memory_gb;
  j["ceilings"] = {{"measured", r.ceilings.measured},
                   {"copy_gb_s", r.ceilings.copy_gb_s},
                   {"bf16_tflops", r.ceilings.bf16_tflops},
                   {"fp8_tflops", r.ceilings.fp8_tflops},
                   {"fp8_precise_tflops", r.ceilings.fp8_precise_tflops},
                   {"fp8_fast_tflops", r.ceilings.fp8_fast_tflops}};
  j["errors"] = r.errors;
  j["rows"] = nlohmann::json::array();
  for (const cuda::GemmBenchRow& x : r.rows) {
    j["rows"].push_back({{"model", x.model},
                         {"layer", x.layer},
                         {"kernel", x.kernel},
                         {"weight_format", x.weight_format},
                         {"activation_format", x.activation_format},
                         {"m", x.m},
                         {"n", x.n},
                         {"k", x.k},
                         {"median_us", x.median_us},
                         {"min_us", x.min_us},
                         {"max_us", x.max_us},
                         {"reps", x.reps},
                         {"rotation_sets", x.rotation_sets},
                         {"tflops", x.tflops()},
                         {"weight_gb_s", x.weight_gb_s()},
                         {"all_gb_s", x.all_gb_s()},
                         {"weight_bytes", x.weight_bytes},
                         {"all_bytes", x.all_bytes},
                         {"byte_floor_us", x.byte_floor_us},
                         {"flop_floor_us", x.flop_floor_us},
                         {"floor_us", x.floor_us()},
                         {"of_floor", x.median_us / x.floor_us()},
                         {"selected", x.selected},
                         {"cublas_bf16_us", x.cublas_bf16_us},
                         {"cublas_fp8_us", x.cublas_fp8_us},
                         {"speedup_vs_cublas_bf16", x.cublas_bf16_us > 0 ? x.cublas_bf16_us / x.median_us : 0.0},
                         {"speedup_vs_cublas_fp8", x.cublas_fp8_us > 0 ? x.cublas_fp8_us / x.median_us : 0.0}});
  }
  return j;
}

void print_table(const cuda::GemmBenchReport& r) {
  const auto& c = r.ceilings;
  std::printf("qforge bench gemm  %s  %s (%d SMs, %.0f MB L2, %.0f GB)\n", r.date_utc.c_str(), r.device.c_str(),
              r.sm_count, r.l2_mb, r.memory_gb);
  std::printf("ceilings (%s): copy %.0f GB/s, BF16 %.0f TFLOP/s, FP8 %.0f TFLOP/s", c.measured ? "measured" : "nominal",
              c.copy_gb_s, c.bf16_tflops, c.fp8_tflops);
  if (c.measured) std::printf(" (FP32-promoted %.0f, fast accumulation %.0f)", c.fp8_precise_tflops, c.fp8_fast_tflops);
  std::printf("\n* = the kernel LinearRegistry::select picks; xfloor = time / floor; vs = cuBLAS time / this time\n");
  std::string last;
  for (const cuda::GemmBenchRow& x : r.rows) {
    const std::string group = x.model + " " + x.layer;
    if (group != last) {
      std::printf("\n%-10s %-7s %5s %6s %6s  %-19s %9s %8s %8s %8s %9s %5s %6s %7s %7s\n", "model", "layer", "M", "N",
                  "K", "kernel", "us", "TFLOP/s", "W GB/s", "all GB/s", "floor us", "bound", "xfloor", "vs bf16",
                  "vs fp8");
      last = group;
    }
    const std::string name = x.kernel + (x.selected ? "*" : "");
    std::printf("%-10s %-7s %5lld %6lld %6lld  %-19s %9.2f %8.1f %8.0f %8.0f %9.2f %5s %6.2f %7.2f %7.2f\n",
                x.model.c_str(), x.layer.c_str(), static_cast<long long>(x.m), static_cast<long long>(x.n),
                static_cast<long long>(x.k), name.c_str(), x.median_us, x.tflops(), x.weight_gb_s(), x.all_gb_s(),
                x.floor_us(), x.byte_floor_us >= x.flop_floor_us ? "mem" : "math", x.median_us / x.floor_us(),
                x.cublas_bf16_us > 0 ? x.cublas_bf16_us / x.median_us : 0.0,
                x.cublas_fp8_us > 0 ? x.cublas_fp8_us / x.median_us : 0.0);
  }
  if (!r.errors.empty()) {
    std::printf("\n%zu failed cases:\n", r.errors.size());
    for (const std::string& e : r.errors) std::printf("  %s\n", e.c_str());
  }
  std::fflush(stdout);
}

void run_gemm(const GemmFlags& f) {
  cuda::GemmBenchOptions o;
  if (!f.models.empty()) o.models = f.models;
  if (!f.batches.empty()) o.batches = f.batches;
  o.kernels = f.kernels;
  o.target_ms = f.target_ms;
  o.min_reps = f.min_reps;
  o.max_reps = f.max_reps;
  o.measure_ceilings = !f.no_ceilings;
  o.seed = f.seed;
  o.progress = [](const std::string& line) { std::fprintf(stderr, "[bench gemm] %s\n", line.c_str()); };
  const cuda::GemmBenchReport report = cuda::run_gemm_bench(o);
  const nlohmann::json j = to_json(report);
  if (!f.json_file.empty()) {
    std::ofstream out(f.json_file);
    QF_CHECK(out, "bench gemm: cannot write ", f.json_file);
    out << j.dump(1) << "\n";
    QF_CHECK(out.good(), "bench gemm: error writing ", f.json_file);
  }
  if (f.json) std::cout << j.dump(1) << std::endl;
  else print_table(report);
  QF_CHECK(report.errors.empty(), "bench gemm: ", report.errors.size(), " cases failed (listed above)");
}

void run_attention(const AttentionFlags& f) {
  cuda::AttentionBenchOptions o;
  if (!f.models.empty()) o.models = f.models;
  o.target_ms = f.target_ms;
  o.peak_tflops = f.peak_tflops;
  o.copy_gb_s = f.copy_gb_s;
  o.seed = f.seed;
  if (!f.prefill.empty()) {
    o.prefill.clear();
    for (const std::string& spec : f.prefill) {
      cuda::PrefillBenchCase c;
      int used = -1, used_past = -1;
      const int n = std::sscanf(spec.c_str(), "%dx%d%n+%d%n", &c.batch, &c.tokens, &used, &c.past, &used_past);
      const bool whole = (n == 2 && used == int(spec.size())) || (n == 3 && used_past == int(spec.size()));
      QF_CHECK(whole && c.batch > 0 && c.tokens > 0 && c.past >= 0,
               "bench attention: --prefill entries are BATCHxTOKENS or BATCHxTOKENS+PAST, e.g. 1x8192 or 1x512+3584; "
               "got \"", spec, "\"");
      o.prefill.push_back(c);
    }
  }
  if (f.no_decode) o.decode.clear();
  o.fp8 = !f.no_fp8;
  o.progress = [](const std::string& line) { std::fprintf(stderr, "[bench attention] %s\n", line.c_str()); };
  const cuda::AttentionBenchReport report = cuda::run_attention_bench(o);
  const std::string json = cuda::attention_bench_json(report);
  if (!f.json_file.empty()) {
    std::ofstream out(f.json_file);
    QF_CHECK(out, "bench attention: cannot write ", f.json_file);
    out << json << "\n";
    QF_CHECK(out.good(), "bench attention: error writing ", f.json_file);
  }
  if (f.json) std::cout << json << std::endl;
  else std::cout << cuda::attention_bench_table(report) << std::flush;
  QF_CHECK(report.errors.empty(), "bench attention: ", report.errors.size(), " cases failed");
}

#else

[[noreturn]] void needs_cuda(const char* what) {
  fail(what, " needs the CUDA backend: this qforge was built without it (configure with -DQF_CUDA=ON)");
}
void run_gemm(const GemmFlags&) { needs_cuda("bench gemm"); }
void run_model_bench(const ModelFlags&) { needs_cuda("bench model"); }
void run_attention(const AttentionFlags&) { needs_cuda("bench attention"); }

#endif

void register_bench(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (GPU): linear kernels (gemm), attention, whole models (model)");
  bench->require_subcommand(1);

  auto flags = std::make_shared<GemmFlags>();
  CLI::App* gemm = bench->add_subcommand(
      "gemm",
      "Time every registered linear kernel at the layer shapes of Llama-2-7B, Llama-3-8B and Llama-2-70B "
      "(q/k/v fused, o, gate/up fused, down) and batch sizes M, next to cuBLAS BF16 and FP8 measured in the "
      "same run, with the byte and FLOP floors of each shape. See docs/benchmarks.md.");
  gemm->add_flag("--json", flags->json, "Print one JSON object instead of the table");
  gemm->add_option("--json-file", flags->json_file, "Also write the JSON object to this file");
  gemm->add_option("--models", flags->models, "Models, comma-separated (default: llama2-7b,llama3-8b,llama2-70b)")
      ->delimiter(',');
  gemm->add_option("--batches", flags->batches, "Batch sizes M (default: 1,2,4,8,16,32,64,128,256,1024,4096)")
      ->delimiter(',');
  gemm->add_option("--kernels", flags->kernels,
                   "Kernels to report, comma-separated (default: all; the cuBLAS baselines are timed anyway)")
      ->delimiter(',');
  gemm->add_option("--target-ms", flags->target_ms, "GPU time to spend per case, in ms (sets the repetitions)")
      ->check(CLI::PositiveNumber);
  gemm->add_option("--min-reps", flags->min_reps, "Fewest timed launches per case")->check(CLI::PositiveNumber);
  gemm->add_option("--max-reps", flags->max_reps, "Most timed launches per case")->check(CLI::PositiveNumber);
  gemm->add_flag("--no-ceilings", flags->no_ceilings,
                 "Use nominal H100 ceilings (3000 GB/s, 740/1300 TFLOP/s) instead of measuring them");
  gemm->add_option("--seed", flags->seed, "Seed of the random operands");
  gemm->footer(
      "\nExamples:\n"
      "  qforge bench gemm\n"
      "  qforge bench gemm --models llama2-7b --batches 1,8 --kernels gemv_bf16\n"
      "  qforge bench gemm --json-file gemm.json > gemm.txt\n");
  gemm->callback([flags] { run_gemm(*flags); });

  auto att = std::make_shared<AttentionFlags>();
  CLI::App* attention = bench->add_subcommand(
      "attention",
      "Time causal prefill attention (TFLOP/s against the BF16 rate) and paged decode attention (GB/s of K/V "
      "read against the copy bandwidth) at the head shapes of real models.");
  attention->add_flag("--json", att->json, "Print one JSON object instead of the table");
  attention->add_option("--json-file", att->json_file, "Also write the JSON object to this file");
  attention->add_option("--models", att->models, "Models, comma-separated (default: llama2-7b,llama3-8b,smollm2-135m)")
      ->delimiter(',');
  attention->add_option("--target-ms", att->target_ms, "GPU time to spend per case, in ms")->check(CLI::PositiveNumber);
  attention->add_option("--peak-tflops", att->peak_tflops,
                        "BF16 rate of the FLOP floor (default 740; bench gemm measures it)")
      ->check(CLI::PositiveNumber);
  attention->add_option("--copy-gb-s", att->copy_gb_s, "Bandwidth of the byte floor (default 3000; bench gemm measures it)")
      ->check(CLI::PositiveNumber);
  attention->add_option("--seed", att->seed, "Seed of the random operands");
  attention->add_option("--prefill", att->prefill,
                        "Prefill cases BATCHxTOKENS[+PAST], comma-separated (default: 1x512,1x2048,4x2048,1x4096,"
                        "1x8192,1x16384,1x512+3584)")
      ->delimiter(',');
  attention->add_flag("--no-decode", att->no_decode, "Skip the decode cases");
  attention->add_flag("--no-fp8", att->no_fp8,
                      "Skip the FP8 prefill kernel (by default it runs with both pipelines next to every BF16 "
                      "prefill case)");
  attention->footer(
      "\nExamples:\n"
      "  qforge bench attention\n"
      "  qforge bench attention --models llama3-8b,llama2-7b --prefill 1x4096,1x8192,1x16384 --no-decode\n");
  attention->callback([att] { run_attention(*att); });

  auto mf = std::make_shared<ModelFlags>();
  CLI::App* model = bench->add_subcommand(
      "model",
      "Whole-model throughput of the CUDA engine (BF16): prefill tokens/s and time to first token for batch x "
      "prompt, decode tokens/s at several batch sizes with a filled KV cache, peak GPU memory; and, for issue 3's "
      "targets, the sum of cuBLAS BF16 GEMM times of the model's linear layers at the largest prefill shape and "
      "the decode weight-read floor (bytes a step reads / measured copy bandwidth).");
  add_model_argument(model, mf->model);
  model->add_option("--synthetic", mf->synthetic,
                    "Instead of a file: a model of real shape with random weights made on the GPU: llama2-7b, "
                    "llama3-8b, llama2-70b (140 GB of BF16: needs more than one 80 GB GPU, so it fails with the "
                    "sizes), smollm2-135m");
  model->add_option("--weights", mf->weights,
                    "Synthetic models: how the linear layers run: bf16 (default); w4a8 (FireQ: INT4 weights in "
                    "groups of 128 with FP8 scales x per-token FP8 activations); fp6, fp6-e2m3, fp5 (FP6-LLM: FPx "
                    "weights with a scale per channel x BF16 activations)")
      ->capture_default_str();
  model->add_flag("--json", mf->json, "Print one JSON object instead of the table");
  model->add_option("--kv", mf->kv,
                    "The KV cache: bf16, int4 (FireQ: INT4 codes with one F16 scale per token and KV head, ~4x the "
                    "tokens of bf16 in the same memory) or fp8 (E4M3, per-token F16 scale); default: the model's own "
                    "(a checkpoint's recorded kv_cache), else bf16");
  model->add_flag("--fp8-queries", mf->fp8_queries,
                  "Round queries to FP8 E4M3 per token and head after RoPE (FireQ); default: the model's own");
  model->add_option("--json-file", mf->json_file, "Also write the JSON object to this file");
  model->add_option("--prefill", mf->prefill, "Prefill cases BATCHxPROMPT (default: 1x512,1x2048,4x2048)")
      ->delimiter(',');
  model->add_option("--decode-batches", mf->decode_batches, "Decode batch sizes (default: 1,8,32,128)")
      ->delimiter(',');
  model->add_option("--context", mf->context, "Tokens per sequence in the KV cache at the end of the decode steps")
      ->capture_default_str();
  model->add_option("--decode-steps", mf->decode_steps, "Timed decode steps per batch size")->capture_default_str();
  model->add_option("--reps", mf->reps, "Timed prefills per case (after one warm-up)")->capture_default_str();
  model->add_option("--chunk", mf->chunk, "Tokens per prefill pass of the engine")->capture_default_str();
  model->add_option("--copy-gb-s", mf->copy_gb_s, "Bandwidth of the decode floor (default: measured D2D copy)");
  model->add_option("--seed", mf->seed, "Seed of the synthetic weights and the random prompts");
  model->add_flag("--no-breakdown", mf->no_breakdown,
                  "Skip the per-op GPU time table (one profiled prefill and 4 profiled decode steps)");
  model->footer(
      "\nExamples:\n"
      "  qforge bench model                         # the default model\n"
      "  qforge bench model --synthetic llama2-7b   # the issue-3 targets\n"
      "  qforge bench model --synthetic llama3-8b --decode-batches 1,8 --json\n"
      "  qforge bench model --synthetic llama2-7b --weights w4a8   # FireQ's linears (issue 6)\n"
      "  qforge bench model --synthetic llama2-70b --weights fp6   # 70B on one 80 GB GPU (issue 5)\n");
  model->callback([mf] { run_model_bench(*mf); });
}

}  // namespace

QF_REGISTER_COMMAND(register_bench);

}  // namespace qf::cli
