#include "quant/hadamard.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant/hadamard_small.h"
#include "quant_test_util.h"

namespace qf {
namespace {

TEST(QuantHadamard, GaloisFieldsAreFields) {
  for (int64_t q : {2, 3, 4, 5, 7, 8, 9, 11, 16, 25, 27, 49, 81, 121, 125, 343}) {
    SCOPED_TRACE(q);
    const GaloisField f(q);
    int k = 0;
    EXPECT_EQ(f.characteristic(), prime_power_base(q, &k));
    EXPECT_EQ(f.degree(), k);
    ASSERT_EQ(f.modulus().size(), size_t(k) + 1);
    EXPECT_EQ(f.modulus().back(), 1) << "modulus must be monic";
    // Every non-zero element has exactly one inverse: there are no zero divisors, which is what
    // fails if the modulus were reducible (and the ring not a field).
    for (int64_t a = 1; a < q; ++a) {
      int inverses = 0;
      for (int64_t b = 1; b < q; ++b) inverses += f.mul(a, b) == 1;
      ASSERT_EQ(inverses, 1) << "element " << a;
    }
    std::mt19937_64 rng{uint64_t(q)};
    for (int i = 0; i < 2000; ++i) {
      const int64_t a = int64_t(rng() % uint64_t(q)), b = int64_t(rng() % uint64_t(q)), c = int64_t(rng() % uint64_t(q));
      ASSERT_EQ(f.mul(a, b), f.mul(b, a));
      ASSERT_EQ(f.mul(f.mul(a, b), c), f.mul(a, f.mul(b, c)));
      ASSERT_EQ(f.mul(a, f.add(b, c)), f.add(f.mul(a, b), f.mul(a, c)));
      ASSERT_EQ(f.add(f.sub(a, b), b), a);
      ASSERT_EQ(f.mul(a, 1), a);
      ASSERT_EQ(f.add(a, 0), a);
    }
    if (q % 2 == 1) {
      int squares = 0;
      for (int64_t a = 1; a < q; ++a) squares += f.quadratic_character(a) == 1;
      EXPECT_EQ(squares, (q - 1) / 2);
      EXPECT_EQ(f.quadratic_character(0), 0);
      EXPECT_EQ(f.quadratic_character(f.sub(0, 1)), q % 4 == 1 ? 1 : -1) << "χ(-1)";
    }
  }
  for (int64_t bad : {0, 1, 6, 12, 100, 343 * 2}) EXPECT_THROW(GaloisField{bad}, Error) << bad;
}

bool is_hadamard(const std::vector<int8_t>& h, int64_t m) {
  if (int64_t(h.size()) != m * m) return false;
  for (int8_t v : h)
    if (v != 1 && v != -1) return false;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      int64_t dot = 0;
      for (int64_t c = 0; c < m; ++c) dot += h[size_t(i * m + c)] * h[size_t(j * m + c)];
      if (dot != (i == j ? m : 0)) return false;
    }
  return true;
}

TEST(QuantHadamard, PaleyMatricesAreHadamard) {
  // Every small order up to 400 that the factorisation offers, and the ones the task names.
  std::vector<int64_t> orders;
  for (int64_t m = 4; m <= 400; m += 4) {
    const auto f = find_hadamard_factorization(m);
    if (f && f->small_order == m) orders.push_back(m);
  }
  for (int64_t must : {12, 20, 28, 36, 44, 52, 60, 68, 76, 108, 172})
    EXPECT_NE(std::find(orders.begin(), orders.end(), must), orders.end()) << must << " has no construction";
  for (int64_t m : orders) {
    const HadamardTransform t(m);
    EXPECT_TRUE(is_hadamard(t.small_matrix(), m)) << "order " << m << ": " << t.factorization().str();
  }
  EXPECT_TRUE(is_hadamard(paley1_hadamard(343), 344));  // q = 7^3, over GF(343)
  EXPECT_TRUE(is_hadamard(williamson_hadamard(43), 172));
  EXPECT_THROW(williamson_hadamard(23), Error);
  EXPECT_TRUE(is_hadamard(paley2_hadamard(17), 36));
  EXPECT_TRUE(is_hadamard(paley2_hadamard(25), 52));  // q = 5^2, Paley II over GF(25)
  EXPECT_THROW(paley1_hadamard(13), Error);           // 13 ≡ 1 mod 4
  EXPECT_THROW(paley2_hadamard(15), Error);           // not a prime power
}

TEST(QuantHadamard, LlamaSizesFactor) {
  struct Case {
    int64_t n, m, q;
    HadamardFactorization::Construction c;
  };
  using C = HadamardFactorization::Construction;
  for (const Case& k : {Case{576, 36, 17, C::paley2}, Case{1536, 12, 11, C::paley1}, Case{4096, 1, 0, C::sylvester},
                        Case{8192, 1, 0, C::sylvester}, Case{11008, 172, 43, C::williamson},
                        Case{14336, 28, 27, C::paley1}, Case{28672, 28, 27, C::paley1}}) {
    const auto f = find_hadamard_factorization(k.n);
    ASSERT_TRUE(f.has_value()) << k.n;
    EXPECT_EQ(f->small_order, k.m) << k.n;
    EXPECT_EQ(f->small_order * f->power_of_two, k.n);
    EXPECT_EQ(f->q, k.q) << k.n;
    EXPECT_EQ(f->construction, k.c) << k.n;
  }
  // 92 = 4 * 23 and 188 = 4 * 47: neither Paley applies (91, 45, 187, 93 are not prime powers)
  // and no Williamson quadruple is carried. Odd sizes and 2 * odd have no Hadamard matrix.
  for (int64_t none : {3, 6, 92, 188}) {  // (92 * 64 is fine: 368 = Paley I with q = 367)
    EXPECT_FALSE(find_hadamard_factorization(none).has_value()) << none;
    try {
      HadamardTransform t(none);
      FAIL() << none;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no construction is known"), std::string::npos) << e.what();
    }
  }
}

// The explicit normalised H_m ⊗ H_{2^k}, built here from the Paley matrix and Sylvester's
// entries (-1)^popcount(i & j), independently of the fast transform.
std::vector<double> explicit_hadamard(int64_t n) {
  const HadamardFactorization f = *find_hadamard_factorization(n);
  std::vector<int8_t> small = {1};
  if (f.construction == HadamardFactorization::Construction::paley1) small = paley1_hadamard(f.q);
  if (f.construction == HadamardFactorization::Construction::paley2) small = paley2_hadamard(f.q);
  if (f.construction == HadamardFactorization::Construction::williamson) small = williamson_hadamard(f.q);
  const int64_t m = f.small_order, p = f.power_of_two;
  std::vector<double> h(static_cast<size_t>(n * n));
  const double norm = 1.0 / std::sqrt(double(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const int sylvester = (std::popcount(uint64_t((i % p) & (j % p))) % 2) ? -1 : 1;
      h[size_t(i * n + j)] = norm * small[size_t((i / p) * m + j / p)] * sylvester;
    }
  return h;
}

TEST(QuantHadamard, FastTransformEqualsTheExplicitProduct) {
  for (int64_t n : {1, 2, 16, 12, 24, 36, 40, 52, 172, 576, 688}) {
    SCOPED_TRACE(n);
    const std::vector<double> h = explicit_hadamard(n);
    const HadamardTransform t(n);
    const std::vector<float> x0 = quant_test::gaussian(n, uint64_t(n));
    for (bool transpose : {false, true}) {
      std::vector<float> x = x0;
      t.apply(x.data(), transpose);
      for (int64_t i = 0; i < n; ++i) {
        double ref = 0;
        for (int64_t j = 0; j < n; ++j) ref += (transpose ? h[size_t(j * n + i)] : h[size_t(i * n + j)]) * x0[size_t(j)];
        ASSERT_NEAR(x[size_t(i)], ref, 2e-6 * std::sqrt(double(n))) << "row " << i << (transpose ? " (H^T)" : "");
      }
    }
    // H H^T = I for the normalised matrix (n I for the ±1 one).
    const std::vector<float> mat = t.matrix();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) ASSERT_NEAR(mat[size_t(i * n + j)], h[size_t(i * n + j)], 1e-6);
    for (int64_t i = 0; i < n; i += std::max<int64_t>(1, n / 17))
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < n; ++c) dot += h[size_t(i * n + c)] * h[size_t(j * n + c)];
        ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-12);
      }
  }
}

TEST(QuantHadamard, RowsAndColumnsMatchSingleVectors) {
  const int64_t n = 36 * 4, count = 70;  // count > the 64-column strips of apply_columns
  const HadamardTransform t(n);
  const std::vector<float> x0 = quant_test::gaussian(count * n, 3);
  for (bool transpose : {false, true}) {
    std::vector<float> rows = x0;
    t.apply_rows(rows.data(), count, transpose);
    // The same data viewed as [n, count] (columns are the vectors) through apply_columns.
    std::vector<float> cols(static_cast<size_t>(n * count));
    for (int64_t r = 0; r < count; ++r)
      for (int64_t i = 0; i < n; ++i) cols[size_t(i * count + r)] = x0[size_t(r * n + i)];
    t.apply_columns(cols.data(), count, transpose);
    for (int64_t r = 0; r < count; ++r) {
      std::vector<float> one(x0.begin() + r * n, x0.begin() + (r + 1) * n);
      t.apply(one.data(), transpose);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(rows[size_t(r * n + i)], one[size_t(i)]);
        ASSERT_EQ(cols[size_t(i * count + r)], one[size_t(i)]);
      }
    }
  }
}

TEST(QuantHadamard, LargeLlamaSizesAreOrthogonal) {
  // H^T H x = x and |H x| = |x| at full size, and a sample of outputs against the explicit
  // entries (computed one row at a time, never the whole matrix).
  for (int64_t n : {11008, 14336}) {
    SCOPED_TRACE(n);
    const HadamardTransform t(n);
    const HadamardFactorization f = t.factorization();
    const std::vector<float> x0 = quant_test::gaussian(n, 9);
    std::vector<float> x = x0;
    t.apply(x.data());
    double n0 = 0, n1 = 0;
    for (int64_t i = 0; i < n; ++i) {
      n0 += double(x0[size_t(i)]) * x0[size_t(i)];
      n1 += double(x[size_t(i)]) * x[size_t(i)];
    }
    EXPECT_NEAR(n1, n0, 1e-5 * n0);
    const std::vector<int8_t>& small = t.small_matrix();
    const int64_t m = f.small_order, p = f.power_of_two;
    for (int64_t i = 0; i < n; i += 997) {
      double ref = 0;
      for (int64_t j = 0; j < n; ++j) {
        const int sylvester = (std::popcount(uint64_t((i % p) & (j % p))) % 2) ? -1 : 1;
        ref += small[size_t((i / p) * m + j / p)] * sylvester * double(x0[size_t(j)]);
      }
      ASSERT_NEAR(x[size_t(i)], ref / std::sqrt(double(n)), 1e-4) << i;
    }
    t.apply(x.data(), /*transpose=*/true);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(x[size_t(i)], x0[size_t(i)], 1e-4) << i;
  }
}

TEST(QuantHadamard, FwhtIsNormalisedAndSelfInverse) {
  const int64_t n = 1024;
  const std::vector<float> x0 = quant_test::gaussian(n, 4);
  std::vector<float> x = x0;
  fwht(x.data(), n);
  for (int64_t i = 0; i < n; i += 31) {
    double ref = 0;
    for (int64_t j = 0; j < n; ++j) ref += ((std::popcount(uint64_t(i & j)) % 2) ? -1.0 : 1.0) * x0[size_t(j)];
    ASSERT_NEAR(x[size_t(i)], ref / 32.0, 1e-5);
  }
  fwht(x.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(x[size_t(i)], x0[size_t(i)], 1e-5);
  EXPECT_THROW(fwht(x.data(), 12), Error);
}

}  // namespace
}  // namespace qf
