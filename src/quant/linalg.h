// Dense double-precision linear algebra for the quantization algorithms: the Cholesky factors
// behind GPTQ's inverse Hessian and the QR behind random orthogonal rotations. Matrices are
// square, row-major, with leading dimension n. Multi-threaded through qf::parallel_for.
//
// Why double: a layer's Hessian H = X^T X is badly conditioned (input channels of very
// different scale, near-duplicate channels; condition numbers of 1e6..1e9 are common in LLMs).
// A Cholesky loses about log10(cond) digits, which in F32 (7 digits) leaves nothing and often
// fails outright with a negative pivot; in F64 (16 digits) the factor stays accurate to many
// digits, and only the quantities GPTQ consumes afterwards are rounded to F32.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace qf {

// C[M x N] += alpha * A[M x K] · B[K x N], all row-major with leading dimensions lda, ldb, ldc.
// lower_only: skip the C tiles that lie entirely above the diagonal (C's row index counted from
// `diagonal_offset` rows below its first row), for symmetric rank-k updates of which only the
// lower triangle is read. Multi-threaded over tiles of C.
void dgemm_add(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda, const double* B,
               int64_t ldb, double* C, int64_t ldc, bool lower_only = false, int64_t diagonal_offset = 0);

// In place: the lower-triangular L with L L^T = a, for a symmetric positive definite a (only its
// lower triangle is read); the strict upper triangle is set to 0. Blocked right-looking
// algorithm: panel factorisation, triangular solve, then a rank-k update of the rest with
// dgemm_add. Throws qf::Error naming `what` and the column whose pivot is not positive.
void cholesky_lower(double* a, int64_t n, std::string_view what);

// In place: L^{-1} for a lower-triangular L with a non-zero diagonal (the strict upper triangle
// must be 0 and stays 0). Blocked by rows: row block i of the inverse is
// -L_ii^{-1} (L_i,<i · X_<i,<i), the product by dgemm_add restricted to X's non-zero columns.
void invert_lower_triangular(double* l, int64_t n);

// The upper-triangular U with U^T U = a^{-1}, i.e. the upper Cholesky factor of the inverse, for
// a symmetric positive definite a (GPTQ's Hinv). Computed without forming a^{-1}: with P the
// order-reversing permutation, the lower Cholesky factor L of P a P gives a = R R^T with
// R = P L P upper triangular, and then U = R^{-1} = P L^{-1} P (U^T U = R^{-T} R^{-1} = a^{-1},
// and a triangular factor with positive diagonal is unique). That is one Cholesky and one
// triangular inverse (2 n^3 / 3 flops) where Cholesky, inverse and Cholesky again would take
// 4 n^3 / 3 and round the explicit inverse on the way. Throws like cholesky_lower.
std::vector<double> inverse_cholesky_upper(const double* a, int64_t n, std::string_view what);

// Householder QR of a square matrix a = Q R: q (n x n) orthogonal, r (n x n) upper triangular
// with a non-negative diagonal. The reflectors are the numerically stable ones (v = x + sign(x_0)
// |x| e_0); afterwards row k of R and column k of Q are negated wherever R_kk < 0, which keeps
// Q R = a and makes the factorisation unique, so that Q of a Gaussian matrix is uniformly
// (Haar) distributed. Either output may be null if not needed. O(n^3): meant for rotations of
// up to a few thousand.
void householder_qr(const double* a, int64_t n, double* q, double* r);

}  // namespace qf
