// Orthogonal Hadamard transforms for rotating weights and activations (QuaRot, FPTQuant and
// the Hadamard-based methods): x -> H x / sqrt(n) with H a ±1 matrix, H H^T = n I.
//
// Powers of two use Sylvester's H_{2n} = [H H; H -H] through the fast Walsh-Hadamard transform
// (n log n additions). Other sizes factor as n = m * 2^k with a small Hadamard matrix H_m from
// Paley's or Williamson's constructions (hadamard_small.h), and H_n = H_m ⊗ H_{2^k}: a vector
// viewed as an
// m x 2^k matrix X transforms to H_m X H_{2^k}^T, i.e. a fast transform of each of the m rows,
// then an m x m ±1 product per column, O(n log n + n m) per vector, never forming H_n.
// The sizes of the Llama family:
//     n        m x 2^k      small Hadamard
//     576      36 x 16      Paley II, q = 17
//     1536     12 x 128     Paley I,  q = 11
//     4096, 8192            Sylvester only
//     11008    172 x 64     Williamson, w = 43   (Paley I with q = 343 = 7^3 gives 344 x 32, twice
//                                                the cost per vector)
//     14336    28 x 512     Paley I,  q = 27 = 3^3
//     28672    28 x 1024    Paley I,  q = 27
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qf {

// In place, x (n values, n a power of two) := H_n x / sqrt(n), Sylvester (natural) order. The
// transform is symmetric and orthogonal, so it is its own inverse.
void fwht(float* x, int64_t n);

// n = small_order * power_of_two with a Hadamard matrix of order small_order known.
struct HadamardFactorization {
  enum class Construction { sylvester, paley1, paley2, williamson };
  int64_t small_order = 1;   // m (1 for a power of two)
  int64_t power_of_two = 1;  // 2^k
  Construction construction = Construction::sylvester;
  int64_t q = 0;  // Paley: the field order q; Williamson: w = m / 4
  std::string str() const;  // e.g. "28 (Paley I, q = 27) x 512"
};

// Small Hadamard orders considered: the application costs n * m per vector, and a Paley matrix
// m^2 bytes, so larger m are not worth it (use a random orthogonal matrix instead).
inline constexpr int64_t kMaxSmallHadamardOrder = 4096;

// The factorisation of n with the smallest m: m = odd(n) * 2^j for j = 0, 1, ..., taking the
// first that is 1 or has a construction (Paley I with q = m - 1, Paley II with q = m / 2 - 1,
// or a carried Williamson quadruple of order m / 4). nullopt when there is none with
// m <= kMaxSmallHadamardOrder: then no Hadamard transform of size n is known here (e.g. 92 * 2^k
// or 188 * 2^k), and a random orthogonal rotation is the fallback.
std::optional<HadamardFactorization> find_hadamard_factorization(int64_t n);

// H_n = (H_m ⊗ H_{2^k}) / sqrt(n) applied without forming it.
class HadamardTransform {
 public:
  // Throws qf::Error saying that no construction is known for n (and suggesting a random
  // orthogonal rotation) if find_hadamard_factorization(n) has none.
  explicit HadamardTransform(int64_t n);

  int64_t size() const { return n_; }
  const HadamardFactorization& factorization() const { return f_; }

  // x (n values) := H x, or H^T x with transpose (H^T = H^{-1}).
  void apply(float* x, bool transpose = false) const;
  // Each row of x [count, n] := H row (the matrix becomes X H^T), in parallel over rows.
  void apply_rows(float* x, int64_t count, bool transpose = false) const;
  // Each column of x [n, cols] := H column (the matrix becomes H X), in strips of columns.
  void apply_columns(float* x, int64_t cols, bool transpose = false) const;

  // The explicit n x n matrix (orthonormal), row-major; for tests and small n.
  std::vector<float> matrix() const;
  // The ±1 small Hadamard matrix H_m (m x m), row-major.
  const std::vector<int8_t>& small_matrix() const { return small_; }

 private:
  // x viewed as X [n, width] with rows ld apart := H X (or H^T X); scratch: n * width floats.
  void transform(float* x, int64_t ld, int64_t width, bool transpose, float* scratch) const;

  int64_t n_;
  HadamardFactorization f_;
  std::vector<int8_t> small_;
};

}  // namespace qf
