// Hadamard matrices of orders that are not powers of two ("small" Hadamard matrices, combined
// with Sylvester's powers of two by hadamard.h).
//
// Paley's constructions over a finite field GF(q), q = p^k:
//   Paley I  (q ≡ 3 mod 4), order q + 1:   H = I + S,  S = [ 0  1^T ]
//                                                          [ -1  Q  ]
//   Paley II (q ≡ 1 mod 4), order 2(q + 1): C = [ 0  1^T ],  H = C ⊗ [1  1] + I ⊗ [ 1 -1]
//                                                [ 1   Q  ]          [1 -1]       [-1 -1]
// with Q the Jacobsthal matrix Q[a][b] = χ(a - b) over the field's elements and χ the
// quadratic character (0 at 0, 1 on non-zero squares, -1 otherwise). Q 1 = 0 and
// Q Q^T = q I - J; χ(-1) = -1 when q ≡ 3 mod 4 makes Q (and S) antisymmetric, so
// H H^T = I + S S^T = (q + 1) I; χ(-1) = 1 when q ≡ 1 mod 4 makes C a symmetric conference
// matrix (C C^T = q I), which the Kronecker products above double into a Hadamard matrix.
//
// Williamson's construction, order 4w: four symmetric circulant ±1 matrices A, B, C, D of
// order w with A^2 + B^2 + C^2 + D^2 = 4w I (circulants commute) give
//   H = [ A  B  C  D ]
//       [-B  A -D  C ]
//       [-C  D  A -B ]
//       [-D -C  B  A ]
// No general recipe finds A..D; they come from searches. qforge carries the one quadruple it
// needs: w = 43, for order 172 (11008 = 172 * 64 in Llama-7B's MLP), whose 172 - 1 = 171 and
// 172 / 2 - 1 = 85 are not prime powers, so Paley cannot build it. The first rows are the
// published ones (M. Hall, Combinatorial Theory, 2nd ed., 1986, table of Williamson matrices;
// also SageMath's williamson_type_quadruples_smallcases); the test checks H H^T = 172 I.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qf {

// GF(q), q = p^k: elements are the polynomials of degree < k over Z_p, stored as integers
// 0..q-1 whose base-p digits are the coefficients (digit i = coefficient of x^i); arithmetic
// is modulo a monic irreducible polynomial of degree k, the first one found by searching the
// monic polynomials in increasing order (for k = 1, Z_p itself).
class GaloisField {
 public:
  // Throws qf::Error if q is not a prime power (or is outside 2..2^20).
  explicit GaloisField(int64_t q);

  int64_t order() const { return q_; }
  int64_t characteristic() const { return p_; }
  int degree() const { return k_; }
  // The modulus' coefficients, lowest degree first (k + 1 values, the last is 1).
  const std::vector<int64_t>& modulus() const { return modulus_; }

  int64_t add(int64_t a, int64_t b) const;
  int64_t sub(int64_t a, int64_t b) const;
  int64_t mul(int64_t a, int64_t b) const;
  // χ(a): 0 for a = 0, 1 for a non-zero square, -1 otherwise (q odd).
  int quadratic_character(int64_t a) const { return chi_[size_t(a)]; }

 private:
  int64_t q_ = 0, p_ = 0;
  int k_ = 0;
  std::vector<int64_t> modulus_;
  std::vector<int8_t> chi_;
};

// If q = p^k with p prime and k >= 1, returns p (and sets k); otherwise 0.
int64_t prime_power_base(int64_t q, int* k = nullptr);

// The ±1 Hadamard matrices of Paley's constructions, row-major. Throw qf::Error unless q is an
// odd prime power with q ≡ 3 (Paley I) or 1 (Paley II) mod 4.
std::vector<int8_t> paley1_hadamard(int64_t q);  // order q + 1
std::vector<int8_t> paley2_hadamard(int64_t q);  // order 2 (q + 1)

// Whether a Williamson quadruple of order w is carried (w = 43), and the Hadamard matrix of
// order 4w built from it (throws qf::Error naming w otherwise).
bool has_williamson_quadruple(int64_t w);
std::vector<int8_t> williamson_hadamard(int64_t w);

}  // namespace qf
