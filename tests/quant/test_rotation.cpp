#include "quant/rotation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backends/cpu/ops.h"
#include "core/error.h"
#include "quant/smooth.h"
#include "quant_test_util.h"

namespace qf {
namespace {

using quant_test::gaussian;
using quant_test::linear_ref;
using quant_test::max_abs;
using quant_test::max_abs_diff;

double orthogonality_error(const std::vector<float>& r, int64_t n) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < n; ++c) dot += double(r[size_t(i * n + c)]) * r[size_t(j * n + c)];
      e = std::max(e, std::abs(dot - (i == j ? 1.0 : 0.0)));
    }
  return e;
}

TEST(QuantRotation, RandomRotationsAreOrthogonalAndSeeded) {
  for (int64_t n : {1, 5, 64, 100}) {
    const Rotation r = Rotation::random_orthogonal(n, 7);
    EXPECT_LT(orthogonality_error(r.matrix(), n), 1e-6) << n;
    EXPECT_EQ(r.matrix(), Rotation::random_orthogonal(n, 7).matrix()) << "same seed, same matrix";
    if (n > 1) {
      EXPECT_NE(r.matrix(), Rotation::random_orthogonal(n, 8).matrix());
    }
  }
  for (int64_t n : {12, 64, 576}) {
    const Rotation r = Rotation::randomized_hadamard(n, 3);
    EXPECT_LT(orthogonality_error(r.matrix(), n), 1e-5) << n;
    int negative = 0;
    for (float s : r.signs()) {
      ASSERT_TRUE(s == 1.0f || s == -1.0f);
      negative += s < 0;
    }
    EXPECT_GT(negative, 0);
    EXPECT_LT(negative, n);
    EXPECT_EQ(r.signs(), Rotation::randomized_hadamard(n, 3).signs());
    EXPECT_NE(r.signs(), Rotation::randomized_hadamard(n, 4).signs());
  }
}

TEST(QuantRotation, RandomizedHadamardIsHTimesDiagonalSigns) {
  // R = H diag(s): column j of R is column j of H times s_j (not row i times s_i).
  const int64_t n = 20;
  const Rotation r = Rotation::randomized_hadamard(n, 9);
  const std::vector<float> h = Rotation::hadamard(n).matrix(), m = r.matrix();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) ASSERT_FLOAT_EQ(m[size_t(i * n + j)], h[size_t(i * n + j)] * r.signs()[size_t(j)]);
}

TEST(QuantRotation, RandomOrthogonalLooksHaarDistributed) {
  // The sign fix of the QR matters: without it, diag(Q) would be biased (Q's first column is
  // -sign(g_00) g / |g|, ...). Haar rotations have E[Q_ii] = 0 and E[Q_ij^2] = 1/n.
  const int64_t n = 8, trials = 400;
  double diag_sum = 0, sq_sum = 0;
  for (int64_t t = 0; t < trials; ++t) {
    const std::vector<float> q = Rotation::random_orthogonal(n, uint64_t(1000 + t)).matrix();
    for (int64_t i = 0; i < n; ++i) diag_sum += q[size_t(i * n + i)];
    sq_sum += double(q[1]) * q[1];
  }
  EXPECT_NEAR(diag_sum / double(trials * n), 0.0, 0.05);  // stddev of the mean ~ 0.018
  EXPECT_NEAR(sq_sum / double(trials), 1.0 / n, 0.03);
}

TEST(QuantRotation, ApplyMatchesTheMatrixForEveryKind) {
  const int64_t n = 36, count = 5;
  for (const Rotation& r : {Rotation::hadamard(n), Rotation::randomized_hadamard(n, 1), Rotation::random_orthogonal(n, 2)}) {
    const std::vector<float> m = r.matrix();
    const std::vector<float> x0 = gaussian(count * n, 5);
    for (bool transpose : {false, true}) {
      std::vector<float> rows = x0;
      r.apply_rows(rows.data(), count, transpose);
      std::vector<float> cols(static_cast<size_t>(n * count));  // x0^T: vectors as columns
      for (int64_t v = 0; v < count; ++v)
        for (int64_t i = 0; i < n; ++i) cols[size_t(i * count + v)] = x0[size_t(v * n + i)];
      r.apply_columns(cols.data(), count, transpose);
      for (int64_t v = 0; v < count; ++v)
        for (int64_t i = 0; i < n; ++i) {
          double ref = 0;
          for (int64_t j = 0; j < n; ++j)
            ref += double(transpose ? m[size_t(j * n + i)] : m[size_t(i * n + j)]) * x0[size_t(v * n + j)];
          ASSERT_NEAR(rows[size_t(v * n + i)], ref, 1e-5);
          ASSERT_NEAR(cols[size_t(i * count + v)], ref, 1e-5);
        }
    }
  }
}

TEST(QuantRotation, LinearPairIsPreserved) {
  // y = W2 (W1 x) with the hidden space rotated: W1' = R W1, W2' = W2 R^T.
  const int64_t d = 48, tokens = 6, out = 20;
  for (int64_t hidden : {576, 1536, 64}) {
    std::vector<Rotation> rotations = {Rotation::hadamard(hidden), Rotation::randomized_hadamard(hidden, 11)};
    if (hidden <= 576) rotations.push_back(Rotation::random_orthogonal(hidden, 12));  // dense QR: keep it small
    for (const Rotation& r : rotations) {
      SCOPED_TRACE(std::to_string(hidden) + " kind " + std::to_string(int(r.kind())));
      std::vector<float> w1 = gaussian(hidden * d, 1), w2 = gaussian(out * hidden, 2);
      const std::vector<float> x = gaussian(tokens * d, 3);
      const std::vector<double> h = linear_ref(x, w1, tokens, d, hidden);
      const std::vector<float> hf(h.begin(), h.end());
      const std::vector<double> y = linear_ref(hf, w2, tokens, hidden, out);
      rotate_linear_output(w1.data(), hidden, d, r);
      rotate_linear_input(w2.data(), out, hidden, r);
      const std::vector<double> h2 = linear_ref(x, w1, tokens, d, hidden);
      const std::vector<float> h2f(h2.begin(), h2.end());
      const std::vector<double> y2 = linear_ref(h2f, w2, tokens, hidden, out);
      EXPECT_LT(max_abs_diff(y, y2), 2e-5 * max_abs(y));
      EXPECT_GT(max_abs_diff(h, h2), 0.1 * max_abs(h)) << "the hidden activations must actually change";
    }
  }
}

// rmsnorm rows of x [tokens, dim] with weight g, through the CPU engine's op.
std::vector<float> rmsnorm(const std::vector<float>& x, int64_t tokens, int64_t dim, const std::vector<float>& g) {
  std::vector<float> y(x.size());
  cpu::rmsnorm(x.data(), tokens, dim, g.data(), 1e-5f, y.data());
  return y;
}

TEST(QuantRotation, ResidualStreamRotationThroughRmsNormIsPreserved) {
  // QuaRot on a slice of a Llama block: residual r = E[token] + W_o a (an embedding row plus an
  // attention output), then y = W_q rmsnorm(r; g). Fold g into W_q, then rotate the residual
  // stream by R: E's rows and W_o's outputs produce R r, rmsnorm commutes with R (it only
  // divides by |r| / sqrt(d), which R preserves), and W_q R^T undoes R.
  const int64_t d = 576, tokens = 5, heads_dim = 64, out = 96;
  for (const Rotation& r : {Rotation::randomized_hadamard(d, 5), Rotation::random_orthogonal(d, 6)}) {
    std::vector<float> emb = gaussian(tokens * d, 1), w_o = gaussian(d * heads_dim, 2, 0.2f), w_q = gaussian(out * d, 3);
    std::vector<float> g = gaussian(d, 4, 0.3f);
    for (auto& v : g) v += 1.0f;
    const std::vector<float> a = gaussian(tokens * heads_dim, 5);
    auto forward = [&](const std::vector<float>& e, const std::vector<float>& wo, const std::vector<float>& wq,
                       const std::vector<float>& gamma) {
      const std::vector<double> attn = linear_ref(a, wo, tokens, heads_dim, d);
      std::vector<float> resid(e);
      for (size_t i = 0; i < resid.size(); ++i) resid[i] += float(attn[i]);
      return linear_ref(rmsnorm(resid, tokens, d, gamma), wq, tokens, d, out);
    };
    const std::vector<double> y = forward(emb, w_o, w_q, g);
    const LinearRef q_proj[] = {{w_q.data(), out, d}};
    fold_norm_weight(g.data(), d, q_proj);
    EXPECT_LT(max_abs_diff(y, forward(emb, w_o, w_q, g)), 2e-5 * max_abs(y)) << "folding alone";
    r.apply_rows(emb.data(), tokens);               // embedding rows: E R^T
    rotate_linear_output(w_o.data(), d, heads_dim, r);  // writes R (W_o a)
    rotate_linear_input(w_q.data(), out, d, r);         // reads R x
    const std::vector<double> y2 = forward(emb, w_o, w_q, g);
    EXPECT_LT(max_abs_diff(y, y2), 5e-5 * max_abs(y));
  }
}

TEST(QuantRotation, OnlineRotationOfAnActivationIsPreserved) {
  // down_proj's input (11008 or 14336 wide in Llama) cannot be rotated by merging into up_proj
  // (SiLU(gate) * up is not rotation-equivariant), so it is rotated at run time, x -> H x, with
  // H^T merged into W_down: W_down' (H x) = W_down x.
  const int64_t tokens = 3, out = 8;
  for (int64_t k : {1536, 11008, 14336}) {
    SCOPED_TRACE(k);
    const Rotation r = Rotation::randomized_hadamard(k, 21);
    std::vector<float> w = gaussian(out * k, 1), x = gaussian(tokens * k, 2);
    const std::vector<double> y = linear_ref(x, w, tokens, k, out);
    r.apply_rows(x.data(), tokens);     // online, on the activation
    rotate_linear_input(w.data(), out, k, r);  // offline, on the weight
    EXPECT_LT(max_abs_diff(y, linear_ref(x, w, tokens, k, out)), 1e-5 * max_abs(y));
  }
}

TEST(QuantRotation, SizeMismatchesAreReported) {
  const Rotation r = Rotation::hadamard(12);
  std::vector<float> w(8 * 10);
  EXPECT_THROW(rotate_linear_input(w.data(), 8, 10, r), Error);
  EXPECT_THROW(rotate_linear_output(w.data(), 8, 10, r), Error);
  EXPECT_THROW(Rotation::from_matrix(std::vector<float>(10), 3), Error);
}

}  // namespace
}  // namespace qf
