// Measures cpu::linear's throughput (GFLOP/s) at the default model's layer shapes, for F32 and
// BF16 weights. A tool, not a test: `build/tests/gemm_throughput [threads]`. Besides wall-clock
// GFLOP/s it prints GFLOP per CPU-second (process CPU time), which stays meaningful on a
// machine shared with other jobs (with 1 thread it is the single-core throughput).
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/gemm.h"
#include "core/thread_pool.h"

int main(int argc, char** argv) {
  if (argc > 1) qf::set_num_threads(std::atoi(argv[1]));
  struct Shape { const char* name; int64_t M, N, K; };
  const Shape shapes[] = {
      {"q_proj   M=512", 512, 576, 576},   {"gate     M=512", 512, 1536, 576},
      {"down     M=512", 512, 576, 1536},  {"lm_head  M=512", 512, 49152, 576},
      {"gate     M=1", 1, 1536, 576},      {"lm_head  M=1", 1, 49152, 576},
  };
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::printf("threads %d\n", qf::num_threads());
  for (const auto& s : shapes) {
    std::vector<float> x(s.M * s.K), w(s.N * s.K), y(s.M * s.N);
    std::vector<uint16_t> wb(s.N * s.K);
    for (auto& v : x) v = nd(rng);
    for (size_t i = 0; i < w.size(); ++i) { w[i] = nd(rng); uint32_t u; std::memcpy(&u, &w[i], 4); wb[i] = u >> 16; }
    for (int bf = 0; bf < 2; ++bf) {
      const void* W = bf ? static_cast<const void*>(wb.data()) : w.data();
      const qf::DType t = bf ? qf::DType::BF16 : qf::DType::F32;
      qf::cpu::linear(x.data(), s.M, s.K, W, t, s.N, nullptr, y.data());  // warm-up
      int reps = 0;
      const std::clock_t c0 = std::clock();
      auto t0 = std::chrono::steady_clock::now();
      double secs = 0;
      do {
        qf::cpu::linear(x.data(), s.M, s.K, W, t, s.N, nullptr, y.data());
        ++reps;
        secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      } while (secs < 0.5);
      const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
      const double gflop = 2.0 * s.M * s.N * s.K * reps * 1e-9;
      std::printf("%s N=%-6ld K=%-5ld %-4s %7.1f GFLOP/s wall %7.1f GFLOP/cpu-s\n", s.name, long(s.N), long(s.K),
                  bf ? "BF16" : "F32", gflop / secs, gflop / cpu);
    }
  }
}
