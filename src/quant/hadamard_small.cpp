#include "quant/hadamard_small.h"

#include <string_view>

#include "core/error.h"

namespace qf {
namespace {

constexpr int64_t kMaxFieldOrder = int64_t(1) << 20;

// The first rows of the symmetric circulants A, B, C, D of the Williamson quadruple of order 43
// ('+' = 1, '-' = -1); see the header for the source.
constexpr int64_t kWilliamsonOrder = 43;
constexpr std::string_view kWilliamson43[4] = {
    "++---++++-+--+--++--------++--+--+-++++---+",
    "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
    "++-++++++----+-+--++-++-++--+-+----++++++-+",
    "+---++--++++-+-+++-++--++-+++-+-++++--++---",
};

using Poly = std::vector<int64_t>;  // coefficients over Z_p, lowest degree first

// r := r mod d for a monic d, coefficients mod p; returns true if the remainder is zero.
bool divides(const Poly& d, Poly r, int64_t p) {
  const size_t dd = d.size() - 1;
  for (size_t top = r.size(); top-- > dd;) {
    const int64_t c = r[top];
    if (c == 0) continue;
    for (size_t i = 0; i <= dd; ++i) r[top - dd + i] = ((r[top - dd + i] - c * d[i]) % p + p) % p;
  }
  for (size_t i = 0; i < dd && i < r.size(); ++i)
    if (r[i] != 0) return false;
  return true;
}

// The monic polynomial of degree `degree` whose lower coefficients are the base-p digits of c.
Poly monic(int64_t c, int degree, int64_t p) {
  Poly f(size_t(degree) + 1, 0);
  for (int i = 0; i < degree; ++i, c /= p) f[size_t(i)] = c % p;
  f[size_t(degree)] = 1;
  return f;
}

int64_t ipow(int64_t b, int e) {
  int64_t r = 1;
  while (e-- > 0) r *= b;
  return r;
}

// A polynomial of degree k is irreducible iff no monic polynomial of degree 1..k/2 divides it.
bool irreducible(const Poly& f, int64_t p) {
  const int k = int(f.size()) - 1;
  for (int d = 1; d <= k / 2; ++d)
    for (int64_t c = 0; c < ipow(p, d); ++c)
      if (divides(monic(c, d, p), f, p)) return false;
  return true;
}

}  // namespace

int64_t prime_power_base(int64_t q, int* k) {
  if (q < 2) return 0;
  int64_t p = 0;
  for (int64_t d = 2; d * d <= q; ++d)
    if (q % d == 0) {
      p = d;
      break;
    }
  if (p == 0) p = q;  // q is prime
  int e = 0;
  for (int64_t r = q; r > 1; r /= p, ++e)
    if (r % p != 0) return 0;
  if (k) *k = e;
  return p;
}

GaloisField::GaloisField(int64_t q) : q_(q) {
  p_ = prime_power_base(q, &k_);
  QF_CHECK(p_ != 0 && q <= kMaxFieldOrder, "GF(", q, "): the order of a finite field must be a prime power in 2..",
           kMaxFieldOrder);
  if (k_ == 1) {
    modulus_ = {0, 1};  // x: residues are the constants, Z_p itself
  } else {
    for (int64_t c = 0;; ++c) {
      QF_ASSERT(c < q);  // an irreducible polynomial of every degree exists
      const Poly f = monic(c, k_, p_);
      if (irreducible(f, p_)) {
        modulus_ = f;
        break;
      }
    }
  }
  chi_.assign(size_t(q), -1);
  chi_[0] = 0;
  for (int64_t a = 1; a < q; ++a) chi_[size_t(mul(a, a))] = 1;
}

int64_t GaloisField::add(int64_t a, int64_t b) const {
  int64_t r = 0, place = 1;
  for (int i = 0; i < k_; ++i, a /= p_, b /= p_, place *= p_) r += ((a % p_ + b % p_) % p_) * place;
  return r;
}

int64_t GaloisField::sub(int64_t a, int64_t b) const {
  int64_t r = 0, place = 1;
  for (int i = 0; i < k_; ++i, a /= p_, b /= p_, place *= p_) r += ((a % p_ - b % p_ + p_) % p_) * place;
  return r;
}

int64_t GaloisField::mul(int64_t a, int64_t b) const {
  Poly x(static_cast<size_t>(k_)), y(static_cast<size_t>(k_)), prod(static_cast<size_t>(2 * k_ - 1), 0);
  for (int i = 0; i < k_; ++i, a /= p_, b /= p_) {
    x[size_t(i)] = a % p_;
    y[size_t(i)] = b % p_;
  }
  for (int i = 0; i < k_; ++i)
    for (int j = 0; j < k_; ++j) prod[size_t(i + j)] = (prod[size_t(i + j)] + x[size_t(i)] * y[size_t(j)]) % p_;
  // Reduce modulo the monic modulus from the top: x^k = -(lower terms of the modulus).
  for (int top = 2 * k_ - 2; top >= k_; --top) {
    const int64_t c = prod[size_t(top)];
    if (c == 0) continue;
    for (int i = 0; i <= k_; ++i)
      prod[size_t(top - k_ + i)] = ((prod[size_t(top - k_ + i)] - c * modulus_[size_t(i)]) % p_ + p_) % p_;
  }
  int64_t r = 0;
  for (int i = k_ - 1; i >= 0; --i) r = r * p_ + prod[size_t(i)];
  return r;
}

std::vector<int8_t> paley1_hadamard(int64_t q) {
  QF_CHECK(q % 4 == 3 && prime_power_base(q) != 0, "Paley I needs a prime power q ≡ 3 mod 4, not ", q);
  const GaloisField field(q);
  const int64_t m = q + 1;
  std::vector<int8_t> h(static_cast<size_t>(m * m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      int s;  // S[i][j]
      if (i == 0) s = j == 0 ? 0 : 1;
      else if (j == 0) s = -1;
      else s = field.quadratic_character(field.sub(i - 1, j - 1));
      h[size_t(i * m + j)] = int8_t((i == j ? 1 : 0) + s);
    }
  return h;
}

std::vector<int8_t> paley2_hadamard(int64_t q) {
  QF_CHECK(q % 4 == 1 && prime_power_base(q) != 0, "Paley II needs a prime power q ≡ 1 mod 4, not ", q);
  const GaloisField field(q);
  const int64_t c_order = q + 1, m = 2 * c_order;
  std::vector<int8_t> h(static_cast<size_t>(m * m));
  for (int64_t i = 0; i < c_order; ++i)
    for (int64_t j = 0; j < c_order; ++j) {
      int c;  // C[i][j]
      if (i == 0) c = j == 0 ? 0 : 1;
      else if (j == 0) c = 1;
      else c = field.quadratic_character(field.sub(i - 1, j - 1));
      // 0 -> [1 -1; -1 -1],  ±1 -> ±[1 1; 1 -1]
      const int8_t block[2][2] = {{int8_t(c == 0 ? 1 : c), int8_t(c == 0 ? -1 : c)},
                                  {int8_t(c == 0 ? -1 : c), int8_t(c == 0 ? -1 : -c)}};
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) h[size_t((2 * i + a) * m + 2 * j + b)] = block[a][b];
    }
  return h;
}

bool has_williamson_quadruple(int64_t w) { return w == kWilliamsonOrder; }

std::vector<int8_t> williamson_hadamard(int64_t w) {
  QF_CHECK(has_williamson_quadruple(w), "Williamson construction: no quadruple of order ", w, " is known here (only ",
           kWilliamsonOrder, ")");
  // Block (bi, bj) of the array is sign * X with X in {A, B, C, D}: which X and which sign.
  constexpr int kWhich[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  constexpr int kSign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  const int64_t m = 4 * w;
  std::vector<int8_t> h(static_cast<size_t>(m * m));
  for (int bi = 0; bi < 4; ++bi)
    for (int bj = 0; bj < 4; ++bj) {
      const std::string_view row = kWilliamson43[kWhich[bi][bj]];
      for (int64_t i = 0; i < w; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int v = row[size_t(((j - i) % w + w) % w)] == '+' ? 1 : -1;  // circulant: X[i][j] = x[j - i]
          h[size_t((bi * w + i) * m + bj * w + j)] = int8_t(kSign[bi][bj] * v);
        }
    }
  return h;
}

}  // namespace qf
