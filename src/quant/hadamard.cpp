#include "quant/hadamard.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/hadamard_small.h"

namespace qf {
namespace {

bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// Columns transformed together by apply_columns: the scratch (n x kStrip floats) and the rows'
// strips stay cache-sized, and a strip is long enough to vectorise.
constexpr int64_t kStrip = 64;

// Unnormalised Walsh-Hadamard butterflies on X [count, width] (rows ld apart).
void butterflies(float* x, int64_t ld, int64_t width, int64_t count) {
  for (int64_t h = 1; h < count; h *= 2)
    for (int64_t i0 = 0; i0 < count; i0 += 2 * h)
      for (int64_t i = i0; i < i0 + h; ++i) {
        float* a = x + i * ld;
        float* b = x + (i + h) * ld;
        for (int64_t c = 0; c < width; ++c) {
          const float u = a[c], v = b[c];
          a[c] = u + v;
          b[c] = u - v;
        }
      }
}

}  // namespace

void fwht(float* x, int64_t n) {
  QF_CHECK(is_power_of_two(n), "fwht: length ", n, " is not a power of two");
  butterflies(x, 1, 1, n);
  const float norm = float(1.0 / std::sqrt(double(n)));
  for (int64_t i = 0; i < n; ++i) x[i] *= norm;
}

std::string HadamardFactorization::str() const {
  switch (construction) {
    case Construction::sylvester: return qf::str(power_of_two, " (Sylvester)");
    case Construction::paley1: return qf::str(small_order, " (Paley I, q = ", q, ") x ", power_of_two);
    case Construction::paley2: return qf::str(small_order, " (Paley II, q = ", q, ") x ", power_of_two);
    case Construction::williamson: return qf::str(small_order, " (Williamson, w = ", q, ") x ", power_of_two);
  }
  return "?";
}

std::optional<HadamardFactorization> find_hadamard_factorization(int64_t n) {
  if (n < 1) return std::nullopt;
  int64_t odd = n;
  while (odd % 2 == 0) odd /= 2;
  for (int64_t m = odd; m <= std::min(n, kMaxSmallHadamardOrder); m *= 2) {
    HadamardFactorization f;
    f.small_order = m;
    f.power_of_two = n / m;
    if (m == 1) return f;
    if (m % 4 != 0) continue;  // Hadamard orders above 2 are multiples of 4
    if ((m - 1) % 4 == 3 && prime_power_base(m - 1) != 0) {
      f.construction = HadamardFactorization::Construction::paley1;
      f.q = m - 1;
      return f;
    }
    if ((m / 2 - 1) % 4 == 1 && prime_power_base(m / 2 - 1) != 0) {
      f.construction = HadamardFactorization::Construction::paley2;
      f.q = m / 2 - 1;
      return f;
    }
    if (has_williamson_quadruple(m / 4)) {
      f.construction = HadamardFactorization::Construction::williamson;
      f.q = m / 4;
      return f;
    }
  }
  return std::nullopt;
}

HadamardTransform::HadamardTransform(int64_t n) : n_(n) {
  const std::optional<HadamardFactorization> f = find_hadamard_factorization(n);
  QF_CHECK(f.has_value(), "Hadamard transform of size ", n, ": no construction is known (n = m * 2^k needs a Hadamard "
           "matrix of order m from Paley I, II or Williamson with m <= ", kMaxSmallHadamardOrder, "); use a random orthogonal rotation");
  f_ = *f;
  switch (f_.construction) {
    case HadamardFactorization::Construction::sylvester: small_ = {1}; break;
    case HadamardFactorization::Construction::paley1: small_ = paley1_hadamard(f_.q); break;
    case HadamardFactorization::Construction::paley2: small_ = paley2_hadamard(f_.q); break;
    case HadamardFactorization::Construction::williamson: small_ = williamson_hadamard(f_.q); break;
  }
}

void HadamardTransform::transform(float* x, int64_t ld, int64_t width, bool transpose, float* scratch) const {
  const int64_t m = f_.small_order, p = f_.power_of_two;
  // H_{2^k} on each of the m row blocks (Sylvester's matrix is symmetric: H^T = H).
  for (int64_t a = 0; a < m; ++a) butterflies(x + a * p * ld, ld, width, p);
  const float norm = float(1.0 / std::sqrt(double(n_)));
  if (m == 1) {
    for (int64_t i = 0; i < n_; ++i)
      for (int64_t c = 0; c < width; ++c) x[i * ld + c] *= norm;
    return;
  }
  // Then H_m across the blocks: block a := sum_a' H_m[a][a'] block a' (H_m^T: [a'][a]).
  for (int64_t a = 0; a < m; ++a) {
    float* acc = scratch + a * p * width;
    std::fill(acc, acc + p * width, 0.0f);
    for (int64_t a2 = 0; a2 < m; ++a2) {
      const int8_t sign = transpose ? small_[size_t(a2 * m + a)] : small_[size_t(a * m + a2)];
      const float* src = x + a2 * p * ld;
      for (int64_t b = 0; b < p; ++b) {
        float* dst = acc + b * width;
        const float* s = src + b * ld;
        if (sign > 0)
          for (int64_t c = 0; c < width; ++c) dst[c] += s[c];
        else
          for (int64_t c = 0; c < width; ++c) dst[c] -= s[c];
      }
    }
  }
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t c = 0; c < width; ++c) x[i * ld + c] = scratch[i * width + c] * norm;
}

void HadamardTransform::apply(float* x, bool transpose) const {
  std::vector<float> scratch(f_.small_order > 1 ? static_cast<size_t>(n_) : 0);
  transform(x, 1, 1, transpose, scratch.data());
}

void HadamardTransform::apply_rows(float* x, int64_t count, bool transpose) const {
  parallel_for(count, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(f_.small_order > 1 ? static_cast<size_t>(n_) : 0);
    for (int64_t r = begin; r < end; ++r) transform(x + r * n_, 1, 1, transpose, scratch.data());
  });
}

void HadamardTransform::apply_columns(float* x, int64_t cols, bool transpose) const {
  const int64_t strips = (cols + kStrip - 1) / kStrip;
  parallel_for(strips, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(f_.small_order > 1 ? static_cast<size_t>(n_ * kStrip) : 0);
    for (int64_t s = begin; s < end; ++s)
      transform(x + s * kStrip, cols, std::min(kStrip, cols - s * kStrip), transpose, scratch.data());
  });
}

std::vector<float> HadamardTransform::matrix() const {
  // Column j of H is H e_j: transform the identity's columns.
  std::vector<float> h(static_cast<size_t>(n_ * n_), 0.0f);
  for (int64_t i = 0; i < n_; ++i) h[size_t(i * n_ + i)] = 1.0f;
  apply_columns(h.data(), n_);
  return h;
}

}  // namespace qf
