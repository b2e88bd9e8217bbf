// The attention benchmark (for `qforge bench attention`): causal prefill over the paged cache
// in TFLOP/s against the BF16 tensor-core peak, and decode in GB/s of K/V read against the copy
// bandwidth, at the head shapes of real models.
//
// How it measures: CUDA events around each launch after warm-up, the median of many launches,
// the stream kept busy before a batch of timed launches (device_sleep) so host launch latency
// never lands inside a measurement; random BF16 data generated on the GPU; the KV caches rotate
// among enough copies (like the layers of a model) that together they exceed 4x the L2, so a
// decode launch never finds its K/V in L2 from the previous one.
//
// FP8 prefill (attention_fp8.h): every prefill case also runs the FP8 kernel with
// both pipelines (rows "prefill-fp8-2st", "prefill-fp8-3st") on random E4M3 codes and scales in
// its staged layout, with its speedup over the BF16 prefill row of the same case; its FLOP floor
// is at twice the BF16 rate (H100 FP8 tensor cores).
//
// FLOPs of causal prefill: per sequence and query head, 4 * head_dim * (number of (query, key)
// pairs a query sees), the pairs being T * past + T (T + 1) / 2 for T new tokens after `past`
// cached ones (QK^T and PV, 2 FLOPs per multiply-add each). Bytes of decode: K and V of every
// cached token read once, plus q and the output.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qf::cuda {

struct AttentionBenchShape {
  std::string model;  // "llama3-8b"
  int heads = 0, kv_heads = 0, head_dim = 0;
};
// llama2-7b (32/32/128), llama3-8b (32/8/128), llama2-70b (64/8/128), smollm2-135m (9/3/64).
std::vector<std::string> known_attention_models();
AttentionBenchShape attention_bench_shape(const std::string& model);  // throws on an unknown name

struct PrefillBenchCase {
  int batch = 1;   // sequences in the launch
  int tokens = 0;  // new (query) tokens per sequence
  int past = 0;    // cached tokens before them (chunked prefill)
};
struct DecodeBenchCase {
  int batch = 1;    // sequences, one query token each
  int context = 0;  // cached tokens per sequence, the current one included
};

struct AttentionBenchOptions {
  std::vector<std::string> models = {"llama2-7b", "llama3-8b", "smollm2-135m"};
  std::vector<PrefillBenchCase> prefill = {{1, 512, 0},  {1, 2048, 0},  {4, 2048, 0},
                                           {1, 4096, 0}, {1, 8192, 0},  {1, 16384, 0}, {1, 512, 3584}};
  bool fp8 = true;  // also the FP8 prefill kernel, both pipelines
  std::vector<DecodeBenchCase> decode = {{1, 1024}, {1, 4096}, {1, 16384}, {8, 1024},
                                         {32, 1024}, {128, 1024}, {8, 4096}, {32, 8192}};
  // Every decode case also runs over these quantized caches (kv_element.h; rows "decode-int4",
  // "decode-fp8", each with its speedup over the BF16 row of the same case).
  bool decode_quantized = true;
  double target_ms = 50.0;  // GPU time per case (sets the repetitions) ...
  int min_reps = 10;        // ... within these bounds
  int max_reps = 200;
  double peak_tflops = 740.0;  // the FLOP floor's rate (H100 BF16 dense, measured by bench gemm)
  double copy_gb_s = 3000.0;   // the byte floor's rate (H100 device-to-device copy)
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;  // a line per case (stderr), or empty
};

struct AttentionBenchRow {
  std::string kind;  // "prefill", "prefill-fp8-2st", "prefill-fp8-3st", "decode", "decode-int4" or "decode-fp8"
  std::string model;
  int heads = 0, kv_heads = 0, head_dim = 0;
  int batch = 0, q_tokens = 0, past = 0, kv_tokens = 0;  // per sequence; decode: q_tokens 1
  int splits = 0;                                        // decode: splits per sequence
  int rotation_sets = 0;
  double median_us = 0, min_us = 0, max_us = 0;
  int reps = 0;
  double flops = 0, bytes = 0;
  double flop_floor_us = 0, byte_floor_us = 0;
  double vs_bf16 = 0;  // FP8 prefill / quantized decode rows: BF16 time / this time on the same case (0: none)

  double tflops() const { return flops / (median_us * 1e6); }
  double gb_s() const { return bytes / (median_us * 1e3); }
  double floor_us() const { return flop_floor_us > byte_floor_us ? flop_floor_us : byte_floor_us; }
};

struct AttentionBenchReport {
  std::string date_utc, device;
  int sm_count = 0;
  double peak_tflops = 0, copy_gb_s = 0;
  std::vector<AttentionBenchRow> rows;
  std::vector<std::string> errors;  // failed cases (the rest still run)
};

AttentionBenchReport run_attention_bench(const AttentionBenchOptions& options);

// The report as a human table (what `qforge bench attention` prints) and as one JSON object.
std::string attention_bench_table(const AttentionBenchReport& report);
std::string attention_bench_json(const AttentionBenchReport& report);

}  // namespace qf::cuda
