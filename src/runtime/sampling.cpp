#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace qf {

int32_t argmax(const float* logits, int64_t n) {
  QF_CHECK(n > 0, "argmax of an empty vocabulary");
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  QF_CHECK(params.top_p > 0.0 && params.top_p <= 1.0, "top-p must be in (0, 1], got ", params.top_p);
  QF_CHECK(params.top_k >= 0, "top-k must be >= 0 (0: no limit), got ", params.top_k);
  QF_CHECK(std::isfinite(params.temperature), "temperature must be a finite number");
}

std::vector<std::pair<int32_t, double>> Sampler::distribution(const float* logits, int64_t vocab) const {
  if (params_.greedy()) return {{argmax(logits, vocab), 1.0}};
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  auto ranks_before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int64_t keep = params_.top_k > 0 ? std::min(params_.top_k, vocab) : vocab;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), ranks_before);
  ids.resize(size_t(keep));

  std::vector<std::pair<int32_t, double>> dist(ids.size());
  const double l_max = logits[ids[0]];
  double sum = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const double p = std::exp((double(logits[ids[i]]) - l_max) / params_.temperature);
    dist[i] = {ids[i], p};
    sum += p;
  }
  for (auto& e : dist) e.second /= sum;

  if (params_.top_p < 1.0) {
    double cum = 0.0;
    size_t n = 0;
    while (n < dist.size() && cum < params_.top_p) cum += dist[n++].second;
    dist.resize(std::max<size_t>(n, 1));
    double kept = 0.0;
    for (const auto& e : dist) kept += e.second;
    for (auto& e : dist) e.second /= kept;
  }
  return dist;
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.greedy()) return argmax(logits, vocab);
  const auto dist = distribution(logits, vocab);
  const double u = double(rng_() >> 11) * 0x1.0p-53;
  double cum = 0.0;
  for (const auto& [id, p] : dist) {
    cum += p;
    if (u < cum) return id;
  }
  return dist.back().first;  // u within rounding of 1
}

}  // namespace qf
