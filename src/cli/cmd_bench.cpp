// qforge bench: benchmarks, one subcommand each.
//   bench gemm        every registered linear kernel at real layer shapes, next to cuBLAS BF16/FP8
//   bench attention   causal prefill and paged decode attention at real head shapes
//   (bench model is added by the runtime: prefill/decode throughput of whole models)
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

#ifdef QF_HAVE_CUDA
#include "backends/cuda/attention_bench.h"
#include "backends/cuda/linear_bench.h"
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
};

#ifdef QF_HAVE_CUDA

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
void run_attention(const AttentionFlags&) { needs_cuda("bench attention"); }

#endif

void register_bench(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (GPU): linear kernels (gemm), attention");
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
  attention->callback([att] { run_attention(*att); });
}

}  // namespace

QF_REGISTER_COMMAND(register_bench);

}  // namespace qf::cli
