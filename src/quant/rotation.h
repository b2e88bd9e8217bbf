// Orthogonal rotations R (R^T R = I) for function-preserving transforms (QuaRot, SpinQuant,
// FPTQuant): rotating a linear layer's input space by R and its weight by R^T leaves the layer's
// output unchanged, y = W x = (W R^T)(R x), while spreading outliers across channels.
//
// Three kinds:
//   hadamard(n)                 H_n / sqrt(n) of hadamard.h, applied fast (n log n + n m);
//   randomized_hadamard(n, s)   H_n diag(signs), signs ±1 from the seed: the usual choice, as
//                               fast as H but different per seed;
//   random_orthogonal(n, s)     Q of the QR of a Gaussian matrix (Householder, double,
//                               linalg.h), uniformly (Haar) distributed; dense, O(n^2) per vector.
// Seeds give the same rotation on every platform: the random numbers are drawn from
// std::mt19937_64 (fully specified by the C++ standard) with our own Box-Muller transform rather
// than std::normal_distribution (whose algorithm is implementation-defined), so a recipe can
// store a seed instead of a matrix and an online rotation can be rebuilt at load time.
//
// Merging into a linear layer y = W x, W [out, in] row-major:
//   rotate_linear_input(W, R):   W := W R^T   — the layer now receives R x (its input rotated);
//   rotate_linear_output(W, R):  W := R W    — the layer now produces R y (its output rotated),
//                                              bias := R b.
// A rotation of an activation at run time ("online", when it cannot be merged into a preceding
// layer, e.g. the input of down_proj) is R.apply_rows(x, tokens) on the activation with
// rotate_linear_input on the consuming weight.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "quant/hadamard.h"

namespace qf {

class Rotation {
 public:
  enum class Kind { hadamard, randomized_hadamard, dense };

  // Throw qf::Error for sizes without a Hadamard construction (hadamard.h), naming the size.
  static Rotation hadamard(int64_t n);
  static Rotation randomized_hadamard(int64_t n, uint64_t seed);
  static Rotation random_orthogonal(int64_t n, uint64_t seed);
  // Any n x n orthogonal matrix given explicitly (row-major), e.g. a learned one; orthogonality
  // is the caller's promise (it is not checked: that would cost n^3).
  static Rotation from_matrix(std::vector<float> matrix, int64_t n);

  Kind kind() const { return kind_; }
  int64_t size() const { return n_; }
  // The ±1 signs of a randomized Hadamard rotation (empty otherwise).
  const std::vector<float>& signs() const { return signs_; }

  // x (n values) := R x, or R^T x with transpose.
  void apply(float* x, bool transpose = false) const;
  // Each row of x [count, n] := R row, i.e. X := X R^T (X R with transpose). Multi-threaded.
  void apply_rows(float* x, int64_t count, bool transpose = false) const;
  // Each column of x [n, cols] := R column, i.e. X := R X (R^T X with transpose). Multi-threaded.
  void apply_columns(float* x, int64_t cols, bool transpose = false) const;

  // The explicit n x n matrix, row-major.
  std::vector<float> matrix() const;

 private:
  Rotation() = default;

  Kind kind_ = Kind::dense;
  int64_t n_ = 0;
  std::optional<HadamardTransform> hadamard_;
  std::vector<float> signs_;     // randomized Hadamard: R = H diag(signs)
  std::vector<float> dense_;     // dense: R, row-major
  std::vector<float> dense_t_;   // dense: R^T, row-major
};

// W [out, in] := W R^T (R of size in): the layer now receives R x.
void rotate_linear_input(float* w, int64_t out, int64_t in, const Rotation& r);
// W [out, in] := R W (R of size out), bias (out values, may be null) := R bias: the layer now
// produces R y.
void rotate_linear_output(float* w, int64_t out, int64_t in, const Rotation& r, float* bias = nullptr);

}  // namespace qf
