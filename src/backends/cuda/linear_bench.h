// The linear-layer benchmark behind `qforge bench gemm`: every registered linear kernel at the
// layer shapes of real models, each next to cuBLAS BF16 and cuBLAS FP8 timed in the same process,
// with the byte and FLOP floors of each shape from ceilings measured in the same run.
//
// How it measures (see docs/benchmarks.md for how to read the numbers):
//   * CUDA events around each launch, after warm-up; the median of many launches. Before a batch
//     of timed launches the stream is kept busy (device_sleep) so that the host's launch latency
//     never lands between a start event and its kernel.
//   * Operands rotate among several buffer sets, together at least 4x the L2 size, so that no
//     launch finds its weights (or activations) in L2 from an earlier one: at small M the
//     weights are the traffic that must come from HBM.
//   * Random data generated on the GPU (random.h), never zeros.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/cuda/llama_shapes.h"

namespace qf::cuda {

// The names llama_layer_shapes knows.
std::vector<std::string> known_gemm_models();
// The four linear layers of one decoder block of `model` (llama_shapes.h). Throws qf::Error
// listing the known names for an unknown one.
std::vector<GemmLayerShape> llama_layer_shapes(const std::string& model);

struct GemmBenchOptions {
  std::vector<std::string> models = {"llama2-7b", "llama3-8b", "llama2-70b"};
  std::vector<int64_t> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096};
  std::vector<std::string> kernels;  // names to report; empty: every registered kernel
  double target_ms = 100.0;          // timed launches per case: about this much GPU time ...
  int min_reps = 20;                 // ... but at least this many
  int max_reps = 400;                // ... and at most this many
  bool measure_ceilings = true;      // copy bandwidth and 8192^3 cuBLAS rates, in this run
  uint64_t seed = 1;
  std::function<void(const std::string&)> progress;  // a line per step (stderr), or empty
};

// The ceilings the floors are computed from.
struct GemmBenchCeilings {
  bool measured = false;           // false: the nominal values below (H100 SXM)
  double copy_gb_s = 3000.0;       // device-to-device copy, bytes read + written per second
  double bf16_tflops = 740.0;      // cuBLAS BF16 at 8192^3
  double fp8_tflops = 1300.0;      // cuBLAS FP8 at 8192^3 (the faster of the two accumulations)
  double fp8_precise_tflops = 0.0; // cuBLAS FP8 with FP32 promotion (0: not measured)
  double fp8_fast_tflops = 0.0;    // cuBLAS FP8 with fast accumulation (0: not measured)
};

struct GemmBenchRow {
  std::string model, layer, kernel, weight_format, activation_format;
  int64_t m = 0, n = 0, k = 0;
  double median_us = 0, min_us = 0, max_us = 0;
  int reps = 0;
  int rotation_sets = 0;
  double flops = 0;         // 2 M N K
  double weight_bytes = 0;  // W as stored
  double all_bytes = 0;     // W + x + y, each once
  double byte_floor_us = 0; // all_bytes at the copy bandwidth
  double flop_floor_us = 0; // flops at the matching tensor-core rate (BF16 or FP8)
  bool selected = false;    // the kernel LinearRegistry::select picks for this key and shape
  double cublas_bf16_us = 0, cublas_fp8_us = 0;  // the baselines at this shape (0: not run)

  double floor_us() const { return byte_floor_us > flop_floor_us ? byte_floor_us : flop_floor_us; }
  double tflops() const { return flops / (median_us * 1e6); }
  double weight_gb_s() const { return weight_bytes / (median_us * 1e3); }
  double all_gb_s() const { return all_bytes / (median_us * 1e3); }
};

struct GemmBenchReport {
  std::string date_utc;  // ISO 8601
  std::string device;
  int sm_count = 0;
  double l2_mb = 0, memory_gb = 0;
  GemmBenchCeilings ceilings;
  std::vector<GemmBenchRow> rows;
  // Cases that failed (a kernel threw: no algorithm, a launch error, an unwritten output), so
  // that one failure does not lose the rest of a device run.
  std::vector<std::string> errors;
};

// Runs the benchmark on the current device. Throws qf::Error on a bad option or a CUDA failure.
GemmBenchReport run_gemm_bench(const GemmBenchOptions& options);

// The copy bandwidth of the floors (bench gemm's ceilings, bench model's decode floor): a 1 GiB
// device-to-device copy timed back to back after a warm-up (the median of 20), bytes read +
// written per second.
double measure_copy_gb_s(cudaStream_t stream, uint64_t seed);

}  // namespace qf::cuda
