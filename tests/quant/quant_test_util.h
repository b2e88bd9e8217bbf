// Helpers shared by the quantization tests: seeded random data, calibration-like inputs and
// plain double-precision reference products written here, independent of the code under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "formats/quantize.h"

namespace qf::quant_test {

inline std::vector<float> gaussian(int64_t n, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// Heavy-tailed weights (Student t with 3 degrees of freedom): a few large values per block, the
// case clipping exists for.
inline std::vector<float> heavy_tailed(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> td(3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = td(rng);
  return v;
}

// Calibration-like inputs X [tokens, dim] = Z A: Z Gaussian, A = I + a random mixing of
// strength `mixing` (so channels are correlated), then a few channels (every 37th) scaled by
// `outlier_scale` (large-variance channels, as LLM activations have).
inline std::vector<float> correlated_inputs(int64_t tokens, int64_t dim, uint64_t seed, float mixing = 0.5f,
                                            float outlier_scale = 8.0f) {
  const std::vector<float> z = gaussian(tokens * dim, seed);
  const std::vector<float> a_rand = gaussian(dim * dim, seed + 1000, mixing / std::sqrt(float(dim)));
  std::vector<double> a(static_cast<size_t>(dim * dim));
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t j = 0; j < dim; ++j) a[size_t(i * dim + j)] = (i == j ? 1.0 : 0.0) + a_rand[size_t(i * dim + j)];
  std::vector<float> x(static_cast<size_t>(tokens * dim));
  std::vector<double> row(static_cast<size_t>(dim));
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(row.begin(), row.end(), 0.0);
    for (int64_t k = 0; k < dim; ++k) {
      const double zk = z[size_t(t * dim + k)];
      for (int64_t j = 0; j < dim; ++j) row[size_t(j)] += zk * a[size_t(k * dim + j)];
    }
    for (int64_t j = 0; j < dim; ++j) x[size_t(t * dim + j)] = float(row[size_t(j)] * (j % 37 == 5 ? outlier_scale : 1.0));
  }
  return x;
}

// H = X^T X [dim, dim] in double.
inline std::vector<double> second_moment(const std::vector<float>& x, int64_t tokens, int64_t dim) {
  std::vector<double> h(static_cast<size_t>(dim * dim), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x.data() + t * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const double xi = row[i];
      double* hi = h.data() + i * dim;
      for (int64_t j = 0; j < dim; ++j) hi[j] += xi * row[j];
    }
  }
  return h;
}

// C [m, n] = A [m, k] · B [k, n], in double.
inline std::vector<double> matmul(const double* a, const double* b, int64_t m, int64_t k, int64_t n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) {
      const double aip = a[i * k + p];
      for (int64_t j = 0; j < n; ++j) c[size_t(i * n + j)] += aip * b[p * n + j];
    }
  return c;
}

// y [tokens, out] = x [tokens, in] · W^T, W [out, in], in double.
inline std::vector<double> linear_ref(const std::vector<float>& x, const std::vector<float>& w, int64_t tokens, int64_t in,
                                      int64_t out) {
  std::vector<double> y(static_cast<size_t>(tokens * out), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += double(x[size_t(t * in + i)]) * double(w[size_t(o * in + i)]);
      y[size_t(t * out + o)] = s;
    }
  return y;
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

inline std::vector<float> dequantized(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize(q, out.data());
  return out;
}

}  // namespace qf::quant_test
