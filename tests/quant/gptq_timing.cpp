// Times GPTQ (int4, groups of 128; of 64 where the input width is not a multiple of 128, as
// 576, the default model's hidden size) at layer shapes [rows = out, cols = in] of the default
// model and of Llama-7B, with the factorisation of the Hessian timed on its own. A tool, not a
// test:
//   build/tests/gptq_timing [threads] [rows x cols ...]   e.g.  gptq_timing 2 4096x4096
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "quant/gptq.h"
#include "quant/linalg.h"

namespace {

// Wall-clock and process CPU time (all threads) since construction. Both are printed: on a
// shared machine the wall clock also measures the other processes; CPU time does not.
struct Stopwatch {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  std::clock_t cpu = std::clock();
  double wall_s() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count(); }
  double cpu_s() const { return double(std::clock() - cpu) / CLOCKS_PER_SEC; }
};

// A Hessian with the structure of real ones: B B^T (B [n, n/4]: correlated, low effective
// rank) plus a spread of per-channel energies.
std::vector<double> synthetic_hessian(int64_t n, std::mt19937_64& rng) {
  const int64_t r = n / 4;
  std::normal_distribution<double> nd;
  std::vector<double> b(static_cast<size_t>(n * r)), bt(static_cast<size_t>(r * n)), h(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < r; ++k) b[size_t(i * r + k)] = bt[size_t(k * n + i)] = nd(rng);
  qf::dgemm_add(n, n, r, 1.0, b.data(), r, bt.data(), n, h.data(), n);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += std::exp(2 * nd(rng));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) qf::set_num_threads(std::atoi(argv[1]));
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1536, 576}, {576, 1536}, {4096, 4096}, {11008, 4096}};
  if (argc > 2) {
    shapes.clear();
    for (int i = 2; i < argc; ++i) {
      const std::string s = argv[i];
      shapes.push_back({std::atoll(s.c_str()), std::atoll(s.substr(s.find('x') + 1).c_str())});
    }
  }
  std::printf("threads %d\n", qf::num_threads());
  for (auto [rows, cols] : shapes) {
    const qf::Format format = qf::Format::parse(cols % 128 == 0 ? "int4:g128" : "int4:g64");
    std::mt19937_64 rng(uint64_t(rows * 131 + cols));
    std::normal_distribution<float> nd;
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (auto& x : w) x = nd(rng);
    const std::vector<double> h = synthetic_hessian(cols, rng);
    const Stopwatch factor_time;
    const std::vector<double> u = qf::inverse_cholesky_upper(h.data(), cols, "timing");
    const double factor_wall = factor_time.wall_s(), factor_cpu = factor_time.cpu_s();
    const Stopwatch total_time;
    const qf::GptqResult g = qf::gptq_quantize(w.data(), rows, cols, {h.data(), cols, false}, format);
    std::printf("gptq %-10s %5lld x %5lld: %7.2f s wall, %7.2f s cpu (Hessian factorisation %.2f s wall, %.2f s cpu), "
                "loss %.4g\n",
                format.str().c_str(), (long long)rows, (long long)cols, total_time.wall_s(), total_time.cpu_s(), factor_wall,
                factor_cpu, g.loss);
  }
  return 0;
}
